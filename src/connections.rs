//! Accepting and serving client connections, each within bounds: the gRPC
//! server's own loop, so that every limit on what one client can hold is
//! the gateway's to set.
//!
//! Per connection: TLS (when configured) and the HTTP/2 preface must arrive
//! within the handshake timeout; at most `max_concurrent_streams` calls at
//! once (advertised in SETTINGS); keepalive PINGs drop peers that stopped
//! answering; a connection without a call for the idle timeout, or older
//! than its maximum age, gets a GOAWAY and closes once its calls finish;
//! streams the client resets faster than they are served close the
//! connection (HTTP/2 rapid reset). Per request: the body must arrive whole
//! within the request-arrival timeout after its headers, whatever
//! `grpc-timeout` says, and the instant the headers arrived is what the
//! call's deadline counts from.
//!
//! Defaults follow Envoy's and linkerd2-proxy's practice for an edge: bounded
//! streams per connection, a headers-to-body timeout, idle connections closed
//! by GOAWAY rather than reset.

use std::{
    convert::Infallible,
    future::Future,
    io,
    pin::Pin,
    sync::{
        Arc, Mutex,
        atomic::{AtomicBool, AtomicUsize, Ordering},
    },
    task::{Context, Poll},
    time::Duration,
};

use bytes::Bytes;
use hyper::body::{Body, Frame, Incoming, SizeHint};
use hyper_util::rt::{TokioExecutor, TokioIo, TokioTimer};
use rustls_pki_types::CertificateDer;
use tokio::{
    io::{AsyncRead, AsyncWrite, ReadBuf},
    net::{TcpListener, TcpStream},
    sync::watch,
    task::JoinSet,
    time::{Instant, Sleep},
};
use tonic::service::Routes;
use tower::ServiceExt;

use crate::{error::slow_request_status, metrics::Metrics, rpc_metrics, tls::TlsFiles};

/// The bounds on what one client connection may hold; validated at start-up.
#[derive(Clone, Debug)]
pub struct ConnectionLimits {
    /// Calls at once on one connection (HTTP/2 SETTINGS_MAX_CONCURRENT_STREAMS).
    pub max_concurrent_streams: u32,
    /// From accept to the HTTP/2 preface (TLS handshake included).
    pub handshake_timeout: Duration,
    /// A connection with no call for this long gets a GOAWAY; `None`: never.
    pub idle_timeout: Option<Duration>,
    /// Connections older than this get a GOAWAY; `None`: never.
    pub max_connection_age: Option<Duration>,
    /// How often a PING checks that the peer is alive; `None`: no pings.
    pub keepalive_interval: Option<Duration>,
    /// How long a PING may go unanswered before the connection is closed.
    pub keepalive_timeout: Duration,
    /// How long a request's body may take to arrive after its headers.
    pub request_arrival_timeout: Duration,
    /// Streams reset by the client before they were served, at once; more
    /// close the connection (HTTP/2 rapid reset, CVE-2023-44487).
    pub max_pending_reset_streams: usize,
}

/// The length of the HTTP/2 client preface (`PRI * HTTP/2.0…`).
const PREFACE_LEN: usize = 24;

/// The verified client certificate chain of a TLS connection, put into each
/// request's extensions (tonic's own `peer_certs` needs its own server loop).
#[derive(Clone, Debug)]
pub struct ClientCertificates(pub Arc<Vec<CertificateDer<'static>>>);

/// When a request's headers arrived: its deadline counts from here.
#[derive(Clone, Copy, Debug)]
pub struct HeadersArrived(pub Instant);

/// Serves connections from `listener` until `stop` turns true; then stops
/// accepting, sends every connection a GOAWAY and returns once their calls
/// have finished. Dropping the returned future closes every connection.
pub async fn serve(
    listener: TcpListener,
    tls: Option<Arc<TlsFiles>>,
    routes: Routes,
    limits: ConnectionLimits,
    metrics: Arc<Metrics>,
    stop: watch::Receiver<bool>,
) {
    let limits = Arc::new(limits);
    let mut connections = JoinSet::new();
    let mut stopped = stop.clone();
    loop {
        tokio::select! {
            () = stopped_now(&mut stopped) => break,
            Some(_) = connections.join_next(), if !connections.is_empty() => {}
            accepted = listener.accept() => match accepted {
                Ok((tcp, _peer)) => {
                    // Small answers must not wait for Nagle's algorithm.
                    let _ = tcp.set_nodelay(true);
                    connections.spawn(serve_connection(
                        tcp,
                        tls.clone(),
                        routes.clone(),
                        limits.clone(),
                        metrics.clone(),
                        stop.clone(),
                    ));
                }
                Err(error) => {
                    // E.g. EMFILE: back off instead of spinning.
                    tracing::warn!(%error, "accepting a connection failed");
                    tokio::time::sleep(Duration::from_millis(20)).await;
                }
            },
        }
    }
    // New clients are refused at once rather than left hanging.
    drop(listener);
    while connections.join_next().await.is_some() {}
}

/// Resolves once `stop` is true (the guard `wait_for` returns is not `Send`).
async fn stopped_now(stop: &mut watch::Receiver<bool>) {
    let _ = stop.wait_for(|stop| *stop).await;
}

/// Why a connection ended, for the metrics.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Closed {
    HandshakeTimeout,
    TlsFailed,
    Idle,
    MaxAge,
    Shutdown,
    /// The client closed it, or it broke (keepalive, protocol error, reset flood).
    Peer,
}

