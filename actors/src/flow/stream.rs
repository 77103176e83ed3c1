//! The reply of a streamed request: how a worker hands a Bedrock event stream to the HTTP
//! handler, one event at a time, with the exactly-once guarantees of a whole answer.
//!
//! The caller reads [`StreamItem`]s from a [`StreamReceiver`] in this order:
//! 1. exactly one head: [`StreamItem::Committed`] (Bedrock answered 200 and its
//!    `message_start` arrived; carries that event's bytes) or [`StreamItem::Refused`] (the
//!    request ended before that point: a real HTTP error can still be answered, with
//!    `Retry-After` where it applies), after which nothing follows;
//! 2. after `Committed`, any number of [`StreamItem::Event`]s, each one Anthropic stream event
//!    as Bedrock sent it (its JSON bytes, Bedrock's `amazon-bedrock-invocationMetrics`
//!    included);
//! 3. exactly one terminal item: [`StreamItem::Done`] (the stream ended with `message_stop`;
//!    carries the usage) or [`StreamItem::Failed`] (it broke after the head went out).
//!
//! Choices:
//! - The head and the terminal item travel on oneshot channels and the events on a bounded
//!   channel between them ([`EVENT_BUFFER`] events). "Exactly one" is then a property of the
//!   types, and the terminal item can always be sent, even from a `Drop` (a oneshot send
//!   never waits), while events apply backpressure: a slow client slows the worker's reading
//!   of Bedrock's stream instead of buffering the whole reply in memory.
//! - The receiver yields the terminal item only after every event sent before it, because the
//!   sender closes the event channel when it sends the terminal item.
//! - Dropping the receiver is how the caller says it left: the sender sees it at once
//!   ([`StreamSender::closed`]) and the worker stops reading and drops Bedrock's stream.

use tokio::sync::{mpsc, oneshot};

use crate::flow::request::InferError;
use crate::flow::usage::Usage;

/// Events that may wait between the worker and the HTTP response: enough to absorb a burst
/// of small deltas, small enough that a stalled client holds a few KB, not a whole reply.
pub const EVENT_BUFFER: usize = 16;

/// What a streamed request's caller receives, in the order the module documentation gives.
#[derive(Debug, Clone, PartialEq)]
pub enum StreamItem {
    /// The stream is committed: Bedrock answered 200 and sent this `message_start` event.
    Committed {
        /// The `message_start` event's JSON, as Bedrock sent it.
        message_start: Vec<u8>,
    },
    /// The request ended before the commit point, with this error.
    Refused(InferError),
    /// One Anthropic stream event's JSON, as Bedrock sent it.
    Event(Vec<u8>),
    /// The stream ended cleanly (Bedrock's `message_stop` was sent as an event).
    Done(StreamSummary),
    /// The stream broke after it was committed; the caller must tell its client so.
    Failed(InferError),
}

/// How a completed stream went.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct StreamSummary {
    /// Input tokens from `message_start`, output tokens from the last `message_delta`.
    pub usage: Usage,
    /// Bedrock calls made for the request, the successful one included.
    pub attempts: u32,
}

/// The terminal item.
#[derive(Debug)]
enum End {
    Done(StreamSummary),
    Failed(InferError),
}

/// Creates the two ends of a streamed reply.
pub fn stream_channel() -> (StreamSender, StreamReceiver) {
    let (head_tx, head_rx) = oneshot::channel();
    let (events_tx, events_rx) = mpsc::channel(EVENT_BUFFER);
    let (end_tx, end_rx) = oneshot::channel();
    (
        StreamSender {
            head: Some(head_tx),
            events: Some(events_tx),
            end: Some(end_tx),
        },
        StreamReceiver {
            head: Some(head_rx),
            events: events_rx,
            end: Some(end_rx),
            finished: false,
        },
    )
}

/// The worker's end of a streamed reply. Owned by the request's [`crate::Job`].
#[derive(Debug)]
pub struct StreamSender {
    /// `Some` until the head (commit or refusal) is sent.
    head: Option<oneshot::Sender<Result<Vec<u8>, InferError>>>,
    /// `Some` until the terminal item is sent (it closes the event channel).
    events: Option<mpsc::Sender<Vec<u8>>>,
    /// `Some` until the terminal item is sent.
    end: Option<oneshot::Sender<End>>,
}

/// Why an event could not be passed on.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct CallerGone;

impl StreamSender {
    /// Whether the head went out as a commit (events may follow).
    pub fn is_committed(&self) -> bool {
        self.head.is_none() && self.end.is_some()
    }

