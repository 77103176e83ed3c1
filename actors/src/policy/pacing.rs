//! Adaptive pacing: a learned send rate per model, as a pure state machine the
//! [`crate::ThrottleActor`] applies (through [`crate::actor::throttle::model`]). Nothing here sleeps
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
//! # What the evidence says
//! At low rates every estimate is noisy (a minute of a 30 requests-per-minute quota holds 30
//! calls), so the pacer acts only on what its evidence supports:
//! - A pace that ran for a **proof** (long enough, used by demand, none of its calls
//!   throttled) is sustainable: it becomes the **floor**. A pace at which calls were throttled
//!   is too fast: the **ceiling**. The quota's rate lies between the two.
//! - Above the quota, a bucket with a burst of one wastes half the calls (every other call
//!   comes a little early and is throttled, and the refill it missed is lost). So the pace
//!   approaches the quota from below: it runs at the floor and probes a little above it.
//! - While a bucket is exhausted (any burst spent) it admits calls at the rate it refills:
//!   the share of a pace's calls that were admitted, times the pace, is the quota's rate
//!   **measured**, to within about one call. A throttle answers in milliseconds, a success
//!   only when its call ends (seconds for a long answer or a stream), so a call sent at the
//!   pace and not throttled by now counts as admitted whether its answer is back or not.
//!   (Counting only the successes already back read a pace of seconds-long calls as mostly
//!   throttled, and stepped it down a few percent at a time.)
//! - A window (sliding or fixed) admits its whole quota at once and then nothing until the
//!   window moves: a **closure** (several throttles in a row and no success for several of
//!   the recent gaps between successes plus one call latency: a lull in sending shows as a
//!   lull in successes one latency later). The successes of the last window are then its size,
//!   and it moves one window after the oldest of them. A window answers a too-fast pace only
//!   when it fills, so once a closure showed a window, a proof lasts the quota's own window.
//!
//! # How ([`RateController`], one per resource: calls, and tokens for TPM quotas)
//! - **Pacing (GCRA)**: each call reserves the next slot `1/rate` after the previous one (a
//!   call reserving `n` tokens takes `n/rate`). Slots are reserved at most `horizon` ahead; a
//!   caller beyond it comes back later, so a cut takes effect within `horizon`. After a cut
//!   the next slot is one interval away: the quota has nothing left now.
//! - **Unpaced until the quota shows**: with no evidence of a quota nothing is delayed. Once a
//!   quarter of the recent outcomes are throttles, and more of them than Bedrock's stray
//!   throttles explain, over the last 6 s and the last 18 s (a background of at least 5%
//!   would throttle that many of them less than once in a hundred: one throttle, or a
//!   passing cluster, among a sparse caller's few calls does not start pacing), the pace
//!   starts at half the rate calls were succeeding at (in tokens for the
//!   token lane, even before a success: a throttled call counts at its own size); the rate
//!   they came back at is the first ceiling. It waits for three call latencies of outcomes,
//!   but at most 300 ms: with calls of seconds, waiting for their successes let a storm of
//!   throttles run that long (a sixth of a minute's calls at 3x a quota with 0.65 s streams).
//! - **Evidence only where demand uses the pace**: a throttle says a pace is too fast only if
//!   callers were using it (reserving at least 80% of it lately). Under a pace they leave
//!   unused, a throttle counts only beyond the background as above, and then what it
//!   measures is demand's rate, not the pace's: a pace is never cut below what callers were
//!   succeeding at because of throttles the background explains. A pace that demand leaves
//!   mostly unused (under half of it) with no throttle for 30 s is **released**: callers
//!   under their quota see no pacing delay; a quota that binds again shows again.
//! - **A throttle** of a call sent at the current pace: above the floor, the probe failed:
//!   back to the floor (throttles at the floor in the next moments, while the quota recovers
//!   from the probe, do not count against it). At the floor, the floor is refuted: the pace
//!   goes to the rate measured at it when at least `confident` of its calls were admitted
//!   and three quarters of them (that measurement, plus its noise, becomes the ceiling), to
//!   the admitted share of the pace with fewer, and otherwise it steps down, by twice
//!   `precision` and doubling with each further refutation. Each decision is judged
//!   only on calls sent at that pace, so a burst of throttles from calls already sent acts once.
//! - **Proof and probe**: with a ceiling, the next pace is the geometric middle of floor and
//!   ceiling (at most `max_step` up). Once they are within `precision` the search is over: the
//!   pace holds at the floor and re-tests a little above the ceiling after `retest_calls`
//!   calls (at least `retest_min`), proven over `retest_calls / 2` calls, so that a raised
//!   quota is found and a noisy ceiling is not. Without a ceiling the pace climbs by a step
//!   that starts at `first_step` and doubles with each proof up to `max_step`; for a window,
//!   whose size the closure measured, the step stays at `first_step`. Nothing is proven while
//!   demand does not use the pace.
//! - **Background throttles**: Bedrock throttles now and then even under quota; cutting for
//!   each would ratchet the pace down while the quota sits unused. The background is the
//!   lower quartile of the throttle fractions of the last minute's 3 s stretches (with at
//!   least `min_outcomes` outcomes each, at most `max_background`); throttles within two
//!   standard deviations of what it explains do not count.
//! - **Quota gone**: if nothing succeeds for two windows while throttled, pacing stops and the
//!   seed brake (see `throttle.rs`) spaces calls until they succeed again.
//!
//! Constants (the defaults): proof 2 calls and 1 s (the window once a closure was seen),
//! precision 1%, first step 2%, largest step 25%, margin 1%, re-test after 50 calls and at
//! least 5 s, 3 admitted calls to trust a measurement, closure after 3 throttles in a row and 3
//! gaps without a success, horizon 250 ms, window 60 s, minimum rate 0.05/s.

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
    /// The quota's own window: proofs last it once a window was seen; the window's size is
    /// counted over it.
    pub window: Duration,
    /// Floor and ceiling this close (relative) end the search.
    pub precision: f64,
    /// First upward step without a ceiling.
    pub first_step: f64,
    /// Largest upward step.
    pub max_step: f64,
    /// How far below a measured quota the pace is set.
    pub margin: f64,
    /// Calls at the floor between re-tests of the ceiling, once the search is over.
    pub retest_calls: u32,
    /// Shortest hold between re-tests.
    pub retest_min: Duration,
    /// Admitted calls at a refuted pace that make its admitted share bound the quota.
    pub confident: u32,
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
            precision: 0.01,
            first_step: 0.02,
            max_step: 0.25,
            margin: 0.01,
            retest_calls: 50,
            retest_min: Duration::from_secs(5),
            confident: 3,
            min_outcomes: 20,
            max_background: 0.10,
            min_rate: 0.05,
            horizon: Duration::from_millis(250),
        }
    }
}

/// Throttled fraction of the recent outcomes that starts pacing an unpaced model.
const START_FRACTION: f64 = 0.25;

/// The throttle fraction Bedrock is assumed to send whatever the load (stray throttles), until
/// the measured background says more: throttles count as evidence of a quota only when a
/// background this large would explain them less than once in [`EVIDENCE_ODDS`].
const PRIOR_BACKGROUND: f64 = 0.05;

/// How unlikely under the background the recent throttles must be to count as evidence.
const EVIDENCE_ODDS: f64 = 0.01;

/// 3 s stretches (18 s) over which the unpaced start also needs throttles beyond the
/// background: a cluster of stray throttles passes in seconds, a quota that binds keeps
/// throttling.
const START_BUCKETS: u64 = 6;

