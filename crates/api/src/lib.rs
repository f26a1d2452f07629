//! The node's HTTP API (axum): JSON routes documented by an OpenAPI
//! document generated from this code (`/api/openapi.json`, utoipa),
//! server-sent events for a job's progress, Prometheus metrics at
//! `/metrics`, and the web dashboard at `/`.
//!
//! Errors are JSON `{"error": "..."}` with a fitting status code, the body
//! extractor's rejections (malformed JSON, an oversized body) included. A
//! request from a non-loopback address must carry the node's bearer token.

use axum::extract::rejection::JsonRejection;
use axum::extract::{ConnectInfo, DefaultBodyLimit, FromRequest, Path, Query, Request, State};
use axum::http::{HeaderMap, HeaderValue, StatusCode, header};
use axum::middleware::{self, Next};
use axum::response::sse::{Event, KeepAlive, Sse};
use axum::response::{Html, IntoResponse, Response};
use axum::routing::{get, post};
use axum::{Json, Router};
use futures::Stream;
use node::{JobStatus, JobSubmission, NodeError, NodeHandle, TASKS_PAGE_MAX};
use serde::{Deserialize, Serialize};
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;
use utoipa::OpenApi;

/// Largest request body: a job submission carries a job file, not data.
pub const REQUEST_BODY_BYTES_MAX: usize = 2 << 20;
/// How often a job's event stream looks for a change.
pub const EVENTS_POLL: Duration = Duration::from_millis(250);
/// The longest a submission may wait for its job to end (`wait_s`).
pub const SUBMIT_WAIT_S_MAX: u64 = 600;
/// Tasks listed when a request does not say.
pub const TASKS_PAGE_DEFAULT: u64 = 1_000;

const DASHBOARD: &str = include_str!("dashboard.html");

mod schema;
use schema::{JobStatusDoc, JobSubmissionDoc, NodeInfoDoc, PeerInfoDoc, TaskInfoDoc};

#[derive(Debug, thiserror::Error)]
pub enum ApiError {
    #[error("API address {addr}: {message}")]
    Bind { addr: String, message: String },
}

/// An error as every route returns it.
#[derive(Serialize, Deserialize, utoipa::ToSchema)]
pub struct ErrorBody {
    pub error: String,
}

struct Failure(StatusCode, String);

impl IntoResponse for Failure {
    fn into_response(self) -> Response {
        (self.0, Json(ErrorBody { error: self.1 })).into_response()
    }
}

impl From<NodeError> for Failure {
    fn from(e: NodeError) -> Self {
        let code = match e {
            NodeError::UnknownJob(_) => StatusCode::NOT_FOUND,
            NodeError::Job(_) => StatusCode::BAD_REQUEST,
            NodeError::Conflict(_) => StatusCode::CONFLICT,
            _ => StatusCode::INTERNAL_SERVER_ERROR,
        };
        Failure(code, e.to_string())
    }
}

/// A JSON body whose rejections (syntax, missing fields, too large) are
/// JSON errors like every other.
struct JsonBody<T>(T);

impl<S: Send + Sync, T: serde::de::DeserializeOwned> FromRequest<S> for JsonBody<T> {
    type Rejection = Failure;

    async fn from_request(req: Request, state: &S) -> Result<Self, Self::Rejection> {
        match Json::<T>::from_request(req, state).await {
            Ok(Json(value)) => Ok(JsonBody(value)),
            Err(rejection) => Err(rejected(rejection)),
        }
    }
}

fn rejected(rejection: JsonRejection) -> Failure {
    let status = rejection.status();
    let message = if status == StatusCode::PAYLOAD_TOO_LARGE {
        format!("the request body is over {REQUEST_BODY_BYTES_MAX} bytes (REQUEST_BODY_BYTES_MAX)")
    } else {
        rejection.body_text()
    };
    Failure(status, message)
}

