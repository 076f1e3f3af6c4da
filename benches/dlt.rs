//! DLT registry: template matching and lookups at scale (issue #30).
//!
//! **Hypothesis.** With the template id given, a match is one index probe, one record and
//! one content read: ≤ 1 µs on a registry that does not fit in cache. Without it, the anchor
//! index finds the candidates in a few probes, so the cost stays within a few µs and does
//! not grow with the PE's template count: for the PE with 100 k templates it stays far below
//! the **baseline**, matching the PE's templates for that header one after the other (what a
//! scrubbing engine without an index does). entity / header / chain / preference lookups
//! cost about one or two DRAM misses each.
//!
//! Setup (outside timing): `CONSENTGATE_BENCH_DLT=FILE` opens an existing registry (the 10 M
//! one: `consentgate dlt synth --dir D && consentgate dlt build ... --out FILE`); otherwise
//! `CONSENTGATE_BENCH_TEMPLATES` (default 1 M) templates are generated with `dlt::synth`
//! into a temporary directory and built. Queries: 4 096 texts of random templates (random
//! records of the whole file, so every query misses the cache), each placeholder filled with
//! 0–30 characters; and 4 096 of the biggest PE (entity 0). Element throughput is per query.

use std::hint::black_box;
use std::sync::{Arc, OnceLock};
use std::time::{Duration, Instant};

use consentgate::dlt::{self, synth, Registry, Status};
use criterion::{criterion_group, criterion_main, Criterion, Throughput};

const QUERIES: usize = 4096;

struct Query {
    pe: u64,
    header: String,
    id: u64,
    text: String,
}

struct Fixture {
    /// Shared with the engine of the `dlt_decide` group.
    reg: Arc<Registry>,
    random: Vec<Query>,
    big: Vec<Query>,
    /// The big PE's templates per header (record order), for the baseline scan.
    big_by_header: std::collections::HashMap<String, Vec<(u64, String)>>,
    msisdns: Vec<u64>,
    tms: Vec<(u64, u64)>,
}

fn fixture() -> &'static Fixture {
    static FX: OnceLock<Fixture> = OnceLock::new();
    FX.get_or_init(|| {
        let (reg, _dir) = match std::env::var("CONSENTGATE_BENCH_DLT") {
            Ok(path) => (Registry::open(&path).expect("open"), None),
            Err(_) => {
                let n: u64 = std::env::var("CONSENTGATE_BENCH_TEMPLATES").ok().and_then(|v| v.parse().ok()).unwrap_or(1_000_000);
                let dir = tempfile::tempdir().unwrap();
                let o = synth::SynthOptions {
                    dir: dir.path().to_owned(),
                    entities: (n / 33).max(10),
                    headers: (n / 10).max(100),
                    templates: n,
                    big_pe_templates: (n / 100).clamp(1000, 100_000),
                    preferences: n / 10,
                    seed: 1,
                };
                let t = Instant::now();
                let f = synth::write(&o, |_| {}).unwrap();
                let out = dir.path().join("bench.dlt");
                let r = dlt::build(&f.build_options(out.clone())).expect("build");
                eprintln!("[dlt bench] generated and built {} templates in {:.1?}: {}", r.templates, t.elapsed(), r.bytes_written);
                (Registry::open(&out).expect("open"), Some(dir))
            }
        };
        let info = reg.info();
        eprintln!(
            "[dlt bench] registry: {} templates, {} headers, {} entities; {} bytes ({:.1} B/template); load + validate {:.2?}",
            info.templates,
            info.headers,
            info.entities,
            info.file_bytes,
            info.bytes_per_template(),
            info.load_duration
        );
        let mut seed = 42;
        let n = info.templates;
        let query = |t: dlt::Template<'_>, seed: &mut u64| Query {
            pe: t.pe,
            header: reg.template_headers(&t).next().unwrap().to_owned(),
            id: t.id,
            text: synth::fill(t.content, seed),
        };
        // Random active templates over the whole file (records in input order: index by a
        // random record number through the template's own id).
        let mut random = Vec::with_capacity(QUERIES);
        while random.len() < QUERIES {
            let i = synth::splitmix(&mut seed) % n;
            if let Some(t) = reg.template(synth::template_id(i)).filter(|t| t.status == Status::Active) {
                random.push(query(t, &mut seed));
            }
        }
        let big_pe = synth::pe_id(0);
        let mut big_by_header: std::collections::HashMap<String, Vec<(u64, String)>> = Default::default();
        let mut big_templates = Vec::new();
        for t in reg.templates().filter(|t| t.pe == big_pe) {
            for h in reg.template_headers(&t) {
                big_by_header.entry(h.to_owned()).or_default().push((t.id, t.content.to_owned()));
            }
            if t.status == Status::Active {
                big_templates.push(t);
            }
        }
        let mut big = Vec::with_capacity(QUERIES);
        while big.len() < QUERIES {
            let t = big_templates[(synth::splitmix(&mut seed) % big_templates.len() as u64) as usize];
            big.push(query(t, &mut seed));
        }
        eprintln!(
            "[dlt bench] big PE: {} templates over {} headers (largest {})",
            big_templates.len(),
            big_by_header.len(),
            big_by_header.values().map(Vec::len).max().unwrap_or(0)
        );
        let msisdns = (0..QUERIES).map(|_| 916_000_000_000 + synth::splitmix(&mut seed) % 4_000_000_000).collect();
        let tms = (0..QUERIES)
            .map(|_| {
                let r = synth::splitmix(&mut seed);
                (synth::pe_id(r % info.entities), synth::tm_id(r >> 20))
            })
            .collect();
        let s = reg.anchor_stats();
        eprintln!("[dlt bench] anchors: {s:?}");
        Fixture { reg: Arc::new(reg), random, big, big_by_header, msisdns, tms }
    })
}

