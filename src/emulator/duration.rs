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

impl CallDuration {
    /// Draws one call's generation time in seconds: `median * exp(spread * Z)` with `Z`
    /// standard normal (Box-Muller over two draws of `rng`); exactly the median, drawing
    /// nothing, when `spread` is 0.
    pub(crate) fn draw_secs(&self, rng: &mut fastrand::Rng) -> f64 {
        if self.spread <= 0.0 {
            return self.median_secs;
        }
        let u1 = 1.0 - rng.f64(); // (0, 1]: ln is finite
        let u2 = rng.f64();
        let z = (-2.0 * u1.ln()).sqrt() * (std::f64::consts::TAU * u2).cos();
        self.median_secs * (self.spread * z).exp()
    }

    /// Output tokens written in `secs`: `max(1, round(secs * tokens_per_sec))`.
    pub(crate) fn tokens_in(&self, secs: f64) -> u64 {
        let n = (secs * self.tokens_per_sec).round();
        if n.is_finite() && n >= 1.0 {
            n.min(u64::MAX as f64) as u64
        } else {
            1
        }
    }

    /// How long writing `tokens` output tokens takes.
    pub(crate) fn time_for(&self, tokens: u64) -> std::time::Duration {
        std::time::Duration::try_from_secs_f64(tokens as f64 / self.tokens_per_sec)
            .unwrap_or(MAX_GENERATION)
            .min(MAX_GENERATION)
    }
}

/// The longest generation the emulator waits for (a day), whatever the draw.
const MAX_GENERATION: std::time::Duration = std::time::Duration::from_secs(86_400);

/// Deterministic filler the reply is extended with, word after word, round and round.
const FILLER: &[&str] = &[
    "The", "emulator", "writes", "these", "filler", "words", "so", "that", "the", "reply", "has",
    "exactly", "the", "drawn", "number", "of", "output", "tokens.",
];

/// `text` extended with [`FILLER`] words (or cut) to exactly `tokens * 4` characters, so that
/// it counts exactly `tokens` tokens (`ceil(chars / 4)`).
pub(crate) fn fit_text(text: &str, tokens: u64) -> String {
    let target = usize::try_from(tokens.saturating_mul(4)).unwrap_or(usize::MAX);
    let mut out = String::with_capacity(target.min(1 << 20));
    let mut chars = 0;
    for c in text.chars().take(target) {
        out.push(c);
        chars += 1;
    }
    let mut words = FILLER.iter().cycle();
    while chars < target {
        let word = words.next().copied().unwrap_or_default();
        for c in std::iter::once(' ').chain(word.chars()) {
            if chars == target {
                break;
            }
            out.push(c);
            chars += 1;
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::emulator::reply::tokens_for;

    fn shape(median_secs: f64, spread: f64) -> CallDuration {
        CallDuration {
            median_secs,
            spread,
            tokens_per_sec: 50.0,
        }
    }

    #[test]
    fn draws_are_reproducible_by_seed_and_centred_on_the_median() {
        let d = shape(5.0, 0.5);
        let draws = |seed| {
            let mut rng = fastrand::Rng::with_seed(seed);
            (0..4001).map(|_| d.draw_secs(&mut rng)).collect::<Vec<_>>()
        };
        let a = draws(7);
        assert_eq!(a, draws(7), "same seed, same draws");
        assert_ne!(a, draws(8));
        assert!(a.iter().all(|x| x.is_finite() && *x > 0.0));
        let mut sorted = a.clone();
        sorted.sort_by(f64::total_cmp);
        let median = sorted[sorted.len() / 2];
        assert!((4.6..5.4).contains(&median), "median of the draws {median}");
        // Spread 0.5: about 68% of ln(D) within ln(5) +- 0.5.
        let within = a
            .iter()
            .filter(|x| (x.ln() - 5f64.ln()).abs() <= 0.5)
            .count() as f64
            / a.len() as f64;
        assert!((0.63..0.73).contains(&within), "{within}");
    }

    #[test]
    fn zero_spread_is_the_median_and_tokens_follow_the_rate() {
        let d = shape(2.5, 0.0);
        let mut rng = fastrand::Rng::with_seed(1);
        assert_eq!(d.draw_secs(&mut rng), 2.5);
        assert_eq!(d.tokens_in(2.5), 125);
        assert_eq!(d.tokens_in(0.001), 1, "at least one token");
        assert_eq!(d.tokens_in(0.03), 2, "rounded");
        assert_eq!(d.time_for(125), std::time::Duration::from_millis(2500));
    }

    #[test]
    fn fitted_text_has_exactly_the_tokens_asked() {
        let base = "Emulated reply to 1 turn(s); last user message: \"héllo\"";
        for n in [1, 2, 5, 13, 14, 15, 100, 1234] {
            let t = fit_text(base, n);
            assert_eq!(tokens_for(t.chars().count()), n, "{n}: {t}");
            assert_eq!(t.chars().count() as u64, n * 4);
        }
        assert_eq!(fit_text(base, 2), "Emulated");
        let long = fit_text(base, 40);
        assert!(long.starts_with(base), "{long}");
        assert!(
            long[base.len()..].starts_with(" The emulator writes"),
            "{long}"
        );
        assert_eq!(fit_text(base, 40), long, "deterministic");
    }
}
