//! Adaptive pacing: a learned send rate per model, as pure state machines the
//! [`crate::ThrottleActor`] applies. Nothing here sleeps or reads the clock.
//!
//! # Why
//! Bedrock quotas are per model and region, in requests and tokens per minute, and a throttle
//! (429 ThrottlingException) comes back in milliseconds. The seed's schedule stops storms but
//! oscillates: it returns to full speed on the first success and is throttled again. The
//! pacer instead spaces calls at the rate the quota admits, so the quota stays busy and few
//! calls are wasted on throttles. It is loss-based: it reacts to throttles, not to latency,
//! because Bedrock's latency says nothing about the quota.
//!
//! # How ([`RateController`], one per resource: calls, and tokens for TPM quotas)
//! - **Pacing (GCRA)**: each call reserves the next slot `1/rate` after the previous one (a
//!   call reserving `n` tokens takes `n/rate`); a slot may start up to `tolerance` early so
//!   arrival jitter is not delayed. Slots are reserved at most `horizon` ahead; a caller
//!   beyond it comes back later, so a rate cut takes effect within `horizon`.
//! - **Unpaced until the quota shows**: with no evidence of a quota nothing is delayed.
//!   A quarter of a window's outcomes throttled (of at least `min_outcomes`; sporadic
//!   throttles are left to the retries) sets the pace at once to at most half of what the
//!   quota admitted so far
//!   (that includes any burst the quota had saved), so retries do not storm; the probe finds
//!   the rest within seconds. If nothing has succeeded yet, the seed brake handles it.
//! - **Control windows**: outcomes are judged once per window, the feedback delay: at least
//!   `min_window` and three call latencies, and at least `min_outcomes` outcomes (or
//!   `max_window`). So a burst of throttles from calls already sent cuts the rate once. A
//!   window where throttles pile up (>= 10 and >= 25% of outcomes) is judged early, after
//!   three latencies (and a quarter of `min_window`).
//! - **Background throttles**: Bedrock throttles now and then even under quota; cutting the
//!   pace for each of those would ratchet it down to nothing while the quota sits unused.
//!   The background is the lower quartile of the throttle fractions of the last minute's 3 s
//!   stretches (at most `max_background`, 10%): at a real quota the pace holds below it for
//!   `settle` (6) clean windows after each cut, so a quarter of the stretches or more have
//!   no throttles and every throttle counts; sporadic
//!   throttles show in every stretch. A window whose throttles the background explains
//!   (within two standard deviations of the expected count) counts as clean, and a cut's
//!   measured success rate is scaled up by the background's share.
//! - **Cut (multiplicative decrease to the measured quota)**: in a window with throttles, the
//!   calls that succeeded from one latency after the first throttle on were admitted while
//!   the quota was exhausted, so they arrive at exactly the rate it admits (any burst it had
//!   saved is spent by then); the new rate is that success rate less `margin` (1%). One
//!   window converges, whatever the old rate was.
//!   If nothing succeeded (the quota's window is exhausted, or the quota collapsed), the
//!   success rate over the quota's own window, the last minute (`memory`), is used instead,
//!   and the seed brake (see `throttle.rs`) spaces the retries. With no success in that
//!   minute either there is no level to pace at: pacing stops and the brake alone spaces
//!   calls until they succeed again.
//! - **Probe (increase)**: after a window without throttles the rate returns to the last
//!   measured quota (the ceiling) if it is below it, then grows by `probe_step` (1%) per
//!   window; once it is `accelerate_above` (8%) above the ceiling, or has stayed clean above
//!   it for `patience` (3) windows, the quota has evidently grown, and the step doubles with
//!   each further clean window
//!   up to `probe_max` (25%) per window, so a raised quota is found within seconds. The rate
//!   never grows beyond twice what is actually being sent, so a quiet period does not license
//!   a burst.
//!
//! Constants (the defaults): windows 1 s..5 s (>= 20 outcomes to judge a throttled window,
//! 5 for a clean one), background at most 10%, margin 1%, probe 1% (doubling to 25% beyond 8% above the last measured
//! quota or after 3 clean windows above it), horizon 250 ms, tolerance 20 ms, memory 60 s, minimum rate 0.2/s.

