//! The `consentgate` binary: a thin CLI over the library (STYLE §1).

use std::collections::HashMap;
use std::net::SocketAddr;
use std::path::PathBuf;
use std::process::ExitCode;
use std::time::Duration;

use clap::{Parser, Subcommand, ValueEnum};

use consentgate::config::{parse_duration, Config};
use consentgate::smpp::BindType;
use consentgate::telemetry::{init_logging, LogFormat};

/// Exit status for bad usage or a bad config (sysexits EX_USAGE).
const EX_USAGE: u8 = 64;

#[derive(Parser)]
#[command(
    name = "consentgate",
    version,
    about = "Inline SMPP gateway filter: consent / do-not-call enforcement for commercial SMS"
)]
struct Cli {
    /// Log output format.
    #[arg(long, global = true, value_enum, default_value = "human")]
    log_format: LogFmt,
    #[command(subcommand)]
    command: Command,
}

#[derive(Clone, Copy, ValueEnum)]
enum LogFmt {
    Human,
    Json,
}

#[derive(Subcommand)]
enum Command {
    /// Run the gateway.
    Run {
        #[arg(long)]
        config: PathBuf,
    },
    /// Validate a config file; exit 64 and list every problem if it is bad.
    CheckConfig { file: PathBuf },
    /// Run everything on loopback: SMSC simulator, gateway, a short load through it.
    Demo {
        /// Messages to send through the gateway.
        #[arg(long, default_value_t = 200_000)]
        count: u64,
    },
    /// SMSC simulator for tests, demos and benchmarks.
    SmscSim {
        #[arg(long, default_value = "127.0.0.1:2776")]
        listen: SocketAddr,
        /// Do not send delivery receipts.
        #[arg(long)]
        no_receipts: bool,
        /// Delay before each batch of submit responses.
        #[arg(long, value_parser = parse_duration, default_value = "0ms")]
        delay: Duration,
        /// Answer submits to DEST with STATUS (hex 0x.. or decimal), repeatable.
        #[arg(long = "dest-error", value_name = "DEST=STATUS")]
        dest_errors: Vec<String>,
        /// Inject one MO message (source,destination,text) every interval into a bound session.
        #[arg(long, value_parser = parse_duration)]
        mo_every: Option<Duration>,
    },
    /// ESME load generator.
    Load {
        #[arg(long)]
        target: SocketAddr,
        #[arg(long)]
        system_id: String,
        #[arg(long, default_value = "")]
        password: String,
        #[arg(long, value_enum, default_value = "transceiver")]
        bind_type: BindArg,
        #[arg(long, default_value_t = 4)]
        sessions: usize,
        #[arg(long, default_value_t = 100)]
        window: usize,
        /// Total submit_sm to send (0 = until --duration) [default: 100000; with --pcap: every
        /// recorded PDU].
        #[arg(long)]
        count: Option<u64>,
        /// Cap on the sending phase [default: 10s; with --pcap: none].
        #[arg(long, value_parser = parse_duration)]
        duration: Option<Duration>,
        /// Total rate cap (msg/s).
        #[arg(long)]
        rate: Option<u64>,
        /// Request delivery receipts.
        #[arg(long)]
        receipts: bool,
        /// JSONL scenario: {"source","destination","text","encoding","expect"} per line.
        #[arg(long, conflicts_with = "pcap")]
        scenario: Option<PathBuf>,
        /// Replay the submit_sm / data_sm / submit_multi of a pcap or pcapng capture.
        #[arg(long)]
        pcap: Option<PathBuf>,
        /// With --pcap: only TCP connections on this port (default: any port, SMPP detected).
        #[arg(long, requires = "pcap")]
        port: Option<u16>,
        /// With --pcap: only connections whose SMSC side is this IP address. In a capture made
        /// by consentgate's [capture], 10.0.0.1 keeps the ESME leg (what the ESMEs sent) and
        /// 10.0.0.2 the SMSC leg (what was forwarded).
        #[arg(long, requires = "pcap")]
        server: Option<std::net::IpAddr>,
        /// With --pcap: 1x = recorded timing, 10x = ten times faster, max = as fast as the
        /// window allows.
        #[arg(long, default_value = "1x", requires = "pcap")]
        speed: consentgate::load::pcap::Speed,
        /// Write the JSON report here.
        #[arg(long)]
        report: Option<PathBuf>,
    },
    /// Build, inspect and query consent snapshots.
    #[command(subcommand)]
    Snapshot(SnapshotCmd),
    /// Query the decision audit log.
    #[command(subcommand)]
    Audit(AuditCmd),
    /// Plain frame-forwarding TCP relay: the benchmark baseline (no SMPP logic).
    Relay {
        #[arg(long)]
        listen: SocketAddr,
        #[arg(long)]
        upstream: SocketAddr,
    },
}

