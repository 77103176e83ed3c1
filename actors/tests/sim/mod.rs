//! A virtual-time model of the broker in front of a Bedrock quota, driving the real throttle
//! code: [`actors::actor::throttle::model::ModelThrottle`] (the pacer's lanes and the seed brake), the
//! retry policy's pauses ([`actors::policy::retry`]) and the queue's admission, dispatch cap and
//! shedding ([`actors::actor::supervisor::queue`]). Time is simulated (f64 seconds), so minutes of load run in
//! milliseconds and every run is reproducible from its seed.
//!
//! The world: open-loop arrivals at `k x Q`; each request has a timeout and a retry budget;
//! the queue admits it if, at its model's pace (less the admission headroom), its call can
//! start in time; a worker asks the throttle for a slot (unless the model is neither paced
//! nor braked and its last call was not throttled, as the real worker does), sleeps the
//! granted delay and calls; the quota answers (a throttle in a few ms, a success after the
//! call latency); throttled requests retry after the retry policy's pause. Quota shapes: a
//! token bucket (any burst), a fixed or sliding window, a tokens-per-minute bucket; each can
//! change over time and throttle a random fraction of calls whatever the quota.

#![allow(dead_code)]

use std::cmp::Reverse;
use std::collections::{BinaryHeap, VecDeque};
use std::time::Duration;

use actors::actor::supervisor::queue::{dispatch_cap, wait_for, ADMISSION_HEADROOM};
use actors::actor::throttle::model::ModelThrottle;
use actors::actor::throttle::{CallOutcome, Grant, QuotaKind, ThrottleConfig};
use actors::backend::bedrock::ErrorKind;
use actors::policy::retry::{RetryDecision, RetryPolicy, ThrottlePause};
use actors::policy::throttle_policy::ThrottlePolicy;
use tokio::time::Instant;

/// How the quota is enforced.
#[derive(Debug, Clone, Copy, PartialEq)]
pub enum Shape {
    /// A token bucket of `burst` calls refilled at the quota rate.
    Bucket { burst: f64 },
    /// A bucket holding a minute of the quota (60 x the rate).
    MinuteBucket,
    /// At most a minute's quota in any 60 s.
    Sliding,
    /// At most a minute's quota per fixed minute (aligned to the start).
    Fixed,
    /// Tokens per minute in a bucket holding `burst_secs` of the rate; calls reserve input +
    /// max_tokens and settle to what they used (`Scenario::q` is then in calls at that use).
    TokenBucket { burst_secs: f64 },
    /// Bedrock's tokens per minute with the calls of [`Scenario::claude`]: a bucket of
    /// `burst_secs` of `tpm / 60` that a call needs `input + max_tokens` in to start, and that
    /// is charged `input + output x burndown` when the call ends (the reservation's rest is
    /// given back then). `Scenario::q` is in calls at the mean charge.
    BedrockTokens { tpm: f64, burst_secs: f64 },
}

impl Shape {
    pub fn name(&self) -> String {
        match self {
            Shape::Bucket { burst } => format!("bucket{burst}"),
            Shape::MinuteBucket => "bucket60s".into(),
            Shape::Sliding => "sliding60s".into(),
            Shape::Fixed => "fixed60s".into(),
            Shape::TokenBucket { burst_secs } => format!("tpm-bucket{burst_secs}s"),
            Shape::BedrockTokens { tpm, burst_secs } => format!("{tpm}tpm-bucket{burst_secs}s"),
        }
    }
}

/// One simulated run.
#[derive(Debug, Clone)]
pub struct Scenario {
    /// Quota in calls per second.
    pub q: f64,
    pub shape: Shape,
    /// Offered load as a multiple of `q`.
    pub k: f64,
    /// Loaded seconds.
    pub seconds: f64,
    /// `(from_second, factor)`: the quota is multiplied by `factor` from then on.
    pub changes: Vec<(f64, f64)>,
    /// Fraction of calls throttled at random whatever the quota.
    pub noise: f64,
    pub timeout: f64,
    pub max_retries: u32,
    pub policy: ThrottlePolicy,
    pub seed: u64,
    /// Call latency (a success answers after it; plus up to 5% jitter).
    pub latency: f64,
    /// Most a call's arrival at Bedrock lags its send (uniform from 0.5 ms), seconds.
    pub jitter: f64,
    /// Arrivals are a Poisson process (else evenly spaced).
    pub poisson: bool,
    /// Spread of the call latency: the standard deviation of its logarithm (lognormal around
    /// `latency` as the median); 0 keeps the 5% jitter.
    pub latency_spread: f64,
    /// Claude-sized calls (prompt, `max_tokens`, output rate, burndown); `None`: the seed's
    /// small calls.
    pub claude: Option<ClaudeCalls>,
    /// `(from_second, k)`: the offered load is `k x q` from then on (before the first step,
    /// `Scenario::k`).
    pub demand: Vec<(f64, f64)>,
}

