//! The stream rules of `POST /v1/messages` with `stream: true` (and the same rules on
//! `/model/{id}/invoke-with-response-stream`), over HTTP against the real server, the real AWS
//! SDK and the emulator's InvokeModelWithResponseStream with scripted faults:
//! the commit point, invisible retries before content, errors after it, idle timeouts, the
//! deadline, shutdown, a client that leaves, pings, usage, and exactly one terminal event.

mod common;

use std::time::{Duration, Instant};

use common::sse::{self, chunk_event, SseEvent};
use common::{eventually, model_path, start, TestServer, MODEL};
use model_server::protocol::eventstream::Frame;
use serde_json::{json, Value};

const WAIT: Duration = Duration::from_secs(10);

/// A streamed Messages request.
fn streamed(text: &str) -> Value {
    json!({"model": MODEL, "max_tokens": 100, "stream": true,
           "messages": [{"role": "user", "content": text}]})
}

/// The body of the same request on the Bedrock-native route.
fn invoke_body(text: &str) -> Value {
    json!({"anthropic_version": "bedrock-2023-05-31", "max_tokens": 100,
           "messages": [{"role": "user", "content": text}]})
}

fn invoke_stream_path() -> String {
    model_path("invoke-with-response-stream")
}

/// Opens `/v1/messages` with `stream: true` and reads every event.
async fn messages(
    server: &TestServer,
    headers: &[(&str, &str)],
    text: &str,
) -> (u16, Vec<SseEvent>) {
    let mut response = sse::post(&server.url, "/v1/messages", headers, &streamed(text)).await;
    let status = response.status;
    (status, response.events().await)
}

/// The names of `events`, pings left out.
fn names(events: &[SseEvent]) -> Vec<&str> {
    events
        .iter()
        .map(|e| e.name.as_str())
        .filter(|n| *n != "ping")
        .collect()
}

/// The text the `text_delta`s carry.
fn text_of(events: &[SseEvent]) -> String {
    events
        .iter()
        .filter_map(|e| e.data["delta"]["text"].as_str())
        .collect()
}

/// The checks every stream must pass: `message_start` first, exactly one terminal event
/// (`message_stop` or `error`) and it is the last.
fn assert_well_formed(events: &[SseEvent]) {
    let names = names(events);
    assert_eq!(names.first(), Some(&"message_start"), "{names:?}");
    assert_eq!(
        names.iter().filter(|n| **n == "message_start").count(),
        1,
        "{names:?}"
    );
    let terminals = names
        .iter()
        .filter(|n| **n == "message_stop" || **n == "error")
        .count();
    assert_eq!(terminals, 1, "exactly one terminal event: {names:?}");
    let last = names.last().unwrap();
    assert!(*last == "message_stop" || *last == "error", "{names:?}");
    for event in events {
        assert_eq!(event.data["type"], event.name.as_str(), "{event:?}");
    }
}

/// The `error` event's `error.type`.
fn error_type(events: &[SseEvent]) -> &str {
    let last = events.last().expect("an event");
    assert_eq!(last.name, "error", "{events:?}");
    last.data["error"]["type"].as_str().unwrap()
}

fn throttled(status: &Value) -> u64 {
    status["throttle"][0]["throttled"].as_u64().unwrap_or(0)
}

