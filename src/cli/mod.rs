//! The binary's commands, one file each (they belong to the binary crate, not the library).

pub mod audit;
pub mod complaints;
pub mod dlt;
pub mod drain;
pub mod manual;
pub mod replication;
pub mod run;
pub mod snapshot;
pub mod tools;

/// Exit status for bad usage or a bad config (sysexits EX_USAGE).
pub const EX_USAGE: u8 = 64;

/// Exit status when a service the command needs cannot be reached (sysexits EX_UNAVAILABLE).
pub const EX_UNAVAILABLE: u8 = 69;

/// Exit status when the gateway refuses the admin token (sysexits EX_NOPERM).
pub const EX_NOPERM: u8 = 77;

/// Resolves on SIGTERM or SIGINT.
pub async fn shutdown_signal() {
    let ctrl_c = tokio::signal::ctrl_c();
    #[cfg(unix)]
    {
        use tokio::signal::unix::{signal, SignalKind};
        match signal(SignalKind::terminate()) {
            Ok(mut term) => {
                tokio::select! {
                    _ = ctrl_c => {}
                    _ = term.recv() => {}
                }
            }
            Err(_) => {
                let _ = ctrl_c.await;
            }
        }
    }
    #[cfg(not(unix))]
    {
        let _ = ctrl_c.await;
    }
}
