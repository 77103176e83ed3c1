//! `POST /v1/chat/completions` over HTTP against the real server, the real AWS SDK and the
//! emulator: the `chat.completion` and what Bedrock received, finish reasons, tool calls
//! whole and streamed (OpenAI's own indexes, arguments that assemble to JSON), JSON-schema
//! answers as content, the chunk
//! stream's framing (role first, usage chunk, `[DONE]`), the stream rules it inherits from
//! the broker's stream machinery (invisible retries before content, an error chunk and no
//! `[DONE]` after, pings, a client that leaves), and every error in OpenAI's shape.

mod common;

use std::time::{Duration, Instant};

use common::sse;
use common::{eventually, start, TestServer, MODEL};
use model_server::emulator::EmulatorConfig;
use serde_json::{json, Value};

const PATH: &str = "/v1/chat/completions";
const WAIT: Duration = Duration::from_secs(10);

/// A Chat Completions request with one user message.
fn chat(text: &str) -> Value {
    json!({"model": MODEL, "messages": [{"role": "user", "content": text}]})
}

/// The same, streamed.
fn streamed(text: &str) -> Value {
    let mut body = chat(text);
    body["stream"] = json!(true);
    body
}

/// A weather tool (one required argument) and a clock tool (no arguments).
fn tools() -> Value {
    json!([
        {"type": "function", "function": {"name": "get_weather",
            "description": "The weather of a city",
            "parameters": {"type": "object", "properties": {"city": {"type": "string"}},
                           "required": ["city"]}}},
        {"type": "function", "function": {"name": "get_time", "description": "The time"}}
    ])
}

/// One block of a chunk stream.
#[derive(Debug, Clone, PartialEq)]
enum Line {
    /// `data: {chunk}` (or `data: {"error": ...}`).
    Data(Value),
    /// `data: [DONE]`.
    Done,
    /// An SSE comment (`: ping`).
    Comment(String),
}

/// Splits a chunk stream's body into its blocks; every block must be one of [`Line`].
fn lines(body: &str) -> Vec<Line> {
    assert!(
        body.ends_with("\n\n"),
        "the body ends after a whole block: {body:?}"
    );
    body.split_terminator("\n\n")
        .map(|block| {
            if let Some(comment) = block.strip_prefix(':') {
                Line::Comment(comment.trim().to_string())
            } else if block == "data: [DONE]" {
                Line::Done
            } else {
                let data = block
                    .strip_prefix("data: ")
                    .unwrap_or_else(|| panic!("not a data line: {block:?}"));
                Line::Data(serde_json::from_str(data).expect("a JSON data line"))
            }
        })
        .collect()
}

/// Opens a stream and reads all of it: the status and its blocks.
async fn stream(server: &TestServer, headers: &[(&str, &str)], body: &Value) -> (u16, Vec<Line>) {
    let mut response = sse::post(&server.url, PATH, headers, body).await;
    assert_eq!(
        response.header("content-type"),
        Some("text/event-stream; charset=utf-8")
    );
    let status = response.status;
    (status, lines(&response.text().await))
}

/// The chunks of a stream (pings, `[DONE]` and errors left out).
fn chunks(lines: &[Line]) -> Vec<&Value> {
    lines
        .iter()
        .filter_map(|l| match l {
            Line::Data(v) if v.get("error").is_none() => Some(v),
            _ => None,
        })
        .collect()
}

/// The text the chunks' `delta.content` carry.
fn content(lines: &[Line]) -> String {
    chunks(lines)
        .iter()
        .filter_map(|c| c["choices"][0]["delta"]["content"].as_str())
        .collect()
}

