//! `snapshot build | inspect | lookup`: compile, check and query consent snapshots offline.

use std::path::{Path, PathBuf};
use std::process::ExitCode;
use std::time::Duration;

use clap::{Subcommand, ValueEnum};
use consentgate::consent::delta::Delta;
use consentgate::consent::journal::read_dir;
use consentgate::consent::snapshot::{build, live, BuildOptions, Snapshot};
use consentgate::consent::statement::{Statement, Watermarks};
use consentgate::policy::{self, ConsentView, Engine, PolicyConfig, Regime};

use super::EX_USAGE;

#[derive(Subcommand)]
pub enum SnapshotCmd {
    /// Compile dnc.csv / consent.csv (and journalled live statements) into a binary snapshot.
    Build {
        /// Do-not-call registry, RFC 4180 CSV: `msisdn,registered_at`.
        #[arg(long)]
        dnc: Option<PathBuf>,
        /// Consent statements, RFC 4180 CSV: `msisdn,entity,action,at[,proof]` (action grant |
        /// revoke).
        #[arg(long)]
        consent: Option<PathBuf>,
        /// Compile a consent.csv grant without a proof as no grant (counted in the report):
        /// the carrier's right under Order No. 74 Art. 21 to refuse what the sender cannot prove.
        #[arg(long)]
        require_proof: bool,
        /// Fold the live journal (MO opt-outs, admin statements, other nodes' statements) of
        /// this directory in.
        #[arg(long)]
        journal: Option<PathBuf>,
        /// The newest snapshot built so far: its live statements (`<base>.live/`) are folded in
        /// again with the journal's, each once. Needed whenever the journal may lack some (a
        /// node that started from a snapshot; its journal then has `replication.partial`).
        #[arg(long, requires = "journal")]
        base: Option<PathBuf>,
        /// The snapshot file to write (written to a temporary name, then renamed: a reader
        /// never sees half a file).
        #[arg(long)]
        out: PathBuf,
        /// Skip up to N bad rows (reported) instead of failing.
        #[arg(long, default_value_t = 0)]
        max_invalid: u64,
        /// Country code for national numbers in the CSVs.
        #[arg(long, default_value = "86")]
        default_country_code: String,
        /// Memory budget (e.g. 8GiB): when the rows would not fit in about half of it they
        /// are partitioned to temporary files next to --out (16 bytes per row of disk) and
        /// compiled part by part; the table is written streamed. Default: all in memory
        /// (16 bytes per row, then the table at ~9.1 bytes per statement).
        #[arg(long, value_parser = parse_size)]
        memory: Option<u64>,
    },
    /// Print a snapshot's header and counts (validates it completely first).
    Inspect {
        /// The snapshot file.
        file: PathBuf,
    },
    /// Print what a snapshot holds for one subscriber, and the decision for an entity.
    Lookup {
        /// The snapshot file.
        file: PathBuf,
        /// The subscriber: +8613800138000, 008613800138000 or national 13800138000.
        msisdn: String,
        /// The sending entity to decide for (a commercial message from it).
        #[arg(long)]
        entity: Option<String>,
        /// Regime for the decision line.
        #[arg(long, value_enum, default_value = "opt-in")]
        regime: RegimeArg,
        /// Country code for a national MSISDN.
        #[arg(long, default_value = "86")]
        default_country_code: String,
    },
}

