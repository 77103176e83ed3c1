//! The actor system driven by messages (no HTTP): Router, SupervisorActor, ClaudeWorker and
//! ThrottleActor with the real AWS SDK calling the emulator. Covers scaling up and down,
//! queueing, dead-worker replacement with no job lost, the throttle schedule and its resets,
//! deadlines, queue capacity and callers that go away.

mod common;

use std::sync::Arc;
use std::time::Duration;

use actix::Addr;
use actors::actor::supervisor::{CrashWorker, GetPoolStatus, PoolConfig, SupervisorActor};
use actors::actor::throttle::{
    Acquire, CallOutcome, GetThrottleStatus, Grant, QuotaKind, Report, ThrottleActor,
    ThrottleConfig,
};
use actors::backend::bedrock::{BedrockBackend, BedrockConfig};
use actors::flow::request::{InferError, InferRequest, InferResult};
use actors::observe::status::PoolStatus;
use actors::policy::backoff::BackoffSchedule;
use actors::policy::retry::RetryPolicy;
use actors::policy::throttle_policy::ThrottlePolicy;
use actors::{Broker, BrokerConfig, Infer};
use common::{eventually, MODEL};
use model_server::emulator::{Emulator, EmulatorConfig, Scripted};
use tokio::sync::oneshot;
use tokio::time::Instant;

/// A broker with its own emulator (latency `latency_ms`), built by messages only, with the
/// default (adaptive) throttle and a 20 ms .. 160 ms brake.
async fn broker(pool: PoolConfig, latency_ms: u64) -> (Broker, Emulator) {
    broker_with(pool, latency_ms, ThrottlePolicy::Adaptive, 20).await
}

/// The same with another throttle policy and brake base.
async fn broker_with(
    pool: PoolConfig,
    latency_ms: u64,
    policy: ThrottlePolicy,
    base_ms: u64,
) -> (Broker, Emulator) {
    let emulator = Emulator::start_in_thread(
        "127.0.0.1:0",
        EmulatorConfig {
            latency: Duration::from_millis(latency_ms),
            ..EmulatorConfig::default()
        },
        1,
    )
    .unwrap();
    let backend = BedrockBackend::connect(&BedrockConfig {
        region: Some("us-east-1".into()),
        endpoint: Some(emulator.endpoint()),
        static_credentials: Some(("test".into(), "test".into())),
        connect_timeout: Some(Duration::from_secs(2)),
    })
    .await;
    let config = BrokerConfig {
        pool,
        throttle: ThrottleConfig {
            policy,
            schedule: BackoffSchedule {
                base: Duration::from_millis(base_ms),
                cap: Duration::from_millis(base_ms * 8),
                reset_after: Duration::from_secs(60),
                jitter: 0.1,
            },
            ..ThrottleConfig::new("us-east-1")
        },
        retry: RetryPolicy {
            pause_base: Duration::from_millis(5),
            pause_cap: Duration::from_millis(20),
            ..RetryPolicy::default()
        },
    };
    (Broker::start(config, backend), emulator)
}

fn pool(min: usize, max: usize, concurrency: usize) -> PoolConfig {
    PoolConfig {
        min_workers: min,
        max_workers: max,
        worker_concurrency: concurrency,
        worker_idle_timeout: Duration::from_millis(150),
        maintenance_interval: Duration::from_millis(20),
        ..PoolConfig::default()
    }
}

fn job(model: &str, timeout: Duration) -> InferRequest {
    InferRequest {
        worker_type: "claude".into(),
        model: Arc::from(model),
        body: serde_json::to_vec(&serde_json::json!({
            "anthropic_version": "bedrock-2023-05-31",
            "max_tokens": 50,
            "messages": [{"role": "user", "content": "hello"}]
        }))
        .unwrap(),
        max_retries: 3,
        timeout,
        reserved_tokens: 52,
        trace: Default::default(),
    }
}

/// Submits a request through the Router; returns where its answer arrives.
async fn submit(broker: &Broker, request: InferRequest) -> oneshot::Receiver<InferResult> {
    let (reply, answer) = oneshot::channel();
    let deadline = Instant::now() + request.timeout;
    broker
        .router
        .send(Infer {
            request,
            deadline,
            reply,
        })
        .await
        .unwrap();
    answer
}

fn supervisor(broker: &Broker) -> Addr<SupervisorActor> {
    broker.pools["claude"].clone()
}