#[derive(Subcommand)]
enum AuditCmd {
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

#[derive(Subcommand)]
enum SnapshotCmd {
    /// Compile dnc.csv / consent.csv (and journalled live statements) into a binary snapshot.
    Build {
        /// Do-not-call registry: `msisdn,registered_at`.
        #[arg(long)]
        dnc: Option<PathBuf>,
        /// Consent statements: `msisdn,entity,action,at` (action grant | revoke).
        #[arg(long)]
        consent: Option<PathBuf>,
        /// Fold the live journal (MO opt-outs, admin statements) of this directory in.
        #[arg(long)]
        journal: Option<PathBuf>,
        #[arg(long)]
        out: PathBuf,
        /// Skip up to N bad rows (reported) instead of failing.
        #[arg(long, default_value_t = 0)]
        max_invalid: u64,
        /// Country code for national numbers in the CSVs.
        #[arg(long, default_value = "86")]
        default_country_code: String,
    },
    /// Print a snapshot's header and counts (validates it completely first).
    Inspect { file: PathBuf },
    /// Print what a snapshot holds for one subscriber, and the decision for an entity.
    Lookup {
        file: PathBuf,
        msisdn: String,
        #[arg(long)]
        entity: Option<String>,
        /// Regime for the decision line.
        #[arg(long, default_value = "opt-in")]
        regime: String,
        #[arg(long, default_value = "86")]
        default_country_code: String,
    },
}

#[derive(Clone, Copy, ValueEnum)]
enum BindArg {
    Transmitter,
    Receiver,
    Transceiver,
}

fn main() -> ExitCode {
    let cli = match Cli::try_parse() {
        Ok(c) => c,
        Err(e) => {
            let code = if e.use_stderr() { EX_USAGE } else { 0 };
            let _ = e.print();
            return ExitCode::from(code);
        }
    };
    let format = match cli.log_format {
        LogFmt::Human => LogFormat::Human,
        LogFmt::Json => LogFormat::Json,
    };
    let default_filter = match cli.command {
        Command::Demo { .. } | Command::Load { .. } => "warn",
        _ => "info",
    };
    init_logging(format, default_filter);
    let rt = match tokio::runtime::Builder::new_multi_thread().enable_all().build() {
        Ok(rt) => rt,
        Err(e) => {
            eprintln!("error: cannot start the runtime: {e}");
            return ExitCode::FAILURE;
        }
    };
    match rt.block_on(dispatch(cli.command)) {
        Ok(code) => code,
        Err(e) => {
            eprintln!("error: {e:#}");
            ExitCode::FAILURE
        }
    }
}

async fn dispatch(command: Command) -> anyhow::Result<ExitCode> {
    match command {
        Command::Run { config } => {
            let cfg = match Config::load(&config) {
                Ok(c) => c,
                Err(e) => {
                    eprintln!("{e}");
                    return Ok(ExitCode::from(EX_USAGE));
                }
            };
            let gw = consentgate::Gateway::bind(cfg).await?;
            // Signals become messages on the gateway's one control channel (STYLE §9), like
            // the file watch and the admin API: SIGHUP → Reload, SIGTERM / SIGINT → Shutdown.
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
        Command::Snapshot(cmd) => snapshot_cmd(cmd),
        Command::Audit(AuditCmd::Search { dir, msisdn, since, until, account, json, country_code }) => {
            use consentgate::audit::search::{run, SearchArgs, SearchError};
            let args = SearchArgs { dir, msisdn, since, until, account, json, country_code };
            match run(&args, &mut std::io::stdout().lock(), &mut std::io::stderr().lock()) {
                Ok(_) => Ok(ExitCode::SUCCESS),
                Err(SearchError::Usage(m)) => {
                    eprintln!("audit search: {m}");
                    Ok(ExitCode::from(EX_USAGE))
                }
                Err(e) => Err(e.into()),
            }
        }
        Command::CheckConfig { file } => match Config::load(&file) {
            Ok(c) => {
                println!(
                    "{}: ok ({} account(s), upstream {}, smpp {}, admin {})",
                    file.display(),
                    c.accounts.len(),
                    c.upstream.address,
                    c.listen.smpp,
                    c.listen.admin
                );
                Ok(ExitCode::SUCCESS)
            }
            Err(e) => {
                eprintln!("{e}");
                Ok(ExitCode::from(EX_USAGE))
            }
        },
        Command::Demo { count } => {
            consentgate::demo::run(count).await?;
            Ok(ExitCode::SUCCESS)
        }
        Command::SmscSim { listen, no_receipts, delay, dest_errors, mo_every } => {
            let mut errors = HashMap::new();
            for d in dest_errors {
                let Some((dest, st)) = d.split_once('=') else {
                    eprintln!("--dest-error {d}: expected DEST=STATUS");
                    return Ok(ExitCode::from(EX_USAGE));
                };
                let Some(st) = consentgate::smpp::status::parse(st) else {
                    eprintln!("--dest-error {d}: STATUS must be hex (0x..) or decimal");
                    return Ok(ExitCode::from(EX_USAGE));
                };
                errors.insert(dest.to_owned(), st);
            }
            let cfg = consentgate::sim::SimConfig {
                listen,
                receipts: !no_receipts,
                response_delay: delay,
                dest_errors: errors,
                ..Default::default()
            };
            let sim = consentgate::sim::start(cfg).await?;
            println!("smsc-sim listening on {}", sim.local_addr);
            let injector = async {
                let Some(every) = mo_every else { return std::future::pending().await };
                let mut t = tokio::time::interval(every);
                let mut n = 0u64;
                loop {
                    t.tick().await;
                    n += 1;
                    let src = format!("86139{:08}", n % 100_000_000);
                    sim.inject_mo(None, &src, "1069012345", 0, b"STOP");
                }
            };
            tokio::select! {
                _ = shutdown_signal() => {}
                _ = injector => {}
            }
            sim.shutdown().await;
            Ok(ExitCode::SUCCESS)
        }
        Command::Load {
            target,
            system_id,
            password,
            bind_type,
            sessions,
            window,
            count,
            duration,
            rate,
            receipts,
            scenario,
            pcap,
            port,
            server,
            speed,
            report,
        } => {
            let replay = match &pcap {
                Some(p) => {
                    let opts = consentgate::load::pcap::ExtractOptions { port, server, ..Default::default() };
                    let x = consentgate::load::pcap::extract(p, &opts)?;
                    Some(std::sync::Arc::new(x))
                }
                None => None,
            };
            let (count, duration) = match replay {
                Some(_) => (count.unwrap_or(0), duration.unwrap_or(Duration::ZERO)),
                None => (count.unwrap_or(100_000), duration.unwrap_or(Duration::from_secs(10))),
            };
            let scenario = match scenario {
                Some(p) => {
                    let text = std::fs::read_to_string(&p).map_err(|e| anyhow::anyhow!("{}: {e}", p.display()))?;
                    Some(consentgate::load::parse_scenario(&text, &p.display().to_string())?)
                }
                None => None,
            };
            let cfg = consentgate::load::LoadConfig {
                target,
                system_id,
                password,
                bind_type: match bind_type {
                    BindArg::Transmitter => BindType::Transmitter,
                    BindArg::Receiver => BindType::Receiver,
                    BindArg::Transceiver => BindType::Transceiver,
                },
                sessions,
                window,
                count,
                duration,
                rate,
                registered_delivery: receipts,
                scenario,
                replay,
                speed,
                ..Default::default()
            };
            let r = consentgate::load::run(cfg).await?;
            r.print_human();
            if let Some(p) = report {
                std::fs::write(&p, serde_json::to_vec_pretty(&r)?)
                    .map_err(|e| anyhow::anyhow!("{}: {e}", p.display()))?;
            }
            Ok(ExitCode::SUCCESS)
        }
        Command::Relay { listen, upstream } => {
            let l = tokio::net::TcpListener::bind(listen).await?;
            println!("relay listening on {} -> {upstream}", l.local_addr()?);
            consentgate::relay::plain::run(l, upstream, shutdown_signal()).await?;
            Ok(ExitCode::SUCCESS)
        }
    }
}

fn snapshot_cmd(cmd: SnapshotCmd) -> anyhow::Result<ExitCode> {
    use consentgate::consent::journal::read_dir;
    use consentgate::consent::snapshot::{build, BuildOptions, Snapshot};
    match cmd {
        SnapshotCmd::Build { dnc, consent, journal, out, max_invalid, default_country_code } => {
            if dnc.is_none() && consent.is_none() && journal.is_none() {
                eprintln!("snapshot build: give at least one of --dnc, --consent, --journal");
                return Ok(ExitCode::from(EX_USAGE));
            }
            let mut opts =
                BuildOptions { dnc, consent, out, max_invalid, default_cc: default_country_code, ..Default::default() };
            if let Some(dir) = journal {
                let sts = read_dir(&dir).map_err(|e| anyhow::anyhow!("journal {}: {e}", dir.display()))?;
                opts.journal_records = sts;
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
            let r = match report {
                Ok(r) => r,
                Err(e) => {
                    eprintln!("snapshot build failed: {e}");
                    return Ok(ExitCode::FAILURE);
                }
            };
            println!("{r}");
            Ok(ExitCode::SUCCESS)
        }
        SnapshotCmd::Inspect { file } => {
            let s = match Snapshot::open(&file) {
                Ok(s) => s,
                Err(e) => {
                    eprintln!("{e}");
                    return Ok(ExitCode::FAILURE);
                }
            };
            println!("{}", s.info());
            Ok(ExitCode::SUCCESS)
        }
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
            if let Some(e) = entity {
                use consentgate::consent::snapshot::PairState;
                let standing = match s.entity_id(&e).and_then(|id| s.pair(m, id)) {
                    Some(PairState::Grant) => "granted",
                    Some(PairState::Revoked) => "revoked",
                    Some(PairState::DncNewer) => "dnc",
                    None if s.is_dnc(m) => "dnc",
                    None => "none",
                };
                let decision = match (standing, regime.as_str()) {
                    ("granted", _) | ("none", "opt-out") => "accept (commercial messages allowed)".to_owned(),
                    ("none", _) => "reject: no_consent".to_owned(),
                    (r, _) => format!("reject: {r}"),
                };
                println!("  decision ({regime}, snapshot only, commercial): {decision}");
            }
            Ok(ExitCode::SUCCESS)
        }
    }
}

/// Resolves on SIGTERM or SIGINT.
async fn shutdown_signal() {
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
