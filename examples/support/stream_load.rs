//! An open-loop generator of streamed requests, for the `streaming` benchmark (included with
//! `#[path = "support/stream_load.rs"] mod stream_load;` next to `support/loadgen.rs`).
//!
//! It runs on `loadgen.rs`'s open-loop core ([`loadgen::schedule`]: a dispatcher thread hands
//! each request to a worker at its due time, `start + i / rate`; [`loadgen::serve_due`]:
//! workers are single-threaded tokio runtimes), with its own keep-alive connections and
//! minimal HTTP/1.1 client; every time is measured from the request's due time, so no
//! coordinated omission. It reads each answer as a stream, event by event, from one of two
//! routes:
//! - [`Target::Direct`]: the emulator's (Bedrock's) `POST /model/{id}/invoke-with-response-stream`,
//!   event-stream frames whose `chunk`s carry the Anthropic events;
//! - [`Target::Messages`]: the broker's `POST /v1/messages` with `stream: true`, server-sent
//!   events.
//!
//! Per stream it records:
//! - **time to first token**: from the due time to the arrival of the first
//!   `content_block_delta`;
//! - **event lateness**: for every later delta, how much later than the emulator's pacing
//!   schedule it arrived, relative to `message_start`: `(arrival - message_start's arrival) -
//!   due`, where `due` is when the emulator sends it (`ceil(chars so far / 4) / tokens per
//!   second` after its first event, the emulator's rule; 0 without pacing). A constant delay
//!   of the whole stream cancels out; what remains is what the path adds to each event
//!   beyond the first;
//! - the outcome: a stream is ok when it answered 200 and ended with `message_stop`;
//!   anything else is an error by kind (`status 529`, `error event`, `exception frame`,
//!   `no message_stop`, `timeout`, transport failures);
//! - the most streams open at once.
#![allow(dead_code)]

use std::cell::RefCell;
use std::collections::BTreeMap;
use std::net::SocketAddr;
use std::rc::Rc;
use std::sync::Arc;
use std::time::{Duration, Instant};

use hdrhistogram::Histogram;
use serde_json::Value;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;
use tokio::sync::{mpsc, Semaphore};

use crate::loadgen::{self, find, histogram, micros, quantile_ms};

/// Idle keep-alive connections older than this are not reused.
const MAX_IDLE: Duration = Duration::from_secs(2);

/// Which route the streams read.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Target {
    /// The emulator's InvokeModelWithResponseStream.
    Direct,
    /// The broker's `/v1/messages` with `stream: true`.
    Messages,
}

impl Target {
    pub fn name(self) -> &'static str {
        match self {
            Target::Direct => "direct",
            Target::Messages => "broker",
        }
    }
}

/// What to send, how fast, for how long.
#[derive(Clone, Debug)]
pub struct StreamLoad {
    pub addr: SocketAddr,
    pub host: String,
    pub target: Target,
    /// New streams per second.
    pub rate: f64,
    /// Length of the schedule.
    pub seconds: f64,
    /// Most connections open at once (over all workers).
    pub connections: usize,
    /// Worker threads.
    pub threads: usize,
    /// A stream not finished this long after its due time is given up (`timeout`).
    pub client_timeout: Duration,
    /// The Anthropic `messages` of every request.
    pub messages: Value,
    pub max_tokens: u32,
    /// The emulator's pace (output tokens per second), for the lateness schedule.
    pub tokens_per_sec: Option<f64>,
    /// Extra request headers (`x-modelserver-timeout`, ...).
    pub headers: Vec<(String, String)>,
}

impl StreamLoad {
    pub fn new(url: &str, target: Target, rate: f64, seconds: f64) -> StreamLoad {
        let (addr, host) = loadgen::parse_url(url).expect("a loopback URL");
        StreamLoad {
            addr,
            host,
            target,
            rate,
            seconds,
            connections: 4096,
            threads: 1,
            client_timeout: Duration::from_secs(30),
            messages: serde_json::json!([{"role": "user", "content": loadgen::PROMPT}]),
            max_tokens: 100,
            tokens_per_sec: None,
            headers: Vec::new(),
        }
    }

