//! The emulator's InvokeModelWithResponseStream against the real `aws-sdk-bedrockruntime`
//! client over loopback HTTP: events, tool calls and thinking, mid-stream faults, pacing,
//! client disconnects, pre-stream errors and quota admission.

use std::time::{Duration, Instant};

use aws_sdk_bedrockruntime::error::{ProvideErrorMetadata, SdkError};
use aws_sdk_bedrockruntime::operation::invoke_model_with_response_stream::InvokeModelWithResponseStreamOutput;
use aws_sdk_bedrockruntime::operation::RequestId;
use aws_sdk_bedrockruntime::types::error::ResponseStreamError;
use aws_sdk_bedrockruntime::types::ResponseStream;
use aws_sdk_bedrockruntime::Client;
use aws_smithy_types::event_stream::RawMessage;
use model_server::emulator::{
    CallDuration, Emulator, EmulatorConfig, EmulatorStats, FaultKind, MidStream, Quota, Scripted,
    StreamException, StreamFault, TokenQuota,
};
use model_server::protocol::eventstream::{decode_frame, Frame};
use serde_json::{json, Value};

mod common;

use common::bedrock::{open_stream as open, sdk_client, OpenError};
use common::emulator::{self, start};

const SONNET: &str = "us.anthropic.claude-sonnet-4-20250514-v1:0";
const HAIKU: &str = "us.anthropic.claude-3-5-haiku-20241022-v1:0";

type StreamError = SdkError<ResponseStreamError, RawMessage>;

fn client(emu: &Emulator) -> Client {
    sdk_client(&emu.endpoint())
}

fn body(text: &str) -> Value {
    json!({
        "anthropic_version": "bedrock-2023-05-31",
        "max_tokens": 400,
        "messages": [{"role": "user", "content": text}]
    })
}

/// A body whose echo reply is long (the quote is 200 characters): many deltas.
fn long_body() -> Value {
    body(&"stream me a fairly long reply please ".repeat(8))
}

async fn invoke(c: &Client, model: &str, body: &Value) -> Value {
    let out = common::bedrock::invoke(c, model, body)
        .await
        .expect("InvokeModel succeeds");
    serde_json::from_slice(out.body().as_ref()).expect("JSON reply")
}

/// The next Anthropic event of the stream, `Ok(None)` at its clean end.
async fn next(out: &mut InvokeModelWithResponseStreamOutput) -> Result<Option<Value>, StreamError> {
    match out.body.recv().await? {
        Some(ResponseStream::Chunk(part)) => {
            let bytes = part.bytes().expect("a chunk carries bytes");
            Ok(Some(
                serde_json::from_slice(bytes.as_ref()).expect("a chunk is one JSON event"),
            ))
        }
        Some(other) => panic!("unexpected stream member {other:?}"),
        None => Ok(None),
    }
}

/// Every event until the end, and how the stream ended.
async fn drain(
    out: &mut InvokeModelWithResponseStreamOutput,
) -> (Vec<Value>, Result<(), StreamError>) {
    let mut events = Vec::new();
    loop {
        match next(out).await {
            Ok(Some(event)) => events.push(event),
            Ok(None) => return (events, Ok(())),
            Err(e) => return (events, Err(e)),
        }
    }
}

/// A whole successful stream's events.
async fn stream(c: &Client, model: &str, body: &Value) -> Vec<Value> {
    let mut out = open(c, model, body).await.expect("the stream opens");
    let (events, end) = drain(&mut out).await;
    end.expect("the stream ends cleanly");
    events
}

fn types(events: &[Value]) -> Vec<&str> {
    events.iter().map(|e| e["type"].as_str().unwrap()).collect()
}

/// Rebuilds the content blocks from the events, the way streaming clients do (tool input:
/// the `partial_json` pieces parsed at `content_block_stop`).
fn assemble(events: &[Value]) -> Vec<Value> {
    let mut blocks: Vec<Value> = Vec::new();
    let mut partial: Vec<String> = Vec::new();
    for e in events {
        match e["type"].as_str().unwrap() {
            "content_block_start" => {
                assert_eq!(e["index"], blocks.len(), "indices are contiguous");
                blocks.push(e["content_block"].clone());
                partial.push(String::new());
            }
            "content_block_delta" => {
                let i = e["index"].as_u64().unwrap() as usize;
                let d = &e["delta"];
                let block = &mut blocks[i];
                let append = |block: &mut Value, field: &str, piece: &Value| {
                    let text = block[field].as_str().unwrap_or_default().to_owned();
                    block[field] = json!(text + piece.as_str().unwrap());
                };
                match d["type"].as_str().unwrap() {
                    "text_delta" => append(block, "text", &d["text"]),
                    "thinking_delta" => append(block, "thinking", &d["thinking"]),
                    "signature_delta" => block["signature"] = d["signature"].clone(),
                    "input_json_delta" => partial[i].push_str(d["partial_json"].as_str().unwrap()),
                    other => panic!("unexpected delta {other}"),
                }
            }
            "content_block_stop" => {
                let i = e["index"].as_u64().unwrap() as usize;
                if blocks[i]["type"] == "tool_use" {
                    blocks[i]["input"] =
                        serde_json::from_str(&partial[i]).expect("tool input is valid JSON");
                }
            }
            _ => {}
        }
    }
    blocks
}

