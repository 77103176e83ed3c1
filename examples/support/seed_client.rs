//! What the seed's two client examples share: the server flags, one `POST /infer` with its
//! transport failures classified, and the seed's "cannot connect" advice.

use std::time::Duration;

use awc::error::{ConnectError, SendRequestError};
use awc::http::StatusCode;
use serde_json::Value;

/// Largest response body the clients read.
const MAX_RESPONSE_BYTES: usize = 16 * 1024 * 1024;
/// How much longer than the request's own `timeout` a client waits, so the server gets the
/// chance to answer a passed deadline with its own error.
const CLIENT_TIMEOUT_MARGIN: Duration = Duration::from_secs(5);

/// Where the server is and what to ask it.
#[derive(clap::Args, Debug)]
pub struct ServerArgs {
    /// Base URL of the ModelServer (plain http).
    #[arg(long, default_value = "http://localhost:1121")]
    pub url: String,

    /// Bedrock model id to ask for.
    #[arg(long, default_value = "us.anthropic.claude-sonnet-4-20250514-v1:0")]
    pub model: String,

    /// Whole-request deadline in seconds, sent as each request's `timeout` field.
    #[arg(long, default_value_t = 60, value_parser = clap::value_parser!(u64).range(1..))]
    pub timeout: u64,
}

impl ServerArgs {
    /// The URL without a trailing `/`.
    pub fn base(&self) -> String {
        self.url.trim_end_matches('/').to_string()
    }

    /// How long the client waits for an answer.
    pub fn client_timeout(&self) -> Duration {
        Duration::from_secs(self.timeout) + CLIENT_TIMEOUT_MARGIN
    }

    /// A client that waits [`ServerArgs::client_timeout`].
    pub fn client(&self) -> awc::Client {
        awc::Client::builder()
            .timeout(self.client_timeout())
            .finish()
    }
}

/// Why a request got no answer from the server.
pub enum Failure {
    /// The server could not be reached at all (connection refused, DNS, ...).
    Unreachable(String),
    /// The URL cannot be used by this client (malformed, or https).
    BadUrl(String),
    /// The server was reached but no answer came (client timeout, broken body, ...).
    Failed(String),
}

/// An HTTP answer.
pub struct Answer {
    /// Its status.
    pub status: StatusCode,
    /// The body as JSON, if it was JSON.
    pub json: Option<Value>,
    /// The body as sent.
    pub raw: Vec<u8>,
}

impl Answer {
    /// The seed's `response` text, if this is a success that has one.
    pub fn response(&self) -> Option<&str> {
        if !self.status.is_success() {
            return None;
        }
        self.json.as_ref()?.get("response")?.as_str()
    }

    /// The body for display: JSON if it was JSON, else the raw text.
    pub fn shown(&self) -> String {
        match &self.json {
            Some(value) => value.to_string(),
            None => String::from_utf8_lossy(&self.raw).into_owned(),
        }
    }
}

/// `POST endpoint` with a JSON body.
pub async fn post(
    client: &awc::Client,
    endpoint: &str,
    body: &Value,
    waited: Duration,
) -> Result<Answer, Failure> {
    let mut res = match client.post(endpoint).send_json(body).await {
        Ok(res) => res,
        Err(SendRequestError::Url(e)) => return Err(Failure::BadUrl(format!("invalid URL: {e}"))),
        Err(SendRequestError::Http(e)) => return Err(Failure::BadUrl(format!("invalid URL: {e}"))),
        Err(SendRequestError::Connect(ConnectError::SslIsNotSupported)) => {
            return Err(Failure::BadUrl(
                "this client speaks plain http only; use an http:// URL".to_string(),
            ))
        }
        Err(SendRequestError::Connect(e)) => return Err(Failure::Unreachable(e.to_string())),
        Err(SendRequestError::Timeout) => {
            return Err(Failure::Failed(format!(
                "no response within {}s (client timeout)",
                waited.as_secs()
            )))
        }
        Err(e) => return Err(Failure::Failed(format!("request failed: {e}"))),
    };
    let status = res.status();
    let raw = res
        .body()
        .limit(MAX_RESPONSE_BYTES)
        .await
        .map_err(|e| Failure::Failed(format!("HTTP {status}: failed to read the body: {e}")))?
        .to_vec();
    Ok(Answer {
        status,
        json: serde_json::from_slice(&raw).ok(),
        raw,
    })
}

/// The seed's advice when the server cannot be reached.
pub fn print_unreachable(base: &str, cause: &str) {
    println!("Cannot connect to ModelServer at {base}");
    println!("Cause: {cause}");
    println!("Solution: Start the ModelServer first, e.g. `cargo run --release -- --emulator`");
}