use std::collections::VecDeque;
use std::time::Duration;

use tokio::time::Instant;

/// Settings of a [`RateController`].
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct PacingConfig {
    /// Shortest control window: the feedback delay floor.
    pub min_window: Duration,
    /// Longest control window, even with few outcomes.
    pub max_window: Duration,
    /// Outcomes a window needs before it is judged (unless `max_window` passed).
    pub min_outcomes: u32,
    /// Most of the background throttle fraction that is treated as noise (see `background`).
    pub max_background: f64,
    /// How far below the measured quota the pace is set after a throttle.
    pub margin: f64,
    /// Upward step after a clean window.
    pub probe_step: f64,
    /// Above the last measured quota by this fraction the step starts doubling per clean
    /// window: the quota has grown, find its new level fast.
    pub accelerate_above: f64,
    /// Clean windows after which the step starts doubling anyway.
    pub patience: u32,
    /// Clean windows after a cut during which the pace holds before probing again: the
    /// quota gets seconds without throttles, which also keeps the background at zero.
    pub settle: u32,
    /// Largest upward step per window.
    pub probe_max: f64,
    /// Slowest pace ever set, in units per second.
    pub min_rate: f64,
    /// How far ahead a slot may be reserved.
    pub horizon: Duration,
    /// How early a slot may start relative to perfect spacing.
    pub tolerance: Duration,
    /// The quota's own window: the success rate over it is the fallback estimate.
    pub memory: Duration,
}

impl Default for PacingConfig {
    fn default() -> Self {
        PacingConfig {
            min_window: Duration::from_secs(1),
            max_window: Duration::from_secs(5),
            min_outcomes: 20,
            max_background: 0.10,
            margin: 0.01,
            probe_step: 0.01,
            accelerate_above: 0.08,
            patience: 3,
            settle: 6,
            probe_max: 0.25,
            min_rate: 0.2,
            horizon: Duration::from_millis(250),
            tolerance: Duration::from_millis(20),
            memory: Duration::from_secs(60),
        }
    }
}

/// Throttled fraction of a window's outcomes that starts pacing an unpaced model.
const START_FRACTION: f64 = 0.25;

/// Length of the stretches the background throttle fraction is measured over.
const BUCKET_SECS: u64 = 3;

/// The answer to a reservation.
#[derive(Debug, Clone, Copy, PartialEq)]
pub enum Reservation {
    /// Send at this time (now or later); the slot is taken.
    At(Instant),
    /// No slot within the horizon: ask again after this long.
    ComeBack(Duration),
}

/// What a control window decided.
#[derive(Debug, Clone, Copy, PartialEq)]
pub enum Adjustment {
    /// Throttled: the rate was set to the measured quota (less the margin).
    Cut { from: Option<f64>, to: f64 },
    /// Clean: the rate was raised to probe for more.
    Probe { from: f64, to: f64 },
    /// Nothing succeeded for a whole quota window: pacing stopped (the brake spaces calls).
    Unpaced { from: f64 },
}

/// The pace of one resource (calls, or tokens) of one model.
#[derive(Debug, Clone)]
pub struct RateController {
    /// Units per second allowed; `None` until the first throttle (unpaced).
    rate: Option<f64>,
    /// GCRA's theoretical arrival time: the next free slot.
    next_slot: Instant,
    /// Start of the current control window.
    window_start: Instant,
    /// Units reserved (sent) in the window, refunds deducted.
    sent: f64,
    /// Units that succeeded in the window.
    ok_units: f64,
    /// Successful outcomes in the window.
    ok_count: u32,
    /// Throttled outcomes in the window.
    throttles: u32,
    /// One latency after the window's first throttle: successes from then on were admitted
    /// while the quota was exhausted, so they arrive at exactly the quota's rate.
    saturated_from: Option<Instant>,
    /// Units that succeeded since `saturated_from`.
    ok_saturated: f64,
    /// Successes since `saturated_from`.
    ok_saturated_count: u32,
    /// The quota measured at the last cut: probing is slow up to a little above it.
    ceiling: Option<f64>,
    /// Outcomes and throttles per 3 s over the last `memory`: the lowest throttle fraction
    /// among them is the background, throttles the pace does not cause.
    fractions: VecDeque<(u64, u32, u32)>,
    /// Clean windows left to hold the pace after the last cut.
    hold: u32,
    /// Consecutive clean windows at or above the ceiling since the last cut.
    clean: u32,
    /// Consecutive accelerating clean windows, for the probe's doubling.
    accelerating: u32,
    /// Successful units per whole second, over the last `memory`.
    history: VecDeque<(u64, f64)>,
    /// Where the history's seconds are counted from.
    epoch: Instant,
}