/// The checks every stream passes: the role first, one id for all chunks, and exactly one
/// end: `[DONE]` last with no error, or an error last with no `[DONE]`.
fn assert_well_formed(lines: &[Line]) {
    let chunks = chunks(lines);
    let first = chunks.first().expect("a first chunk");
    assert_eq!(first["choices"][0]["delta"]["role"], "assistant", "{first}");
    assert_eq!(first["object"], "chat.completion.chunk");
    let roles = chunks
        .iter()
        .filter(|c| c["choices"][0]["delta"].get("role").is_some())
        .count();
    assert_eq!(roles, 1, "the role once: {lines:?}");
    for chunk in &chunks {
        assert_eq!(chunk["id"], first["id"], "{chunk}");
        assert_eq!(chunk["model"], MODEL);
    }
    let dones = lines.iter().filter(|l| **l == Line::Done).count();
    let errors = lines
        .iter()
        .filter(|l| matches!(l, Line::Data(v) if v.get("error").is_some()))
        .count();
    assert_eq!(dones + errors, 1, "exactly one end: {lines:?}");
    let last = lines.iter().rev().find(|l| !matches!(l, Line::Comment(_)));
    assert!(
        matches!(last, Some(Line::Done))
            || matches!(last, Some(Line::Data(v)) if v.get("error").is_some()),
        "the end is last: {lines:?}"
    );
}

/// The error a broken stream ended with.
fn stream_error(lines: &[Line]) -> &Value {
    match lines.last() {
        Some(Line::Data(v)) if v.get("error").is_some() => &v["error"],
        other => panic!("the stream did not end with an error: {other:?} in {lines:?}"),
    }
}

#[actix_web::test]
async fn a_whole_completion_is_openais_object_and_bedrock_gets_the_mapped_body() {
    let server = start(&[]).await;
    let body = json!({"model": MODEL, "max_tokens": 200, "temperature": 1.5, "stop": ["zzz"],
        "user": "user-7", "seed": 42,
        "messages": [{"role": "system", "content": "Be brief."},
                     {"role": "user", "content": "Hello chat"}]});
    let (status, response, completion) =
        sse::post_whole(&server.url, PATH, &[("x-request-id", "client-9")], &body).await;
    assert_eq!(status, 200, "{completion}");
    assert_eq!(response.header("content-type"), Some("application/json"));
    assert_eq!(response.header("x-request-id"), Some("client-9"));
    assert_eq!(response.header("x-modelserver-model"), Some(MODEL));
    assert_eq!(completion["object"], "chat.completion");
    let id = completion["id"].as_str().unwrap();
    assert!(id.starts_with("chatcmpl-") && id.len() == 33, "{id}");
    assert!(completion["created"].as_u64().unwrap() > 1_700_000_000);
    assert_eq!(completion["model"], MODEL);
    let choices = completion["choices"].as_array().unwrap();
    assert_eq!(choices.len(), 1);
    assert_eq!(choices[0]["index"], 0);
    assert_eq!(choices[0]["finish_reason"], "stop");
    let message = &choices[0]["message"];
    assert_eq!(message["role"], "assistant");
    let text = message["content"].as_str().unwrap();
    assert!(
        text.contains("Hello chat") && text.contains("system prompt"),
        "{text}"
    );
    assert!(message.get("tool_calls").is_none());
    let usage = &completion["usage"];
    let (prompt, completion_tokens) = (
        usage["prompt_tokens"].as_u64().unwrap(),
        usage["completion_tokens"].as_u64().unwrap(),
    );
    assert!(prompt > 0 && completion_tokens > 0, "{usage}");
    assert_eq!(usage["total_tokens"], prompt + completion_tokens);
    assert_eq!(usage["prompt_tokens_details"]["cached_tokens"], 0);
    // What Bedrock got: the Anthropic body, temperature clamped, seed ignored.
    let sent = server.stats().last_body.unwrap();
    assert_eq!(
        sent,
        json!({"anthropic_version": "bedrock-2023-05-31", "max_tokens": 200, "temperature": 1.0,
               "stop_sequences": ["zzz"], "metadata": {"user_id": "user-7"},
               "system": [{"type": "text", "text": "Be brief."}],
               "messages": [{"role": "user", "content": [{"type": "text", "text": "Hello chat"}]}]})
    );
}

