//! The official Python SDKs against ModelServer's parts over loopback HTTP: each test starts
//! what it needs and runs one script of `tests/python/` with the pinned SDKs of
//! `tests/python/requirements.txt` (installed by `scripts/test`).

mod common;

use common::external::{python_script, run_python};
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
