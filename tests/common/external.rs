//! The outside programs some integration tests drive: the Python interpreter of the venv that
//! holds the official SDKs (anthropic, openai, boto3), Prometheus's `promtool` and Debian's
//! `chromium`.
//!
//! `scripts/test` installs them and says where they are in `MODEL_SERVER_TEST_PYTHON`,
//! `MODEL_SERVER_TEST_PROMTOOL` and `MODEL_SERVER_TEST_CHROMIUM`. Without those variables
//! (a plain `cargo test`) each program is looked for where `scripts/test` puts it; a test whose
//! program is nowhere fails with a message telling to run `scripts/test`, never skips.
//!
//! Python test scripts live in `tests/python/` ([`python_script`]) and get the URL of the
//! server under test as an argument. [`run_python`] blocks: an async test whose server runs
//! on its own runtime's thread calls it through `tokio::task::spawn_blocking`.

use std::io::Read;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Output, Stdio};
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::mpsc;
use std::time::Duration;

/// How long one Python test script may run before it is killed and its test fails.
const PYTHON_LIMIT: Duration = Duration::from_secs(120);

/// The repository's root (where `scripts/test` keeps `target/test-venv` and `target/tools`).
fn repo() -> &'static Path {
    Path::new(env!("CARGO_MANIFEST_DIR"))
}

/// The program named by `var`, else `fallback` when that file exists; else panics naming
/// `what` and `scripts/test`.
fn locate(var: &str, fallback: Option<PathBuf>, what: &str) -> PathBuf {
    if let Some(set) = std::env::var_os(var).filter(|v| !v.is_empty()) {
        let path = PathBuf::from(set);
        assert!(
            path.is_file(),
            "{var}={} is not a file: run `scripts/test`, which installs {what}, or correct {var}",
            path.display()
        );
        return path;
    }
    match fallback.filter(|path| path.is_file()) {
        Some(path) => path,
        None => panic!(
            "this test needs {what}, which is not installed: run it through `scripts/test` \
             (e.g. `scripts/test --test NAME`), which installs it and sets {var}"
        ),
    }
}

/// The first `name` on `PATH`.
fn on_path(name: &str) -> Option<PathBuf> {
    let path = std::env::var_os("PATH")?;
    std::env::split_paths(&path)
        .map(|dir| dir.join(name))
        .find(|candidate| candidate.is_file())
}

/// The venv's Python with the pinned SDKs: `MODEL_SERVER_TEST_PYTHON`, else
/// `target/test-venv/bin/python`.
pub fn python() -> PathBuf {
    locate(
        "MODEL_SERVER_TEST_PYTHON",
        Some(repo().join("target/test-venv/bin/python")),
        "the Python venv with the SDKs of tests/python/requirements.txt",
    )
}

/// Prometheus's `promtool`: `MODEL_SERVER_TEST_PROMTOOL`, else `target/tools/bin/promtool`.
pub fn promtool() -> PathBuf {
    locate(
        "MODEL_SERVER_TEST_PROMTOOL",
        Some(repo().join("target/tools/bin/promtool")),
        "promtool (from Debian's prometheus package)",
    )
}

/// Debian's Chromium: `MODEL_SERVER_TEST_CHROMIUM`, else `chromium` on `PATH`.
pub fn chromium() -> PathBuf {
    locate(
        "MODEL_SERVER_TEST_CHROMIUM",
        on_path("chromium"),
        "Debian's chromium",
    )
}

/// `tests/python/NAME`.
pub fn python_script(name: &str) -> PathBuf {
    repo().join("tests/python").join(name)
}

/// Runs a Python test script with the venv's interpreter: `python SCRIPT ARGS...`, with `env`
/// added to the environment. Returns its output when it exits 0; panics with its full stdout
/// and stderr when it fails, and kills it after [`PYTHON_LIMIT`].
pub fn run_python(script: &Path, args: &[&str], env: &[(&str, &str)]) -> Output {
    // Steps: start it with loopback kept off any proxy; collect both pipes on their own
    // threads (a full pipe would block it); wait for it within the limit.
    let mut command = Command::new(python());
    command
        .arg(script)
        .args(args)
        .env("PYTHONDONTWRITEBYTECODE", "1")
        .env("PYTHONUNBUFFERED", "1")
        .env("NO_PROXY", no_proxy())
        .env("no_proxy", no_proxy())
        .envs(env.iter().copied())
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped());
    let shown = format!("{} {}", script.display(), args.join(" "));
    let mut child = command
        .spawn()
        .unwrap_or_else(|e| panic!("cannot start {}: {e}", python().display()));
    let stdout = collect(child.stdout.take());
    let stderr = collect(child.stderr.take());
    let (status, timed_out) = wait_within(child, PYTHON_LIMIT);
    let output = Output {
        status,
        stdout: stdout.join().expect("stdout reader"),
        stderr: stderr.join().expect("stderr reader"),
    };
    if timed_out || !output.status.success() {
        panic!(
            "python {shown} {}\n--- stdout ---\n{}\n--- stderr ---\n{}",
            if timed_out {
                format!("was killed after {PYTHON_LIMIT:?}")
            } else {
                format!("failed ({})", output.status)
            },
            String::from_utf8_lossy(&output.stdout),
            String::from_utf8_lossy(&output.stderr),
        );
    }
    output
}