    /// Whether the reply is complete (a refusal or a terminal item was sent).
    pub fn is_finished(&self) -> bool {
        self.end.is_none()
    }

    /// Whether the caller left (dropped its receiver).
    pub fn is_closed(&self) -> bool {
        match &self.events {
            Some(events) => events.is_closed(),
            None => true,
        }
    }

    /// Completes when the caller leaves (at once if it already has, or if the reply is
    /// finished).
    pub async fn closed(&self) {
        if let Some(events) = &self.events {
            events.closed().await;
        }
    }

    /// Commits the stream with Bedrock's `message_start` event. Errs if the caller left or
    /// the stream was already committed or finished.
    pub fn commit(&mut self, message_start: Vec<u8>) -> Result<(), CallerGone> {
        let head = self.head.take().ok_or(CallerGone)?;
        head.send(Ok(message_start)).map_err(|_| CallerGone)
    }

    /// Passes one event on, waiting while the caller's buffer is full. Errs if the caller
    /// left (or the stream is not committed, or already finished).
    pub async fn send_event(&self, event: Vec<u8>) -> Result<(), CallerGone> {
        if !self.is_committed() {
            return Err(CallerGone);
        }
        match &self.events {
            Some(events) => events.send(event).await.map_err(|_| CallerGone),
            None => Err(CallerGone),
        }
    }

    /// Ends the reply with `error`: a refusal before the commit, a `Failed` terminal item
    /// after it. Returns false if the caller had left or the reply was already finished.
    pub fn fail(&mut self, error: InferError) -> bool {
        if let Some(head) = self.head.take() {
            self.events = None;
            self.end = None;
            return head.send(Err(error)).is_ok();
        }
        self.finish(End::Failed(error))
    }

    /// Ends a committed reply cleanly. Returns false if the caller had left, or if the
    /// stream was never committed (then the caller gets an error saying so instead).
    pub fn done(&mut self, summary: StreamSummary) -> bool {
        if self.head.is_some() {
            return self.fail(InferError::Failed {
                cause: "the stream ended before Bedrock sent message_start".into(),
                code: None,
                attempts: summary.attempts,
            });
        }
        self.finish(End::Done(summary))
    }

    fn finish(&mut self, end: End) -> bool {
        // Closing the event channel first lets the receiver drain what was sent, then read
        // the terminal item.
        self.events = None;
        match self.end.take() {
            Some(tx) => tx.send(end).is_ok(),
            None => false,
        }
    }
}

/// The caller's end of a streamed reply.
#[derive(Debug)]
pub struct StreamReceiver {
    /// `Some` until the head was read.
    head: Option<oneshot::Receiver<Result<Vec<u8>, InferError>>>,
    /// The events, until the sender closes them.
    events: mpsc::Receiver<Vec<u8>>,
    /// `Some` until the terminal item was read.
    end: Option<oneshot::Receiver<End>>,
    /// True once a refusal or a terminal item was returned.
    finished: bool,
}

impl StreamReceiver {
    /// The next item; `None` once the reply is complete. If the sender vanished without
    /// finishing (which the job's ownership rules prevent), the caller gets a `Refused` or
    /// `Failed` saying so, never a silent end. Cancel-safe: a call dropped while it waits
    /// loses nothing (the caller may race it against a timer, to send keep-alives).
    pub async fn next(&mut self) -> Option<StreamItem> {
        if self.finished {
            return None;
        }
        // 1. The head.
        if let Some(head) = self.head.as_mut() {
            let head = head.await;
            self.head = None;
            return Some(match head {
                Ok(Ok(message_start)) => StreamItem::Committed { message_start },
                Ok(Err(error)) => {
                    self.finished = true;
                    StreamItem::Refused(error)
                }
                Err(_) => {
                    self.finished = true;
                    StreamItem::Refused(lost())
                }
            });
        }
        // 2. The events, until the sender closes them.
        if let Some(event) = self.events.recv().await {
            return Some(StreamItem::Event(event));
        }
        // 3. The terminal item.
        let end = self.end.as_mut()?.await;
        self.end = None;
        self.finished = true;
        Some(match end {
            Ok(End::Done(summary)) => StreamItem::Done(summary),
            Ok(End::Failed(error)) => StreamItem::Failed(error),
            Err(_) => StreamItem::Failed(lost()),
        })
    }
}

