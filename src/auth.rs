//! Optional API keys. With none configured the API is open. With keys, every route but
//! `GET /health` (which stays open for load balancers), `GET /` (the status page, which holds
//! no data and asks for a key itself) and, with `--public-metrics`, `GET /metrics` needs
//! `Authorization: Bearer <key>` or `x-api-key: <key>`. An `Authorization` header of another scheme (a Bedrock client's
//! SigV4 signature, `AWS4-HMAC-SHA256 ...`) carries no key: the broker does not check
//! signatures, it signs its own calls. Keys are compared in constant time (every configured
//! key, every byte), and never logged.

use std::path::Path;

use actix_web::http::header;
use actix_web::HttpRequest;

use crate::error::ApiError;

/// The accepted keys.
#[derive(Clone, Default)]
pub struct ApiKeys {
    /// Each key's bytes; empty means the API is open.
    keys: Vec<Vec<u8>>,
}

impl std::fmt::Debug for ApiKeys {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "ApiKeys({} keys)", self.keys.len())
    }
}

impl ApiKeys {
    /// Keys from `--api-key` values and, if given, a keys file (one key per line; blank
    /// lines and lines starting with `#` are ignored).
    pub fn load(keys: &[String], file: Option<&Path>) -> std::io::Result<ApiKeys> {
        let mut all: Vec<String> = keys.iter().map(|k| k.trim().to_string()).collect();
        if let Some(path) = file {
            let text = std::fs::read_to_string(path).map_err(|e| {
                std::io::Error::new(
                    e.kind(),
                    format!("cannot read --api-keys-file {}: {e}", path.display()),
                )
            })?;
            all.extend(
                text.lines()
                    .map(str::trim)
                    .filter(|l| !l.is_empty() && !l.starts_with('#'))
                    .map(str::to_string),
            );
        }
        all.retain(|k| !k.is_empty());
        Ok(ApiKeys {
            keys: all.into_iter().map(String::into_bytes).collect(),
        })
    }

    /// Whether any key is required.
    pub fn enabled(&self) -> bool {
        !self.keys.is_empty()
    }

    /// How many keys are configured.
    pub fn len(&self) -> usize {
        self.keys.len()
    }

    /// Whether no key is configured.
    pub fn is_empty(&self) -> bool {
        self.keys.is_empty()
    }

    /// Admits `req` if the API is open or it carries a configured key.
    pub fn check(&self, req: &HttpRequest) -> Result<(), ApiError> {
        if self.keys.is_empty() {
            return Ok(());
        }
        let presented = presented_key(req).ok_or(ApiError::Unauthorized)?;
        // Compare with every key, without stopping at a match.
        let matched = self
            .keys
            .iter()
            .fold(false, |found, key| found | constant_time_eq(key, presented));
        if matched {
            Ok(())
        } else {
            Err(ApiError::Unauthorized)
        }
    }
}

/// The key a request presents: `Authorization: Bearer <key>`, else `x-api-key`.
fn presented_key(req: &HttpRequest) -> Option<&[u8]> {
    let headers = req.headers();
    if let Some(value) = headers.get(header::AUTHORIZATION) {
        let bytes = value.as_bytes();
        if bytes.len() > 7 && bytes[..7].eq_ignore_ascii_case(b"bearer ") {
            return Some(trim(&bytes[7..]));
        }
    }
    headers.get("x-api-key").map(|v| trim(v.as_bytes()))
}

fn trim(bytes: &[u8]) -> &[u8] {
    let start = bytes
        .iter()
        .position(|b| !b.is_ascii_whitespace())
        .unwrap_or(bytes.len());
    let end = bytes
        .iter()
        .rposition(|b| !b.is_ascii_whitespace())
        .map_or(start, |i| i + 1);
    &bytes[start..end]
}

/// Equality whose time depends only on the lengths, not on where the bytes differ.
fn constant_time_eq(a: &[u8], b: &[u8]) -> bool {
    if a.len() != b.len() {
        return false;
    }
    a.iter().zip(b).fold(0u8, |acc, (x, y)| acc | (x ^ y)) == 0
}

#[cfg(test)]
mod tests {
    use super::*;
    use actix_web::test::TestRequest;

    fn keys() -> ApiKeys {
        ApiKeys::load(&["k-one".into(), " k-two ".into(), "".into()], None).unwrap()
    }

    #[test]
    fn open_without_keys() {
        let open = ApiKeys::default();
        assert!(open
            .check(&TestRequest::default().to_http_request())
            .is_ok());
    }

    #[test]
    fn bearer_and_x_api_key_are_accepted() {
        let k = keys();
        assert_eq!(k.len(), 2);
        for (name, value) in [
            ("authorization", "Bearer k-one"),
            ("authorization", "bearer  k-two"),
            ("x-api-key", "k-two"),
        ] {
            let req = TestRequest::default()
                .insert_header((name, value))
                .to_http_request();
            assert!(k.check(&req).is_ok(), "{name}: {value}");
        }
    }

    #[test]
    fn missing_wrong_or_partial_keys_are_refused() {
        let k = keys();
        for (name, value) in [
            ("authorization", "Bearer k-on"),
            ("authorization", "Basic k-one"),
            (
                "authorization",
                "AWS4-HMAC-SHA256 Credential=k-one/20250101/us-east-1/bedrock/aws4_request, \
                 SignedHeaders=host, Signature=abc",
            ),
            ("authorization", "Bearer "),
            ("x-api-key", "k-one-and-more"),
            ("x-other", "k-one"),
        ] {
            let req = TestRequest::default()
                .insert_header((name, value))
                .to_http_request();
            assert!(
                matches!(k.check(&req), Err(ApiError::Unauthorized)),
                "{name}: {value}"
            );
        }
        assert!(k.check(&TestRequest::default().to_http_request()).is_err());
    }

    #[test]
    fn keys_file_skips_comments_and_blank_lines() {
        let path = std::env::temp_dir().join(format!("model-server-keys-{}", std::process::id()));
        std::fs::write(&path, "# team keys\nalpha\n\n  beta  \n").unwrap();
        let k = ApiKeys::load(&[], Some(&path)).unwrap();
        std::fs::remove_file(&path).unwrap();
        assert_eq!(k.len(), 2);
        let req = TestRequest::default()
            .insert_header(("x-api-key", "beta"))
            .to_http_request();
        assert!(k.check(&req).is_ok());
        assert!(ApiKeys::load(&[], Some(Path::new("/nonexistent/keys"))).is_err());
    }
}
