//! The metrics of the state the actors own (pools, queues, workers, the pacer, the brake),
//! written at scrape time from the same snapshot `/status` shows, so the two never disagree
//! and nothing is recorded on the request path for them. Totals the pools keep (workers
//! started, requests admitted, refused, abandoned) are exposed as counters.
//!
//! Per-model series use the bounded model labels: labelled models by id; queue depths of every
//! other model are summed under `other`; paces and brakes (meaningless when summed) are
//! written for labelled models only.

use std::collections::BTreeMap;
use std::fmt;
use std::sync::Arc;

use prometheus_client::collector::Collector;
use prometheus_client::encoding::{DescriptorEncoder, EncodeLabelSet, EncodeMetric};
use prometheus_client::metrics::counter::ConstCounter;
use prometheus_client::metrics::gauge::ConstGauge;
use prometheus_client::metrics::MetricType::{self, Counter as C, Gauge as G};
use prometheus_client::registry::Unit;

use super::*;
use crate::observe::status::{ModelThrottleStatus, PoolStatus};

/// One scrape's snapshot of the pools and the throttle.
#[derive(Debug)]
pub(super) struct StatusCollector {
    /// Each pool's state.
    pub(super) pools: Vec<PoolStatus>,
    /// Each model's throttle state.
    pub(super) throttle: Vec<ModelThrottleStatus>,
    /// The metrics, for the models' labels.
    pub(super) labels: Metrics,
    /// `aws_region`.
    pub(super) region: Arc<str>,
    /// How many models have a label of their own.
    pub(super) model_labels: usize,
}

/// A pool.
#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct PoolLabels {
    pool: String,
}

/// A pool and a reason (a refusal's reason, an abandonment's stage).
#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct PoolReasonLabels {
    pool: String,
    reason: &'static str,
}

/// A pool and a model.
#[derive(Clone, Debug, Hash, PartialEq, Eq, PartialOrd, Ord, EncodeLabelSet)]
struct PoolModelLabels {
    pool: String,
    gen_ai_request_model: Arc<str>,
}

/// A model in a region and a throttle state.
#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct StateLabels {
    gen_ai_request_model: Arc<str>,
    aws_region: Arc<str>,
    state: &'static str,
}

/// The throttle states of [`THROTTLE_STATE`]: `braking` (the seed's brake delays calls),
/// `paced` (the pacer spaces calls), `unpaced`.
pub const THROTTLE_STATES: [&str; 3] = ["unpaced", "paced", "braking"];

/// A throttle status's state, one of [`THROTTLE_STATES`].
pub fn throttle_state(status: &ModelThrottleStatus) -> &'static str {
    if status.current_delay_ms > 0 {
        "braking"
    } else if status.pace.paced_calls_per_sec.is_some()
        || status.pace.paced_tokens_per_sec.is_some()
    {
        "paced"
    } else {
        "unpaced"
    }
}

/// A metric's name, help, unit and type.
type Describe = (&'static str, &'static str, Option<Unit>, MetricType);

/// Writes one metric family from `series` (nothing when it is empty).
fn family<S: EncodeLabelSet>(
    encoder: &mut DescriptorEncoder,
    (name, help, unit, metric_type): Describe,
    series: &[(S, f64)],
) -> Result<(), fmt::Error> {
    if series.is_empty() {
        return Ok(());
    }
    let mut metric = encoder.encode_descriptor(name, help, unit.as_ref(), metric_type)?;
    for (labels, value) in series {
        let encoder = metric.encode_family(labels)?;
        match metric_type {
            MetricType::Counter => ConstCounter::new(*value as u64).encode(encoder)?,
            _ => ConstGauge::new(*value).encode(encoder)?,
        }
    }
    Ok(())
}

/// What the pools' per-pool metrics read from a pool.
type PoolValue = fn(&PoolStatus) -> u64;