impl Closed {
    pub const ALL: &[Closed] = &[
        Closed::HandshakeTimeout,
        Closed::TlsFailed,
        Closed::Idle,
        Closed::MaxAge,
        Closed::Shutdown,
        Closed::Peer,
    ];

    pub const fn label(self) -> &'static str {
        match self {
            Closed::HandshakeTimeout => "handshake_timeout",
            Closed::TlsFailed => "tls_failed",
            Closed::Idle => "idle",
            Closed::MaxAge => "max_age",
            Closed::Shutdown => "shutdown",
            Closed::Peer => "peer",
        }
    }
}

async fn serve_connection(
    tcp: TcpStream,
    tls: Option<Arc<TlsFiles>>,
    routes: Routes,
    limits: Arc<ConnectionLimits>,
    metrics: Arc<Metrics>,
    stop: watch::Receiver<bool>,
) {
    let _open = metrics.connection_opened();
    let closed = match tls {
        None => serve_http2(tcp, None, routes, &limits, &metrics, stop).await,
        Some(files) => {
            let accepted = Instant::now();
            let handshake = files.acceptor().accept(tcp);
            match tokio::time::timeout_at(accepted + limits.handshake_timeout, handshake).await {
                Ok(Ok(stream)) => {
                    let certificates = stream
                        .get_ref()
                        .1
                        .peer_certificates()
                        .map(|chain| ClientCertificates(Arc::new(chain.to_vec())));
                    serve_http2(stream, certificates, routes, &limits, &metrics, stop).await
                }
                Ok(Err(error)) => {
                    tracing::debug!(%error, "TLS handshake failed");
                    Closed::TlsFailed
                }
                Err(_) => Closed::HandshakeTimeout,
            }
        }
    };
    metrics.record_connection_closed(closed.label());
}

/// One HTTP/2 connection, from the preface to its close.
async fn serve_http2<IO>(
    io: IO,
    certificates: Option<ClientCertificates>,
    routes: Routes,
    limits: &ConnectionLimits,
    metrics: &Arc<Metrics>,
    mut stop: watch::Receiver<bool>,
) -> Closed
where
    IO: AsyncRead + AsyncWrite + Unpin + Send + 'static,
{
    let started = Instant::now();
    let activity = Arc::new(Activity::new(started));
    let (going_away, going_away_signal) = watch::channel(false);
    let service = ConnectionService {
        routes,
        certificates,
        activity: activity.clone(),
        request_arrival_timeout: limits.request_arrival_timeout,
        metrics: metrics.clone(),
        going_away: ConnectionGoingAway(going_away_signal),
    };
    let io = TokioIo::new(SpeaksHttp2 {
        inner: io,
        read: 0,
        activity: activity.clone(),
    });
    let mut builder = hyper::server::conn::http2::Builder::new(TokioExecutor::new());
    builder
        .timer(TokioTimer::new())
        .max_concurrent_streams(limits.max_concurrent_streams)
        .keep_alive_interval(limits.keepalive_interval)
        .keep_alive_timeout(limits.keepalive_timeout)
        .max_pending_accept_reset_streams(limits.max_pending_reset_streams);
    let connection = builder.serve_connection(io, service);
    tokio::pin!(connection);

    let far = started + Duration::from_secs(86_400 * 365);
    let handshake_by = started + limits.handshake_timeout;
    let age_limit = limits.max_connection_age.map_or(far, |age| started + age);
    // Once a GOAWAY is sent, only the connection's end matters.
    let mut draining: Option<Closed> = None;
    loop {
        let idle_check = match (draining, limits.idle_timeout) {
            (None, Some(idle)) => activity.idle_since() + idle,
            _ => far,
        };
        let handshake_check = if activity.spoke() || draining.is_some() {
            far
        } else {
            handshake_by
        };
        tokio::select! {
            result = connection.as_mut() => {
                if let Err(error) = result {
                    tracing::debug!(%error, "connection ended with an error");
                }
                return draining.unwrap_or(Closed::Peer);
            }
            () = stopped_now(&mut stop), if draining.is_none() => {
                connection.as_mut().graceful_shutdown();
                let _ = going_away.send(true);
                draining = Some(Closed::Shutdown);
            }
            _ = tokio::time::sleep_until(age_limit), if draining.is_none() => {
                connection.as_mut().graceful_shutdown();
                let _ = going_away.send(true);
                draining = Some(Closed::MaxAge);
            }
            _ = tokio::time::sleep_until(handshake_check) => {
                if !activity.spoke() {
                    return Closed::HandshakeTimeout;
                }
            }
            _ = tokio::time::sleep_until(idle_check) => {
                // The deadline may be stale: a call came and went since.
                if let Some(idle) = limits.idle_timeout
                    && activity.open_streams() == 0
                    && activity.idle_since() + idle <= Instant::now()
                {
                    connection.as_mut().graceful_shutdown();
                    let _ = going_away.send(true);
                    draining = Some(Closed::Idle);
                }
            }
        }
    }
}

