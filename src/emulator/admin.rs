//! The admin API under `/_emulator/` (JSON in and out) and `/health`.

use std::collections::BTreeMap;
use std::time::Duration;

use actix_web::{web, HttpResponse};
use bytes::Bytes;
use serde::{Deserialize, Deserializer, Serialize};

use super::{
    CallDuration, EmulatorConfig, Fault, Quota, Scripted, Shared, TokenDayQuota, TokenQuota,
    TokenWindowQuota, WindowQuota,
};

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

/// The config as JSON: `{"latency_ms", "stream_tokens_per_sec", "quota", "window_quota",
/// "token_quota", "token_window_quota", "quota_schedule": [[secs, factor], ...],
/// "quota_factor", "error_rates": {name: fraction}, "seed", "call_duration",
/// "token_day_quota", "burndown", "stray_throttle_rate", "scripted_pending"}`.
/// `error_rates` holds both kinds of faults (`NAME@N` for the mid-stream ones).
#[derive(Serialize)]
struct ConfigView {
    latency_ms: f64,
    stream_tokens_per_sec: Option<f64>,
    quota: Option<Quota>,
    window_quota: Option<WindowView>,
    token_quota: Option<TokenQuota>,
    token_window_quota: Option<TokenWindowView>,
    quota_schedule: Vec<(f64, f64)>,
    /// The schedule factor in force now.
    quota_factor: f64,
    error_rates: BTreeMap<String, f64>,
    seed: u64,
    call_duration: Option<CallDuration>,
    token_day_quota: Option<TokenDayView>,
    burndown: Option<f64>,
    stray_throttle_rate: f64,
    scripted_pending: usize,
}

#[derive(Serialize)]
struct TokenDayView {
    tokens: f64,
    window_secs: f64,
}

#[derive(Serialize)]
struct WindowView {
    requests: u64,
    window_secs: f64,
    sliding: bool,
}

#[derive(Serialize)]
struct TokenWindowView {
    tokens: f64,
    window_secs: f64,
    sliding: bool,
}

fn view(shared: &Shared) -> ConfigView {
    let c = shared.config();
    ConfigView {
        latency_ms: c.latency.as_secs_f64() * 1000.0,
        stream_tokens_per_sec: c.stream_tokens_per_sec,
        quota: c.quota,
        window_quota: c.window_quota.map(|w| WindowView {
            requests: w.requests,
            window_secs: w.window.as_secs_f64(),
            sliding: w.sliding,
        }),
        token_quota: c.token_quota,
        token_window_quota: c.token_window_quota.map(|w| TokenWindowView {
            tokens: w.tokens,
            window_secs: w.window.as_secs_f64(),
            sliding: w.sliding,
        }),
        quota_schedule: c
            .quota_schedule
            .iter()
            .map(|(at, f)| (at.as_secs_f64(), *f))
            .collect(),
        quota_factor: shared.quotas.factor(&c),
        error_rates: c
            .error_rates
            .iter()
            .map(|(k, r)| (k.name().to_owned(), *r))
            .chain(
                c.stream_error_rates
                    .iter()
                    .map(|(m, r)| (m.to_string(), *r)),
            )
            .collect(),
        seed: c.seed,
        call_duration: c.call_duration,
        token_day_quota: c.token_day_quota.map(|d| TokenDayView {
            tokens: d.tokens,
            window_secs: d.window.as_secs_f64(),
        }),
        burndown: c.burndown,
        stray_throttle_rate: c.stray_throttle_rate,
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

/// `window_quota` in a patch: `{"requests": N, "window_secs": S, "sliding": false}` (S
/// defaults to 60, `sliding` to false).
#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct WindowPatch {
    requests: u64,
    window_secs: Option<f64>,
    sliding: Option<bool>,
}

/// `token_window_quota` in a patch: `{"tokens": N, "window_secs": S, "sliding": false}` (S
/// defaults to 60, `sliding` to false).
#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct TokenWindowPatch {
    tokens: f64,
    window_secs: Option<f64>,
    sliding: Option<bool>,
}

