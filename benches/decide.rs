//! decide() over a realistic snapshot file (criterion, `cargo bench --bench decide`).
//!
//! Hypothesis: the full per-destination decision — licence and sender checks, class, MSISDN
//! normalisation from the wire bytes, live-delta probe, one snapshot table probe (pair state and
//! DNC flag from one cache line) — costs ≤ 150 ns median at 10 M records (5 M do-not-call numbers + 5 M consent
//! pairs over 1000 entities), far below the relay's own ~2 µs per PDU.
//!
//! Baseline: the naive structure, a std `HashMap<(u64, u32), u8>` with SipHash holding the same
//! pairs, probed with the same (msisdn, entity) queries (lookup only, already-parsed keys; built
//! only when the pair count is ≤ 20 M).
//!
//! Setup, outside every timed loop: `dnc.csv` and `consent.csv` are generated in a temp dir,
//! compiled to a snapshot file with `snapshot::build` (the production path) and loaded with
//! `Snapshot::open` (load time and bytes per record are printed). 1000 accounts, one per entity.
//! 1 M queries (destination digits inline, TON 1): 50 % a granted (msisdn, entity) pair with that
//! entity's account, 25 % a DNC number, 25 % a random number, the last two with a random account.
//! The live delta is empty, or holds 1 M statements (grants, revokes, DNC). A third case takes
//! the same mix in runs of 64 queries from one account (`_session_batches`): a session decides
//! a read batch for its one account, so the account's data stays in cache; the random-account
//! cases are the worst case. `_session_prefetch` is that batch as the gateway handles it:
//! the snapshot lines of destinations `PREFETCH_DISTANCE` queries ahead prefetched,
//! `PREFETCH_GROUP` at a time (what `SessionPolicy::prefetch_ahead` does: `Engine::subscriber` +
//! `Snapshot::prefetch`), then the decision (`Engine::decide`, the pipeline
//! `SessionPolicy::decide` calls) — timed per decision, prefetch included.
//!
//! `CONSENTGATE_BENCH_RECORDS` sets the total record count (default 10000000; e.g. 200000000
//! for 100 M DNC + 100 M pairs: ~6 GB of CSV and ~3.2 GB peak during the build).
//! `CONSENTGATE_BENCH_QUIET_HOURS=1` turns step 7 on (a window the bench never falls in, three
//! zones), to price the subscriber's local time per decision.
//!
//! Group `decide_text`: the same random queries with a 36-character UCS-2
//! marketing text that carries its 【signature】 and opt-out hint. `no_text_steps` is the
//! engine above (the text is not read); `1000_content_rules` adds 1 000 content rules (the set
//! of `benches/content_rules.py`: 2 000 literals, 100 regexes, none matching) and times what a
//! session then does per message — decode and fold the text, then decide; `all_steps` adds
//! the commercial checks, frequency caps and quiet hours too. Target: 1 000 rules ≤ 2× the
//! cost without.
//! `CONSENTGATE_BENCH_SNAPSHOT=FILE` runs on an existing snapshot instead (e.g. the 1 B-record
//! one of `benches/billion.py`): the granted pairs (entities `brand-N`) and DNC numbers of the
//! queries are sampled from its table, and there is no hash-map baseline.

mod common;
use common::*;

use std::collections::HashMap;
use std::fmt::Write as _;
use std::fs::File;
use std::hint::black_box;
use std::io::{BufWriter, Write};
use std::time::{Duration, Instant};

use consentgate::config::Config;
use consentgate::consent::delta::Delta;
use consentgate::consent::snapshot::{build, BuildOptions, PairState, Snapshot};
use consentgate::consent::statement::{EntityName, NodeId, Statement, StatementId, StatementKind, StatementSource};
use consentgate::policy::{AccountIdx, ConsentView, Engine, Message, PREFETCH_DISTANCE, PREFETCH_GROUP};
use consentgate::smpp::peek::Addr;
use consentgate::smpp::text::Coding;
use criterion::{criterion_group, criterion_main, Criterion, Throughput};

