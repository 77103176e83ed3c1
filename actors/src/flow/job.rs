//! A [`Job`] is one admitted request on its way through the broker, together with the only
//! sender of its answer: a whole answer (one [`InferResult`] on a oneshot), or a streamed one
//! (a [`StreamSender`]: a head, events, then one terminal item; see [`crate::flow::stream`]).
//!
//! Exactly-once answering is enforced here, by ownership: [`Job::answer`] and
//! [`Job::finish_stream`] consume the job, and dropping a job that was never answered is
//! never silent (see the `Drop` impl). A job for which no Bedrock call was made goes back to
//! its supervisor's queue, so a worker that dies before calling loses nothing; a job whose
//! call was already sent is answered with an error, because re-sending it could charge the
//! caller twice. A streamed job whose stream was committed (its client already has the 200
//! and some events) and not finished is ended with a `Failed` item, so its client learns
//! that the stream broke instead of seeing it end as if complete.

use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;

use actix::{Message, Recipient};
use tokio::sync::oneshot;
use tokio::time::Instant;

use crate::flow::request::{InferError, InferRequest, InferResult};
use crate::flow::stream::{StreamSender, StreamSummary};

/// How many times a job may be handed back to its queue before it is answered with an error.
/// Bounds the hand-backs when the queue itself is going away.
const MAX_REQUEUES: u8 = 3;

/// One admitted request and the channel its answer goes to.
pub struct Job {
    /// `None` only once the job has been answered or handed back.
    inner: Option<JobInner>,
}

/// Takes back a job that was dropped before any Bedrock call; it goes to the queue's front.
/// The job sends it to its supervisor (`home`), which handles it; it lives here, with its
/// sender, so the data layer never imports an actor.
#[derive(Message)]
#[rtype(result = "()")]
pub struct Requeue(pub Job);

struct JobInner {
    /// Broker-wide sequence number, for logs.
    id: u64,
    /// The validated request, shared with the attempt loop without copying.
    request: Arc<InferRequest>,
    /// When the caller stops waiting; nothing may run past it.
    deadline: Instant,
    /// When the broker admitted the request; the queue wait is measured from here.
    admitted_at: Instant,
    /// The only way to answer the caller.
    reply: Reply,
    /// Set just before the first Bedrock call; decides re-queue or error on drop.
    called: CallMarker,
    /// How often this job went back to the queue.
    requeues: u8,
    /// The supervisor whose queue takes the job back if it is dropped before any call.
    home: Recipient<Requeue>,
}

/// Where a job's answer goes.
pub(crate) enum Reply {
    /// One result, on a oneshot (InvokeModel).
    Whole(oneshot::Sender<InferResult>),
    /// A stream of events (InvokeModelWithResponseStream).
    Stream(StreamSender),
}

impl Reply {
    /// True once the caller has gone away.
    fn is_closed(&self) -> bool {
        match self {
            Reply::Whole(tx) => tx.is_closed(),
            Reply::Stream(tx) => tx.is_closed(),
        }
    }

    /// Sends an error: the whole answer, a stream's refusal (before its commit) or its
    /// `Failed` item (after). Returns false if the caller had gone.
    pub(crate) fn send_error(self, error: InferError) -> bool {
        match self {
            Reply::Whole(tx) => tx.send(Err(error)).is_ok(),
            Reply::Stream(mut tx) => tx.fail(error),
        }
    }
}

/// Records that a Bedrock call was sent for a job. Shared with the attempt loop so the loop
/// does not need to borrow the job while the job also waits for its caller to leave.
#[derive(Clone, Default)]
pub struct CallMarker(Arc<AtomicBool>);

impl CallMarker {
    /// Marks that a call is about to be sent.
    pub fn mark(&self) {
        self.0.store(true, Ordering::Release);
    }

    /// Whether a call was sent.
    pub fn is_marked(&self) -> bool {
        self.0.load(Ordering::Acquire)
    }
}

impl Job {
    /// Wraps an admitted request answered whole; `home` takes it back if it is dropped
    /// before any call.
    pub fn new(
        id: u64,
        request: Arc<InferRequest>,
        deadline: Instant,
        reply: oneshot::Sender<InferResult>,
        home: Recipient<Requeue>,
    ) -> Job {
        Job::with_reply(id, request, deadline, Reply::Whole(reply), home)
    }

    /// Wraps an admitted request answered as a stream; `home` takes it back if it is
    /// dropped before any call.
    pub fn new_stream(
        id: u64,
        request: Arc<InferRequest>,
        deadline: Instant,
        reply: StreamSender,
        home: Recipient<Requeue>,
    ) -> Job {
        Job::with_reply(id, request, deadline, Reply::Stream(reply), home)
    }

    /// Wraps an admitted request answered on `reply`, whole or as a stream.
    pub(crate) fn with_reply(
        id: u64,
        request: Arc<InferRequest>,
        deadline: Instant,
        reply: Reply,
        home: Recipient<Requeue>,
    ) -> Job {
        Job {
            inner: Some(JobInner {
                id,
                request,
                deadline,
                admitted_at: Instant::now(),
                reply,
                called: CallMarker::default(),
                requeues: 0,
                home,
            }),
        }
    }

    fn inner(&self) -> &JobInner {
        self.inner
            .as_ref()
            .expect("a Job is only emptied by answer() or drop, which consume it")
    }

    /// Broker-wide sequence number.
    pub fn id(&self) -> u64 {
        self.inner().id
    }

