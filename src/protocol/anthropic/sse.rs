//! Anthropic's server-sent events, as `/v1/messages` with `stream: true` sends them.
//!
//! Every event is `event: <name>\ndata: <json>\n\n`, the name being the JSON's `type`
//! (Anthropic's SDKs dispatch on the `event:` line and ignore data without it). Bedrock's
//! stream carries the same Anthropic events, one per `chunk`, so relaying is framing, with
//! two differences handled here:
//! - Bedrock adds `amazon-bedrock-invocationMetrics` to the `message_stop` event; it is
//!   Bedrock's, not Anthropic's, so it is removed ([`strip_invocation_metrics`]) and every
//!   other event passes byte for byte;
//! - Bedrock sends no pings; the caller sends [`ping_event`] during upstream silence.
//!
//! An error after the stream started is an `event: error` carrying Anthropic's error object
//! ([`error_event`]): Anthropic clients only learn of a failure that way, never from a body
//! that just ends.

use std::borrow::Cow;

use bytes::Bytes;
use serde::Deserialize;
use serde_json::Value;

use super::errors::error_object;
use super::MalformedUpstream;
use crate::protocol::ErrorClass;

/// The key Bedrock adds to `message_stop` with its token counts and latencies.
pub const INVOCATION_METRICS_KEY: &str = "amazon-bedrock-invocationMetrics";

/// The ping Anthropic's API sends, byte for byte.
const PING: &[u8] = b"event: ping\ndata: {\"type\": \"ping\"}\n\n";

/// Just the `type` of an event, read without building the rest.
#[derive(Deserialize)]
struct EventType<'a> {
    /// The event's name; borrowed unless it holds escapes.
    #[serde(borrow, rename = "type")]
    kind: Cow<'a, str>,
}

/// Frames one Anthropic stream event (its JSON) as an SSE event named by its `type`.
pub fn sse_event(event_json: &[u8]) -> Result<Bytes, MalformedUpstream> {
    // 1. The name: the event's `type`, which must fit on the `event:` line.
    let event: EventType = serde_json::from_slice(event_json)
        .map_err(|e| MalformedUpstream::new(format!("a stream event without a type ({e})")))?;
    if event.kind.is_empty() || event.kind.chars().any(char::is_control) {
        return Err(MalformedUpstream::new(format!(
            "a stream event type {:?} that cannot name an SSE event",
            event.kind
        )));
    }
    // 2. The data: on one line. JSON strings cannot hold raw line breaks, so any are
    //    whitespace between tokens, and a compact re-serialization removes them.
    let data: Cow<[u8]> = if event_json.iter().any(|b| *b == b'\n' || *b == b'\r') {
        let value: Value = serde_json::from_slice(event_json)
            .map_err(|e| MalformedUpstream::new(e.to_string()))?;
        Cow::Owned(value.to_string().into_bytes())
    } else {
        Cow::Borrowed(event_json)
    };
    Ok(frame(&event.kind, &data))
}

/// Relays one event of Bedrock's stream: without Bedrock's metrics, framed as SSE.
pub fn relay_event(bedrock_event: &[u8]) -> Result<Bytes, MalformedUpstream> {
    sse_event(&strip_invocation_metrics(bedrock_event))
}

/// A keep-alive `ping` event.
pub fn ping_event() -> Bytes {
    Bytes::from_static(PING)
}

/// An `error` event: Anthropic's error object for `class` with `message`.
pub fn error_event(class: ErrorClass, message: &str) -> Bytes {
    frame("error", error_object(class, message).to_string().as_bytes())
}

/// `event_json` without Bedrock's top-level `amazon-bedrock-invocationMetrics` key; the
/// same bytes when it has none (every event but `message_stop`, and anything not JSON).
pub fn strip_invocation_metrics(event_json: &[u8]) -> Cow<'_, [u8]> {
    // 1. Most events do not mention the key at all.
    let key = INVOCATION_METRICS_KEY.as_bytes();
    if !event_json.windows(key.len()).any(|w| w == key) {
        return Cow::Borrowed(event_json);
    }
    // 2. Remove it only where it is a top-level key (text may quote it).
    let Ok(Value::Object(mut event)) = serde_json::from_slice::<Value>(event_json) else {
        return Cow::Borrowed(event_json);
    };
    if event.remove(INVOCATION_METRICS_KEY).is_none() {
        return Cow::Borrowed(event_json);
    }
    Cow::Owned(Value::Object(event).to_string().into_bytes())
}