#[actix_web::test]
async fn stop_sequences_and_max_tokens_are_finish_reasons_and_the_default_is_the_seeds() {
    let server = start(&[]).await;
    // The emulator's reply starts "Emulated reply to 1 turn(s)".
    let mut body = chat("stop here");
    body["stop"] = json!("turn");
    let (status, _, completion) = sse::post_whole(&server.url, PATH, &[], &body).await;
    assert_eq!(status, 200, "{completion}");
    assert_eq!(completion["choices"][0]["finish_reason"], "stop");
    assert_eq!(
        completion["choices"][0]["message"]["content"],
        "Emulated reply to 1 "
    );
    assert_eq!(server.stats().last_body.unwrap()["max_tokens"], 4000);
    let mut body = chat("a long enough question");
    body["max_completion_tokens"] = json!(3);
    let (_, _, completion) = sse::post_whole(&server.url, PATH, &[], &body).await;
    assert_eq!(completion["choices"][0]["finish_reason"], "length");
    assert_eq!(completion["usage"]["completion_tokens"], 3);
}

#[actix_web::test]
async fn a_tool_round_trip_whole_keeps_ids_and_maps_arguments_both_ways() {
    let server = start(&[]).await;
    let question = json!({"role": "user", "content": "What is the weather in Paris?"});
    let body = json!({"model": MODEL, "tools": tools(), "tool_choice": "required",
                      "parallel_tool_calls": false, "messages": [question]});
    let (status, _, completion) = sse::post_whole(&server.url, PATH, &[], &body).await;
    assert_eq!(status, 200, "{completion}");
    let sent = server.stats().last_body.unwrap();
    assert_eq!(
        sent["tool_choice"],
        json!({"type": "any", "disable_parallel_tool_use": true})
    );
    assert_eq!(sent["tools"][1]["name"], "get_time");
    assert_eq!(
        sent["tools"][1]["input_schema"],
        json!({"type": "object", "properties": {}})
    );
    let choice = &completion["choices"][0];
    assert_eq!(choice["finish_reason"], "tool_calls");
    assert!(choice["message"]["content"].is_null(), "{choice}");
    let call = &choice["message"]["tool_calls"][0];
    assert_eq!(call["type"], "function");
    assert_eq!(call["function"]["name"], "get_weather");
    let arguments: Value =
        serde_json::from_str(call["function"]["arguments"].as_str().unwrap()).unwrap();
    assert!(arguments["city"].is_string(), "{arguments}");
    let id = call["id"].as_str().unwrap();
    assert!(id.starts_with("toolu_"), "{id}");
    // The result goes back as a tool message; the answer quotes it.
    let body = json!({"model": MODEL, "tools": tools(), "messages": [
        question,
        {"role": "assistant", "content": null, "tool_calls": [call]},
        {"role": "tool", "tool_call_id": id, "content": "18 C and sunny"}
    ]});
    let (status, _, completion) = sse::post_whole(&server.url, PATH, &[], &body).await;
    assert_eq!(status, 200, "{completion}");
    assert_eq!(completion["choices"][0]["finish_reason"], "stop");
    assert!(completion["choices"][0]["message"]["content"]
        .as_str()
        .unwrap()
        .contains("18 C and sunny"));
    let sent = server.stats().last_body.unwrap();
    assert_eq!(
        sent["messages"][1]["content"][0],
        json!({"type": "tool_use", "id": id, "name": "get_weather", "input": arguments})
    );
    assert_eq!(
        sent["messages"][2],
        json!({"role": "user", "content": [
            {"type": "tool_result", "tool_use_id": id, "content": "18 C and sunny"}]})
    );
}