/// Claude-sized calls: what a call reserves and what it is charged.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct ClaudeCalls {
    /// Input tokens of each prompt.
    pub input: u64,
    /// `max_tokens` of each request.
    pub max_tokens: u64,
    /// Output tokens written per second of the call (its latency).
    pub out_per_sec: f64,
    /// Quota tokens charged per output token.
    pub burndown: f64,
}

impl ClaudeCalls {
    /// What a call reserves when it starts.
    pub fn reserved(&self) -> u64 {
        self.input + self.max_tokens
    }

    /// Output tokens of a call that took `latency` seconds.
    pub fn output(&self, latency: f64) -> u64 {
        ((latency * self.out_per_sec).round() as u64).clamp(1, self.max_tokens)
    }

    /// What a call that took `latency` seconds is charged.
    pub fn charge(&self, latency: f64) -> f64 {
        self.input as f64 + self.output(latency) as f64 * self.burndown
    }
}

impl Scenario {
    /// `rpm` requests per minute enforced as `shape`, at `k` x the quota for `seconds`, with
    /// the client settings (timeout 30 s, 10 retries) and 100 ms calls.
    pub fn per_minute(rpm: f64, shape: Shape, k: f64, seconds: f64) -> Scenario {
        Scenario {
            q: rpm / 60.0,
            shape,
            k,
            seconds,
            changes: Vec::new(),
            noise: 0.0,
            timeout: 30.0,
            max_retries: 10,
            policy: ThrottlePolicy::Adaptive,
            seed: 1,
            latency: 0.1,
            jitter: 0.0015,
            poisson: false,
            latency_spread: 0.0,
            claude: None,
            demand: Vec::new(),
        }
    }

    /// Claude-shaped traffic: Poisson arrivals at `k` x the quota `q` (calls/s), calls of
    /// `latency` s median (lognormal, spread 0.5), timeout 120 s and 10 retries.
    pub fn claude(q: f64, shape: Shape, k: f64, seconds: f64, latency: f64) -> Scenario {
        Scenario {
            poisson: true,
            latency_spread: 0.5,
            latency,
            timeout: 120.0,
            ..Scenario::per_minute(q * 60.0, shape, k, seconds)
        }
    }

    /// The offered load (multiple of `q`) at `t`.
    fn k_at(&self, t: f64) -> f64 {
        self.demand
            .iter()
            .rfind(|(from, _)| t >= *from)
            .map_or(self.k, |(_, k)| *k)
    }

    pub fn name(&self) -> String {
        format!(
            "{}rpm {} k={} {}s",
            (self.q * 60.0).round(),
            self.shape.name(),
            self.k,
            self.seconds
        )
    }

    fn factor_at(&self, t: f64) -> f64 {
        self.changes
            .iter()
            .rfind(|(from, _)| t >= *from)
            .map_or(1.0, |(_, f)| *f)
    }
}

/// What a run measured.
#[derive(Debug, Clone, Default)]
pub struct Outcome {
    /// Successes answered per whole second (by answer time).
    pub ok_per_second: Vec<u64>,
    /// Throttled calls per whole second.
    pub throttled_per_second: Vec<u64>,
    /// The pace in calls/s at the end of each second (NaN while unpaced).
    pub pace_per_second: Vec<f64>,
    pub calls: u64,
    pub throttled: u64,
    pub sent: u64,
    pub ok: u64,
    /// Refused on arrival (503).
    pub refused: u64,
    /// Admitted, then refused (503) before any call: shed from the queue when the pace
    /// dropped, or no slot before the deadline.
    pub shed: u64,
    /// Admitted, then ended by the deadline (504): what admission promises never happens.
    pub late_504: u64,
    /// Retries used up, or no time left for the next one (429/500).
    pub exhausted: u64,
    /// The quota's admitted calls per second over the run, for the goodput ratio.
    pub quota_rate: f64,
    /// Seconds from arrival to answer of every success.
    pub latencies: Vec<f64>,
    /// Quota tokens charged by the successes answered in each second ([`ClaudeCalls`]).
    pub charged_per_second: Vec<f64>,
    /// Refused at once by the broker because the model's daily quota is spent, or a call
    /// could never fit the quota.
    pub refused_quota: u64,
}

