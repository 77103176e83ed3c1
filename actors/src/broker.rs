//! [`Broker`]: starts the actors in order and hands out their addresses.

use std::collections::BTreeMap;
use std::time::Duration;

use actix::prelude::*;

use crate::actor::router::Router;
use crate::actor::supervisor::{Abort, Drain, GetPoolStatus, PoolConfig, SupervisorActor};
use crate::actor::throttle::{GetThrottleStatus, Subscribe, ThrottleActor, ThrottleConfig};
use crate::actor::worker::WorkerDeps;
use crate::backend::bedrock::BedrockBackend;
use crate::observe::metrics::{Metrics, MetricsConfig};
use crate::observe::status::BrokerStatus;
use crate::observe::summary::summarize;
use crate::policy::retry::RetryPolicy;

/// Everything the actor system is configured with.
#[derive(Debug, Clone)]
pub struct BrokerConfig {
    /// The `claude` pool.
    pub pool: PoolConfig,
    /// The shared throttle.
    pub throttle: ThrottleConfig,
    /// Retries of non-throttle failures.
    pub retry: RetryPolicy,
}

/// Addresses of the running actors; cheap to clone into every HTTP worker.
#[derive(Clone)]
pub struct Broker {
    /// Where requests go.
    pub router: Addr<Router>,
    /// The shared throttle.
    pub throttle: Addr<ThrottleActor>,
    /// Each pool's supervisor, by worker type.
    pub pools: BTreeMap<String, Addr<SupervisorActor>>,
    /// The metrics the actors and the HTTP layer record.
    pub metrics: Metrics,
}

impl Broker {
    /// Starts the throttle, the pools and the router on the current arbiter, with metrics on
    /// (see [`Broker::start_with_metrics`]).
    pub fn start(config: BrokerConfig, backend: BedrockBackend) -> Broker {
        let metrics = Metrics::new(MetricsConfig::new(&config.throttle.region));
        Broker::start_with_metrics(config, backend, metrics)
    }

    /// Starts the throttle, the pools and the router on the current arbiter, recording into
    /// `metrics`. Call it inside a running actix System, before `HttpServer::new`.
    pub fn start_with_metrics(
        config: BrokerConfig,
        backend: BedrockBackend,
        metrics: Metrics,
    ) -> Broker {
        let throttle = ThrottleActor::new(config.throttle);
        let gates = throttle.gates();
        let throttle = throttle.start();
        let deps = WorkerDeps {
            throttle: throttle.clone(),
            gates,
            backend,
            retry: config.retry,
            metrics: metrics.clone(),
            // Each supervisor replaces this with its own stop signal.
            stop: tokio::sync::watch::channel(false).1,
            stream_idle_timeout: config.pool.stream_idle_timeout,
        };
        let mut pools = BTreeMap::new();
        let worker_type = config.pool.worker_type.clone();
        let pool = SupervisorActor::new(config.pool, deps).start();
        // The pool hears each model's pace, to refuse what cannot start in time.
        throttle.do_send(Subscribe(pool.clone().recipient()));
        pools.insert(worker_type, pool);
        let router = Router::new(pools.clone()).start();
        Broker {
            router,
            throttle,
            pools,
            metrics,
        }
    }

    /// Shuts the pools down: refuse new requests at once, let queued and running ones finish
    /// for up to `grace`, then answer the rest with a shutting-down error. Returns how many
    /// were still queued and running when the grace ran out (zeros if everything finished).
    pub async fn shutdown(&self, grace: Duration) -> (usize, usize) {
        let mut drained = Vec::new();
        for pool in self.pools.values() {
            if let Ok(rx) = pool.send(Drain).await {
                drained.push(rx);
            }
        }
        let all = futures_util::future::join_all(drained);
        if tokio::time::timeout(grace, all).await.is_ok() {
            return (0, 0);
        }
        let mut left = (0, 0);
        for pool in self.pools.values() {
            if let Ok((queued, running)) = pool.send(Abort).await {
                left.0 += queued;
                left.1 += running;
            }
        }
        left
    }

    /// Collects every pool's and model's state, and the per-model rows built from them.
    pub async fn status(&self) -> Result<BrokerStatus, MailboxError> {
        let mut status = self.actor_state().await?;
        status.models = summarize(&status.pools, &status.throttle, &self.metrics);
        Ok(status)
    }

    /// Collects every pool's and model's state, without the per-model rows (`models` is
    /// empty): what a metrics scrape reads.
    pub async fn actor_state(&self) -> Result<BrokerStatus, MailboxError> {
        let mut pools = Vec::with_capacity(self.pools.len());
        for pool in self.pools.values() {
            pools.push(pool.send(GetPoolStatus).await?);
        }
        let throttle = self.throttle.send(GetThrottleStatus).await?;
        Ok(BrokerStatus {
            pools,
            throttle,
            models: Vec::new(),
        })
    }
}
