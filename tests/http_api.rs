//! The `/infer` contract over HTTP, against the real server, the real AWS SDK and the
//! emulator: success shape, defaults and pass-through, every bad input (a 4xx JSON error
//! naming the field, and no Bedrock call), Bedrock errors, retries and deadlines.

mod common;

use std::time::{Duration, Instant};

use common::{post_raw, request, start, MODEL};
use serde_json::json;

#[actix_web::test]
async fn success_carries_the_answer_and_additive_fields() {
    let server = start(&[]).await;
    let reply = server.infer(&request(MODEL, "Hello there")).await;
    assert_eq!(reply.status, 200, "{:?}", reply.json);
    let text = reply.json["response"].as_str().unwrap();
    assert!(
        text.contains("1 turn(s)") && text.contains("Hello there"),
        "{text}"
    );
    assert_eq!(reply.json["model"], MODEL);
    assert_eq!(reply.json["stop_reason"], "end_turn");
    assert!(reply.json["usage"]["input_tokens"].as_u64().unwrap() > 0);
    assert!(reply.json["request_id"]
        .as_str()
        .is_some_and(|id| !id.is_empty()));
    assert_eq!(reply.json["attempts"], 1);
    assert_eq!(server.stats().calls, 1);
}

#[actix_web::test]
async fn seed_defaults_and_every_turn_are_forwarded() {
    let server = start(&[]).await;
    let body = json!({
        "type": "claude",
        "model_name": MODEL,
        "payload": {"messages": [
            {"role": "user", "content": "My name is Alice."},
            {"role": "assistant", "content": "Nice to meet you, Alice."},
            {"role": "user", "content": "What is my name?"}
        ]}
    });
    let reply = server.infer(&body).await;
    assert_eq!(reply.status, 200, "{:?}", reply.json);
    assert!(reply.json["response"]
        .as_str()
        .unwrap()
        .contains("3 turn(s)"));
    let sent = server.stats().last_body.expect("the emulator saw the body");
    assert_eq!(sent["anthropic_version"], "bedrock-2023-05-31");
    assert_eq!(sent["max_tokens"], 4000);
    assert_eq!(sent["temperature"], 0.1);
    assert_eq!(sent["messages"], body["payload"]["messages"]);
    assert!(sent.get("model").is_none());
}

#[actix_web::test]
async fn other_anthropic_fields_pass_through_unchanged() {
    let server = start(&[]).await;
    let mut body = request(MODEL, "hi");
    body["payload"]["system"] = json!("Answer in French.");
    body["payload"]["stop_sequences"] = json!(["\n\nHuman:"]);
    body["payload"]["top_k"] = json!(7);
    body["payload"]["temperature"] = json!(0.9);
    body["payload"]["metadata"] = json!({"user_id": "u-1"});
    let reply = server.infer(&body).await;
    assert_eq!(reply.status, 200, "{:?}", reply.json);
    let sent = server.stats().last_body.unwrap();
    for field in [
        "system",
        "stop_sequences",
        "top_k",
        "temperature",
        "metadata",
    ] {
        assert_eq!(sent[field], body["payload"][field], "{field}");
    }
    assert_eq!(sent["max_tokens"], 100);
}

