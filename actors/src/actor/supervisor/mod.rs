//! SupervisorActor: owns one worker type's queue and its pool of workers.
//!
//! It admits jobs into a bounded queue (one FIFO per model, see [`queue`]), refusing
//! at once those that cannot start before their deadline at their model's pace, hands each
//! to the live worker with the most free call slots (up to `worker_concurrency` each), grows
//! and shrinks the pool by the pure rules in [`crate::policy::scaling`], and replaces workers that
//! die. It is the one place that knows the queue depth and the in-flight counts (actix has
//! no mailbox-length API).
//!
//! Workers run on a small pool of arbiters (threads), `min(max_workers, cores)` of them,
//! so a pool of several workers uses every core. The first worker shares the supervisor's
//! own thread (with the Router and the ThrottleActor), so a request crosses threads only
//! from its HTTP worker to the actors and back. A worker that stops responding (its actor
//! died) or whose job task panicked is retired and a new one started; its jobs are not lost,
//! because a dropped [`Job`] re-queues itself here or answers its caller (see `job.rs`).

pub mod queue;

use std::sync::Arc;
use std::time::Duration;

use actix::prelude::*;
use tokio::sync::{oneshot, watch};
use tokio::time::Instant;

use crate::actor::supervisor::queue::{ModelQueues, Removal};
use crate::actor::throttle::RateUpdate;
use crate::actor::worker::{ClaudeWorker, Retire, RunJob, WorkerDeps};
use crate::flow::job::{Job, Requeue};
use crate::flow::request::InferError;
use crate::observe::status::{PoolCounters, PoolStatus, WorkerStatus};
use crate::policy::scaling::{self, ScalingPolicy, WorkerLoad};

/// Settings of one worker pool.
#[derive(Debug, Clone, PartialEq)]
pub struct PoolConfig {
    /// The `type` clients name to reach this pool (`"claude"`).
    pub worker_type: String,
    /// Workers kept even when idle.
    pub min_workers: usize,
    /// Most workers (seed: up to 20% of the CPU cores, at least one).
    pub max_workers: usize,
    /// Bedrock calls one worker may hold in flight.
    pub worker_concurrency: usize,
    /// Idle time after which a worker above the minimum is retired.
    pub worker_idle_timeout: Duration,
    /// Requests that may wait for a worker; past it, 503.
    pub queue_capacity: usize,
    /// Longest estimated wait for a paced model's turn a request is admitted with; `None`:
    /// as long as its own deadline allows.
    pub max_queue_wait: Option<Duration>,
    /// How often the pool checks for dead workers, expired or abandoned queued jobs and idle workers.
    pub maintenance_interval: Duration,
    /// A Bedrock stream with no event for this long is cut: retried if none of its content
    /// was sent yet, else ended with an error.
    pub stream_idle_timeout: Duration,
}

impl PoolConfig {
    /// The seed's default pool bound: 20% of the CPU cores, rounded up, at least one.
    pub fn default_max_workers() -> usize {
        let cores = std::thread::available_parallelism().map_or(1, |n| n.get());
        (cores as f64 * 0.2).ceil().max(1.0) as usize
    }
}

impl Default for PoolConfig {
    fn default() -> Self {
        PoolConfig {
            worker_type: "claude".into(),
            min_workers: 1,
            max_workers: PoolConfig::default_max_workers(),
            worker_concurrency: 1000,
            worker_idle_timeout: Duration::from_secs(60),
            queue_capacity: 10_000,
            max_queue_wait: None,
            maintenance_interval: Duration::from_millis(100),
            stream_idle_timeout: Duration::from_secs(60),
        }
    }
}

/// Admits a job into the queue (or answers it at once if it cannot be admitted).
#[derive(Message)]
#[rtype(result = "()")]
pub struct Enqueue(pub Job);

/// A job left a worker.
#[derive(Message, Debug, Clone)]
#[rtype(result = "()")]
pub struct JobDone {
    /// The worker whose slot the job held.
    pub worker: u64,
    /// The job's model, whose share of the slots it held.
    pub model: Arc<str>,
    /// How it ended.
    pub end: JobEnd,
}

