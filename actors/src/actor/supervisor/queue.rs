//! The supervisor's queue: one FIFO per model, served round-robin, with the estimates that
//! let the broker refuse at once a request that cannot start before its deadline.
//!
//! - **Per-model FIFOs**: a model held back by its quota does not block the others; models
//!   with waiting jobs take turns for free worker slots.
//! - **Dispatch cap**: while a model is paced (its rate is known from the ThrottleActor's
//!   [`crate::actor::throttle::RateUpdate`]s), at most `pace * (latency + 0.5 s)` + 4 of its jobs
//!   hold worker slots; the rest wait here, in FIFO order (the pacer's "ask again" loop is
//!   not), where a caller that leaves costs nothing and where the wait can be estimated.
//!   Unpaced models are limited by the worker slots only.
//! - **Wait estimate** ([`start_wait`]): a job with `n` jobs of its model ahead of it (queued
//!   or holding a slot) starts its call after `(n - pace * latency) / pace` seconds: the jobs
//!   whose calls are already at Bedrock do not wait for the pace. A request whose estimated
//!   start plus one latency is past its deadline (or whose wait exceeds the optional
//!   `--max-queue-wait`) is refused on arrival (503 with `Retry-After`); admission assumes
//!   the pace may drop by 20% first, so the pacer's cuts do not strand admitted jobs.
//!   A queued job is shed (503) as soon as, at the current pace, it can no longer start in
//!   time (the pace dropped by more), instead of waiting for its deadline. A request waiting
//!   here has made no call, so it has used none of its retries.

use std::collections::{HashMap, VecDeque};
use std::sync::Arc;
use std::time::Duration;

use tokio::time::Instant;

use crate::flow::job::Job;
use crate::observe::status::ModelLoad;

/// Slots a paced model may hold beyond what one second of its pace and its calls in flight need.
const DISPATCH_SLACK: usize = 4;

/// Admission assumes the pace may drop by this fraction before the job's turn, so that the
/// pacer's small cuts do not make admitted jobs miss their deadline (and be shed later).
pub const ADMISSION_HEADROOM: f64 = 0.20;

/// How long a job waits for its call to start with `ahead` jobs of its model before it
/// (queued or holding a worker slot), at `pace` calls/s with calls taking `latency`.
pub fn start_wait(ahead: usize, pace: f64, latency: Duration) -> Duration {
    let at_bedrock = pace * latency.as_secs_f64();
    let waiting = (ahead as f64 - at_bedrock).max(0.0);
    Duration::from_secs_f64(waiting / pace.max(f64::MIN_POSITIVE))
}

/// How long a job with `ahead` jobs of its model before it waits for its call to start at
/// `pace`: [`start_wait`], or, while the quota's window is spent until `resume_at`, the time
/// until it moves plus the pace's spacing for every job ahead (none of them is at Bedrock).
pub fn wait_for(
    ahead: usize,
    pace: f64,
    latency: Duration,
    resume_at: Option<Instant>,
    now: Instant,
) -> Duration {
    match resume_at.filter(|at| *at > now) {
        Some(at) => at - now + Duration::from_secs_f64(ahead as f64 / pace.max(f64::MIN_POSITIVE)),
        None => start_wait(ahead, pace, latency),
    }
}

/// How many of a paced model's jobs may hold worker slots: its calls at Bedrock, plus half a
/// second of its pace waiting for slots (the pacer reserves a quarter of a second ahead).
/// Jobs beyond wait here in FIFO order; the pacer's "ask again" loop is not FIFO.
pub fn dispatch_cap(pace: f64, latency: Duration) -> usize {
    (pace * (latency.as_secs_f64() + 0.5)).ceil() as usize + DISPATCH_SLACK
}

/// Whether a job that starts its call after `wait` misses its deadline (the call takes
/// `latency`) or waits longer than `max_wait`.
fn too_late(
    job: &Job,
    now: Instant,
    wait: Duration,
    latency: Duration,
    max_wait: Option<Duration>,
) -> bool {
    now + wait + latency > job.deadline() || max_wait.is_some_and(|max| wait > max)
}

/// Why a queued job left the queue without running.
#[derive(Debug, Clone, Copy, PartialEq)]
pub enum Removal {
    /// Its caller went away.
    Abandoned,
    /// Its deadline passed.
    Expired,
    /// At the model's pace it cannot start before its deadline; it would start after `wait`.
    CannotStartInTime { wait: Duration },
}