fn count(events: &[Value], delta_type: &str) -> usize {
    events
        .iter()
        .filter(|e| e["delta"]["type"] == delta_type)
        .count()
}

/// Waits up to `within` for `check` to hold on the emulator's stats.
async fn stats_reach(
    emu: &Emulator,
    within: Duration,
    check: impl Fn(&EmulatorStats) -> bool,
) -> bool {
    common::eventually(within, || {
        let holds = check(&emu.stats());
        async move { holds }
    })
    .await
}

#[actix_web::test]
async fn stream_matches_invoke_with_usage_and_metrics() {
    let emu = start(EmulatorConfig::default());
    let c = client(&emu);
    let req = json!({
        "anthropic_version": "bedrock-2023-05-31",
        "max_tokens": 400,
        "system": "You are terse.",
        "messages": [
            {"role": "user", "content": "first question"},
            {"role": "assistant", "content": "first answer"},
            {"role": "user", "content": "stream me a fairly long reply please"}
        ]
    });
    let whole = invoke(&c, SONNET, &req).await;

    let mut out = open(&c, SONNET, &req).await.expect("the stream opens");
    assert_eq!(out.content_type(), "application/json");
    assert_eq!(out.request_id().map(str::len), Some(36));
    let (events, end) = drain(&mut out).await;
    end.expect("clean end");

    let t = types(&events);
    assert_eq!(t[..2], ["message_start", "content_block_start"]);
    assert_eq!(
        t[t.len() - 3..],
        ["content_block_stop", "message_delta", "message_stop"]
    );
    assert!(count(&events, "text_delta") > 5, "{t:?}");

    // Same content and usage as InvokeModel.
    assert_eq!(Value::Array(assemble(&events)), whole["content"]);
    let start = &events[0]["message"];
    assert!(start["id"].as_str().unwrap().starts_with("msg_bdrk_"));
    assert_eq!(
        (&start["type"], &start["role"], &start["model"]),
        (&json!("message"), &json!("assistant"), &json!(SONNET))
    );
    assert_eq!(start["content"], json!([]));
    assert_eq!(start["stop_reason"], Value::Null);
    assert_eq!(
        start["usage"]["input_tokens"],
        whole["usage"]["input_tokens"]
    );
    assert!(start["usage"]["output_tokens"].is_u64());
    let delta = &events[events.len() - 2];
    assert_eq!(delta["delta"]["stop_reason"], whole["stop_reason"]);
    assert_eq!(delta["delta"]["stop_sequence"], Value::Null);
    assert_eq!(
        delta["usage"]["output_tokens"],
        whole["usage"]["output_tokens"]
    );
    let metrics = &events[events.len() - 1]["amazon-bedrock-invocationMetrics"];
    assert_eq!(metrics["inputTokenCount"], whole["usage"]["input_tokens"]);
    assert_eq!(metrics["outputTokenCount"], whole["usage"]["output_tokens"]);
    assert!(metrics["invocationLatency"].is_u64(), "{metrics}");
    assert!(
        metrics["firstByteLatency"].as_u64() <= metrics["invocationLatency"].as_u64(),
        "{metrics}"
    );

    // Stop sequences and max_tokens cut the stream like the reply.
    let mut stopped = req.clone();
    stopped["stop_sequences"] = json!(["turn"]);
    let whole = invoke(&c, SONNET, &stopped).await;
    let events = stream(&c, SONNET, &stopped).await;
    assert_eq!(Value::Array(assemble(&events)), whole["content"]);
    let delta = &events[events.len() - 2]["delta"];
    assert_eq!(
        (&delta["stop_reason"], &delta["stop_sequence"]),
        (&json!("stop_sequence"), &json!("turn"))
    );
    let mut short = req.clone();
    short["max_tokens"] = json!(3);
    let events = stream(&c, SONNET, &short).await;
    assert_eq!(
        events[events.len() - 2]["delta"]["stop_reason"],
        "max_tokens"
    );
    assert_eq!(events[events.len() - 2]["usage"]["output_tokens"], 3);
    assert_eq!(
        assemble(&events)[0]["text"],
        invoke(&c, SONNET, &short).await["content"][0]["text"]
    );

    let s = emu.stats();
    assert_eq!((s.calls, s.ok), (6, 6));
    assert_eq!((s.streams_started, s.streams_completed), (3, 3));
    assert_eq!((s.streams_faulted, s.streams_cancelled), (0, 0));
    assert_eq!((s.streams_in_flight, s.in_flight), (0, 0));
    // One call at a time: a stream is one call in flight, from its request to its end.
    assert_eq!((s.max_in_flight, s.max_streams_in_flight), (1, 1));
    assert_eq!(s.last_body, Some(short));
    assert!(s.errors.is_empty(), "{:?}", s.errors);
    emu.stop().await;
}

