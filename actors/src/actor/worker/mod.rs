//! ClaudeWorker: runs jobs against Bedrock, several at a time.
//!
//! For each job the worker runs the attempt loop: ask the [`ThrottleActor`] for a grant, sleep
//! the granted delay (never past the deadline; a grant without a slot means "ask again
//! later", which costs no attempt), call InvokeModel with what is left of the deadline,
//! report the outcome, and on failure ask [`crate::policy::retry`] whether to go again. No call is
//! sent without a slot the throttle granted. A streamed job runs the same steps with
//! InvokeModelWithResponseStream and reads its events (`streaming.rs`); the steps both loops
//! share are in `attempt.rs`.
//! If the caller goes away, the loop stops at once: no call is sent for a client that left.
//! If the broker shuts down and its drain time runs out, the job is answered with a
//! shutting-down error instead of being dropped.
//!
//! Each job runs as its own task on the worker's arbiter (`actix::spawn`), not as a future
//! inside the actor's context: actix polls every future of a context whenever any of them
//! wakes, which costs O(jobs) per event with hundreds of calls in flight. A task also makes
//! one job the failure domain: a panic inside it drops only that job, whose `Drop` re-queues
//! or answers it, while a guard tells the supervisor, which replaces the worker.

mod attempt;
mod streaming;

use std::sync::Arc;
use std::time::Duration;

use actix::prelude::*;
use tokio::time::Instant;

use crate::actor::supervisor::{JobDone, JobEnd, SupervisorActor};
use crate::actor::throttle::{CallOutcome, ThrottleActor, ThrottleGates};
use crate::actor::worker::attempt::{failure_outcome, Attempts};
use crate::backend::bedrock::{BedrockBackend, BedrockError, BedrockReply};
use crate::flow::job::{CallMarker, Job};
use crate::flow::request::{InferError, InferReply, InferRequest, InferResult};
use crate::observe::metrics::Metrics;
use crate::policy::retry::RetryPolicy;

/// What a worker needs to run jobs; cloned into every worker of a pool.
#[derive(Clone)]
pub struct WorkerDeps {
    /// The shared throttle: calls ask it first when its gates say so, and report to it.
    pub throttle: Addr<ThrottleActor>,
    /// Which models need a grant before a call (written by the throttle).
    pub gates: ThrottleGates,
    /// The Bedrock client (clones share one connection pool).
    pub backend: BedrockBackend,
    /// Which failures to retry and how long to pause.
    pub retry: RetryPolicy,
    /// Turns true when the broker gives up on the jobs still running (shutdown timeout).
    pub stop: tokio::sync::watch::Receiver<bool>,
    /// A stream with no event for this long is cut (retried if none of its content was sent).
    pub stream_idle_timeout: Duration,
    /// Where each call is recorded.
    pub metrics: Metrics,
}

/// A worker of the `claude` pool.
pub struct ClaudeWorker {
    /// Id given by the supervisor; in logs and `/status`.
    id: u64,
    /// Pool name, for the seed's creation log line.
    worker_type: String,
    /// Calls this worker may hold, for the creation log line.
    concurrency: usize,
    /// Where `JobDone` goes.
    supervisor: Addr<SupervisorActor>,
    /// Throttle, backend and retry policy.
    deps: WorkerDeps,
}

impl ClaudeWorker {
    /// A worker that reports to `supervisor`.
    pub fn new(
        id: u64,
        worker_type: String,
        concurrency: usize,
        supervisor: Addr<SupervisorActor>,
        deps: WorkerDeps,
    ) -> ClaudeWorker {
        ClaudeWorker {
            id,
            worker_type,
            concurrency,
            supervisor,
            deps,
        }
    }
}

impl Actor for ClaudeWorker {
    type Context = Context<Self>;

    fn started(&mut self, ctx: &mut Context<Self>) {
        // The supervisor bounds what it sends; the mailbox must not refuse it.
        ctx.set_mailbox_capacity(crate::MAILBOX_CAPACITY);
        log::info!(
            "Created claude worker for {} pool (worker {}, up to {} concurrent calls)",
            self.worker_type,
            self.id,
            self.concurrency
        );
    }

    fn stopped(&mut self, _ctx: &mut Context<Self>) {
        log::info!(
            "Stopped claude worker {} of {} pool",
            self.id,
            self.worker_type
        );
    }
}

/// Runs one job.
#[derive(Message)]
#[rtype(result = "()")]
pub struct RunJob(pub Job);

/// Stops the worker; jobs it already started run to completion.
#[derive(Message)]
#[rtype(result = "()")]
pub struct Retire;

impl Handler<RunJob> for ClaudeWorker {
    type Result = ();

    fn handle(&mut self, msg: RunJob, _ctx: &mut Context<Self>) {
        let guard = InFlightGuard {
            supervisor: self.supervisor.clone(),
            worker: self.id,
            model: msg.0.request().model.clone(),
            end: JobEnd::Panicked,
        };
        actix::spawn(serve(msg.0, self.deps.clone(), guard));
    }
}

impl Handler<Retire> for ClaudeWorker {
    type Result = ();

    fn handle(&mut self, _msg: Retire, ctx: &mut Context<Self>) {
        ctx.stop();
    }
}

/// Makes the worker's actor panic, as a bug in a handler would (test builds only).
#[cfg(feature = "test-hooks")]
#[derive(Message)]
#[rtype(result = "()")]
pub struct Crash;

#[cfg(feature = "test-hooks")]
impl Handler<Crash> for ClaudeWorker {
    type Result = ();

    fn handle(&mut self, _msg: Crash, _ctx: &mut Context<Self>) {
        panic!("test hook: claude worker {} crashed", self.id);
    }
}

