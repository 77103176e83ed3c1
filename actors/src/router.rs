//! Router: the broker's front door. It checks the worker `type` of each request and hands
//! the request, wrapped as a [`Job`] with its deadline, to that type's [`SupervisorActor`].

use std::collections::BTreeMap;
use std::sync::Arc;

use actix::prelude::*;
use tokio::sync::oneshot;
use tokio::time::Instant;

use crate::job::Job;
use crate::request::{InferError, InferRequest, InferResult};
use crate::supervisor::{Enqueue, SupervisorActor};

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

impl Handler<Infer> for Router {
    type Result = ();

    fn handle(&mut self, msg: Infer, _ctx: &mut Context<Self>) {
        let Some(pool) = self.pools.get(&msg.request.worker_type) else {
            let _ = msg.reply.send(Err(InferError::UnknownType {
                given: msg.request.worker_type,
                known: self.pools.keys().cloned().collect(),
            }));
            return;
        };
        let id = self.next_job_id;
        self.next_job_id += 1;
        let job = Job::new(
            id,
            Arc::new(msg.request),
            msg.deadline,
            msg.reply,
            pool.clone().recipient(),
        );
        // A dead pool drops the message; the job then answers its caller itself.
        pool.do_send(Enqueue(job));
    }
}