#[derive(OpenApi)]
#[openapi(
    info(
        title = "Plexus node API",
        description = "A Plexus node: submit and follow jobs, see peers, offers and this node's provider state."
    ),
    paths(
        list_jobs,
        submit_job,
        job_status,
        cancel_job,
        job_tasks,
        task_tile,
        job_result,
        job_events,
        peers,
        info,
        ledger_own,
        ledger_account,
        ledger_escrow,
        ledger_blocks,
        ledger_tx,
        metrics
    ),
    components(schemas(
        ErrorBody,
        JobSubmissionDoc,
        JobStatusDoc,
        schema::ProviderShareDoc,
        schema::VerificationStatusDoc,
        schema::CoalitionBoundDoc,
        TaskInfoDoc,
        PeerInfoDoc,
        NodeInfoDoc,
        schema::ProviderStatusDoc,
        Submitted
    ))
)]
pub struct ApiDoc;

/// The OpenAPI document, as served at `/api/openapi.json`.
pub fn openapi_json() -> String {
    ApiDoc::openapi()
        .to_pretty_json()
        .unwrap_or_else(|e| format!("{{\"error\": \"{e}\"}}"))
}

#[derive(Clone)]
struct AppState {
    node: NodeHandle,
    /// Required from non-loopback clients.
    token: Option<Arc<str>>,
}

pub fn router(node: NodeHandle, token: Option<String>) -> Router {
    let state = AppState {
        node,
        token: token.map(Arc::from),
    };
    Router::new()
        .route("/", get(dashboard))
        .route("/api/openapi.json", get(openapi))
        .route("/api/jobs", get(list_jobs).post(submit_job))
        .route("/api/jobs/{id}", get(job_status))
        .route("/api/jobs/{id}/cancel", post(cancel_job))
        .route("/api/jobs/{id}/tasks", get(job_tasks))
        .route("/api/jobs/{id}/tasks/{index}/tile", get(task_tile))
        .route("/api/jobs/{id}/result", get(job_result))
        .route("/api/jobs/{id}/events", get(job_events))
        .route("/api/peers", get(peers))
        .route("/api/node", get(info))
        .route("/api/ledger", get(ledger_own))
        .route("/api/ledger/accounts/{account}", get(ledger_account))
        .route("/api/ledger/escrows/{job}", get(ledger_escrow))
        .route("/api/ledger/blocks", get(ledger_blocks))
        .route("/api/ledger/txs/{id}", get(ledger_tx))
        .route("/metrics", get(metrics))
        .fallback(|| async {
            Failure(
                StatusCode::NOT_FOUND,
                "no such route: see /api/openapi.json".into(),
            )
        })
        .layer(DefaultBodyLimit::max(REQUEST_BODY_BYTES_MAX))
        .layer(middleware::from_fn_with_state(state.clone(), authorize))
        .with_state(state)
}

/// Loopback clients are this machine's own; anyone else shows the token.
async fn authorize(
    State(state): State<AppState>,
    ConnectInfo(peer): ConnectInfo<SocketAddr>,
    headers: HeaderMap,
    request: Request,
    next: Next,
) -> Response {
    if peer.ip().is_loopback() {
        return next.run(request).await;
    }
    let presented = headers
        .get(header::AUTHORIZATION)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.strip_prefix("Bearer "));
    match (&state.token, presented) {
        (Some(token), Some(given)) if constant_time_eq(token.as_bytes(), given.as_bytes()) => {
            next.run(request).await
        }
        (None, _) => Failure(
            StatusCode::FORBIDDEN,
            "this node's API serves loopback clients only".into(),
        )
        .into_response(),
        _ => Failure(
            StatusCode::UNAUTHORIZED,
            format!(
                "a request from {} needs `Authorization: Bearer TOKEN` (the token is in the node's data dir, api.token)",
                peer.ip()
            ),
        )
        .into_response(),
    }
}

/// Compares without stopping at the first difference, so timing does not
/// reveal how much of a guessed token is right.
fn constant_time_eq(a: &[u8], b: &[u8]) -> bool {
    a.len() == b.len() && a.iter().zip(b).fold(0u8, |acc, (x, y)| acc | (x ^ y)) == 0
}

