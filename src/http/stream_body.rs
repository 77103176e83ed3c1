//! The streamed response bodies: a committed stream's events, framed for the route's client
//! as they arrive (nothing is buffered on the way: each event is handed to actix-web, which
//! writes it out before it waits for the next).
//!
//! How a route frames its stream is a [`Framer`]; this module owns the one relay loop every
//! streamed route shares (the head, the events, keep-alives during silence, exactly one
//! terminal item), and the two framings of the Anthropic-shaped routes ([`Framing`]):
//! - Anthropic (`/v1/messages`): server-sent events, Bedrock's `amazon-bedrock-invocationMetrics`
//!   stripped ([`crate::protocol::anthropic::relay_event`]); an `event: ping` after
//!   `--stream-ping-secs` without an event (Bedrock sends none); a failure after the commit
//!   is an `event: error` in Anthropic's shape.
//! - Bedrock (`/model/{modelId}/invoke-with-response-stream`): event-stream `chunk` frames,
//!   each carrying an event exactly as Bedrock sent it (its metrics included); a failure is an
//!   exception frame named as Bedrock names it (`throttlingException`, ...).
//!
//! The other protocols' framers live with their routes (`chat.rs`, `converse.rs`): they
//! translate events statefully, so an event may produce no bytes, and a clean end may have a
//! trailer (OpenAI's `data: [DONE]`). Keep-alives go out after the ping interval without a
//! write, so events that produce nothing (thinking on the OpenAI route) count as silence.
//!
//! The body ends after the stream's terminal item, so a failure always reaches the client as
//! an error (never as a body that just ends); a client that leaves drops the body and with it
//! the stream's receiver, which stops the call at Bedrock.

use std::convert::Infallible;
use std::time::Duration;

use actors::{InferError, StreamItem, StreamReceiver};
use bytes::Bytes;
use futures_util::Stream;
use serde_json::Value;
use tokio::time::Instant;

use crate::error::ApiError;
use crate::protocol::{anthropic, bedrock, eventstream, ErrorClass};

/// How a route writes a committed stream for its client: each Anthropic stream event, the
/// error that ends a broken stream, the trailer of a clean end and the keep-alive.
pub(crate) trait Framer {
    /// The bytes of one Anthropic stream event as Bedrock sent it (empty: nothing to write
    /// for it); an error if it cannot be framed, which ends the stream with an error.
    fn event(&mut self, json: &[u8]) -> Result<Bytes, String>;

    /// The error that ends a committed stream, for a failure of `class`.
    fn error_of_class(&mut self, class: ErrorClass, message: &str) -> Bytes;

    /// The error that ends a committed stream that broke with `error`: by its class, unless
    /// the protocol reports Bedrock's own exception.
    fn error(&mut self, error: InferError) -> Bytes {
        let classified = ApiError::Infer(error).classify();
        self.error_of_class(classified.class, &classified.message)
    }

    /// What follows the last event of a stream that ended cleanly (OpenAI's `[DONE]`).
    fn done(&mut self) -> Bytes {
        Bytes::new()
    }

    /// The keep-alive written after a silence, for protocols that have one.
    fn ping(&self) -> Option<Bytes> {
        None
    }
}

/// Which Anthropic-shaped protocol a body speaks.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Framing {
    /// Anthropic's server-sent events.
    AnthropicSse,
    /// Bedrock's event-stream frames.
    BedrockEventStream,
}

impl Framer for Framing {
    /// One event, framed; an error if it cannot be (Anthropic needs its `type`).
    fn event(&mut self, json: &[u8]) -> Result<Bytes, String> {
        match self {
            Framing::AnthropicSse => anthropic::relay_event(json).map_err(|e| e.to_string()),
            Framing::BedrockEventStream => Ok(eventstream::chunk_frame(json)),
        }
    }

