//! `dlt build | inspect | lookup | synth`: compile, check and query the India DLT registry
//! offline (architecture §11).

use std::path::PathBuf;
use std::process::ExitCode;
use std::time::Instant;

use clap::Subcommand;
use std::sync::Arc;

use consentgate::consent::delta::Delta;
use consentgate::consent::msisdn::normalise_text;
use consentgate::dlt::{self, synth, BuildOptions, Registry};
use consentgate::policy::dlt::{explain, DltConfig, Explained, Probe};
use consentgate::policy::{ConsentView, DailyWindow};
use consentgate::time::{parse_timestamp_ms, Clock, Now};

use super::snapshot::parse_size;
use super::EX_USAGE;

#[derive(Subcommand)]
pub enum DltCmd {
    /// Compile the operator's DLT exports (RFC 4180 CSV) into one registry file.
    Build {
        /// `pe_id,name,status` (status active | inactive | blacklisted).
        #[arg(long)]
        entities: PathBuf,
        /// `header,pe_id,type,status` (type P | S | T | G).
        #[arg(long)]
        headers: PathBuf,
        /// `template_id,pe_id,headers,category,content_category,content,status`.
        #[arg(long)]
        templates: PathBuf,
        /// `pe_id,tm_id`: the telemarketers each PE declared in its delivery chain.
        #[arg(long)]
        chains: Option<PathBuf>,
        /// `msisdn,categories,registered_at` (categories `all` or `;`-separated 1–8).
        #[arg(long)]
        preferences: Option<PathBuf>,
        /// The registry file to write (a temporary name, then renamed).
        #[arg(long)]
        out: PathBuf,
        /// Skip up to N bad rows (reported) instead of failing.
        #[arg(long, default_value_t = 0)]
        max_invalid: u64,
        /// Country code for national numbers in preferences.csv.
        #[arg(long, default_value = "91")]
        default_country_code: String,
        /// Memory limit (e.g. 2GiB): the build stops, saying so, rather than hold more.
        /// Contents are streamed to a temporary file; the rest needs about 110 bytes per
        /// template (≈ 1.1 GB at 10 M).
        #[arg(long, value_parser = parse_size)]
        memory: Option<u64>,
    },
    /// Print a registry's counts, section sizes and anchor buckets (validates it first).
    Inspect {
        /// The registry file.
        file: PathBuf,
    },
    /// Say whether a message would pass the DLT steps, and which one refuses it: the gateway's
    /// own checks on this registry, at `--at`, with the promotional hours of `[dlt]`'s default
    /// (or `--promotional-hours`). Offline there is no consent data: a subscriber's consent is
    /// what the running gateway's `GET /v1/dlt/lookup` adds.
    Lookup {
        /// The registry file.
        file: PathBuf,
        /// The PE id the message claims (TLV 0x1400, or the account's pe_id).
        #[arg(long)]
        pe_id: u64,
        /// The header (sender id), case-sensitive.
        #[arg(long)]
        header: String,
        /// The template id the message claims (TLV 0x1401); without it the template is searched.
        #[arg(long)]
        template_id: Option<u64>,
        /// The delivery chain (TLV 0x1402): the telemarketer ids, comma-separated; without it
        /// the chain step refuses, as the gateway does.
        #[arg(long, alias = "tm", value_name = "TM[,TM…]")]
        chain: Option<String>,
        /// The destination (E.164, or national with --default-country-code): its registered
        /// preferences are checked for service-explicit and promotional templates.
        #[arg(long)]
        msisdn: Option<String>,
        /// Country code for a national --msisdn.
        #[arg(long, default_value = "91")]
        default_country_code: String,
        /// When the message would be sent (RFC 3339) [default: now].
        #[arg(long)]
        at: Option<String>,
        /// Promotional hours START-END (HH:MM-HH:MM) in Asia/Kolkata.
        #[arg(long, default_value = "09:00-21:00")]
        promotional_hours: String,
        /// The message text.
        #[arg(long)]
        text: String,
    },
    /// Write a synthetic registry's five CSVs (benchmarks; see benches/dlt.rs).
    Synth {
        /// Directory to write entities.csv, headers.csv, templates.csv, chains.csv, preferences.csv.
        #[arg(long)]
        dir: PathBuf,
        /// Content templates to write (1–4 `{#var#}` each).
        #[arg(long, default_value_t = 10_000_000)]
        templates: u64,
        /// Headers (sender ids), spread over the entities.
        #[arg(long, default_value_t = 1_000_000)]
        headers: u64,
        /// Principal entities.
        #[arg(long, default_value_t = 300_000)]
        entities: u64,
        /// Templates of the biggest PE (entity 0).
        #[arg(long, default_value_t = 100_000)]
        big_pe_templates: u64,
        /// Subscribers with registered preferences.
        #[arg(long, default_value_t = 1_000_000)]
        preferences: u64,
        /// Seed of the generator: the same seed writes the same files.
        #[arg(long, default_value_t = 1)]
        seed: u64,
    },
}