const ENTITIES: u64 = 1000;
const QUERIES: usize = 1_000_000;
const LIVE_STATEMENTS: u64 = 1_000_000;
const BASELINE_MAX_PAIRS: u64 = 20_000_000;
/// Queries per account in a row for the session-batched case (a read batch of one session).
const SESSION_BATCH: usize = 64;

struct Rng(u64);
impl Rng {
    /// splitmix64.
    fn next(&mut self) -> u64 {
        splitmix(&mut self.0)
    }
    /// A 13-digit Chinese mobile number, 86 13x–19x.
    fn msisdn(&mut self) -> u64 {
        8_613_000_000_000 + self.next() % 7_000_000_000
    }
}

/// One query: account index and the destination as it sits in a PDU (inline bytes).
struct Query {
    account: u16,
    dest: [u8; 13],
    /// Parsed destination and the account's entity index, for the baseline.
    msisdn: u64,
}

struct Fixture {
    snap: Snapshot,
    cfg: Config,
    /// The config text `cfg` was parsed from (the text-step cases extend it).
    toml: String,
    queries: Vec<Query>,
    /// The same mix, but in runs of [`SESSION_BATCH`] queries from one account, as a session
    /// decides the PDUs of one read batch for its one account.
    batched: Vec<Query>,
    naive: Option<HashMap<(u64, u32), u8>>,
    total: u64,
}

fn fixture() -> Fixture {
    if let Some(path) = std::env::var_os("CONSENTGATE_BENCH_SNAPSHOT") {
        return fixture_from(std::path::Path::new(&path));
    }
    let total: u64 = std::env::var("CONSENTGATE_BENCH_RECORDS").ok().and_then(|v| v.parse().ok()).unwrap_or(10_000_000);
    let n = total / 2;
    let sample_every = (n / QUERIES as u64).max(1);
    let mut rng = Rng(0x5eed_0000_c0de_0001);
    let dir = tempfile::tempdir().expect("tempdir");
    let (dnc_path, consent_path, snap_path) =
        (dir.path().join("dnc.csv"), dir.path().join("consent.csv"), dir.path().join("consent.snap"));

    // 1. CSVs. DNC registrations in 2026-01, consent statements in 2026-05 (so a grant beats a
    //    DNC registration of the same number); 90 % grants, 10 % revokes.
    let t = Instant::now();
    let mut granted: Vec<(u64, u16)> = Vec::with_capacity(QUERIES + 1);
    let mut dnc: Vec<u64> = Vec::with_capacity(QUERIES + 1);
    let mut naive: Option<HashMap<(u64, u32), u8>> =
        (n <= BASELINE_MAX_PAIRS).then(|| HashMap::with_capacity(n as usize));
    {
        let mut d = BufWriter::with_capacity(8 << 20, File::create(&dnc_path).unwrap());
        let mut c = BufWriter::with_capacity(8 << 20, File::create(&consent_path).unwrap());
        d.write_all(b"msisdn,registered_at\n").unwrap();
        c.write_all(b"msisdn,entity,action,at\n").unwrap();
        let mut line = Vec::with_capacity(64);
        for i in 0..n {
            let m = rng.msisdn();
            line.clear();
            push_u64(&mut line, m);
            line.extend_from_slice(b",2026-01-");
            line.extend_from_slice(if i % 2 == 0 { b"10\n" } else { b"20\n" });
            d.write_all(&line).unwrap();
            if i % sample_every == 0 {
                dnc.push(m);
            }

            let m = rng.msisdn();
            let r = rng.next();
            let e = r % ENTITIES;
            let grant = (r >> 32) % 10 != 0;
            line.clear();
            push_u64(&mut line, m);
            line.extend_from_slice(b",brand-");
            push_u64(&mut line, e);
            line.extend_from_slice(if grant { b",grant,2026-05-01\n" } else { b",revoke,2026-05-01\n" });
            c.write_all(&line).unwrap();
            if grant && i % sample_every == 0 {
                granted.push((m, e as u16));
            }
            if let Some(h) = naive.as_mut() {
                h.insert((m, e as u32), u8::from(!grant));
            }
        }
        d.flush().unwrap();
        c.flush().unwrap();
    }
    let csv_bytes = std::fs::metadata(&dnc_path).unwrap().len() + std::fs::metadata(&consent_path).unwrap().len();
    eprintln!("[decide bench] {total} records: wrote {:.2} GB of CSV in {:.1?}", csv_bytes as f64 / 1e9, t.elapsed());

    // 2. Snapshot file via the production builder.
    let opts = BuildOptions {
        dnc: Some(dnc_path.clone()),
        consent: Some(consent_path.clone()),
        out: snap_path.clone(),
        ..BuildOptions::default()
    };
    let report = build(&opts, |_| {}).expect("snapshot build");
    eprintln!(
        "[decide bench] built {} dnc + {} pairs ({} entities) in {:.1?}, {} bytes",
        report.dnc, report.pairs, report.entities, report.elapsed, report.bytes_written
    );
    let _ = std::fs::remove_file(&dnc_path);
    let _ = std::fs::remove_file(&consent_path);

    // 3. Load.
    let t = Instant::now();
    let snap = Snapshot::open(&snap_path).expect("snapshot open");
    let load = t.elapsed();
    let t = Instant::now();
    let huge = snap.use_huge_pages();
    eprintln!("[decide bench] use_huge_pages: {huge} in {:.1?} (as the store does after a swap)", t.elapsed());
    let info = snap.info();
    eprintln!(
        "[decide bench] Snapshot::open: {:.1?} ({} records, {:.1} MB file, {:.2} bytes/record)",
        load,
        info.records(),
        info.file_bytes as f64 / 1e6,
        info.bytes_per_record
    );

    finish(snap, granted, dnc, naive, total, rng)
}

