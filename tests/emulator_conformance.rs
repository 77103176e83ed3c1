//! Conformance of the Bedrock Runtime emulator against the real `aws-sdk-bedrockruntime`
//! client over loopback HTTP (and awc for the admin API).

use std::time::{Duration, Instant};

use aws_sdk_bedrockruntime::config::timeout::TimeoutConfig;
use aws_sdk_bedrockruntime::error::{ProvideErrorMetadata, SdkError};
use aws_sdk_bedrockruntime::operation::invoke_model::{InvokeModelError, InvokeModelOutput};
use aws_sdk_bedrockruntime::operation::RequestId;
use aws_sdk_bedrockruntime::primitives::Blob;
use aws_sdk_bedrockruntime::Client;
use model_server::emulator::{
    CallDuration, Emulator, EmulatorConfig, FaultKind, Quota, Scripted, TokenDayQuota, TokenQuota,
    WindowQuota,
};
use serde_json::{json, Value};

mod common;

use common::bedrock::{invoke, sdk_config, InvokeError};
use common::emulator::{self, start};

const SONNET: &str = "us.anthropic.claude-sonnet-4-20250514-v1:0";
const PROFILE_ARN: &str =
    "arn:aws:bedrock:us-east-1:123456789012:inference-profile/us.anthropic.claude-sonnet-4-20250514-v1:0";

type InvokeResult = Result<InvokeModelOutput, InvokeError>;

fn client_with(emu: &Emulator, timeout: Option<TimeoutConfig>) -> Client {
    let mut b = sdk_config(&emu.endpoint());
    if let Some(t) = timeout {
        b = b.timeout_config(t);
    }
    Client::from_conf(b.build())
}

fn client(emu: &Emulator) -> Client {
    client_with(emu, None)
}

fn body(text: &str) -> Value {
    json!({
        "anthropic_version": "bedrock-2023-05-31",
        "max_tokens": 200,
        "messages": [{"role": "user", "content": text}]
    })
}

fn reply_json(out: &InvokeModelOutput) -> Value {
    serde_json::from_slice(out.body().as_ref()).expect("reply is JSON")
}

const TOO_MANY_REQUESTS: &str = "Too many requests, please wait before trying again.";
const TOO_MANY_TOKENS: &str = "Too many tokens, please wait before trying again.";
const TOO_MANY_TOKENS_PER_DAY: &str = "Too many tokens per day, please wait before trying again.";

/// A one-message body asking for `max_tokens`.
fn body_max(text: &str, max_tokens: u64) -> Value {
    let mut b = body(text);
    b["max_tokens"] = json!(max_tokens);
    b
}

/// The throttle message of a call that must be a ThrottlingException (429).
fn throttle_message(result: InvokeResult) -> String {
    let err = result.expect_err("throttled");
    assert_eq!(status_of(&err), 429);
    let service = err.as_service_error().expect("service error");
    assert!(service.is_throttling_exception(), "{service:?}");
    service.message().unwrap_or_default().to_owned()
}

/// `(input_tokens, output_tokens)` of a successful reply.
fn usage(out: &InvokeModelOutput) -> (u64, u64) {
    let v = reply_json(out);
    (
        v["usage"]["input_tokens"].as_u64().unwrap(),
        v["usage"]["output_tokens"].as_u64().unwrap(),
    )
}

/// Sleeps until `at` (at once if it is past).
async fn sleep_until(at: Instant) {
    tokio::time::sleep(at.saturating_duration_since(Instant::now())).await;
}

/// Sets `config` and returns an instant at or after the quota clock's restart (windows and
/// schedule steps start at most this late).
fn set_config_at(emu: &Emulator, config: EmulatorConfig) -> Instant {
    emu.set_config(config);
    Instant::now()
}

/// Margin added to computed waits (timer slack, loopback round trips).
const MARGIN: Duration = Duration::from_millis(40);

/// `GET url` as JSON.
async fn get_json(url: &str) -> Value {
    awc::Client::default()
        .get(url)
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap()
}

fn status_of(err: &InvokeError) -> u16 {
    err.raw_response()
        .map(|r| r.status().as_u16())
        .expect("error has a raw response")
}

#[actix_web::test]
async fn success_round_trip() {
    let emu = start(EmulatorConfig::default());
    let c = client(&emu);
    let req = json!({
        "anthropic_version": "bedrock-2023-05-31",
        "max_tokens": 500,
        "system": "You are terse.",
        "messages": [
            {"role": "user", "content": "first question"},
            {"role": "assistant", "content": [{"type": "text", "text": "first answer"}]},
            {"role": "user", "content": [{"type": "text", "text": "What is "}, {"type": "text", "text": "2+2?"}]}
        ]
    });
    let out = invoke(&c, SONNET, &req).await.expect("success");
    assert_eq!(out.content_type(), "application/json");
    let request_id = out.request_id().expect("x-amzn-RequestId").to_owned();
    assert_eq!(request_id.len(), 36, "{request_id}");

    let v = reply_json(&out);
    assert_eq!(v["type"], "message");
    assert_eq!(v["role"], "assistant");
    assert_eq!(v["model"], SONNET);
    assert!(v["id"].as_str().unwrap().starts_with("msg_"));
    assert_eq!(v["stop_reason"], "end_turn");
    assert_eq!(v["stop_sequence"], Value::Null);
    let text = v["content"][0]["text"].as_str().unwrap();
    assert_eq!(v["content"][0]["type"], "text");
    assert!(text.contains("3 turn(s)"), "{text}");
    assert!(
        text.contains("last user message: \"What is 2+2?\""),
        "{text}"
    );
    assert!(text.contains("system prompt: 14 chars"), "{text}");
    // 14 + 14 + 12 + 12 chars -> 13 tokens.
    assert_eq!(v["usage"]["input_tokens"], 13);
    let output_tokens = v["usage"]["output_tokens"].as_u64().unwrap();
    assert_eq!(output_tokens, text.chars().count().div_ceil(4) as u64);

    // The same call with an explicit JSON content type; ids are unique.
    let out2 = c
        .invoke_model()
        .model_id(SONNET)
        .content_type("application/json")
        .accept("application/json")
        .body(Blob::new(serde_json::to_vec(&body("hello")).unwrap()))
        .send()
        .await
        .expect("success with application/json");
    assert_ne!(out2.request_id(), Some(request_id.as_str()));
    assert_ne!(reply_json(&out2)["id"], v["id"]);

    // max_tokens cuts the reply.
    let mut short = body("hello");
    short["max_tokens"] = json!(2);
    let cut = reply_json(&invoke(&c, SONNET, &short).await.unwrap());
    assert_eq!(cut["stop_reason"], "max_tokens");
    assert_eq!(cut["usage"]["output_tokens"], 2);
    assert_eq!(
        cut["content"][0]["text"].as_str().unwrap().chars().count(),
        8
    );

    let s = emu.stats();
    assert_eq!((s.calls, s.ok, s.throttled), (3, 3, 0));
    assert!(s.errors.is_empty(), "{:?}", s.errors);
    assert_eq!(s.last_body, Some(short));
    assert_eq!(s.last_headers["authorization"], "AWS4-HMAC-SHA256");
    assert_eq!(s.last_headers["content-type"], "application/octet-stream");
    assert!(s.last_headers.contains_key("x-amz-date"));
    assert_eq!(s.in_flight, 0);
    assert!(s.max_in_flight >= 1);
    emu.stop().await;
}

