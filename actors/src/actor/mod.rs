//! The actors (layer 5 of 5), one folder or file per actor, each holding the messages it
//! receives and its own parts:
//!
//! - [`router`], the [`router::Router`]: takes `Infer` and `InferStream` and picks the pool.
//! - [`supervisor`], the [`supervisor::SupervisorActor`]: owns one pool's queue
//!   ([`supervisor::queue`]) and its workers.
//! - [`worker`], the [`worker::ClaudeWorker`]: runs a job's attempt loop, buffered or
//!   streamed.
//! - [`throttle`], the [`throttle::ThrottleActor`]: owns every model's throttle state
//!   ([`throttle::model`]).
//!
//! A sender imports the message from the actor that receives it: the router sends to a
//! supervisor, a supervisor to its workers, a worker to its supervisor and to the throttle,
//! the throttle to nobody. A supervisor and its workers are the one pair that import each
//! other (it starts them; they report back to it).
//!
//! May import: every layer below, [`crate::flow`], [`crate::backend`], [`crate::policy`] and
//! [`crate::observe`]. Never the broker.

pub mod router;
pub mod supervisor;
pub mod throttle;
pub mod worker;