#[actix_web::test]
async fn a_stream_is_the_role_then_content_then_finish_then_usage_then_done() {
    let server = start(&[]).await;
    let mut body = streamed("Hello stream");
    body["stream_options"] = json!({"include_usage": true});
    let mut response = sse::post(&server.url, PATH, &[("x-request-id", "s-1")], &body).await;
    assert_eq!(response.status, 200);
    assert_eq!(response.header("cache-control"), Some("no-cache"));
    assert_eq!(response.header("x-accel-buffering"), Some("no"));
    assert_eq!(response.header("x-request-id"), Some("s-1"));
    assert_eq!(response.header("x-modelserver-model"), Some(MODEL));
    let lines = lines(&response.text().await);
    assert_well_formed(&lines);
    assert_eq!(lines.last(), Some(&Line::Done));
    assert!(content(&lines).contains("Hello stream"), "{lines:?}");
    let all = chunks(&lines);
    assert!(
        all.len() >= 5,
        "role, several deltas, finish, usage: {lines:?}"
    );
    // Every chunk carries `usage: null` but the last, which has no choices and the usage.
    let (usage_chunk, rest) = all.split_last().unwrap();
    assert_eq!(usage_chunk["choices"], json!([]));
    let usage = &usage_chunk["usage"];
    assert!(usage["completion_tokens"].as_u64().unwrap() > 1, "{usage}");
    assert!(usage["prompt_tokens"].as_u64().unwrap() > 0, "{usage}");
    assert!(rest.iter().all(|c| c["usage"].is_null()));
    let finish = rest.last().unwrap();
    assert_eq!(finish["choices"][0]["finish_reason"], "stop");
    assert_eq!(finish["choices"][0]["delta"], json!({}));
    assert!(rest[..rest.len() - 1]
        .iter()
        .all(|c| c["choices"][0]["finish_reason"].is_null()));
    // Without include_usage: no usage chunk and no usage key.
    let (_, lines) = stream(&server, &[], &streamed("no usage")).await;
    assert_well_formed(&lines);
    assert!(chunks(&lines)
        .iter()
        .all(|c| c.get("usage").is_none() && c["choices"].as_array().unwrap().len() == 1));
    let stats = server.stats();
    assert_eq!((stats.calls, stats.streams_completed), (2, 2));
}

#[actix_web::test]
async fn streamed_tool_calls_count_from_zero_and_their_arguments_assemble_to_json() {
    let server = start(&[]).await;
    // Text, then a call of the second Anthropic block: OpenAI index 0.
    let mut body = streamed("What is the weather? call get_weather");
    body["tools"] = tools();
    let (status, lines) = stream(&server, &[], &body).await;
    assert_eq!(status, 200);
    assert_well_formed(&lines);
    assert!(!content(&lines).is_empty(), "the text before the call");
    let calls: Vec<&Value> = chunks(&lines)
        .into_iter()
        .filter_map(|c| c["choices"][0]["delta"]["tool_calls"].as_array())
        .flatten()
        .collect();
    assert!(
        calls.len() >= 2,
        "a start and argument fragments: {calls:?}"
    );
    assert!(calls.iter().all(|c| c["index"] == 0), "{calls:?}");
    assert_eq!(calls[0]["function"]["name"], "get_weather");
    assert_eq!(calls[0]["type"], "function");
    assert!(calls[0]["id"].as_str().unwrap().starts_with("toolu_"));
    assert!(
        calls[1..].iter().all(|c| c.get("id").is_none()),
        "{calls:?}"
    );
    let arguments: String = calls
        .iter()
        .filter_map(|c| c["function"]["arguments"].as_str())
        .collect();
    let arguments: Value = serde_json::from_str(&arguments).expect("valid JSON");
    assert!(arguments["city"].is_string(), "{arguments}");
    let finish = chunks(&lines).last().unwrap()["choices"][0]["finish_reason"].clone();
    assert_eq!(finish, "tool_calls");
    // A tool without arguments streams "{}".
    let mut body = streamed("What time is it? call get_time");
    body["tools"] = tools();
    let (_, lines) = stream(&server, &[], &body).await;
    assert_well_formed(&lines);
    let arguments: String = chunks(&lines)
        .into_iter()
        .filter_map(|c| c["choices"][0]["delta"]["tool_calls"].as_array())
        .flatten()
        .filter_map(|c| c["function"]["arguments"].as_str())
        .collect();
    assert_eq!(arguments, "{}");
}

