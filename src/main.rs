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
        /// Total submit_sm to send (0 = until --duration).
        #[arg(long, default_value_t = 100_000)]
        count: u64,
        /// Cap on the sending phase.
        #[arg(long, value_parser = parse_duration, default_value = "10s")]
        duration: Duration,
        /// Total rate cap (msg/s).
        #[arg(long)]
        rate: Option<u64>,
        /// Request delivery receipts.
        #[arg(long)]
        receipts: bool,
        /// JSONL scenario: {"source","destination","text","encoding","expect"} per line.
        #[arg(long)]
        scenario: Option<PathBuf>,
        /// Write the JSON report here.
        #[arg(long)]
        report: Option<PathBuf>,
    },
    /// Plain frame-forwarding TCP relay: the benchmark baseline (no SMPP logic).
    Relay {
        #[arg(long)]
        listen: SocketAddr,
        #[arg(long)]
        upstream: SocketAddr,
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
            consentgate::run(cfg, shutdown_signal()).await?;
            Ok(ExitCode::SUCCESS)
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
                let Some(st) = parse_status(st) else {
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
            report,
        } => {
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

fn parse_status(s: &str) -> Option<u32> {
    match s.strip_prefix("0x").or_else(|| s.strip_prefix("0X")) {
        Some(h) => u32::from_str_radix(h, 16).ok(),
        None => s.parse().ok(),
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
