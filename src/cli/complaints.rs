//! `complaints list|show`: the complaint register (architecture §7) read from the shell, on the same
//! SQLite file the running gateway writes (WAL: reading while it writes is safe).

use std::path::PathBuf;
use std::process::ExitCode;

use clap::Subcommand;
use consentgate::complaints::{row_json, Register, StatusFilter};
use consentgate::config::Config;

use super::EX_USAGE;

#[derive(Subcommand)]
pub enum ComplaintsCmd {
    /// Complaints, newest first: id, status, due date, entity, subscriber, reference.
    List {
        /// The gateway's config (its `complaints.db`).
        #[arg(long)]
        config: PathBuf,
        /// open (overdue included) | overdue | closed | all.
        #[arg(long, default_value = "all")]
        status: String,
        /// Only complaints about this entity.
        #[arg(long)]
        entity: Option<String>,
        /// At most this many complaints.
        #[arg(long, default_value_t = 100)]
        limit: u32,
        /// One JSON object per line instead of a table.
        #[arg(long)]
        json: bool,
    },
    /// One complaint with its evidence, as JSON.
    Show {
        /// The gateway's config (its `complaints.db`).
        #[arg(long)]
        config: PathBuf,
        /// The complaint's id (as `complaints list` and the API show it).
        id: i64,
    },
}

/// The register the config names, opened read-only; `Ok(None)` when the gateway has not
/// created it yet (a read creates nothing).
fn open(config: &std::path::Path) -> Result<Option<Register>, ExitCode> {
    let db = Config::complaints_db(config).map_err(|e| {
        eprintln!("{e}");
        ExitCode::from(EX_USAGE)
    })?;
    let Some(db) = db else {
        eprintln!("{}: no [complaints] section: there is no register", config.display());
        return Err(ExitCode::from(EX_USAGE));
    };
    let r = Register::open_read_only(&db).map_err(|e| {
        eprintln!("error: {e}");
        ExitCode::FAILURE
    })?;
    if r.is_none() {
        let relative = if db.is_relative() {
            " (a relative complaints.db is read from the current directory; the gateway's is its working directory)"
        } else {
            ""
        };
        eprintln!("{}: no complaint register yet: the gateway creates it when it first runs{relative}", db.display());
    }
    Ok(r)
}

pub fn run(cmd: ComplaintsCmd) -> anyhow::Result<ExitCode> {
    let now = consentgate::time::Clock::system().now().unix_ms;
    match cmd {
        ComplaintsCmd::List { config, status, entity, limit, json } => {
            let Some(filter) = StatusFilter::parse(&status) else {
                eprintln!("complaints list: --status {status}: expected open | overdue | closed | all");
                return Ok(ExitCode::from(EX_USAGE));
            };
            let rows = match open(&config) {
                Ok(Some(r)) => r.list(filter, entity.as_deref(), now, limit.clamp(1, 100_000))?,
                Ok(None) => Vec::new(),
                Err(code) => return Ok(code),
            };
            if json {
                for row in &rows {
                    println!("{}", row_json(row, now));
                }
            } else {
                println!(
                    "{:>6}  {:<8}  {:<10}  {:<20}  {:<15}  reference",
                    "id", "status", "due", "entity", "subscriber"
                );
                for row in &rows {
                    let status =
                        if row.status == "open" && now >= row.due_at { "overdue" } else { row.status.as_str() };
                    println!(
                        "{:>6}  {:<8}  {:<10}  {:<20}  {:<15}  {}",
                        row.id, status, row.due_date, row.entity, row.subscriber, row.reference
                    );
                }
            }
            eprintln!("{} complaint(s)", rows.len());
            Ok(ExitCode::SUCCESS)
        }
        ComplaintsCmd::Show { config, id } => {
            let r = match open(&config) {
                Ok(Some(r)) => r,
                Ok(None) => {
                    eprintln!("complaints show: no complaint {id}: the register does not exist yet");
                    return Ok(ExitCode::FAILURE);
                }
                Err(code) => return Ok(code),
            };
            match r.get(id)? {
                Some(row) => {
                    println!("{}", serde_json::to_string_pretty(&row_json(&row, now))?);
                    Ok(ExitCode::SUCCESS)
                }
                None => {
                    eprintln!("complaints show: no complaint {id} in {}", r.path().display());
                    Ok(ExitCode::FAILURE)
                }
            }
        }
    }
}
