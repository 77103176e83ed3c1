//! Logging: `env_logger` at `info` unless `RUST_LOG` says otherwise, to stderr and, with
//! `--log-file`, also appended to a file, in one of two formats ([`LogFormat`]):
//!
//! - `text`: env_logger's line, `[TIME LEVEL TARGET] message`, followed by the record's
//!   key-value pairs as ` key=value` (absent values left out);
//! - `json`: one JSON object per line, `time` (RFC 3339, UTC, ms), `level`, `target`,
//!   `message`, then the record's key-value pairs as fields of their own (numbers stay
//!   numbers, absent values are left out).
//!
//! Lines about a request carry `request_id` (the `x-request-id` the client got back); the
//! access line written when a response has gone out (target `model_server::access`, see
//! [`crate::observe`]) adds `method`, `route`, `status`, `duration_ms`, `model`, `attempts`,
//! `bedrock_request_id` and `error_type`. Silence it with `RUST_LOG=info,model_server::access=warn`.
//!
//! Prompts, completions and credentials are never logged at info level: no log line formats
//! a request or response body, and API keys are never formatted at all.

use std::fs::{File, OpenOptions};
use std::io::{self, Write};
use std::path::Path;

use log::kv::{self, VisitSource, VisitValue};
use serde_json::Value;

/// How log lines are written.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, clap::ValueEnum)]
pub enum LogFormat {
    /// env_logger's text line with ` key=value` pairs.
    #[default]
    Text,
    /// One JSON object per line.
    Json,
}

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
pub fn init(log_file: Option<&Path>, format: LogFormat) -> io::Result<()> {
    let mut builder =
        env_logger::Builder::from_env(env_logger::Env::default().default_filter_or("info"));
    if let Some(path) = log_file {
        if let Some(dir) = path.parent().filter(|d| !d.as_os_str().is_empty()) {
            std::fs::create_dir_all(dir)?;
        }
        let file = OpenOptions::new().create(true).append(true).open(path)?;
        builder.target(env_logger::Target::Pipe(Box::new(Tee { file })));
    }
    match format {
        LogFormat::Text => {
            builder.format_key_values(|buf, source| {
                let mut pairs = Vec::new();
                let _ = source.visit(&mut Collect(&mut pairs));
                for (key, value) in pairs {
                    match value {
                        Value::String(text) => write!(buf, " {key}={text}")?,
                        other => write!(buf, " {key}={other}")?,
                    }
                }
                Ok(())
            });
        }
        LogFormat::Json => {
            builder.format(|buf, record| {
                let line = json_line(
                    &buf.timestamp_millis().to_string(),
                    record.level().as_str(),
                    record.target(),
                    &record.args().to_string(),
                    record.key_values(),
                );
                writeln!(buf, "{line}")
            });
        }
    }
    builder.init();
    Ok(())
}

/// One JSON log line: `time`, `level`, `target`, `message`, then each key-value pair of
/// `source` whose value is present (a pair named like one of the first four is left out).
pub fn json_line(
    time: &str,
    level: &str,
    target: &str,
    message: &str,
    source: &dyn kv::Source,
) -> String {
    let mut pairs = Vec::new();
    let _ = source.visit(&mut Collect(&mut pairs));
    let mut line = String::with_capacity(160 + message.len());
    line.push('{');
    let mut first = true;
    let mut field = |line: &mut String, key: &str, value: &Value| {
        if !first {
            line.push(',');
        }
        first = false;
        line.push_str(&Value::from(key).to_string());
        line.push(':');
        line.push_str(&value.to_string());
    };
    field(&mut line, "time", &Value::from(time));
    field(&mut line, "level", &Value::from(level));
    field(&mut line, "target", &Value::from(target));
    field(&mut line, "message", &Value::from(message));
    for (key, value) in pairs {
        if !matches!(key.as_str(), "time" | "level" | "target" | "message") {
            field(&mut line, &key, &value);
        }
    }
    line.push('}');
    line
}

/// Collects a record's key-value pairs as JSON values, leaving out absent ones.
struct Collect<'a>(&'a mut Vec<(String, Value)>);

impl<'kvs> VisitSource<'kvs> for Collect<'_> {
    fn visit_pair(&mut self, key: kv::Key<'kvs>, value: kv::Value<'kvs>) -> Result<(), kv::Error> {
        let mut converted = None;
        value.visit(ToJson(&mut converted))?;
        if let Some(value) = converted {
            self.0.push((key.as_str().to_string(), value));
        }
        Ok(())
    }
}

/// Turns one key-value value into JSON: numbers, booleans and strings as such, absent values
/// as nothing, anything else as its `Display` text.
struct ToJson<'a>(&'a mut Option<Value>);

impl<'v> VisitValue<'v> for ToJson<'_> {
    fn visit_any(&mut self, value: kv::Value) -> Result<(), kv::Error> {
        *self.0 = Some(Value::from(value.to_string()));
        Ok(())
    }

    fn visit_null(&mut self) -> Result<(), kv::Error> {
        *self.0 = None;
        Ok(())
    }

    fn visit_u64(&mut self, value: u64) -> Result<(), kv::Error> {
        *self.0 = Some(Value::from(value));
        Ok(())
    }

    fn visit_i64(&mut self, value: i64) -> Result<(), kv::Error> {
        *self.0 = Some(Value::from(value));
        Ok(())
    }

    fn visit_f64(&mut self, value: f64) -> Result<(), kv::Error> {
        *self.0 = Some(serde_json::Number::from_f64(value).map_or(Value::Null, Value::Number));
        Ok(())
    }

    fn visit_bool(&mut self, value: bool) -> Result<(), kv::Error> {
        *self.0 = Some(Value::from(value));
        Ok(())
    }

    fn visit_str(&mut self, value: &str) -> Result<(), kv::Error> {
        *self.0 = Some(Value::from(value));
        Ok(())
    }

    fn visit_borrowed_str(&mut self, value: &'v str) -> Result<(), kv::Error> {
        self.visit_str(value)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn json_lines_have_the_fixed_fields_first_and_typed_pairs_after() {
        let model: Option<&str> = Some("m");
        let absent: Option<&str> = None;
        let pairs: [(&str, kv::Value); 6] = [
            ("request_id", kv::Value::from("r-1")),
            ("status", kv::Value::from(200u16)),
            ("duration_ms", kv::Value::from(1.5f64)),
            ("model", kv::Value::from_any(&model)),
            ("bedrock_request_id", kv::Value::from_any(&absent)),
            ("message", kv::Value::from("shadowed")),
        ];
        let line = json_line(
            "2026-11-29T10:00:00.123Z",
            "INFO",
            "model_server::access",
            "POST /infer \"quoted\" 200",
            &pairs,
        );
        assert!(
            line.starts_with(r#"{"time":"2026-11-29T10:00:00.123Z","level":"INFO","target":"model_server::access","message":"POST /infer \"quoted\" 200","request_id":"r-1""#),
            "{line}"
        );
        let parsed: Value = serde_json::from_str(&line).unwrap();
        assert_eq!(parsed["status"], 200);
        assert_eq!(parsed["duration_ms"], 1.5);
        assert_eq!(parsed["model"], "m");
        assert!(parsed.get("bedrock_request_id").is_none(), "{line}");
        assert_eq!(parsed["message"], "POST /infer \"quoted\" 200");
    }
}
