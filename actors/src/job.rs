//! A [`Job`] is one admitted request on its way through the broker, together with the only
//! sender of its answer.
//!
//! Exactly-once answering is enforced here, by ownership: [`Job::answer`] consumes the job,
//! and dropping a job that was never answered is never silent (see the `Drop` impl). A job
//! for which no Bedrock call was made goes back to its supervisor's queue, so a worker that
//! dies before calling loses nothing; a job whose call was already sent is answered with an
//! error, because re-sending it could charge the caller twice.

use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;

use actix::Recipient;
use tokio::sync::oneshot;
use tokio::time::Instant;

use crate::request::{InferError, InferRequest, InferResult};
use crate::supervisor::Requeue;

/// How many times a job may be handed back to its queue before it is answered with an error.
/// Bounds the hand-backs when the queue itself is going away.
const MAX_REQUEUES: u8 = 3;

/// One admitted request and the channel its answer goes to.
pub struct Job {
    /// `None` only once the job has been answered or handed back.
    inner: Option<JobInner>,
}

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
    reply: oneshot::Sender<InferResult>,
    /// Set just before the first Bedrock call; decides re-queue or error on drop.
    called: CallMarker,
    /// How often this job went back to the queue.
    requeues: u8,
    /// The supervisor whose queue takes the job back if it is dropped before any call.
    home: Recipient<Requeue>,
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
    /// Wraps an admitted request; `home` takes it back if it is dropped before any call.
    pub fn new(
        id: u64,
        request: Arc<InferRequest>,
        deadline: Instant,
        reply: oneshot::Sender<InferResult>,
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
        match self.inner.as_mut() {
            Some(inner) => inner.reply.closed().await,
            None => std::future::pending().await,
        }
    }

    /// Sends the answer; returns false if the caller had already gone.
    pub fn answer(mut self, result: InferResult) -> bool {
        let inner = self.inner.take().expect("a live Job has its inner state");
        inner.reply.send(result).is_ok()
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
        if inner.called.is_marked() {
            log::error!(
                request_id = inner.request.trace.id();
                "job {} was dropped after its Bedrock call was sent; answering with an error",
                inner.id
            );
            let _ = inner.reply.send(Err(InferError::Failed {
                cause: "the worker running this request failed after calling Bedrock".into(),
                code: None,
                attempts: 1,
            }));
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
        let _ = inner.reply.send(Err(InferError::Failed {
            cause,
            code: None,
            attempts: 0,
        }));
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
                .finish(),
            None => f.write_str("Job(answered)"),
        }
    }
}