    pub fn total(&self) -> u64 {
        (self.rate * self.seconds).round().max(0.0) as u64
    }

    /// The request as written on the wire.
    fn request_bytes(&self) -> Vec<u8> {
        let (path, body) = match self.target {
            Target::Direct => {
                let id = loadgen::model_segment();
                let body = serde_json::json!({"anthropic_version": "bedrock-2023-05-31",
                    "max_tokens": self.max_tokens, "messages": self.messages});
                (format!("/model/{id}/invoke-with-response-stream"), body)
            }
            Target::Messages => {
                let body = serde_json::json!({"model": loadgen::MODEL, "stream": true,
                    "max_tokens": self.max_tokens, "messages": self.messages});
                ("/v1/messages".to_string(), body)
            }
        };
        let body = body.to_string();
        let mut head = format!(
            "POST {path} HTTP/1.1\r\nHost: {}\r\nContent-Type: application/json\r\nContent-Length: {}\r\n",
            self.host,
            body.len()
        );
        for (name, value) in &self.headers {
            head.push_str(&format!("{name}: {value}\r\n"));
        }
        head.push_str("\r\n");
        let mut bytes = head.into_bytes();
        bytes.extend_from_slice(body.as_bytes());
        bytes
    }
}

/// What one run measured.
#[derive(Debug)]
pub struct StreamResult {
    pub target: Target,
    pub rate: f64,
    pub seconds: f64,
    pub sent: u64,
    pub ok: u64,
    pub errors: BTreeMap<String, u64>,
    /// Due time to the first content delta, microseconds (ok streams).
    pub ttft: Histogram<u64>,
    /// Lateness of every later delta against the pacing schedule, microseconds.
    pub lateness: Histogram<u64>,
    /// Due time to the end of the stream, microseconds (ok streams).
    pub duration: Histogram<u64>,
    /// Ok streams whose end came within `[from, to)` seconds of the first due time, for
    /// goodput over a window.
    pub ok_ends: Vec<f64>,
    /// Most streams open at once.
    pub max_open: u64,
    /// From the first due time to the last end.
    pub total_secs: f64,
}

impl StreamResult {
    /// Time to first token at quantile `q`, ms.
    pub fn ttft_ms(&self, q: f64) -> f64 {
        quantile_ms(&self.ttft, q)
    }

    /// Event lateness at quantile `q`, ms.
    pub fn lateness_ms(&self, q: f64) -> f64 {
        quantile_ms(&self.lateness, q)
    }

    /// Stream duration at quantile `q`, ms.
    pub fn duration_ms(&self, q: f64) -> f64 {
        quantile_ms(&self.duration, q)
    }

    pub fn error_count(&self) -> u64 {
        self.errors.values().sum()
    }

    pub fn errors_text(&self) -> String {
        loadgen::errors_text(&self.errors)
    }

    /// Ok streams that ended within `[from, to)` seconds of the first due time.
    pub fn ok_between(&self, from: f64, to: f64) -> usize {
        self.ok_ends
            .iter()
            .filter(|t| **t >= from && **t < to)
            .count()
    }
}

