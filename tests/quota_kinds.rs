//! Which of Bedrock's quotas refused a call, end to end: the real server, the real AWS SDK and
//! the emulator's daily token quota ("Too many tokens per day"). A spent daily quota is not
//! paced: the model's requests are refused at once with 429 until a probe succeeds, without a
//! call to Bedrock, and `/status` and `/metrics` say so.

mod common;

use std::time::Duration;

use common::{request, start, MODEL};
use model_server::emulator::{EmulatorConfig, TokenDayQuota};
use serde_json::json;

#[actix_web::test]
async fn a_spent_daily_quota_is_refused_at_once_and_shown() {
    let server = start(&[]).await;
    // A day of 2,000 quota tokens: each call reserves its input + 100 and is charged input
    // + output x 5 (Sonnet 4's burndown), so a handful of calls spend it.
    server.emulator.set_config(EmulatorConfig {
        token_day_quota: Some(TokenDayQuota {
            tokens: 2_000.0,
            window: Duration::from_secs(3600),
        }),
        ..EmulatorConfig::default()
    });
    let mut body = request(MODEL, "spend the day");
    body["payload"]["max_tokens"] = json!(100);
    let mut refused = None;
    for _ in 0..40 {
        let reply = server.infer(&body).await;
        if reply.status != 200 {
            refused = Some(reply);
            break;
        }
    }
    let refused = refused.expect("the daily quota runs out");
    assert_eq!(refused.status, 429, "{:?}", refused.json);
    assert!(
        refused.error().contains("daily token quota"),
        "{}",
        refused.error()
    );
    assert!(refused.retry_after.is_some());
    assert!(server.stats().throttled_daily >= 1);

    // Now refused without a call: Bedrock sees nothing more.
    let calls = server.stats().calls;
    let again = server.infer(&body).await;
    assert_eq!(again.status, 429);
    assert_eq!(again.json["code"], "ThrottlingException");
    let secs: u64 = again.retry_after.as_deref().unwrap().parse().unwrap();
    assert!((1..=30).contains(&secs), "Retry-After {secs}");
    assert_eq!(
        server.stats().calls,
        calls,
        "no Bedrock call while the day is spent"
    );

    // The Anthropic route answers in its own shape.
    let messages = common::post_raw(
        &server.url,
        "/v1/messages",
        Some("application/json"),
        json!({"model": MODEL, "max_tokens": 100,
               "messages": [{"role": "user", "content": "hi"}]})
        .to_string()
        .into_bytes(),
    )
    .await;
    assert_eq!(messages.status, 429);
    assert_eq!(messages.json["error"]["type"], "rate_limit_error");

    // /status and /metrics show it.
    let status = server.status().await;
    let throttle = status["throttle"]
        .as_array()
        .and_then(|rows| rows.iter().find(|row| row["model"] == MODEL))
        .cloned()
        .expect("a throttle row for the model");
    assert_eq!(throttle["daily_quota_spent"], true, "{throttle}");
    assert!(throttle["throttled_by"]["tokens_per_day"].as_u64().unwrap() >= 1);
    assert_eq!(throttle["burndown"], 5.0);
    let text = common::client()
        .get(format!("{}/metrics", server.url))
        .send()
        .await
        .unwrap()
        .body()
        .await
        .unwrap();
    let text = String::from_utf8_lossy(&text);
    let line = text
        .lines()
        .find(|l| l.starts_with("modelserver_daily_quota_spent{"))
        .unwrap_or_else(|| panic!("no daily quota gauge in\n{text}"));
    let value: f64 = line.rsplit(' ').next().unwrap().parse().unwrap();
    assert_eq!(value, 1.0, "{line}");
}