impl RateController {
    /// An unpaced controller starting at `now`.
    pub fn new(now: Instant) -> RateController {
        RateController {
            rate: None,
            next_slot: now,
            window_start: now,
            sent: 0.0,
            ok_units: 0.0,
            ok_count: 0,
            throttles: 0,
            saturated_from: None,
            ok_saturated: 0.0,
            ok_saturated_count: 0,
            ceiling: None,
            fractions: VecDeque::new(),
            hold: 0,
            clean: 0,
            accelerating: 0,
            history: VecDeque::new(),
            epoch: now,
        }
    }

    /// The paced rate in units per second, or `None` while unpaced.
    pub fn rate(&self) -> Option<f64> {
        self.rate
    }

    /// Reserves a slot for `units` (1 for a call; reserved tokens for the token lane).
    pub fn reserve(&mut self, now: Instant, units: f64, cfg: &PacingConfig) -> Reservation {
        let Some(rate) = self.rate else {
            self.sent += units;
            return Reservation::At(now);
        };
        let earliest = now.checked_sub(cfg.tolerance).unwrap_or(now);
        let slot = self.next_slot.max(earliest);
        let wait = slot.saturating_duration_since(now);
        if wait > cfg.horizon {
            return Reservation::ComeBack(
                cfg.horizon
                    .min(wait - cfg.horizon)
                    .max(Duration::from_millis(10)),
            );
        }
        self.next_slot = slot + Duration::from_secs_f64(units / rate);
        self.sent += units;
        Reservation::At(slot.max(now))
    }

    /// Gives back `units` of a reservation that will not be used (or was over-estimated).
    pub fn refund(&mut self, now: Instant, units: f64, cfg: &PacingConfig) {
        if units <= 0.0 {
            return;
        }
        self.sent = (self.sent - units).max(0.0);
        if let Some(rate) = self.rate {
            let back = Duration::from_secs_f64(units / rate);
            let floor = now.checked_sub(cfg.tolerance).unwrap_or(now);
            self.next_slot = self.next_slot.checked_sub(back).unwrap_or(floor).max(floor);
        }
    }

    /// Settles a reservation of `charged` units that turned out to cost `actual`: gives the
    /// difference back, or takes the extra.
    pub fn settle(&mut self, now: Instant, charged: f64, actual: f64, cfg: &PacingConfig) {
        if actual <= charged {
            self.refund(now, charged - actual, cfg);
            return;
        }
        let extra = actual - charged;
        self.sent += extra;
        if let Some(rate) = self.rate {
            let floor = now.checked_sub(cfg.tolerance).unwrap_or(now);
            self.next_slot = self.next_slot.max(floor) + Duration::from_secs_f64(extra / rate);
        }
    }

    /// Records a call the quota admitted (it was not throttled; it may still have failed
    /// otherwise), worth `units`.
    pub fn on_admitted(&mut self, now: Instant, units: f64, cfg: &PacingConfig) {
        self.ok_units += units;
        self.ok_count += 1;
        self.count_outcome(now, false, cfg);
        if self.saturated_from.is_some_and(|from| now >= from) {
            self.ok_saturated += units;
            self.ok_saturated_count += 1;
        }
        let second = now.saturating_duration_since(self.epoch).as_secs();
        match self.history.back_mut() {
            Some((s, total)) if *s == second => *total += units,
            _ => self.history.push_back((second, units)),
        }
        let keep = cfg.memory.as_secs().max(1);
        while self
            .history
            .front()
            .is_some_and(|(s, _)| second.saturating_sub(*s) >= keep)
        {
            self.history.pop_front();
        }
    }

