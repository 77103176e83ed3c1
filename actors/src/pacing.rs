//! Adaptive pacing: a learned send rate per model, as a pure state machine the
//! [`crate::ThrottleActor`] applies (through [`crate::model_throttle`]). Nothing here sleeps
//! or reads the clock.
//!
//! # Why
//! Bedrock quotas are per model and region, in requests and tokens per minute, and real ones
//! are low: tens to a few hundred requests per minute. AWS does not say how a minute's quota
//! is enforced: a token bucket (with a small burst or a minute's), a sliding 60 s window or a
//! fixed 60 s window all fit its documents. A throttle (429 ThrottlingException) comes back in
//! milliseconds. The seed's schedule stops storms but oscillates; callers that retry on their
//! own keep the quota busy only by wasting most of their calls on throttles. The pacer spaces
//! calls at the rate the quota admits, so the quota stays busy and few calls are throttled.
//!
//! # What the evidence says, shape by shape
//! At low rates every estimate is noisy (one minute of a 30 requests-per-minute quota holds 30
//! calls), so the pacer acts only on what its evidence can support:
//! - A pace that ran for a *proof* (enough calls, none throttled, the pace actually used) is
//!   sustainable: the **floor**. A pace at which calls were throttled is too fast: the
//!   **ceiling**. Between the two the quota's rate lies.
//! - Above the quota, a bucket with a burst of one wastes half the calls (every other call
//!   comes a little early and is throttled, and the refill it missed is lost), so the pace
//!   approaches the quota from below: it runs at the floor and *probes* a little above it.
//! - While the quota is exhausted, the calls that still succeed arrive at the rate it
//!   refills (bursts spent): the **measured** rate of a throttled stretch is the quota's rate
//!   for a bucket, and for a bucket of burst one at most that.
//! - A window (sliding or fixed) admits its whole quota at once and then nothing until the
//!   window moves: a **closure** (throttles and no success for a while) followed by successes
//!   means the successes of the last window are the quota's size, and the pace is set to it.
//!   A window answers a too-fast pace only once its window fills, so once a closure showed a
//!   window, a proof lasts the quota's own window (60 s).
//!
//! # How ([`RateController`], one per resource: calls, and tokens for TPM quotas)
//! - **Pacing (GCRA)**: each call reserves the next slot `1/rate` after the previous one (a
//!   call reserving `n` tokens takes `n/rate`). Slots are reserved at most `horizon` ahead; a
//!   caller beyond it comes back later, so a cut takes effect within `horizon`.
//! - **Unpaced until the quota shows**: with no evidence of a quota nothing is delayed. Once a
//!   quarter of the recent outcomes are throttles (and the background, below, does not
//!   explain them), the pace starts at half the rate calls were being sent at: the ceiling.
//! - **Throttled** (a throttle of a call sent at the current pace, beyond the background):
//!   the pace is too fast. Above a floor it goes back to the floor (the probe failed); at
//!   the floor (the quota shrank, or the floor was proven only on saved burst) it is cut to
//!   the rate measured while throttled (from at least `min_measured` successes; half the pace
//!   without them), and the floor is forgotten. The next slot is one interval away: the
//!   quota has nothing left now. Each cut is judged on the throttles of calls sent at that
//!   pace only, so a burst of throttles from calls already sent cuts once.
//! - **Proof and probe**: a pace held for a proof becomes the floor. With a ceiling known,
//!   the next pace is the geometric middle of floor and ceiling (bisection, at most
//!   `max_step` up); once they are within `precision` the search is over and the pace stays at
//!   the floor, re-testing the ceiling after `reprobe_after` (doubling after each failed
//!   re-test up to `reprobe_max`), so a raised quota is found. Without a ceiling (it grew, or
//!   a closure showed a window) the pace climbs by a step that starts at `first_step` and
//!   doubles with each proof up to `max_step`; for a window, whose size the closure measured
//!   exactly, the step stays at `first_step`. Nothing is proven, and nothing probed, while
//!   demand does not use the pace.
//! - **Background throttles**: Bedrock throttles now and then even under quota; cutting for
//!   each would ratchet the pace down while the quota sits unused. The background is the
//!   lower quartile of the throttle fractions of the last minute's 3 s stretches (with at
//!   least `min_outcomes` outcomes each; at most `max_background`); throttles within two
//!   standard deviations of what it explains do not count.
//! - **Quota gone**: if nothing succeeds for a whole `window` plus a proof, pacing stops and
//!   the seed brake (see `throttle.rs`) spaces calls until they succeed again.
//!
//! Constants (the defaults): proof 2 calls and 1 s (the window once a closure was seen),
//! precision 2%, first step 2%, largest step 25%, margin 1%, re-test after 30 s doubling to
//! 5 min, at least 3 successes to measure, closure after 5 intervals and 2 s without a
//! success, horizon 250 ms, window 60 s, minimum rate 0.05/s.

