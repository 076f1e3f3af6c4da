//! The admin API's accept loop and connections, driven on hyper directly because
//! `axum::serve` exposes none of these limits:
//!
//! * **`max_connections`** concurrent connections (a semaphore). Beyond it a new connection
//!   is closed at once, without a response: answering 503 would mean holding the descriptor
//!   and a task while the request is read and the answer written — the very resources a
//!   flood is taking — and a 503 written before the request was read is often lost to the
//!   RST the close then sends. A refused client (a probe, a scraper) sees the connection
//!   closed and retries. Counted in `consentgate_limits_total{limit="admin_connections"}`,
//!   logged once per burst.
//! * **`header_timeout`**: a connection must send a complete request head within this time
//!   of its start, and a kept-alive one within this time of the first byte of its next
//!   request; else it is closed (`limit="admin_header_timeout"`). hyper's own
//!   `header_read_timeout` is not used: it restarts whenever a kept-alive connection waits
//!   for its next request, which would cut idle connections at the header timeout.
//! * **`idle_timeout`**: a kept-alive connection waiting for its next request with nothing
//!   sent or received for this long is closed.
//! * The process's descriptor reserve ([`crate::relay::fds`]): accepting pauses while open
//!   descriptors are within it; accept errors back off.
//! * Shutdown: the listener closes, idle connections close at once, requests in flight are
//!   answered (each connection given at most [`DRAIN_LIMIT`]).
//!
//! The timeouts are watched per connection: its socket is wrapped so that reads and writes
//! mark activity, its service marks when a request head has arrived and when its response
//! is ready, and the connection's task sleeps until the deadline of the phase it is in.

use std::future::Future;
use std::pin::Pin;
use std::sync::atomic::{AtomicU64, AtomicU8, Ordering};
use std::sync::Arc;
use std::task::{Context, Poll};
use std::time::Duration;

use hyper::service::Service as _;
use hyper_util::rt::TokioIo;
use hyper_util::service::TowerToHyperService;
use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::{watch, Notify, Semaphore};
use tokio::task::JoinSet;
use tokio::time::Instant;
use tracing::warn;

use crate::relay::fds::{AcceptBackoff, FdBudget};
use crate::telemetry::metrics as m;
use crate::telemetry::RateLimit;

/// How long a connection may take to finish its request in flight at shutdown.
pub const DRAIN_LIMIT: Duration = Duration::from_secs(5);

/// The limits of one admin listener.
#[derive(Debug, Clone, Copy)]
pub struct Limits {
    pub max_connections: usize,
    pub header_timeout: Duration,
    pub idle_timeout: Duration,
}

/// Serves `router` on `listener` under `limits` until `shutdown` resolves.
pub async fn serve(
    listener: TcpListener,
    router: axum::Router,
    limits: Limits,
    shutdown: impl Future<Output = ()> + Send + 'static,
) -> std::io::Result<()> {
    let service = TowerToHyperService::new(router);
    let permits = Arc::new(Semaphore::new(if limits.max_connections == 0 {
        Semaphore::MAX_PERMITS
    } else {
        limits.max_connections
    }));
    let (stop_tx, stop_rx) = watch::channel(false);
    let mut conns = JoinSet::new();
    let (fds, mut backoff) = (FdBudget::global(), AcceptBackoff::new("admin"));
    tokio::pin!(shutdown);
    loop {
        tokio::select! {
            r = async { fds.room("admin").await; listener.accept().await } => match r {
                Ok((stream, peer)) => {
                    backoff.reset();
                    let Ok(permit) = permits.clone().try_acquire_owned() else {
                        metrics::counter!(m::LIMITS_TOTAL, "limit" => "admin_connections").increment(1);
                        static LOG: RateLimit = RateLimit::new(Duration::from_secs(10));
                        if let Some(suppressed) = LOG.allow() {
                            warn!(peer = %peer, max = limits.max_connections, suppressed, "admin connection limit reached; connection closed");
                        }
                        continue;
                    };
                    let fd = fds.track();
                    let (service, stop) = (service.clone(), stop_rx.clone());
                    conns.spawn(async move {
                        connection(stream, service, limits, stop).await;
                        drop((permit, fd));
                    });
                }
                Err(e) => tokio::time::sleep(backoff.failed(&e)).await,
            },
            Some(_) = conns.join_next(), if !conns.is_empty() => {}
            _ = &mut shutdown => break,
        }
    }
    drop(listener);
    let _ = stop_tx.send(true);
    while conns.join_next().await.is_some() {}
    Ok(())
}

/// Where a connection is: waiting for (the rest of) a request head, serving a request, or
/// idle between requests.
const HEAD: u8 = 0;
const BUSY: u8 = 1;
const IDLE: u8 = 2;

/// A connection's phase and when it entered it (or, idle, when it last moved bytes); shared
/// by the socket wrapper, the service and the connection's task.
struct Activity {
    phase: AtomicU8,
    /// Milliseconds since `epoch`.
    since_ms: AtomicU64,
    epoch: Instant,
    /// Woken when the phase changes (a deadline may have moved earlier).
    changed: Notify,
}

