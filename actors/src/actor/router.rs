//! Router: the broker's front door. It checks the worker `type` of each request and hands
//! the request, wrapped as a [`Job`] with its deadline, to that type's [`SupervisorActor`].
//! A request is answered whole ([`Infer`]) or as a stream of events ([`InferStream`]); both
//! take the same path from here on.

use std::collections::BTreeMap;
use std::sync::Arc;

use actix::prelude::*;
use tokio::sync::oneshot;
use tokio::time::Instant;

use crate::actor::supervisor::{Enqueue, SupervisorActor};
use crate::flow::job::{Job, Reply};
use crate::flow::request::{InferError, InferRequest, InferResult};
use crate::flow::stream::StreamSender;

/// Submits a request; its answer arrives on `reply`, exactly once.
#[derive(Message)]
#[rtype(result = "()")]
pub struct Infer {
    /// The validated request.
    pub request: InferRequest,
    /// When the caller stops waiting.
    pub deadline: Instant,
    /// Where the answer goes.
    pub reply: oneshot::Sender<InferResult>,
}

/// Submits a request answered as a stream (InvokeModelWithResponseStream); its head, events
/// and terminal item arrive on `reply` (see [`crate::flow::stream`]).
#[derive(Message)]
#[rtype(result = "()")]
pub struct InferStream {
    /// The validated request.
    pub request: InferRequest,
    /// When the caller stops waiting; the whole stream must end by then.
    pub deadline: Instant,
    /// Where the stream goes.
    pub reply: StreamSender,
}

/// The actor that routes requests to pools by worker type.
pub struct Router {
    /// Pools by worker type; ordered so error messages list types stably.
    pools: BTreeMap<String, Addr<SupervisorActor>>,
    /// Sequence number for the next job.
    next_job_id: u64,
}

impl Router {
    /// A router over these pools.
    pub fn new(pools: BTreeMap<String, Addr<SupervisorActor>>) -> Router {
        Router {
            pools,
            next_job_id: 1,
        }
    }
}

impl Actor for Router {
    type Context = Context<Self>;

    fn started(&mut self, ctx: &mut Context<Self>) {
        // HTTP handlers bound their sends with a timeout; the mailbox itself is not the limit.
        ctx.set_mailbox_capacity(crate::MAILBOX_CAPACITY);
    }
}

impl Router {
    /// The pool of `worker_type`, or the error listing the known types.
    fn pool(&self, worker_type: &str) -> Result<Addr<SupervisorActor>, InferError> {
        self.pools
            .get(worker_type)
            .cloned()
            .ok_or_else(|| InferError::UnknownType {
                given: worker_type.to_string(),
                known: self.pools.keys().cloned().collect(),
            })
    }

    fn next_id(&mut self) -> u64 {
        let id = self.next_job_id;
        self.next_job_id += 1;
        id
    }

    /// Queues `request` on its worker type's pool as a job answered on `reply`, or answers
    /// `reply` at once with the refusal of an unknown type.
    fn route(&mut self, request: InferRequest, deadline: Instant, reply: Reply) {
        let pool = match self.pool(&request.worker_type) {
            Ok(pool) => pool,
            Err(error) => {
                reply.send_error(error);
                return;
            }
        };
        let job = Job::with_reply(
            self.next_id(),
            Arc::new(request),
            deadline,
            reply,
            pool.clone().recipient(),
        );
        // A dead pool drops the message; the job then answers its caller itself.
        pool.do_send(Enqueue(job));
    }
}

impl Handler<Infer> for Router {
    type Result = ();

    fn handle(&mut self, msg: Infer, _ctx: &mut Context<Self>) {
        self.route(msg.request, msg.deadline, Reply::Whole(msg.reply));
    }
}

impl Handler<InferStream> for Router {
    type Result = ();

    fn handle(&mut self, msg: InferStream, _ctx: &mut Context<Self>) {
        self.route(msg.request, msg.deadline, Reply::Stream(msg.reply));
    }
}
