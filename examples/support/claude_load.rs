//! Claude-shaped traffic for the `goodput` benchmark's `claude` group (included with
//! `#[path = "support/claude_load.rs"] mod claude_load;`): when requests arrive, what each
//! one asks, and how one request is sent and read to its end.
//!
//! - **Arrivals**: [`arrival_times`] gives the due times of an open-loop load: Poisson at a
//!   rate, or Poisson through a schedule of rates, from an RNG seeded by the scenario and the
//!   run, so every policy of a run gets the same arrivals.
//! - **Requests**: [`ClaudeRequest`] is what one request asks: a prompt of `prompt_tokens`
//!   tokens (a text of 4 characters a token, as the emulator counts `ceil(chars / 4)`),
//!   `max_tokens`, the route (`/infer` answered whole, or `/v1/messages` with `stream: true`),
//!   the request's `timeout` and `max_retries` (headers `x-modelserver-timeout` and
//!   `x-modelserver-max-retries` on `/v1/messages`).
//! - **One request**: [`send`] posts it on a client with no connection cap and reads the
//!   answer to its end (a stream event by event), and returns an [`Outcome`]: the HTTP
//!   status (a stream that answered 200 but ended with an `error` event takes the status of
//!   its error's type: 429, 503, 504 or 500), the usage the answer reported, the time to the
//!   first `content_block_delta` of a stream, and when it ended.
#![allow(dead_code)]

use std::time::{Duration, Instant};

use bytes::Bytes;
use futures_util::StreamExt;
use serde::{Deserialize, Serialize};
use serde_json::{json, Value};

use crate::loadgen::find;

/// The status recorded when the request got no answer (transport failure, or nothing by its
/// `timeout` plus a margin).
pub const NO_ANSWER: u16 = 0;

/// Which broker route a request takes.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub enum Route {
    /// `POST /infer`, the answer read whole.
    Infer,
    /// `POST /v1/messages` with `stream: true`, the server-sent events read to their end.
    Stream,
}

/// What one request asks.
#[derive(Debug, Clone)]
pub struct ClaudeRequest {
    pub model: String,
    pub prompt_tokens: u64,
    pub max_tokens: u64,
    pub route: Route,
    /// Seconds; the request's whole deadline at the broker.
    pub timeout: f64,
    pub max_retries: u32,
}

impl ClaudeRequest {
    /// The broker's path for the route.
    pub fn path(&self) -> &'static str {
        match self.route {
            Route::Infer => "/infer",
            Route::Stream => "/v1/messages",
        }
    }

    /// The body to post (build it once: a prompt may be hundreds of kilobytes).
    pub fn body(&self) -> String {
        let messages = json!([{"role": "user", "content": prompt(self.prompt_tokens)}]);
        match self.route {
            Route::Infer => json!({
                "type": "claude",
                "model_name": self.model,
                "payload": {"messages": messages, "max_tokens": self.max_tokens},
                "timeout": self.timeout,
                "max_retries": self.max_retries
            }),
            Route::Stream => json!({
                "model": self.model,
                "max_tokens": self.max_tokens,
                "stream": true,
                "messages": messages
            }),
        }
        .to_string()
    }
}

/// A user message the emulator counts as `tokens` input tokens (`ceil(chars / 4)`): words of
/// three letters and a space.
pub fn prompt(tokens: u64) -> String {
    const WORDS: [&str; 8] = ["the ", "cat ", "sat ", "on ", "a ", "mat ", "and ", "ran "];
    let want = (tokens.max(1) * 4) as usize;
    let mut text = String::with_capacity(want + 4);
    let mut i = 0;
    while text.len() < want {
        text.push_str(WORDS[i % WORDS.len()]);
        i += 1;
    }
    text.truncate(want);
    text
}

/// Usage an answer reported (`/infer`'s `usage`, or a stream's `message_start` and
/// `message_delta`).
#[derive(Debug, Clone, Copy, Default, PartialEq)]
pub struct Usage {
    pub input: u64,
    pub cache_write: u64,
    pub output: u64,
}

impl Outcome {
    /// An answer without usage or stream (the seed's requests).
    pub fn plain(due: f64, done: f64, status: u16) -> Outcome {
        Outcome {
            due,
            done,
            status,
            broken_stream: false,
            ttft: None,
            usage: Usage::default(),
        }
    }
}

