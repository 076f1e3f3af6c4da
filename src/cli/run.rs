//! `run` and `check-config`: the gateway itself.

use std::path::{Path, PathBuf};
use std::process::ExitCode;
use std::sync::{Arc, Mutex};
use std::time::{Duration, SystemTime};

use consentgate::config::{self, Diagnostic};
use consentgate::gateway::{Control, LoadedConfig};

use super::{shutdown_signal, EX_USAGE};

/// How often `--watch-config` looks at the files, and how long they must stay unchanged
/// before the reload (an editor or a ConfigMap update writes several files in a burst).
const WATCH_EVERY: Duration = Duration::from_secs(1);

/// `consentgate run --config FILE`: binds, serves until SIGTERM / SIGINT, drains, exits 0.
/// SIGHUP reloads the config, the snapshot and the TLS certificates.
pub async fn run(config: PathBuf, watch_config: bool) -> anyhow::Result<ExitCode> {
    // Diagnostics go to stderr before logging is about the gateway: they are about the file.
    let loaded = match config::load(&config) {
        Err(diags) => {
            print_diagnostics(&diags);
            return Ok(ExitCode::from(EX_USAGE));
        }
        Ok(l) => {
            print_diagnostics(&l.warnings);
            // A file needed at start that no later step reads (and so refuses) stops the start.
            if let Some(w) = l.warnings.iter().find(|w| w.refuses_start()) {
                eprintln!("{}: cannot start without {}", config.display(), w.key);
                return Ok(ExitCode::from(EX_USAGE));
            }
            config::for_gateway(l)
        }
    };
    // What --watch-config watches: the files of the config last read, as they were when read.
    let first_stamp = stamp(&loaded.files, &loaded.include_dirs);
    let watched = Arc::new(Mutex::new((loaded.files.clone(), loaded.include_dirs.clone())));
    let source: consentgate::gateway::ConfigSource = {
        let (path, watched) = (config.clone(), watched.clone());
        Arc::new(move || {
            let l = load(&path)?;
            *watched.lock().unwrap_or_else(|e| e.into_inner()) = (l.files.clone(), l.include_dirs.clone());
            Ok(l)
        })
    };
    raise_nofile_limit();
    let gw = consentgate::Gateway::bind(loaded.config.clone()).await?.with_config_source(&loaded, source);
    // Signals become messages on the gateway's one control channel (STYLE §9), like the file
    // watches: SIGHUP → Reload, SIGTERM / SIGINT → Shutdown.
    let control = gw.control();
    #[cfg(unix)]
    {
        let control = control.clone();
        tokio::spawn(async move {
            use tokio::signal::unix::{signal, SignalKind};
            let Ok(mut hup) = signal(SignalKind::hangup()) else { return };
            while hup.recv().await.is_some() {
                if control.send(Control::Reload).await.is_err() {
                    return;
                }
            }
        });
    }
    if watch_config {
        tokio::spawn(watch(watched, first_stamp, control.clone()));
    }
    tokio::spawn(async move {
        shutdown_signal().await;
        notify_service_manager("STOPPING=1\nSTATUS=draining");
        let _ = control.send(Control::Shutdown).await;
    });
    // The listeners are bound and the snapshot loaded: a `Type=notify` unit's `systemctl
    // start` returns now (connections made before the accept loops run wait in the backlog).
    notify_service_manager(&format!("READY=1\nSTATUS=serving\nMAINPID={}", std::process::id()));
    gw.serve(std::future::pending()).await?;
    Ok(ExitCode::SUCCESS)
}

/// sd_notify(3) without libsystemd: one datagram to the socket named by `NOTIFY_SOCKET` (a
/// path, or `@name` in the abstract namespace). Nothing happens when it is unset (not run by
/// systemd with `Type=notify`); a failure is logged, never fatal.
fn notify_service_manager(state: &str) {
    let Some(socket) = std::env::var_os("NOTIFY_SOCKET") else { return };
    if let Err(e) = send_notify(&socket, state) {
        tracing::warn!(socket = %socket.to_string_lossy(), error = %e, "cannot notify the service manager");
    }
}

#[cfg(unix)]
fn send_notify(socket: &std::ffi::OsStr, state: &str) -> std::io::Result<()> {
    use std::os::unix::net::UnixDatagram;
    let sock = UnixDatagram::unbound()?;
    let bytes = socket.as_encoded_bytes();
    #[cfg(target_os = "linux")]
    if let Some(name) = bytes.strip_prefix(b"@") {
        use std::os::linux::net::SocketAddrExt;
        let addr = std::os::unix::net::SocketAddr::from_abstract_name(name)?;
        return sock.send_to_addr(state.as_bytes(), &addr).map(|_| ());
    }
    let _ = bytes;
    sock.send_to(state.as_bytes(), socket).map(|_| ())
}

#[cfg(not(unix))]
fn send_notify(_socket: &std::ffi::OsStr, _state: &str) -> std::io::Result<()> {
    Ok(())
}

/// Reads and validates the config with everything a reload compares.
fn load(path: &Path) -> Result<LoadedConfig, Vec<String>> {
    consentgate::config::load_for_gateway(path)
}

