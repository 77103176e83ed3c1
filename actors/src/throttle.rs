//! ThrottleActor: the one owner of throttle state, shared by every worker.
//!
//! Workers ask with [`Acquire`] before each call and get a [`Grant`] at once; they sleep the
//! granted delay themselves, so this actor never sleeps. After the call they send a
//! [`Report`]. State is kept per (region, model): the region is fixed per broker, so the map
//! is keyed by model id.
//!
//! Three policies ([`ThrottlePolicy`]):
//! - **adaptive** (default): a pacer per model ([`crate::pacing`]) spaces calls at the rate
//!   the quota admits, in calls and, for tokens-per-minute quotas, in tokens (each slot
//!   holds the tokens a call of the model typically uses, at most its input estimate +
//!   `max_tokens`, and is settled with the `usage` Bedrock returns). The seed's brake stays in force behind it: after `brake_after` consecutive
//!   throttles (the pacer is badly wrong, or the quota is exhausted) every call also waits
//!   the seed's pre-emptive delay. The pacer's rate is published to subscribers
//!   ([`RateUpdate`]) so the supervisor can refuse requests that cannot start in time.
//! - **seed**: the seed's [`SharedBrake`] alone: while calls to a model are throttled, every
//!   call first waits 1 s, 2 s, 4 s, ... 32 s; a success or 60 s without a throttle resets it.
//! - **none**: no shared state; each request backs off on its own (see [`crate::retry`]).
//!   For comparison in benchmarks.

use std::collections::HashMap;
use std::fmt;
use std::str::FromStr;
use std::sync::{Arc, RwLock};
use std::time::Duration;

use actix::prelude::*;
use tokio::time::Instant;

use crate::backoff::{BackoffSchedule, SharedBrake};
use crate::pacing::{Adjustment, PacingConfig, RateController, Reservation};

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

/// Settings of the shared throttle.
#[derive(Debug, Clone, PartialEq)]
pub struct ThrottleConfig {
    /// Region half of the throttle key (quotas are per model and region).
    pub region: String,
    /// Which policy runs.
    pub policy: ThrottlePolicy,
    /// The seed's pre-emptive backoff schedule (both shared policies).
    pub schedule: BackoffSchedule,
    /// Adaptive: consecutive throttles before the seed brake engages behind the pacer.
    pub brake_after: u32,
    /// Adaptive: the pacer's constants.
    pub pacing: PacingConfig,
}

impl ThrottleConfig {
    /// The default adaptive throttle for `region`.
    pub fn new(region: &str) -> ThrottleConfig {
        ThrottleConfig {
            region: region.to_string(),
            policy: ThrottlePolicy::Adaptive,
            schedule: BackoffSchedule::default(),
            brake_after: 5,
            pacing: PacingConfig::default(),
        }
    }
}

impl ThrottleConfig {
    /// Consecutive throttles the brake lets pass before it delays calls.
    fn free_throttles(&self) -> u32 {
        match self.policy {
            ThrottlePolicy::Adaptive => self.brake_after.saturating_sub(1),
            ThrottlePolicy::Seed | ThrottlePolicy::None => 0,
        }
    }
}

/// Which models a worker must ask the throttle about before calling. The ThrottleActor
/// writes it whenever a model's state changes (paced, or braking); workers only read it, so
/// a call to a model that is neither paced nor braked costs no round trip to the actor. Its
/// outcome is still reported, so the throttle sees every throttle and every success.
#[derive(Clone, Default)]
pub struct ThrottleGates(Arc<RwLock<HashMap<Arc<str>, bool>>>);

impl ThrottleGates {
    /// Whether a call to `model` needs a grant first.
    pub fn must_ask(&self, model: &str) -> bool {
        self.0
            .read()
            .unwrap_or_else(|poisoned| poisoned.into_inner())
            .get(model)
            .copied()
            .unwrap_or(false)
    }

    fn set(&self, model: &Arc<str>, ask: bool) {
        let mut gates = self
            .0
            .write()
            .unwrap_or_else(|poisoned| poisoned.into_inner());
        if gates.get(model) != Some(&ask) {
            gates.insert(model.clone(), ask);
        }
    }
}

/// Asks permission to call `model`; answered at once.
#[derive(Message, Debug, Clone)]
#[rtype(result = "Grant")]
pub struct Acquire {
    /// The model about to be called.
    pub model: Arc<str>,
    /// Tokens Bedrock will reserve for the call (input estimate + max_tokens).
    pub reserved_tokens: u64,
}

/// The answer to an [`Acquire`].
#[derive(Debug, Clone, Copy, PartialEq, MessageResponse)]
pub enum Grant {
    /// A slot is reserved: call after `delay`. The slot holds `tokens` of the token pace
    /// (the tokens a call of this model typically uses), settled by the [`Report`].
    CallAfter { delay: Duration, tokens: u64 },
    /// No slot yet (the pace is full for now): ask again after this delay.
    AskAgainAfter(Duration),
}

