//! The live status page at `GET /`, in Debian's headless Chromium: it renders, the numbers it
//! shows are the ones `/status` gives, it logs nothing to the console, and it asks for a key
//! when keys are configured. The test saves a screenshot as `status-page.png` under Cargo's
//! target tmp dir (`target/tmp/`).

mod common;

use std::path::PathBuf;
use std::process::Output;

use common::external::{chromium_headless, ScratchDir};
use common::{request, start, MODEL};
use serde_json::Value;

/// How much virtual time the page gets: long enough for several polls (one a second).
const VIRTUAL_TIME_MS: &str = "3500";

/// Runs headless Chromium on `url` with `args` (its own profile, console messages on stderr).
async fn chromium(url: String, args: Vec<String>) -> Output {
    tokio::task::spawn_blocking(move || {
        let scratch = ScratchDir::new("status-page");
        let mut command = chromium_headless(&scratch.path.join("profile"));
        command
            .args(["--enable-logging=stderr", "--v=0"])
            .arg(format!("--virtual-time-budget={VIRTUAL_TIME_MS}"))
            .args(&args)
            .arg(&url);
        let output = command.output().expect("chromium runs");
        assert!(
            output.status.success(),
            "chromium failed ({}):\n{}",
            output.status,
            String::from_utf8_lossy(&output.stderr)
        );
        output
    })
    .await
    .expect("chromium ran")
}

/// The page's console messages (Chromium prints each as an `INFO:CONSOLE` line).
fn console_lines(output: &Output) -> Vec<String> {
    String::from_utf8_lossy(&output.stderr)
        .lines()
        .filter(|l| l.contains(":CONSOLE"))
        .map(str::to_string)
        .collect()
}

