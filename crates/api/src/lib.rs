//! The node's HTTP JSON API (axum), on loopback. The CLI, and later the
//! dashboard and SDKs, use it. Errors are JSON `{"error": "..."}` with a
//! fitting status code.

use axum::extract::{DefaultBodyLimit, Path, State};
use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use axum::routing::get;
use axum::{Json, Router};
use node::{JobSubmission, NodeError, NodeHandle};
use std::net::SocketAddr;

/// Largest request body: a job submission carries a job file, not data.
pub const REQUEST_BODY_BYTES_MAX: usize = 2 << 20;

#[derive(Debug, thiserror::Error)]
pub enum ApiError {
    #[error("API address {addr}: {message}")]
    Bind { addr: String, message: String },
}

struct Failure(StatusCode, String);

impl IntoResponse for Failure {
    fn into_response(self) -> Response {
        (self.0, Json(serde_json::json!({ "error": self.1 }))).into_response()
    }
}

impl From<NodeError> for Failure {
    fn from(e: NodeError) -> Self {
        let code = match e {
            NodeError::UnknownJob(_) => StatusCode::NOT_FOUND,
            NodeError::Job(_) => StatusCode::BAD_REQUEST,
            _ => StatusCode::INTERNAL_SERVER_ERROR,
        };
        Failure(code, e.to_string())
    }
}

pub fn router(node: NodeHandle) -> Router {
    Router::new()
        .route("/api/jobs", get(list_jobs).post(submit_job))
        .route("/api/jobs/{id}", get(job_status))
        .route("/api/jobs/{id}/result", get(job_result))
        .route("/api/peers", get(peers))
        .route("/api/node", get(info))
        .layer(DefaultBodyLimit::max(REQUEST_BODY_BYTES_MAX))
        .with_state(node)
}

/// Binds the API on `addr` and serves it in the background; returns the bound address.
pub async fn serve(node: NodeHandle, addr: SocketAddr) -> Result<SocketAddr, ApiError> {
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
    tokio::spawn(async move {
        if let Err(e) = axum::serve(listener, router(node)).await {
            tracing::error!(target: "plexus::api", "the API stopped: {e}");
        }
    });
    Ok(bound)
}

async fn submit_job(
    State(node): State<NodeHandle>,
    Json(job): Json<JobSubmission>,
) -> Result<Response, Failure> {
    let id = node.submit(job).await?;
    Ok((StatusCode::CREATED, Json(serde_json::json!({ "id": id }))).into_response())
}

async fn list_jobs(State(node): State<NodeHandle>) -> Result<Response, Failure> {
    Ok(Json(node.jobs().await?).into_response())
}

async fn job_status(
    State(node): State<NodeHandle>,
    Path(id): Path<String>,
) -> Result<Response, Failure> {
    Ok(Json(node.status(id).await?).into_response())
}

async fn job_result(
    State(node): State<NodeHandle>,
    Path(id): Path<String>,
) -> Result<Response, Failure> {
    let status = node.status(id.clone()).await?;
    let Some(path) = status.result.filter(|_| status.state == "completed") else {
        return Err(Failure(
            StatusCode::CONFLICT,
            format!("job {id} has no result yet (it is {})", status.state),
        ));
    };
    let bytes = tokio::fs::read(&path)
        .await
        .map_err(|e| Failure(StatusCode::INTERNAL_SERVER_ERROR, format!("{path}: {e}")))?;
    Ok((
        [(axum::http::header::CONTENT_TYPE, "application/octet-stream")],
        bytes,
    )
        .into_response())
}

async fn peers(State(node): State<NodeHandle>) -> Result<Response, Failure> {
    Ok(Json(node.peers().await?).into_response())
}

async fn info(State(node): State<NodeHandle>) -> Result<Response, Failure> {
    Ok(Json(node.info().await?).into_response())
}
