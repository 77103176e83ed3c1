//! Recent activity per model, for `/status` and the status page: requests that succeeded and
//! failed, Bedrock calls and throttles, tokens, per second over the last five minutes, and the
//! latencies of the last minute's successful requests.
//!
//! Prometheus keeps totals and histograms since start; a person glancing at a page wants
//! "now": rates over the last [`RATE_WINDOW_SECS`] seconds, p50/p99 over the last
//! [`LATENCY_WINDOW_SECS`] seconds, and a per-second chart of the last [`HISTORY_SECS`]. Each
//! model (by its metrics label, so the set is bounded) keeps a ring of one-second buckets and
//! a ring of recent latencies; [`crate::observe::metrics::Metrics`] feeds both from its recording
//! calls. Everything is computed when `/status` asks, never on the request path.

use std::collections::{HashMap, VecDeque};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

/// Seconds the per-second rates average over.
pub const RATE_WINDOW_SECS: u64 = 10;
/// Seconds of successful requests the latency percentiles cover.
pub const LATENCY_WINDOW_SECS: u64 = 60;
/// Seconds of per-second history kept (the page's chart).
pub const HISTORY_SECS: usize = 300;
/// Most latencies kept per model (the oldest go first).
const MAX_LATENCIES: usize = 4096;

/// How one Bedrock call ended.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum CallResult {
    Succeeded,
    Throttled,
    Failed,
}

/// Counts of one second.
#[derive(Debug, Clone, Copy, Default, PartialEq)]
struct Second {
    /// Which second since the epoch these counts are of.
    at: u64,
    /// Requests answered with success.
    ok: u32,
    /// Requests answered with an error.
    failed: u32,
    /// Bedrock calls that ended.
    calls: u32,
    /// Of them, throttled.
    throttled: u32,
    /// Tokens Bedrock counted (input + output).
    tokens: u64,
}

/// One model's recent activity.
struct ModelActivity {
    /// The last [`HISTORY_SECS`] seconds, indexed by second modulo the length.
    seconds: Vec<Second>,
    /// (second, latency in ms) of successful requests, oldest first.
    latencies: VecDeque<(u64, f64)>,
}

impl ModelActivity {
    fn new() -> ModelActivity {
        ModelActivity {
            seconds: vec![Second::default(); HISTORY_SECS],
            latencies: VecDeque::new(),
        }
    }

    /// The bucket of second `at`, emptied if it held an older second.
    fn second(&mut self, at: u64) -> &mut Second {
        let slot = &mut self.seconds[at as usize % HISTORY_SECS];
        if slot.at != at {
            *slot = Second {
                at,
                ..Second::default()
            };
        }
        slot
    }

    /// The counts of second `at`, zero if it was not recorded.
    fn get(&self, at: u64) -> Second {
        let slot = self.seconds[at as usize % HISTORY_SECS];
        if slot.at == at {
            slot
        } else {
            Second::default()
        }
    }
}

/// Every model's recent activity.
pub struct Activity {
    /// Seconds are counted from here.
    epoch: Instant,
    /// By model label.
    models: Mutex<HashMap<Arc<str>, ModelActivity>>,
}

/// A model's recent activity, as `/status` shows it.
#[derive(Debug, Clone, PartialEq, serde::Serialize)]
pub struct RecentActivity {
    /// Seconds the rates average over.
    pub rate_window_secs: u64,
    /// Requests answered with success per second.
    pub ok_per_sec: f64,
    /// Requests answered with an error per second.
    pub errors_per_sec: f64,
    /// Bedrock calls per second.
    pub calls_per_sec: f64,
    /// Throttled Bedrock calls per second.
    pub throttled_per_sec: f64,
    /// Throttled calls, as a percentage of calls (0 without calls).
    pub throttled_pct: f64,
    /// Tokens Bedrock counted per second.
    pub tokens_per_sec: f64,
    /// Seconds of successful requests the percentiles cover.
    pub latency_window_secs: u64,
    /// Median latency of successful requests, in ms (`null` without any).
    pub latency_p50_ms: Option<f64>,
    /// 99th percentile latency of successful requests, in ms.
    pub latency_p99_ms: Option<f64>,
    /// Per second, oldest first, the last [`HISTORY_SECS`] seconds (the current one last).
    pub history: History,
}