    fn error_of_class(&mut self, class: ErrorClass, message: &str) -> Bytes {
        match self {
            Framing::AnthropicSse => anthropic::error_event(class, message),
            Framing::BedrockEventStream => {
                eventstream::exception_frame(bedrock::exception_for(class), message)
            }
        }
    }

    /// Anthropic's error event for its class; on Bedrock, the exception Bedrock sent when it
    /// sent one, else the one for its class.
    fn error(&mut self, error: InferError) -> Bytes {
        match self {
            Framing::AnthropicSse => {
                let classified = ApiError::Infer(error).classify();
                self.error_of_class(classified.class, &classified.message)
            }
            Framing::BedrockEventStream => exception_frame(error, bedrock::stream_exception),
        }
    }

    fn ping(&self) -> Option<Bytes> {
        match self {
            Framing::AnthropicSse => Some(anthropic::ping_event()),
            Framing::BedrockEventStream => None,
        }
    }
}

/// One Anthropic stream event as Bedrock sent it, as JSON, for a framer that translates it.
pub(crate) fn event_json(json: &[u8]) -> Result<Value, String> {
    serde_json::from_slice(json)
        .map_err(|e| format!("Bedrock sent a stream event that is not JSON ({e})"))
}

/// The exception frame that ends an event stream that broke with `error`, named by
/// `stream_exception` (the operation's: [`bedrock::stream_exception`] or
/// [`crate::protocol::converse::stream_exception`]) from Bedrock's own error code, if the
/// failure has one, and its class.
pub(crate) fn exception_frame(
    error: InferError,
    stream_exception: fn(Option<&str>, ErrorClass) -> &'static str,
) -> Bytes {
    let code = match &error {
        InferError::Failed { code, .. } => code.clone(),
        _ => None,
    };
    let classified = ApiError::Infer(error).classify();
    eventstream::exception_frame(
        stream_exception(code.as_deref(), classified.class),
        &classified.message,
    )
}

/// A committed stream being relayed.
struct Relay<F> {
    /// The rest of the stream.
    items: StreamReceiver,
    /// The framed `message_start`, sent first.
    first: Option<Bytes>,
    /// Send a keep-alive after this long without a write (only if the framer has one).
    ping: Option<Duration>,
    /// When bytes last went out, for the keep-alive.
    last_write: Instant,
    /// How to frame.
    framer: F,
    /// Set once the terminal item went out.
    ended: bool,
}

/// The body of a committed stream whose head, `message_start`, is already framed as
/// `first` (by `framer`). `ping`: the keep-alive interval, used if the framer has a
/// keep-alive.
pub(crate) fn body<F: Framer + 'static>(
    first: Bytes,
    items: StreamReceiver,
    framer: F,
    ping: Option<Duration>,
) -> impl Stream<Item = Result<Bytes, Infallible>> {
    let relay = Relay {
        items,
        first: Some(first),
        ping: ping.filter(|p| !p.is_zero() && framer.ping().is_some()),
        last_write: Instant::now(),
        framer,
        ended: false,
    };
    futures_util::stream::unfold(relay, |mut relay| async move {
        let bytes = relay.next_bytes().await?;
        relay.last_write = Instant::now();
        Some((Ok(bytes), relay))
    })
}

impl<F: Framer> Relay<F> {
    /// The next bytes to write, `None` at the end of the body.
    async fn next_bytes(&mut self) -> Option<Bytes> {
        if let Some(first) = self.first.take() {
            return Some(first);
        }
        loop {
            if self.ended {
                return None;
            }
            // 1. The next item, or a keep-alive when none comes in time (`next` is
            // cancel-safe).
            let item = match self.ping {
                Some(every) => {
                    match tokio::time::timeout_at(self.last_write + every, self.items.next()).await
                    {
                        Ok(item) => item,
                        Err(_) => return self.framer.ping(),
                    }
                }
                None => self.items.next().await,
            };
            // 2. Framed for the client; an event that produces nothing waits for the next.
            let bytes = self.frame(item);
            if !bytes.is_empty() {
                return Some(bytes);
            }
        }
    }