/// Runs the schedule and waits for every stream to end (or be given up). Blocking.
pub fn run(cfg: &StreamLoad) -> StreamResult {
    let threads = cfg.threads.max(1);
    let per_worker = cfg.connections.max(1).div_ceil(threads);
    let request: Arc<[u8]> = cfg.request_bytes().into();
    let open = Arc::new(std::sync::atomic::AtomicU64::new(0));
    let max_open = Arc::new(std::sync::atomic::AtomicU64::new(0));
    let (worker_cfg, worker_max_open) = (cfg.clone(), max_open.clone());
    let ran = loadgen::schedule(
        cfg.rate,
        cfg.total(),
        threads,
        "streamgen",
        move |rx, start| {
            let (cfg, request, open, max_open) = (
                worker_cfg.clone(),
                request.clone(),
                open.clone(),
                worker_max_open.clone(),
            );
            worker(cfg, request, per_worker, rx, start, open, max_open)
        },
    );
    let start = ran.start;
    let mut result = StreamResult {
        target: cfg.target,
        rate: cfg.rate,
        seconds: cfg.seconds,
        sent: 0,
        ok: 0,
        errors: BTreeMap::new(),
        ttft: histogram(),
        lateness: histogram(),
        duration: histogram(),
        ok_ends: Vec::new(),
        max_open: 0,
        total_secs: 0.0,
    };
    let mut last = start;
    for w in ran.workers {
        result.sent += w.sent;
        result.ok += w.ok;
        loadgen::add_errors(&mut result.errors, w.errors);
        result.ttft.add(&w.ttft).expect("same bounds");
        result.lateness.add(&w.lateness).expect("same bounds");
        result.duration.add(&w.duration).expect("same bounds");
        result.ok_ends.extend(w.ok_ends);
        if let Some(d) = w.last_done {
            last = last.max(d);
        }
    }
    result.max_open = max_open.load(std::sync::atomic::Ordering::Relaxed);
    result.total_secs = last.saturating_duration_since(start).as_secs_f64();
    result
}

/// One worker's measurements.
struct WorkerOut {
    sent: u64,
    ok: u64,
    errors: BTreeMap<String, u64>,
    ttft: Histogram<u64>,
    lateness: Histogram<u64>,
    duration: Histogram<u64>,
    ok_ends: Vec<f64>,
    last_done: Option<Instant>,
}

/// How one stream went.
struct Outcome {
    /// Arrival of the first content delta.
    first_delta: Option<Instant>,
    /// Lateness of each later delta.
    lateness: Vec<Duration>,
    /// `None`: ok; else the error's kind.
    error: Option<String>,
    /// Whether the connection can be reused.
    reusable: bool,
}

fn worker(
    cfg: StreamLoad,
    request: Arc<[u8]>,
    connections: usize,
    rx: mpsc::UnboundedReceiver<Instant>,
    start: Instant,
    open: Arc<std::sync::atomic::AtomicU64>,
    max_open: Arc<std::sync::atomic::AtomicU64>,
) -> WorkerOut {
    use std::sync::atomic::Ordering;
    let out = Rc::new(RefCell::new(WorkerOut {
        sent: 0,
        ok: 0,
        errors: BTreeMap::new(),
        ttft: histogram(),
        lateness: histogram(),
        duration: histogram(),
        ok_ends: Vec::new(),
        last_done: None,
    }));
    let pool = Rc::new(Pool {
        addr: cfg.addr,
        slots: Semaphore::new(connections),
        idle: RefCell::new(Vec::new()),
    });
    let task_out = out.clone();
    loadgen::serve_due(rx, move |due| {
        task_out.borrow_mut().sent += 1;
        let (out, pool, request, open, max_open) = (
            task_out.clone(),
            pool.clone(),
            request.clone(),
            open.clone(),
            max_open.clone(),
        );
        let (timeout, pace, target) = (cfg.client_timeout, cfg.tokens_per_sec, cfg.target);
        async move {
            let now_open = open.fetch_add(1, Ordering::Relaxed) + 1;
            max_open.fetch_max(now_open, Ordering::Relaxed);
            let deadline = tokio::time::Instant::from_std(due + timeout);
            let outcome =
                tokio::time::timeout_at(deadline, pool.stream(&request, target, pace)).await;
            open.fetch_sub(1, Ordering::Relaxed);
            let done = Instant::now();
            let mut o = out.borrow_mut();
            match outcome {
                Ok(Outcome {
                    error: None,
                    first_delta,
                    lateness,
                    ..
                }) => {
                    o.ok += 1;
                    if let Some(first) = first_delta {
                        o.ttft
                            .saturating_record(micros(first.saturating_duration_since(due)));
                    }
                    for late in lateness {
                        o.lateness.saturating_record(micros(late));
                    }
                    o.duration
                        .saturating_record(micros(done.saturating_duration_since(due)));
                    o.ok_ends
                        .push(done.saturating_duration_since(start).as_secs_f64());
                }
                Ok(Outcome {
                    error: Some(kind), ..
                }) => *o.errors.entry(kind).or_default() += 1,
                Err(_) => *o.errors.entry("timeout".into()).or_default() += 1,
            }
            o.last_done = Some(o.last_done.map_or(done, |d| d.max(done)));
        }
    });
    Rc::try_unwrap(out)
        .ok()
        .expect("no task holds the results")
        .into_inner()
}