/// Share of the pace that demand must use for a throttle to say the pace is too fast.
const USED_SHARE: f64 = 0.8;

/// How long a pace that demand leaves mostly unused (below [`IDLE_SHARE`] of it) and that
/// sees no throttle is kept before pacing stops: callers under their quota see no delay.
const IDLE_RELEASE: Duration = Duration::from_secs(30);

/// Share of the pace below which demand leaves it unused.
const IDLE_SHARE: f64 = 0.5;

/// Throttles in a row that, with no success for [`CLOSURE_GAPS`] recent gaps between
/// successes (and at least [`CLOSURE_QUIET`]), make a closure: a bucket keeps admitting calls
/// at its rate, a spent window admits none.
const CLOSURE_THROTTLES: u32 = 3;

/// Recent gaps between successes that a closure lasts.
const CLOSURE_GAPS: u32 = 3;

/// Shortest closure.
const CLOSURE_QUIET: Duration = Duration::from_secs(1);

/// Successes in the last window a closure needs: fewer tell too little about a window's size
/// (a bucket with a burst of one looks the same).
const CLOSURE_SUCCESSES: usize = 3;

/// Longest pause between probes of a closed window once it should have moved.
const CLOSURE_PROBE_MAX: Duration = Duration::from_secs(15);

/// Success times kept: the window's size, its expected move, the recent gaps.
const SUCCESS_TIMES: usize = 4096;

/// Failed re-tests in a row that double the hold before the next (at most 4 times as long).
const RETEST_DOUBLINGS: u32 = 2;

/// Share of calls admitted at a refuted pace from which that share bounds the quota.
const CARRY_OVER_SHARE: f64 = 0.75;

/// Successes the recent gap between successes is averaged over.
const GAP_SUCCESSES: usize = 10;

/// Length of the stretches the background throttle fraction is measured over.
const BUCKET_SECS: u64 = 3;

/// Stretches that make "the recent outcomes": the current one and the one before (3 to 6 s).
const RECENT_BUCKETS: u64 = 2;

/// How long reserved slots are kept (longer than any call's feedback delay that matters).
const SLOTS_KEPT: Duration = Duration::from_secs(30);

/// Longest call latency the unpaced start waits three of before it paces: the first
/// throttles come back long before the first successes, but with calls of seconds (long
/// answers, streams) waiting for them lets a storm of throttles run that long.
const START_LATENCY: Duration = Duration::from_millis(100);

/// How far back the unpaced start looks for the rate calls came back at: at least this, and
/// three call latencies (calls of seconds come back a few at a time), at most
/// [`RECENT_KEPT`].
const RECENT_SECS: u64 = 2;

/// Seconds of outcomes kept for the unpaced start.
const RECENT_KEPT: u64 = 30;

/// Successes the unpaced start measures their rate over, when [`RECENT_KEPT`] holds them.
const RECENT_SUCCESSES: u32 = 10;

/// Share of the rate calls were succeeding at that the unpaced start paces at.
const START_SHARE: f64 = 0.5;

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
    /// Nothing succeeded for two windows: pacing stopped (the brake spaces calls).
    Unpaced { from: f64 },
    /// Demand left the pace mostly unused, with no throttle, for [`IDLE_RELEASE`]: pacing
    /// stopped (callers under their quota see no delay; the quota shows again if it binds).
    Released { from: f64 },
}

/// The stretch of time the current pace has run: what proves or refutes it.
#[derive(Debug, Clone, Copy)]
struct Stretch {
    /// When the pace was set.
    start: Instant,
    /// Admitted outcomes of calls sent at this pace.
    ok: u32,
    /// Units reserved at this pace: whether demand used it.
    sent: f64,
    /// Throttled calls sent at this pace (outside a grace after a failed probe).
    throttled: u32,
    /// [`RateController::sent_by`] when this pace's first call was due: calls sent at this
    /// pace are those counted after it.
    calls_from: u64,
    /// A call sent at this pace was throttled: it proves nothing.
    dirty: bool,
    /// Outcomes this stretch needs to be a proof, and how long it must last.
    needs: (u32, Duration),
    /// This pace re-tests a little above the ceiling after the search was over.
    retest: bool,
}

/// A closed window: what it held and how it is probed.
#[derive(Debug, Clone, Copy)]
struct Closure {
    /// Its size: the successes of the last window when it closed.
    size: f64,
    /// Pause before the next probe if this one fails.
    pause: Duration,
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
    /// Lowest pace at which calls were throttled (or a measured quota plus its noise).
    ceiling: Option<f64>,
    /// The search is over: hold at the floor until then, then re-test the ceiling.
    hold_until: Option<Instant>,
    /// Consecutive proofs without a ceiling, for the doubling climb.
    climbs: u32,
    /// Consecutive refutations of the floor, for the doubling step down.
    drops: u32,
    /// Consecutive failed re-tests of the ceiling, for the doubling hold.
    retests_failed: u32,
    /// The current pace's stretch.
    stretch: Stretch,
    /// Outcomes of calls sent before this were sent at an earlier pace.
    fresh_from: Instant,
    /// After the pace went down, throttles before this give no verdict: the quota is still
    /// recovering from what was sent before (a window holds a failed probe's extra calls
    /// until they leave it; a bucket refills).
    grace_until: Instant,
    /// Slot times of the calls reserved in the last [`SLOTS_KEPT`] (and those still ahead),
    /// in order: how many calls were sent by a given time. A throttle answers at once, a
    /// success only when its call ends (a stream can take seconds), so the calls of a pace
    /// that were sent and not throttled tell what the quota admitted long before their
    /// successes come back.
    slots: VecDeque<Instant>,
    /// Calls whose slots were dropped from `slots` (older than [`SLOTS_KEPT`]).
    slots_before: u64,
    /// Typical call latency (the feedback delay), as last told.
    latency: Duration,
    /// Units the quota must hold free to admit one call, as last told ([`Self::admits`]):
    /// 1 for a call; for tokens, the call's whole reservation (input + `max_tokens`), which
    /// a token bucket refills for that long after it ran dry before it admits anything.
    admission: f64,
    /// The first outcome seen.
    first_outcome: Option<Instant>,
    /// The last success.
    last_success: Option<Instant>,
    /// Throttles since the last success.
    consecutive: u32,
    /// Success times and units over the last `window` (at most [`SUCCESS_TIMES`]).
    successes: VecDeque<(Instant, f64)>,
    /// A closed window being waited out.
    closure: Option<Closure>,
    /// A closure has been seen: the quota is a window, and proofs last it.
    window_like: bool,
    /// Outcomes and throttles per 3 s over the last `window`: the lowest throttle fraction
    /// among them is the background, throttles the pace does not cause.
    fractions: VecDeque<(u64, u32, u32)>,
    /// Outcomes, successes, units succeeded and units throttled per whole second over the
    /// last [`RECENT_SECS`].
    recent: VecDeque<(u64, u32, u32, f64, f64)>,
    /// Units reserved (calls sent, or tokens) and when, over the last [`IDLE_RELEASE`]:
    /// whether demand uses the pace.
    demand: VecDeque<(Instant, f64)>,
    /// The last throttle this pace counted (not one the background explains).
    last_throttle: Option<Instant>,
    /// When pacing started (from unpaced).
    paced_since: Instant,
    /// The last caller told to come back (demand was beyond the pace then).
    last_turned_away: Option<Instant>,
    /// The ceiling is the unpaced start's (the rate calls came back at when throttles first
    /// showed), not a pace that was throttled: stray throttles can make it, so a pace that
    /// reaches it climbs on instead of holding below it.
    ceiling_unconfirmed: bool,
    /// The quota's rate measured at a pace most of whose calls got through, plus its noise:
    /// an upper bound of the quota (see [`Self::quota_bound`]).
    measured_bound: Option<f64>,
    /// Where the seconds of `fractions` and `recent` are counted from.
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
            hold_until: None,
            climbs: 0,
            drops: 0,
            retests_failed: 0,
            stretch: Stretch {
                start: now,
                ok: 0,
                sent: 0.0,
                throttled: 0,
                calls_from: 0,
                dirty: false,
                needs: (0, Duration::ZERO),
                retest: false,
            },
            fresh_from: now,
            grace_until: now,
            slots: VecDeque::new(),
            slots_before: 0,
            latency: Duration::from_millis(100),
            admission: 1.0,
            first_outcome: None,
            last_success: None,
            consecutive: 0,
            successes: VecDeque::new(),
            closure: None,
            window_like: false,
            fractions: VecDeque::new(),
            recent: VecDeque::new(),
            demand: VecDeque::new(),
            last_throttle: None,
            paced_since: now,
            last_turned_away: None,
            ceiling_unconfirmed: false,
            measured_bound: None,
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