/// An existing snapshot file (`CONSENTGATE_BENCH_SNAPSHOT`, e.g. the 1 B-record one of
/// `benches/billion.py`): granted pairs of entities named `brand-N` (N < 1000) and DNC
/// numbers are sampled from its table.
fn fixture_from(path: &std::path::Path) -> Fixture {
    let t = Instant::now();
    let snap = Snapshot::open(path).expect("snapshot open");
    let load = t.elapsed();
    let t = Instant::now();
    let huge = snap.use_huge_pages();
    eprintln!("[decide bench] use_huge_pages: {huge} in {:.1?} (as the store does after a swap)", t.elapsed());
    let info = snap.info();
    let total = info.records();
    eprintln!(
        "[decide bench] Snapshot::open({}): {:.1?} ({} records, {:.1} MB file, {:.2} bytes/record)",
        path.display(),
        load,
        total,
        info.file_bytes as f64 / 1e6,
        info.bytes_per_record
    );
    let entity_no: Vec<Option<u16>> = snap
        .entities()
        .map(|(_, n)| n.strip_prefix("brand-").and_then(|k| k.parse::<u16>().ok()).filter(|&k| u64::from(k) < ENTITIES))
        .collect();
    let every = (info.pair_count / QUERIES as u64).max(1) as usize;
    let granted: Vec<(u64, u16)> = snap
        .all_pairs()
        .step_by(every)
        .filter(|&(_, _, st)| st == PairState::Grant)
        .filter_map(|(m, e, _)| Some((m, entity_no.get(e.0 as usize).copied().flatten()?)))
        .filter(|&(m, _)| m.to_string().len() == 13)
        .collect();
    let every = (info.dnc_count / QUERIES as u64).max(1) as usize;
    let dnc: Vec<u64> = snap.dnc_numbers().step_by(every).filter(|m| m.to_string().len() == 13).collect();
    assert!(!granted.is_empty() && !dnc.is_empty(), "the snapshot needs grants of brand-N entities and DNC numbers");
    eprintln!("[decide bench] sampled {} grants and {} DNC numbers in {:.1?}", granted.len(), dnc.len(), t.elapsed());
    finish(snap, granted, dnc, None, total, Rng(0x5eed_0000_c0de_0002))
}

