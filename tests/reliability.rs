//! Reliability over HTTP: bounded admission, callers that disconnect, every upstream fault the
//! emulator can inject, and hostile or slow clients. Each ends in a clear JSON answer within
//! the request's deadline, and nothing that should not reach Bedrock does.

mod common;

use std::time::{Duration, Instant};

use common::{eventually, request, start, MODEL};
use serde_json::json;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;

const WAIT: Duration = Duration::from_secs(10);

/// The raw bytes of a `POST /infer` for `body`.
fn raw_request(body: &str) -> String {
    format!(
        "POST /infer HTTP/1.1\r\nHost: test\r\nContent-Type: application/json\r\nContent-Length: {}\r\n\r\n{body}",
        body.len()
    )
}

#[actix_web::test]
async fn a_full_queue_answers_503_with_retry_after_at_once() {
    let server = start(&[
        "--queue-capacity",
        "2",
        "--worker-concurrency",
        "1",
        "--max-workers",
        "1",
        "--emulator-latency-ms",
        "400",
    ])
    .await;
    let body = request(MODEL, "fill the queue");
    // One running, two queued...
    let mut running = Vec::new();
    for _ in 0..3 {
        let (url, body) = (server.url.clone(), body.clone());
        running.push(actix_web::rt::spawn(async move {
            common::post_raw(
                &url,
                "/infer",
                Some("application/json"),
                body.to_string().into_bytes(),
            )
            .await
        }));
        let expected = running.len();
        assert!(
            eventually(WAIT, || async {
                let pool = &server.status().await["pools"][0];
                (pool["in_flight"].as_u64().unwrap() + pool["queue_depth"].as_u64().unwrap())
                    as usize
                    == expected
            })
            .await
        );
    }
    // ...so the fourth is refused at once.
    let started = Instant::now();
    let reply = server.infer(&body).await;
    assert!(started.elapsed() < Duration::from_millis(300));
    assert_eq!(reply.status, 503, "{:?}", reply.json);
    assert_eq!(reply.retry_after.as_deref(), Some("1"));
    assert!(reply.error().contains("queue is full"), "{}", reply.error());
    for task in running {
        assert_eq!(task.await.unwrap().status, 200);
    }
    assert_eq!(
        server.status().await["pools"][0]["counters"]["rejected_queue_full"],
        1
    );
}

#[actix_web::test]
async fn a_client_that_disconnects_while_queued_is_dropped_and_never_reaches_bedrock() {
    let server = start(&[
        "--worker-concurrency",
        "1",
        "--max-workers",
        "1",
        "--emulator-latency-ms",
        "500",
    ])
    .await;
    // A occupies the only call slot.
    let (url, body) = (server.url.clone(), request(MODEL, "first").to_string());
    let first = actix_web::rt::spawn(async move {
        common::post_raw(&url, "/infer", Some("application/json"), body.into_bytes()).await
    });
    assert!(eventually(WAIT, || async { server.stats().in_flight == 1 }).await);
    // B is sent on a raw socket that closes right after.
    let mut socket = TcpStream::connect(server.addr).await.unwrap();
    socket
        .write_all(raw_request(&request(MODEL, "gone").to_string()).as_bytes())
        .await
        .unwrap();
    assert!(
        eventually(WAIT, || async {
            server.status().await["pools"][0]["queue_depth"] == 1
        })
        .await
    );
    drop(socket);
    assert_eq!(first.await.unwrap().status, 200);
    assert!(
        eventually(WAIT, || async {
            server.status().await["pools"][0]["counters"]["abandoned_in_queue"] == 1
        })
        .await
    );
    assert_eq!(
        server.stats().calls,
        1,
        "the abandoned request reached Bedrock"
    );
}

#[actix_web::test]
async fn a_client_that_disconnects_during_the_call_cancels_it() {
    let server = start(&["--emulator-latency-ms", "3000"]).await;
    let mut socket = TcpStream::connect(server.addr).await.unwrap();
    socket
        .write_all(raw_request(&request(MODEL, "cancel me").to_string()).as_bytes())
        .await
        .unwrap();
    assert!(eventually(WAIT, || async { server.stats().in_flight == 1 }).await);
    drop(socket);
    // The attempt stops and its Bedrock call is cancelled, long before its 3 s latency.
    let started = Instant::now();
    assert!(eventually(WAIT, || async { server.stats().in_flight == 0 }).await);
    assert!(started.elapsed() < Duration::from_secs(2));
    assert!(
        eventually(WAIT, || async {
            server.status().await["pools"][0]["counters"]["abandoned_in_flight"] == 1
        })
        .await
    );
    assert_eq!(server.stats().calls, 1);
}