fn frame(name: &str, data: &[u8]) -> Bytes {
    let mut out = Vec::with_capacity(name.len() + data.len() + 16);
    out.extend_from_slice(b"event: ");
    out.extend_from_slice(name.as_bytes());
    out.extend_from_slice(b"\ndata: ");
    out.extend_from_slice(data);
    out.extend_from_slice(b"\n\n");
    Bytes::from(out)
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn text(bytes: &[u8]) -> &str {
        std::str::from_utf8(bytes).unwrap()
    }

    #[test]
    fn events_are_named_by_their_type_and_keep_their_bytes() {
        let event = br#"{"type":"content_block_delta","index":0,"delta":{"type":"text_delta","text":"Hi\n"}}"#;
        assert_eq!(
            text(&sse_event(event).unwrap()),
            format!("event: content_block_delta\ndata: {}\n\n", text(event))
        );
        let start = br#"{"type":"message_start","message":{"id":"msg_1","content":[]}}"#;
        assert!(text(&sse_event(start).unwrap()).starts_with("event: message_start\ndata: {"));
    }

    #[test]
    fn multi_line_json_is_put_on_one_data_line() {
        let pretty = b"{\n  \"type\": \"message_stop\"\r\n}";
        assert_eq!(
            text(&sse_event(pretty).unwrap()),
            "event: message_stop\ndata: {\"type\":\"message_stop\"}\n\n"
        );
    }

    #[test]
    fn events_that_cannot_be_framed_are_refused() {
        for bad in [
            &b"not json"[..],
            b"[1]",
            br#"{"index":0}"#,
            br#"{"type":""}"#,
            br#"{"type":"a\nb"}"#,
            br#"{"type":5}"#,
        ] {
            assert!(sse_event(bad).is_err(), "{}", String::from_utf8_lossy(bad));
        }
    }

    #[test]
    fn ping_and_error_events_are_anthropics() {
        assert_eq!(
            text(&ping_event()),
            "event: ping\ndata: {\"type\": \"ping\"}\n\n"
        );
        let error = error_event(ErrorClass::Overloaded, "Overloaded");
        let error = text(&error);
        let data = error
            .strip_prefix("event: error\ndata: ")
            .and_then(|rest| rest.strip_suffix("\n\n"))
            .unwrap();
        assert_eq!(
            serde_json::from_str::<Value>(data).unwrap(),
            json!({"type": "error", "error": {"type": "overloaded_error", "message": "Overloaded"}})
        );
    }

    #[test]
    fn metrics_are_stripped_from_message_stop_and_nothing_else_is_touched() {
        let stop = json!({"type": "message_stop", "amazon-bedrock-invocationMetrics":
            {"inputTokenCount": 10, "outputTokenCount": 5, "invocationLatency": 321, "firstByteLatency": 90}});
        let stripped = strip_invocation_metrics(stop.to_string().as_bytes()).into_owned();
        assert_eq!(
            serde_json::from_slice::<Value>(&stripped).unwrap(),
            json!({"type": "message_stop"})
        );
        // Events without the key, or quoting it in their text, keep their exact bytes.
        for untouched in [
            &br#"{"type":"message_stop"}"#[..],
            br#"{"type":"message_delta","delta":{"stop_reason":"end_turn"},"usage":{"output_tokens":5}}"#,
            br#"{"type":"content_block_delta","index":0,"delta":{"type":"text_delta","text":"amazon-bedrock-invocationMetrics"}}"#,
            br#"{"type":"message_delta","delta":{"amazon-bedrock-invocationMetrics":1}}"#,
            b"not json amazon-bedrock-invocationMetrics",
        ] {
            let out = strip_invocation_metrics(untouched);
            assert!(matches!(out, Cow::Borrowed(_)));
            assert_eq!(&*out, untouched);
        }
    }

    #[test]
    fn relaying_strips_then_frames() {
        let stop =
            br#"{"type":"message_stop","amazon-bedrock-invocationMetrics":{"inputTokenCount":1}}"#;
        assert_eq!(
            text(&relay_event(stop).unwrap()),
            "event: message_stop\ndata: {\"type\":\"message_stop\"}\n\n"
        );
    }
}