/// The error for a reply whose sender vanished unfinished.
fn lost() -> InferError {
    InferError::Failed {
        cause: "the stream was lost inside the broker".into(),
        code: None,
        attempts: 0,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn summary() -> StreamSummary {
        StreamSummary {
            usage: Usage {
                input_tokens: 3,
                output_tokens: 5,
                cache_write_tokens: 0,
            },
            attempts: 1,
        }
    }

    #[tokio::test]
    async fn a_committed_stream_yields_its_head_events_and_one_terminal_item() {
        let (mut tx, mut rx) = stream_channel();
        assert!(!tx.is_committed());
        tx.commit(b"start".to_vec()).unwrap();
        assert!(tx.commit(b"again".to_vec()).is_err(), "one head only");
        tx.send_event(b"a".to_vec()).await.unwrap();
        tx.send_event(b"b".to_vec()).await.unwrap();
        assert!(tx.done(summary()));
        assert!(!tx.fail(InferError::ShuttingDown), "one terminal item only");
        assert!(tx.send_event(b"late".to_vec()).await.is_err());
        let mut items = Vec::new();
        while let Some(item) = rx.next().await {
            items.push(item);
        }
        assert_eq!(
            items,
            vec![
                StreamItem::Committed {
                    message_start: b"start".to_vec()
                },
                StreamItem::Event(b"a".to_vec()),
                StreamItem::Event(b"b".to_vec()),
                StreamItem::Done(summary()),
            ]
        );
    }

    #[tokio::test]
    async fn a_refusal_is_the_only_item() {
        let (mut tx, mut rx) = stream_channel();
        assert!(tx.fail(InferError::ShuttingDown));
        assert!(tx.is_finished());
        assert_eq!(
            rx.next().await,
            Some(StreamItem::Refused(InferError::ShuttingDown))
        );
        assert_eq!(rx.next().await, None);
    }

    #[tokio::test]
    async fn a_failure_after_the_commit_is_the_terminal_item() {
        let (mut tx, mut rx) = stream_channel();
        tx.commit(b"start".to_vec()).unwrap();
        tx.send_event(b"a".to_vec()).await.unwrap();
        assert!(tx.fail(InferError::ShuttingDown));
        assert!(matches!(
            rx.next().await,
            Some(StreamItem::Committed { .. })
        ));
        assert_eq!(rx.next().await, Some(StreamItem::Event(b"a".to_vec())));
        assert_eq!(
            rx.next().await,
            Some(StreamItem::Failed(InferError::ShuttingDown))
        );
        assert_eq!(rx.next().await, None);
    }

    #[tokio::test]
    async fn a_vanished_sender_is_an_error_never_a_clean_end() {
        let (tx, mut rx) = stream_channel();
        drop(tx);
        assert!(matches!(rx.next().await, Some(StreamItem::Refused(_))));
        let (mut tx, mut rx) = stream_channel();
        tx.commit(b"start".to_vec()).unwrap();
        drop(tx);
        assert!(matches!(
            rx.next().await,
            Some(StreamItem::Committed { .. })
        ));
        assert!(matches!(rx.next().await, Some(StreamItem::Failed(_))));
    }

    #[tokio::test]
    async fn a_wait_given_up_loses_no_item() {
        use futures_util::FutureExt;
        let (mut tx, mut rx) = stream_channel();
        assert!(rx.next().now_or_never().is_none(), "no head yet");
        tx.commit(b"start".to_vec()).unwrap();
        assert!(matches!(
            rx.next().await,
            Some(StreamItem::Committed { .. })
        ));
        assert!(rx.next().now_or_never().is_none(), "no event yet");
        tx.send_event(b"a".to_vec()).await.unwrap();
        assert_eq!(rx.next().await, Some(StreamItem::Event(b"a".to_vec())));
        assert!(tx.done(summary()));
        assert_eq!(rx.next().await, Some(StreamItem::Done(summary())));
    }

    #[tokio::test]
    async fn the_sender_sees_the_caller_leave_and_events_apply_backpressure() {
        let (mut tx, rx) = stream_channel();
        tx.commit(b"start".to_vec()).unwrap();
        for _ in 0..EVENT_BUFFER {
            tx.send_event(b"x".to_vec()).await.unwrap();
        }
        // The buffer is full: the next send waits for the reader.
        use futures_util::FutureExt;
        assert!(tx.send_event(b"y".to_vec()).now_or_never().is_none());
        assert!(!tx.is_closed());
        drop(rx);
        tx.closed().await;
        assert!(tx.is_closed());
        assert_eq!(tx.send_event(b"z".to_vec()).await, Err(CallerGone));
        assert!(!tx.done(summary()));
    }
}