impl Usage {
    /// What the answer costs a token quota: `input + cache writes + output x burndown`
    /// (cache reads are not counted).
    pub fn quota_cost(&self, burndown: f64) -> f64 {
        self.input as f64 + self.cache_write as f64 + self.output as f64 * burndown
    }
}

/// How one request ended.
#[derive(Debug, Clone)]
pub struct Outcome {
    /// When it was due (open loop), seconds from the load's start.
    pub due: f64,
    /// When it ended (last byte, or given up), seconds from the load's start.
    pub done: f64,
    /// HTTP status, or the status of a stream's error event; [`NO_ANSWER`] for none.
    pub status: u16,
    /// A stream that answered 200 and then ended with an error event (or without
    /// `message_stop`).
    pub broken_stream: bool,
    /// Seconds from `due` to a stream's first `content_block_delta`.
    pub ttft: Option<f64>,
    pub usage: Usage,
}

/// An HTTP client with no cap on connections (each request open for seconds must not wait
/// for another's connection).
pub fn client() -> awc::Client {
    awc::Client::builder()
        .connector(awc::Connector::new().limit(0))
        // The request's own deadline bounds it (see `send`); no client-wide timeout.
        .disable_timeout()
        .finish()
}

/// Sends one request due at `due` (seconds after `start`) and reads its answer to the end.
/// Gives up `timeout + 10 s` after it was sent (counted as no answer).
pub async fn send(
    client: &awc::Client,
    url: &str,
    request: &ClaudeRequest,
    body: &Bytes,
    due: f64,
    start: Instant,
) -> Outcome {
    let mut outcome = Outcome::plain(due, 0.0, NO_ANSWER);
    let limit = Duration::from_secs_f64(request.timeout + 10.0);
    let exchange = async {
        let mut post = client
            .post(format!("{url}{}", request.path()))
            .insert_header(("content-type", "application/json"));
        if request.route == Route::Stream {
            post = post
                .insert_header(("x-modelserver-timeout", request.timeout.to_string()))
                .insert_header(("x-modelserver-max-retries", request.max_retries.to_string()));
        }
        let mut response = match post.send_body(body.clone()).await {
            Ok(r) => r,
            Err(e) => {
                eprintln!("request due at {due:.3} s: no answer: {e}");
                return;
            }
        };
        let status = response.status().as_u16();
        if request.route == Route::Infer || status != 200 {
            match response.body().limit(16 << 20).await {
                Ok(bytes) => {
                    outcome.status = status;
                    if status == 200 {
                        if let Ok(v) = serde_json::from_slice::<Value>(&bytes) {
                            read_usage(&v["usage"], &mut outcome.usage);
                        }
                    }
                }
                Err(e) => eprintln!("request due at {due:.3} s: body lost: {e}"),
            }
            return;
        }
        // A stream: server-sent events, `event: NAME` and `data: JSON` separated by blank
        // lines, read until `message_stop` or `error`.
        let mut buf: Vec<u8> = Vec::new();
        let mut ended = None;
        while ended.is_none() {
            let chunk = match response.next().await {
                Some(Ok(chunk)) => chunk,
                Some(Err(e)) => {
                    eprintln!("request due at {due:.3} s: stream cut: {e}");
                    break;
                }
                None => break,
            };
            buf.extend_from_slice(&chunk);
            while let Some(end) = find(&buf, b"\n\n") {
                let event: Vec<u8> = buf.drain(..end + 2).collect();
                if let Some(status) = on_event(&event, due, start, &mut outcome) {
                    ended = Some(status);
                }
            }
        }
        // 200 and then no end is a cut stream (a silent truncation): no answer.
        outcome.status = ended.unwrap_or(NO_ANSWER);
        outcome.broken_stream = ended != Some(200);
    };
    if tokio::time::timeout(limit, exchange).await.is_err() {
        eprintln!("request due at {due:.3} s: no answer within {limit:?}");
        outcome.status = NO_ANSWER;
    }
    outcome.done = start.elapsed().as_secs_f64();
    outcome
}