fn finish(
    snap: Snapshot,
    granted: Vec<(u64, u16)>,
    dnc: Vec<u64>,
    naive: Option<HashMap<(u64, u32), u8>>,
    total: u64,
    mut rng: Rng,
) -> Fixture {
    // 4. Config: 1000 marketing accounts, one per entity, opt-in enforce.
    let mut toml =
        String::from("[upstream]\naddress = \"10.1.2.3:2775\"\n[policy]\nmode = \"enforce\"\nregime = \"opt-in\"\n");
    if std::env::var_os("CONSENTGATE_BENCH_QUIET_HOURS").is_some() {
        // Step 7 on, never inside (so the verdicts stay those of consent): the cost of the
        // subscriber's zone and local time per commercial decision.
        toml.push_str(
            "[policy.quiet_hours]\nstart = \"03:00\"\nend = \"03:01\"\ntimezone = \"Asia/Shanghai\"\n\
             [policy.timezones]\n\"86\" = \"Asia/Shanghai\"\n\"1\" = \"America/New_York\"\n\"91\" = \"Asia/Kolkata\"\n",
        );
    }
    for e in 0..ENTITIES {
        write!(
            toml,
            "[[account]]\nsystem_id = \"a{e}\"\nentity = \"brand-{e}\"\nclass = \"marketing\"\nlicence = \"L{e}\"\nsender_id = [\"1069*\"]\n"
        )
        .unwrap();
    }
    let cfg = Config::parse(&toml).expect("config");

    // 5. Queries.
    let queries: Vec<Query> = (0..QUERIES)
        .map(|i| {
            let (msisdn, account) = match i % 4 {
                0 | 1 => granted[(rng.next() % granted.len() as u64) as usize],
                2 => (dnc[(rng.next() % dnc.len() as u64) as usize], (rng.next() % ENTITIES) as u16),
                _ => (rng.msisdn(), (rng.next() % ENTITIES) as u16),
            };
            let mut digits = Vec::with_capacity(13);
            push_u64(&mut digits, msisdn);
            Query { account, dest: digits.try_into().expect("13 digits"), msisdn }
        })
        .collect();
    // 6. Session-batched queries: per batch one account; granted pairs of that account's
    // entity, DNC numbers, random numbers in the same 2:1:1 mix.
    let mut by_entity: HashMap<u16, Vec<u64>> = HashMap::new();
    for &(m, e) in &granted {
        by_entity.entry(e).or_default().push(m);
    }
    let entities: Vec<u16> = by_entity.keys().copied().collect();
    let mut batched = Vec::with_capacity(QUERIES);
    while batched.len() < QUERIES {
        let account = entities[(rng.next() % entities.len() as u64) as usize];
        let own = &by_entity[&account];
        for i in 0..SESSION_BATCH {
            let msisdn = match i % 4 {
                0 | 1 => own[(rng.next() % own.len() as u64) as usize],
                2 => dnc[(rng.next() % dnc.len() as u64) as usize],
                _ => rng.msisdn(),
            };
            let mut digits = Vec::with_capacity(13);
            push_u64(&mut digits, msisdn);
            batched.push(Query { account, dest: digits.try_into().expect("13 digits"), msisdn });
        }
    }
    Fixture { snap, cfg, toml, queries, batched, naive, total }
}

fn busy_delta(rng: &mut Rng) -> Delta {
    let delta = Delta::new();
    let node = NodeId::parse("bench").unwrap();
    for i in 0..LIVE_STATEMENTS {
        let kind = match i % 3 {
            0 => StatementKind::Grant,
            1 => StatementKind::Revoke,
            _ => StatementKind::Dnc,
        };
        let entity = kind.has_entity().then(|| EntityName::parse(&format!("brand-{}", rng.next() % ENTITIES)).unwrap());
        delta.apply(&Statement {
            id: StatementId { origin: node.clone(), seq: i + 1 },
            at: 1_800_000_000_000 + i as i64,
            kind,
            source: StatementSource::Mo,
            msisdn: rng.msisdn(),
            entity,
        });
    }
    delta
}

