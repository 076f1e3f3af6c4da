//! `run` and `check-config`: the gateway itself.

use std::path::PathBuf;
use std::process::ExitCode;

use consentgate::config::Config;

use super::{shutdown_signal, EX_USAGE};

/// `consentgate run --config FILE`: binds, serves until SIGTERM / SIGINT, drains, exits 0.
pub async fn run(config: PathBuf) -> anyhow::Result<ExitCode> {
    let cfg = match Config::load(&config) {
        Ok(c) => c,
        Err(e) => {
            eprintln!("{e}");
            return Ok(ExitCode::from(EX_USAGE));
        }
    };
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