#[actix_web::test]
async fn a_clean_stream_relays_every_event_with_usage_and_no_bedrock_metrics() {
    let server = start(&[]).await;
    let mut response = sse::post(
        &server.url,
        "/v1/messages",
        &[("x-request-id", "client-7")],
        &streamed("Hello stream"),
    )
    .await;
    assert_eq!(response.status, 200);
    assert_eq!(
        response.header("content-type"),
        Some("text/event-stream; charset=utf-8")
    );
    assert_eq!(response.header("cache-control"), Some("no-cache"));
    assert_eq!(response.header("x-accel-buffering"), Some("no"));
    assert_eq!(response.header("request-id"), Some("client-7"));
    assert_eq!(response.header("x-request-id"), Some("client-7"));
    assert_eq!(response.header("x-modelserver-model"), Some(MODEL));
    let events = response.events().await;
    assert_well_formed(&events);
    let mut shape = names(&events);
    shape.dedup();
    assert_eq!(
        shape,
        [
            "message_start",
            "content_block_start",
            "content_block_delta",
            "content_block_stop",
            "message_delta",
            "message_stop"
        ]
    );
    assert!(text_of(&events).contains("Hello stream"), "{events:?}");
    // Usage: input on message_start, output on the final message_delta.
    assert!(
        events[0].data["message"]["usage"]["input_tokens"]
            .as_u64()
            .unwrap()
            > 0
    );
    let delta = events.iter().find(|e| e.name == "message_delta").unwrap();
    assert!(delta.data["usage"]["output_tokens"].as_u64().unwrap() > 1);
    // Bedrock's metrics stay Bedrock's.
    let stop = events.last().unwrap();
    assert_eq!(stop.data, json!({"type": "message_stop"}));
    let stats = server.stats();
    assert_eq!((stats.calls, stats.streams_completed), (1, 1));
    assert_eq!(
        server.status().await["pools"][0]["counters"]["completed"],
        1
    );
}

#[actix_web::test]
async fn the_bedrock_route_relays_each_event_exactly_as_bedrock_sent_it_metrics_included() {
    let server = start(&[]).await;
    let mut response = sse::post(
        &server.url,
        &invoke_stream_path(),
        &[],
        &invoke_body("Hello frames"),
    )
    .await;
    assert_eq!(response.status, 200);
    assert_eq!(
        response.header("content-type"),
        Some("application/vnd.amazon.eventstream")
    );
    let frames = response.frames().await;
    let events: Vec<Value> = frames
        .iter()
        .map(|f| chunk_event(f).expect("a chunk"))
        .collect();
    let types: Vec<&str> = events.iter().map(|e| e["type"].as_str().unwrap()).collect();
    assert_eq!(types.first(), Some(&"message_start"));
    assert_eq!(types.last(), Some(&"message_stop"));
    let metrics = &events.last().unwrap()["amazon-bedrock-invocationMetrics"];
    assert!(
        metrics["outputTokenCount"].as_u64().unwrap() > 0,
        "{metrics}"
    );
}

#[actix_web::test]
async fn a_throttle_before_content_is_retried_invisibly_and_reported_to_the_throttle() {
    let server = start(&[]).await;
    // After message_start and content_block_start: nothing of the content went out yet.
    server.script(MODEL, &["throttlingException@2"]);
    let (status, events) = messages(&server, &[], "retry me").await;
    assert_eq!(status, 200);
    assert_well_formed(&events);
    assert_eq!(names(&events).last(), Some(&"message_stop"));
    assert_eq!(
        names(&events)
            .iter()
            .filter(|n| **n == "content_block_start")
            .count(),
        1,
        "the first attempt's held content_block_start was dropped: {events:?}"
    );
    assert!(text_of(&events).contains("retry me"));
    let stats = server.stats();
    assert_eq!((stats.calls, stats.throttled), (2, 1), "{stats:?}");
    assert_eq!(throttled(&server.status().await), 1);
}

#[actix_web::test]
async fn a_cut_connection_before_content_is_retried_invisibly() {
    let server = start(&[]).await;
    server.script(MODEL, &["cut@1"]);
    let (status, events) = messages(&server, &[], "cut then fine").await;
    assert_eq!(status, 200);
    assert_well_formed(&events);
    assert_eq!(names(&events).last(), Some(&"message_stop"));
    assert!(text_of(&events).contains("cut then fine"));
    assert_eq!(server.stats().calls, 2);
}

