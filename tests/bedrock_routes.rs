//! The Bedrock-native routes (`/model/{modelId}/invoke`, `/invoke-with-response-stream`)
//! driven by the real `aws-sdk-bedrockruntime` client pointed at the broker, as a Bedrock
//! client that changes only its endpoint: replies, streams, errors and exception frames as
//! the SDK reads them.

mod common;

use aws_sdk_bedrockruntime::error::ProvideErrorMetadata;
use aws_sdk_bedrockruntime::operation::RequestId;
use aws_sdk_bedrockruntime::primitives::Blob;
use aws_sdk_bedrockruntime::types::ResponseStream;
use aws_sdk_bedrockruntime::Client;
use common::bedrock::{invoke, open_stream, sdk_client};
use common::{start, TestServer, MODEL};
use serde_json::{json, Value};

/// An SDK client whose Bedrock is the broker (SigV4-signed, retries off).
fn client(server: &TestServer) -> Client {
    sdk_client(&server.url)
}

fn body(text: &str, version: &str) -> Value {
    json!({"anthropic_version": version, "max_tokens": 100,
        "messages": [{"role": "user", "content": text}]})
}

#[actix_web::test]
async fn invoke_model_answers_bedrocks_reply_as_bedrock_sent_it() {
    let server = start(&[]).await;
    let sdk = client(&server);
    let output = invoke(&sdk, MODEL, &body("Hello SDK", "bedrock-2023-05-31"))
        .await
        .expect("InvokeModel through the broker succeeds");
    let reply: Value = serde_json::from_slice(output.body().as_ref()).unwrap();
    assert!(reply["content"][0]["text"]
        .as_str()
        .unwrap()
        .contains("Hello SDK"));
    assert_eq!(reply["usage"]["input_tokens"], 3);
    assert_eq!(output.content_type(), "application/json");
    assert!(output.request_id().is_some_and(|id| id.starts_with("req_")));
    // The SDK sent octet-stream and SigV4; neither is a problem.
    let stats = server.stats();
    assert_eq!(stats.calls, 1);
    assert_eq!(
        stats.last_body.unwrap()["anthropic_version"],
        "bedrock-2023-05-31"
    );
}

#[actix_web::test]
async fn a_dated_anthropic_version_is_sent_as_bedrocks() {
    let server = start(&[]).await;
    invoke(&client(&server), MODEL, &body("dated", "2026-10-21"))
        .await
        .expect("a dated version is accepted");
    assert_eq!(
        server.stats().last_body.unwrap()["anthropic_version"],
        "bedrock-2023-05-31"
    );
}

#[actix_web::test]
async fn invoke_model_with_response_stream_reads_every_event() {
    let server = start(&[]).await;
    let mut output = open_stream(
        &client(&server),
        MODEL,
        &body("Stream through", "bedrock-2023-05-31"),
    )
    .await
    .expect("the stream opens");
    let mut events = Vec::new();
    while let Some(member) = output.body.recv().await.expect("no stream error") {
        let ResponseStream::Chunk(part) = member else {
            panic!("{member:?}")
        };
        events.push(serde_json::from_slice::<Value>(part.bytes().unwrap().as_ref()).unwrap());
    }
    assert_eq!(events.first().unwrap()["type"], "message_start");
    assert_eq!(events.last().unwrap()["type"], "message_stop");
    let text: String = events
        .iter()
        .filter_map(|e| e["delta"]["text"].as_str())
        .collect();
    assert!(text.contains("Stream through"), "{text}");
    assert!(events.last().unwrap()["amazon-bedrock-invocationMetrics"].is_object());
}

#[actix_web::test]
async fn errors_and_exception_frames_reach_the_sdk_as_bedrocks() {
    let server = start(&[]).await;
    let sdk = client(&server);
    // Before the stream: throttles past the retries are a ThrottlingException.
    server.script(MODEL, &["ThrottlingException"; 4]);
    let error = open_stream(&sdk, MODEL, &body("x", "bedrock-2023-05-31"))
        .await
        .unwrap_err();
    let service = error.as_service_error().expect("a modelled error");
    assert!(service.is_throttling_exception(), "{service:?}");
    assert_eq!(error.raw_response().unwrap().status().as_u16(), 429);
    // Bedrock's validation message comes back as it is.
    server.script(MODEL, &["ValidationException"]);
    let error = invoke(&sdk, MODEL, &body("x", "bedrock-2023-05-31"))
        .await
        .unwrap_err();
    let service = error.as_service_error().unwrap();
    assert!(service.is_validation_exception(), "{service:?}");
    assert!(service
        .message()
        .unwrap()
        .starts_with("Malformed input request"));
    // The broker's own refusal of a bad body names the field.
    let error = sdk
        .invoke_model()
        .model_id(MODEL)
        .body(Blob::new(
            br#"{"max_tokens":5,"messages":[{"role":"user","content":"x"}]}"#.to_vec(),
        ))
        .send()
        .await
        .unwrap_err();
    let service = error.as_service_error().unwrap();
    assert!(service.is_validation_exception());
    assert!(service.message().unwrap().contains("anthropic_version"));
    // Inside the stream, after content: the exception frame.
    server.script(MODEL, &["throttlingException@3"]);
    let mut output = open_stream(&sdk, MODEL, &body("x", "bedrock-2023-05-31"))
        .await
        .expect("the stream opens");
    let mut chunks = 0;
    let end = loop {
        match output.body.recv().await {
            Ok(Some(_)) => chunks += 1,
            Ok(None) => panic!("the stream ended cleanly after {chunks} chunks"),
            Err(e) => break e,
        }
    };
    assert_eq!(chunks, 3);
    assert!(
        end.as_service_error().unwrap().is_throttling_exception(),
        "{end:?}"
    );
}

#[actix_web::test]
async fn with_keys_a_sigv4_signed_call_is_refused_as_access_denied() {
    let server = start(&["--api-key", "sk-bedrock"]).await;
    let error = invoke(&client(&server), MODEL, &body("x", "bedrock-2023-05-31"))
        .await
        .unwrap_err();
    let service = error.as_service_error().unwrap();
    assert!(service.is_access_denied_exception(), "{service:?}");
    assert_eq!(error.raw_response().unwrap().status().as_u16(), 403);
    assert_eq!(server.stats().calls, 0);
}
