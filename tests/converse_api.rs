//! `POST /model/{modelId}/converse` and `/converse-stream` driven by the real
//! `aws-sdk-bedrockruntime` client pointed at the broker (and, for wire details, by plain
//! HTTP), against the emulator behind it: the Converse response and what Bedrock received, a
//! tool-use round trip whole and streamed, ConverseStream's events, the stream rules inherited
//! from the broker's stream machinery (an invisible retry before content, an exception frame
//! after it), and errors as the SDK reads them.

mod common;

use aws_sdk_bedrockruntime::error::ProvideErrorMetadata;
use aws_sdk_bedrockruntime::operation::converse::builders::ConverseFluentBuilder;
use aws_sdk_bedrockruntime::operation::converse::ConverseOutput;
use aws_sdk_bedrockruntime::operation::converse_stream::builders::ConverseStreamFluentBuilder;
use aws_sdk_bedrockruntime::operation::RequestId;
use aws_sdk_bedrockruntime::types::error::ConverseStreamOutputError;
use aws_sdk_bedrockruntime::types::{
    AnyToolChoice, ContentBlock, ContentBlockDelta, ContentBlockStart, ConversationRole,
    ConverseStreamOutput, InferenceConfiguration, Message, StopReason, SystemContentBlock, Tool,
    ToolChoice, ToolConfiguration, ToolInputSchema, ToolResultBlock, ToolResultContentBlock,
    ToolSpecification, ToolUseBlock,
};
use aws_sdk_bedrockruntime::Client;
use aws_smithy_types::{Document, Number};
use common::bedrock::sdk_client;
use common::sse;
use common::{model_path, start, TestServer, MODEL};
use model_server::protocol::eventstream::Frame;
use serde_json::{json, Value};

/// An SDK client whose Bedrock is the broker (SigV4-signed, retries off).
fn client(server: &TestServer) -> Client {
    sdk_client(&server.url)
}

/// A message of `role` with `content`.
fn message(role: ConversationRole, content: Vec<ContentBlock>) -> Message {
    Message::builder()
        .role(role)
        .set_content(Some(content))
        .build()
        .unwrap()
}

fn user(text: &str) -> Message {
    message(
        ConversationRole::User,
        vec![ContentBlock::Text(text.into())],
    )
}

/// A JSON value as a Smithy document.
fn document(value: &Value) -> Document {
    match value {
        Value::Null => Document::Null,
        Value::Bool(b) => Document::Bool(*b),
        Value::Number(n) => Document::Number(match (n.as_u64(), n.as_i64()) {
            (Some(u), _) => Number::PosInt(u),
            (None, Some(i)) => Number::NegInt(i),
            _ => Number::Float(n.as_f64().unwrap()),
        }),
        Value::String(s) => Document::String(s.clone()),
        Value::Array(items) => Document::Array(items.iter().map(document).collect()),
        Value::Object(fields) => Document::Object(
            fields
                .iter()
                .map(|(k, v)| (k.clone(), document(v)))
                .collect(),
        ),
    }
}

/// Asks the broker for no retries (`x-modelserver-max-retries: 0`).
fn no_retries(request: &mut aws_sdk_bedrockruntime::config::http::HttpRequest) {
    request
        .headers_mut()
        .insert("x-modelserver-max-retries", "0");
}

/// A Converse call of [`MODEL`] with one user message, to add to and send.
fn converse(sdk: &Client, text: &str) -> ConverseFluentBuilder {
    sdk.converse().model_id(MODEL).messages(user(text))
}

/// The same, streamed.
fn converse_stream(sdk: &Client, text: &str) -> ConverseStreamFluentBuilder {
    sdk.converse_stream().model_id(MODEL).messages(user(text))
}

/// A Converse body (as sent on the wire) with one user message.
fn converse_body(text: &str) -> Value {
    json!({"messages": [{"role": "user", "content": [{"text": text}]}]})
}