#[actix_web::test]
async fn bad_inputs_get_a_4xx_json_error_naming_the_field_and_never_reach_bedrock() {
    let server = start(&["--max-body-bytes", "4096"]).await;
    let ok = request(MODEL, "hi");
    let with = |path: &[&str], value: serde_json::Value| {
        let mut body = ok.clone();
        let mut target = &mut body;
        for key in &path[..path.len() - 1] {
            target = &mut target[*key];
        }
        target[path[path.len() - 1]] = value;
        body
    };
    let cases = vec![
        (with(&["type"], json!("gpt")), 400, "type"),
        (with(&["type"], json!(7)), 400, "type"),
        (with(&["model_name"], json!("")), 400, "model_name"),
        (with(&["model_name"], json!(null)), 400, "model_name"),
        (with(&["payload"], json!("hi")), 400, "payload"),
        (
            with(&["payload", "messages"], json!([])),
            400,
            "payload.messages",
        ),
        (
            with(
                &["payload", "messages"],
                json!([{"role": "system", "content": "x"}]),
            ),
            400,
            "payload.messages[0].role",
        ),
        (
            with(
                &["payload", "messages"],
                json!([{"role": "user", "content": ""}]),
            ),
            400,
            "payload.messages[0].content",
        ),
        (
            with(&["payload", "max_tokens"], json!(0)),
            400,
            "payload.max_tokens",
        ),
        (
            with(&["payload", "max_tokens"], json!(1e20)),
            400,
            "payload.max_tokens",
        ),
        (
            with(&["payload", "temperature"], json!(3)),
            400,
            "payload.temperature",
        ),
        (
            with(&["payload", "stream"], json!(true)),
            400,
            "payload.stream",
        ),
        (
            with(&["payload", "model"], json!("other")),
            400,
            "payload.model",
        ),
        (with(&["timeout"], json!(0)), 400, "timeout"),
        (with(&["timeout"], json!("soon")), 400, "timeout"),
        (with(&["max_retries"], json!(-1)), 400, "max_retries"),
        (with(&["max_retries"], json!(1000)), 400, "max_retries"),
        (with(&["max_retry"], json!(2)), 400, "max_retry"),
    ];
    for (body, status, field) in cases {
        let reply = server.infer(&body).await;
        assert_eq!(reply.status, status, "{body} -> {:?}", reply.json);
        assert_eq!(reply.json["field"], field, "{body} -> {:?}", reply.json);
        assert!(reply.error().contains(field), "{:?}", reply.json);
        assert_eq!(reply.content_type.as_deref(), Some("application/json"));
    }
    // Unknown worker types list the known ones.
    let reply = server.infer(&with(&["type"], json!("gpt"))).await;
    assert_eq!(reply.json["known_types"], json!(["claude"]));

    // Bodies that are not JSON objects.
    for raw in [&b"{not json"[..], b"[1,2,3]", b"", b"\xff\xfe\xfd"] {
        let reply = server.infer_raw(raw.to_vec()).await;
        assert_eq!(reply.status, 400, "{raw:?}");
        assert_eq!(reply.json["field"], "body");
    }
    // Wrong Content-Type.
    let reply = post_raw(
        &server.url,
        "/infer",
        Some("text/plain"),
        ok.to_string().into_bytes(),
    )
    .await;
    assert_eq!(reply.status, 415);
    assert!(reply.error().contains("Content-Type"));
    // Too large: 413 before the body is read.
    let big = with(
        &["payload", "messages"],
        json!([{"role": "user", "content": "x".repeat(10_000)}]),
    );
    let reply = server.infer(&big).await;
    assert_eq!(reply.status, 413);
    assert!(reply.error().contains("4096"));
    // Deeply nested JSON.
    let deep = format!("{}{}", "[".repeat(50_000), "]".repeat(50_000));
    let reply = server.infer_raw(deep.into_bytes()).await;
    assert_eq!(reply.status, 413);
    let deep = format!("{{\"a\":{}1{}}}", "[".repeat(1_000), "]".repeat(1_000));
    let reply = server.infer_raw(deep.into_bytes()).await;
    assert_eq!(reply.status, 400);

    assert_eq!(server.stats().calls, 0, "no bad input may reach Bedrock");
}

#[actix_web::test]
async fn unknown_routes_and_methods_are_json_errors() {
    let server = start(&[]).await;
    let reply = server.get("/nope").await;
    assert_eq!(reply.status, 404);
    assert!(reply.error().contains("/nope"));
    let reply = server.get("/infer").await;
    assert_eq!(reply.status, 405);
    assert!(reply.error().contains("POST"));
    let reply = server.get("/health").await;
    assert_eq!(
        (reply.status, reply.json["status"].as_str()),
        (200, Some("ok"))
    );
}

#[actix_web::test]
async fn validation_exception_is_a_400_with_bedrocks_message_and_is_not_retried() {
    let server = start(&[]).await;
    server.script(MODEL, &["ValidationException"]);
    let reply = server.infer(&request(MODEL, "hi")).await;
    assert_eq!(reply.status, 400, "{:?}", reply.json);
    assert_eq!(reply.json["code"], "ValidationException");
    assert!(
        reply.error().contains("ValidationException"),
        "{}",
        reply.error()
    );
    assert_eq!(server.stats().calls, 1);
}

#[actix_web::test]
async fn access_denied_and_missing_models_are_not_retried() {
    let server = start(&[]).await;
    for code in ["AccessDeniedException", "ResourceNotFoundException"] {
        server.emulator.reset();
        server.script(MODEL, &[code]);
        let reply = server.infer(&request(MODEL, "hi")).await;
        assert_eq!(reply.status, 500, "{:?}", reply.json);
        assert!(
            reply.error().starts_with("Failed to get response: "),
            "{}",
            reply.error()
        );
        assert_eq!(reply.json["code"], code);
        assert_eq!(reply.json["attempts"], 1);
        assert_eq!(server.stats().calls, 1, "{code}");
    }
}

#[actix_web::test]
async fn repeated_throttling_makes_one_plus_max_retries_attempts_then_a_500() {
    let server = start(&[]).await;
    server.script(MODEL, &["ThrottlingException"; 10]);
    let mut body = request(MODEL, "hi");
    body["max_retries"] = json!(2);
    let reply = server.infer(&body).await;
    assert_eq!(reply.status, 500, "{:?}", reply.json);
    assert!(
        reply
            .error()
            .starts_with("Failed to get response: ThrottlingException"),
        "{}",
        reply.error()
    );
    assert_eq!(reply.json["attempts"], 3);
    assert_eq!(server.stats().calls, 3);
    assert_eq!(server.stats().throttled, 3);
    // The seed default is three retries: four attempts.
    server.emulator.reset();
    server.script(MODEL, &["ThrottlingException"; 10]);
    let reply = server.infer(&request(MODEL, "hi")).await;
    assert_eq!(reply.json["attempts"], 4, "{:?}", reply.json);
    assert_eq!(server.stats().calls, 4);
}

