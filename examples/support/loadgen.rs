//! The open-loop load generator's core, shared by the `loadgen`, `overhead` and `scale`
//! examples (included with `#[path = "support/loadgen.rs"] mod loadgen;`); the streamed
//! generator `stream_load.rs` runs on its schedule ([`schedule`], [`serve_due`]) too.
//!
//! Design (see `examples/loadgen.rs` for the flags):
//! - **Open loop, no coordinated omission.** Request `i` is due at `start + i / rate`. A
//!   dispatcher thread sleeps (`std::thread::sleep`, tens of microseconds of precision, unlike
//!   tokio's 1 ms timer wheel) until each due time and hands the request to a worker thread;
//!   it never waits for answers. Latency is measured from the *due* time to the last byte of
//!   the answer, so waiting in the dispatcher, in a worker, for a free connection, or in the
//!   server all count.
//! - **Workers**: `threads` OS threads, each a single-threaded tokio runtime with its own
//!   connection pool (`connections / threads` connections at most, kept alive and reused
//!   last-in-first-out) and its own histogram; they take requests round-robin.
//! - **A minimal HTTP/1.1 client** (one precomputed request written with one `write`, the
//!   answer framed by `Content-Length` or `chunked`), so the generator costs a few microseconds
//!   of CPU per request and leaves the shared cores to the servers under test. A reused
//!   connection that the server had closed (EOF before any byte of the answer) is retried once
//!   on a new connection and counted in `stale_retries`.
//! - **Histograms**: `hdrhistogram`, microseconds, 3 significant digits, successes (2xx) only;
//!   every other outcome is an error counted by kind (`status 503`, `timeout`, `connect: ...`,
//!   `read: ...`, `eof`, `bad response`).
#![allow(dead_code)]

use std::cell::{Cell, RefCell};
use std::collections::BTreeMap;
use std::net::{SocketAddr, ToSocketAddrs};
use std::rc::Rc;
use std::str::FromStr;
use std::sync::Arc;
use std::time::{Duration, Instant};

use hdrhistogram::Histogram;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;
use tokio::sync::{mpsc, Notify, Semaphore};

/// The seed's model.
pub const MODEL: &str = "us.anthropic.claude-sonnet-4-20250514-v1:0";
/// The one short user message every request carries.
pub const PROMPT: &str = "Say hello in one short sentence.";
/// Idle keep-alive connections older than this are not reused (actix-web closes idle
/// connections after 5 s by default).
const MAX_IDLE: Duration = Duration::from_secs(2);
/// Largest response head accepted.
const MAX_HEAD: usize = 64 * 1024;
/// Highest latency the histograms hold (larger values are clamped), in microseconds.
const HIST_MAX_US: u64 = 3_600_000_000;

/// Which route the load aims at.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Mode {
    /// The broker's `POST /infer` with the seed's body.
    Broker,
    /// The emulator's (Bedrock's) `POST /model/{id}/invoke` with the body the broker sends.
    Direct,
    /// The broker's `POST /v1/messages` (Anthropic Messages API), answered whole.
    Messages,
    /// The broker's `POST /v1/chat/completions` (OpenAI Chat Completions), answered whole.
    Chat,
    /// The broker's `POST /model/{id}/converse` (Bedrock Converse).
    Converse,
}

impl Mode {
    pub fn name(self) -> &'static str {
        match self {
            Mode::Broker => "broker",
            Mode::Direct => "direct",
            Mode::Messages => "messages",
            Mode::Chat => "chat",
            Mode::Converse => "converse",
        }
    }

    /// The route the mode sends to, for tables.
    pub fn route(self) -> &'static str {
        match self {
            Mode::Broker => "POST /infer",
            Mode::Direct => "emulator InvokeModel",
            Mode::Messages => "POST /v1/messages",
            Mode::Chat => "POST /v1/chat/completions",
            Mode::Converse => "POST /model/{id}/converse",
        }
    }

    /// Whether the mode aims at the broker (else at the emulator or Bedrock).
    pub fn is_broker(self) -> bool {
        self != Mode::Direct
    }
}

