//! What an operator reads: `GET /metrics` (checked by Prometheus's own `promtool` and the
//! Prometheus project's Python parsers, counters against what the test sent), its key, its
//! bounded cardinality under junk model names and paths, and the `x-request-id` every
//! response and error body carries. (The status page is `tests/status_page.rs`; the log
//! lines are in `tests/binary.rs`.)

mod common;

use std::collections::HashMap;
use std::io::Write;
use std::process::{Command, Stdio};

use common::external::{promtool, python_script, run_python, ScratchDir};
use common::{client, request, start, TestServer, MODEL};
use serde_json::{json, Value};

/// A scrape as the Python parser read it.
struct Scrape {
    /// Family name -> type.
    families: HashMap<String, String>,
    /// (sample name, labels, value).
    samples: Vec<(String, HashMap<String, String>, f64)>,
}

impl Scrape {
    /// The sum of the samples named `name` whose labels include `labels`.
    fn sum(&self, name: &str, labels: &[(&str, &str)]) -> f64 {
        self.samples
            .iter()
            .filter(|(n, l, _)| {
                n == name
                    && labels
                        .iter()
                        .all(|(k, v)| l.get(*k).map(String::as_str) == Some(*v))
            })
            .map(|(_, _, v)| v)
            .sum()
    }

    /// The distinct values label `label` takes on samples named `name`.
    fn values_of(&self, name: &str, label: &str) -> Vec<String> {
        let mut values: Vec<String> = self
            .samples
            .iter()
            .filter(|(n, _, _)| n == name)
            .filter_map(|(_, l, _)| l.get(label).cloned())
            .collect();
        values.sort();
        values.dedup();
        values
    }
}

/// `GET /metrics` with optional headers: (status, content type, body).
async fn get_metrics(url: &str, headers: &[(&str, &str)]) -> (u16, String, String) {
    let mut request = client().get(format!("{url}/metrics"));
    for (name, value) in headers {
        request = request.insert_header((*name, *value));
    }
    let mut response = request.send().await.expect("GET /metrics is answered");
    let content_type = response
        .headers()
        .get("content-type")
        .and_then(|v| v.to_str().ok())
        .unwrap_or("")
        .to_string();
    let body = response.body().limit(64 << 20).await.expect("body");
    (
        response.status().as_u16(),
        content_type,
        String::from_utf8(body.to_vec()).expect("metrics are UTF-8"),
    )
}

/// Parses `text` with the Python parser of `kind` (`prometheus` or `openmetrics`).
async fn parse(text: String, kind: &'static str) -> Scrape {
    let out = tokio::task::spawn_blocking(move || {
        let scratch = ScratchDir::new("metrics");
        let file = scratch.path.join("metrics.txt");
        std::fs::write(&file, text).expect("write the scrape");
        run_python(
            &python_script("parse_metrics.py"),
            &[file.to_str().unwrap(), kind],
            &[],
        )
    })
    .await
    .expect("the parser ran");
    let parsed: Value = serde_json::from_slice(&out.stdout).expect("the parser prints JSON");
    let families = parsed["families"]
        .as_object()
        .unwrap()
        .iter()
        .map(|(k, v)| (k.clone(), v.as_str().unwrap().to_string()))
        .collect();
    let samples = parsed["samples"]
        .as_array()
        .unwrap()
        .iter()
        .map(|s| {
            let labels = s[1]
                .as_object()
                .unwrap()
                .iter()
                .map(|(k, v)| (k.clone(), v.as_str().unwrap().to_string()))
                .collect();
            (
                s[0].as_str().unwrap().to_string(),
                labels,
                s[2].as_f64().unwrap(),
            )
        })
        .collect();
    Scrape { families, samples }
}

