//! `run` and `check-config`: the gateway itself.

use std::path::{Path, PathBuf};
use std::process::ExitCode;
use std::sync::{Arc, Mutex};
use std::time::{Duration, SystemTime};

use consentgate::config::Config;
use consentgate::gateway::{Control, LoadedConfig};

use super::{shutdown_signal, EX_USAGE};

/// How often `--watch-config` looks at the files, and how long they must stay unchanged
/// before the reload (an editor or a ConfigMap update writes several files in a burst).
const WATCH_EVERY: Duration = Duration::from_secs(1);

/// `consentgate run --config FILE`: binds, serves until SIGTERM / SIGINT, drains, exits 0.
/// SIGHUP reloads the config, the snapshot and the TLS certificates.
pub async fn run(config: PathBuf, watch_config: bool) -> anyhow::Result<ExitCode> {
    let loaded = match load(&config) {
        Ok(l) => l,
        Err(problems) => {
            for p in &problems {
                eprintln!("{p}");
            }
            return Ok(ExitCode::from(EX_USAGE));
        }
    };
    for w in &loaded.warnings {
        tracing::warn!(warning = %w, "config");
    }
    // What --watch-config watches: the files of the config last read.
    let watched = Arc::new(Mutex::new((loaded.files.clone(), loaded.include_dirs.clone())));
    let source: consentgate::gateway::ConfigSource = {
        let (path, watched) = (config.clone(), watched.clone());
        Arc::new(move || {
            let l = load(&path)?;
            *watched.lock().unwrap_or_else(|e| e.into_inner()) = (l.files.clone(), l.include_dirs.clone());
            Ok(l)
        })
    };
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
        tokio::spawn(watch(watched, control.clone()));
    }
    tokio::spawn(async move {
        shutdown_signal().await;
        let _ = control.send(Control::Shutdown).await;
    });
    gw.serve(std::future::pending()).await?;
    Ok(ExitCode::SUCCESS)
}

/// Reads and validates the config with everything a reload compares.
fn load(path: &Path) -> Result<LoadedConfig, Vec<String>> {
    consentgate::config::load_for_gateway(path)
}

/// `--watch-config`: polls the modification time and size of every config file and the
/// listing of every include directory; when they change and then stay still for
/// [`WATCH_EVERY`], asks for a config reload. Polling works on every filesystem, including
/// the symlink swaps of a Kubernetes ConfigMap volume (the `stat` follows the link).
async fn watch(watched: Arc<Mutex<(Vec<PathBuf>, Vec<PathBuf>)>>, control: tokio::sync::mpsc::Sender<Control>) {
    type Stamp = Vec<(PathBuf, Option<(Option<SystemTime>, u64)>)>;
    fn stamp(files: &[PathBuf], dirs: &[PathBuf]) -> Stamp {
        let mut out: Stamp = files
            .iter()
            .map(|f| (f.clone(), std::fs::metadata(f).ok().map(|m| (m.modified().ok(), m.len()))))
            .collect();
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
    let current = || {
        let (f, d) = watched.lock().unwrap_or_else(|e| e.into_inner()).clone();
        tokio::task::spawn_blocking(move || stamp(&f, &d))
    };
    let Ok(mut last) = current().await else { return };
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
                // The reload may have read other include files: look again from them.
                if let Ok(s) = current().await {
                    last = s;
                }
            }
            _ if now != last => pending = Some(now),
            _ => pending = None,
        }
    }
}

/// `consentgate check-config FILE`: every problem with its key, exit 64 if any.
pub fn check_config(file: PathBuf) -> ExitCode {
    match Config::load(&file) {
        Ok(c) => {
            println!(
                "{}: ok ({} account(s), upstream {}, smpp {}, admin {}, node {})",
                file.display(),
                c.accounts.len(),
                c.upstream.address,
                c.listen.smpp,
                c.listen.admin,
                c.consent.node
            );
            ExitCode::SUCCESS
        }
        Err(e) => {
            eprintln!("{e}");
            ExitCode::from(EX_USAGE)
        }
    }
}