    /// The lowest pace known to be too fast, if any.
    pub fn ceiling(&self) -> Option<f64> {
        self.ceiling
    }

    /// When a spent window is expected to move (calls wait until then), if one is.
    pub fn resume_at(&self) -> Option<Instant> {
        self.closure.map(|_| self.next_slot)
    }

    /// How long until the next slot is free (zero while unpaced).
    pub fn next_free(&self, now: Instant) -> Duration {
        match self.rate {
            Some(_) => self.next_slot.saturating_duration_since(now),
            None => Duration::ZERO,
        }
    }

    /// The most the quota can admit per second, as measured at a pace most of whose calls
    /// got through (the measurement plus its noise); `None` until measured.
    pub fn quota_bound(&self) -> Option<f64> {
        self.measured_bound
    }

    /// Reserves a slot for `units` (1 for a call; reserved tokens for the token lane).
    pub fn reserve(&mut self, now: Instant, units: f64, cfg: &PacingConfig) -> Reservation {
        let Some(rate) = self.rate else {
            return Reservation::At(now);
        };
        let slot = self.next_slot.max(now);
        let wait = slot.saturating_duration_since(now);
        if wait > cfg.horizon {
            self.last_turned_away = Some(now);
            return Reservation::ComeBack(
                cfg.horizon
                    .min(wait - cfg.horizon)
                    .max(Duration::from_millis(10)),
            );
        }
        self.next_slot = slot + Duration::from_secs_f64(units / rate);
        self.stretch.sent += units;
        self.slots.push_back(slot);
        self.demand.push_back((now, units));
        while self
            .demand
            .front()
            .is_some_and(|(at, _)| now.saturating_duration_since(*at) > IDLE_RELEASE)
        {
            self.demand.pop_front();
        }
        while self
            .slots
            .front()
            .is_some_and(|at| now.saturating_duration_since(*at) > SLOTS_KEPT)
        {
            self.slots.pop_front();
            self.slots_before += 1;
        }
        Reservation::At(slot)
    }

    /// Tells the units the quota must hold free to admit one call (see `admission`).
    pub fn admits(&mut self, units: f64) {
        self.admission = units.max(1.0);
    }