/// A window length in a patch: positive seconds, 60 when absent.
fn window_length(field: &str, secs: Option<f64>) -> Result<Duration, String> {
    let secs = secs.unwrap_or(60.0);
    Duration::try_from_secs_f64(secs)
        .ok()
        .filter(|d| !d.is_zero())
        .ok_or_else(|| format!("{field}.window_secs must be a positive number, got {secs}"))
}

/// `token_quota` in a patch: `{"tokens_per_minute": N, "burst_tokens": B}` (B defaults to N/6).
#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct TokenPatch {
    tokens_per_minute: f64,
    burst_tokens: Option<f64>,
}

/// `call_duration` in a patch: `{"median_secs": S, "spread": X, "tokens_per_sec": N}` (X
/// defaults to 0.5, N to 50).
#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct CallDurationPatch {
    median_secs: f64,
    spread: Option<f64>,
    tokens_per_sec: Option<f64>,
}

/// `token_day_quota` in a patch: `{"tokens": N, "window_secs": S}` (S defaults to 86,400).
#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct TokenDayPatch {
    tokens: f64,
    window_secs: Option<f64>,
}

/// Absent field = keep; `null` = remove the quota (or the schedule).
#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct ConfigPatch {
    latency_ms: Option<f64>,
    #[serde(default, deserialize_with = "present")]
    stream_tokens_per_sec: Option<Option<f64>>,
    #[serde(default, deserialize_with = "present")]
    quota: Option<Option<QuotaPatch>>,
    #[serde(default, deserialize_with = "present")]
    window_quota: Option<Option<WindowPatch>>,
    #[serde(default, deserialize_with = "present")]
    token_quota: Option<Option<TokenPatch>>,
    #[serde(default, deserialize_with = "present")]
    token_window_quota: Option<Option<TokenWindowPatch>>,
    #[serde(default, deserialize_with = "present")]
    quota_schedule: Option<Option<Vec<(f64, f64)>>>,
    error_rates: Option<BTreeMap<String, f64>>,
    seed: Option<u64>,
    #[serde(default, deserialize_with = "present")]
    call_duration: Option<Option<CallDurationPatch>>,
    #[serde(default, deserialize_with = "present")]
    token_day_quota: Option<Option<TokenDayPatch>>,
    #[serde(default, deserialize_with = "present")]
    burndown: Option<Option<f64>>,
    stray_throttle_rate: Option<f64>,
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
    if let Some(pace) = patch.stream_tokens_per_sec {
        if let Some(rate) = pace.filter(|r| !(r.is_finite() && *r > 0.0)) {
            return Err(format!(
                "stream_tokens_per_sec must be a number > 0 (or null for no pacing), got {rate}"
            ));
        }
        config.stream_tokens_per_sec = pace;
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
    if let Some(window) = patch.window_quota {
        config.window_quota = match window {
            None => None,
            Some(w) => Some(WindowQuota {
                requests: w.requests,
                window: window_length("window_quota", w.window_secs)?,
                sliding: w.sliding.unwrap_or(false),
            }),
        };
    }
    if let Some(window) = patch.token_window_quota {
        config.token_window_quota = match window {
            None => None,
            Some(w) => {
                if !w.tokens.is_finite() || w.tokens < 0.0 {
                    return Err(format!(
                        "token_window_quota.tokens must be a number >= 0, got {}",
                        w.tokens
                    ));
                }
                Some(TokenWindowQuota {
                    tokens: w.tokens,
                    window: window_length("token_window_quota", w.window_secs)?,
                    sliding: w.sliding.unwrap_or(false),
                })
            }
        };
    }
    if let Some(tokens) = patch.token_quota {
        config.token_quota = match tokens {
            None => None,
            Some(t) => {
                let q = TokenQuota {
                    tokens_per_minute: t.tokens_per_minute,
                    burst_tokens: t.burst_tokens.unwrap_or(t.tokens_per_minute / 6.0),
                };
                if !q.tokens_per_minute.is_finite()
                    || q.tokens_per_minute < 0.0
                    || !q.burst_tokens.is_finite()
                    || q.burst_tokens < 0.0
                {
                    return Err(
                        "token_quota needs tokens_per_minute >= 0 and burst_tokens >= 0 (finite)"
                            .to_owned(),
                    );
                }
                Some(q)
            }
        };
    }
    if let Some(schedule) = patch.quota_schedule {
        let mut steps = Vec::new();
        for (secs, factor) in schedule.unwrap_or_default() {
            let at = Duration::try_from_secs_f64(secs)
                .map_err(|_| format!("quota_schedule: offsets must be seconds >= 0, got {secs}"))?;
            if !factor.is_finite() || factor < 0.0 {
                return Err(format!(
                    "quota_schedule: factors must be finite and >= 0, got {factor}"
                ));
            }
            steps.push((at, factor));
        }
        config.quota_schedule = steps;
    }
    if let Some(rates) = patch.error_rates {
        let mut before = Vec::new();
        let mut mid_stream = Vec::new();
        for (name, rate) in rates {
            let fault: Fault = name.parse().map_err(|e| format!("error_rates: {e}"))?;
            if !(0.0..=1.0).contains(&rate) {
                return Err(format!("error_rates.{name} must be in 0..=1, got {rate}"));
            }
            match fault {
                Fault::Before(kind) => before.push((kind, rate)),
                Fault::MidStream(fault) => mid_stream.push((fault, rate)),
            }
        }
        config.error_rates = before;
        config.stream_error_rates = mid_stream;
    }
    if let Some(seed) = patch.seed {
        config.seed = seed;
    }
    if let Some(duration) = patch.call_duration {
        config.call_duration = duration.map(call_duration).transpose()?;
    }
    if let Some(day) = patch.token_day_quota {
        config.token_day_quota = match day {
            None => None,
            Some(d) => {
                if !d.tokens.is_finite() || d.tokens < 0.0 {
                    return Err(format!(
                        "token_day_quota.tokens must be a number >= 0, got {}",
                        d.tokens
                    ));
                }
                let secs = d.window_secs.unwrap_or(TokenDayQuota::DAY.as_secs_f64());
                Some(TokenDayQuota {
                    tokens: d.tokens,
                    window: window_length("token_day_quota", Some(secs))?,
                })
            }
        };
    }
    if let Some(burndown) = patch.burndown {
        if let Some(x) = burndown.filter(|x| !(x.is_finite() && *x >= 0.0)) {
            return Err(format!(
                "burndown must be a number >= 0 (or null for the model family's), got {x}"
            ));
        }
        config.burndown = burndown;
    }
    if let Some(rate) = patch.stray_throttle_rate {
        if !(0.0..=1.0).contains(&rate) {
            return Err(format!("stray_throttle_rate must be in 0..=1, got {rate}"));
        }
        config.stray_throttle_rate = rate;
    }
    Ok(config)
}

