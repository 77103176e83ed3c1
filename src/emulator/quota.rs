//! The emulated account quotas. All are per model id and can be combined: a call must pass
//! every one that is configured.
//!
//! - [`Quota`], a token bucket in requests: it holds at most `burst` requests and refills at
//!   `requests_per_second`. A call takes one.
//! - [`WindowQuota`], windows in requests: at most `requests` calls per `window`. A fixed
//!   window is aligned to the start of the quota clock (see below): it resets at
//!   `t0 + k * window`, whenever the calls came. A sliding window admits a call if fewer than
//!   `requests` calls were admitted in the `window` before it.
//! - [`TokenWindowQuota`], the same two window shapes in model tokens with reservation: at
//!   most `tokens` per window, admission reserving `input_tokens + max_tokens` like the token
//!   bucket below, and a call's share settled to what it used when it ends.
//! - [`TokenQuota`], a token bucket in model tokens with reservation: it holds at most
//!   `burst_tokens` and refills at `tokens_per_minute / 60` per second. Admission reserves
//!   `input_tokens + max_tokens` (input counted like the reply counts it: `ceil(chars / 4)`
//!   over the system prompt and every message). A bucket holding less than the reservation
//!   throttles the call with [`TOO_MANY_TOKENS`]. A successful call gives back
//!   `max_tokens - output_tokens`; a call that fails after admission (injected fault, client
//!   gone) gives back `max_tokens` and keeps the input. Refunds are capped at the capacity.
//!   A call whose reservation is larger than the capacity can never pass: it is always
//!   throttled.
//! - `EmulatorConfig::quota_schedule`, `(offset, factor)` steps: from each offset on, every
//!   configured rate and capacity is multiplied by `factor` (absolute, not cumulative; 1 before
//!   the first step). Window `requests` scale to `floor(requests * factor)` (window `tokens`
//!   to `tokens * factor`); a token-bucket
//!   `burst` scaled below 1 acts as 1 unless the factor is 0 (which throttles everything).
//!   The factor is looked up from the elapsed time on each call (no timers); a refill uses the
//!   factor in force at the time of the call for the whole time since the bucket's last
//!   update, and a level above a shrunken capacity is clamped to it.
//!
//! The quota clock `t0` starts with the emulator and restarts on every config change and on
//! reset. Buckets start full (at the capacity in force when the model is first seen); they are
//! forgotten (so start full again) when any quota setting or the schedule changes, and on reset.
//!
//! All per-model state sits in one map under one mutex, held only for the arithmetic. A
//! throttled call takes nothing from any quota.

use std::collections::{HashMap, VecDeque};
use std::sync::Mutex;
use std::time::{Duration, Instant};

use serde::{Deserialize, Serialize};

use super::{lock, EmulatorConfig};

/// Message of the `ThrottlingException` given by the request quotas (and stray throttles).
pub(crate) const TOO_MANY_REQUESTS: &str = "Too many requests, please wait before trying again.";

/// Message of the `ThrottlingException` given by the token quota.
pub(crate) const TOO_MANY_TOKENS: &str = "Too many tokens, please wait before trying again.";

/// Message of the `ThrottlingException` given by the daily token quota.
pub(crate) const TOO_MANY_TOKENS_PER_DAY: &str =
    "Too many tokens per day, please wait before trying again.";

/// Token-bucket quota in requests applied per model id; a call takes one. A schedule factor
/// scales both fields (a scaled `burst` below 1 acts as 1, unless the factor is 0).
#[derive(Clone, Copy, Debug, PartialEq, Serialize, Deserialize)]
pub struct Quota {
    /// Refill rate in tokens (calls) per second. `<= 0` means no refill.
    pub requests_per_second: f64,
    /// Bucket capacity (the most calls allowed back to back). Values below 1 act as 1.
    pub burst: f64,
}

impl Quota {
    /// A quota with `burst` equal to the rate (at least 1).
    pub fn per_second(requests_per_second: f64) -> Quota {
        Quota {
            requests_per_second,
            burst: requests_per_second.max(1.0),
        }
    }

    fn capacity(&self) -> f64 {
        if self.burst.is_finite() {
            self.burst.max(1.0)
        } else {
            1.0
        }
    }

    fn rate(&self) -> f64 {
        non_negative(self.requests_per_second)
    }
}

/// Window quota in requests applied per model id: at most `requests` calls per `window`.
/// Fixed windows are aligned to the quota clock's start `t0` (emulator start, config change or
/// reset): they reset at `t0 + k * window`, whenever the calls came. A sliding window admits a
/// call while fewer than `requests` calls were admitted in the `window` before it. A schedule
/// factor scales `requests` to `floor(requests * factor)`.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct WindowQuota {
    /// Calls admitted per window (0 admits none).
    pub requests: u64,
    /// Window length ([`WindowQuota::DEFAULT_WINDOW`] unless chosen). Zero acts as 1 ns.
    pub window: Duration,
    /// Sliding (the last `window`) rather than fixed (aligned to the quota clock).
    pub sliding: bool,
}

impl WindowQuota {
    /// The usual window: one minute.
    pub const DEFAULT_WINDOW: Duration = Duration::from_secs(60);

    /// `requests` per fixed minute.
    pub fn per_minute(requests: u64) -> WindowQuota {
        WindowQuota {
            requests,
            window: WindowQuota::DEFAULT_WINDOW,
            sliding: false,
        }
    }

    /// `requests` in any 60 s.
    pub fn sliding_per_minute(requests: u64) -> WindowQuota {
        WindowQuota {
            sliding: true,
            ..WindowQuota::per_minute(requests)
        }
    }
}