impl Outcome {
    /// Successes answered inside `[from, to)` seconds per second, over the quota in force.
    pub fn goodput(&self, from: usize, to: usize, quota: f64) -> f64 {
        let ok: u64 = self.ok_per_second[from..to].iter().sum();
        ok as f64 / (to - from) as f64 / quota
    }

    pub fn throttled_fraction(&self) -> f64 {
        self.throttled as f64 / self.calls.max(1) as f64
    }

    /// Quota tokens charged by the successes answered inside `[from, to)` seconds, over
    /// what `tpm` allows in that span.
    pub fn token_goodput(&self, from: usize, to: usize, tpm: f64) -> f64 {
        let charged: f64 = self.charged_per_second[from..to].iter().sum();
        charged / (tpm / 60.0 * (to - from) as f64)
    }

    /// The `q` quantile of the successes' latencies (arrival to answer), seconds.
    pub fn latency_quantile(&self, q: f64) -> f64 {
        let mut xs = self.latencies.clone();
        if xs.is_empty() {
            return f64::NAN;
        }
        xs.sort_by(f64::total_cmp);
        xs[((xs.len() - 1) as f64 * q).round() as usize]
    }
}

/// Virtual time in seconds, ordered (the simulation never makes NaN).
#[derive(PartialEq, Clone, Copy)]
struct Time(f64);
impl Eq for Time {}
impl PartialOrd for Time {
    fn partial_cmp(&self, other: &Self) -> Option<std::cmp::Ordering> {
        Some(self.cmp(other))
    }
}
impl Ord for Time {
    fn cmp(&self, other: &Self) -> std::cmp::Ordering {
        self.0.total_cmp(&other.0)
    }
}

#[derive(PartialEq, Eq, PartialOrd, Ord, Clone, Copy, Debug)]
enum Event {
    /// A new request arrives.
    Arrival,
    /// The supervisor's upkeep: shed what cannot start in time, dispatch.
    Maintain,
    /// Job `i` asks the throttle for a slot.
    Acquire(usize),
    /// Job `i` sends its call.
    Send(usize),
    /// Job `i`'s call came back.
    Answer(usize, bool),
}

struct Job {
    arrived: f64,
    deadline: f64,
    calls: u32,
    throttled_last: bool,
    granted_tokens: u64,
    sent_at: f64,
    /// The call's latency if it passes, drawn when it is sent.
    call_latency: f64,
    /// Its last call was throttled at random, not by the quota.
    stray: bool,
    /// Its place in the throttle's line, once told to come back.
    ticket: Option<u64>,
    done: bool,
}

/// The quota in virtual time.
struct Quota {
    shape: Shape,
    /// Calls per second at factor 1.
    q: f64,
    level: f64,
    at: f64,
    admitted: VecDeque<f64>,
}

/// Tokens a call reserves (input + max_tokens) and uses (input + output) in the token shapes.
const RESERVED_TOKENS: u64 = 215;
const USED_TOKENS: u64 = 35;

impl Quota {
    fn new(shape: Shape, q: f64) -> Quota {
        let level = match shape {
            Shape::Bucket { burst } => burst.max(1.0),
            Shape::MinuteBucket => 60.0 * q,
            Shape::TokenBucket { burst_secs } => burst_secs * q * USED_TOKENS as f64,
            Shape::BedrockTokens { tpm, burst_secs } => tpm / 60.0 * burst_secs,
            _ => 0.0,
        };
        Quota {
            shape,
            q,
            level,
            at: 0.0,
            admitted: VecDeque::new(),
        }
    }

