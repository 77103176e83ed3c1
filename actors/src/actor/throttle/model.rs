//! The throttle state of one (region, model), as a pure state machine: the adaptive pacer's
//! two lanes (calls and tokens, [`crate::policy::pacing`]) with the seed's brake behind them
//! ([`crate::policy::backoff`]). [`crate::ThrottleActor`] keeps one per model and only
//! applies it; the virtual-time simulation (`actors/tests/pacing_simulation.rs`) drives the
//! very same code. Nothing here sleeps or reads the clock: every call passes `now`.
//!
//! - [`ModelThrottle::grant`]: a slot from both paces (a call, and the tokens a call of this
//!   model typically uses), then the brake's delay on top.
//! - [`ModelThrottle::report`]: how a granted call went; settles its token slot with the
//!   usage Bedrock counted, feeds the pacer, and judges its control windows.
//! - [`ModelThrottle::release`]: gives back a slot that will not be used.
//!
//! Tokens are counted Bedrock's way: a call needs its reservation (input + `max_tokens`) free
//! when it starts and is charged `input + cache writes + output x burndown` when it ends
//! (`burndown` by model family, [`crate::policy::burndown`]). The token lane's slots hold what a call
//! of the model is typically charged and are settled with the charge of its usage; a call
//! whose reservation alone is more than the quota can hold in a minute is refused outright.
//! Which quota throttled a call is read from the throttle's message ([`QuotaKind`]): only
//! that lane learns from it, and a spent daily quota is not paced at all: calls are refused
//! at once until a probe, once in a while, succeeds.

use std::collections::BTreeMap;
use std::time::Duration;

use tokio::time::Instant;

use crate::actor::throttle::{CallOutcome, Grant, QuotaKind, Refusal, ThrottleConfig};
use crate::observe::status::ThrottledBy;
use crate::policy::backoff::SharedBrake;
use crate::policy::pacing::{Adjustment, RateController, Reservation};
use crate::policy::throttle_policy::ThrottlePolicy;

/// First wait before probing a spent daily quota; it doubles after each failed probe.
const DAILY_PROBE_FIRST: Duration = Duration::from_secs(30);

/// Longest wait between probes of a spent daily quota.
const DAILY_PROBE_MAX: Duration = Duration::from_secs(600);

/// How long past its expected return a caller in line keeps its place.
const LINE_GRACE: Duration = Duration::from_secs(1);

/// A spent daily token quota.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct DailyState {
    /// No call before this; then one probe.
    pub probe_at: Instant,
    /// The wait after the next failed probe.
    pub pause: Duration,
    /// A probe is out: other calls wait for its answer.
    pub probing: bool,
}

/// Which pace an adjustment was made to.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Lane {
    /// Calls per second.
    Calls,
    /// Tokens per second.
    Tokens,
}

impl Lane {
    /// The unit, for log lines.
    pub fn unit(self) -> &'static str {
        match self {
            Lane::Calls => "calls",
            Lane::Tokens => "tokens",
        }
    }
}

/// What a report changed that is worth telling (logging) outside.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct ReportNotes {
    /// A success reset the brake after this many consecutive throttles.
    pub brake_reset: Option<u32>,
    /// The paces the report's control windows changed.
    pub adjustments: Vec<(Lane, Adjustment)>,
    /// The daily token quota refused this call: calls are refused until a probe succeeds.
    pub daily_spent: bool,
}

