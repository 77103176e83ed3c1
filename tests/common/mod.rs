//! Shared helpers of the integration tests: a real server on port 0 with the in-process
//! emulator behind it (the real AWS SDK over loopback HTTP), and a small JSON client; the
//! streamed answers are read with [`sse`], the AWS SDK's client is built by [`bedrock`], the
//! emulator on its own is run by [`emulator`], and the outside programs some tests drive are
//! found through [`external`].
#![allow(dead_code)]

pub mod bedrock;
pub mod emulator;
pub mod external;
pub mod sse;

use std::net::SocketAddr;
use std::time::Duration;

use actix_web::dev::ServerHandle;
use actors::Broker;
use model_server::emulator::{Emulator, EmulatorConfig, EmulatorStats, Scripted};
use model_server::server;
use model_server::settings::Settings;
use serde_json::{json, Value};

/// The model the tests call unless they need several.
pub const MODEL: &str = "us.anthropic.claude-sonnet-4-20250514-v1:0";

/// The path of the Bedrock-native route `operation` (`invoke-with-response-stream`,
/// `converse`, ...) for [`MODEL`], its id percent-encoded as the SDKs send it.
pub fn model_path(operation: &str) -> String {
    format!("/model/{}/{operation}", MODEL.replace(':', "%3A"))
}

/// A running server with its emulator.
pub struct TestServer {
    /// `http://127.0.0.1:PORT`.
    pub url: String,
    /// Bound address.
    pub addr: SocketAddr,
    /// The actors, for actor-level assertions.
    pub broker: Broker,
    /// The emulator behind it, to script faults and read what it received.
    pub emulator: Emulator,
    /// Stops the HTTP server.
    pub handle: ServerHandle,
}

/// Starts a server with the in-process emulator (no latency), one HTTP worker, fast backoff
/// (so throttle tests take milliseconds), plus `extra` flags.
pub async fn start(extra: &[&'static str]) -> TestServer {
    let mut args = vec![
        "--emulator",
        "--bind",
        "127.0.0.1:0",
        "--emulator-latency-ms",
        "0",
        "--http-workers",
        "1",
        "--backoff-base-ms",
        "20",
        "--backoff-cap-ms",
        "160",
        "--retry-pause-ms",
        "5",
        "--retry-pause-cap-ms",
        "20",
    ];
    args.extend_from_slice(extra);
    let settings = Settings::from_args(args);
    let running = server::start(&settings).await.expect("server starts");
    let url = running.url();
    let (handle, addr, broker, emulator) = running.spawn();
    TestServer {
        url,
        addr,
        broker,
        emulator: emulator.expect("--emulator gives an emulator"),
        handle,
    }
}

impl TestServer {
    /// Emulator counters.
    pub fn stats(&self) -> EmulatorStats {
        self.emulator.stats()
    }

    /// Queues forced outcomes for `model`'s next calls.
    pub fn script(&self, model: &str, outcomes: &[&str]) {
        let outcomes = outcomes
            .iter()
            .map(|o| o.parse::<Scripted>().expect("known outcome"))
            .collect();
        self.emulator.script(Some(model), outcomes);
    }

    /// Paces the emulator's streams at `tokens_per_sec` (the rest of its configuration the
    /// default).
    pub fn pace_streams(&self, tokens_per_sec: f64) {
        self.emulator.set_config(EmulatorConfig {
            stream_tokens_per_sec: Some(tokens_per_sec),
            ..EmulatorConfig::default()
        });
    }

    /// `POST /infer` with a JSON body.
    pub async fn infer(&self, body: &Value) -> Reply {
        self.infer_raw(body.to_string().into_bytes()).await
    }

    /// `POST /infer` with raw bytes declared as JSON.
    pub async fn infer_raw(&self, body: Vec<u8>) -> Reply {
        post_raw(&self.url, "/infer", Some("application/json"), body).await
    }

    /// `GET path`.
    pub async fn get(&self, path: &str) -> Reply {
        let mut response = client()
            .get(format!("{}{}", self.url, path))
            .send()
            .await
            .expect("GET is answered");
        Reply::read(&mut response).await
    }

    /// `/status` as JSON.
    pub async fn status(&self) -> Value {
        self.get("/status").await.json
    }
}

/// An HTTP answer, decoded.
#[derive(Debug)]
pub struct Reply {
    /// Status code.
    pub status: u16,
    /// Body as JSON (`Value::Null` if it was not JSON).
    pub json: Value,
    /// `Retry-After`, if any.
    pub retry_after: Option<String>,
    /// `Content-Type`.
    pub content_type: Option<String>,
    /// `x-request-id`.
    pub request_id: Option<String>,
}

impl Reply {
    async fn read<S>(response: &mut awc::ClientResponse<S>) -> Reply
    where
        S: futures_util::Stream<Item = Result<actix_web::web::Bytes, awc::error::PayloadError>>
            + Unpin,
    {
        let header = |name: &str| {
            response
                .headers()
                .get(name)
                .and_then(|v| v.to_str().ok())
                .map(str::to_string)
        };
        let retry_after = header("retry-after");
        let content_type = header("content-type");
        let request_id = header("x-request-id");
        let status = response.status().as_u16();
        let body = response.body().limit(64 << 20).await.expect("body is read");
        Reply {
            status,
            json: serde_json::from_slice(&body).unwrap_or(Value::Null),
            retry_after,
            content_type,
            request_id,
        }
    }

    /// The `error` message of an error body.
    pub fn error(&self) -> &str {
        self.json["error"].as_str().unwrap_or("")
    }
}

/// A client with a generous timeout (tests bound their own waits).
pub fn client() -> awc::Client {
    awc::Client::builder()
        .timeout(Duration::from_secs(60))
        .disable_redirects()
        .finish()
}

/// `POST url+path` with a raw body and an optional Content-Type.
pub async fn post_raw(url: &str, path: &str, content_type: Option<&str>, body: Vec<u8>) -> Reply {
    let mut request = client().post(format!("{url}{path}"));
    if let Some(ct) = content_type {
        request = request.insert_header(("content-type", ct));
    }
    let mut response = request.send_body(body).await.expect("POST is answered");
    Reply::read(&mut response).await
}

/// The seed's request with one user message.
pub fn request(model: &str, text: &str) -> Value {
    json!({
        "type": "claude",
        "model_name": model,
        "payload": {"messages": [{"role": "user", "content": text}], "max_tokens": 100},
    })
}

/// Polls `check` until it holds or `within` passes; returns whether it held. For waiting on
/// state another actor changes (there is no event to subscribe to).
pub async fn eventually<F, Fut>(within: Duration, mut check: F) -> bool
where
    F: FnMut() -> Fut,
    Fut: std::future::Future<Output = bool>,
{
    let deadline = tokio::time::Instant::now() + within;
    loop {
        if check().await {
            return true;
        }
        if tokio::time::Instant::now() >= deadline {
            return false;
        }
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
}