/// The weather tool, its use forced.
fn weather_tools() -> ToolConfiguration {
    let schema = json!({"type": "object", "properties": {"city": {"type": "string"}},
                        "required": ["city"]});
    ToolConfiguration::builder()
        .tools(Tool::ToolSpec(
            ToolSpecification::builder()
                .name("get_weather")
                .description("The weather of a city")
                .input_schema(ToolInputSchema::Json(document(&schema)))
                .build()
                .unwrap(),
        ))
        .tool_choice(ToolChoice::Any(AnyToolChoice::builder().build()))
        .build()
        .unwrap()
}

/// The text of a Converse response.
fn text_of(output: &ConverseOutput) -> String {
    let message = output.output().unwrap().as_message().unwrap();
    message
        .content()
        .iter()
        .filter_map(|b| b.as_text().ok())
        .cloned()
        .collect()
}

/// Reads a ConverseStream to its end: its events, or the error it ended with.
async fn read_stream(
    request: ConverseStreamFluentBuilder,
) -> (Vec<ConverseStreamOutput>, Option<ConverseStreamOutputError>) {
    let mut output = request.send().await.expect("the stream opens");
    let mut events = Vec::new();
    loop {
        match output.stream.recv().await {
            Ok(Some(event)) => events.push(event),
            Ok(None) => return (events, None),
            Err(error) => {
                let service = error.into_service_error();
                return (events, Some(service));
            }
        }
    }
}

/// The text a stream's deltas carry.
fn streamed_text(events: &[ConverseStreamOutput]) -> String {
    events
        .iter()
        .filter_map(|e| match e {
            ConverseStreamOutput::ContentBlockDelta(d) => match d.delta() {
                Some(ContentBlockDelta::Text(t)) => Some(t.clone()),
                _ => None,
            },
            _ => None,
        })
        .collect()
}

/// The event names of a stream, in order.
fn names(events: &[ConverseStreamOutput]) -> Vec<&'static str> {
    events
        .iter()
        .map(|e| match e {
            ConverseStreamOutput::MessageStart(_) => "messageStart",
            ConverseStreamOutput::ContentBlockStart(_) => "contentBlockStart",
            ConverseStreamOutput::ContentBlockDelta(_) => "contentBlockDelta",
            ConverseStreamOutput::ContentBlockStop(_) => "contentBlockStop",
            ConverseStreamOutput::MessageStop(_) => "messageStop",
            ConverseStreamOutput::Metadata(_) => "metadata",
            _ => "unknown",
        })
        .collect()
}

#[actix_web::test]
async fn converse_answers_the_converse_response_and_bedrock_gets_the_mapped_body() {
    let server = start(&[]).await;
    let output = client(&server)
        .converse()
        .model_id(MODEL)
        .system(SystemContentBlock::Text("Be brief.".into()))
        .messages(user("Hello Converse"))
        .inference_config(
            InferenceConfiguration::builder()
                .max_tokens(200)
                .temperature(0.5)
                .top_p(0.75)
                .stop_sequences("zzz")
                .build(),
        )
        .send()
        .await
        .expect("Converse through the broker succeeds");
    let text = text_of(&output);
    assert!(
        text.contains("Hello Converse") && text.contains("system prompt"),
        "{text}"
    );
    assert_eq!(output.stop_reason(), &StopReason::EndTurn);
    let usage = output.usage().unwrap();
    assert!(usage.input_tokens() > 0 && usage.output_tokens() > 0);
    assert_eq!(
        usage.total_tokens(),
        usage.input_tokens() + usage.output_tokens()
    );
    assert!(output.metrics().is_some());
    assert!(output.request_id().is_some_and(|id| id.starts_with("req_")));
    let sent = server.stats().last_body.unwrap();
    assert_eq!(
        sent,
        json!({"anthropic_version": "bedrock-2023-05-31", "max_tokens": 200,
               "temperature": 0.5, "top_p": 0.75, "stop_sequences": ["zzz"],
               "system": [{"type": "text", "text": "Be brief."}],
               "messages": [{"role": "user",
                             "content": [{"type": "text", "text": "Hello Converse"}]}]})
    );
}

