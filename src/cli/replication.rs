//! `replication status | trim`: the shared statement stream (architecture §8) from the shell, with
//! the `[replication]` settings of a gateway config.

use std::path::{Path, PathBuf};
use std::process::ExitCode;

use clap::Subcommand;
use consentgate::config::Config;
use consentgate::consent::snapshot::Snapshot;
use consentgate::replication::{ops, ReplicationConfig};

use super::EX_USAGE;

#[derive(Subcommand)]
pub enum ReplicationCmd {
    /// The stream: length, first and last ids, each node's published-through marker, the
    /// trim marks and the node ids holding a lease, as JSON.
    Status {
        /// The gateway's config (its `[replication]` Redis address and stream).
        #[arg(long)]
        config: PathBuf,
    },
    /// Remove what a snapshot holds from the stream: the longest prefix whose every entry is
    /// at or below its origin's watermark in SNAPSHOT. Give it the oldest snapshot any node
    /// may still start from (after a new daily build has reached every node: the previous one).
    Trim {
        /// The gateway's config (its `[replication]` Redis address and stream).
        #[arg(long)]
        config: PathBuf,
        /// The oldest snapshot any node may still start from.
        #[arg(long)]
        snapshot: PathBuf,
    },
}

fn settings(config: &Path) -> Result<ReplicationConfig, ExitCode> {
    let cfg = Config::load(config).map_err(|e| {
        eprintln!("{e}");
        ExitCode::from(EX_USAGE)
    })?;
    cfg.replication.ok_or_else(|| {
        eprintln!("{}: no [replication] section", config.display());
        ExitCode::from(EX_USAGE)
    })
}

pub async fn run(cmd: ReplicationCmd) -> anyhow::Result<ExitCode> {
    match cmd {
        ReplicationCmd::Status { config } => {
            let r = match settings(&config) {
                Ok(r) => r,
                Err(code) => return Ok(code),
            };
            match ops::status(&r).await {
                Ok(v) => {
                    println!("{}", serde_json::to_string_pretty(&v)?);
                    Ok(ExitCode::SUCCESS)
                }
                Err(e) => {
                    eprintln!("error: {}: {e}", r.redis);
                    Ok(ExitCode::FAILURE)
                }
            }
        }
        ReplicationCmd::Trim { config, snapshot } => {
            let r = match settings(&config) {
                Ok(r) => r,
                Err(code) => return Ok(code),
            };
            let snap = match tokio::task::spawn_blocking(move || Snapshot::open(&snapshot)).await? {
                Ok(s) => s,
                Err(e) => {
                    eprintln!("error: {e}");
                    return Ok(ExitCode::from(EX_USAGE));
                }
            };
            let marks = snap.info().watermarks.clone();
            match ops::trim(&r, &marks).await {
                Ok(rep) => {
                    println!(
                        "{}",
                        serde_json::to_string_pretty(&serde_json::json!({
                            "removed": rep.removed,
                            "left": rep.left,
                            "min_id": rep.min_id,
                            "through": rep.through,
                            "held_by_reader": rep.held_by,
                            "snapshot_watermarks": marks.iter().map(|(n, s)| (n.to_string(), s)).collect::<std::collections::BTreeMap<_, _>>(),
                        }))?
                    );
                    Ok(ExitCode::SUCCESS)
                }
                Err(e) => {
                    eprintln!("error: {}: {e}", r.redis);
                    Ok(ExitCode::FAILURE)
                }
            }
        }
    }
}