    /// Gives back `units` of a reservation that will not be used (or was over-estimated).
    pub fn refund(&mut self, now: Instant, units: f64) {
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
    pub fn settle(&mut self, now: Instant, charged: f64, actual: f64) {
        if actual <= charged {
            self.refund(now, charged - actual);
            return;
        }
        let extra = actual - charged;
        self.stretch.sent += extra;
        if let Some(rate) = self.rate {
            self.next_slot = self.next_slot.max(now) + Duration::from_secs_f64(extra / rate);
        }
    }

    /// Records a call the quota admitted (it was not throttled; it may still have failed
    /// otherwise), worth `units`, that took `latency`. A success after a closure reopens the
    /// pace at the window's size.
    pub fn on_admitted(
        &mut self,
        now: Instant,
        units: f64,
        latency: Duration,
        cfg: &PacingConfig,
    ) -> Option<Adjustment> {
        self.count_outcome(now, false, cfg);
        self.count_recent(now, true, units);
        self.first_outcome.get_or_insert(now);
        self.last_success = Some(now);
        self.consecutive = 0;
        self.successes.push_back((now, units));
        while self.successes.len() > SUCCESS_TIMES
            || self
                .successes
                .front()
                .is_some_and(|(at, _)| now.saturating_duration_since(*at) >= cfg.window)
        {
            self.successes.pop_front();
        }
        let sent_at = now.checked_sub(latency).unwrap_or(now);
        if sent_at >= self.fresh_from {
            self.stretch.ok += 1;
        }
        let closure = self.closure.take()?;
        // The window moved: pace at its size.
        self.window_like = true;
        self.floor = None;
        self.ceiling = None;
        self.hold_until = None;
        self.climbs = 0;
        let to = (closure.size / cfg.window.as_secs_f64() * (1.0 - cfg.margin)).max(cfg.min_rate);
        self.next_slot = now;
        self.set(now, to, cfg)
    }

    /// Records a throttle of a call worth `units` that took `latency`; `typical` is the
    /// typical latency of a successful call (the feedback delay).
    pub fn on_throttle(
        &mut self,
        now: Instant,
        units: f64,
        latency: Duration,
        typical: Duration,
        cfg: &PacingConfig,
    ) -> Option<Adjustment> {
        // 1. Count it.
        self.latency = typical;
        self.count_outcome(now, true, cfg);
        self.count_recent(now, false, units);
        self.consecutive += 1;
        if self.within_background(now, cfg) {
            return None;
        }
        let Some(rate) = self.rate else {
            return self.start(now, typical, cfg);
        };
        // 2. Only a call sent at the current pace says anything about it.
        let sent_at = now.checked_sub(latency).unwrap_or(now);
        if sent_at < self.fresh_from {
            return None;
        }
        // 3. A closed window that has not moved yet: probe again a little later.
        if let Some(closure) = &mut self.closure {
            self.stretch.dirty = true;
            self.next_slot = self.next_slot.max(now + closure.pause);
            closure.pause = (closure.pause * 2).min(CLOSURE_PROBE_MAX);
            self.fresh_from = self.next_slot;
            return None;
        }
        // 4. A spent window: wait until it moves. (Successes come back one call latency
        // after their calls were sent, so a lull in sending shows as a lull in successes that
        // long later: the quiet must outlast one latency too.)
        if self.consecutive >= CLOSURE_THROTTLES
            && self.successes.len() >= CLOSURE_SUCCESSES
            && now.saturating_duration_since(self.last_success.unwrap_or(self.epoch))
                >= CLOSURE_QUIET.max(self.success_gap() * CLOSURE_GAPS) + typical
        {
            return self.close(now, rate, cfg);
        }
        // 5. Demand that does not use the pace says nothing about it: a throttle then is
        // evidence only beyond what the background explains (the quota is then below demand,
        // and demand's rate, not the pace, is what the calls measure).
        let demand = self.demand_rate(now);
        let turned_away = self
            .last_turned_away
            .is_some_and(|at| now.saturating_duration_since(at) < Duration::from_secs(2));
        let used = turned_away || demand >= USED_SHARE * rate;
        if !used && !self.beyond_background(now, cfg, RECENT_BUCKETS) {
            return None;
        }
        self.last_throttle = Some(now);
        let level = if used { rate } else { demand.max(cfg.min_rate) };
        // 6. Right after the pace went down, the quota may still be short: no verdict yet,
        // and the pace's proof starts over from here (what came before was on the quota's
        // shortfall, not on this pace).
        if now < self.grace_until {
            self.stretch.start = now;
            self.stretch.ok = 0;
            self.stretch.sent = 0.0;
            self.fresh_from = self.fresh_from.max(now);
            self.stretch.calls_from = self.stretch.calls_from.max(self.sent_by(now));
            return None;
        }
        self.stretch.dirty = true;
        self.stretch.throttled += 1;
        if self.stretch.retest {
            self.retests_failed = (self.retests_failed + 1).min(RETEST_DOUBLINGS);
        }
        self.ceiling = Some(self.ceiling.map_or(rate, |c| c.min(rate)));
        self.ceiling_unconfirmed = false;
        self.hold_until = None;
        self.climbs = 0;
        // 7. What the calls sent at this pace say: most of them got through means a quota that
        // carries its refill over (a bucket with a burst), which admits exactly its rate, so
        // this share of the pace is the quota, to within about one success. (Half of them
        // throttled says little: a bucket of burst one above its rate throttles every other
        // call, whatever the rate; and a window admits its whole size at once, then nothing.)
        // Calls sent at this pace up to this one's sending and not throttled were admitted:
        // their throttle would be back by now, whether their answer is or not.
        let throttled = f64::from(self.stretch.throttled);
        let sent = self
            .sent_by(sent_at)
            .saturating_sub(self.stretch.calls_from) as f64;
        let admitted = (sent - throttled).max(f64::from(self.stretch.ok));
        let share = admitted / (admitted + throttled);
        let measured = (!self.window_like
            && admitted >= f64::from(cfg.confident)
            && share >= CARRY_OVER_SHARE)
            .then(|| (level * share, level * share * (1.0 + 1.0 / admitted)));
        if let Some((_, bound)) = measured {
            self.ceiling = self.ceiling.map(|c| c.min(bound));
            self.measured_bound = Some(bound);
        }
        let to = match (self.floor, measured) {
            // 7a. A probe failed: back to what is proven, unless what it measured is below
            // that (the floor was proven on a burst the quota had saved).
            (Some(floor), Some((quota, _))) if floor < rate && quota < floor => {
                self.floor = None;
                quota * (1.0 - cfg.margin)
            }
            (Some(floor), _) if floor < rate => floor,
            // 7b. The floor itself is throttled: the quota shrank, or the floor was proven on
            // a burst the quota had saved. Pace at the share of calls that got through;
            // without a success at this pace, step down (further with each refutation in a
            // row).
            _ => {
                self.floor = None;
                if admitted > 0.0 {
                    level * share * (1.0 - cfg.margin)
                } else {
                    let step = (2.0 * cfg.precision * 2f64.powi(self.drops as i32)).min(0.5);
                    self.drops += 1;
                    level * (1.0 - step)
                }
            }
        };
        self.set(now, to.max(cfg.min_rate), cfg)
    }

    /// Reviews the evidence (call it after each outcome): proofs, probes, re-tests, and a
    /// quota that is gone. `latency` is the typical call latency.
    pub fn adjust(
        &mut self,
        now: Instant,
        latency: Duration,
        cfg: &PacingConfig,
    ) -> Option<Adjustment> {
        self.latency = latency;
        let rate = self.rate?;
        // 1. Nothing succeeded for two windows while throttled: no level to pace at.
        let quiet = now.saturating_duration_since(self.last_success.unwrap_or(self.epoch));
        if quiet >= cfg.window * 2 && self.consecutive > 0 {
            return self.unpace(now);
        }
        // 2. Demand has left the pace mostly unused, with no throttle, for a while: callers
        // under their quota see no pacing delay.
        if self.closure.is_none()
            && now.saturating_duration_since(self.paced_since) >= IDLE_RELEASE
            && [self.last_throttle, self.last_turned_away]
                .iter()
                .flatten()
                .all(|at| now.saturating_duration_since(*at) >= IDLE_RELEASE)
            && self.units_reserved(now, IDLE_RELEASE)
                < IDLE_SHARE * rate * IDLE_RELEASE.as_secs_f64()
        {
            return self.release(now);
        }
        // 3. The search is over: re-test a little above the ceiling when the hold ends.
        if let Some(until) = self.hold_until {
            if now < until {
                return None;
            }
            self.hold_until = None;
            let ceiling = self.ceiling.unwrap_or(rate);
            let adjustment = self.set(now, ceiling * (1.0 + cfg.precision), cfg);
            let calls = (cfg.retest_calls / 5).max(cfg.proof_calls);
            self.stretch.needs.0 = calls;
            self.stretch.retest = true;
            return adjustment;
        }
        // 4. A proof of the current pace, then the next probe.
        if self.proven(now, latency) {
            return self.probe(now, rate, cfg);
        }
        None
    }

    /// The unpaced start: the quota showed. The rate calls came back at is too fast (the
    /// first ceiling); pace at half the rate they succeeded at. Both are measured over at
    /// least three call latencies of outcomes (the first throttles come back long before
    /// the first successes), counting at most [`START_LATENCY`] for a latency.
    fn start(&mut self, now: Instant, latency: Duration, cfg: &PacingConfig) -> Option<Adjustment> {
        let first = *self.first_outcome.get_or_insert(now);
        if now.saturating_duration_since(first) < latency.min(START_LATENCY) * 3 {
            return None;
        }
        let (outcomes, throttles) = self.recent_outcomes(now, RECENT_BUCKETS);
        if outcomes == 0 || f64::from(throttles) < START_FRACTION * f64::from(outcomes) {
            return None;
        }
        // A few throttles among few calls are what Bedrock's stray throttles look like; a
        // quota that binds keeps throttling, so the last 18 s show it too.
        if !self.beyond_background(now, cfg, RECENT_BUCKETS)
            || !self.beyond_background(now, cfg, START_BUCKETS)
        {
            return None;
        }
        let (returned, succeeded) = self.recent_rates(now, first);
        if returned <= 0.0 {
            return None;
        }
        self.ceiling = Some(returned);
        self.ceiling_unconfirmed = true;
        self.paced_since = now;
        self.last_throttle = Some(now);
        let to = if succeeded > 0.0 {
            succeeded * START_SHARE
        } else {
            returned / 2.0
        };
        self.set(now, to.max(cfg.min_rate), cfg)
    }

    /// Sets the pace to `to` from now on: a new stretch, and after a cut the next slot one
    /// interval away.
    fn set(&mut self, now: Instant, to: f64, cfg: &PacingConfig) -> Option<Adjustment> {
        let from = self.rate;
        // Slots reserved so far run at the old pace; calls sent from their end on at this one.
        self.fresh_from = self.next_slot.max(now);
        self.rate = Some(to);
        let span = if self.window_like {
            cfg.window
        } else {
            cfg.proof_min
        };
        if from.is_none_or(|f| to < f) {
            // Down: the quota has nothing left now; the first call at this pace comes when
            // it can hold one call's admission again (one interval for a call; a whole
            // reservation of tokens) after the last one reserved at the old pace, and
            // throttles give no verdict until the quota had time to recover: a window until
            // it moves, a bucket for three call latencies (calls settle their reservations
            // as they end) and at least until that first call.
            let interval = Duration::from_secs_f64(self.admission / to);
            let last_reserved = match from {
                Some(f) => self
                    .next_slot
                    .checked_sub(Duration::from_secs_f64(1.0 / f))
                    .unwrap_or(now),
                None => self.next_slot,
            };
            self.next_slot = last_reserved.max(now) + interval;
            let grace = if self.window_like {
                cfg.window
            } else {
                self.latency * 3
            };
            self.grace_until = self.next_slot.max(now + grace);
        }
        // A probe `step` above the floor shows a too-fast pace to a bucket with a burst to
        // spend only in about one throttle per `1/step` calls: between a floor and a ceiling,
        // prove it over that many. (A climb with no ceiling in sight keeps short proofs: the
        // quota was just shown to have grown.)
        let calls = match (self.floor, self.ceiling) {
            (Some(floor), Some(_)) if to > floor => {
                let step = to / floor - 1.0;
                ((1.0 / step).ceil() as u32).clamp(cfg.proof_calls, cfg.retest_calls / 5)
            }
            _ => cfg.proof_calls,
        };
        self.stretch = Stretch {
            start: now,
            ok: 0,
            sent: 0.0,
            throttled: 0,
            calls_from: self.slots_before + self.slots.len() as u64,
            dirty: false,
            needs: (calls, span),
            retest: false,
        };
        match from {
            Some(f) if to > f => Some(Adjustment::Probe { from: f, to }),
            Some(f) if to == f => None,
            _ => Some(Adjustment::Cut { from, to }),
        }
    }

    /// The quota's window is spent: nothing more is sent until it should have moved (one
    /// window after the oldest success it holds), then it is probed, less and less often.
    fn close(&mut self, now: Instant, rate: f64, cfg: &PacingConfig) -> Option<Adjustment> {
        let size: f64 = self.successes.iter().map(|(_, units)| units).sum();
        let oldest = self.successes.front().map_or(now, |(at, _)| *at);
        let reopen = (oldest + cfg.window + Duration::from_millis(50)).max(now);
        self.closure = Some(Closure {
            size,
            pause: Duration::from_secs(1),
        });
        self.next_slot = reopen;
        self.fresh_from = reopen;
        // Admission sees the window's long-run rate (and `next_free`).
        let to = (size / cfg.window.as_secs_f64()).max(cfg.min_rate);
        self.rate = Some(to);
        Some(Adjustment::Cut {
            from: Some(rate),
            to,
        })
    }

    /// Pacing stops: demand leaves the pace unused and nothing is throttled.
    fn release(&mut self, now: Instant) -> Option<Adjustment> {
        let from = self.forget(now)?;
        Some(Adjustment::Released { from })
    }

    /// Units reserved over the last `span` (at most [`IDLE_RELEASE`]).
    fn units_reserved(&self, now: Instant, span: Duration) -> f64 {
        self.demand
            .iter()
            .rev()
            .take_while(|(at, _)| now.saturating_duration_since(*at) <= span)
            .map(|(_, units)| units)
            .sum()
    }

    /// The rate demand reserved units at recently (over five of its calls' intervals, 2 to
    /// 30 s, and no longer than pacing has run); infinite while pacing is too new to tell.
    fn demand_rate(&self, now: Instant) -> f64 {
        let Some(rate) = self.rate else {
            return f64::INFINITY;
        };
        let span = Duration::from_secs_f64((5.0 * self.admission / rate).clamp(2.0, 30.0))
            .min(now.saturating_duration_since(self.paced_since));
        if span < Duration::from_millis(500) {
            return f64::INFINITY;
        }
        self.units_reserved(now, span) / span.as_secs_f64()
    }

    /// Whether the throttles of the last `buckets` 3 s stretches are more than the
    /// background (at least [`PRIOR_BACKGROUND`]) explains: at most one chance in
    /// [`EVIDENCE_ODDS`] that it would throttle that many of their outcomes.
    fn beyond_background(&self, now: Instant, cfg: &PacingConfig, buckets: u64) -> bool {
        let background = self.background(now, cfg).max(PRIOR_BACKGROUND);
        let (outcomes, throttles) = self.recent_outcomes(now, buckets);
        binomial_tail(outcomes, throttles, background) < EVIDENCE_ODDS
    }

    /// Pacing stops: nothing has succeeded for two windows.
    fn unpace(&mut self, now: Instant) -> Option<Adjustment> {
        let from = self.forget(now)?;
        Some(Adjustment::Unpaced { from })
    }

    /// Back to unpaced, keeping only the outcome history the background and the start read;
    /// returns the pace there was, if any.
    fn forget(&mut self, now: Instant) -> Option<f64> {
        let from = self.rate.take()?;
        *self = RateController {
            fractions: std::mem::take(&mut self.fractions),
            recent: std::mem::take(&mut self.recent),
            epoch: self.epoch,
            ..RateController::new(now)
        };
        Some(from)
    }

    /// Whether the current pace has run long enough, clean, and used, to be proven.
    fn proven(&self, now: Instant, latency: Duration) -> bool {
        let Some(rate) = self.rate else {
            return false;
        };
        if self.closure.is_some() || self.stretch.dirty {
            return false;
        }
        let (calls, span) = self.stretch.needs;
        let elapsed = now.saturating_duration_since(self.stretch.start);
        elapsed >= span.max(latency * 3)
            && self.stretch.ok >= calls
            && self.stretch.sent >= 0.8 * rate * elapsed.as_secs_f64()
    }

    /// The current pace is proven: it is the floor; probe above it (or hold, if the search
    /// is over).
    fn probe(&mut self, now: Instant, rate: f64, cfg: &PacingConfig) -> Option<Adjustment> {
        self.floor = Some(rate);
        self.drops = 0;
        let step = match self.ceiling {
            Some(ceiling)
                if ceiling <= rate
                    || (self.ceiling_unconfirmed && ceiling / rate - 1.0 <= cfg.precision) =>
            {
                // The quota grew past the old ceiling (or the ceiling was only where the
                // unpaced start saw throttles, perhaps stray ones): climb again.
                self.retests_failed = 0;
                self.ceiling = None;
                self.climbs = 0;
                None
            }
            Some(ceiling) if ceiling / rate - 1.0 <= cfg.precision => {
                // Found: hold at the floor; re-test above the ceiling later.
                // Each failed re-test in a row doubles the hold: the quota is steady.
                let calls = f64::from(cfg.retest_calls) * f64::from(1u32 << self.retests_failed);
                let hold = cfg
                    .retest_min
                    .max(Duration::from_secs_f64(calls / rate))
                    .max(if self.window_like {
                        cfg.window
                    } else {
                        Duration::ZERO
                    });
                self.hold_until = Some(now + hold);
                self.stretch.start = now;
                return None;
            }
            Some(ceiling) => Some((ceiling / rate).sqrt() - 1.0),
            None => None,
        };
        let step = step.unwrap_or_else(|| {
            let step = if self.window_like {
                cfg.first_step
            } else {
                cfg.first_step * 2f64.powi(self.climbs as i32)
            };
            self.climbs += 1;
            step
        });
        self.set(now, rate * (1.0 + step.min(cfg.max_step)), cfg)
    }

    /// Calls whose slot came by `at` (sent by then), counted since the controller started.
    fn sent_by(&self, at: Instant) -> u64 {
        self.slots_before + self.slots.partition_point(|slot| *slot <= at) as u64
    }

    /// The mean gap between the last [`GAP_SUCCESSES`] successes (zero with fewer than two).
    fn success_gap(&self) -> Duration {
        let n = self.successes.len().min(GAP_SUCCESSES);
        if n < 2 {
            return Duration::ZERO;
        }
        let last = self.successes[self.successes.len() - 1].0;
        let first = self.successes[self.successes.len() - n].0;
        (last - first) / (n as u32 - 1)
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

    /// Adds an outcome worth `units` to the current second: a success, or a throttle.
    fn count_recent(&mut self, now: Instant, success: bool, units: f64) {
        let second = now.saturating_duration_since(self.epoch).as_secs();
        let (ok, ok_units, throttled_units) = if success {
            (1, units, 0.0)
        } else {
            (0, 0.0, units)
        };
        match self.recent.back_mut() {
            Some((s, o, k, u, t)) if *s == second => {
                *o += 1;
                *k += ok;
                *u += ok_units;
                *t += throttled_units;
            }
            _ => self
                .recent
                .push_back((second, 1, ok, ok_units, throttled_units)),
        }
        while self
            .recent
            .front()
            .is_some_and(|(s, ..)| second.saturating_sub(*s) > RECENT_KEPT)
        {
            self.recent.pop_front();
        }
    }

    /// Outcomes and throttles over the last `buckets` 3 s stretches (the current one
    /// included).
    fn recent_outcomes(&self, now: Instant, buckets: u64) -> (u32, u32) {
        let bucket = now.saturating_duration_since(self.epoch).as_secs() / BUCKET_SECS;
        self.fractions
            .iter()
            .filter(|(b, _, _)| *b + buckets > bucket)
            .fold((0, 0), |(o, t), (_, bo, bt)| (o + bo, t + bt))
    }

    /// Units per second that came back (successes and throttles, each at its own size) and
    /// that succeeded, over the last [`RECENT_SECS`] or three call latencies, whichever is
    /// longer, and longer still (up to [`RECENT_KEPT`]) until it holds [`RECENT_SUCCESSES`]
    /// successes: at a few calls a second, two seconds hold too few to measure a rate (or
    /// since the first outcome, at least a quarter of a second).
    fn recent_rates(&self, now: Instant, first: Instant) -> (f64, f64) {
        let second = now.saturating_duration_since(self.epoch).as_secs();
        let elapsed = now.saturating_duration_since(first).as_secs_f64();
        let shortest = (self.latency.as_secs_f64() * 3.0)
            .ceil()
            .clamp(RECENT_SECS as f64, RECENT_KEPT as f64) as u64;
        let (mut ok, mut ok_units, mut throttled_units, mut look) = (0, 0.0, 0.0, shortest);
        for (s, _, k, su, st) in self.recent.iter().rev() {
            let age = second.saturating_sub(*s) + 1;
            if age > shortest && ok >= RECENT_SUCCESSES {
                break;
            }
            look = look.max(age);
            ok += k;
            ok_units += su;
            throttled_units += st;
        }
        let span = elapsed.min(look as f64).max(0.25);
        ((ok_units + throttled_units) / span, ok_units / span)
    }

    /// The background throttle fraction: the lower quartile of the last minute's complete
    /// 3 s buckets (with at least `min_outcomes` outcomes; four such buckets needed). At a
    /// real quota the pace holds below it after each cut, so a quarter of the buckets or more
    /// are free of throttles.
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
        let (outcomes, throttles) = self.recent_outcomes(now, RECENT_BUCKETS);
        let expected = f64::from(outcomes) * background;
        f64::from(throttles) <= expected + 2.0 * expected.sqrt()
    }
}

/// The chance that at least `k` of `n` outcomes are throttled when each is with chance `p`.
fn binomial_tail(n: u32, k: u32, p: f64) -> f64 {
    if k == 0 {
        return 1.0;
    }
    if k > n {
        return 0.0;
    }
    let (n_f, p) = (f64::from(n), p.clamp(1e-9, 1.0 - 1e-9));
    // Sum the probabilities below `k` in log space (exact for the few hundred outcomes a
    // few seconds hold).
    let log_q = (1.0 - p).ln();
    let ratio = (p / (1.0 - p)).ln();
    let mut log_pmf = n_f * log_q;
    let mut below = 0.0;
    for i in 0..k {
        below += log_pmf.exp();
        log_pmf += ((n_f - f64::from(i)) / f64::from(i + 1)).ln() + ratio;
    }
    (1.0 - below).max(0.0)
}

#[cfg(test)]
mod tests {
    use super::*;