/// Throttle state of one model.
#[derive(Debug, Clone)]
pub struct ModelThrottle {
    /// The seed's shared consecutive-throttle brake.
    brake: SharedBrake,
    /// Adaptive: the pace in calls.
    calls: RateController,
    /// Adaptive: the pace in tokens (for tokens-per-minute quotas).
    tokens: RateController,
    /// Smoothed latency of successful calls: the feedback delay.
    latency: Duration,
    /// Smoothed quota tokens a successful call is charged (input + cache writes + output x
    /// burndown): what a slot of the token pace holds, and how the token pace is expressed in
    /// calls. Bedrock reserves input + `max_tokens` at admission but gives the unused part
    /// back when the call ends, so the sustained rate is set by what calls are charged; its
    /// reservation needs only the quota's burst.
    tokens_per_call: f64,
    /// The pacer stopped pacing for lack of any success: the brake spaces calls until one
    /// succeeds.
    pacer_gave_up: bool,
    /// Calls reported.
    reported: u64,
    /// Throttled reports.
    throttled: u64,
    /// Successful reports.
    succeeded: u64,
    /// Quota tokens charged per output token (Bedrock's burndown rate for this model).
    burndown: f64,
    /// The daily token quota is spent (`None`: it is not).
    daily: Option<DailyState>,
    /// Callers told to come back, by ticket, with when each is expected back: a caller's
    /// place in line tells when its call can start.
    line: BTreeMap<u64, Instant>,
    /// The next ticket given out.
    next_ticket: u64,
    /// Throttles by the quota that refused, for `/status`.
    throttled_by: ThrottledBy,
}

impl ModelThrottle {
    /// A model with no history, first seen at `now`, whose output tokens each cost
    /// `burndown` quota tokens.
    pub fn with_burndown(now: Instant, burndown: f64) -> ModelThrottle {
        ModelThrottle {
            burndown: if burndown.is_finite() && burndown > 0.0 {
                burndown
            } else {
                1.0
            },
            ..ModelThrottle::new(now)
        }
    }

    /// A model with no history, first seen at `now` (burndown 1).
    pub fn new(now: Instant) -> ModelThrottle {
        ModelThrottle {
            brake: SharedBrake::default(),
            calls: RateController::new(now),
            tokens: RateController::new(now),
            latency: Duration::from_millis(100),
            tokens_per_call: 0.0,
            pacer_gave_up: false,
            reported: 0,
            throttled: 0,
            succeeded: 0,
            burndown: 1.0,
            daily: None,
            line: BTreeMap::new(),
            next_ticket: 0,
            throttled_by: ThrottledBy::default(),
        }
    }

    /// Quota tokens a call with this usage is charged: input + cache writes + output x
    /// burndown (cache reads are not counted).
    pub fn charge(&self, input_tokens: u64, output_tokens: u64, cache_write_tokens: u64) -> f64 {
        (input_tokens + cache_write_tokens) as f64 + output_tokens as f64 * self.burndown
    }

    /// The model's burndown rate.
    pub fn burndown(&self) -> f64 {
        self.burndown
    }

    /// The spent daily quota, if it is.
    pub fn daily(&self) -> Option<DailyState> {
        self.daily
    }

    /// Throttles so far by the quota that refused them.
    pub fn throttled_by(&self) -> ThrottledBy {
        self.throttled_by
    }

    /// Calls per second both paces allow together (`None` while unpaced).
    pub fn calls_per_sec(&self) -> Option<f64> {
        let by_tokens = self
            .tokens
            .rate()
            .map(|t| t / self.tokens_per_call.max(1.0));
        match (self.calls.rate(), by_tokens) {
            (Some(c), Some(t)) => Some(c.min(t)),
            (c, t) => c.or(t),
        }
    }

    /// When calls may start again, if a spent window holds them back until then.
    pub fn resume_at(&self) -> Option<Instant> {
        match (self.calls.resume_at(), self.tokens.resume_at()) {
            (Some(a), Some(b)) => Some(a.max(b)),
            (a, b) => a.or(b),
        }
    }

    /// The pace in calls per second (`None` while unpaced).
    pub fn paced_calls(&self) -> Option<f64> {
        self.calls.rate()
    }

    /// The pace in tokens per second (`None` while unpaced).
    pub fn paced_tokens(&self) -> Option<f64> {
        self.tokens.rate()
    }

    /// The measured quota's bounds in `lane`: the highest pace proven sustainable and the
    /// lowest pace Bedrock throttled (each `None` until measured).
    pub fn quota_bounds(&self, lane: Lane) -> (Option<f64>, Option<f64>) {
        let controller = match lane {
            Lane::Calls => &self.calls,
            Lane::Tokens => &self.tokens,
        };
        (controller.floor(), controller.ceiling())
    }

    /// Typical latency of a successful call.
    pub fn latency(&self) -> Duration {
        self.latency
    }