/// Binds the API on `addr` and serves it in the background; returns the
/// bound address. `token` is required from non-loopback clients; without
/// one, only loopback clients are served.
pub async fn serve(
    node: NodeHandle,
    addr: SocketAddr,
    token: Option<String>,
) -> Result<SocketAddr, ApiError> {
    let listener = tokio::net::TcpListener::bind(addr)
        .await
        .map_err(|e| ApiError::Bind {
            addr: addr.to_string(),
            message: e.to_string(),
        })?;
    let bound = listener.local_addr().map_err(|e| ApiError::Bind {
        addr: addr.to_string(),
        message: e.to_string(),
    })?;
    let app = router(node, token).into_make_service_with_connect_info::<SocketAddr>();
    tokio::spawn(async move {
        // Without TCP_NODELAY a response written in pieces (an event
        // stream, its end) waits for the client's delayed ACK: 40 ms.
        use axum::serve::ListenerExt;
        let listener = listener.tap_io(|tcp| {
            let _ = tcp.set_nodelay(true);
        });
        if let Err(e) = axum::serve(listener, app).await {
            tracing::error!(target: "plexus::api", "the API stopped: {e}");
        }
    });
    Ok(bound)
}

async fn dashboard() -> Html<&'static str> {
    Html(DASHBOARD)
}

async fn openapi() -> Response {
    ([(header::CONTENT_TYPE, "application/json")], openapi_json()).into_response()
}

#[derive(Serialize, Deserialize, utoipa::ToSchema)]
pub struct Submitted {
    pub id: String,
    /// With `wait_s`: the job's status when it ended, or when the wait ran out.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schema(value_type = Option<JobStatusDoc>)]
    pub status: Option<JobStatus>,
}

#[derive(Deserialize, utoipa::IntoParams)]
struct SubmitWait {
    /// Answer when the job has ended, or after this many seconds at most
    /// (SUBMIT_WAIT_S_MAX), with its status: one request from a job to its
    /// result, for short jobs.
    wait_s: Option<u64>,
}

/// Submits a job: the job file's text and the directory its paths start from.
#[utoipa::path(post, path = "/api/jobs", request_body = JobSubmissionDoc, params(SubmitWait),
    responses(
        (status = 201, description = "Accepted and recorded (and ended, or waited for wait_s)", body = Submitted),
        (status = 400, description = "Malformed body, invalid job file or wait_s", body = ErrorBody),
        (status = 413, description = "Body over REQUEST_BODY_BYTES_MAX", body = ErrorBody),
    ))]
async fn submit_job(
    State(s): State<AppState>,
    wait: Result<Query<SubmitWait>, axum::extract::rejection::QueryRejection>,
    JsonBody(job): JsonBody<JobSubmission>,
) -> Result<Response, Failure> {
    let Query(wait) = wait.map_err(|e| Failure(StatusCode::BAD_REQUEST, e.body_text()))?;
    let wait = match wait.wait_s {
        Some(w) if w > SUBMIT_WAIT_S_MAX => {
            return Err(Failure(
                StatusCode::BAD_REQUEST,
                format!("wait_s {w} is over {SUBMIT_WAIT_S_MAX} (SUBMIT_WAIT_S_MAX)"),
            ));
        }
        w => w.map(Duration::from_secs),
    };
    let id = s.node.submit(job).await?;
    let status = match wait {
        Some(wait) => Some(wait_for_end(&s.node, &id, wait).await?),
        None => None,
    };
    Ok((StatusCode::CREATED, Json(Submitted { id, status })).into_response())
}

/// The job's status once it has ended (the node answers the moment it
/// does), or as it stands when `wait` has passed.
async fn wait_for_end(node: &NodeHandle, id: &str, wait: Duration) -> Result<JobStatus, Failure> {
    match tokio::time::timeout(wait, node.wait_end(id.to_owned())).await {
        Ok(ended) => Ok(ended?),
        Err(_) => Ok(node.status(id.to_owned()).await?),
    }
}