impl FromStr for Mode {
    type Err = String;
    fn from_str(s: &str) -> Result<Mode, String> {
        match s {
            "broker" | "infer" => Ok(Mode::Broker),
            "direct" => Ok(Mode::Direct),
            "messages" => Ok(Mode::Messages),
            "chat" => Ok(Mode::Chat),
            "converse" => Ok(Mode::Converse),
            other => Err(format!(
                "mode must be broker (or infer), direct, messages, chat or converse, not {other:?}"
            )),
        }
    }
}

/// What to send, how fast, for how long.
#[derive(Clone, Debug)]
pub struct LoadConfig {
    /// The server's address.
    pub addr: SocketAddr,
    /// The `Host` header (`host:port` as given in the URL).
    pub host: String,
    pub mode: Mode,
    /// Requests per second.
    pub rate: f64,
    /// Length of the schedule; `rate * seconds` requests are sent (rounded).
    pub seconds: f64,
    /// Most connections open at once (over all workers); a request waits for one.
    pub connections: usize,
    /// Worker threads.
    pub threads: usize,
    /// A request not answered this long after its due time is given up (error `timeout`).
    pub client_timeout: Duration,
    /// The request's deadline in seconds (`/infer`: the body's `timeout` field; the other
    /// broker routes: `x-modelserver-timeout`); absent: the broker's default.
    pub infer_timeout_secs: Option<f64>,
    /// `max_tokens` of the request.
    pub max_tokens: u32,
}

impl LoadConfig {
    /// A config with the defaults for `url` (`http://host:port`, any path ignored).
    pub fn new(url: &str, mode: Mode, rate: f64, seconds: f64) -> Result<LoadConfig, String> {
        let (addr, host) = parse_url(url)?;
        Ok(LoadConfig {
            addr,
            host,
            mode,
            rate,
            seconds,
            connections: 256,
            threads: 1,
            client_timeout: Duration::from_secs(10),
            infer_timeout_secs: None,
            max_tokens: 100,
        })
    }

    /// Requests the schedule holds.
    pub fn total(&self) -> u64 {
        (self.rate * self.seconds).round().max(0.0) as u64
    }
}

/// `http://host:port[/...]` -> the address and the `Host` header.
pub fn parse_url(url: &str) -> Result<(SocketAddr, String), String> {
    let rest = url
        .strip_prefix("http://")
        .ok_or_else(|| format!("only http:// URLs are supported, not {url:?}"))?;
    let host = rest.split('/').next().unwrap_or_default();
    if host.is_empty() {
        return Err(format!("no host in {url:?}"));
    }
    let with_port = if host
        .rsplit_once(':')
        .is_some_and(|(_, p)| p.parse::<u16>().is_ok())
    {
        host.to_string()
    } else {
        format!("{host}:80")
    };
    let addr = with_port
        .to_socket_addrs()
        .map_err(|e| format!("cannot resolve {host:?}: {e}"))?
        .next()
        .ok_or_else(|| format!("{host:?} resolves to no address"))?;
    Ok((addr, host.to_string()))
}

/// The model id as one path segment, encoded like the AWS SDK does (`:` -> `%3A`, `/` ->
/// `%2F`).
pub fn model_segment() -> String {
    MODEL
        .replace('%', "%25")
        .replace(':', "%3A")
        .replace('/', "%2F")
}

/// The request's path and JSON body for `mode`: the same conversation (one short user
/// message, `max_tokens`) in each route's own format.
pub fn request_body(
    mode: Mode,
    max_tokens: u32,
    infer_timeout_secs: Option<f64>,
) -> (String, String) {
    let messages = serde_json::json!([{"role": "user", "content": PROMPT}]);
    match mode {
        Mode::Broker => {
            let mut body = serde_json::json!({
                "type": "claude",
                "model_name": MODEL,
                "payload": {"messages": messages, "max_tokens": max_tokens},
            });
            if let Some(t) = infer_timeout_secs {
                body["timeout"] = serde_json::json!(t);
            }
            ("/infer".to_string(), body.to_string())
        }
        Mode::Direct => {
            let body = serde_json::json!({
                "anthropic_version": "bedrock-2023-05-31",
                "max_tokens": max_tokens,
                "temperature": 0.1,
                "messages": messages,
            });
            (
                format!("/model/{}/invoke", model_segment()),
                body.to_string(),
            )
        }
        Mode::Messages => {
            let body = serde_json::json!({
                "model": MODEL, "max_tokens": max_tokens, "temperature": 0.1, "messages": messages,
            });
            ("/v1/messages".to_string(), body.to_string())
        }
        Mode::Chat => {
            let body = serde_json::json!({
                "model": MODEL, "max_tokens": max_tokens, "temperature": 0.1, "messages": messages,
            });
            ("/v1/chat/completions".to_string(), body.to_string())
        }
        Mode::Converse => {
            let body = serde_json::json!({
                "messages": [{"role": "user", "content": [{"text": PROMPT}]}],
                "inferenceConfig": {"maxTokens": max_tokens, "temperature": 0.1},
            });
            (
                format!("/model/{}/converse", model_segment()),
                body.to_string(),
            )
        }
    }
}