    const LATENCY: Duration = Duration::from_millis(100);
    const THROTTLE: Duration = Duration::from_millis(5);

    fn ms(n: u64) -> Duration {
        Duration::from_millis(n)
    }

    /// A controller paced at `rate` from `now`, with a floor and a ceiling as given.
    fn paced(now: Instant, rate: f64, floor: Option<f64>, ceiling: Option<f64>) -> RateController {
        let cfg = PacingConfig::default();
        let mut c = RateController::new(now);
        c.floor = floor;
        c.ceiling = ceiling;
        c.set(now, rate, &cfg);
        c.grace_until = now;
        c
    }

    /// Reserves one call at `now` and returns its slot.
    fn slot(c: &mut RateController, now: Instant) -> Instant {
        match c.reserve(now, 1.0, &PacingConfig::default()) {
            Reservation::At(at) => at,
            Reservation::ComeBack(after) => panic!("no slot, come back after {after:?}"),
        }
    }

    #[test]
    fn unpaced_until_the_quota_shows_then_half_the_success_rate() {
        let cfg = PacingConfig::default();
        let t0 = Instant::now();
        let mut c = RateController::new(t0);
        assert_eq!(c.reserve(t0, 1.0, &cfg), Reservation::At(t0));
        // 10 successes over the first second, then throttles: nothing happens until three
        // latencies of outcomes are in, and only once a quarter of them are throttles.
        for i in 0..10 {
            c.on_admitted(t0 + ms(100 + i * 100), 1.0, LATENCY, &cfg);
        }
        assert_eq!(
            c.on_throttle(t0 + ms(1000), 1.0, THROTTLE, LATENCY, &cfg),
            None
        );
        assert_eq!(
            c.rate(),
            None,
            "one throttle in eleven outcomes is not a quota"
        );
        for _ in 0..3 {
            c.on_throttle(t0 + ms(1000), 1.0, THROTTLE, LATENCY, &cfg);
        }
        // 10 successes and 4 throttles in 1.0 s (since the first outcome at 0.1 s: 0.9 s).
        let rate = c.rate().expect("paced");
        assert!((rate - 10.0 / 0.9 / 2.0).abs() < 1e-9, "{rate}");
        assert!((c.ceiling().unwrap() - 14.0 / 0.9).abs() < 1e-9);
        // The first throttles come back long before the first successes: wait three
        // latencies of outcomes before judging.
        let mut early = RateController::new(t0);
        for _ in 0..5 {
            early.on_throttle(t0 + ms(10), 1.0, THROTTLE, LATENCY, &cfg);
        }
        assert_eq!(early.rate(), None);
    }

