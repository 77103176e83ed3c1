//! `POST /v1/messages` answered whole, and `GET /v1/models`, over HTTP against the real
//! server, the real AWS SDK and the emulator: the Anthropic message, tool use, the broker's
//! headers (deadline, retries, request ids, model), beta flags Bedrock refuses, and every
//! error in Anthropic's shape and status.

mod common;

use std::time::{Duration, Instant};

use common::sse;
use common::{start, MODEL};
use serde_json::{json, Value};

/// A Messages request answered whole.
fn whole(text: &str) -> Value {
    json!({"model": MODEL, "max_tokens": 100,
           "messages": [{"role": "user", "content": text}]})
}

#[actix_web::test]
async fn a_whole_answer_is_the_anthropic_message_with_the_brokers_headers() {
    let server = start(&[]).await;
    let (status, response, message) =
        sse::post_whole(&server.url, "/v1/messages", &[], &whole("Hello")).await;
    assert_eq!(status, 200, "{message}");
    assert_eq!(response.header("content-type"), Some("application/json"));
    assert_eq!(message["type"], "message");
    assert_eq!(message["role"], "assistant");
    assert!(message["id"].as_str().is_some_and(|id| !id.is_empty()));
    assert!(message["content"][0]["text"]
        .as_str()
        .unwrap()
        .contains("Hello"));
    assert_eq!(message["stop_reason"], "end_turn");
    assert!(message["usage"]["input_tokens"].as_u64().unwrap() > 0);
    assert!(message["usage"]["output_tokens"].as_u64().unwrap() > 0);
    // A new request id, in both headers; the model that served.
    let id = response.header("request-id").unwrap();
    assert!(id.starts_with("req_") && id.len() == 28, "{id}");
    assert_eq!(response.header("x-request-id"), Some(id));
    assert_eq!(response.header("x-modelserver-model"), Some(MODEL));
    // What Bedrock got: its envelope, no model, no stream.
    let sent = server.stats().last_body.unwrap();
    assert_eq!(sent["anthropic_version"], "bedrock-2023-05-31");
    assert!(sent.get("model").is_none() && sent.get("stream").is_none());
    assert!(sent.get("temperature").is_none(), "no default added");
    // The client's own request id is echoed.
    let (_, response, _) = sse::post_whole(
        &server.url,
        "/v1/messages",
        &[("x-request-id", "mine-42")],
        &whole("x"),
    )
    .await;
    assert_eq!(response.header("request-id"), Some("mine-42"));
    assert_eq!(response.header("x-request-id"), Some("mine-42"));
}

#[actix_web::test]
async fn a_tool_call_comes_back_as_a_tool_use_block() {
    let server = start(&[]).await;
    let tools = json!([{"name": "get_weather", "description": "Weather of a city",
        "input_schema": {"type": "object", "properties": {"city": {"type": "string"}},
                         "required": ["city"]}}]);
    let mut body = whole("What is the weather in Paris?");
    body["tools"] = tools.clone();
    body["tool_choice"] = json!({"type": "any"});
    let (status, _, message) = sse::post_whole(&server.url, "/v1/messages", &[], &body).await;
    assert_eq!(status, 200, "{message}");
    assert_eq!(message["stop_reason"], "tool_use");
    let call = message["content"]
        .as_array()
        .unwrap()
        .iter()
        .find(|b| b["type"] == "tool_use")
        .expect("a tool_use block")
        .clone();
    assert_eq!(call["name"], "get_weather");
    assert!(call["input"]["city"].is_string(), "{call}");
    // The tool's result goes back; the reply quotes it.
    let body = json!({"model": MODEL, "max_tokens": 100, "tools": tools, "messages": [
        {"role": "user", "content": "What is the weather in Paris?"},
        {"role": "assistant", "content": [call.clone()]},
        {"role": "user", "content": [{"type": "tool_result", "tool_use_id": call["id"],
                                      "content": "18 C and sunny"}]}
    ]});
    let (status, _, message) =
        sse::post_whole(&server.url, "/v1/messages?beta=true", &[], &body).await;
    assert_eq!(status, 200, "{message}");
    assert!(message["content"][0]["text"]
        .as_str()
        .unwrap()
        .contains("18 C and sunny"));
}

