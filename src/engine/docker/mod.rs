//! [`Engine`] over the Docker Engine API, through bollard.
//!
//! This is the only module that knows the wire: it imports bollard and hyper,
//! turns the engine's answers into the engine-neutral types of
//! [`crate::engine`] (image facts in [`layers`], events as
//! [`Use`](crate::engine::Use)s in `events.rs`), declares what Docker can do
//! ([`Capabilities`]), and maps transport and HTTP failures onto
//! [`EngineError`]. It also owns what bollard cannot do for us: the bounds on
//! every call.
//!
//! Every call is bounded twice. A deadline covers the whole exchange
//! (connect, headers and body; bollard's own timeout stops at the headers),
//! [`DEFAULT_CALL_TIMEOUT`] unless `IMAGEGC_ENGINE_TIMEOUT` says otherwise.
//! And the bytes read are capped per call (`answer_limit`): bollard reads
//! whole answers into memory, so each call goes over a connection of its own
//! whose reader fails past the cap. The event stream is the exception to
//! both: it is endless by design, and `events.rs` watches it for silence;
//! only each of its lines (one event) is capped, [`MAX_EVENT_LINE_BYTES`],
//! since bollard buffers a line until it ends.
//!
//! Nothing here caches; every call is a round trip.

use std::collections::BTreeMap;
use std::error::Error as StdError;
use std::future::Future;
use std::path::{Path, PathBuf};
use std::pin::Pin;
use std::sync::{Arc, Mutex, PoisonError};
use std::task::{Context, Poll};
use std::time::Duration;

use bollard::errors::Error as BollardError;
use bollard::query_parameters::{
    EventsOptionsBuilder, InspectContainerOptions, InspectContainerOptionsBuilder,
    ListContainersOptionsBuilder, ListImagesOptionsBuilder, RemoveContainerOptionsBuilder,
    RemoveImageOptionsBuilder,
};
use bollard::BollardRequest;
use chrono::{DateTime, Utc};
use futures_util::StreamExt;
use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};
use tokio_util::sync::CancellationToken;

use crate::engine::{
    is_full_container_id, CacheRemoval, Capabilities, Container, ContainerDetails, ContainerTimes,
    DeleteItem, Engine, EngineError, EngineInfo, EventStream, ImageFacts, ImageSummary,
};

mod build_cache;
mod events;
pub mod flavor;
pub mod layers;
pub mod store;

use layers::{HistoryEntry, ImageDetails};

/// The deadline of one engine call, from connect to the last byte of the
/// answer, unless [`CALL_TIMEOUT_ENV`] sets another. Inspect and removal
/// answer in milliseconds; listing 100,000 images or `/system/df` on a big
/// host takes seconds to a minute.
pub const DEFAULT_CALL_TIMEOUT: Duration = Duration::from_secs(120);

/// The environment variable that sets the deadline of one engine call, as a
/// duration (`30s`, `2m`).
pub const CALL_TIMEOUT_ENV: &str = "IMAGEGC_ENGINE_TIMEOUT";

/// The most bytes read from an answer that lists every image or container
/// (`/images/json`, `/containers/json`, `/system/df`): about 1 KiB per entry
/// in practice, so room for several hundred thousand.
pub const MAX_LIST_ANSWER_BYTES: u64 = 512 * 1024 * 1024;

/// The most bytes read from any other answer (version, info, one image's
/// inspect or history, a removal): a few KiB in practice.
pub const MAX_ANSWER_BYTES: u64 = 64 * 1024 * 1024;

/// The most bytes of one line of the event stream (one event as JSON: a few
/// hundred bytes in practice). The stream has no total cap, but bollard
/// buffers a line until its end, so one endless line would take all memory.
pub const MAX_EVENT_LINE_BYTES: u64 = 1024 * 1024;

/// The tag and digest placeholders API < 1.43 puts on untagged images.
const NONE_TAG: &str = "<none>:<none>";
const NONE_DIGEST: &str = "<none>@<none>";

/// A connection to one Docker Engine. Cheap to clone: clones share the
/// underlying HTTP client.
#[derive(Debug, Clone)]
pub struct Docker {
    /// The bollard client, with the API version already negotiated.
    client: bollard::Docker,
    /// The engine's address as a URL (`unix:///var/run/docker.sock`,
    /// `tcp://host:2375`), named in every connection error.
    address: String,
    /// How to reach the engine, and whether it runs on this machine (only
    /// then is its root directory on this host's disk).
    endpoint: Endpoint,
    /// The deadline of every call but the event stream.
    call_timeout: Duration,
    /// Cancelled when the caller stops waiting for answers (`once` at a
    /// second stop signal): the call in flight fails at once.
    interrupt: CancellationToken,
    /// Where the reader of an event stream leaves the cap it passed: bollard
    /// turns the read error into text without its source, so the stream's
    /// error is made from this instead.
    line_overflow: Overflow,
    /// Which engine this is (read at connect time), and so its capabilities.
    flavor: flavor::Flavor,
    /// Layer sizes learned from histories (graph-driver stores), shared by clones: an image
    /// whose lower layers are known is sized from its inspect alone.
    known_layers: Arc<Mutex<layers::KnownLayers>>,
}

/// The cap an event stream's reader passed, for that stream's error.
type Overflow = Arc<Mutex<Option<AnswerTooLarge>>>;

/// The transport behind an engine address.
#[derive(Debug, Clone, PartialEq, Eq)]
enum Endpoint {
    /// A unix socket on this machine.
    Unix(PathBuf),
    /// `host:port` of a plain-HTTP engine, possibly remote.
    Tcp(String),
}

impl Docker {
    /// Connects to the engine at `address`, resolved by the caller (the
    /// precedence of `--engine`, `DOCKER_HOST` and the policy is
    /// `sources::EngineSpec::resolve`'s alone). Accepts `unix:///path`, a bare
    /// socket path, `tcp://host:port` and `http://host:port`.
    ///
    /// Negotiates the API version with the engine, so an unreachable engine,
    /// a socket we may not open or a server that is not a Docker Engine is
    /// reported here, not on the first pass.
    pub async fn connect(address: &str) -> Result<Docker, EngineError> {
        Self::connect_with(address, CancellationToken::new()).await
    }

    /// [`Docker::connect`], with every call of this connection (the version
    /// negotiation included) failing at once when `interrupt` is cancelled.
    pub async fn connect_with(
        address: &str,
        interrupt: CancellationToken,
    ) -> Result<Docker, EngineError> {
        let raw = address.to_owned();
        let (endpoint, address) =
            parse_address(&raw).map_err(|reason| EngineError::Unavailable {
                address: raw.clone(),
                reason,
            })?;
        let call_timeout = call_timeout_from_env()?;
        if let Endpoint::Unix(path) = &endpoint {
            check_socket(path, &address)?;
        }
        let line_overflow = Overflow::default();
        let transport = {
            let endpoint = endpoint.clone();
            let overflow = Arc::clone(&line_overflow);
            move |request: BollardRequest| {
                exchange(endpoint.clone(), request, Arc::clone(&overflow))
            }
        };
        // bollard's own timeout only covers the wait for headers; ours, in
        // `bounded`, covers the whole call, so bollard's is set no shorter.
        let header_timeout = call_timeout.as_secs().saturating_add(1);
        let client = bollard::Docker::connect_with_custom_transport(
            transport,
            Some("http://localhost"),
            header_timeout,
            bollard::API_DEFAULT_VERSION,
        )
        .map_err(|e| map_error(&address, &e))?;
        let mut docker = Docker {
            client,
            address,
            endpoint,
            call_timeout,
            interrupt,
            line_overflow,
            flavor: flavor::Flavor::GraphDriver,
            known_layers: Arc::default(),
        };

        // GET /version: the one cheap call that proves the engine answers, and
        // lowers the client's version to the engine's if the engine is older.
        let negotiation = docker.client.clone().negotiate_version();
        docker.client = docker
            .bounded("GET /version", async {
                negotiation
                    .await
                    .map_err(|e| not_docker(&docker.address, &e))
            })
            .await?;
        // Which engine this is decides what it can do (capabilities), read once.
        let (version, info) = docker
            .call(
                "GET /info",
                Box::pin(futures_util::future::try_join(
                    docker.client.version(),
                    docker.client.info(),
                )),
            )
            .await?;
        docker.flavor = flavor::Flavor::detect(&version, &info);
        tracing::debug!(
            address = %docker.address,
            api_version = %docker.client.client_version(),
            flavor = docker.flavor.describe(),
            "connected to the Docker Engine"
        );
        Ok(docker)
    }