#[actix_web::test]
async fn a_tool_use_round_trip_through_converse() {
    let server = start(&[]).await;
    let sdk = client(&server);
    let question = user("What is the weather in Paris?");
    let output = sdk
        .converse()
        .model_id(MODEL)
        .messages(question.clone())
        .tool_config(weather_tools())
        .send()
        .await
        .unwrap();
    assert_eq!(output.stop_reason(), &StopReason::ToolUse);
    let reply = output.output().unwrap().as_message().unwrap().clone();
    let call: ToolUseBlock = reply
        .content()
        .iter()
        .find_map(|b| b.as_tool_use().ok())
        .expect("a toolUse block")
        .clone();
    assert_eq!(call.name(), "get_weather");
    assert!(call.input().as_object().unwrap()["city"]
        .as_string()
        .is_some());
    // The result goes back; the answer quotes it.
    let result = ToolResultBlock::builder()
        .tool_use_id(call.tool_use_id())
        .content(ToolResultContentBlock::Text("18 C and sunny".into()))
        .build()
        .unwrap();
    let output = sdk
        .converse()
        .model_id(MODEL)
        .messages(question)
        .messages(reply)
        .messages(message(
            ConversationRole::User,
            vec![ContentBlock::ToolResult(result)],
        ))
        .tool_config(weather_tools())
        .send()
        .await
        .unwrap();
    // The forced tool choice makes the emulator call again; what matters is what it got.
    let sent = server.stats().last_body.unwrap();
    assert_eq!(sent["messages"][1]["content"][0]["type"], "tool_use");
    assert_eq!(sent["messages"][1]["content"][0]["id"], call.tool_use_id());
    assert_eq!(
        sent["messages"][2]["content"][0],
        json!({"type": "tool_result", "tool_use_id": call.tool_use_id(),
               "content": [{"type": "text", "text": "18 C and sunny"}]})
    );
    assert_eq!(output.stop_reason(), &StopReason::ToolUse);
}

#[actix_web::test]
async fn converse_stream_sends_converse_events_with_usage_and_metrics() {
    let server = start(&[]).await;
    let (events, error) = read_stream(converse_stream(&client(&server), "Stream Converse")).await;
    assert!(error.is_none(), "{error:?}");
    let mut shape = names(&events);
    shape.dedup();
    assert_eq!(
        shape,
        [
            "messageStart",
            "contentBlockDelta",
            "contentBlockStop",
            "messageStop",
            "metadata"
        ]
    );
    assert!(streamed_text(&events).contains("Stream Converse"));
    let ConverseStreamOutput::MessageStop(stop) = &events[events.len() - 2] else {
        panic!("{events:?}")
    };
    assert_eq!(stop.stop_reason(), &StopReason::EndTurn);
    let ConverseStreamOutput::Metadata(metadata) = events.last().unwrap() else {
        panic!("{events:?}")
    };
    assert!(metadata.usage().unwrap().output_tokens() > 1);
    assert!(metadata.metrics().is_some());
    let stats = server.stats();
    assert_eq!((stats.calls, stats.streams_completed), (1, 1));
}

#[actix_web::test]
async fn a_streamed_tool_call_starts_its_block_and_its_input_assembles_to_json() {
    let server = start(&[]).await;
    let (events, error) = read_stream(
        converse_stream(&client(&server), "What is the weather in Paris?")
            .tool_config(weather_tools()),
    )
    .await;
    assert!(error.is_none(), "{error:?}");
    let start = events
        .iter()
        .find_map(|e| match e {
            ConverseStreamOutput::ContentBlockStart(s) => Some(s),
            _ => None,
        })
        .expect("a contentBlockStart");
    let Some(ContentBlockStart::ToolUse(tool)) = start.start() else {
        panic!("{start:?}")
    };
    assert_eq!(tool.name(), "get_weather");
    assert!(tool.tool_use_id().starts_with("toolu_"));
    let input: String = events
        .iter()
        .filter_map(|e| match e {
            ConverseStreamOutput::ContentBlockDelta(d)
                if d.content_block_index() == start.content_block_index() =>
            {
                match d.delta() {
                    Some(ContentBlockDelta::ToolUse(t)) => Some(t.input().to_string()),
                    _ => None,
                }
            }
            _ => None,
        })
        .collect();
    let input: Value = serde_json::from_str(&input).expect("valid JSON");
    assert!(input["city"].is_string(), "{input}");
    let stop = events.iter().find_map(|e| match e {
        ConverseStreamOutput::MessageStop(s) => Some(s.stop_reason().clone()),
        _ => None,
    });
    assert_eq!(stop, Some(StopReason::ToolUse));
}

