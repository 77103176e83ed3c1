//! Child processes for the benchmarks (`overhead`, `scale`): the `bedrock-emulator` and
//! `model-server` release binaries on free loopback ports, readiness checks, and what
//! `/proc` says about them (RSS, peak RSS, CPU time, open fds). Included with
//! `#[path = "support/procs.rs"] mod procs;` next to `support/loadgen.rs`.
#![allow(dead_code)]

use std::net::{SocketAddr, TcpListener};
use std::path::PathBuf;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use crate::loadgen;

/// A child server; killed (and reaped) when dropped.
pub struct Proc {
    pub name: &'static str,
    pub addr: SocketAddr,
    child: Child,
}

impl Proc {
    pub fn pid(&self) -> u32 {
        self.child.id()
    }

    /// `http://ADDR`.
    pub fn url(&self) -> String {
        format!("http://{}", self.addr)
    }

    /// `VmRSS` and `VmHWM` (peak) in KiB.
    pub fn rss_kib(&self) -> (u64, u64) {
        rss_kib(self.pid())
    }

    /// CPU seconds (user + system, all threads) so far.
    pub fn cpu_secs(&self) -> f64 {
        loadgen::cpu_secs_of(&self.pid().to_string()).unwrap_or(0.0)
    }

    /// Open file descriptors.
    pub fn fds(&self) -> usize {
        std::fs::read_dir(format!("/proc/{}/fd", self.pid())).map_or(0, |d| d.count())
    }

    /// GET `path`: (status, body).
    pub fn get(&self, path: &str) -> std::io::Result<(u16, String)> {
        loadgen::http_request(self.addr, "GET", path, None, Duration::from_secs(5))
    }

    /// POST `body` to `path`: (status, body).
    pub fn post(&self, path: &str, body: &str) -> std::io::Result<(u16, String)> {
        loadgen::http_request(self.addr, "POST", path, Some(body), Duration::from_secs(30))
    }

    /// True while the process runs.
    pub fn alive(&mut self) -> bool {
        matches!(self.child.try_wait(), Ok(None))
    }
}

impl Drop for Proc {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// `VmRSS` and `VmHWM` of `pid` in KiB (0 when unreadable).
pub fn rss_kib(pid: u32) -> (u64, u64) {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).unwrap_or_default();
    let field = |name: &str| {
        status
            .lines()
            .find_map(|l| l.strip_prefix(name))
            .and_then(|v| v.trim().trim_end_matches("kB").trim().parse().ok())
            .unwrap_or(0)
    };
    (field("VmRSS:"), field("VmHWM:"))
}

/// Busy CPU seconds of the whole machine (user + nice + system + irq + softirq, all cores),
/// from `/proc/stat`.
pub fn machine_busy_secs() -> f64 {
    let stat = std::fs::read_to_string("/proc/stat").unwrap_or_default();
    let Some(line) = stat.lines().find(|l| l.starts_with("cpu ")) else {
        return 0.0;
    };
    let v: Vec<f64> = line
        .split_whitespace()
        .skip(1)
        .filter_map(|x| x.parse().ok())
        .collect();
    // user nice system idle iowait irq softirq steal ...
    let busy = [0, 1, 2, 5, 6]
        .iter()
        .map(|&i| v.get(i).copied().unwrap_or(0.0))
        .sum::<f64>();
    busy / 100.0
}

/// CPU seconds of every user process but this one and `exclude` (kernel threads left out),
/// with the CPU of their reaped children (`cutime`/`cstime`), so short-lived compiler
/// processes count too.
pub fn others_cpu_secs(exclude: &[u32]) -> f64 {
    let me = std::process::id();
    let Ok(dir) = std::fs::read_dir("/proc") else {
        return 0.0;
    };
    let mut total = 0.0;
    for entry in dir.flatten() {
        let Some(pid) = entry
            .file_name()
            .to_str()
            .and_then(|n| n.parse::<u32>().ok())
        else {
            continue;
        };
        if pid == me || exclude.contains(&pid) {
            continue;
        }
        let Ok(stat) = std::fs::read_to_string(format!("/proc/{pid}/stat")) else {
            continue;
        };
        let Some(close) = stat.rfind(')') else {
            continue;
        };
        let f: Vec<&str> = stat[close + 2..].split_whitespace().collect();
        let num = |i: usize| f.get(i).and_then(|v| v.parse::<f64>().ok()).unwrap_or(0.0);
        // After the name: state(0) ppid(1) ... flags(6) ... utime(11) stime(12) cutime(13)
        // cstime(14). PF_KTHREAD = 0x00200000.
        let flags = f.get(6).and_then(|v| v.parse::<u64>().ok()).unwrap_or(0);
        if flags & 0x0020_0000 != 0 || pid == 2 || num(1) == 2.0 {
            continue;
        }
        total += num(11) + num(12) + num(13) + num(14);
    }
    total / 100.0
}

