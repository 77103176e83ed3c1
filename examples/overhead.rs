//! `overhead`: what the broker adds on top of a direct Bedrock call, in latency, throughput
//! and memory.
//!
//! ```text
//! cargo run --release --example overhead                  # 500..5000 req/s, 20 s each, then the search (~5 min)
//! cargo run --release --example overhead -- --seconds 5   # shorter phases
//! cargo run --release --example overhead -- --rates 1000 --no-search
//! cargo run --release --example overhead -- --rates 1000 --no-search --seconds 3 --warmup-seconds 1   # a short check
//! ```
//!
//! It builds the release binaries (`cargo build --release --bins`; `--no-build` skips it),
//! starts `target/release/bedrock-emulator` (latency 0, no quota) and
//! `target/release/model-server --bedrock-endpoint <emulator>` as child processes on free
//! loopback ports (`RUST_LOG=warn`, dummy AWS keys, `AWS_EC2_METADATA_DISABLED=true`; their
//! stderr goes to `target/bench-logs/`), reads the broker's idle RSS, warms both paths up,
//! and then, with the open-loop generator of `examples/support/loadgen.rs` (in-process; see
//! `examples/loadgen.rs`):
//!
//! 1. **Rate table.** For each rate (`--rates`, default 500, 1000, 2000, 5000 req/s) it runs
//!    the direct path (the emulator's `POST /model/{id}/invoke` with the body the broker
//!    sends) and then the broker path (`POST /infer` with the seed's body) for `--seconds`
//!    each. Columns: `p50`/`p99`/`p99.9` latency of the successes in ms, measured from each
//!    request's intended send time (no coordinated omission); `err`: requests that failed
//!    (non-2xx, transport error, or no answer within 10 s); `added p50`/`added p99`: broker
//!    minus direct at the same percentile; `ok/s`: successes per second actually achieved.
//!    A second table gives the CPU each process used during each phase, in cores (the
//!    machine has 2): `loadgen` (this process), `broker`, `brk thr` (the broker's busiest
//!    thread: near 1.00 means one thread is the limit), `emulator`, `others` (every other
//!    user process: builds or tests running at the same time show here, and make the phase
//!    less trustworthy), `kernel` (the rest of the machine's busy time: `ksoftirqd` doing
//!    loopback network work, interrupts), and the generator's own lag (how late it started
//!    requests; part of the latency).
//!    Broker figures in parentheses are its idle CPU during direct phases.
//! 2. **Routes.** At `--route-rate` (1,000 req/s) for `--seconds` each, one after the other:
//!    the direct path, `/infer`, then each of `--routes` (default `messages,chat,converse`:
//!    `POST /v1/messages`, `POST /v1/chat/completions` and `POST /model/{id}/converse`, the
//!    same conversation in each route's own format, answered whole). Columns: latency
//!    percentiles and errors as above, then `+dir p50/p99` (the route minus the direct path)
//!    and `+infer p50/p99` (the route minus `/infer`: what the route's protocol translation
//!    costs on top of the seed's API), and the broker's CPU. `--no-routes` skips it.
//! 3. **Sustained rate.** For each path, a step search: from `--search-start` (5000) up by
//!    50% per step while the path passes, down by 30% per step while it fails, then
//!    bisections until the bracket is within 5% (at most `--search-max-runs` runs per path);
//!    runs of `--search-seconds` (5 s). A rate passes when fewer than 0.1% of requests fail
//!    (an answer later than `--search-timeout-ms`, 200 ms, after its intended send time
//!    counts as a failure: past its capacity a server's queue and latency grow without bound)
//!    and successes per second reach 95% of the offered rate. A failed run during which other
//!    processes (`others`) used a quarter of a core or more is repeated once. It prints each run (same CPU
//!    columns) and the highest rate each path passed, and the broker's as a share of the
//!    direct's. Both paths share the 2 cores with the generator, so "sustained" is what this
//!    machine sustains with all three processes on it.
//! 4. **Memory.** The broker's `VmRSS` at idle (after start-up, before any load), after the
//!    load, and its peak `VmHWM` after the rate table and at the end (the search overloads it).
//!
//! It ends with the figures next to the targets (added latency at 1,000 req/s p50 <= 0.3 ms,
//! p99 <= 1 ms; broker sustains >= 50% of the direct rate; idle RSS <= 30 MiB), and each
//! route's latency added over `/infer`.
//!
//! **What metrics cost** (`--metrics-cost`, instead of all the above):
//! ```text
//! cargo run --release --example overhead -- --metrics-cost                  # ~8 min
//! cargo run --release --example overhead -- --metrics-cost --metrics-cost-rounds 1 --search-seconds 1 --search-max-runs 2 --scrapes 20   # a smoke run
//! ```
//! It starts a second broker with `--disable-metrics` beside the first (same flags
//! otherwise) and runs the sustained-rate search above on the broker with metrics and on the
//! one without, alternately, `--metrics-cost-rounds` times each (default 2), and reports the
//! best rate of each and the drop (target: at most 3%). Then a third broker
//! (`--metrics-max-models 1000`) gets one request per new model name until its `/metrics`
//! holds `--scrape-series` series (default 2,000), and `--scrapes` scrapes (default 200, one
//! connection each, after 20 unmeasured) are timed from request to last byte: p50, p99 and max
//! (target: at most 5 ms).

