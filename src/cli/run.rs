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
    raise_nofile_limit();
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