/// The whole request, head and body, as written on the wire. The client-protocol routes get
/// the deadline as `x-modelserver-timeout` (`/infer` has it in its body).
pub fn request_bytes(cfg: &LoadConfig) -> Vec<u8> {
    let (path, body) = request_body(cfg.mode, cfg.max_tokens, cfg.infer_timeout_secs);
    let deadline = match (cfg.mode, cfg.infer_timeout_secs) {
        (Mode::Messages | Mode::Chat | Mode::Converse, Some(t)) => {
            format!("x-modelserver-timeout: {t}\r\n")
        }
        _ => String::new(),
    };
    let mut req = format!(
        "POST {path} HTTP/1.1\r\nHost: {}\r\nContent-Type: application/json\r\nAccept: application/json\r\n{deadline}Content-Length: {}\r\n\r\n",
        cfg.host,
        body.len()
    )
    .into_bytes();
    req.extend_from_slice(body.as_bytes());
    req
}

/// What one run measured.
#[derive(Debug)]
pub struct LoadResult {
    pub mode: Mode,
    /// Offered rate (requests per second).
    pub rate: f64,
    pub seconds: f64,
    /// Requests issued.
    pub sent: u64,
    /// 2xx answers.
    pub ok: u64,
    /// Everything else by kind.
    pub errors: BTreeMap<String, u64>,
    /// Latency of the 2xx answers from their due time, microseconds.
    pub latency: Histogram<u64>,
    /// Client-side lag: from the due time until a worker started the request, microseconds.
    pub lag: Histogram<u64>,
    /// From the first due time until the last request was handed to a worker.
    pub send_secs: f64,
    /// From the first due time until the last answer (or give-up).
    pub total_secs: f64,
    /// CPU time this process used during the run (user + system), seconds.
    pub cpu_secs: f64,
    /// Connections opened.
    pub connects: u64,
    /// Requests retried once because a reused connection turned out closed.
    pub stale_retries: u64,
}

impl LoadResult {
    pub fn error_count(&self) -> u64 {
        self.errors.values().sum()
    }

    /// Errors over requests sent.
    pub fn error_fraction(&self) -> f64 {
        if self.sent == 0 {
            0.0
        } else {
            self.error_count() as f64 / self.sent as f64
        }
    }

    /// Requests issued per second of the schedule.
    pub fn sent_rate(&self) -> f64 {
        self.sent as f64 / self.send_secs.max(1e-9)
    }

    /// Successes per second, from the first due time to the last answer.
    pub fn ok_rate(&self) -> f64 {
        self.ok as f64 / self.total_secs.max(1e-9)
    }

    /// Latency quantile of the successes in milliseconds (NaN without any).
    pub fn ms(&self, q: f64) -> f64 {
        quantile_ms(&self.latency, q)
    }

    pub fn max_ms(&self) -> f64 {
        if self.latency.is_empty() {
            f64::NAN
        } else {
            self.latency.max() as f64 / 1000.0
        }
    }

    /// The generator's CPU use in cores (1.0 = one core busy the whole run).
    pub fn cpu_cores(&self) -> f64 {
        self.cpu_secs / self.total_secs.max(1e-9)
    }

    /// Errors as `kind=count, ...` (or `-`).
    pub fn errors_text(&self) -> String {
        errors_text(&self.errors)
    }