async fn status(broker: &Broker) -> PoolStatus {
    supervisor(broker).send(GetPoolStatus).await.unwrap()
}

const LONG: Duration = Duration::from_secs(30);

#[actix::test]
async fn pool_scales_up_under_queue_depth_and_back_down_when_idle() {
    let (broker, emulator) = broker(pool(1, 3, 1), 300).await;
    let mut answers = Vec::new();
    for _ in 0..3 {
        answers.push(submit(&broker, job(MODEL, LONG)).await);
    }
    // Three jobs, one call slot per worker: the pool grows to three workers.
    assert!(eventually(LONG, || async { status(&broker).await.workers == 3 }).await);
    for answer in answers {
        assert!(answer.await.unwrap().is_ok());
    }
    assert_eq!(
        emulator.stats().max_in_flight,
        3,
        "the calls ran in parallel"
    );
    // Idle past the idle timeout: back to the minimum.
    assert!(eventually(LONG, || async { status(&broker).await.workers == 1 }).await);
    let counters = status(&broker).await.counters;
    assert_eq!(counters.workers_started, 3);
    assert_eq!(counters.workers_retired, 2);
}

#[actix::test]
async fn jobs_wait_in_the_queue_when_every_slot_is_busy() {
    let (broker, emulator) = broker(pool(1, 1, 2), 200).await;
    let mut answers = Vec::new();
    for _ in 0..5 {
        answers.push(submit(&broker, job(MODEL, LONG)).await);
    }
    let s = status(&broker).await;
    assert_eq!((s.in_flight, s.queue_depth), (2, 3));
    for answer in answers {
        assert!(answer.await.unwrap().is_ok());
    }
    assert_eq!(
        emulator.stats().max_in_flight,
        2,
        "never more calls than slots"
    );
    // The slot is freed just after the answer is sent.
    assert!(
        eventually(LONG, || async {
            status(&broker).await.counters.completed == 5
        })
        .await
    );
}

#[actix::test]
async fn a_dead_worker_is_replaced_and_none_of_its_jobs_is_lost() {
    let (broker, emulator) = broker(pool(1, 1, 4), 300).await;
    let mut answers = Vec::new();
    for _ in 0..8 {
        answers.push(submit(&broker, job(MODEL, LONG)).await);
    }
    assert!(supervisor(&broker).send(CrashWorker).await.unwrap());
    for answer in answers {
        let result = answer.await.expect("every job is answered");
        assert!(result.is_ok(), "{result:?}");
    }
    let s = status(&broker).await;
    assert_eq!(s.counters.worker_failures, 1);
    assert_eq!(s.counters.workers_started, 2);
    assert_eq!(s.workers, 1);
    assert_eq!(emulator.stats().calls, 8, "each job called Bedrock once");
    // The replacement serves new work.
    let answer = submit(&broker, job(MODEL, LONG)).await;
    assert!(answer.await.unwrap().is_ok());
}

#[actix::test]
async fn a_job_whose_worker_fails_before_calling_is_requeued_and_served() {
    let (broker, emulator) = broker(pool(1, 1, 4), 0).await;
    let answer = submit(&broker, job("test-hook/panic-before-call/requeue", LONG)).await;
    let result = answer.await.expect("answered");
    assert!(result.is_ok(), "{result:?}");
    let s = status(&broker).await;
    assert_eq!(s.counters.requeued, 1);
    assert_eq!(s.counters.worker_failures, 1);
    assert_eq!(emulator.stats().calls, 1);
}

#[actix::test]
async fn a_job_whose_worker_fails_after_calling_gets_an_error_not_a_second_call() {
    let (broker, emulator) = broker(pool(1, 1, 4), 0).await;
    let answer = submit(&broker, job("test-hook/panic-after-mark/error", LONG)).await;
    match answer.await.expect("answered") {
        Err(InferError::Failed { cause, .. }) => assert!(cause.contains("worker"), "{cause}"),
        other => panic!("expected a worker failure, got {other:?}"),
    }
    assert_eq!(emulator.stats().calls, 0);
    assert_eq!(status(&broker).await.counters.requeued, 0);
    assert!(eventually(LONG, || async { status(&broker).await.workers == 1 }).await);
    let answer = submit(&broker, job(MODEL, LONG)).await;
    assert!(answer.await.unwrap().is_ok());
}