    /// Records a throttle. The first one ends the unpaced start at once: the pace becomes
    /// what has succeeded so far in this window, so retries do not storm while the first
    /// window runs; the window's judgement refines it.
    pub fn on_throttle(&mut self, now: Instant, latency: Duration, cfg: &PacingConfig) {
        self.throttles += 1;
        self.count_outcome(now, true, cfg);
        if self.saturated_from.is_none() {
            self.saturated_from = Some(now + latency);
        }
        let outcomes = self.ok_count + self.throttles;
        let fraction = f64::from(self.throttles) / f64::from(outcomes.max(1));
        // Pacing starts only on a clear quota signal: a quarter of a window's outcomes (at
        // least `min_outcomes` of them) throttled; sporadic throttles are left to the retries.
        if self.rate.is_none()
            && outcomes >= cfg.min_outcomes
            && fraction >= START_FRACTION
            && !self.within_background(self.throttles, outcomes, now, cfg)
        {
            let elapsed = now
                .saturating_duration_since(self.window_start)
                .max(cfg.min_window / 4)
                .as_secs_f64();
            // The window may have just begun: look back over the last two seconds too.
            let succeeded = (self.ok_units / elapsed).max(self.recent_rate(now));
            let succeeded = if succeeded > 0.0 {
                succeeded
            } else {
                self.sustained_rate(now, cfg)
            };
            // What succeeded so far includes whatever burst the quota had saved, the more so
            // the more was throttled: start at (1 - 2 x throttled fraction) of it, at most
            // half, and let the probe find the rest. With no success at all there is no
            // level to pace at; the seed brake handles that.
            if succeeded > 0.0 {
                let share = (1.0 - 2.0 * fraction).max(0.5);
                self.rate = Some((share * succeeded).max(cfg.min_rate));
                self.next_slot = now;
                // Judge the new pace on what it does, not on the throttles that started it.
                self.start_window(now);
            }
        }
    }

    /// Begins a new control window at `now`.
    fn start_window(&mut self, now: Instant) {
        self.window_start = now;
        self.sent = 0.0;
        self.ok_units = 0.0;
        self.ok_count = 0;
        self.throttles = 0;
        self.saturated_from = None;
        self.ok_saturated = 0.0;
        self.ok_saturated_count = 0;
    }

    /// Counts one outcome in its 3 s bucket.
    fn count_outcome(&mut self, now: Instant, throttled: bool, cfg: &PacingConfig) {
        let bucket = now.saturating_duration_since(self.epoch).as_secs() / BUCKET_SECS;
        match self.fractions.back_mut() {
            Some((b, outcomes, throttles)) if *b == bucket => {
                *outcomes += 1;
                *throttles += u32::from(throttled);
            }
            _ => self.fractions.push_back((bucket, 1, u32::from(throttled))),
        }
        let keep = (cfg.memory.as_secs() / BUCKET_SECS).max(1);
        while self
            .fractions
            .front()
            .is_some_and(|(b, _, _)| bucket.saturating_sub(*b) > keep)
        {
            self.fractions.pop_front();
        }
    }

    /// The background throttle fraction: the lower quartile of the last minute's complete
    /// 3 s buckets (with at least `min_outcomes` outcomes; four such buckets needed). At a
    /// real quota the pace holds below it for seconds after each cut, so a quarter of the
    /// buckets or more are free of throttles.
    fn background(&self, now: Instant, cfg: &PacingConfig) -> f64 {
        let current = now.saturating_duration_since(self.epoch).as_secs() / BUCKET_SECS;
        let mut complete: Vec<f64> = self
            .fractions
            .iter()
            .filter(|(b, outcomes, _)| *b < current && *outcomes >= cfg.min_outcomes)
            .map(|(_, outcomes, throttles)| f64::from(*throttles) / f64::from(*outcomes))
            .collect();
        if complete.len() < 4 {
            return 0.0;
        }
        complete.sort_by(f64::total_cmp);
        complete[(complete.len() - 1) / 4].min(cfg.max_background)
    }