/// Every job this node holds, oldest first.
#[utoipa::path(get, path = "/api/jobs", responses((status = 200, body = Vec<JobStatusDoc>)))]
async fn list_jobs(State(s): State<AppState>) -> Result<Response, Failure> {
    Ok(Json(s.node.jobs().await?).into_response())
}

/// A job's progress, verification and result.
#[utoipa::path(get, path = "/api/jobs/{id}", params(("id" = String, Path, description = "Job id")),
    responses((status = 200, body = JobStatusDoc), (status = 404, body = ErrorBody)))]
async fn job_status(
    State(s): State<AppState>,
    Path(id): Path<String>,
) -> Result<Response, Failure> {
    Ok(Json(s.node.status(id).await?).into_response())
}

/// Stops a running job: nothing more is dispatched, results still out are ignored.
#[utoipa::path(post, path = "/api/jobs/{id}/cancel", params(("id" = String, Path, description = "Job id")),
    responses((status = 200, body = JobStatusDoc), (status = 404, body = ErrorBody),
        (status = 409, description = "The job has ended already", body = ErrorBody)))]
async fn cancel_job(
    State(s): State<AppState>,
    Path(id): Path<String>,
) -> Result<Response, Failure> {
    Ok(Json(s.node.cancel(id).await?).into_response())
}

#[derive(Deserialize, utoipa::IntoParams)]
struct Page {
    /// First task index.
    from: Option<u64>,
    /// Tasks to list, at most TASKS_PAGE_MAX (10,000).
    limit: Option<u64>,
}

/// Where each task stands: pending, running (on which providers) or settled (how).
#[utoipa::path(get, path = "/api/jobs/{id}/tasks",
    params(("id" = String, Path, description = "Job id"), Page),
    responses((status = 200, body = Vec<TaskInfoDoc>), (status = 400, body = ErrorBody),
        (status = 404, body = ErrorBody)))]
async fn job_tasks(
    State(s): State<AppState>,
    Path(id): Path<String>,
    page: Result<Query<Page>, axum::extract::rejection::QueryRejection>,
) -> Result<Response, Failure> {
    let Query(page) = page.map_err(|e| Failure(StatusCode::BAD_REQUEST, e.body_text()))?;
    let limit = page.limit.unwrap_or(TASKS_PAGE_DEFAULT);
    if limit > TASKS_PAGE_MAX {
        return Err(Failure(
            StatusCode::BAD_REQUEST,
            format!("limit {limit} is over {TASKS_PAGE_MAX} (TASKS_PAGE_MAX)"),
        ));
    }
    let tasks = s.node.tasks(id, page.from.unwrap_or(0), limit).await?;
    Ok(Json(tasks).into_response())
}

/// A settled tile as an 8-bit PNG, with its place in the image in headers
/// (x-tile-x, x-tile-y, x-image-width, x-image-height).
#[utoipa::path(get, path = "/api/jobs/{id}/tasks/{index}/tile",
    params(("id" = String, Path, description = "Job id"), ("index" = u64, Path, description = "Task index")),
    responses((status = 200, content_type = "image/png", description = "The tile"),
        (status = 404, body = ErrorBody), (status = 409, body = ErrorBody)))]
async fn task_tile(
    State(s): State<AppState>,
    Path((id, index)): Path<(String, u64)>,
) -> Result<Response, Failure> {
    let path = s.node.task_output(id, index).await?;
    let bytes = tokio::fs::read(&path).await.map_err(|e| {
        Failure(
            StatusCode::INTERNAL_SERVER_ERROR,
            format!("{}: {e}", path.display()),
        )
    })?;
    let (tile, png) = tokio::task::spawn_blocking(move || assemble::tile_preview_png(&bytes))
        .await
        .map_err(|e| Failure(StatusCode::INTERNAL_SERVER_ERROR, e.to_string()))?
        .map_err(|e| Failure(StatusCode::INTERNAL_SERVER_ERROR, e.to_string()))?;
    let mut headers = HeaderMap::new();
    headers.insert(header::CONTENT_TYPE, HeaderValue::from_static("image/png"));
    for (name, value) in [
        ("x-tile-x", tile.x),
        ("x-tile-y", tile.y),
        ("x-image-width", tile.image_width),
        ("x-image-height", tile.image_height),
    ] {
        headers.insert(name, HeaderValue::from(value));
    }
    Ok((headers, png).into_response())
}

