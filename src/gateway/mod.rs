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
use tokio::sync::{mpsc, watch};
use tokio::task::JoinSet;
use tracing::{info, warn};

pub mod config;
pub mod counters;

use crate::admin::{AdminState, ConfigReloadError, ConfigReport, DrainStatus, Ops, ReloadError, ReloadReply};
use crate::complaints::Complaints;
use crate::consent::store::{ConsentStore, Loaded};
use crate::optout::Keywords;
use crate::policy::EngineCell;
use crate::relay::fds::{AcceptBackoff, FdBudget};
use crate::relay::{TlsClient, TlsServer, Transport};
use crate::session::limits::UnboundRefusal;
use crate::session::{Context, Settings};
use crate::telemetry::metrics as m;
use crate::telemetry::RateLimit;
use crate::time::Clock;
pub use config::{ConfigSource, GatewayConfig, ListenConfig, LoadedConfig};

/// Everything that changes runtime state arrives as one of these (STYLE §9): SIGHUP sends
/// [`Control::Reload`], the snapshot file watch [`Control::ReloadSnapshot`], the config file
/// watch [`Control::ReloadConfig`]. The admin API sits below the gateway and does not know
/// this type: its requests come through its own handle's channels
/// ([`crate::admin::AdminState::reload`], [`crate::admin::Ops`]) into the same loop, handled
/// alike plus a reply.
#[derive(Debug)]
pub enum Control {
    /// SIGHUP: the config (when the gateway has a [`ConfigSource`]), then the snapshot file
    /// and the TLS certificates, each validated and swapped on its own.
    Reload,
    /// Load and validate the configured snapshot file, then swap it in.
    ReloadSnapshot,
    /// Re-read the config and put it in force if valid.
    ReloadConfig,
    /// Stop accepting, drain every session, exit (like the `shutdown` future resolving).
    Shutdown,
}