/// A ThrottleActor with a 10 ms .. 80 ms schedule, and helpers to ask and report.
fn throttle(policy: ThrottlePolicy) -> Addr<ThrottleActor> {
    actix::Actor::start(ThrottleActor::new(ThrottleConfig {
        policy,
        schedule: BackoffSchedule {
            base: Duration::from_millis(10),
            cap: Duration::from_millis(80),
            reset_after: Duration::from_millis(500),
            jitter: 0.1,
        },
        ..ThrottleConfig::new("us-east-1")
    }))
}

async fn acquire(throttle: &Addr<ThrottleActor>) -> Duration {
    match throttle
        .send(Acquire {
            model: Arc::from(MODEL),
            reserved_tokens: 1,
            ticket: None,
        })
        .await
        .unwrap()
    {
        Grant::CallAfter { delay, .. } => delay,
        other => panic!("no slot: {other:?}"),
    }
}

async fn report(throttle: &Addr<ThrottleActor>, outcome: CallOutcome) {
    throttle
        .send(Report {
            model: Arc::from(MODEL),
            outcome,
            latency: Duration::from_millis(1),
            granted_tokens: 1,
        })
        .await
        .unwrap();
}

const THROTTLED: CallOutcome = CallOutcome::Throttled {
    quota: QuotaKind::Requests,
};
const SUCCESS: CallOutcome = CallOutcome::Success {
    input_tokens: 1,
    output_tokens: 1,
    cache_write_tokens: 0,
};

fn assert_near(delay: Duration, expected_ms: u64) {
    let delay = delay.as_secs_f64() * 1000.0;
    let expected = expected_ms as f64;
    assert!(
        delay >= expected * 0.9 - 0.01 && delay <= expected * 1.1 + 0.01,
        "{delay} ms vs {expected} ms"
    );
}

#[actix::test]
async fn seed_throttle_follows_the_schedule_and_resets_on_success_and_quiet() {
    tokio::time::pause();
    let throttle = throttle(ThrottlePolicy::Seed);
    assert_eq!(acquire(&throttle).await, Duration::ZERO);
    for expected_ms in [10u64, 20, 40, 80, 80] {
        report(&throttle, THROTTLED).await;
        assert_near(acquire(&throttle).await, expected_ms);
    }
    // A success resets the counter.
    report(&throttle, SUCCESS).await;
    assert_eq!(acquire(&throttle).await, Duration::ZERO);
    // Non-quota failures do not count.
    report(&throttle, CallOutcome::OtherFailure).await;
    assert_eq!(acquire(&throttle).await, Duration::ZERO);
    // So does the quiet window after the last throttle.
    report(&throttle, THROTTLED).await;
    report(&throttle, THROTTLED).await;
    tokio::time::advance(Duration::from_millis(499)).await;
    assert!(acquire(&throttle).await > Duration::ZERO);
    tokio::time::advance(Duration::from_millis(2)).await;
    assert_eq!(acquire(&throttle).await, Duration::ZERO);
}

#[actix::test]
async fn adaptive_throttle_paces_on_a_clear_quota_signal_and_brakes_only_when_it_gives_up() {
    tokio::time::pause();
    let throttle = throttle(ThrottlePolicy::Adaptive);
    // Unpaced and unbraked before any throttle.
    for _ in 0..20 {
        assert_eq!(acquire(&throttle).await, Duration::ZERO);
        report(&throttle, SUCCESS).await;
    }
    tokio::time::advance(Duration::from_secs(1)).await;
    // Four throttles in 24 outcomes: no clear quota signal yet, and no brake.
    for _ in 0..4 {
        report(&throttle, THROTTLED).await;
    }
    let status = throttle.send(GetThrottleStatus).await.unwrap();
    assert!(status[0].pace.paced_calls_per_sec.is_none(), "{status:?}");
    assert_eq!(status[0].current_delay_ms, 0);
    // Seven of 27: a quarter, so the pacer starts; it spaces calls, the brake stays off.
    for _ in 0..3 {
        report(&throttle, THROTTLED).await;
    }
    let status = throttle.send(GetThrottleStatus).await.unwrap();
    assert!(status[0].pace.paced_calls_per_sec.is_some(), "{status:?}");
    assert_eq!(status[0].current_delay_ms, 0);
    // Nothing succeeds for two quota windows: the pacer gives up, and the seed's brake
    // spaces calls (after its four free throttles) until one succeeds.
    tokio::time::advance(Duration::from_secs(121)).await;
    for _ in 0..5 {
        report(&throttle, THROTTLED).await;
    }
    let status = throttle.send(GetThrottleStatus).await.unwrap();
    assert!(status[0].pace.paced_calls_per_sec.is_none(), "{status:?}");
    assert_eq!(status[0].current_delay_ms, 10);
    assert!(acquire(&throttle).await >= Duration::from_millis(9));
    report(&throttle, SUCCESS).await;
    let status = throttle.send(GetThrottleStatus).await.unwrap();
    assert_eq!(status[0].current_delay_ms, 0);
}