    /// One machine-readable line.
    pub fn to_json(&self) -> serde_json::Value {
        let q = |q: f64| self.ms(q);
        let lag = |q: f64| quantile_ms(&self.lag, q);
        serde_json::json!({
            "mode": self.mode.name(),
            "rate": self.rate,
            "seconds": self.seconds,
            "sent": self.sent,
            "ok": self.ok,
            "errors": self.errors,
            "error_fraction": self.error_fraction(),
            "sent_rate": self.sent_rate(),
            "ok_rate": self.ok_rate(),
            "p50_ms": q(0.5),
            "p90_ms": q(0.9),
            "p99_ms": q(0.99),
            "p999_ms": q(0.999),
            "max_ms": self.max_ms(),
            "mean_ms": if self.latency.is_empty() { f64::NAN } else { self.latency.mean() / 1000.0 },
            "lag_p99_ms": lag(0.99),
            "lag_max_ms": if self.lag.is_empty() { f64::NAN } else { self.lag.max() as f64 / 1000.0 },
            "send_secs": self.send_secs,
            "total_secs": self.total_secs,
            "cpu_secs": self.cpu_secs,
            "cpu_cores": self.cpu_cores(),
            "connects": self.connects,
            "stale_retries": self.stale_retries,
        })
    }

    /// A few human-readable lines.
    pub fn summary(&self) -> String {
        let lag99 = quantile_ms(&self.lag, 0.99);
        format!(
            "{mode}: offered {rate:.0} req/s for {secs} s: sent {sent} ({sent_rate:.0}/s), ok {ok} ({ok_rate:.0}/s), errors {err} ({errpct:.3}%): {errors}\n\
             latency ms (from the intended send time): p50 {p50:.3}  p90 {p90:.3}  p99 {p99:.3}  p99.9 {p999:.3}  max {max:.3}\n\
             client: lag p99 {lag99:.3} ms, {connects} connections opened, {stale} stale retries, CPU {cpu:.2} s = {cores:.2} cores over {total:.2} s",
            mode = self.mode.name(),
            rate = self.rate,
            secs = self.seconds,
            sent = self.sent,
            sent_rate = self.sent_rate(),
            ok = self.ok,
            ok_rate = self.ok_rate(),
            err = self.error_count(),
            errpct = 100.0 * self.error_fraction(),
            errors = self.errors_text(),
            p50 = self.ms(0.5),
            p90 = self.ms(0.9),
            p99 = self.ms(0.99),
            p999 = self.ms(0.999),
            max = self.max_ms(),
            connects = self.connects,
            stale = self.stale_retries,
            cpu = self.cpu_secs,
            cores = self.cpu_cores(),
            total = self.total_secs,
        )
    }
}

/// An empty latency histogram: microseconds, 3 significant digits, up to an hour.
pub fn histogram() -> Histogram<u64> {
    Histogram::new_with_bounds(1, HIST_MAX_US, 3).expect("valid histogram bounds")
}

/// `d` in whole microseconds, at least 1 (the histograms' lowest value).
pub fn micros(d: Duration) -> u64 {
    (d.as_micros() as u64).max(1)
}

/// Quantile `q` of `h` in milliseconds (NaN when it is empty).
pub fn quantile_ms(h: &Histogram<u64>, q: f64) -> f64 {
    if h.is_empty() {
        f64::NAN
    } else {
        h.value_at_quantile(q) as f64 / 1000.0
    }
}

/// Error counts as `kind=count, ...` (or `-`).
pub fn errors_text(errors: &BTreeMap<String, u64>) -> String {
    if errors.is_empty() {
        "-".into()
    } else {
        errors
            .iter()
            .map(|(k, v)| format!("{k}={v}"))
            .collect::<Vec<_>>()
            .join(", ")
    }
}

/// Adds a worker's error counts to the run's.
pub fn add_errors(into: &mut BTreeMap<String, u64>, from: BTreeMap<String, u64>) {
    for (k, v) in from {
        *into.entry(k).or_default() += v;
    }
}

/// This process's CPU time (user + system) in seconds, from `/proc/self/stat`.
pub fn own_cpu_secs() -> f64 {
    cpu_secs_of("self").unwrap_or(0.0)
}