#[actix_web::test]
async fn every_retryable_upstream_fault_is_retried_to_success() {
    let server = start(&[]).await;
    for fault in [
        "InternalServerException",
        "ServiceUnavailableException",
        "ModelNotReadyException",
        "ModelTimeoutException",
        "ThrottlingException",
        "reset_mid_body",
        "truncated_body",
        "non_json_body",
        "non_json_error",
    ] {
        server.emulator.reset();
        server.script(MODEL, &[fault, "ok"]);
        let reply = server.infer(&request(MODEL, fault)).await;
        assert_eq!(reply.status, 200, "{fault}: {:?}", reply.json);
        assert_eq!(reply.json["attempts"], 2, "{fault}");
        assert_eq!(server.stats().calls, 2, "{fault}");
    }
}

#[actix_web::test]
async fn a_fault_that_persists_ends_in_a_clear_500_after_max_retries() {
    let server = start(&[]).await;
    for (fault, code) in [
        ("InternalServerException", "InternalServerException"),
        ("reset_mid_body", "InvalidResponse"),
        ("non_json_body", "InvalidResponse"),
        ("non_json_error", "HTTP 500"),
    ] {
        server.emulator.reset();
        server.script(MODEL, &[fault; 5]);
        let mut body = request(MODEL, fault);
        body["max_retries"] = json!(2);
        let reply = server.infer(&body).await;
        assert_eq!(reply.status, 500, "{fault}: {:?}", reply.json);
        assert!(
            reply.error().starts_with("Failed to get response: "),
            "{}",
            reply.error()
        );
        assert!(
            reply.error().contains("retries exhausted"),
            "{}",
            reply.error()
        );
        assert_eq!(reply.json["attempts"], 3, "{fault}");
        let reported = reply.json["code"].as_str().unwrap_or("");
        assert!(
            reported.starts_with(code) || reported == "ConnectionError",
            "{fault}: {reported}"
        );
        assert_eq!(server.stats().calls, 3, "{fault}");
    }
}

#[actix_web::test]
async fn headers_that_never_come_end_in_a_504_at_the_deadline() {
    let server = start(&[]).await;
    server.script(MODEL, &["hang"]);
    let mut body = request(MODEL, "hang");
    body["timeout"] = json!(1);
    let started = Instant::now();
    let reply = server.infer(&body).await;
    let took = started.elapsed();
    assert_eq!(reply.status, 504, "{:?}", reply.json);
    assert!(
        took >= Duration::from_secs(1) && took < Duration::from_millis(1_600),
        "{took:?}"
    );
    // The hung call is cancelled, not left behind.
    assert!(eventually(WAIT, || async { server.stats().in_flight == 0 }).await);
}

#[actix_web::test]
async fn connection_refused_is_retried_then_a_clear_500() {
    let mut server = start(&[]).await;
    // Stop the emulator: its port now refuses connections.
    let emulator = std::mem::replace(
        &mut server.emulator,
        model_server::emulator::Emulator::start_in_thread("127.0.0.1:0", Default::default(), 1)
            .unwrap(),
    );
    emulator.stop().await;
    let mut body = request(MODEL, "nobody home");
    body["max_retries"] = json!(2);
    let started = Instant::now();
    let reply = server.infer(&body).await;
    assert_eq!(reply.status, 500, "{:?}", reply.json);
    assert_eq!(reply.json["code"], "ConnectionError");
    assert_eq!(reply.json["attempts"], 3);
    assert!(
        reply.error().contains("retries exhausted"),
        "{}",
        reply.error()
    );
    assert!(started.elapsed() < Duration::from_secs(5));
}