/// Runs `promtool check metrics` on `text`; returns its exit code and output.
async fn promtool_check(text: String) -> (i32, String) {
    tokio::task::spawn_blocking(move || {
        let mut child = Command::new(promtool())
            .args(["check", "metrics"])
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .expect("promtool starts");
        child
            .stdin
            .take()
            .unwrap()
            .write_all(text.as_bytes())
            .expect("write to promtool");
        let out = child.wait_with_output().expect("promtool ends");
        (
            out.status.code().unwrap_or(-1),
            format!(
                "{}{}",
                String::from_utf8_lossy(&out.stdout),
                String::from_utf8_lossy(&out.stderr)
            ),
        )
    })
    .await
    .expect("promtool ran")
}

/// Sample lines (not comments) of a text scrape.
fn series(text: &str) -> usize {
    text.lines()
        .filter(|l| !l.is_empty() && !l.starts_with('#'))
        .count()
}

/// A Bedrock-shaped request for `model`.
fn for_model(model: &str) -> Value {
    request(model, "hello")
}

#[actix_web::test]
async fn metrics_pass_promtool_parse_and_count_exactly_what_was_sent() {
    let server = start(&[]).await;
    // 1. Before: a scrape to compare with.
    let (status, content_type, before) = get_metrics(&server.url, &[]).await;
    assert_eq!(status, 200);
    assert_eq!(content_type, "text/plain; version=0.0.4; charset=utf-8");
    let before = parse(before, "prometheus").await;

    // 2. What the test sends: 5 plain successes; one success after two throttles; one
    // Bedrock ValidationException; one invalid request; one unknown path.
    let mut input_tokens = 0.0;
    let mut output_tokens = 0.0;
    for i in 0..5 {
        let reply = server.infer(&request(MODEL, &format!("hello {i}"))).await;
        assert_eq!(reply.status, 200, "{:?}", reply.json);
        input_tokens += reply.json["usage"]["input_tokens"].as_f64().unwrap();
        output_tokens += reply.json["usage"]["output_tokens"].as_f64().unwrap();
    }
    server.script(MODEL, &["ThrottlingException", "ThrottlingException"]);
    let reply = server.infer(&request(MODEL, "after two throttles")).await;
    assert_eq!(reply.status, 200, "{:?}", reply.json);
    assert_eq!(reply.json["attempts"], 3);
    input_tokens += reply.json["usage"]["input_tokens"].as_f64().unwrap();
    output_tokens += reply.json["usage"]["output_tokens"].as_f64().unwrap();
    server.script(MODEL, &["ValidationException"]);
    assert_eq!(server.infer(&request(MODEL, "refused")).await.status, 400);
    let invalid = json!({"type": "claude", "model_name": MODEL});
    assert_eq!(server.infer(&invalid).await.status, 400);
    assert_eq!(server.get("/no/such/path").await.status, 404);

    // 3. The scrape passes promtool and both parsers.
    let (_, _, text) = get_metrics(&server.url, &[]).await;
    let (code, lint) = promtool_check(text.clone()).await;
    assert_eq!(
        code, 0,
        "promtool check metrics failed:\n{lint}\n--- scrape ---\n{text}"
    );
    assert!(lint.trim().is_empty(), "promtool complained:\n{lint}");
    let after = parse(text, "prometheus").await;
    let (status, content_type, open) = get_metrics(
        &server.url,
        &[(
            "accept",
            "application/openmetrics-text;version=1.0.0,text/plain;version=0.0.4;q=0.5",
        )],
    )
    .await;
    assert_eq!(status, 200);
    assert!(content_type.starts_with("application/openmetrics-text; version=1.0.0"));
    assert!(open.ends_with("# EOF\n"));
    let open = parse(open, "openmetrics").await;

    // 4. Types: histograms are histograms, counters counters (both parsers).
    for scrape in [&after, &open] {
        for family in [
            "gen_ai_server_request_duration_seconds",
            "gen_ai_client_operation_duration_seconds",
            "gen_ai_client_token_usage",
        ] {
            assert_eq!(
                scrape.families.get(family).map(String::as_str),
                Some("histogram"),
                "{family}: {:?}",
                scrape.families
            );
        }
        for family in [
            "modelserver_http_requests",
            "modelserver_retries",
            "modelserver_tokens",
        ] {
            assert_eq!(
                scrape.families.get(family).map(String::as_str),
                Some("counter"),
                "{family}: {:?}",
                scrape.families
            );
        }
    }

    // 5. Counters moved by exactly what was sent.
    let delta =
        |name: &str, labels: &[(&str, &str)]| after.sum(name, labels) - before.sum(name, labels);
    let infer = ("http_route", "/infer");
    assert_eq!(
        delta(
            "modelserver_http_requests_total",
            &[infer, ("http_response_status_code", "200")]
        ),
        6.0
    );
    assert_eq!(
        delta(
            "modelserver_http_requests_total",
            &[infer, ("http_response_status_code", "400")]
        ),
        2.0
    );
    assert_eq!(
        delta(
            "modelserver_http_requests_total",
            &[
                ("http_route", "other"),
                ("http_response_status_code", "404")
            ]
        ),
        1.0
    );
    let model = ("gen_ai_request_model", MODEL);
    let ok = ("error_type", "");
    assert_eq!(
        delta(
            "gen_ai_client_operation_duration_seconds_count",
            &[model, ok]
        ),
        6.0
    );
    assert_eq!(
        delta(
            "gen_ai_client_operation_duration_seconds_count",
            &[model, ("error_type", "ThrottlingException")]
        ),
        2.0
    );
    assert_eq!(
        delta(
            "gen_ai_client_operation_duration_seconds_count",
            &[model, ("error_type", "ValidationException")]
        ),
        1.0
    );
    assert_eq!(
        delta("gen_ai_server_request_duration_seconds_count", &[model, ok]),
        6.0
    );
    assert_eq!(
        delta(
            "gen_ai_server_request_duration_seconds_count",
            &[model, ("error_type", "ValidationException")]
        ),
        1.0
    );
    assert_eq!(
        delta(
            "modelserver_throttles_total",
            &[model, ("cause", "before_stream")]
        ),
        2.0
    );
    assert_eq!(
        delta(
            "modelserver_retries_total",
            &[model, ("cause", "ThrottlingException")]
        ),
        2.0
    );
    assert_eq!(
        delta(
            "modelserver_tokens_total",
            &[model, ("gen_ai_token_type", "input")]
        ),
        input_tokens
    );
    assert_eq!(
        delta(
            "modelserver_tokens_total",
            &[model, ("gen_ai_token_type", "output")]
        ),
        output_tokens
    );
    assert_eq!(
        delta(
            "gen_ai_client_token_usage_sum",
            &[model, ("gen_ai_token_type", "output")]
        ),
        output_tokens
    );
    assert_eq!(
        delta(
            "gen_ai_client_token_usage_count",
            &[model, ("gen_ai_token_type", "input")]
        ),
        6.0
    );
    assert_eq!(
        delta("modelserver_jobs_admitted_total", &[("pool", "claude")]),
        7.0
    );
    assert_eq!(
        delta("modelserver_jobs_completed_total", &[("pool", "claude")]),
        7.0
    );
    // Every GenAI sample carries the conventions' constant labels and the region.
    for (name, labels, _) in &after.samples {
        if name.starts_with("gen_ai_") {
            assert_eq!(
                labels.get("gen_ai_provider_name").map(String::as_str),
                Some("aws.bedrock"),
                "{name}"
            );
            assert_eq!(
                labels.get("gen_ai_operation_name").map(String::as_str),
                Some("chat"),
                "{name}"
            );
            assert_eq!(
                labels.get("aws_region").map(String::as_str),
                Some("us-east-1"),
                "{name}"
            );
        }
    }
    // State read from the /status snapshot agrees with /status.
    let status = server.status().await;
    assert_eq!(
        after.sum("modelserver_queue_capacity", &[("pool", "claude")]),
        status["pools"][0]["queue_capacity"].as_f64().unwrap()
    );
    assert_eq!(
        after.sum("modelserver_workers", &[("pool", "claude")]),
        status["pools"][0]["workers"].as_f64().unwrap()
    );
    let state = status["models"][0]["state"].as_str().unwrap();
    assert_eq!(after.sum("modelserver_throttle_state", &[model]), 1.0);
    assert_eq!(
        after.sum("modelserver_throttle_state", &[model, ("state", state)]),
        1.0
    );
}