/// CPU time (user + system, all threads) of process `pid` ("self" for this one), in seconds.
pub fn cpu_secs_of(pid: &str) -> Option<f64> {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).ok()?;
    // Fields after the command name (which is in parentheses and may hold spaces).
    let rest = &stat[stat.rfind(')')? + 2..];
    let fields: Vec<&str> = rest.split_whitespace().collect();
    // utime and stime are fields 14 and 15 of the whole line: 11 and 12 after the name.
    let utime: f64 = fields.get(11)?.parse().ok()?;
    let stime: f64 = fields.get(12)?.parse().ok()?;
    // USER_HZ is 100 on every Linux architecture Rust targets.
    Some((utime + stime) / 100.0)
}

/// Runs the schedule and waits for every answer (or give-up). Blocking; call it from a plain
/// thread, not from inside an async runtime.
pub fn run(cfg: &LoadConfig) -> LoadResult {
    let threads = cfg.threads.max(1);
    let per_worker = cfg.connections.max(1).div_ceil(threads);
    let request: Arc<[u8]> = request_bytes(cfg).into();
    let cpu_before = own_cpu_secs();
    let worker_cfg = cfg.clone();
    let ran = schedule(cfg.rate, cfg.total(), threads, "loadgen", move |rx, _| {
        worker(worker_cfg.clone(), request.clone(), per_worker, rx)
    });
    let start = ran.start;
    let mut result = LoadResult {
        mode: cfg.mode,
        rate: cfg.rate,
        seconds: cfg.seconds,
        sent: 0,
        ok: 0,
        errors: BTreeMap::new(),
        latency: histogram(),
        lag: histogram(),
        send_secs: ran.last_send.saturating_duration_since(start).as_secs_f64(),
        total_secs: 0.0,
        cpu_secs: 0.0,
        connects: 0,
        stale_retries: 0,
    };
    let mut last_done = start;
    for w in ran.workers {
        result.sent += w.sent;
        result.ok += w.ok;
        add_errors(&mut result.errors, w.errors);
        result.latency.add(&w.latency).expect("same bounds");
        result.lag.add(&w.lag).expect("same bounds");
        result.connects += w.connects;
        result.stale_retries += w.stale_retries;
        if let Some(d) = w.last_done {
            last_done = last_done.max(d);
        }
    }
    // A schedule of one request has no send window: count it as one interval.
    if result.send_secs == 0.0 {
        result.send_secs = 1.0 / cfg.rate.max(1e-9);
    }
    result.total_secs = last_done.saturating_duration_since(start).as_secs_f64();
    result.cpu_secs = own_cpu_secs() - cpu_before;
    result
}

/// A schedule that ran (see [`schedule`]).
pub struct Schedule<W> {
    /// The first due time.
    pub start: Instant,
    /// When the last request was handed to a worker.
    pub last_send: Instant,
    /// What each worker returned, in the order they were started.
    pub workers: Vec<W>,
}

/// Runs the open-loop schedule of `total` requests at `rate` per second over `threads`
/// worker threads (named `{name}-{n}`), and waits for the workers to end. Each is started as
/// `worker(due times, first due time)`; request `i` is due at `start + i / rate` and handed
/// round-robin at that time by this thread (the dispatcher), which never waits for answers.
/// The first due time is 20 ms away, to leave the workers time to start.
pub fn schedule<W, F>(rate: f64, total: u64, threads: usize, name: &str, worker: F) -> Schedule<W>
where
    W: Send + 'static,
    F: Fn(mpsc::UnboundedReceiver<Instant>, Instant) -> W + Clone + Send + 'static,
{
    let start = Instant::now() + Duration::from_millis(20);
    let mut senders = Vec::with_capacity(threads);
    let mut handles = Vec::with_capacity(threads);
    for n in 0..threads {
        let (tx, rx) = mpsc::unbounded_channel::<Instant>();
        senders.push(tx);
        let worker = worker.clone();
        handles.push(
            std::thread::Builder::new()
                .name(format!("{name}-{n}"))
                .spawn(move || worker(rx, start))
                .expect("worker thread starts"),
        );
    }
    // The dispatcher: this thread.
    let mut last_send = start;
    for i in 0..total {
        let due = start + Duration::from_secs_f64(i as f64 / rate);
        let now = Instant::now();
        if due > now {
            std::thread::sleep(due - now);
        }
        if senders[(i % threads as u64) as usize].send(due).is_err() {
            break;
        }
        last_send = Instant::now();
    }
    drop(senders);
    let workers = handles
        .into_iter()
        .map(|h| h.join().expect("worker thread"))
        .collect();
    Schedule {
        start,
        last_send,
        workers,
    }
}