#[actix_web::test]
async fn tool_use_and_thinking_stream_like_the_invoke_reply() {
    let emu = start(EmulatorConfig::default());
    let c = client(&emu);
    let tools = json!([{
        "name": "get_weather",
        "description": "Current weather of a city",
        "input_schema": {"type": "object",
            "properties": {
                "city": {"type": "string"},
                "unit": {"type": "string", "enum": ["celsius", "fahrenheit"]},
                "days": {"type": "integer"},
                "coords": {"type": "object",
                    "properties": {"lat": {"type": "number"}, "lon": {"type": "number"}},
                    "required": ["lat", "lon"]}},
            "required": ["city", "unit", "days", "coords"]}
    }]);

    // Forced: the call alone.
    let mut forced = body("What is the weather in Paris?");
    forced["tools"] = tools.clone();
    forced["tool_choice"] = json!({"type": "tool", "name": "get_weather"});
    // Named in the text: a short text, then the call; with thinking first.
    let mut asked = body("Please use the get_weather tool for Oslo.");
    asked["max_tokens"] = json!(2000);
    asked["tools"] = tools.clone();
    asked["thinking"] = json!({"type": "enabled", "budget_tokens": 1024});

    for req in [&forced, &asked] {
        let whole = invoke(&c, SONNET, req).await;
        assert_eq!(whole["stop_reason"], "tool_use");
        let call = whole["content"].as_array().unwrap().last().unwrap();
        assert_eq!(call["type"], "tool_use");
        assert_eq!(call["name"], "get_weather");
        assert!(call["id"].as_str().unwrap().starts_with("toolu_"));
        assert_eq!(
            call["input"],
            json!({"city": "example", "unit": "celsius", "days": 1,
                "coords": {"lat": 1, "lon": 1}})
        );

        let events = stream(&c, SONNET, req).await;
        let blocks = assemble(&events);
        assert_eq!(
            Value::Array(blocks),
            whole["content"],
            "same blocks, same call id"
        );
        assert_eq!(events[events.len() - 2]["delta"]["stop_reason"], "tool_use");
        let first_json = events
            .iter()
            .find(|e| e["delta"]["type"] == "input_json_delta")
            .unwrap();
        assert_eq!(first_json["delta"]["partial_json"], "");
        assert!(count(&events, "input_json_delta") > 3);
    }
    let asked_events = stream(&c, SONNET, &asked).await;
    let blocks = assemble(&asked_events);
    assert_eq!(
        blocks
            .iter()
            .map(|b| b["type"].as_str().unwrap())
            .collect::<Vec<_>>(),
        ["thinking", "text", "tool_use"]
    );
    assert!(count(&asked_events, "thinking_delta") > 2);
    assert_eq!(count(&asked_events, "signature_delta"), 1);
    assert!(!blocks[0]["signature"].as_str().unwrap().is_empty());

    // The tool result comes back: the reply quotes it.
    let call = &blocks[2];
    let mut answered = asked.clone();
    answered["messages"] = json!([
        asked["messages"][0],
        {"role": "assistant", "content": [call]},
        {"role": "user", "content": [{"type": "tool_result", "tool_use_id": call["id"],
            "content": "Sunny, 21 C"}]}
    ]);
    answered.as_object_mut().unwrap().remove("thinking");
    let whole = invoke(&c, SONNET, &answered).await;
    assert_eq!(whole["stop_reason"], "end_turn");
    let text = whole["content"][0]["text"].as_str().unwrap();
    assert!(
        text.contains(&format!(
            "tool result for {}: \"Sunny, 21 C\"",
            call["id"].as_str().unwrap()
        )),
        "{text}"
    );
    assert_eq!(
        Value::Array(assemble(&stream(&c, SONNET, &answered).await)),
        whole["content"]
    );
    emu.stop().await;
}