#[actix_web::test]
async fn metrics_need_the_key_unless_they_are_public() {
    // 1. With keys: /metrics and /status want one; the page itself is open.
    let server = start(&["--api-key", "metrics-test-key"]).await;
    let (status, _, body) = get_metrics(&server.url, &[]).await;
    assert_eq!(status, 401, "{body}");
    let error: Value = serde_json::from_str(&body).unwrap();
    assert!(
        error["request_id"]
            .as_str()
            .is_some_and(|id| !id.is_empty()),
        "{body}"
    );
    let (status, _, _) = get_metrics(&server.url, &[("x-api-key", "wrong")]).await;
    assert_eq!(status, 401);
    let (status, _, body) =
        get_metrics(&server.url, &[("authorization", "Bearer metrics-test-key")]).await;
    assert_eq!(status, 200);
    assert!(body.contains("modelserver_http_requests_total"));
    assert_eq!(server.get("/status").await.status, 401);
    let page = server.get("/").await;
    assert_eq!(page.status, 200);
    assert_eq!(
        page.content_type.as_deref(),
        Some("text/html; charset=utf-8")
    );

    // 2. --public-metrics opens /metrics only.
    let public = start(&["--api-key", "metrics-test-key", "--public-metrics"]).await;
    let (status, _, _) = get_metrics(&public.url, &[]).await;
    assert_eq!(status, 200);
    assert_eq!(public.get("/status").await.status, 401);
    assert_eq!(public.infer(&request(MODEL, "hi")).await.status, 401);

    // 3. --disable-metrics: no /metrics at all.
    let off = start(&["--disable-metrics"]).await;
    let (status, _, _) = get_metrics(&off.url, &[]).await;
    assert_eq!(status, 404);
    assert_eq!(off.infer(&request(MODEL, "hi")).await.status, 200);
}