    #[test]
    fn a_cut_spaces_the_next_call_one_interval_after_the_last_one_reserved() {
        let cfg = PacingConfig::default();
        let t0 = Instant::now();
        let mut c = paced(t0, 10.0, Some(5.0), None);
        let first = slot(&mut c, t0);
        let second = slot(&mut c, t0);
        assert_eq!(second - first, ms(100));
        // A throttle of the call sent at `second` (a probe above the floor): back to the
        // floor, one floor interval (200 ms) after that last slot (or after now, if later).
        let adj = c.on_throttle(second + THROTTLE, 1.0, THROTTLE, LATENCY, &cfg);
        assert_eq!(
            adj,
            Some(Adjustment::Cut {
                from: Some(10.0),
                to: 5.0
            })
        );
        assert_eq!(slot(&mut c, second + THROTTLE), second + THROTTLE + ms(200));
        assert_eq!(c.ceiling(), Some(10.0));
        // Throttles of calls sent before the cut say nothing about the new pace.
        assert_eq!(
            c.on_throttle(second + ms(6), 1.0, ms(6), LATENCY, &cfg),
            None
        );
        assert_eq!(c.rate(), Some(5.0));
    }

    #[test]
    fn a_refuted_floor_goes_to_the_share_of_calls_that_got_through() {
        let cfg = PacingConfig::default();
        let t0 = Instant::now();
        // Carry-over: 9 of 10 calls at 11/s got through: the quota is about 9.9/s.
        let mut c = paced(t0, 11.0, Some(11.0), Some(12.0));
        let mut last = t0;
        for i in 1..=10 {
            last = slot(&mut c, t0 + ms(i * 91));
            if i < 10 {
                c.on_admitted(last + LATENCY, 1.0, LATENCY, &cfg);
            }
        }
        c.on_throttle(last + THROTTLE, 1.0, THROTTLE, LATENCY, &cfg);
        let to = c.rate().unwrap();
        assert!((to - 11.0 * 0.9 * (1.0 - cfg.margin)).abs() < 1e-9, "{to}");
        assert_eq!(c.floor(), None);
        // ... which also bounds the ceiling, to within one success.
        let bound = 11.0 * 0.9 * (1.0 + 1.0 / 9.0);
        assert!((c.ceiling().unwrap() - bound).abs() < 1e-9);
        // Nothing got through at the refuted pace: step down, further each time.
        let mut d = paced(t0, 10.0, Some(10.0), None);
        d.on_throttle(t0 + ms(10), 1.0, THROTTLE, LATENCY, &cfg);
        assert!((d.rate().unwrap() - 10.0 * (1.0 - 2.0 * cfg.precision)).abs() < 1e-9);
        let later = d.grace_until + ms(1);
        let after_slot = slot(&mut d, later);
        d.on_throttle(
            after_slot.max(later) + THROTTLE,
            1.0,
            THROTTLE,
            LATENCY,
            &cfg,
        );
        let expected = 10.0 * (1.0 - 2.0 * cfg.precision) * (1.0 - 4.0 * cfg.precision);
        assert!((d.rate().unwrap() - expected).abs() < 1e-9);
    }