/// How a call went, as far as the throttle cares.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum CallOutcome {
    /// Bedrock answered.
    Success {
        input_tokens: u64,
        output_tokens: u64,
    },
    /// ThrottlingException, the quota signal; `tokens` when it named tokens ("Too many
    /// tokens") rather than requests.
    Throttled { tokens: bool },
    /// Any other failure; not a quota signal (ModelNotReady and 503 included).
    OtherFailure,
}

/// Tells the throttle how a granted call went.
#[derive(Message, Debug, Clone)]
#[rtype(result = "()")]
pub struct Report {
    /// The model that was called.
    pub model: Arc<str>,
    /// What happened.
    pub outcome: CallOutcome,
    /// How long the call took.
    pub latency: Duration,
    /// The tokens its grant held (`Grant::CallAfter::tokens`).
    pub granted_tokens: u64,
}

/// Gives back a granted slot that will not be used (the request gave up first).
#[derive(Message, Debug, Clone)]
#[rtype(result = "()")]
pub struct Release {
    /// The model of the slot.
    pub model: Arc<str>,
    /// The tokens its grant held.
    pub granted_tokens: u64,
}

/// A model's pace changed: `calls_per_sec` calls per second can start (`None`: not paced).
#[derive(Message, Debug, Clone, PartialEq)]
#[rtype(result = "()")]
pub struct RateUpdate {
    /// The model.
    pub model: Arc<str>,
    /// Calls per second the pace allows, counting the token pace too.
    pub calls_per_sec: Option<f64>,
    /// Typical latency of a successful call.
    pub latency: Duration,
}

/// Asks for [`RateUpdate`]s.
#[derive(Message)]
#[rtype(result = "()")]
pub struct Subscribe(pub Recipient<RateUpdate>);

/// Asks for the throttle state of every model seen so far.
#[derive(Message, Debug, Clone, Copy)]
#[rtype(result = "Vec<ModelThrottleStatus>")]
pub struct GetThrottleStatus;

/// One model's throttle state, for `/status`.
#[derive(Debug, Clone, PartialEq, serde::Serialize)]
pub struct ModelThrottleStatus {
    /// AWS region.
    pub region: String,
    /// Model id.
    pub model: String,
    /// The policy in force.
    pub policy: ThrottlePolicy,
    /// Throttles since the last success or quiet-window reset.
    pub consecutive_throttles: u32,
    /// Pre-emptive delay a call would get now from the brake (un-jittered), in ms.
    pub current_delay_ms: u64,
    /// Time since the last throttle, if there was one.
    pub since_last_throttle_ms: Option<u64>,
    /// Adaptive: calls per second the pacer allows (`null` while unpaced).
    pub paced_calls_per_sec: Option<f64>,
    /// Adaptive: tokens per second the pacer allows (`null` while unpaced).
    pub paced_tokens_per_sec: Option<f64>,
    /// Typical latency of a successful call, in ms.
    pub latency_ms: u64,
    /// Calls reported so far.
    pub calls: u64,
    /// Calls that came back throttled.
    pub throttled: u64,
    /// Calls that succeeded.
    pub succeeded: u64,
}

/// Throttle state of one model.
#[derive(Debug)]
struct ModelThrottle {
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
    /// The last rate published to subscribers.
    published: Option<f64>,
    /// Calls reported.
    reported: u64,
    /// Throttled reports.
    throttled: u64,
    /// Successful reports.
    succeeded: u64,
}

impl ModelThrottle {
    fn new(now: Instant) -> ModelThrottle {
        ModelThrottle {
            brake: SharedBrake::default(),
            calls: RateController::new(now),
            tokens: RateController::new(now),
            latency: Duration::from_millis(100),
            tokens_per_call: 0.0,
            published: None,
            reported: 0,
            throttled: 0,
            succeeded: 0,
        }
    }

    /// Calls per second both paces allow together.
    fn calls_per_sec(&self) -> Option<f64> {
        let by_tokens = self
            .tokens
            .rate()
            .map(|t| t / self.tokens_per_call.max(1.0));
        match (self.calls.rate(), by_tokens) {
            (Some(c), Some(t)) => Some(c.min(t)),
            (c, t) => c.or(t),
        }
    }
}

/// The actor owning every model's throttle state.
pub struct ThrottleActor {
    /// Region, policy, schedule and pacing constants.
    config: ThrottleConfig,
    /// State per model id.
    models: HashMap<Arc<str>, ModelThrottle>,
    /// Who hears about pace changes (the supervisors).
    subscribers: Vec<Recipient<RateUpdate>>,
    /// Published for the workers: which models need a grant before a call.
    gates: ThrottleGates,
}