    /// The brake's state.
    pub fn brake(&self) -> &SharedBrake {
        &self.brake
    }

    /// Calls reported, throttled, succeeded.
    pub fn counts(&self) -> (u64, u64, u64) {
        (self.reported, self.throttled, self.succeeded)
    }

    /// The brake's un-jittered delay for a call now (zero when it is not braking). With the
    /// adaptive policy the brake applies only once the pacer gave up (nothing succeeded for
    /// two windows): before that the pacer spaces calls itself, and a brake granting calls
    /// outside its schedule would only collide with it.
    pub fn brake_delay(&mut self, now: Instant, config: &ThrottleConfig) -> Duration {
        match config.policy {
            ThrottlePolicy::None => Duration::ZERO,
            ThrottlePolicy::Adaptive if !self.pacer_gave_up => Duration::ZERO,
            _ => self
                .brake
                .pre_call_delay(&config.schedule, now, config.free_throttles()),
        }
    }

    /// Whether a call must ask for a grant first: the model is paced, braking, or its daily
    /// quota is spent.
    pub fn must_ask(&mut self, now: Instant, config: &ThrottleConfig) -> bool {
        config.policy != ThrottlePolicy::None
            && (self.calls.rate().is_some()
                || self.tokens.rate().is_some()
                || self.daily.is_some()
                || !self.brake_delay(now, config).is_zero())
    }

    /// A slot for a call reserving `reserved_tokens` (input estimate + `max_tokens`), and
    /// the brake's jittered delay on top (`unit` in [0, 1) is the jitter's draw). Returns the
    /// grant and the brake's part of its delay (zero when the brake is off), for the log.
    pub fn grant(
        &mut self,
        now: Instant,
        reserved_tokens: u64,
        ticket: Option<u64>,
        config: &ThrottleConfig,
        unit: f64,
    ) -> (Grant, Duration) {
        let pacing = &config.pacing;
        if config.policy == ThrottlePolicy::None {
            let grant = Grant::CallAfter {
                delay: Duration::ZERO,
                tokens: 0,
                latency: self.latency,
            };
            return (grant, Duration::ZERO);
        }
        // 1. Calls the quota can never take, or not today, are refused outright.
        if let Some(refusal) = self.refusal(now, reserved_tokens) {
            return (Grant::Refused(refusal), Duration::ZERO);
        }
        // 2. Adaptive: a slot from both paces (calls, and the tokens a call typically uses).
        let mut send_at = now;
        let mut tokens = 0;
        if config.policy == ThrottlePolicy::Adaptive {
            if self.tokens_per_call == 0.0 {
                self.tokens_per_call = reserved_tokens as f64;
            }
            tokens = (reserved_tokens as f64).min(self.tokens_per_call).ceil() as u64;
            match self.calls.reserve(now, 1.0, pacing) {
                Reservation::ComeBack(after) => {
                    return (self.in_line(now, after, ticket), Duration::ZERO)
                }
                Reservation::At(at) => send_at = at,
            }
            self.tokens.admits(reserved_tokens as f64);
            match self.tokens.reserve(now, tokens as f64, pacing) {
                Reservation::ComeBack(after) => {
                    self.calls.refund(now, 1.0);
                    return (self.in_line(now, after, ticket), Duration::ZERO);
                }
                Reservation::At(at) => send_at = send_at.max(at),
            }
            if let Some(ticket) = ticket {
                self.line.remove(&ticket);
            }
        }
        // This call probes a spent daily quota: the others wait for its answer.
        if let Some(daily) = self.daily.as_mut() {
            daily.probing = true;
        }
        // 3. The seed's brake, behind the pacer (or alone).
        let base = self.brake_delay(now, config);
        let brake = if base.is_zero() {
            Duration::ZERO
        } else {
            config.schedule.jittered(base, unit)
        };
        let grant = Grant::CallAfter {
            delay: send_at.saturating_duration_since(now).max(brake),
            tokens,
            latency: self.latency,
        };
        (grant, brake)
    }