/// A worker thread's loop: a single-threaded tokio runtime that, for each due time from
/// `rx`, calls `each` at once and runs the future it returns as a task of its own; returns
/// when `rx` is closed and every task has ended.
pub fn serve_due<F, Fut>(mut rx: mpsc::UnboundedReceiver<Instant>, mut each: F)
where
    F: FnMut(Instant) -> Fut,
    Fut: std::future::Future<Output = ()> + 'static,
{
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .expect("tokio runtime");
    let local = tokio::task::LocalSet::new();
    let outstanding = Rc::new(Cell::new(0usize));
    let all_done = Rc::new(Notify::new());
    local.block_on(&rt, async move {
        while let Some(due) = rx.recv().await {
            let task = each(due);
            outstanding.set(outstanding.get() + 1);
            let (outstanding, all_done) = (outstanding.clone(), all_done.clone());
            tokio::task::spawn_local(async move {
                task.await;
                outstanding.set(outstanding.get() - 1);
                if outstanding.get() == 0 {
                    all_done.notify_one();
                }
            });
        }
        while outstanding.get() > 0 {
            all_done.notified().await;
        }
    });
    drop(local);
}

/// What one worker thread measured.
struct WorkerOut {
    sent: u64,
    ok: u64,
    errors: BTreeMap<String, u64>,
    latency: Histogram<u64>,
    lag: Histogram<u64>,
    last_done: Option<Instant>,
    connects: u64,
    stale_retries: u64,
}

fn worker(
    cfg: LoadConfig,
    request: Arc<[u8]>,
    connections: usize,
    rx: mpsc::UnboundedReceiver<Instant>,
) -> WorkerOut {
    let out = Rc::new(RefCell::new(WorkerOut {
        sent: 0,
        ok: 0,
        errors: BTreeMap::new(),
        latency: histogram(),
        lag: histogram(),
        last_done: None,
        connects: 0,
        stale_retries: 0,
    }));
    let pool = Rc::new(Pool {
        addr: cfg.addr,
        request,
        slots: Semaphore::new(connections),
        idle: RefCell::new(Vec::new()),
        connects: Cell::new(0),
        stale_retries: Cell::new(0),
    });
    let timeout = cfg.client_timeout;
    let task_out = out.clone();
    let task_pool = pool.clone();
    serve_due(rx, move |due| {
        let picked = Instant::now();
        {
            let mut o = task_out.borrow_mut();
            o.sent += 1;
            o.lag
                .saturating_record(micros(picked.saturating_duration_since(due)));
        }
        let (out, pool) = (task_out.clone(), task_pool.clone());
        async move {
            let deadline = tokio::time::Instant::from_std(due + timeout);
            let outcome = tokio::time::timeout_at(deadline, pool.exchange()).await;
            let done = Instant::now();
            let mut o = out.borrow_mut();
            match outcome {
                Ok(Ok(status)) if (200..300).contains(&status) => {
                    o.ok += 1;
                    o.latency
                        .saturating_record(micros(done.saturating_duration_since(due)));
                }
                Ok(Ok(status)) => *o.errors.entry(format!("status {status}")).or_default() += 1,
                Ok(Err(kind)) => *o.errors.entry(kind).or_default() += 1,
                Err(_) => *o.errors.entry("timeout".into()).or_default() += 1,
            }
            o.last_done = Some(o.last_done.map_or(done, |d| d.max(done)));
        }
    });
    let mut out = Rc::try_unwrap(out)
        .ok()
        .expect("no task holds the results")
        .into_inner();
    out.connects = pool.connects.get();
    out.stale_retries = pool.stale_retries.get();
    out
}

/// One worker's keep-alive connections.
struct Pool {
    addr: SocketAddr,
    request: Arc<[u8]>,
    /// One permit per connection that may be open.
    slots: Semaphore,
    /// Idle connections, the most recently used last.
    idle: RefCell<Vec<Conn>>,
    connects: Cell<u64>,
    stale_retries: Cell<u64>,
}

struct Conn {
    stream: TcpStream,
    buf: Vec<u8>,
    last_used: Instant,
}

/// Why an exchange failed, and whether any byte of an answer had arrived.
struct Failure {
    kind: String,
    nothing_received: bool,
}

