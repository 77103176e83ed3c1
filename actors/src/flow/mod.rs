//! The data that flows (layer 1 of 5, the bottom): a validated request and its reply or
//! error, the job that carries it through a pool and answers it exactly once, a streamed
//! reply's channel, the request's trace, and the token usage Bedrock reports.
//!
//! - [`request`], the request, its reply and its errors ([`request::InferRequest`],
//!   [`request::InferReply`], [`request::InferError`]).
//! - [`job`], the admitted request with the only sender of its answer ([`job::Job`]), and
//!   the message it sends home when dropped unanswered ([`job::Requeue`]).
//! - [`stream`], the head, events and terminal item of a streamed reply.
//! - [`trace`], the request's id and what the broker learns about it, shared with the HTTP
//!   layer ([`trace::RequestTrace`]).
//! - [`usage`], the token counts of one call ([`usage::Usage`]).
//!
//! May import: nothing else in this crate. Every other layer reads it.

pub mod job;
pub mod request;
pub mod stream;
pub mod trace;
pub mod usage;
