//! ThrottleActor: the one owner of throttle state, shared by every worker.
//!
//! Workers ask with [`Acquire`] before each call and get a [`Grant`] at once; they sleep the
//! granted delay themselves, so this actor never sleeps. After the call they send a
//! [`Report`]. State is kept per (region, model): the region is fixed per broker, so the map
//! is keyed by model id.
//!
//! Three policies ([`ThrottlePolicy`]):
//! - **adaptive** (default): a pacer per model ([`crate::policy::pacing`]) spaces calls at the rate
//!   the quota admits, in calls and, for tokens-per-minute quotas, in tokens (each slot
//!   holds the tokens a call of the model typically uses, at most its input estimate +
//!   `max_tokens`, and is settled with the `usage` Bedrock returns). The seed's brake stays
//!   behind it for when the pacer has no level to pace at: once nothing has succeeded for two
//!   quota windows the pacer stops, and after `brake_after` consecutive throttles every call
//!   also waits the seed's pre-emptive delay until one succeeds. (While the pacer paces, it
//!   spaces calls itself: a brake granting calls outside its schedule would only collide with
//!   it.) The pacer's rate, and when a spent quota window moves, are published to subscribers
//!   ([`RateUpdate`]) so the supervisor can refuse requests that cannot start in time.
//! - **seed**: the seed's [`SharedBrake`] alone: while calls to a model are throttled, every
//!   call first waits 1 s, 2 s, 4 s, ... 32 s; a success or 60 s without a throttle resets it.
//! - **none**: no shared state; each request backs off on its own (see [`crate::policy::retry`]).
//!   For comparison in benchmarks.

pub mod model;

use std::collections::HashMap;
use std::sync::{Arc, RwLock};
use std::time::Duration;

use actix::prelude::*;
use tokio::time::Instant;

use crate::actor::throttle::model::{Lane, ModelThrottle};
use crate::observe::status::{ModelThrottleStatus, PaceStatus};
use crate::policy::backoff::BackoffSchedule;
use crate::policy::pacing::{Adjustment, PacingConfig};
use crate::policy::throttle_policy::ThrottlePolicy;

/// Settings of the shared throttle.
#[derive(Debug, Clone, PartialEq)]
pub struct ThrottleConfig {
    /// Region half of the throttle key (quotas are per model and region).
    pub region: String,
    /// Which policy runs.
    pub policy: ThrottlePolicy,
    /// The seed's pre-emptive backoff schedule (both shared policies).
    pub schedule: BackoffSchedule,
    /// Adaptive: consecutive throttles before the seed brake engages once the pacer gave up.
    pub brake_after: u32,
    /// Adaptive: the pacer's constants.
    pub pacing: PacingConfig,
    /// Burndown rates set by the operator per model id (quota tokens per output token),
    /// over the model family's default ([`crate::policy::burndown`]).
    pub burndown: HashMap<String, f64>,
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
            burndown: HashMap::new(),
        }
    }
}

impl ThrottleConfig {
    /// The burndown rate of `model`: the operator's, else its family's.
    pub fn burndown_of(&self, model: &str) -> f64 {
        self.burndown
            .get(model)
            .copied()
            .unwrap_or_else(|| crate::policy::burndown::default_burndown(model))
    }