/// A free loopback port (bound and released; another process could take it in between).
pub fn free_port() -> u16 {
    TcpListener::bind("127.0.0.1:0")
        .and_then(|l| l.local_addr())
        .map(|a| a.port())
        .expect("a free loopback port")
}

/// `target/release` (the directory above this example's `examples/`).
pub fn bin_dir() -> PathBuf {
    let exe = std::env::current_exe().expect("own path");
    let dir = exe.parent().expect("examples dir");
    if dir.ends_with("examples") {
        dir.parent().expect("profile dir").to_path_buf()
    } else {
        dir.to_path_buf()
    }
}

/// Builds both server binaries in release mode (`cargo build --release --bins`) unless
/// `skip`; on a failed build, goes on with the binaries already there, if any.
pub fn build_servers(skip: bool) {
    let dir = bin_dir();
    let present = dir.join("model-server").exists() && dir.join("bedrock-emulator").exists();
    if !skip {
        let cargo = std::env::var("CARGO").unwrap_or_else(|_| "cargo".into());
        eprintln!("building the release binaries (cargo build --release --bins) ...");
        let ok = Command::new(cargo)
            .args(["build", "--release", "--quiet", "--bins"])
            .status()
            .is_ok_and(|s| s.success());
        if !ok {
            eprintln!("warning: the build failed; using the binaries already in {dir:?}");
        }
    }
    let present = present || dir.join("model-server").exists();
    if !present || !dir.join("bedrock-emulator").exists() {
        eprintln!("no release binaries in {dir:?}: run `cargo build --release` first");
        std::process::exit(2);
    }
}

/// Waits until `GET path` answers 200.
pub fn wait_ready(p: &mut Proc, path: &str, within: Duration) -> Result<(), String> {
    let until = Instant::now() + within;
    loop {
        if !p.alive() {
            return Err(format!("{} exited while starting", p.name));
        }
        if let Ok((200, _)) = p.get(path) {
            return Ok(());
        }
        if Instant::now() > until {
            return Err(format!(
                "{} did not answer {path} within {within:?}",
                p.name
            ));
        }
        std::thread::sleep(Duration::from_millis(20));
    }
}

/// Where a child's stderr goes: `target/bench-logs/NAME.log`.
fn log_file(name: &str) -> Stdio {
    let dir = bin_dir()
        .parent()
        .map_or_else(|| PathBuf::from("bench-logs"), |t| t.join("bench-logs"));
    let _ = std::fs::create_dir_all(&dir);
    match std::fs::File::create(dir.join(format!("{name}.log"))) {
        Ok(f) => Stdio::from(f),
        Err(_) => Stdio::null(),
    }
}

/// Starts `bedrock-emulator` on a free port with `--latency-ms latency_ms` and `extra` flags
/// (no quota unless given), and waits for `/health`.
pub fn start_emulator(log_name: &str, latency_ms: u64, extra: &[String]) -> Proc {
    let port = free_port();
    let addr: SocketAddr = format!("127.0.0.1:{port}").parse().unwrap();
    let child = Command::new(bin_dir().join("bedrock-emulator"))
        .args([
            "--bind",
            &addr.to_string(),
            "--latency-ms",
            &latency_ms.to_string(),
        ])
        .args(extra)
        .env("RUST_LOG", "warn")
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(log_file(log_name))
        .spawn()
        .expect("bedrock-emulator starts");
    let mut p = Proc {
        name: "bedrock-emulator",
        addr,
        child,
    };
    if let Err(e) = wait_ready(&mut p, "/health", Duration::from_secs(20)) {
        eprintln!("{e} (log: target/bench-logs/{log_name}.log)");
        std::process::exit(1);
    }
    p
}

/// Starts `model-server` on a free port in front of `endpoint` with `extra` flags, and waits
/// for `/health`.
pub fn start_broker(log_name: &str, endpoint: &str, extra: &[String]) -> Proc {
    let port = free_port();
    let addr: SocketAddr = format!("127.0.0.1:{port}").parse().unwrap();
    let child = Command::new(bin_dir().join("model-server"))
        .args([
            "--bind",
            &addr.to_string(),
            "--bedrock-endpoint",
            endpoint,
            "--region",
            "us-east-1",
        ])
        .args(extra)
        .env("AWS_ACCESS_KEY_ID", "benchmark")
        .env("AWS_SECRET_ACCESS_KEY", "benchmark")
        .env("AWS_EC2_METADATA_DISABLED", "true")
        .env_remove("AWS_PROFILE")
        .env_remove("AWS_SESSION_TOKEN")
        .env_remove("AWS_BEARER_TOKEN_BEDROCK")
        .env("RUST_LOG", "warn")
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(log_file(log_name))
        .spawn()
        .expect("model-server starts");
    let mut p = Proc {
        name: "model-server",
        addr,
        child,
    };
    if let Err(e) = wait_ready(&mut p, "/health", Duration::from_secs(20)) {
        eprintln!("{e} (log: target/bench-logs/{log_name}.log)");
        std::process::exit(1);
    }
    p
}

