//! The pure policies (layer 3 of 5): the rules the actors apply, as plain functions and small
//! state machines with no actix, no I/O and no clock of their own (callers pass `now`), so
//! each is unit-tested without a runtime. To change how the broker decides, open the file
//! here, not the actor that applies it.
//!
//! - [`pacing`], the per-model pacer: a lane for calls and one for tokens, each learning the
//!   quota from throttles and spacing calls under it.
//! - [`backoff`], the seed's shared throttle schedule (the brake behind the pacer).
//! - [`throttle_policy`], which of the two runs: both, the brake alone, or none.
//! - [`scaling`], how many workers the pool wants.
//! - [`retry`], which failures are retried, and the pause before the retry.
//! - [`betas`], which beta flags to drop when Bedrock refuses them.
//! - [`burndown`], how many quota tokens one output token of a model costs.
//!
//! Policies still to come belong here too, each in a file of its own: the tenants' fair
//! scheduler.
//!
//! May import: [`crate::flow`] (the data they decide about) and [`crate::backend`] (the kinds
//! of upstream failure). Never the operators' view, the actors or the broker.

pub mod backoff;
pub mod betas;
pub mod burndown;
pub mod pacing;
pub mod retry;
pub mod scaling;
pub mod throttle_policy;
