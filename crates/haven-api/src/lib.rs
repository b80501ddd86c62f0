//! The daemon's HTTP layer: the JSON API under `/api/v1/`, Prometheus `/metrics` and the
//! dashboard at `/`, all read from a [`DaemonView`] (the only thing this crate knows of
//! the daemon).
//!
//! ```text
//! daemon (std threads) ──start(view, ApiConfig)──> ApiServer: one thread, a current-thread
//!   tokio runtime, axum ──request──> auth (bearer token) ──> handler ──spawn_blocking──>
//!   DaemonView ──> JSON / Prometheus text          shutdown(): graceful, joins the thread
//! ```
//!
//! Authentication: every `/api/v1/` route and `/metrics` need `Authorization: Bearer TOKEN`
//! (Prometheus sends it with `authorization: { credentials: TOKEN }`); the token is compared
//! in constant time (BLAKE3 digests of both sides, so not even its length leaks). A missing
//! or wrong token answers 401 with `WWW-Authenticate: Bearer` before any handler runs, so
//! nothing is read or triggered. Two paths are open: `/api/v1/openapi.json` (the API's
//! description, no data) and `/`, the dashboard, which is a static page shell without data:
//! its script asks for the token once (a password field, or `/#token=…`, which the page
//! moves into `sessionStorage` and removes from the address bar) and reads the API with it.
//!
//! Main items: [`start`] → [`ApiServer`], [`router`] (the same routes for embedding into
//! another runtime), [`ApiConfig`], [`ApiError`]. Modules: `routes` (the API), `metrics`
//! (the Prometheus text format), `dashboard` (the page), `openapi` (the document), `params`
//! (every request's parameters checked against the document: 400 when outside it).
//!
//! Limits: HTTP/1.1 only, no TLS (listen on loopback, or put a TLS proxy in front); the
//! view's methods are called on tokio's blocking pool, so a slow catalog read delays only
//! its own request.

mod auth;
mod dashboard;
mod metrics;
mod openapi;
mod params;
mod routes;

use std::fmt;
use std::future::IntoFuture;
use std::net::SocketAddr;
use std::sync::Arc;
use std::thread::JoinHandle;

use haven_ops::daemon::view::DaemonView;
use tokio::sync::watch;

pub use metrics::render as render_metrics;

/// How long requests in flight may take to finish after [`ApiServer::shutdown`].
const SHUTDOWN_GRACE: std::time::Duration = std::time::Duration::from_secs(5);
pub use openapi::OPENAPI_JSON;

/// Where to listen and the token every authenticated request must carry.
#[derive(Clone)]
pub struct ApiConfig {
    pub listen: SocketAddr,
    /// The bearer token (from `HAVEN_API_TOKEN` or the config); must not be empty.
    pub token: String,
}

impl fmt::Debug for ApiConfig {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("ApiConfig")
            .field("listen", &self.listen)
            .field("token", &"<redacted>")
            .finish()
    }
}

#[derive(Debug, thiserror::Error)]
pub enum ApiError {
    #[error("cannot listen on {addr}: {reason}")]
    Listen {
        addr: SocketAddr,
        reason: String,
        #[source]
        source: std::io::Error,
    },
    #[error("the API token is empty: set HAVEN_API_TOKEN or `api-token` in the config")]
    EmptyToken,
    #[error("cannot start the HTTP server's runtime: {0}")]
    Runtime(#[source] std::io::Error),
    #[error("the HTTP server stopped with an error: {0}")]
    Server(String),
}

/// A running HTTP server: its own thread with a tokio runtime. Dropping it shuts it down
/// too (without reporting errors); call [`ApiServer::shutdown`] to see them.
pub struct ApiServer {
    addr: SocketAddr,
    stop: Option<watch::Sender<bool>>,
    thread: Option<JoinHandle<Result<(), ApiError>>>,
}

impl fmt::Debug for ApiServer {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("ApiServer")
            .field("addr", &self.addr)
            .finish()
    }
}

/// Binds `cfg.listen` now (so a port in use is an error of this call, not of the thread),
/// then serves the API, metrics and dashboard on a thread of its own until
/// [`ApiServer::shutdown`].
pub fn start(view: Arc<dyn DaemonView>, cfg: ApiConfig) -> Result<ApiServer, ApiError> {
    if cfg.token.trim().is_empty() {
        return Err(ApiError::EmptyToken);
    }
    let listen_error = |source: std::io::Error| ApiError::Listen {
        addr: cfg.listen,
        reason: match source.kind() {
            std::io::ErrorKind::AddrInUse => {
                "address in use (another haven serve? choose another with --listen)".into()
            }
            std::io::ErrorKind::PermissionDenied => "permission denied".into(),
            std::io::ErrorKind::AddrNotAvailable => "address not available on this machine".into(),
            _ => source.to_string(),
        },
        source,
    };
    let listener = std::net::TcpListener::bind(cfg.listen).map_err(listen_error)?;
    listener.set_nonblocking(true).map_err(listen_error)?;
    let addr = listener.local_addr().map_err(listen_error)?;
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_io()
        .enable_time()
        .thread_name("haven-api")
        .build()
        .map_err(ApiError::Runtime)?;
    let app = router(view, &cfg.token);
    let (stop, stopped) = watch::channel(false);
    let thread = std::thread::Builder::new()
        .name("haven-api".into())
        .spawn(move || {
            runtime.block_on(async move {
                let listener = tokio::net::TcpListener::from_std(listener)
                    .map_err(|e| ApiError::Server(e.to_string()))?;
                // A dropped sender is a shutdown too, hence `let _`.
                let mut graceful = stopped.clone();
                let serve = axum::serve(listener, app)
                    .with_graceful_shutdown(async move {
                        let _ = graceful.wait_for(|stop| *stop).await;
                    })
                    .into_future();
                let mut deadline = stopped;
                let deadline = async move {
                    let _ = deadline.wait_for(|stop| *stop).await;
                    tokio::time::sleep(SHUTDOWN_GRACE).await;
                };
                tokio::select! {
                    served = serve => served.map_err(|e| ApiError::Server(e.to_string())),
                    // A client that keeps a request open does not hold the daemon up.
                    () = deadline => Ok(()),
                }
            })
        })
        .map_err(ApiError::Runtime)?;
    Ok(ApiServer {
        addr,
        stop: Some(stop),
        thread: Some(thread),
    })
}

impl ApiServer {
    /// The address actually bound (the port is known here when `listen` had port 0).
    pub fn addr(&self) -> SocketAddr {
        self.addr
    }

    /// Stops accepting, lets requests in flight finish (for at most 5 s), and joins the
    /// server's thread.
    pub fn shutdown(mut self) -> Result<(), ApiError> {
        self.stop_and_join()
    }

    fn stop_and_join(&mut self) -> Result<(), ApiError> {
        if let Some(stop) = self.stop.take() {
            let _ = stop.send(true);
        }
        match self.thread.take() {
            Some(thread) => thread
                .join()
                .map_err(|_| ApiError::Server("the HTTP server's thread panicked".into()))?,
            None => Ok(()),
        }
    }
}

impl Drop for ApiServer {
    fn drop(&mut self) {
        let _ = self.stop_and_join();
    }
}

/// Every route (dashboard, metrics, API) over `view`, authenticated with `token`; for
/// serving on a runtime the caller already has. [`start`] serves exactly this.
pub fn router(view: Arc<dyn DaemonView>, token: &str) -> axum::Router {
    routes::router(view, auth::Token::new(token))
}
