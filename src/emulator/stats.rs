//! Call counters and the last request seen. Counters are atomics; the per-model map and the
//! last request are behind short-held locks (the last body/headers are kept as cheap
//! reference-counted copies and only decoded when a snapshot is taken).

use std::collections::{BTreeMap, HashMap};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Mutex;

use actix_web::http::header::HeaderMap;
use bytes::Bytes;
use serde::{Deserialize, Serialize};

use super::quota::Throttle;
use super::{lock, FaultKind, StreamFault};

/// Name under which calls to operations the emulator does not implement are counted.
pub(crate) const UNKNOWN_OPERATION: &str = "UnknownOperationException";

/// Snapshot of what the emulator has served since start or the last reset.
#[derive(Serialize, Deserialize, Clone, Debug, Default, PartialEq)]
pub struct EmulatorStats {
    /// Every request that reached a model route (`/model/{id}/...`).
    pub calls: u64,
    /// 200 replies with a full body.
    pub ok: u64,
    /// `ThrottlingException` replies (any quota, or injected/scripted).
    pub throttled: u64,
    /// The part of `throttled` given by the token quota (`Too many tokens, ...`).
    #[serde(default)]
    pub throttled_tokens: u64,
    /// The part of `throttled` given by the request quotas, bucket or window (`Too many
    /// requests, ...`; not the stray, scripted or injected ones).
    #[serde(default)]
    pub throttled_requests: u64,
    /// The part of `throttled` given by the daily token quota (`Too many tokens per day, ...`).
    #[serde(default)]
    pub throttled_daily: u64,
    /// The part of `throttled` given by stray throttles ([`super::EmulatorConfig::stray_throttle_rate`]).
    #[serde(default)]
    pub throttled_stray: u64,
    /// Quota tokens charged to the successful replies: `input + cache_write + output x
    /// burndown` summed (what they used of a token quota once settled).
    #[serde(default)]
    pub tokens_charged: f64,
    /// Input tokens of the successful replies (`usage.input_tokens` summed).
    #[serde(default)]
    pub input_tokens: u64,
    /// Output tokens of the successful replies (`usage.output_tokens` summed).
    #[serde(default)]
    pub output_tokens: u64,
    /// Other faults by name (`ValidationException`, `hang`, `UnknownOperationException`, ...;
    /// mid-stream faults by their stream name: `modelStreamErrorException`, `cut`, `stall`,
    /// ...).
    pub errors: BTreeMap<String, u64>,
    /// Calls per decoded model id.
    pub per_model: BTreeMap<String, u64>,
    /// Calls currently being served (including the latency sleep, hangs and streams).
    pub in_flight: u64,
    /// Highest `in_flight` seen.
    pub max_in_flight: u64,
    /// Streamed replies begun (a 200 head sent on `invoke-with-response-stream`).
    #[serde(default)]
    pub streams_started: u64,
    /// Streams that sent every event and ended cleanly (also counted in `ok`).
    #[serde(default)]
    pub streams_completed: u64,
    /// Streams ended by a mid-stream fault (exception frame, cut, stall); the fault is also
    /// counted in `throttled` or `errors`.
    #[serde(default)]
    pub streams_faulted: u64,
    /// Streams the client left before their end (the emulator stopped producing them).
    #[serde(default)]
    pub streams_cancelled: u64,
    /// Streams being sent now (also in `in_flight`).
    #[serde(default)]
    pub streams_in_flight: u64,
    /// Highest `streams_in_flight` seen.
    #[serde(default)]
    pub max_streams_in_flight: u64,
    /// The last InvokeModel or InvokeModelWithResponseStream body received (a JSON string of
    /// the raw text if it was not JSON).
    pub last_body: Option<serde_json::Value>,
    /// The last model-route request's headers (lower-case names; `authorization` cut to its
    /// scheme, e.g. `AWS4-HMAC-SHA256` or `Bearer`).
    pub last_headers: BTreeMap<String, String>,
}

const SLOTS: usize = FaultKind::ALL.len() + 1;
const UNKNOWN_SLOT: usize = FaultKind::ALL.len();
const STREAM_SLOTS: usize = StreamFault::SLOT_NAMES.len();

#[derive(Default)]
struct Last {
    headers: Option<HeaderMap>,
    body: Option<Bytes>,
}

#[derive(Default)]
pub(crate) struct Counters {
    calls: AtomicU64,
    ok: AtomicU64,
    throttled: AtomicU64,
    throttled_tokens: AtomicU64,
    throttled_requests: AtomicU64,
    throttled_daily: AtomicU64,
    throttled_stray: AtomicU64,
    /// An `f64`'s bits.
    tokens_charged: AtomicU64,
    input_tokens: AtomicU64,
    output_tokens: AtomicU64,
    errors: [AtomicU64; SLOTS],
    in_flight: AtomicU64,
    max_in_flight: AtomicU64,
    /// Mid-stream faults other than throttles, by [`StreamFault::slot`].
    stream_errors: [AtomicU64; STREAM_SLOTS],
    /// See the fields of the same names in [`EmulatorStats`].
    streams_started: AtomicU64,
    streams_completed: AtomicU64,
    streams_faulted: AtomicU64,
    streams_cancelled: AtomicU64,
    streams_in_flight: AtomicU64,
    max_streams_in_flight: AtomicU64,
    per_model: Mutex<HashMap<String, u64>>,
    last: Mutex<Last>,
}