/// Window quota in model tokens applied per model id: at most `tokens` per `window` (fixed or
/// sliding, as for [`WindowQuota`]). Admission reserves `input_tokens + max_tokens` in the
/// window; when the call ends its share is settled like the token bucket's (a success keeps
/// input + output tokens, a failure after admission keeps the input). A reservation larger
/// than `tokens` is always throttled ("Too many tokens"). A schedule factor scales `tokens`.
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct TokenWindowQuota {
    /// Tokens admitted per window.
    pub tokens: f64,
    /// Window length.
    pub window: Duration,
    /// Sliding (the last `window`) rather than fixed (aligned to the quota clock).
    pub sliding: bool,
}

impl TokenWindowQuota {
    /// `tokens` per fixed minute.
    pub fn per_minute(tokens: f64) -> TokenWindowQuota {
        TokenWindowQuota {
            tokens,
            window: WindowQuota::DEFAULT_WINDOW,
            sliding: false,
        }
    }

    /// `tokens` in any 60 s.
    pub fn sliding_per_minute(tokens: f64) -> TokenWindowQuota {
        TokenWindowQuota {
            sliding: true,
            ..TokenWindowQuota::per_minute(tokens)
        }
    }
}

/// Daily token quota (Bedrock's tokens per day), applied per model id: at most `tokens`
/// charged per fixed `window` aligned to the quota clock, calls in flight counting their
/// reservation (`input_tokens + max_tokens`) until they settle. A call that would pass it is
/// throttled with `Too many tokens per day, please wait before trying again.` A schedule
/// factor scales `tokens`.
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct TokenDayQuota {
    /// Tokens charged per day window.
    pub tokens: f64,
    /// The "day": a fixed window aligned to the quota clock (default 86,400 s; tests use seconds).
    pub window: Duration,
}

impl TokenDayQuota {
    /// A real day.
    pub const DAY: Duration = Duration::from_secs(86_400);

    /// `tokens` per day.
    pub fn per_day(tokens: f64) -> TokenDayQuota {
        TokenDayQuota {
            tokens,
            window: TokenDayQuota::DAY,
        }
    }
}

/// Tokens-per-minute quota with reservation, applied per model id: a bucket of `burst_tokens`
/// refilled at `tokens_per_minute / 60` per second.
///
/// Admission (after body validation) reserves `input_tokens + max_tokens`, input counted like
/// the reply counts it (`ceil(chars / 4)` over the system prompt and every message). With
/// fewer tokens in the bucket the call gets `ThrottlingException` `Too many tokens, please
/// wait before trying again.` and nothing is taken. A success gives back
/// `max_tokens - output_tokens`; a call failing after admission (injected fault, client gone)
/// gives back `max_tokens` and keeps the input; refunds are capped at the capacity. A call
/// whose reservation exceeds the capacity is always throttled.
#[derive(Clone, Copy, Debug, PartialEq, Serialize, Deserialize)]
pub struct TokenQuota {
    /// Refill rate in tokens per minute (`tokens_per_minute / 60` per second). `<= 0`: no refill.
    pub tokens_per_minute: f64,
    /// Bucket capacity in tokens. A call needing more than this is always throttled; `<= 0`
    /// throttles every call.
    pub burst_tokens: f64,
}

impl TokenQuota {
    /// A quota whose capacity is ten seconds' worth (`tokens_per_minute / 6`).
    pub fn per_minute(tokens_per_minute: f64) -> TokenQuota {
        TokenQuota {
            tokens_per_minute,
            burst_tokens: tokens_per_minute / 6.0,
        }
    }

    fn capacity(&self) -> f64 {
        non_negative(self.burst_tokens)
    }

    fn rate(&self) -> f64 {
        non_negative(self.tokens_per_minute) / 60.0
    }
}

fn non_negative(x: f64) -> f64 {
    if x.is_finite() {
        x.max(0.0)
    } else {
        0.0
    }
}

/// The factor in force `elapsed` after the quota clock started: the factor of the step with the
/// largest offset `<= elapsed` (the later one in the list on a tie), 1 before the first step.
/// A negative factor acts as 0, a non-finite one as 1.
pub(crate) fn factor_at(schedule: &[(Duration, f64)], elapsed: Duration) -> f64 {
    let mut best: Option<(Duration, f64)> = None;
    for &(at, factor) in schedule {
        if at <= elapsed && best.is_none_or(|(b, _)| at >= b) {
            best = Some((at, factor));
        }
    }
    match best {
        Some((_, f)) if f.is_finite() => f.max(0.0),
        _ => 1.0,
    }
}

/// Parses one quota-schedule step written `SECS=FACTOR` (`30=0.5`: from 30 s on, every quota
/// at half its rate): seconds may be fractional, both must be finite and `>= 0`. The
/// `--quota-schedule` flag of `bedrock-emulator` takes a comma-separated list of them.
pub fn parse_schedule_step(s: &str) -> Result<(Duration, f64), String> {
    let (secs, factor) = s
        .split_once('=')
        .ok_or_else(|| format!("expected SECS=FACTOR, got {s:?}"))?;
    let at = secs
        .trim()
        .parse::<f64>()
        .ok()
        .and_then(|x| Duration::try_from_secs_f64(x).ok())
        .ok_or_else(|| format!("bad offset {secs:?}: expected seconds >= 0"))?;
    let factor = factor
        .trim()
        .parse::<f64>()
        .ok()
        .filter(|f| f.is_finite() && *f >= 0.0)
        .ok_or_else(|| format!("bad factor {factor:?}: expected a number >= 0"))?;
    Ok((at, factor))
}