/// A byte size: a number with an optional unit, `B`, `KiB`/`K`, `MiB`/`M`, `GiB`/`G`, `TiB`/`T`
/// (powers of 1024) or `KB`, `MB`, `GB`, `TB` (powers of 1000).
pub fn parse_size(s: &str) -> Result<u64, String> {
    let t = s.trim();
    let split = t.find(|c: char| !(c.is_ascii_digit() || c == '.')).unwrap_or(t.len());
    let (num, unit) = t.split_at(split);
    let mult: f64 = match unit.trim() {
        "" | "B" => 1.0,
        "K" | "KiB" => 1024.0,
        "M" | "MiB" => 1024.0 * 1024.0,
        "G" | "GiB" => 1024.0 * 1024.0 * 1024.0,
        "T" | "TiB" => 1024.0f64.powi(4),
        "KB" => 1e3,
        "MB" => 1e6,
        "GB" => 1e9,
        "TB" => 1e12,
        u => return Err(format!("{s:?}: unknown unit {u:?} (B, KiB, MiB, GiB, TiB, KB, MB, GB, TB)")),
    };
    match num.parse::<f64>() {
        Ok(n) if n.is_finite() && n * mult >= 1.0 && n * mult < u64::MAX as f64 => Ok((n * mult) as u64),
        _ => Err(format!("{s:?}: expected a positive size such as 8GiB")),
    }
}

/// `--regime`: the values `policy.regime` takes (anything else is a usage error, not opt-in).
#[derive(Clone, Copy, ValueEnum)]
pub enum RegimeArg {
    #[value(name = "opt-in")]
    OptIn,
    #[value(name = "opt-out")]
    OptOut,
}

pub fn run(cmd: SnapshotCmd) -> anyhow::Result<ExitCode> {
    match cmd {
        SnapshotCmd::Build {
            dnc,
            consent,
            require_proof,
            journal,
            base,
            out,
            max_invalid,
            default_country_code,
            memory,
        } => {
            if dnc.is_none() && consent.is_none() && journal.is_none() {
                eprintln!("snapshot build: give at least one of --dnc, --consent, --journal");
                return Ok(ExitCode::from(EX_USAGE));
            }
            let mut opts = BuildOptions {
                dnc,
                consent,
                out,
                max_invalid,
                default_cc: default_country_code,
                memory,
                require_proof,
                ..Default::default()
            };
            if let Some(dir) = journal {
                match live_statements(&dir, base.as_deref()) {
                    Ok(sts) => opts.journal_records = sts,
                    Err(e) => {
                        eprintln!("snapshot build: {e}");
                        return Ok(ExitCode::FAILURE);
                    }
                }
            }
            let mut last = std::time::Instant::now();
            let report = build(&opts, |p| {
                if last.elapsed() >= Duration::from_millis(250) {
                    last = std::time::Instant::now();
                    let pct = if p.total_bytes > 0 { 100.0 * p.bytes as f64 / p.total_bytes as f64 } else { 0.0 };
                    let bar = "#".repeat((pct / 5.0) as usize);
                    eprint!("\r{:<10} [{bar:<20}] {pct:5.1}%  {} rows", p.phase.as_str(), p.rows);
                }
            });
            eprintln!();
            match report {
                Ok(r) => {
                    println!("{r}");
                    Ok(ExitCode::SUCCESS)
                }
                Err(e) => {
                    eprintln!("snapshot build failed: {e}");
                    Ok(ExitCode::FAILURE)
                }
            }
        }
        SnapshotCmd::Inspect { file } => match Snapshot::open(&file) {
            Ok(s) => {
                println!("{}", s.info());
                Ok(ExitCode::SUCCESS)
            }
            Err(e) => {
                eprintln!("{e}");
                Ok(ExitCode::FAILURE)
            }
        },
        SnapshotCmd::Lookup { file, msisdn, entity, regime, default_country_code } => {
            let s = match Snapshot::open(&file) {
                Ok(s) => s,
                Err(e) => {
                    eprintln!("{e}");
                    return Ok(ExitCode::FAILURE);
                }
            };
            let m = match consentgate::consent::msisdn::normalise_text(&msisdn, &default_country_code) {
                Ok(m) => m,
                Err(e) => {
                    eprintln!("{msisdn}: {e}");
                    return Ok(ExitCode::from(EX_USAGE));
                }
            };
            print!("{}", s.describe(m, entity.as_deref()));
            if let Some(e) = &entity {
                use consentgate::consent::snapshot::proofs::{self, ProofLookup};
                match proofs::lookup(&file, s.info().checksum, m, e) {
                    Ok(ProofLookup::Found(p)) => println!(
                        "  consent proof:      {} (grant of {})",
                        p.proof,
                        consentgate::audit::format_time_us(p.granted_at * 1000)
                    ),
                    Ok(ProofLookup::None) => println!("  consent proof:      none on record"),
                    Ok(ProofLookup::NoFile) => {
                        println!("  consent proof:      none (no {} file)", proofs::path_for(&file).display())
                    }
                    Ok(ProofLookup::Stale) => println!(
                        "  consent proof:      unknown ({} belongs to another snapshot)",
                        proofs::path_for(&file).display()
                    ),
                    Err(err) => println!("  consent proof:      unreadable: {err}"),
                }
            }
            if let Some(e) = entity {
                // The gateway's own step 6 over this snapshot alone (no live delta): the same
                // functions `decide` and the admin lookup call, so the answers cannot differ.
                let regime = match regime {
                    RegimeArg::OptIn => Regime::OptIn,
                    RegimeArg::OptOut => Regime::OptOut,
                };
                let engine = Engine::new(PolicyConfig { regime, ..PolicyConfig::default() }, Vec::new());
                let delta = Delta::new();
                let data =
                    ConsentView { snapshot: Some(&s), delta: &delta, live_entity: None, snap_entity: s.entity_id(&e) };
                let standing = policy::standing(&data, m);
                let decision = match engine.consent_verdict(standing).reason() {
                    None => "accept (commercial messages allowed)".to_owned(),
                    Some(r) => format!("reject: {}", r.label()),
                };
                println!("  decision ({}, snapshot only, commercial): {decision}", regime.as_str());
            }
            Ok(ExitCode::SUCCESS)
        }
    }
}