/// The assembled result (the PNG of a render job).
#[utoipa::path(get, path = "/api/jobs/{id}/result", params(("id" = String, Path, description = "Job id")),
    responses((status = 200, content_type = "application/octet-stream", description = "The result file"),
        (status = 404, body = ErrorBody), (status = 409, description = "Not completed yet", body = ErrorBody)))]
async fn job_result(
    State(s): State<AppState>,
    Path(id): Path<String>,
) -> Result<Response, Failure> {
    let status = s.node.status(id.clone()).await?;
    let Some(path) = status
        .result
        .filter(|_| status.state == types::JobPhase::Completed)
    else {
        return Err(Failure(
            StatusCode::CONFLICT,
            format!("job {id} has no result yet (it is {})", status.state),
        ));
    };
    let bytes = tokio::fs::read(&path)
        .await
        .map_err(|e| Failure(StatusCode::INTERNAL_SERVER_ERROR, format!("{path}: {e}")))?;
    Ok(([(header::CONTENT_TYPE, "application/octet-stream")], bytes).into_response())
}

/// Server-sent events: a `status` event (the job's status as JSON) each
/// time it changes, the last one when the job has ended.
#[utoipa::path(get, path = "/api/jobs/{id}/events", params(("id" = String, Path, description = "Job id")),
    responses((status = 200, content_type = "text/event-stream", description = "status events"),
        (status = 404, body = ErrorBody)))]
async fn job_events(
    State(s): State<AppState>,
    Path(id): Path<String>,
) -> Result<Sse<impl Stream<Item = Result<Event, std::convert::Infallible>>>, Failure> {
    // An unknown job is a 404 before the stream starts.
    s.node.status(id.clone()).await?;
    let mut changes = s.node.changes();
    changes.mark_unchanged();
    let stream = futures::stream::unfold(
        (s.node, id, String::new(), false, changes),
        |(node, id, last, done, mut changes)| async move {
            if done {
                return None;
            }
            loop {
                let Ok(status) = node.status(id.clone()).await else {
                    return None;
                };
                let json = serde_json::to_string(&status).unwrap_or_default();
                let ended = status.state.has_ended();
                // The elapsed time changes on every look; only a change of
                // something else is an event.
                let key = serde_json::to_string(&node::JobStatus {
                    elapsed_s: 0.0,
                    ..status
                })
                .unwrap_or_default();
                if key != last {
                    let event = Event::default().event("status").data(json);
                    return Some((Ok(event), (node, id, key, ended, changes)));
                }
                // Woken by the node's next change; EVENTS_POLL at the latest.
                let _ = tokio::time::timeout(EVENTS_POLL, changes.changed()).await;
                changes.borrow_and_update();
            }
        },
    );
    Ok(Sse::new(stream).keep_alive(KeepAlive::default()))
}

/// Known peers: connection, round-trip time, live offer and this node's record of them.
#[utoipa::path(get, path = "/api/peers", responses((status = 200, body = Vec<PeerInfoDoc>)))]
async fn peers(State(s): State<AppState>) -> Result<Response, Failure> {
    Ok(Json(s.node.peers().await?).into_response())
}

/// This node: peer id, addresses, and its provider state (tasks run, fuel, price).
#[utoipa::path(get, path = "/api/node", responses((status = 200, body = NodeInfoDoc)))]
async fn info(State(s): State<AppState>) -> Result<Response, Failure> {
    Ok(Json(s.node.info().await?).into_response())
}

