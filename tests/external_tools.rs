//! The outside programs `scripts/test` provides are there and run: `promtool` and headless
//! Chromium. (The Python SDKs are proven by `tests/python_sdks.rs`.)

mod common;

use std::process::Command;

use common::external::{chromium, chromium_headless, promtool, ScratchDir};

/// Runs `command` and returns its stdout, panicking with both outputs when it fails.
fn stdout_of(mut command: Command) -> String {
    let output = command
        .output()
        .unwrap_or_else(|e| panic!("cannot run {command:?}: {e}"));
    assert!(
        output.status.success(),
        "{command:?} failed ({})\n--- stdout ---\n{}\n--- stderr ---\n{}",
        output.status,
        String::from_utf8_lossy(&output.stdout),
        String::from_utf8_lossy(&output.stderr)
    );
    String::from_utf8_lossy(&output.stdout).into_owned()
}

#[test]
fn promtool_reports_its_version() {
    let mut command = Command::new(promtool());
    command.arg("--version");
    let version = stdout_of(command);
    assert!(version.starts_with("promtool, version "), "{version}");
}

#[test]
fn chromium_reports_its_version() {
    let mut command = Command::new(chromium());
    command.arg("--version");
    let version = stdout_of(command);
    assert!(version.starts_with("Chromium "), "{version}");
}

/// Headless Chromium loads a local page, runs its script and prints the resulting DOM.
#[test]
fn headless_chromium_runs_a_pages_script() {
    let scratch = ScratchDir::new("chromium");
    let page = scratch.path.join("page.html");
    std::fs::write(
        &page,
        "<!doctype html><p id=out>not run</p>\
         <script>document.getElementById('out').textContent = 'script ran';</script>",
    )
    .expect("write the page");
    let profile = scratch.path.join("profile");

    let mut command = chromium_headless(&profile);
    command
        .arg("--dump-dom")
        .arg(format!("file://{}", page.display()));
    let dom = stdout_of(command);

    assert!(dom.contains(r#"<p id="out">script ran</p>"#), "{dom}");
}