#[actix_web::test]
async fn a_throttle_before_content_is_retried_invisibly() {
    let server = start(&[]).await;
    // After message_start and content_block_start: no content went out yet.
    server.script(MODEL, &["throttlingException@2"]);
    let (events, error) = read_stream(converse_stream(&client(&server), "retry me")).await;
    assert!(error.is_none(), "{error:?}");
    assert_eq!(
        names(&events)
            .iter()
            .filter(|n| **n == "messageStart")
            .count(),
        1
    );
    assert_eq!(names(&events).last(), Some(&"metadata"));
    assert!(streamed_text(&events).contains("retry me"));
    let stats = server.stats();
    assert_eq!((stats.calls, stats.throttled), (2, 1), "{stats:?}");
}

#[actix_web::test]
async fn a_failure_after_content_is_a_converse_stream_exception() {
    let server = start(&[]).await;
    let sdk = client(&server);
    for (fault, check) in [
        (
            "throttlingException@3",
            (|e| e.is_throttling_exception()) as fn(&ConverseStreamOutputError) -> bool,
        ),
        ("modelStreamErrorException@3", |e| {
            e.is_model_stream_error_exception()
        }),
        ("cut@4", |e| e.is_internal_server_exception()),
        ("serviceUnavailableException@3", |e| {
            e.is_service_unavailable_exception()
        }),
    ] {
        server.script(MODEL, &[fault]);
        let (events, error) = read_stream(converse_stream(&sdk, "partial")).await;
        let error = error.unwrap_or_else(|| panic!("{fault}: the stream ended cleanly"));
        assert!(check(&error), "{fault}: {error:?}");
        assert!(error.message().is_some_and(|m| !m.is_empty()));
        assert!(
            !streamed_text(&events).is_empty(),
            "{fault}: content went out"
        );
        assert!(!names(&events).contains(&"messageStop"), "{fault}");
    }
    assert_eq!(server.stats().calls, 4, "content went out: no retries");
    // A passed deadline mid-stream: modelStreamErrorException (ConverseStream has no timeout
    // exception), on the wire.
    server.script(MODEL, &["stall@3"]);
    let body = converse_body("slow");
    let mut response = sse::post(
        &server.url,
        &model_path("converse-stream"),
        &[("x-modelserver-timeout", "0.5")],
        &body,
    )
    .await;
    assert_eq!(response.status, 200);
    let frames = response.frames().await;
    let Some(Frame::Exception {
        exception_type,
        payload,
    }) = frames.last()
    else {
        panic!("{frames:?}")
    };
    assert_eq!(exception_type, "modelStreamErrorException");
    let payload: Value = serde_json::from_slice(payload).unwrap();
    assert!(payload["message"].as_str().unwrap().contains("deadline"));
}

#[actix_web::test]
async fn the_wire_is_converse_streams_event_frames() {
    let server = start(&[]).await;
    let body = converse_body("frames");
    let mut response = sse::post(
        &server.url,
        &model_path("converse-stream"),
        &[("x-request-id", "c-1")],
        &body,
    )
    .await;
    assert_eq!(response.status, 200);
    assert_eq!(
        response.header("content-type"),
        Some("application/vnd.amazon.eventstream")
    );
    assert_eq!(response.header("x-amzn-requestid"), Some("c-1"));
    assert_eq!(response.header("x-modelserver-model"), Some(MODEL));
    let frames = response.frames().await;
    let first = &frames[0];
    assert_eq!(
        first,
        &Frame::Event {
            event_type: "messageStart".into(),
            payload: br#"{"role":"assistant"}"#.to_vec().into(),
        }
    );
    let Frame::Event {
        event_type,
        payload,
    } = frames.last().unwrap()
    else {
        panic!("{frames:?}")
    };
    assert_eq!(event_type, "metadata");
    let metadata: Value = serde_json::from_slice(payload).unwrap();
    assert!(metadata["usage"]["totalTokens"].as_u64().unwrap() > 0);
    assert!(metadata["metrics"]["latencyMs"].is_u64());
}