    /// The validated request.
    pub fn request(&self) -> &Arc<InferRequest> {
        &self.inner().request
    }

    /// When the caller stops waiting.
    pub fn deadline(&self) -> Instant {
        self.inner().deadline
    }

    /// When the broker admitted the request.
    pub fn admitted_at(&self) -> Instant {
        self.inner().admitted_at
    }

    /// The marker the attempt loop sets before it calls Bedrock.
    pub fn call_marker(&self) -> CallMarker {
        self.inner().called.clone()
    }

    /// True once the caller has gone away (the HTTP client disconnected or timed out).
    pub fn is_abandoned(&self) -> bool {
        self.inner().reply.is_closed()
    }

    /// Completes when the caller goes away.
    pub async fn abandoned(&mut self) {
        match self.inner.as_mut().map(|inner| &mut inner.reply) {
            Some(Reply::Whole(tx)) => tx.closed().await,
            Some(Reply::Stream(tx)) => tx.closed().await,
            None => std::future::pending().await,
        }
    }

    /// Whether the caller wants a stream of events rather than one answer.
    pub fn is_stream(&self) -> bool {
        matches!(self.inner().reply, Reply::Stream(_))
    }

    /// The stream to send events on, for a streamed job.
    pub fn stream_mut(&mut self) -> Option<&mut StreamSender> {
        match self.inner.as_mut().map(|inner| &mut inner.reply) {
            Some(Reply::Stream(tx)) => Some(tx),
            _ => None,
        }
    }

    /// Sends the answer; returns false if the caller had already gone. A streamed job takes
    /// only errors here (a refusal before its commit, its `Failed` item after); its success
    /// is [`Job::finish_stream`].
    pub fn answer(mut self, result: InferResult) -> bool {
        let inner = self.inner.take().expect("a live Job has its inner state");
        match (inner.reply, result) {
            (Reply::Whole(tx), result) => tx.send(result).is_ok(),
            (reply @ Reply::Stream(_), Err(error)) => reply.send_error(error),
            (reply @ Reply::Stream(_), Ok(_)) => {
                log::error!("job {}: a whole answer for a streamed request", inner.id);
                reply.send_error(InferError::Failed {
                    cause: "the broker produced a whole answer for a streamed request".into(),
                    code: None,
                    attempts: 0,
                })
            }
        }
    }

    /// Ends a streamed job whose stream completed; returns false if the caller had gone.
    /// A whole job gets an error instead (it has no stream to end).
    pub fn finish_stream(mut self, summary: StreamSummary) -> bool {
        let inner = self.inner.take().expect("a live Job has its inner state");
        match inner.reply {
            Reply::Stream(mut tx) => tx.done(summary),
            reply @ Reply::Whole(_) => reply.send_error(InferError::Failed {
                cause: "the broker produced a stream for a request answered whole".into(),
                code: None,
                attempts: summary.attempts,
            }),
        }
    }
}

impl Job {
    /// Consumes a job whose caller has gone away: there is nobody left to answer.
    pub fn discard(mut self) {
        self.inner = None;
    }
}

impl Drop for Job {
    fn drop(&mut self) {
        let Some(mut inner) = self.inner.take() else {
            return;
        };
        if inner.reply.is_closed() {
            return; // nobody is waiting any more
        }
        if let Reply::Stream(tx) = &inner.reply {
            if tx.is_finished() {
                return; // its refusal or terminal item went out
            }
            if tx.is_committed() {
                log::error!(
                    request_id = inner.request.trace.id();
                    "job {} was dropped in the middle of its stream; ending it with an error",
                    inner.id
                );
                inner.reply.send_error(InferError::Failed {
                    cause: "the worker running this request failed in the middle of its stream"
                        .into(),
                    code: None,
                    attempts: 1,
                });
                return;
            }
        }
        if inner.called.is_marked() {
            log::error!(
                request_id = inner.request.trace.id();
                "job {} was dropped after its Bedrock call was sent; answering with an error",
                inner.id
            );
            inner.reply.send_error(InferError::Failed {
                cause: "the worker running this request failed after calling Bedrock".into(),
                code: None,
                attempts: 1,
            });
            return;
        }
        if inner.requeues < MAX_REQUEUES && inner.home.connected() {
            inner.requeues += 1;
            let home = inner.home.clone();
            log::warn!(
                request_id = inner.request.trace.id();
                "job {} was dropped before any Bedrock call; re-queueing it",
                inner.id
            );
            // If the queue vanished in between, this message is dropped and this code runs
            // again for the new Job, which then finds `home` disconnected.
            home.do_send(Requeue(Job { inner: Some(inner) }));
            return;
        }
        let cause = if inner.home.connected() {
            format!(
                "the request was re-queued {} times after worker failures and is given up",
                inner.requeues
            )
        } else {
            "the broker stopped before this request could run".to_string()
        };
        log::error!(request_id = inner.request.trace.id(); "job {}: {cause}", inner.id);
        inner.reply.send_error(InferError::Failed {
            cause,
            code: None,
            attempts: 0,
        });
    }
}

impl std::fmt::Debug for Job {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match &self.inner {
            Some(inner) => f
                .debug_struct("Job")
                .field("id", &inner.id)
                .field("model", &inner.request.model)
                .field("deadline", &inner.deadline)
                .field("stream", &matches!(inner.reply, Reply::Stream(_)))
                .finish(),
            None => f.write_str("Job(answered)"),
        }
    }
}