#[actix_web::test]
async fn beta_flags_bedrock_refuses_are_dropped_and_the_call_made_again() {
    let server = start(&[]).await;
    let (status, _, message) = sse::post_whole(
        &server.url,
        "/v1/messages?beta=true",
        &[(
            "anthropic-beta",
            "claude-code-20250219,interleaved-thinking-2025-05-14",
        )],
        &whole("betas"),
    )
    .await;
    assert_eq!(status, 200, "{message}");
    let stats = server.stats();
    assert_eq!(stats.calls, 2, "refused once, then sent without the flags");
    assert_eq!(
        stats.errors.get("ValidationException"),
        Some(&1),
        "{stats:?}"
    );
    assert!(stats.last_body.unwrap().get("anthropic_beta").is_none());
    // Flags Bedrock accepts go through at once, in the body.
    server.emulator.reset();
    let (status, _, _) = sse::post_whole(
        &server.url,
        "/v1/messages",
        &[("anthropic-beta", "interleaved-thinking-2025-05-14")],
        &whole("ok betas"),
    )
    .await;
    assert_eq!(status, 200);
    let stats = server.stats();
    assert_eq!(stats.calls, 1);
    assert_eq!(
        stats.last_body.unwrap()["anthropic_beta"],
        json!(["interleaved-thinking-2025-05-14"])
    );
}

#[actix_web::test]
async fn the_retries_header_is_honoured() {
    let server = start(&[]).await;
    // x-modelserver-max-retries: 1 allows two calls.
    server.script(MODEL, &["ThrottlingException"; 2]);
    let (status, response, error) = sse::post_whole(
        &server.url,
        "/v1/messages",
        &[("x-modelserver-max-retries", "1")],
        &whole("hi"),
    )
    .await;
    assert_eq!(status, 429, "{error}");
    assert_eq!(error["error"]["type"], "rate_limit_error");
    assert_eq!(response.header("retry-after"), Some("1"));
    assert_eq!(server.stats().calls, 2);
    // The default is three retries.
    server.emulator.reset();
    server.script(MODEL, &["InternalServerException"; 3]);
    let (status, _, _) = sse::post_whole(&server.url, "/v1/messages", &[], &whole("hi")).await;
    assert_eq!(status, 200);
    assert_eq!(server.stats().calls, 4);
}

#[actix_web::test]
async fn the_deadline_headers_are_honoured_and_bad_values_refused() {
    let server = start(&[]).await;
    // The SDKs' x-stainless-timeout is the deadline when no explicit one is given.
    for headers in [
        vec![("x-stainless-timeout", "0.3")],
        vec![
            ("x-modelserver-timeout", "0.3"),
            ("x-stainless-timeout", "600"),
        ],
    ] {
        server.script(MODEL, &["hang"]);
        let started = Instant::now();
        let (status, _, error) =
            sse::post_whole(&server.url, "/v1/messages", &headers, &whole("hi")).await;
        assert_eq!(status, 504, "{headers:?}: {error}");
        assert_eq!(error["error"]["type"], "timeout_error");
        assert!(started.elapsed() < Duration::from_secs(2), "{headers:?}");
    }
    // Bad values of the broker's own headers are refused, naming them.
    for (name, value) in [
        ("x-modelserver-timeout", "soon"),
        ("x-modelserver-timeout", "0"),
        ("x-modelserver-max-retries", "99"),
    ] {
        let (status, _, error) =
            sse::post_whole(&server.url, "/v1/messages", &[(name, value)], &whole("x")).await;
        assert_eq!(status, 400, "{name}: {value}");
        assert_eq!(error["error"]["type"], "invalid_request_error");
        assert!(
            error["error"]["message"].as_str().unwrap().contains(name),
            "{error}"
        );
    }
}

#[actix_web::test]
async fn every_error_is_in_anthropics_shape_and_status() {
    let server = start(&["--max-body-bytes", "4096"]).await;
    let check = |status: u16, error: &Value, expected: (u16, &str)| {
        assert_eq!(status, expected.0, "{error}");
        assert_eq!(error["type"], "error", "{error}");
        assert_eq!(error["error"]["type"], expected.1, "{error}");
        assert!(error["error"]["message"].is_string(), "{error}");
        assert!(error["request_id"]
            .as_str()
            .is_some_and(|id| !id.is_empty()));
    };
    // Refused before Bedrock, naming the field.
    let mut no_max_tokens = whole("x");
    no_max_tokens.as_object_mut().unwrap().remove("max_tokens");
    let (status, _, error) =
        sse::post_whole(&server.url, "/v1/messages", &[], &no_max_tokens).await;
    check(status, &error, (400, "invalid_request_error"));
    assert!(error["error"]["message"]
        .as_str()
        .unwrap()
        .contains("max_tokens"));
    let mut big = whole(&"x".repeat(10_000));
    big["stream"] = json!(true);
    let (status, _, error) = sse::post_whole(&server.url, "/v1/messages", &[], &big).await;
    check(status, &error, (413, "request_too_large"));
    assert_eq!(server.stats().calls, 0, "no bad input reaches Bedrock");
    // Bedrock's refusals.
    server.script(MODEL, &["ValidationException"]);
    let (status, _, error) = sse::post_whole(&server.url, "/v1/messages", &[], &whole("x")).await;
    check(status, &error, (400, "invalid_request_error"));
    assert_eq!(
        error["error"]["message"],
        "Malformed input request: rejected by the emulator (injected ValidationException), \
         please reformat your input and try again.",
        "Bedrock's own message"
    );
    for (fault, expected) in [
        ("ResourceNotFoundException", (404, "not_found_error")),
        ("AccessDeniedException", (403, "permission_error")),
        ("ModelErrorException", (500, "api_error")),
    ] {
        server.script(MODEL, &[fault]);
        let (status, _, error) =
            sse::post_whole(&server.url, "/v1/messages", &[], &whole("x")).await;
        check(status, &error, expected);
    }
    // Unknown routes are JSON 404s.
    let reply = server.get("/v1/nothing").await;
    assert_eq!(reply.status, 404);
}

