//! The state `/status` shows, as plain data: a pool's queue and workers, a model's throttle
//! state, the per-model rows, and the whole broker's. The actors fill these in when asked
//! ([`crate::actor::supervisor::GetPoolStatus`], [`crate::actor::throttle::GetThrottleStatus`]);
//! the metrics and the summary read them. They live here, below both, so that neither imports
//! the other's layer.

use actix::MessageResponse;

use crate::observe::activity::RecentActivity;
use crate::policy::throttle_policy::ThrottlePolicy;

/// The whole broker's state, for `/status`.
#[derive(Debug, Clone, serde::Serialize)]
pub struct BrokerStatus {
    /// Each pool's queue and workers.
    pub pools: Vec<PoolStatus>,
    /// Each model's throttle state.
    pub throttle: Vec<ModelThrottleStatus>,
    /// Per model (bounded like the metrics' labels): queue, pace, brake and recent activity.
    pub models: Vec<ModelSummary>,
}

/// A pool's state.
#[derive(Debug, Clone, PartialEq, serde::Serialize, MessageResponse)]
pub struct PoolStatus {
    /// The pool's worker type.
    pub worker_type: String,
    /// Live workers (retiring ones excluded).
    pub workers: usize,
    /// Fewest workers the pool keeps.
    pub min_workers: usize,
    /// Most workers the pool starts.
    pub max_workers: usize,
    /// Calls one worker may hold.
    pub worker_concurrency: usize,
    /// Jobs waiting for a worker, over all models.
    pub queue_depth: usize,
    /// Most jobs that may wait.
    pub queue_capacity: usize,
    /// Jobs held by workers (waiting for a grant, backing off, or calling Bedrock).
    pub in_flight: usize,
    /// Per worker: id, jobs held, retiring.
    pub worker_detail: Vec<WorkerStatus>,
    /// Per model: queued, in flight, pace, estimated wait.
    pub models: Vec<ModelLoad>,
    /// Totals since start.
    pub counters: PoolCounters,
}

/// One worker's state.
#[derive(Debug, Clone, PartialEq, serde::Serialize)]
pub struct WorkerStatus {
    /// Id given at start.
    pub id: u64,
    /// Jobs it holds.
    pub in_flight: usize,
    /// No new jobs; it goes once its last job is done.
    pub retiring: bool,
}

/// Totals since the pool started.
#[derive(Debug, Clone, Default, PartialEq, serde::Serialize)]
pub struct PoolCounters {
    /// Jobs admitted into the queue.
    pub admitted: u64,
    /// Jobs answered by a worker.
    pub completed: u64,
    /// Jobs whose caller left while they waited in the queue (never sent to Bedrock).
    pub abandoned_in_queue: u64,
    /// Jobs whose caller left while a worker held them (attempts stopped).
    pub abandoned_in_flight: u64,
    /// Jobs whose deadline passed while they waited in the queue.
    pub expired_in_queue: u64,
    /// Jobs refused because the queue was full.
    pub rejected_queue_full: u64,
    /// Jobs refused on arrival because at their model's pace they could not start in time.
    pub rejected_deadline: u64,
    /// Queued jobs answered early (503) when their model's pace meant they could not start in time.
    pub shed_in_queue: u64,
    /// Jobs handed back by a failed worker before any call.
    pub requeued: u64,
    /// Workers started (replacements included).
    pub workers_started: u64,
    /// Workers retired after idling.
    pub workers_retired: u64,
    /// Workers found dead or failed and replaced.
    pub worker_failures: u64,
}

/// One model's load, for `/status`.
#[derive(Debug, Clone, PartialEq, serde::Serialize)]
pub struct ModelLoad {
    /// Model id.
    pub model: String,
    /// Jobs waiting for a worker slot.
    pub queued: usize,
    /// Jobs holding worker slots.
    pub in_flight: usize,
    /// Calls per second its pace allows (`null` while unpaced).
    pub paced_calls_per_sec: Option<f64>,
    /// Estimated wait before a new request's call would start, in ms (`null` while unpaced).
    pub estimated_wait_ms: Option<u64>,
}