/// What a connection's watcher needs to know of it: whether the client has
/// spoken HTTP/2 yet, how many calls are open, and since when none is.
struct Activity {
    spoke: AtomicBool,
    open_streams: AtomicUsize,
    idle_since: Mutex<Instant>,
}

impl Activity {
    fn new(now: Instant) -> Self {
        Activity {
            spoke: AtomicBool::new(false),
            open_streams: AtomicUsize::new(0),
            idle_since: Mutex::new(now),
        }
    }

    fn spoke(&self) -> bool {
        self.spoke.load(Ordering::Relaxed)
    }

    fn open_streams(&self) -> usize {
        self.open_streams.load(Ordering::Acquire)
    }

    fn idle_since(&self) -> Instant {
        *self.idle_since.lock().expect("activity lock poisoned")
    }

    fn stream_opened(self: &Arc<Self>) -> StreamOpen {
        self.open_streams.fetch_add(1, Ordering::AcqRel);
        StreamOpen(self.clone())
    }
}

/// Counts one open call; the last to close starts the idle clock.
struct StreamOpen(Arc<Activity>);

impl Drop for StreamOpen {
    fn drop(&mut self) {
        let mut idle_since = self.0.idle_since.lock().expect("activity lock poisoned");
        if self.0.open_streams.fetch_sub(1, Ordering::AcqRel) == 1 {
            *idle_since = Instant::now();
        }
    }
}

/// The connection's IO, noting when the client's HTTP/2 preface has arrived.
struct SpeaksHttp2<IO> {
    inner: IO,
    read: usize,
    activity: Arc<Activity>,
}

impl<IO: AsyncRead + Unpin> AsyncRead for SpeaksHttp2<IO> {
    fn poll_read(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<io::Result<()>> {
        let before = buf.filled().len();
        let result = Pin::new(&mut self.inner).poll_read(cx, buf);
        if self.read < PREFACE_LEN {
            self.read += buf.filled().len() - before;
            if self.read >= PREFACE_LEN {
                self.activity.spoke.store(true, Ordering::Relaxed);
            }
        }
        result
    }
}

impl<IO: AsyncWrite + Unpin> AsyncWrite for SpeaksHttp2<IO> {
    fn poll_write(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<io::Result<usize>> {
        Pin::new(&mut self.inner).poll_write(cx, buf)
    }

    fn poll_write_vectored(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        bufs: &[io::IoSlice<'_>],
    ) -> Poll<io::Result<usize>> {
        Pin::new(&mut self.inner).poll_write_vectored(cx, bufs)
    }

    fn is_write_vectored(&self) -> bool {
        self.inner.is_write_vectored()
    }

    fn poll_flush(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.inner).poll_flush(cx)
    }

    fn poll_shutdown(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.inner).poll_shutdown(cx)
    }
}

/// The per-connection service: counts open calls, stamps each request with
/// its arrival and the connection's client certificates, and bounds how long
/// its body may take.
#[derive(Clone)]
struct ConnectionService {
    routes: Routes,
    certificates: Option<ClientCertificates>,
    activity: Arc<Activity>,
    request_arrival_timeout: Duration,
    metrics: Arc<Metrics>,
    going_away: ConnectionGoingAway,
}

/// Turns true once the connection has sent its GOAWAY (shutdown, maximum
/// age, idle): a call that would otherwise never end, a subscription, ends
/// then, so that the connection can close and its client reconnects.
#[derive(Clone)]
pub struct ConnectionGoingAway(pub watch::Receiver<bool>);

type ResponseFuture =
    Pin<Box<dyn Future<Output = Result<http::Response<tonic::body::Body>, Infallible>> + Send>>;

impl hyper::service::Service<http::Request<Incoming>> for ConnectionService {
    type Response = http::Response<tonic::body::Body>;
    type Error = Infallible;
    type Future = ResponseFuture;