    /// Why a call reserving `reserved_tokens` must not be made now, if it must not: the daily
    /// quota is spent (until a probe; one call at a time probes it), or the reservation is
    /// more than a minute of the tokens quota holds (at the highest rate it could be).
    fn refusal(&mut self, now: Instant, reserved_tokens: u64) -> Option<Refusal> {
        if let Some(daily) = &mut self.daily {
            if daily.probing || now < daily.probe_at {
                return Some(Refusal::DailyQuota {
                    retry_after: daily
                        .probe_at
                        .saturating_duration_since(now)
                        .max(Duration::from_secs(1)),
                });
            }
        }
        let per_minute = self.tokens.quota_bound()? * 60.0;
        (reserved_tokens as f64 > per_minute).then_some(Refusal::TooLarge {
            reserved: reserved_tokens,
            quota_tokens: per_minute as u64,
        })
    }

    /// A caller must come back after `after`: its place in line (a new one without a
    /// `ticket`), and when at this pace its call would start.
    fn in_line(&mut self, now: Instant, after: Duration, ticket: Option<u64>) -> Grant {
        self.line.retain(|_, back| *back + LINE_GRACE >= now);
        let ticket = ticket.unwrap_or_else(|| {
            self.next_ticket += 1;
            self.next_ticket
        });
        let ahead = self.line.range(..ticket).count();
        let free_in = self.calls.next_free(now).max(self.tokens.next_free(now));
        let per_call = self
            .calls_per_sec()
            .map_or(0.0, |rate| 1.0 / rate.max(1e-9));
        let starts_in = free_in + Duration::from_secs_f64((ahead as f64 * per_call).min(86_400.0));
        self.line.insert(ticket, now + after);
        Grant::AskAgainAfter {
            after,
            starts_in,
            latency: self.latency,
            ticket,
        }
    }

    /// Records how a granted call went (`granted_tokens`: what its grant held) and, with the
    /// adaptive policy, judges the paces' control windows.
    pub fn report(
        &mut self,
        now: Instant,
        outcome: CallOutcome,
        latency: Duration,
        granted_tokens: u64,
        config: &ThrottleConfig,
    ) -> ReportNotes {
        let pacing = &config.pacing;
        let granted = granted_tokens as f64;
        let paced = config.policy == ThrottlePolicy::Adaptive;
        let mut notes = ReportNotes::default();
        self.reported += 1;
        if let Some(daily) = self.daily.as_mut() {
            daily.probing = false;
        }
        let typical = self.latency;
        let mut changed: Vec<(Lane, Option<Adjustment>)> = Vec::new();
        match outcome {
            CallOutcome::Success {
                input_tokens,
                output_tokens,
                cache_write_tokens,
            } => {
                self.succeeded += 1;
                self.latency = (self.latency * 7 + latency) / 8;
                notes.brake_reset = self.brake.on_success();
                self.daily = None;
                let used = self.charge(input_tokens, output_tokens, cache_write_tokens);
                if paced {
                    // Settle the token slot with what Bedrock actually counted.
                    changed.push((
                        Lane::Calls,
                        self.calls.on_admitted(now, 1.0, latency, pacing),
                    ));
                    // Only a call the token pace granted is settled against it: the charge
                    // of one sent while unpaced is already in what the pace was measured on.
                    if granted > 0.0 {
                        self.tokens.settle(now, granted, used);
                    }
                    changed.push((
                        Lane::Tokens,
                        self.tokens.on_admitted(now, used, latency, pacing),
                    ));
                }
                // The mean of the first charges, then a moving average: the first guess
                // (a whole reservation) is far above what calls are charged.
                let weight = (1.0 / self.succeeded as f64).max(0.1);
                self.tokens_per_call = (1.0 - weight) * self.tokens_per_call + weight * used;
            }
            CallOutcome::Throttled { quota } => {
                self.throttled += 1;
                *match quota {
                    QuotaKind::Requests => &mut self.throttled_by.requests,
                    QuotaKind::Tokens => &mut self.throttled_by.tokens,
                    QuotaKind::TokensPerDay => &mut self.throttled_by.tokens_per_day,
                } += 1;
                if quota == QuotaKind::TokensPerDay {
                    // Not paced: nothing but time refills it. Refuse calls until a probe.
                    if paced {
                        self.tokens.refund(now, granted);
                    }
                    let pause = self
                        .daily
                        .map_or(DAILY_PROBE_FIRST, |d| (d.pause * 2).min(DAILY_PROBE_MAX));
                    self.daily = Some(DailyState {
                        probe_at: now + pause,
                        pause,
                        probing: false,
                    });
                    notes.daily_spent = true;
                } else {
                    self.brake.on_throttle(&config.schedule, now);
                }
                if paced && quota != QuotaKind::TokensPerDay {
                    // A throttled call took nothing from the token quota.
                    self.tokens.refund(now, granted);
                    let (lane, controller, units) = if quota == QuotaKind::Tokens {
                        (Lane::Tokens, &mut self.tokens, granted.max(1.0))
                    } else {
                        (Lane::Calls, &mut self.calls, 1.0)
                    };
                    changed.push((
                        lane,
                        controller.on_throttle(now, units, latency, typical, pacing),
                    ));
                }
            }
            CallOutcome::OtherFailure => {
                if paced {
                    // Not throttled: the quota admitted it, whatever else went wrong.
                    changed.push((
                        Lane::Calls,
                        self.calls.on_admitted(now, 1.0, latency, pacing),
                    ));
                    self.tokens.refund(now, granted);
                }
            }
        }
        if paced {
            changed.push((Lane::Calls, self.calls.adjust(now, typical, pacing)));
            changed.push((Lane::Tokens, self.tokens.adjust(now, typical, pacing)));
        }
        notes.adjustments = changed
            .into_iter()
            .filter_map(|(lane, adjustment)| adjustment.map(|a| (lane, a)))
            .collect();
        if notes
            .adjustments
            .iter()
            .any(|(_, a)| matches!(a, Adjustment::Unpaced { .. }))
        {
            self.pacer_gave_up = true;
        }
        if matches!(outcome, CallOutcome::Success { .. }) {
            self.pacer_gave_up = false;
        }
        notes
    }