/// One worker's keep-alive connections.
struct Pool {
    addr: SocketAddr,
    slots: Semaphore,
    idle: RefCell<Vec<(TcpStream, Instant)>>,
}

impl Pool {
    /// One streamed exchange on a free connection.
    async fn stream(&self, request: &[u8], target: Target, pace: Option<f64>) -> Outcome {
        let _slot = self
            .slots
            .acquire()
            .await
            .expect("the semaphore stays open");
        let reused = {
            let mut idle = self.idle.borrow_mut();
            let mut found = None;
            while let Some((conn, at)) = idle.pop() {
                if at.elapsed() < MAX_IDLE {
                    found = Some(conn);
                    break;
                }
            }
            found
        };
        let was_reused = reused.is_some();
        let mut conn = match reused {
            Some(conn) => conn,
            None => match TcpStream::connect(self.addr).await {
                Ok(conn) => {
                    let _ = conn.set_nodelay(true);
                    conn
                }
                Err(e) => return failed(format!("connect: {:?}", e.kind())),
            },
        };
        let mut outcome = read_stream(&mut conn, request, target, pace).await;
        if was_reused && outcome.error.as_deref() == Some("eof before the head") {
            // The server had closed the idle connection: once more on a new one.
            match TcpStream::connect(self.addr).await {
                Ok(fresh) => {
                    let _ = fresh.set_nodelay(true);
                    conn = fresh;
                    outcome = read_stream(&mut conn, request, target, pace).await;
                }
                Err(e) => return failed(format!("connect: {:?}", e.kind())),
            }
        }
        if outcome.reusable {
            self.idle.borrow_mut().push((conn, Instant::now()));
        }
        outcome
    }
}

fn failed(kind: String) -> Outcome {
    Outcome {
        first_delta: None,
        lateness: Vec::new(),
        error: Some(kind),
        reusable: false,
    }
}