#[actix_web::test]
async fn refusals_before_the_commit_are_real_http_errors_with_retry_after() {
    let server = start(&[]).await;
    // Retries used up on throttles: 429 rate_limit_error.
    server.script(MODEL, &["ThrottlingException"; 2]);
    let mut response = sse::post(
        &server.url,
        "/v1/messages",
        &[("x-modelserver-max-retries", "1")],
        &streamed("hi"),
    )
    .await;
    assert_eq!(response.status, 429);
    assert_eq!(response.header("retry-after"), Some("1"));
    assert_eq!(response.header("content-type"), Some("application/json"));
    let body = response.json().await;
    assert_eq!(body["type"], "error");
    assert_eq!(body["error"]["type"], "rate_limit_error");
    assert_eq!(body["request_id"], response.header("request-id").unwrap());
    assert_eq!(server.stats().calls, 2, "one call and one retry");

    // The same on the Bedrock route: 429 ThrottlingException.
    server.script(MODEL, &["ThrottlingException"]);
    let mut response = sse::post(
        &server.url,
        &invoke_stream_path(),
        &[("x-modelserver-max-retries", "0")],
        &invoke_body("hi"),
    )
    .await;
    assert_eq!(response.status, 429);
    assert_eq!(
        response.header("x-amzn-errortype"),
        Some("ThrottlingException")
    );
    assert_eq!(response.header("retry-after"), Some("1"));
    assert!(response.json().await["message"].is_string());

    // Bedrock unavailable past the retries: 503 overloaded_error.
    server.script(MODEL, &["ServiceUnavailableException"; 2]);
    let mut response = sse::post(
        &server.url,
        "/v1/messages",
        &[("x-modelserver-max-retries", "1")],
        &streamed("hi"),
    )
    .await;
    assert_eq!(response.status, 503);
    assert_eq!(response.header("retry-after"), Some("1"));
    assert_eq!(response.json().await["error"]["type"], "overloaded_error");
}

#[actix_web::test]
async fn a_stream_with_no_answer_by_its_deadline_is_a_504() {
    let server = start(&[]).await;
    server.script(MODEL, &["hang"]);
    let mut response = sse::post(
        &server.url,
        "/v1/messages",
        &[("x-modelserver-timeout", "0.3")],
        &streamed("hi"),
    )
    .await;
    assert_eq!(response.status, 504);
    assert_eq!(response.json().await["error"]["type"], "timeout_error");
}

#[actix_web::test]
async fn a_load_refusal_is_529_overloaded_on_anthropic_and_429_throttling_on_bedrock() {
    // Queue capacity 0: every request is refused for load at once.
    let server = start(&["--queue-capacity", "0"]).await;
    let response = sse::post(&server.url, "/v1/messages", &[], &streamed("hi")).await;
    assert_eq!(response.status, 529);
    assert_eq!(response.header("retry-after"), Some("1"));
    let mut response = sse::post(&server.url, "/v1/messages", &[], &streamed("hi")).await;
    let body = response.json().await;
    assert_eq!(body["type"], "error");
    assert_eq!(body["error"]["type"], "overloaded_error");
    let mut response = sse::post(&server.url, &invoke_stream_path(), &[], &invoke_body("hi")).await;
    assert_eq!(response.status, 429);
    assert_eq!(
        response.header("x-amzn-errortype"),
        Some("ThrottlingException")
    );
    assert_eq!(response.header("retry-after"), Some("1"));
    assert!(response.json().await["message"]
        .as_str()
        .unwrap()
        .contains("queue is full"));
    assert_eq!(server.stats().calls, 0);
}