    /// Gives back a granted slot that will not be used (the request gave up first): its
    /// tokens return to the token pace. Its call slot is not given back: later slots were
    /// reserved behind it, and handing its time out again would send two calls closer
    /// together than the pace allows.
    pub fn release(&mut self, now: Instant, granted_tokens: u64) {
        self.tokens.refund(now, granted_tokens as f64);
        if let Some(daily) = self.daily.as_mut() {
            // A probe that was not sent: the next caller probes.
            daily.probing = false;
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn throttled(quota: QuotaKind) -> CallOutcome {
        CallOutcome::Throttled { quota }
    }

    fn success(input: u64, output: u64) -> CallOutcome {
        CallOutcome::Success {
            input_tokens: input,
            output_tokens: output,
            cache_write_tokens: 0,
        }
    }

    #[test]
    fn throttle_messages_name_their_quota() {
        for (message, quota) in [
            (
                "Too many requests, please wait before trying again.",
                QuotaKind::Requests,
            ),
            (
                "Too many tokens, please wait before trying again.",
                QuotaKind::Tokens,
            ),
            (
                "Too many tokens per day, please wait before trying again.",
                QuotaKind::TokensPerDay,
            ),
            (
                "Your request rate is too high. Reduce the frequency of requests.",
                QuotaKind::Requests,
            ),
        ] {
            assert_eq!(QuotaKind::of_message(message), quota, "{message}");
        }
    }

    #[test]
    fn a_call_is_charged_input_cache_writes_and_output_times_burndown() {
        let t = ModelThrottle::with_burndown(Instant::now(), 5.0);
        // AWS's example: 2,005 input + 200 output tokens consume 3,005 tokens of quota.
        assert_eq!(t.charge(2005, 200, 0), 3005.0);
        assert_eq!(t.charge(1000, 10, 500), 1550.0);
    }

    #[test]
    fn a_spent_daily_quota_refuses_calls_until_a_probe_succeeds() {
        let config = ThrottleConfig::new("us-east-1");
        let t0 = Instant::now();
        let mut t = ModelThrottle::with_burndown(t0, 5.0);
        let (grant, _) = t.grant(t0, 100, None, &config, 0.5);
        assert!(matches!(grant, Grant::CallAfter { .. }));
        let notes = t.report(
            t0,
            throttled(QuotaKind::TokensPerDay),
            Duration::from_millis(5),
            0,
            &config,
        );
        assert!(notes.daily_spent);
        assert!(t.must_ask(t0, &config), "callers must ask, to be refused");
        // Refused at once, with the time to the probe; the pace learned nothing from it.
        match t
            .grant(t0 + Duration::from_secs(1), 100, None, &config, 0.5)
            .0
        {
            Grant::Refused(Refusal::DailyQuota { retry_after }) => {
                assert_eq!(retry_after, DAILY_PROBE_FIRST - Duration::from_secs(1))
            }
            other => panic!("{other:?}"),
        }
        assert_eq!(t.paced_calls(), None);
        // At the probe time one call goes; the others are refused while it is out.
        let probe_time = t0 + DAILY_PROBE_FIRST;
        assert!(matches!(
            t.grant(probe_time, 100, None, &config, 0.5).0,
            Grant::CallAfter { .. }
        ));
        assert!(matches!(
            t.grant(probe_time, 100, None, &config, 0.5).0,
            Grant::Refused(_)
        ));
        // The probe is throttled again: the next one waits twice as long.
        t.report(
            probe_time,
            throttled(QuotaKind::TokensPerDay),
            Duration::from_millis(5),
            0,
            &config,
        );
        assert_eq!(
            t.daily().unwrap().probe_at,
            probe_time + DAILY_PROBE_FIRST * 2
        );
        // A later probe succeeds: calls flow again.
        let later = probe_time + DAILY_PROBE_FIRST * 2;
        assert!(matches!(
            t.grant(later, 100, None, &config, 0.5).0,
            Grant::CallAfter { .. }
        ));
        t.report(
            later,
            success(10, 10),
            Duration::from_millis(100),
            0,
            &config,
        );
        assert_eq!(t.daily(), None);
        assert!(matches!(
            t.grant(later, 100, None, &config, 0.5).0,
            Grant::CallAfter { .. }
        ));
    }

    #[test]
    fn callers_in_line_learn_when_their_turn_comes() {
        let config = ThrottleConfig::new("us-east-1");
        let t0 = Instant::now();
        let mut t = ModelThrottle::new(t0);
        // Throttles on calls of a second start pacing.
        for i in 0..4 {
            t.report(
                t0 + Duration::from_millis(250 * i),
                success(5, 5),
                Duration::from_secs(1),
                0,
                &config,
            );
        }
        let at = t0 + Duration::from_secs(1);
        for i in 0..6 {
            t.report(
                at + Duration::from_millis(i),
                throttled(QuotaKind::Requests),
                Duration::from_millis(5),
                0,
                &config,
            );
        }
        let rate = t.paced_calls().expect("paced");
        // Take every slot within the horizon, then three callers line up behind.
        let mut tickets = Vec::new();
        let mut starts = Vec::new();
        for _ in 0..50 {
            match t.grant(at, 10, None, &config, 0.5).0 {
                Grant::CallAfter { .. } => {}
                Grant::AskAgainAfter {
                    starts_in, ticket, ..
                } => {
                    tickets.push(ticket);
                    starts.push(starts_in);
                    if tickets.len() == 3 {
                        break;
                    }
                }
                Grant::Refused(r) => panic!("{r:?}"),
            }
        }
        assert_eq!(tickets.len(), 3);
        // Each waits one more interval than the one before it.
        let interval = 1.0 / rate;
        for pair in starts.windows(2) {
            let gap = (pair[1] - pair[0]).as_secs_f64();
            assert!((gap - interval).abs() < 1e-6, "{gap} vs {interval}");
        }
        // Asking again keeps one's place.
        match t.grant(at, 10, Some(tickets[2]), &config, 0.5).0 {
            Grant::AskAgainAfter {
                starts_in, ticket, ..
            } => {
                assert_eq!(ticket, tickets[2]);
                assert_eq!(starts_in, starts[2]);
            }
            other => panic!("{other:?}"),
        }
    }
}
