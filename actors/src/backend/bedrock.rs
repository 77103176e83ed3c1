//! The Bedrock backend: InvokeModel and InvokeModelWithResponseStream through the official
//! `aws-sdk-bedrockruntime` client, and the translation of SDK outcomes into [`BedrockReply`],
//! [`BedrockStream`] events and [`BedrockError`].
//!
//! The SDK's own retries are disabled: one `invoke` or `open_stream` is exactly one HTTP
//! call, and the worker's attempt loop (with [`crate::policy::retry`]) decides about retries. Each
//! call is bounded by what is left of its request's deadline; a stream's events are read one
//! at a time by the worker, which bounds each wait. Errors inside a stream (Bedrock's
//! exception frames: `throttlingException`, `modelStreamErrorException`, ...) get the same
//! [`ErrorKind`]s as the errors Bedrock answers before a reply, by the same names, so the
//! retry policy treats a throttle alike wherever it arrives; a stream that breaks
//! (connection cut, unreadable frame) is a [`ErrorKind::Connection`] failure. Credentials
//! and region come from the standard AWS chain unless the config gives static ones (the
//! emulator and tests do).

use std::fmt;
use std::time::Duration;

use aws_sdk_bedrockruntime::config::retry::RetryConfig;
use aws_sdk_bedrockruntime::config::timeout::TimeoutConfig;
use aws_sdk_bedrockruntime::config::{BehaviorVersion, Credentials, Region};
use aws_sdk_bedrockruntime::error::{DisplayErrorContext, ProvideErrorMetadata, SdkError};
use aws_sdk_bedrockruntime::operation::invoke_model_with_response_stream::InvokeModelWithResponseStreamOutput;
use aws_sdk_bedrockruntime::operation::RequestId;
use aws_sdk_bedrockruntime::primitives::Blob;
use aws_sdk_bedrockruntime::types::error::ResponseStreamError;
use aws_sdk_bedrockruntime::types::ResponseStream;
use aws_sdk_bedrockruntime::Client;
use serde::Deserialize;

use crate::flow::usage::Usage;

/// Region used when neither the config nor the AWS chain names one.
pub const FALLBACK_REGION: &str = "us-east-1";

/// How to reach Bedrock Runtime.
#[derive(Debug, Clone, Default)]
pub struct BedrockConfig {
    /// AWS region; `None` reads the standard chain (`AWS_REGION`, profile), then us-east-1.
    pub region: Option<String>,
    /// Endpoint override (an emulator, a VPC endpoint); `None` uses AWS's.
    pub endpoint: Option<String>,
    /// Fixed access key id and secret instead of the AWS chain (emulator, tests).
    pub static_credentials: Option<(String, String)>,
    /// TCP/TLS connect timeout; `None` keeps the SDK default.
    pub connect_timeout: Option<Duration>,
}

/// A cheap-to-clone handle on one SDK client (its connection pool is shared by clones).
#[derive(Clone, Debug)]
pub struct BedrockBackend {
    /// The SDK client, built once with retries disabled.
    client: Client,
    /// The region requests are signed for; half of the throttle key.
    region: String,
    /// The resolved credentials chain, kept to check it at start-up.
    credentials: Option<aws_credential_types::provider::SharedCredentialsProvider>,
}

/// A successful InvokeModel call, parsed.
#[derive(Debug, Clone)]
pub struct BedrockReply {
    /// Concatenated `text` content blocks.
    pub text: String,
    /// The model id Bedrock reported.
    pub model: String,
    /// Why generation stopped.
    pub stop_reason: Option<String>,
    /// Token counts (Bedrock always reports them for Anthropic models).
    pub usage: Option<Usage>,
    /// Bedrock's request id.
    pub request_id: Option<String>,
    /// The reply's JSON as Bedrock sent it.
    pub body: Vec<u8>,
}

/// An open InvokeModelWithResponseStream reply: Bedrock answered 200, its events follow.
/// Dropping it closes the connection (Bedrock stops generating).
pub struct BedrockStream {
    /// The SDK's output, whose `body` yields the events.
    output: InvokeModelWithResponseStreamOutput,
}

impl fmt::Debug for BedrockStream {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("BedrockStream")
            .field("request_id", &self.request_id())
            .finish_non_exhaustive()
    }
}

