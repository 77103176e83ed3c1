//! Layer 5, the actors, one folder or file per actor with its messages, its parts and its
//! per-model state:
//!
//! - [`router`]: [`router::Router`] takes `Infer` and `InferStream` and picks the pool.
//! - [`supervisor`]: [`supervisor::SupervisorActor`] owns one pool's queue
//!   ([`supervisor::queue`]) and workers.
//! - [`worker`]: [`worker::ClaudeWorker`] runs a job's attempt loop, buffered or streamed.
//! - [`throttle`]: [`throttle::ThrottleActor`] owns every model's throttle state
//!   ([`throttle::model`]).
//!
//! A message lives with the actor that receives it. Senders import it from there: the router
//! sends to a supervisor, a supervisor to its workers, a worker to its supervisor and to the
//! throttle, the throttle to nobody.
//!
//! May import: every layer below, [`crate::flow`], [`crate::backend`], [`crate::policy`] and
//! [`crate::observe`]. Never the broker.

pub mod router;
pub mod supervisor;
pub mod throttle;
pub mod worker;