/// Offset from the clock's start of the window that contains `elapsed`: `k * window`.
pub(crate) fn window_offset(elapsed: Duration, window: Duration) -> Duration {
    let w = window.as_nanos().max(1);
    let start = elapsed.as_nanos() / w * w;
    Duration::from_nanos(u64::try_from(start).unwrap_or(u64::MAX))
}

/// What the token quota reserves for a call.
pub(crate) fn reservation(input_tokens: u64, max_tokens: u64) -> f64 {
    input_tokens as f64 + max_tokens as f64
}

/// What a successful call is charged in the token quotas: `input + cache_write + output x
/// burndown` (the emulator writes no cache).
pub(crate) fn charge(input_tokens: u64, output_tokens: u64, burndown: f64) -> f64 {
    input_tokens as f64 + output_tokens as f64 * burndown
}

/// How much a successful call's charge differs from its reservation (`input + max_tokens`):
/// negative is given back, positive taken.
pub(crate) fn success_delta(max_tokens: u64, output_tokens: u64, burndown: f64) -> f64 {
    output_tokens as f64 * burndown - max_tokens as f64
}

/// Refill rate and capacity of a bucket at one moment.
#[derive(Clone, Copy, Debug, PartialEq)]
struct Rate {
    per_sec: f64,
    capacity: f64,
}

/// A window's limit at one moment: how much it admits, how long it is, whether it slides.
#[derive(Clone, Copy, Debug, PartialEq)]
struct WindowLimit {
    limit: f64,
    window: Duration,
    sliding: bool,
}

/// The limits in force at one moment: the configured quotas scaled by the schedule's factor.
#[derive(Clone, Copy, Debug, PartialEq)]
struct Limits {
    requests: Option<Rate>,
    window: Option<WindowLimit>,
    tokens: Option<Rate>,
    token_window: Option<WindowLimit>,
    day: Option<WindowLimit>,
}

impl Limits {
    fn scaled(config: &EmulatorConfig, factor: f64) -> Limits {
        Limits {
            requests: config.quota.map(|q| Rate {
                per_sec: q.rate() * factor,
                capacity: if factor > 0.0 {
                    (q.capacity() * factor).max(1.0)
                } else {
                    0.0
                },
            }),
            window: config.window_quota.map(|w| WindowLimit {
                limit: if factor == 1.0 {
                    w.requests as f64
                } else {
                    (w.requests as f64 * factor).floor()
                },
                window: w.window,
                sliding: w.sliding,
            }),
            tokens: config.token_quota.map(|t| Rate {
                per_sec: t.rate() * factor,
                capacity: t.capacity() * factor,
            }),
            token_window: config.token_window_quota.map(|w| WindowLimit {
                limit: non_negative(w.tokens) * factor,
                window: w.window,
                sliding: w.sliding,
            }),
            day: config.token_day_quota.map(|d| WindowLimit {
                limit: non_negative(d.tokens) * factor,
                window: d.window,
                sliding: false,
            }),
        }
    }
}

#[derive(Clone, Copy, Debug)]
struct Bucket {
    level: f64,
    last: Instant,
}

impl Bucket {
    /// A full bucket: the first refill clamps the level to the capacity then in force.
    fn full(now: Instant) -> Bucket {
        Bucket {
            level: f64::INFINITY,
            last: now,
        }
    }

    fn refill(&mut self, rate: Rate, now: Instant) {
        if now > self.last {
            self.level += (now - self.last).as_secs_f64() * rate.per_sec;
            self.last = now;
        }
        self.level = self.level.min(rate.capacity);
    }
}

/// What a window has admitted: one entry per admitted call, `(id, when, amount)` (amount 1
/// for a request window, the call's tokens for a token window), oldest first. A fixed window
/// keeps the entries since its start; a sliding one those of the last `window`.
#[derive(Clone, Debug)]
struct Ledger {
    /// Start of the current fixed window (unused when sliding).
    start: Instant,
    /// Admitted calls still counted.
    entries: VecDeque<(u64, Instant, f64)>,
    /// Sum of the entries' amounts.
    used: f64,
}

impl Ledger {
    fn new(epoch: Instant) -> Ledger {
        Ledger {
            start: epoch,
            entries: VecDeque::new(),
            used: 0.0,
        }
    }

    /// Drops what no longer counts at `now`: entries before the fixed window's start (a new
    /// window began), or older than the sliding window.
    fn refresh(&mut self, limit: &WindowLimit, epoch: Instant, now: Instant) {
        let from = if limit.sliding {
            now.checked_sub(limit.window).unwrap_or(epoch)
        } else {
            let start = epoch + window_offset(now.saturating_duration_since(epoch), limit.window);
            if start != self.start {
                self.start = start;
            }
            start
        };
        let keep_strictly_after = limit.sliding;
        while let Some(&(_, at, amount)) = self.entries.front() {
            let expired = if keep_strictly_after {
                at <= from
            } else {
                at < from
            };
            if !expired {
                break;
            }
            self.entries.pop_front();
            self.used -= amount;
        }
        if self.entries.is_empty() {
            self.used = 0.0;
        }
    }

    fn room(&self, limit: &WindowLimit, amount: f64) -> bool {
        self.used + amount <= limit.limit + 1e-9
    }

    fn record(&mut self, id: u64, now: Instant, amount: f64) {
        self.entries.push_back((id, now, amount));
        self.used += amount;
    }

