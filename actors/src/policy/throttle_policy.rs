//! Which throttle policy the broker runs: the adaptive pacer ([`crate::policy::pacing`]) with the
//! seed's brake ([`crate::policy::backoff`]) behind it, the brake alone, or none. The throttle
//! actor applies the one chosen; `/status` shows it.

use std::fmt;
use std::str::FromStr;

/// Which throttle policy the broker runs.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, serde::Serialize)]
#[serde(rename_all = "lowercase")]
pub enum ThrottlePolicy {
    /// Learned pacing per model, with the seed's brake behind it.
    #[default]
    Adaptive,
    /// The seed's shared pre-emptive backoff alone.
    Seed,
    /// No shared throttle: every request backs off alone.
    None,
}

impl FromStr for ThrottlePolicy {
    type Err = String;

    fn from_str(s: &str) -> Result<Self, Self::Err> {
        match s {
            "adaptive" => Ok(ThrottlePolicy::Adaptive),
            "seed" => Ok(ThrottlePolicy::Seed),
            "none" => Ok(ThrottlePolicy::None),
            other => Err(format!(
                "unknown throttle policy {other:?}; use adaptive, seed or none"
            )),
        }
    }
}

impl fmt::Display for ThrottlePolicy {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            ThrottlePolicy::Adaptive => "adaptive",
            ThrottlePolicy::Seed => "seed",
            ThrottlePolicy::None => "none",
        })
    }
}