/// Sends `bodies` to `/infer`, 32 at a time; answers the statuses.
async fn send_all(server: &TestServer, bodies: Vec<Value>) -> Vec<u16> {
    let mut statuses = Vec::with_capacity(bodies.len());
    for chunk in bodies.chunks(32) {
        let replies = futures_util::future::join_all(chunk.iter().map(|b| server.infer(b))).await;
        statuses.extend(replies.iter().map(|r| r.status));
    }
    statuses
}

#[actix_web::test]
async fn thousands_of_junk_model_names_and_paths_do_not_grow_the_metrics() {
    let server = start(&["--metrics-max-models", "3"]).await;
    // 1. Four models, one after the other (the first three earn a label, the fourth is
    // `other`), one unknown path, and one scrape (so /metrics has its own series).
    for i in 0..4 {
        let reply = server.infer(&for_model(&format!("junk-model-{i}"))).await;
        assert_eq!(reply.status, 200, "{:?}", reply.json);
    }
    assert_eq!(server.get("/junk/path/0").await.status, 404);
    get_metrics(&server.url, &[]).await;
    let (_, _, baseline) = get_metrics(&server.url, &[]).await;
    let baseline_series = series(&baseline);

    // 2. Two thousand more model names and two hundred more paths.
    let junk: Vec<Value> = (4..2004)
        .map(|i| for_model(&format!("junk-model-{i}")))
        .collect();
    assert!(send_all(&server, junk).await.iter().all(|s| *s == 200));
    for i in 1..=200 {
        assert_eq!(server.get(&format!("/junk/path/{i}")).await.status, 404);
    }

    // 3. Not one series more: every new name went to `other`.
    let (_, _, text) = get_metrics(&server.url, &[]).await;
    assert_eq!(series(&text), baseline_series, "the series count grew");
    let scrape = parse(text, "prometheus").await;
    let models = scrape.values_of(
        "gen_ai_server_request_duration_seconds_count",
        "gen_ai_request_model",
    );
    assert_eq!(
        models,
        ["junk-model-0", "junk-model-1", "junk-model-2", "other"]
    );
    assert_eq!(
        scrape.sum(
            "gen_ai_server_request_duration_seconds_count",
            &[("gen_ai_request_model", "other")]
        ),
        2001.0
    );
    assert_eq!(
        scrape.values_of("modelserver_http_requests_total", "http_route"),
        ["/infer", "/metrics", "other"]
    );
    assert_eq!(scrape.sum("modelserver_model_labels", &[]), 3.0);
    // /status's per-model rows are bounded the same way.
    let status = server.status().await;
    let rows: Vec<&str> = status["models"]
        .as_array()
        .unwrap()
        .iter()
        .map(|m| m["model"].as_str().unwrap())
        .collect();
    assert_eq!(
        rows,
        ["junk-model-0", "junk-model-1", "junk-model-2", "other"]
    );
    assert_eq!(
        status["models"][3]["recent"]["history"]["ok"]
            .as_array()
            .unwrap()
            .iter()
            .map(|v| v.as_u64().unwrap())
            .sum::<u64>(),
        2001
    );
}