/// One model's jobs and what is known of its pace.
#[derive(Debug, Default)]
struct ModelQueue {
    /// Jobs waiting for a worker slot, oldest first.
    jobs: VecDeque<Job>,
    /// Its jobs holding worker slots.
    in_flight: usize,
    /// Calls per second its pace allows; `None` while unpaced.
    pace: Option<f64>,
    /// Its quota's window is spent: no call starts before this.
    resume_at: Option<Instant>,
    /// Typical latency of its calls.
    latency: Duration,
    /// Whether it is in the round-robin list.
    listed: bool,
}

impl ModelQueue {
    /// How long a job with `ahead` jobs before it waits for its call to start at `pace`.
    fn wait(&self, ahead: usize, pace: f64, now: Instant) -> Duration {
        wait_for(ahead, pace, self.latency, self.resume_at, now)
    }
}

/// Every model's queue.
#[derive(Debug, Default)]
pub struct ModelQueues {
    /// Queues by model id.
    models: HashMap<Arc<str>, ModelQueue>,
    /// Models with waiting jobs, in round-robin order.
    ready: VecDeque<Arc<str>>,
    /// Waiting jobs over all models.
    len: usize,
}

impl ModelQueues {
    /// Jobs waiting over all models.
    pub fn len(&self) -> usize {
        self.len
    }

    /// Whether no job waits.
    pub fn is_empty(&self) -> bool {
        self.len == 0
    }

    fn model(&mut self, model: &Arc<str>) -> &mut ModelQueue {
        self.models.entry(model.clone()).or_default()
    }

    fn list(&mut self, model: &Arc<str>) {
        let q = self.models.get_mut(model).expect("listed models exist");
        if !q.listed {
            q.listed = true;
            self.ready.push_back(model.clone());
        }
    }

    /// Adds a job behind its model's others.
    pub fn push_back(&mut self, job: Job) {
        let model = job.request().model.clone();
        self.model(&model).jobs.push_back(job);
        self.len += 1;
        self.list(&model);
    }

    /// Puts a job back in front of its model's others (it was handed back unrun).
    pub fn push_front(&mut self, job: Job) {
        let model = job.request().model.clone();
        self.model(&model).jobs.push_front(job);
        self.len += 1;
        self.list(&model);
    }

    /// The next job to run, taking models in turn and skipping those at their dispatch
    /// cap; the job counts as holding a slot until [`ModelQueues::done`].
    pub fn pop_next(&mut self) -> Option<Job> {
        let mut skipped = 0;
        while skipped < self.ready.len() {
            let model = self.ready.pop_front()?;
            let q = self.models.get_mut(&model).expect("listed models exist");
            if q.jobs.is_empty() {
                q.listed = false;
                continue;
            }
            if q.pace
                .is_some_and(|pace| q.in_flight >= dispatch_cap(pace, q.latency))
            {
                self.ready.push_back(model);
                skipped += 1;
                continue;
            }
            let job = q.jobs.pop_front().expect("checked non-empty");
            q.in_flight += 1;
            self.len -= 1;
            if q.jobs.is_empty() {
                q.listed = false;
            } else {
                self.ready.push_back(model);
            }
            return Some(job);
        }
        None
    }

    /// A job of `model` gave its slot back.
    pub fn done(&mut self, model: &Arc<str>) {
        if let Some(q) = self.models.get_mut(model) {
            q.in_flight = q.in_flight.saturating_sub(1);
        }
    }

    /// Records a model's pace, and when its spent quota window moves (if it is spent).
    pub fn set_pace(
        &mut self,
        model: &Arc<str>,
        pace: Option<f64>,
        resume_at: Option<Instant>,
        latency: Duration,
    ) {
        let q = self.model(model);
        q.pace = pace.filter(|p| *p > 0.0);
        q.resume_at = resume_at;
        q.latency = latency;
    }