fn bench(c: &mut Criterion) {
    let fx = fixture();
    bench_text(c, &fx);
    let mut rng = Rng(42);
    let t = Instant::now();
    let busy = busy_delta(&mut rng);
    eprintln!("[decide bench] live delta: {} statements applied in {:.1?}", busy.len(), t.elapsed());
    let empty = Delta::new();
    let now = consentgate::time::Clock::system().now();
    let engine: Engine = fx.cfg.engine();
    let src = Addr { ton: 0, npi: 1, addr: b"1069012345" };
    let label = format!("{}M", fx.total / 1_000_000);

    let mut g = c.benchmark_group("decide");
    g.throughput(Throughput::Elements(1));
    g.sample_size(30).measurement_time(Duration::from_secs(5)).warm_up_time(Duration::from_secs(2));
    for (name, delta, queries, prefetch) in [
        (format!("opt_in_{label}"), &empty, &fx.queries, false),
        (format!("opt_in_{label}_session_batches"), &empty, &fx.batched, false),
        (format!("opt_in_{label}_session_prefetch"), &empty, &fx.batched, true),
        (format!("opt_in_{label}_delta_1M"), &busy, &fx.queries, false),
    ] {
        // Per account (= entity): its index and its entity's ids, as a SessionPolicy holds them.
        let views: Vec<(AccountIdx, ConsentView)> = (0..ENTITIES)
            .map(|e| {
                let entity = format!("brand-{e}");
                let data = ConsentView {
                    snapshot: Some(&fx.snap),
                    delta,
                    live_entity: Some(delta.intern(&entity)),
                    snap_entity: fx.snap.entity_id(&entity),
                };
                (engine.lookup(&format!("a{e}")).expect("account"), data)
            })
            .collect();
        let one = |q: &Query| {
            let m = Message {
                source: src,
                destination: Addr { ton: 1, npi: 1, addr: &q.dest },
                service: b"",
                coding: Coding::Gsm7,
                user_data: b"",
                tlvs: b"",
                text: None,
            };
            let (idx, data) = &views[q.account as usize];
            black_box(engine.decide(*idx, data, black_box(&m), now))
        };
        let mut i = 0usize;
        if prefetch {
            // As a session handles one read batch (SessionPolicy::prefetch_ahead): the
            // first PREFETCH_DISTANCE destinations prefetched, then after every
            // PREFETCH_GROUP decisions the next group. Timed per decision, prefetch included.
            g.bench_function(name, |b| {
                b.iter_custom(|iters| {
                    let t = Instant::now();
                    let mut left = iters as usize;
                    let pre = |q: &Query| {
                        if let Some(m) = engine.subscriber(&Addr { ton: 1, npi: 1, addr: black_box(&q.dest) }) {
                            fx.snap.prefetch(m);
                        }
                    };
                    while left > 0 {
                        let n = SESSION_BATCH.min(left);
                        if i + n > queries.len() {
                            i = 0;
                        }
                        let batch = &queries[i..i + n];
                        batch.iter().take(PREFETCH_DISTANCE).for_each(pre);
                        for (j, q) in batch.iter().enumerate() {
                            one(q);
                            if (j + 1) % PREFETCH_GROUP == 0 {
                                let from = (j + 1 - PREFETCH_GROUP + PREFETCH_DISTANCE).min(n);
                                batch[from..(from + PREFETCH_GROUP).min(n)].iter().for_each(pre);
                            }
                        }
                        i += n;
                        left -= n;
                    }
                    t.elapsed()
                })
            });
            continue;
        }
        g.bench_function(name, |b| {
            b.iter(|| {
                let q = &queries[i];
                i += 1;
                if i == queries.len() {
                    i = 0;
                }
                one(q)
            })
        });
    }
    g.finish();

    if let Some(naive) = &fx.naive {
        let mut g = c.benchmark_group("baseline");
        g.throughput(Throughput::Elements(1));
        g.sample_size(30).measurement_time(Duration::from_secs(5)).warm_up_time(Duration::from_secs(2));
        let mut i = 0usize;
        g.bench_function("hashmap_lookup", |b| {
            b.iter(|| {
                let q = &fx.queries[i];
                i += 1;
                if i == fx.queries.len() {
                    i = 0;
                }
                black_box(naive.get(&(black_box(q.msisdn), u32::from(q.account))))
            })
        });
        g.finish();
    }
}