    fn call(&self, request: http::Request<Incoming>) -> Self::Future {
        let open = self.activity.stream_opened();
        let arrived = Instant::now();
        let (mut parts, body) = request.into_parts();
        parts.extensions.insert(HeadersArrived(arrived));
        parts.extensions.insert(self.going_away.clone());
        if let Some(certificates) = &self.certificates {
            parts.extensions.insert(certificates.clone());
        }
        let method = rpc_metrics::for_path(parts.uri.path());
        let body = ArrivalLimited {
            inner: body,
            limit: self.request_arrival_timeout,
            timer: Box::pin(tokio::time::sleep_until(
                arrived + self.request_arrival_timeout,
            )),
            finished: false,
            // A client-streaming call's body stays open while the call
            // lives: only its start is bounded here.
            first_frame_only: method.client_streams(),
            metrics: self.metrics.clone(),
        };
        self.metrics.record_started(method);
        let request = http::Request::from_parts(parts, body);
        let routes = self.routes.clone();
        let metrics = self.metrics.clone();
        Box::pin(async move {
            let response = routes.oneshot(request).await;
            // The call stays open until its answer's last frame (a stream's
            // trailers), not just its headers: an idle check must not close
            // a connection that serves a long stream.
            response.map(|response| {
                rpc_metrics::observe(response, method, arrived, &metrics).map(|body| {
                    tonic::body::Body::new(HeldOpen {
                        inner: body,
                        _open: open,
                    })
                })
            })
        })
    }
}

/// A request body that must arrive whole within a time limit after its
/// headers; after that it ends with an error status, which tonic answers
/// with, and the call never reaches the gateway's handler.
struct ArrivalLimited {
    inner: Incoming,
    limit: Duration,
    timer: Pin<Box<Sleep>>,
    finished: bool,
    /// Only the first frame must arrive in time (client-streaming calls).
    first_frame_only: bool,
    metrics: Arc<Metrics>,
}

impl Body for ArrivalLimited {
    type Data = Bytes;
    type Error = Box<dyn std::error::Error + Send + Sync>;

    fn poll_frame(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Bytes>, Self::Error>>> {
        let this = &mut *self;
        let polled = Pin::new(&mut this.inner).poll_frame(cx);
        match polled {
            Poll::Ready(None) => {
                this.finished = true;
                Poll::Ready(None)
            }
            Poll::Ready(Some(frame)) => {
                if this.inner.is_end_stream() || this.first_frame_only {
                    this.finished = true;
                }
                Poll::Ready(Some(frame.map_err(Into::into)))
            }
            Poll::Pending if this.finished => Poll::Pending,
            Poll::Pending => match this.timer.as_mut().poll(cx) {
                Poll::Pending => Poll::Pending,
                Poll::Ready(()) => {
                    this.finished = true;
                    this.metrics.record_slow_request();
                    tracing::debug!("a request's body did not arrive in time");
                    Poll::Ready(Some(Err(Box::new(slow_request_status(this.limit)))))
                }
            },
        }
    }

    fn is_end_stream(&self) -> bool {
        self.inner.is_end_stream()
    }

    fn size_hint(&self) -> SizeHint {
        self.inner.size_hint()
    }
}

/// A response body that keeps its call counted as open until it ends.
struct HeldOpen {
    inner: tonic::body::Body,
    _open: StreamOpen,
}

impl Body for HeldOpen {
    type Data = Bytes;
    type Error = tonic::Status;

    fn poll_frame(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Bytes>, Self::Error>>> {
        Pin::new(&mut self.inner).poll_frame(cx)
    }

    fn is_end_stream(&self) -> bool {
        self.inner.is_end_stream()
    }

    fn size_hint(&self) -> SizeHint {
        self.inner.size_hint()
    }
}
