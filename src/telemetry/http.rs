//! The `/metrics` and `/healthz` endpoint: [`serve`], with a cap on open
//! connections ([`MAX_CONNECTIONS`]) and a deadline for each request
//! ([`REQUEST_TIMEOUT`]). This is the only module that knows the `axum`
//! crate; what it serves comes from [`Metrics`].

use std::collections::BTreeMap;
use std::future::{Future, IntoFuture};
use std::pin::Pin;
use std::sync::{Arc, Mutex, PoisonError};
use std::task::{Context, Poll};
use std::time::Duration;

use axum::extract::State;
use axum::http::{header, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::routing::get;
use axum::Router;
use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};
use tokio_util::sync::CancellationToken;

use super::Metrics;

/// How long [`serve`] lets open requests finish after shutdown is asked for;
/// the daemon as a whole must stop within 10 s.
const SHUTDOWN_GRACE: Duration = Duration::from_secs(3);

/// Most connections the endpoint holds open at once; at the cap, the
/// longest-open one is closed to make room for a new one, so idle or slow
/// clients cannot exhaust the process's file descriptors nor keep a scrape
/// out.
pub const MAX_CONNECTIONS: usize = 64;

/// How long a connection may take, from accept or from the last byte of
/// its last answer, to send a whole request; past it, it is closed. A
/// scrape takes milliseconds; this bounds idle keep-alive connections and
/// clients that send their headers a byte at a time.
pub const REQUEST_TIMEOUT: Duration = Duration::from_secs(5);

/// What `/healthz` says.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Health {
    /// True while the engine answers and the last pass that ran to an end did
    /// not fail.
    pub ok: bool,
    /// Why it is not ok, in a few words; empty when ok.
    pub reason: String,
}

/// Serves `GET /metrics` and `GET /healthz` on `listener` until `shutdown` is
/// cancelled; then lets open requests finish for a few seconds and returns.
/// At most [`MAX_CONNECTIONS`] connections are open at once, and each must
/// send a whole request within [`REQUEST_TIMEOUT`] of being accepted or
/// answered.
pub async fn serve(
    listener: tokio::net::TcpListener,
    metrics: Arc<Metrics>,
    shutdown: CancellationToken,
) -> std::io::Result<()> {
    let app = Router::new()
        .route("/metrics", get(metrics_page))
        .route("/healthz", get(health_page))
        .with_state(metrics);
    let server = axum::serve(BoundedListener::new(listener), app)
        .with_graceful_shutdown(shutdown.clone().cancelled_owned())
        .into_future();
    // A client that never finishes its request must not hold up the exit.
    let deadline = async {
        shutdown.cancelled().await;
        tokio::time::sleep(SHUTDOWN_GRACE).await;
    };
    tokio::select! {
        result = server => result,
        () = deadline => {
            tracing::warn!("metrics endpoint: open connections did not finish in time; closing");
            Ok(())
        }
    }
}

/// Connections the endpoint holds, oldest first: each one's id (in accept
/// order) and the token that closes it.
type OpenConnections = Arc<Mutex<BTreeMap<u64, CancellationToken>>>;

/// The endpoint's listener: caps open connections and wraps each in
/// [`BoundedIo`], which enforces the request deadline. axum's `serve` runs
/// one task per accepted connection and never drops one by itself.
struct BoundedListener {
    inner: tokio::net::TcpListener,
    open: OpenConnections,
    next_id: u64,
    /// When a connection was last closed to make room: that is logged at most
    /// once a minute, so a flood of connections cannot flood the journal.
    last_warned: Option<tokio::time::Instant>,
}

impl BoundedListener {
    fn new(inner: tokio::net::TcpListener) -> Self {
        Self {
            inner,
            open: Arc::default(),
            next_id: 0,
            last_warned: None,
        }
    }
}

impl axum::serve::Listener for BoundedListener {
    type Io = BoundedIo;
    type Addr = std::net::SocketAddr;

    async fn accept(&mut self) -> (Self::Io, Self::Addr) {
        let (io, addr) = axum::serve::Listener::accept(&mut self.inner).await;
        let id = self.next_id;
        self.next_id += 1;
        let close = CancellationToken::new();
        let mut evicted = 0usize;
        {
            let mut open = lock(&self.open);
            while open.len() >= MAX_CONNECTIONS {
                let Some((_, oldest)) = open.pop_first() else {
                    break;
                };
                oldest.cancel();
                evicted += 1;
            }
            open.insert(id, close.clone());
        }
        if evicted > 0 {
            let now = tokio::time::Instant::now();
            if self
                .last_warned
                .is_none_or(|at| now.duration_since(at) >= Duration::from_secs(60))
            {
                self.last_warned = Some(now);
                tracing::warn!(
                    max_connections = MAX_CONNECTIONS,
                    "metrics endpoint: too many open connections; closing the oldest"
                );
            }
        }
        let io = BoundedIo {
            io,
            deadline: Box::pin(tokio::time::sleep(REQUEST_TIMEOUT)),
            closed: Box::pin(close.cancelled_owned()),
            id,
            open: Arc::clone(&self.open),
        };
        (io, addr)
    }