    /// The engine's address as a URL, for log lines and messages.
    pub fn address(&self) -> &str {
        &self.address
    }

    /// The deadline of one call (the event stream aside).
    pub fn call_timeout(&self) -> Duration {
        self.call_timeout
    }

    /// Maps a bollard error for this engine.
    fn err(&self, e: &BollardError) -> EngineError {
        map_error(&self.address, e)
    }

    /// One bollard call (`what`, for messages: `GET /images/json`), bounded.
    async fn call<T>(
        &self,
        what: &str,
        call: impl Future<Output = Result<T, BollardError>>,
    ) -> Result<T, EngineError> {
        self.bounded(what, async { call.await.map_err(|e| self.err(&e)) })
            .await
    }

    /// Runs `call` under this connection's deadline; fails at once when
    /// the interrupt token is cancelled.
    async fn bounded<T>(
        &self,
        what: &str,
        call: impl Future<Output = Result<T, EngineError>>,
    ) -> Result<T, EngineError> {
        let unavailable = |reason: String| EngineError::Unavailable {
            address: self.address.clone(),
            reason,
        };
        // bollard's futures are large; kept on the heap, every caller's stays small.
        let call = Box::pin(call);
        tokio::select! {
            biased;
            // Not `Unavailable`: the engine may be fine, the caller gave up.
            () = self.interrupt.cancelled() => Err(EngineError::Other(format!(
                "{what}: stopped waiting for the answer (second stop signal); \
                 the engine may still carry it out"
            ))),
            result = tokio::time::timeout(self.call_timeout, call) => {
                result.unwrap_or_else(|_| Err(unavailable(format!(
                    "{what}: no complete answer within {} ({CALL_TIMEOUT_ENV} sets this deadline)",
                    humantime::format_duration(self.call_timeout)
                ))))
            }
        }
    }
}

impl Docker {
    /// One call made without bollard's models, for answers they misread
    /// (`/system/df` on API 1.41: no `Parent`), bounded like every other
    /// call: the deadline of [`Docker::bounded`] and the cap of
    /// `answer_limit` on the bytes read. `path_and_query` is unversioned
    /// (`/system/df`); the negotiated version is put in front. Non-2xx
    /// answers map as bollard's do (409, 404, the rest).
    async fn raw_json<T: serde::de::DeserializeOwned>(
        &self,
        method: hyper::Method,
        path_and_query: &str,
    ) -> Result<T, EngineError> {
        let path = path_and_query
            .split_once('?')
            .map_or(path_and_query, |(path, _)| path);
        let what = format!("{method} {path}");
        self.bounded(&what, async {
            let uri = format!(
                "http://localhost/v{}{path_and_query}",
                self.client.client_version()
            );
            let request = hyper::Request::builder()
                .method(method.clone())
                .uri(uri)
                .body(bollard::body_full(hyper::body::Bytes::new()))
                .map_err(|e| {
                    EngineError::Other(format!("{what}: cannot build the request: {e}"))
                })?;
            let response = exchange(self.endpoint.clone(), request, Overflow::default())
                .await
                .map_err(|e| self.err(&e))?;
            let status = response.status();
            let body = read_body(response.into_body())
                .await
                .map_err(|e| body_error(&self.address, &e))?;
            if !status.is_success() {
                let message = serde_json::from_slice::<serde_json::Value>(&body)
                    .ok()
                    .and_then(|v| v.get("message").and_then(|m| m.as_str()).map(str::to_owned))
                    .unwrap_or_else(|| excerpt(&String::from_utf8_lossy(&body)));
                return Err(status_error(status.as_u16(), message));
            }
            serde_json::from_slice(&body).map_err(|e| {
                EngineError::Other(format!(
                    "{what}: the engine at {} answered with something that is not JSON: {e}",
                    self.address
                ))
            })
        })
        .await
    }
}

/// The whole body of an answer, read through the connection's capped reader.
async fn read_body(mut body: hyper::body::Incoming) -> Result<Vec<u8>, hyper::Error> {
    use hyper::body::Body as _;
    let mut bytes = Vec::new();
    while let Some(frame) = std::future::poll_fn(|cx| Pin::new(&mut body).poll_frame(cx)).await {
        if let Ok(data) = frame?.into_data() {
            bytes.extend_from_slice(&data);
        }
    }
    Ok(bytes)
}

/// The error for a body that could not be read: over its cap, or the
/// connection broke.
fn body_error(address: &str, err: &hyper::Error) -> EngineError {
    if let Some(too_large) = too_large(err) {
        return too_large.into_error(address);
    }
    EngineError::Unavailable {
        address: address.to_owned(),
        reason: error_chain(err),
    }
}

/// The call deadline from [`CALL_TIMEOUT_ENV`], else the default.
fn call_timeout_from_env() -> Result<Duration, EngineError> {
    call_timeout_from(std::env::var_os(CALL_TIMEOUT_ENV).as_deref()).map_err(EngineError::Other)
}

/// The call deadline a value of [`CALL_TIMEOUT_ENV`] sets (`None`, or only
/// blanks: the default), or the message naming the variable and what it
/// accepts. The composition root checks the process's value with it once
/// at start-up, so a bad one is refused before any engine is tried.
pub fn call_timeout_from(value: Option<&std::ffi::OsStr>) -> Result<Duration, String> {
    let Some(value) = value else {
        return Ok(DEFAULT_CALL_TIMEOUT);
    };
    let text = value.to_string_lossy();
    if text.trim().is_empty() {
        return Ok(DEFAULT_CALL_TIMEOUT);
    }
    value
        .to_str()
        .and_then(|t| humantime::parse_duration(t.trim()).ok())
        .filter(|d| !d.is_zero())
        .ok_or_else(|| {
            format!(
                "{CALL_TIMEOUT_ENV}={text:?} is not a duration above zero (for example 30s or 2m; unset it for the default, {})",
                humantime::format_duration(DEFAULT_CALL_TIMEOUT)
            )
        })
}

/// `path` without its `/v1.41` prefix.
fn unversioned(path: &str) -> &str {
    match path.strip_prefix("/v") {
        Some(rest) if rest.starts_with(|c: char| c.is_ascii_digit()) => {
            rest.find('/').map_or(path, |slash| &rest[slash..])
        }
        _ => path,
    }
}

/// The most bytes of one line of the answer to a request for `path`: for
/// the event stream only, whose answer as a whole has no cap.
fn line_limit(path: &str) -> Option<u64> {
    (unversioned(path) == "/events").then_some(MAX_EVENT_LINE_BYTES)
}

/// The most bytes read from the answer to a request for `path` (with or
/// without the `/v1.41` prefix); `None` for the event stream, which has no end.
fn answer_limit(path: &str) -> Option<u64> {
    match unversioned(path) {
        "/events" => None,
        "/images/json" | "/containers/json" | "/system/df" => Some(MAX_LIST_ANSWER_BYTES),
        _ => Some(MAX_ANSWER_BYTES),
    }
}

