//! `dlt build | inspect | lookup | synth`: compile, check and query the India DLT registry
//! offline (architecture §11).

use std::path::PathBuf;
use std::process::ExitCode;
use std::time::Instant;

use clap::Subcommand;
use consentgate::dlt::{self, synth, BuildOptions, Mismatch, Registry, Status};

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
    /// Say whether a message would pass the DLT checks, and which one fails.
    Lookup {
        /// The registry file.
        file: PathBuf,
        /// The PE id the message claims (TLV 0x1400).
        #[arg(long)]
        pe_id: u64,
        /// The header (sender id), case-sensitive.
        #[arg(long)]
        header: String,
        /// The template id the message claims (TLV 0x1401); without it the template is searched.
        #[arg(long)]
        template_id: Option<u64>,
        /// The telemarketer that delivered it (checked against the PE's declared chain).
        #[arg(long)]
        tm: Option<u64>,
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
        DltCmd::Lookup { file, pe_id, header, template_id, tm, text } => {
            let r = match Registry::open(&file) {
                Ok(r) => r,
                Err(e) => {
                    eprintln!("{e}");
                    return Ok(ExitCode::FAILURE);
                }
            };
            Ok(lookup(&r, pe_id, &header, template_id, tm, &text))
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

/// The DLT steps in the gateway's order (entity, header, template, chain), each printed with
/// its verdict; exit 0 when the message passes, 1 when a step refuses it.
fn lookup(r: &Registry, pe: u64, header: &str, template_id: Option<u64>, tm: Option<u64>, text: &str) -> ExitCode {
    let fail = |step: &str, why: String| {
        println!("  {step:<9} FAIL: {why}");
        println!("verdict: reject ({step})");
        ExitCode::FAILURE
    };
    match r.entity(pe) {
        None => return fail("entity", format!("PE {pe} not registered")),
        Some(Status::Active) => println!("  entity    ok: PE {pe} active"),
        Some(s) => return fail("entity", format!("PE {pe} is {}", s.as_str())),
    }
    match r.header(header) {
        None => return fail("header", format!("{header:?} not registered (headers are case-sensitive)")),
        Some(h) if h.pe != pe => return fail("header", format!("{header:?} belongs to PE {}, not PE {pe}", h.pe)),
        Some(h) if h.status != Status::Active => return fail("header", format!("{header:?} is {}", h.status.as_str())),
        Some(h) => println!("  header    ok: {header:?} of PE {pe}, type {}", h.kind.letter()),
    }
    match r.match_text(pe, header, template_id, text) {
        Ok(t) => {
            let cc = t.content_category.map_or_else(String::new, |c| format!(", content category {c}"));
            println!(
                "  template  ok: template {} of PE {}{} ({}{cc}): {:?}",
                t.id,
                t.pe,
                if template_id.is_some() { "" } else { ", found by its text" },
                t.category.as_str(),
                t.content
            );
        }
        Err(e) => {
            let what = match (&e, template_id) {
                (Mismatch::NoMatch { .. } | Mismatch::NoTemplateForHeader, _) => {
                    format!("{e} (PE {pe}, header {header:?})")
                }
                (_, Some(id)) => format!("{e} (template {id}, PE {pe})"),
                (_, None) => format!("{e} (PE {pe})"),
            };
            return fail("template", format!("{what} [{}]", e.label()));
        }
    }
    if let Some(tm) = tm {
        if r.chain_declared(pe, tm) {
            println!("  chain     ok: TM {tm} declared by PE {pe}");
        } else {
            return fail("chain", format!("TM {tm} not declared in PE {pe}'s delivery chain"));
        }
    }
    println!("verdict: pass (DLT steps; consent, preferences and hours by category are not checked here)");
    ExitCode::SUCCESS
}