#[actix_web::test]
async fn scripted_exceptions_arrive_as_sdk_variants_after_n_chunks() {
    type Check = fn(&ResponseStreamError) -> bool;
    let cases: [(StreamException, Check); 6] = [
        (StreamException::Throttling, |e| e.is_throttling_exception()),
        (StreamException::ModelStreamError, |e| {
            e.is_model_stream_error_exception()
        }),
        (StreamException::InternalServer, |e| {
            e.is_internal_server_exception()
        }),
        (StreamException::ServiceUnavailable, |e| {
            e.is_service_unavailable_exception()
        }),
        (StreamException::ModelTimeout, |e| {
            e.is_model_timeout_exception()
        }),
        (StreamException::Validation, |e| e.is_validation_exception()),
    ];
    let emu = start(EmulatorConfig::default());
    let c = client(&emu);
    for (i, (exception, check)) in cases.iter().enumerate() {
        let after = i as u32 + 1;
        // The script string names the fault like the admin API and the flags do.
        let scripted: Scripted = format!("{}@{after}", exception.name()).parse().unwrap();
        assert_eq!(
            scripted,
            Scripted::MidStream(MidStream {
                after_events: after,
                fault: StreamFault::Exception(*exception),
            })
        );
        emu.script(Some(SONNET), vec![scripted]);
        let mut out = open(&c, SONNET, &long_body()).await.expect("200 first");
        let (events, end) = drain(&mut out).await;
        assert_eq!(events.len(), after as usize, "{exception:?}");
        assert_eq!(events[0]["type"], "message_start");
        let err = end.expect_err("the exception ends the stream");
        let service = err.as_service_error().expect("a modelled stream error");
        assert!(check(service), "{exception:?}: {service:?}");
        assert!(service.message().is_some_and(|m| !m.is_empty()));
        if let ResponseStreamError::ModelStreamErrorException(e) = service {
            assert_eq!(e.original_status_code(), Some(500));
            assert!(e.original_message().is_some());
        }
    }

    let s = emu.stats();
    assert_eq!((s.streams_started, s.streams_faulted), (6, 6));
    assert_eq!((s.streams_completed, s.ok), (0, 0));
    assert_eq!(
        s.throttled, 1,
        "a mid-stream throttlingException is a throttle"
    );
    for (exception, _) in &cases[1..] {
        assert_eq!(s.errors[exception.name()], 1, "{:?}", s.errors);
    }
    assert_eq!(s.streams_in_flight, 0);
    emu.stop().await;
}

#[actix_web::test]
async fn a_cut_connection_is_an_error_not_a_clean_end() {
    let emu = start(EmulatorConfig::default());
    let c = client(&emu);
    for after in [0, 4] {
        emu.script(None, vec![format!("cut@{after}").parse().unwrap()]);
        let mut out = open(&c, SONNET, &long_body()).await.expect("200 first");
        let (events, end) = drain(&mut out).await;
        assert_eq!(
            events.len(),
            after,
            "every event sent before the cut arrives"
        );
        let err = end.expect_err("a cut is not a clean end");
        assert!(err.as_service_error().is_none(), "{err:?}");
    }
    // Past the last event, the cut replaces the clean end.
    emu.script(None, vec!["cut@1000".parse().unwrap()]);
    let mut out = open(&c, SONNET, &body("short")).await.unwrap();
    let (events, end) = drain(&mut out).await;
    assert_eq!(events.last().unwrap()["type"], "message_stop");
    assert!(end.is_err());

    // The pre-stream broken bodies on the stream route are errors too.
    for kind in [FaultKind::ResetMidBody, FaultKind::TruncatedBody] {
        emu.script(None, vec![Scripted::Fault(kind)]);
        let result = match open(&c, SONNET, &long_body()).await {
            Ok(mut out) => drain(&mut out).await.1.map_err(|e| format!("{e:?}")),
            Err(e) => Err(format!("{e:?}")),
        };
        assert!(result.is_err(), "{kind:?}");
    }

    let s = emu.stats();
    assert_eq!(s.errors["cut"], 3);
    assert_eq!(s.streams_faulted, 3);
    assert_eq!(
        (s.errors["reset_mid_body"], s.errors["truncated_body"]),
        (1, 1)
    );
    assert!(stats_reach(&emu, Duration::from_secs(3), |s| s.in_flight == 0).await);
    emu.stop().await;
}