    /// Whether `throttles` of `outcomes` are no more than the background explains: at most
    /// the expected count plus two standard deviations (none at all without a background).
    fn within_background(
        &self,
        throttles: u32,
        outcomes: u32,
        now: Instant,
        cfg: &PacingConfig,
    ) -> bool {
        let expected = f64::from(outcomes) * self.background(now, cfg);
        f64::from(throttles) <= expected + 2.0 * expected.sqrt()
    }

    /// The success rate over the last two whole seconds, in units per second.
    fn recent_rate(&self, now: Instant) -> f64 {
        let second = now.saturating_duration_since(self.epoch).as_secs();
        let total: f64 = self
            .history
            .iter()
            .filter(|(s, _)| *s + 2 >= second && *s < second)
            .map(|(_, u)| u)
            .sum();
        total / 2.0
    }

    /// The success rate over the quota's window (the last `memory`), in units per second.
    pub fn sustained_rate(&self, now: Instant, cfg: &PacingConfig) -> f64 {
        let second = now.saturating_duration_since(self.epoch).as_secs();
        let keep = cfg.memory.as_secs().max(1);
        let total: f64 = self
            .history
            .iter()
            .filter(|(s, _)| second.saturating_sub(*s) < keep)
            .map(|(_, u)| u)
            .sum();
        let span = keep.min(second + 1).max(1) as f64;
        total / span
    }

