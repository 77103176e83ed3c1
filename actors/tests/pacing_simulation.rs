//! The adaptive throttle against simulated Bedrock quotas, in virtual time (see `sim/mod.rs`:
//! the real `ModelThrottle`, retry pauses and queue admission, minutes of load in
//! milliseconds). Checks the controller's design bars on every quota shape at the per-minute
//! rates real accounts get, and at per-second rates. The end-to-end figures, against the
//! emulator over HTTP, come from `examples/goodput.rs`.
//!
//! `SIM_TABLE=1 cargo test -p actors --release --test pacing_simulation -- --nocapture`
//! prints every run; `SIM_TRACE=1` adds each run second by second, `SIM_TRACE=2` every change
//! of pace.

mod sim;

use actors::policy::throttle_policy::ThrottlePolicy;
use sim::{claude_summary, run, summary, trace, ClaudeCalls, Outcome, Scenario, Shape};

/// Runs `s` with seeds `0..seeds`, printing each run when asked.
fn runs(s: &Scenario, seeds: u64) -> Vec<Outcome> {
    (0..seeds)
        .map(|seed| {
            let s = Scenario { seed, ..s.clone() };
            let o = run(&s);
            if std::env::var("SIM_TABLE").is_ok() || std::env::var("SIM_TRACE").is_ok() {
                println!("{}", summary(&s, &o));
            }
            if std::env::var("SIM_TRACE").is_ok_and(|v| v == "1") {
                print!("{}", trace(&s, &o));
            }
            o
        })
        .collect()
}

fn median(mut xs: Vec<f64>) -> f64 {
    xs.sort_by(f64::total_cmp);
    xs[xs.len() / 2]
}

/// The four shapes a per-minute quota may take.
const SHAPES: [Shape; 4] = [
    Shape::Bucket { burst: 1.0 },
    Shape::MinuteBucket,
    Shape::Sliding,
    Shape::Fixed,
];

#[test]
fn per_minute_quotas_of_every_shape_are_kept_busy_with_few_throttles() {
    let mut misses = Vec::new();
    for rpm in [30.0, 60.0, 200.0, 1000.0] {
        for shape in SHAPES {
            for k in [1.5, 3.0] {
                let s = Scenario::per_minute(rpm, shape, k, 300.0);
                let outcomes = runs(&s, 3);
                let goodput: Vec<f64> = outcomes
                    .iter()
                    .map(|o| o.goodput(0, 300, o.quota_rate))
                    .collect();
                let throttled: Vec<f64> =
                    outcomes.iter().map(Outcome::throttled_fraction).collect();
                let worst = goodput.iter().copied().fold(f64::INFINITY, f64::min);
                // Every run: at least 0.93 of the quota over five minutes (the lowest a run
                // may reach), and admitted requests end before their deadline. A known miss,
                // bounded so that it does not grow: at 30 requests a minute with a burst of
                // one, pacing starts only once the throttles are more than Bedrock's stray
                // ones explain (a sparse caller's one throttle must not start it), a little
                // later than before: 0.92 in one run of three.
                let floor = match (rpm, shape) {
                    (r, Shape::Bucket { .. }) if r <= 30.0 => 0.915,
                    _ => 0.93,
                };
                assert!(worst >= floor, "{}: goodput/Q {goodput:?}", s.name());
                for o in &outcomes {
                    // At most one in a thousand: a call that left with less time than it took.
                    assert!(
                        o.late_504 * 1000 <= o.sent,
                        "{}: {} ended 504",
                        s.name(),
                        o.late_504
                    );
                }
                // Throttled calls: at most 5% at 30 and 60 requests per minute, 3% above. A
                // bucket holding a minute of a 30 requests-per-minute quota is a known miss
                // (6 to 9%: probes pass on the burst it saves while the pace is below it),
                // bounded here so that it does not grow.
                // A bucket holding a minute above 30 requests a minute: up to 0.3 points over
                // the bar (bounded), since the pace starts only once the last 18 s show the
                // quota, not a cluster of stray throttles.
                let bar = match (rpm, shape) {
                    (r, Shape::MinuteBucket) if r <= 30.0 => 0.10,
                    (r, Shape::MinuteBucket) if r <= 60.0 => 0.055,
                    (_, Shape::MinuteBucket) => 0.035,
                    (r, _) if r <= 60.0 => 0.05,
                    _ => 0.03,
                };
                let median_throttled = median(throttled.clone());
                assert!(
                    median_throttled <= bar,
                    "{}: throttled {throttled:?}",
                    s.name()
                );
                if median(goodput.clone()) < 0.97 {
                    misses.push(format!("{}: goodput/Q {goodput:.3?}", s.name()));
                }
            }
        }
    }
    // Where the median misses the 0.97 target, say so (the README reports these figures).
    for miss in misses {
        println!("below 0.97: {miss}");
    }
}

