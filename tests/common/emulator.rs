//! The emulator on its own, without a broker: started in process, or its `bedrock-emulator`
//! binary run with flags.

use std::io::{BufRead, BufReader};
use std::process::{Command, Stdio};
use std::time::Duration;

use model_server::emulator::{Emulator, EmulatorConfig};
use serde_json::Value;

/// An emulator with `config` on a free loopback port, one worker.
pub fn start(config: EmulatorConfig) -> Emulator {
    Emulator::start("127.0.0.1:0", config, 1).expect("emulator starts")
}

/// The `bedrock-emulator` binary, without the `BEDROCK_EMULATOR_*` variables of the tests'
/// environment (a test sets what it means to).
pub fn binary() -> Command {
    let mut cmd = Command::new(env!("CARGO_BIN_EXE_bedrock-emulator"));
    for (name, _) in std::env::vars() {
        if name.starts_with("BEDROCK_EMULATOR_") {
            cmd.env_remove(name);
        }
    }
    cmd
}

/// Runs `cmd` (the binary with its flags, see [`binary`]), reads where it listens from its
/// log, and returns the configuration its admin API (`/_emulator/config`) reports; the
/// process is stopped before this returns.
pub async fn binary_config(mut cmd: Command) -> Value {
    cmd.env("RUST_LOG", "info")
        .stdout(Stdio::null())
        .stderr(Stdio::piped());
    let mut child = cmd.spawn().expect("bedrock-emulator starts");
    let stderr = child.stderr.take().unwrap();
    let (tx, rx) = std::sync::mpsc::channel();
    std::thread::spawn(move || {
        for line in BufReader::new(stderr).lines().map_while(Result::ok) {
            if let Some(rest) = line.split("listening on ").nth(1) {
                let _ = tx.send(rest.split_whitespace().next().unwrap_or("").to_owned());
            }
        }
    });
    let endpoint = rx.recv_timeout(Duration::from_secs(20));
    let cfg = match &endpoint {
        Ok(endpoint) => awc::Client::default()
            .get(format!("{endpoint}/_emulator/config"))
            .send()
            .await
            .ok(),
        Err(_) => None,
    };
    let cfg: Option<Value> = match cfg {
        Some(mut res) => res.json().await.ok(),
        None => None,
    };
    let _ = child.kill();
    let _ = child.wait();
    cfg.unwrap_or_else(|| panic!("no config from {endpoint:?}"))
}
