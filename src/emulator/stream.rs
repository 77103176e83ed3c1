//! `POST /model/{modelId}/invoke-with-response-stream`: the reply as an AWS event stream, one
//! `chunk` frame per Anthropic stream event (see [`super::events`]), written to the socket as
//! each is produced.
//!
//! The call goes through the same steps as InvokeModel (script, quotas, validation, admission,
//! injection; pre-stream faults answered the same way). After the latency the 200 head goes
//! out (`Content-Type: application/vnd.amazon.eventstream`, `x-amzn-RequestId`,
//! `X-Amzn-Bedrock-Content-Type: application/json`) and the frames follow, paced by
//! `stream_tokens_per_sec` when set. A mid-stream fault strikes after its number of events.
//!
//! The body is a [`Driven`] stream: polling it runs the producer, a plain async function that
//! sends frames into a one-slot channel. When the client leaves, actix-web drops the body, and
//! with it the producer wherever it waits: nothing is produced for a gone client, the stream is
//! counted as cancelled and its token reservation is given back.

use std::future::Future;
use std::io;
use std::pin::Pin;
use std::sync::Arc;
use std::task::{Context, Poll};
use std::time::{Duration, Instant};

use actix_web::{web, HttpRequest, HttpResponse};
use bytes::Bytes;
use futures_util::Stream;
use tokio::sync::mpsc;

use super::events::{self, Event, Metrics};
use super::faults::{self, FaultCall, MidStream, StreamFault};
use super::reply::{self, Usage};
use super::wire::{self, Decision};
use super::{quota, EmulatorConfig, Shared};
use crate::protocol::eventstream::exception_frame_with;

/// How long a stall without a duration lasts at most if the client never leaves.
const STALL_LIMIT: Duration = Duration::from_secs(600);

/// The longest a paced delta waits after the first event, in seconds.
const MAX_PACED_WAIT_SECS: f64 = 86_400.0;

/// One item of the body: a frame, or the error that makes actix-web abort the connection.
type FrameResult = Result<Bytes, io::Error>;

/// The stream route's handler.
pub(crate) async fn invoke_stream(
    req: &HttpRequest,
    model: &str,
    body: &Bytes,
    shared: web::Data<Shared>,
) -> HttpResponse {
    let started = Instant::now();
    let stats = &shared.stats;
    let _in_flight = stats.enter();
    let config = shared.config();

    // Steps 1-5, shared with InvokeModel.
    let (request, reserved, mid_stream, drawn_tokens) =
        match wire::decide(req, model, body, &shared, &config) {
            Decision::Answer(response) => return response,
            Decision::Fault { kind, reserved } => {
                let _reservation = reserved
                    .map(|held| quota::Reservation::new(&shared.quotas, model, &config, held));
                stats.fault(kind);
                let call = FaultCall {
                    model,
                    body,
                    latency: config.latency,
                    shutdown: &shared.shutdown,
                    streamed: true,
                };
                return faults::respond(kind, call).await;
            }
            Decision::Serve {
                request,
                reserved,
                mid_stream,
                drawn_tokens,
            } => (request, reserved, mid_stream, drawn_tokens),
        };
    // Owned, so it can travel with the body; dropped unsettled, it gives back max_tokens.
    let tokens = reserved.map(|held| TokenHold {
        shared: shared.clone(),
        model: model.to_owned(),
        config: config.clone(),
        held,
        open: true,
    });

    // The first event comes after the latency, like a non-streamed reply.
    if !config.latency.is_zero() {
        tokio::time::sleep(config.latency).await;
    }
    let generation = wire::generation_time(&config, &request, drawn_tokens);
    let message = reply::sized(model, &request, drawn_tokens);
    let run = Run {
        events: events::events(&message),
        usage: message.usage,
        fault: mid_stream,
        // A drawn length sets the pace of this call.
        tokens_per_sec: match (config.call_duration, generation) {
            (Some(shape), Some(_)) => Some(shape.tokens_per_sec),
            _ => config.stream_tokens_per_sec,
        },
        generation,
        burndown: config.burndown_for(model),
        started,
        tokens,
        outcome: Outcome::start(shared.clone()),
    };
    let (tx, rx) = mpsc::channel(1);
    wire::stream_builder().streaming(Driven {
        producer: Some(Box::pin(produce(run, tx))),
        frames: rx,
    })
}

