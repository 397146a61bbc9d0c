//! The REST routes of the Open Inference Protocol v2 (plus Triton's repository index and `/metrics`).
use crate::binary;
use crate::errors::ApiError;
use crate::infer::{self, RequestLimits};
use crate::metrics::Metrics;
use crate::pool::{Pool, State};
use axum::body::Bytes;
use axum::extract::rejection::BytesRejection;
use axum::extract::{DefaultBodyLimit, Path, State as AxState};
use axum::http::{header, HeaderMap, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
use axum::{Json, Router};
use serde_json::json;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

/// Everything the handlers share.
pub struct AppState {
    pub pools: Vec<Arc<Pool>>,
    pub metrics: Arc<Metrics>,
    pub max_body_bytes: usize,
    pub stopping: AtomicBool,
}

impl AppState {
    /// The pool for `name` at `version`, or its highest version.
    pub fn find(&self, name: &str, version: Option<&str>) -> Result<&Arc<Pool>, ApiError> {
        let mut candidates = self.pools.iter().filter(|p| p.name() == name).peekable();
        if candidates.peek().is_none() {
            return Err(ApiError::not_found(format!("unknown model '{name}'")));
        }
        match version {
            Some(v) => candidates
                .find(|p| p.version() == v)
                .ok_or_else(|| ApiError::not_found(format!("model '{name}' has no version '{v}'"))),
            None => candidates
                .max_by_key(|p| p.version().parse::<u64>().unwrap_or(0))
                .ok_or_else(|| ApiError::not_found(format!("unknown model '{name}'"))),
        }
    }

    /// Server readiness: not draining, no model still loading, at least one model ready, and no model that
    /// was serving has lost every worker. Models whose load failed are reported (repository index, model
    /// ready) but do not hold the server back.
    pub fn ready(&self) -> Result<(), String> {
        if self.stopping.load(Ordering::SeqCst) {
            return Err("the server is shutting down".into());
        }
        let mut any = false;
        for p in &self.pools {
            match p.state() {
                State::Ready => any = true,
                State::Loading => return Err(format!("model '{}' is still warming up", p.name())),
                State::Unavailable(why) if p.info().is_some() => {
                    return Err(format!("model '{}' lost its workers: {why}", p.name()))
                }
                _ => {}
            }
        }
        if any {
            Ok(())
        } else {
            Err("no model is ready".into())
        }
    }
}

/// The router.
pub fn router(state: Arc<AppState>) -> Router {
    let limit = state.max_body_bytes;
    Router::new()
        .route("/v2", get(server_metadata))
        .route("/v2/health/live", get(live))
        .route("/v2/health/ready", get(ready))
        .route("/v2/models/{model}", get(model_metadata))
        .route(
            "/v2/models/{model}/versions/{version}",
            get(model_metadata_v),
        )
        .route("/v2/models/{model}/ready", get(model_ready))
        .route(
            "/v2/models/{model}/versions/{version}/ready",
            get(model_ready_v),
        )
        .route("/v2/models/{model}/infer", post(infer_latest))
        .route("/v2/models/{model}/versions/{version}/infer", post(infer_v))
        .route("/v2/repository/index", post(repository_index))
        .route("/metrics", get(metrics))
        .fallback(|| async { ApiError::not_found("no such route") })
        .layer(DefaultBodyLimit::max(limit))
        .with_state(state)
}

type S = AxState<Arc<AppState>>;

async fn server_metadata() -> Response {
    Json(json!({
        "name": "caffe-sandbox",
        "version": env!("CARGO_PKG_VERSION"),
        "extensions": ["binary_tensor_data", "classification", "model_repository"],
    }))
    .into_response()
}

async fn live() -> Response {
    StatusCode::OK.into_response()
}

async fn ready(AxState(s): S) -> Response {
    match s.ready() {
        Ok(()) => StatusCode::OK.into_response(),
        Err(why) => ApiError::not_ready(why).into_response(),
    }
}

async fn model_metadata(s: S, Path(model): Path<String>) -> Response {
    metadata(&s.0, &model, None).unwrap_or_else(IntoResponse::into_response)
}

async fn model_metadata_v(s: S, Path((model, version)): Path<(String, String)>) -> Response {
    metadata(&s.0, &model, Some(&version)).unwrap_or_else(IntoResponse::into_response)
}

fn metadata(s: &AppState, model: &str, version: Option<&str>) -> Result<Response, ApiError> {
    let pool = s.find(model, version)?;
    let info = pool.info().ok_or_else(|| match pool.state() {
        State::Unavailable(why) => {
            ApiError::not_ready(format!("model '{model}' is unavailable: {why}"))
        }
        _ => ApiError::not_ready(format!("model '{model}' is still warming up")),
    })?;
    let tensor = |b: &caffe_sandbox_supervisor::BlobShape| {
        let mut shape: Vec<i64> = b.dims.iter().map(|&d| d as i64).collect();
        if let Some(first) = shape.first_mut() {
            *first = -1;
        }
        json!({ "name": b.name, "datatype": "FP32", "shape": shape })
    };
    let versions: Vec<&str> = s
        .pools
        .iter()
        .filter(|p| p.name() == model)
        .map(|p| p.version())
        .collect();
    Ok(Json(json!({
        "name": model,
        "versions": versions,
        "platform": "caffe",
        "inputs": info.inputs.iter().map(tensor).collect::<Vec<_>>(),
        "outputs": info.outputs.iter().map(tensor).collect::<Vec<_>>(),
    }))
    .into_response())
}

async fn model_ready(s: S, Path(model): Path<String>) -> Response {
    readiness(&s.0, &model, None)
}

async fn model_ready_v(s: S, Path((model, version)): Path<(String, String)>) -> Response {
    readiness(&s.0, &model, Some(&version))
}

fn readiness(s: &AppState, model: &str, version: Option<&str>) -> Response {
    match s.find(model, version) {
        Err(e) => e.into_response(),
        Ok(p) => match p.state() {
            State::Ready => StatusCode::OK.into_response(),
            State::Unavailable(why) => {
                ApiError::not_ready(format!("model '{model}' is unavailable: {why}"))
                    .into_response()
            }
            State::Loading => {
                ApiError::not_ready(format!("model '{model}' is still warming up")).into_response()
            }
            State::ShuttingDown => ApiError::shutting_down().into_response(),
        },
    }
}

async fn repository_index(AxState(s): S) -> Response {
    let items: Vec<_> = s
        .pools
        .iter()
        .map(|p| {
            let st = p.state();
            let mut v = json!({ "name": p.name(), "version": p.version(), "state": st.as_str() });
            if let State::Unavailable(why) = st {
                v["reason"] = json!(why);
            }
            v
        })
        .collect();
    Json(items).into_response()
}

async fn metrics(AxState(s): S) -> Response {
    (
        [(
            header::CONTENT_TYPE,
            "application/openmetrics-text; version=1.0.0; charset=utf-8",
        )],
        s.metrics.encode(),
    )
        .into_response()
}

async fn infer_latest(
    s: S,
    Path(model): Path<String>,
    h: HeaderMap,
    body: Result<Bytes, BytesRejection>,
) -> Response {
    infer_logged(s.0, model, None, h, body).await
}

async fn infer_v(
    s: S,
    Path((model, version)): Path<(String, String)>,
    h: HeaderMap,
    body: Result<Bytes, BytesRejection>,
) -> Response {
    infer_logged(s.0, model, Some(version), h, body).await
}

/// Runs one request and records its outcome (metrics, JSON log).
async fn infer_logged(
    s: Arc<AppState>,
    model: String,
    version: Option<String>,
    headers: HeaderMap,
    body: Result<Bytes, BytesRejection>,
) -> Response {
    let t = Instant::now();
    let known = s.pools.iter().any(|p| p.name() == model);
    let label = if known { model.as_str() } else { "_unknown" };
    let result = infer(&s, &model, version.as_deref(), &headers, body).await;
    let (outcome, status, message) = match &result {
        Ok(_) => ("ok", 200, String::new()),
        Err(e) => (e.kind, e.status.as_u16(), e.message.clone()),
    };
    s.metrics.request(label, outcome);
    let ms = t.elapsed().as_secs_f64() * 1e3;
    if status == 200 {
        tracing::info!(model = label, outcome, status, total_ms = ms, "infer");
    } else {
        tracing::warn!(model = label, outcome, status, total_ms = ms, error = %message, "infer");
    }
    result.unwrap_or_else(IntoResponse::into_response)
}

async fn infer(
    s: &AppState,
    model: &str,
    version: Option<&str>,
    headers: &HeaderMap,
    body: Result<Bytes, BytesRejection>,
) -> Result<Response, ApiError> {
    if s.stopping.load(Ordering::SeqCst) {
        return Err(ApiError::shutting_down());
    }
    let pool = s.find(model, version)?;
    let body = body.map_err(|r| {
        if r.status() == StatusCode::PAYLOAD_TOO_LARGE {
            ApiError::new(
                StatusCode::PAYLOAD_TOO_LARGE,
                "body_too_large",
                format!(
                    "the request body exceeds the limit of {} bytes",
                    s.max_body_bytes
                ),
            )
        } else {
            ApiError::bad_request(format!("cannot read the request body: {}", r.body_text()))
        }
    })?;
    let Some(info) = pool.info() else {
        // Not warm yet (or never): submit reports why.
        pool.admission()?;
        return Err(ApiError::not_ready(format!(
            "model '{model}' is still warming up"
        )));
    };
    let (json_part, binary_part) = binary::split(headers, &body)?;
    let limits = RequestLimits {
        max_batch: pool.serving().max_batch,
        max_image_bytes: s.max_body_bytes,
    };
    let mut checked = infer::check(json_part, binary_part, info, &limits)?;
    let rx = pool.submit(std::mem::take(&mut checked.inputs))?;
    // The pool always answers; this outer bound only guards against a bug there (queue + compute deadlines,
    // plus the time to kill and classify a failed worker).
    let serving = pool.serving();
    let bound = serving.request_timeout * 2 + Duration::from_secs(15);
    let outcome = match tokio::time::timeout(bound, rx).await {
        Ok(Ok(o)) => o,
        Ok(Err(_)) => {
            return Err(ApiError::internal(
                "the worker slot ended without answering",
            ))
        }
        Err(_) => return Err(ApiError::timeout("no answer from the worker pool in time")),
    };
    let outputs = outcome.result?;
    let (doc, bin) = infer::respond(
        &checked,
        pool.name(),
        pool.version(),
        &outputs,
        pool.labels.as_deref(),
    );
    Ok(binary::response(doc, bin))
}