#[actix_web::test]
async fn hostile_bodies_get_4xx_json_and_never_reach_bedrock() {
    let server = start(&["--max-body-bytes", "65536"]).await;
    let cases: Vec<(Vec<u8>, u16, &str)> = vec![
        // Duplicate keys, at the top and deep inside.
        (
            br#"{"type":"claude","type":"claude","model_name":"m","payload":{"messages":[{"role":"user","content":"x"}]}}"#.to_vec(),
            400,
            "type",
        ),
        (
            br#"{"type":"claude","model_name":"m","payload":{"messages":[{"role":"user","role":"assistant","content":"x"}]}}"#.to_vec(),
            400,
            "payload.messages[0].role",
        ),
        // Invalid UTF-8 inside a string.
        (
            b"{\"type\":\"claude\",\"model_name\":\"m\xff\",\"payload\":{}}".to_vec(),
            400,
            "body",
        ),
        // Numbers out of range.
        (
            br#"{"type":"claude","model_name":"m","payload":{"messages":[{"role":"user","content":"x"}],"max_tokens":1e999}}"#.to_vec(),
            400,
            "body",
        ),
        (
            br#"{"type":"claude","model_name":"m","timeout":1e300,"payload":{"messages":[{"role":"user","content":"x"}]}}"#.to_vec(),
            400,
            "timeout",
        ),
        (
            br#"{"type":"claude","model_name":"m","max_retries":18446744073709551616,"payload":{"messages":[{"role":"user","content":"x"}]}}"#.to_vec(),
            400,
            "max_retries",
        ),
        // Deep nesting.
        (
            format!("{{\"type\":{}1{}}}", "[".repeat(5_000), "]".repeat(5_000)).into_bytes(),
            400,
            "body",
        ),
        // A huge string.
        (
            format!(
                "{{\"type\":\"claude\",\"model_name\":\"{}\",\"payload\":{{}}}}",
                "m".repeat(100_000)
            )
            .into_bytes(),
            413,
            "",
        ),
    ];
    for (body, status, field) in cases {
        let reply = server.infer_raw(body.clone()).await;
        assert_eq!(reply.status, status, "{:?}", reply.json);
        assert_eq!(reply.content_type.as_deref(), Some("application/json"));
        if !field.is_empty() {
            assert_eq!(reply.json["field"], field, "{:?}", reply.json);
        }
    }
    assert_eq!(server.stats().calls, 0, "hostile input reached Bedrock");
}

#[actix_web::test]
async fn slow_clients_are_timed_out_with_408() {
    let server = start(&["--client-timeout-ms", "300"]).await;
    // Headers that never finish: actix answers 408 and closes.
    let mut slow_headers = TcpStream::connect(server.addr).await.unwrap();
    slow_headers
        .write_all(b"POST /infer HTTP/1.1\r\nHost: x\r\n")
        .await
        .unwrap();
    let mut answer = Vec::new();
    let started = Instant::now();
    tokio::time::timeout(WAIT, slow_headers.read_to_end(&mut answer))
        .await
        .expect("the server closes a stalled connection")
        .unwrap();
    assert!(
        String::from_utf8_lossy(&answer).starts_with("HTTP/1.1 408"),
        "{answer:?}"
    );
    assert!(started.elapsed() < Duration::from_secs(3));
    // A body that stops halfway: cut off the same way.
    let mut slow_body = TcpStream::connect(server.addr).await.unwrap();
    slow_body
        .write_all(b"POST /infer HTTP/1.1\r\nHost: x\r\nContent-Type: application/json\r\nContent-Length: 100\r\n\r\n{\"type\":")
        .await
        .unwrap();
    let mut buf = vec![0; 4096];
    let n = tokio::time::timeout(WAIT, slow_body.read(&mut buf))
        .await
        .expect("the server answers a stalled body")
        .unwrap();
    let text = String::from_utf8_lossy(&buf[..n]);
    assert!(text.starts_with("HTTP/1.1 408"), "{text}");
    assert_eq!(server.stats().calls, 0);
}

#[actix_web::test]
async fn api_keys_guard_infer_and_status_but_not_health() {
    let server = start(&["--api-key", "key-one", "--api-key", "key-two"]).await;
    let body = request(MODEL, "hi").to_string().into_bytes();
    let post = |headers: Vec<(&'static str, &'static str)>| {
        let (url, body) = (server.url.clone(), body.clone());
        async move {
            let mut req = common::client()
                .post(format!("{url}/infer"))
                .insert_header(("content-type", "application/json"));
            for header in headers {
                req = req.insert_header(header);
            }
            let mut response = req.send_body(body).await.unwrap();
            let json: serde_json::Value = response.json().await.unwrap_or_default();
            (
                response.status().as_u16(),
                json,
                response.headers().get("www-authenticate").is_some(),
            )
        }
    };
    for headers in [
        vec![],
        vec![("authorization", "Bearer wrong")],
        vec![("x-api-key", "key-one ")],
    ] {
        let (status, json, challenge) = post(headers.clone()).await;
        if headers.first().is_some_and(|h| h.1 == "key-one ") {
            assert_eq!(status, 200, "{headers:?}");
            continue;
        }
        assert_eq!(status, 401, "{headers:?}");
        assert!(challenge);
        assert!(json["error"].as_str().unwrap().contains("API key"));
    }
    assert_eq!(post(vec![("authorization", "Bearer key-two")]).await.0, 200);
    assert_eq!(
        server.stats().calls,
        2,
        "unauthorized requests reached Bedrock"
    );
    assert_eq!(server.get("/health").await.status, 200);
    assert_eq!(server.get("/status").await.status, 401);
    let mut response = common::client()
        .get(format!("{}/status", server.url))
        .insert_header(("x-api-key", "key-one"))
        .send()
        .await
        .unwrap();
    assert_eq!(response.status(), 200);
    let _ = response.body().await;
}