use std::collections::VecDeque;
use std::time::Duration;

use tokio::time::Instant;

/// Settings of a [`RateController`].
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct PacingConfig {
    /// Outcomes at a pace, none throttled, that prove it (with `proof_min`).
    pub proof_calls: u32,
    /// Shortest proof (and at least three call latencies).
    pub proof_min: Duration,
    /// The quota's own window: proofs last it once a window was seen; the minute count is
    /// taken over it; nothing succeeding for it stops pacing.
    pub window: Duration,
    /// Floor and ceiling this close (relative) end the search.
    pub precision: f64,
    /// First upward step without a ceiling.
    pub first_step: f64,
    /// Largest upward step.
    pub max_step: f64,
    /// How far below a measured quota the pace is set.
    pub margin: f64,
    /// Hold at the floor before the first re-test of the ceiling.
    pub reprobe_after: Duration,
    /// Longest hold between re-tests.
    pub reprobe_max: Duration,
    /// Successes a throttled stretch needs before its measured rate is trusted.
    pub min_measured: u32,
    /// Outcomes a 3 s stretch needs to count towards the background.
    pub min_outcomes: u32,
    /// Most of the background throttle fraction that is treated as noise.
    pub max_background: f64,
    /// Slowest pace ever set, in units per second.
    pub min_rate: f64,
    /// How far ahead a slot may be reserved.
    pub horizon: Duration,
}

impl Default for PacingConfig {
    fn default() -> Self {
        PacingConfig {
            proof_calls: 2,
            proof_min: Duration::from_secs(1),
            window: Duration::from_secs(60),
            precision: 0.02,
            first_step: 0.02,
            max_step: 0.25,
            margin: 0.01,
            reprobe_after: Duration::from_secs(30),
            reprobe_max: Duration::from_secs(300),
            min_measured: 3,
            min_outcomes: 20,
            max_background: 0.10,
            min_rate: 0.05,
            horizon: Duration::from_millis(250),
        }
    }
}

/// Throttled fraction of the recent outcomes that starts pacing an unpaced model.
const START_FRACTION: f64 = 0.25;

/// Consecutive throttles (no success between) that, with [`CLOSURE_QUIET`], make a closure.
const CLOSURE_THROTTLES: u32 = 3;

/// Time without a success that, with [`CLOSURE_THROTTLES`], makes a closure (and at least
/// [`CLOSURE_GAPS`] of the recent gaps between successes: a bucket keeps admitting calls at
/// its rate, a spent window admits none).
const CLOSURE_QUIET: Duration = Duration::from_secs(1);

/// Successes in the last window a closure needs: a window that admitted fewer tells too
/// little about its size (a bucket of burst one looks the same).
const CLOSURE_SUCCESSES: usize = 3;

/// Recent gaps between successes that a closure must last.
const CLOSURE_GAPS: u32 = 5;

/// Successes the recent gap between successes is averaged over.
const GAP_SUCCESSES: usize = 10;

/// Longest pause between probes of a closed window once it should have moved.
const CLOSURE_PROBE_MAX: Duration = Duration::from_secs(15);

/// Success times kept for the window's size and its expected reopening.
const SUCCESS_TIMES: usize = 4096;

/// Length of the stretches the background throttle fraction is measured over.
const BUCKET_SECS: u64 = 3;