#[actix_web::test]
async fn ten_error_names_map_to_sdk_variants_and_statuses() {
    type Check = fn(&InvokeModelError) -> bool;
    let cases: [(FaultKind, Check, u16); 10] = [
        (
            FaultKind::Throttling,
            InvokeModelError::is_throttling_exception,
            429,
        ),
        (
            FaultKind::ModelNotReady,
            InvokeModelError::is_model_not_ready_exception,
            429,
        ),
        (
            FaultKind::Validation,
            InvokeModelError::is_validation_exception,
            400,
        ),
        (
            FaultKind::ServiceQuotaExceeded,
            InvokeModelError::is_service_quota_exceeded_exception,
            400,
        ),
        (
            FaultKind::AccessDenied,
            InvokeModelError::is_access_denied_exception,
            403,
        ),
        (
            FaultKind::ResourceNotFound,
            InvokeModelError::is_resource_not_found_exception,
            404,
        ),
        (
            FaultKind::ModelTimeout,
            InvokeModelError::is_model_timeout_exception,
            408,
        ),
        (
            FaultKind::ModelError,
            InvokeModelError::is_model_error_exception,
            424,
        ),
        (
            FaultKind::InternalServer,
            InvokeModelError::is_internal_server_exception,
            500,
        ),
        (
            FaultKind::ServiceUnavailable,
            InvokeModelError::is_service_unavailable_exception,
            503,
        ),
    ];
    let emu = start(EmulatorConfig::default());
    let c = client(&emu);
    emu.script(
        Some(SONNET),
        cases.iter().map(|(k, _, _)| Scripted::Fault(*k)).collect(),
    );
    for (kind, is_variant, status) in cases {
        let err = invoke(&c, SONNET, &body("x"))
            .await
            .expect_err("scripted fault");
        assert_eq!(status_of(&err), status, "{kind}");
        let raw = err.raw_response().unwrap();
        assert!(
            raw.headers().get("retry-after").is_none(),
            "{kind}: no Retry-After"
        );
        assert!(raw.headers().get("x-amzn-requestid").is_some(), "{kind}");
        let service = err.as_service_error().expect("a modeled service error");
        assert!(is_variant(service), "{kind}: got {service:?}");
        assert_eq!(service.code(), Some(kind.name()));
        assert!(service.message().is_some_and(|m| !m.is_empty()), "{kind}");
        if kind == FaultKind::Throttling {
            assert_eq!(
                service.message(),
                Some("Too many requests, please wait before trying again.")
            );
        }
    }
    let s = emu.stats();
    assert_eq!((s.calls, s.ok, s.throttled), (10, 0, 1));
    assert_eq!(s.errors.len(), 9);
    assert!(s.errors.values().all(|n| *n == 1), "{:?}", s.errors);
    assert_eq!(s.errors["ModelErrorException"], 1);
    // Scripts are used up: the next call succeeds.
    invoke(&c, SONNET, &body("x"))
        .await
        .expect("ok after the script");
}

#[actix_web::test]
async fn model_ids_with_colons_and_arns_arrive_decoded() {
    let emu = start(EmulatorConfig::default());
    let c = client(&emu);
    for model in [SONNET, PROFILE_ARN, SONNET] {
        let v = reply_json(&invoke(&c, model, &body("hi")).await.expect("success"));
        assert_eq!(v["model"], model);
    }
    let s = emu.stats();
    assert_eq!(s.per_model.len(), 2, "{:?}", s.per_model);
    assert_eq!(s.per_model[SONNET], 2);
    assert_eq!(s.per_model[PROFILE_ARN], 1);
}

#[actix_web::test]
async fn quota_throttles_past_burst_and_recovers_after_refill() {
    let quota = Quota {
        requests_per_second: 5.0,
        burst: 2.0,
    };
    let emu = start(EmulatorConfig {
        quota: Some(quota),
        ..EmulatorConfig::default()
    });
    let c = client(&emu);
    invoke(&c, SONNET, &body("1")).await.expect("burst 1");
    invoke(&c, SONNET, &body("2")).await.expect("burst 2");
    let err = invoke(&c, SONNET, &body("3"))
        .await
        .expect_err("past the burst");
    assert!(err.as_service_error().unwrap().is_throttling_exception());
    assert_eq!(status_of(&err), 429);

    // The bucket is per model id: another model still has its burst.
    invoke(&c, PROFILE_ARN, &body("other"))
        .await
        .expect("own bucket");

    // One token takes 1/rps seconds to come back.
    tokio::time::sleep(
        Duration::from_secs_f64(1.0 / quota.requests_per_second) + Duration::from_millis(20),
    )
    .await;
    invoke(&c, SONNET, &body("4")).await.expect("refilled");
    let again = invoke(&c, SONNET, &body("5"))
        .await
        .expect_err("empty again");
    assert!(again.as_service_error().unwrap().is_throttling_exception());

    let s = emu.stats();
    assert_eq!((s.calls, s.ok, s.throttled), (6, 4, 2));

    // Removing the quota lifts the limit at once.
    emu.set_config(EmulatorConfig::default());
    invoke(&c, SONNET, &body("6")).await.expect("unlimited");
}