#[actix_web::test]
async fn retryable_failures_are_retried_until_success() {
    let server = start(&[]).await;
    server.script(
        MODEL,
        &[
            "ThrottlingException",
            "InternalServerException",
            "ServiceUnavailableException",
            "ModelNotReadyException",
        ],
    );
    let mut body = request(MODEL, "hi");
    body["max_retries"] = json!(5);
    let reply = server.infer(&body).await;
    assert_eq!(reply.status, 200, "{:?}", reply.json);
    assert_eq!(reply.json["attempts"], 5);
    assert_eq!(server.stats().calls, 5);
}

#[actix_web::test]
async fn the_request_timeout_is_honoured_with_a_504() {
    let server = start(&["--emulator-latency-ms", "5000"]).await;
    let mut body = request(MODEL, "hi");
    body["timeout"] = json!(0.3);
    let started = Instant::now();
    let reply = server.infer(&body).await;
    let took = started.elapsed();
    assert_eq!(reply.status, 504, "{:?}", reply.json);
    assert!(reply.error().contains("deadline"), "{}", reply.error());
    assert!(
        took >= Duration::from_millis(300),
        "answered before the deadline: {took:?}"
    );
    assert!(
        took < Duration::from_millis(1300),
        "answered long after the deadline: {took:?}"
    );
}

#[actix_web::test]
async fn seed_policy_a_throttle_on_one_request_delays_other_requests_to_the_same_model() {
    // Base delay 400 ms so the shared pre-emptive wait is clearly visible.
    let server = start(&[
        "--throttle-policy",
        "seed",
        "--backoff-base-ms",
        "400",
        "--backoff-cap-ms",
        "400",
    ])
    .await;
    let other = "anthropic.claude-3-haiku-20240307-v1:0";
    server.script(MODEL, &["ThrottlingException"]);
    let mut first = request(MODEL, "first");
    first["max_retries"] = json!(0);
    let reply = server.infer(&first).await;
    assert_eq!(reply.status, 500, "{:?}", reply.json);

    // Another request for the same model waits the shared delay (400 ms +-10%) before calling.
    let started = Instant::now();
    let reply = server.infer(&request(MODEL, "second")).await;
    assert_eq!(reply.status, 200, "{:?}", reply.json);
    let same_model = started.elapsed();
    assert!(
        same_model >= Duration::from_millis(350),
        "no pre-emptive backoff: {same_model:?}"
    );

    // Its success reset the counter: the next call goes at once.
    let started = Instant::now();
    let reply = server.infer(&request(MODEL, "third")).await;
    assert_eq!(reply.status, 200);
    assert!(
        started.elapsed() < Duration::from_millis(300),
        "{:?}",
        started.elapsed()
    );

    // A throttle on one model does not slow another model.
    server.script(MODEL, &["ThrottlingException"]);
    let _ = server.infer(&first).await;
    let started = Instant::now();
    let reply = server.infer(&request(other, "elsewhere")).await;
    assert_eq!(reply.status, 200);
    assert!(
        started.elapsed() < Duration::from_millis(300),
        "{:?}",
        started.elapsed()
    );
}

#[actix_web::test]
async fn status_reports_pools_queue_and_throttle_state() {
    let server = start(&[]).await;
    server.script(MODEL, &["ThrottlingException"]);
    let mut body = request(MODEL, "hi");
    body["max_retries"] = json!(0);
    server.infer(&body).await;
    let status = server.status().await;
    let pool = &status["pools"][0];
    assert_eq!(pool["worker_type"], "claude");
    assert_eq!(pool["workers"], 1);
    assert_eq!(pool["queue_depth"], 0);
    assert_eq!(pool["in_flight"], 0);
    assert_eq!(pool["counters"]["completed"], 1);
    let throttle = &status["throttle"][0];
    assert_eq!(throttle["model"], MODEL);
    assert_eq!(throttle["policy"], "adaptive");
    assert_eq!(throttle["consecutive_throttles"], 1);
    // The adaptive policy's seed brake waits for five consecutive throttles.
    assert_eq!(throttle["current_delay_ms"], 0);
    assert!(throttle["since_last_throttle_ms"].is_u64());
    assert_eq!(throttle["throttled"], 1);
    let load = &pool["models"][0];
    assert_eq!(load["model"], MODEL);
    assert_eq!(
        (load["queued"].as_u64(), load["in_flight"].as_u64()),
        (Some(0), Some(0))
    );
}