/// Why the gateway could not start.
#[derive(Debug, thiserror::Error)]
pub enum GatewayError {
    /// A listener could not be bound.
    #[error("{what} {addr}: {source}")]
    Listen {
        what: &'static str,
        addr: SocketAddr,
        #[source]
        source: std::io::Error,
    },
    /// The consent store (journal) could not be opened.
    #[error(transparent)]
    Store(#[from] crate::consent::store::StoreError),
    /// The audit log directory could not be opened.
    #[error(transparent)]
    Audit(#[from] crate::audit::AuditError),
    /// The capture directory could not be opened.
    #[error("capture.dir {dir}: {source}")]
    Capture {
        dir: std::path::PathBuf,
        #[source]
        source: std::io::Error,
    },
    /// The complaint register could not be opened.
    #[error("complaints.db {0}")]
    Complaints(#[from] crate::complaints::RegisterError),
    /// A TLS certificate, key or CA file could not be used.
    #[error("{what}: {source}")]
    Tls {
        what: &'static str,
        #[source]
        source: crate::relay::tls::TlsError,
    },
}

impl From<GatewayError> for std::io::Error {
    fn from(e: GatewayError) -> std::io::Error {
        match e {
            GatewayError::Listen { source, what, addr } => {
                std::io::Error::new(source.kind(), format!("{what} {addr}: {source}"))
            }
            other => std::io::Error::other(other.to_string()),
        }
    }
}

/// A bound, not yet serving gateway.
pub struct Gateway {
    listener: TcpListener,
    /// `listen.smpp_tls` and the certificate it presents.
    tls_listener: Option<(TcpListener, Arc<TlsServer>)>,
    /// `listen.cmpp`: the SP-facing CMPP listener.
    cmpp_listener: Option<TcpListener>,
    admin: TcpListener,
    prometheus: metrics_exporter_prometheus::PrometheusHandle,
    config: Arc<GatewayConfig>,
    sessions: Arc<Context>,
    control_tx: mpsc::Sender<Control>,
    control_rx: mpsc::Receiver<Control>,
    complaints: Option<Arc<Complaints>>,
    /// Where a reload reads the config from, and the running config's description.
    source: Option<ConfigSource>,
    running: Running,
    /// When the restored `frequency.state` was saved (Unix s): the caps exchange skips what
    /// it holds.
    caps_restored_at: Option<i64>,
}

/// The running config as the reloads compare it.
struct Running {
    sha256: String,
    keys: std::collections::BTreeMap<String, String>,
    summary: Arc<arc_swap::ArcSwap<serde_json::Value>>,
    /// The upstream SMSC in force, shared with the admin API's `/readyz`.
    upstream: Arc<arc_swap::ArcSwap<crate::relay::UpstreamConfig>>,
}

impl Gateway {
    /// Opens the consent store per `[consent]` and binds the SMPP listener (`listen.smpp`)
    /// and the admin listener (`listen.admin`); port 0 picks a free port. Opening the store
    /// replays the journal and loads the snapshot (up to about a second at 100 M records)
    /// on this task: it happens once, before anything is served.
    pub async fn bind(config: GatewayConfig) -> Result<Gateway, GatewayError> {
        let store = ConsentStore::open(&config.consent)?;
        Gateway::bind_with_store(config, Arc::new(store)).await
    }

    /// Binds with a consent store the caller built (tests, demo).
    pub async fn bind_with_store(config: GatewayConfig, store: Arc<ConsentStore>) -> Result<Gateway, GatewayError> {
        // Before any session resolves a metric handle.
        let prometheus = m::install();
        let listener = TcpListener::bind(config.listen.smpp).await.map_err(|source| GatewayError::Listen {
            what: "listen.smpp",
            addr: config.listen.smpp,
            source,
        })?;
        let admin = TcpListener::bind(config.listen.admin).await.map_err(|source| GatewayError::Listen {
            what: "listen.admin",
            addr: config.listen.admin,
            source,
        })?;
        let tls_listener = match (config.listen.smpp_tls, &config.listen.tls) {
            (Some(addr), Some(tls)) => {
                let server =
                    TlsServer::new(tls.clone()).map_err(|source| GatewayError::Tls { what: "listen.tls", source })?;
                let l = TcpListener::bind(addr).await.map_err(|source| GatewayError::Listen {
                    what: "listen.smpp_tls",
                    addr,
                    source,
                })?;
                Some((l, Arc::new(server)))
            }
            _ => None,
        };
        let cmpp_listener = match config.listen.cmpp {
            Some(addr) => Some(TcpListener::bind(addr).await.map_err(|source| GatewayError::Listen {
                what: "listen.cmpp",
                addr,
                source,
            })?),
            None => None,
        };
        let upstream_tls = match &config.upstream.tls {
            Some(t) => Some(Arc::new(
                TlsClient::new(t.clone()).map_err(|source| GatewayError::Tls { what: "upstream.tls", source })?,
            )),
            None => None,
        };
        // The handshake counters of the legs with TLS exist from the start, at 0 (an alert's
        // rate() sees the first failure), and so do the certificate expiry gauges.
        let tls_legs = [tls_listener.is_some().then_some("esme"), upstream_tls.is_some().then_some("smsc")];
        for leg in tls_legs.into_iter().flatten() {
            for result in ["ok", "failed"] {
                metrics::counter!(m::TLS_HANDSHAKES_TOTAL, "leg" => leg, "result" => result).increment(0);
            }
        }
        tls_expiry_gauges(tls_listener.as_ref().map(|(_, s)| &**s), upstream_tls.as_deref());
        let (control_tx, control_rx) = mpsc::channel(16);
        let capture = match &config.capture {
            Some(c) => {
                let cap = crate::capture::Capture::start(c.clone())
                    .map_err(|source| GatewayError::Capture { dir: c.dir.clone(), source })?;
                info!(dir = %c.dir.display(), accounts = %c.accounts.join(","), "recording sessions to pcapng");
                Some(Arc::new(cap))
            }
            None => None,
        };
        let audit = crate::audit::Audit::open(&config.audit)?;
        let engine = config.engine();
        // The day's cap counts, before any session decides (and before /readyz says ready).
        let restored_at =
            config.consent.journal.as_ref().and_then(|j| counters::restore(&engine, &counters::state_path(j)));
        let engine = Arc::new(EngineCell::new(engine));
        // The register sets its suspensions on the engine before any session decides.
        let complaints = match &config.complaints {
            Some(c) => Some(Arc::new(Complaints::open(
                c.clone(),
                store.clone(),
                engine.clone(),
                config.audit.dir.clone(),
                Clock::system(),
            )?)),
            None => None,
        };
        let sessions = Arc::new(Context {
            settings: arc_swap::ArcSwap::from_pointee(settings_of(&config)),
            engine,
            store,
            capture,
            audit,
            clock: Clock::system(),
            next_session: std::sync::atomic::AtomicU64::new(1),
            bind_limiter: crate::session::limits::BindLimiter::new(config.session.limits),
            unbound: crate::session::limits::UnboundLimiter::new(&config.session.limits),
            upstream_tls,
        });
        let upstream = Arc::new(arc_swap::ArcSwap::from_pointee(config.upstream.clone()));
        Ok(Gateway {
            listener,
            tls_listener,
            cmpp_listener,
            admin,
            prometheus,
            config: Arc::new(config),
            sessions,
            control_tx,
            control_rx,
            complaints,
            source: None,
            caps_restored_at: restored_at,
            running: Running {
                sha256: String::new(),
                keys: Default::default(),
                summary: Arc::new(arc_swap::ArcSwap::from_pointee(serde_json::json!({ "source": null }))),
                upstream,
            },
        })
    }

    /// Makes the config reloadable: `loaded` is what the gateway was bound with (its keys and
    /// SHA-256 are what the first reload compares against), `source` reads it again.
    pub fn with_config_source(mut self, loaded: &LoadedConfig, source: ConfigSource) -> Gateway {
        self.running.sha256 = loaded.sha256.clone();
        self.running.keys = loaded.keys.clone();
        self.running.summary.store(Arc::new(loaded.summary.clone()));
        self.source = Some(source);
        self
    }

    /// The consent store the sessions use.
    pub fn store(&self) -> Arc<ConsentStore> {
        self.sessions.store.clone()
    }

    /// A handle that sends [`Control`] messages to the running gateway.
    pub fn control(&self) -> mpsc::Sender<Control> {
        self.control_tx.clone()
    }

    /// The admin HTTP address (metrics, health, admin API).
    pub fn admin_addr(&self) -> SocketAddr {
        self.admin.local_addr().expect("bound listener has an address")
    }

    /// The address ESMEs connect to.
    pub fn local_addr(&self) -> SocketAddr {
        self.listener.local_addr().expect("bound listener has an address")
    }

    /// The CMPP listener's address (`listen.cmpp`), if configured.
    pub fn local_cmpp_addr(&self) -> Option<SocketAddr> {
        self.cmpp_listener.as_ref().map(|l| l.local_addr().expect("bound listener has an address"))
    }

    /// The TLS listener's address (`listen.smpp_tls`), if configured.
    pub fn local_tls_addr(&self) -> Option<SocketAddr> {
        self.tls_listener.as_ref().map(|(l, _)| l.local_addr().expect("bound listener has an address"))
    }

    /// Serves until `shutdown` resolves, then drains every session.
    pub async fn serve(self, shutdown: impl Future<Output = ()>) -> std::io::Result<()> {
        let Gateway {
            listener,
            tls_listener,
            cmpp_listener,
            admin,
            prometheus,
            config,
            sessions: shared,
            control_tx,
            mut control_rx,
            complaints,
            source,
            mut running,
            caps_restored_at,
        } = self;
        let (tls_listener, tls_server) = match tls_listener {
            Some((l, s)) => (Some(l), Some(s)),
            None => (None, None),
        };
        let watcher = config
            .consent
            .snapshot
            .clone()
            .filter(|_| config.consent.watch)
            .map(|path| tokio::spawn(watch_snapshot(path, control_tx.clone())));
        let upkeep = tokio::spawn(m::upkeep(prometheus.clone()));
        let prober = tokio::spawn(probe_upstream_loop(shared.clone()));
        let state_file = config.consent.journal.as_deref().map(counters::state_path);
        let checkpoints = state_file.clone().map(|p| tokio::spawn(counters::checkpoints(shared.engine.clone(), p)));
        // Sessions are told to drain through the stop channel of their epoch: a drain sends
        // on it, a cancelled drain starts a new epoch for the sessions bound after it, and
        // the shutdown sends on the current one (older epochs drained already).
        let (mut stop_tx, mut stop_rx) = watch::channel(false);
        // The admin API stops at shutdown only (it stays up while draining).
        let (admin_stop_tx, mut admin_stop) = watch::channel(false);
        // Replication stops after the sessions (their last opt-outs still get published) and
        // before the store closes.
        let (repl_stop_tx, repl_stop_rx) = watch::channel(false);
        let replication = config.replication.clone().map(|r| {
            crate::replication::Replication::start(
                r,
                shared.store.clone(),
                shared.engine.clone(),
                caps_restored_at,
                repl_stop_rx,
            )
        });
        let admin_addr = admin.local_addr()?;
        // The admin API's narrow handle: what its endpoints read, and a way to ask for a reload.
        let (reload_tx, mut reload_rx) = mpsc::channel::<ReloadReply>(4);
        let (ops_tx, mut ops_rx) = mpsc::channel::<crate::admin::Request>(4);
        let live = Arc::new(AtomicUsize::new(0));
        let ops = Ops {
            requests: ops_tx,
            config: running.summary.clone(),
            draining: Arc::new(std::sync::atomic::AtomicBool::new(false)),
            sessions: live.clone(),
        };
        let admin_state = AdminState {
            store: shared.store.clone(),
            engine: shared.engine.clone(),
            admin: config.admin.clone(),
            snapshot_configured: config.consent.snapshot.clone(),
            upstream: running.upstream.clone(),
            capture: shared.capture.clone(),
            complaints,
            replication: replication.as_ref().map(|r| r.status.clone()),
            reload: reload_tx,
            ops: ops.clone(),
            prometheus,
        };
        let admin_task = tokio::spawn(async move {
            let stop = async move {
                let _ = admin_stop.wait_for(|s| *s).await;
            };
            if let Err(e) = crate::admin::serve(admin, admin_state, stop).await {
                tracing::error!(error = %e, "admin listener failed");
            }
        });
        if !running.sha256.is_empty() {
            metrics::gauge!(m::CONFIG_INFO, "sha256" => running.sha256.clone()).set(1.0);
        }
        metrics::gauge!(m::CONFIG_LAST_RELOAD_SUCCESS_TIMESTAMP).set(crate::time::unix_us() as f64 / 1e6);
        let smpp_tls = tls_listener.as_ref().and_then(|l| l.local_addr().ok());
        let cmpp = cmpp_listener.as_ref().and_then(|l| l.local_addr().ok());
        info!(smpp = %listener.local_addr()?, cmpp = %cmpp.map_or_else(|| "off".to_string(), |a| a.to_string()), smpp_tls = %smpp_tls.map_or_else(|| "off".to_string(), |a| a.to_string()), admin = %admin_addr, upstream = %config.upstream.address, upstream_tls = config.upstream.tls.is_some(), accounts = shared.engine().account_count(), "listening");
        let mut sessions = JoinSet::new();
        let (fds, mut backoff) = (FdBudget::global(), AcceptBackoff::new("smpp"));
        tokio::pin!(shutdown);
        loop {
            tokio::select! {
                // Paused while descriptors are within the reserve (relay::fds).
                r = async { fds.room("smpp").await; accept_either(&listener, tls_listener.as_ref()).await } => match r {
                    Ok((stream, peer, tls)) => {
                        backoff.reset();
                        if ops.draining() {
                            metrics::counter!(m::LIMITS_TOTAL, "limit" => "draining").increment(1);
                            drop(stream);
                            continue;
                        }
                        let settings = shared.settings();
                        let max_sessions = settings.session.max_sessions;
                        if live.load(Ordering::Relaxed) >= max_sessions {
                            metrics::counter!(m::LIMITS_TOTAL, "limit" => "sessions").increment(1);
                            static LIMIT: RateLimit = RateLimit::new(Duration::from_secs(10));
                            if let Some(suppressed) = LIMIT.allow() {
                                warn!(peer = %peer, max = max_sessions, suppressed, "session limit reached; connection refused");
                            }
                            drop(stream);
                            continue;
                        }
                        let unbound = match shared.unbound.admit(peer.ip()) {
                            Ok(g) => g,
                            Err(cap) => {
                                unbound_refused(cap, peer, &settings.session.limits);
                                continue;
                            }
                        };
                        let (sh, rx, live) = (shared.clone(), stop_rx.clone(), live.clone());
                        let tls_server = if tls { tls_server.clone() } else { None };
                        live.fetch_add(1, Ordering::Relaxed);
                        let fd = fds.track();
                        sessions.spawn(async move {
                            let transport = match tls_server {
                                None => Some(Transport::tcp(stream)),
                                Some(t) => tls_accept(&t, stream, peer, sh.settings().session.bind_timeout).await,
                            };
                            if let Some(transport) = transport {
                                crate::session::serve(transport, peer, sh, rx, unbound).await;
                            }
                            live.fetch_sub(1, Ordering::Relaxed);
                            drop(fd);
                        });
                    }
                    // Transient accept errors (EMFILE, ECONNABORTED): back off, 100 ms doubling to 1 s.
                    Err(e) => tokio::time::sleep(backoff.failed(&e)).await,
                },
                r = async { fds.room("cmpp").await; cmpp_listener.as_ref().expect("guarded").accept().await }, if cmpp_listener.is_some() => match r {
                    Ok((stream, peer)) => {
                        if ops.draining() || live.load(Ordering::Relaxed) >= shared.settings().session.max_sessions {
                            let limit = if ops.draining() { "draining" } else { "sessions" };
                            metrics::counter!(m::LIMITS_TOTAL, "limit" => limit).increment(1);
                            drop(stream);
                            continue;
                        }
                        let (sh, rx, live) = (shared.clone(), stop_rx.clone(), live.clone());
                        live.fetch_add(1, Ordering::Relaxed);
                        let fd = fds.track();
                        sessions.spawn(async move {
                            crate::session::cmpp::serve(stream, peer, sh, rx).await;
                            live.fetch_sub(1, Ordering::Relaxed);
                            drop(fd);
                        });
                    }
                    Err(e) => tokio::time::sleep(backoff.failed(&e)).await,
                },
                Some(_) = sessions.join_next(), if !sessions.is_empty() => {}
                Some(c) = control_rx.recv() => match c {
                    Control::Reload => {
                        if source.is_some() {
                            let _ = reload_config(source.as_ref(), &mut running, &shared).await;
                        }
                        // A gateway run without a snapshot has none to reload: not a refusal.
                        if config.consent.snapshot.is_some() {
                            let _ = reload(&shared).await;
                        }
                        reload_tls(tls_server.clone(), shared.upstream_tls.clone()).await;
                    }
                    Control::ReloadSnapshot => {
                        let _ = reload(&shared).await;
                    }
                    Control::ReloadConfig => {
                        let _ = reload_config(source.as_ref(), &mut running, &shared).await;
                    }
                    Control::Shutdown => break,
                },
                Some(reply) = reload_rx.recv() => {
                    let _ = reply.send(reload(&shared).await);
                }
                Some(req) = ops_rx.recv() => match req {
                    crate::admin::Request::ReloadConfig(reply) => {
                        let r = reload_config(source.as_ref(), &mut running, &shared).await;
                        if r.is_ok() {
                            reload_tls(tls_server.clone(), shared.upstream_tls.clone()).await;
                        }
                        let _ = reply.send(r);
                    }
                    crate::admin::Request::Drain { cancel, reply } => {
                        let was = ops.draining.swap(!cancel, Ordering::Relaxed);
                        match (was, cancel) {
                            (false, false) => {
                                info!(sessions = live.load(Ordering::Relaxed), "draining: binds refused, every session unbinding");
                                let _ = stop_tx.send(true);
                            }
                            (true, true) => {
                                info!("drain cancelled: taking binds again");
                                (stop_tx, stop_rx) = watch::channel(false);
                            }
                            _ => {}
                        }
                        metrics::gauge!(m::DRAINING).set(if cancel { 0.0 } else { 1.0 });
                        let _ = reply.send(DrainStatus { draining: !cancel, sessions: live.load(Ordering::Relaxed) });
                    }
                },
                _ = &mut shutdown => break,
            }
        }
        drop(listener);
        drop(tls_listener);
        drop(cmpp_listener);
        if let Some(w) = watcher {
            w.abort();
        }
        if let Some(c) = checkpoints {
            c.abort();
        }
        upkeep.abort();
        prober.abort();
        let n = sessions.len();
        let grace = shared.settings().session.shutdown_grace;
        info!(sessions = n, grace_s = grace.as_secs_f64(), "draining");
        let _ = stop_tx.send(true);
        // Sessions bound their own drain by shutdown_grace; allow the unbind exchange on top.
        let limit = grace + Duration::from_secs(3);
        let drained = tokio::time::timeout(limit, async { while sessions.join_next().await.is_some() {} }).await;
        if drained.is_err() {
            warn!(remaining = sessions.len(), "drain cut short; aborting remaining sessions");
            sessions.abort_all();
        }
        // The sessions are gone: the counts are final.
        if let Some(p) = state_file {
            let engine = shared.engine();
            let _ = tokio::task::spawn_blocking(move || counters::save(&engine, &p)).await;
        }
        // The admin API stopped with the sessions; its last statements (a POST in flight) must
        // be journalled before the publisher makes its last pass.
        let _ = admin_stop_tx.send(true);
        let _ = tokio::time::timeout(Duration::from_secs(2), admin_task).await;
        if let Some(r) = replication {
            let _ = repl_stop_tx.send(true);
            r.join(Duration::from_secs(3)).await;
        }
        let store = shared.store.clone();
        let _ = tokio::task::spawn_blocking(move || store.close()).await;
        if let Some(c) = shared.capture.clone() {
            let _ = tokio::task::spawn_blocking(move || c.shutdown()).await;
        }
        let audit = shared.audit.clone();
        let _ = tokio::task::spawn_blocking(move || audit.close()).await;
        info!("stopped");
        Ok(())
    }
}

/// The settings sessions take from a config (see [`Settings`]).
fn settings_of(config: &GatewayConfig) -> Settings {
    Settings {
        session: config.session.clone(),
        upstream: config.upstream.clone(),
        keywords: Arc::new(Keywords::new(&config.optout_keywords)),
        opt_in: crate::session::OptIn {
            default: Arc::new(Keywords::new(&config.opt_in_keywords)),
            accounts: config
                .account_opt_in_keywords
                .iter()
                .map(|(id, words)| (id.clone(), Arc::new(Keywords::new(words))))
                .collect(),
        },
    }
}

/// A config reload: read and validate everything through `source` (off the async workers),
/// change nothing if anything is wrong, else build the new engine carrying the running
/// one's state, put the settings and then the engine in force, and report what changed and
/// which changes wait for a restart. Counted and logged either way.
async fn reload_config(
    source: Option<&ConfigSource>,
    running: &mut Running,
    shared: &Arc<Context>,
) -> Result<ConfigReport, ConfigReloadError> {
    let Some(source) = source.cloned() else { return Err(ConfigReloadError::NoSource) };
    let old = shared.engine();
    let built = tokio::task::spawn_blocking(move || {
        let loaded = source()?;
        let (engine, carried) = old.reloaded(loaded.config.policy.clone(), loaded.config.accounts.clone());
        Ok::<_, Vec<String>>((loaded, engine, carried))
    })
    .await;
    let (loaded, engine, carried) = match built {
        Ok(Ok(b)) => b,
        Ok(Err(problems)) => {
            metrics::counter!(m::CONFIG_RELOADS_TOTAL, "result" => "invalid").increment(1);
            for p in &problems {
                warn!(problem = %p, "config reload refused");
            }
            warn!(problems = problems.len(), "config reload refused; the running config stays");
            return Err(ConfigReloadError::Invalid(problems));
        }
        Err(e) => {
            metrics::counter!(m::CONFIG_RELOADS_TOTAL, "result" => "error").increment(1);
            tracing::error!(error = %e, "config reload failed");
            return Err(ConfigReloadError::Aborted(e.to_string()));
        }
    };
    let report = report_of(running, &loaded, &carried);
    // Settings first, the engine last: a session that sees the new generation finds both.
    let mut settings = settings_of(&loaded.config);
    // The TLS client of the SMSC leg is built at start (`upstream.tls` needs a restart).
    settings.upstream.tls = shared.settings().upstream.tls.clone();
    running.upstream.store(Arc::new(settings.upstream.clone()));
    shared.settings.store(Arc::new(settings));
    shared.bind_limiter.set_config(loaded.config.session.limits);
    shared.unbound.set_limits(&loaded.config.session.limits);
    let _old = shared.engine.swap(engine);
    if running.sha256 != loaded.sha256 {
        if !running.sha256.is_empty() {
            metrics::gauge!(m::CONFIG_INFO, "sha256" => running.sha256.clone()).set(0.0);
        }
        metrics::gauge!(m::CONFIG_INFO, "sha256" => loaded.sha256.clone()).set(1.0);
    }
    running.sha256 = loaded.sha256.clone();
    // Keys waiting for a restart keep their running value here, so every later reload (and
    // GET /v1/config) still reports them until the restart.
    let mut keys = loaded.keys;
    for k in &report.restart_required {
        match running.keys.get(k) {
            Some(v) => keys.insert(k.clone(), v.clone()),
            None => keys.remove(k),
        };
    }
    running.keys = keys;
    let pending: Vec<&String> = report.restart_required.iter().collect();
    metrics::gauge!(m::CONFIG_RESTART_REQUIRED).set(pending.len() as f64);
    let mut summary = loaded.summary;
    if let Some(o) = summary.as_object_mut() {
        o.insert("restart_required".into(), serde_json::json!(pending));
    }
    running.summary.store(Arc::new(summary));
    metrics::counter!(m::CONFIG_RELOADS_TOTAL, "result" => "ok").increment(1);
    metrics::gauge!(m::CONFIG_LAST_RELOAD_SUCCESS_TIMESTAMP).set(crate::time::unix_us() as f64 / 1e6);
    for w in &report.warnings {
        warn!(warning = %w, "config");
    }
    info!(
        sha256 = %report.sha256,
        applied = %report.applied.join(", "),
        restart_required = %report.restart_required.join(", "),
        accounts_added = %report.accounts_added.join(", "),
        accounts_removed = %report.accounts_removed.join(", "),
        accounts_changed = %report.accounts_changed.join(", "),
        notes = %report.notes.join(", "),
        "config reloaded"
    );
    if !report.restart_required.is_empty() {
        warn!(keys = %report.restart_required.join(", "), "config reload: these changes need a restart to take effect");
    }
    Ok(report)
}

/// What changed between the running config and `new`.
fn report_of(running: &Running, new: &LoadedConfig, carried: &crate::policy::Carried) -> ConfigReport {
    let (old, next) = (&running.keys, &new.keys);
    let mut changed: Vec<&String> = next.iter().filter(|(k, v)| old.get(*k) != Some(v)).map(|(k, _)| k).collect();
    changed.extend(old.keys().filter(|k| !next.contains_key(*k)));
    changed.sort();
    changed.dedup();
    let mut r = ConfigReport { sha256: new.sha256.clone(), changed: !changed.is_empty(), ..Default::default() };
    for k in changed {
        if config::needs_restart(k) {
            r.restart_required.push(k.clone());
        } else {
            r.applied.push(k.clone());
        }
    }
    let accounts = |m: &std::collections::BTreeMap<String, String>| -> std::collections::BTreeSet<String> {
        m.keys()
            .filter_map(|k| k.strip_prefix("account."))
            .filter_map(|k| k.split('.').next())
            .map(str::to_owned)
            .collect()
    };
    let (before, after) = (accounts(old), accounts(next));
    r.accounts_added = after.difference(&before).cloned().collect();
    r.accounts_removed = before.difference(&after).cloned().collect();
    r.accounts_changed = after
        .intersection(&before)
        .filter(|a| {
            let p = format!("account.{a}.");
            r.applied.iter().any(|k| k.starts_with(&p))
        })
        .cloned()
        .collect();
    for t in &carried.frequency_reset {
        r.notes.push(format!("frequency caps: the {t} table changed size and starts empty"));
    }
    r.warnings = new.warnings.clone();
    r
}

/// Loads and validates the configured snapshot off the async workers, swaps it in, and counts
/// the result. A refused file leaves the previous snapshot serving.
async fn reload(shared: &Arc<Context>) -> Result<Arc<Loaded>, ReloadError> {
    let store = shared.store.clone();
    let r = match tokio::task::spawn_blocking(move || store.reload()).await {
        Ok(Ok(l)) => Ok(l),
        Ok(Err(e)) => Err(ReloadError::Snapshot(e)),
        Err(e) => Err(ReloadError::Aborted(e.to_string())),
    };
    match &r {
        // The store logs the load itself.
        Ok(_) => metrics::counter!(m::SNAPSHOT_RELOADS_TOTAL, "result" => "ok").increment(1),
        Err(e) => {
            metrics::counter!(m::SNAPSHOT_RELOADS_TOTAL, "result" => "refused").increment(1);
            warn!(error = %e, "snapshot reload refused; the previous snapshot keeps serving");
        }
    }
    r
}

/// A connection closed at once at `limits.unbound_per_ip` / `unbound_total`: counted, and
/// logged once per burst.
fn unbound_refused(cap: UnboundRefusal, peer: SocketAddr, limits: &crate::session::config::LimitsConfig) {
    metrics::counter!(m::LIMITS_TOTAL, "limit" => cap.label()).increment(1);
    static LIMIT: RateLimit = RateLimit::new(Duration::from_secs(10));
    if let Some(suppressed) = LIMIT.allow() {
        warn!(peer = %peer, limit = cap.label(), per_ip = limits.unbound_per_ip, total = limits.unbound_total, suppressed, "too many connections not bound yet; connection closed");
    }
}

/// The next connection on the plain or the TLS listener; `true` = TLS.
async fn accept_either(
    plain: &TcpListener,
    tls: Option<&TcpListener>,
) -> std::io::Result<(tokio::net::TcpStream, SocketAddr, bool)> {
    match tls {
        None => plain.accept().await.map(|(s, p)| (s, p, false)),
        Some(t) => tokio::select! {
            r = plain.accept() => r.map(|(s, p)| (s, p, false)),
            r = t.accept() => r.map(|(s, p)| (s, p, true)),
        },
    }
}

/// The TLS handshake of an ESME connection (within `limit`, the bind timeout), counted in
/// `consentgate_tls_handshakes_total{leg="esme"}`; a failure is logged once per burst.
async fn tls_accept(
    server: &TlsServer,
    stream: tokio::net::TcpStream,
    peer: SocketAddr,
    limit: Duration,
) -> Option<Transport> {
    match server.accept(stream, limit).await {
        Ok(s) => {
            metrics::counter!(m::TLS_HANDSHAKES_TOTAL, "leg" => "esme", "result" => "ok").increment(1);
            Some(Transport::Tls(Box::new(s)))
        }
        Err(e) => {
            metrics::counter!(m::TLS_HANDSHAKES_TOTAL, "leg" => "esme", "result" => "failed").increment(1);
            static LIMIT: RateLimit = RateLimit::new(Duration::from_secs(10));
            if let Some(suppressed) = LIMIT.allow() {
                warn!(peer = %peer, error = %e, suppressed, "TLS handshake failed; connection closed");
            }
            None
        }
    }
}

/// SIGHUP: re-reads the TLS certificates, keys and CAs of both legs (off the async workers).
/// A file that does not load is refused and the previous configuration keeps serving.
async fn reload_tls(server: Option<Arc<TlsServer>>, client: Option<Arc<TlsClient>>) {
    let (s, c) = (server.clone(), client.clone());
    let r = tokio::task::spawn_blocking(move || {
        [("listen.tls", s.map(|s| s.reload())), ("upstream.tls", c.map(|c| c.reload()))]
    })
    .await;
    tls_expiry_gauges(server.as_deref(), client.as_deref());
    let Ok(results) = r else { return };
    for (what, r) in results {
        match r {
            None => {}
            Some(Ok(())) => {
                metrics::counter!(m::TLS_RELOADS_TOTAL, "result" => "ok").increment(1);
                info!(what, "TLS certificates reloaded");
            }
            Some(Err(e)) => {
                metrics::counter!(m::TLS_RELOADS_TOTAL, "result" => "refused").increment(1);
                warn!(what, error = %e, "TLS reload refused; the previous certificates keep serving");
            }
        }
    }
}

/// `consentgate_tls_certificate_expiry_timestamp_seconds{leg}` from the certificates in
/// force: at start and after every TLS reload (a refused one leaves them as they were).
fn tls_expiry_gauges(server: Option<&TlsServer>, client: Option<&TlsClient>) {
    for (leg, not_after) in
        [("esme", server.and_then(TlsServer::not_after)), ("smsc", client.and_then(TlsClient::not_after))]
    {
        if let Some(t) = not_after {
            metrics::gauge!(m::TLS_CERTIFICATE_EXPIRY, "leg" => leg).set(t as f64);
        }
    }
}

/// Keeps `consentgate_upstream_reachable` current without anyone calling `/readyz` (systemd
/// deployments have no readiness probe): a TCP connect to the SMSC every
/// [`m::UPSTREAM_PROBE_EVERY`].
async fn probe_upstream_loop(ctx: Arc<Context>) {
    let mut t = tokio::time::interval(m::UPSTREAM_PROBE_EVERY);
    loop {
        t.tick().await;
        let ok = crate::relay::upstream::probe(&ctx.settings().upstream).await.is_ok();
        metrics::gauge!(m::UPSTREAM_REACHABLE).set(if ok { 1.0 } else { 0.0 });
    }
}

/// `consent.watch`: polls the snapshot file's modification time and size every 2 s and asks
/// for a reload when they change (polling keeps the dependency tree lean and works on every
/// filesystem, including the ConfigMap/volume mounts of Kubernetes). The `stat` runs on the
/// blocking pool, so a hung network mount cannot stall a runtime worker.
async fn watch_snapshot(path: std::path::PathBuf, control: mpsc::Sender<Control>) {
    async fn stamp(p: &std::path::Path) -> Option<(Option<std::time::SystemTime>, u64)> {
        let p = p.to_owned();
        tokio::task::spawn_blocking(move || std::fs::metadata(p).ok().map(|m| (m.modified().ok(), m.len())))
            .await
            .ok()
            .flatten()
    }
    let mut last = stamp(&path).await;
    let mut t = tokio::time::interval(Duration::from_secs(2));
    loop {
        t.tick().await;
        let now = stamp(&path).await;
        if now.is_some() && now != last {
            last = now;
            if control.send(Control::ReloadSnapshot).await.is_err() {
                return;
            }
        }
    }
}

/// Binds and serves `config` until `shutdown` resolves (STYLE §1).
pub async fn run(config: GatewayConfig, shutdown: impl Future<Output = ()>) -> std::io::Result<()> {
    Gateway::bind(config).await?.serve(shutdown).await
}
