//! The `model-server` binary end to end, as an operator runs it: pointed at a Bedrock-compatible
//! endpoint with `--bedrock-endpoint`, credentials from the AWS environment variables, logging
//! to `--log-file`. Checks the seed's log lines, the access lines with their request ids in
//! both `--log-format`s, and that prompts, completions and credentials stay out of the log.

mod common;

use std::io::{BufRead, BufReader};
use std::process::{Child, Command, Stdio};
use std::time::Duration;

use common::{post_raw, request, MODEL};
use model_server::emulator::{Emulator, EmulatorConfig, Scripted};
use serde_json::json;

/// Kills the child when the test ends, however it ends.
struct Server(Child);

impl Drop for Server {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

/// A command for the binary with `args`, no AWS settings from this machine, and credentials
/// from the environment variables when `credentials` is set.
fn command(args: &[String], credentials: bool) -> Command {
    let mut cmd = Command::new(env!("CARGO_BIN_EXE_model-server"));
    cmd.args(args)
        .env("RUST_LOG", "info")
        .env("AWS_CONFIG_FILE", "/nonexistent/model-server-test")
        .env(
            "AWS_SHARED_CREDENTIALS_FILE",
            "/nonexistent/model-server-test",
        )
        .env("AWS_EC2_METADATA_DISABLED", "true")
        .env_remove("AWS_PROFILE")
        .env_remove("AWS_BEARER_TOKEN_BEDROCK")
        .env_remove("AWS_SESSION_TOKEN")
        .env_remove("AWS_ACCESS_KEY_ID")
        .env_remove("AWS_SECRET_ACCESS_KEY")
        .env_remove("AWS_CONTAINER_CREDENTIALS_FULL_URI")
        .env_remove("AWS_CONTAINER_CREDENTIALS_RELATIVE_URI")
        .env_remove("AWS_WEB_IDENTITY_TOKEN_FILE")
        .stderr(Stdio::piped())
        .stdout(Stdio::null());
    if credentials {
        cmd.env("AWS_ACCESS_KEY_ID", "AKIDBINARYTEST")
            .env("AWS_SECRET_ACCESS_KEY", "binary-test-secret");
    }
    cmd
}

/// Starts `cmd`; returns it and the first stderr line for which `wanted` gives a value.
fn spawn_until<F>(mut cmd: Command, mut wanted: F) -> (Server, String)
where
    F: FnMut(&str) -> Option<String> + Send + 'static,
{
    let mut child = cmd.spawn().expect("the binary starts");
    let stderr = child.stderr.take().unwrap();
    let (tx, rx) = std::sync::mpsc::channel();
    std::thread::spawn(move || {
        let mut sent = false;
        for line in BufReader::new(stderr).lines().map_while(Result::ok) {
            if !sent {
                if let Some(found) = wanted(&line) {
                    let _ = tx.send(found);
                    sent = true;
                }
            }
        }
    });
    let found = rx
        .recv_timeout(Duration::from_secs(30))
        .expect("the server logs the expected line");
    (Server(child), found)
}

/// Starts the binary with credentials; returns it and its URL, read from its start-up line.
fn spawn(args: &[String]) -> (Server, String) {
    spawn_until(command(args, true), |line| {
        line.split("ModelServer listening on ")
            .nth(1)
            .map(|rest| rest.split_whitespace().next().unwrap().to_string())
    })
}

#[test]
fn without_credentials_or_emulator_the_server_warns_how_to_fix_it() {
    let args = ["--bind".to_string(), "127.0.0.1:0".to_string()];
    let (_server, line) = spawn_until(command(&args, false), |line| {
        line.contains("No AWS credentials found")
            .then(|| line.to_string())
    });
    assert!(
        line.contains("AWS_ACCESS_KEY_ID") && line.contains("--emulator"),
        "{line}"
    );
}

#[actix_web::test]
async fn binary_serves_a_bedrock_endpoint_with_env_credentials_and_logs_the_seed_lines() {
    let emulator = Emulator::start_in_thread("127.0.0.1:0", EmulatorConfig::default(), 1).unwrap();
    let dir = std::env::temp_dir().join(format!("model-server-binary-{}", std::process::id()));
    let log = dir.join("logs").join("model_server.log");
    let (_server, url) = spawn(&[
        "--bind".into(),
        "127.0.0.1:0".into(),
        "--bedrock-endpoint".into(),
        emulator.endpoint(),
        "--region".into(),
        "us-west-2".into(),
        "--log-file".into(),
        log.display().to_string(),
        "--backoff-base-ms".into(),
        "20".into(),
        "--backoff-cap-ms".into(),
        "100".into(),
    ]);

    // Six throttles, then success: the adaptive pacer starts pacing the model (the shared
    // pre-emptive backoff), and the success resets the consecutive-throttle counter.
    emulator.script(
        Some(MODEL),
        vec![Scripted::Fault("ThrottlingException".parse().unwrap()); 6],
    );
    let secret_prompt = "my private prompt 8c1f2e";
    let mut body = request(MODEL, secret_prompt);
    body["max_retries"] = json!(6);
    let reply = post_raw(
        &url,
        "/infer",
        Some("application/json"),
        body.to_string().into_bytes(),
    )
    .await;
    assert_eq!(reply.status, 200, "{:?}", reply.json);
    assert_eq!(reply.json["attempts"], 7);
    assert!(reply.json["response"]
        .as_str()
        .unwrap()
        .contains(secret_prompt));
    // Signed with SigV4 from the environment's credentials.
    let auth = emulator.stats().last_headers.get("authorization").cloned();
    assert_eq!(auth.as_deref(), Some("AWS4-HMAC-SHA256"));

    // A validation error from Bedrock, for the error line.
    emulator.script(
        Some(MODEL),
        vec![Scripted::Fault("ValidationException".parse().unwrap())],
    );
    let reply = post_raw(
        &url,
        "/infer",
        None,
        json!(request(MODEL, "x")).to_string().into_bytes(),
    )
    .await;
    assert_eq!(reply.status, 400);

    let text = std::fs::read_to_string(&log).expect("--log-file is written");
    for line in [
        "Created claude worker for ",
        "Claude API error (ThrottlingException): ",
        "Pre-emptive backoff due to shared throttling...",
        "Request succeeded, resetting shared throttle counter...",
        "Claude API error (ValidationException): ",
        "ModelServer listening on http://",
    ] {
        assert!(text.contains(line), "log lacks {line:?}:\n{text}");
    }
    for secret in [secret_prompt, "AKIDBINARYTEST", "binary-test-secret"] {
        assert!(!text.contains(secret), "the log leaks {secret:?}");
    }
    let _ = std::fs::remove_dir_all(dir);
}

impl Server {
    /// Sends SIGTERM.
    fn terminate(&self) {
        let status = Command::new("kill")
            .args(["-TERM", &self.0.id().to_string()])
            .status()
            .expect("kill runs");
        assert!(status.success());
    }

