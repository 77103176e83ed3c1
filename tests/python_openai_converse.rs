//! The official Python SDKs against the Chat Completions and Converse routes, over loopback
//! HTTP: each test starts the brokers it needs and runs one script of `tests/python/` with the
//! pinned SDKs of `tests/python/requirements.txt` (installed by `scripts/test`): the `openai`
//! SDK against `/v1/chat/completions` and `/v1/models`, boto3's `converse` and
//! `converse_stream` against `/model/{modelId}/converse[-stream]`.

mod common;

use common::external::run_python_beside;

/// The official `openai` SDK against `/v1/chat/completions`: create (system + user, stop,
/// max_tokens), a stream with `include_usage` (chunk by chunk and through the SDK's stream
/// helper), a tool round trip whole and streamed with the arguments assembling to JSON,
/// structured output (`parse` with a pydantic model, `json_object`), every
/// error status as the SDK's exception class (429 from a second broker that refuses everything
/// for load), a mid-stream failure raising `APIError`, and `models.list()`.
#[actix_web::test]
async fn the_openai_sdk_uses_chat_completions_unchanged() {
    let server = common::start(&["--api-key", "sk-openai", "--max-body-bytes", "200000"]).await;
    let overloaded = common::start(&["--queue-capacity", "0"]).await;
    let stdout = run_python_beside(
        "test_openai_chat.py",
        vec![
            server.url.clone(),
            server.emulator.endpoint(),
            "sk-openai".to_string(),
            overloaded.url.clone(),
        ],
    )
    .await;
    assert!(stdout.contains("openai SDK: create, stream"), "{stdout}");
    let stats = server.stats();
    assert!(stats.streams_completed >= 5, "{stats:?}");
    assert!(stats.streams_faulted >= 2, "{stats:?}");
    assert_eq!(overloaded.stats().calls, 0);
}

/// boto3's `converse` and `converse_stream` against the Converse routes: text, a stop
/// sequence, a tool-use round trip whole and streamed, modelled errors before the stream (a
/// SigV4-only call refused for lack of the broker's key), and exceptions inside the stream
/// surfacing with their codes.
#[actix_web::test]
async fn boto3_converse_uses_the_converse_routes_unchanged() {
    let server = common::start(&["--api-key", "sk-converse"]).await;
    let stdout = run_python_beside(
        "test_boto3_converse.py",
        vec![
            server.url.clone(),
            server.emulator.endpoint(),
            "sk-converse".to_string(),
        ],
    )
    .await;
    assert!(stdout.contains("boto3 Converse: converse"), "{stdout}");
    let stats = server.stats();
    assert!(stats.streams_completed >= 3, "{stats:?}");
    assert!(stats.streams_faulted >= 3, "{stats:?}");
}
