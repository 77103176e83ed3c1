//! Logging: `env_logger` at `info` unless `RUST_LOG` says otherwise, to stderr and, with
//! `--log-file`, also appended to a file. Prompts, completions and credentials are never
//! logged at info level.

use std::fs::{File, OpenOptions};
use std::io::{self, Write};
use std::path::Path;

/// Writes every log line to stderr and to a file.
struct Tee {
    /// The `--log-file`, opened for appending.
    file: File,
}

impl Write for Tee {
    fn write(&mut self, buf: &[u8]) -> io::Result<usize> {
        io::stderr().write_all(buf)?;
        self.file.write_all(buf)?;
        Ok(buf.len())
    }

    fn flush(&mut self) -> io::Result<()> {
        io::stderr().flush()?;
        self.file.flush()
    }
}

/// Installs the global logger. Call once, first thing in `main`.
pub fn init(log_file: Option<&Path>) -> io::Result<()> {
    let mut builder =
        env_logger::Builder::from_env(env_logger::Env::default().default_filter_or("info"));
    if let Some(path) = log_file {
        if let Some(dir) = path.parent().filter(|d| !d.as_os_str().is_empty()) {
            std::fs::create_dir_all(dir)?;
        }
        let file = OpenOptions::new().create(true).append(true).open(path)?;
        builder.target(env_logger::Target::Pipe(Box::new(Tee { file })));
    }
    builder.init();
    Ok(())
}