/// How a job left its worker.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum JobEnd {
    /// Its caller got an answer.
    Answered,
    /// Its caller went away; the attempts stopped.
    Abandoned,
    /// The task running it panicked.
    Panicked,
}

/// Asks for the pool's state, for `/status`.
#[derive(Message, Debug, Clone, Copy)]
#[rtype(result = "PoolStatus")]
pub struct GetPoolStatus;

/// One worker as the supervisor sees it.
struct WorkerSlot {
    /// Id given at start.
    id: u64,
    /// The worker's address; `connected()` turns false if its actor died.
    addr: Addr<ClaudeWorker>,
    /// Jobs it holds.
    in_flight: usize,
    /// Since when it holds none.
    idle_since: Option<Instant>,
    /// No new jobs; the slot goes once its last job is done.
    retiring: bool,
}

/// The actor owning one pool's queue and workers.
pub struct SupervisorActor {
    /// The pool's settings.
    config: PoolConfig,
    /// What every worker is built with.
    deps: WorkerDeps,
    /// Admitted jobs waiting for a worker: a FIFO per model.
    queues: ModelQueues,
    /// Live and retiring workers.
    workers: Vec<WorkerSlot>,
    /// The extra threads workers run on, created as the pool grows (the first worker shares
    /// the supervisor's own thread).
    arbiters: Vec<Arbiter>,
    /// Id for the next worker.
    next_worker_id: u64,
    /// Totals for `/status`.
    counters: PoolCounters,
    /// False once shutdown began: new jobs are refused.
    accepting: bool,
    /// Told when the pool has nothing queued or in flight during shutdown.
    drained: Option<oneshot::Sender<()>>,
    /// Tells every job still running to answer "shutting down" and stop.
    stop: watch::Sender<bool>,
}

impl SupervisorActor {
    /// A supervisor for `config`'s pool; workers start when the actor starts.
    pub fn new(config: PoolConfig, mut deps: WorkerDeps) -> SupervisorActor {
        let (stop, stopped) = watch::channel(false);
        deps.stop = stopped;
        SupervisorActor {
            accepting: true,
            drained: None,
            stop,
            config,
            deps,
            queues: ModelQueues::default(),
            workers: Vec::new(),
            arbiters: Vec::new(),
            next_worker_id: 1,
            counters: PoolCounters::default(),
        }
    }

    fn policy(&self) -> ScalingPolicy {
        ScalingPolicy {
            min_workers: self.config.min_workers,
            max_workers: self.config.max_workers,
            worker_concurrency: self.config.worker_concurrency,
            idle_timeout: self.config.worker_idle_timeout,
        }
    }

    fn live_workers(&self) -> usize {
        self.workers.iter().filter(|w| !w.retiring).count()
    }

    fn in_flight(&self) -> usize {
        self.workers.iter().map(|w| w.in_flight).sum()
    }

    /// Starts one worker on the next arbiter of the pool's thread pool.
    fn start_worker(&mut self, ctx: &mut Context<Self>) {
        let threads = self
            .config
            .max_workers
            .min(std::thread::available_parallelism().map_or(1, |n| n.get()))
            .max(1);
        let id = self.next_worker_id;
        self.next_worker_id += 1;
        // Thread 0 is the supervisor's own: a job then reaches its worker, and the worker
        // its throttle and supervisor, without waking another thread.
        let thread = (id as usize - 1) % threads;
        if thread > 0 && self.arbiters.len() < thread {
            self.arbiters.push(Arbiter::new());
        }
        let arbiter = match thread {
            0 => Arbiter::current(),
            n => self.arbiters[(n - 1) % self.arbiters.len()].handle(),
        };
        let supervisor = ctx.address();
        let deps = self.deps.clone();
        let worker_type = self.config.worker_type.clone();
        let concurrency = self.config.worker_concurrency;
        let addr = ClaudeWorker::start_in_arbiter(&arbiter, move |_| {
            ClaudeWorker::new(id, worker_type, concurrency, supervisor, deps)
        });
        self.workers.push(WorkerSlot {
            id,
            addr,
            in_flight: 0,
            idle_since: Some(Instant::now()),
            retiring: false,
        });
        self.counters.workers_started += 1;
    }

