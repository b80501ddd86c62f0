//! The routes. Parameters are checked against the OpenAPI document first (`params`).
//! Handlers are thin: each asks the [`DaemonView`] one question on tokio's
//! blocking pool (the view reads a SQLite catalog) and answers JSON; errors are
//! `{"error": "..."}` with 400 (bad request), 404 (no such tenant, job, runbook or run),
//! 409 (conflict), 422 (a reloaded config that does not load), 503 (the daemon cannot
//! answer now), 401 (see `auth`).

use std::sync::Arc;

use axum::extract::rejection::{PathRejection, QueryRejection};
use axum::extract::{Path, Query, State};
use axum::http::header::{CACHE_CONTROL, CONTENT_TYPE, LOCATION, X_CONTENT_TYPE_OPTIONS};
use axum::http::{HeaderValue, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
use axum::{middleware, Json, Router};
use haven_ops::daemon::view::{DaemonView, JobKind, RunbookMode, ViewError};
use serde::Deserialize;

use crate::auth::{require_token, Token};

type View = Arc<dyn DaemonView>;

/// Jobs listed when the request names no `limit`: the document's default (its bounds
/// are enforced by `params::validate` before the handler runs).
fn default_jobs() -> usize {
    crate::params::SPEC
        .default_int("get", "/api/v1/jobs", "limit")
        .and_then(|n| usize::try_from(n).ok())
        .unwrap_or(50)
}

pub(crate) fn router(view: View, token: Token) -> Router {
    // A document the validator cannot read fails here, at start, not at a request.
    std::sync::LazyLock::force(&crate::params::SPEC);
    let protected = Router::new()
        .route("/api/v1/tenants", get(tenants))
        .route("/api/v1/tenants/{name}", get(tenant))
        .route("/api/v1/tenants/{name}/points", get(points))
        .route("/api/v1/tenants/{name}/backup", post(backup))
        .route("/api/v1/tenants/{name}/verify", post(verify))
        .route("/api/v1/jobs", get(jobs))
        .route("/api/v1/jobs/{id}", get(job))
        .route("/api/v1/readiness", get(readiness))
        .route("/api/v1/dr/runs", get(dr_runs))
        .route("/api/v1/dr/runs/{id}", get(dr_run))
        .route("/api/v1/runbooks/{name}/run", post(run_runbook))
        .route("/api/v1/runbooks/{name}/dry-run", post(dry_run_runbook))
        .route("/api/v1/runbooks/{name}/drill", post(drill_runbook))
        .route("/api/v1/reload", post(reload))
        .route("/metrics", get(metrics))
        // Layers run outside in: the token first, then the parameters.
        .route_layer(middleware::from_fn(crate::params::validate))
        .route_layer(middleware::from_fn_with_state(token, require_token))
        .with_state(view);
    Router::new()
        .route("/", get(crate::dashboard::page))
        .route("/api/v1/openapi.json", get(openapi))
        .merge(protected)
        .fallback(not_found)
        .layer(middleware::map_response(common_headers))
}

async fn common_headers(mut response: Response) -> Response {
    let headers = response.headers_mut();
    headers.insert(X_CONTENT_TYPE_OPTIONS, HeaderValue::from_static("nosniff"));
    // Status changes by the second; nothing here may be served from a cache.
    headers
        .entry(CACHE_CONTROL)
        .or_insert(HeaderValue::from_static("no-store"));
    response
}

/// An error answer: a status and `{"error": message}`.
#[derive(Debug)]
pub(crate) struct Failure(pub(crate) StatusCode, pub(crate) String);

pub(crate) fn error_body(message: String) -> Json<serde_json::Value> {
    Json(serde_json::json!({ "error": message }))
}

impl IntoResponse for Failure {
    fn into_response(self) -> Response {
        (self.0, error_body(self.1)).into_response()
    }
}

impl From<ViewError> for Failure {
    fn from(e: ViewError) -> Self {
        let status = match e {
            ViewError::UnknownTenant(_)
            | ViewError::UnknownJob(_)
            | ViewError::UnknownRunbook(_)
            | ViewError::UnknownRun(_) => StatusCode::NOT_FOUND,
            ViewError::BadRequest(_) => StatusCode::BAD_REQUEST,
            ViewError::Conflict(_) => StatusCode::CONFLICT,
            ViewError::Unavailable(_) => StatusCode::SERVICE_UNAVAILABLE,
            ViewError::Refused(_) => StatusCode::UNPROCESSABLE_ENTITY,
        };
        Failure(status, e.to_string())
    }
}

/// Runs `question` against the view on the blocking pool.
async fn ask<T: Send + 'static>(
    view: &View,
    question: impl FnOnce(&dyn DaemonView) -> T + Send + 'static,
) -> Result<T, Failure> {
    let view = Arc::clone(view);
    tokio::task::spawn_blocking(move || question(&*view))
        .await
        .map_err(|_| {
            Failure(
                StatusCode::INTERNAL_SERVER_ERROR,
                "the daemon failed while answering (see its log)".into(),
            )
        })
}