/// How far back the unpaced start looks for the rate calls were sent at.
const RECENT_SECS: u64 = 2;

/// The answer to a reservation.
#[derive(Debug, Clone, Copy, PartialEq)]
pub enum Reservation {
    /// Send at this time (now or later); the slot is taken.
    At(Instant),
    /// No slot within the horizon: ask again after this long.
    ComeBack(Duration),
}

/// What changed the pace.
#[derive(Debug, Clone, Copy, PartialEq)]
pub enum Adjustment {
    /// Throttled: the pace went down (back to the floor, or to the measured quota).
    Cut { from: Option<f64>, to: f64 },
    /// A proof: the pace went up to probe for more.
    Probe { from: f64, to: f64 },
    /// Nothing succeeded for a whole quota window: pacing stopped (the brake spaces calls).
    Unpaced { from: f64 },
}

/// Where the search for the quota's rate stands.
#[derive(Debug, Clone, Copy, PartialEq)]
enum Search {
    /// Floor and ceiling far apart (or no ceiling): keep probing after each proof.
    Open,
    /// Floor and ceiling within `precision`: hold at the floor until this time, then
    /// re-test the ceiling.
    Holding { until: Instant },
}

/// The stretch of time the current pace has run: what proves or refutes it.
#[derive(Debug, Clone, Copy)]
struct Stretch {
    /// When the pace was set.
    start: Instant,
    /// Outcomes (admitted calls) of calls sent at this pace.
    ok: u32,
    /// Units reserved at this pace: whether demand used it.
    sent: f64,
}

/// The pace of one resource (calls, or tokens) of one model.
#[derive(Debug, Clone)]
pub struct RateController {
    /// Units per second allowed; `None` until the quota shows (unpaced).
    rate: Option<f64>,
    /// GCRA's theoretical arrival time: the next free slot.
    next_slot: Instant,
    /// Highest pace proven sustainable.
    floor: Option<f64>,
    /// Lowest pace at which calls were throttled.
    ceiling: Option<f64>,
    /// How far the search is.
    search: Search,
    /// Hold before the next re-test of the ceiling.
    reprobe_hold: Duration,
    /// Consecutive proofs without a ceiling, for the doubling step.
    climbs: u32,
    /// The current pace's stretch.
    stretch: Stretch,
    /// After a failed probe, throttles at the floor before this do not refute it.
    floor_grace_until: Instant,
    /// Outcomes reported earlier than this were of calls sent before the pace changed.
    fresh_from: Instant,
    /// The first throttle of the current throttled episode (cleared by a proof).
    episode: Option<Instant>,
    /// Units that succeeded since one latency after the episode began, and how many calls.
    episode_ok: (f64, u32),
    /// One latency after the episode began: successes from then on were admitted while the
    /// quota was exhausted.
    episode_measure_from: Option<Instant>,
    /// The last success (admitted outcome).
    last_success: Option<Instant>,
    /// Throttles since the last success.
    consecutive: u32,
    /// Success times over the last `window` (at most [`SUCCESS_TIMES`]): the window's size
    /// and when it will move.
    successes: VecDeque<Instant>,
    /// Throttled and nothing succeeded for a while: the quota's window is spent.
    closed: bool,
    /// While closed: the window's size when it closed (its successes over the last
    /// `window`), and the pause before the next probe if the one at the expected
    /// reopening fails.
    closure: Option<(f64, Duration)>,
    /// A closure has been seen: the quota is a window, and proofs last it.
    window_like: bool,
    /// Outcomes and throttles per 3 s over the last `window`: the lowest throttle fraction
    /// among them is the background, throttles the pace does not cause.
    fractions: VecDeque<(u64, u32, u32)>,
    /// Units that succeeded, and units reserved, per whole second over the last `window`.
    history: VecDeque<(u64, f64, f64)>,
    /// Where the history's seconds are counted from.
    epoch: Instant,
}