    /// Whether a call arriving at `t` passes (taking its share), at `factor` x the quota; a
    /// call of the Bedrock token shape reserves `reserved` tokens.
    fn admit(&mut self, t: f64, factor: f64, reserved: f64) -> bool {
        let rate = self.q * factor;
        match self.shape {
            Shape::BedrockTokens { tpm, burst_secs } => {
                self.refill(t, tpm / 60.0 * factor, burst_secs);
                if self.level >= reserved {
                    self.level -= reserved;
                    return true;
                }
                false
            }
            Shape::Bucket { .. } | Shape::MinuteBucket => {
                let capacity = match self.shape {
                    Shape::Bucket { burst } => (burst * factor).max(1.0),
                    _ => 60.0 * rate,
                };
                self.level = (self.level + (t - self.at) * rate).min(capacity);
                self.at = t;
                if self.level >= 1.0 {
                    self.level -= 1.0;
                    return true;
                }
                false
            }
            Shape::TokenBucket { burst_secs } => {
                let per_sec = rate * USED_TOKENS as f64;
                self.level = (self.level + (t - self.at) * per_sec).min(burst_secs * per_sec);
                self.at = t;
                if self.level >= RESERVED_TOKENS as f64 {
                    // Reserve, and (the call will succeed) give back what it does not use.
                    self.level -= USED_TOKENS as f64;
                    return true;
                }
                false
            }
            Shape::Sliding | Shape::Fixed => {
                let n = (60.0 * rate).floor() as usize;
                let from = match self.shape {
                    Shape::Sliding => t - 60.0,
                    _ => (t / 60.0).floor() * 60.0 - 1e-9,
                };
                while self.admitted.front().is_some_and(|&a| a <= from) {
                    self.admitted.pop_front();
                }
                if self.admitted.len() < n {
                    self.admitted.push_back(t);
                    return true;
                }
                false
            }
        }
    }

    /// Refills the Bedrock token bucket up to `t`.
    fn refill(&mut self, t: f64, per_sec: f64, burst_secs: f64) {
        self.level = (self.level + (t - self.at) * per_sec).min(burst_secs * per_sec);
        self.at = t;
    }

    /// A Bedrock token call ended at `t`: `back` tokens of its reservation return (negative:
    /// it is charged more than it reserved).
    fn settle(&mut self, t: f64, factor: f64, back: f64) {
        if let Shape::BedrockTokens { tpm, burst_secs } = self.shape {
            self.refill(t, tpm / 60.0 * factor, burst_secs);
            self.level = (self.level + back).min(burst_secs * tpm / 60.0 * factor);
        }
    }
}

/// A lognormal draw with median `median` and log-spread `sigma`.
fn lognormal(rng: &mut fastrand::Rng, median: f64, sigma: f64) -> f64 {
    // Box-Muller.
    let u1 = rng.f64().max(1e-12);
    let u2 = rng.f64();
    let z = (-2.0 * u1.ln()).sqrt() * (2.0 * std::f64::consts::PI * u2).cos();
    median * (sigma * z).exp()
}