    /// Changes entry `id` by `delta` (never below 0) if it still counts.
    fn adjust(&mut self, id: u64, delta: f64) {
        if let Ok(i) = self.entries.binary_search_by_key(&id, |(e, _, _)| *e) {
            let entry = &mut self.entries[i];
            let new = (entry.2 + delta).max(0.0);
            self.used = (self.used + new - entry.2).max(0.0);
            entry.2 = new;
        }
    }
}

/// Why admission failed.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum Throttle {
    /// The request bucket or the window is out ("Too many requests").
    Requests,
    /// The token bucket or token window holds less than the reservation ([`TOO_MANY_TOKENS`]).
    Tokens,
    /// The daily token quota cannot hold the reservation ([`TOO_MANY_TOKENS_PER_DAY`]).
    Daily,
}

impl Throttle {
    /// The `ThrottlingException` message Bedrock gives for this quota.
    pub(crate) fn message(self) -> &'static str {
        match self {
            Throttle::Requests => TOO_MANY_REQUESTS,
            Throttle::Tokens => TOO_MANY_TOKENS,
            Throttle::Daily => TOO_MANY_TOKENS_PER_DAY,
        }
    }
}

/// One model id's quota state (each part used only if its quota is configured).
#[derive(Clone, Debug)]
struct ModelState {
    requests: Bucket,
    window: Ledger,
    tokens: Bucket,
    token_window: Ledger,
    day: Ledger,
    /// Id of the next admitted call (ledger entries are found by it when settled).
    next_id: u64,
}

impl ModelState {
    fn new(epoch: Instant, now: Instant) -> ModelState {
        ModelState {
            requests: Bucket::full(now),
            window: Ledger::new(epoch),
            tokens: Bucket::full(now),
            token_window: Ledger::new(epoch),
            day: Ledger::new(epoch),
            next_id: 0,
        }
    }

    /// Brings the state to `now`: refills the buckets, forgets what the windows no longer count.
    fn refresh(&mut self, limits: &Limits, epoch: Instant, now: Instant) {
        if let Some(rate) = limits.requests {
            self.requests.refill(rate, now);
        }
        if let Some(window) = limits.window {
            self.window.refresh(&window, epoch, now);
        }
        if let Some(rate) = limits.tokens {
            self.tokens.refill(rate, now);
        }
        if let Some(window) = limits.token_window {
            self.token_window.refresh(&window, epoch, now);
        }
        if let Some(day) = limits.day {
            self.day.refresh(&day, epoch, now);
        }
    }

    /// Would the request quotas (bucket and window) admit one more call?
    fn requests_ok(&self, limits: &Limits) -> bool {
        limits.requests.is_none_or(|_| self.requests.level >= 1.0)
            && limits.window.is_none_or(|w| self.window.room(&w, 1.0))
    }

    /// Takes one call from the request quotas and `reserve` tokens from the token quotas, or
    /// nothing. Returns the call's id (to settle its tokens later).
    fn admit(&mut self, limits: &Limits, reserve: f64, now: Instant) -> Result<u64, Throttle> {
        if !self.requests_ok(limits) {
            return Err(Throttle::Requests);
        }
        if limits.tokens.is_some() && self.tokens.level < reserve {
            return Err(Throttle::Tokens);
        }
        if limits
            .token_window
            .is_some_and(|w| !self.token_window.room(&w, reserve))
        {
            return Err(Throttle::Tokens);
        }
        if limits.day.is_some_and(|d| !self.day.room(&d, reserve)) {
            return Err(Throttle::Daily);
        }
        let id = self.next_id;
        self.next_id += 1;
        if limits.requests.is_some() {
            self.requests.level -= 1.0;
        }
        if limits.window.is_some() {
            self.window.record(id, now, 1.0);
        }
        if limits.tokens.is_some() {
            self.tokens.level -= reserve;
        }
        if limits.token_window.is_some() {
            self.token_window.record(id, now, reserve);
        }
        if limits.day.is_some() {
            self.day.record(id, now, reserve);
        }
        Ok(id)
    }

    /// Settles call `id`: takes `delta` more tokens from the token quotas (gives back `-delta`
    /// when negative). The bucket is capped at its capacity and may go below zero; a window
    /// changes only while it still counts the call.
    fn settle(&mut self, limits: &Limits, id: u64, delta: f64) {
        if let Some(rate) = limits.tokens {
            self.tokens.level = (self.tokens.level - delta).min(rate.capacity);
        }
        if limits.token_window.is_some() {
            self.token_window.adjust(id, delta);
        }
        if limits.day.is_some() {
            self.day.adjust(id, delta);
        }
    }
}

#[derive(Debug)]
struct State {
    /// `t0` of the quota clock (windows and schedule).
    epoch: Instant,
    models: HashMap<String, ModelState>,
}

/// Every model's quota state, keyed by decoded model id.
#[derive(Debug)]
pub(crate) struct Quotas {
    state: Mutex<State>,
}

impl Default for Quotas {
    fn default() -> Quotas {
        Quotas {
            state: Mutex::new(State {
                epoch: Instant::now(),
                models: HashMap::new(),
            }),
        }
    }
}

impl Quotas {
    /// Restarts the quota clock; with `forget`, every bucket starts full again.
    pub(crate) fn restart(&self, forget: bool) {
        let mut state = lock(&self.state);
        state.epoch = Instant::now();
        if forget {
            state.models.clear();
        }
    }

    /// The schedule factor in force now.
    pub(crate) fn factor(&self, config: &EmulatorConfig) -> f64 {
        let epoch = lock(&self.state).epoch;
        config.quota_factor_at(epoch.elapsed())
    }