impl Pool {
    /// Sends the request on a free connection and reads the answer; the HTTP status.
    async fn exchange(&self) -> Result<u16, String> {
        let _slot = self.slots.acquire().await.map_err(|e| e.to_string())?;
        let mut retried = false;
        loop {
            let (mut conn, reused) = match self.take_idle() {
                Some(conn) => (conn, true),
                None => (self.connect().await?, false),
            };
            match conn.exchange(&self.request).await {
                Ok((status, reusable)) => {
                    if reusable {
                        conn.last_used = Instant::now();
                        self.idle.borrow_mut().push(conn);
                    }
                    return Ok(status);
                }
                Err(f) if reused && f.nothing_received && !retried => {
                    retried = true;
                    self.stale_retries.set(self.stale_retries.get() + 1);
                }
                Err(f) => return Err(f.kind),
            }
        }
    }

    fn take_idle(&self) -> Option<Conn> {
        let mut idle = self.idle.borrow_mut();
        while let Some(conn) = idle.pop() {
            if conn.last_used.elapsed() < MAX_IDLE {
                return Some(conn);
            }
        }
        None
    }

    async fn connect(&self) -> Result<Conn, String> {
        let stream = TcpStream::connect(self.addr)
            .await
            .map_err(|e| format!("connect: {:?}", e.kind()))?;
        let _ = stream.set_nodelay(true);
        self.connects.set(self.connects.get() + 1);
        Ok(Conn {
            stream,
            buf: Vec::with_capacity(4096),
            last_used: Instant::now(),
        })
    }
}

/// How the answer's body ends.
enum Framing {
    Length(usize),
    Chunked,
    /// Until the server closes the connection.
    Close,
}

impl Conn {
    /// Writes the request, reads one whole answer: (status, connection reusable).
    async fn exchange(&mut self, request: &[u8]) -> Result<(u16, bool), Failure> {
        let fail = |kind: String, nothing_received: bool| Failure {
            kind,
            nothing_received,
        };
        if let Err(e) = self.stream.write_all(request).await {
            return Err(fail(format!("write: {:?}", e.kind()), true));
        }
        self.buf.clear();
        // The head.
        let head_end = loop {
            if let Some(pos) = find(&self.buf, b"\r\n\r\n") {
                break pos + 4;
            }
            if self.buf.len() > MAX_HEAD {
                return Err(fail("bad response: head too long".into(), false));
            }
            match self.read_more().await {
                Ok(0) => return Err(fail("eof".into(), self.buf.is_empty())),
                Ok(_) => {}
                Err(e) => return Err(fail(format!("read: {:?}", e.kind()), self.buf.is_empty())),
            }
        };
        let (status, framing, close) = parse_head(&self.buf[..head_end])
            .ok_or_else(|| fail("bad response: unparsable head".into(), false))?;
        let framing = if status == 204 || status == 304 || (100..200).contains(&status) {
            Framing::Length(0)
        } else {
            framing
        };
        // The body.
        loop {
            let complete = match framing {
                Framing::Length(n) => self.buf.len() >= head_end + n,
                Framing::Chunked => match chunked_end(&self.buf, head_end) {
                    Ok(end) => end.is_some(),
                    Err(()) => return Err(fail("bad response: bad chunk".into(), false)),
                },
                Framing::Close => false,
            };
            if complete {
                return Ok((status, !close));
            }
            match self.read_more().await {
                Ok(0) if matches!(framing, Framing::Close) => return Ok((status, false)),
                Ok(0) => return Err(fail("eof mid-body".into(), false)),
                Ok(_) => {}
                Err(e) => return Err(fail(format!("read: {:?}", e.kind()), false)),
            }
        }
    }

    async fn read_more(&mut self) -> std::io::Result<usize> {
        if self.buf.capacity() - self.buf.len() < 2048 {
            self.buf.reserve(8192);
        }
        self.stream.read_buf(&mut self.buf).await
    }
}

/// Where `needle` first stands in `haystack`.
pub fn find(haystack: &[u8], needle: &[u8]) -> Option<usize> {
    haystack.windows(needle.len()).position(|w| w == needle)
}