/// What kind of failure a call ended in; [`crate::policy::retry`] decides what each kind means.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ErrorKind {
    Throttling,
    ModelNotReady,
    ServiceUnavailable,
    InternalServer,
    ModelTimeout,
    Validation,
    AccessDenied,
    ResourceNotFound,
    ModelError,
    ServiceQuotaExceeded,
    /// A 5xx whose body named no known error.
    ServerError,
    /// An error status outside 5xx that named no known error.
    Unrecognized,
    /// The connection could not be made or broke.
    Connection,
    /// The call ran out of time (its deadline budget or a connect timeout).
    Timeout,
    /// A 200 whose body could not be read or parsed.
    InvalidResponse,
    /// The request could not even be built.
    Construction,
}

/// A failed call.
#[derive(Debug, Clone, PartialEq)]
pub struct BedrockError {
    /// The classification the retry policy reads.
    pub kind: ErrorKind,
    /// The AWS error code (`ThrottlingException`, ...) or a name for a transport failure.
    pub code: String,
    /// The human message, Bedrock's own where it gave one.
    pub message: String,
    /// Bedrock's `x-amzn-RequestId`, when Bedrock answered.
    pub request_id: Option<String>,
}

impl fmt::Display for BedrockError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}: {}", self.code, self.message)
    }
}

impl std::error::Error for BedrockError {}

impl BedrockBackend {
    /// Builds the client: region, endpoint and credentials from `config`, else the AWS chain.
    pub async fn connect(config: &BedrockConfig) -> BedrockBackend {
        // 1. Region: explicit, else the standard chain, else us-east-1.
        let region_chain = aws_config::meta::region::RegionProviderChain::first_try(
            config.region.clone().map(Region::new),
        )
        .or_default_provider()
        .or_else(Region::from_static(FALLBACK_REGION));
        let mut loader = aws_config::defaults(BehaviorVersion::latest()).region(region_chain);
        // 2. Endpoint and credentials overrides.
        if let Some(endpoint) = &config.endpoint {
            loader = loader.endpoint_url(endpoint);
        }
        if let Some((id, secret)) = &config.static_credentials {
            loader = loader.credentials_provider(Credentials::new(
                id.clone(),
                secret.clone(),
                None,
                None,
                "model-server-static",
            ));
        }
        // 3. One attempt per call, bounded by our own deadline; only connect is capped here.
        let mut timeouts = TimeoutConfig::builder();
        if let Some(connect) = config.connect_timeout {
            timeouts = timeouts.connect_timeout(connect);
        }
        // Stalled-stream protection is off too: it arms a timer per body poll, and the
        // request's deadline already bounds every call.
        loader = loader
            .retry_config(RetryConfig::disabled())
            .timeout_config(timeouts.build())
            .stalled_stream_protection(
                aws_config::stalled_stream_protection::StalledStreamProtectionConfig::disabled(),
            );
        let shared = loader.load().await;
        let region = shared
            .region()
            .map(|r| r.to_string())
            .unwrap_or_else(|| FALLBACK_REGION.to_string());
        BedrockBackend {
            client: Client::new(&shared),
            region,
            credentials: shared.credentials_provider(),
        }
    }

    /// The region calls are signed for.
    pub fn region(&self) -> &str {
        &self.region
    }

    /// Resolves credentials once, to warn at start-up when none can be found.
    pub async fn check_credentials(&self) -> Result<(), String> {
        use aws_sdk_bedrockruntime::config::ProvideCredentials;
        let provider = self
            .credentials
            .as_ref()
            .ok_or_else(|| "no credentials provider is configured".to_string())?;
        provider
            .provide_credentials()
            .await
            .map(|_| ())
            .map_err(|e| DisplayErrorContext(e).to_string())
    }

    /// One InvokeModel call with an Anthropic Messages `body`, given at most `budget`.
    pub async fn invoke(
        &self,
        model: &str,
        body: Vec<u8>,
        budget: Duration,
    ) -> Result<BedrockReply, BedrockError> {
        let call = self
            .client
            .invoke_model()
            .model_id(model)
            .content_type("application/json")
            .accept("application/json")
            .body(Blob::new(body))
            .send();
        let output = match tokio::time::timeout(budget, call).await {
            Err(_) => return Err(no_answer_within(budget)),
            Ok(Err(e)) => return Err(classify(e)),
            Ok(Ok(output)) => output,
        };
        let request_id = output.request_id().map(str::to_string);
        parse_reply(output.body.into_inner(), request_id)
    }

