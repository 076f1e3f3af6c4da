//! The `consentgate` binary: a thin CLI over the library (STYLE §1). `main` parses the
//! command line, sets up logging and the runtime, and hands each command to its module under
//! `src/cli/`; the work itself is the library's.

mod cli;

use std::path::PathBuf;
use std::process::ExitCode;

use clap::{CommandFactory, Parser, Subcommand, ValueEnum};

use consentgate::telemetry::{init_logging, LogFormat};

use cli::audit::AuditCmd;
use cli::complaints::ComplaintsCmd;
use cli::dlt::DltCmd;
use cli::snapshot::SnapshotCmd;
use cli::tools::{LoadArgs, RelayArgs, SmscSimArgs};

#[derive(Parser)]
#[command(
    name = "consentgate",
    version = consentgate::telemetry::LONG_VERSION,
    about = "Inline SMPP gateway filter: consent / do-not-call enforcement for commercial SMS",
    long_about = "Inline SMPP gateway filter: consent / do-not-call enforcement for commercial SMS.\n\n\
        Sits between sender platforms (ESMEs) and the carrier's SMSC, decides every submit_sm \
        against an in-memory consent / do-not-call snapshot and captures MO opt-outs.",
    after_help = "Exit status: 0 success, 1 failure, 64 bad usage or a bad config/input file, \
        69 a service the command needs is unreachable, 77 the admin token was refused."
)]
struct Cli {
    /// Log output format: human (colour only on a terminal, and not with NO_COLOR set) or
    /// json (one object per line). RUST_LOG sets the level (default info).
    #[arg(long, global = true, value_enum, default_value = "human")]
    log_format: LogFmt,
    #[command(subcommand)]
    command: Command,
}

#[derive(Clone, Copy, ValueEnum)]
enum LogFmt {
    /// Text lines for people.
    Human,
    /// One JSON object per line, for a log pipeline.
    Json,
}

#[derive(Subcommand)]
enum Command {
    /// Run the gateway.
    Run {
        /// The config file (TOML); SIGHUP, `systemctl reload` and `POST /v1/config/reload` re-read it.
        #[arg(long)]
        config: PathBuf,
        /// Reload the config when the file, or a file its `include` patterns match, changes
        /// (polled every second, applied once the files have been still for a second).
        #[arg(long)]
        watch_config: bool,
    },
    /// Unbind every ESME of a running gateway and wait until they are gone (POST /v1/drain).
    ///
    /// The gateway refuses binds until `drain --cancel`; its process and admin API stay up.
    /// Exit 0 drained (or resumed), 1 sessions left at the end of --wait, 64 bad usage,
    /// 69 admin API unreachable, 77 token refused.
    Drain(cli::drain::DrainArgs),
    /// Validate a config file; exit 64 and list every problem if it is bad.
    CheckConfig {
        /// The config file (TOML), with the files its `include` patterns name.
        file: PathBuf,
    },
    /// Run everything on loopback: SMSC simulator, gateway, a short load through it.
    Demo {
        /// Messages to send through the gateway.
        #[arg(long, default_value_t = 200_000)]
        count: u64,
    },
    /// SMSC simulator (SMPP; CMPP 2.0/3.0 ISMG with --cmpp) for tests, demos and benchmarks.
    SmscSim(SmscSimArgs),
    /// ESME load generator: binds, sends, reports latency and statuses.
    ///
    /// Exit 0 when every bind succeeded, every submit was answered and (with --scenario)
    /// every status was the expected one; 1 otherwise, with the reasons on stderr (and in
    /// --report); 64 bad usage.
    Load(Box<LoadArgs>),
    /// Build, inspect and query consent snapshots.
    #[command(subcommand)]
    Snapshot(SnapshotCmd),
    /// Build, inspect and query the India DLT registry (entities, headers, templates, chains,
    /// preferences).
    #[command(subcommand)]
    Dlt(DltCmd),
    /// Query the decision audit log.
    #[command(subcommand)]
    Audit(AuditCmd),
    /// Read the 12321 complaint register.
    #[command(subcommand)]
    Complaints(ComplaintsCmd),
    /// Inspect and trim the stream that replicates live statements between nodes.
    #[command(subcommand)]
    Replication(cli::replication::ReplicationCmd),
    /// Plain frame-forwarding TCP relay: the benchmark baseline (no SMPP logic).
    Relay(RelayArgs),
    /// Print a shell completion script, e.g. `consentgate completions bash > /etc/bash_completion.d/consentgate`.
    Completions {
        /// The shell to complete for.
        #[arg(value_enum)]
        shell: Shell,
    },
    /// Write the man pages (consentgate.1 and one per command), or print consentgate.1.
    Man {
        /// Write every page into this directory instead of printing the main page.
        #[arg(long, value_name = "DIR")]
        out: Option<PathBuf>,
    },
    /// Print the command-line reference as Markdown (the book's reference/cli.md).
    #[command(hide = true)]
    Reference,
}

#[derive(Clone, Copy, ValueEnum)]
enum Shell {
    Bash,
    Zsh,
    Fish,
}

fn main() -> ExitCode {
    let cli = match Cli::try_parse() {
        Ok(c) => c,
        Err(e) => {
            let code = if e.use_stderr() { cli::EX_USAGE } else { 0 };
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
        Command::Run { config, watch_config } => cli::run::run(config, watch_config).await,
        Command::Drain(a) => cli::drain::drain(a).await,
        Command::CheckConfig { file } => Ok(cli::run::check_config(file)),
        Command::Demo { count } => consentgate::demo::run(count).await.map(|()| ExitCode::SUCCESS),
        Command::SmscSim(a) => cli::tools::smsc_sim(a).await,
        Command::Load(a) => cli::tools::load(*a).await,
        Command::Snapshot(cmd) => cli::snapshot::run(cmd),
        Command::Dlt(cmd) => cli::dlt::run(cmd),
        Command::Audit(cmd) => cli::audit::run(cmd),
        Command::Complaints(cmd) => cli::complaints::run(cmd),
        Command::Replication(cmd) => cli::replication::run(cmd).await,
        Command::Relay(a) => cli::tools::relay(a).await,
        Command::Completions { shell } => {
            let shell = match shell {
                Shell::Bash => clap_complete::Shell::Bash,
                Shell::Zsh => clap_complete::Shell::Zsh,
                Shell::Fish => clap_complete::Shell::Fish,
            };
            clap_complete::generate(shell, &mut Cli::command(), "consentgate", &mut std::io::stdout());
            Ok(ExitCode::SUCCESS)
        }
        Command::Man { out } => cli::manual::man(Cli::command(), out.as_deref()),
        Command::Reference => {
            print!("{}", cli::manual::markdown(Cli::command()));
            Ok(ExitCode::SUCCESS)
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Every argument and every command says what it is for: `--help`, the man pages and the
    /// book's CLI reference all come from these texts.
    #[test]
    fn every_argument_and_command_has_help() {
        let mut missing = Vec::new();
        cli::manual::walk(&Cli::command(), &mut |path, cmd| {
            if cmd.get_about().is_none() && path.len() > 1 {
                missing.push(path.join(" "));
            }
            for a in cmd.get_arguments() {
                let id = a.get_id().as_str();
                if id == "help" || id == "version" {
                    continue;
                }
                if a.get_help().is_none() && a.get_long_help().is_none() {
                    missing.push(format!("{} {id}", path.join(" ")));
                }
            }
        });
        assert!(missing.is_empty(), "no help text: {missing:#?}");
        Cli::command().debug_assert();
    }
}