#[actix_web::test]
async fn json_schema_answers_are_json_content_whole_and_streamed() {
    let server = start(&[]).await;
    let format = json!({"type": "json_schema", "json_schema": {"name": "weather", "strict": true,
        "schema": {"type": "object", "additionalProperties": false,
                   "properties": {"city": {"type": "string"}, "celsius": {"type": "integer"}},
                   "required": ["city", "celsius"]}}});
    let mut body = chat("The weather in Paris, as JSON");
    body["response_format"] = format.clone();
    let (status, _, completion) = sse::post_whole(&server.url, PATH, &[], &body).await;
    assert_eq!(status, 200, "{completion}");
    let choice = &completion["choices"][0];
    assert_eq!(choice["finish_reason"], "stop");
    assert!(choice["message"].get("tool_calls").is_none(), "{choice}");
    let answer: Value =
        serde_json::from_str(choice["message"]["content"].as_str().unwrap()).expect("JSON");
    assert!(
        answer["city"].is_string() && answer["celsius"].is_i64(),
        "{answer}"
    );
    // Bedrock was asked for the answer through the forced tool.
    let sent = server.stats().last_body.unwrap();
    assert_eq!(sent["tool_choice"]["name"], "json_response");
    assert_eq!(
        sent["tools"][0]["input_schema"],
        format["json_schema"]["schema"]
    );
    // Streamed: the answer arrives as content.
    body["stream"] = json!(true);
    let (_, lines) = stream(&server, &[], &body).await;
    assert_well_formed(&lines);
    let streamed: Value = serde_json::from_str(&content(&lines)).expect("JSON content");
    assert_eq!(streamed, answer);
    let finish = chunks(&lines).last().unwrap()["choices"][0]["finish_reason"].clone();
    assert_eq!(finish, "stop");
}

#[actix_web::test]
async fn a_throttle_before_content_is_retried_invisibly() {
    let server = start(&[]).await;
    // After message_start and content_block_start: no content went out yet.
    server.script(MODEL, &["throttlingException@2"]);
    let (status, lines) = stream(&server, &[], &streamed("retry me")).await;
    assert_eq!(status, 200);
    assert_well_formed(&lines);
    assert_eq!(lines.last(), Some(&Line::Done));
    assert!(content(&lines).contains("retry me"));
    let stats = server.stats();
    assert_eq!((stats.calls, stats.throttled), (2, 1), "{stats:?}");
    assert_eq!(
        server.status().await["throttle"][0]["throttled"],
        1,
        "reported to the shared throttle"
    );
}

#[actix_web::test]
async fn a_failure_after_content_is_an_error_line_and_no_done() {
    let server = start(&[]).await;
    // After message_start, content_block_start and the first delta.
    server.script(MODEL, &["throttlingException@3"]);
    let (status, lines) = stream(&server, &[], &streamed("partial answer")).await;
    assert_eq!(status, 200);
    assert_well_formed(&lines);
    assert!(!content(&lines).is_empty(), "the first delta went out");
    let error = stream_error(&lines);
    assert_eq!(error["type"], "requests");
    assert_eq!(error["code"], "rate_limit_exceeded");
    assert!(error["message"].as_str().unwrap().contains("Throttling"));
    assert!(!lines.contains(&Line::Done));
    assert_eq!(server.stats().calls, 1, "content went out: no retry");
    // A cut connection and Bedrock's own stream exception: server errors.
    for fault in ["cut@4", "modelStreamErrorException@3"] {
        server.script(MODEL, &[fault]);
        let (_, lines) = stream(&server, &[], &streamed("cut me")).await;
        assert_well_formed(&lines);
        assert_eq!(stream_error(&lines)["type"], "server_error", "{fault}");
    }
}

