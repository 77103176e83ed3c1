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

use std::time::Duration;

use tokio::time::Instant;

use crate::actor::throttle::{CallOutcome, Grant, ThrottleConfig};
use crate::policy::backoff::SharedBrake;
use crate::policy::pacing::{Adjustment, RateController, Reservation};
use crate::policy::throttle_policy::ThrottlePolicy;

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
    /// Smoothed tokens a successful call uses (input + output): what a slot of the token
    /// pace holds, and how the token pace is expressed in calls. Bedrock reserves input +
    /// `max_tokens` at admission but gives the unused part back when the call ends, so the
    /// sustained rate is set by what calls use; its reservation needs only the quota's burst.
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
}

impl ModelThrottle {
    /// A model with no history, first seen at `now`.
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
        }
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

    /// Whether a call must ask for a grant first: the model is paced or braking.
    pub fn must_ask(&mut self, now: Instant, config: &ThrottleConfig) -> bool {
        config.policy != ThrottlePolicy::None
            && (self.calls.rate().is_some()
                || self.tokens.rate().is_some()
                || !self.brake_delay(now, config).is_zero())
    }

    /// A slot for a call reserving `reserved_tokens` (input estimate + `max_tokens`), and
    /// the brake's jittered delay on top (`unit` in [0, 1) is the jitter's draw). Returns the
    /// grant and the brake's part of its delay (zero when the brake is off), for the log.
    pub fn grant(
        &mut self,
        now: Instant,
        reserved_tokens: u64,
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
        // 1. Adaptive: a slot from both paces (calls, and the tokens a call typically uses).
        let mut send_at = now;
        let mut tokens = 0;
        if config.policy == ThrottlePolicy::Adaptive {
            if self.tokens_per_call == 0.0 {
                self.tokens_per_call = reserved_tokens as f64;
            }
            tokens = (reserved_tokens as f64).min(self.tokens_per_call).ceil() as u64;
            match self.calls.reserve(now, 1.0, pacing) {
                Reservation::ComeBack(after) => {
                    return (Grant::AskAgainAfter(after), Duration::ZERO)
                }
                Reservation::At(at) => send_at = at,
            }
            self.tokens.admits(reserved_tokens as f64);
            match self.tokens.reserve(now, tokens as f64, pacing) {
                Reservation::ComeBack(after) => {
                    self.calls.refund(now, 1.0);
                    return (Grant::AskAgainAfter(after), Duration::ZERO);
                }
                Reservation::At(at) => send_at = send_at.max(at),
            }
        }
        // 2. The seed's brake, behind the pacer (or alone).
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
        let typical = self.latency;
        let mut changed: Vec<(Lane, Option<Adjustment>)> = Vec::new();
        match outcome {
            CallOutcome::Success {
                input_tokens,
                output_tokens,
            } => {
                self.succeeded += 1;
                self.latency = (self.latency * 7 + latency) / 8;
                notes.brake_reset = self.brake.on_success();
                let used = (input_tokens + output_tokens) as f64;
                if paced {
                    // Settle the token slot with what Bedrock actually counted.
                    changed.push((
                        Lane::Calls,
                        self.calls.on_admitted(now, 1.0, latency, pacing),
                    ));
                    self.tokens.settle(now, granted, used);
                    changed.push((
                        Lane::Tokens,
                        self.tokens.on_admitted(now, used, latency, pacing),
                    ));
                }
                self.tokens_per_call = 0.9 * self.tokens_per_call + 0.1 * used;
            }
            CallOutcome::Throttled { tokens } => {
                self.throttled += 1;
                self.brake.on_throttle(&config.schedule, now);
                if paced {
                    // A throttled call took nothing from the token quota.
                    self.tokens.refund(now, granted);
                    let (lane, controller) = if tokens {
                        (Lane::Tokens, &mut self.tokens)
                    } else {
                        (Lane::Calls, &mut self.calls)
                    };
                    changed.push((lane, controller.on_throttle(now, latency, typical, pacing)));
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
    }
}