#[actix::test]
async fn retries_stop_at_max_retries() {
    let (broker, emulator) = broker(pool(1, 1, 4), 0).await;
    emulator.script(
        Some(MODEL),
        vec![Scripted::Fault("ServiceUnavailableException".parse().unwrap()); 10],
    );
    let mut request = job(MODEL, LONG);
    request.max_retries = 4;
    match submit(&broker, request).await.await.unwrap() {
        Err(InferError::Failed { attempts, code, .. }) => {
            assert_eq!(attempts, 5);
            assert_eq!(code.as_deref(), Some("ServiceUnavailableException"));
        }
        other => panic!("expected failure, got {other:?}"),
    }
    assert_eq!(emulator.stats().calls, 5);
}

#[actix::test]
async fn the_deadline_bounds_the_call() {
    let (broker, _emulator) = broker(pool(1, 1, 4), 3000).await;
    let started = Instant::now();
    let answer = submit(&broker, job(MODEL, Duration::from_millis(200))).await;
    match answer.await.unwrap() {
        Err(InferError::DeadlineExceeded { attempts, .. }) => assert_eq!(attempts, 1),
        other => panic!("expected a deadline error, got {other:?}"),
    }
    let took = started.elapsed();
    assert!(
        took >= Duration::from_millis(200) && took < Duration::from_millis(1000),
        "{took:?}"
    );
}

#[actix::test]
async fn a_full_queue_refuses_at_once_with_retry_after() {
    let mut config = pool(1, 1, 1);
    config.queue_capacity = 2;
    let (broker, emulator) = broker(config, 300).await;
    let mut answers = Vec::new();
    for _ in 0..3 {
        answers.push(submit(&broker, job(MODEL, LONG)).await);
    }
    let started = Instant::now();
    let refused = submit(&broker, job(MODEL, LONG)).await.await.unwrap();
    assert!(started.elapsed() < Duration::from_millis(100));
    match refused {
        Err(InferError::Overloaded { retry_after, .. }) => assert!(retry_after > Duration::ZERO),
        other => panic!("expected overload, got {other:?}"),
    }
    for answer in answers {
        assert!(answer.await.unwrap().is_ok());
    }
    assert_eq!(emulator.stats().calls, 3);
    assert_eq!(status(&broker).await.counters.rejected_queue_full, 1);
}

#[actix::test]
async fn a_caller_that_leaves_while_queued_never_reaches_bedrock() {
    let (broker, emulator) = broker(pool(1, 1, 1), 300).await;
    let first = submit(&broker, job(MODEL, LONG)).await;
    let second = submit(&broker, job(MODEL, LONG)).await;
    drop(second);
    assert!(first.await.unwrap().is_ok());
    assert!(
        eventually(LONG, || async {
            status(&broker).await.counters.abandoned_in_queue == 1
        })
        .await
    );
    assert_eq!(emulator.stats().calls, 1);
}

#[actix::test]
async fn a_caller_that_leaves_during_backoff_stops_the_attempts() {
    // The seed brake with a 500 ms first step: the caller leaves while its retry waits.
    let (broker, emulator) = broker_with(pool(1, 1, 4), 0, ThrottlePolicy::Seed, 500).await;
    emulator.script(
        Some(MODEL),
        vec![Scripted::Fault("ThrottlingException".parse().unwrap()); 10],
    );
    let answer = submit(&broker, job(MODEL, LONG)).await;
    // Wait for the first throttled call, then leave.
    assert!(eventually(LONG, || async { emulator.stats().calls >= 1 }).await);
    drop(answer);
    assert!(
        eventually(LONG, || async {
            status(&broker).await.counters.abandoned_in_flight == 1
        })
        .await
    );
    assert_eq!(
        emulator.stats().calls,
        1,
        "attempts went on after the caller left"
    );
}
