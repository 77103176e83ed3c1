//! Layer 1, the data that flows: a validated request and its reply or error, the job that
//! carries it through the pool and answers it exactly once, a streamed reply's channel, and
//! the request's trace (its id and what the broker learns about it, shared with the HTTP
//! layer).
//!
//! - [`request`]: [`request::InferRequest`], [`request::InferReply`], [`request::InferError`].
//! - [`job`]: [`job::Job`], the only sender of a request's answer.
//! - [`stream`]: the head, events and terminal item of a streamed reply.
//! - [`trace`]: [`trace::RequestTrace`].
//!
//! May import: nothing else in this crate. It is the bottom layer, read by every other.

pub mod job;
pub mod request;
pub mod stream;
pub mod trace;
pub mod usage;
