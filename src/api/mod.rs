//! The HTTP API: the only module that knows axum, hyper and OpenAI's wire format; it also owns
//! the listener (`listen.rs`: connection timeouts and cap).

mod assistants;
mod code_interpreter;
mod decode;
mod drain;
mod error;
mod extract;
mod files;
mod listen;
mod models;
mod openapi;
mod runs;
mod scope;
mod threads;
mod uploads;
mod validate;
mod vector_store_files;
mod vector_stores;
mod wire;

use std::path::PathBuf;
use std::sync::Arc;

use axum::Router;
use axum::extract::{Request, State};
use axum::http::{HeaderValue, Method, StatusCode, Uri, header};
use axum::middleware::{self, Next};
use axum::response::{IntoResponse, Response};
use axum::routing::get;

pub use error::{ApiError, ApiResult};
pub use listen::{ConnLimits, serve as serve_http};
pub use scope::Scoped;

use crate::sandbox::Sessions;
use crate::store::{Store, StoreError};

/// Which routes a server exposes.
#[derive(
    Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum, serde::Serialize, serde::Deserialize,
)]
#[serde(rename_all = "lowercase")]
pub enum Mode {
    /// Everything: files, assistants, threads, messages and the code interpreter.
    All,
    /// Only `/health`, the code-interpreter endpoints and `/v1/files`.
    Tools,
}

/// Settings the handlers read.
#[derive(Clone)]
pub struct ApiConfig {
    /// Accepted bearer keys and their projects (open: any request, the default project).
    pub keys: crate::tenancy::Keys,
    pub max_upload_bytes: u64,
    pub mode: Mode,
    /// Serve `GET /v1/threads` (an Oasis extension; OpenAI has no thread list).
    pub thread_list: bool,
    /// Timeouts and the cap on open connections (see `listen.rs`).
    pub connections: ConnLimits,
    /// The time Files and Uploads expire by.
    pub clock: Clock,
}

/// The clock Files and Uploads expire by: the system's, plus whatever [`Clock::advance`] added
/// (tests move it forward an hour instead of waiting one; nothing else moves it).
#[derive(Debug, Clone, Default)]
pub struct Clock(Arc<std::sync::atomic::AtomicI64>);

impl Clock {
    /// Seconds since the Unix epoch.
    pub fn now(&self) -> i64 {
        crate::model::now() + self.0.load(std::sync::atomic::Ordering::Relaxed)
    }

    /// Move this clock (and every copy of it) `secs` forward.
    pub fn advance(&self, secs: i64) {
        self.0.fetch_add(secs, std::sync::atomic::Ordering::Relaxed);
    }
}

impl std::fmt::Debug for ApiConfig {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("ApiConfig")
            .field("keys", &self.keys)
            .field("max_upload_bytes", &self.max_upload_bytes)
            .field("mode", &self.mode)
            .field("thread_list", &self.thread_list)
            .field("connections", &self.connections)
            .finish()
    }
}

#[derive(Clone)]
pub struct AppState {
    pub store: Arc<dyn Store>,
    /// Where File bytes live (see `store/blobs.rs`).
    pub bucket: crate::bucket::Bucket,
    /// Where the Parts of pending Uploads are kept on this node (`<data dir>/files/uploads`).
    pub uploads_dir: PathBuf,
    pub sessions: Option<Sessions>,
    /// On a cluster: sessions shared with the other nodes (see `roaming`).
    pub roaming: Option<Arc<crate::roaming::Roaming>>,
    /// Runs (absent in `tools` mode).
    pub runs: Option<crate::orchestrator::Orchestrator>,
    /// Vector stores (absent in `tools` mode).
    pub vectors: Option<crate::vectors::Vectors>,
    pub config: ApiConfig,
    /// The project whose objects this state sees (see `scope.rs`). The router's own state is
    /// the default project's; handlers behind the key check take [`Scoped`] instead.
    pub project: crate::tenancy::Project,
}

/// Run blocking store work off the async threads.
pub async fn blocking<T: Send + 'static>(
    state: &AppState,
    f: impl FnOnce(&dyn Store) -> Result<T, StoreError> + Send + 'static,
) -> ApiResult<T> {
    let store = state.store.clone();
    Ok(tokio::task::spawn_blocking(move || f(store.as_ref())).await??)
}