#[actix_web::test]
async fn validation_errors_for_bad_bodies() {
    let emu = start(EmulatorConfig::default());
    let c = client(&emu);
    let no_messages = json!({"anthropic_version": "bedrock-2023-05-31", "max_tokens": 10});
    let err = invoke(&c, SONNET, &no_messages)
        .await
        .expect_err("no messages");
    assert_eq!(status_of(&err), 400);
    let service = err.as_service_error().unwrap();
    assert!(service.is_validation_exception(), "{service:?}");
    let msg = service.message().unwrap();
    assert!(msg.contains("required key [messages] not found"), "{msg}");
    assert!(msg.starts_with("Malformed input request"), "{msg}");

    let mut with_model = body("x");
    with_model["model"] = json!(SONNET);
    let err = invoke(&c, SONNET, &with_model)
        .await
        .expect_err("model field");
    let msg = err
        .as_service_error()
        .unwrap()
        .message()
        .unwrap()
        .to_owned();
    assert!(msg.contains("extraneous key [model]"), "{msg}");

    let mut zero = body("x");
    zero["max_tokens"] = json!(0);
    let err = invoke(&c, SONNET, &zero).await.expect_err("max_tokens 0");
    assert!(err.as_service_error().unwrap().is_validation_exception());

    let err = c
        .invoke_model()
        .model_id(SONNET)
        .body(Blob::new(b"not json".to_vec()))
        .send()
        .await
        .expect_err("not JSON");
    assert!(err.as_service_error().unwrap().is_validation_exception());

    let s = emu.stats();
    assert_eq!(s.errors["ValidationException"], 4);
    assert_eq!(s.ok, 0);
    assert_eq!(s.last_body, Some(Value::String("not json".into())));
}

#[actix_web::test]
async fn latency_is_applied_but_throttles_answer_at_once() {
    let latency = Duration::from_millis(300);
    let emu = start(EmulatorConfig {
        latency,
        quota: Some(Quota {
            requests_per_second: 0.01,
            burst: 1.0,
        }),
        ..EmulatorConfig::default()
    });
    let c = client(&emu);
    let t = Instant::now();
    invoke(&c, SONNET, &body("slow")).await.expect("success");
    assert!(t.elapsed() >= latency, "{:?}", t.elapsed());

    let t = Instant::now();
    let err = invoke(&c, SONNET, &body("throttled"))
        .await
        .expect_err("throttled");
    assert!(err.as_service_error().unwrap().is_throttling_exception());
    assert!(t.elapsed() < latency, "throttle took {:?}", t.elapsed());

    // Other faults wait the latency too; a scripted "ok" skips the quota.
    emu.script(
        None,
        vec![Scripted::Fault(FaultKind::ModelError), Scripted::Ok],
    );
    let t = Instant::now();
    let err = invoke(&c, SONNET, &body("x"))
        .await
        .expect_err("model error");
    assert!(err.as_service_error().unwrap().is_model_error_exception());
    assert!(t.elapsed() >= latency, "{:?}", t.elapsed());
    invoke(&c, SONNET, &body("x"))
        .await
        .expect("scripted ok bypasses the quota");
}

#[actix_web::test]
async fn scripted_outcomes_are_consumed_in_order_per_model() {
    let emu = start(EmulatorConfig::default());
    let c = client(&emu);
    emu.script(
        Some(SONNET),
        vec![
            Scripted::Fault(FaultKind::Throttling),
            Scripted::Ok,
            Scripted::Fault(FaultKind::ModelTimeout),
        ],
    );
    emu.script(None, vec![Scripted::Fault(FaultKind::ServiceUnavailable)]);

    // Another model takes the any-model queue.
    let e = invoke(&c, PROFILE_ARN, &body("x")).await.unwrap_err();
    assert!(e
        .as_service_error()
        .unwrap()
        .is_service_unavailable_exception());
    invoke(&c, PROFILE_ARN, &body("x"))
        .await
        .expect("any-model queue empty");

    let e = invoke(&c, SONNET, &body("x")).await.unwrap_err();
    assert!(e.as_service_error().unwrap().is_throttling_exception());
    invoke(&c, SONNET, &body("x")).await.expect("scripted ok");
    let e = invoke(&c, SONNET, &body("x")).await.unwrap_err();
    assert!(e.as_service_error().unwrap().is_model_timeout_exception());
    invoke(&c, SONNET, &body("x"))
        .await
        .expect("script used up");

    // The own queue comes before the any-model queue.
    emu.script(None, vec![Scripted::Fault(FaultKind::AccessDenied)]);
    emu.script(
        Some(SONNET),
        vec![Scripted::Fault(FaultKind::ResourceNotFound)],
    );
    let e = invoke(&c, SONNET, &body("x")).await.unwrap_err();
    assert!(e
        .as_service_error()
        .unwrap()
        .is_resource_not_found_exception());
    let e = invoke(&c, SONNET, &body("x")).await.unwrap_err();
    assert!(e.as_service_error().unwrap().is_access_denied_exception());
}

#[actix_web::test]
async fn random_injection_is_reproducible_by_seed() {
    let config = EmulatorConfig {
        error_rates: vec![
            (FaultKind::Throttling, 0.3),
            (FaultKind::InternalServer, 0.2),
        ],
        seed: 42,
        ..EmulatorConfig::default()
    };
    let emu = start(config.clone());
    let c = client(&emu);
    let mut runs = Vec::new();
    for _ in 0..2 {
        emu.set_config(config.clone());
        let mut pattern = String::new();
        for _ in 0..30 {
            pattern.push(match invoke(&c, SONNET, &body("x")).await {
                Ok(_) => '.',
                Err(e) if e.as_service_error().unwrap().is_throttling_exception() => 'T',
                Err(e) if e.as_service_error().unwrap().is_internal_server_exception() => 'I',
                Err(e) => panic!("unexpected {e:?}"),
            });
        }
        runs.push(pattern);
    }
    assert_eq!(runs[0], runs[1]);
    assert!(
        runs[0].contains('T') && runs[0].contains('I') && runs[0].contains('.'),
        "{}",
        runs[0]
    );
}