impl RateController {
    /// An unpaced controller starting at `now`.
    pub fn new(now: Instant) -> RateController {
        RateController {
            rate: None,
            next_slot: now,
            floor: None,
            ceiling: None,
            search: Search::Open,
            reprobe_hold: Duration::ZERO,
            climbs: 0,
            stretch: Stretch {
                start: now,
                ok: 0,
                sent: 0.0,
            },
            fresh_from: now,
            floor_grace_until: now,
            episode: None,
            episode_ok: (0.0, 0),
            episode_measure_from: None,
            last_success: None,
            consecutive: 0,
            successes: VecDeque::new(),
            closed: false,
            closure: None,
            window_like: false,
            fractions: VecDeque::new(),
            history: VecDeque::new(),
            epoch: now,
        }
    }

    /// The paced rate in units per second, or `None` while unpaced.
    pub fn rate(&self) -> Option<f64> {
        self.rate
    }

    /// The highest pace proven sustainable, if any.
    pub fn floor(&self) -> Option<f64> {
        self.floor
    }

    /// The lowest pace at which calls were throttled, if any.
    pub fn ceiling(&self) -> Option<f64> {
        self.ceiling
    }

    /// Reserves a slot for `units` (1 for a call; reserved tokens for the token lane).
    pub fn reserve(&mut self, now: Instant, units: f64, cfg: &PacingConfig) -> Reservation {
        self.count_history(now, 0.0, units, cfg);
        let Some(rate) = self.rate else {
            return Reservation::At(now);
        };
        let slot = self.next_slot.max(now);
        let wait = slot.saturating_duration_since(now);
        if wait > cfg.horizon {
            return Reservation::ComeBack(
                cfg.horizon
                    .min(wait - cfg.horizon)
                    .max(Duration::from_millis(10)),
            );
        }
        self.next_slot = slot + Duration::from_secs_f64(units / rate);
        self.stretch.sent += units;
        Reservation::At(slot)
    }