#[actix_web::test]
async fn api_keys_are_required_on_every_route_but_health_and_a_signature_is_no_key() {
    let server = start(&["--api-key", "sk-test"]).await;
    let sigv4 = "AWS4-HMAC-SHA256 Credential=AKID/20250101/us-east-1/bedrock/aws4_request, \
                 SignedHeaders=host, Signature=abc";
    for headers in [
        vec![],
        vec![("authorization", sigv4)],
        vec![("x-api-key", "wrong")],
    ] {
        let (status, _, error) =
            sse::post_whole(&server.url, "/v1/messages", &headers, &whole("x")).await;
        assert_eq!(status, 401, "{headers:?}");
        assert_eq!(error["error"]["type"], "authentication_error");
        let path = format!("/model/{MODEL}/invoke");
        let body = json!({"anthropic_version": "bedrock-2023-05-31", "max_tokens": 5,
                          "messages": [{"role": "user", "content": "x"}]});
        let (status, response, error) = sse::post_whole(&server.url, &path, &headers, &body).await;
        assert_eq!(status, 403, "{headers:?}");
        assert_eq!(
            response.header("x-amzn-errortype"),
            Some("AccessDeniedException")
        );
        assert!(error["message"].is_string());
    }
    assert_eq!(server.get("/v1/models").await.status, 401);
    assert_eq!(server.get("/health").await.status, 200);
    assert_eq!(server.stats().calls, 0);
    for headers in [
        vec![("x-api-key", "sk-test")],
        vec![("authorization", "Bearer sk-test")],
    ] {
        let (status, _, message) =
            sse::post_whole(&server.url, "/v1/messages", &headers, &whole("x")).await;
        assert_eq!(status, 200, "{headers:?}: {message}");
    }
}

#[actix_web::test]
async fn the_models_list_names_the_configured_models_and_those_that_served() {
    let server = start(&["--model", "anthropic.claude-3-haiku-20240307-v1:0"]).await;
    let list = server.get("/v1/models").await.json;
    assert_eq!(list["object"], "list");
    assert_eq!(list["has_more"], false);
    let ids = |list: &Value| -> Vec<String> {
        list["data"]
            .as_array()
            .unwrap()
            .iter()
            .map(|m| m["id"].as_str().unwrap().to_string())
            .collect()
    };
    assert_eq!(ids(&list), ["anthropic.claude-3-haiku-20240307-v1:0"]);
    let haiku = &list["data"][0];
    assert_eq!(haiku["type"], "model");
    assert_eq!(haiku["object"], "model");
    assert_eq!(haiku["display_name"], "Claude 3 Haiku");
    assert_eq!(haiku["created_at"], "2024-03-07T00:00:00Z");
    // A model that answered joins the list; one Bedrock refused does not.
    let (status, _, _) = sse::post_whole(&server.url, "/v1/messages", &[], &whole("hi")).await;
    assert_eq!(status, 200);
    server.script("anthropic.claude-nope", &["ResourceNotFoundException"]);
    let mut refused = whole("hi");
    refused["model"] = json!("anthropic.claude-nope");
    let (status, _, _) = sse::post_whole(&server.url, "/v1/messages", &[], &refused).await;
    assert_eq!(status, 404);
    let list = server.get("/v1/models").await.json;
    assert_eq!(
        ids(&list),
        ["anthropic.claude-3-haiku-20240307-v1:0", MODEL]
    );
    assert_eq!(list["last_id"], MODEL);
}