    /// Consecutive throttles the brake lets pass before it delays calls.
    pub fn free_throttles(&self) -> u32 {
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
    /// The caller's place in line, from an earlier [`Grant::AskAgainAfter`] (`None` on the
    /// first ask).
    pub ticket: Option<u64>,
}

/// The answer to an [`Acquire`].
#[derive(Debug, Clone, Copy, PartialEq, MessageResponse)]
pub enum Grant {
    /// A slot is reserved: call after `delay`. The slot holds `tokens` of the token pace
    /// (the tokens a call of this model typically uses), settled by the [`Report`].
    CallAfter {
        delay: Duration,
        tokens: u64,
        /// How long a call to this model typically takes: a call that cannot finish
        /// before its request's deadline is not worth starting.
        latency: Duration,
    },
    /// No slot yet (the pace is full for now): ask again after `after`, with `ticket`. At the
    /// current pace the call would start in about `starts_in` (the callers ahead in line
    /// first), and calls take about `latency`: a request that cannot finish by its deadline
    /// is answered now rather than when the deadline comes.
    AskAgainAfter {
        after: Duration,
        starts_in: Duration,
        latency: Duration,
        ticket: u64,
    },
    /// The call must not be made: the quota cannot take it (see [`Refusal`]).
    Refused(Refusal),
}

/// Why the throttle refuses a call outright.
#[derive(Debug, Clone, Copy, PartialEq)]
pub enum Refusal {
    /// The model's daily token quota ("Too many tokens per day") is spent: no call is made
    /// until a probe after `retry_after` succeeds.
    DailyQuota { retry_after: Duration },
    /// The call's reservation (input + `max_tokens`) is more than the model's tokens-per-minute
    /// quota can ever hold (`quota_tokens` a minute at most): Bedrock would throttle it forever.
    TooLarge { reserved: u64, quota_tokens: u64 },
}

/// Which of Bedrock's quotas refused a call: its ThrottlingException's message says.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum QuotaKind {
    /// Requests per minute (`Too many requests, ...`, and any other message).
    Requests,
    /// Tokens per minute (`Too many tokens, ...`).
    Tokens,
    /// Tokens per day (`Too many tokens per day, ...`).
    TokensPerDay,
}

impl QuotaKind {
    /// The quota a throttle's message names.
    pub fn of_message(message: &str) -> QuotaKind {
        let lower = message.to_ascii_lowercase();
        if lower.contains("tokens per day") || lower.contains("token per day") {
            QuotaKind::TokensPerDay
        } else if lower.contains("token") {
            QuotaKind::Tokens
        } else {
            QuotaKind::Requests
        }
    }
}

/// How a call went, as far as the throttle cares.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum CallOutcome {
    /// Bedrock answered, with the usage it reported.
    Success {
        input_tokens: u64,
        output_tokens: u64,
        /// Prompt-cache writes (`cache_creation_input_tokens`): charged like input.
        cache_write_tokens: u64,
    },
    /// ThrottlingException, the quota signal, naming the quota that refused.
    Throttled { quota: QuotaKind },
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
    /// A spent quota window holds calls back until then.
    pub resume_at: Option<Instant>,
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

/// The actor owning every model's throttle state.
pub struct ThrottleActor {
    /// Region, policy, schedule and pacing constants.
    config: ThrottleConfig,
    /// State per model id.
    models: HashMap<Arc<str>, ModelThrottle>,
    /// The last pace and resume time published to subscribers, per model.
    published: HashMap<Arc<str>, (Option<f64>, Option<Instant>)>,
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
            published: HashMap::new(),
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
        let ask = self
            .models
            .get_mut(model)
            .is_some_and(|state| state.must_ask(now, &self.config));
        self.gates.set(model, ask);
    }

    /// Tells subscribers if `model`'s pace changed.
    fn publish(&mut self, model: &Arc<str>) {
        let Some(state) = self.models.get_mut(model) else {
            return;
        };
        let Some(published) = self.published.get_mut(model) else {
            return;
        };
        let rate = state.calls_per_sec();
        let resume_at = state.resume_at();
        let changed = resume_at != published.1
            || match (rate, published.0) {
                (Some(new), Some(old)) => (new - old).abs() > old * 0.01,
                (new, old) => new.is_some() != old.is_some(),
            };
        if changed {
            *published = (rate, resume_at);
            let update = RateUpdate {
                model: model.clone(),
                calls_per_sec: rate,
                resume_at,
                latency: state.latency(),
            };
            for subscriber in &self.subscribers {
                subscriber.do_send(update.clone());
            }
        }
    }

    /// The model's state, created on first sight.
    fn state(&mut self, model: &Arc<str>, now: Instant) -> &mut ModelThrottle {
        self.published.entry(model.clone()).or_insert((None, None));
        let burndown = self.config.burndown_of(model);
        self.models
            .entry(model.clone())
            .or_insert_with(|| ModelThrottle::with_burndown(now, burndown))
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
        let config = self.config.clone();
        let state = self.state(&msg.model, now);
        let (grant, brake) = state.grant(
            now,
            msg.reserved_tokens,
            msg.ticket,
            &config,
            fastrand::f64(),
        );
        if !brake.is_zero() {
            log::info!(
                "Pre-emptive backoff due to shared throttling... waiting {:.2}s before calling {} ({} consecutive throttles)",
                brake.as_secs_f64(),
                msg.model,
                state.brake().consecutive()
            );
        }
        self.update_gate(&msg.model, now);
        grant
    }
}