    /// Judges the control window if it is due; `latency` is the typical call latency.
    pub fn adjust(
        &mut self,
        now: Instant,
        latency: Duration,
        cfg: &PacingConfig,
    ) -> Option<Adjustment> {
        let window = cfg.min_window.max(latency * 3).min(cfg.max_window);
        let elapsed = now.saturating_duration_since(self.window_start);
        let outcomes = self.ok_count + self.throttles;
        // Throttles the background explains do not count as the quota's signal, nor a few
        // sporadic ones before pacing started.
        let fraction = f64::from(self.throttles) / f64::from(outcomes.max(1));
        let sparse = self.throttles > 0
            && (self.within_background(self.throttles, outcomes, now, cfg)
                || (self.rate.is_none() && fraction < START_FRACTION));
        // A throttled window needs enough outcomes to measure the quota (unless throttles
        // dominate); a clean one only needs a few to show that nothing was throttled.
        let needed = if self.throttles == 0 {
            cfg.min_outcomes.div_ceil(4)
        } else if self.throttles * 4 >= outcomes {
            1
        } else {
            cfg.min_outcomes
        };
        // Many throttles judge early: waiting out the window would only waste more calls.
        let early = self.throttles >= 10
            && self.throttles * 4 >= outcomes
            && elapsed >= (latency * 3).max(cfg.min_window / 4);
        if !early && (elapsed < window || (outcomes < needed && elapsed < cfg.max_window)) {
            return None;
        }
        let secs = elapsed.as_secs_f64();
        let decision = if self.throttles > 0 && !sparse {
            // The successes are what the quota admitted; with none, use the last minute's.
            self.accelerating = 0;
            self.clean = 0;
            let saturated = self
                .saturated_from
                .map(|from| now.saturating_duration_since(from).as_secs_f64())
                .filter(|span| *span >= secs / 2.0);
            let (measured, trusted) = match saturated {
                Some(span) if self.ok_saturated_count >= 5 => (self.ok_saturated / span, true),
                _ if self.ok_count > 0 => (self.ok_units / secs, false),
                _ => (self.sustained_rate(now, cfg), false),
            };
            // Settle after a measured cut; after a guess, keep probing.
            self.hold = if trusted { cfg.settle } else { 0 };
            // What succeeded would have been more by the background's share.
            let measured = measured / (1.0 - self.background(now, cfg));
            // Only a measurement taken while the quota was exhausted tells its level.
            self.ceiling = trusted.then_some(measured);
            if measured <= 0.0 {
                // Nothing has succeeded for a whole quota window: no level to pace at.
                // Unpace and leave the spacing to the seed brake until calls succeed again.
                self.rate.map(|from| Adjustment::Unpaced { from })
            } else {
                // A cut never raises the pace, whatever the measurement's noise.
                let to = (measured.min(self.rate.unwrap_or(f64::INFINITY)) * (1.0 - cfg.margin))
                    .max(cfg.min_rate);
                Some(Adjustment::Cut {
                    from: self.rate,
                    to,
                })
            }
        } else if self.rate.is_some() && outcomes > 0 && self.hold > 0 {
            // Settling after a cut: hold the pace.
            self.hold -= 1;
            None
        } else if let (Some(rate), true) = (self.rate, outcomes > 0) {
            // Clean: probe upward; slowly near the last measured quota, then faster.
            // Back to the last measured quota in one step, then 1% steps; the step doubles
            // once the pace is well above it, or has stayed clean above it for a while.
            let ceiling = self.ceiling.unwrap_or(0.0);
            if rate >= ceiling {
                self.clean += 1;
            }
            let accelerate =
                rate >= ceiling * (1.0 + cfg.accelerate_above) || self.clean > cfg.patience;
            self.accelerating = if accelerate { self.accelerating + 1 } else { 0 };
            let step = (cfg.probe_step * 2f64.powi(self.accelerating as i32)).min(cfg.probe_max);
            let target = if rate < ceiling {
                ceiling
            } else {
                rate * (1.0 + step)
            };
            // Never further than twice what is being sent.
            let demand_cap = (2.0 * self.sent / secs).max(cfg.min_rate);
            let to = if rate >= demand_cap {
                rate
            } else {
                target.min(demand_cap)
            };
            (to != rate).then_some(Adjustment::Probe { from: rate, to })
        } else {
            None
        };
        match decision {
            Some(Adjustment::Cut { to, .. } | Adjustment::Probe { to, .. }) => {
                if self.rate.is_none() {
                    self.next_slot = now;
                }
                self.rate = Some(to);
            }
            Some(Adjustment::Unpaced { .. }) => self.rate = None,
            None => {}
        }
        self.start_window(now);
        decision
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn ms(n: u64) -> Duration {
        Duration::from_millis(n)
    }

    fn paced(now: Instant, rate: f64) -> RateController {
        let mut c = RateController::new(now);
        c.rate = Some(rate);
        c
    }

    #[test]
    fn unpaced_until_the_quota_shows_then_at_most_half_of_what_succeeded() {
        let cfg = PacingConfig::default();
        let t0 = Instant::now();
        let mut c = RateController::new(t0);
        for _ in 0..100 {
            assert_eq!(c.reserve(t0, 1.0, &cfg), Reservation::At(t0));
        }
        for i in 0..40 {
            c.on_admitted(t0 + ms(i * 10), 1.0, &cfg);
        }
        assert_eq!(c.rate(), None);
        // 40 successes in 0.5 s (80/s), then throttles: sporadic ones (under a quarter of
        // the outcomes) leave it unpaced; the 14th (14/54) paces at half of 80/s.
        for _ in 0..13 {
            c.on_throttle(t0 + ms(500), ms(100), &cfg);
        }
        assert_eq!(c.rate(), None);
        c.on_throttle(t0 + ms(500), ms(100), &cfg);
        assert_eq!(c.rate(), Some(80.0 * 0.5));
        // Fewer outcomes than a window needs: not yet.
        let mut d = RateController::new(t0);
        for _ in 0..5 {
            d.on_admitted(t0 + ms(100), 1.0, &cfg);
        }
        for _ in 0..10 {
            d.on_throttle(t0 + ms(500), ms(100), &cfg);
        }
        assert_eq!(d.rate(), None);
    }

    #[test]
    fn a_throttled_window_cuts_to_the_success_rate_measured_while_saturated() {
        let cfg = PacingConfig::default();
        let t0 = Instant::now();
        let mut c = paced(t0, 40.0);
        // A burst the quota had saved: 20 successes in the first 100 ms.
        for i in 0..20 {
            c.on_admitted(t0 + ms(i * 5), 1.0, &cfg);
        }
        // The first throttle at 100 ms; from 200 ms on successes arrive at the quota's 20/s.
        c.on_throttle(t0 + ms(100), ms(100), &cfg);
        for i in 0..16 {
            c.on_admitted(t0 + ms(200 + i * 50), 1.0, &cfg);
            c.on_throttle(t0 + ms(200 + i * 50), ms(100), &cfg);
        }
        let adj = c.adjust(t0 + ms(1000), ms(100), &cfg).unwrap();
        assert_eq!(
            adj,
            Adjustment::Cut {
                from: Some(40.0),
                to: 20.0 * (1.0 - cfg.margin)
            }
        );
        // A cut never raises the pace.
        let mut slow = paced(t0, 10.0);
        for i in 0..30 {
            slow.on_admitted(t0 + ms(i * 30), 1.0, &cfg);
        }
        for _ in 0..3 {
            slow.on_throttle(t0 + ms(950), ms(10), &cfg);
        }
        slow.adjust(t0 + ms(1000), ms(10), &cfg).unwrap();
        assert_eq!(slow.rate(), Some(10.0 * (1.0 - cfg.margin)));
    }

    #[test]
    fn steady_sporadic_throttles_become_background_and_stop_cutting() {
        let cfg = PacingConfig::default();
        let t0 = Instant::now();
        let mut c = paced(t0, 100.0);
        let mut now = t0;
        let mut cuts_after_learning = 0;
        // 5% of calls throttled whatever the pace, for 60 windows of 100 outcomes.
        for second in 0..60 {
            for i in 0..95 {
                c.sent += 1.0;
                c.on_admitted(now + ms(i * 10), 1.0, &cfg);
            }
            for _ in 0..5 {
                c.sent += 1.0;
                c.on_throttle(now + ms(500), ms(10), &cfg);
            }
            now += ms(1000);
            let adj = c.adjust(now, ms(10), &cfg);
            if second >= 30 && matches!(adj, Some(Adjustment::Cut { .. })) {
                cuts_after_learning += 1;
            }
        }
        assert!((c.background(now, &cfg) - 0.05).abs() < 1e-9);
        assert_eq!(cuts_after_learning, 0);
        // A real quota's stretches below it keep the background at zero.
        let mut q = paced(t0, 100.0);
        for second in 0..40u64 {
            let throttled = if second % 20 < 10 { 0 } else { 5 };
            for _ in 0..(100 - throttled) {
                q.on_admitted(t0 + Duration::from_secs(second), 1.0, &cfg);
            }
            for _ in 0..throttled {
                q.on_throttle(t0 + Duration::from_secs(second), ms(10), &cfg);
            }
        }
        assert_eq!(q.background(t0 + Duration::from_secs(40), &cfg), 0.0);
    }

    #[test]
    fn paced_slots_are_spaced_and_reserved_only_within_the_horizon() {
        let cfg = PacingConfig {
            tolerance: Duration::ZERO,
            horizon: ms(1000),
            ..PacingConfig::default()
        };
        let t0 = Instant::now();
        let mut c = paced(t0, 9.9);
        let mut slots = Vec::new();
        loop {
            match c.reserve(t0, 1.0, &cfg) {
                Reservation::At(at) => slots.push(at.duration_since(t0)),
                Reservation::ComeBack(after) => {
                    assert!(after <= cfg.horizon);
                    break;
                }
            }
        }
        // 1 s of horizon at 9.9/s: 10 or 11 slots, about 101 ms apart.
        assert!((10..=11).contains(&slots.len()), "{slots:?}");
        let gap = slots[1] - slots[0];
        assert!(gap > ms(100) && gap < ms(102), "{gap:?}");
    }

    #[test]
    fn clean_windows_probe_slowly_near_the_ceiling_then_faster_but_not_past_demand() {
        let cfg = PacingConfig::default();
        let t0 = Instant::now();
        let mut c = paced(t0, 98.0);
        c.ceiling = Some(100.0);
        let mut now = t0;
        let mut rates = Vec::new();
        for _ in 0..6 {
            // 300 calls sent and succeeded per second: demand well above the rate.
            for _ in 0..300 {
                c.sent += 1.0;
                c.on_admitted(now, 1.0, &cfg);
            }
            now += ms(1000);
            c.adjust(now, ms(100), &cfg);
            rates.push(c.rate().unwrap());
        }
        // Back to the ceiling, three 1% steps, then doubling steps.
        let expected = [
            100.0,
            101.0,
            102.01,
            103.0301,
            103.0301 * 1.02,
            103.0301 * 1.02 * 1.04,
        ];
        for (r, e) in rates.iter().zip(expected) {
            assert!((r - e).abs() < 1e-9, "{rates:?}");
        }
        // Demand of 10/s caps growth at 20/s.
        let mut c = paced(now, 19.9);
        for _ in 0..10 {
            c.sent += 1.0;
            c.on_admitted(now, 1.0, &cfg);
        }
        now += ms(1000);
        c.adjust(now, ms(100), &cfg);
        assert_eq!(c.rate(), Some(20.0));
    }

    #[test]
    fn a_window_with_no_success_falls_back_to_the_minute_rate() {
        let cfg = PacingConfig::default();
        let t0 = Instant::now();
        let mut c = paced(t0, 15.0);
        // 50 s at 10 successes/s, then a blackout second with throttles only.
        for s in 0..50 {
            for _ in 0..10 {
                c.on_admitted(t0 + Duration::from_secs(s), 1.0, &cfg);
            }
        }
        c.adjust(t0 + Duration::from_secs(50), ms(100), &cfg);
        c.rate = Some(15.0);
        for _ in 0..30 {
            c.on_throttle(t0 + Duration::from_secs(51), ms(100), &cfg);
        }
        c.adjust(t0 + Duration::from_secs(51), ms(100), &cfg)
            .unwrap();
        let to = c.rate().unwrap();
        assert!(
            (to - 500.0 / 52.0 * (1.0 - cfg.margin)).abs() < 0.01,
            "{to}"
        );
    }

    #[test]
    fn with_no_success_in_a_minute_pacing_stops() {
        let cfg = PacingConfig::default();
        let t0 = Instant::now();
        // Throttled from the very start: nothing to pace at.
        let mut c = RateController::new(t0);
        for i in 0..30 {
            c.on_throttle(t0 + ms(i * 10), ms(100), &cfg);
        }
        assert_eq!(c.rate(), None);
        assert_eq!(c.adjust(t0 + ms(1000), ms(100), &cfg), None);
        // Paced, then a minute and more with throttles only.
        let mut c = paced(t0, 5.0);
        for i in 0..30 {
            c.on_throttle(t0 + Duration::from_secs(61) + ms(i), ms(100), &cfg);
        }
        let adj = c.adjust(t0 + Duration::from_secs(62), ms(100), &cfg);
        assert_eq!(adj, Some(Adjustment::Unpaced { from: 5.0 }));
        assert_eq!(c.rate(), None);
    }

    #[test]
    fn settling_gives_back_or_takes_the_difference() {
        let cfg = PacingConfig {
            tolerance: Duration::ZERO,
            horizon: ms(1000),
            ..PacingConfig::default()
        };
        let t0 = Instant::now();
        let mut c = paced(t0, 1000.0);
        assert_eq!(c.reserve(t0, 100.0, &cfg), Reservation::At(t0));
        c.settle(t0, 100.0, 40.0, &cfg);
        assert_eq!(c.reserve(t0, 10.0, &cfg), Reservation::At(t0 + ms(40)));
        c.settle(t0, 10.0, 60.0, &cfg);
        assert_eq!(c.reserve(t0, 1.0, &cfg), Reservation::At(t0 + ms(100)));
    }

    #[test]
    fn refunds_give_slots_back() {
        let cfg = PacingConfig {
            tolerance: Duration::ZERO,
            horizon: ms(1000),
            ..PacingConfig::default()
        };
        let t0 = Instant::now();
        let mut c = paced(t0, 1000.0);
        assert_eq!(c.reserve(t0, 500.0, &cfg), Reservation::At(t0));
        assert_eq!(c.reserve(t0, 100.0, &cfg), Reservation::At(t0 + ms(500)));
        c.refund(t0, 400.0, &cfg);
        assert_eq!(c.reserve(t0, 1.0, &cfg), Reservation::At(t0 + ms(200)));
    }
}