#[actix_web::test]
async fn errors_before_the_stream_are_bedrocks_as_the_sdk_reads_them() {
    let server = start(&[]).await;
    let sdk = client(&server);
    // The deadline: 504 ModelTimeoutException (first: the throttles below make the broker
    // pace the model, and a request that cannot start in time is then refused at once).
    server.script(MODEL, &["hang"]);
    let body = converse_body("x");
    let mut response = sse::post(
        &server.url,
        &model_path("converse"),
        &[("x-modelserver-timeout", "0.3")],
        &body,
    )
    .await;
    assert_eq!(response.status, 504);
    assert_eq!(
        response.header("x-amzn-errortype"),
        Some("ModelTimeoutException")
    );
    assert!(response.json().await["message"].is_string());
    // Bedrock's validation message comes back as it is.
    server.script(MODEL, &["ValidationException"]);
    let error = converse(&sdk, "x").send().await.unwrap_err();
    let service = error.as_service_error().unwrap();
    assert!(service.is_validation_exception(), "{service:?}");
    assert!(service
        .message()
        .unwrap()
        .starts_with("Malformed input request"));
    // The broker's own refusal names the field.
    let error = converse(&sdk, "x")
        .inference_config(InferenceConfiguration::builder().temperature(1.5).build())
        .send()
        .await
        .unwrap_err();
    let service = error.as_service_error().unwrap();
    assert!(service.is_validation_exception());
    assert!(
        service
            .message()
            .unwrap()
            .contains("inferenceConfig.temperature"),
        "{service:?}"
    );
    // Unknown model at Bedrock: ResourceNotFoundException.
    server.script(MODEL, &["ResourceNotFoundException"]);
    let error = converse(&sdk, "x").send().await.unwrap_err();
    assert!(error
        .as_service_error()
        .unwrap()
        .is_resource_not_found_exception());
    // Throttles past the retries: ThrottlingException, 429, on both operations (last: the
    // throttles make the broker pace the model).
    server.script(MODEL, &["ThrottlingException"]);
    let error = converse(&sdk, "x")
        .customize()
        .mutate_request(no_retries)
        .send()
        .await
        .unwrap_err();
    assert!(error.as_service_error().unwrap().is_throttling_exception());
    assert_eq!(error.raw_response().unwrap().status().as_u16(), 429);
    server.script(MODEL, &["ThrottlingException"]);
    let error = converse_stream(&sdk, "x")
        .customize()
        .mutate_request(no_retries)
        .send()
        .await
        .unwrap_err();
    assert!(error.as_service_error().unwrap().is_throttling_exception());
    assert_eq!(server.stats().throttled, 2);
}

#[actix_web::test]
async fn a_load_refusal_is_429_throttling_with_retry_after() {
    let server = start(&["--queue-capacity", "0"]).await;
    let body = converse_body("x");
    for operation in ["converse", "converse-stream"] {
        let mut response = sse::post(&server.url, &model_path(operation), &[], &body).await;
        assert_eq!(response.status, 429, "{operation}");
        assert_eq!(
            response.header("x-amzn-errortype"),
            Some("ThrottlingException")
        );
        assert_eq!(response.header("retry-after"), Some("1"));
        assert!(response.json().await["message"]
            .as_str()
            .unwrap()
            .contains("queue is full"));
    }
    assert_eq!(server.stats().calls, 0);
}

#[actix_web::test]
async fn with_keys_a_sigv4_signed_call_is_refused_and_a_bearer_key_served() {
    let server = start(&["--api-key", "sk-converse"]).await;
    let error = converse(&client(&server), "x").send().await.unwrap_err();
    assert!(error
        .as_service_error()
        .unwrap()
        .is_access_denied_exception());
    assert_eq!(error.raw_response().unwrap().status().as_u16(), 403);
    assert_eq!(server.stats().calls, 0);
    let body = converse_body("with the key");
    let mut response = sse::post(
        &server.url,
        &model_path("converse"),
        &[("authorization", "Bearer sk-converse")],
        &body,
    )
    .await;
    assert_eq!(response.status, 200);
    assert_eq!(response.json().await["stopReason"], "end_turn");
}