    /// Opens one InvokeModelWithResponseStream call with an Anthropic Messages `body`, waiting
    /// at most `budget` for Bedrock's answer (its status and headers). Bedrock's refusals
    /// before the stream (a throttle, a validation error, ...) come back as errors here.
    pub async fn open_stream(
        &self,
        model: &str,
        body: Vec<u8>,
        budget: Duration,
    ) -> Result<BedrockStream, BedrockError> {
        let call = self
            .client
            .invoke_model_with_response_stream()
            .model_id(model)
            .content_type("application/json")
            .accept("application/json")
            .body(Blob::new(body))
            .send();
        match tokio::time::timeout(budget, call).await {
            Err(_) => Err(no_answer_within(budget)),
            Ok(Err(e)) => Err(classify(e)),
            Ok(Ok(output)) => Ok(BedrockStream { output }),
        }
    }
}

impl BedrockStream {
    /// Bedrock's request id.
    pub fn request_id(&self) -> Option<&str> {
        self.output.request_id()
    }

    /// The next Anthropic stream event (its JSON, as Bedrock sent it), or `None` at the end
    /// of the stream. An exception frame or a broken stream is an error; the caller bounds
    /// the wait.
    pub async fn next_event(&mut self) -> Result<Option<Vec<u8>>, BedrockError> {
        loop {
            match self.output.body.recv().await {
                Ok(None) => return Ok(None),
                Ok(Some(ResponseStream::Chunk(part))) => {
                    return match part.bytes {
                        Some(bytes) => Ok(Some(bytes.into_inner())),
                        None => Err(BedrockError {
                            kind: ErrorKind::InvalidResponse,
                            code: "InvalidResponse".into(),
                            message: "a stream chunk without bytes".into(),
                            request_id: None,
                        }),
                    }
                }
                // A member this SDK does not know: Bedrock added something; skip it.
                Ok(Some(_)) => continue,
                Err(e) => return Err(classify_stream_error(e)),
            }
        }
    }
}

/// Turns a stream's failure into a [`BedrockError`]. An exception frame is named by its
/// variant (the SDK leaves the code of a stream exception empty), as Bedrock names the same
/// error outside a stream (`ThrottlingException`).
fn classify_stream_error(
    err: SdkError<ResponseStreamError, aws_smithy_types::event_stream::RawMessage>,
) -> BedrockError {
    let SdkError::ServiceError(service) = &err else {
        return classify(err);
    };
    let exception = service.err();
    let code = match exception {
        ResponseStreamError::ThrottlingException(_) => "ThrottlingException",
        ResponseStreamError::ModelStreamErrorException(_) => "ModelStreamErrorException",
        ResponseStreamError::InternalServerException(_) => "InternalServerException",
        ResponseStreamError::ServiceUnavailableException(_) => "ServiceUnavailableException",
        ResponseStreamError::ModelTimeoutException(_) => "ModelTimeoutException",
        ResponseStreamError::ValidationException(_) => "ValidationException",
        _ => return classify(err),
    };
    BedrockError {
        kind: kind_of_code(code).unwrap_or(ErrorKind::ServerError),
        code: code.to_string(),
        message: exception
            .message()
            .map(str::to_string)
            .unwrap_or_else(|| format!("{code} inside the stream")),
        request_id: None,
    }
}

/// The error of a call that got no answer within its budget.
fn no_answer_within(budget: Duration) -> BedrockError {
    BedrockError {
        kind: ErrorKind::Timeout,
        code: "Timeout".into(),
        message: format!(
            "no answer within the {:.3} s left before the deadline",
            budget.as_secs_f64()
        ),
        request_id: None,
    }
}

/// The part of Anthropic's Messages response the broker reads.
#[derive(Deserialize)]
struct MessagesResponse {
    #[serde(default)]
    content: Vec<ContentBlock>,
    #[serde(default)]
    model: Option<String>,
    #[serde(default)]
    stop_reason: Option<String>,
    #[serde(default)]
    usage: Option<Usage>,
}