#[actix_web::test]
async fn a_throttle_after_content_is_an_error_event_and_a_reported_throttle() {
    let server = start(&[]).await;
    // After message_start, content_block_start and the first delta.
    server.script(MODEL, &["throttlingException@3"]);
    let (status, events) = messages(&server, &[], "partial").await;
    assert_eq!(status, 200);
    assert_well_formed(&events);
    assert_eq!(error_type(&events), "rate_limit_error");
    assert_eq!(
        names(&events),
        [
            "message_start",
            "content_block_start",
            "content_block_delta",
            "error"
        ]
    );
    assert_eq!(server.stats().calls, 1, "content went out: no retry");
    assert_eq!(throttled(&server.status().await), 1);

    // The Bedrock route ends with the exception Bedrock sent.
    server.script(MODEL, &["modelStreamErrorException@3"]);
    let mut response = sse::post(&server.url, &invoke_stream_path(), &[], &invoke_body("x")).await;
    assert_eq!(response.status, 200);
    let frames = response.frames().await;
    assert_eq!(frames.len(), 4, "{frames:?}");
    let Frame::Exception {
        exception_type,
        payload,
    } = frames.last().unwrap()
    else {
        panic!("{frames:?}");
    };
    assert_eq!(exception_type, "modelStreamErrorException");
    let payload: Value = serde_json::from_slice(payload).unwrap();
    assert!(payload["message"]
        .as_str()
        .unwrap()
        .contains("ModelStreamErrorException"));
}

#[actix_web::test]
async fn a_connection_cut_after_content_is_an_error_event_never_a_clean_end() {
    let server = start(&[]).await;
    server.script(MODEL, &["cut@4"]);
    let (status, events) = messages(&server, &[], "cut me").await;
    assert_eq!(status, 200);
    assert_well_formed(&events);
    assert_eq!(error_type(&events), "api_error");
    assert!(!names(&events).contains(&"message_stop"));
    assert_eq!(server.stats().calls, 1);
}

#[actix_web::test]
async fn an_idle_stream_is_retried_before_content_and_an_error_after() {
    let server = start(&["--stream-idle-timeout-secs", "0.3"]).await;
    // Silent after message_start: cut after 0.3 s and retried.
    server.script(MODEL, &["stall@1"]);
    let started = Instant::now();
    let (status, events) = messages(&server, &[], "wake up").await;
    assert_eq!(status, 200);
    assert_well_formed(&events);
    assert_eq!(names(&events).last(), Some(&"message_stop"));
    assert!(started.elapsed() >= Duration::from_millis(300));
    assert_eq!(server.stats().calls, 2);
    assert!(
        eventually(WAIT, || async { server.stats().streams_in_flight == 0 }).await,
        "the stalled stream's connection was closed"
    );

    // Silent after the first delta: an error event.
    server.emulator.reset();
    server.script(MODEL, &["stall@3"]);
    let (status, events) = messages(&server, &[], "stall later").await;
    assert_eq!(status, 200);
    assert_well_formed(&events);
    assert_eq!(error_type(&events), "api_error");
    let message = events.last().unwrap().data["error"]["message"]
        .as_str()
        .unwrap();
    assert!(message.contains("StreamIdleTimeout"), "{message}");
    assert_eq!(server.stats().calls, 1);
}

#[actix_web::test]
async fn the_deadline_ends_a_stream_in_the_middle_with_a_timeout_error() {
    let server = start(&[]).await;
    server.script(MODEL, &["stall@3"]);
    let started = Instant::now();
    let (status, events) = messages(&server, &[("x-modelserver-timeout", "0.5")], "slow").await;
    let took = started.elapsed();
    assert_eq!(status, 200);
    assert_well_formed(&events);
    assert_eq!(error_type(&events), "timeout_error");
    assert!(took >= Duration::from_millis(500), "{took:?}");
    assert!(took < Duration::from_secs(5), "{took:?}");
}

#[actix_web::test]
async fn shutdown_ends_a_running_stream_with_an_error_event() {
    let server = start(&[]).await;
    server.script(MODEL, &["stall@3"]);
    let mut response = sse::post(&server.url, "/v1/messages", &[], &streamed("bye")).await;
    assert_eq!(response.status, 200);
    let mut seen = Vec::new();
    while seen.len() < 3 {
        seen.push(response.next_event().await.expect("three events"));
    }
    // The drain time is already over: what runs is answered "shutting down".
    server.broker.shutdown(Duration::ZERO).await;
    seen.extend(response.events().await);
    assert_well_formed(&seen);
    assert_eq!(error_type(&seen), "overloaded_error");
}