impl ThrottleActor {
    /// A throttle with no history.
    pub fn new(config: ThrottleConfig) -> ThrottleActor {
        ThrottleActor {
            config,
            models: HashMap::new(),
            subscribers: Vec::new(),
            gates: ThrottleGates::default(),
        }
    }

    /// The gates this actor keeps up to date, for the workers.
    pub fn gates(&self) -> ThrottleGates {
        self.gates.clone()
    }

    /// Publishes whether calls to `model` must ask first: when it is paced or braking.
    fn update_gate(&mut self, model: &Arc<str>, now: Instant) {
        let free = self.config.free_throttles();
        let schedule = self.config.schedule;
        let ask = match (self.config.policy, self.models.get_mut(model)) {
            (ThrottlePolicy::None, _) | (_, None) => false,
            (_, Some(state)) => {
                state.calls.rate().is_some()
                    || state.tokens.rate().is_some()
                    || !state.brake.pre_call_delay(&schedule, now, free).is_zero()
            }
        };
        self.gates.set(model, ask);
    }

    /// The seed brake's delay for a call now, or zero; logs the seed's line when braking.
    fn brake_delay(&mut self, model: &Arc<str>, now: Instant) -> Duration {
        if self.config.policy == ThrottlePolicy::None {
            return Duration::ZERO;
        }
        let free = self.config.free_throttles();
        let schedule = self.config.schedule;
        let state = self
            .models
            .get_mut(model)
            .expect("state exists once granted");
        let base = state.brake.pre_call_delay(&schedule, now, free);
        if base.is_zero() {
            return Duration::ZERO;
        }
        let delay = schedule.jittered(base, fastrand::f64());
        log::info!(
            "Pre-emptive backoff due to shared throttling... waiting {:.2}s before calling {} ({} consecutive throttles)",
            delay.as_secs_f64(),
            model,
            state.brake.consecutive()
        );
        delay
    }

    /// Judges the model's control windows and tells subscribers if its pace changed.
    fn adjust(&mut self, model: &Arc<str>, now: Instant) {
        let pacing = self.config.pacing;
        let Some(state) = self.models.get_mut(model) else {
            return;
        };
        for (lane, unit) in [(&mut state.calls, "calls"), (&mut state.tokens, "tokens")] {
            match lane.adjust(now, state.latency, &pacing) {
                Some(Adjustment::Cut { from, to }) => log::info!(
                    "Pacing {model} at {to:.2} {unit}/s after throttles (was {})",
                    from.map_or("unpaced".to_string(), |f| format!("{f:.2}"))
                ),
                Some(Adjustment::Probe { from, to }) => {
                    log::debug!("Pacing {model} up from {from:.2} to {to:.2} {unit}/s")
                }
                Some(Adjustment::Unpaced { from }) => log::info!(
                    "Stopped pacing {model} (was {from:.2} {unit}/s): nothing succeeded for a minute; the shared backoff spaces calls"
                ),
                None => {}
            }
        }
        let rate = state.calls_per_sec();
        let changed = match (rate, state.published) {
            (Some(new), Some(old)) => (new - old).abs() > old * 0.01,
            (new, old) => new.is_some() != old.is_some(),
        };
        if changed {
            state.published = rate;
            let update = RateUpdate {
                model: model.clone(),
                calls_per_sec: rate,
                latency: state.latency,
            };
            for subscriber in &self.subscribers {
                subscriber.do_send(update.clone());
            }
        }
    }
}

impl Actor for ThrottleActor {
    type Context = Context<Self>;

    fn started(&mut self, ctx: &mut Context<Self>) {
        // Grants and reports arrive from every worker; keep the mailbox from refusing them.
        ctx.set_mailbox_capacity(crate::MAILBOX_CAPACITY);
    }
}

impl Handler<Acquire> for ThrottleActor {
    type Result = Grant;

    fn handle(&mut self, msg: Acquire, _ctx: &mut Context<Self>) -> Grant {
        let now = Instant::now();
        let pacing = self.config.pacing;
        let policy = self.config.policy;
        let state = self
            .models
            .entry(msg.model.clone())
            .or_insert_with(|| ModelThrottle::new(now));
        if policy == ThrottlePolicy::None {
            return Grant::CallAfter {
                delay: Duration::ZERO,
                tokens: 0,
            };
        }
        // 1. Adaptive: a slot from both paces (calls, and the tokens a call typically uses).
        let mut send_at = now;
        let mut tokens = 0;
        if policy == ThrottlePolicy::Adaptive {
            if state.tokens_per_call == 0.0 {
                state.tokens_per_call = msg.reserved_tokens as f64;
            }
            tokens = (msg.reserved_tokens as f64)
                .min(state.tokens_per_call)
                .ceil() as u64;
            match state.calls.reserve(now, 1.0, &pacing) {
                Reservation::ComeBack(after) => return Grant::AskAgainAfter(after),
                Reservation::At(at) => send_at = at,
            }
            match state.tokens.reserve(now, tokens as f64, &pacing) {
                Reservation::ComeBack(after) => {
                    state.calls.refund(now, 1.0, &pacing);
                    return Grant::AskAgainAfter(after);
                }
                Reservation::At(at) => send_at = send_at.max(at),
            }
        }
        // 2. The seed's brake, behind the pacer (or alone).
        let brake = self.brake_delay(&msg.model, now);
        self.update_gate(&msg.model, now);
        Grant::CallAfter {
            delay: send_at.saturating_duration_since(now).max(brake),
            tokens,
        }
    }
}