    /// Whether a new `job` can start in time: `Err(wait)` with its estimated wait if, at its
    /// model's pace less the headroom, its call would start too late to finish before its
    /// deadline, or would wait longer than `max_wait`. Unpaced models admit everything.
    pub fn admit(
        &self,
        job: &Job,
        now: Instant,
        max_wait: Option<Duration>,
    ) -> Result<(), Duration> {
        let Some(q) = self.models.get(&job.request().model) else {
            return Ok(());
        };
        let Some(pace) = q.pace else {
            return Ok(());
        };
        let ahead = q.jobs.len() + q.in_flight;
        let wait = q.wait(ahead, pace * (1.0 - ADMISSION_HEADROOM), now);
        if too_late(job, now, wait, q.latency, max_wait) {
            Err(wait)
        } else {
            Ok(())
        }
    }

    /// Takes out the jobs that should not wait any longer, with the reason for each.
    pub fn sweep(&mut self, now: Instant, max_wait: Option<Duration>) -> Vec<(Job, Removal)> {
        let mut removed = Vec::new();
        for q in self.models.values_mut() {
            let waiting = std::mem::take(&mut q.jobs);
            for job in waiting {
                // The jobs kept so far are ahead of this one.
                let ahead = q.in_flight + q.jobs.len();
                let removal = if job.is_abandoned() {
                    Some(Removal::Abandoned)
                } else if job.deadline() <= now {
                    Some(Removal::Expired)
                } else {
                    q.pace.and_then(|pace| {
                        let wait = q.wait(ahead, pace, now);
                        too_late(&job, now, wait, q.latency, max_wait)
                            .then_some(Removal::CannotStartInTime { wait })
                    })
                };
                match removal {
                    Some(reason) => removed.push((job, reason)),
                    None => q.jobs.push_back(job),
                }
            }
        }
        self.len -= removed.len();
        removed
    }

    /// Every waiting job, emptying the queues.
    pub fn drain(&mut self) -> Vec<Job> {
        self.len = 0;
        self.ready.clear();
        let mut jobs = Vec::new();
        for q in self.models.values_mut() {
            q.listed = false;
            jobs.extend(q.jobs.drain(..));
        }
        jobs
    }

