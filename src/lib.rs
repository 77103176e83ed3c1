//! ModelServer: an HTTP inference broker on an actor system. Clients send chat requests
//! (`POST /infer`, the Anthropic Messages API's `POST /v1/messages`, OpenAI's
//! `POST /v1/chat/completions`, or Bedrock Runtime's own
//! `POST /model/{modelId}/invoke[-with-response-stream]` and `/converse[-stream]`, streamed or
//! not); the broker queues them, runs them on an autoscaling pool of Claude workers and calls
//! Claude on AWS Bedrock Runtime, while one shared throttle keeps the whole pool inside the
//! Bedrock quota.
//!
//! # Architecture
//!
//! ```text
//!   client --POST /infer | /v1/messages | /model/{id}/...--> http (actix-web): read body
//!        (limit), api::parse_infer or protocol::* (400s)
//!        --Infer / InferStream{request, deadline, reply}--> actors::Router --Job-->
//!        actors::SupervisorActor queue -> ClaudeWorker --Acquire/Grant--> ThrottleActor
//!                 ClaudeWorker --InvokeModel[WithResponseStream]--> Bedrock or emulator
//!        reply (oneshot, or a stream of events) --> http --> JSON, SSE or event-stream
//!        frames; error::ApiError classifies errors
//! ```
//!
//! This crate is the HTTP front and the process around the actors:
//! - [`settings`]: the command line (every flag also a `MODEL_SERVER_*` variable);
//! - [`api`]: the request format and its validation (every error names its field), on
//!   [`strict_json`] (JSON that refuses duplicate keys);
//! - [`auth`]: optional API keys;
//! - [`error`]: every HTTP error and its status code, in one `impl ResponseError`;
//! - [`protocol`]: the client protocols (Anthropic, Bedrock, OpenAI, ...) as pure functions;
//! - [`http`]: the routes; [`server`]: start-up order; [`logging`]: stderr and `--log-file`,
//!   text or JSON lines;
//! - [`observe`]: the middleware that gives every request its `x-request-id`, and records
//!   it in the metrics and the access log when its response ends;
//! - [`ops`]: the operator's routes, `GET /metrics` (Prometheus, names in
//!   `actors::observe::metrics`) and `GET /` (the live status page, `status_page.html`);
//! - [`emulator`]: a Bedrock Runtime emulator speaking the real wire protocol, used by
//!   `--emulator`, by the integration tests and by the benchmarks.
//!
//! The actor system itself (queue, workers, throttle, Bedrock client) is the `actors` crate.

pub mod api;
pub mod auth;
pub mod emulator;
pub mod error;
pub mod http;
pub mod logging;
pub mod observe;
pub mod ops;
pub mod protocol;
pub mod server;
pub mod settings;
pub mod strict_json;