/// bollard's transport: one HTTP/1.1 connection per request (closed after
/// the answer), read through a [`Capped`] reader.
async fn exchange(
    endpoint: Endpoint,
    mut request: BollardRequest,
    overflow: Overflow,
) -> Result<hyper::Response<hyper::body::Incoming>, BollardError> {
    let path = request.uri().path().to_owned();
    let origin: hyper::Uri = request
        .uri()
        .path_and_query()
        .map_or("/", hyper::http::uri::PathAndQuery::as_str)
        .parse()?;
    *request.uri_mut() = origin;
    let host = match &endpoint {
        Endpoint::Unix(_) => "localhost".to_owned(),
        Endpoint::Tcp(authority) => authority.clone(),
    };
    let headers = request.headers_mut();
    let host = hyper::header::HeaderValue::from_str(&host).map_err(|e| BollardError::IOError {
        err: std::io::Error::new(std::io::ErrorKind::InvalidInput, e),
    })?;
    headers.insert(hyper::header::HOST, host);
    // The engine closes after answering, so the TIME_WAIT is its own.
    headers.insert(
        hyper::header::CONNECTION,
        hyper::header::HeaderValue::from_static("close"),
    );
    let limit = answer_limit(&path);
    let lines = line_limit(&path).map(|limit| (LineCap::new(limit), overflow));
    // Named in the error of an answer over its cap: `GET /images/json`.
    let path = format!("{} {path}", request.method());
    match &endpoint {
        Endpoint::Unix(socket) => {
            let io = tokio::net::UnixStream::connect(socket).await?;
            send(Capped::new(io, limit, lines, path), request).await
        }
        Endpoint::Tcp(authority) => {
            let io = tokio::net::TcpStream::connect(authority.as_str()).await?;
            send(Capped::new(io, limit, lines, path), request).await
        }
    }
}

/// Sends `request` over `io` and returns the answer once its headers are in;
/// the body is read as the caller polls it.
async fn send<S>(
    io: Capped<S>,
    request: BollardRequest,
) -> Result<hyper::Response<hyper::body::Incoming>, BollardError>
where
    S: AsyncRead + AsyncWrite + Unpin + Send + 'static,
{
    let (mut sender, connection) =
        hyper::client::conn::http1::handshake(hyper_util::rt::TokioIo::new(io)).await?;
    // Drives the connection; it ends with the answer, or when the caller
    // drops the answer unread (a deadline), closing the socket.
    tokio::spawn(async move {
        if let Err(error) = connection.await {
            tracing::debug!(%error, "engine connection ended with an error");
        }
    });
    Ok(sender.send_request(request).await?)
}

/// A reader that fails once more than `limit` bytes came through it, or
/// (with a [`LineCap`]) once one line of the answer's body is too long.
struct Capped<S> {
    inner: S,
    /// Bytes read so far.
    read: u64,
    /// The most bytes allowed; `None` for no limit.
    limit: Option<u64>,
    /// The bound on one line of the body, for the event stream, and where
    /// to leave the error when it is passed.
    lines: Option<(LineCap, Overflow)>,
    /// The request method and path (`GET /images/json`), for the error.
    path: String,
}

impl<S> Capped<S> {
    fn new(inner: S, limit: Option<u64>, lines: Option<(LineCap, Overflow)>, path: String) -> Self {
        Self {
            inner,
            read: 0,
            limit,
            lines,
            path,
        }
    }

    fn over(&self) -> Option<AnswerTooLarge> {
        if let Some((lines, _)) = self.lines.as_ref().filter(|(l, _)| l.over) {
            return Some(AnswerTooLarge {
                path: self.path.clone(),
                limit: lines.limit,
                line: true,
            });
        }
        self.limit
            .filter(|limit| self.read > *limit)
            .map(|limit| AnswerTooLarge {
                path: self.path.clone(),
                limit,
                line: false,
            })
    }
}

/// Follows the body of an HTTP/1.1 answer as its bytes pass the socket,
/// through the chunked framing (whose own `\r\n`s are not the body's), and
/// notes when a line of the body (the bytes between two `\n`) is longer than
/// `limit`. hyper checks the framing itself; this only counts.
struct LineCap {
    /// The most bytes of one line.
    limit: u64,
    /// Where in the answer the next byte is.
    at: Framing,
    /// Body bytes since the last `\n`.
    line: u64,
    /// A line was longer than `limit`.
    over: bool,
}

/// The most bytes of an answer's head [`LineCap`] keeps to find its end.
const MAX_HEAD_BYTES: usize = 1024 * 1024;

/// A position in an HTTP/1.1 answer.
enum Framing {
    /// The head, until its blank line: the bytes so far.
    Head(Vec<u8>),
    /// A body without chunked framing: every byte is the body's.
    Plain,
    /// A chunk-size line: the size so far, whether its hex digits ended (an
    /// extension or the `\r`), and the line's length.
    Size {
        size: u64,
        digits_done: bool,
        len: u64,
    },
    /// Bytes of chunk data still to come.
    Data(u64),
    /// Bytes of the CRLF after a chunk's data still to come.
    DataEnd(u64),
    /// After the last chunk: trailers, no body.
    Done,
}

impl LineCap {
    fn new(limit: u64) -> Self {
        Self {
            limit,
            at: Framing::Head(Vec::new()),
            line: 0,
            over: false,
        }
    }

    /// Takes the bytes read from the socket, in order.
    fn feed(&mut self, mut bytes: &[u8]) {
        while !bytes.is_empty() && !self.over {
            match &mut self.at {
                Framing::Head(head) => {
                    head.extend_from_slice(bytes);
                    bytes = &[];
                    if let Some(end) = head.windows(4).position(|w| w == b"\r\n\r\n") {
                        let rest = head.split_off(end + 4);
                        self.at = if is_chunked(head) {
                            Framing::Size {
                                size: 0,
                                digits_done: false,
                                len: 0,
                            }
                        } else {
                            Framing::Plain
                        };
                        self.feed(&rest);
                    } else if head.len() > MAX_HEAD_BYTES {
                        // hyper refuses a head far shorter; this only
                        // bounds what is kept here.
                        self.over = true;
                    }
                }
                Framing::Plain => {
                    self.body(bytes);
                    bytes = &[];
                }
                Framing::Size {
                    size,
                    digits_done,
                    len,
                } => {
                    let b = bytes[0];
                    bytes = &bytes[1..];
                    *len += 1;
                    if *len > self.limit {
                        self.over = true;
                    }
                    if b == b'\n' {
                        let n = *size;
                        self.at = if n == 0 {
                            Framing::Done
                        } else {
                            Framing::Data(n)
                        };
                    } else if let (false, Some(digit)) = (*digits_done, (b as char).to_digit(16)) {
                        *size = size.saturating_mul(16).saturating_add(u64::from(digit));
                    } else {
                        *digits_done = true;
                    }
                }
                Framing::Data(left) => {
                    let take = usize::try_from(*left).map_or(bytes.len(), |l| l.min(bytes.len()));
                    *left -= take as u64;
                    if *left == 0 {
                        self.at = Framing::DataEnd(2);
                    }
                    self.body(&bytes[..take]);
                    bytes = &bytes[take..];
                }
                Framing::DataEnd(left) => {
                    let take = usize::try_from(*left).map_or(bytes.len(), |l| l.min(bytes.len()));
                    *left -= take as u64;
                    if *left == 0 {
                        self.at = Framing::Size {
                            size: 0,
                            digits_done: false,
                            len: 0,
                        };
                    }
                    bytes = &bytes[take..];
                }
                Framing::Done => bytes = &[],
            }
        }
    }

