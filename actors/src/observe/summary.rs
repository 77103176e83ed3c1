//! The per-model view `/status` shows under `models` and the status page draws: for each model,
//! its queue, its calls in flight, its pace against the measured quota, its brake, and its
//! recent activity (rates, latencies, the five-minute chart), in one row.
//!
//! `/status` also lists the pools' per-model queues and the throttle's per-model state, keyed
//! by model id, for every model ever asked for. This view is keyed like the metrics (see
//! [`super::metrics`]): models with a label of their own by id, every other model summed into
//! one `other` row, so it stays small whatever clients send.

use std::collections::BTreeMap;
use std::sync::Arc;

use crate::observe::metrics::{throttle_state, Metrics, OTHER};
use crate::observe::status::{ModelSummary, ModelThrottleStatus, PaceStatus, PoolStatus};

impl ModelSummary {
    fn empty(model: &str) -> ModelSummary {
        ModelSummary {
            model: model.to_string(),
            queued: 0,
            jobs_in_flight: 0,
            calls_in_flight: 0,
            state: None,
            pace: PaceStatus::default(),
            consecutive_throttles: 0,
            brake_delay_ms: 0,
            recent: None,
        }
    }
}

/// The rows for these pools and throttle states, ordered by model, `other` last.
pub fn summarize(
    pools: &[PoolStatus],
    throttle: &[ModelThrottleStatus],
    metrics: &Metrics,
) -> Vec<ModelSummary> {
    let mut rows: BTreeMap<Arc<str>, ModelSummary> = BTreeMap::new();
    // 1. Queues, summed per label.
    for pool in pools {
        for load in &pool.models {
            let label = metrics.model_label(&load.model);
            let row = rows
                .entry(label.clone())
                .or_insert_with(|| ModelSummary::empty(&label));
            row.queued += load.queued;
            row.jobs_in_flight += load.in_flight;
        }
    }
    // 2. The throttle, for models with their own row.
    for t in throttle {
        let label = metrics.model_label(&t.model);
        if &*label == OTHER {
            rows.entry(label.clone())
                .or_insert_with(|| ModelSummary::empty(OTHER));
            continue;
        }
        let row = rows
            .entry(label.clone())
            .or_insert_with(|| ModelSummary::empty(&label));
        row.state = Some(throttle_state(t));
        row.pace = t.pace;
        row.consecutive_throttles = t.consecutive_throttles;
        row.brake_delay_ms = t.current_delay_ms;
    }
    // 3. Recent activity and calls in flight, by label.
    for (label, recent) in metrics.recent_activity() {
        rows.entry(label.clone())
            .or_insert_with(|| ModelSummary::empty(&label))
            .recent = Some(recent);
    }
    for (label, row) in rows.iter_mut() {
        row.calls_in_flight = metrics.calls_in_flight(label);
    }
    // 4. `other` last.
    let other = rows.remove(OTHER);
    rows.into_values().chain(other).collect()
}
