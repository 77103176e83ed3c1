//! Claude-shaped call durations: how long a call generates and how many output tokens it
//! writes meanwhile.

use serde::{Deserialize, Serialize};

/// Durations of successful calls: each draws its generation time `D` from a lognormal
/// distribution of median `median_secs` and `ln`-standard deviation `spread`, and writes
/// `max(1, round(D * tokens_per_sec))` output tokens (capped at the request's `max_tokens`).
#[derive(Clone, Copy, Debug, PartialEq, Serialize, Deserialize)]
pub struct CallDuration {
    /// Median duration of a call's generation in seconds (lognormal).
    pub median_secs: f64,
    /// Standard deviation of ln(duration); 0 = every call takes the median.
    pub spread: f64,
    /// Output tokens written per second.
    pub tokens_per_sec: f64,
}

impl CallDuration {
    /// The default `spread` of the CLI and admin API.
    pub const DEFAULT_SPREAD: f64 = 0.5;
    /// The default `tokens_per_sec` of the CLI and admin API.
    pub const DEFAULT_TOKENS_PER_SEC: f64 = 50.0;
}