    /// Counts bytes of the body.
    fn body(&mut self, data: &[u8]) {
        let mut pieces = data.split(|&b| b == b'\n').peekable();
        while let Some(piece) = pieces.next() {
            self.line = self.line.saturating_add(piece.len() as u64);
            if self.line > self.limit {
                self.over = true;
            }
            if pieces.peek().is_some() {
                self.line = 0; // a `\n` ended the line
            }
        }
    }
}

/// True when an answer's head says its body is chunked.
fn is_chunked(head: &[u8]) -> bool {
    String::from_utf8_lossy(head).lines().any(|line| {
        line.split_once(':').is_some_and(|(name, value)| {
            name.trim().eq_ignore_ascii_case("transfer-encoding")
                && value.to_ascii_lowercase().contains("chunked")
        })
    })
}

impl<S: AsyncRead + Unpin> AsyncRead for Capped<S> {
    fn poll_read(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<std::io::Result<()>> {
        let this = self.get_mut();
        if let Some(over) = this.over() {
            return Poll::Ready(Err(std::io::Error::other(over)));
        }
        let before = buf.filled().len();
        let result = Pin::new(&mut this.inner).poll_read(cx, buf);
        if let Poll::Ready(Ok(())) = &result {
            this.read += (buf.filled().len() - before) as u64;
            if let Some((lines, overflow)) = &mut this.lines {
                lines.feed(&buf.filled()[before..]);
                if lines.over {
                    let mut slot = overflow.lock().unwrap_or_else(PoisonError::into_inner);
                    *slot = Some(AnswerTooLarge {
                        path: this.path.clone(),
                        limit: lines.limit,
                        line: true,
                    });
                }
            }
            if let Some(over) = this.over() {
                return Poll::Ready(Err(std::io::Error::other(over)));
            }
        }
        result
    }
}

impl<S: AsyncWrite + Unpin> AsyncWrite for Capped<S> {
    fn poll_write(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<std::io::Result<usize>> {
        Pin::new(&mut self.get_mut().inner).poll_write(cx, buf)
    }
    fn poll_flush(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<std::io::Result<()>> {
        Pin::new(&mut self.get_mut().inner).poll_flush(cx)
    }
    fn poll_shutdown(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<std::io::Result<()>> {
        Pin::new(&mut self.get_mut().inner).poll_shutdown(cx)
    }
}

/// An answer (or one line of it) was larger than imagegc reads for its call.
#[derive(Debug, Clone, thiserror::Error)]
#[error("{} {path} is larger than {} MiB", if *line { "a line of the answer to" } else { "the answer to" }, limit / (1024 * 1024))]
struct AnswerTooLarge {
    /// The request method and path.
    path: String,
    /// The cap that was passed.
    limit: u64,
    /// The cap is on one line (the event stream), not the whole answer.
    line: bool,
}

impl AnswerTooLarge {
    fn into_error(self, address: &str) -> EngineError {
        let mib = self.limit / (1024 * 1024);
        if self.line {
            return EngineError::Other(format!(
                "the engine at {address} sent an event longer than {mib} MiB (one line without \
                 its end) on {}, the most imagegc reads for one event; stopped reading the stream",
                self.path
            ));
        }
        EngineError::Other(format!(
            "the engine at {address} sent more than {mib} MiB in answer to {}, \
             the most imagegc reads for that call; stopped reading",
            self.path
        ))
    }
}

/// The [`AnswerTooLarge`] anywhere in an error's source chain.
fn too_large(err: &(dyn StdError + 'static)) -> Option<AnswerTooLarge> {
    let mut current = Some(err);
    while let Some(e) = current {
        if let Some(found) = e.downcast_ref::<AnswerTooLarge>() {
            return Some(found.clone());
        }
        // `io::Error::source` skips the error it wraps, and bollard's
        // transparent `IOError` skips the `io::Error` itself.
        let io =
            e.downcast_ref::<std::io::Error>()
                .or_else(|| match e.downcast_ref::<BollardError>() {
                    Some(BollardError::IOError { err }) => Some(err),
                    _ => None,
                });
        if let Some(found) = io
            .and_then(std::io::Error::get_ref)
            .and_then(|inner| inner.downcast_ref::<AnswerTooLarge>())
        {
            return Some(found.clone());
        }
        current = e.source();
    }
    None
}

/// The error for a failed version negotiation: an HTTP answer that is not
/// the engine's (a web server, a proxy's error page) names the address and
/// says so; anything else maps as usual.
fn not_docker(address: &str, err: &BollardError) -> EngineError {
    let mapped = map_error(address, err);
    if mapped.is_unreachable() || too_large(err).is_some() {
        return mapped;
    }
    let what = match err {
        BollardError::DockerResponseServerError {
            status_code,
            message,
        } => format!("HTTP {status_code} {}", excerpt(message)),
        BollardError::JsonDataError { message, .. } => {
            format!("an answer that is not its JSON ({message})")
        }
        BollardError::APIVersionParseError {} => "an answer without an API version".to_owned(),
        _ => return mapped,
    };
    EngineError::Unavailable {
        address: address.to_owned(),
        reason: format!(
            "the server there did not answer like a Docker Engine: GET /version got {what}"
        ),
    }
}

/// The start of an answer's text, on one line and escaped, for a message.
fn excerpt(text: &str) -> String {
    const MAX_CHARS: usize = 60;
    let flat: String = text.split_whitespace().collect::<Vec<_>>().join(" ");
    let mut cut: String = flat.chars().take(MAX_CHARS).collect();
    if flat.chars().count() > MAX_CHARS {
        cut.push('…');
    }
    format!("{cut:?}")
}

impl Engine for Docker {
    fn capabilities(&self) -> Capabilities {
        self.flavor
            .capabilities(matches!(self.endpoint, Endpoint::Unix(_)))
    }

    async fn info(&self) -> Result<EngineInfo, EngineError> {
        let (version, info) = self
            .call(
                "GET /info",
                Box::pin(futures_util::future::try_join(
                    self.client.version(),
                    self.client.info(),
                )),
            )
            .await?;
        let root_dir = info
            .docker_root_dir
            .filter(|d| !d.is_empty())
            .ok_or_else(|| {
                EngineError::Other("the engine did not report its root directory".to_owned())
            })?;
        Ok(EngineInfo {
            server_version: version.version.unwrap_or_default(),
            api_version: self.client.client_version().to_string(),
            root_dir,
            store: self.flavor.describe().to_owned(),
        })
    }

    async fn list_images(&self) -> Result<Vec<ImageSummary>, EngineError> {
        let options = ListImagesOptionsBuilder::new().all(true).build();
        let images = self
            .call("GET /images/json", self.client.list_images(Some(options)))
            .await?;
        Ok(images.into_iter().filter_map(image_summary).collect())
    }

    async fn list_containers(&self) -> Result<Vec<Container>, EngineError> {
        let options = ListContainersOptionsBuilder::new().all(true).build();
        let containers = self
            .call(
                "GET /containers/json",
                self.client.list_containers(Some(options)),
            )
            .await?;
        Ok(containers
            .into_iter()
            .map(|c| Container {
                id: c.id.unwrap_or_default(),
                names: c
                    .names
                    .unwrap_or_default()
                    .into_iter()
                    .map(|n| n.strip_prefix('/').map(str::to_owned).unwrap_or(n))
                    .collect(),
                // ImageID is the ID even when the container was made from a
                // reference since moved to another image; `Image` is only a
                // fallback for engines that leave ImageID out.
                image_id: c
                    .image_id
                    .filter(|i| !i.is_empty())
                    .or(c.image.clone().filter(|i| i.starts_with("sha256:")))
                    .map(full_id)
                    .unwrap_or_default(),
                image_ref: c.image.unwrap_or_default(),
                labels: c.labels.unwrap_or_default().into_iter().collect(),
                state: c.state.map(|s| s.to_string()).unwrap_or_default(),
                // A missing time only feeds last-used, where the newest wins; the
                // container itself keeps its image in use regardless.
                created: c
                    .created
                    .and_then(from_unix_seconds)
                    .unwrap_or(DateTime::UNIX_EPOCH),
            })
            .collect())
    }

    async fn image_details(&self, image_id: &str) -> Result<ImageFacts, EngineError> {
        if self.flavor != flavor::Flavor::GraphDriver {
            // The other stores' facts need the history's per-layer usage (`store`).
            let (inspect, history) = self
                .call(
                    &format!("GET /images/{image_id}/json and /history"),
                    futures_util::future::try_join(
                        self.client.inspect_image(image_id),
                        self.client.image_history(image_id),
                    ),
                )
                .await?;
            return Ok(facts_of(self.flavor, image_id, inspect, history));
        }
        // Graph driver: the inspect alone sizes an image of one layer, or one whose other
        // layers an earlier history named; only the rest cost a history call (half the calls
        // of a cold pass over images of one layer each, BENCHMARKS.md).
        let inspect = self
            .call(
                &format!("GET /images/{image_id}/json"),
                self.client.inspect_image(image_id),
            )
            .await?;
        let diff_ids = inspect
            .root_fs
            .as_ref()
            .and_then(|r| r.layers.as_deref())
            .unwrap_or_default();
        let total = inspect.size.and_then(|s| u64::try_from(s).ok());
        let derived = total.and_then(|total| {
            let known = self
                .known_layers
                .lock()
                .unwrap_or_else(PoisonError::into_inner);
            layers::layers_from_known(diff_ids, total, |c| known.get(c))
        });
        if let Some(layers) = derived {
            return Ok(ImageFacts {
                layers,
                sizes_exact: true,
                last_tag_time: last_tag_time_of(&inspect),
                blobs: Vec::new(),
            });
        }
        let history = self
            .call(
                &format!("GET /images/{image_id}/history"),
                self.client.image_history(image_id),
            )
            .await?;
        let facts = facts_of(self.flavor, image_id, inspect, history);
        if facts.sizes_exact {
            self.known_layers
                .lock()
                .unwrap_or_else(PoisonError::into_inner)
                .learn(&facts.layers);
        }
        Ok(facts)
    }

    async fn remove_image(&self, target: &str) -> Result<Vec<DeleteItem>, EngineError> {
        // Never force (a forced removal drops the record but can leave layers
        // behind); never prune parents (the planner decides about those).
        let options = RemoveImageOptionsBuilder::new()
            .force(false)
            .noprune(true)
            .build();
        let items = self
            .call(
                &format!("DELETE /images/{target}"),
                self.client.remove_image(target, Some(options), None),
            )
            .await?;
        Ok(items
            .into_iter()
            .flat_map(|item| {
                item.untagged
                    .map(DeleteItem::Untagged)
                    .into_iter()
                    .chain(item.deleted.map(full_id).map(DeleteItem::Deleted))
            })
            .collect())
    }

    /// `GET /system/df`, read as raw JSON (see `engine/docker/build_cache.rs`).
    /// On an engine without `BuildKit` (Podman: its `/system/df` has an empty
    /// `BuildCache`, `/build/prune` is 404) nothing is asked; a 404 from
    /// `/system/df` also means no build cache.
    async fn build_cache(&self) -> Result<Vec<crate::engine::CacheRecord>, EngineError> {
        if !self.capabilities().build_cache {
            return Err(crate::engine::no_build_cache());
        }
        // Only `BuildCache` is read: the rest (every image and container) is skipped while
        // parsing, not built as a tree (at 10,000 images that tree was the daemon's peak).
        let df: build_cache::SystemDf = self
            .raw_json(hyper::Method::GET, "/system/df")
            .await
            .map_err(|e| match e {
                EngineError::NotFound(message) => EngineError::Unsupported(format!(
                    "GET /system/df answered 404 ({message}): this engine has no build cache"
                )),
                other => other,
            })?;
        Ok(build_cache::records(&df.build_cache))
    }

    /// One `POST /build/prune` for exactly this record (see `engine/docker/build_cache.rs`).
    async fn remove_cache_record(&self, id: &str) -> Result<CacheRemoval, EngineError> {
        if !self.capabilities().build_cache {
            return Err(crate::engine::no_build_cache());
        }
        let query = build_cache::prune_query(id)?;
        let answer: serde_json::Value = self
            .raw_json(hyper::Method::POST, &format!("/build/prune?{query}"))
            .await
            .map_err(|e| match e {
                // The engine answers a missing record with an empty list, so
                // a 404 is for the endpoint: an engine without a build cache.
                EngineError::NotFound(message) => EngineError::Unsupported(format!(
                    "POST /build/prune answered 404 ({message}): this engine has no build cache"
                )),
                other => other,
            })?;
        Ok(build_cache::removal(id, &answer))
    }

    fn events(&self, since: Option<DateTime<Utc>>) -> EventStream {
        let filters = std::collections::HashMap::from([
            ("type", vec!["container", "image"]),
            ("event", events::FILTER_ACTIONS.to_vec()),
        ]);
        let mut options = EventsOptionsBuilder::new().filters(&filters);
        if let Some(since) = since {
            options = options.since(&events::since_param(since));
        }
        // bollard's stream holds its own handle on the transport, so it
        // outlives `self` (the compiler checks the `'static`).
        let address = self.address.clone();
        let overflow = Arc::clone(&self.line_overflow);
        self.client
            .events(Some(options.build()))
            .filter_map(move |item| {
                let mapped = match item {
                    Ok(message) => events::engine_event(message).map(Ok),
                    Err(e) => {
                        let mut slot = overflow.lock().unwrap_or_else(PoisonError::into_inner);
                        Some(Err(match slot.take() {
                            Some(cap) => cap.into_error(&address),
                            None => map_error(&address, &e),
                        }))
                    }
                };
                std::future::ready(mapped)
            })
            .boxed()
    }

    async fn container_times(&self, container_id: &str) -> Result<ContainerTimes, EngineError> {
        let inspect = self
            .call(
                &format!("GET /containers/{container_id}/json"),
                self.client
                    .inspect_container(container_id, None::<InspectContainerOptions>),
            )
            .await?;
        let image_id = inspect
            .image
            .filter(|i| !i.is_empty())
            .map(full_id)
            .ok_or_else(|| {
                EngineError::Other(format!(
                    "container {container_id} has no image ID in its inspect answer"
                ))
            })?;
        let state = inspect.state.unwrap_or_default();
        Ok(ContainerTimes {
            image_id,
            // As in `list_containers`: a missing time only feeds last-used.
            created: inspect
                .created
                .as_deref()
                .and_then(parse_engine_time)
                .unwrap_or(DateTime::UNIX_EPOCH),
            started_at: state.started_at.as_deref().and_then(parse_engine_time),
            finished_at: state.finished_at.as_deref().and_then(parse_engine_time),
        })
    }

    /// `GET /containers/{id}/json`, with `?size=1` when `size`. Only a
    /// full container ID is inspected: any other text is `NotFound` without
    /// a call (no container of this engine can have it as its ID).
    async fn container_details(
        &self,
        id: &str,
        size: bool,
    ) -> Result<ContainerDetails, EngineError> {
        if !is_full_container_id(id) {
            return Err(EngineError::NotFound(format!(
                "{id:?} is not a container ID (64 hex digits): not inspected"
            )));
        }
        let options = InspectContainerOptionsBuilder::new().size(size).build();
        let inspect = self
            .call(
                &format!("GET /containers/{id}/json"),
                self.client.inspect_container(id, Some(options)),
            )
            .await?;
        Ok(container_details(inspect))
    }

    /// `DELETE /containers/{id}?v=false&force=false`: never forced, never
    /// a volume. Only a full container ID is sent; anything else is refused
    /// before any call.
    async fn remove_container(&self, id: &str) -> Result<(), EngineError> {
        if !is_full_container_id(id) {
            return Err(EngineError::Other(format!(
                "refusing to remove container {id:?}: not a container ID (64 hex digits)"
            )));
        }
        let options = RemoveContainerOptionsBuilder::new()
            .v(false)
            .force(false)
            .link(false)
            .build();
        self.call(
            &format!("DELETE /containers/{id}"),
            self.client.remove_container(id, Some(options)),
        )
        .await
    }

    async fn resolve_image(&self, reference: &str) -> Result<String, EngineError> {
        let inspect = self
            .call(
                &format!("GET /images/{reference}/json"),
                self.client.inspect_image(reference),
            )
            .await?;
        inspect
            .id
            .filter(|i| !i.is_empty())
            .map(full_id)
            .ok_or_else(|| {
                EngineError::Other(format!(
                    "the inspect answer for {reference} has no image ID"
                ))
            })
    }
}

/// The details of one container's inspect answer.
fn container_details(inspect: bollard::models::ContainerInspectResponse) -> ContainerDetails {
    let state = inspect.state.unwrap_or_default();
    let host = inspect.host_config.unwrap_or_default();
    ContainerDetails {
        started_at: state.started_at.as_deref().and_then(parse_engine_time),
        finished_at: state.finished_at.as_deref().and_then(parse_engine_time),
        restart_policy: host
            .restart_policy
            .and_then(|r| r.name)
            .map(|n| n.to_string())
            .unwrap_or_default(),
        volumes_from: host
            .volumes_from
            .unwrap_or_default()
            .into_iter()
            .map(|v| without_mount_mode(&v).to_owned())
            .filter(|v| !v.is_empty())
            .collect(),
        network_container: host
            .network_mode
            .as_deref()
            .and_then(|m| m.strip_prefix("container:"))
            .filter(|c| !c.is_empty())
            .map(str::to_owned),
        size_rw: inspect.size_rw.and_then(|s| u64::try_from(s).ok()),
    }
}

/// A `VolumesFrom` entry without its `:ro` / `:rw` suffix.
fn without_mount_mode(entry: &str) -> &str {
    entry
        .strip_suffix(":ro")
        .or_else(|| entry.strip_suffix(":rw"))
        .unwrap_or(entry)
}

/// Splits an engine address into its transport and the URL named in messages.
fn parse_address(raw: &str) -> Result<(Endpoint, String), String> {
    let raw = raw.trim();
    if let Some(path) = raw.strip_prefix("unix://") {
        if path.is_empty() {
            return Err("the unix:// address has no socket path".to_owned());
        }
        return Ok((Endpoint::Unix(PathBuf::from(path)), raw.to_owned()));
    }
    for scheme in ["tcp://", "http://"] {
        if let Some(rest) = raw.strip_prefix(scheme) {
            let authority = rest.trim_end_matches('/');
            if authority.is_empty() || authority.contains('/') {
                return Err(format!("expected {scheme}HOST:PORT"));
            }
            return Ok((Endpoint::Tcp(authority.to_owned()), raw.to_owned()));
        }
    }
    if raw.contains("://") {
        return Err(
            "unsupported address scheme: use unix:///path/to/docker.sock, a socket path, \
             or tcp://HOST:PORT (TLS and ssh are not supported)"
                .to_owned(),
        );
    }
    if raw.is_empty() {
        return Err("the address is empty".to_owned());
    }
    Ok((Endpoint::Unix(PathBuf::from(raw)), format!("unix://{raw}")))
}

/// Tells a missing socket and an unreadable one apart before connecting:
/// bollard folds both into "socket not found".
fn check_socket(path: &Path, address: &str) -> Result<(), EngineError> {
    match std::fs::metadata(path) {
        Ok(_) => Ok(()),
        Err(e) if e.kind() == std::io::ErrorKind::PermissionDenied => {
            Err(EngineError::PermissionDenied {
                address: address.to_owned(),
            })
        }
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => Err(EngineError::Unavailable {
            address: address.to_owned(),
            reason: format!("the socket {} does not exist", path.display()),
        }),
        Err(e) => Err(EngineError::Unavailable {
            address: address.to_owned(),
            reason: format!("cannot stat the socket {}: {e}", path.display()),
        }),
    }
}

/// Maps a bollard error onto what callers branch on: 409 and 404 are normal
/// outcomes of a removal, transport failures mean the engine is unreachable.
fn map_error(address: &str, err: &BollardError) -> EngineError {
    if let Some(too_large) = too_large(err) {
        return too_large.into_error(address);
    }
    match err {
        BollardError::DockerResponseServerError {
            status_code,
            message,
        } => status_error(*status_code, message.clone()),
        BollardError::SocketNotFoundError(path) => EngineError::Unavailable {
            address: address.to_owned(),
            reason: format!("the socket {path} does not exist"),
        },
        BollardError::IOError { err } if err.kind() == std::io::ErrorKind::PermissionDenied => {
            EngineError::PermissionDenied {
                address: address.to_owned(),
            }
        }
        _ if has_io_error(err, std::io::ErrorKind::PermissionDenied) => {
            EngineError::PermissionDenied {
                address: address.to_owned(),
            }
        }
        BollardError::HyperLegacyError { .. }
        | BollardError::HyperResponseError { .. }
        | BollardError::IOError { .. }
        | BollardError::RequestTimeoutError => EngineError::Unavailable {
            address: address.to_owned(),
            reason: error_chain(err),
        },
        _ => EngineError::Other(error_chain(err)),
    }
}

/// The error for a non-2xx HTTP answer.
fn status_error(status: u16, message: String) -> EngineError {
    match status {
        409 => EngineError::Conflict(message),
        404 => EngineError::NotFound(message),
        _ => EngineError::Other(format!("HTTP {status}: {message}")),
    }
}

/// Whether an I/O error of `kind` is anywhere in the error's source chain
/// (hyper wraps the connector's `io::Error` a few levels down).
fn has_io_error(err: &(dyn StdError + 'static), kind: std::io::ErrorKind) -> bool {
    let mut current = Some(err);
    while let Some(e) = current {
        if e.downcast_ref::<std::io::Error>()
            .is_some_and(|io| io.kind() == kind)
        {
            return true;
        }
        current = e.source();
    }
    false
}

/// An error and its sources on one line, skipping sources whose text the
/// outer message already repeats.
fn error_chain(err: &(dyn StdError + 'static)) -> String {
    let mut text = err.to_string();
    let mut current = err.source();
    while let Some(e) = current {
        let part = e.to_string();
        if !text.contains(&part) {
            text.push_str(": ");
            text.push_str(&part);
        }
        current = e.source();
    }
    text
}

/// When a reference was last put on the inspected image, if the engine says.
fn last_tag_time_of(inspect: &bollard::models::ImageInspect) -> Option<DateTime<Utc>> {
    inspect
        .metadata
        .as_ref()
        .and_then(|m| m.last_tag_time.as_deref())
        .and_then(parse_engine_time)
}

/// The facts of image `image_id` on a store of `flavor`, from its inspect and history.
fn facts_of(
    flavor: flavor::Flavor,
    image_id: &str,
    inspect: bollard::models::ImageInspect,
    history: Vec<bollard::models::ImageHistoryResponseItem>,
) -> ImageFacts {
    let last_tag_time = last_tag_time_of(&inspect);
    let content_size = inspect.size.and_then(|s| u64::try_from(s).ok());
    let details = ImageDetails {
        diff_ids: inspect.root_fs.and_then(|r| r.layers).unwrap_or_default(),
        // The engine lists history newest first.
        history: history
            .into_iter()
            .rev()
            .map(|h| HistoryEntry {
                size: u64::try_from(h.size).unwrap_or(0),
                created_by: h.created_by,
            })
            .collect(),
        last_tag_time,
    };
    store::image_facts(flavor, image_id, &details, content_size)
}

/// One entry of `GET /images/json`; `None` (with a warning naming the image
/// and the value) when its `Created` is no time at all, so that one absurd
/// image is left alone and the pass goes on with the others.
fn image_summary(image: bollard::models::ImageSummary) -> Option<ImageSummary> {
    let Some(created) = from_unix_seconds(image.created) else {
        tracing::warn!(
            image = %image.id,
            created = image.created,
            "the engine lists image {} with an impossible Created time ({} seconds since \
             1970); imagegc leaves it alone",
            image.id,
            image.created
        );
        return None;
    };
    // `RepoTags`/`RepoDigests` may be lists, `null` (bollard reads both as
    // lists) or hold placeholders; `ParentId` is empty on engines without
    // parent links (BuildKit images, the containerd store). The ID is taken
    // as the engine gives it: a config digest, or a manifest digest on the
    // containerd store; nothing here derives it from the config.
    Some(ImageSummary {
        parent_id: Some(image.parent_id).filter(|p| !p.is_empty()).map(full_id),
        tags: without_placeholder(image.repo_tags, NONE_TAG),
        digests: without_placeholder(image.repo_digests, NONE_DIGEST),
        created,
        labels: image.labels.into_iter().collect::<BTreeMap<_, _>>(),
        id: full_id(image.id),
    })
}

/// An image ID with its `sha256:` algorithm: Podman leaves it out of
/// `ParentId`, of removal answers (`Deleted`) and of its events, where
/// Docker and the rest of its own answers have it. Anything that is not 64
/// bare hex digits is kept as it is.
fn full_id(id: String) -> String {
    if id.len() == 64 && id.bytes().all(|b| b.is_ascii_hexdigit()) {
        format!("sha256:{id}")
    } else {
        id
    }
}

/// Drops the placeholders older APIs put in `RepoTags` / `RepoDigests`.
fn without_placeholder(references: Vec<String>, placeholder: &str) -> Vec<String> {
    references
        .into_iter()
        .filter(|r| r != placeholder)
        .collect()
}

/// Unix seconds to a time, `None` when out of range.
fn from_unix_seconds(seconds: i64) -> Option<DateTime<Utc>> {
    DateTime::from_timestamp(seconds, 0)
}

/// An RFC 3339 time from the engine; `None` for Go's zero time
/// (`0001-01-01T00:00:00Z`, "never") and anything unparsable.
fn parse_engine_time(text: &str) -> Option<DateTime<Utc>> {
    let time = DateTime::parse_from_rfc3339(text)
        .map_err(|e| tracing::debug!(time = text, error = %e, "unparsable time from the engine"))
        .ok()?
        .with_timezone(&Utc);
    (time > DateTime::UNIX_EPOCH).then_some(time)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn strings(items: &[&str]) -> Vec<String> {
        items.iter().map(|s| (*s).to_owned()).collect()
    }

    #[test]
    fn placeholder_tags_and_digests_of_old_apis_are_dropped() {
        assert_eq!(
            without_placeholder(strings(&["<none>:<none>"]), NONE_TAG),
            Vec::<String>::new()
        );
        assert_eq!(
            without_placeholder(strings(&["<none>@<none>"]), NONE_DIGEST),
            Vec::<String>::new()
        );
        assert_eq!(
            without_placeholder(strings(&["app:1", "<none>:<none>", "app:2"]), NONE_TAG),
            strings(&["app:1", "app:2"])
        );
    }

    #[test]
    fn bare_hex_ids_of_podman_get_their_algorithm_and_anything_else_is_kept() {
        let hex = "a37b7a98c0aa2ada2f70a90c9a8b61e3a71472ab73907235bc3990aa45b51512";
        assert_eq!(full_id(hex.to_owned()), format!("sha256:{hex}"));
        assert_eq!(full_id(format!("sha256:{hex}")), format!("sha256:{hex}"));
        // A reference or a short ID is no ID to complete.
        assert_eq!(full_id("localhost/app:1".to_owned()), "localhost/app:1");
        assert_eq!(full_id("a37b7a98c0aa".to_owned()), "a37b7a98c0aa");
    }

    #[test]
    fn empty_reference_lists_of_new_apis_stay_empty() {
        assert!(without_placeholder(Vec::new(), NONE_TAG).is_empty());
    }

    fn inspect(json: &str) -> bollard::models::ContainerInspectResponse {
        serde_json::from_str(json).expect("an inspect answer")
    }

    #[test]
    fn inspect_of_a_never_started_container_has_no_times_and_no_size_unless_asked() {
        let d = container_details(inspect(
            r#"{"State":{"Status":"created","StartedAt":"0001-01-01T00:00:00Z",
                "FinishedAt":"0001-01-01T00:00:00Z"},
               "HostConfig":{"RestartPolicy":{"Name":"no","MaximumRetryCount":0},
                "NetworkMode":"none"}}"#,
        ));
        assert_eq!(
            d,
            ContainerDetails {
                started_at: None,
                finished_at: None,
                restart_policy: "no".to_owned(),
                volumes_from: Vec::new(),
                network_container: None,
                size_rw: None,
            }
        );
    }

    #[test]
    fn inspect_of_an_exited_container_reads_times_mounts_network_and_size() {
        let d = container_details(inspect(
            r#"{"State":{"Status":"exited","StartedAt":"2026-12-02T06:00:00.5Z",
                "FinishedAt":"2026-12-02T06:00:03.25Z"},
               "HostConfig":{"RestartPolicy":{"Name":"always"},
                "VolumesFrom":["data:ro","other:rw","plain"],
                "NetworkMode":"container:abc123"},
               "SizeRw":1048576}"#,
        ));
        assert_eq!(
            d.started_at,
            parse_engine_time("2026-12-02T06:00:00.5Z"),
            "{d:?}"
        );
        assert!(d.started_at.is_some());
        assert_eq!(d.finished_at, parse_engine_time("2026-12-02T06:00:03.25Z"));
        assert_eq!(d.restart_policy, "always");
        assert_eq!(d.volumes_from, strings(&["data", "other", "plain"]));
        assert_eq!(d.network_container.as_deref(), Some("abc123"));
        assert_eq!(d.size_rw, Some(1_048_576));
    }

    #[test]
    fn only_full_container_ids_are_sent_to_the_engine() {
        let id = "0123456789abcdef".repeat(4);
        assert!(crate::engine::is_full_container_id(&id));
        for hostile in [
            "",
            "ci-job",
            "../images/sha256:aa",
            &format!("{id}?force=1"),
            &id.to_uppercase(),
            &id[..63],
        ] {
            assert!(!crate::engine::is_full_container_id(hostile), "{hostile}");
        }
    }

    #[test]
    fn go_zero_time_means_never_tagged() {
        assert_eq!(parse_engine_time("0001-01-01T00:00:00Z"), None);
        assert_eq!(parse_engine_time(""), None);
        assert_eq!(parse_engine_time("yesterday"), None);
    }

    #[test]
    fn real_tag_times_keep_their_nanoseconds_and_zone() {
        let parsed = parse_engine_time("2024-03-01T12:30:00.123456789+02:00");
        assert_eq!(
            parsed.map(|t| t.to_rfc3339()),
            Some("2024-03-01T10:30:00.123456789+00:00".to_owned())
        );
    }

    #[test]
    fn conflict_and_not_found_answers_become_normal_outcomes() {
        let conflict = BollardError::DockerResponseServerError {
            status_code: 409,
            message: "image is being used by stopped container abc".to_owned(),
        };
        assert_eq!(
            map_error("unix:///s", &conflict),
            EngineError::Conflict("image is being used by stopped container abc".to_owned())
        );
        let gone = BollardError::DockerResponseServerError {
            status_code: 404,
            message: "No such image: x".to_owned(),
        };
        assert_eq!(
            map_error("unix:///s", &gone),
            EngineError::NotFound("No such image: x".to_owned())
        );
        let broken = BollardError::DockerResponseServerError {
            status_code: 500,
            message: "boom".to_owned(),
        };
        assert_eq!(
            map_error("unix:///s", &broken),
            EngineError::Other("HTTP 500: boom".to_owned())
        );
    }

    #[test]
    fn a_refused_socket_permission_names_the_address() {
        let err = BollardError::IOError {
            err: std::io::Error::new(std::io::ErrorKind::PermissionDenied, "denied"),
        };
        let mapped = map_error("unix:///var/run/docker.sock", &err);
        assert_eq!(
            mapped,
            EngineError::PermissionDenied {
                address: "unix:///var/run/docker.sock".to_owned()
            }
        );
        assert!(mapped.to_string().contains("unix:///var/run/docker.sock"));
    }

    #[test]
    fn transport_failures_make_the_engine_unavailable() {
        let err = BollardError::IOError {
            err: std::io::Error::new(std::io::ErrorKind::ConnectionRefused, "refused"),
        };
        let mapped = map_error("tcp://h:2375", &err);
        assert!(mapped.is_unreachable(), "{mapped:?}");
        assert!(mapped.to_string().contains("tcp://h:2375"));
        assert!(mapped.to_string().contains("refused"));

        let missing = map_error(
            "unix:///x",
            &BollardError::SocketNotFoundError("/x".to_owned()),
        );
        assert!(
            matches!(&missing, EngineError::Unavailable { reason, .. } if reason.contains("does not exist")),
            "{missing:?}"
        );
    }

    #[test]
    fn addresses_of_every_supported_form_are_understood() {
        assert_eq!(
            parse_address("unix:///run/docker.sock"),
            Ok((
                Endpoint::Unix(PathBuf::from("/run/docker.sock")),
                "unix:///run/docker.sock".to_owned()
            ))
        );
        assert_eq!(
            parse_address("/run/docker.sock"),
            Ok((
                Endpoint::Unix(PathBuf::from("/run/docker.sock")),
                "unix:///run/docker.sock".to_owned()
            ))
        );
        assert_eq!(
            parse_address("tcp://10.0.0.1:2375"),
            Ok((
                Endpoint::Tcp("10.0.0.1:2375".to_owned()),
                "tcp://10.0.0.1:2375".to_owned()
            ))
        );
        assert_eq!(
            parse_address("http://localhost:2375/"),
            Ok((
                Endpoint::Tcp("localhost:2375".to_owned()),
                "http://localhost:2375/".to_owned()
            ))
        );
        assert!(parse_address("ssh://user@host").is_err());
        assert!(parse_address("unix://").is_err());
        assert!(parse_address("").is_err());
    }

    #[test]
    fn list_answers_get_the_large_cap_the_event_stream_none_and_the_rest_the_small_one() {
        for path in [
            "/images/json",
            "/v1.41/images/json",
            "/containers/json",
            "/system/df",
        ] {
            assert_eq!(answer_limit(path), Some(MAX_LIST_ANSWER_BYTES), "{path}");
        }
        assert_eq!(answer_limit("/events"), None);
        assert_eq!(answer_limit("/v1.41/events"), None);
        for path in [
            "/version",
            "/images/sha256:ab/json",
            "/images/versions/json",
            "/images/app:1/history",
        ] {
            assert_eq!(answer_limit(path), Some(MAX_ANSWER_BYTES), "{path}");
        }
    }

    /// `body` as an HTTP/1.1 answer, in chunks of `chunk` bytes.
    fn chunked_answer(body: &[u8], chunk: usize) -> Vec<u8> {
        let mut out = b"HTTP/1.1 200 OK\r\nContent-Type: application/json\r\nTransfer-Encoding: chunked\r\n\r\n".to_vec();
        for piece in body.chunks(chunk) {
            out.extend_from_slice(format!("{:x};ext=1\r\n", piece.len()).as_bytes());
            out.extend_from_slice(piece);
            out.extend_from_slice(b"\r\n");
        }
        out.extend_from_slice(b"0\r\n\r\n");
        out
    }

    /// Feeds `answer` to a [`LineCap`] of `limit`, `step` bytes at a time.
    fn over_after(answer: &[u8], limit: u64, step: usize) -> bool {
        let mut cap = LineCap::new(limit);
        for piece in answer.chunks(step) {
            cap.feed(piece);
        }
        cap.over
    }

    #[test]
    fn the_event_line_cap_counts_body_lines_through_the_chunked_framing() {
        let events = b"{\"Type\":\"image\"}\n{\"Type\":\"container\"}\n".repeat(50);
        for (chunk, step) in [(1, 1), (3, 7), (40, 1), (4096, 4096), (5, 4096)] {
            let answer = chunked_answer(&events, chunk);
            assert!(
                !over_after(&answer, 32, step),
                "lines of at most 20 bytes, chunks of {chunk}, read {step} at a time"
            );
            assert!(
                over_after(&answer, 19, step),
                "a 20-byte line over a cap of 19"
            );
        }
        // One line without end, in many small chunks: the framing's own
        // CRLFs do not end it.
        let endless = chunked_answer(&[b'x'; 4000], 10);
        assert!(over_after(&endless, 1024, 64));
        assert!(!over_after(&endless, 4000, 64));
        // A body without chunked framing counts every byte.
        let mut plain = b"HTTP/1.1 200 OK\r\nConnection: close\r\n\r\n".to_vec();
        plain.extend_from_slice(&[b'y'; 2000]);
        assert!(over_after(&plain, 1024, 100));
        assert!(!over_after(&plain, 2000, 100));
        assert_eq!(line_limit("/v1.41/events"), Some(MAX_EVENT_LINE_BYTES));
        assert_eq!(line_limit("/images/json"), None);
    }

    #[test]
    fn an_answer_over_its_cap_is_found_under_hyper_and_named_with_the_address() {
        let cap = AnswerTooLarge {
            path: "GET /images/json".to_owned(),
            limit: MAX_LIST_ANSWER_BYTES,
            line: false,
        };
        let wrapped = BollardError::IOError {
            err: std::io::Error::other(cap),
        };
        let mapped = map_error("unix:///e.sock", &wrapped);
        let text = mapped.to_string();
        assert!(!mapped.is_unreachable(), "{mapped:?}");
        assert!(
            text.contains("unix:///e.sock")
                && text.contains("more than 512 MiB in answer to GET /images/json"),
            "{text}"
        );
    }

    #[test]
    fn a_web_page_in_answer_to_get_version_is_not_a_docker_engine() {
        let page = BollardError::DockerResponseServerError {
            status_code: 404,
            message: "<!DOCTYPE HTML PUBLIC \"-//IETF//DTD HTML 2.0//EN\">\n<html><head>\n<title>404 Not Found</title>".to_owned(),
        };
        let text = not_docker("tcp://web:80", &page).to_string();
        assert!(
            text.contains("tcp://web:80")
                && text.contains("did not answer like a Docker Engine")
                && text.contains("HTTP 404"),
            "{text}"
        );
        assert!(text.contains('…') && !text.contains('\n'), "{text}");
    }
}