type Answer = Result<Response, Failure>;

fn json<T: serde::Serialize>(value: T) -> Answer {
    Ok(Json(value).into_response())
}

fn tenant_name(path: Result<Path<String>, PathRejection>) -> Result<String, Failure> {
    path.map(|Path(name)| name)
        .map_err(|e| Failure(StatusCode::BAD_REQUEST, e.body_text()))
}

async fn tenants(State(view): State<View>) -> Answer {
    json(ask(&view, |v| v.tenants()).await?)
}

async fn tenant(State(view): State<View>, path: Result<Path<String>, PathRejection>) -> Answer {
    let name = tenant_name(path)?;
    json(ask(&view, move |v| v.tenant(&name)).await??)
}

async fn points(State(view): State<View>, path: Result<Path<String>, PathRejection>) -> Answer {
    let name = tenant_name(path)?;
    json(ask(&view, move |v| v.points(&name)).await??)
}

#[derive(Debug, Deserialize)]
struct JobsQuery {
    tenant: Option<String>,
    limit: Option<usize>,
}

async fn jobs(State(view): State<View>, query: Result<Query<JobsQuery>, QueryRejection>) -> Answer {
    let Query(query) = query.map_err(|e| {
        Failure(
            StatusCode::BAD_REQUEST,
            format!("{} (expected ?tenant=NAME&limit=N)", e.body_text()),
        )
    })?;
    let limit = query.limit.unwrap_or_else(default_jobs);
    json(ask(&view, move |v| v.jobs(query.tenant.as_deref(), limit)).await?)
}

async fn job(State(view): State<View>, path: Result<Path<i64>, PathRejection>) -> Answer {
    let Path(id) = path.map_err(|_| {
        Failure(
            StatusCode::BAD_REQUEST,
            "a job id is an integer, as returned by the trigger or the job list".into(),
        )
    })?;
    json(ask(&view, move |v| v.job(id)).await??)
}

async fn trigger(view: View, path: Result<Path<String>, PathRejection>, kind: JobKind) -> Answer {
    let name = tenant_name(path)?;
    let id = ask(&view, move |v| v.trigger(&name, kind)).await??;
    let mut response =
        (StatusCode::ACCEPTED, Json(serde_json::json!({ "job": id }))).into_response();
    if let Ok(location) = HeaderValue::from_str(&format!("/api/v1/jobs/{id}")) {
        response.headers_mut().insert(LOCATION, location);
    }
    Ok(response)
}

async fn backup(State(view): State<View>, path: Result<Path<String>, PathRejection>) -> Answer {
    trigger(view, path, JobKind::Backup).await
}

async fn verify(State(view): State<View>, path: Result<Path<String>, PathRejection>) -> Answer {
    trigger(view, path, JobKind::Verify).await
}