#[actix_web::test]
async fn a_stall_sends_nothing_more_until_the_client_leaves_or_its_time_is_up() {
    let emu = start(EmulatorConfig::default());
    let c = client(&emu);

    // Until the client leaves.
    emu.script(None, vec!["stall@2".parse().unwrap()]);
    let mut out = open(&c, SONNET, &long_body()).await.unwrap();
    assert!(next(&mut out).await.unwrap().is_some());
    assert!(next(&mut out).await.unwrap().is_some());
    let waited = tokio::time::timeout(Duration::from_millis(300), next(&mut out)).await;
    assert!(waited.is_err(), "no event within the timeout: {waited:?}");
    let s = emu.stats();
    assert_eq!((s.streams_in_flight, s.streams_faulted), (1, 1));
    assert_eq!(s.errors["stall"], 1);
    drop(out);
    assert!(
        stats_reach(&emu, Duration::from_secs(3), |s| s.streams_in_flight == 0).await,
        "the emulator lets go of the stalled stream when the client leaves"
    );
    assert_eq!(emu.stats().streams_cancelled, 0, "counted as faulted once");

    // A timed stall: nothing for its duration, then the connection is cut.
    // (Timed from before the call: the stall starts when the server has sent the first event,
    // a little before the client reads it.)
    emu.script(None, vec!["stall@1:0.3".parse().unwrap()]);
    let stalled = Instant::now();
    let mut out = open(&c, SONNET, &long_body()).await.unwrap();
    assert!(next(&mut out).await.unwrap().is_some());
    let end = next(&mut out).await;
    assert!(end.is_err(), "{end:?}");
    assert!(stalled.elapsed() >= Duration::from_millis(300));
    emu.stop().await;
}

#[actix_web::test]
async fn pacing_spreads_the_deltas_over_the_expected_time() {
    let tokens_per_sec = 100.0;
    let emu = start(EmulatorConfig {
        stream_tokens_per_sec: Some(tokens_per_sec),
        ..EmulatorConfig::default()
    });
    let c = client(&emu);
    let req = long_body();
    let output_tokens = invoke(&c, SONNET, &req).await["usage"]["output_tokens"]
        .as_u64()
        .unwrap();
    assert!(output_tokens > 50, "{output_tokens}");

    let opened = Instant::now();
    let mut out = open(&c, SONNET, &req).await.unwrap();
    let first = next(&mut out).await.unwrap().unwrap();
    let first_at = opened.elapsed();
    assert_eq!(first["type"], "message_start");
    let (events, end) = drain(&mut out).await;
    end.unwrap();
    let total = opened.elapsed();
    assert_eq!(events.last().unwrap()["type"], "message_stop");

    // The stream takes about output_tokens / rate; the first event comes at once.
    let expected = Duration::from_secs_f64(output_tokens as f64 / tokens_per_sec);
    assert!(total >= expected.mul_f64(0.9), "{total:?} < {expected:?}");
    assert!(first_at < expected / 2, "first event after {first_at:?}");

    // The admin API changes the pace live (and null removes it).
    let http = awc::Client::default();
    let mut res = http
        .post(format!("{}/_emulator/config", emu.endpoint()))
        .send_json(&json!({"stream_tokens_per_sec": null}))
        .await
        .unwrap();
    assert_eq!(res.status(), 200);
    assert_eq!(
        res.json::<Value>().await.unwrap()["stream_tokens_per_sec"],
        Value::Null
    );
    assert_eq!(emu.config().stream_tokens_per_sec, None);
    let unpaced = Instant::now();
    stream(&c, SONNET, &req).await;
    assert!(unpaced.elapsed() < expected, "{:?}", unpaced.elapsed());
    emu.stop().await;
}

#[actix_web::test]
async fn a_client_that_leaves_stops_the_stream() {
    // 2 tokens/s: a whole stream would take about half a minute.
    let emu = start(EmulatorConfig {
        stream_tokens_per_sec: Some(2.0),
        ..EmulatorConfig::default()
    });
    let c = client(&emu);
    let mut streams = Vec::new();
    for _ in 0..3 {
        let mut out = open(&c, SONNET, &long_body()).await.unwrap();
        assert_eq!(
            next(&mut out).await.unwrap().unwrap()["type"],
            "message_start"
        );
        streams.push(out);
    }
    let s = emu.stats();
    assert_eq!((s.streams_in_flight, s.max_streams_in_flight), (3, 3));

    // One client leaves: its stream alone stops.
    let left = Instant::now();
    drop(streams.pop());
    assert!(
        stats_reach(&emu, Duration::from_secs(3), |s| s.streams_cancelled == 1
            && s.streams_in_flight == 2)
        .await,
        "{:?}",
        emu.stats()
    );
    drop(streams);
    assert!(
        stats_reach(&emu, Duration::from_secs(3), |s| s.streams_cancelled == 3
            && s.streams_in_flight == 0
            && s.in_flight == 0)
        .await,
        "{:?}",
        emu.stats()
    );
    assert!(
        left.elapsed() < Duration::from_secs(6),
        "long before the streams' end"
    );
    let s = emu.stats();
    assert_eq!((s.ok, s.streams_completed, s.streams_faulted), (0, 0, 0));
    assert_eq!(s.max_streams_in_flight, 3);
    emu.stop().await;
}

