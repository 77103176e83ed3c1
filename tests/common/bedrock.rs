//! The real AWS SDK's Bedrock Runtime client, pointed at the broker's Bedrock-native routes or
//! at the emulator, and its two InvokeModel operations with a JSON body.

use aws_sdk_bedrockruntime::config::http::HttpResponse;
use aws_sdk_bedrockruntime::config::retry::RetryConfig;
use aws_sdk_bedrockruntime::config::{BehaviorVersion, Credentials, Region};
use aws_sdk_bedrockruntime::error::SdkError;
use aws_sdk_bedrockruntime::operation::invoke_model::{InvokeModelError, InvokeModelOutput};
use aws_sdk_bedrockruntime::operation::invoke_model_with_response_stream::{
    InvokeModelWithResponseStreamError, InvokeModelWithResponseStreamOutput,
};
use aws_sdk_bedrockruntime::primitives::Blob;
use aws_sdk_bedrockruntime::Client;
use serde_json::Value;

/// How an InvokeModel call fails.
pub type InvokeError = SdkError<InvokeModelError, HttpResponse>;

/// How an InvokeModelWithResponseStream call fails before its stream opens.
pub type OpenError = SdkError<InvokeModelWithResponseStreamError, HttpResponse>;

/// The SDK's configuration for a Bedrock at `endpoint`: us-east-1, SigV4 with fixed test
/// credentials, and the SDK's own retries off (the tests count calls). Add to it, then build.
pub fn sdk_config(endpoint: &str) -> aws_sdk_bedrockruntime::config::Builder {
    aws_sdk_bedrockruntime::Config::builder()
        .behavior_version(BehaviorVersion::latest())
        .region(Region::new("us-east-1"))
        .endpoint_url(endpoint)
        .credentials_provider(Credentials::new("AKID", "SECRET", None, None, "test"))
        .retry_config(RetryConfig::disabled())
}

/// An SDK client whose Bedrock is at `endpoint` (see [`sdk_config`]).
pub fn sdk_client(endpoint: &str) -> Client {
    Client::from_conf(sdk_config(endpoint).build())
}

/// InvokeModel of `model` with `body`.
pub async fn invoke(
    client: &Client,
    model: &str,
    body: &Value,
) -> Result<InvokeModelOutput, InvokeError> {
    client
        .invoke_model()
        .model_id(model)
        .body(Blob::new(serde_json::to_vec(body).unwrap()))
        .send()
        .await
}

/// InvokeModelWithResponseStream of `model` with `body`: the open stream.
pub async fn open_stream(
    client: &Client,
    model: &str,
    body: &Value,
) -> Result<InvokeModelWithResponseStreamOutput, OpenError> {
    client
        .invoke_model_with_response_stream()
        .model_id(model)
        .body(Blob::new(serde_json::to_vec(body).unwrap()))
        .send()
        .await
}