/// Runs one scenario.
pub fn run(s: &Scenario) -> Outcome {
    let mut rng = fastrand::Rng::with_seed(s.seed);
    let config = ThrottleConfig {
        policy: s.policy,
        ..ThrottleConfig::new("us-east-1")
    };
    let retry = RetryPolicy {
        throttle_pause: match s.policy {
            ThrottlePolicy::None => ThrottlePause::Own {
                base: config.schedule.base,
                cap: config.schedule.cap,
            },
            ThrottlePolicy::Seed => ThrottlePause::Shared,
            ThrottlePolicy::Adaptive => ThrottlePause::Spread {
                max: Duration::from_millis(500),
            },
        },
        ..RetryPolicy::default()
    };
    let t0 = Instant::now();
    let at = |t: f64| t0 + Duration::from_secs_f64(t);
    let mut model = ModelThrottle::with_burndown(t0, s.claude.map_or(1.0, |c| c.burndown));
    let mut quota = Quota::new(s.shape, s.q);
    let horizon = s.seconds + s.timeout + 5.0;
    let slots = horizon as usize + 2;
    let mut out = Outcome {
        ok_per_second: vec![0; slots],
        throttled_per_second: vec![0; slots],
        pace_per_second: vec![f64::NAN; slots],
        charged_per_second: vec![0.0; slots],
        ..Outcome::default()
    };
    let reserved_tokens = s.claude.map_or(RESERVED_TOKENS, |c| c.reserved());
    let mut events: BinaryHeap<Reverse<(Time, u64, Event)>> = BinaryHeap::new();
    let mut seq = 0u64;
    let mut push = |events: &mut BinaryHeap<Reverse<(Time, u64, Event)>>, t: f64, e: Event| {
        seq += 1;
        events.push(Reverse((Time(t), seq, e)));
    };
    let interval = 1.0 / (s.k * s.q);
    let phase = if s.poisson {
        -rng.f64().max(1e-12).ln() * interval
    } else {
        rng.f64() * interval
    };
    push(&mut events, phase, Event::Arrival);
    push(&mut events, 0.1, Event::Maintain);
    let mut next_arrival = phase;
    let mut jobs: Vec<Job> = Vec::new();
    let mut queue: VecDeque<usize> = VecDeque::new();
    let mut holding = 0usize;
    while let Some(Reverse((Time(t), _, event))) = events.pop() {
        if t > horizon {
            break;
        }
        let now = at(t);
        let pace = model.calls_per_sec();
        let latency = model.latency();
        out.pace_per_second[t as usize] = pace.unwrap_or(f64::NAN);
        match event {
            Event::Arrival => {
                out.sent += 1;
                let deadline = t + s.timeout;
                // Admission: can its call start in time at the pace less the headroom?
                let resume_at = model.resume_at();
                let admit = pace.is_none_or(|pace| {
                    let wait = wait_for(
                        queue.len() + holding,
                        pace * (1.0 - ADMISSION_HEADROOM),
                        latency,
                        resume_at,
                        now,
                    );
                    t + wait.as_secs_f64() + latency.as_secs_f64() <= deadline
                });
                if admit {
                    jobs.push(Job {
                        arrived: t,
                        deadline,
                        calls: 0,
                        throttled_last: false,
                        granted_tokens: 0,
                        sent_at: 0.0,
                        call_latency: 0.0,
                        stray: false,
                        ticket: None,
                        done: false,
                    });
                    queue.push_back(jobs.len() - 1);
                    dispatch(&mut queue, &mut holding, pace, latency, &mut |i| {
                        push(&mut events, t, Event::Acquire(i))
                    });
                } else {
                    out.refused += 1;
                }
                let interval = 1.0 / (s.k_at(t) * s.q);
                next_arrival += if s.poisson {
                    -rng.f64().max(1e-12).ln() * interval
                } else {
                    interval
                };
                if next_arrival < s.seconds {
                    push(&mut events, next_arrival, Event::Arrival);
                }
            }
            Event::Maintain => {
                // Shed what can no longer start in time; expire what is past its deadline.
                let mut kept = VecDeque::new();
                while let Some(i) = queue.pop_front() {
                    let ahead = holding + kept.len();
                    if jobs[i].deadline <= t {
                        jobs[i].done = true;
                        out.late_504 += 1;
                    } else if pace.is_some_and(|pace| {
                        let wait =
                            wait_for(ahead, pace, latency, model.resume_at(), now).as_secs_f64();
                        t + wait + latency.as_secs_f64() > jobs[i].deadline
                    }) {
                        jobs[i].done = true;
                        out.shed += 1;
                    } else {
                        kept.push_back(i);
                    }
                }
                queue = kept;
                dispatch(&mut queue, &mut holding, pace, latency, &mut |i| {
                    push(&mut events, t, Event::Acquire(i))
                });
                push(&mut events, t + 0.1, Event::Maintain);
            }
            Event::Acquire(i) => {
                let job = &mut jobs[i];
                let ask = job.throttled_last || model.must_ask(now, &config);
                let grant = if ask {
                    model
                        .grant(now, reserved_tokens, job.ticket, &config, rng.f64())
                        .0
                } else {
                    Grant::CallAfter {
                        delay: Duration::ZERO,
                        tokens: 0,
                        latency: Duration::ZERO,
                    }
                };
                if std::env::var("SIM_TRACE").is_ok_and(|v| v == "3") {
                    eprintln!("  {t:8.3} grant (job {i}, ask {ask}): {grant:?}");
                }
                match grant {
                    Grant::CallAfter {
                        delay,
                        tokens,
                        latency,
                    } => {
                        let send = t + delay.as_secs_f64();
                        if send + latency.as_secs_f64() >= job.deadline {
                            // No time left for the call: answered at once (503, or the
                            // last throttle when a call was made), as the worker does.
                            model.release(now, tokens);
                            finish(job, &mut holding);
                            if job.calls == 0 {
                                out.shed += 1;
                            } else {
                                out.exhausted += 1;
                            }
                        } else {
                            job.granted_tokens = tokens;
                            push(&mut events, send, Event::Send(i));
                        }
                    }
                    Grant::Refused(_) => {
                        finish(job, &mut holding);
                        out.refused_quota += 1;
                    }
                    Grant::AskAgainAfter {
                        after,
                        starts_in,
                        latency,
                        ticket,
                    } => {
                        job.ticket = Some(ticket);
                        let again = t + after.as_secs_f64();
                        let start = t + starts_in.max(after).as_secs_f64();
                        if start + latency.as_secs_f64() >= job.deadline {
                            finish(job, &mut holding);
                            if job.calls == 0 {
                                out.shed += 1;
                            } else {
                                out.exhausted += 1;
                            }
                        } else {
                            push(&mut events, again, Event::Acquire(i));
                        }
                    }
                }
            }
            Event::Send(i) => {
                if std::env::var("SIM_TRACE").is_ok_and(|v| v == "3") {
                    eprintln!("  {t:8.3} send (job {i})");
                }
                let job = &mut jobs[i];
                job.calls += 1;
                job.sent_at = t;
                out.calls += 1;
                // The call reaches Bedrock a little later.
                let arrival = t + 0.0005 + rng.f64() * (s.jitter - 0.0005).max(0.0);
                // (The draws come in the order they always did, so the older scenarios see
                // the same random streams: the stray throttle's, then the latency's.)
                job.stray = rng.f64() < s.noise;
                let passed = !job.stray
                    && quota.admit(arrival, s.factor_at(arrival), reserved_tokens as f64);
                if passed {
                    job.call_latency = if s.latency_spread > 0.0 {
                        lognormal(&mut rng, s.latency, s.latency_spread)
                    } else {
                        s.latency * (1.0 + 0.05 * rng.f64())
                    };
                }
                if passed {
                    let answer = t + job.call_latency;
                    push(&mut events, answer, Event::Answer(i, true));
                } else {
                    if std::env::var("SIM_TRACE").is_ok_and(|v| v == "3") {
                        eprintln!("  {t:8.3} throttled (job {i}, call {})", job.calls);
                    }
                    out.throttled += 1;
                    out.throttled_per_second[t as usize] += 1;
                    push(
                        &mut events,
                        t + 0.003 + 0.004 * rng.f64(),
                        Event::Answer(i, false),
                    );
                }
            }
            Event::Answer(i, ok) => {
                let job = &mut jobs[i];
                let call_latency = Duration::from_secs_f64(t - job.sent_at);
                let outcome = if let (true, Some(c)) = (ok, s.claude) {
                    let latency = job.call_latency;
                    quota.settle(t, s.factor_at(t), c.reserved() as f64 - c.charge(latency));
                    CallOutcome::Success {
                        input_tokens: c.input,
                        output_tokens: c.output(latency),
                        cache_write_tokens: 0,
                    }
                } else if ok {
                    let used = match s.shape {
                        Shape::TokenBucket { .. } => USED_TOKENS,
                        _ => 30,
                    };
                    CallOutcome::Success {
                        input_tokens: 5,
                        output_tokens: used - 5,
                        cache_write_tokens: 0,
                    }
                } else {
                    let tokens = !job.stray
                        && matches!(
                            s.shape,
                            Shape::TokenBucket { .. } | Shape::BedrockTokens { .. }
                        );
                    CallOutcome::Throttled {
                        quota: if tokens {
                            QuotaKind::Tokens
                        } else {
                            QuotaKind::Requests
                        },
                    }
                };
                let notes = model.report(now, outcome, call_latency, job.granted_tokens, &config);
                if trace_adjustments() {
                    for (lane, adjustment) in notes.adjustments {
                        eprintln!("  {t:8.3} {lane:?} {adjustment:?} (ok={ok})");
                    }
                }
                if t > job.deadline {
                    // The call ran past the deadline: the request got its 504 at the deadline.
                    finish(job, &mut holding);
                    out.late_504 += 1;
                } else if ok {
                    finish(job, &mut holding);
                    out.ok += 1;
                    out.ok_per_second[t as usize] += 1;
                    out.latencies.push(t - job.arrived);
                    if let Some(c) = s.claude {
                        out.charged_per_second[t as usize] += c.charge(job.call_latency);
                    }
                } else {
                    job.throttled_last = true;
                    match retry.decide(ErrorKind::Throttling, job.calls, s.max_retries, rng.f64()) {
                        RetryDecision::GiveUp => {
                            finish(job, &mut holding);
                            out.exhausted += 1;
                        }
                        RetryDecision::RetryAfter(pause) => {
                            let again = t + pause.as_secs_f64();
                            if again >= job.deadline {
                                finish(job, &mut holding);
                                out.exhausted += 1;
                            } else {
                                push(&mut events, again, Event::Acquire(i));
                            }
                        }
                    }
                }
                dispatch(&mut queue, &mut holding, pace, latency, &mut |i| {
                    push(&mut events, t, Event::Acquire(i))
                });
            }
        }
    }
    out.quota_rate = (0..s.seconds as usize)
        .map(|sec| s.q * s.factor_at(sec as f64))
        .sum::<f64>()
        / s.seconds;
    out
}