/// Per-second counts of the last [`HISTORY_SECS`] seconds, oldest first.
#[derive(Debug, Clone, PartialEq, serde::Serialize)]
pub struct History {
    /// Successful requests (goodput).
    pub ok: Vec<u32>,
    /// Throttled Bedrock calls.
    pub throttled: Vec<u32>,
    /// Requests that ended in an error.
    pub errors: Vec<u32>,
}

impl Default for Activity {
    fn default() -> Self {
        Activity::new()
    }
}

impl Activity {
    /// No activity yet; seconds count from now.
    pub fn new() -> Activity {
        Activity {
            epoch: Instant::now(),
            models: Mutex::new(HashMap::new()),
        }
    }

    fn at(&self, now: Instant) -> u64 {
        now.saturating_duration_since(self.epoch).as_secs()
    }

    fn with<R>(&self, model: &Arc<str>, f: impl FnOnce(&mut ModelActivity) -> R) -> R {
        let mut models = self.models.lock().unwrap_or_else(|p| p.into_inner());
        let entry = match models.get_mut(model) {
            Some(entry) => entry,
            None => models
                .entry(model.clone())
                .or_insert_with(ModelActivity::new),
        };
        f(entry)
    }

    /// A request for `model` was answered, successfully or not, after `latency`.
    pub fn request(&self, model: &Arc<str>, ok: bool, latency: Duration) {
        self.request_at(Instant::now(), model, ok, latency)
    }

    fn request_at(&self, now: Instant, model: &Arc<str>, ok: bool, latency: Duration) {
        let at = self.at(now);
        self.with(model, |m| {
            let second = m.second(at);
            if ok {
                second.ok += 1;
                if m.latencies.len() == MAX_LATENCIES {
                    m.latencies.pop_front();
                }
                m.latencies.push_back((at, latency.as_secs_f64() * 1000.0));
            } else {
                second.failed += 1;
            }
        })
    }

    /// A Bedrock call to `model` ended.
    pub fn call(&self, model: &Arc<str>, result: CallResult) {
        self.call_at(Instant::now(), model, result)
    }

    fn call_at(&self, now: Instant, model: &Arc<str>, result: CallResult) {
        let at = self.at(now);
        self.with(model, |m| {
            let second = m.second(at);
            second.calls += 1;
            if result == CallResult::Throttled {
                second.throttled += 1;
            }
        })
    }

    /// Bedrock counted `tokens` for a call to `model`.
    pub fn tokens(&self, model: &Arc<str>, tokens: u64) {
        let at = self.at(Instant::now());
        self.with(model, |m| m.second(at).tokens += tokens)
    }

    /// Every model's recent activity now.
    pub fn recent(&self) -> HashMap<Arc<str>, RecentActivity> {
        self.recent_at(Instant::now())
    }

    fn recent_at(&self, now: Instant) -> HashMap<Arc<str>, RecentActivity> {
        let at = self.at(now);
        let models = self.models.lock().unwrap_or_else(|p| p.into_inner());
        models
            .iter()
            .map(|(model, m)| (model.clone(), summarize(m, at)))
            .collect()
    }
}