fn group<'a>(
    c: &'a mut Criterion,
    name: &str,
    n: usize,
) -> criterion::BenchmarkGroup<'a, criterion::measurement::WallTime> {
    let mut g = c.benchmark_group(name);
    g.sample_size(20).warm_up_time(Duration::from_secs(1)).measurement_time(Duration::from_secs(3));
    g.throughput(Throughput::Elements(n as u64));
    g
}

fn matching(c: &mut Criterion) {
    let fx = fixture();
    let reg = &fx.reg;
    let ok = |r: Result<dlt::Template<'_>, dlt::Mismatch>| r.is_ok() as usize;

    let mut g = group(c, "dlt_match_random_template", QUERIES);
    g.bench_function("with_template_id", |b| {
        b.iter(|| {
            fx.random.iter().map(|q| ok(reg.match_text(q.pe, &q.header, Some(q.id), black_box(&q.text)))).sum::<usize>()
        })
    });
    g.bench_function("without_template_id", |b| {
        b.iter(|| {
            fx.random.iter().map(|q| ok(reg.match_text(q.pe, &q.header, None, black_box(&q.text)))).sum::<usize>()
        })
    });
    g.finish();

    let mut g = group(c, "dlt_match_big_pe", QUERIES);
    g.bench_function("with_template_id", |b| {
        b.iter(|| {
            fx.big.iter().map(|q| ok(reg.match_text(q.pe, &q.header, Some(q.id), black_box(&q.text)))).sum::<usize>()
        })
    });
    g.bench_function("without_template_id", |b| {
        b.iter(|| fx.big.iter().map(|q| ok(reg.match_text(q.pe, &q.header, None, black_box(&q.text)))).sum::<usize>())
    });
    g.finish();

    // The naive baseline: the PE's templates for the header, one after the other, until one
    // matches (256 queries: it is slow).
    let mut g = group(c, "dlt_match_big_pe_baseline", 256);
    g.bench_function("scan_templates_of_header", |b| {
        b.iter(|| {
            fx.big[..256]
                .iter()
                .filter(|q| {
                    fx.big_by_header[&q.header]
                        .iter()
                        .any(|(_, content)| Registry::matches(content, black_box(&q.text)).is_ok())
                })
                .count()
        })
    });
    g.finish();

    let mut g = group(c, "dlt_lookups", QUERIES);
    g.bench_function("entity", |b| {
        b.iter(|| fx.tms.iter().filter(|(pe, _)| reg.entity(black_box(*pe)).is_some()).count())
    });
    g.bench_function("header", |b| {
        b.iter(|| fx.random.iter().filter(|q| reg.header(black_box(&q.header)).is_some()).count())
    });
    g.bench_function("template", |b| {
        b.iter(|| fx.random.iter().filter(|q| reg.template(black_box(q.id)).is_some()).count())
    });
    g.bench_function("chain_declared", |b| {
        b.iter(|| fx.tms.iter().filter(|&&(pe, tm)| reg.chain_declared(black_box(pe), tm)).count())
    });
    g.bench_function("preference", |b| {
        b.iter(|| fx.msisdns.iter().filter(|&&m| reg.preference(black_box(m)).is_some()).count())
    });
    g.finish();
}

