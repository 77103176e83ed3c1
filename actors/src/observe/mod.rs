//! Layer 4, what operators read: [`metrics`] (every Prometheus metric name, label and bucket,
//! and the recording calls the workers and the HTTP layer make), [`activity`] (the per-model
//! rates, latencies and chart the metrics feed) and [`summary`] (the per-model rows `/status`
//! shows).
//!
//! The actors record into these types; these types never address an actor.
//!
//! May import: [`crate::flow`], [`crate::backend`] and [`crate::policy`]. Never the actors or
//! the broker.

pub mod activity;
pub mod metrics;
pub mod status;
pub mod summary;