impl Handler<Report> for ThrottleActor {
    type Result = ();

    fn handle(&mut self, msg: Report, _ctx: &mut Context<Self>) {
        let now = Instant::now();
        let config = self.config.clone();
        let model = &msg.model;
        let notes = self.state(model, now).report(
            now,
            msg.outcome,
            msg.latency,
            msg.granted_tokens,
            &config,
        );
        if notes.daily_spent {
            log::warn!(
                "{model}: Bedrock's daily token quota is spent (\"Too many tokens per day\"); refusing its requests with 429 until a probe succeeds"
            );
        }
        if let Some(was) = notes.brake_reset {
            log::info!(
                "Request succeeded, resetting shared throttle counter... ({model}, was {was} consecutive throttles)"
            );
        }
        for (lane, adjustment) in notes.adjustments {
            let unit = lane.unit();
            match adjustment {
                // The pacer's cut is the shared pre-emptive backoff: every caller of the
                // model now waits for its slot. The seed's wording leads the line.
                Adjustment::Cut { from, to } => log::info!(
                    "Pre-emptive backoff due to shared throttling... pacing {model} at {to:.2} {unit}/s (was {})",
                    from.map_or("unpaced".to_string(), |f| format!("{f:.2}"))
                ),
                Adjustment::Probe { from, to } => {
                    log::debug!("Pacing {model} up from {from:.2} to {to:.2} {unit}/s")
                }
                Adjustment::Unpaced { from } => log::info!(
                    "Stopped pacing {model} (was {from:.2} {unit}/s): nothing succeeded for a minute; the shared backoff spaces calls"
                ),
                Adjustment::Released { from } => log::info!(
                    "Stopped pacing {model} (was {from:.2} {unit}/s): demand has stayed under the pace with no throttle"
                ),
            }
        }
        self.publish(model);
        self.update_gate(model, now);
    }
}

impl Handler<Release> for ThrottleActor {
    type Result = ();

    fn handle(&mut self, msg: Release, _ctx: &mut Context<Self>) {
        let now = Instant::now();
        if let Some(state) = self.models.get_mut(&msg.model) {
            state.release(now, msg.granted_tokens);
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
        let config = &self.config;
        let mut out: Vec<ModelThrottleStatus> = self
            .models
            .iter_mut()
            .map(|(model, state)| {
                let delay = state.brake_delay(now, config);
                let (calls, throttled, succeeded) = state.counts();
                let (calls_floor, calls_ceiling) = state.quota_bounds(Lane::Calls);
                let (tokens_floor, tokens_ceiling) = state.quota_bounds(Lane::Tokens);
                let daily = state.daily();
                ModelThrottleStatus {
                    region: config.region.clone(),
                    model: model.to_string(),
                    policy: config.policy,
                    consecutive_throttles: state.brake().consecutive(),
                    current_delay_ms: delay.as_millis() as u64,
                    since_last_throttle_ms: state
                        .brake()
                        .last_throttle()
                        .map(|at| now.saturating_duration_since(at).as_millis() as u64),
                    pace: PaceStatus {
                        paced_calls_per_sec: state.paced_calls(),
                        paced_tokens_per_sec: state.paced_tokens(),
                        quota_floor_calls_per_sec: calls_floor,
                        quota_ceiling_calls_per_sec: calls_ceiling,
                        quota_floor_tokens_per_sec: tokens_floor,
                        quota_ceiling_tokens_per_sec: tokens_ceiling,
                    },
                    latency_ms: state.latency().as_millis() as u64,
                    calls,
                    throttled,
                    succeeded,
                    throttled_by: state.throttled_by(),
                    daily_quota_spent: daily.is_some(),
                    daily_quota_probe_in_ms: daily
                        .map(|d| d.probe_at.saturating_duration_since(now).as_millis() as u64),
                    burndown: state.burndown(),
                }
            })
            .collect();
        out.sort_by(|a, b| a.model.cmp(&b.model));
        MessageResult(out)
    }
}