/// Decrements `in_flight` when the call ends (also when the client disconnects and actix drops
/// the handler).
pub(crate) struct InFlight<'a>(&'a Counters);

impl Drop for InFlight<'_> {
    fn drop(&mut self) {
        self.0.in_flight.fetch_sub(1, Ordering::AcqRel);
    }
}

impl Counters {
    /// Counts a call to a model route and remembers its headers (and body, for InvokeModel).
    pub(crate) fn call(&self, model: Option<&str>, headers: &HeaderMap, body: Option<&Bytes>) {
        self.calls.fetch_add(1, Ordering::Relaxed);
        if let Some(model) = model {
            let mut per_model = lock(&self.per_model);
            match per_model.get_mut(model) {
                Some(n) => *n += 1,
                None => {
                    per_model.insert(model.to_owned(), 1);
                }
            }
        }
        let headers = headers.clone();
        let mut last = lock(&self.last);
        last.headers = Some(headers);
        if let Some(body) = body {
            last.body = Some(body.clone());
        }
    }

    pub(crate) fn enter(&self) -> InFlight<'_> {
        let now = self.in_flight.fetch_add(1, Ordering::AcqRel) + 1;
        self.max_in_flight.fetch_max(now, Ordering::AcqRel);
        InFlight(self)
    }

    pub(crate) fn in_flight(&self) -> u64 {
        self.in_flight.load(Ordering::Acquire)
    }

    /// Counts a successful reply, its tokens and what it was charged at `burndown`.
    pub(crate) fn ok(&self, input_tokens: u64, output_tokens: u64, burndown: f64) {
        self.ok.fetch_add(1, Ordering::Relaxed);
        let charged = super::quota::charge(input_tokens, output_tokens, burndown);
        let _ = self
            .tokens_charged
            .fetch_update(Ordering::Relaxed, Ordering::Relaxed, |bits| {
                Some((f64::from_bits(bits) + charged).to_bits())
            });
        self.input_tokens.fetch_add(input_tokens, Ordering::Relaxed);
        self.output_tokens
            .fetch_add(output_tokens, Ordering::Relaxed);
    }

    /// Counts a throttle by a quota (in `throttled` too).
    pub(crate) fn throttled_by(&self, throttle: Throttle) {
        self.throttled.fetch_add(1, Ordering::Relaxed);
        let by = match throttle {
            Throttle::Requests => &self.throttled_requests,
            Throttle::Tokens => &self.throttled_tokens,
            Throttle::Daily => &self.throttled_daily,
        };
        by.fetch_add(1, Ordering::Relaxed);
    }

    /// Counts a stray throttle (in `throttled` too).
    pub(crate) fn throttled_stray(&self) {
        self.throttled.fetch_add(1, Ordering::Relaxed);
        self.throttled_stray.fetch_add(1, Ordering::Relaxed);
    }

    pub(crate) fn fault(&self, kind: FaultKind) {
        if kind == FaultKind::Throttling {
            self.throttled.fetch_add(1, Ordering::Relaxed);
        } else {
            self.errors[kind as usize].fetch_add(1, Ordering::Relaxed);
        }
    }

    /// A stream begins (its 200 head is sent): it is in flight until [`Counters::stream_ended`].
    /// Its handler, counted by [`Counters::enter`] already, ends right after, so the call is
    /// not counted twice in `max_in_flight`.
    pub(crate) fn stream_started(&self) {
        self.in_flight.fetch_add(1, Ordering::AcqRel);
        self.streams_started.fetch_add(1, Ordering::Relaxed);
        let streams = self.streams_in_flight.fetch_add(1, Ordering::AcqRel) + 1;
        self.max_streams_in_flight
            .fetch_max(streams, Ordering::AcqRel);
    }

    /// A stream sent every event: a success with its tokens.
    pub(crate) fn stream_completed(&self, input_tokens: u64, output_tokens: u64, burndown: f64) {
        self.streams_completed.fetch_add(1, Ordering::Relaxed);
        self.ok(input_tokens, output_tokens, burndown);
    }

    /// A mid-stream fault struck; a `throttlingException` counts as a throttle.
    pub(crate) fn stream_faulted(&self, fault: StreamFault) {
        self.streams_faulted.fetch_add(1, Ordering::Relaxed);
        if fault == StreamFault::Exception(super::StreamException::Throttling) {
            self.throttled.fetch_add(1, Ordering::Relaxed);
        } else {
            self.stream_errors[fault.slot()].fetch_add(1, Ordering::Relaxed);
        }
    }

    /// A stream ended; `cancelled` when it neither completed nor faulted (the client left).
    pub(crate) fn stream_ended(&self, cancelled: bool) {
        if cancelled {
            self.streams_cancelled.fetch_add(1, Ordering::Relaxed);
        }
        self.streams_in_flight.fetch_sub(1, Ordering::AcqRel);
        self.in_flight.fetch_sub(1, Ordering::AcqRel);
    }

    pub(crate) fn unknown_operation(&self) {
        self.errors[UNKNOWN_SLOT].fetch_add(1, Ordering::Relaxed);
    }

    pub(crate) fn snapshot(&self) -> EmulatorStats {
        let mut errors = BTreeMap::new();
        for (slot, n) in self.errors.iter().enumerate() {
            let n = n.load(Ordering::Relaxed);
            if n > 0 {
                let name = FaultKind::ALL
                    .get(slot)
                    .map_or(UNKNOWN_OPERATION, |k| k.name());
                errors.insert(name.to_owned(), n);
            }
        }
        for (slot, n) in self.stream_errors.iter().enumerate() {
            let n = n.load(Ordering::Relaxed);
            if n > 0 {
                errors.insert(StreamFault::SLOT_NAMES[slot].to_owned(), n);
            }
        }
        let per_model = lock(&self.per_model)
            .iter()
            .map(|(k, v)| (k.clone(), *v))
            .collect();
        let (headers, body) = {
            let last = lock(&self.last);
            (last.headers.clone(), last.body.clone())
        };
        EmulatorStats {
            calls: self.calls.load(Ordering::Relaxed),
            ok: self.ok.load(Ordering::Relaxed),
            throttled: self.throttled.load(Ordering::Relaxed),
            throttled_tokens: self.throttled_tokens.load(Ordering::Relaxed),
            throttled_requests: self.throttled_requests.load(Ordering::Relaxed),
            throttled_daily: self.throttled_daily.load(Ordering::Relaxed),
            throttled_stray: self.throttled_stray.load(Ordering::Relaxed),
            tokens_charged: f64::from_bits(self.tokens_charged.load(Ordering::Relaxed)),
            input_tokens: self.input_tokens.load(Ordering::Relaxed),
            output_tokens: self.output_tokens.load(Ordering::Relaxed),
            errors,
            per_model,
            in_flight: self.in_flight.load(Ordering::Acquire),
            max_in_flight: self.max_in_flight.load(Ordering::Acquire),
            streams_started: self.streams_started.load(Ordering::Relaxed),
            streams_completed: self.streams_completed.load(Ordering::Relaxed),
            streams_faulted: self.streams_faulted.load(Ordering::Relaxed),
            streams_cancelled: self.streams_cancelled.load(Ordering::Relaxed),
            streams_in_flight: self.streams_in_flight.load(Ordering::Acquire),
            max_streams_in_flight: self.max_streams_in_flight.load(Ordering::Acquire),
            last_body: body.map(|b| {
                serde_json::from_slice(&b).unwrap_or_else(|_| {
                    serde_json::Value::String(String::from_utf8_lossy(&b).into())
                })
            }),
            last_headers: headers.map(|h| header_map(&h)).unwrap_or_default(),
        }
    }

    /// Zeroes the counters; `max_in_flight` and `max_streams_in_flight` restart from the calls
    /// and streams in flight now.
    pub(crate) fn reset(&self) {
        self.calls.store(0, Ordering::Relaxed);
        self.ok.store(0, Ordering::Relaxed);
        self.throttled.store(0, Ordering::Relaxed);
        for c in [
            &self.throttled_tokens,
            &self.throttled_requests,
            &self.throttled_daily,
            &self.throttled_stray,
        ] {
            c.store(0, Ordering::Relaxed);
        }
        self.tokens_charged
            .store(0.0f64.to_bits(), Ordering::Relaxed);
        self.input_tokens.store(0, Ordering::Relaxed);
        self.output_tokens.store(0, Ordering::Relaxed);
        for e in self.errors.iter().chain(&self.stream_errors) {
            e.store(0, Ordering::Relaxed);
        }
        self.max_in_flight
            .store(self.in_flight.load(Ordering::Acquire), Ordering::Release);
        self.streams_started.store(0, Ordering::Relaxed);
        self.streams_completed.store(0, Ordering::Relaxed);
        self.streams_faulted.store(0, Ordering::Relaxed);
        self.streams_cancelled.store(0, Ordering::Relaxed);
        self.max_streams_in_flight.store(
            self.streams_in_flight.load(Ordering::Acquire),
            Ordering::Release,
        );
        lock(&self.per_model).clear();
        *lock(&self.last) = Last::default();
    }
}

fn header_map(headers: &HeaderMap) -> BTreeMap<String, String> {
    let mut out: BTreeMap<String, String> = BTreeMap::new();
    for (name, value) in headers.iter() {
        let name = name.as_str().to_ascii_lowercase();
        let text = String::from_utf8_lossy(value.as_bytes());
        let text = if name == "authorization" {
            text.split_whitespace()
                .next()
                .unwrap_or_default()
                .to_owned()
        } else {
            text.into_owned()
        };
        out.entry(name)
            .and_modify(|v| {
                v.push_str(", ");
                v.push_str(&text);
            })
            .or_insert(text);
    }
    out
}