    /// The bytes of one item (empty for an event with nothing to write, and at the end).
    fn frame(&mut self, item: Option<StreamItem>) -> Bytes {
        match item {
            Some(StreamItem::Event(json)) => match self.framer.event(&json) {
                Ok(bytes) => bytes,
                Err(reason) => {
                    log::warn!("ending a stream: {reason}");
                    self.ended = true;
                    self.framer.error_of_class(ErrorClass::Upstream, &reason)
                }
            },
            Some(StreamItem::Failed(error)) => {
                self.ended = true;
                self.framer.error(error)
            }
            Some(StreamItem::Done(_)) => {
                self.ended = true;
                self.framer.done()
            }
            None => {
                self.ended = true;
                Bytes::new()
            }
            Some(StreamItem::Committed { .. } | StreamItem::Refused(_)) => {
                log::error!("a stream sent a second head");
                self.ended = true;
                self.framer.error_of_class(
                    ErrorClass::Upstream,
                    "the stream was corrupted inside the broker",
                )
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use actors::{stream_channel, StreamSummary};
    use futures_util::StreamExt;

    /// Writes `visible` events as their bytes, nothing for the others; `[end]` after a clean
    /// end, `[ping]` as the keep-alive.
    struct Test;

    impl Framer for Test {
        fn event(&mut self, json: &[u8]) -> Result<Bytes, String> {
            Ok(match json {
                b"visible" => Bytes::from_static(b"[visible]"),
                _ => Bytes::new(),
            })
        }
        fn error_of_class(&mut self, _: ErrorClass, _: &str) -> Bytes {
            Bytes::from_static(b"[error]")
        }
        fn done(&mut self) -> Bytes {
            Bytes::from_static(b"[end]")
        }
        fn ping(&self) -> Option<Bytes> {
            Some(Bytes::from_static(b"[ping]"))
        }
    }

    #[tokio::test(start_paused = true)]
    async fn events_that_write_nothing_count_as_silence_and_a_clean_end_writes_the_trailer() {
        let (mut tx, mut rx) = stream_channel();
        tx.commit(b"start".to_vec()).unwrap();
        assert!(matches!(
            rx.next().await,
            Some(StreamItem::Committed { .. })
        ));
        // Hidden events every 40 ms for 200 ms (nothing written), then a visible one: pings
        // at 70 and 140 ms.
        let producer = tokio::spawn(async move {
            for _ in 0..5 {
                tokio::time::sleep(Duration::from_millis(40)).await;
                tx.send_event(b"hidden".to_vec()).await.unwrap();
            }
            tx.send_event(b"visible".to_vec()).await.unwrap();
            assert!(tx.done(StreamSummary::default()));
        });
        let body = body(
            Bytes::from_static(b"[start]"),
            rx,
            Test,
            Some(Duration::from_millis(70)),
        );
        let written: Vec<Bytes> = body.map(|b| b.unwrap()).collect().await;
        producer.await.unwrap();
        assert_eq!(
            written,
            ["[start]", "[ping]", "[ping]", "[visible]", "[end]"]
                .map(|s| Bytes::from_static(s.as_bytes()))
        );
    }

    #[tokio::test]
    async fn a_failure_ends_the_body_with_the_framers_error_and_no_trailer() {
        let (mut tx, mut rx) = stream_channel();
        tx.commit(b"start".to_vec()).unwrap();
        rx.next().await;
        tx.send_event(b"visible".to_vec()).await.unwrap();
        assert!(tx.fail(InferError::ShuttingDown));
        let body = body(Bytes::from_static(b"[start]"), rx, Test, None);
        let written: Vec<Bytes> = body.map(|b| b.unwrap()).collect().await;
        assert_eq!(
            written,
            ["[start]", "[visible]", "[error]"].map(|s| Bytes::from_static(s.as_bytes()))
        );
    }
}