/// `--watch-config`: polls the modification time and size of every config file and the
/// listing of every include directory; when they change and then stay still for
/// [`WATCH_EVERY`], asks for a config reload. Polling works on every filesystem, including
/// the symlink swaps of a Kubernetes ConfigMap volume (the `stat` follows the link).
/// What `--watch-config` compares: each watched file's (modification time, size), and every
/// file in each include directory.
type Stamp = Vec<(PathBuf, Option<(Option<SystemTime>, u64)>)>;

fn stamp(files: &[PathBuf], dirs: &[PathBuf]) -> Stamp {
    let mut out: Stamp =
        files.iter().map(|f| (f.clone(), std::fs::metadata(f).ok().map(|m| (m.modified().ok(), m.len())))).collect();
    for d in dirs {
        let mut names: Vec<PathBuf> =
            std::fs::read_dir(d).map(|r| r.flatten().map(|e| e.path()).collect()).unwrap_or_default();
        names.sort();
        for n in names {
            let st = std::fs::metadata(&n).ok().map(|m| (m.modified().ok(), m.len()));
            out.push((n, st));
        }
    }
    out
}

/// `--watch-config`: from `last` (taken right after the config was read, so an edit made
/// while the gateway starts is not missed), polls the files every [`WATCH_EVERY`]; when they
/// changed and then stayed still for one interval, asks for a config reload.
async fn watch(
    watched: Arc<Mutex<(Vec<PathBuf>, Vec<PathBuf>)>>,
    mut last: Stamp,
    control: tokio::sync::mpsc::Sender<Control>,
) {
    let current = || {
        let (f, d) = watched.lock().unwrap_or_else(|e| e.into_inner()).clone();
        tokio::task::spawn_blocking(move || stamp(&f, &d))
    };
    let mut pending: Option<Stamp> = None;
    let mut t = tokio::time::interval(WATCH_EVERY);
    loop {
        t.tick().await;
        let Ok(now) = current().await else { return };
        match &pending {
            // Still for one interval since the change: reload.
            Some(p) if *p == now => {
                pending = None;
                last = now;
                tracing::info!("config files changed: reloading");
                if control.send(Control::ReloadConfig).await.is_err() {
                    return;
                }
            }
            _ if now != last => pending = Some(now),
            _ => pending = None,
        }
    }
}

/// Prints diagnostics to stderr, errors as `file:line: key: message`, warnings prefixed.
fn print_diagnostics(diags: &[Diagnostic]) {
    for d in diags {
        eprintln!("{}", d.report());
    }
}

/// `consentgate check-config FILE`: every problem of the file and its includes, each with its
/// file, line and key; exit 64 if any is an error (warnings alone exit 0).
/// Raises the soft RLIMIT_NOFILE to the hard limit (a gateway holds two descriptors per
/// session; the usual soft default of 1 024 is far too few) and logs the result. Accepting
/// then pauses within a reserve of that limit (`relay::fds`).
fn raise_nofile_limit() {
    use consentgate::relay::fds;
    match fds::raise_nofile_limit() {
        Ok(l) => {
            let reserve = fds::reserve(l.soft);
            tracing::info!(
                soft = l.soft,
                hard = l.hard,
                before = l.before,
                reserve,
                "RLIMIT_NOFILE: accepting pauses with fewer than `reserve` descriptors left"
            );
        }
        Err(e) => tracing::warn!(error = %e, "RLIMIT_NOFILE could not be raised; keeping the limit in force"),
    }
    fds::FdBudget::global().refresh_limit();
}

/// `consentgate check-config FILE`: every problem with its key, exit 64 if any.
pub fn check_config(file: PathBuf) -> ExitCode {
    match config::load(&file) {
        Ok(l) => {
            print_diagnostics(&l.warnings);
            let c = &l.config;
            // The CMPP front, when configured: its port and the ISMG behind it.
            let cmpp = match (c.listen.cmpp, &c.upstream.cmpp) {
                (Some(l), Some(u)) => format!(", cmpp {l} -> ISMG {}", u.address),
                _ => String::new(),
            };
            // India DLT, when configured: the registry opened (and checked) with the config.
            let dlt = match &c.policy.dlt {
                Some(d) => {
                    let i = d.registry.info();
                    let n =
                        c.accounts.iter().filter(|a| a.scrubbing == consentgate::policy::dlt::Scrubbing::Dlt).count();
                    format!(
                        ", dlt {} ({} templates, {} headers, {} entities; {n} account(s) scrubbing)",
                        d.path.display(),
                        i.templates,
                        i.headers,
                        i.entities
                    )
                }
                None => String::new(),
            };
            println!(
                "{}: ok, {} accounts, {} files, {} warning(s) (upstream {}, smpp {}{cmpp}{dlt}, admin {}, node {}, sha256 {})",
                file.display(),
                c.accounts.len(),
                l.files.len(),
                l.warnings.len(),
                c.upstream.address,
                c.listen.smpp,
                c.listen.admin,
                c.consent.node,
                l.sha256
            );
            ExitCode::SUCCESS
        }
        Err(diags) => {
            print_diagnostics(&diags);
            let errors = diags.iter().filter(|d| d.is_error()).count();
            eprintln!("{}: {errors} error(s), {} warning(s)", file.display(), diags.len() - errors);
            ExitCode::from(EX_USAGE)
        }
    }
}