    /// Retires workers whose actor died, so they get no more jobs and are replaced.
    fn reap_dead_workers(&mut self) {
        for slot in self.workers.iter_mut().filter(|w| !w.retiring) {
            if !slot.addr.connected() {
                log::error!(
                    "claude worker {} of {} pool died; replacing it",
                    slot.id,
                    self.config.worker_type
                );
                slot.retiring = true;
                self.counters.worker_failures += 1;
            }
        }
        self.workers.retain(|w| !(w.retiring && w.in_flight == 0));
    }

    /// Answers queued jobs whose caller left, whose deadline passed, or that can no longer
    /// start in time at their model's pace.
    fn sweep_queue(&mut self) {
        let now = Instant::now();
        for (job, removal) in self.queues.sweep(now, self.config.max_queue_wait) {
            match removal {
                Removal::Abandoned => {
                    self.counters.abandoned_in_queue += 1;
                    job.discard();
                }
                Removal::Expired => {
                    self.counters.expired_in_queue += 1;
                    let timeout = job.request().timeout;
                    job.answer(Err(InferError::DeadlineExceeded {
                        timeout,
                        attempts: 0,
                        last_error: Some("no worker was free before the deadline".into()),
                    }));
                }
                Removal::CannotStartInTime { wait } => {
                    self.counters.shed_in_queue += 1;
                    let error = overloaded(&job, wait, now);
                    job.answer(Err(error));
                }
            }
        }
    }

    /// Hands queued jobs to workers with free slots, then grows the pool if jobs still wait.
    fn dispatch(&mut self, ctx: &mut Context<Self>) {
        let concurrency = self.config.worker_concurrency;
        loop {
            let free = self
                .workers
                .iter_mut()
                .filter(|w| !w.retiring && w.in_flight < concurrency && w.addr.connected())
                .min_by_key(|w| w.in_flight);
            let Some(slot) = free else {
                break;
            };
            let Some(job) = self.queues.pop_next() else {
                break;
            };
            if job.is_abandoned() {
                self.counters.abandoned_in_queue += 1;
                self.queues.done(&job.request().model);
                job.discard();
                continue;
            }
            slot.in_flight += 1;
            slot.idle_since = None;
            // If the worker died just now, the message is dropped and the job re-queues itself.
            slot.addr.do_send(RunJob(job));
        }
        if !self.queues.is_empty() && self.grow_to_demand(ctx) > 0 {
            self.dispatch(ctx);
        }
    }

    /// Starts the workers the scaling policy wants for the current load; returns how many.
    fn grow_to_demand(&mut self, ctx: &mut Context<Self>) -> usize {
        let start = scaling::workers_to_start(
            &self.policy(),
            self.live_workers(),
            self.in_flight(),
            self.queues.len(),
        );
        for _ in 0..start {
            self.start_worker(ctx);
        }
        start
    }

    /// Periodic upkeep: dead workers, stale queued jobs, idle workers, the minimum pool.
    fn maintain(&mut self, ctx: &mut Context<Self>) {
        self.reap_dead_workers();
        self.sweep_queue();
        self.check_drained();
        self.retire_idle_workers();
        self.grow_to_demand(ctx);
        self.dispatch(ctx);
    }

    /// Stops workers that idled past the idle timeout, down to the minimum.
    fn retire_idle_workers(&mut self) {
        let now = Instant::now();
        let loads: Vec<WorkerLoad> = self
            .workers
            .iter()
            .filter(|w| !w.retiring)
            .map(|w| WorkerLoad {
                id: w.id,
                in_flight: w.in_flight,
                idle_for: w
                    .idle_since
                    .map_or(Duration::ZERO, |at| now.saturating_duration_since(at)),
            })
            .collect();
        let retire = scaling::workers_to_retire(&self.policy(), &loads, self.queues.len());
        if retire.is_empty() {
            return;
        }
        self.workers.retain(|w| {
            if retire.contains(&w.id) {
                log::info!(
                    "Retiring idle claude worker {} of {} pool",
                    w.id,
                    self.config.worker_type
                );
                w.addr.do_send(Retire);
                false
            } else {
                true
            }
        });
        self.counters.workers_retired += retire.len() as u64;
    }