pub fn run(cmd: DltCmd) -> anyhow::Result<ExitCode> {
    match cmd {
        DltCmd::Build {
            entities,
            headers,
            templates,
            chains,
            preferences,
            out,
            max_invalid,
            default_country_code,
            memory,
        } => {
            let opts = BuildOptions {
                entities,
                headers,
                templates,
                chains,
                preferences,
                out,
                max_invalid,
                default_cc: default_country_code,
                memory,
            };
            match dlt::build(&opts) {
                Ok(r) => {
                    println!("{r}");
                    Ok(ExitCode::SUCCESS)
                }
                Err(e) => {
                    eprintln!("dlt build failed: {e}");
                    Ok(ExitCode::FAILURE)
                }
            }
        }
        DltCmd::Inspect { file } => match Registry::open(&file) {
            Ok(r) => {
                println!("{}", r.info());
                let s = r.anchor_stats();
                println!(
                    "  anchors:            {} over {} (PE, header) groups; largest bucket {} template(s); {} in buckets over 8; most probes per text {}",
                    s.anchors, s.groups, s.largest, s.in_buckets_over_8, s.most_probes
                );
                Ok(ExitCode::SUCCESS)
            }
            Err(e) => {
                eprintln!("{e}");
                Ok(ExitCode::FAILURE)
            }
        },
        DltCmd::Lookup {
            file,
            pe_id,
            header,
            template_id,
            chain,
            msisdn,
            default_country_code,
            at,
            promotional_hours,
            text,
        } => {
            let usage = |m: String| {
                eprintln!("dlt lookup: {m}");
                Ok(ExitCode::from(EX_USAGE))
            };
            let msisdn = match msisdn.as_deref().map(|n| normalise_text(n, &default_country_code)) {
                None => None,
                Some(Ok(n)) => Some(n),
                Some(Err(e)) => return usage(format!("--msisdn: {e}")),
            };
            let now = match at.as_deref() {
                None => Clock::system().now(),
                Some(t) => match parse_timestamp_ms(t.as_bytes()) {
                    Some(ms) => Now::at(ms),
                    None => return usage(format!("--at {t:?}: expected an RFC 3339 time")),
                },
            };
            let window = promotional_hours.split_once('-').and_then(|(s, e)| {
                Some(DailyWindow { start: DailyWindow::parse_time(s)?, end: DailyWindow::parse_time(e)? })
            });
            let Some(window) = window else {
                return usage(format!("--promotional-hours {promotional_hours:?}: expected HH:MM-HH:MM"));
            };
            let registry = match Registry::open(&file) {
                Ok(r) => Arc::new(r),
                Err(e) => {
                    eprintln!("{e}");
                    return Ok(ExitCode::FAILURE);
                }
            };
            let cfg = DltConfig::offline(registry, file, window)?;
            let probe =
                Probe { pe: Some(pe_id), header: &header, template_id, chain: chain.as_deref(), text: &text, msisdn };
            let delta = Delta::new();
            let data = ConsentView { snapshot: None, delta: &delta, live_entity: None, snap_entity: None };
            Ok(print_explained(&explain(&cfg, &probe, &data, now)))
        }
        DltCmd::Synth { dir, templates, headers, entities, big_pe_templates, preferences, seed } => {
            if entities < 6 || headers < 55 {
                eprintln!("dlt synth: at least 6 entities and 55 headers");
                return Ok(ExitCode::from(EX_USAGE));
            }
            let t = Instant::now();
            let o = synth::SynthOptions { dir, entities, headers, templates, big_pe_templates, preferences, seed };
            let files =
                synth::write(&o, |n| eprintln!("  {n} templates written ({:.0} s)", t.elapsed().as_secs_f64()))?;
            println!("wrote {} and four more in {:.1} s", files.templates.display(), t.elapsed().as_secs_f64());
            Ok(ExitCode::SUCCESS)
        }
    }
}

/// Each step with its verdict; exit 0 when the message passes, 1 when a step refuses it.
fn print_explained(x: &Explained) -> ExitCode {
    for s in &x.steps {
        let v = if s.ok { "ok" } else { "FAIL" };
        println!("  {:<9} {v}: {}", s.step, s.detail);
    }
    match x.outcome {
        Ok(p) => {
            println!("verdict: pass ({}; no consent data offline)", p.category.as_str());
            ExitCode::SUCCESS
        }
        Err(r) => {
            let step = x.steps.last().map_or("entity", |s| s.step);
            println!("verdict: reject ({step}: {})", r.label());
            ExitCode::FAILURE
        }
    }
}