    #[test]
    fn calls_still_out_count_as_admitted_when_a_floor_is_refuted() {
        // Calls of 2 s at 10/s: 10 calls were sent over a second, none of their successes
        // is back, and the tenth was throttled: nine were admitted, so the quota is about
        // 9/s (counting only successes back, it would have looked like nothing got through).
        let cfg = PacingConfig::default();
        let long = Duration::from_secs(2);
        let t0 = Instant::now();
        let mut c = paced(t0, 10.0, Some(10.0), Some(11.0));
        let mut last = t0;
        for i in 1..=10 {
            last = slot(&mut c, t0 + ms(100 * i));
        }
        c.on_throttle(last + THROTTLE, 1.0, THROTTLE, long, &cfg);
        let to = c.rate().unwrap();
        assert!((to - 10.0 * 0.9 * (1.0 - cfg.margin)).abs() < 1e-9, "{to}");
    }

    #[test]
    fn right_after_a_cut_throttles_give_no_verdict() {
        let cfg = PacingConfig::default();
        let t0 = Instant::now();
        let mut c = paced(t0, 10.0, Some(10.0), None);
        c.on_throttle(t0 + ms(10), 1.0, THROTTLE, LATENCY, &cfg);
        let rate = c.rate().unwrap();
        // A call sent at the new pace but within three latencies of the cut: the quota may
        // still be short from the calls before it.
        let sent = slot(&mut c, t0 + ms(20));
        assert!(sent < c.grace_until);
        assert_eq!(
            c.on_throttle(sent + THROTTLE, 1.0, THROTTLE, LATENCY, &cfg),
            None
        );
        assert_eq!(c.rate(), Some(rate));
        // ... nor does it spoil the new pace: calls after it prove the pace and it climbs.
        let mut now = sent + THROTTLE;
        for _ in 0..15 {
            let at = slot(&mut c, now);
            now = at + LATENCY;
            c.on_admitted(now, 1.0, LATENCY, &cfg);
            c.adjust(now, LATENCY, &cfg);
        }
        assert!(c.rate().unwrap() > rate, "stuck at {rate}");
        assert_eq!(c.floor(), Some(rate));
    }

    #[test]
    fn after_a_cut_tokens_wait_until_a_bucket_holds_a_whole_reservation() {
        let cfg = PacingConfig::default();
        let t0 = Instant::now();
        // A token pace of 100 tokens/s for calls that use 30 tokens but reserve 230.
        let mut c = paced(t0, 100.0, Some(100.0), None);
        c.admits(230.0);
        let first = match c.reserve(t0, 30.0, &cfg) {
            Reservation::At(at) => at,
            other => panic!("{other:?}"),
        };
        c.on_throttle(first + THROTTLE, 1.0, THROTTLE, LATENCY, &cfg);
        let rate = c.rate().unwrap();
        // A drained bucket admits the next call once it refilled 230 tokens at the new pace;
        // throttles before then give no verdict.
        let wait = Duration::from_secs_f64(230.0 / rate);
        let next = c.next_slot;
        assert!(next >= first + wait, "{:?} < {wait:?}", next - first);
        assert!(c.grace_until >= next);
    }

    #[test]
    fn proofs_bisect_between_floor_and_ceiling_then_hold_and_retest() {
        let cfg = PacingConfig::default();
        let t0 = Instant::now();
        let mut c = paced(t0, 4.0, None, Some(9.0));
        // Two calls at 4/s over a second, none throttled: 4 is the floor, probe at 6.
        let mut now = t0;
        for _ in 0..5 {
            let at = slot(&mut c, now);
            now = at + LATENCY;
            c.on_admitted(now, 1.0, LATENCY, &cfg);
        }
        let adj = c.adjust(now, LATENCY, &cfg).expect("proven");
        assert_eq!(
            adj,
            Adjustment::Probe { from: 4.0, to: 5.0 },
            "+25% at most"
        );
        assert_eq!(c.floor(), Some(4.0));
        // Between 4.9 and 5, the search is over: hold, then re-test just above the ceiling.
        // (1.2% above the floor: proven over 10 calls, the most a probe needs.)
        let mut d = paced(t0, 4.96, Some(4.9), Some(5.0));
        assert_eq!(d.stretch.needs.0, 10);
        let mut now = t0;
        for _ in 0..12 {
            let at = slot(&mut d, now);
            now = at + LATENCY;
            d.on_admitted(now, 1.0, LATENCY, &cfg);
        }
        assert_eq!(d.adjust(now, LATENCY, &cfg), None, "found: hold");
        let until = d.hold_until.expect("holding");
        assert_eq!(until - now, Duration::from_secs_f64(50.0 / 4.96));
        assert_eq!(
            d.adjust(until, LATENCY, &cfg),
            Some(Adjustment::Probe {
                from: 4.96,
                to: 5.0 * (1.0 + cfg.precision)
            })
        );
        assert!(d.stretch.retest);
        assert_eq!(d.stretch.needs.0, 10, "a re-test is proven over more calls");
    }

