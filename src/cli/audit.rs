//! `audit search`: every decision recorded for one subscriber.

use std::path::PathBuf;
use std::process::ExitCode;

use clap::Subcommand;
use consentgate::audit::search::{run as search, SearchArgs, SearchError};

use super::EX_USAGE;

#[derive(Subcommand)]
pub enum AuditCmd {
    /// Every decision recorded for one subscriber (why a message was or was not delivered).
    Search {
        /// The audit directory (`audit.dir`).
        #[arg(long)]
        dir: PathBuf,
        /// The destination, in any form: +8613800138000, 008613800138000, 13800138000.
        #[arg(long)]
        msisdn: String,
        /// From this time: RFC 3339, a date (2026-05-01, UTC) or an age (7d, 12h).
        #[arg(long)]
        since: Option<String>,
        /// Up to this time (same forms).
        #[arg(long)]
        until: Option<String>,
        /// Only this system_id.
        #[arg(long)]
        account: Option<String>,
        /// Print the stored JSON lines instead of a table (the count goes to stderr).
        #[arg(long)]
        json: bool,
        /// Country code for a national --msisdn.
        #[arg(long, default_value = "86")]
        country_code: String,
    },
}

pub fn run(cmd: AuditCmd) -> anyhow::Result<ExitCode> {
    let AuditCmd::Search { dir, msisdn, since, until, account, json, country_code } = cmd;
    let args = SearchArgs { dir, msisdn, since, until, account, json, country_code };
    match search(&args, &mut std::io::stdout().lock(), &mut std::io::stderr().lock()) {
        Ok(_) => Ok(ExitCode::SUCCESS),
        Err(SearchError::Usage(m)) => {
            eprintln!("audit search: {m}");
            Ok(ExitCode::from(EX_USAGE))
        }
        Err(e) => Err(e.into()),
    }
}
