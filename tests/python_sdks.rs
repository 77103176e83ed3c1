//! The official Python SDKs against ModelServer's parts over loopback HTTP: each test starts
//! what it needs and runs one script of `tests/python/` with the pinned SDKs of
//! `tests/python/requirements.txt` (installed by `scripts/test`): boto3 against the emulator,
//! the `anthropic` SDK against `/v1/messages`, and `AnthropicBedrock` and boto3 against the
//! Bedrock-native routes.

mod common;

use common::external::{python_script, run_python, run_python_beside};
use common::MODEL;
use model_server::emulator::{Emulator, EmulatorConfig};

/// boto3's `bedrock-runtime` client takes the emulator for Bedrock: `invoke_model` gets the
/// echoed text with its usage, and a scripted throttle raises botocore's
/// `ThrottlingException` after one attempt. The emulator saw both calls, SigV4-signed by boto3.
#[test]
fn boto3_invoke_model_reads_the_reply_and_raises_a_scripted_throttling_exception() {
    let emulator = Emulator::start_in_thread("127.0.0.1:0", EmulatorConfig::default(), 1)
        .expect("the emulator starts");

    let output = run_python(
        &python_script("test_boto3_invoke.py"),
        &[&emulator.endpoint()],
        &[],
    );

    assert!(
        String::from_utf8_lossy(&output.stdout).contains("reply and ThrottlingException checked"),
        "{output:?}"
    );
    let stats = emulator.stats();
    assert_eq!(
        (stats.calls, stats.ok, stats.throttled),
        (2, 1, 1),
        "one reply, one throttle, no retry: {stats:?}"
    );
    assert_eq!(stats.per_model.get(MODEL), Some(&2), "{stats:?}");
    assert_eq!(
        stats.last_headers.get("authorization").map(String::as_str),
        Some("AWS4-HMAC-SHA256"),
        "{stats:?}"
    );
    let user_agent = stats
        .last_headers
        .get("user-agent")
        .cloned()
        .unwrap_or_default();
    assert!(user_agent.contains("Boto3/"), "user-agent: {user_agent}");
}

/// The official `anthropic` SDK against `/v1/messages`: create, stream (`text_stream`,
/// `get_final_message`), a tool-use round trip whole and streamed, every error status as the
/// SDK's exception class (529 from a second broker that refuses everything for load), and a
/// stream broken after its first text raising instead of returning it.
#[actix_web::test]
async fn the_anthropic_sdk_uses_v1_messages_unchanged() {
    let server = common::start(&["--api-key", "sk-python", "--max-body-bytes", "200000"]).await;
    let overloaded = common::start(&["--queue-capacity", "0"]).await;
    let stdout = run_python_beside(
        "test_anthropic_messages.py",
        vec![
            server.url.clone(),
            server.emulator.endpoint(),
            "sk-python".to_string(),
            overloaded.url.clone(),
        ],
    )
    .await;
    assert!(stdout.contains("anthropic SDK: create, stream"), "{stdout}");
    let stats = server.stats();
    assert!(stats.streams_completed >= 3, "{stats:?}");
    assert_eq!(overloaded.stats().calls, 0);
}

/// `AnthropicBedrock` and boto3 against the Bedrock-native routes: replies, streams (events
/// as Bedrock sent them), a throttle before the stream, exception frames inside it, and a
/// SigV4-only call refused for lack of the broker's key.
#[actix_web::test]
async fn bedrock_clients_use_the_bedrock_routes_unchanged() {
    let server = common::start(&["--api-key", "sk-bedrock"]).await;
    let stdout = run_python_beside(
        "test_bedrock_clients.py",
        vec![
            server.url.clone(),
            server.emulator.endpoint(),
            "sk-bedrock".to_string(),
        ],
    )
    .await;
    assert!(
        stdout.contains("AnthropicBedrock and boto3 checked"),
        "{stdout}"
    );
    let stats = server.stats();
    assert!(stats.streams_completed >= 2, "{stats:?}");
    assert!(stats.streams_faulted >= 2, "{stats:?}");
}