/// Waits (up to `within`) until the broker's `/status` shows no request queued or running.
pub fn wait_broker_idle(broker: &Proc, within: Duration) -> bool {
    let until = Instant::now() + within;
    loop {
        if let Ok((200, body)) = broker.get("/status") {
            if let Ok(v) = serde_json::from_str::<serde_json::Value>(&body) {
                let busy: u64 = v["pools"].as_array().map_or(0, |pools| {
                    pools
                        .iter()
                        .map(|p| {
                            p["queue_depth"].as_u64().unwrap_or(0)
                                + p["in_flight"].as_u64().unwrap_or(0)
                        })
                        .sum()
                });
                if busy == 0 {
                    return true;
                }
            }
        }
        if Instant::now() > until {
            return false;
        }
        std::thread::sleep(Duration::from_millis(100));
    }
}

/// CPU seconds of each thread of `pid`, by thread id.
pub fn thread_cpu_secs(pid: u32) -> Vec<(u32, f64)> {
    let Ok(dir) = std::fs::read_dir(format!("/proc/{pid}/task")) else {
        return Vec::new();
    };
    dir.filter_map(|e| {
        let tid: u32 = e.ok()?.file_name().to_str()?.parse().ok()?;
        Some((tid, loadgen::cpu_secs_of(&format!("{pid}/task/{tid}"))?))
    })
    .collect()
}

/// CPU seconds of each process (and of its threads) and of the whole machine, to measure a
/// phase.
pub struct CpuMark {
    at: Instant,
    own: f64,
    procs: Vec<f64>,
    threads: Vec<Vec<(u32, f64)>>,
    others: f64,
    machine: f64,
}

/// Cores each process used over a phase.
pub struct CpuUse {
    /// This process (the load generator).
    pub own: f64,
    /// Each of the processes given, in order.
    pub procs: Vec<f64>,
    /// The busiest thread of each of those processes (1.0 = one thread busy all the time).
    pub top_thread: Vec<f64>,
    /// Every other user process (other builds and tests running at the same time).
    pub others: f64,
    /// The rest of the machine's busy time: kernel threads (`ksoftirqd` doing loopback
    /// network work, ...) and interrupts not charged to a process.
    pub kernel: f64,
}

impl CpuMark {
    pub fn now(procs: &[&Proc]) -> CpuMark {
        CpuMark {
            at: Instant::now(),
            own: loadgen::own_cpu_secs(),
            procs: procs.iter().map(|p| p.cpu_secs()).collect(),
            threads: procs.iter().map(|p| thread_cpu_secs(p.pid())).collect(),
            others: others_cpu_secs(&procs.iter().map(|p| p.pid()).collect::<Vec<_>>()),
            machine: machine_busy_secs(),
        }
    }

    /// Cores used since the mark.
    pub fn since(&self, procs: &[&Proc]) -> CpuUse {
        let wall = self.at.elapsed().as_secs_f64().max(1e-9);
        let own = loadgen::own_cpu_secs() - self.own;
        let each: Vec<f64> = procs
            .iter()
            .zip(&self.procs)
            .map(|(p, before)| p.cpu_secs() - before)
            .collect();
        let top_thread = procs
            .iter()
            .zip(&self.threads)
            .map(|(p, before)| {
                thread_cpu_secs(p.pid())
                    .iter()
                    .map(|(tid, secs)| {
                        let was = before
                            .iter()
                            .find(|(t, _)| t == tid)
                            .map_or(0.0, |(_, s)| *s);
                        (secs - was) / wall
                    })
                    .fold(0.0, f64::max)
            })
            .collect();
        let others = (others_cpu_secs(&procs.iter().map(|p| p.pid()).collect::<Vec<_>>())
            - self.others)
            .max(0.0);
        let machine = machine_busy_secs() - self.machine;
        let kernel = (machine - own - each.iter().sum::<f64>() - others).max(0.0);
        CpuUse {
            own: own / wall,
            procs: each.iter().map(|c| c / wall).collect(),
            top_thread,
            others: others / wall,
            kernel: kernel / wall,
        }
    }
}

/// The flags both benchmarks take for their generator and child processes.
#[derive(clap::Args, Debug)]
pub struct RunArgs {
    /// The generator's worker threads.
    #[arg(long, default_value_t = 1)]
    pub threads: usize,
    /// Extra flag for model-server (repeatable), e.g. `--broker-arg=--http-workers=1`.
    #[arg(long = "broker-arg", allow_hyphen_values = true)]
    pub broker_args: Vec<String>,
    /// Do not run `cargo build --release --bins` first.
    #[arg(long)]
    pub no_build: bool,
}