    /// Waits up to `within` for the process to exit; its exit status.
    fn wait_exit(&mut self, within: Duration) -> Option<std::process::ExitStatus> {
        let deadline = std::time::Instant::now() + within;
        while std::time::Instant::now() < deadline {
            if let Some(status) = self.0.try_wait().unwrap() {
                return Some(status);
            }
            std::thread::sleep(Duration::from_millis(20));
        }
        None
    }
}

/// Starts the binary on its built-in emulator with `extra` flags.
fn spawn_with_emulator(extra: &[&str]) -> (Server, String) {
    let mut args: Vec<String> = ["--emulator", "--bind", "127.0.0.1:0"]
        .iter()
        .map(|s| s.to_string())
        .collect();
    args.extend(extra.iter().map(|s| s.to_string()));
    spawn(&args)
}

/// Sends `n` requests in the background; returns their tasks.
fn send_in_background(url: &str, n: usize) -> Vec<actix_web::rt::task::JoinHandle<common::Reply>> {
    (0..n)
        .map(|i| {
            let url = url.to_string();
            actix_web::rt::spawn(async move {
                let body = request(MODEL, &format!("in flight {i}")).to_string();
                post_raw(&url, "/infer", Some("application/json"), body.into_bytes()).await
            })
        })
        .collect()
}

async fn in_flight(url: &str) -> u64 {
    let mut response = common::client()
        .get(format!("{url}/status"))
        .send()
        .await
        .unwrap();
    let status: serde_json::Value = response.json().await.unwrap();
    status["pools"][0]["in_flight"].as_u64().unwrap()
}

#[actix_web::test]
async fn sigterm_refuses_new_requests_finishes_running_ones_and_exits_zero() {
    let (mut server, url) =
        spawn_with_emulator(&["--emulator-latency-ms", "1500", "--shutdown-timeout", "10"]);
    let running = send_in_background(&url, 3);
    assert!(
        common::eventually(Duration::from_secs(10), || async {
            in_flight(&url).await == 3
        })
        .await
    );
    server.terminate();
    // Shutdown has begun once /health says so (a request sent before the signal is handled
    // is still admitted and runs like the others).
    let draining = common::eventually(Duration::from_secs(5), || async {
        match common::client().get(format!("{url}/health")).send().await {
            Ok(mut health) => {
                let _ = health.body().await;
                health.status() == 503
            }
            Err(_) => false,
        }
    })
    .await;
    assert!(draining, "/health did not report the shutdown");
    // New requests are now refused at once while the running ones finish.
    let reply = post_raw(
        &url,
        "/infer",
        None,
        request(MODEL, "late").to_string().into_bytes(),
    )
    .await;
    assert_eq!(reply.status, 503, "{:?}", reply.json);
    assert!(reply.error().contains("shutting down"), "{}", reply.error());
    assert!(reply.retry_after.is_some());
    for task in running {
        let reply = task.await.unwrap();
        assert_eq!(reply.status, 200, "{:?}", reply.json);
    }
    let status = server
        .wait_exit(Duration::from_secs(10))
        .expect("the server exits");
    assert!(status.success(), "{status:?}");
}

#[actix_web::test]
async fn sigterm_answers_what_cannot_finish_in_the_shutdown_timeout_then_exits_zero() {
    let (mut server, url) = spawn_with_emulator(&[
        "--emulator-latency-ms",
        "20000",
        "--shutdown-timeout",
        "0.5",
    ]);
    let running = send_in_background(&url, 2);
    assert!(
        common::eventually(Duration::from_secs(10), || async {
            in_flight(&url).await == 2
        })
        .await
    );
    let started = std::time::Instant::now();
    server.terminate();
    for task in running {
        let reply = task.await.unwrap();
        assert_eq!(reply.status, 503, "{:?}", reply.json);
        assert!(reply.error().contains("shutting down"), "{}", reply.error());
    }
    assert!(
        started.elapsed() < Duration::from_secs(3),
        "{:?}",
        started.elapsed()
    );
    let status = server
        .wait_exit(Duration::from_secs(10))
        .expect("the server exits");
    assert!(status.success(), "{status:?}");
}

/// Starts the binary on its built-in emulator with `extra` flags; returns it, its URL and
/// every stderr line it writes (collected as they come).
fn spawn_collecting(
    extra: &[&str],
) -> (
    Server,
    String,
    std::sync::Arc<std::sync::Mutex<Vec<String>>>,
) {
    let mut args: Vec<String> = ["--emulator", "--bind", "127.0.0.1:0"]
        .iter()
        .map(|s| s.to_string())
        .collect();
    args.extend(extra.iter().map(|s| s.to_string()));
    let mut child = command(&args, false).spawn().expect("the binary starts");
    let stderr = child.stderr.take().unwrap();
    let lines = std::sync::Arc::new(std::sync::Mutex::new(Vec::new()));
    let (tx, rx) = std::sync::mpsc::channel();
    let collected = lines.clone();
    std::thread::spawn(move || {
        for line in BufReader::new(stderr).lines().map_while(Result::ok) {
            if let Some(rest) = line.split("ModelServer listening on ").nth(1) {
                let url = rest.split_whitespace().next().unwrap().to_string();
                let _ = tx.send(url);
            }
            collected.lock().unwrap().push(line);
        }
    });
    let url = rx
        .recv_timeout(Duration::from_secs(30))
        .expect("the server logs its address");
    (Server(child), url, lines)
}

#[actix_web::test]
async fn log_lines_carry_request_ids_in_text_and_json_and_never_prompts_completions_or_keys() {
    let prompt = "PROMPT-7f3a-not-for-logs";
    let key = "LOGTEST-KEY-5e1a";
    let wrong_key = "WRONG-KEY-91c2";
    for format in ["text", "json"] {
        let (_server, url, lines) = spawn_collecting(&[
            "--log-format",
            format,
            "--api-key",
            key,
            "--emulator-latency-ms",
            "0",
        ]);
        // 1. A success (its completion quotes the prompt), a wrong key, an invalid request
        // carrying the prompt, and a scrape.
        let mut ok = common::client()
            .post(format!("{url}/infer"))
            .insert_header(("x-api-key", key))
            .insert_header(("x-request-id", "log-test-ok"))
            .send_json(&request(MODEL, prompt))
            .await
            .unwrap();
        assert_eq!(ok.status(), 200);
        let body: serde_json::Value = ok.json().await.unwrap();
        assert!(body["response"].as_str().unwrap().contains(prompt));
        let mut refused = common::client()
            .post(format!("{url}/infer"))
            .insert_header(("authorization", format!("Bearer {wrong_key}")))
            .insert_header(("x-request-id", "log-test-401"))
            .send_json(&request(MODEL, prompt))
            .await
            .unwrap();
        assert_eq!(refused.status(), 401);
        let _ = refused.body().await;
        let mut invalid = request(MODEL, prompt);
        invalid["max_retries"] = json!("three");
        let mut bad = common::client()
            .post(format!("{url}/infer"))
            .insert_header(("x-api-key", key))
            .insert_header(("x-request-id", "log-test-400"))
            .send_json(&invalid)
            .await
            .unwrap();
        assert_eq!(bad.status(), 400);
        let _ = bad.body().await;

        // 2. Each request's access line, once written.
        let access = |id: &str| {
            lines
                .lock()
                .unwrap()
                .iter()
                .find(|l| l.contains("model_server::access") && l.contains(id))
                .cloned()
        };
        assert!(
            common::eventually(Duration::from_secs(10), || async {
                ["log-test-ok", "log-test-401", "log-test-400"]
                    .iter()
                    .all(|id| access(id).is_some())
            })
            .await,
            "access lines missing:\n{}",
            lines.lock().unwrap().join("\n")
        );
        let ok_line = access("log-test-ok").unwrap();
        let refused_line = access("log-test-401").unwrap();
        if format == "json" {
            let ok_line: serde_json::Value = serde_json::from_str(&ok_line).unwrap();
            assert_eq!(ok_line["level"], "INFO");
            assert_eq!(ok_line["target"], "model_server::access");
            assert_eq!(ok_line["request_id"], "log-test-ok");
            assert_eq!(ok_line["route"], "/infer");
            assert_eq!(ok_line["status"], 200);
            assert_eq!(ok_line["model"], MODEL);
            assert_eq!(ok_line["attempts"], 1);
            assert!(ok_line["duration_ms"].as_f64().unwrap() > 0.0);
            assert!(ok_line["bedrock_request_id"].as_str().is_some());
            assert!(ok_line["time"].as_str().unwrap().ends_with('Z'));
            let refused_line: serde_json::Value = serde_json::from_str(&refused_line).unwrap();
            assert_eq!(refused_line["status"], 401);
            assert_eq!(refused_line["error_type"], "unauthorized");
            // Every line is one JSON object with the four fixed fields.
            for line in lines.lock().unwrap().iter() {
                let parsed: serde_json::Value = serde_json::from_str(line)
                    .unwrap_or_else(|e| panic!("not a JSON line ({e}): {line}"));
                for field in ["time", "level", "target", "message"] {
                    assert!(parsed[field].is_string(), "{field} missing: {line}");
                }
            }
        } else {
            for part in [
                "request_id=log-test-ok",
                "route=/infer",
                "status=200",
                "attempts=1",
            ] {
                assert!(ok_line.contains(part), "{part} missing: {ok_line}");
            }
            assert!(
                refused_line.contains("error_type=unauthorized"),
                "{refused_line}"
            );
        }
        // 3. Nothing of the prompt, the completion or the keys, at any level written.
        for line in lines.lock().unwrap().iter() {
            for secret in [prompt, key, wrong_key] {
                assert!(
                    !line.contains(secret),
                    "{format} log leaks {secret:?}: {line}"
                );
            }
        }
    }
}