impl Activity {
    fn new() -> Activity {
        Activity {
            phase: AtomicU8::new(HEAD),
            since_ms: AtomicU64::new(0),
            epoch: Instant::now(),
            changed: Notify::new(),
        }
    }

    fn now_ms(&self) -> u64 {
        self.epoch.elapsed().as_millis() as u64
    }

    fn enter(&self, phase: u8) {
        self.since_ms.store(self.now_ms(), Ordering::Relaxed);
        self.phase.store(phase, Ordering::Relaxed);
        self.changed.notify_one();
    }

    /// Bytes arrived: on an idle connection, the next request head has started.
    fn read(&self) {
        if self.phase.load(Ordering::Relaxed) == IDLE {
            self.enter(HEAD);
        }
    }

    /// Bytes left: an idle connection is still finishing its last response.
    fn wrote(&self) {
        if self.phase.load(Ordering::Relaxed) == IDLE {
            self.since_ms.store(self.now_ms(), Ordering::Relaxed);
        }
    }

    /// When the current phase runs out, and which limit that is (None while serving).
    fn deadline(&self, limits: &Limits) -> Option<(Instant, &'static str)> {
        let since = self.epoch + Duration::from_millis(self.since_ms.load(Ordering::Relaxed));
        match self.phase.load(Ordering::Relaxed) {
            HEAD => Some((since + limits.header_timeout, "header")),
            IDLE => Some((since + limits.idle_timeout, "idle")),
            _ => None,
        }
    }
}

/// The TCP stream with every read and write reported to the connection's [`Activity`].
struct Watched {
    inner: TcpStream,
    activity: Arc<Activity>,
}

impl AsyncRead for Watched {
    fn poll_read(mut self: Pin<&mut Self>, cx: &mut Context<'_>, buf: &mut ReadBuf<'_>) -> Poll<std::io::Result<()>> {
        let before = buf.filled().len();
        let r = Pin::new(&mut self.inner).poll_read(cx, buf);
        if matches!(r, Poll::Ready(Ok(()))) && buf.filled().len() > before {
            self.activity.read();
        }
        r
    }
}

impl AsyncWrite for Watched {
    fn poll_write(mut self: Pin<&mut Self>, cx: &mut Context<'_>, buf: &[u8]) -> Poll<std::io::Result<usize>> {
        let r = Pin::new(&mut self.inner).poll_write(cx, buf);
        if matches!(r, Poll::Ready(Ok(n)) if n > 0) {
            self.activity.wrote();
        }
        r
    }

    fn poll_write_vectored(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        bufs: &[std::io::IoSlice<'_>],
    ) -> Poll<std::io::Result<usize>> {
        let r = Pin::new(&mut self.inner).poll_write_vectored(cx, bufs);
        if matches!(r, Poll::Ready(Ok(n)) if n > 0) {
            self.activity.wrote();
        }
        r
    }

    fn is_write_vectored(&self) -> bool {
        self.inner.is_write_vectored()
    }

    fn poll_flush(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<std::io::Result<()>> {
        Pin::new(&mut self.inner).poll_flush(cx)
    }

    fn poll_shutdown(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<std::io::Result<()>> {
        Pin::new(&mut self.inner).poll_shutdown(cx)
    }
}

/// Serves one connection until it ends, a timeout closes it, or shutdown drains it.
async fn connection(
    stream: TcpStream,
    service: TowerToHyperService<axum::Router>,
    limits: Limits,
    mut stop: watch::Receiver<bool>,
) {
    let activity = Arc::new(Activity::new());
    let io = TokioIo::new(Watched { inner: stream, activity: activity.clone() });
    let a = activity.clone();
    let svc = hyper::service::service_fn(move |req: hyper::Request<hyper::body::Incoming>| {
        // A request head is complete: no timeout while it is served (the handlers bound
        // their own waits).
        a.enter(BUSY);
        let (a, fut) = (a.clone(), service.call(req));
        async move {
            let r = fut.await;
            a.enter(IDLE);
            r
        }
    });
    let mut builder = hyper::server::conn::http1::Builder::new();
    // Our own header timeout replaces hyper's (see the module docs); no timer is needed.
    builder.keep_alive(true).header_read_timeout(None);
    let conn = builder.serve_connection(io, svc);
    tokio::pin!(conn);
    loop {
        let deadline = activity.deadline(&limits);
        tokio::select! {
            _ = conn.as_mut() => return,
            _ = activity.changed.notified() => {}
            _ = tokio::time::sleep_until(deadline.map_or_else(Instant::now, |d| d.0)), if deadline.is_some() => {
                match activity.deadline(&limits) {
                    Some((at, "header")) if at <= Instant::now() => {
                        metrics::counter!(m::LIMITS_TOTAL, "limit" => "admin_header_timeout").increment(1);
                        return;
                    }
                    Some((at, _)) if at <= Instant::now() => return,
                    _ => {}
                }
            }
            _ = async { let _ = stop.wait_for(|s| *s).await; } => {
                conn.as_mut().graceful_shutdown();
                let _ = tokio::time::timeout(DRAIN_LIMIT, conn.as_mut()).await;
                return;
            }
        }
    }
}