#[actix_web::test]
async fn the_deadline_ends_a_stream_in_the_middle_with_a_timeout_error() {
    let server = start(&[]).await;
    server.script(MODEL, &["stall@3"]);
    let started = Instant::now();
    let (status, lines) = stream(
        &server,
        &[("x-modelserver-timeout", "0.5")],
        &streamed("slow"),
    )
    .await;
    assert_eq!(status, 200);
    assert!(started.elapsed() >= Duration::from_millis(500));
    assert_well_formed(&lines);
    assert_eq!(stream_error(&lines)["code"], "timeout");
}

#[actix_web::test]
async fn pings_are_sse_comments_during_silence() {
    let server = start(&["--stream-ping-secs", "0.05"]).await;
    // About 150 ms between deltas of three words.
    server.pace_streams(20.0);
    let (status, lines) = stream(&server, &[], &streamed("ping me")).await;
    assert_eq!(status, 200);
    assert_well_formed(&lines);
    let pings = lines
        .iter()
        .filter(|l| **l == Line::Comment("ping".into()))
        .count();
    assert!(pings > 0, "{lines:?}");
    assert!(
        matches!(&lines[0], Line::Data(_)),
        "no ping before the commit"
    );
    assert!(content(&lines).contains("ping me"));
    // A fast stream gets none.
    server.emulator.set_config(EmulatorConfig::default());
    let (_, lines) = stream(&server, &[], &streamed("quick")).await;
    assert!(lines.iter().all(|l| !matches!(l, Line::Comment(_))));
}

#[actix_web::test]
async fn a_client_that_leaves_cancels_the_bedrock_stream() {
    let server = start(&[]).await;
    // A slow stream: its first delta is due about 5 s after message_start.
    server.pace_streams(1.0);
    let (socket, seen) = sse::raw_until(
        server.addr,
        PATH,
        &streamed("leave early please"),
        "\"role\":\"assistant\"",
    )
    .await;
    assert!(seen.starts_with("HTTP/1.1 200"), "{seen}");
    drop(socket);
    assert!(
        eventually(WAIT, || async { server.stats().streams_cancelled == 1 }).await,
        "{:?}",
        server.stats()
    );
    assert_eq!(server.stats().streams_completed, 0);
}

/// Checks an error answer: the status, OpenAI's error object and its `type`.
fn check_error(status: u16, body: &Value, expected: (u16, &str)) {
    assert_eq!(status, expected.0, "{body}");
    let error = &body["error"];
    assert_eq!(error["type"], expected.1, "{body}");
    assert!(error["message"].as_str().is_some_and(|m| !m.is_empty()));
    for key in ["param", "code"] {
        assert!(error.get(key).is_some(), "{key} is always present: {body}");
    }
}

#[actix_web::test]
async fn refusals_name_the_field_and_nothing_reaches_bedrock() {
    let server = start(&["--max-body-bytes", "4096"]).await;
    let image = json!({"model": MODEL, "messages": [{"role": "user", "content": [
        {"type": "image_url", "image_url": {"url": "https://example.com/cat.png"}}]}]});
    let mut two = chat("x");
    two["n"] = json!(2);
    let mut logprobs = chat("x");
    logprobs["logprobs"] = json!(true);
    let mut unknown = chat("x");
    unknown["frobnicate"] = json!(1);
    for (body, param) in [
        (two, "n"),
        (logprobs, "logprobs"),
        (image, "messages[0].content[0].image_url.url"),
        (unknown, "frobnicate"),
        (json!({"messages": []}), "model"),
    ] {
        let (status, _, error) = sse::post_whole(&server.url, PATH, &[], &body).await;
        check_error(status, &error, (400, "invalid_request_error"));
        assert_eq!(error["error"]["param"], param, "{error}");
    }
    let (status, _, error) =
        sse::post_whole(&server.url, PATH, &[], &chat(&"x".repeat(10_000))).await;
    check_error(status, &error, (413, "invalid_request_error"));
    assert_eq!(error["error"]["code"], "request_too_large");
    let (status, _, error) = sse::post_whole(
        &server.url,
        PATH,
        &[("x-modelserver-timeout", "soon")],
        &chat("x"),
    )
    .await;
    check_error(status, &error, (400, "invalid_request_error"));
    assert_eq!(error["error"]["param"], "x-modelserver-timeout");
    assert_eq!(server.stats().calls, 0, "no bad input reaches Bedrock");
}