#[actix_web::test]
async fn every_response_carries_a_request_id_and_error_bodies_carry_both_ids() {
    let server = start(&[]).await;
    // 1. The client's id comes back; without one (or an unusable one) a new one is made.
    let mut response = client()
        .post(format!("{}/infer", server.url))
        .insert_header(("x-request-id", "client-chosen-id-42"))
        .send_json(&request(MODEL, "hello"))
        .await
        .unwrap();
    assert_eq!(response.status(), 200);
    assert_eq!(
        response.headers().get("x-request-id").unwrap(),
        "client-chosen-id-42"
    );
    let _ = response.body().await;
    let made = server.infer(&request(MODEL, "hello")).await;
    let id = made.request_id.clone().expect("a new id");
    assert!(id.starts_with("req_") && id.len() == 28, "{id}");
    let mut response = client()
        .get(format!("{}/health", server.url))
        .insert_header(("x-request-id", "has a space"))
        .send()
        .await
        .unwrap();
    let replaced = response
        .headers()
        .get("x-request-id")
        .unwrap()
        .to_str()
        .unwrap()
        .to_string();
    assert_ne!(replaced, "has a space");
    let _ = response.body().await;

    // 2. Errors: the body names the same id; a Bedrock error also Bedrock's own.
    for reply in [
        server.get("/nowhere").await,
        server.infer(&json!({"type": "claude"})).await,
    ] {
        assert!(reply.status >= 400);
        assert_eq!(
            reply.json["request_id"].as_str(),
            reply.request_id.as_deref(),
            "{:?}",
            reply.json
        );
        assert!(reply.json.get("bedrock_request_id").is_none());
    }
    server.script(MODEL, &["AccessDeniedException"]);
    let denied = server.infer(&request(MODEL, "hello")).await;
    assert_eq!(denied.status, 500, "{:?}", denied.json);
    assert_eq!(
        denied.json["request_id"].as_str(),
        denied.request_id.as_deref()
    );
    let bedrock = denied.json["bedrock_request_id"]
        .as_str()
        .expect("Bedrock's id");
    assert!(!bedrock.is_empty() && Some(bedrock) != denied.request_id.as_deref());
}