    fn status(&self) -> PoolStatus {
        PoolStatus {
            worker_type: self.config.worker_type.clone(),
            workers: self.live_workers(),
            min_workers: self.config.min_workers,
            max_workers: self.config.max_workers,
            worker_concurrency: self.config.worker_concurrency,
            queue_depth: self.queues.len(),
            queue_capacity: self.config.queue_capacity,
            in_flight: self.in_flight(),
            worker_detail: self
                .workers
                .iter()
                .map(|w| WorkerStatus {
                    id: w.id,
                    in_flight: w.in_flight,
                    retiring: w.retiring,
                })
                .collect(),
            models: self.queues.loads(),
            counters: self.counters.clone(),
        }
    }
}

impl Actor for SupervisorActor {
    type Context = Context<Self>;

    fn started(&mut self, ctx: &mut Context<Self>) {
        // Admission control is the queue capacity below, not the mailbox.
        ctx.set_mailbox_capacity(crate::MAILBOX_CAPACITY);
        for _ in 0..self.config.min_workers {
            self.start_worker(ctx);
        }
        ctx.run_interval(self.config.maintenance_interval, |act, ctx| {
            act.maintain(ctx)
        });
    }

    fn stopped(&mut self, _ctx: &mut Context<Self>) {
        for job in self.queues.drain() {
            job.answer(Err(InferError::ShuttingDown));
        }
        for arbiter in &self.arbiters {
            arbiter.stop();
        }
    }
}

impl Handler<Enqueue> for SupervisorActor {
    type Result = ();

    fn handle(&mut self, msg: Enqueue, ctx: &mut Context<Self>) {
        let job = msg.0;
        let now = Instant::now();
        // 0. Shutting down: nothing new.
        if !self.accepting {
            job.answer(Err(InferError::ShuttingDown));
            return;
        }
        // 1. Bounded: past the capacity, refuse.
        if self.queues.len() >= self.config.queue_capacity {
            self.counters.rejected_queue_full += 1;
            job.answer(Err(InferError::Overloaded {
                reason: format!(
                    "the {} queue is full ({} requests waiting)",
                    self.config.worker_type,
                    self.queues.len()
                ),
                retry_after: Duration::from_secs(1),
            }));
            return;
        }
        // 2. At the model's pace, could it start and finish before its deadline?
        if let Err(wait) = self.queues.admit(&job, now, self.config.max_queue_wait) {
            self.counters.rejected_deadline += 1;
            let error = overloaded(&job, wait, now);
            job.answer(Err(error));
            return;
        }
        self.counters.admitted += 1;
        self.queues.push_back(job);
        self.dispatch(ctx);
    }
}

/// The refusal for a job that would start its call only after `wait`, too late for its deadline.
fn overloaded(job: &Job, wait: Duration, now: Instant) -> InferError {
    let left = job.deadline().saturating_duration_since(now);
    InferError::Overloaded {
        reason: format!(
            "{} is at its Bedrock quota: this request would wait about {:.1} s for its turn, \
             too long for its deadline {:.1} s away",
            job.request().model,
            wait.as_secs_f64(),
            left.as_secs_f64()
        ),
        // When the backlog ahead will have drained enough for the same deadline.
        retry_after: wait.saturating_sub(left).max(Duration::from_secs(1)),
    }
}

impl Handler<Requeue> for SupervisorActor {
    type Result = ();

    fn handle(&mut self, msg: Requeue, ctx: &mut Context<Self>) {
        self.counters.requeued += 1;
        self.queues.push_front(msg.0);
        self.reap_dead_workers();
        self.maintain(ctx);
    }
}

impl Handler<JobDone> for SupervisorActor {
    type Result = ();

