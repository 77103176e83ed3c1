//! The actor system behind ModelServer: it queues inference requests, runs them on an
//! autoscaling pool of Claude workers, and keeps the whole pool inside the Bedrock quota.
//!
//! # Architecture
//!
//! ```text
//!  HTTP handler --Infer{request, deadline, reply} or InferStream{..}--> Router
//!  Router --Enqueue(Job)--> SupervisorActor (one per worker type: "claude")
//!     SupervisorActor: owns the FIFO queue and every worker's in-flight count;
//!                      spawns ClaudeWorkers on a small pool of arbiters, retires idle ones,
//!                      replaces dead ones.
//!  SupervisorActor --RunJob(Job)--> ClaudeWorker
//!  ClaudeWorker --Acquire{model}--> ThrottleActor --Grant{delay}--> (the worker sleeps the delay)
//!  ClaudeWorker --InvokeModel or InvokeModelWithResponseStream--> Bedrock Runtime
//!                (aws-sdk-bedrockruntime, see `bedrock`)
//!  ClaudeWorker --Report{model, outcome}--> ThrottleActor ; --JobDone--> SupervisorActor
//!  Job::answer -> oneshot -> HTTP handler -> HTTP response
//!  (a stream: head, events, terminal item -> StreamReceiver -> HTTP handler -> streamed body)
//! ```
//!
//! What operators read is kept beside the actors: [`metrics`] (every Prometheus metric name,
//! label and bucket, and the recording calls the workers and the HTTP layer make), [`trace`]
//! (a request's id and what the broker learns about it, shared with the HTTP layer), and
//! [`activity`] and [`summary`] (the per-model rates and latencies `/status` shows).
//!
//! Pure policies live apart from the actors that apply them, so they can be unit-tested
//! without a runtime: [`backoff`] (the seed's shared throttle schedule), [`scaling`] (how
//! many workers the pool wants), [`retry`] (which failures are retried, and the pause
//! before the retry) and [`betas`] (which beta flags to drop when Bedrock refuses them).
//!
//! # Invariants
//!
//! - Only [`ThrottleActor`] reads or changes throttle state. It answers at once and never
//!   sleeps; callers sleep the delay it grants.
//! - No actor calls `ctx.wait` or blocks its thread; async work runs as spawned futures.
//!   Queue depth is measured in one place, the [`SupervisorActor`] (actix has no
//!   mailbox-length API).
//! - Every admitted request is answered exactly once: a response, or an error naming the
//!   cause. A [`Job`] carries the only sender of its answer, and dropping an unanswered job
//!   is never silent: if no Bedrock call was made for it, it goes back to its supervisor's
//!   queue; otherwise its caller gets an error. So a dead worker's jobs are re-queued or
//!   answered, never lost.
//! - A streamed request is answered exactly once too: its caller gets exactly one head
//!   (committed, or a refusal it can still answer with an HTTP status) and, after a commit,
//!   exactly one terminal item (done, or failed) after its events; see [`stream`]. Dropping a
//!   streamed job is never silent either: uncommitted with no call made, it is re-queued;
//!   uncommitted after a call, refused with an error; committed and unfinished, ended with a
//!   `Failed` item, so a stream is never cut off looking complete. A caller that leaves
//!   (drops its receiver) stops the job's Bedrock stream at once.
//! - The SDK's own retries are disabled (`RetryConfig::disabled()`): the worker's attempt
//!   loop, bounded by `max_retries` and the request deadline, is the only retry loop, and
//!   [`retry`] is the only place that decides what is retried.

/// Mailbox capacity of every actor. Senders that use `do_send` ignore it; `send` waits when a
/// mailbox is this full. Admission is limited by the queue capacity, not by mailboxes.
pub const MAILBOX_CAPACITY: usize = 1 << 16;

pub mod activity;
mod attempt;
pub mod backoff;
pub mod bedrock;
pub mod betas;
pub mod broker;
pub mod burndown;
pub mod job;
pub mod metrics;
pub mod model_throttle;
pub mod pacing;
pub mod queue;
pub mod request;
pub mod retry;
pub mod router;
pub mod scaling;
pub mod stream;
mod streaming;
pub mod summary;
pub mod supervisor;
pub mod throttle;
pub mod trace;
pub mod worker;

pub use bedrock::{BedrockBackend, BedrockConfig};
pub use broker::{Broker, BrokerConfig, BrokerStatus};
pub use job::Job;
pub use metrics::Metrics;
pub use request::{InferError, InferReply, InferRequest, InferResult};
pub use router::{Infer, InferStream, Router};
pub use stream::{stream_channel, StreamItem, StreamReceiver, StreamSender, StreamSummary};
pub use supervisor::{PoolConfig, SupervisorActor};
pub use throttle::{ThrottleActor, ThrottleConfig};
pub use trace::RequestTrace;
pub use worker::ClaudeWorker;