/// The whole DLT path of the pipeline (`Engine::decide` for an account with `scrubbing =
/// "dlt"`): TLVs read, entity, header, template match, category, chain, then consent /
/// preferences / promotional hours by category — against `dlt_match_random_template`, the
/// match alone. Queries: the random templates, each with its PE id, template id (or none)
/// and a TM declared for its PE in the TLVs, to random subscribers, at 12:00 IST.
fn decide(c: &mut Criterion) {
    use consentgate::consent::delta::Delta;
    use consentgate::policy::dlt::{DltConfig, Scrubbing, DEFAULT_PROMOTIONAL_HOURS};
    use consentgate::policy::{Account, ConsentView, Engine, Message, MessageClass, PolicyConfig};
    use consentgate::smpp::peek::Addr;
    use consentgate::smpp::text::Coding;

    let fx = fixture();
    let reg = &fx.reg;
    let config = PolicyConfig {
        default_country_code: "91".into(),
        dlt: Some(DltConfig {
            registry: reg.clone(),
            path: "bench.dlt".into(),
            pe_id_tlv: 0x1400,
            template_id_tlv: 0x1401,
            chain_tlv: 0x1402,
            promotional_hours: DEFAULT_PROMOTIONAL_HOURS,
            zone: consentgate::time::Zone::get("Asia/Kolkata").unwrap(),
        }),
        ..PolicyConfig::default()
    };
    let account = Account {
        system_id: "tm".into(),
        entity: "tm".into(),
        class: MessageClass::Marketing,
        licence: Some("UL-1".into()),
        licence_expires: None,
        sender_id: Vec::new(),
        source_class: Vec::new(),
        service_type_class: Vec::new(),
        max_tps: None,
        bind_types: Vec::new(),
        max_sessions: None,
        quiet_hours: None,
        signatures: Vec::new(),
        per_entity_per_day: None,
        scrubbing: Scrubbing::Dlt,
        pe_id: None,
    };
    let engine = Engine::new(config, vec![account]);
    let idx = engine.lookup("tm").unwrap();
    let delta = Delta::new();
    let view = ConsentView { snapshot: None, delta: &delta, live_entity: None, snap_entity: None };
    // 2026-06-01 06:30 UTC = 12:00 IST.
    let now = consentgate::time::Now::at(1_780_295_400_000);
    let tlv = |out: &mut Vec<u8>, tag: u16, v: &[u8]| {
        out.extend_from_slice(&tag.to_be_bytes());
        out.extend_from_slice(&(v.len() as u16).to_be_bytes());
        out.extend_from_slice(v);
    };
    // Per query: destination digits, TLVs with the template id, TLVs without. A TM declared
    // for the query's PE is looked for among the synthetic ids (setup, untimed).
    let prepared: Vec<(String, Vec<u8>, Vec<u8>)> = fx
        .random
        .iter()
        .zip(&fx.msisdns)
        .map(|(q, m)| {
            let tm = (0..5000).map(synth::tm_id).find(|&tm| reg.chain_declared(q.pe, tm)).unwrap_or(synth::tm_id(0));
            let (mut with, mut without) = (Vec::new(), Vec::new());
            for out in [&mut with, &mut without] {
                tlv(out, 0x1400, q.pe.to_string().as_bytes());
                tlv(out, 0x1402, tm.to_string().as_bytes());
            }
            tlv(&mut with, 0x1401, q.id.to_string().as_bytes());
            (m.to_string(), with, without)
        })
        .collect();
    let message = |i: usize, with_id: bool| {
        let (q, p) = (&fx.random[i], &prepared[i]);
        Message {
            source: Addr { ton: 5, npi: 0, addr: q.header.as_bytes() },
            destination: Addr { ton: 1, npi: 1, addr: p.0.as_bytes() },
            service: b"",
            coding: Coding::Ucs2,
            user_data: b"",
            tlvs: if with_id { &p.1 } else { &p.2 },
            text: Some(&q.text),
        }
    };
    let mut outcomes: std::collections::BTreeMap<&str, usize> = Default::default();
    for i in 0..QUERIES {
        let d = engine.decide(idx, &view, &message(i, true), now);
        *outcomes.entry(d.verdict.reason().map_or("accepted", |r| r.label())).or_default() += 1;
    }
    eprintln!("[dlt bench] decide outcomes (with template id): {outcomes:?}");

    let mut g = group(c, "dlt_decide", QUERIES);
    for (name, with_id) in [("with_template_id", true), ("without_template_id", false)] {
        g.bench_function(name, |b| {
            b.iter(|| {
                (0..QUERIES)
                    .filter(|&i| engine.decide(idx, &view, black_box(&message(i, with_id)), now).verdict.forwards())
                    .count()
            })
        });
    }
    g.finish();
}

criterion_group!(benches, matching, decide);
criterion_main!(benches);