/// Insert `obj` and hand it back.
pub async fn insert_returning<T: crate::model::Object + Clone>(
    state: &AppState,
    obj: T,
) -> ApiResult<T> {
    let out = obj.clone();
    blocking(state, move |s| crate::store::StoreExt::insert(s, &obj)).await?;
    Ok(out)
}

/// Save changes to `obj` and hand it back.
pub async fn save_returning<T: crate::model::Object + Clone>(
    state: &AppState,
    obj: T,
) -> ApiResult<T> {
    let out = obj.clone();
    blocking(state, move |s| crate::store::StoreExt::save(s, &obj)).await?;
    Ok(out)
}

/// The whole router for `state.config.mode`.
pub fn router(state: AppState) -> Router {
    let mut v1 = Router::new()
        .merge(files::router(state.config.max_upload_bytes))
        .merge(uploads::router(state.config.max_upload_bytes))
        .merge(code_interpreter::router());
    if state.config.mode == Mode::All {
        v1 = v1
            .merge(assistants::router())
            .merge(threads::router())
            .merge(runs::router())
            .merge(models::router())
            .merge(vector_stores::router());
    }
    let v1 = v1
        .layer(middleware::from_fn(beta_header))
        .layer(middleware::from_fn_with_state(state.clone(), scope::auth));
    Router::new()
        .route("/health", get(health))
        .route("/metrics", get(metrics_text))
        .route("/ready", get(ready))
        .route("/openapi.json", get(openapi::serve))
        .merge(v1)
        .fallback(not_found)
        .method_not_allowed_fallback(method_not_allowed)
        .layer(middleware::from_fn(openai_shaped_errors))
        .layer(middleware::from_fn_with_state(
            state.clone(),
            drain::settle_request_body,
        ))
        .layer(tower_http::trace::TraceLayer::new_for_http())
        .layer(middleware::from_fn(request_id))
        .layer(middleware::from_fn(count_request))
        .with_state(state)
}

/// Count each request and its latency by method, route template and status class (never by its
/// raw path, which holds ids). Router layers run once a route is picked, so the template is known.
async fn count_request(req: Request, next: Next) -> Response {
    let started = std::time::Instant::now();
    let method = req.method().clone();
    let route = req
        .extensions()
        .get::<axum::extract::MatchedPath>()
        .map(|p| p.as_str().to_owned());
    let res = next.run(req).await;
    crate::metrics::http_request(
        method.as_str(),
        route.as_deref(),
        res.status().as_u16(),
        started.elapsed().as_secs_f64(),
    );
    res
}

/// Each request gets an id, as OpenAI's did: in the `x-request-id` header of the answer (the
/// SDKs show it as `_request_id`) and on every log line written while it is served.
async fn request_id(req: Request, next: Next) -> Response {
    use tracing::Instrument;
    let id = crate::model::new_id("req_");
    let span = tracing::info_span!("request", id = %id);
    let mut res = next.run(req).instrument(span).await;
    if let Ok(v) = HeaderValue::from_str(&id) {
        res.headers_mut().insert("x-request-id", v);
    }
    res
}

/// How often expired Files and Uploads are swept (reads never serve an expired one: they check
/// the clock themselves and delete it on the spot).
const SWEEP_EVERY: std::time::Duration = std::time::Duration::from_secs(60);

/// Delete expired Files and end expired Uploads now and every [`SWEEP_EVERY`], until the task
/// is dropped.
pub async fn sweep_expired_forever(state: AppState) {
    let mut tick = tokio::time::interval(SWEEP_EVERY);
    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    loop {
        tick.tick().await;
        if let Err(e) = files::sweep_expired(&state).await {
            tracing::warn!(error = %e.message, "sweeping expired files");
        }
        if let Err(e) = uploads::sweep_expired(&state).await {
            tracing::warn!(error = %e.message, "sweeping expired uploads");
        }
    }
}

async fn health() -> axum::Json<wire::Health> {
    axum::Json(wire::Health { status: "ok" })
}

/// `GET /metrics`: Prometheus's text format. Sessions are counted now, at the scrape.
async fn metrics_text(State(state): State<AppState>) -> Response {
    if let Some(sessions) = &state.sessions
        && let Some((live, hibernated)) = sessions.counts().await
    {
        crate::metrics::sessions(live, hibernated);
    }
    let text = crate::metrics::render();
    (
        [(
            header::CONTENT_TYPE,
            "text/plain; version=0.0.4; charset=utf-8",
        )],
        text,
    )
        .into_response()
}