#[derive(Deserialize)]
struct ContentBlock {
    #[serde(rename = "type")]
    kind: String,
    #[serde(default)]
    text: Option<String>,
}

/// Parses a 200 body; a body that is not an Anthropic message is an `InvalidResponse`.
pub fn parse_reply(
    body: Vec<u8>,
    request_id: Option<String>,
) -> Result<BedrockReply, BedrockError> {
    let parsed: MessagesResponse = serde_json::from_slice(&body).map_err(|e| BedrockError {
        kind: ErrorKind::InvalidResponse,
        code: "InvalidResponse".into(),
        message: format!("Bedrock's 200 body is not an Anthropic message ({e})"),
        request_id: request_id.clone(),
    })?;
    let text = parsed
        .content
        .iter()
        .filter(|b| b.kind == "text")
        .filter_map(|b| b.text.as_deref())
        .collect::<String>();
    Ok(BedrockReply {
        text,
        model: parsed.model.unwrap_or_default(),
        stop_reason: parsed.stop_reason,
        usage: parsed.usage,
        request_id,
        body,
    })
}

/// Maps an AWS error code to its kind. The name may come from an error answer
/// (`ThrottlingException`) or from a stream's exception frame (`throttlingException`).
pub fn kind_of_code(code: &str) -> Option<ErrorKind> {
    if code.starts_with(|c: char| c.is_ascii_lowercase()) {
        return kind_of_code(&upper_camel(code));
    }
    Some(match code {
        "ThrottlingException" => ErrorKind::Throttling,
        "ModelNotReadyException" => ErrorKind::ModelNotReady,
        "ServiceUnavailableException" => ErrorKind::ServiceUnavailable,
        "InternalServerException" => ErrorKind::InternalServer,
        "ModelTimeoutException" => ErrorKind::ModelTimeout,
        "ValidationException" => ErrorKind::Validation,
        "AccessDeniedException" => ErrorKind::AccessDenied,
        "ResourceNotFoundException" => ErrorKind::ResourceNotFound,
        "ModelErrorException" => ErrorKind::ModelError,
        "ServiceQuotaExceededException" => ErrorKind::ServiceQuotaExceeded,
        // Only inside a stream: the model failed while generating (its original status and
        // message are in the frame). Not retried, like ModelErrorException.
        "ModelStreamErrorException" => ErrorKind::ModelError,
        _ => return None,
    })
}

/// `name` with its first letter in upper case: a stream's exception name as the error code
/// Bedrock uses for the same error outside a stream.
fn upper_camel(name: &str) -> String {
    let mut chars = name.chars();
    match chars.next() {
        Some(first) => first.to_ascii_uppercase().to_string() + chars.as_str(),
        None => String::new(),
    }
}

/// The HTTP status of what an SDK error answered, when there was an answer.
trait RawStatus {
    fn status(&self) -> Option<u16>;
    /// Bedrock's `x-amzn-RequestId` (an HTTP answer's; a stream's frames carry none).
    fn request_id(&self) -> Option<&str>;
}

impl RawStatus for aws_sdk_bedrockruntime::config::http::HttpResponse {
    fn status(&self) -> Option<u16> {
        Some(self.status().as_u16())
    }

    fn request_id(&self) -> Option<&str> {
        self.headers().get("x-amzn-RequestId")
    }
}

impl RawStatus for aws_smithy_types::event_stream::RawMessage {
    fn status(&self) -> Option<u16> {
        None
    }

    fn request_id(&self) -> Option<&str> {
        None
    }
}