    #[test]
    fn a_spent_window_waits_until_it_moves_then_paces_at_its_size() {
        let cfg = PacingConfig::default();
        let t0 = Instant::now();
        let mut c = RateController::new(t0);
        // 30 successes in the first 10 s (a window's whole size), then only throttles.
        for i in 0..30 {
            c.on_admitted(t0 + ms(300 + i * 330), 1.0, LATENCY, &cfg);
        }
        let last = t0 + ms(300 + 29 * 330);
        let mut now = last;
        for _ in 0..8 {
            now += ms(400);
            c.on_throttle(now, 1.0, THROTTLE, LATENCY, &cfg);
            if c.resume_at().is_some() {
                break;
            }
        }
        let resume = c.resume_at().expect("closed");
        assert_eq!(resume, t0 + ms(300) + cfg.window + ms(50));
        match c.reserve(now, 1.0, &cfg) {
            Reservation::ComeBack(_) => {}
            other => panic!("nothing is sent before the window moves: {other:?}"),
        }
        // The window moved: 30 calls a minute, less the margin.
        let adj = c.on_admitted(resume + LATENCY, 1.0, LATENCY, &cfg);
        assert!(matches!(
            adj,
            Some(Adjustment::Cut { .. } | Adjustment::Probe { .. })
        ));
        assert!((c.rate().unwrap() - 0.5 * (1.0 - cfg.margin)).abs() < 1e-9);
        assert_eq!(c.resume_at(), None);
        assert!(c.window_like);
    }

    #[test]
    fn steady_sporadic_throttles_become_background_and_stop_cutting() {
        let cfg = PacingConfig::default();
        let t0 = Instant::now();
        let mut c = paced(t0, 100.0, Some(100.0), Some(101.0));
        c.hold_until = Some(t0 + Duration::from_secs(3600));
        let mut cuts_after_learning = 0;
        // 5% of calls throttled whatever the pace, for a minute.
        for second in 0..60u64 {
            let base = t0 + Duration::from_secs(second);
            for i in 0..95 {
                c.on_admitted(base + ms(i * 10), 1.0, LATENCY, &cfg);
            }
            for i in 0..5 {
                let adj = c.on_throttle(base + ms(950 + i), 1.0, THROTTLE, LATENCY, &cfg);
                if second >= 30 && matches!(adj, Some(Adjustment::Cut { .. })) {
                    cuts_after_learning += 1;
                }
            }
        }
        assert!((c.background(t0 + Duration::from_secs(60), &cfg) - 0.05).abs() < 1e-9);
        assert_eq!(cuts_after_learning, 0);
    }

    #[test]
    fn slots_are_spaced_and_reserved_only_within_the_horizon() {
        let cfg = PacingConfig::default();
        let t0 = Instant::now();
        let mut c = paced(t0, 20.0, None, None);
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
        // The first slot one interval away (the pace was just set), then every 50 ms up to
        // the 250 ms horizon.
        assert_eq!(slots.len(), 5, "{slots:?}");
        assert_eq!(slots[0], ms(50));
        assert!(slots.windows(2).all(|w| w[1] - w[0] == ms(50)));
    }

    #[test]
    fn token_reservations_settle_to_what_calls_used() {
        let cfg = PacingConfig::default();
        let t0 = Instant::now();
        let mut c = paced(t0, 1000.0, None, None);
        let first = match c.reserve(t0, 100.0, &cfg) {
            Reservation::At(at) => at,
            other => panic!("{other:?}"),
        };
        c.settle(t0, 100.0, 40.0);
        assert_eq!(c.reserve(t0, 10.0, &cfg), Reservation::At(first + ms(40)));
        c.settle(t0, 10.0, 60.0);
        assert_eq!(c.reserve(t0, 1.0, &cfg), Reservation::At(first + ms(100)));
    }
    #[test]
    fn the_binomial_tail_is_the_chance_of_at_least_k_throttles() {
        assert_eq!(binomial_tail(10, 0, 0.05), 1.0);
        assert_eq!(binomial_tail(3, 4, 0.05), 0.0);
        // One of four: 1 - 0.95^4.
        assert!((binomial_tail(4, 1, 0.05) - (1.0 - 0.95f64.powi(4))).abs() < 1e-12);
        // All of three: 0.05^3.
        assert!((binomial_tail(3, 3, 0.05) - 0.05f64.powi(3)).abs() < 1e-12);
    }

    #[test]
    fn stray_throttles_among_few_calls_do_not_start_pacing() {
        // A caller sending one call every 2 s; Bedrock throttles one of them at random.
        let cfg = PacingConfig::default();
        let t0 = Instant::now();
        let mut c = RateController::new(t0);
        for i in 0..3 {
            c.on_admitted(t0 + ms(2000 * i), 1.0, ms(1500), &cfg);
        }
        let at = t0 + ms(5000);
        assert_eq!(c.on_throttle(at, 1.0, THROTTLE, ms(1500), &cfg), None);
        assert_eq!(
            c.rate(),
            None,
            "one throttle in four calls is what strays look like"
        );
        // Its retry is throttled too, and another: three in a row are not strays.
        c.on_throttle(at + ms(300), 1.0, THROTTLE, ms(1500), &cfg);
        c.on_throttle(at + ms(600), 1.0, THROTTLE, ms(1500), &cfg);
        assert!(
            c.rate().is_some(),
            "three throttles of six outcomes are a quota"
        );
    }

    #[test]
    fn the_token_lane_starts_in_tokens_even_before_a_success() {
        // Calls reserving 8,000 tokens, all throttled before any success came back: the
        // pace is in tokens, about half what came back, not a rate of calls.
        let cfg = PacingConfig::default();
        let t0 = Instant::now();
        let mut c = RateController::new(t0);
        for i in 0..8 {
            c.on_throttle(t0 + ms(100 * i), 8000.0, THROTTLE, ms(5000), &cfg);
        }
        let rate = c.rate().expect("paced");
        assert!(rate > 1000.0, "{rate} tokens/s");
    }

    #[test]
    fn a_throttle_while_demand_leaves_the_pace_unused_says_nothing() {
        let cfg = PacingConfig::default();
        let t0 = Instant::now();
        // Paced at 10/s while callers send one call a second.
        let mut c = paced(t0, 10.0, Some(10.0), None);
        c.paced_since = t0;
        let mut now = t0;
        for _ in 0..10 {
            now += ms(1000);
            let at = slot(&mut c, now);
            c.on_admitted(at + LATENCY, 1.0, LATENCY, &cfg);
        }
        now += ms(1000);
        let at = slot(&mut c, now);
        assert_eq!(
            c.on_throttle(at + THROTTLE, 1.0, THROTTLE, LATENCY, &cfg),
            None
        );
        assert_eq!(c.rate(), Some(10.0));
    }

    #[test]
    fn a_pace_demand_leaves_unused_is_released() {
        let cfg = PacingConfig::default();
        let t0 = Instant::now();
        let mut c = paced(t0, 10.0, Some(10.0), None);
        c.paced_since = t0;
        let mut now = t0;
        let mut released = None;
        // One call a second for 40 s, none throttled.
        for _ in 0..40 {
            now += ms(1000);
            let at = slot(&mut c, now);
            c.on_admitted(at + LATENCY, 1.0, LATENCY, &cfg);
            if let Some(adj) = c.adjust(at + LATENCY, LATENCY, &cfg) {
                released = Some((now - t0, adj));
                break;
            }
        }
        let (after, adj) = released.expect("released");
        assert_eq!(adj, Adjustment::Released { from: 10.0 });
        assert!(after >= IDLE_RELEASE, "{after:?}");
        assert_eq!(c.rate(), None);
    }
}