    fn local_addr(&self) -> std::io::Result<Self::Addr> {
        self.inner.local_addr()
    }
}

/// One connection of the endpoint. Reads and writes fail once the deadline
/// passes or the listener closes the connection to make room; hyper then
/// drops it, which closes the socket. The deadline is [`REQUEST_TIMEOUT`]
/// from accept and moves only when the server writes (an answer), never
/// when the client sends, so a client trickling its headers a byte at a
/// time cannot hold a connection.
struct BoundedIo {
    io: tokio::net::TcpStream,
    deadline: Pin<Box<tokio::time::Sleep>>,
    /// Ready once the listener closed this connection to make room.
    closed: Pin<Box<tokio_util::sync::WaitForCancellationFutureOwned>>,
    /// This connection's key in `open`.
    id: u64,
    open: OpenConnections,
}

impl BoundedIo {
    /// The error to fail with, if the connection must end; otherwise wakes
    /// the task when it must.
    fn expired(&mut self, cx: &mut Context<'_>) -> Option<std::io::Error> {
        use std::io::{Error, ErrorKind};
        if self.closed.as_mut().poll(cx).is_ready() {
            return Some(Error::new(
                ErrorKind::ConnectionAborted,
                "closed to make room for a new connection",
            ));
        }
        if self.deadline.as_mut().poll(cx).is_ready() {
            return Some(Error::new(
                ErrorKind::TimedOut,
                "no complete request within the request timeout",
            ));
        }
        None
    }
}

impl Drop for BoundedIo {
    fn drop(&mut self) {
        lock(&self.open).remove(&self.id);
    }
}

impl AsyncRead for BoundedIo {
    fn poll_read(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<std::io::Result<()>> {
        if let Some(e) = self.expired(cx) {
            return Poll::Ready(Err(e));
        }
        Pin::new(&mut self.io).poll_read(cx, buf)
    }
}

impl AsyncWrite for BoundedIo {
    fn poll_write(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<std::io::Result<usize>> {
        if let Some(e) = self.expired(cx) {
            return Poll::Ready(Err(e));
        }
        let this = &mut *self;
        let written = Pin::new(&mut this.io).poll_write(cx, buf);
        if let Poll::Ready(Ok(n)) = written {
            if n > 0 {
                // An answer went out: the client has a new full timeout for
                // its next request (or for reading this answer).
                this.deadline
                    .as_mut()
                    .reset(tokio::time::Instant::now() + REQUEST_TIMEOUT);
            }
        }
        written
    }

    fn poll_flush(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<std::io::Result<()>> {
        if let Some(e) = self.expired(cx) {
            return Poll::Ready(Err(e));
        }
        Pin::new(&mut self.io).poll_flush(cx)
    }

    fn poll_shutdown(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<std::io::Result<()>> {
        if let Some(e) = self.expired(cx) {
            return Poll::Ready(Err(e));
        }
        Pin::new(&mut self.io).poll_shutdown(cx)
    }
}

/// The set of open connections; it holds plain tokens, which a panic
/// elsewhere cannot leave half-changed, so a poisoned lock is still good.
fn lock(open: &OpenConnections) -> std::sync::MutexGuard<'_, BTreeMap<u64, CancellationToken>> {
    open.lock().unwrap_or_else(PoisonError::into_inner)
}

async fn metrics_page(State(metrics): State<Arc<Metrics>>) -> Response {
    (
        [(header::CONTENT_TYPE, prometheus::TEXT_FORMAT)],
        metrics.render(),
    )
        .into_response()
}

async fn health_page(State(metrics): State<Arc<Metrics>>) -> Response {
    let health = metrics.health();
    let (status, body) = if health.ok {
        (StatusCode::OK, serde_json::json!({ "status": "ok" }))
    } else {
        (
            StatusCode::SERVICE_UNAVAILABLE,
            serde_json::json!({ "status": "unhealthy", "reason": health.reason }),
        )
    };
    (
        status,
        [(header::CONTENT_TYPE, "application/json")],
        body.to_string(),
    )
        .into_response()
}