/// Writes the request and reads the streamed answer to its end.
async fn read_stream(
    conn: &mut TcpStream,
    request: &[u8],
    target: Target,
    pace: Option<f64>,
) -> Outcome {
    if let Err(e) = conn.write_all(request).await {
        return failed(format!("write: {:?}", e.kind()));
    }
    // 1. The head.
    let mut raw: Vec<u8> = Vec::with_capacity(8192);
    let head_end = loop {
        if let Some(pos) = find(&raw, b"\r\n\r\n") {
            break pos + 4;
        }
        match read_more(conn, &mut raw).await {
            Ok(0) if raw.is_empty() => return failed("eof before the head".into()),
            Ok(0) => return failed("eof in the head".into()),
            Ok(_) => {}
            Err(e) => return failed(format!("read: {:?}", e.kind())),
        }
    };
    let head = String::from_utf8_lossy(&raw[..head_end]).to_ascii_lowercase();
    let status: u16 = head
        .split(' ')
        .nth(1)
        .and_then(|s| s.parse().ok())
        .unwrap_or(0);
    if status != 200 {
        // Errors are small JSON bodies; the connection is not reused.
        return failed(format!("status {status}"));
    }
    if !head.contains("transfer-encoding: chunked") {
        return failed("bad response: not chunked".into());
    }
    // 2. The body: de-chunked as it arrives, split into events.
    let mut chunks = Dechunker::default();
    chunks.feed(&raw[head_end..]);
    let mut body: Vec<u8> = Vec::new();
    let mut stream = StreamState::new(pace);
    loop {
        match chunks.take(&mut body) {
            Err(()) => return failed("bad response: bad chunk".into()),
            Ok(ended) => {
                let now = Instant::now();
                if let Err(kind) = stream.events(&mut body, target, now) {
                    return failed(kind);
                }
                if ended {
                    return match stream.stopped {
                        true => Outcome {
                            first_delta: stream.first_delta,
                            lateness: stream.lateness,
                            error: None,
                            reusable: true,
                        },
                        false => failed("no message_stop".into()),
                    };
                }
            }
        }
        raw.clear();
        match read_more(conn, &mut raw).await {
            Ok(0) => return failed("eof mid-stream".into()),
            Ok(_) => chunks.feed(&raw),
            Err(e) => return failed(format!("read: {:?}", e.kind())),
        }
    }
}

async fn read_more(conn: &mut TcpStream, buf: &mut Vec<u8>) -> std::io::Result<usize> {
    if buf.capacity() - buf.len() < 4096 {
        buf.reserve(16384);
    }
    conn.read_buf(buf).await
}

/// Incremental `Transfer-Encoding: chunked` decoding (no trailers expected).
#[derive(Default)]
struct Dechunker {
    /// Bytes read but not decoded yet.
    pending: Vec<u8>,
    /// Where in the chunked framing the next byte is.
    state: ChunkState,
}

#[derive(Default, Clone, Copy, PartialEq, Eq)]
enum ChunkState {
    /// A size line.
    #[default]
    Size,
    /// This many data bytes of the current chunk.
    Data(usize),
    /// The CRLF after a chunk's data.
    DataEnd,
    /// The CRLF after the last (empty) chunk.
    LastEnd,
    /// The body is complete.
    Done,
}

impl Dechunker {
    fn feed(&mut self, bytes: &[u8]) {
        self.pending.extend_from_slice(bytes);
    }

    /// Appends what can be decoded to `out`; `Ok(true)` once the body is complete.
    fn take(&mut self, out: &mut Vec<u8>) -> Result<bool, ()> {
        let mut pos = 0;
        loop {
            let rest = &self.pending[pos..];
            match self.state {
                ChunkState::Done => break,
                ChunkState::Size => {
                    let Some(line) = find(rest, b"\r\n") else {
                        break;
                    };
                    let text = std::str::from_utf8(&rest[..line]).map_err(|_| ())?;
                    let size =
                        usize::from_str_radix(text.split(';').next().unwrap_or("").trim(), 16)
                            .map_err(|_| ())?;
                    pos += line + 2;
                    self.state = if size == 0 {
                        ChunkState::LastEnd
                    } else {
                        ChunkState::Data(size)
                    };
                }
                ChunkState::Data(left) => {
                    if rest.is_empty() {
                        break;
                    }
                    let n = left.min(rest.len());
                    out.extend_from_slice(&rest[..n]);
                    pos += n;
                    self.state = if n == left {
                        ChunkState::DataEnd
                    } else {
                        ChunkState::Data(left - n)
                    };
                }
                ChunkState::DataEnd | ChunkState::LastEnd => {
                    if rest.len() < 2 {
                        break;
                    }
                    if &rest[..2] != b"\r\n" {
                        return Err(());
                    }
                    pos += 2;
                    self.state = match self.state {
                        ChunkState::DataEnd => ChunkState::Size,
                        _ => ChunkState::Done,
                    };
                }
            }
        }
        self.pending.drain(..pos);
        Ok(self.state == ChunkState::Done)
    }
}