/// Tells the supervisor a job left this worker, however it left: the task may end normally
/// or unwind from a panic, and either way the slot it held must be freed.
pub(crate) struct InFlightGuard {
    /// Receives `JobDone`.
    supervisor: Addr<SupervisorActor>,
    /// The worker whose slot this job holds.
    worker: u64,
    /// The job's model.
    model: Arc<str>,
    /// How the job ended; stays `Panicked` unless the task finishes normally.
    end: JobEnd,
}

impl InFlightGuard {
    /// Frees the slot now, reporting how the job ended.
    pub(crate) fn finish(mut self, end: JobEnd) {
        self.end = end;
    }
}

impl Drop for InFlightGuard {
    fn drop(&mut self) {
        self.supervisor.do_send(JobDone {
            worker: self.worker,
            model: self.model.clone(),
            end: self.end,
        });
    }
}

/// Runs `job` to its answer, or stops when its caller leaves.
async fn serve(job: Job, deps: WorkerDeps, guard: InFlightGuard) {
    if job.is_stream() {
        return crate::actor::worker::streaming::serve_stream(job, deps, guard).await;
    }
    serve_whole(job, deps, guard).await
}

/// Runs a job answered whole (InvokeModel).
async fn serve_whole(mut job: Job, deps: WorkerDeps, guard: InFlightGuard) {
    let request = job.request().clone();
    let marker = job.call_marker();
    let deadline = job.deadline();
    let mut stop = deps.stop.clone();
    let outcome = tokio::select! {
        result = attempt_loop(&request, deadline, &marker, &deps) => Some(result),
        _ = job.abandoned() => None,
        _ = stop.wait_for(|stopped| *stopped) => Some(Err(InferError::ShuttingDown)),
    };
    // Free the slot before answering, so a caller that asks `/status` after its answer sees
    // the job gone from the pool.
    match outcome {
        Some(result) => {
            guard.finish(JobEnd::Answered);
            job.answer(result);
        }
        None => {
            guard.finish(JobEnd::Abandoned);
            log::debug!(
                request_id = request.trace.id();
                "job {} abandoned by its caller; its attempts stopped",
                job.id()
            );
            job.discard();
        }
    }
}

/// Calls Bedrock (InvokeModel) until success, a final failure, exhausted retries or the
/// deadline.
async fn attempt_loop(
    request: &Arc<InferRequest>,
    deadline: Instant,
    marker: &CallMarker,
    deps: &WorkerDeps,
) -> InferResult {
    let mut attempts = Attempts::new(request, deadline, deps);
    loop {
        // 1-2. A slot from the shared throttle, its delay slept.
        let granted_tokens = attempts.slot().await?;
        // 3. Call Bedrock with what is left of the deadline.
        test_hook(&request.model, "before-call");
        marker.mark();
        test_hook(&request.model, "after-mark");
        attempts.calls += 1;
        let sent_at = Instant::now();
        let in_flight = deps.metrics.call_started(&request.model);
        let result = deps
            .backend
            .invoke(&request.model, attempts.body().to_vec(), deadline - sent_at)
            .await;
        drop(in_flight);
        observe_call(deps, request, &result, sent_at.elapsed());
        // 4. Report the outcome to the throttle.
        let outcome = match &result {
            Ok(reply) => {
                let usage = reply.usage.unwrap_or_default();
                CallOutcome::Success {
                    input_tokens: usage.input_tokens,
                    output_tokens: usage.output_tokens,
                    cache_write_tokens: usage.cache_write_tokens,
                }
            }
            Err(e) => failure_outcome(e),
        };
        attempts.report(outcome, sent_at.elapsed(), granted_tokens);
        // 5. Answer, or decide about a retry.
        match result {
            Ok(reply) => {
                return Ok(InferReply {
                    text: reply.text,
                    model: reply.model,
                    stop_reason: reply.stop_reason,
                    usage: reply.usage,
                    request_id: reply.request_id,
                    attempts: attempts.calls,
                    body: reply.body,
                })
            }
            Err(error) => attempts.after_failure(error).await?,
        }
    }
}

/// Records one finished InvokeModel call: its metrics, and on the request's trace the
/// attempt, Bedrock's request id and, for a success, the model that answered and its usage.
fn observe_call(
    deps: &WorkerDeps,
    request: &InferRequest,
    result: &Result<BedrockReply, BedrockError>,
    took: Duration,
) {
    deps.metrics.invoke_finished(&request.model, result, took);
    match result {
        Ok(reply) => {
            request.trace.attempt_made(reply.request_id.as_deref());
            request.trace.succeeded(&reply.model, reply.usage);
        }
        Err(error) => request.trace.attempt_made(error.request_id.as_deref()),
    }
}

/// Panics on purpose when a test asks for it through the model name (test builds only):
/// a model named `test-hook/panic-<point>/<anything>` panics at that point of the attempt
/// loop the first time that exact name gets there, and runs normally afterwards.
#[cfg(feature = "test-hooks")]
pub(crate) fn test_hook(model: &str, point: &str) {
    use std::collections::HashSet;
    use std::sync::Mutex;
    static FIRED: Mutex<Option<HashSet<String>>> = Mutex::new(None);
    let Some(rest) = model.strip_prefix("test-hook/panic-") else {
        return;
    };
    if rest.split('/').next() != Some(point) {
        return;
    }
    let first = FIRED
        .lock()
        .unwrap_or_else(|poisoned| poisoned.into_inner())
        .get_or_insert_with(HashSet::new)
        .insert(model.to_string());
    if first {
        panic!("test hook: panic {point} for {model}");
    }
}

#[cfg(not(feature = "test-hooks"))]
pub(crate) fn test_hook(_model: &str, _point: &str) {}