#[path = "support/loadgen.rs"]
mod loadgen;
#[path = "support/procs.rs"]
mod procs;

use std::time::Duration;

use clap::Parser;
use loadgen::{LoadConfig, LoadResult, Mode};
use procs::{CpuMark, CpuUse, Proc};

#[derive(Parser, Debug)]
#[command(about = "Broker overhead: added latency, sustained rate and RSS vs the direct path")]
struct Args {
    /// Offered rates of the table, requests per second (comma-separated).
    #[arg(long, value_delimiter = ',', default_value = "500,1000,2000,5000")]
    rates: Vec<f64>,
    /// Seconds of load per path and rate in the table.
    #[arg(long, default_value_t = 20.0)]
    seconds: f64,
    /// Seconds of warm-up load per path before the table (not measured).
    #[arg(long, default_value_t = 2.0)]
    warmup_seconds: f64,
    /// Skip the sustained-rate search.
    #[arg(long)]
    no_search: bool,
    /// The client-protocol routes measured against `/infer` (comma-separated: messages, chat,
    /// converse).
    #[arg(long, value_delimiter = ',', default_value = "messages,chat,converse")]
    routes: Vec<Mode>,
    /// The rate at which the routes are compared, requests per second.
    #[arg(long, default_value_t = 1000.0)]
    route_rate: f64,
    /// Skip the route comparison.
    #[arg(long)]
    no_routes: bool,
    /// First rate of the search.
    #[arg(long, default_value_t = 5000.0)]
    search_start: f64,
    /// Seconds of load per search step.
    #[arg(long, default_value_t = 5.0)]
    search_seconds: f64,
    /// Search: an answer later than this after its intended send time counts as an error, in
    /// ms (an overloaded server's queue, and so its latency, grows without bound).
    #[arg(long, default_value_t = 200)]
    search_timeout_ms: u64,
    /// Most search runs per path.
    #[arg(long, default_value_t = 14)]
    search_max_runs: usize,
    /// The generator's connection limit.
    #[arg(long, default_value_t = 256)]
    connections: usize,
    /// Measure what metrics cost instead (see the module doc): the sustained rate with and
    /// without metrics, and the time of a scrape of --scrape-series series.
    #[arg(long)]
    metrics_cost: bool,
    /// --metrics-cost: searches per broker (alternating with and without metrics).
    #[arg(long, default_value_t = 2)]
    metrics_cost_rounds: usize,
    /// --metrics-cost: series the scraped /metrics holds.
    #[arg(long, default_value_t = 2000)]
    scrape_series: usize,
    /// --metrics-cost: scrapes timed.
    #[arg(long, default_value_t = 200)]
    scrapes: usize,
    /// How the generator and the child processes run.
    #[command(flatten)]
    run: procs::RunArgs,
}

/// One measured run and the CPU used during it.
struct Phase {
    result: LoadResult,
    cpu: CpuUse,
}

struct Bench<'a> {
    args: &'a Args,
    emulator: &'a Proc,
    broker: &'a Proc,
}