/// One model's activity as of second `now`.
fn summarize(m: &ModelActivity, now: u64) -> RecentActivity {
    // 1. Rates: the last RATE_WINDOW_SECS seconds, the current one included.
    let mut window = Second::default();
    for at in now.saturating_sub(RATE_WINDOW_SECS - 1)..=now {
        let s = m.get(at);
        window.ok += s.ok;
        window.failed += s.failed;
        window.calls += s.calls;
        window.throttled += s.throttled;
        window.tokens += s.tokens;
    }
    let per_sec = |n: f64| n / RATE_WINDOW_SECS as f64;
    // 2. Percentiles of the last LATENCY_WINDOW_SECS seconds' successes (nearest rank).
    let since = now.saturating_sub(LATENCY_WINDOW_SECS - 1);
    let mut recent: Vec<f64> = m
        .latencies
        .iter()
        .filter(|(at, _)| *at >= since)
        .map(|(_, ms)| *ms)
        .collect();
    recent.sort_by(f64::total_cmp);
    let percentile = |q: f64| {
        if recent.is_empty() {
            return None;
        }
        let rank = ((q * recent.len() as f64).ceil() as usize).clamp(1, recent.len());
        Some((recent[rank - 1] * 1000.0).round() / 1000.0)
    };
    // 3. The chart: every second of the history, oldest first.
    let first = (now + 1).saturating_sub(HISTORY_SECS as u64);
    let mut history = History {
        ok: Vec::with_capacity(HISTORY_SECS),
        throttled: Vec::with_capacity(HISTORY_SECS),
        errors: Vec::with_capacity(HISTORY_SECS),
    };
    for _ in 0..(HISTORY_SECS as u64).saturating_sub(now + 1) {
        history.ok.push(0);
        history.throttled.push(0);
        history.errors.push(0);
    }
    for at in first..=now {
        let s = m.get(at);
        history.ok.push(s.ok);
        history.throttled.push(s.throttled);
        history.errors.push(s.failed);
    }
    RecentActivity {
        rate_window_secs: RATE_WINDOW_SECS,
        ok_per_sec: per_sec(window.ok as f64),
        errors_per_sec: per_sec(window.failed as f64),
        calls_per_sec: per_sec(window.calls as f64),
        throttled_per_sec: per_sec(window.throttled as f64),
        throttled_pct: if window.calls == 0 {
            0.0
        } else {
            (1000.0 * window.throttled as f64 / window.calls as f64).round() / 10.0
        },
        tokens_per_sec: per_sec(window.tokens as f64),
        latency_window_secs: LATENCY_WINDOW_SECS,
        latency_p50_ms: percentile(0.5),
        latency_p99_ms: percentile(0.99),
        history,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn rates_cover_the_last_ten_seconds_and_history_five_minutes() {
        let activity = Activity::new();
        let t0 = activity.epoch;
        let model: Arc<str> = Arc::from("m");
        let at = |secs: u64| t0 + Duration::from_millis(secs * 1000 + 500);
        // Second 0: 3 ok requests, 4 calls of which 1 throttled. Second 12: 1 failure.
        for _ in 0..3 {
            activity.request_at(at(0), &model, true, Duration::from_millis(10));
        }
        activity.call_at(at(0), &model, CallResult::Throttled);
        for _ in 0..3 {
            activity.call_at(at(0), &model, CallResult::Succeeded);
        }
        activity.request_at(at(12), &model, false, Duration::from_millis(10));

        let now = activity.recent_at(at(5))[&model].clone();
        assert_eq!(now.ok_per_sec, 0.3);
        assert_eq!(now.calls_per_sec, 0.4);
        assert_eq!(now.throttled_per_sec, 0.1);
        assert_eq!(now.throttled_pct, 25.0);
        assert_eq!(now.errors_per_sec, 0.0);
        assert_eq!(now.history.ok.len(), HISTORY_SECS);
        assert_eq!(now.history.ok[HISTORY_SECS - 6], 3);
        assert_eq!(now.history.ok.iter().sum::<u32>(), 3);

        // Ten seconds on, second 0 has left the rate window but not the history.
        let later = activity.recent_at(at(12))[&model].clone();
        assert_eq!(later.ok_per_sec, 0.0);
        assert_eq!(later.errors_per_sec, 0.1);
        assert_eq!(later.history.ok.iter().sum::<u32>(), 3);
        assert_eq!(later.history.errors[HISTORY_SECS - 1], 1);

        // Five minutes on, nothing is left, and the ring's old slots read as zero.
        let gone = activity.recent_at(at(12 + HISTORY_SECS as u64))[&model].clone();
        assert_eq!(gone.history.ok.iter().sum::<u32>(), 0);
        assert_eq!(gone.history.errors.iter().sum::<u32>(), 0);
    }

    #[test]
    fn percentiles_are_nearest_rank_over_the_last_minute() {
        let activity = Activity::new();
        let t0 = activity.epoch;
        let model: Arc<str> = Arc::from("m");
        // An old slow request, then 1..=100 ms a minute later.
        activity.request_at(t0, &model, true, Duration::from_secs(9));
        let later = t0 + Duration::from_secs(70);
        for ms in 1..=100u64 {
            activity.request_at(later, &model, true, Duration::from_millis(ms));
        }
        activity.request_at(later, &model, false, Duration::from_secs(30));
        let recent = activity.recent_at(later)[&model].clone();
        assert_eq!(recent.latency_p50_ms, Some(50.0));
        assert_eq!(recent.latency_p99_ms, Some(99.0));
        let empty = Activity::new();
        empty.call_at(empty.epoch, &model, CallResult::Failed);
        assert_eq!(empty.recent_at(empty.epoch)[&model].latency_p50_ms, None);
    }
}