#[actix_web::test]
async fn bedrock_failures_and_the_brokers_refusals_have_openais_statuses() {
    let server = start(&[]).await;
    let no_retries = [("x-modelserver-max-retries", "0")];
    for (fault, expected, code) in [
        ("ValidationException", (400, "invalid_request_error"), None),
        (
            "AccessDeniedException",
            (403, "invalid_request_error"),
            Some("permission_denied"),
        ),
        (
            "ResourceNotFoundException",
            (404, "invalid_request_error"),
            Some("model_not_found"),
        ),
        (
            "ThrottlingException",
            (429, "requests"),
            Some("rate_limit_exceeded"),
        ),
        ("ModelErrorException", (500, "server_error"), None),
        (
            "ServiceUnavailableException",
            (503, "server_error"),
            Some("service_unavailable"),
        ),
    ] {
        // Whole and streamed alike: a stream refused before its commit is a real error.
        for body in [chat("x"), streamed("x")] {
            server.script(MODEL, &[fault]);
            let (status, response, error) =
                sse::post_whole(&server.url, PATH, &no_retries, &body).await;
            check_error(status, &error, expected);
            assert_eq!(error["error"]["code"], json!(code), "{fault}: {error}");
            assert_eq!(response.header("content-type"), Some("application/json"));
            let retry_after = response.header("retry-after");
            if matches!(expected.0, 429 | 503) {
                assert_eq!(retry_after, Some("1"), "{fault}");
            } else {
                assert_eq!(retry_after, None, "{fault}");
            }
        }
    }
    // Bedrock's own message for its ValidationException.
    server.script(MODEL, &["ValidationException"]);
    let (_, _, error) = sse::post_whole(&server.url, PATH, &[], &chat("x")).await;
    assert!(error["error"]["message"]
        .as_str()
        .unwrap()
        .starts_with("Malformed input request"));
    // The deadline: 504.
    server.script(MODEL, &["hang"]);
    let (status, _, error) = sse::post_whole(
        &server.url,
        PATH,
        &[("x-modelserver-timeout", "0.3")],
        &chat("x"),
    )
    .await;
    check_error(status, &error, (504, "server_error"));
    assert_eq!(error["error"]["code"], "timeout");
}

#[actix_web::test]
async fn a_load_refusal_is_429_with_retry_after() {
    let server = start(&["--queue-capacity", "0"]).await;
    for body in [chat("x"), streamed("x")] {
        let (status, response, error) = sse::post_whole(&server.url, PATH, &[], &body).await;
        check_error(status, &error, (429, "requests"));
        assert_eq!(error["error"]["code"], "rate_limit_exceeded");
        assert_eq!(response.header("retry-after"), Some("1"));
        assert!(error["error"]["message"]
            .as_str()
            .unwrap()
            .contains("queue is full"));
    }
    assert_eq!(server.stats().calls, 0);
}

#[actix_web::test]
async fn the_key_is_required_and_a_bad_one_is_a_401() {
    let server = start(&["--api-key", "sk-chat"]).await;
    for headers in [vec![], vec![("authorization", "Bearer wrong")]] {
        let (status, _, error) = sse::post_whole(&server.url, PATH, &headers, &chat("x")).await;
        check_error(status, &error, (401, "invalid_request_error"));
        assert_eq!(error["error"]["code"], "invalid_api_key");
    }
    assert_eq!(server.stats().calls, 0);
    let (status, _, completion) = sse::post_whole(
        &server.url,
        PATH,
        &[("authorization", "Bearer sk-chat")],
        &chat("with the key"),
    )
    .await;
    assert_eq!(status, 200, "{completion}");
}