#[actix_web::test]
async fn hang_ends_in_an_sdk_timeout_and_the_call_is_released() {
    let emu = start(EmulatorConfig::default());
    let timeouts = TimeoutConfig::builder()
        .operation_timeout(Duration::from_millis(300))
        .build();
    let c = client_with(&emu, Some(timeouts));
    emu.script(None, vec![Scripted::Fault(FaultKind::Hang)]);
    let t = Instant::now();
    let err = invoke(&c, SONNET, &body("x")).await.expect_err("hang");
    assert!(matches!(err, SdkError::TimeoutError(_)), "{err:?}");
    assert!(t.elapsed() >= Duration::from_millis(300));
    assert_eq!(emu.stats().errors["hang"], 1);

    // The client dropped the connection; the emulator drops the hanging call.
    let deadline = Instant::now() + Duration::from_secs(3);
    while emu.stats().in_flight > 0 && Instant::now() < deadline {
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    assert_eq!(emu.stats().in_flight, 0);
    invoke(&c, SONNET, &body("x"))
        .await
        .expect("fine afterwards");
}

#[actix_web::test]
async fn broken_bodies_give_errors_not_panics() {
    let emu = start(EmulatorConfig::default());
    let c = client(&emu);
    emu.script(
        None,
        vec![
            Scripted::Fault(FaultKind::TruncatedBody),
            Scripted::Fault(FaultKind::NonJsonBody),
            Scripted::Fault(FaultKind::NonJsonError),
            Scripted::Fault(FaultKind::ResetMidBody),
        ],
    );

    // InvokeModel's output is a blob: the SDK hands a broken 200 body over as is, and the
    // failure shows when the caller parses it.
    let out = invoke(&c, SONNET, &body("x"))
        .await
        .expect("truncated 200 is a blob");
    let bytes = out.body().as_ref();
    assert!(!bytes.is_empty());
    assert!(
        serde_json::from_slice::<Value>(bytes).is_err(),
        "cut-off JSON"
    );
    assert!(bytes.starts_with(b"{\"id\":\"msg_"));

    let out = invoke(&c, SONNET, &body("x"))
        .await
        .expect("non-JSON 200 is a blob");
    assert_eq!(out.body().as_ref(), b"<html>oops</html>");
    assert!(serde_json::from_slice::<Value>(out.body().as_ref()).is_err());

    // An HTML error body defeats the error-code parsing: unhandled, no code.
    let err = invoke(&c, SONNET, &body("x"))
        .await
        .expect_err("non-JSON 500");
    assert_eq!(status_of(&err), 500);
    let service = err.as_service_error().expect("service error");
    assert_eq!(service.code(), None, "{service:?}");
    assert!(!service.is_internal_server_exception());

    let err = invoke(&c, SONNET, &body("x"))
        .await
        .expect_err("reset mid-body");
    assert!(
        matches!(
            err,
            SdkError::ResponseError(_) | SdkError::DispatchFailure(_)
        ),
        "{err:?}"
    );

    invoke(&c, SONNET, &body("x"))
        .await
        .expect("fine afterwards");
    let s = emu.stats();
    assert_eq!(s.ok, 1);
    for name in [
        "truncated_body",
        "non_json_body",
        "non_json_error",
        "reset_mid_body",
    ] {
        assert_eq!(s.errors[name], 1, "{name}");
    }
}

#[actix_web::test]
async fn admin_api_over_http() {
    let emu = start(EmulatorConfig::default());
    let base = emu.endpoint();
    let http = awc::Client::default();

    let mut res = http.get(format!("{base}/health")).send().await.unwrap();
    assert_eq!(res.status(), 200);
    assert_eq!(res.json::<Value>().await.unwrap()["status"], "ok");

    // Partial config: latency + quota + rates; then read it back.
    let mut res = http
        .post(format!("{base}/_emulator/config"))
        .send_json(&json!({
            "latency_ms": 5,
            "quota": {"requests_per_second": 100, "burst": 50},
            "error_rates": {"ModelNotReadyException": 0.0, "hang": 0.0}
        }))
        .await
        .unwrap();
    assert_eq!(res.status(), 200);
    let cfg: Value = res.json().await.unwrap();
    assert_eq!(cfg["latency_ms"], 5.0);
    assert_eq!(cfg["quota"]["burst"], 50.0);
    assert_eq!(cfg["error_rates"]["hang"], 0.0);
    let live = emu.config();
    assert_eq!(live.latency, Duration::from_millis(5));
    assert_eq!(live.error_rates.len(), 2);

    let mut res = http
        .post(format!("{base}/_emulator/config"))
        .send_json(&json!({"quota": null}))
        .await
        .unwrap();
    let cfg: Value = res.json().await.unwrap();
    assert_eq!(cfg["quota"], Value::Null);
    assert_eq!(cfg["latency_ms"], 5.0, "absent fields are kept");

    let mut res = http
        .post(format!("{base}/_emulator/config"))
        .send_json(&json!({"error_rates": {"NoSuchException": 0.5}}))
        .await
        .unwrap();
    assert_eq!(res.status(), 400);
    let err: Value = res.json().await.unwrap();
    assert!(
        err["error"].as_str().unwrap().contains("NoSuchException"),
        "{err}"
    );

    // Script over HTTP, then a raw InvokeModel with a Bearer token and application/json.
    let mut res = http
        .post(format!("{base}/_emulator/script"))
        .send_json(&json!({"model": SONNET, "outcomes": ["ThrottlingException", "ok"]}))
        .await
        .unwrap();
    assert_eq!(res.status(), 200);
    assert_eq!(res.json::<Value>().await.unwrap()["queued"], 2);
    let res = http
        .post(format!("{base}/_emulator/script"))
        .send_json(&json!({"outcomes": ["sometimes"]}))
        .await
        .unwrap();
    assert_eq!(res.status(), 400);

    let url = format!(
        "{base}/model/{}/invoke",
        percent_encoding::utf8_percent_encode(SONNET, percent_encoding::NON_ALPHANUMERIC)
    );
    let raw_invoke = || {
        http.post(url.as_str())
            .insert_header(("authorization", "Bearer secret-token"))
            .insert_header(("content-type", "application/json"))
            .send_body(serde_json::to_vec(&body("over awc")).unwrap())
    };
    let mut res = raw_invoke().await.unwrap();
    assert_eq!(res.status(), 429);
    assert_eq!(
        res.headers().get("x-amzn-ErrorType").unwrap(),
        "ThrottlingException"
    );
    assert!(res.headers().get("retry-after").is_none());
    let err: Value = res.json().await.unwrap();
    assert_eq!(
        err,
        json!({"message": "Too many requests, please wait before trying again."})
    );

    let mut res = raw_invoke().await.unwrap();
    assert_eq!(res.status(), 200);
    assert_eq!(
        res.headers().get("content-type").unwrap(),
        "application/json"
    );
    assert!(res.headers().get("x-amzn-RequestId").is_some());
    let reply: Value = res.json().await.unwrap();
    assert_eq!(
        res.headers()
            .get("X-Amzn-Bedrock-Input-Token-Count")
            .unwrap()
            .to_str()
            .unwrap(),
        reply["usage"]["input_tokens"].to_string()
    );
    assert_eq!(
        res.headers()
            .get("X-Amzn-Bedrock-Output-Token-Count")
            .unwrap()
            .to_str()
            .unwrap(),
        reply["usage"]["output_tokens"].to_string()
    );

    // Converse is not implemented yet; unknown paths are not model calls.
    for op in ["converse", "converse-stream"] {
        let res = http
            .post(url.replace("/invoke", &format!("/{op}")))
            .insert_header(("authorization", "Bearer other-token"))
            .send_body("{}")
            .await
            .unwrap();
        assert_eq!(res.status(), 404, "{op}");
        assert_eq!(
            res.headers().get("x-amzn-ErrorType").unwrap(),
            "UnknownOperationException"
        );
    }
    let res = http.get(format!("{base}/nope")).send().await.unwrap();
    assert_eq!(res.status(), 404);

    let mut res = http
        .get(format!("{base}/_emulator/stats"))
        .send()
        .await
        .unwrap();
    let stats: Value = res.json().await.unwrap();
    assert_eq!(stats["calls"], 4);
    assert_eq!(stats["ok"], 1);
    assert_eq!(stats["throttled"], 1);
    assert_eq!(stats["errors"]["UnknownOperationException"], 2);
    assert_eq!(stats["per_model"][SONNET], 4);
    assert_eq!(stats["last_headers"]["authorization"], "Bearer");
    assert_eq!(stats["last_body"], body("over awc"));
    assert_eq!(stats["in_flight"], 0);

    let res = http
        .post(format!("{base}/_emulator/reset"))
        .send()
        .await
        .unwrap();
    assert_eq!(res.status(), 200);
    let s = emu.stats();
    assert_eq!((s.calls, s.ok, s.throttled), (0, 0, 0));
    assert!(s.per_model.is_empty() && s.errors.is_empty() && s.last_body.is_none());
}

#[actix_web::test]
async fn start_in_thread_serves_and_stops() {
    let emu =
        Emulator::start_in_thread("127.0.0.1:0", EmulatorConfig::default(), 1).expect("starts");
    let addr = emu.addr();
    let c = client(&emu);
    invoke(&c, SONNET, &body("x"))
        .await
        .expect("served from its own thread");
    emu.reset_stats();
    assert_eq!(emu.stats().calls, 0);
    emu.stop().await;
    // Stopped: new connections are refused.
    let deadline = Instant::now() + Duration::from_secs(3);
    while std::net::TcpStream::connect(addr).is_ok() && Instant::now() < deadline {
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    assert!(std::net::TcpStream::connect(addr).is_err());
}

#[actix_web::test]
async fn window_quota_throttles_until_the_next_aligned_window() {
    let window = Duration::from_millis(600);
    let emu = start(EmulatorConfig::default());
    let c = client(&emu);
    let t0 = set_config_at(
        &emu,
        EmulatorConfig {
            window_quota: Some(WindowQuota {
                requests: 2,
                window,
                sliding: false,
            }),
            ..EmulatorConfig::default()
        },
    );
    // First calls halfway through window 0.
    sleep_until(t0 + window / 2).await;
    invoke(&c, SONNET, &body("1"))
        .await
        .expect("window 0, call 1");
    invoke(&c, SONNET, &body("2"))
        .await
        .expect("window 0, call 2");
    assert_eq!(
        throttle_message(invoke(&c, SONNET, &body("3")).await),
        TOO_MANY_REQUESTS
    );
    // Per model id.
    invoke(&c, PROFILE_ARN, &body("other"))
        .await
        .expect("own window");

    // Window 1 starts at t0 + window, only half a window after the first call: aligned to the
    // config, not to the first call.
    sleep_until(t0 + window + MARGIN).await;
    invoke(&c, SONNET, &body("4"))
        .await
        .expect("window 1, call 1");
    invoke(&c, SONNET, &body("5"))
        .await
        .expect("window 1, call 2");
    assert_eq!(
        throttle_message(invoke(&c, SONNET, &body("6")).await),
        TOO_MANY_REQUESTS
    );
    let s = emu.stats();
    assert_eq!((s.ok, s.throttled, s.throttled_tokens), (5, 2, 0));
}

#[actix_web::test]
async fn token_quota_reserves_max_tokens_and_refunds_the_unused_part() {
    // 5 tokens/s, capacity 300.
    let quota = TokenQuota {
        tokens_per_minute: 300.0,
        burst_tokens: 300.0,
    };
    let per_sec = quota.tokens_per_minute / 60.0;
    // Output charged at 1 quota token each (Sonnet 4's own burndown is 5).
    let config = EmulatorConfig {
        token_quota: Some(quota),
        burndown: Some(1.0),
        ..EmulatorConfig::default()
    };
    let emu = start(config.clone());
    let c = client(&emu);
    let (mut ins, mut outs) = (0, 0);
    let mut ok = |out: InvokeModelOutput, max_tokens: u64, level: &mut f64| {
        let (i, o) = usage(&out);
        assert!(o <= max_tokens);
        ins += i;
        outs += o;
        // Reserved i + max_tokens, refunded max_tokens - o.
        *level -= (i + o) as f64;
    };
    // The level without refill, as the test tracks it (the refill only adds).
    let mut level = quota.burst_tokens;

    // A reservation larger than the capacity never passes; a small one does.
    assert_eq!(
        throttle_message(invoke(&c, SONNET, &body_max("hi", 1000)).await),
        TOO_MANY_TOKENS
    );
    let out = invoke(&c, SONNET, &body_max("hi", 10))
        .await
        .expect("small");
    ok(out, 10, &mut level);

    // 1 + 250 reserved twice: the second fits only because the first gave back its unused
    // part (without refunds: 300 - 11 - 251 = 38 left).
    for _ in 0..2 {
        let out = invoke(&c, SONNET, &body_max("hi", 250))
            .await
            .expect("fits after the refund");
        ok(out, 250, &mut level);
    }

    // Reserve 10 tokens more than the bucket holds: throttled, then wait exactly the refill.
    let reserve = level + 10.0;
    let max_tokens = reserve as u64 - 1; // "hi" is 1 input token.
    assert_eq!(
        throttle_message(invoke(&c, SONNET, &body_max("hi", max_tokens)).await),
        TOO_MANY_TOKENS
    );
    let throttled_at = Instant::now();
    sleep_until(throttled_at + Duration::from_secs_f64(10.0 / per_sec) + MARGIN).await;
    let out = invoke(&c, SONNET, &body_max("hi", max_tokens))
        .await
        .expect("refilled");
    ok(out, max_tokens, &mut level);

    // A call failing after admission gives back max_tokens (the bucket is per model id).
    emu.set_config(EmulatorConfig {
        error_rates: vec![(FaultKind::ModelError, 1.0)],
        ..config.clone()
    });
    let err = invoke(&c, PROFILE_ARN, &body_max("hi", 250))
        .await
        .expect_err("injected");
    assert!(err.as_service_error().unwrap().is_model_error_exception());
    emu.set_config(config);
    let out = invoke(&c, PROFILE_ARN, &body_max("hi", 250))
        .await
        .expect("the failed call's max_tokens came back");
    let mut other = quota.burst_tokens;
    ok(out, 250, &mut other);

    let s = emu.stats();
    assert_eq!((s.ok, s.throttled, s.throttled_tokens), (5, 2, 2));
    assert_eq!(s.errors["ModelErrorException"], 1);
    assert_eq!((s.input_tokens, s.output_tokens), (ins, outs));
}

#[actix_web::test]
async fn quota_schedule_halves_then_restores_the_window() {
    let step = Duration::from_millis(400);
    let emu = start(EmulatorConfig::default());
    let c = client(&emu);
    let t0 = set_config_at(
        &emu,
        EmulatorConfig {
            window_quota: Some(WindowQuota {
                requests: 4,
                window: step,
                sliding: false,
            }),
            quota_schedule: vec![(step, 0.5), (step * 2, 1.0)],
            ..EmulatorConfig::default()
        },
    );
    for (at, factor, admitted) in [
        (Duration::ZERO, 1.0, 4),
        (step + MARGIN, 0.5, 2),
        (step * 2 + MARGIN, 1.0, 4),
    ] {
        sleep_until(t0 + at).await;
        assert_eq!(emu.quota_factor(), factor);
        for i in 0..admitted {
            invoke(&c, SONNET, &body("x"))
                .await
                .unwrap_or_else(|e| panic!("factor {factor}, call {i}: {e:?}"));
        }
        assert_eq!(
            throttle_message(invoke(&c, SONNET, &body("x")).await),
            TOO_MANY_REQUESTS,
            "factor {factor}"
        );
    }
}

#[actix_web::test]
async fn quota_schedule_halves_the_token_bucket_rate_and_clamps_its_level() {
    let quota = Quota {
        requests_per_second: 5.0,
        burst: 4.0,
    };
    let step = Duration::from_millis(300);
    let emu = start(EmulatorConfig::default());
    let c = client(&emu);
    let t0 = set_config_at(
        &emu,
        EmulatorConfig {
            quota: Some(quota),
            quota_schedule: vec![(step, 0.5)],
            ..EmulatorConfig::default()
        },
    );
    invoke(&c, SONNET, &body("x")).await.expect("3 left");
    // Halved: capacity 2 (the 3 left are clamped to 2), rate 2.5/s.
    sleep_until(t0 + step + MARGIN).await;
    invoke(&c, SONNET, &body("x")).await.expect("1 left");
    invoke(&c, SONNET, &body("x")).await.expect("0 left");
    throttle_message(invoke(&c, SONNET, &body("x")).await);
    let empty = Instant::now();
    // At the full rate one call would be back after 1/5 s; at half, only after 1/2.5 s.
    let full = Duration::from_secs_f64(1.0 / quota.requests_per_second);
    let halved = full * 2;
    sleep_until(empty + full + MARGIN).await;
    throttle_message(invoke(&c, SONNET, &body("x")).await);
    sleep_until(empty + halved + MARGIN).await;
    invoke(&c, SONNET, &body("x"))
        .await
        .expect("refilled at the halved rate");
}

#[actix_web::test]
async fn quota_modes_over_the_admin_api() {
    let emu = start(EmulatorConfig::default());
    let base = emu.endpoint();
    let http = awc::Client::default();
    let mut res = http
        .post(format!("{base}/_emulator/config"))
        .send_json(&json!({
            "window_quota": {"requests": 7, "window_secs": 30},
            "token_quota": {"tokens_per_minute": 600},
            "quota_schedule": [[30, 0.5], [60, 1.0]]
        }))
        .await
        .unwrap();
    assert_eq!(res.status(), 200);
    let cfg: Value = res.json().await.unwrap();
    assert_eq!(
        cfg["window_quota"],
        json!({"requests": 7, "window_secs": 30.0, "sliding": false})
    );
    assert_eq!(
        cfg["token_quota"],
        json!({"tokens_per_minute": 600.0, "burst_tokens": 100.0})
    );
    assert_eq!(cfg["quota_schedule"], json!([[30.0, 0.5], [60.0, 1.0]]));
    assert_eq!(cfg["quota_factor"], 1.0);
    let live = emu.config();
    assert_eq!(
        live.window_quota,
        Some(WindowQuota {
            requests: 7,
            window: Duration::from_secs(30),
            sliding: false,
        })
    );
    assert_eq!(live.token_quota, Some(TokenQuota::per_minute(600.0)));
    assert_eq!(live.quota_schedule[1], (Duration::from_secs(60), 1.0));

    // Over HTTP: the token throttle, and the token totals in the stats.
    let url = format!(
        "{base}/model/{}/invoke",
        percent_encoding::utf8_percent_encode(SONNET, percent_encoding::NON_ALPHANUMERIC)
    );
    let mut res = http
        .post(url.as_str())
        .send_body(serde_json::to_vec(&body_max("x", 500)).unwrap())
        .await
        .unwrap();
    assert_eq!(res.status(), 429);
    assert_eq!(
        res.headers().get("x-amzn-ErrorType").unwrap(),
        "ThrottlingException"
    );
    assert_eq!(
        res.json::<Value>().await.unwrap(),
        json!({ "message": TOO_MANY_TOKENS })
    );
    let mut res = http
        .post(url.as_str())
        .send_body(serde_json::to_vec(&body_max("x", 50)).unwrap())
        .await
        .unwrap();
    assert_eq!(res.status(), 200);
    let reply: Value = res.json().await.unwrap();
    let stats = get_json(&format!("{base}/_emulator/stats")).await;
    assert_eq!(stats["throttled"], 1);
    assert_eq!(stats["throttled_tokens"], 1);
    assert_eq!(stats["input_tokens"], reply["usage"]["input_tokens"]);
    assert_eq!(stats["output_tokens"], reply["usage"]["output_tokens"]);

    let res = http
        .post(format!("{base}/_emulator/config"))
        .send_json(&json!({"quota_schedule": [[-1, 0.5]]}))
        .await
        .unwrap();
    assert_eq!(res.status(), 400);
    let mut res = http
        .post(format!("{base}/_emulator/config"))
        .send_json(&json!({"window_quota": null, "token_quota": null, "quota_schedule": []}))
        .await
        .unwrap();
    let cfg: Value = res.json().await.unwrap();
    assert_eq!(cfg["window_quota"], Value::Null);
    assert_eq!(cfg["token_quota"], Value::Null);
    assert_eq!(cfg["quota_schedule"], json!([]));
    assert!(!emu.config().has_quota());
}

#[actix_web::test]
async fn binary_flags_set_the_quota_modes() {
    let mut cmd = emulator::binary();
    cmd.args([
        "--bind",
        "127.0.0.1:0",
        "--window-requests",
        "5",
        "--window-secs",
        "2.5",
        "--window-sliding",
        "--tpm",
        "6000",
        "--token-window",
        "9000",
        "--token-window-sliding",
        "--quota-schedule",
        "30=0.5,60=1",
    ])
    .env("BEDROCK_EMULATOR_TPM_BURST", "700")
    .env("BEDROCK_EMULATOR_TPM_BURST", "700");
    let cfg = emulator::binary_config(cmd).await;
    assert_eq!(
        cfg["window_quota"],
        json!({"requests": 5, "window_secs": 2.5, "sliding": true})
    );
    assert_eq!(
        cfg["token_window_quota"],
        json!({"tokens": 9000.0, "window_secs": 60.0, "sliding": true})
    );
    assert_eq!(
        cfg["token_quota"],
        json!({"tokens_per_minute": 6000.0, "burst_tokens": 700.0})
    );
    assert_eq!(cfg["quota_schedule"], json!([[30.0, 0.5], [60.0, 1.0]]));
    assert_eq!(cfg["quota"], Value::Null);

    // --window-secs needs --window-requests, --day-secs --tokens-per-day; a bad schedule
    // step or stray rate is refused.
    for args in [
        &["--window-secs", "5"][..],
        &["--quota-schedule", "30=-1"][..],
        &["--day-secs", "5"][..],
        &["--stray-throttle-rate", "2"][..],
    ] {
        let out = emulator::binary()
            .args(args)
            .args(["--bind", "127.0.0.1:0"])
            .output()
            .unwrap();
        assert!(!out.status.success(), "{args:?}");
    }
}

#[actix_web::test]
async fn three_throttle_messages_answered_at_once_and_counted_apart() {
    // Every throttle is answered at once, even with a latency.
    let latency = Duration::from_millis(800);
    let emu = start(EmulatorConfig {
        latency,
        stray_throttle_rate: 1.0,
        ..EmulatorConfig::default()
    });
    let c = client(&emu);
    let timed = |r: InvokeResult, at: Instant| {
        assert!(at.elapsed() < latency, "answered after {:?}", at.elapsed());
        throttle_message(r)
    };

    // A stray throttle, whatever the quota.
    let at = Instant::now();
    let r = invoke(&c, SONNET, &body_max("hi", 10)).await;
    assert_eq!(timed(r, at), TOO_MANY_REQUESTS);

    // The request window.
    emu.set_config(EmulatorConfig {
        latency,
        window_quota: Some(WindowQuota::per_minute(0)),
        ..EmulatorConfig::default()
    });
    let at = Instant::now();
    let r = invoke(&c, SONNET, &body_max("hi", 10)).await;
    assert_eq!(timed(r, at), TOO_MANY_REQUESTS);

    // The token bucket.
    emu.set_config(EmulatorConfig {
        latency,
        token_quota: Some(TokenQuota {
            tokens_per_minute: 0.0,
            burst_tokens: 100.0,
        }),
        ..EmulatorConfig::default()
    });
    let at = Instant::now();
    let r = invoke(&c, SONNET, &body_max("hi", 500)).await;
    assert_eq!(timed(r, at), TOO_MANY_TOKENS);

    // The day: 1 input + 40 max_tokens reserved, then charged 1 + output x 5.
    emu.set_config(EmulatorConfig {
        token_day_quota: Some(TokenDayQuota {
            tokens: 300.0,
            window: Duration::from_secs(3600),
        }),
        ..EmulatorConfig::default()
    });
    let out = invoke(&c, SONNET, &body_max("hi", 40)).await.expect("fits");
    let (i, o) = usage(&out);
    let charged = (i + 5 * o) as f64;
    assert_eq!(emu.stats().tokens_charged, charged);
    // What is left of the day is less than 1 + 299.
    let r = invoke(&c, SONNET, &body_max("hi", 299)).await;
    assert_eq!(throttle_message(r), TOO_MANY_TOKENS_PER_DAY);
    let left = 300.0 - charged - 1.0;
    invoke(&c, SONNET, &body_max("hi", left as u64))
        .await
        .expect("exactly what is left of the day fits");

    let s = emu.stats();
    assert_eq!(
        (
            s.throttled,
            s.throttled_stray,
            s.throttled_requests,
            s.throttled_tokens,
            s.throttled_daily
        ),
        (4, 1, 1, 1, 1)
    );
    assert_eq!(s.ok, 2);

    // The admin API shows and changes the new fields.
    let http = awc::Client::default();
    let url = format!("{}/_emulator/config", emu.endpoint());
    let mut res = http
        .post(&url)
        .send_json(
            &json!({"token_day_quota": {"tokens": 1000000}, "burndown": 2,
            "stray_throttle_rate": 0.03,
            "call_duration": {"median_secs": 5, "spread": 0.5, "tokens_per_sec": 50}}),
        )
        .await
        .unwrap();
    assert_eq!(res.status(), 200);
    let v: Value = res.json().await.unwrap();
    assert_eq!(
        v["token_day_quota"],
        json!({"tokens": 1000000.0, "window_secs": 86400.0})
    );
    assert_eq!(
        (v["burndown"].clone(), v["stray_throttle_rate"].clone()),
        (json!(2.0), json!(0.03))
    );
    assert_eq!(
        v["call_duration"],
        json!({"median_secs": 5.0, "spread": 0.5, "tokens_per_sec": 50.0})
    );
    let stats = get_json(&format!("{}/_emulator/stats", emu.endpoint())).await;
    assert_eq!(stats["throttled_daily"], 1);
    assert!(stats["tokens_charged"].as_f64().unwrap() > charged);
    emu.stop().await;
}

#[actix_web::test]
async fn call_duration_sets_the_output_tokens_and_the_time_of_invoke_model() {
    // Spread 0: every call takes the median, 0.6 s at 50 tokens/s = 30 tokens.
    let shape = CallDuration {
        median_secs: 0.6,
        spread: 0.0,
        tokens_per_sec: 50.0,
    };
    let latency = Duration::from_millis(100);
    let emu = start(EmulatorConfig {
        latency,
        call_duration: Some(shape),
        ..EmulatorConfig::default()
    });
    let c = client(&emu);
    let at = Instant::now();
    let out = invoke(&c, SONNET, &body_max("hi", 200)).await.unwrap();
    let took = at.elapsed();
    assert!(
        took >= latency + Duration::from_millis(600),
        "answered after {took:?}"
    );
    let v = reply_json(&out);
    let (i, o) = usage(&out);
    assert_eq!(o, 30);
    assert_eq!(v["stop_reason"], "end_turn");
    let text = v["content"][0]["text"].as_str().unwrap();
    assert_eq!(text.chars().count().div_ceil(4), 30, "{text}");
    assert!(text.starts_with("Emulated reply to 1 turn(s)"), "{text}");
    assert_eq!(v["usage"]["cache_creation_input_tokens"], 0);
    assert_eq!(v["usage"]["cache_read_input_tokens"], 0);

    // Capped at max_tokens, and the call is that much shorter.
    let at = Instant::now();
    let out = invoke(&c, SONNET, &body_max("hi", 10)).await.unwrap();
    assert!(at.elapsed() >= latency + Duration::from_millis(200));
    assert_eq!(usage(&out).1, 10);
    assert_eq!(reply_json(&out)["stop_reason"], "max_tokens");

    // Sonnet 4 output is charged 5 quota tokens each.
    assert_eq!(emu.stats().tokens_charged, (i + 5 * 30 + i + 5 * 10) as f64);
    emu.stop().await;
}

#[actix_web::test]
async fn binary_flags_set_the_claude_shape() {
    let mut cmd = emulator::binary();
    cmd.args([
        "--bind",
        "127.0.0.1:0",
        "--duration-median-secs",
        "5",
        "--tokens-per-day",
        "1000000",
        "--day-secs",
        "600",
        "--burndown",
        "5",
        "--stray-throttle-rate",
        "0.03",
    ]);
    let cfg = emulator::binary_config(cmd).await;
    assert_eq!(
        cfg["call_duration"],
        json!({"median_secs": 5.0, "spread": 0.5, "tokens_per_sec": 50.0})
    );
    assert_eq!(
        cfg["token_day_quota"],
        json!({"tokens": 1000000.0, "window_secs": 600.0})
    );
    assert_eq!(cfg["burndown"], json!(5.0));
    assert_eq!(cfg["stray_throttle_rate"], json!(0.03));
    let plain = emulator::binary_config({
        let mut cmd = emulator::binary();
        cmd.args(["--bind", "127.0.0.1:0"]);
        cmd
    })
    .await;
    assert_eq!(
        (
            plain["call_duration"].clone(),
            plain["token_day_quota"].clone()
        ),
        (Value::Null, Value::Null)
    );
}