#[test]
fn tokens_per_minute_buckets_are_kept_busy() {
    // A bucket of a minute of tokens, calls reserving 215 tokens and using 35, at the call
    // rates of the request quotas above. (A pace that a throttle in its grace left unproven
    // once stalled here below the quota for the rest of the run: 0.67 of it.)
    for rpm in [30.0, 60.0, 200.0, 1000.0] {
        for k in [1.5, 3.0] {
            let s = Scenario::per_minute(rpm, Shape::TokenBucket { burst_secs: 60.0 }, k, 300.0);
            let outcomes = runs(&s, 3);
            for o in &outcomes {
                let goodput = o.goodput(0, 300, o.quota_rate);
                assert!(goodput >= 0.93, "{}: goodput/Q {goodput}", s.name());
                assert!(
                    o.late_504 * 1000 <= o.sent,
                    "{}: {} ended 504",
                    s.name(),
                    o.late_504
                );
            }
            // Throttled: the request quotas' bars are missed here (up to 5.5% above 60
            // requests per minute): bounded so that it does not grow.
            let throttled = median(outcomes.iter().map(Outcome::throttled_fraction).collect());
            assert!(throttled <= 0.06, "{}: throttled {throttled}", s.name());
        }
    }
}

#[test]
fn per_second_quotas_are_kept_busy_with_few_throttles() {
    for (q, burst) in [(20.0, 20.0), (200.0, 200.0), (20.0, 5.0)] {
        for k in [1.5, 3.0] {
            let s = Scenario {
                timeout: 10.0,
                max_retries: 3,
                ..Scenario::per_minute(q * 60.0, Shape::Bucket { burst }, k, 60.0)
            };
            for o in runs(&s, 3) {
                let goodput = o.goodput(0, 60, o.quota_rate);
                assert!(goodput >= 0.95, "{}: goodput/Q {goodput}", s.name());
                assert!(
                    o.throttled_fraction() <= 0.07,
                    "{}: throttled {}",
                    s.name(),
                    o.throttled_fraction()
                );
            }
        }
    }
    // 20/s with a burst of 5 over 20 s: at least 0.95 in every run.
    let s = Scenario {
        timeout: 30.0,
        max_retries: 10,
        k: 3.0,
        ..Scenario::per_minute(1200.0, Shape::Bucket { burst: 5.0 }, 3.0, 20.0)
    };
    for o in runs(&s, 8) {
        let goodput = o.goodput(0, 20, o.quota_rate);
        assert!(goodput >= 0.95, "{}: goodput/Q {goodput}", s.name());
    }
}

#[test]
fn long_calls_are_paced_as_well_as_short_ones() {
    // Calls of 0.65 s (a streamed reply of about 30 tokens at 50 tokens/s) and of 1 s: a
    // success reaches the pacer that much later than a throttle. (Counting only the
    // successes back, a floor refuted at 3x the quota was stepped down 2% at a time, and the
    // unpaced start waited for them: 20% of calls throttled.)
    for latency in [0.65, 1.0] {
        for k in [1.5, 3.0] {
            let s = Scenario {
                timeout: 10.0,
                max_retries: 3,
                latency,
                ..Scenario::per_minute(1200.0, Shape::Bucket { burst: 20.0 }, k, 60.0)
            };
            for o in runs(&s, 3) {
                let goodput = o.goodput(0, 60, o.quota_rate);
                assert!(
                    goodput >= 0.95,
                    "{latency} s calls, {}: goodput/Q {goodput}",
                    s.name()
                );
                assert!(
                    o.throttled_fraction() <= 0.05,
                    "{latency} s calls, {}: throttled {}",
                    s.name(),
                    o.throttled_fraction()
                );
            }
        }
    }
}