/// Checks a `call_duration` patch: median and rate > 0, spread >= 0 (all finite).
fn call_duration(p: CallDurationPatch) -> Result<CallDuration, String> {
    let d = CallDuration {
        median_secs: p.median_secs,
        spread: p.spread.unwrap_or(CallDuration::DEFAULT_SPREAD),
        tokens_per_sec: p
            .tokens_per_sec
            .unwrap_or(CallDuration::DEFAULT_TOKENS_PER_SEC),
    };
    let positive = |x: f64| x.is_finite() && x > 0.0;
    if positive(d.median_secs)
        && positive(d.tokens_per_sec)
        && d.spread.is_finite()
        && d.spread >= 0.0
    {
        Ok(d)
    } else {
        Err(format!(
            "call_duration needs median_secs > 0, spread >= 0 and tokens_per_sec > 0 (finite), got {d:?}"
        ))
    }
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

#[cfg(test)]
mod tests {
    use super::*;

    fn patch(json: &str, config: EmulatorConfig) -> Result<EmulatorConfig, String> {
        let patch: ConfigPatch = serde_json::from_str(json).map_err(|e| e.to_string())?;
        apply(patch, config)
    }

    #[test]
    fn window_shapes_patch_in_requests_and_tokens() {
        let c = patch(
            r#"{"window_quota": {"requests": 30, "sliding": true},
                "token_window_quota": {"tokens": 9000, "window_secs": 60, "sliding": true}}"#,
            EmulatorConfig::default(),
        )
        .unwrap();
        assert_eq!(c.window_quota, Some(WindowQuota::sliding_per_minute(30)));
        assert_eq!(
            c.token_window_quota,
            Some(TokenWindowQuota::sliding_per_minute(9000.0))
        );
        let c = patch(r#"{"token_window_quota": {"tokens": 500}}"#, c).unwrap();
        assert_eq!(
            c.token_window_quota,
            Some(TokenWindowQuota::per_minute(500.0))
        );
        let c = patch(r#"{"token_window_quota": null}"#, c).unwrap();
        assert_eq!(c.token_window_quota, None);
        for bad in [
            r#"{"token_window_quota": {"tokens": -1}}"#,
            r#"{"token_window_quota": {"tokens": 5, "window_secs": 0}}"#,
            r#"{"window_quota": {"requests": 5, "sliding": "yes"}}"#,
        ] {
            assert!(patch(bad, EmulatorConfig::default()).is_err(), "{bad}");
        }
    }

    #[test]
    fn quota_modes_patch_with_defaults_and_null() {
        let c = patch(
            r#"{"window_quota": {"requests": 10}, "token_quota": {"tokens_per_minute": 600},
                "quota_schedule": [[30, 0.5], [60.5, 1]]}"#,
            EmulatorConfig::default(),
        )
        .unwrap();
        assert_eq!(c.window_quota, Some(WindowQuota::per_minute(10)));
        assert_eq!(c.token_quota, Some(TokenQuota::per_minute(600.0)));
        assert_eq!(c.token_quota.unwrap().burst_tokens, 100.0);
        assert_eq!(
            c.quota_schedule,
            vec![
                (Duration::from_secs(30), 0.5),
                (Duration::from_millis(60_500), 1.0)
            ]
        );

        let c = patch(
            r#"{"window_quota": {"requests": 3, "window_secs": 0.5},
                "token_quota": {"tokens_per_minute": 60, "burst_tokens": 300}}"#,
            c,
        )
        .unwrap();
        assert_eq!(c.window_quota.unwrap().window, Duration::from_millis(500));
        assert_eq!(c.token_quota.unwrap().burst_tokens, 300.0);
        assert_eq!(c.quota_schedule.len(), 2, "absent: kept");

        let c = patch(
            r#"{"window_quota": null, "token_quota": null, "quota_schedule": null}"#,
            c,
        )
        .unwrap();
        assert_eq!(c, EmulatorConfig::default());
    }

    #[test]
    fn pacing_and_mid_stream_rates_patch() {
        let c = patch(
            r#"{"stream_tokens_per_sec": 40,
                "error_rates": {"ThrottlingException": 0.1, "cut@3": 0.2, "stall@1:2": 0.05}}"#,
            EmulatorConfig::default(),
        )
        .unwrap();
        assert_eq!(c.stream_tokens_per_sec, Some(40.0));
        assert_eq!(
            c.error_rates,
            vec![(super::super::FaultKind::Throttling, 0.1)]
        );
        let names: Vec<String> = c
            .stream_error_rates
            .iter()
            .map(|(m, r)| format!("{m}={r}"))
            .collect();
        assert_eq!(names, ["cut@3=0.2", "stall@1:2=0.05"]);

        let c = patch(r#"{"latency_ms": 1}"#, c).unwrap();
        assert_eq!(c.stream_tokens_per_sec, Some(40.0), "absent: kept");
        let c = patch(r#"{"stream_tokens_per_sec": null, "error_rates": {}}"#, c).unwrap();
        assert_eq!(
            c,
            EmulatorConfig {
                latency: Duration::from_millis(1),
                ..EmulatorConfig::default()
            }
        );
        for bad in [
            r#"{"stream_tokens_per_sec": 0}"#,
            r#"{"stream_tokens_per_sec": -3}"#,
            r#"{"error_rates": {"cut@x": 0.1}}"#,
            r#"{"error_rates": {"AccessDeniedException@2": 0.1}}"#,
        ] {
            assert!(patch(bad, EmulatorConfig::default()).is_err(), "{bad}");
        }
    }

    #[test]
    fn claude_shape_fields_patch_with_defaults_and_null() {
        let c = patch(
            r#"{"call_duration": {"median_secs": 5}, "token_day_quota": {"tokens": 1000000},
                "burndown": 5, "stray_throttle_rate": 0.03}"#,
            EmulatorConfig::default(),
        )
        .unwrap();
        assert_eq!(
            c.call_duration,
            Some(CallDuration {
                median_secs: 5.0,
                spread: 0.5,
                tokens_per_sec: 50.0
            })
        );
        assert_eq!(c.token_day_quota, Some(TokenDayQuota::per_day(1e6)));
        assert_eq!((c.burndown, c.stray_throttle_rate), (Some(5.0), 0.03));
        let c = patch(
            r#"{"call_duration": {"median_secs": 2, "spread": 0, "tokens_per_sec": 10},
                "token_day_quota": {"tokens": 50, "window_secs": 3}}"#,
            c,
        )
        .unwrap();
        assert_eq!(c.call_duration.unwrap().spread, 0.0);
        assert_eq!(c.token_day_quota.unwrap().window, Duration::from_secs(3));
        assert_eq!(c.burndown, Some(5.0), "absent: kept");
        let c = patch(
            r#"{"call_duration": null, "token_day_quota": null, "burndown": null,
                "stray_throttle_rate": 0}"#,
            c,
        )
        .unwrap();
        assert_eq!(c, EmulatorConfig::default());
        for bad in [
            r#"{"call_duration": {"median_secs": 0}}"#,
            r#"{"call_duration": {"median_secs": 1, "spread": -1}}"#,
            r#"{"call_duration": {"median_secs": 1, "tokens_per_sec": 0}}"#,
            r#"{"token_day_quota": {"tokens": -1}}"#,
            r#"{"token_day_quota": {"tokens": 1, "window_secs": 0}}"#,
            r#"{"burndown": -1}"#,
            r#"{"stray_throttle_rate": 1.5}"#,
        ] {
            assert!(patch(bad, EmulatorConfig::default()).is_err(), "{bad}");
        }
    }

    #[test]
    fn bad_quota_patches_are_refused() {
        for bad in [
            r#"{"window_quota": {"requests": -1}}"#,
            r#"{"window_quota": {"requests": 1, "window_secs": 0}}"#,
            r#"{"window_quota": {"requests": 1, "window": 5}}"#,
            r#"{"token_quota": {"tokens_per_minute": -5}}"#,
            r#"{"token_quota": {"tokens_per_minute": 5, "burst_tokens": -1}}"#,
            r#"{"quota_schedule": [[-1, 0.5]]}"#,
            r#"{"quota_schedule": [[1, -0.5]]}"#,
            r#"{"quota_schedule": [[1]]}"#,
        ] {
            assert!(patch(bad, EmulatorConfig::default()).is_err(), "{bad}");
        }
    }
}