impl Bench<'_> {
    fn config(&self, mode: Mode, rate: f64, seconds: f64, timeout: Duration) -> LoadConfig {
        let target = if mode.is_broker() {
            self.broker.url()
        } else {
            self.emulator.url()
        };
        let mut cfg = LoadConfig::new(&target, mode, rate, seconds).expect("loopback URL");
        cfg.connections = self.args.connections;
        cfg.threads = self.args.run.threads;
        cfg.client_timeout = timeout;
        cfg
    }

    /// Runs one phase once the broker is idle.
    fn phase(&self, mode: Mode, rate: f64, seconds: f64, timeout: Duration) -> Phase {
        if !procs::wait_broker_idle(self.broker, Duration::from_secs(60)) {
            eprintln!("warning: the broker still had requests queued or running after 60 s");
        }
        std::thread::sleep(Duration::from_millis(300));
        let cfg = self.config(mode, rate, seconds, timeout);
        let procs = [self.broker, self.emulator];
        let mark = CpuMark::now(&procs);
        let result = loadgen::run(&cfg);
        let cpu = mark.since(&procs);
        Phase { result, cpu }
    }
}

fn mib(kib: u64) -> f64 {
    kib as f64 / 1024.0
}

fn main() {
    let args = Args::parse();
    procs::build_servers(args.run.no_build);
    let cores = std::thread::available_parallelism().map_or(1, |n| n.get());
    let emulator = procs::start_emulator("overhead-emulator", 0, &[]);
    let broker = procs::start_broker("overhead-broker", &emulator.url(), &args.run.broker_args);
    // Let start-up settle, then the idle footprint, before any request.
    std::thread::sleep(Duration::from_secs(1));
    let (idle_rss, _) = broker.rss_kib();
    let (emulator_idle_rss, _) = emulator.rss_kib();
    println!(
        "overhead benchmark: {cores} cores; emulator {} (latency 0, no quota, pid {}), broker {} (pid {}{}); generator: {} thread(s), <= {} connections",
        emulator.url(),
        emulator.pid(),
        broker.url(),
        broker.pid(),
        if args.run.broker_args.is_empty() {
            String::new()
        } else {
            format!(", {}", args.run.broker_args.join(" "))
        },
        args.run.threads,
        args.connections,
    );
    println!(
        "idle RSS before any load: broker {:.1} MiB, emulator {:.1} MiB",
        mib(idle_rss),
        mib(emulator_idle_rss)
    );
    // One request per path and route: each answers 200 with a reply.
    let routes: Vec<Mode> = if args.no_routes {
        Vec::new()
    } else {
        args.routes.clone()
    };
    let mut probes = vec![
        (Mode::Direct, &emulator, "\"content\""),
        (Mode::Broker, &broker, "\"response\""),
    ];
    for &mode in &routes {
        let needle = match mode {
            Mode::Messages => "\"content\"",
            Mode::Chat => "\"chat.completion\"",
            Mode::Converse => "\"output\"",
            Mode::Broker | Mode::Direct => {
                eprintln!(
                    "--routes takes messages, chat and converse, not {}",
                    mode.name()
                );
                std::process::exit(2);
            }
        };
        probes.push((mode, &broker, needle));
    }
    for (mode, proc_, needle) in probes {
        let (path, body) = loadgen::request_body(mode, 100, None);
        match proc_.post(&path, &body) {
            Ok((200, reply)) if reply.contains(needle) => {}
            other => {
                eprintln!("{} probe failed: {other:?}", mode.name());
                std::process::exit(1);
            }
        }
    }
    let bench = Bench {
        args: &args,
        emulator: &emulator,
        broker: &broker,
    };
    let table_timeout = Duration::from_secs(10);
    if args.warmup_seconds > 0.0 {
        for &mode in [Mode::Direct, Mode::Broker].iter().chain(&routes) {
            bench.phase(mode, 1000.0, args.warmup_seconds, table_timeout);
        }
    }

    if args.metrics_cost {
        metrics_cost(&bench);
        return;
    }

    // 1. The rate table: direct and broker alternately.
    let mut rows = Vec::new();
    for &rate in &args.rates {
        let direct = bench.phase(Mode::Direct, rate, args.seconds, table_timeout);
        eprintln!("{}", direct.result.summary());
        let brokered = bench.phase(Mode::Broker, rate, args.seconds, table_timeout);
        eprintln!("{}", brokered.result.summary());
        rows.push((rate, direct, brokered));
    }
    print_tables(&args, &rows);

    // 2. The routes against /infer at one rate, one after the other.
    let mut route_rows = Vec::new();
    if !routes.is_empty() {
        for &mode in [Mode::Direct, Mode::Broker].iter().chain(&routes) {
            let p = bench.phase(mode, args.route_rate, args.seconds, table_timeout);
            eprintln!("{}", p.result.summary());
            route_rows.push(p);
        }
        print_route_table(&args, &route_rows);
    }
    let (after_table_rss, after_table_hwm) = broker.rss_kib();

    // 3. The sustained-rate search.
    let mut sustained = None;
    if !args.no_search {
        println!(
            "\n== highest sustained rate: {} s runs; pass = < 0.1% errors (an answer later than {} ms counts as one) and ok/s >= 95% of offered",
            args.search_seconds, args.search_timeout_ms
        );
        println!(
            "{:<7} {:>7} {:>5} {:>8} {:>7} {:>8} {:>8} {:>8}   {:>7} {:>7} {:>7} {:>8} {:>6} {:>6}",
            "path",
            "rate",
            "pass",
            "errors",
            "ok/s",
            "p50 ms",
            "p99 ms",
            "lag p99",
            "loadgen",
            "broker",
            "brk thr",
            "emulator",
            "others",
            "kernel"
        );
        let direct = search(&bench, Mode::Direct);
        let brokered = search(&bench, Mode::Broker);
        println!(
            "direct sustains {}; broker sustains {}{}",
            rate_text(direct),
            rate_text(brokered),
            match (direct, brokered) {
                (Some(d), Some(b)) => format!(" ({:.0}% of direct)", 100.0 * b / d),
                _ => String::new(),
            }
        );
        sustained = Some((direct, brokered));
    }

    // 4. Memory.
    std::thread::sleep(Duration::from_secs(1));
    let (rss_now, hwm_end) = broker.rss_kib();
    let (emulator_rss, emulator_hwm) = emulator.rss_kib();
    println!(
        "\n== broker memory (VmRSS / VmHWM from /proc/{}/status)",
        broker.pid()
    );
    println!(
        "idle, before any load:            VmRSS {:>7.1} MiB",
        mib(idle_rss)
    );
    println!(
        "after the rate table:             VmRSS {:>7.1} MiB, peak VmHWM {:>7.1} MiB",
        mib(after_table_rss),
        mib(after_table_hwm)
    );
    if !args.no_search {
        println!(
            "at the end (after the search):    VmRSS {:>7.1} MiB, peak VmHWM {:>7.1} MiB",
            mib(rss_now),
            mib(hwm_end)
        );
    }
    println!(
        "(emulator: VmRSS {:.1} MiB, peak {:.1} MiB)",
        mib(emulator_rss),
        mib(emulator_hwm)
    );

    // The figures next to the targets.
    println!("\n== against the targets");
    if let Some((_, d, b)) = rows.iter().find(|(rate, _, _)| *rate == 1000.0) {
        println!(
            "added latency at 1,000 req/s: p50 {:.3} ms (target <= 0.3), p99 {:.3} ms (target <= 1)",
            b.result.ms(0.5) - d.result.ms(0.5),
            b.result.ms(0.99) - d.result.ms(0.99)
        );
    } else {
        println!("added latency at 1,000 req/s: not measured (1000 is not in --rates)");
    }
    if let [direct, infer, routes @ ..] = &route_rows[..] {
        for p in routes {
            let r = &p.result;
            println!(
                "{} at {:.0} req/s: p50 {:.3} ms, p99 {:.3} ms over /infer ({:.3} / {:.3} ms over direct)",
                r.mode.route(),
                args.route_rate,
                r.ms(0.5) - infer.result.ms(0.5),
                r.ms(0.99) - infer.result.ms(0.99),
                r.ms(0.5) - direct.result.ms(0.5),
                r.ms(0.99) - direct.result.ms(0.99),
            );
        }
    }
    if let Some((Some(d), Some(b))) = sustained {
        println!(
            "sustained rate: broker {:.0} req/s = {:.0}% of direct {:.0} req/s (target >= 50%)",
            b,
            100.0 * b / d,
            d
        );
    }
    println!(
        "broker idle RSS: {:.1} MiB (target <= 30 MiB)",
        mib(idle_rss)
    );
}