/// Everything the producer of one stream owns.
struct Run {
    /// The events to send, `message_stop` last.
    events: Vec<Event>,
    /// The reply's usage (settles the reservation, counted on completion).
    usage: Usage,
    /// The fault to strike, if any.
    fault: Option<MidStream>,
    /// Pacing (`EmulatorConfig::stream_tokens_per_sec`, or the drawn call's
    /// `call_duration.tokens_per_sec`).
    tokens_per_sec: Option<f64>,
    /// The drawn generation time: `message_delta` goes out no earlier, counted from the first
    /// event (a reply that keeps a shorter content still takes it).
    generation: Option<Duration>,
    /// Quota tokens per output token (for `tokens_charged`).
    burndown: f64,
    /// When the request arrived (for the invocation metrics).
    started: Instant,
    /// The token-quota reservation, when a token quota admitted the call.
    tokens: Option<TokenHold>,
    /// Counts how the stream ends.
    outcome: Outcome,
}

/// Sends the stream's frames into `tx`, then ends it the way it must end: cleanly, with an
/// exception frame, cut, or after a stall. Dropped (the client left) wherever it waits.
async fn produce(run: Run, tx: mpsc::Sender<FrameResult>) {
    let Run {
        events,
        usage,
        fault,
        tokens_per_sec,
        generation,
        burndown,
        started,
        tokens,
        mut outcome,
    } = run;
    let strike_at = fault.map(|f| (f.after_events as usize).min(events.len()));
    let first_event = Instant::now();
    let mut first_byte_latency = None;
    let mut paced_chars = 0;
    for (sent, mut event) in events.into_iter().enumerate() {
        // 1. A fault due now ends the stream instead.
        if let (Some(at), Some(fault)) = (strike_at, fault) {
            if at == sent {
                outcome.faulted(fault.fault);
                return strike(fault.fault, &tx, &outcome.shared).await;
            }
        }
        // 2. Pacing: a delta goes out when its tokens are due.
        if let Some(rate) = tokens_per_sec.filter(|_| event.content_chars > 0) {
            paced_chars += event.content_chars;
            // Capped at a day, so an absurdly slow pace cannot overflow the clock.
            let due = (reply::tokens_for(paced_chars) as f64 / rate).min(MAX_PACED_WAIT_SECS);
            let at = first_event + Duration::try_from_secs_f64(due).unwrap_or_default();
            tokio::time::sleep_until(at.into()).await;
        }
        if let Some(generation) = generation.filter(|_| event.json["type"] == "message_delta") {
            tokio::time::sleep_until((first_event + generation).into()).await;
        }
        // 3. The frame; message_stop carries the invocation metrics.
        let elapsed_ms = started.elapsed().as_millis() as u64;
        let first_byte_ms = *first_byte_latency.get_or_insert(elapsed_ms);
        if event.is_stop() {
            events::set_metrics(
                &mut event.json,
                Metrics {
                    input_tokens: usage.input_tokens,
                    output_tokens: usage.output_tokens,
                    invocation_latency_ms: elapsed_ms,
                    first_byte_latency_ms: first_byte_ms,
                },
            );
        }
        if tx.send(Ok(event.frame())).await.is_err() {
            return;
        }
    }
    if let Some(fault) = fault.filter(|_| strike_at.is_some()) {
        // Past the last event: the fault replaces the clean end.
        outcome.faulted(fault.fault);
        return strike(fault.fault, &tx, &outcome.shared).await;
    }
    if let Some(tokens) = tokens {
        tokens.settle(usage.output_tokens);
    }
    outcome.completed(usage, burndown);
}