impl Handler<Report> for ThrottleActor {
    type Result = ();

    fn handle(&mut self, msg: Report, _ctx: &mut Context<Self>) {
        let now = Instant::now();
        let pacing = self.config.pacing;
        let state = self
            .models
            .entry(msg.model.clone())
            .or_insert_with(|| ModelThrottle::new(now));
        let granted = msg.granted_tokens as f64;
        state.reported += 1;
        match msg.outcome {
            CallOutcome::Success {
                input_tokens,
                output_tokens,
            } => {
                state.succeeded += 1;
                state.latency = (state.latency * 7 + msg.latency) / 8;
                if let Some(was) = state.brake.on_success() {
                    log::info!(
                        "Request succeeded, resetting shared throttle counter... ({}, was {} consecutive throttles)",
                        msg.model,
                        was
                    );
                }
                // Settle the token slot with what Bedrock actually counted.
                let used = (input_tokens + output_tokens) as f64;
                state.calls.on_admitted(now, 1.0, &pacing);
                state.tokens.settle(now, granted, used, &pacing);
                state.tokens.on_admitted(now, used, &pacing);
                state.tokens_per_call = 0.9 * state.tokens_per_call + 0.1 * used;
            }
            CallOutcome::Throttled { tokens } => {
                state.throttled += 1;
                state.brake.on_throttle(now);
                // A throttled call took nothing from the token quota.
                state.tokens.refund(now, granted, &pacing);
                let lane = if tokens {
                    &mut state.tokens
                } else {
                    &mut state.calls
                };
                lane.on_throttle(now, state.latency, &pacing);
            }
            CallOutcome::OtherFailure => {
                // Not throttled: the quota admitted it, whatever else went wrong.
                state.calls.on_admitted(now, 1.0, &pacing);
                state.tokens.refund(now, granted, &pacing);
            }
        }
        if self.config.policy == ThrottlePolicy::Adaptive {
            self.adjust(&msg.model, now);
        }
        self.update_gate(&msg.model, now);
    }
}

impl Handler<Release> for ThrottleActor {
    type Result = ();

    fn handle(&mut self, msg: Release, _ctx: &mut Context<Self>) {
        let now = Instant::now();
        let pacing = self.config.pacing;
        if let Some(state) = self.models.get_mut(&msg.model) {
            state.calls.refund(now, 1.0, &pacing);
            state.tokens.refund(now, msg.granted_tokens as f64, &pacing);
        }
    }
}

impl Handler<Subscribe> for ThrottleActor {
    type Result = ();

    fn handle(&mut self, msg: Subscribe, _ctx: &mut Context<Self>) {
        self.subscribers.push(msg.0);
    }
}

impl Handler<GetThrottleStatus> for ThrottleActor {
    type Result = MessageResult<GetThrottleStatus>;

    fn handle(&mut self, _msg: GetThrottleStatus, _ctx: &mut Context<Self>) -> Self::Result {
        let now = Instant::now();
        let schedule = self.config.schedule;
        let free = self.config.free_throttles();
        let mut out: Vec<ModelThrottleStatus> = self
            .models
            .iter_mut()
            .map(|(model, state)| {
                let delay = match self.config.policy {
                    ThrottlePolicy::None => Duration::ZERO,
                    _ => state.brake.pre_call_delay(&schedule, now, free),
                };
                ModelThrottleStatus {
                    region: self.config.region.clone(),
                    model: model.to_string(),
                    policy: self.config.policy,
                    consecutive_throttles: state.brake.consecutive(),
                    current_delay_ms: delay.as_millis() as u64,
                    since_last_throttle_ms: state
                        .brake
                        .last_throttle()
                        .map(|at| now.saturating_duration_since(at).as_millis() as u64),
                    paced_calls_per_sec: state.calls.rate(),
                    paced_tokens_per_sec: state.tokens.rate(),
                    latency_ms: state.latency.as_millis() as u64,
                    calls: state.reported,
                    throttled: state.throttled,
                    succeeded: state.succeeded,
                }
            })
            .collect();
        out.sort_by(|a, b| a.model.cmp(&b.model));
        MessageResult(out)
    }
}