fn rate_text(rate: Option<f64>) -> String {
    rate.map_or("no tested rate".into(), |r| format!("{r:.0} req/s"))
}

fn print_tables(args: &Args, rows: &[(f64, Phase, Phase)]) {
    println!(
        "\n== latency (ms, from each request's intended send time), {} s per phase, direct and broker alternately",
        args.seconds
    );
    println!(
        "{:>6} | {:>7} {:>7} {:>7} {:>5} | {:>7} {:>7} {:>7} {:>5} | {:>9} {:>9} | {:>8} {:>8}",
        "rate",
        "dir p50",
        "p99",
        "p99.9",
        "err",
        "brk p50",
        "p99",
        "p99.9",
        "err",
        "added p50",
        "added p99",
        "ok/s dir",
        "ok/s brk"
    );
    for (rate, d, b) in rows {
        let (d, b) = (&d.result, &b.result);
        println!(
            "{:>6.0} | {:>7.3} {:>7.3} {:>7.3} {:>5} | {:>7.3} {:>7.3} {:>7.3} {:>5} | {:>9.3} {:>9.3} | {:>8.0} {:>8.0}",
            rate,
            d.ms(0.5),
            d.ms(0.99),
            d.ms(0.999),
            d.error_count(),
            b.ms(0.5),
            b.ms(0.99),
            b.ms(0.999),
            b.error_count(),
            b.ms(0.5) - d.ms(0.5),
            b.ms(0.99) - d.ms(0.99),
            d.ok_rate(),
            b.ok_rate()
        );
    }
    for (rate, d, b) in rows {
        for r in [&d.result, &b.result] {
            if r.error_count() > 0 {
                println!(
                    "  {rate:.0} req/s {}: errors {}",
                    r.mode.name(),
                    r.errors_text()
                );
            }
        }
    }
    println!("\n== CPU per phase (cores; the machine has 2): loadgen = this process; brk thr = the broker's busiest thread; others = other processes; kernel = the rest");
    println!(
        "{:>6} {:<7} | {:>7} {:>7} {:>7} {:>8} {:>6} {:>6} | {:>11} {:>11}",
        "rate",
        "path",
        "loadgen",
        "broker",
        "brk thr",
        "emulator",
        "others",
        "kernel",
        "lag p99 ms",
        "lag max ms"
    );
    for (rate, d, b) in rows {
        for p in [d, b] {
            let lag = |q: f64| p.result.lag.value_at_quantile(q) as f64 / 1000.0;
            println!(
                "{:>6.0} {:<7} | {} | {:>11.3} {:>11.3}",
                rate,
                p.result.mode.name(),
                cpu_columns(p),
                lag(0.99),
                p.result.lag.max() as f64 / 1000.0,
            );
        }
    }
}