/// The per-pool metrics.
const POOL_METRICS: [(&str, &str, MetricType, PoolValue); 11] = [
    (WORKERS, "Live workers (retiring ones excluded).", G, |p| {
        p.workers as u64
    }),
    (
        WORKERS_STARTED,
        "Workers started, replacements included.",
        C,
        |p| p.counters.workers_started,
    ),
    (WORKERS_RETIRED, "Workers retired after idling.", C, |p| {
        p.counters.workers_retired
    }),
    (
        WORKERS_FAILED,
        "Workers found dead or failed, and replaced.",
        C,
        |p| p.counters.worker_failures,
    ),
    (QUEUE_DEPTH, "Requests waiting for a worker.", G, |p| {
        p.queue_depth as u64
    }),
    (
        QUEUE_CAPACITY,
        "Most requests that may wait for a worker (--queue-capacity).",
        G,
        |p| p.queue_capacity as u64,
    ),
    (
        JOBS_IN_FLIGHT,
        "Requests held by workers: waiting for a grant, backing off, or calling Bedrock.",
        G,
        |p| p.in_flight as u64,
    ),
    (JOBS_ADMITTED, "Requests admitted into the queue.", C, |p| {
        p.counters.admitted
    }),
    (JOBS_COMPLETED, "Requests a worker answered.", C, |p| {
        p.counters.completed
    }),
    (
        JOBS_REQUEUED,
        "Requests handed back to the queue by a failed worker before any call.",
        C,
        |p| p.counters.requeued,
    ),
    (
        JOBS_EXPIRED_IN_QUEUE,
        "Requests whose deadline passed while they waited for a worker (504).",
        C,
        |p| p.counters.expired_in_queue,
    ),
];

/// A model's queue, summed over the models under one label.
#[derive(Default)]
struct QueueSum {
    /// Requests waiting.
    queued: usize,
    /// Requests held by workers.
    in_flight: usize,
    /// Estimated wait, for a labelled paced model.
    wait_secs: Option<f64>,
}

impl StatusCollector {
    /// Per pool: workers, queue, requests, refusals by reason, abandonments by stage.
    fn encode_pools(&self, e: &mut DescriptorEncoder) -> Result<(), fmt::Error> {
        let pool = |p: &PoolStatus| PoolLabels {
            pool: p.worker_type.clone(),
        };
        for (name, help, kind, value) in POOL_METRICS {
            let series: Vec<_> = self
                .pools
                .iter()
                .map(|p| (pool(p), value(p) as f64))
                .collect();
            family(e, (name, help, None, kind), &series)?;
        }
        let mut refusals = Vec::new();
        let mut abandoned = Vec::new();
        for p in &self.pools {
            let c = &p.counters;
            let labels = |reason| PoolReasonLabels {
                pool: p.worker_type.clone(),
                reason,
            };
            refusals.push((labels("queue_full"), c.rejected_queue_full as f64));
            refusals.push((labels("cannot_start_in_time"), c.rejected_deadline as f64));
            refusals.push((labels("shed_in_queue"), c.shed_in_queue as f64));
            abandoned.push((labels("in_queue"), c.abandoned_in_queue as f64));
            abandoned.push((labels("in_flight"), c.abandoned_in_flight as f64));
        }
        family(
            e,
            (
                ADMISSION_REFUSALS,
                "Requests refused with 503 by admission control, by reason: queue_full, \
                 cannot_start_in_time (on arrival, at the model's pace), shed_in_queue (later, \
                 when the pace dropped).",
                None,
                C,
            ),
            &refusals,
        )?;
        family(
            e,
            (
                ABANDONED_REQUESTS,
                "Requests whose client went away, by reason: in_queue (never sent to Bedrock) \
                 or in_flight (its attempts stopped).",
                None,
                C,
            ),
            &abandoned,
        )
    }

    /// Per pool and model: queue depth, requests held, estimated wait.
    fn encode_model_queues(&self, e: &mut DescriptorEncoder) -> Result<(), fmt::Error> {
        let mut sums: BTreeMap<PoolModelLabels, QueueSum> = BTreeMap::new();
        for p in &self.pools {
            for m in &p.models {
                let label = self.labels.model_label(&m.model);
                let labelled = &*label != OTHER;
                let sum = sums
                    .entry(PoolModelLabels {
                        pool: p.worker_type.clone(),
                        gen_ai_request_model: label,
                    })
                    .or_default();
                sum.queued += m.queued;
                sum.in_flight += m.in_flight;
                if labelled {
                    sum.wait_secs = m.estimated_wait_ms.map(|ms| ms as f64 / 1000.0);
                }
            }
        }
        let series = |value: &dyn Fn(&QueueSum) -> Option<f64>| -> Vec<(PoolModelLabels, f64)> {
            sums.iter()
                .filter_map(|(labels, sum)| value(sum).map(|v| (labels.clone(), v)))
                .collect()
        };
        family(
            e,
            (
                MODEL_QUEUE_DEPTH,
                "Requests waiting for a worker, per model.",
                None,
                G,
            ),
            &series(&|s| Some(s.queued as f64)),
        )?;
        family(
            e,
            (
                MODEL_JOBS_IN_FLIGHT,
                "Requests held by workers, per model.",
                None,
                G,
            ),
            &series(&|s| Some(s.in_flight as f64)),
        )?;
        family(
            e,
            (
                MODEL_ESTIMATED_WAIT,
                "Estimated wait before a new request's call would start, per paced model.",
                Some(Unit::Seconds),
                G,
            ),
            &series(&|s| s.wait_secs),
        )
    }