/// Reads one event; `Some(status)` when it ends the stream (200 for `message_stop`, else the
/// status of the error's type).
fn on_event(event: &[u8], due: f64, start: Instant, outcome: &mut Outcome) -> Option<u16> {
    let text = String::from_utf8_lossy(event);
    let data = text
        .lines()
        .filter_map(|l| l.strip_prefix("data:"))
        .map(str::trim_start)
        .collect::<Vec<_>>()
        .join("\n");
    let Ok(v) = serde_json::from_str::<Value>(&data) else {
        return None;
    };
    match v["type"].as_str()? {
        "message_start" => read_usage(&v["message"]["usage"], &mut outcome.usage),
        "content_block_delta" if outcome.ttft.is_none() => {
            outcome.ttft = Some(start.elapsed().as_secs_f64() - due);
        }
        "message_delta" => read_usage(&v["usage"], &mut outcome.usage),
        "message_stop" => return Some(200),
        "error" => {
            return Some(match v["error"]["type"].as_str().unwrap_or("") {
                "rate_limit_error" => 429,
                "timeout_error" => 504,
                "overloaded_error" => 503,
                _ => 500,
            })
        }
        _ => {}
    }
    None
}

/// Takes the fields a usage object carries (a later `message_delta` adds the output).
fn read_usage(usage: &Value, into: &mut Usage) {
    if let Some(n) = usage["input_tokens"].as_u64() {
        into.input = n;
    }
    if let Some(n) = usage["cache_creation_input_tokens"].as_u64() {
        into.cache_write = n;
    }
    if let Some(n) = usage["output_tokens"].as_u64() {
        into.output = n;
    }
}

/// Due times (seconds from the start) of a Poisson load through `phases` (`(seconds, rate in
/// requests/s)` in turn), from an RNG seeded by `seed`.
pub fn arrival_times(phases: &[(f64, f64)], seed: u64) -> Vec<f64> {
    let mut rng = fastrand::Rng::with_seed(seed);
    let mut times = Vec::new();
    let mut phase_start = 0.0;
    for &(seconds, rate) in phases {
        let end = phase_start + seconds;
        if rate > 0.0 {
            // Exponential gaps; memoryless, so each phase may start its own draw.
            let mut t = phase_start;
            loop {
                t += -(1.0 - rng.f64()).ln() / rate;
                if t >= end {
                    break;
                }
                times.push(t);
            }
        }
        phase_start = end;
    }
    times
}

/// A seed for a scenario's arrivals in one run (the same for every policy).
pub fn arrival_seed(scenario: &str, run: u32) -> u64 {
    // FNV-1a over the name, then the run.
    let mut h: u64 = 0xcbf2_9ce4_8422_2325;
    for b in scenario.bytes().chain(run.to_le_bytes()) {
        h ^= u64::from(b);
        h = h.wrapping_mul(0x0100_0000_01b3);
    }
    h
}

/// Expected output tokens of a call lasting a lognormal time (median `median_secs`, `spread`
/// the standard deviation of its log) writing `tokens_per_sec`, capped at `max_tokens`.
pub fn expected_output(median_secs: f64, spread: f64, tokens_per_sec: f64, max_tokens: u64) -> f64 {
    // E[min(X, cap)] for X lognormal, by a sum over the standard normal.
    let (steps, lo, hi) = (2_400, -6.0_f64, 6.0_f64);
    let dz = (hi - lo) / f64::from(steps);
    let mut sum = 0.0;
    for i in 0..steps {
        let z = lo + (f64::from(i) + 0.5) * dz;
        let density = (-z * z / 2.0).exp() / (2.0 * std::f64::consts::PI).sqrt();
        let tokens = (median_secs * (spread * z).exp() * tokens_per_sec).min(max_tokens as f64);
        sum += tokens * density * dz;
    }
    sum
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn prompt_counts_as_asked() {
        for n in [1, 200, 4_000] {
            assert_eq!(prompt(n).len().div_ceil(4) as u64, n);
        }
    }

    #[test]
    fn poisson_rate_and_phases() {
        let t = arrival_times(&[(1_000.0, 2.0)], 7);
        assert!((t.len() as f64 - 2_000.0).abs() < 150.0, "{}", t.len());
        let t = arrival_times(&[(100.0, 0.0), (100.0, 5.0)], 7);
        assert!(t.iter().all(|&x| x >= 100.0));
    }

    #[test]
    fn expected_output_is_the_lognormal_mean_uncapped() {
        let mean = 5.0 * (0.6_f64 * 0.6 / 2.0).exp() * 50.0;
        assert!((expected_output(5.0, 0.6, 50.0, 1_000_000) - mean).abs() < 0.5);
        assert!(expected_output(5.0, 0.6, 50.0, 100) <= 100.0);
    }
}