/// What is known of one stream's events so far.
struct StreamState {
    /// The emulator's pace, for the schedule.
    pace: Option<f64>,
    /// Arrival of `message_start`.
    started: Option<Instant>,
    /// Arrival of the first content delta.
    first_delta: Option<Instant>,
    /// Characters of content so far (the emulator paces by them).
    chars: usize,
    /// Lateness of each paced delta.
    lateness: Vec<Duration>,
    /// `message_stop` arrived.
    stopped: bool,
}

impl StreamState {
    fn new(pace: Option<f64>) -> StreamState {
        StreamState {
            pace,
            started: None,
            first_delta: None,
            chars: 0,
            lateness: Vec::new(),
            stopped: false,
        }
    }

    /// Takes every complete event out of `body` (decoded bytes), noting what arrived `now`.
    fn events(&mut self, body: &mut Vec<u8>, target: Target, now: Instant) -> Result<(), String> {
        loop {
            let event = match target {
                Target::Messages => {
                    let Some(end) = find(body, b"\n\n") else {
                        return Ok(());
                    };
                    let block: Vec<u8> = body.drain(..end + 2).collect();
                    let text = String::from_utf8_lossy(&block);
                    let mut name = "";
                    let mut data = "";
                    for line in text.lines() {
                        if let Some(v) = line.strip_prefix("event: ") {
                            name = v;
                        } else if let Some(v) = line.strip_prefix("data: ") {
                            data = v;
                        }
                    }
                    match name {
                        "ping" => continue,
                        "error" => return Err("error event".into()),
                        _ => serde_json::from_str::<Value>(data)
                            .map_err(|_| "bad response: bad event".to_string())?,
                    }
                }
                Target::Direct => {
                    if body.len() < 4 {
                        return Ok(());
                    }
                    let total = u32::from_be_bytes(body[..4].try_into().unwrap()) as usize;
                    if body.len() < total {
                        return Ok(());
                    }
                    let frame: Vec<u8> = body.drain(..total).collect();
                    match model_server::protocol::eventstream::decode_frame(&frame) {
                        Ok(model_server::protocol::eventstream::Frame::Event {
                            payload, ..
                        }) => {
                            let payload: Value = serde_json::from_slice(&payload)
                                .map_err(|_| "bad response: bad chunk".to_string())?;
                            let bytes = aws_smithy_types::base64::decode(
                                payload["bytes"].as_str().unwrap_or_default(),
                            )
                            .map_err(|_| "bad response: bad base64".to_string())?;
                            serde_json::from_slice::<Value>(&bytes)
                                .map_err(|_| "bad response: bad event".to_string())?
                        }
                        Ok(_) => return Err("exception frame".into()),
                        Err(_) => return Err("bad response: bad frame".into()),
                    }
                }
            };
            self.note(&event, now);
        }
    }

    /// Notes one event.
    fn note(&mut self, event: &Value, now: Instant) {
        match event["type"].as_str().unwrap_or_default() {
            "message_start" => self.started = Some(now),
            "message_stop" => self.stopped = true,
            "content_block_delta" => {
                let delta = &event["delta"];
                let piece = ["text", "thinking", "partial_json"]
                    .iter()
                    .find_map(|key| delta[*key].as_str())
                    .unwrap_or_default();
                let chars = piece.chars().count();
                if self.first_delta.is_none() {
                    self.first_delta = Some(now);
                }
                if chars == 0 {
                    return;
                }
                self.chars += chars;
                let Some(started) = self.started else {
                    return;
                };
                let due = self
                    .pace
                    .map_or(0.0, |rate| (self.chars.div_ceil(4) as f64) / rate);
                let elapsed = now.saturating_duration_since(started);
                self.lateness
                    .push(elapsed.saturating_sub(Duration::from_secs_f64(due)));
            }
            _ => {}
        }
    }
}