/// `SIM_TRACE=2` prints every pace change.
fn trace_adjustments() -> bool {
    std::env::var("SIM_TRACE").is_ok_and(|v| v == "2" || v == "3")
}

fn finish(job: &mut Job, holding: &mut usize) {
    job.done = true;
    *holding -= 1;
}

/// Hands queued jobs worker slots, up to the paced model's dispatch cap.
fn dispatch(
    queue: &mut VecDeque<usize>,
    holding: &mut usize,
    pace: Option<f64>,
    latency: Duration,
    start: &mut impl FnMut(usize),
) {
    while !queue.is_empty() && pace.is_none_or(|p| *holding < dispatch_cap(p, latency)) {
        let i = queue.pop_front().unwrap();
        *holding += 1;
        start(i);
    }
}

/// One line of results: goodput over the run and the first minute, throttled, the ends.
pub fn summary(s: &Scenario, o: &Outcome) -> String {
    let secs = s.seconds as usize;
    let first = secs.min(60);
    format!(
        "{:<34} goodput {:.3} (first {}s {:.3}) throttled {:5.1}% of {:5} calls | ok {} refused {} shed {} 504 {} exhausted {}",
        s.name(),
        o.goodput(0, secs, o.quota_rate),
        first,
        o.goodput(0, first, s.q * s.factor_at(0.0)),
        100.0 * o.throttled_fraction(),
        o.calls,
        o.ok,
        o.refused,
        o.shed,
        o.late_504,
        o.exhausted
    )
}