/// The `data-value` of the element showing `field` for `model` in the dumped DOM.
fn shown(dom: &str, model: &str, field: &str) -> Option<String> {
    let anchor = format!(r#"data-model="{model}" data-field="{field}" data-value=""#);
    let start = dom.find(&anchor)? + anchor.len();
    let end = dom[start..].find('"')? + start;
    Some(dom[start..end].to_string())
}

/// A `/status` value as the page's `data-value` writes it (absent: empty).
fn as_shown(value: &Value) -> Option<f64> {
    value.as_f64()
}

/// Whether the page's `text` is `value` (numbers compared as numbers).
fn same(text: &str, value: &Value) -> bool {
    match (text.parse::<f64>().ok(), as_shown(value)) {
        (Some(a), Some(b)) => a == b,
        (None, None) => text.is_empty() || value.as_str() == Some(text),
        _ => false,
    }
}

#[actix_web::test]
async fn the_status_page_shows_what_status_says_and_logs_no_console_errors() {
    // 0. The console check can see console messages at all.
    let scratch = ScratchDir::new("console-control");
    let control = scratch.path.join("control.html");
    std::fs::write(
        &control,
        "<script>console.error('control message')</script>",
    )
    .unwrap();
    let out = chromium(
        format!("file://{}", control.display()),
        vec!["--dump-dom".into()],
    )
    .await;
    assert!(
        console_lines(&out)
            .iter()
            .any(|l| l.contains("control message")),
        "Chromium no longer reports console messages on stderr:\n{}",
        String::from_utf8_lossy(&out.stderr)
    );

    // 1. A few requests: four plain ones, one after a throttle.
    let server = start(&[]).await;
    for i in 0..4 {
        assert_eq!(
            server
                .infer(&request(MODEL, &format!("hi {i}")))
                .await
                .status,
            200
        );
    }
    server.script(MODEL, &["ThrottlingException"]);
    assert_eq!(
        server
            .infer(&request(MODEL, "after a throttle"))
            .await
            .status,
        200
    );

    // 2. /status, the page, /status again: the page polled in between.
    let before = server.status().await;
    let out = chromium(format!("{}/", server.url), vec!["--dump-dom".into()]).await;
    let after = server.status().await;
    let dom = String::from_utf8_lossy(&out.stdout).into_owned();
    assert!(
        dom.contains(r#"data-ready="1""#),
        "the page did not render:\n{dom}"
    );
    let polls: u32 = dom
        .split(r#"data-poll=""#)
        .nth(1)
        .and_then(|rest| rest.split('"').next())
        .and_then(|n| n.parse().ok())
        .unwrap();
    assert!(polls >= 2, "the page polled {polls} time(s)");
    assert_eq!(
        console_lines(&out),
        Vec::<String>::new(),
        "console messages"
    );

    // 3. Every number of the model's row is the one /status gave (before or after the page
    // read it: the rates are averages over a sliding window).
    let row = |status: &Value| -> Value {
        status["models"]
            .as_array()
            .unwrap()
            .iter()
            .find(|m| m["model"] == MODEL)
            .cloned()
            .expect("the model has a row")
    };
    let (a, b) = (row(&before), row(&after));
    assert!(a["recent"]["latency_p50_ms"].as_f64().is_some());
    for (field, path) in [
        ("model", &["model"][..]),
        ("queued", &["queued"]),
        ("calls_in_flight", &["calls_in_flight"]),
        ("consecutive_throttles", &["consecutive_throttles"]),
        ("paced_calls_per_sec", &["paced_calls_per_sec"]),
        ("paced_tokens_per_sec", &["paced_tokens_per_sec"]),
        ("calls_per_sec", &["recent", "calls_per_sec"]),
        ("throttled_pct", &["recent", "throttled_pct"]),
        ("ok_per_sec", &["recent", "ok_per_sec"]),
        ("errors_per_sec", &["recent", "errors_per_sec"]),
        ("latency_p50_ms", &["recent", "latency_p50_ms"]),
        ("latency_p99_ms", &["recent", "latency_p99_ms"]),
    ] {
        let text =
            shown(&dom, MODEL, field).unwrap_or_else(|| panic!("no {field} on the page:\n{dom}"));
        let pick = |v: &Value| path.iter().fold(v.clone(), |v, k| v[*k].clone());
        assert!(
            same(&text, &pick(&a)) || same(&text, &pick(&b)),
            "{field}: the page shows {text:?}, /status said {} then {}",
            pick(&a),
            pick(&b)
        );
    }
    // The throttle happened in the last five minutes: the chart's data says so.
    let history = &b["recent"]["history"];
    let sum = |k: &str| {
        history[k]
            .as_array()
            .unwrap()
            .iter()
            .map(|v| v.as_u64().unwrap())
            .sum::<u64>()
    };
    assert_eq!((sum("ok"), sum("throttled")), (5, 1));
    assert!(dom.contains("<svg class=\"chart\""), "no chart:\n{dom}");

    // 4. A screenshot for people.
    let shot: PathBuf = PathBuf::from(env!("CARGO_TARGET_TMPDIR")).join("status-page.png");
    let _ = std::fs::remove_file(&shot);
    let out = chromium(
        format!("{}/", server.url),
        vec![
            format!("--screenshot={}", shot.display()),
            "--window-size=1500,360".into(),
            "--hide-scrollbars".into(),
        ],
    )
    .await;
    assert_eq!(
        console_lines(&out),
        Vec::<String>::new(),
        "console messages"
    );
    let png = std::fs::read(&shot).expect("the screenshot was saved");
    assert!(png.starts_with(b"\x89PNG\r\n\x1a\n"), "not a PNG");
    eprintln!("screenshot: {}", shot.display());
}

#[actix_web::test]
async fn with_api_keys_the_status_page_asks_for_one() {
    let server = start(&["--api-key", "page-test-key"]).await;
    let out = chromium(format!("{}/", server.url), vec!["--dump-dom".into()]).await;
    let dom = String::from_utf8_lossy(&out.stdout);
    assert!(dom.contains(r#"data-auth="required""#), "{dom}");
    assert!(
        dom.contains(r#"<form id="keyform">"#),
        "the key form is hidden:\n{dom}"
    );
    assert!(dom.contains(r#"<main id="main" hidden="">"#), "{dom}");
    assert!(!dom.contains(r#"data-ready="1""#), "{dom}");
    // Nothing but the refused /status request itself reaches the console.
    for line in console_lines(&out) {
        assert!(line.contains("401"), "unexpected console message: {line}");
    }
}