#[test]
fn calls_of_three_seconds_stay_within_their_known_shortfall() {
    // A known miss, reported in the README and bounded here so that it does not grow: with
    // calls of 3 s the pace starts at half the success rate and each proof lasts three call
    // latencies, so it climbs to the quota slowly (0.63 to 0.77 of a bucket of 20/s at 1.5x).
    let per_second = |k: f64| Scenario {
        timeout: 10.0,
        max_retries: 3,
        latency: 3.0,
        ..Scenario::per_minute(1200.0, Shape::Bucket { burst: 20.0 }, k, 60.0)
    };
    for (k, bar) in [(1.5, 0.6), (3.0, 0.9)] {
        let s = per_second(k);
        for o in runs(&s, 3) {
            let goodput = o.goodput(0, 60, o.quota_rate);
            assert!(
                goodput >= bar,
                "3 s calls, {}: goodput/Q {goodput}",
                s.name()
            );
        }
    }
    for rpm in [60.0, 200.0] {
        for k in [1.5, 3.0] {
            let s = Scenario {
                timeout: 10.0,
                max_retries: 3,
                latency: 3.0,
                ..Scenario::per_minute(rpm, Shape::Bucket { burst: 1.0 }, k, 300.0)
            };
            for o in runs(&s, 2) {
                let goodput = o.goodput(0, 300, o.quota_rate);
                assert!(
                    goodput >= 0.85,
                    "3 s calls, {}: goodput/Q {goodput}",
                    s.name()
                );
            }
        }
    }
}

#[test]
fn below_the_quota_nothing_is_throttled_or_held_back() {
    let s = Scenario::per_minute(1200.0, Shape::Bucket { burst: 20.0 }, 0.5, 60.0);
    for o in runs(&s, 2) {
        assert_eq!(o.throttled, 0);
        assert_eq!(o.ok, o.sent, "every request served");
    }
}

#[test]
fn a_halved_then_restored_quota_is_followed() {
    let s = Scenario {
        changes: vec![(30.0, 0.5), (60.0, 1.0)],
        timeout: 10.0,
        max_retries: 3,
        ..Scenario::per_minute(1200.0, Shape::Bucket { burst: 20.0 }, 2.0, 90.0)
    };
    for o in runs(&s, 3) {
        let rate = |from: usize, to: usize| {
            o.ok_per_second[from..to].iter().sum::<u64>() as f64 / (to - from) as f64
        };
        // Before, during and the last 10 s after: at least 0.9 of the quota in force, which
        // bounds the time to find the restored quota to about 20 s.
        for (from, to, in_force) in [(10, 30, 20.0), (45, 60, 10.0), (80, 90, 20.0)] {
            let got = rate(from, to);
            assert!(
                got >= 0.9 * in_force,
                "{from}-{to} s: {got}/s of {in_force}"
            );
        }
    }
}

#[test]
fn sporadic_throttles_under_the_quota_do_not_ratchet_the_pace_down() {
    // Demand of 50 calls/s against a quota of 500/s, with 4% of calls throttled at random.
    let s = Scenario {
        noise: 0.04,
        ..Scenario::per_minute(30_000.0, Shape::Bucket { burst: 500.0 }, 0.1, 60.0)
    };
    for o in runs(&s, 2) {
        let served: u64 = o.ok_per_second[10..60].iter().sum();
        let rate = served as f64 / 50.0;
        assert!(rate >= 0.9 * 50.0, "{rate} successes/s");
    }
}

/// Runs `s` under `policy` with seeds `0..seeds`, printing each run when asked.
fn claude_runs(s: &Scenario, policy: ThrottlePolicy, seeds: u64) -> Vec<Outcome> {
    (0..seeds)
        .map(|seed| {
            let s = Scenario {
                policy,
                seed,
                ..s.clone()
            };
            let o = run(&s);
            if std::env::var("SIM_TABLE").is_ok() {
                println!("{}", claude_summary(&s, &o));
            }
            o
        })
        .collect()
}

#[test]
fn sparse_callers_with_stray_throttles_see_no_pacing() {
    // 0.5 requests/s (Poisson) to a quota of 10/s, calls of about 1.5 s, Bedrock throttling
    // 3% of calls at random: every request is answered, as fast as without stray throttles
    // (the pace never starts on what strays explain).
    let clean = Scenario {
        latency_spread: 0.3,
        ..Scenario::claude(10.0, Shape::Bucket { burst: 10.0 }, 0.05, 180.0, 1.5)
    };
    let stray = Scenario {
        noise: 0.03,
        ..clean.clone()
    };
    let base = claude_runs(&clean, ThrottlePolicy::Adaptive, 5);
    let none = claude_runs(&stray, ThrottlePolicy::None, 5);
    let adaptive = claude_runs(&stray, ThrottlePolicy::Adaptive, 5);
    for ((a, n), b) in adaptive.iter().zip(&none).zip(&base) {
        assert_eq!(a.ok, a.sent, "every request answered");
        assert_eq!(a.refused + a.shed + a.late_504 + a.exhausted, 0);
        // At least as fast as none (its stray throttles cost the same retries), and within
        // 0.5 s of the runs without strays beyond what those retries cost none.
        let (p99, p99_none, p99_clean) = (
            a.latency_quantile(0.99),
            n.latency_quantile(0.99),
            b.latency_quantile(0.99),
        );
        assert!(
            p99 <= p99_none * 1.1 + 0.5,
            "p99 {p99} s against none's {p99_none} s"
        );
        assert!(
            p99 <= p99_clean.max(p99_none) + 0.5,
            "p99 {p99} s against {p99_clean} s without strays"
        );
        assert!(a.pace_per_second.iter().all(|p| p.is_nan()), "never paced");
    }
}

