//! ThrottleActor: the one owner of throttle state, shared by every worker.
//!
//! Per (region, model) it keeps the seed's [`SharedBrake`]: while calls to a model are being
//! throttled, every worker waits a pre-emptive delay before calling it (1 s, 2 s, 4 s, ...,
//! 32 s), and a success or 60 s without a throttle resets it. Workers ask with [`Acquire`]
//! before each call and get a [`Grant`] at once; they sleep the granted delay themselves,
//! so this actor never sleeps. After the call they send a [`Report`].

use std::collections::HashMap;
use std::sync::Arc;
use std::time::Duration;

use actix::prelude::*;
use tokio::time::Instant;

use crate::backoff::{BackoffSchedule, SharedBrake};

/// Settings of the shared throttle.
#[derive(Debug, Clone, PartialEq)]
pub struct ThrottleConfig {
    /// Region half of the throttle key (quotas are per model and region).
    pub region: String,
    /// The seed's pre-emptive backoff schedule.
    pub schedule: BackoffSchedule,
}

/// Asks permission to call `model`; answered at once with the delay to wait first.
#[derive(Message, Debug, Clone)]
#[rtype(result = "Grant")]
pub struct Acquire {
    /// The model about to be called.
    pub model: Arc<str>,
    /// Tokens Bedrock will reserve for the call (input estimate + max_tokens).
    pub reserved_tokens: u64,
}

/// Permission to call after `delay`.
#[derive(Debug, Clone, Copy, PartialEq, MessageResponse)]
pub struct Grant {
    /// How long the caller waits before calling.
    pub delay: Duration,
}

/// How a call went, as far as the throttle cares.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum CallOutcome {
    /// Bedrock answered.
    Success {
        input_tokens: u64,
        output_tokens: u64,
    },
    /// ThrottlingException: the quota signal.
    Throttled,
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
}

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
    /// Throttles since the last success or quiet-window reset.
    pub consecutive_throttles: u32,
    /// Pre-emptive delay a call would get now (un-jittered), in milliseconds.
    pub current_delay_ms: u64,
    /// Time since the last throttle, if there was one.
    pub since_last_throttle_ms: Option<u64>,
    /// Calls granted so far.
    pub calls: u64,
    /// Calls that came back throttled.
    pub throttled: u64,
    /// Calls that succeeded.
    pub succeeded: u64,
}

/// Throttle state of one model.
#[derive(Debug, Default)]
struct ModelThrottle {
    /// The seed's shared consecutive-throttle brake.
    brake: SharedBrake,
    /// Grants given.
    calls: u64,
    /// Throttled reports.
    throttled: u64,
    /// Successful reports.
    succeeded: u64,
}

/// The actor owning every model's throttle state.
pub struct ThrottleActor {
    /// Region and schedule.
    config: ThrottleConfig,
    /// State per model id (the region is fixed per broker).
    models: HashMap<Arc<str>, ModelThrottle>,
}

impl ThrottleActor {
    /// A throttle with no history.
    pub fn new(config: ThrottleConfig) -> ThrottleActor {
        ThrottleActor {
            config,
            models: HashMap::new(),
        }
    }

    fn model(&mut self, model: &Arc<str>) -> &mut ModelThrottle {
        self.models.entry(model.clone()).or_default()
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
        let schedule = self.config.schedule;
        let now = Instant::now();
        let state = self.model(&msg.model);
        state.calls += 1;
        let base = state.brake.pre_call_delay(&schedule, now);
        if base.is_zero() {
            return Grant {
                delay: Duration::ZERO,
            };
        }
        let delay = schedule.jittered(base, fastrand::f64());
        log::info!(
            "Pre-emptive backoff due to shared throttling... waiting {:.2}s before calling {} ({} consecutive throttles)",
            delay.as_secs_f64(),
            msg.model,
            state.brake.consecutive()
        );
        Grant { delay }
    }
}

impl Handler<Report> for ThrottleActor {
    type Result = ();

    fn handle(&mut self, msg: Report, _ctx: &mut Context<Self>) {
        let now = Instant::now();
        let state = self.model(&msg.model);
        match msg.outcome {
            CallOutcome::Success { .. } => {
                state.succeeded += 1;
                if let Some(was) = state.brake.on_success() {
                    log::info!(
                        "Request succeeded, resetting shared throttle counter... ({}, was {} consecutive throttles)",
                        msg.model,
                        was
                    );
                }
            }
            CallOutcome::Throttled => {
                state.throttled += 1;
                state.brake.on_throttle(now);
            }
            CallOutcome::OtherFailure => {}
        }
    }
}

impl Handler<GetThrottleStatus> for ThrottleActor {
    type Result = MessageResult<GetThrottleStatus>;

    fn handle(&mut self, _msg: GetThrottleStatus, _ctx: &mut Context<Self>) -> Self::Result {
        let now = Instant::now();
        let schedule = self.config.schedule;
        let region = self.config.region.clone();
        let mut out: Vec<ModelThrottleStatus> = self
            .models
            .iter_mut()
            .map(|(model, state)| {
                let delay = state.brake.pre_call_delay(&schedule, now);
                ModelThrottleStatus {
                    region: region.clone(),
                    model: model.to_string(),
                    consecutive_throttles: state.brake.consecutive(),
                    current_delay_ms: delay.as_millis() as u64,
                    since_last_throttle_ms: state
                        .brake
                        .last_throttle()
                        .map(|at| now.saturating_duration_since(at).as_millis() as u64),
                    calls: state.calls,
                    throttled: state.throttled,
                    succeeded: state.succeeded,
                }
            })
            .collect();
        out.sort_by(|a, b| a.model.cmp(&b.model));
        MessageResult(out)
    }
}
