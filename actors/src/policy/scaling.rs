//! How big the worker pool should be: pure functions the [`crate::SupervisorActor`] applies.
//!
//! Each worker holds up to `worker_concurrency` Bedrock calls in flight. The pool grows when
//! the queue holds more requests than the live workers have free call slots (the seed's
//! "dynamic worker allocation based on queue size"): it wants
//! `ceil((in_flight + queued) / worker_concurrency)` workers, within
//! `[min_workers, max_workers]`. It shrinks by retiring workers that have had nothing to do
//! for `idle_timeout`, never below `min_workers` and never while requests are queued.

use std::time::Duration;

/// The pool's bounds.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ScalingPolicy {
    /// Workers kept even when idle.
    pub min_workers: usize,
    /// Most workers the pool may run.
    pub max_workers: usize,
    /// Bedrock calls one worker may hold in flight.
    pub worker_concurrency: usize,
    /// Idle time after which a worker above the minimum is retired.
    pub idle_timeout: Duration,
}

/// What the supervisor knows about one live worker when deciding retirements.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct WorkerLoad {
    /// The worker's id.
    pub id: u64,
    /// Calls it holds now.
    pub in_flight: usize,
    /// How long it has held none (zero while busy).
    pub idle_for: Duration,
}

/// The number of workers the pool wants for this much work, within its bounds.
pub fn workers_wanted(policy: &ScalingPolicy, in_flight: usize, queued: usize) -> usize {
    let per_worker = policy.worker_concurrency.max(1);
    let demand = (in_flight + queued).div_ceil(per_worker);
    demand.clamp(
        policy.min_workers,
        policy.max_workers.max(policy.min_workers),
    )
}

/// How many workers to start now, given `live` workers.
pub fn workers_to_start(
    policy: &ScalingPolicy,
    live: usize,
    in_flight: usize,
    queued: usize,
) -> usize {
    let floor = policy.min_workers.saturating_sub(live);
    if queued == 0 {
        return floor;
    }
    floor.max(workers_wanted(policy, in_flight, queued).saturating_sub(live))
}

/// Which workers to retire now: the longest-idle ones past `idle_timeout`, keeping
/// `min_workers`, and none while anything is queued.
pub fn workers_to_retire(
    policy: &ScalingPolicy,
    workers: &[WorkerLoad],
    queued: usize,
) -> Vec<u64> {
    if queued > 0 {
        return Vec::new();
    }
    let spare = workers.len().saturating_sub(policy.min_workers);
    let mut idle: Vec<&WorkerLoad> = workers
        .iter()
        .filter(|w| w.in_flight == 0 && w.idle_for >= policy.idle_timeout)
        .collect();
    idle.sort_by_key(|w| std::cmp::Reverse(w.idle_for));
    idle.into_iter().take(spare).map(|w| w.id).collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn policy(min: usize, max: usize, conc: usize) -> ScalingPolicy {
        ScalingPolicy {
            min_workers: min,
            max_workers: max,
            worker_concurrency: conc,
            idle_timeout: Duration::from_secs(60),
        }
    }

    #[test]
    fn starts_the_minimum_even_without_work() {
        assert_eq!(workers_to_start(&policy(2, 4, 8), 0, 0, 0), 2);
        assert_eq!(workers_to_start(&policy(2, 4, 8), 2, 0, 0), 0);
    }

    #[test]
    fn grows_only_when_the_queue_exceeds_free_slots() {
        let p = policy(1, 4, 8);
        // 5 in flight + 3 queued fit one worker's 8 slots.
        assert_eq!(workers_to_start(&p, 1, 5, 3), 0);
        // 8 in flight + 1 queued need a second worker.
        assert_eq!(workers_to_start(&p, 1, 8, 1), 1);
        // A burst of 30 queued wants ceil(38/8) = 5, capped at 4.
        assert_eq!(workers_to_start(&p, 1, 8, 30), 3);
        assert_eq!(workers_to_start(&p, 4, 32, 100), 0);
    }

    #[test]
    fn seed_default_of_one_worker_never_grows() {
        let p = policy(1, 1, 4);
        assert_eq!(workers_to_start(&p, 1, 4, 1000), 0);
    }

    #[test]
    fn retires_longest_idle_first_down_to_the_minimum() {
        let p = policy(1, 4, 8);
        let idle = |id, secs| WorkerLoad {
            id,
            in_flight: 0,
            idle_for: Duration::from_secs(secs),
        };
        let busy = |id| WorkerLoad {
            id,
            in_flight: 3,
            idle_for: Duration::ZERO,
        };
        let workers = [idle(1, 61), busy(2), idle(3, 120), idle(4, 30)];
        assert_eq!(workers_to_retire(&p, &workers, 0), vec![3, 1]);
        // Nothing retires while requests wait.
        assert!(workers_to_retire(&p, &workers, 1).is_empty());
        // Never below the minimum.
        let all_idle = [idle(1, 100), idle(2, 200)];
        assert_eq!(workers_to_retire(&p, &all_idle, 0), vec![2]);
    }
}