    /// Per labelled model: the pacer's rates, the measured quota, the state, the brake.
    fn encode_throttle(&self, e: &mut DescriptorEncoder) -> Result<(), fmt::Error> {
        type Read = fn(&ModelThrottleStatus) -> Option<f64>;
        let gauges: [(&str, &str, Option<Unit>, Read); 9] = [
            (PACER_CALLS_PER_SECOND, "The pacer's rate in calls per second (absent while the model is unpaced).", None, |t| t.pace.paced_calls_per_sec),
            (PACER_TOKENS_PER_SECOND, "The pacer's rate in tokens per second (absent while the model is unpaced).", None, |t| t.pace.paced_tokens_per_sec),
            (QUOTA_FLOOR_CALLS, "The measured quota's lower bound in calls per second: the highest pace proven sustainable.", None, |t| t.pace.quota_floor_calls_per_sec),
            (QUOTA_CEILING_CALLS, "The measured quota's upper bound in calls per second: the lowest pace Bedrock throttled.", None, |t| t.pace.quota_ceiling_calls_per_sec),
            (QUOTA_FLOOR_TOKENS, "The measured quota's lower bound in tokens per second: the highest pace proven sustainable.", None, |t| t.pace.quota_floor_tokens_per_sec),
            (QUOTA_CEILING_TOKENS, "The measured quota's upper bound in tokens per second: the lowest pace Bedrock throttled.", None, |t| t.pace.quota_ceiling_tokens_per_sec),
            (BRAKE_CONSECUTIVE_THROTTLES, "The brake's consecutive throttles (reset by a success or a quiet minute).", None, |t| Some(t.consecutive_throttles as f64)),
            (BRAKE_DELAY, "The brake's pre-emptive delay for a call now (0 when it is not braking).", Some(Unit::Seconds), |t| Some(t.current_delay_ms as f64 / 1000.0)),
            (DAILY_QUOTA_SPENT, "1 while the model's daily token quota is spent (Bedrock's \"Too many tokens per day\") and its requests are refused until a probe succeeds.", None, |t| Some(if t.daily_quota_spent { 1.0 } else { 0.0 })),
        ];
        // Labelled models only: a pace or a brake summed over models means nothing.
        let labelled: Vec<(Arc<str>, &ModelThrottleStatus)> = self
            .throttle
            .iter()
            .map(|t| (self.labels.model_label(&t.model), t))
            .filter(|(label, _)| &**label != OTHER)
            .collect();
        let model = |label: &Arc<str>| ModelLabels {
            gen_ai_request_model: label.clone(),
            aws_region: self.region.clone(),
        };
        for (name, help, unit, read) in gauges {
            let series: Vec<_> = labelled
                .iter()
                .filter_map(|(label, t)| read(t).map(|v| (model(label), v)))
                .collect();
            family(e, (name, help, unit, G), &series)?;
        }
        let mut states = Vec::new();
        for (label, t) in &labelled {
            let now = throttle_state(t);
            for state in THROTTLE_STATES {
                let labels = StateLabels {
                    gen_ai_request_model: label.clone(),
                    aws_region: self.region.clone(),
                    state,
                };
                states.push((labels, if state == now { 1.0 } else { 0.0 }));
            }
        }
        family(
            e,
            (
                THROTTLE_STATE,
                "The shared throttle's state per model: 1 for the current state (unpaced, \
                 paced, braking), 0 for the others.",
                None,
                G,
            ),
            &states,
        )
    }
}

impl Collector for StatusCollector {
    fn encode(&self, mut encoder: DescriptorEncoder) -> Result<(), fmt::Error> {
        self.encode_pools(&mut encoder)?;
        self.encode_model_queues(&mut encoder)?;
        self.encode_throttle(&mut encoder)?;
        let metric = encoder.encode_descriptor(
            MODEL_LABELS,
            "Models with a label of their own (configured, or served successfully, up to \
             --metrics-max-models); every other model is counted as other.",
            None,
            G,
        )?;
        ConstGauge::new(self.model_labels as f64).encode(metric)
    }
}