#[test]
fn bedrock_token_quotas_with_long_calls_are_used_like_none_with_few_throttles() {
    // 200,000 tokens a minute counted Bedrock's way (a bucket of a minute that a call needs
    // input + max_tokens free in, charged input + output x 5 when it ends), prompts of 4,000
    // tokens, max_tokens 4,096, calls of 5 s median writing 50 tokens/s, offered 2x.
    let claude = ClaudeCalls {
        input: 4000,
        max_tokens: 4096,
        out_per_sec: 50.0,
        burndown: 5.0,
    };
    let tpm = 200_000.0;
    let s = Scenario {
        claude: Some(claude),
        ..Scenario::claude(
            tpm / 60.0 / claude.charge(5.0),
            Shape::BedrockTokens {
                tpm,
                burst_secs: 60.0,
            },
            2.0,
            180.0,
            5.0,
        )
    };
    let none = claude_runs(&s, ThrottlePolicy::None, 3);
    let adaptive = claude_runs(&s, ThrottlePolicy::Adaptive, 3);
    for (a, n) in adaptive.iter().zip(&none) {
        let (used_a, used_n) = (a.token_goodput(0, 180, tpm), n.token_goodput(0, 180, tpm));
        // (Up to 0.05 below none: the pace starts only once the last 18 s show the quota.)
        assert!(
            used_a >= used_n - 0.05,
            "quota used {used_a} against none's {used_n}"
        );
        assert_eq!(a.late_504, 0);
        // The bar is 3% of calls throttled; the pacer reaches 3 to 15% here (a known
        // miss, bounded so that it does not grow), against 80 to 90% for none.
        assert!(
            a.throttled_fraction() <= 0.2,
            "throttled {}",
            a.throttled_fraction()
        );
        assert!(a.throttled_fraction() * 4.0 < n.throttled_fraction());
    }
}

#[test]
fn a_requests_quota_with_calls_of_seconds_answers_as_many_as_none() {
    // 60 requests a minute with a burst of one, calls of 5 s median, 2x load.
    let s = Scenario::claude(1.0, Shape::Bucket { burst: 1.0 }, 2.0, 180.0, 5.0);
    let none = claude_runs(&s, ThrottlePolicy::None, 3);
    let adaptive = claude_runs(&s, ThrottlePolicy::Adaptive, 3);
    for (a, n) in adaptive.iter().zip(&none) {
        assert!(
            a.ok + 5 >= n.ok,
            "{} answered against none's {}",
            a.ok,
            n.ok
        );
        assert!(
            a.throttled_fraction() <= 0.08,
            "throttled {}",
            a.throttled_fraction()
        );
        assert!(a.late_504 <= 1);
    }
}

#[test]
fn stray_throttles_seldom_start_pacing_sparse_callers() {
    // A known miss, bounded here so that it does not grow: over many 3-minute runs of sparse
    // callers (0.5 and 2 requests/s to a quota of 10/s, calls of 1.5 s), a cluster of stray
    // throttles sometimes passes for a quota (1 to 2% of runs at 3% strays, 8 to 11% at 5%),
    // and the pace it starts, below demand, queues that run's callers for up to the
    // request's deadline. (Judged on the last 6 s alone, it did in 4 to 38% of runs.)
    for (noise, k, most) in [
        (0.03, 0.05, 8),
        (0.03, 0.2, 6),
        (0.05, 0.05, 22),
        (0.05, 0.2, 30),
    ] {
        let mut paced = 0;
        for seed in 0..200 {
            let s = Scenario {
                noise,
                latency_spread: 0.3,
                seed,
                ..Scenario::claude(10.0, Shape::Bucket { burst: 10.0 }, k, 180.0, 1.5)
            };
            let o = run(&s);
            if o.pace_per_second.iter().any(|p| !p.is_nan()) {
                paced += 1;
            }
        }
        if std::env::var("SIM_TABLE").is_ok() {
            println!(
                "strays {noise}, {} requests/s: paced in {paced} of 200 runs",
                k * 10.0
            );
        }
        assert!(
            paced <= most,
            "strays {noise} at {k}: paced in {paced} of 200 runs"
        );
    }
}