/// The route comparison: direct, `/infer`, then each route, at `--route-rate`.
fn print_route_table(args: &Args, rows: &[Phase]) {
    println!(
        "\n== routes at {:.0} req/s (ms, from each request's intended send time), {} s each, one after the other",
        args.route_rate, args.seconds
    );
    println!(
        "{:<26} | {:>7} {:>7} {:>7} {:>5} {:>7} | {:>8} {:>8} | {:>10} {:>10} | {:>6}",
        "route",
        "p50",
        "p99",
        "p99.9",
        "err",
        "ok/s",
        "+dir p50",
        "+dir p99",
        "+infer p50",
        "+infer p99",
        "broker"
    );
    let (direct, infer) = (&rows[0].result, &rows[1].result);
    for p in rows {
        let r = &p.result;
        let added = |base: &LoadResult, q: f64| {
            if r.mode == base.mode {
                "-".to_string()
            } else {
                format!("{:.3}", r.ms(q) - base.ms(q))
            }
        };
        println!(
            "{:<26} | {:>7.3} {:>7.3} {:>7.3} {:>5} {:>7.0} | {:>8} {:>8} | {:>10} {:>10} | {:>6}",
            r.mode.route(),
            r.ms(0.5),
            r.ms(0.99),
            r.ms(0.999),
            r.error_count(),
            r.ok_rate(),
            added(direct, 0.5),
            added(direct, 0.99),
            if r.mode.is_broker() {
                added(infer, 0.5)
            } else {
                "-".into()
            },
            if r.mode.is_broker() {
                added(infer, 0.99)
            } else {
                "-".into()
            },
            broker_cpu(p, false),
        );
        if r.error_count() > 0 {
            println!("  errors: {}", r.errors_text());
        }
    }
}