async fn readiness(State(view): State<View>) -> Answer {
    json(ask(&view, |v| v.readiness()).await??)
}

/// Runs listed when the request names no `limit` (bounds enforced by `params::validate`).
fn default_runs() -> usize {
    crate::params::SPEC
        .default_int("get", "/api/v1/dr/runs", "limit")
        .and_then(|n| usize::try_from(n).ok())
        .unwrap_or(50)
}

#[derive(Debug, Deserialize)]
struct RunsQuery {
    limit: Option<usize>,
}

async fn dr_runs(
    State(view): State<View>,
    query: Result<Query<RunsQuery>, QueryRejection>,
) -> Answer {
    let Query(query) = query.map_err(|e| {
        Failure(
            StatusCode::BAD_REQUEST,
            format!("{} (expected ?limit=N)", e.body_text()),
        )
    })?;
    let limit = query.limit.unwrap_or_else(default_runs);
    json(ask(&view, move |v| v.dr_runs(limit)).await??)
}

async fn dr_run(State(view): State<View>, path: Result<Path<String>, PathRejection>) -> Answer {
    let id = tenant_name(path)?;
    json(ask(&view, move |v| v.dr_run(&id)).await??)
}

#[derive(Debug, Deserialize)]
struct PointQuery {
    point: Option<String>,
}

async fn start_runbook(
    view: View,
    path: Result<Path<String>, PathRejection>,
    query: Result<Query<PointQuery>, QueryRejection>,
    mode: RunbookMode,
) -> Answer {
    let name = tenant_name(path)?;
    let Query(query) = query.map_err(|e| {
        Failure(
            StatusCode::BAD_REQUEST,
            format!("{} (expected ?point=ID)", e.body_text()),
        )
    })?;
    let id = ask(&view, move |v| v.start_runbook(&name, mode, query.point)).await??;
    let location = format!("/api/v1/dr/runs/{id}");
    let mut response =
        (StatusCode::ACCEPTED, Json(serde_json::json!({ "run": id }))).into_response();
    if let Ok(location) = HeaderValue::from_str(&location) {
        response.headers_mut().insert(LOCATION, location);
    }
    Ok(response)
}

async fn run_runbook(
    State(view): State<View>,
    path: Result<Path<String>, PathRejection>,
    query: Result<Query<PointQuery>, QueryRejection>,
) -> Answer {
    start_runbook(view, path, query, RunbookMode::Run).await
}

async fn dry_run_runbook(
    State(view): State<View>,
    path: Result<Path<String>, PathRejection>,
    query: Result<Query<PointQuery>, QueryRejection>,
) -> Answer {
    start_runbook(view, path, query, RunbookMode::DryRun).await
}

async fn drill_runbook(
    State(view): State<View>,
    path: Result<Path<String>, PathRejection>,
    query: Result<Query<PointQuery>, QueryRejection>,
) -> Answer {
    start_runbook(view, path, query, RunbookMode::Drill).await
}

/// The config file read again (as SIGHUP does): 200 with what changed, 422 with the
/// error of a config that does not load (the running one stays).
async fn reload(State(view): State<View>) -> Answer {
    json(ask(&view, |v| v.reload()).await??)
}

async fn metrics(State(view): State<View>) -> Answer {
    let snapshot = ask(&view, |v| v.metrics()).await?;
    Ok((
        [(CONTENT_TYPE, crate::metrics::CONTENT_TYPE)],
        crate::metrics::render(&snapshot),
    )
        .into_response())
}

async fn openapi() -> Response {
    (
        [(CONTENT_TYPE, "application/json")],
        crate::openapi::OPENAPI_JSON,
    )
        .into_response()
}

async fn not_found() -> Failure {
    Failure(
        StatusCode::NOT_FOUND,
        "no such route: the API is described at /api/v1/openapi.json".into(),
    )
}
