//! AWS event-stream frames, as Bedrock Runtime's streaming operations send them
//! (`application/vnd.amazon.eventstream`): each frame is
//! `[total_len u32][headers_len u32][prelude crc32][headers][payload][message crc32]`.
//!
//! - an event: headers `:message-type: event`, `:event-type: <name>`,
//!   `:content-type: application/json`; the payload is the event's JSON. For
//!   InvokeModelWithResponseStream the event is `chunk` with payload
//!   `{"bytes": "<base64 of one Anthropic stream event>"}`; for ConverseStream the events are
//!   `messageStart`, `contentBlockDelta`, ... with their JSON directly.
//! - an exception: headers `:message-type: exception`, `:exception-type: <name>` (lower
//!   camel case, e.g. `throttlingException`), `:content-type: application/json`; payload
//!   `{"message": "..."}`.
//!
//! Framing (lengths, CRCs) is done by `aws-smithy-eventstream`, the crate the AWS SDKs use.

use aws_smithy_eventstream::frame::{read_message_from, write_message_to};
use aws_smithy_types::event_stream::{Header, HeaderValue, Message};
use bytes::Bytes;
use serde_json::json;

/// One event frame named `event_type` carrying `payload` (JSON).
pub fn event_frame(event_type: &str, payload: &[u8]) -> Bytes {
    json_frame("event", event_type, payload)
}

/// One InvokeModelWithResponseStream `chunk` frame carrying one Anthropic stream event
/// (its JSON bytes), base64-encoded as Bedrock does.
pub fn chunk_frame(anthropic_event: &[u8]) -> Bytes {
    let payload = json!({ "bytes": aws_smithy_types::base64::encode(anthropic_event) });
    event_frame("chunk", payload.to_string().as_bytes())
}

/// One exception frame: `exception_type` in lower camel case (`throttlingException`,
/// `modelStreamErrorException`, `internalServerException`, ...), with `message`.
pub fn exception_frame(exception_type: &str, message: &str) -> Bytes {
    exception_frame_with(exception_type, &json!({ "message": message }))
}

/// One exception frame with a whole JSON payload, for exceptions that carry more than a
/// message (`modelStreamErrorException` also has `originalStatusCode` and `originalMessage`).
pub fn exception_frame_with(exception_type: &str, payload: &serde_json::Value) -> Bytes {
    json_frame("exception", exception_type, payload.to_string().as_bytes())
}

/// One frame of `message_type` (`event`, `exception`) carrying JSON, named `name` in its
/// `:event-type` or `:exception-type` header.
fn json_frame(message_type: &'static str, name: &str, payload: &[u8]) -> Bytes {
    frame(
        vec![
            Header::new(":message-type", HeaderValue::String(message_type.into())),
            Header::new(
                format!(":{message_type}-type"),
                HeaderValue::String(name.to_string().into()),
            ),
            Header::new(
                ":content-type",
                HeaderValue::String("application/json".into()),
            ),
        ],
        payload,
    )
}

fn frame(headers: Vec<Header>, payload: &[u8]) -> Bytes {
    let message = Message::new_from_parts(headers, Bytes::copy_from_slice(payload));
    let mut out = Vec::with_capacity(payload.len() + 128);
    write_message_to(&message, &mut out).expect("headers and payload are within the frame limits");
    Bytes::from(out)
}

/// A decoded frame: what a reader of a Bedrock stream needs.
#[derive(Debug, Clone, PartialEq)]
pub enum Frame {
    /// `:message-type: event`, with its `:event-type` and payload.
    Event { event_type: String, payload: Bytes },
    /// `:message-type: exception`, with its `:exception-type` and payload.
    Exception {
        exception_type: String,
        payload: Bytes,
    },
}

/// Decodes one complete frame (lengths and CRCs checked). For tests and the emulator's own
/// checks; the broker reads Bedrock's streams through the SDK.
pub fn decode_frame(bytes: &[u8]) -> Result<Frame, String> {
    let message = read_message_from(bytes).map_err(|e| e.to_string())?;
    let header = |name: &str| {
        message
            .headers()
            .iter()
            .find(|h| h.name().as_str() == name)
            .and_then(|h| h.value().as_string().ok())
            .map(|s| s.as_str().to_string())
    };
    let payload = message.payload().clone();
    match header(":message-type").as_deref() {
        Some("event") => Ok(Frame::Event {
            event_type: header(":event-type").ok_or("event frame without :event-type")?,
            payload,
        }),
        Some("exception") => Ok(Frame::Exception {
            exception_type: header(":exception-type")
                .ok_or("exception frame without :exception-type")?,
            payload,
        }),
        other => Err(format!("unexpected :message-type {other:?}")),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn chunk_frames_round_trip_with_base64_payloads() {
        let event = br#"{"type":"message_stop"}"#;
        let frame = chunk_frame(event);
        let Frame::Event {
            event_type,
            payload,
        } = decode_frame(&frame).unwrap()
        else {
            panic!("not an event");
        };
        assert_eq!(event_type, "chunk");
        let body: serde_json::Value = serde_json::from_slice(&payload).unwrap();
        let decoded = aws_smithy_types::base64::decode(body["bytes"].as_str().unwrap()).unwrap();
        assert_eq!(decoded, event);
    }

    #[test]
    fn exception_frames_name_their_type() {
        let frame = exception_frame("throttlingException", "Too many requests");
        assert_eq!(
            decode_frame(&frame).unwrap(),
            Frame::Exception {
                exception_type: "throttlingException".into(),
                payload: Bytes::from_static(br#"{"message":"Too many requests"}"#),
            }
        );
        // A flipped bit fails the CRC.
        let mut bad = frame.to_vec();
        let last = bad.len() - 5;
        bad[last] ^= 1;
        assert!(decode_frame(&bad).is_err());
    }
}
