//! Prints the simulated goodput matrix (exploration aid): `cargo test -p actors --test
//! pacing_matrix -- --nocapture`.

mod sim;

use actors::throttle::ThrottlePolicy;
use sim::{run, summary, Scenario, Shape};

#[test]
fn matrix() {
    let filter = std::env::var("SIM_FILTER").unwrap_or_default();
    let policies: Vec<ThrottlePolicy> = match std::env::var("SIM_POLICIES").as_deref() {
        Ok("all") => vec![
            ThrottlePolicy::None,
            ThrottlePolicy::Seed,
            ThrottlePolicy::Adaptive,
        ],
        _ => vec![ThrottlePolicy::Adaptive],
    };
    let seeds: u64 = std::env::var("SIM_SEEDS")
        .ok()
        .and_then(|s| s.parse().ok())
        .unwrap_or(3);
    let seconds: f64 = std::env::var("SIM_SECONDS")
        .ok()
        .and_then(|s| s.parse().ok())
        .unwrap_or(300.0);
    for rpm in [30.0, 60.0, 200.0, 1000.0] {
        for shape in [
            Shape::Bucket { burst: 1.0 },
            Shape::MinuteBucket,
            Shape::Sliding,
            Shape::Fixed,
        ] {
            for k in [1.5, 3.0] {
                for policy in &policies {
                    for seed in 0..seeds {
                        let mut s = Scenario::per_minute(rpm, shape, k, seconds);
                        s.policy = *policy;
                        s.seed = seed;
                        if !s.name().contains(&filter) {
                            continue;
                        }
                        let o = run(&s);
                        println!("{:?} {}", policy, summary(&s, &o));
                        if std::env::var("SIM_TRACE").is_ok() {
                            print!("{}", sim::trace(&s, &o));
                        }
                    }
                }
            }
        }
    }
}
