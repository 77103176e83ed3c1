//! The streamed response bodies: a committed stream's events, framed for the route's client
//! as they arrive (nothing is buffered on the way: each event is handed to actix-web, which
//! writes it out before it waits for the next).
//!
//! - Anthropic (`/v1/messages`): server-sent events, Bedrock's `amazon-bedrock-invocationMetrics`
//!   stripped ([`crate::protocol::anthropic::relay_event`]); an `event: ping` after
//!   `--stream-ping-secs` without an event (Bedrock sends none); a failure after the commit
//!   is an `event: error` in Anthropic's shape.
//! - Bedrock (`/model/{modelId}/invoke-with-response-stream`): event-stream `chunk` frames,
//!   each carrying an event exactly as Bedrock sent it (its metrics included); a failure is an
//!   exception frame named as Bedrock names it (`throttlingException`, ...).
//!
//! The body ends after the stream's terminal item, so a failure always reaches the client as
//! an error (never as a body that just ends); a client that leaves drops the body and with it
//! the stream's receiver, which stops the call at Bedrock.

use std::convert::Infallible;
use std::time::Duration;

use actors::{InferError, StreamItem, StreamReceiver};
use bytes::Bytes;
use futures_util::Stream;

use crate::error::ApiError;
use crate::protocol::{anthropic, bedrock, eventstream, ErrorClass};

/// Which client protocol a body speaks.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Framing {
    /// Anthropic's server-sent events.
    AnthropicSse,
    /// Bedrock's event-stream frames.
    BedrockEventStream,
}

impl Framing {
    /// One event, framed; an error if it cannot be (Anthropic needs its `type`).
    pub(crate) fn event(self, json: &[u8]) -> Result<Bytes, String> {
        match self {
            Framing::AnthropicSse => anthropic::relay_event(json).map_err(|e| e.to_string()),
            Framing::BedrockEventStream => Ok(eventstream::chunk_frame(json)),
        }
    }

    /// The error that ends a committed stream: Anthropic's error event for its class; on
    /// Bedrock, the exception Bedrock sent when it sent one, else the one for its class.
    pub(crate) fn error(self, error: InferError) -> Bytes {
        let code = match &error {
            InferError::Failed { code, .. } => code.clone(),
            _ => None,
        };
        let classified = ApiError::Infer(error).classify();
        match self {
            Framing::AnthropicSse => self.error_of_class(classified.class, &classified.message),
            Framing::BedrockEventStream => eventstream::exception_frame(
                bedrock::stream_exception(code.as_deref(), classified.class),
                &classified.message,
            ),
        }
    }

    fn error_of_class(self, class: ErrorClass, message: &str) -> Bytes {
        match self {
            Framing::AnthropicSse => anthropic::error_event(class, message),
            Framing::BedrockEventStream => {
                eventstream::exception_frame(bedrock::exception_for(class), message)
            }
        }
    }
}

/// A committed stream being relayed.
struct Relay {
    /// The rest of the stream.
    items: StreamReceiver,
    /// The framed `message_start`, sent first.
    first: Option<Bytes>,
    /// Send a ping after this long without an event (Anthropic only).
    ping: Option<Duration>,
    /// How to frame.
    framing: Framing,
    /// Set once the terminal error went out.
    ended: bool,
}

/// The body of a committed stream whose head, `message_start`, is already framed as
/// `first`. `ping`: the keep-alive interval, if the protocol has keep-alives.
pub(crate) fn body(
    first: Bytes,
    items: StreamReceiver,
    framing: Framing,
    ping: Option<Duration>,
) -> impl Stream<Item = Result<Bytes, Infallible>> {
    let relay = Relay {
        items,
        first: Some(first),
        ping: ping.filter(|p| !p.is_zero()),
        framing,
        ended: false,
    };
    futures_util::stream::unfold(relay, |mut relay| async move {
        let bytes = relay.next_bytes().await?;
        Some((Ok(bytes), relay))
    })
}

impl Relay {
    /// The next bytes to write, `None` at the end of the body.
    async fn next_bytes(&mut self) -> Option<Bytes> {
        if let Some(first) = self.first.take() {
            return Some(first);
        }
        if self.ended {
            return None;
        }
        // 1. The next item, or a ping when none comes in time (`next` is cancel-safe).
        let item = match self.ping {
            Some(every) => match tokio::time::timeout(every, self.items.next()).await {
                Ok(item) => item,
                Err(_) => return Some(anthropic::ping_event()),
            },
            None => self.items.next().await,
        };
        // 2. Framed for the client.
        match item {
            Some(StreamItem::Event(json)) => match self.framing.event(&json) {
                Ok(bytes) => Some(bytes),
                Err(reason) => {
                    log::warn!("ending a stream: {reason}");
                    self.ended = true;
                    Some(self.framing.error_of_class(ErrorClass::Upstream, &reason))
                }
            },
            Some(StreamItem::Failed(error)) => {
                self.ended = true;
                Some(self.framing.error(error))
            }
            Some(StreamItem::Done(_)) | None => None,
            Some(StreamItem::Committed { .. } | StreamItem::Refused(_)) => {
                log::error!("a stream sent a second head");
                self.ended = true;
                Some(self.framing.error_of_class(
                    ErrorClass::Upstream,
                    "the stream was corrupted inside the broker",
                ))
            }
        }
    }
}