#[actix_web::test]
async fn pre_stream_errors_are_the_sdk_operation_errors() {
    let emu = start(EmulatorConfig::default());
    let c = client(&emu);
    emu.script(
        Some(SONNET),
        vec![
            Scripted::Fault(FaultKind::Throttling),
            Scripted::Fault(FaultKind::ModelTimeout),
            Scripted::Fault(FaultKind::ServiceUnavailable),
        ],
    );
    let status = |e: &OpenError| e.raw_response().map(|r| r.status().as_u16());

    let err = open(&c, SONNET, &body("x")).await.expect_err("throttled");
    assert_eq!(status(&err), Some(429));
    let service = err.as_service_error().unwrap();
    assert!(service.is_throttling_exception(), "{service:?}");
    assert_eq!(
        service.message(),
        Some("Too many requests, please wait before trying again.")
    );
    assert!(err
        .raw_response()
        .unwrap()
        .headers()
        .get("retry-after")
        .is_none());

    let err = open(&c, SONNET, &body("x")).await.expect_err("timeout");
    assert_eq!(status(&err), Some(408));
    assert!(err.as_service_error().unwrap().is_model_timeout_exception());
    let err = open(&c, SONNET, &body("x")).await.expect_err("unavailable");
    assert_eq!(status(&err), Some(503));
    assert!(err
        .as_service_error()
        .unwrap()
        .is_service_unavailable_exception());

    // Validation like InvokeModel.
    let mut bad = body("x");
    bad["max_tokens"] = json!(0);
    let err = open(&c, SONNET, &bad).await.expect_err("invalid");
    assert_eq!(status(&err), Some(400));
    let service = err.as_service_error().unwrap();
    assert!(service.is_validation_exception());
    assert!(
        service.message().unwrap().contains("#/max_tokens"),
        "{service:?}"
    );

    // A mid-stream fault scripted for a non-streamed call strikes before the reply.
    emu.script(
        Some(SONNET),
        vec!["modelStreamErrorException@2".parse().unwrap()],
    );
    let err = common::bedrock::invoke(&c, SONNET, &body("x"))
        .await
        .expect_err("the pre-stream equivalent");
    assert!(err.as_service_error().unwrap().is_model_error_exception());

    let s = emu.stats();
    assert_eq!((s.throttled, s.streams_started), (1, 0));
    assert_eq!(s.errors["ModelTimeoutException"], 1);
    assert_eq!(s.errors["ValidationException"], 1);
    assert_eq!(s.errors["ModelErrorException"], 1);
    emu.stop().await;
}

#[actix_web::test]
async fn random_mid_stream_faults_follow_the_rates() {
    let emu = start(EmulatorConfig {
        stream_error_rates: vec![(
            MidStream {
                after_events: 2,
                fault: StreamFault::Exception(StreamException::Throttling),
            },
            1.0,
        )],
        ..EmulatorConfig::default()
    });
    let c = client(&emu);
    for _ in 0..3 {
        let mut out = open(&c, SONNET, &body("x")).await.unwrap();
        let (events, end) = drain(&mut out).await;
        assert_eq!(events.len(), 2);
        assert!(end
            .expect_err("throttled mid-stream")
            .as_service_error()
            .unwrap()
            .is_throttling_exception());
    }
    let s = emu.stats();
    assert_eq!((s.throttled, s.streams_faulted), (3, 3));

    // The admin API shows and takes them under the same names as the flags.
    let http = awc::Client::default();
    let mut res = http
        .post(format!("{}/_emulator/config", emu.endpoint()))
        .send_json(&json!({"error_rates": {"cut@5": 0.25, "ThrottlingException": 0.5}}))
        .await
        .unwrap();
    assert_eq!(res.status(), 200);
    let cfg: Value = res.json().await.unwrap();
    assert_eq!(
        cfg["error_rates"],
        json!({"ThrottlingException": 0.5, "cut@5": 0.25})
    );
    emu.stop().await;
}

