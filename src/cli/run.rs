//! `run` and `check-config`: the gateway itself.

use std::path::PathBuf;
use std::process::ExitCode;

use consentgate::config::{self, Diagnostic};

use super::{shutdown_signal, EX_USAGE};

/// `consentgate run --config FILE`: binds, serves until SIGTERM / SIGINT, drains, exits 0.
pub async fn run(config: PathBuf) -> anyhow::Result<ExitCode> {
    let loaded = match config::load(&config) {
        Ok(l) => l,
        Err(diags) => {
            print_diagnostics(&diags);
            return Ok(ExitCode::from(EX_USAGE));
        }
    };
    print_diagnostics(&loaded.warnings);
    // A file needed at start that no later step reads (and so refuses) stops the start here.
    if let Some(w) = loaded.warnings.iter().find(|w| w.refuses_start()) {
        eprintln!("{}: cannot start without {}", config.display(), w.key);
        return Ok(ExitCode::from(EX_USAGE));
    }
    let cfg = loaded.config;
    let gw = consentgate::Gateway::bind(cfg).await?;
    // Signals become messages on the gateway's one control channel (STYLE §9), like the file
    // watch: SIGHUP → Reload, SIGTERM / SIGINT → Shutdown.
    let control = gw.control();
    #[cfg(unix)]
    {
        let control = control.clone();
        tokio::spawn(async move {
            use tokio::signal::unix::{signal, SignalKind};
            let Ok(mut hup) = signal(SignalKind::hangup()) else { return };
            while hup.recv().await.is_some() {
                if control.send(consentgate::gateway::Control::Reload).await.is_err() {
                    return;
                }
            }
        });
    }
    tokio::spawn(async move {
        shutdown_signal().await;
        let _ = control.send(consentgate::gateway::Control::Shutdown).await;
    });
    gw.serve(std::future::pending()).await?;
    Ok(ExitCode::SUCCESS)
}

/// Prints diagnostics to stderr, errors as `file:line: key: message`, warnings prefixed.
fn print_diagnostics(diags: &[Diagnostic]) {
    for d in diags {
        if d.is_error() {
            eprintln!("{d}");
        } else {
            eprintln!("warning: {d}");
        }
    }
}

/// `consentgate check-config FILE`: every problem of the file and its includes, each with its
/// file, line and key; exit 64 if any is an error (warnings alone exit 0).
pub fn check_config(file: PathBuf) -> ExitCode {
    match config::load(&file) {
        Ok(l) => {
            print_diagnostics(&l.warnings);
            let c = &l.config;
            println!(
                "{}: ok, {} accounts, {} files, {} warning(s) (upstream {}, smpp {}, admin {}, node {}, sha256 {})",
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
