//! The adaptive pacer against simulated Bedrock quotas, in virtual time (milliseconds of CPU,
//! no sleeping): open-loop arrivals at k x Q, a token-bucket quota, 100 ms calls, throttles
//! answered in 5 ms, every throttled call retried through the pacer. Checks the controller's
//! own design targets: goodput near the quota with few throttled calls, recovery after the
//! quota changes. (The end-to-end figures come from `examples/goodput.rs`.)

use std::cmp::Reverse;
use std::collections::BinaryHeap;
use std::time::Duration;

use actors::pacing::{PacingConfig, RateController, Reservation};
use tokio::time::Instant;

const LATENCY: Duration = Duration::from_millis(100);
const THROTTLE_LATENCY: Duration = Duration::from_millis(5);

/// A token bucket in virtual time.
struct Bucket {
    rate: f64,
    burst: f64,
    level: f64,
    at: f64,
}

impl Bucket {
    fn take(&mut self, t: f64) -> bool {
        self.level = (self.level + (t - self.at) * self.rate).min(self.burst);
        self.at = t;
        if self.level >= 1.0 {
            self.level -= 1.0;
            true
        } else {
            false
        }
    }
}

/// Virtual time in seconds, ordered (the simulation never makes NaN).
#[derive(PartialEq)]
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

#[derive(PartialEq, Eq, PartialOrd, Ord)]
enum Event {
    Arrival,
    Reserve,
    Send,
    Success,
    Throttle,
}

struct Outcome {
    /// Successes completed per whole second.
    per_second: Vec<u64>,
    /// Throttles per whole second.
    throttled_per_second: Vec<u64>,
    /// Pacer rate at the end of each second.
    rate_per_second: Vec<f64>,
    calls: u64,
    throttled: u64,
}

/// Runs `seconds` of load at `k` times the quota; `quota_at(t)` gives the quota in force.
fn simulate(q: f64, k: f64, seconds: u64, quota_at: impl Fn(f64) -> f64) -> Outcome {
    simulate_with_noise(q, k, seconds, quota_at, 0.0)
}

/// The same, with a fraction `noise` of calls throttled at random whatever the quota (as
/// Bedrock does now and then under quota).
fn simulate_with_noise(
    q: f64,
    k: f64,
    seconds: u64,
    quota_at: impl Fn(f64) -> f64,
    noise: f64,
) -> Outcome {
    let mut rng = fastrand::Rng::with_seed(7);
    let cfg = PacingConfig::default();
    let t0 = Instant::now();
    let at = |t: f64| t0 + Duration::from_secs_f64(t);
    let mut pacer = RateController::new(t0);
    let mut bucket = Bucket {
        rate: q,
        burst: q,
        level: q,
        at: 0.0,
    };
    let mut events: BinaryHeap<Reverse<(Time, Event)>> = BinaryHeap::new();
    let interval = 1.0 / (k * q);
    let mut next_arrival = 0.0;
    events.push(Reverse((Time(0.0), Event::Arrival)));
    let mut waiting = 0u64; // requests admitted but not yet sent (bounded like an admission queue)
    let cap = (q * 10.0) as u64;
    let mut out = Outcome {
        per_second: vec![0; seconds as usize + 1],
        throttled_per_second: vec![0; seconds as usize + 2],
        rate_per_second: vec![0.0; seconds as usize + 2],
        calls: 0,
        throttled: 0,
    };
    while let Some(Reverse((Time(t), event))) = events.pop() {
        if t > seconds as f64 + 1.0 {
            break;
        }
        out.rate_per_second[t as usize] = pacer.rate().unwrap_or(f64::NAN);
        match event {
            Event::Arrival => {
                if waiting < cap {
                    waiting += 1;
                    events.push(Reverse((Time(t), Event::Reserve)));
                }
                next_arrival += interval;
                if next_arrival < seconds as f64 {
                    events.push(Reverse((Time(next_arrival), Event::Arrival)));
                }
            }
            Event::Reserve => match pacer.reserve(at(t), 1.0, &cfg) {
                Reservation::At(when) => {
                    let send = when.duration_since(t0).as_secs_f64();
                    events.push(Reverse((Time(send), Event::Send)));
                }
                Reservation::ComeBack(after) => {
                    events.push(Reverse((Time(t + after.as_secs_f64()), Event::Reserve)));
                }
            },
            Event::Send => {
                out.calls += 1;
                bucket.rate = quota_at(t);
                bucket.burst = bucket.rate;
                if rng.f64() >= noise && bucket.take(t) {
                    events.push(Reverse((Time(t + LATENCY.as_secs_f64()), Event::Success)));
                } else {
                    out.throttled += 1;
                    out.throttled_per_second[t as usize] += 1;
                    events.push(Reverse((
                        Time(t + THROTTLE_LATENCY.as_secs_f64()),
                        Event::Throttle,
                    )));
                }
            }
            Event::Success => {
                waiting -= 1;
                if (t as u64) < seconds {
                    out.per_second[t as usize] += 1;
                }
                pacer.on_admitted(at(t), 1.0, &cfg);
                pacer.adjust(at(t), LATENCY, &cfg);
            }
            Event::Throttle => {
                pacer.on_throttle(at(t), LATENCY, &cfg);
                pacer.adjust(at(t), LATENCY, &cfg);
                // The retry goes through the pacer again.
                events.push(Reverse((Time(t), Event::Reserve)));
            }
        }
    }
    out
}