/// One line for Claude-shaped runs: what answered, how fast, what the quota gave.
pub fn claude_summary(s: &Scenario, o: &Outcome) -> String {
    let secs = s.seconds as usize;
    let used = match s.shape {
        Shape::BedrockTokens { tpm, .. } => o.token_goodput(0, secs, tpm),
        _ => o.goodput(0, secs, o.quota_rate),
    };
    format!(
        "{:<9} {:<40} used {:.3} throttled {:5.1}% of {:5} calls | sent {} ok {} p50 {:.2}s p99 {:.2}s | refused {} shed {} 504 {} exhausted {} quota {}",
        format!("{:?}", s.policy),
        s.name(),
        used,
        100.0 * o.throttled_fraction(),
        o.calls,
        o.sent,
        o.ok,
        o.latency_quantile(0.5),
        o.latency_quantile(0.99),
        o.refused,
        o.shed,
        o.late_504,
        o.exhausted,
        o.refused_quota
    )
}

/// The run second by second (for `SIM_TRACE`).
pub fn trace(s: &Scenario, o: &Outcome) -> String {
    let mut lines = String::new();
    for sec in 0..s.seconds as usize {
        lines += &format!(
            "  t={sec:3} ok={:4} thr={:4} pace={:7.3}\n",
            o.ok_per_second[sec], o.throttled_per_second[sec], o.pace_per_second[sec]
        );
    }
    lines
}