    /// Gives back `units` of a reservation that will not be used (or was over-estimated).
    pub fn refund(&mut self, now: Instant, units: f64, _cfg: &PacingConfig) {
        if units <= 0.0 {
            return;
        }
        self.stretch.sent = (self.stretch.sent - units).max(0.0);
        if let Some(rate) = self.rate {
            let back = Duration::from_secs_f64(units / rate);
            self.next_slot = self.next_slot.checked_sub(back).unwrap_or(now).max(now);
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
        self.stretch.sent += extra;
        if let Some(rate) = self.rate {
            self.next_slot = self.next_slot.max(now) + Duration::from_secs_f64(extra / rate);
        }
    }

    /// Records a call the quota admitted (it was not throttled; it may still have failed
    /// otherwise), worth `units`, of a call that took `latency`. A success after a closure
    /// reopens the pace.
    pub fn on_admitted(
        &mut self,
        now: Instant,
        units: f64,
        latency: Duration,
        cfg: &PacingConfig,
    ) -> Option<Adjustment> {
        self.count_outcome(now, false, cfg);
        self.count_history(now, units, 0.0, cfg);
        self.last_success = Some(now);
        self.consecutive = 0;
        self.successes.push_back(now);
        while self.successes.len() > SUCCESS_TIMES
            || self
                .successes
                .front()
                .is_some_and(|at| now.saturating_duration_since(*at) >= cfg.window)
        {
            self.successes.pop_front();
        }
        if self
            .episode_measure_from
            .is_some_and(|from| now.checked_sub(latency).is_some_and(|sent| sent >= from))
        {
            self.episode_ok.0 += units;
            self.episode_ok.1 += 1;
        }
        if self.is_fresh(now, latency) {
            self.stretch.ok += 1;
        }
        self.reopen(now, cfg)
    }

    /// Records a throttle of a call that took `latency` to come back; `typical` is the
    /// typical latency of a successful call (the feedback delay).
    pub fn on_throttle(
        &mut self,
        now: Instant,
        latency: Duration,
        typical: Duration,
        cfg: &PacingConfig,
    ) -> Option<Adjustment> {
        self.count_outcome(now, true, cfg);
        self.consecutive += 1;
        if self.episode.is_none() {
            self.episode = Some(now);
            self.episode_ok = (0.0, 0);
            self.episode_measure_from = Some(now + typical);
        }
        if self.within_background(now, cfg) {
            return None;
        }
        let Some(rate) = self.rate else {
            return self.start(now, cfg);
        };
        // Only a call sent at the current pace says anything about it.
        if !self.is_fresh(now, latency) {
            return None;
        }
        if self.closed {
            // The window has not moved yet: probe again a little later.
            if let Some((_, pause)) = &mut self.closure {
                self.next_slot = self.next_slot.max(now + *pause);
                *pause = (*pause * 2).min(CLOSURE_PROBE_MAX);
            }
            self.fresh_from = now;
            return None;
        }
        if self.consecutive >= CLOSURE_THROTTLES
            && self.successes.len() >= CLOSURE_SUCCESSES
            && now.saturating_duration_since(self.last_success.unwrap_or(self.epoch))
                >= CLOSURE_QUIET.max(self.success_gap() * CLOSURE_GAPS)
        {
            return self.close(now, rate, cfg);
        }
        self.ceiling = Some(self.ceiling.map_or(rate, |c| c.min(rate)));
        self.search = Search::Open;
        self.climbs = 0;
        // Right after a failed probe the quota may still be short for a while (a window holds
        // the probe's extra calls until they leave it): throttles at the floor then prove
        // nothing against it.
        if self.floor.is_some_and(|floor| floor >= rate) && now < self.floor_grace_until {
            return None;
        }
        let to = match self.floor {
            // A probe failed: back to what is proven.
            Some(floor) if floor < rate => {
                let grace = if self.window_like {
                    cfg.window
                } else {
                    cfg.proof_min
                };
                self.floor_grace_until = now + grace;
                floor
            }
            // The floor itself is throttled: cut to what the quota admitted meanwhile.
            _ => {
                self.floor = None;
                let (units, calls) = self.episode_ok;
                let span = self.episode_measure_from.map_or(0.0, |from| {
                    now.saturating_duration_since(from).as_secs_f64()
                });
                if calls >= cfg.min_measured && span > 0.0 {
                    (units / span * (1.0 - cfg.margin)).min(rate * (1.0 - cfg.margin))
                } else {
                    rate / 2.0
                }
            }
        };
        self.set(now, to.max(cfg.min_rate), cfg)
    }

    /// Reviews the evidence (call it after each outcome): closures, proofs, probes, and a
    /// quota that is gone. `latency` is the typical call latency.
    pub fn adjust(
        &mut self,
        now: Instant,
        latency: Duration,
        cfg: &PacingConfig,
    ) -> Option<Adjustment> {
        let rate = self.rate?;
        let quiet = now.saturating_duration_since(self.last_success.unwrap_or(self.epoch));
        // 2. Nothing succeeded for a whole window: no level to pace at.
        if quiet >= cfg.window * 2 && self.episode.is_some() {
            return self.unpace(now);
        }
        // 3. A proof of the current pace, then the next probe.
        if self.proven(now, latency, cfg) {
            return self.probe(now, rate, cfg);
        }
        // 4. Holding at the floor: re-test the ceiling when the hold is over.
        if let Search::Holding { until } = self.search {
            if now >= until {
                self.search = Search::Open;
                if let Some(ceiling) = self.ceiling {
                    return self.set(now, ceiling, cfg);
                }
            }
        }
        None
    }

    /// Ends a closure: the quota's window moved and calls succeed again. The successes of
    /// the last window are the window's size: pace at it (less the margin).
    fn reopen(&mut self, now: Instant, cfg: &PacingConfig) -> Option<Adjustment> {
        if !self.closed {
            return None;
        }
        self.closed = false;
        self.window_like = true;
        self.floor = None;
        self.ceiling = None;
        self.search = Search::Open;
        self.climbs = 0;
        let size = self.closure.take().map_or(1.0, |(size, _)| size);
        let to = (size / cfg.window.as_secs_f64() * (1.0 - cfg.margin)).max(cfg.min_rate);
        self.next_slot = now;
        self.set(now, to, cfg)
    }

    /// The quota's window is spent: nothing more is sent until it should have moved (one
    /// window after the oldest success it holds), then it is probed, less and less often.
    fn close(&mut self, now: Instant, rate: f64, cfg: &PacingConfig) -> Option<Adjustment> {
        self.closed = true;
        let size = self.successes.len() as f64;
        let oldest = self.successes.front().copied().unwrap_or(now);
        let reopen = (oldest + cfg.window + Duration::from_millis(50)).max(now);
        self.closure = Some((size, Duration::from_secs(1)));
        self.next_slot = reopen;
        self.fresh_from = now;
        let to = (size.max(1.0) / cfg.window.as_secs_f64()).max(cfg.min_rate);
        self.rate = Some(to);
        Some(Adjustment::Cut {
            from: Some(rate),
            to,
        })
    }

    /// Whether the pace is closed (a window spent).
    pub fn is_closed(&self) -> bool {
        self.closed
    }

    /// The unpaced start: the quota showed. Pace at half the rate calls were sent at.
    fn start(&mut self, now: Instant, cfg: &PacingConfig) -> Option<Adjustment> {
        let (outcomes, throttles) = self.recent_outcomes(now);
        if outcomes == 0 || f64::from(throttles) < START_FRACTION * f64::from(outcomes) {
            return None;
        }
        let sent = self.recent_sent(now);
        if sent <= 0.0 {
            return None;
        }
        self.ceiling = Some(sent);
        self.set(now, (sent / 2.0).max(cfg.min_rate), cfg)
    }

    /// Sets the pace to `to` from now on: a new stretch, and the next slot one interval away.
    fn set(&mut self, now: Instant, to: f64, cfg: &PacingConfig) -> Option<Adjustment> {
        let from = self.rate;
        // Slots reserved so far run at the old pace; calls sent from their end on at this one.
        self.fresh_from = self.next_slot.max(now);
        self.rate = Some(to);
        let interval = Duration::from_secs_f64(1.0 / to).min(cfg.horizon * 4);
        if from.is_none_or(|f| to < f) {
            // Down: the quota has nothing left now; wait an interval.
            self.next_slot = self.next_slot.max(now + interval);
        }
        self.stretch = Stretch {
            start: now,
            ok: 0,
            sent: 0.0,
        };
        match from {
            Some(f) if to > f => Some(Adjustment::Probe { from: f, to }),
            Some(f) if to == f => None,
            _ => Some(Adjustment::Cut { from, to }),
        }
    }

    /// Pacing stops: nothing has succeeded for a whole window.
    fn unpace(&mut self, now: Instant) -> Option<Adjustment> {
        let from = self.rate.take()?;
        self.floor = None;
        self.ceiling = None;
        self.closed = false;
        self.episode = None;
        self.search = Search::Open;
        self.stretch = Stretch {
            start: now,
            ok: 0,
            sent: 0.0,
        };
        Some(Adjustment::Unpaced { from })
    }

    /// Whether the current pace has run long enough, clean, and used, to be proven.
    fn proven(&self, now: Instant, latency: Duration, cfg: &PacingConfig) -> bool {
        let Some(rate) = self.rate else {
            return false;
        };
        if self.closed || matches!(self.search, Search::Holding { .. }) {
            return false;
        }
        let span = if self.window_like {
            cfg.window
        } else {
            cfg.proof_min.max(latency * 3)
        };
        let elapsed = now.saturating_duration_since(self.stretch.start);
        elapsed >= span
            && self.stretch.ok >= cfg.proof_calls
            && self.stretch.sent >= 0.8 * rate * elapsed.as_secs_f64()
    }

    /// The current pace is proven: it is the floor; probe above it.
    fn probe(&mut self, now: Instant, rate: f64, cfg: &PacingConfig) -> Option<Adjustment> {
        self.floor = Some(self.floor.map_or(rate, |f| f.max(rate)));
        let floor = rate;
        self.episode = None;
        self.episode_measure_from = None;
        match self.ceiling {
            Some(ceiling) if ceiling <= floor => {
                // The quota grew past the old ceiling: search upwards again.
                self.ceiling = None;
                self.climbs = 0;
                self.reprobe_hold = Duration::ZERO;
            }
            Some(ceiling) if ceiling / floor - 1.0 <= cfg.precision => {
                // Found: hold at the floor, re-test the ceiling later.
                self.reprobe_hold = if self.reprobe_hold.is_zero() {
                    cfg.reprobe_after
                } else {
                    (self.reprobe_hold * 2).min(cfg.reprobe_max)
                };
                self.search = Search::Holding {
                    until: now + self.reprobe_hold,
                };
                self.stretch = Stretch {
                    start: now,
                    ok: 0,
                    sent: 0.0,
                };
                return None;
            }
            Some(ceiling) => {
                let to = (floor * ceiling).sqrt().min(floor * (1.0 + cfg.max_step));
                return self.set(now, to, cfg);
            }
            None => {}
        }
        let step = if self.window_like {
            cfg.first_step
        } else {
            (cfg.first_step * 2f64.powi(self.climbs as i32)).min(cfg.max_step)
        };
        self.climbs += 1;
        self.set(now, floor * (1.0 + step), cfg)
    }

    /// The mean gap between the last [`GAP_SUCCESSES`] successes (zero with fewer than two).
    fn success_gap(&self) -> Duration {
        let n = self.successes.len().min(GAP_SUCCESSES);
        if n < 2 {
            return Duration::ZERO;
        }
        let last = self.successes[self.successes.len() - 1];
        let first = self.successes[self.successes.len() - n];
        (last - first) / (n as u32 - 1)
    }

    /// Whether an outcome reported at `now` of a call that took `latency` was sent at the
    /// current pace.
    fn is_fresh(&self, now: Instant, latency: Duration) -> bool {
        now.checked_sub(latency)
            .is_some_and(|sent| sent >= self.fresh_from)
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
        let keep = (cfg.window.as_secs() / BUCKET_SECS).max(1);
        while self
            .fractions
            .front()
            .is_some_and(|(b, _, _)| bucket.saturating_sub(*b) > keep)
        {
            self.fractions.pop_front();
        }
    }

    /// Adds succeeded and reserved units to the current second's history.
    fn count_history(&mut self, now: Instant, ok: f64, sent: f64, cfg: &PacingConfig) {
        let second = now.saturating_duration_since(self.epoch).as_secs();
        match self.history.back_mut() {
            Some((s, o, r)) if *s == second => {
                *o += ok;
                *r += sent;
            }
            _ => self.history.push_back((second, ok, sent)),
        }
        let keep = cfg.window.as_secs().max(1);
        while self
            .history
            .front()
            .is_some_and(|(s, _, _)| second.saturating_sub(*s) >= keep)
        {
            self.history.pop_front();
        }
    }

    /// Outcomes and throttles over the last few seconds.
    fn recent_outcomes(&self, now: Instant) -> (u32, u32) {
        let bucket = now.saturating_duration_since(self.epoch).as_secs() / BUCKET_SECS;
        self.fractions
            .iter()
            .filter(|(b, _, _)| *b + 1 >= bucket)
            .fold((0, 0), |(o, t), (_, bo, bt)| (o + bo, t + bt))
    }

    /// Units reserved per second over the last [`RECENT_SECS`] (or since the start).
    fn recent_sent(&self, now: Instant) -> f64 {
        let elapsed = now.saturating_duration_since(self.epoch).as_secs_f64();
        let second = elapsed as u64;
        let total: f64 = self
            .history
            .iter()
            .filter(|(s, _, _)| s + RECENT_SECS > second)
            .map(|(_, _, r)| r)
            .sum();
        let span = elapsed.min(RECENT_SECS as f64).max(0.25);
        total / span
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

    /// Whether the recent throttles are no more than the background explains: at most the
    /// expected count plus two standard deviations (none at all without a background).
    fn within_background(&self, now: Instant, cfg: &PacingConfig) -> bool {
        let background = self.background(now, cfg);
        if background <= 0.0 {
            return false;
        }
        let (outcomes, throttles) = self.recent_outcomes(now);
        let expected = f64::from(outcomes) * background;
        f64::from(throttles) <= expected + 2.0 * expected.sqrt()
    }
}