/// Runs the Python test script `tests/python/NAME` with `args` (see [`run_python`]) off the
/// test's runtime thread, so that the servers it talks to keep running on it; returns its
/// stdout.
pub async fn run_python_beside(name: &'static str, args: Vec<String>) -> String {
    let output = tokio::task::spawn_blocking(move || {
        let args: Vec<&str> = args.iter().map(String::as_str).collect();
        run_python(&python_script(name), &args, &[])
    })
    .await
    .expect("the script ran");
    String::from_utf8_lossy(&output.stdout).into_owned()
}

/// `NO_PROXY` with the loopback names added to what the environment has.
fn no_proxy() -> String {
    let inherited = std::env::var("NO_PROXY")
        .or_else(|_| std::env::var("no_proxy"))
        .unwrap_or_default();
    if inherited.is_empty() {
        "127.0.0.1,localhost,::1".to_owned()
    } else {
        format!("{inherited},127.0.0.1,localhost,::1")
    }
}

/// Reads a pipe to its end on a thread.
fn collect<R: Read + Send + 'static>(pipe: Option<R>) -> std::thread::JoinHandle<Vec<u8>> {
    std::thread::spawn(move || {
        let mut bytes = Vec::new();
        if let Some(mut pipe) = pipe {
            let _ = pipe.read_to_end(&mut bytes);
        }
        bytes
    })
}

/// Waits for `child` on a thread; past `limit` kills it (its pid stays its own until that
/// thread reaps it) and waits for the kill. Returns the exit status and whether it was killed.
fn wait_within(mut child: Child, limit: Duration) -> (std::process::ExitStatus, bool) {
    let pid = child.id();
    let (done, exited) = mpsc::channel();
    std::thread::spawn(move || {
        let _ = done.send(child.wait().expect("wait for the child"));
    });
    match exited.recv_timeout(limit) {
        Ok(status) => (status, false),
        Err(_) => {
            let _ = Command::new("kill")
                .args(["-KILL", &pid.to_string()])
                .status();
            (exited.recv().expect("the killed child is reaped"), true)
        }
    }
}

/// A fresh directory under the system's temp dir, removed on drop (a Chromium profile, a
/// page to load, a promtool input).
pub struct ScratchDir {
    /// The directory.
    pub path: PathBuf,
}

impl ScratchDir {
    /// Creates `TMP/model-server-LABEL-PID-N`.
    pub fn new(label: &str) -> ScratchDir {
        static NEXT: AtomicUsize = AtomicUsize::new(0);
        let path = std::env::temp_dir().join(format!(
            "model-server-{label}-{}-{}",
            std::process::id(),
            NEXT.fetch_add(1, Ordering::Relaxed)
        ));
        let _ = std::fs::remove_dir_all(&path);
        std::fs::create_dir_all(&path).expect("create a scratch dir");
        ScratchDir { path }
    }
}

impl Drop for ScratchDir {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.path);
    }
}

/// `chromium` in headless mode with the flags this closed network needs, and its own empty
/// profile in `profile`; the caller adds what to do (`--dump-dom URL`, `--screenshot`, ...).
///
/// `--no-sandbox` always: as root Chromium refuses to start without it, and without root its
/// sandbox needs user namespaces or the setuid helper, which containers often lack; the pages
/// it loads are the project's own. Background networking, component updates, sync and QUIC are
/// off, since every connection outside loopback is refused here; shared memory goes to the
/// temp dir, since a container's `/dev/shm` may be small.
pub fn chromium_headless(profile: &Path) -> Command {
    let mut command = Command::new(chromium());
    command
        .args([
            "--headless",
            "--no-sandbox",
            "--disable-gpu",
            "--disable-quic",
            "--no-first-run",
            "--disable-background-networking",
            "--disable-component-update",
            "--disable-sync",
            "--disable-dev-shm-usage",
        ])
        .arg(format!("--user-data-dir={}", profile.display()))
        .stdin(Stdio::null());
    command
}