/// Turns an SDK failure (of a call, or of a stream's event) into a [`BedrockError`]. Error
/// codes are kept as Bedrock names them outside a stream (`ThrottlingException`).
fn classify<E, R>(err: SdkError<E, R>) -> BedrockError
where
    E: ProvideErrorMetadata + std::error::Error + 'static,
    R: RawStatus + fmt::Debug,
{
    match &err {
        SdkError::ServiceError(service) => {
            let status = service.raw().status();
            let code = service.err().code().map(upper_camel);
            let shown_status =
                status.map_or("a stream exception".to_string(), |s| format!("HTTP {s}"));
            let message = service
                .err()
                .message()
                .map(str::to_string)
                .unwrap_or_else(|| format!("{shown_status} with no readable message"));
            let kind = code
                .as_deref()
                .and_then(kind_of_code)
                .unwrap_or(match status {
                    Some(status) if status < 500 => ErrorKind::Unrecognized,
                    _ => ErrorKind::ServerError,
                });
            BedrockError {
                kind,
                code: code.unwrap_or(shown_status),
                message,
                request_id: service.raw().request_id().map(str::to_string),
            }
        }
        SdkError::TimeoutError(_) => BedrockError {
            kind: ErrorKind::Timeout,
            code: "Timeout".into(),
            message: DisplayErrorContext(&err).to_string(),
            request_id: None,
        },
        SdkError::DispatchFailure(failure) => BedrockError {
            kind: if failure.is_timeout() {
                ErrorKind::Timeout
            } else {
                ErrorKind::Connection
            },
            code: if failure.is_timeout() {
                "ConnectTimeout".into()
            } else {
                "ConnectionError".into()
            },
            message: DisplayErrorContext(&err).to_string(),
            request_id: None,
        },
        SdkError::ResponseError(response) => BedrockError {
            kind: ErrorKind::InvalidResponse,
            code: "InvalidResponse".into(),
            message: DisplayErrorContext(&err).to_string(),
            request_id: response.raw().request_id().map(str::to_string),
        },

        _ => BedrockError {
            kind: ErrorKind::Construction,
            code: "RequestConstruction".into(),
            message: DisplayErrorContext(&err).to_string(),
            request_id: None,
        },
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_text_blocks_and_usage() {
        let body = br#"{"id":"msg_1","type":"message","role":"assistant","model":"m",
            "content":[{"type":"text","text":"Hello"},{"type":"tool_use","id":"t"},{"type":"text","text":" world"}],
            "stop_reason":"end_turn","stop_sequence":null,"usage":{"input_tokens":3,"output_tokens":2}}"#;
        let reply = parse_reply(body.to_vec(), Some("rid".into())).unwrap();
        assert_eq!(
            reply.body,
            body.to_vec(),
            "the bytes are kept as Bedrock sent them"
        );
        assert_eq!(reply.text, "Hello world");
        assert_eq!(reply.model, "m");
        assert_eq!(reply.stop_reason.as_deref(), Some("end_turn"));
        assert_eq!(
            reply.usage,
            Some(Usage {
                input_tokens: 3,
                output_tokens: 2,
                cache_write_tokens: 0,
            })
        );
    }

    #[test]
    fn truncated_or_non_json_bodies_are_invalid_responses() {
        for body in [
            &b"{\"content\":[{\"type\":\"te"[..],
            b"<html>oops</html>",
            b"",
        ] {
            let err = parse_reply(body.to_vec(), None).unwrap_err();
            assert_eq!(err.kind, ErrorKind::InvalidResponse, "{body:?}");
        }
    }

    #[test]
    fn every_bedrock_error_code_has_a_kind() {
        assert_eq!(
            kind_of_code("ThrottlingException"),
            Some(ErrorKind::Throttling)
        );
        assert_eq!(
            kind_of_code("ValidationException"),
            Some(ErrorKind::Validation)
        );
        assert_eq!(kind_of_code("SomethingNew"), None);
    }

    #[test]
    fn stream_exceptions_have_the_kinds_of_the_same_errors_outside_a_stream() {
        for (frame, kind) in [
            ("throttlingException", ErrorKind::Throttling),
            ("serviceUnavailableException", ErrorKind::ServiceUnavailable),
            ("internalServerException", ErrorKind::InternalServer),
            ("modelTimeoutException", ErrorKind::ModelTimeout),
            ("validationException", ErrorKind::Validation),
            ("modelStreamErrorException", ErrorKind::ModelError),
        ] {
            assert_eq!(kind_of_code(frame), Some(kind), "{frame}");
            assert_eq!(kind_of_code(&upper_camel(frame)), Some(kind), "{frame}");
        }
        assert_eq!(upper_camel("throttlingException"), "ThrottlingException");
        assert_eq!(kind_of_code("somethingNewException"), None);
        assert_eq!(kind_of_code(""), None);
    }
}