/// How long `/ready` waits for the database and the object store to answer.
const READY_TIMEOUT: std::time::Duration = std::time::Duration::from_secs(5);

/// `GET /ready`: whether this node can serve, i.e. the database and the object store answer.
/// A failure names the part (never its address); the error itself is logged.
async fn ready(State(state): State<AppState>) -> Response {
    let store = state.store.clone();
    let database = async {
        match tokio::time::timeout(
            READY_TIMEOUT,
            tokio::task::spawn_blocking(move || store.ping()),
        )
        .await
        {
            Ok(Ok(Ok(()))) => true,
            Ok(Ok(Err(e))) => {
                tracing::warn!(error = %e, "readiness: the database does not answer");
                false
            }
            Ok(Err(e)) => {
                tracing::warn!(error = %e, "readiness: the database ping panicked");
                false
            }
            Err(_) => {
                tracing::warn!("readiness: the database did not answer in time");
                false
            }
        }
    };
    let object_store = async {
        match tokio::time::timeout(READY_TIMEOUT, state.bucket.ping()).await {
            Ok(Ok(())) => true,
            Ok(Err(e)) => {
                tracing::warn!(error = %e, "readiness: the object store does not answer");
                false
            }
            Err(_) => {
                tracing::warn!("readiness: the object store did not answer in time");
                false
            }
        }
    };
    let (database, object_store) = tokio::join!(database, object_store);
    let down = match (database, object_store) {
        (true, true) => {
            return axum::Json(wire::Ready {
                status: "ready",
                database: "ok",
                object_store: "ok",
            })
            .into_response();
        }
        (false, true) => "the database does not answer",
        (true, false) => "the object store does not answer",
        (false, false) => "neither the database nor the object store answers",
    };
    ApiError::new(
        StatusCode::SERVICE_UNAVAILABLE,
        format!("Not ready: {down}."),
    )
    .into_response()
}

async fn not_found(method: Method, uri: Uri) -> ApiError {
    ApiError::new(
        StatusCode::NOT_FOUND,
        format!("Invalid URL ({method} {})", uri.path()),
    )
}

async fn method_not_allowed(method: Method, uri: Uri) -> ApiError {
    ApiError::new(
        StatusCode::METHOD_NOT_ALLOWED,
        format!("Invalid method for URL ({method} {})", uri.path()),
    )
}

/// axum's own rejections (a path segment that is not UTF-8, a body it could not read, …)
/// answer in plain text; give them OpenAI's error body, like every other error.
async fn openai_shaped_errors(req: Request, next: Next) -> Response {
    let res = next.run(req).await;
    let status = res.status();
    let json = res
        .headers()
        .get(header::CONTENT_TYPE)
        .and_then(|v| v.to_str().ok())
        .is_some_and(|v| v.starts_with("application/json"));
    if !(status.is_client_error() || status.is_server_error()) || json {
        return res;
    }
    let body = axum::body::to_bytes(res.into_body(), 64 * 1024)
        .await
        .unwrap_or_default();
    let text = String::from_utf8_lossy(&body);
    let text = match text.trim() {
        "" => status.canonical_reason().unwrap_or("Error"),
        t => t,
    };
    let mut e = if status.is_server_error() {
        ApiError::internal(format!("{status}: {text}"))
    } else {
        ApiError::new(status, text)
    };
    e.status = status;
    e.into_response()
}

/// `OpenAI-Beta: assistants=v1` is gone; v2 or no header is served.
async fn beta_header(req: Request, next: Next) -> Response {
    let v1 = req
        .headers()
        .get_all("openai-beta")
        .iter()
        .filter_map(|v| v.to_str().ok())
        .flat_map(|v| v.split(','))
        .any(|v| v.trim() == "assistants=v1");
    if v1 {
        return ApiError::bad_request(
            "The v1 Assistants API has been deprecated. Please try again by setting the header \
             'OpenAI-Beta: assistants=v2'.",
        )
        .code("invalid_beta")
        .into_response();
    }
    next.run(req).await
}
