//! The operator's routes: `GET /metrics` (Prometheus) and `GET /` (the live status page).
//!
//! - `/metrics` needs an API key when keys are configured, unless `--public-metrics`; it
//!   answers the Prometheus text format, or OpenMetrics when `Accept` asks for it (see
//!   `actors::observe::metrics`), and 404 with `--disable-metrics`. The actors' state is read
//!   with the same snapshot `/status` takes, so both always agree.
//! - `/` is one self-contained HTML file built into the binary (`status_page.html`: no CDN,
//!   no build step). It holds no data: its script polls `/status` every second, sending the
//!   key the user typed (kept in the tab's `sessionStorage`) when keys are configured. So the
//!   page itself is served without a key, and every number on it comes from `/status`, which
//!   needs one.

use actix_web::http::header;
use actix_web::{web, HttpRequest, HttpResponse};
use actors::observe::metrics::Format;

use crate::error::ApiError;
use crate::http::{actors_did_not_answer, AppState};

/// The status page.
pub const STATUS_PAGE: &str = include_str!("status_page.html");

/// What the operator's routes are configured with.
#[derive(Debug, Clone, Copy, Default)]
pub struct OpsConfig {
    /// `/metrics` is served without a key even when keys are configured.
    pub public_metrics: bool,
}

/// Mounts `/metrics` and `/` (before the API's catch-all).
pub fn configure(cfg: &mut web::ServiceConfig) {
    cfg.route("/metrics", web::get().to(metrics))
        .route("/", web::get().to(status_page));
}

/// `GET /metrics`.
async fn metrics(
    state: web::Data<AppState>,
    config: Option<web::Data<OpsConfig>>,
    req: HttpRequest,
) -> Result<HttpResponse, ApiError> {
    // 1. The key, unless metrics are public.
    if !config.is_some_and(|c| c.public_metrics) {
        state.keys.check(&req)?;
    }
    if !state.broker.metrics.is_enabled() {
        return Err(ApiError::NotFound {
            path: "/metrics (metrics are disabled: --disable-metrics)".into(),
        });
    }
    // 2. The actors' state, then the encoding the scraper asked for.
    let snapshot = state
        .broker
        .actor_state()
        .await
        .map_err(actors_did_not_answer)?;
    let accept = req
        .headers()
        .get(header::ACCEPT)
        .and_then(|v| v.to_str().ok());
    let format = Format::negotiate(accept);
    let body = state
        .broker
        .metrics
        .encode(snapshot, format)
        .unwrap_or_default();
    Ok(HttpResponse::Ok()
        .insert_header((header::CONTENT_TYPE, format.content_type()))
        .insert_header((header::CACHE_CONTROL, "no-store"))
        .body(body))
}

/// `GET /`: the status page.
async fn status_page() -> HttpResponse {
    HttpResponse::Ok()
        .insert_header((header::CONTENT_TYPE, "text/html; charset=utf-8"))
        .insert_header((header::CACHE_CONTROL, "no-cache"))
        // Its script and styles are inline; it talks to this server only.
        .insert_header((
            header::CONTENT_SECURITY_POLICY,
            "default-src 'none'; script-src 'unsafe-inline'; style-src 'unsafe-inline'; \
             connect-src 'self'; img-src data:; base-uri 'none'; form-action 'none'",
        ))
        .insert_header((header::X_CONTENT_TYPE_OPTIONS, "nosniff"))
        .body(STATUS_PAGE)
}
