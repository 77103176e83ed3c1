//! JSON parsing that refuses duplicate object keys.
//!
//! `serde_json` keeps the last of two equal keys, so `{"max_tokens": 10, "max_tokens": 9999}`
//! would mean whatever the last parser in a chain decides. The broker refuses such a request
//! instead (a 400 naming the key), so what it validated is exactly what it sends. Depth is
//! still bounded by `serde_json`'s recursion limit (128).

use std::cell::RefCell;
use std::fmt;

use serde::de::{self, DeserializeSeed, MapAccess, SeqAccess, Visitor};
use serde_json::{Map, Number, Value};

/// Why a body is not acceptable JSON.
#[derive(Debug, Clone, PartialEq)]
pub enum JsonError {
    /// Not JSON at all (syntax, encoding, depth, numbers out of range).
    Syntax(String),
    /// A key appears twice in one object; the path names it (`payload.messages[0].role`).
    DuplicateKey(String),
}

/// Parses `bytes` as one JSON value, refusing duplicate keys anywhere in it.
pub fn parse(bytes: &[u8]) -> Result<Value, JsonError> {
    let duplicate = RefCell::new(None);
    let mut de = serde_json::Deserializer::from_slice(bytes);
    let seed = Strict {
        path: String::new(),
        duplicate: &duplicate,
    };
    let result = seed.deserialize(&mut de).and_then(|v| de.end().map(|()| v));
    match (result, duplicate.into_inner()) {
        (_, Some(path)) => Err(JsonError::DuplicateKey(path)),
        (Ok(value), None) => Ok(value),
        (Err(e), None) => Err(JsonError::Syntax(e.to_string())),
    }
}

/// How a key appears in an error's field path: as it is, or `""` when it is empty.
pub fn key_name(key: &str) -> String {
    if key.is_empty() {
        "\"\"".to_string()
    } else {
        key.to_string()
    }
}

/// Builds a [`Value`] at `path`, recording the first duplicate key it meets.
struct Strict<'a> {
    path: String,
    duplicate: &'a RefCell<Option<String>>,
}

impl<'de> DeserializeSeed<'de> for Strict<'_> {
    type Value = Value;

    fn deserialize<D: de::Deserializer<'de>>(self, deserializer: D) -> Result<Value, D::Error> {
        deserializer.deserialize_any(self)
    }
}

impl<'de> Visitor<'de> for Strict<'_> {
    type Value = Value;

    fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("a JSON value")
    }

    fn visit_bool<E>(self, v: bool) -> Result<Value, E> {
        Ok(Value::Bool(v))
    }

    fn visit_i64<E>(self, v: i64) -> Result<Value, E> {
        Ok(Value::from(v))
    }

    fn visit_u64<E>(self, v: u64) -> Result<Value, E> {
        Ok(Value::from(v))
    }

    fn visit_f64<E: de::Error>(self, v: f64) -> Result<Value, E> {
        Number::from_f64(v)
            .map(Value::Number)
            .ok_or_else(|| E::custom("number out of range"))
    }

    fn visit_str<E>(self, v: &str) -> Result<Value, E> {
        Ok(Value::String(v.to_owned()))
    }

    fn visit_string<E>(self, v: String) -> Result<Value, E> {
        Ok(Value::String(v))
    }

    fn visit_unit<E>(self) -> Result<Value, E> {
        Ok(Value::Null)
    }

    fn visit_none<E>(self) -> Result<Value, E> {
        Ok(Value::Null)
    }

    fn visit_seq<A: SeqAccess<'de>>(self, mut seq: A) -> Result<Value, A::Error> {
        let mut items = Vec::new();
        loop {
            let seed = Strict {
                path: format!("{}[{}]", self.path, items.len()),
                duplicate: self.duplicate,
            };
            match seq.next_element_seed(seed)? {
                Some(item) => items.push(item),
                None => return Ok(Value::Array(items)),
            }
        }
    }

    fn visit_map<A: MapAccess<'de>>(self, mut map: A) -> Result<Value, A::Error> {
        let mut object = Map::new();
        while let Some(key) = map.next_key::<String>()? {
            let path = if self.path.is_empty() {
                key_name(&key)
            } else {
                format!("{}.{}", self.path, key_name(&key))
            };
            if object.contains_key(&key) {
                *self.duplicate.borrow_mut() = Some(path);
                return Err(de::Error::custom("duplicate key"));
            }
            let value = map.next_value_seed(Strict {
                path,
                duplicate: self.duplicate,
            })?;
            object.insert(key, value);
        }
        Ok(Value::Object(object))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn parses_like_serde_json() {
        let text = r#"{"a": [1, -2, 3.5, true, null, "x"], "b": {"c": {}}}"#;
        assert_eq!(
            parse(text.as_bytes()).unwrap(),
            serde_json::from_str::<Value>(text).unwrap()
        );
        assert_eq!(parse(b"12").unwrap(), json!(12));
    }

    #[test]
    fn names_the_first_duplicate_key_at_any_depth() {
        let cases = [
            (r#"{"a": 1, "a": 2}"#, "a"),
            (r#"{"p": {"m": [{"r": 1}, {"r": 1, "r": 2}]}}"#, "p.m[1].r"),
            (r#"{"x": {"y": 1, "y": 1}}"#, "x.y"),
        ];
        for (text, path) in cases {
            assert_eq!(
                parse(text.as_bytes()),
                Err(JsonError::DuplicateKey(path.into())),
                "{text}"
            );
        }
    }

    #[test]
    fn syntax_errors_depth_and_trailing_garbage_are_refused() {
        for bad in [&b"{"[..], b"[1,]", b"{} x", b"\xff", b"1e999"] {
            assert!(matches!(parse(bad), Err(JsonError::Syntax(_))), "{bad:?}");
        }
        let deep = "[".repeat(200) + &"]".repeat(200);
        assert!(matches!(parse(deep.as_bytes()), Err(JsonError::Syntax(_))));
    }
}