    /// Runs `f` on `model`'s state brought up to now, under the lock.
    fn with_model<R>(
        &self,
        model: &str,
        config: &EmulatorConfig,
        f: impl FnOnce(&mut ModelState, &Limits) -> R,
    ) -> R {
        let mut guard = lock(&self.state);
        let State { epoch, models } = &mut *guard;
        let epoch = *epoch;
        let now = Instant::now();
        let limits = Limits::scaled(config, config.quota_factor_at(now - epoch));
        if let Some(state) = models.get_mut(model) {
            state.refresh(&limits, epoch, now);
            return f(state, &limits);
        }
        let state = models
            .entry(model.to_owned())
            .or_insert_with(|| ModelState::new(epoch, now));
        state.refresh(&limits, epoch, now);
        f(state, &limits)
    }

    /// Would the request quotas admit a call to `model` now? Takes nothing.
    pub(crate) fn has_room(&self, model: &str, config: &EmulatorConfig) -> bool {
        self.with_model(model, config, |s, l| s.requests_ok(l))
    }

    /// Admits a call to `model`: takes one request from the request quotas and `reserve`
    /// tokens from the token quotas, all or nothing. Returns the call's id in the quota state.
    pub(crate) fn admit(
        &self,
        model: &str,
        config: &EmulatorConfig,
        reserve: f64,
    ) -> Result<u64, Throttle> {
        let now = Instant::now();
        self.with_model(model, config, |s, l| s.admit(l, reserve, now))
    }

    /// Settles call `id` of `model`: takes `delta` more tokens from its token quotas, or gives
    /// back `-delta` (the bucket capped at its capacity, possibly below zero after a take; a
    /// window only while the call still counts in it).
    pub(crate) fn settle(&self, model: &str, config: &EmulatorConfig, id: u64, delta: f64) {
        if delta != 0.0 && config.has_token_quota() {
            self.with_model(model, config, |s, l| s.settle(l, id, delta));
        }
    }
}

/// What the token quotas hold for an admitted call: its id in the quota state, the
/// `max_tokens` reserved beyond its input, and the burndown its output is charged at.
#[derive(Clone, Copy, Debug, PartialEq)]
pub(crate) struct Held {
    /// The call's id (see [`Quotas::admit`]).
    pub(crate) id: u64,
    /// Reserved beyond the input: replaced by `output x burndown` on success, given back on
    /// failure.
    pub(crate) max_tokens: u64,
    /// Quota tokens per output token.
    pub(crate) burndown: f64,
}

impl Held {
    /// The settlement of a success with `output_tokens` (see [`success_delta`]).
    pub(crate) fn success(&self, output_tokens: u64) -> f64 {
        success_delta(self.max_tokens, output_tokens, self.burndown)
    }

    /// The settlement of a failure after admission: `max_tokens` given back, the input kept.
    pub(crate) fn failure(&self) -> f64 {
        -(self.max_tokens as f64)
    }
}

/// A token reservation held by an admitted call. [`Reservation::settle`] charges a success
/// `input + output x burndown`; dropping it unsettled (a fault, or the client went away)
/// gives back all of `max_tokens`.
pub(crate) struct Reservation<'a> {
    quotas: &'a Quotas,
    model: &'a str,
    config: &'a EmulatorConfig,
    held: Held,
    open: bool,
}

impl<'a> Reservation<'a> {
    pub(crate) fn new(
        quotas: &'a Quotas,
        model: &'a str,
        config: &'a EmulatorConfig,
        held: Held,
    ) -> Reservation<'a> {
        Reservation {
            quotas,
            model,
            config,
            held,
            open: true,
        }
    }

    /// The call succeeded with `output_tokens`: charged `input + output x burndown`.
    pub(crate) fn settle(mut self, output_tokens: u64) {
        self.open = false;
        let delta = self.held.success(output_tokens);
        self.quotas
            .settle(self.model, self.config, self.held.id, delta);
    }
}