#[actix_web::test]
async fn quota_admission_applies_to_streams() {
    // Requests: one call per model id, no refill.
    let emu = start(EmulatorConfig {
        quota: Some(Quota {
            requests_per_second: 0.0,
            burst: 1.0,
        }),
        ..EmulatorConfig::default()
    });
    let c = client(&emu);
    stream(&c, SONNET, &body("x")).await;
    let err = open(&c, SONNET, &body("x"))
        .await
        .expect_err("out of quota");
    assert!(err.as_service_error().unwrap().is_throttling_exception());
    assert_eq!(emu.stats().throttled, 1);
    emu.stop().await;

    // Tokens: a bucket of 1000 without refill; "hi" is 1 input token.
    let config = EmulatorConfig {
        token_quota: Some(TokenQuota {
            tokens_per_minute: 0.0,
            burst_tokens: 1000.0,
        }),
        ..EmulatorConfig::default()
    };
    let emu = start(config.clone());
    let c = client(&emu);
    let hi = |max_tokens: u64| {
        let mut b = body("hi");
        b["max_tokens"] = json!(max_tokens);
        b
    };
    // A completed stream is charged input + output x 5 (Sonnet 4's burndown): 1 + max
    // reserved, the difference given back when it ends.
    let events = stream(&c, SONNET, &hi(400)).await;
    let output = events[events.len() - 2]["usage"]["output_tokens"]
        .as_u64()
        .unwrap();
    let mut level = 1000 - 1 - 5 * output;
    assert_eq!(emu.stats().tokens_charged, (1 + 5 * output) as f64);

    // A stream that dies gives back max_tokens (keeps the input).
    emu.set_config(EmulatorConfig {
        stream_error_rates: vec![("cut@2".parse().unwrap(), 1.0)],
        ..config.clone()
    });
    let mut out = open(&c, SONNET, &hi(400)).await.unwrap();
    assert!(drain(&mut out).await.1.is_err());
    level -= 1;

    // A stream the client leaves gives back max_tokens too.
    emu.set_config(EmulatorConfig {
        stream_tokens_per_sec: Some(1.0),
        ..config.clone()
    });
    let mut out = open(&c, SONNET, &hi(400)).await.unwrap();
    next(&mut out).await.unwrap();
    drop(out);
    assert!(stats_reach(&emu, Duration::from_secs(3), |s| s.streams_cancelled == 1).await);
    level -= 1;

    // The bucket holds exactly `level`: one token more is refused before the stream starts.
    emu.set_config(config);
    let err = open(&c, SONNET, &hi(level))
        .await
        .expect_err("1 token short");
    let service = err.as_service_error().unwrap();
    assert!(service.is_throttling_exception());
    assert_eq!(
        service.message(),
        Some("Too many tokens, please wait before trying again.")
    );
    stream(&c, SONNET, &hi(level - 1)).await;
    let s = emu.stats();
    assert_eq!((s.throttled, s.throttled_tokens), (1, 1));
    assert_eq!((s.streams_completed, s.streams_faulted), (2, 1));

    // Buckets are per model id.
    stream(&c, HAIKU, &hi(400)).await;
    emu.stop().await;
}

#[actix_web::test]
async fn binary_flags_set_pacing_and_mid_stream_rates() {
    let mut cmd = emulator::binary();
    cmd.args([
        "--bind",
        "127.0.0.1:0",
        "--stream-tokens-per-sec",
        "25",
        "--error-rate",
        "ThrottlingException=0.1,modelStreamErrorException@4=0.2",
        "--error-rate",
        "stall@2:1.5=0.05",
    ]);
    let cfg = emulator::binary_config(cmd).await;
    assert_eq!(cfg["stream_tokens_per_sec"], 25.0);
    assert_eq!(
        cfg["error_rates"],
        json!({"ThrottlingException": 0.1, "modelStreamErrorException@4": 0.2,
            "stall@2:1.5": 0.05})
    );

    // Pacing must be positive; a mid-stream name needs its event count.
    for args in [
        &["--stream-tokens-per-sec", "0"][..],
        &["--error-rate", "cut=0.1"][..],
    ] {
        let out = emulator::binary()
            .args(args)
            .args(["--bind", "127.0.0.1:0"])
            .output()
            .unwrap();
        assert!(!out.status.success(), "{args:?}");
    }
}