/// Does the path sustain the run's rate?
fn passes(r: &LoadResult) -> bool {
    r.error_fraction() < 0.001 && r.ok_rate() >= 0.95 * r.rate
}

/// Step search for the highest rate `mode` sustains; prints each run. Up by half while it
/// passes, down by 30% while it fails, then bisections until the bracket is within 5%.
fn search(bench: &Bench, mode: Mode) -> Option<f64> {
    let args = bench.args;
    let round = |r: f64| ((r / 100.0).round() * 100.0).max(100.0);
    let timeout = Duration::from_millis(args.search_timeout_ms);
    let mut best_pass: Option<f64> = None;
    let mut lowest_fail: Option<f64> = None;
    let mut rate = round(args.search_start);
    let mut repeated = false;
    for _ in 0..args.search_max_runs {
        let p = bench.phase(mode, rate, args.search_seconds, timeout);
        let ok = passes(&p.result);
        print_search_row(&p, ok);
        // A failure while other processes took a quarter of a core or more is run once more.
        if !ok && p.cpu.others >= 0.25 && !repeated {
            println!("        (other processes were busy during that run: repeating it)");
            repeated = true;
            continue;
        }
        repeated = false;
        if ok {
            best_pass = Some(best_pass.map_or(rate, |b: f64| b.max(rate)));
        } else {
            lowest_fail = Some(lowest_fail.map_or(rate, |f: f64| f.min(rate)));
        }
        rate = match (best_pass, lowest_fail) {
            (Some(_), None) => round(rate * 1.5),
            (None, Some(_)) if rate > 100.0 => round(rate * 0.7),
            (None, Some(_)) => break,
            (Some(lo), Some(hi)) => {
                let mid = round((lo + hi) / 2.0);
                if hi - lo <= 0.05 * lo || mid <= lo || mid >= hi {
                    break;
                }
                mid
            }
            (None, None) => unreachable!(),
        };
    }
    best_pass
}

/// The broker's CPU column (in parentheses on the direct path, where it only idles), or its
/// busiest thread's.
/// The CPU columns both tables print: loadgen, broker, its busiest thread, emulator, others,
/// kernel.
fn cpu_columns(p: &Phase) -> String {
    format!(
        "{:>7.2} {:>7} {:>7} {:>8.2} {:>6.2} {:>6.2}",
        p.cpu.own,
        broker_cpu(p, false),
        broker_cpu(p, true),
        p.cpu.procs[1],
        p.cpu.others,
        p.cpu.kernel,
    )
}

fn broker_cpu(p: &Phase, top_thread: bool) -> String {
    let v = if top_thread {
        p.cpu.top_thread[0]
    } else {
        p.cpu.procs[0]
    };
    if p.result.mode.is_broker() {
        format!("{v:.2}")
    } else {
        format!("({v:.2})")
    }
}

fn print_search_row(p: &Phase, ok: bool) {
    let r = &p.result;
    let lag99 = r.lag.value_at_quantile(0.99) as f64 / 1000.0;
    println!(
        "{:<7} {:>7.0} {:>5} {:>7.3}% {:>7.0} {:>8.3} {:>8.3} {:>8.3}   {}{}",
        r.mode.name(),
        r.rate,
        if ok { "yes" } else { "no" },
        100.0 * r.error_fraction(),
        r.ok_rate(),
        r.ms(0.5),
        r.ms(0.99),
        lag99,
        cpu_columns(p),
        if r.error_count() > 0 {
            format!("  [{}]", r.errors_text())
        } else {
            String::new()
        }
    );
}

