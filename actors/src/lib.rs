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
//!                (aws-sdk-bedrockruntime, see `backend::bedrock`)
//!  ClaudeWorker --Report{model, outcome}--> ThrottleActor ; --JobDone--> SupervisorActor
//!  Job::answer -> oneshot -> HTTP handler -> HTTP response
//!  (a stream: head, events, terminal item -> StreamReceiver -> HTTP handler -> streamed body)
//! ```
//!
//! ## Layers
//!
//! The crate is five folders, one per layer, and the broker that wires them. Imports go one
//! way, down: a file may import its own layer and the layers below it, never one above
//! (`tests/layers.rs` checks every `crate::` path). Inside `actor/`, an actor imports the
//! actors it sends messages to; a supervisor and its workers address each other (it starts
//! them, they report back to it), the one pair that goes both ways.
//!
//! ```text
//!  broker.rs   wires the actors and reads their status
//!     |
//!  actor/      router -> supervisor/{mod, queue} <-> worker/{mod, attempt, streaming}
//!     |        supervisor, worker -> throttle/{mod, model}
//!  observe/    summary -> metrics/{mod, snapshot} -> status -> activity
//!     |
//!  policy/     pacing, backoff, scaling, retry -> betas, throttle_policy
//!     |
//!  backend/    bedrock (the calls, and the kinds of their failures)
//!     |
//!  flow/       request, job, stream, trace, usage
//! ```
//!
//! - [`flow`], the data that flows: a request, the job that carries it and answers it once, a
//!   stream's channel, the trace, the token usage. Imports nothing else in the crate.
//! - [`backend`], the upstream call layer the workers use: Bedrock Runtime and the kinds of
//!   its failures. Imports `flow`.
//! - [`policy`], the pure policies, with no actix and no I/O, so each is unit-tested without
//!   a runtime: pacing, backoff, scaling, retry, betas (and the pacer's burndown and the
//!   tenants' fair scheduler, when they come). Imports `flow` and `backend`.
//! - [`observe`], what operators read: the metrics, the recent activity, the per-model
//!   summary and the status types `/status` shows (which the actors fill in and the metrics
//!   read, so they sit below both). Imports `flow`, `backend` and `policy`.
//! - [`actor`], the actors, each with the messages it receives and its own parts: the router,
//!   the supervisor with its queue, the worker with its attempt loop and streaming, the
//!   throttle with its per-model state. Imports every layer below.
//! - [`broker`] starts the actors in order and reads their status. Imports everything.
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
//!   exactly one terminal item (done, or failed) after its events; see [`flow::stream`]. Dropping a
//!   streamed job is never silent either: uncommitted with no call made, it is re-queued;
//!   uncommitted after a call, refused with an error; committed and unfinished, ended with a
//!   `Failed` item, so a stream is never cut off looking complete. A caller that leaves
//!   (drops its receiver) stops the job's Bedrock stream at once.
//! - The SDK's own retries are disabled (`RetryConfig::disabled()`): the worker's attempt
//!   loop, bounded by `max_retries` and the request deadline, is the only retry loop, and
//!   [`policy::retry`] is the only place that decides what is retried.

/// Mailbox capacity of every actor. Senders that use `do_send` ignore it; `send` waits when a
/// mailbox is this full. Admission is limited by the queue capacity, not by mailboxes.
pub const MAILBOX_CAPACITY: usize = 1 << 16;

pub mod actor;
pub mod backend;
pub mod broker;
pub mod flow;
pub mod observe;
pub mod policy;

pub use actor::router::{Infer, InferStream, Router};
pub use actor::supervisor::{PoolConfig, SupervisorActor};
pub use actor::throttle::{ThrottleActor, ThrottleConfig};
pub use actor::worker::ClaudeWorker;
pub use backend::bedrock::{BedrockBackend, BedrockConfig};
pub use broker::{Broker, BrokerConfig};
pub use flow::job::Job;
pub use flow::request::{InferError, InferReply, InferRequest, InferResult};
pub use flow::stream::{stream_channel, StreamItem, StreamReceiver, StreamSender, StreamSummary};
pub use flow::trace::RequestTrace;
pub use observe::metrics::Metrics;
pub use observe::status::BrokerStatus;