#[actix_web::test]
async fn a_worker_that_dies_mid_stream_ends_it_with_an_error_event() {
    let server = start(&[]).await;
    let model = "test-hook/panic-mid-stream/one";
    let body = json!({"model": model, "max_tokens": 50, "stream": true,
                      "messages": [{"role": "user", "content": "crash"}]});
    let mut response = sse::post(&server.url, "/v1/messages", &[], &body).await;
    assert_eq!(response.status, 200);
    let events = response.events().await;
    assert_well_formed(&events);
    assert_eq!(error_type(&events), "api_error");
    // The pool replaced the worker and serves the next stream.
    let body = json!({"model": model, "max_tokens": 50, "stream": true,
                      "messages": [{"role": "user", "content": "again"}]});
    let mut response = sse::post(&server.url, "/v1/messages", &[], &body).await;
    let events = response.events().await;
    assert_well_formed(&events);
    assert_eq!(names(&events).last(), Some(&"message_stop"));
}

#[actix_web::test]
async fn a_stream_job_dropped_before_its_call_is_requeued_and_served() {
    let server = start(&[]).await;
    let body = json!({"model": "test-hook/panic-before-call/stream", "max_tokens": 50,
                      "stream": true, "messages": [{"role": "user", "content": "again"}]});
    let mut response = sse::post(&server.url, "/v1/messages", &[], &body).await;
    assert_eq!(response.status, 200);
    let events = response.events().await;
    assert_well_formed(&events);
    assert_eq!(names(&events).last(), Some(&"message_stop"));
    assert_eq!(server.stats().calls, 1);
    assert_eq!(server.status().await["pools"][0]["counters"]["requeued"], 1);
}

#[actix_web::test]
async fn a_client_that_leaves_cancels_the_bedrock_stream_and_frees_its_slot() {
    let server = start(&[]).await;
    // A slow stream: its first delta is due about 5 s after message_start.
    server.pace_streams(1.0);
    let (socket, seen) = sse::raw_until(
        server.addr,
        "/v1/messages",
        &streamed("leave early please"),
        "event: message_start",
    )
    .await;
    assert!(seen.starts_with("HTTP/1.1 200"), "{seen}");
    assert_eq!(server.stats().streams_in_flight, 1);
    drop(socket);
    let started = Instant::now();
    assert!(
        eventually(WAIT, || async { server.stats().streams_cancelled == 1 }).await,
        "{:?}",
        server.stats()
    );
    assert!(
        started.elapsed() < Duration::from_secs(1),
        "cancelled at once, not when the next event came"
    );
    assert!(
        eventually(WAIT, || async {
            let pool = &server.status().await["pools"][0];
            pool["counters"]["abandoned_in_flight"] == 1 && pool["in_flight"] == 0
        })
        .await
    );
    assert_eq!(server.stats().streams_completed, 0);
}

#[actix_web::test]
async fn pings_keep_a_silent_stream_alive() {
    let server = start(&["--stream-ping-secs", "0.05"]).await;
    // About 150 ms between deltas of three words.
    server.pace_streams(20.0);
    let (status, events) = messages(&server, &[], "ping me").await;
    assert_eq!(status, 200);
    assert_well_formed(&events);
    let pings: Vec<&SseEvent> = events.iter().filter(|e| e.name == "ping").collect();
    assert!(!pings.is_empty(), "{events:?}");
    assert!(pings.iter().all(|p| p.data == json!({"type": "ping"})));
    assert_eq!(
        events.first().unwrap().name,
        "message_start",
        "no ping before the commit"
    );
    assert_eq!(names(&events).last(), Some(&"message_stop"));
    assert!(text_of(&events).contains("ping me"));
}

#[actix_web::test]
async fn a_fast_stream_gets_no_pings() {
    let server = start(&[]).await;
    let (_, events) = messages(&server, &[], "quick").await;
    assert!(events.iter().all(|e| e.name != "ping"), "{events:?}");
}