/// `--metrics-cost`: the sustained rate with and without metrics, then the scrape time.
fn metrics_cost(with: &Bench) {
    let args = with.args;
    // 1. A broker without metrics beside the one with them.
    let mut off_args = args.run.broker_args.clone();
    off_args.push("--disable-metrics".into());
    let off = procs::start_broker("overhead-broker-nometrics", &with.emulator.url(), &off_args);
    let without = Bench {
        args,
        emulator: with.emulator,
        broker: &off,
    };
    if args.warmup_seconds > 0.0 {
        without.phase(
            Mode::Broker,
            1000.0,
            args.warmup_seconds,
            Duration::from_secs(10),
        );
    }
    println!(
        "\n== sustained rate with and without metrics: {} s runs; pass = < 0.1% errors (an answer later than {} ms counts as one) and ok/s >= 95% of offered",
        args.search_seconds, args.search_timeout_ms
    );
    let (mut on_rates, mut off_rates) = (Vec::new(), Vec::new());
    for round in 1..=args.metrics_cost_rounds {
        for (label, bench, rates) in [
            ("metrics on", with, &mut on_rates),
            ("metrics off", &without, &mut off_rates),
        ] {
            println!(
                "-- {label}, round {round} (broker pid {})",
                bench.broker.pid()
            );
            let rate = search(bench, Mode::Broker);
            println!("   {label}, round {round}: sustains {}", rate_text(rate));
            rates.extend(rate);
        }
    }
    let best = |rates: &[f64]| {
        rates
            .iter()
            .copied()
            .fold(None, |b: Option<f64>, r| Some(b.map_or(r, |b| b.max(r))))
    };
    let (on, off_rate) = (best(&on_rates), best(&off_rates));
    drop(off);

    // 2. A /metrics of the wanted size, then timed scrapes.
    let mut scrape_args = args.run.broker_args.clone();
    scrape_args.extend(["--metrics-max-models".to_string(), "1000".to_string()]);
    let broker = procs::start_broker("overhead-broker-scrape", &with.emulator.url(), &scrape_args);
    let series = |body: &str| {
        body.lines()
            .filter(|l| !l.is_empty() && !l.starts_with('#'))
            .count()
    };
    let mut models = 0;
    loop {
        let (status, body) = broker.get("/metrics").expect("GET /metrics");
        assert_eq!(status, 200, "/metrics: {body}");
        if series(&body) >= args.scrape_series || models >= 1000 {
            break;
        }
        for _ in 0..4 {
            let model = format!("scrape-model-{models:04}");
            let (path, body) = loadgen::request_body(Mode::Broker, 10, None);
            let body = body.replace(loadgen::MODEL, &model);
            let (status, reply) = broker.post(&path, &body).expect("POST /infer");
            assert_eq!(status, 200, "{reply}");
            models += 1;
        }
    }
    let mut times = Vec::with_capacity(args.scrapes);
    let (mut bytes, mut count) = (0, 0);
    for i in 0..args.scrapes + 20 {
        let started = std::time::Instant::now();
        let (status, body) = broker.get("/metrics").expect("GET /metrics");
        let took = started.elapsed();
        assert_eq!(status, 200);
        if i >= 20 {
            times.push(took.as_secs_f64() * 1000.0);
        }
        bytes = body.len();
        count = series(&body);
    }
    times.sort_by(f64::total_cmp);
    let at = |q: f64| times[((q * times.len() as f64).ceil() as usize).clamp(1, times.len()) - 1];

    println!("\n== what metrics cost");
    println!(
        "sustained rate: with metrics {} (runs: {:?}), without {} (runs: {:?}){}",
        rate_text(on),
        on_rates,
        rate_text(off_rate),
        off_rates,
        match (on, off_rate) {
            (Some(on), Some(off)) =>
                format!("; drop {:.1}% (target <= 3%)", 100.0 * (off - on) / off),
            _ => String::new(),
        }
    );
    println!(
        "scrape of {count} series ({:.0} KiB, {models} models): p50 {:.3} ms, p99 {:.3} ms, max {:.3} ms over {} scrapes, request to last byte on a new connection (target <= 5 ms)",
        bytes as f64 / 1024.0,
        at(0.5),
        at(0.99),
        times.last().copied().unwrap_or(0.0),
        times.len()
    );
}
