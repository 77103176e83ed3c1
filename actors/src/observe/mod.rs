//! What operators read (layer 4 of 5):
//!
//! - [`metrics`], every Prometheus metric name, label and bucket, and the recording calls the
//!   workers and the HTTP layer make.
//! - [`activity`], the per-model rates, latencies and five-minute chart the metrics feed.
//! - [`summary`], the per-model rows `/status` shows, built from the pools, the throttle and
//!   the metrics.
//! - [`status`], the types `/status` shows: the actors fill them in, the metrics and the
//!   summary read them, so they live here, below the actors.
//!
//! The actors record into these types; nothing here addresses an actor.
//!
//! May import: [`crate::flow`], [`crate::backend`] and [`crate::policy`]. Never the actors or
//! the broker.

pub mod activity;
pub mod metrics;
pub mod status;
pub mod summary;
