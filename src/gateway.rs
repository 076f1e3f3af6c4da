//! The gateway: the ESME-facing listener, one [`session`](crate::session) task per
//! connection, and the shutdown lifecycle (STYLE §8): stop accepting → every session drains
//! (new requests refused, in-flight answered) and unbinds both legs → wait for them within
//! the grace period → log if cut short.

use std::future::Future;
use std::net::SocketAddr;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::Duration;

use tokio::net::TcpListener;
use tokio::sync::watch;
use tokio::task::JoinSet;
use tracing::{info, warn};

use crate::config::Config;

/// A bound, not yet serving gateway.
pub struct Gateway {
    listener: TcpListener,
    config: Arc<Config>,
}

impl Gateway {
    /// Binds the SMPP listener (`listen.smpp`; port 0 picks a free port).
    pub async fn bind(config: Config) -> std::io::Result<Gateway> {
        let listener = TcpListener::bind(config.listen.smpp).await?;
        Ok(Gateway { listener, config: Arc::new(config) })
    }

    /// The address ESMEs connect to.
    pub fn local_addr(&self) -> SocketAddr {
        self.listener.local_addr().expect("bound listener has an address")
    }

    /// Serves until `shutdown` resolves, then drains every session.
    pub async fn serve(self, shutdown: impl Future<Output = ()>) -> std::io::Result<()> {
        let Gateway { listener, config } = self;
        info!(smpp = %listener.local_addr()?, upstream = %config.upstream.address, accounts = config.accounts.len(), "listening");
        let (stop_tx, stop_rx) = watch::channel(false);
        let mut sessions = JoinSet::new();
        let live = Arc::new(AtomicUsize::new(0));
        tokio::pin!(shutdown);
        loop {
            tokio::select! {
                r = listener.accept() => match r {
                    Ok((stream, peer)) => {
                        if live.load(Ordering::Relaxed) >= config.session.max_sessions {
                            warn!(peer = %peer, max = config.session.max_sessions, "session limit reached; connection refused");
                            drop(stream);
                            continue;
                        }
                        let (cfg, rx, live) = (config.clone(), stop_rx.clone(), live.clone());
                        live.fetch_add(1, Ordering::Relaxed);
                        sessions.spawn(async move {
                            crate::session::serve(stream, peer, cfg, rx).await;
                            live.fetch_sub(1, Ordering::Relaxed);
                        });
                    }
                    // Transient accept errors (EMFILE, ECONNABORTED): back off briefly.
                    Err(e) => {
                        warn!(error = %e, "accept failed");
                        tokio::time::sleep(Duration::from_millis(50)).await;
                    }
                },
                Some(_) = sessions.join_next(), if !sessions.is_empty() => {}
                _ = &mut shutdown => break,
            }
        }
        drop(listener);
        let n = sessions.len();
        info!(sessions = n, grace_s = config.session.shutdown_grace.as_secs_f64(), "draining");
        let _ = stop_tx.send(true);
        // Sessions bound their own drain by shutdown_grace; allow the unbind exchange on top.
        let limit = config.session.shutdown_grace + Duration::from_secs(3);
        let drained = tokio::time::timeout(limit, async { while sessions.join_next().await.is_some() {} }).await;
        if drained.is_err() {
            warn!(remaining = sessions.len(), "drain cut short; aborting remaining sessions");
            sessions.abort_all();
        }
        info!("stopped");
        Ok(())
    }
}

/// Binds and serves `config` until `shutdown` resolves (STYLE §1).
pub async fn run(config: Config, shutdown: impl Future<Output = ()>) -> std::io::Result<()> {
    Gateway::bind(config).await?.serve(shutdown).await
}