impl Drop for Reservation<'_> {
    fn drop(&mut self) {
        if self.open {
            self.quotas
                .settle(self.model, self.config, self.held.id, self.held.failure());
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn ms(n: u64) -> Duration {
        Duration::from_millis(n)
    }

    fn limits(config: &EmulatorConfig, elapsed: Duration) -> Limits {
        Limits::scaled(config, config.quota_factor_at(elapsed))
    }

    /// A model's state on a clock started now: the start, and the state.
    fn started() -> (Instant, ModelState) {
        let t0 = Instant::now();
        (t0, ModelState::new(t0, t0))
    }

    /// A window quota of 2 calls per second, fixed or sliding.
    fn two_calls_a_second(sliding: bool) -> EmulatorConfig {
        EmulatorConfig {
            window_quota: Some(WindowQuota {
                requests: 2,
                window: ms(1000),
                sliding,
            }),
            ..EmulatorConfig::default()
        }
    }

    /// Refreshes at `t0 + at` under the limits in force then, and tries to admit.
    fn admit_at(
        s: &mut ModelState,
        c: &EmulatorConfig,
        t0: Instant,
        at: Duration,
        reserve: f64,
    ) -> Result<(), Throttle> {
        let l = limits(c, at);
        s.refresh(&l, t0, t0 + at);
        s.admit(&l, reserve, t0 + at).map(|_| ())
    }

    #[test]
    fn burst_then_refill() {
        let c = EmulatorConfig {
            quota: Some(Quota {
                requests_per_second: 10.0,
                burst: 2.0,
            }),
            ..EmulatorConfig::default()
        };
        let (t0, mut s) = started();
        let z = Duration::ZERO;
        assert_eq!(admit_at(&mut s, &c, t0, z, 0.0), Ok(()));
        assert_eq!(admit_at(&mut s, &c, t0, z, 0.0), Ok(()));
        assert_eq!(admit_at(&mut s, &c, t0, z, 0.0), Err(Throttle::Requests));
        assert_eq!(
            admit_at(&mut s, &c, t0, ms(50), 0.0),
            Err(Throttle::Requests)
        );
        assert_eq!(admit_at(&mut s, &c, t0, ms(101), 0.0), Ok(()));
        // Capacity caps the refill.
        let later = Duration::from_secs(60);
        assert_eq!(admit_at(&mut s, &c, t0, later, 0.0), Ok(()));
        assert_eq!(admit_at(&mut s, &c, t0, later, 0.0), Ok(()));
        assert_eq!(
            admit_at(&mut s, &c, t0, later, 0.0),
            Err(Throttle::Requests)
        );
    }

    #[test]
    fn tiny_burst_acts_as_one() {
        let c = EmulatorConfig {
            quota: Some(Quota {
                requests_per_second: 0.0,
                burst: 0.1,
            }),
            ..EmulatorConfig::default()
        };
        let (t0, mut s) = started();
        assert_eq!(admit_at(&mut s, &c, t0, Duration::ZERO, 0.0), Ok(()));
        assert_eq!(
            admit_at(&mut s, &c, t0, Duration::from_secs(100), 0.0),
            Err(Throttle::Requests)
        );
    }

    #[test]
    fn windows_align_to_the_clock_start() {
        assert_eq!(window_offset(ms(0), ms(1000)), ms(0));
        assert_eq!(window_offset(ms(999), ms(1000)), ms(0));
        assert_eq!(window_offset(ms(1000), ms(1000)), ms(1000));
        assert_eq!(window_offset(ms(2500), ms(1000)), ms(2000));
        assert_eq!(window_offset(ms(7), Duration::ZERO), ms(7));

        let c = two_calls_a_second(false);
        let (t0, mut s) = started();
        // First call late in window 0: the window still ends at t0 + 1 s, not 1 s later.
        assert_eq!(admit_at(&mut s, &c, t0, ms(900), 0.0), Ok(()));
        assert_eq!(admit_at(&mut s, &c, t0, ms(950), 0.0), Ok(()));
        assert_eq!(
            admit_at(&mut s, &c, t0, ms(999), 0.0),
            Err(Throttle::Requests)
        );
        assert_eq!(admit_at(&mut s, &c, t0, ms(1000), 0.0), Ok(()));
        assert_eq!(admit_at(&mut s, &c, t0, ms(1999), 0.0), Ok(()));
        assert_eq!(
            admit_at(&mut s, &c, t0, ms(1999), 0.0),
            Err(Throttle::Requests)
        );
        // Skipping windows: a fresh count.
        assert_eq!(admit_at(&mut s, &c, t0, ms(5400), 0.0), Ok(()));
        // A restarted clock (new epoch) starts a new window at once.
        let t1 = t0 + ms(5500);
        let l = limits(&c, Duration::ZERO);
        s.refresh(&l, t1, t1);
        assert_eq!(s.window.used, 0.0);
        assert_eq!(s.window.start, t1);
    }

    #[test]
    fn reservation_and_refunds() {
        assert_eq!(reservation(3, 100), 103.0);
        assert_eq!(success_delta(100, 13, 1.0), -87.0);
        assert_eq!(success_delta(100, 13, 5.0), -35.0);
        assert_eq!(success_delta(5, 9, 1.0), 4.0);
        assert_eq!(charge(3, 13, 5.0), 68.0);

        // 60 tokens/min = 1 token/s, capacity 300.
        let c = EmulatorConfig {
            token_quota: Some(TokenQuota {
                tokens_per_minute: 60.0,
                burst_tokens: 300.0,
            }),
            ..EmulatorConfig::default()
        };
        let (t0, mut s) = started();
        let z = Duration::ZERO;
        let l = limits(&c, z);
        // Larger than the capacity: never passes, takes nothing.
        assert_eq!(admit_at(&mut s, &c, t0, z, 301.0), Err(Throttle::Tokens));
        assert_eq!(s.tokens.level, 300.0);
        // 1 input + 250 max.
        assert_eq!(admit_at(&mut s, &c, t0, z, reservation(1, 250)), Ok(()));
        assert_eq!(s.tokens.level, 49.0);
        assert_eq!(
            admit_at(&mut s, &c, t0, z, reservation(1, 250)),
            Err(Throttle::Tokens)
        );
        assert_eq!(s.tokens.level, 49.0, "a throttle takes nothing");
        // Success with 13 output tokens gives back 237.
        s.settle(&l, 0, success_delta(250, 13, 1.0));
        assert_eq!(s.tokens.level, 286.0);
        assert_eq!(admit_at(&mut s, &c, t0, z, reservation(1, 250)), Ok(()));
        // A failed call gives back max_tokens and keeps the input.
        s.settle(&l, 0, -250.0);
        assert_eq!(s.tokens.level, 285.0);
        // Refill at 1 token/s, and refunds are capped at the capacity.
        assert_eq!(
            admit_at(&mut s, &c, t0, ms(10_000), 296.0),
            Err(Throttle::Tokens)
        );
        assert_eq!(s.tokens.level, 295.0);
        s.settle(&l, 0, -1000.0);
        assert_eq!(s.tokens.level, 300.0);
    }

    #[test]
    fn all_quotas_must_pass_and_a_throttle_takes_nothing() {
        let c = EmulatorConfig {
            quota: Some(Quota {
                requests_per_second: 0.0,
                burst: 5.0,
            }),
            window_quota: Some(WindowQuota::per_minute(3)),
            token_quota: Some(TokenQuota {
                tokens_per_minute: 0.0,
                burst_tokens: 100.0,
            }),
            ..EmulatorConfig::default()
        };
        let (t0, mut s) = started();
        let z = Duration::ZERO;
        assert_eq!(admit_at(&mut s, &c, t0, z, 200.0), Err(Throttle::Tokens));
        assert_eq!((s.requests.level, s.window.used), (5.0, 0.0));
        for _ in 0..3 {
            assert_eq!(admit_at(&mut s, &c, t0, z, 10.0), Ok(()));
        }
        // The window is out before the bucket; the tokens are kept.
        assert_eq!(admit_at(&mut s, &c, t0, z, 10.0), Err(Throttle::Requests));
        assert_eq!(
            (s.requests.level, s.window.used, s.tokens.level),
            (2.0, 3.0, 70.0)
        );
    }

    #[test]
    fn schedule_steps_parse() {
        assert_eq!(
            parse_schedule_step("30=0.5"),
            Ok((Duration::from_secs(30), 0.5))
        );
        assert_eq!(parse_schedule_step(" 1.5 = 1 "), Ok((ms(1500), 1.0)));
        assert_eq!(parse_schedule_step("0=0"), Ok((Duration::ZERO, 0.0)));
        for bad in ["30", "x=1", "30=y", "-1=1", "30=-0.5", "30=inf", "nan=1"] {
            assert!(parse_schedule_step(bad).is_err(), "{bad}");
        }
    }

    #[test]
    fn schedule_factor_lookup() {
        let s = [
            (Duration::from_secs(30), 0.5),
            (Duration::from_secs(60), 1.0),
        ];
        assert_eq!(factor_at(&[], Duration::from_secs(1000)), 1.0);
        assert_eq!(factor_at(&s, Duration::ZERO), 1.0);
        assert_eq!(factor_at(&s, ms(29_999)), 1.0);
        assert_eq!(factor_at(&s, Duration::from_secs(30)), 0.5);
        assert_eq!(factor_at(&s, ms(59_999)), 0.5);
        assert_eq!(factor_at(&s, Duration::from_secs(60)), 1.0);
        assert_eq!(factor_at(&s, Duration::from_secs(3600)), 1.0);
        // Unsorted steps, ties (the later one wins), odd factors.
        let odd = [
            (Duration::from_secs(60), 2.0),
            (Duration::ZERO, 0.25),
            (Duration::from_secs(60), 3.0),
            (Duration::from_secs(90), -1.0),
            (Duration::from_secs(120), f64::NAN),
        ];
        assert_eq!(factor_at(&odd, ms(1)), 0.25);
        assert_eq!(factor_at(&odd, Duration::from_secs(61)), 3.0);
        assert_eq!(factor_at(&odd, Duration::from_secs(91)), 0.0);
        assert_eq!(factor_at(&odd, Duration::from_secs(121)), 1.0);
    }

    #[test]
    fn schedule_scales_every_quota_and_clamps_levels() {
        let c = EmulatorConfig {
            quota: Some(Quota {
                requests_per_second: 1.0,
                burst: 4.0,
            }),
            window_quota: Some(WindowQuota {
                requests: 5,
                window: Duration::from_secs(10),
                sliding: false,
            }),
            token_quota: Some(TokenQuota {
                tokens_per_minute: 600.0,
                burst_tokens: 100.0,
            }),
            quota_schedule: vec![(ms(300), 0.5), (ms(20_000), 1.0), (ms(30_000), 0.0)],
            ..EmulatorConfig::default()
        };
        let before = limits(&c, Duration::ZERO);
        assert_eq!(
            before.requests,
            Some(Rate {
                per_sec: 1.0,
                capacity: 4.0
            })
        );
        assert_eq!(
            before.window.map(|w| (w.limit, w.window)),
            Some((5.0, Duration::from_secs(10)))
        );
        assert_eq!(
            before.tokens,
            Some(Rate {
                per_sec: 10.0,
                capacity: 100.0
            })
        );
        let halved = limits(&c, ms(300));
        assert_eq!(
            halved.requests,
            Some(Rate {
                per_sec: 0.5,
                capacity: 2.0
            })
        );
        assert_eq!(
            halved.window.map(|w| (w.limit, w.window)),
            Some((2.0, Duration::from_secs(10))),
            "floor"
        );
        assert_eq!(
            halved.tokens,
            Some(Rate {
                per_sec: 5.0,
                capacity: 50.0
            })
        );
        let off = limits(&c, ms(30_000));
        assert_eq!(off.requests.map(|r| r.capacity), Some(0.0));
        assert_eq!(off.window.map(|w| w.limit), Some(0.0));

        // Levels above a shrunken capacity are clamped.
        let (t0, mut s) = started();
        assert_eq!(admit_at(&mut s, &c, t0, Duration::ZERO, 10.0), Ok(()));
        assert_eq!((s.requests.level, s.tokens.level), (3.0, 90.0));
        let l = limits(&c, ms(300));
        s.refresh(&l, t0, t0 + ms(300));
        assert_eq!((s.requests.level, s.tokens.level), (2.0, 50.0));
        // Growing back does not jump the level; it refills at the new rate.
        let l = limits(&c, ms(20_000));
        s.refresh(&l, t0, t0 + ms(20_000));
        assert_eq!((s.requests.level, s.tokens.level), (4.0, 100.0));
        // Factor 0 throttles everything.
        assert_eq!(
            admit_at(&mut s, &c, t0, ms(30_000), 1.0),
            Err(Throttle::Requests)
        );
    }

    #[test]
    fn quotas_map_admits_refunds_and_forgets() {
        let c = EmulatorConfig {
            token_quota: Some(TokenQuota {
                tokens_per_minute: 0.0,
                burst_tokens: 100.0,
            }),
            ..EmulatorConfig::default()
        };
        let q = Quotas::default();
        let ok = |r: Result<u64, Throttle>| r.map(|_| ());
        assert!(q.has_room("m", &c));
        let first = q.admit("m", &c, 80.0).unwrap();
        assert_eq!(ok(q.admit("m", &c, 80.0)), Err(Throttle::Tokens));
        assert_eq!(ok(q.admit("other", &c, 80.0)), Ok(()), "per model id");
        {
            let held = Held {
                id: first,
                max_tokens: 70,
                burndown: 1.0,
            };
            let r = Reservation::new(&q, "m", &c, held);
            r.settle(10); // gives back 60 -> 80
        }
        let second = q.admit("m", &c, 80.0).unwrap();
        {
            let held = Held {
                id: second,
                max_tokens: 50,
                burndown: 1.0,
            };
            let _unsettled = Reservation::new(&q, "m", &c, held);
        } // dropped: gives back 50
        assert_eq!(ok(q.admit("m", &c, 60.0)), Err(Throttle::Tokens));
        assert_eq!(ok(q.admit("m", &c, 50.0)), Ok(()));
        q.restart(false);
        assert_eq!(ok(q.admit("m", &c, 1.0)), Err(Throttle::Tokens), "kept");
        q.restart(true);
        assert_eq!(ok(q.admit("m", &c, 100.0)), Ok(()), "full again");
        assert_eq!(q.factor(&c), 1.0);
    }

    #[test]
    fn sliding_windows_count_the_last_window_whatever_its_alignment() {
        let c = two_calls_a_second(true);
        let (t0, mut s) = started();
        assert_eq!(admit_at(&mut s, &c, t0, ms(900), 0.0), Ok(()));
        assert_eq!(admit_at(&mut s, &c, t0, ms(950), 0.0), Ok(()));
        // A fixed window would reset at 1 s; a sliding one waits until 1.9 s.
        assert_eq!(
            admit_at(&mut s, &c, t0, ms(1500), 0.0),
            Err(Throttle::Requests)
        );
        assert_eq!(
            admit_at(&mut s, &c, t0, ms(1899), 0.0),
            Err(Throttle::Requests),
            "the call at 0.9 s counts until 1.9 s"
        );
        assert_eq!(admit_at(&mut s, &c, t0, ms(1900), 0.0), Ok(()));
        assert_eq!(
            admit_at(&mut s, &c, t0, ms(1940), 0.0),
            Err(Throttle::Requests)
        );
        assert_eq!(admit_at(&mut s, &c, t0, ms(1951), 0.0), Ok(()));
        // The admitted pattern repeats a window later.
        assert_eq!(
            admit_at(&mut s, &c, t0, ms(2800), 0.0),
            Err(Throttle::Requests)
        );
        assert_eq!(admit_at(&mut s, &c, t0, ms(2900), 0.0), Ok(()));
    }

    #[test]
    fn token_windows_reserve_then_settle_to_what_calls_used() {
        for sliding in [false, true] {
            let c = EmulatorConfig {
                token_window_quota: Some(TokenWindowQuota {
                    tokens: 1000.0,
                    window: ms(1000),
                    sliding,
                }),
                ..EmulatorConfig::default()
            };
            let (t0, mut s) = started();
            let l = limits(&c, Duration::ZERO);
            s.refresh(&l, t0, t0);
            // Larger than the window's tokens: never passes.
            assert_eq!(s.admit(&l, 1001.0, t0), Err(Throttle::Tokens));
            let a = s.admit(&l, reservation(10, 590), t0).unwrap();
            assert_eq!(s.admit(&l, 600.0, t0), Err(Throttle::Tokens));
            // The first call used 10 + 40: its share drops to 50, so 600 more fit.
            s.settle(&l, a, success_delta(590, 40, 1.0));
            assert_eq!(s.token_window.used, 50.0);
            let b = s.admit(&l, 600.0, t0 + ms(100)).unwrap();
            // A failed call keeps its input: give back max_tokens only.
            s.settle(&l, b, -590.0);
            assert_eq!(s.token_window.used, 60.0);
            // At 1.05 s the fixed window has reset; the sliding one still counts the call at
            // 0.1 s (10 tokens) but not the one at 0 s.
            s.refresh(&l, t0, t0 + ms(1050));
            assert_eq!(s.token_window.used, if sliding { 10.0 } else { 0.0 });
            // Settling a call the window no longer counts changes nothing.
            s.settle(&l, a, -10.0);
            assert_eq!(s.token_window.used, if sliding { 10.0 } else { 0.0 });
        }
    }

    #[test]
    fn schedule_scales_window_tokens() {
        let c = EmulatorConfig {
            token_window_quota: Some(TokenWindowQuota::sliding_per_minute(1000.0)),
            quota_schedule: vec![(ms(10), 0.5)],
            ..EmulatorConfig::default()
        };
        assert_eq!(
            limits(&c, ms(10)).token_window.map(|w| w.limit),
            Some(500.0)
        );
    }
}