    /// Each model's load, for `/status`.
    pub fn loads(&self) -> Vec<ModelLoad> {
        let mut loads: Vec<ModelLoad> = self
            .models
            .iter()
            .map(|(model, q)| ModelLoad {
                model: model.to_string(),
                queued: q.jobs.len(),
                in_flight: q.in_flight,
                paced_calls_per_sec: q.pace,
                estimated_wait_ms: q.pace.map(|pace| {
                    q.wait(q.jobs.len() + q.in_flight, pace, Instant::now())
                        .as_millis() as u64
                }),
            })
            .collect();
        loads.sort_by(|a, b| a.model.cmp(&b.model));
        loads
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn wait_counts_only_the_jobs_not_already_at_bedrock() {
        let latency = Duration::from_millis(100);
        // 20/s with 100 ms calls: 2 calls at Bedrock; 42 ahead -> 40 waiting -> 2 s.
        assert_eq!(start_wait(42, 20.0, latency), Duration::from_secs(2));
        assert_eq!(start_wait(1, 20.0, latency), Duration::ZERO);
        assert_eq!(start_wait(0, 200.0, latency), Duration::ZERO);
    }

    #[test]
    fn a_spent_window_adds_the_time_until_it_moves() {
        let now = Instant::now();
        let latency = Duration::from_millis(100);
        assert_eq!(
            wait_for(10, 2.0, latency, Some(now + Duration::from_secs(30)), now),
            Duration::from_secs(35)
        );
        // Once it moved, the pace alone counts (0.2 calls at Bedrock at 2/s).
        assert_eq!(
            wait_for(10, 2.0, latency, Some(now), now),
            start_wait(10, 2.0, latency)
        );
    }

    #[test]
    fn dispatch_cap_covers_half_a_second_of_pace_plus_the_calls_in_flight() {
        assert_eq!(dispatch_cap(20.0, Duration::from_millis(100)), 12 + 4);
        assert_eq!(dispatch_cap(0.5, Duration::from_secs(5)), 3 + 4);
    }

    use crate::flow::job::Requeue;
    use crate::flow::request::{InferRequest, InferResult};
    use actix::prelude::*;
    use tokio::sync::oneshot;

    /// Takes hand-backs and drops them (answering them with an error).
    struct Sink;
    impl Actor for Sink {
        type Context = Context<Self>;
    }
    impl Handler<Requeue> for Sink {
        type Result = ();
        fn handle(&mut self, msg: Requeue, _: &mut Context<Self>) {
            msg.0.discard();
        }
    }

    fn job(
        home: &Addr<Sink>,
        model: &str,
        deadline: Instant,
    ) -> (Job, oneshot::Receiver<InferResult>) {
        let (tx, rx) = oneshot::channel();
        let request = InferRequest {
            worker_type: "claude".into(),
            model: Arc::from(model),
            body: Vec::new(),
            max_retries: 0,
            timeout: Duration::from_secs(10),
            reserved_tokens: 1,
            trace: Default::default(),
        };
        let job = Job::new(0, Arc::new(request), deadline, tx, home.clone().recipient());
        (job, rx)
    }

    #[actix::test]
    async fn models_take_turns_and_paced_ones_stop_at_their_cap() {
        let home = Sink.start();
        let later = Instant::now() + Duration::from_secs(60);
        let mut q = ModelQueues::default();
        let mut answers = Vec::new();
        for model in ["a", "a", "a", "b"] {
            let (j, rx) = job(&home, model, later);
            answers.push(rx);
            q.push_back(j);
        }
        let order: Vec<String> = (0..4)
            .map(|_| {
                let job = q.pop_next().unwrap();
                let model = job.request().model.to_string();
                job.discard();
                model
            })
            .collect();
        assert_eq!(order, ["a", "b", "a", "a"]);
        assert!(q.is_empty());
        // "c" paced at 1/s with 1 s calls may hold dispatch_cap = 2 + 4 = 6 slots.
        let c: Arc<str> = Arc::from("c");
        q.set_pace(&c, Some(1.0), None, Duration::from_secs(1));
        for _ in 0..8 {
            let (j, rx) = job(&home, "c", later);
            answers.push(rx);
            q.push_back(j);
        }
        let mut held = Vec::new();
        while let Some(j) = q.pop_next() {
            held.push(j);
        }
        assert_eq!(held.len(), 6);
        assert_eq!(q.len(), 2);
        q.done(&c);
        assert!(q.pop_next().is_some());
        for j in held {
            j.discard();
        }
    }

    #[actix::test]
    async fn sweep_removes_what_cannot_start_in_time_and_keeps_the_rest() {
        let home = Sink.start();
        let now = Instant::now();
        let mut q = ModelQueues::default();
        let m: Arc<str> = Arc::from("m");
        // 10 calls/s, 100 ms calls (1 at Bedrock): with k jobs ahead a job starts after
        // (k - 1) / 10 s and must start by 2.05 s, so k <= 21: 22 jobs can make it.
        q.set_pace(&m, Some(10.0), None, Duration::from_millis(100));
        let mut answers = Vec::new();
        for i in 0..30 {
            let (j, rx) = job(&home, "m", now + Duration::from_millis(2_150));
            answers.push((i, rx));
            q.push_back(j);
        }
        let (gone, rx) = job(&home, "m", now + Duration::from_secs(60));
        drop(rx);
        q.push_front(gone);
        let removed = q.sweep(now, None);
        let abandoned = removed
            .iter()
            .filter(|(_, r)| *r == Removal::Abandoned)
            .count();
        let late = removed
            .iter()
            .filter(|(_, r)| matches!(r, Removal::CannotStartInTime { .. }))
            .count();
        assert_eq!(abandoned, 1);
        assert_eq!(q.len(), 22);
        assert_eq!(late, 8);
        // At 8/s (the headroom) 0.8 calls are at Bedrock: (22 - 0.8) / 8 = 2.65 s: refused.
        let (newcomer, _rx) = job(&home, "m", now + Duration::from_millis(2_150));
        let wait = q.admit(&newcomer, now, None).unwrap_err();
        assert!((wait.as_secs_f64() - 21.2 / 8.0).abs() < 1e-6, "{wait:?}");
        let (patient, _rx) = job(&home, "m", now + Duration::from_secs(60));
        assert!(q.admit(&patient, now, None).is_ok());
        assert!(q
            .admit(&patient, now, Some(Duration::from_secs(2)))
            .is_err());
        newcomer.discard();
        patient.discard();
        for (job, _) in removed {
            job.discard();
        }
        for job in q.drain() {
            job.discard();
        }
    }
}