/// Splits a raw event-stream body into its frames (each starts with its total length).
fn frames(mut body: &[u8]) -> Vec<Frame> {
    let mut out = Vec::new();
    while body.len() >= 4 {
        let len = u32::from_be_bytes(body[..4].try_into().unwrap()) as usize;
        out.push(decode_frame(&body[..len]).expect("a valid frame"));
        body = &body[len..];
    }
    assert!(body.is_empty(), "no partial frame at the end");
    out
}

#[actix_web::test]
async fn raw_wire_headers_and_frames() {
    let emu = start(EmulatorConfig::default());
    let url = format!(
        "{}/model/{}/invoke-with-response-stream",
        emu.endpoint(),
        percent_encoding::utf8_percent_encode(SONNET, percent_encoding::NON_ALPHANUMERIC)
    );
    let http = awc::Client::default();
    let post = || {
        http.post(url.as_str())
            .insert_header(("authorization", "Bearer token"))
            .insert_header(("content-type", "application/json"))
            .insert_header(("x-amzn-bedrock-accept", "application/json"))
            .send_body(serde_json::to_vec(&body("raw")).unwrap())
    };

    let mut res = post().await.unwrap();
    assert_eq!(res.status(), 200);
    let header = |res: &awc::ClientResponse<_>, name: &str| {
        res.headers()
            .get(name)
            .map(|v| v.to_str().unwrap().to_owned())
    };
    assert_eq!(
        header(&res, "content-type").as_deref(),
        Some("application/vnd.amazon.eventstream")
    );
    assert_eq!(
        header(&res, "x-amzn-bedrock-content-type").as_deref(),
        Some("application/json")
    );
    assert_eq!(header(&res, "x-amzn-requestid").map(|v| v.len()), Some(36));
    let raw = res.body().await.unwrap();
    let mut types = Vec::new();
    for frame in frames(&raw) {
        let Frame::Event {
            event_type,
            payload,
        } = frame
        else {
            panic!("{frame:?}");
        };
        assert_eq!(event_type, "chunk");
        let payload: Value = serde_json::from_slice(&payload).unwrap();
        let event = aws_smithy_types::base64::decode(payload["bytes"].as_str().unwrap()).unwrap();
        let event: Value = serde_json::from_slice(&event).unwrap();
        types.push(event["type"].as_str().unwrap().to_owned());
    }
    assert_eq!(types.first().map(String::as_str), Some("message_start"));
    assert_eq!(types.last().map(String::as_str), Some("message_stop"));

    // An exception frame: lower camel case type, the Bedrock payload.
    emu.script(None, vec!["modelStreamErrorException@1".parse().unwrap()]);
    let mut res = post().await.unwrap();
    assert_eq!(res.status(), 200);
    let frames = frames(&res.body().await.unwrap());
    assert_eq!(frames.len(), 2);
    let Frame::Exception {
        exception_type,
        payload,
    } = &frames[1]
    else {
        panic!("{frames:?}");
    };
    assert_eq!(exception_type, "modelStreamErrorException");
    let payload: Value = serde_json::from_slice(payload).unwrap();
    assert_eq!(payload["originalStatusCode"], 500);
    assert!(payload["message"].is_string() && payload["originalMessage"].is_string());
    emu.stop().await;
}

#[actix_web::test]
async fn call_duration_paces_a_stream_to_the_drawn_tokens() {
    // Spread 0: 0.8 s at 50 tokens/s = 40 tokens, whatever stream_tokens_per_sec says.
    let emu = start(EmulatorConfig {
        call_duration: Some(CallDuration {
            median_secs: 0.8,
            spread: 0.0,
            tokens_per_sec: 50.0,
        }),
        stream_tokens_per_sec: Some(5000.0),
        ..EmulatorConfig::default()
    });
    let c = client(&emu);
    let opened = Instant::now();
    let events = stream(&c, SONNET, &body("hi")).await;
    let took = opened.elapsed();
    assert!(took >= Duration::from_millis(760), "lasted {took:?}");
    let delta = events
        .iter()
        .find(|e| e["type"] == "message_delta")
        .unwrap();
    assert_eq!(delta["usage"]["output_tokens"], 40);
    assert_eq!(delta["delta"]["stop_reason"], "end_turn");
    let text = assemble(&events)[0]["text"].as_str().unwrap().to_owned();
    assert_eq!(text.chars().count().div_ceil(4), 40, "{text}");
    assert!(count(&events, "text_delta") > 3, "the text comes in deltas");
    // The same body through InvokeModel: the same text.
    let v = invoke(&c, SONNET, &body("hi")).await;
    assert_eq!(v["content"][0]["text"], text.as_str());
    let s = emu.stats();
    assert_eq!((s.streams_completed, s.output_tokens), (1, 80));
    emu.stop().await;
}