    fn handle(&mut self, msg: JobDone, ctx: &mut Context<Self>) {
        let now = Instant::now();
        self.queues.done(&msg.model);
        if let Some(slot) = self.workers.iter_mut().find(|w| w.id == msg.worker) {
            slot.in_flight = slot.in_flight.saturating_sub(1);
            if slot.in_flight == 0 {
                slot.idle_since = Some(now);
            }
            if msg.end == JobEnd::Panicked && !slot.retiring {
                log::error!(
                    "a job on claude worker {} panicked; retiring the worker and starting a new one",
                    slot.id
                );
                slot.retiring = true;
                slot.addr.do_send(Retire);
                self.counters.worker_failures += 1;
            }
        }
        match msg.end {
            JobEnd::Answered => self.counters.completed += 1,
            JobEnd::Abandoned => self.counters.abandoned_in_flight += 1,
            JobEnd::Panicked => {}
        }
        self.workers.retain(|w| !(w.retiring && w.in_flight == 0));
        if msg.end == JobEnd::Panicked {
            self.maintain(ctx);
        } else {
            self.dispatch(ctx);
        }
        self.check_drained();
    }
}

/// Begins shutdown: refuse new jobs; the answer completes once nothing is queued or in flight.
#[derive(Message)]
#[rtype(result = "oneshot::Receiver<()>")]
pub struct Drain;

/// Ends shutdown: answer every job still queued or running with a shutting-down error.
/// Answers how many were queued and how many were running.
#[derive(Message)]
#[rtype(result = "(usize, usize)")]
pub struct Abort;

impl SupervisorActor {
    /// Tells a waiting [`Drain`] when the pool is empty.
    fn check_drained(&mut self) {
        if !self.accepting && self.queues.is_empty() && self.in_flight() == 0 {
            if let Some(drained) = self.drained.take() {
                let _ = drained.send(());
            }
        }
    }
}

impl Handler<Drain> for SupervisorActor {
    type Result = MessageResult<Drain>;

    fn handle(&mut self, _msg: Drain, _ctx: &mut Context<Self>) -> Self::Result {
        self.accepting = false;
        let (tx, rx) = oneshot::channel();
        self.drained = Some(tx);
        self.check_drained();
        MessageResult(rx)
    }
}

impl Handler<Abort> for SupervisorActor {
    type Result = MessageResult<Abort>;

    fn handle(&mut self, _msg: Abort, _ctx: &mut Context<Self>) -> Self::Result {
        self.accepting = false;
        let queued = self.queues.drain();
        let counts = (queued.len(), self.in_flight());
        for job in queued {
            job.answer(Err(InferError::ShuttingDown));
        }
        let _ = self.stop.send(true);
        MessageResult(counts)
    }
}

impl Handler<RateUpdate> for SupervisorActor {
    type Result = ();

    fn handle(&mut self, msg: RateUpdate, ctx: &mut Context<Self>) {
        self.queues
            .set_pace(&msg.model, msg.calls_per_sec, msg.resume_at, msg.latency);
        // A higher pace may let more of the model's jobs hold slots.
        self.dispatch(ctx);
    }
}

impl Handler<GetPoolStatus> for SupervisorActor {
    type Result = PoolStatus;

    fn handle(&mut self, _msg: GetPoolStatus, _ctx: &mut Context<Self>) -> PoolStatus {
        self.status()
    }
}

/// Makes one live worker's actor panic (test builds only). Answers whether there was one.
#[cfg(feature = "test-hooks")]
#[derive(Message)]
#[rtype(result = "bool")]
pub struct CrashWorker;

#[cfg(feature = "test-hooks")]
impl Handler<CrashWorker> for SupervisorActor {
    type Result = bool;

    fn handle(&mut self, _msg: CrashWorker, _ctx: &mut Context<Self>) -> bool {
        match self.workers.iter().find(|w| !w.retiring) {
            Some(slot) => {
                slot.addr.do_send(crate::actor::worker::Crash);
                true
            }
            None => false,
        }
    }
}
