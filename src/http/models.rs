//! `GET /v1/models`: the models the broker serves, in one list both OpenAI and Anthropic
//! clients read ([`crate::protocol::models`]).
//!
//! The broker serves whatever model id a request names, so there is no fixed catalogue. The
//! list is: the models named with `--model` (the operator's statement of what clients
//! should use, listed even before their first call), then every other model that answered at
//! least one request since the start (a model Bedrock refused is not listed), each once, in
//! that order. Names and dates come from the ids ([`crate::protocol::models::model_info`]).
//! Errors are in Anthropic's shape (Claude Code's model discovery reads this route).

use actix_web::{web, HttpRequest, HttpResponse};

use super::messages::ANTHROPIC;
use super::route;
use super::{actors_did_not_answer, AppState};
use crate::error::ApiError;
use crate::protocol::models::{model_info, models_list};

/// `GET /v1/models`.
pub(crate) async fn list(state: web::Data<AppState>, req: HttpRequest) -> HttpResponse {
    // No model is named: the error carries none.
    route::respond(&req, &state, &ANTHROPIC, async |_, _| {
        serve(&state, &req).await
    })
    .await
}

async fn serve(state: &AppState, req: &HttpRequest) -> Result<HttpResponse, ApiError> {
    state.keys.check(req)?;
    // 1. The configured models, then those that served a request.
    let status = state
        .broker
        .actor_state()
        .await
        .map_err(actors_did_not_answer)?;
    let served = status
        .throttle
        .iter()
        .filter(|model| model.succeeded > 0)
        .map(|model| model.model.clone());
    let mut ids: Vec<String> = Vec::new();
    for id in state.models.iter().cloned().chain(served) {
        if !ids.contains(&id) {
            ids.push(id);
        }
    }
    // 2. The list.
    let models: Vec<_> = ids.iter().map(|id| model_info(id)).collect();
    Ok(HttpResponse::Ok().json(models_list(&models)))
}