/// Status, body framing and `Connection: close` from a response head.
fn parse_head(head: &[u8]) -> Option<(u16, Framing, bool)> {
    let text = std::str::from_utf8(head).ok()?;
    let mut lines = text.split("\r\n");
    let status_line = lines.next()?;
    let mut parts = status_line.split(' ');
    let version = parts.next()?;
    if !version.starts_with("HTTP/1.") {
        return None;
    }
    let status: u16 = parts.next()?.parse().ok()?;
    // Without Content-Length or chunked, the body runs until the server closes.
    let mut framing = Framing::Close;
    let mut close = version == "HTTP/1.0";
    let mut has_length = false;
    for line in lines {
        let Some((name, value)) = line.split_once(':') else {
            continue;
        };
        let value = value.trim();
        if name.eq_ignore_ascii_case("content-length") && !has_length {
            framing = Framing::Length(value.parse().ok()?);
            has_length = true;
        } else if name.eq_ignore_ascii_case("transfer-encoding")
            && value.to_ascii_lowercase().contains("chunked")
        {
            framing = Framing::Chunked;
            has_length = true;
        } else if name.eq_ignore_ascii_case("connection") {
            let v = value.to_ascii_lowercase();
            if v.contains("close") {
                close = true;
            } else if v.contains("keep-alive") {
                close = false;
            }
        }
    }
    if matches!(framing, Framing::Close) {
        close = true;
    }
    Some((status, framing, close))
}

/// The end of a chunked body that starts at `pos`, once all of it is in `buf`.
fn chunked_end(buf: &[u8], mut pos: usize) -> Result<Option<usize>, ()> {
    loop {
        let Some(line_len) = find(&buf[pos..], b"\r\n") else {
            return Ok(None);
        };
        let line = std::str::from_utf8(&buf[pos..pos + line_len]).map_err(|_| ())?;
        let size = usize::from_str_radix(line.split(';').next().unwrap_or("").trim(), 16)
            .map_err(|_| ())?;
        pos += line_len + 2;
        if size == 0 {
            // Trailers, then an empty line.
            loop {
                let Some(len) = find(&buf[pos..], b"\r\n") else {
                    return Ok(None);
                };
                pos += len + 2;
                if len == 0 {
                    return Ok(Some(pos));
                }
            }
        }
        if buf.len() < pos + size + 2 {
            return Ok(None);
        }
        pos += size + 2;
    }
}

/// One blocking request with `Connection: close` (for health checks, stats, probes):
/// (status, body). Handles `Content-Length` and read-to-close bodies (not chunked).
pub fn http_request(
    addr: SocketAddr,
    method: &str,
    path: &str,
    body: Option<&str>,
    timeout: Duration,
) -> std::io::Result<(u16, String)> {
    use std::io::{Read, Write};
    let mut stream = std::net::TcpStream::connect_timeout(&addr, timeout)?;
    stream.set_read_timeout(Some(timeout))?;
    stream.set_write_timeout(Some(timeout))?;
    let body = body.unwrap_or("");
    let req = format!(
        "{method} {path} HTTP/1.1\r\nHost: {addr}\r\nConnection: close\r\nContent-Type: application/json\r\nContent-Length: {}\r\n\r\n{body}",
        body.len()
    );
    stream.write_all(req.as_bytes())?;
    let mut raw = Vec::new();
    stream.read_to_end(&mut raw)?;
    let bad = || std::io::Error::new(std::io::ErrorKind::InvalidData, "bad HTTP response");
    let head_end = find(&raw, b"\r\n\r\n").ok_or_else(bad)? + 4;
    let (status, _, _) = parse_head(&raw[..head_end]).ok_or_else(bad)?;
    Ok((
        status,
        String::from_utf8_lossy(&raw[head_end..]).into_owned(),
    ))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_heads_and_chunks() {
        let (s, f, c) = parse_head(b"HTTP/1.1 200 OK\r\ncontent-length: 12\r\n\r\n").unwrap();
        assert_eq!(s, 200);
        assert!(matches!(f, Framing::Length(12)));
        assert!(!c);
        let body = b"HTTP/1.1 200 OK\r\n\r\n5\r\nhello\r\n0\r\n\r\n";
        assert_eq!(chunked_end(body, 19), Ok(Some(body.len())));
        assert_eq!(chunked_end(&body[..30], 19), Ok(None));
    }
}
