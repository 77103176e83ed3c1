//! The adaptive throttle end to end, with the default settings: the real server, the real
//! AWS SDK and the emulator's token-bucket quota, under an open-loop load above the quota.

mod common;

use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use common::{request, start, MODEL};
use serde_json::json;

/// One answered request: seconds after the start it was sent, status, seconds to the answer,
/// attempts, Retry-After.
type Outcome = (f64, u16, f64, u64, Option<String>);

#[actix_web::test]
async fn the_pacer_keeps_calls_under_the_emulator_quota_with_default_settings() {
    // Default throttle settings (the common test server shortens them; restore them), an
    // emulator quota of 10 calls/s (burst 10) and 50 ms calls.
    let server = start(&[
        "--backoff-base-ms",
        "1000",
        "--backoff-cap-ms",
        "32000",
        "--retry-pause-ms",
        "200",
        "--retry-pause-cap-ms",
        "5000",
        "--emulator-latency-ms",
        "50",
        "--emulator-quota-rps",
        "10",
    ])
    .await;
    let client = awc::Client::builder()
        .connector(awc::Connector::new().limit(0))
        .timeout(Duration::from_secs(30))
        .finish();
    let mut body = request(MODEL, "pace me");
    body["timeout"] = json!(4);
    let body = body.to_string();
    let url = format!("{}/infer", server.url);
    let outcomes: Arc<Mutex<Vec<Outcome>>> = Arc::default();

    // Open loop: 30 requests/s (3x the quota) for 6 s.
    let started = Instant::now();
    let mut sent = Vec::new();
    let mut learned = None;
    for i in 0..180u32 {
        let due = started + Duration::from_millis(u64::from(i) * 1000 / 30);
        actix_web::rt::time::sleep_until(due.into()).await;
        if learned.is_none() && started.elapsed() >= Duration::from_secs(2) {
            learned = Some(server.stats());
        }
        let (client, body, url, outcomes) =
            (client.clone(), body.clone(), url.clone(), outcomes.clone());
        sent.push(actix_web::rt::spawn(async move {
            let sent_at = Instant::now();
            let mut response = client
                .post(url)
                .insert_header(("content-type", "application/json"))
                .send_body(body)
                .await
                .expect("every request is answered");
            let json: serde_json::Value = response.json().await.unwrap_or_default();
            let retry_after = response
                .headers()
                .get("retry-after")
                .map(|v| v.to_str().unwrap().to_string());
            outcomes.lock().unwrap().push((
                sent_at.duration_since(started).as_secs_f64(),
                response.status().as_u16(),
                sent_at.elapsed().as_secs_f64(),
                json["attempts"].as_u64().unwrap_or(0),
                retry_after,
            ));
        }));
    }
    let end = server.stats();
    let learned = learned.unwrap();
    for task in sent {
        task.await.unwrap();
    }

    // After the first two seconds the pace holds the calls at the quota, with few throttles.
    let calls = (end.calls - learned.calls) as f64;
    let throttled = (end.throttled - learned.throttled) as f64;
    let seconds = 4.0;
    assert!(calls / seconds <= 10.0 * 1.2, "{} calls/s", calls / seconds);
    assert!(
        throttled <= 0.1 * calls,
        "{throttled} of {calls} calls throttled"
    );
    assert!(end.ok as f64 >= 10.0 * 5.0, "{} successes in 6 s", end.ok);

    // Every request was answered within its deadline: a success, or a refusal with
    // Retry-After. Admission estimates each request's turn from the pace, with headroom, and
    // refuses at once what cannot start in time. A request admitted before the first throttle
    // taught the pacer the quota, or on an estimate the pacer's next cut made wrong, may find
    // later that its call cannot finish in time: it is refused then (503, as soon as that is
    // known; or 500 with its last throttle when it has no time left to retry it), or runs out
    // of time at Bedrock (504): a few at most.
    let outcomes = outcomes.lock().unwrap();
    assert_eq!(outcomes.len(), 180);
    for (sent, status, took, attempts, retry_after) in outcomes.iter() {
        assert!(
            *took < 4.5,
            "answered after {took} s, past the 4 s deadline"
        );
        match status {
            200 => assert!(*attempts >= 1 && *attempts <= 4),
            503 => assert!(retry_after.is_some()),
            500 | 504 => {}
            other => panic!("unexpected status {other} for a request sent at {sent:.1} s"),
        }
    }
    let late = outcomes
        .iter()
        .filter(|o| o.1 == 500 || o.1 == 504 || (o.1 == 503 && o.2 >= 1.0))
        .count();
    assert!(
        late <= 9,
        "{late} of 180 requests ran out of time after admission"
    );
    let refused_at_once = outcomes.iter().filter(|o| o.1 == 503 && o.2 < 1.0).count();
    assert!(
        refused_at_once > 0,
        "3x the quota for 6 s with a 4 s timeout must refuse some on arrival"
    );
}
