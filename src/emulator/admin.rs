//! The admin API under `/_emulator/` (JSON in and out) and `/health`.

use std::collections::BTreeMap;
use std::time::Duration;

use actix_web::{web, HttpResponse};
use bytes::Bytes;
use serde::{Deserialize, Deserializer, Serialize};

use super::{EmulatorConfig, FaultKind, Quota, Scripted, Shared};

pub(crate) fn routes(cfg: &mut web::ServiceConfig) {
    cfg.route("/health", web::get().to(health))
        .route("/_emulator/stats", web::get().to(stats))
        .route("/_emulator/config", web::get().to(get_config))
        .route("/_emulator/config", web::post().to(post_config))
        .route("/_emulator/script", web::post().to(post_script))
        .route("/_emulator/reset", web::post().to(reset));
}

fn bad_request(error: String) -> HttpResponse {
    HttpResponse::BadRequest().json(serde_json::json!({ "error": error }))
}

async fn health() -> HttpResponse {
    HttpResponse::Ok().json(serde_json::json!({ "status": "ok" }))
}

async fn stats(shared: web::Data<Shared>) -> HttpResponse {
    HttpResponse::Ok().json(shared.stats.snapshot())
}

/// The config as JSON: `{"latency_ms", "quota", "error_rates": {name: fraction}, "seed"}`.
#[derive(Serialize)]
struct ConfigView {
    latency_ms: f64,
    quota: Option<Quota>,
    error_rates: BTreeMap<String, f64>,
    seed: u64,
    scripted_pending: usize,
}

fn view(shared: &Shared) -> ConfigView {
    let c = shared.config();
    ConfigView {
        latency_ms: c.latency.as_secs_f64() * 1000.0,
        quota: c.quota,
        error_rates: c
            .error_rates
            .iter()
            .map(|(k, r)| (k.name().to_owned(), *r))
            .collect(),
        seed: c.seed,
        scripted_pending: shared.scripts.len(),
    }
}

async fn get_config(shared: web::Data<Shared>) -> HttpResponse {
    HttpResponse::Ok().json(view(&shared))
}

/// `quota` in a patch: `{"requests_per_second": R, "burst": B}` (burst defaults to R).
#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct QuotaPatch {
    requests_per_second: f64,
    burst: Option<f64>,
}

/// Absent field = keep; `"quota": null` = remove the quota.
#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct ConfigPatch {
    latency_ms: Option<f64>,
    #[serde(default, deserialize_with = "present")]
    quota: Option<Option<QuotaPatch>>,
    error_rates: Option<BTreeMap<String, f64>>,
    seed: Option<u64>,
}

fn present<'de, D: Deserializer<'de>, T: Deserialize<'de>>(d: D) -> Result<Option<T>, D::Error> {
    T::deserialize(d).map(Some)
}

fn apply(patch: ConfigPatch, mut config: EmulatorConfig) -> Result<EmulatorConfig, String> {
    if let Some(ms) = patch.latency_ms {
        if !ms.is_finite() || ms < 0.0 {
            return Err(format!(
                "latency_ms must be a non-negative number, got {ms}"
            ));
        }
        config.latency = Duration::from_secs_f64(ms / 1000.0);
    }
    if let Some(quota) = patch.quota {
        config.quota = match quota {
            None => None,
            Some(q) => {
                let burst = q.burst.unwrap_or(q.requests_per_second.max(1.0));
                if !q.requests_per_second.is_finite()
                    || q.requests_per_second < 0.0
                    || !burst.is_finite()
                    || burst < 1.0
                {
                    return Err(
                        "quota needs requests_per_second >= 0 and burst >= 1 (finite)".to_owned(),
                    );
                }
                Some(Quota {
                    requests_per_second: q.requests_per_second,
                    burst,
                })
            }
        };
    }
    if let Some(rates) = patch.error_rates {
        let mut parsed = Vec::with_capacity(rates.len());
        for (name, rate) in rates {
            let kind: FaultKind = name.parse().map_err(|e| format!("error_rates: {e}"))?;
            if !(0.0..=1.0).contains(&rate) {
                return Err(format!("error_rates.{name} must be in 0..=1, got {rate}"));
            }
            parsed.push((kind, rate));
        }
        config.error_rates = parsed;
    }
    if let Some(seed) = patch.seed {
        config.seed = seed;
    }
    Ok(config)
}

async fn post_config(shared: web::Data<Shared>, body: Bytes) -> HttpResponse {
    let patch: ConfigPatch = match serde_json::from_slice(&body) {
        Ok(p) => p,
        Err(e) => return bad_request(format!("invalid config patch: {e}")),
    };
    match apply(patch, (*shared.config()).clone()) {
        Ok(config) => {
            shared.set_config(config);
            HttpResponse::Ok().json(view(&shared))
        }
        Err(e) => bad_request(e),
    }
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct ScriptRequest {
    #[serde(default)]
    model: Option<String>,
    outcomes: Vec<String>,
}

async fn post_script(shared: web::Data<Shared>, body: Bytes) -> HttpResponse {
    let req: ScriptRequest = match serde_json::from_slice(&body) {
        Ok(r) => r,
        Err(e) => return bad_request(format!("invalid script: {e}")),
    };
    let outcomes: Result<Vec<Scripted>, _> = req.outcomes.iter().map(|s| s.parse()).collect();
    match outcomes {
        Ok(outcomes) => {
            let queued = outcomes.len();
            shared.scripts.push(req.model.as_deref(), outcomes);
            HttpResponse::Ok().json(serde_json::json!({
                "queued": queued,
                "model": req.model,
                "pending": shared.scripts.len(),
            }))
        }
        Err(e) => bad_request(format!("outcomes: {e} (or \"ok\")")),
    }
}

async fn reset(shared: web::Data<Shared>) -> HttpResponse {
    shared.reset();
    HttpResponse::Ok().json(serde_json::json!({ "reset": true }))
}