/// The content rules of `benches/content_rules.py`.
fn content_rules(n: usize) -> String {
    let mut t = String::new();
    for i in 0..n {
        write!(t, "[[policy.content_rule]]\nname = \"r{i}\"\nliterals = [\"blocked-{i}\", \"违禁词{i}\"]\n").unwrap();
        if i % 10 == 0 {
            writeln!(t, "regex = ['spam{i}[0-9]{{4}}']").unwrap();
        }
        writeln!(t, "action = \"{}\"", if i % 2 == 0 { "reject" } else { "marketing" }).unwrap();
    }
    t
}

const ALL_STEPS: &str =
    "[policy.commercial]\nrequire_signature = true\nopt_out_hints = [\"回T退订\", \"拒收请回复R\"]\n\
    [policy.frequency]\nper_entity_per_day = 10\nper_subscriber_per_day = 20\nsame_text_window = \"60s\"\n";

fn bench_text(c: &mut Criterion, fx: &Fixture) {
    let text = "【Bench】本周会员日全场八折，新老顾客均可参加，详情见官网，回T退订";
    let ucs2: Vec<u8> = text.encode_utf16().flat_map(u16::to_be_bytes).collect();
    let signed = fx.toml.replace("sender_id = [\"1069*\"]\n", "sender_id = [\"1069*\"]\nsignatures = [\"Bench\"]\n");
    let rules = Config::parse(&format!("{signed}{}", content_rules(1000))).expect("rules config");
    let all = Config::parse(&format!("{signed}{ALL_STEPS}{}", content_rules(1000))).expect("all-steps config");
    let delta = Delta::new();
    let now = consentgate::time::Clock::system().now();
    let src = Addr { ton: 0, npi: 1, addr: b"1069012345" };
    let label = format!("{}M", fx.total / 1_000_000);
    let mut g = c.benchmark_group("decide_text");
    g.throughput(Throughput::Elements(1));
    g.sample_size(30).measurement_time(Duration::from_secs(5)).warm_up_time(Duration::from_secs(2));
    for (name, cfg) in [
        (format!("{label}_no_text_steps"), &fx.cfg),
        (format!("{label}_1000_content_rules"), &rules),
        (format!("{label}_all_steps"), &all),
    ] {
        let engine = cfg.engine();
        let views: Vec<(AccountIdx, ConsentView)> = (0..ENTITIES)
            .map(|e| {
                let entity = format!("brand-{e}");
                let data = ConsentView {
                    snapshot: Some(&fx.snap),
                    delta: &delta,
                    live_entity: Some(delta.intern(&entity)),
                    snap_entity: fx.snap.entity_id(&entity),
                };
                (engine.lookup(&format!("a{e}")).expect("account"), data)
            })
            .collect();
        let (mut scratch, mut folded) = (String::new(), String::new());
        let mut i = 0usize;
        g.bench_function(name, |b| {
            b.iter(|| {
                let q = &fx.queries[i];
                i += 1;
                if i == fx.queries.len() {
                    i = 0;
                }
                let m = Message {
                    source: src,
                    destination: Addr { ton: 1, npi: 1, addr: &q.dest },
                    service: b"",
                    coding: Coding::Ucs2,
                    user_data: black_box(&ucs2),
                    tlvs: b"",
                    text: None,
                };
                let (idx, data) = &views[q.account as usize];
                // As SessionPolicy::decide_text: the text only when a step reads it.
                if engine.reads_text(*idx) {
                    folded.clear();
                    m.fold_text_into(&mut scratch, &mut folded);
                    black_box(engine.decide(*idx, data, &m.with_text(&folded), now))
                } else {
                    black_box(engine.decide(*idx, data, black_box(&m), now))
                }
            })
        });
    }
    g.finish();
}

criterion_group!(benches, bench);
criterion_main!(benches);