#[actix_web::test]
async fn streams_record_time_to_first_token_stream_errors_and_mid_stream_throttles() {
    let server = start(&[]).await;
    let body = json!({"model": MODEL, "max_tokens": 100, "stream": true,
                      "messages": [{"role": "user", "content": "hello"}]});
    let stream = |id: &'static str| {
        let (url, body) = (server.url.clone(), body.clone());
        async move {
            let mut response =
                common::sse::post(&url, "/v1/messages", &[("x-request-id", id)], &body).await;
            assert_eq!(response.status, 200);
            assert_eq!(response.header("x-request-id"), Some(id));
            assert_eq!(response.header("request-id"), Some(id));
            response.events().await
        }
    };
    // 1. A clean stream; one throttled before its content (retried invisibly); one throttled
    // after its content went out (it ends with an error event).
    let clean = stream("stream-clean").await;
    server.script(MODEL, &["throttlingException@2"]);
    let retried = stream("stream-retried").await;
    server.script(MODEL, &["throttlingException@3"]);
    let broken = stream("stream-broken").await;
    for events in [&clean, &retried] {
        assert_eq!(events.last().map(|e| e.name.as_str()), Some("message_stop"));
    }
    assert_eq!(broken.last().map(|e| e.name.as_str()), Some("error"));

    // 2. What the metrics say, once the last stream's body has ended (a client stops reading
    // at the terminal event; the server records the request when its body ends, just after).
    let recorded = r#"modelserver_http_requests_total{http_route="/v1/messages",http_response_status_code="200"} 3"#;
    assert!(
        common::eventually(std::time::Duration::from_secs(10), || async {
            get_metrics(&server.url, &[]).await.2.contains(recorded)
        })
        .await,
        "the three streams were not all recorded"
    );
    let (_, _, text) = get_metrics(&server.url, &[]).await;
    let (code, lint) = promtool_check(text.clone()).await;
    assert_eq!(code, 0, "{lint}");
    let scrape = parse(text, "prometheus").await;
    let model = ("gen_ai_request_model", MODEL);
    let sum = |name: &str, labels: &[(&str, &str)]| scrape.sum(name, labels);
    assert_eq!(
        sum(
            "modelserver_http_requests_total",
            &[
                ("http_route", "/v1/messages"),
                ("http_response_status_code", "200")
            ]
        ),
        3.0
    );
    // Every stream sent content: three first tokens.
    assert_eq!(
        sum("gen_ai_server_time_to_first_token_seconds_count", &[model]),
        3.0
    );
    // Four calls: two completed, two broken by a throttle inside their stream.
    assert_eq!(
        sum(
            "gen_ai_client_operation_duration_seconds_count",
            &[model, ("error_type", "")]
        ),
        2.0
    );
    assert_eq!(
        sum(
            "gen_ai_client_operation_duration_seconds_count",
            &[model, ("error_type", "ThrottlingException")]
        ),
        2.0
    );
    assert_eq!(
        sum(
            "modelserver_stream_errors_total",
            &[model, ("cause", "ThrottlingException")]
        ),
        2.0
    );
    assert_eq!(
        sum(
            "modelserver_throttles_total",
            &[model, ("cause", "mid_stream")]
        ),
        2.0
    );
    assert_eq!(
        sum(
            "modelserver_throttles_total",
            &[model, ("cause", "before_stream")]
        ),
        0.0
    );
    assert_eq!(
        sum(
            "modelserver_retries_total",
            &[model, ("cause", "ThrottlingException")]
        ),
        1.0
    );
    // The requests: two whole successes, one that failed in the middle.
    assert_eq!(
        sum(
            "gen_ai_server_request_duration_seconds_count",
            &[model, ("error_type", "")]
        ),
        2.0
    );
    assert_eq!(
        sum(
            "gen_ai_server_request_duration_seconds_count",
            &[model, ("error_type", "ThrottlingException")]
        ),
        1.0
    );
    assert!(
        sum(
            "modelserver_tokens_total",
            &[model, ("gen_ai_token_type", "output")]
        ) > 0.0
    );
    assert_eq!(sum("modelserver_bedrock_calls_in_flight", &[model]), 0.0);
}