/// The statements a build folds in: the journal of `dir`, and with `base` the base snapshot's
/// live statements too (each once). A journal that declares a gap (`replication.partial`)
/// needs a base that covers it, or the new snapshot would claim statements it lacks.
fn live_statements(dir: &Path, base: Option<&Path>) -> Result<Vec<Statement>, String> {
    let sts = read_dir(dir).map_err(|e| format!("journal {}: {e}", dir.display()))?;
    let gaps = live::read_partial(dir)?;
    let (base_sts, base_marks) = match base {
        Some(b) => {
            let snap = Snapshot::open(b).map_err(|e| format!("--base {}: {e}", b.display()))?;
            let (id, marks) = (snap.info().checksum, snap.info().watermarks.clone());
            drop(snap);
            (live::read_base(b, id, &marks)?, marks)
        }
        None => (Vec::new(), Watermarks::new()),
    };
    let missing = live::uncovered(&gaps, &base_marks);
    if !missing.is_empty() {
        let list: Vec<String> = missing
            .iter()
            .map(|(o, through, has)| format!("{o} through seq {through} (the base holds through {has})"))
            .collect();
        return Err(format!(
            "journal {} lacks statements of {} (its node started from a snapshot that held them; see {}): \
             give --base with the newest snapshot built, or build from the journal of a node that has \
             run since before it",
            dir.display(),
            list.join(", "),
            dir.join(live::PARTIAL_FILE).display()
        ));
    }
    Ok(live::union(base_sts, sts))
}

#[cfg(test)]
mod tests {
    use super::parse_size;

    #[test]
    fn sizes_parse_with_units() {
        assert_eq!(parse_size("8GiB"), Ok(8 << 30));
        assert_eq!(parse_size("8G"), Ok(8 << 30));
        assert_eq!(parse_size("512 MiB"), Ok(512 << 20));
        assert_eq!(parse_size("1.5GB"), Ok(1_500_000_000));
        assert_eq!(parse_size("4096"), Ok(4096));
        for bad in ["", "0", "0.1", "-1G", "8 parsecs", "GiB", "1e9"] {
            assert!(parse_size(bad).is_err(), "{bad:?} accepted");
        }
    }
}