/// One model's throttle state, for `/status`.
#[derive(Debug, Clone, PartialEq, serde::Serialize)]
pub struct ModelThrottleStatus {
    /// AWS region.
    pub region: String,
    /// Model id.
    pub model: String,
    /// The policy in force.
    pub policy: ThrottlePolicy,
    /// Throttles since the last success or quiet-window reset.
    pub consecutive_throttles: u32,
    /// Pre-emptive delay a call would get now from the brake (un-jittered), in ms.
    pub current_delay_ms: u64,
    /// Time since the last throttle, if there was one.
    pub since_last_throttle_ms: Option<u64>,
    /// Adaptive: the pacer's rates and the measured quota's bounds (inline in the JSON).
    #[serde(flatten)]
    pub pace: PaceStatus,
    /// Typical latency of a successful call, in ms.
    pub latency_ms: u64,
    /// Calls reported so far.
    pub calls: u64,
    /// Calls that came back throttled.
    pub throttled: u64,
    /// Calls that succeeded.
    pub succeeded: u64,
    /// Throttled calls by the quota that refused them (`requests`, `tokens`,
    /// `tokens_per_day`), as Bedrock's messages name it.
    pub throttled_by: ThrottledBy,
    /// The daily token quota is spent: the model's requests are refused (429) until a probe
    /// succeeds.
    pub daily_quota_spent: bool,
    /// When the next probe of a spent daily quota goes, in ms (`null` unless spent).
    pub daily_quota_probe_in_ms: Option<u64>,
    /// Quota tokens one output token costs.
    pub burndown: f64,
}

/// Throttled calls of one model by the quota that refused them.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, serde::Serialize)]
pub struct ThrottledBy {
    /// `Too many requests`.
    pub requests: u64,
    /// `Too many tokens`.
    pub tokens: u64,
    /// `Too many tokens per day`.
    pub tokens_per_day: u64,
}

/// The adaptive policy's view of one model: the pace it keeps and the quota it measured, in
/// calls and in tokens per second (each `null` while unpaced or until measured). `/status`
/// shows it in the throttle's rows and in the per-model summary.
#[derive(Debug, Clone, Copy, Default, PartialEq, serde::Serialize)]
pub struct PaceStatus {
    /// Calls per second the pacer allows (`null` while unpaced).
    pub paced_calls_per_sec: Option<f64>,
    /// Tokens per second the pacer allows (`null` while unpaced).
    pub paced_tokens_per_sec: Option<f64>,
    /// The measured quota's lower bound in calls per second, the highest pace proven
    /// sustainable (`null` until one is).
    pub quota_floor_calls_per_sec: Option<f64>,
    /// The measured quota's upper bound in calls per second, the lowest pace Bedrock
    /// throttled (`null` until one was).
    pub quota_ceiling_calls_per_sec: Option<f64>,
    /// The same lower bound in tokens per second.
    pub quota_floor_tokens_per_sec: Option<f64>,
    /// The same upper bound in tokens per second.
    pub quota_ceiling_tokens_per_sec: Option<f64>,
}

/// One model's row.
#[derive(Debug, Clone, PartialEq, serde::Serialize)]
pub struct ModelSummary {
    /// The model id, or `other` for every model without a label of its own.
    pub model: String,
    /// Requests waiting for a worker.
    pub queued: usize,
    /// Requests held by workers (waiting for a grant, backing off, or calling).
    pub jobs_in_flight: usize,
    /// Bedrock calls sent and not yet answered.
    pub calls_in_flight: i64,
    /// `unpaced`, `paced` or `braking` (`null` for `other`).
    pub state: Option<&'static str>,
    /// The pacer's rates and the measured quota's bounds (all `null` for `other`; inline in
    /// the JSON).
    #[serde(flatten)]
    pub pace: PaceStatus,
    /// The brake's consecutive throttles.
    pub consecutive_throttles: u32,
    /// The brake's pre-emptive delay for a call now, in ms.
    pub brake_delay_ms: u64,
    /// Rates, latencies and the chart (`null` when metrics are off).
    pub recent: Option<RecentActivity>,
}