/// Ends the stream with `fault`.
async fn strike(fault: StreamFault, tx: &mpsc::Sender<FrameResult>, shared: &Shared) {
    match fault {
        StreamFault::Exception(exception) => {
            let frame = exception_frame_with(exception.name(), &exception.payload());
            let _ = tx.send(Ok(frame)).await;
        }
        StreamFault::Cut => cut(tx).await,
        StreamFault::Stall(duration) => {
            let mut stop = shared.shutdown.subscribe();
            tokio::select! {
                _ = tokio::time::sleep(duration.unwrap_or(STALL_LIMIT)) => {}
                _ = stop.wait_for(|stopping| *stopping) => {}
            }
            cut(tx).await;
        }
    }
}

/// Closes the connection without finishing the body. First waits until the body took every
/// frame sent and lets it report "pending" once, so actix-web writes them to the socket; then
/// fails the body, which makes actix-web drop the connection without the final chunk.
async fn cut(tx: &mpsc::Sender<FrameResult>) {
    if let Ok(permit) = tx.reserve().await {
        tokio::task::yield_now().await;
        permit.send(Err(io::Error::new(
            io::ErrorKind::ConnectionReset,
            "emulated connection cut mid-stream",
        )));
    }
}

/// A streaming body run by its producer: each poll first drives the producer (which sends
/// frames into a one-slot channel), then hands out the next frame. Dropping the body drops the
/// producer, so nothing outlives the connection.
struct Driven {
    /// The producer, until it finishes.
    producer: Option<Pin<Box<dyn Future<Output = ()>>>>,
    /// Frames the producer sent; ends when the producer (the only sender) is gone.
    frames: mpsc::Receiver<FrameResult>,
}

impl Stream for Driven {
    type Item = FrameResult;

    fn poll_next(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Option<FrameResult>> {
        let this = &mut *self;
        if let Some(producer) = this.producer.as_mut() {
            if producer.as_mut().poll(cx).is_ready() {
                this.producer = None;
            }
        }
        this.frames.poll_recv(cx)
    }
}

/// How one stream ended, counted once: started when created; completed or faulted when the
/// producer says so; cancelled when dropped before either (the client left).
struct Outcome {
    /// The counters live here (and the shutdown signal stalls wait on).
    shared: web::Data<Shared>,
    /// Set once the stream completed or faulted.
    ended: bool,
}

impl Outcome {
    fn start(shared: web::Data<Shared>) -> Outcome {
        shared.stats.stream_started();
        Outcome {
            shared,
            ended: false,
        }
    }

    fn completed(&mut self, usage: Usage, burndown: f64) {
        self.ended = true;
        self.shared
            .stats
            .stream_completed(usage.input_tokens, usage.output_tokens, burndown);
    }

    fn faulted(&mut self, fault: StreamFault) {
        self.ended = true;
        self.shared.stats.stream_faulted(fault);
    }
}

impl Drop for Outcome {
    fn drop(&mut self) {
        self.shared.stats.stream_ended(!self.ended);
    }
}

/// A stream's token-quota reservation, owned so it can travel with the body: settled with the
/// output tokens when the stream completes, `max_tokens` given back when it is dropped
/// unsettled (a fault, the client left). The owned counterpart of `quota::Reservation`.
struct TokenHold {
    /// Where the quota state lives.
    shared: web::Data<Shared>,
    /// The model id whose bucket holds the reservation.
    model: String,
    /// The config the call was admitted under.
    config: Arc<EmulatorConfig>,
    /// The call in the quota state and what was reserved beyond its input.
    held: quota::Held,
    /// False once settled.
    open: bool,
}

impl TokenHold {
    fn settle(mut self, output_tokens: u64) {
        self.open = false;
        let delta = self.held.success(output_tokens);
        self.shared
            .quotas
            .settle(&self.model, &self.config, self.held.id, delta);
    }
}

impl Drop for TokenHold {
    fn drop(&mut self) {
        if self.open {
            self.shared
                .quotas
                .settle(&self.model, &self.config, self.held.id, self.held.failure());
        }
    }
}