fn report(name: &str, q: f64, seconds: u64, o: &Outcome) -> (f64, f64) {
    let successes: u64 = o.per_second[..seconds as usize].iter().sum();
    let goodput = successes as f64 / seconds as f64 / q;
    let throttled = o.throttled as f64 / o.calls as f64;
    println!(
        "{name}: goodput/Q {goodput:.3}, throttled {:.2}% of {} calls",
        throttled * 100.0,
        o.calls
    );
    // SIM_TRACE=1 prints the run second by second.
    if std::env::var("SIM_TRACE").is_ok() {
        for s in 0..seconds as usize {
            println!(
                "  t={s:3} ok={:4} thr={:4} rate={:7.2}",
                o.per_second[s], o.throttled_per_second[s], o.rate_per_second[s]
            );
        }
    }
    (goodput, throttled)
}

#[test]
fn steady_token_bucket_quotas_are_kept_busy_with_few_throttles() {
    for q in [20.0, 200.0] {
        for k in [1.5, 3.0] {
            let o = simulate(q, k, 60, |_| q);
            let (goodput, throttled) = report(&format!("Q={q} k={k}"), q, 60, &o);
            if std::env::var("SIM_SOFT").is_ok() {
                continue;
            }
            assert!(goodput >= 0.95, "Q={q} k={k}: goodput/Q {goodput}");
            assert!(throttled <= 0.05, "Q={q} k={k}: throttled {throttled}");
        }
    }
}

#[test]
fn below_the_quota_nothing_is_throttled_or_held_back() {
    let q = 20.0;
    let o = simulate(q, 0.5, 60, |_| q);
    let (goodput, _) = report("Q=20 k=0.5", q, 60, &o);
    assert_eq!(o.throttled, 0);
    assert!(goodput >= 0.49, "{goodput}");
}

#[test]
fn a_halved_then_restored_quota_is_followed_within_twenty_seconds() {
    let q = 20.0;
    let quota = |t: f64| {
        if (30.0..60.0).contains(&t) {
            q / 2.0
        } else {
            q
        }
    };
    let o = simulate(q, 3.0, 90, quota);
    report("Q=20 halved at 30 s, restored at 60 s", q, 90, &o);
    let window = |from: usize, to: usize| {
        o.per_second[from..to].iter().sum::<u64>() as f64 / (to - from) as f64
    };
    for (from, to, in_force) in [(10, 30, q), (50, 60, q / 2.0), (80, 90, q)] {
        let rate = window(from, to);
        println!("  {from}-{to} s: {rate:.1}/s of {in_force}");
        assert!(
            rate >= 0.9 * in_force,
            "{from}-{to} s: {rate} vs {in_force}"
        );
    }
    let per5: Vec<f64> = (0..18).map(|i| window(i * 5, i * 5 + 5)).collect();
    println!("  per 5 s: {per5:.1?}");
}

#[test]
fn sporadic_throttles_under_the_quota_do_not_ratchet_the_pace_down() {
    // Demand of 50 calls/s against a quota of 500/s, with 4% of calls throttled at random.
    let q = 500.0;
    let o = simulate_with_noise(q, 0.1, 60, |_| q, 0.04);
    let served: u64 = o.per_second[10..60].iter().sum();
    let rate = served as f64 / 50.0;
    println!("sporadic 4% throttles at 50/s demand: {rate:.1} successes/s after 10 s");
    if std::env::var("SIM_TRACE").is_ok() {
        for s in 0..60 {
            println!(
                "  t={s:3} ok={:4} thr={:4} rate={:7.2}",
                o.per_second[s], o.throttled_per_second[s], o.rate_per_second[s]
            );
        }
    }
    assert!(rate >= 0.9 * 50.0 * 0.96, "{rate} successes/s");
}