fn ledger_of(s: &AppState) -> Result<&node::pay::Pay, Failure> {
    s.node.ledger().ok_or_else(|| {
        Failure(
            StatusCode::NOT_FOUND,
            "this node runs no ledger (start it with --ledger)".into(),
        )
    })
}

/// This node's ledger account: balance, stake, nonce, at the last block.
#[utoipa::path(get, path = "/api/ledger",
    responses((status = 200, description = "account, height, balance, stake, unbonding, nonce"),
        (status = 404, body = ErrorBody, description = "the node runs no ledger")))]
async fn ledger_own(State(s): State<AppState>) -> Result<Response, Failure> {
    let pay = ledger_of(&s)?;
    Ok(Json(pay.account_view(pay.account).await?).into_response())
}

/// An account (64 hex digits, or an ed25519 peer id) on this node's ledger.
#[utoipa::path(get, path = "/api/ledger/accounts/{account}",
    params(("account" = String, Path, description = "64 hex digits, or a peer id")),
    responses((status = 200, description = "account, height, balance, stake, unbonding, nonce"),
        (status = 400, body = ErrorBody), (status = 404, body = ErrorBody)))]
async fn ledger_account(
    State(s): State<AppState>,
    Path(account): Path<String>,
) -> Result<Response, Failure> {
    let pay = ledger_of(&s)?;
    let id = node::pay::parse_account(&account)?;
    Ok(Json(pay.account_view(id).await?).into_response())
}

/// A job's escrow: locked, left, what each provider was paid, refunded.
#[utoipa::path(get, path = "/api/ledger/escrows/{job}",
    params(("job" = String, Path, description = "the job's id")),
    responses((status = 200, description = "the escrow and its earnings by provider"),
        (status = 404, body = ErrorBody)))]
async fn ledger_escrow(
    State(s): State<AppState>,
    Path(job): Path<String>,
) -> Result<Response, Failure> {
    Ok(Json(ledger_of(&s)?.escrow_view(&job).await?).into_response())
}

#[derive(serde::Deserialize)]
struct BlocksQuery {
    from: Option<u64>,
    count: Option<usize>,
}

/// Blocks from a height (default 1), at most 100 (BLOCKS_PER_QUERY_MAX).
#[utoipa::path(get, path = "/api/ledger/blocks",
    params(("from" = Option<u64>, Query, description = "the first height"),
        ("count" = Option<usize>, Query, description = "how many, at most 100")),
    responses((status = 200, description = "blocks with their transactions and receipts"),
        (status = 404, body = ErrorBody)))]
async fn ledger_blocks(
    State(s): State<AppState>,
    q: Result<Query<BlocksQuery>, axum::extract::rejection::QueryRejection>,
) -> Result<Response, Failure> {
    let Query(q) = q.map_err(|e| Failure(StatusCode::BAD_REQUEST, e.body_text()))?;
    let pay = ledger_of(&s)?;
    let blocks = pay
        .blocks_view(q.from.unwrap_or(1), q.count.unwrap_or(20))
        .await?;
    Ok(Json(blocks).into_response())
}

/// Where a transaction went (its block and index) and what it did.
#[utoipa::path(get, path = "/api/ledger/txs/{id}",
    params(("id" = String, Path, description = "the transaction's id, 64 hex digits")),
    responses((status = 200, description = "height, index, receipt"),
        (status = 400, body = ErrorBody), (status = 404, body = ErrorBody)))]
async fn ledger_tx(State(s): State<AppState>, Path(id): Path<String>) -> Result<Response, Failure> {
    Ok(Json(ledger_of(&s)?.tx_view(&id).await?).into_response())
}

/// Metrics in Prometheus text format.
#[utoipa::path(get, path = "/metrics",
    responses((status = 200, content_type = "text/plain", description = "Prometheus text exposition")))]
async fn metrics(State(s): State<AppState>) -> Response {
    (
        [(
            header::CONTENT_TYPE,
            "application/openmetrics-text; version=1.0.0; charset=utf-8",
        )],
        s.node.metrics().encode(),
    )
        .into_response()
}
