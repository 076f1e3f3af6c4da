//! Consent snapshot: build, load and lookup cost at scale.
//!
//! **Hypothesis.** One bucketised hash table holding DNC entries and consent pairs together
//! (format 2: an msisdn's entries share one 64-byte home line) answers `is_dnc`, `pair` and
//! the combined `statements` probe that `decide` uses in about one DRAM miss — ≤ 100 ns in
//! throughput at 10–100 M records — at ≤ 10 bytes per record with nothing built at load, and
//! a 100 M-record snapshot loads (read + full validation) in ≤ 1 s.
//!
//! **Baselines**, on the same statements and queries: `slice::binary_search` over sorted
//! arrays of the same keys (perf anchors: 511 ns at 10 M, ~1 µs at 100 M); a BinaryFuse8 front
//! filter over the table's msisdns in front of the table (does a filter still pay when the
//! exact answer is one line?); and for the front filter itself the `bloomfilter` crate at
//! p = 0.4 % (the BinaryFuse8 false-positive rate) beside xorf BinaryFuse8.
//!
//! Setup (outside timing): N DNC rows and N consent rows (N = 10 M, or
//! `CONSENTGATE_BENCH_RECORDS`) are written as CSV to a temporary directory, built with
//! `consent::build` exactly as `snapshot build` does, and opened; the directory is deleted
//! once the snapshot is loaded. Numbers are skewed like a Chinese registry (90 % mobiles in
//! 86 13x–19x, 7 % landlines, 3 % foreign), 1 000 entities, 85 % grants. Build time, phases,
//! peak RSS, load time and bytes per record go to stderr. Queries: 1 M, half present keys,
//! half random numbers from the same distribution; element throughput is per lookup.
//! `CONSENTGATE_BENCH_FILTERS=0` skips the standalone filter comparison (its bloom build is
//! ~30 s at 100 M).

mod common;
use common::*;

use std::fs::File;
use std::hint::black_box;
use std::io::{BufWriter, Write};
use std::path::Path;
use std::sync::OnceLock;
use std::time::{Duration, Instant};

use consentgate::consent::{build, BuildOptions, EntityId, Snapshot};
use criterion::{criterion_group, criterion_main, Criterion, Throughput};
use xorf::{BinaryFuse8, Filter};

const QUERIES: usize = 1 << 20;
const ENTITIES: u64 = 1000;

/// An E.164 number, skewed like a Chinese registry.
fn number(seed: &mut u64) -> u64 {
    let r = splitmix(seed);
    match r % 100 {
        0..=89 => 8_613_000_000_000 + (r >> 8) % 7_000_000_000, // 86 13x..19x mobiles
        90..=96 => 861_000_000_000 + (r >> 8) % 9_000_000_000,  // 86 + 10-digit landlines
        _ => 1_000_000_000 + (r >> 8) % 998_000_000_000_000,    // foreign, 10–15 digits
    }
}

/// A number as an operator export would have it: mobiles in national form (`13812345678`),
/// the rest international with `+`.
fn push_msisdn(out: &mut Vec<u8>, m: u64) {
    if (8_613_000_000_000..8_620_000_000_000).contains(&m) {
        push_u64(out, m - 8_600_000_000_000);
    } else {
        out.push(b'+');
        push_u64(out, m);
    }
}

/// `2026-MM-DDTHH:MM:SSZ` for a random second of the first 300 days of 2026.
fn push_time(out: &mut Vec<u8>, r: u64) {
    const CUM: [u64; 12] = [0, 31, 59, 90, 120, 151, 181, 212, 243, 273, 304, 334];
    let day = r % 300;
    let secs = (r >> 16) % 86_400;
    let m = CUM.iter().rposition(|&c| c <= day).unwrap();
    let d = day - CUM[m] + 1;
    let two = |out: &mut Vec<u8>, v: u64| out.extend_from_slice(&[b'0' + (v / 10) as u8, b'0' + (v % 10) as u8]);
    out.extend_from_slice(b"2026-");
    two(out, m as u64 + 1);
    out.push(b'-');
    two(out, d);
    out.push(b'T');
    two(out, secs / 3600);
    out.push(b':');
    two(out, secs / 60 % 60);
    out.push(b':');
    two(out, secs % 60);
    out.extend_from_slice(b"Z\n");
}

fn write_csvs(dir: &Path, n: usize) -> (std::path::PathBuf, std::path::PathBuf) {
    let (dp, cp) = (dir.join("dnc.csv"), dir.join("consent.csv"));
    let mut seed = 1;
    let mut d = BufWriter::with_capacity(8 << 20, File::create(&dp).unwrap());
    let mut c = BufWriter::with_capacity(8 << 20, File::create(&cp).unwrap());
    d.write_all(b"msisdn,registered_at\n").unwrap();
    c.write_all(b"msisdn,entity,action,at\n").unwrap();
    let mut line = Vec::with_capacity(128);
    for _ in 0..n {
        line.clear();
        push_msisdn(&mut line, number(&mut seed));
        line.push(b',');
        push_time(&mut line, splitmix(&mut seed));
        d.write_all(&line).unwrap();

        line.clear();
        let r = splitmix(&mut seed);
        push_msisdn(&mut line, number(&mut seed));
        line.extend_from_slice(b",brand-");
        push_u64(&mut line, r % ENTITIES);
        line.extend_from_slice(if (r >> 20) % 100 < 85 { b",grant," } else { b",revoke," });
        push_time(&mut line, splitmix(&mut seed));
        c.write_all(&line).unwrap();
    }
    d.flush().unwrap();
    c.flush().unwrap();
    (dp, cp)
}

fn peak_rss_gib() -> f64 {
    let s = std::fs::read_to_string("/proc/self/status").unwrap_or_default();
    s.lines()
        .find_map(|l| l.strip_prefix("VmHWM:"))
        .and_then(|v| v.trim().trim_end_matches("kB").trim().parse::<f64>().ok())
        .map_or(0.0, |kb| kb / (1024.0 * 1024.0))
}

struct Fixture {
    snap: Snapshot,
    dnc_q: Vec<u64>,
    pair_q: Vec<(u64, EntityId)>,
    dnc_hits_only: Vec<u64>,
    /// Sorted DNC msisdns and sorted `msisdn << entity_bits | entity` pair keys.
    dk: Vec<u64>,
    pk: Vec<u64>,
}

fn fixture() -> &'static Fixture {
    static FX: OnceLock<Fixture> = OnceLock::new();
    FX.get_or_init(|| {
        let n: usize = std::env::var("CONSENTGATE_BENCH_RECORDS").ok().and_then(|v| v.parse().ok()).unwrap_or(10_000_000);
        let dir = tempfile::tempdir().unwrap();
        let t = Instant::now();
        let (dp, cp) = write_csvs(dir.path(), n);
        let csv_bytes = std::fs::metadata(&dp).unwrap().len() + std::fs::metadata(&cp).unwrap().len();
        eprintln!("[snapshot bench] N = {n}: wrote {:.2} GB of CSV in {:.1?}", csv_bytes as f64 / 1e9, t.elapsed());

        let out = dir.path().join("consent.snap");
        let opts = BuildOptions {
            dnc: Some(dp.clone()),
            consent: Some(cp.clone()),
            out: out.clone(),
            default_cc: "86".into(),
            ..BuildOptions::default()
        };
        let mut last = Instant::now();
        let report = build(&opts, |p| {
            if last.elapsed() > Duration::from_secs(5) {
                last = Instant::now();
                eprintln!(
                    "[snapshot bench]   {} {:.0} % ({} rows)",
                    p.phase.as_str(),
                    100.0 * p.bytes as f64 / p.total_bytes.max(1) as f64,
                    p.rows
                );
            }
        })
        .expect("build");
        std::fs::remove_file(&dp).unwrap();
        std::fs::remove_file(&cp).unwrap();
        let rows_per_s = report.rows_read as f64 / report.elapsed.as_secs_f64();
        eprintln!(
            "[snapshot bench] build: {:.2?} for {} rows ({:.1} M rows/s end to end); dnc {} pairs {} entities {}; {} bytes; peak RSS {:.2} GiB",
            report.elapsed,
            report.rows_read,
            rows_per_s / 1e6,
            report.dnc,
            report.pairs,
            report.entities,
            report.bytes_written,
            peak_rss_gib()
        );
        let phases: Vec<String> = report.phases.iter().map(|(p, d)| format!("{} {:.2?}", p.as_str(), d)).collect();
        eprintln!("[snapshot bench]   phases: {}", phases.join(", "));

        let snap = Snapshot::open(&out).expect("open");
        let info = snap.info();
        eprintln!(
            "[snapshot bench] open: {:.3?} (read + full validation); file {} B, {} buckets, {:.1} % of slots used, {:.2} bytes/record over {} records",
            info.load_duration,
            info.file_bytes,
            info.buckets,
            100.0 * info.records() as f64 / info.table_slots as f64,
            info.bytes_per_record,
            info.records()
        );
        let mut opens: Vec<Duration> = (0..5)
            .map(|_| {
                let t = Instant::now();
                drop(Snapshot::open(&out).expect("open"));
                t.elapsed()
            })
            .collect();
        opens.sort();
        eprintln!("[snapshot bench] open again ×5 (page cache warm): median {:.3?}, range {:.3?}–{:.3?}", opens[2], opens[0], opens[4]);
        // The snapshot holds its own copy; the directory can go now.
        drop(dir);

        // Sorted arrays of the same statements, for the binary-search baseline and for
        // drawing present keys.
        let mut dk: Vec<u64> = snap.dnc_numbers().collect();
        dk.sort_unstable();
        let eb = info.entity_bits;
        let mut pk: Vec<u64> = snap.all_pairs().map(|(m, e, _)| (m << eb) | u64::from(e.0)).collect();
        pk.sort_unstable();
        let emask = (1u64 << eb) - 1;
        let mut seed = 99;
        let mut dnc_q = Vec::with_capacity(QUERIES);
        let mut pair_q = Vec::with_capacity(QUERIES);
        let mut dnc_hits_only = Vec::with_capacity(QUERIES);
        for _ in 0..QUERIES {
            let r = splitmix(&mut seed);
            let hit = dk[(r >> 1) as usize % dk.len()];
            dnc_hits_only.push(hit);
            dnc_q.push(if r & 1 == 0 { hit } else { number(&mut seed) });
            let r = splitmix(&mut seed);
            let k = pk[(r >> 1) as usize % pk.len()];
            pair_q.push(if r & 1 == 0 {
                (k >> eb, EntityId((k & emask) as u32))
            } else {
                (number(&mut seed), EntityId((splitmix(&mut seed) % ENTITIES) as u32))
            });
        }
        Fixture { snap, dnc_q, pair_q, dnc_hits_only, dk, pk }
    })
}

fn group<'a>(c: &'a mut Criterion, name: &str) -> criterion::BenchmarkGroup<'a, criterion::measurement::WallTime> {
    let mut g = c.benchmark_group(name);
    g.sample_size(20).warm_up_time(Duration::from_secs(1)).measurement_time(Duration::from_secs(3));
    g.throughput(Throughput::Elements(QUERIES as u64));
    g
}

fn lookups(c: &mut Criterion) {
    let fx = fixture();
    let snap = &fx.snap;

    let mut g = group(c, "dnc_lookup_50pct_hits");
    g.bench_function("snapshot_is_dnc", |b| b.iter(|| fx.dnc_q.iter().filter(|&&m| snap.is_dnc(black_box(m))).count()));
    let keys = &fx.dk;
    g.bench_function("baseline_binary_search", |b| {
        b.iter(|| fx.dnc_q.iter().filter(|&&m| keys.binary_search(&black_box(m)).is_ok()).count())
    });
    g.finish();

    let mut g = group(c, "dnc_lookup_all_hits");
    g.bench_function("snapshot_is_dnc", |b| {
        b.iter(|| fx.dnc_hits_only.iter().filter(|&&m| snap.is_dnc(black_box(m))).count())
    });
    g.finish();

    let mut g = group(c, "pair_lookup_50pct_hits");
    g.bench_function("snapshot_pair", |b| {
        b.iter(|| fx.pair_q.iter().filter(|&&(m, e)| snap.pair(black_box(m), e).is_some()).count())
    });
    let pk = &fx.pk;
    let eb = snap.info().entity_bits;
    g.bench_function("baseline_binary_search", |b| {
        b.iter(|| {
            fx.pair_q
                .iter()
                .filter(|&&(m, e)| pk.binary_search(&((black_box(m) << eb) | u64::from(e.0))).is_ok())
                .count()
        })
    });
    g.finish();

    // What decide() asks: pair state and DNC flag of one (msisdn, entity).
    let mut g = group(c, "statements_50pct_hits");
    g.bench_function("snapshot_statements", |b| {
        b.iter(|| {
            fx.pair_q
                .iter()
                .filter(|&&(m, e)| {
                    let st = snap.statements(black_box(m), Some(e));
                    st.pair.is_some() || st.dnc
                })
                .count()
        })
    });
    // Does a front filter still pay? BinaryFuse8 over every msisdn with a statement: a miss
    // skips the table line.
    let mut numbers: Vec<u64> = fx.dk.iter().copied().chain(fx.pk.iter().map(|k| k >> eb)).collect();
    numbers.sort_unstable();
    numbers.dedup();
    let front = BinaryFuse8::try_from(&numbers[..]).expect("binary fuse");
    drop(numbers);
    g.bench_function("fuse_front_then_statements", |b| {
        b.iter(|| {
            fx.pair_q
                .iter()
                .filter(|&&(m, e)| {
                    let m = black_box(m);
                    front.contains(&m) && {
                        let st = snap.statements(m, Some(e));
                        st.pair.is_some() || st.dnc
                    }
                })
                .count()
        })
    });
    g.bench_function("baseline_two_binary_searches", |b| {
        b.iter(|| {
            fx.pair_q
                .iter()
                .filter(|&&(m, e)| {
                    let m = black_box(m);
                    pk.binary_search(&((m << eb) | u64::from(e.0))).is_ok() || keys.binary_search(&m).is_ok()
                })
                .count()
        })
    });
    g.finish();
    drop(front);

    if std::env::var("CONSENTGATE_BENCH_FILTERS").as_deref() == Ok("0") {
        return;
    }
    // Front filters over the DNC keys, same queries.
    let t = Instant::now();
    let fuse = BinaryFuse8::try_from(&keys[..]).expect("binary fuse");
    let fuse_build = t.elapsed();
    let t = Instant::now();
    let mut bloom = bloomfilter::Bloom::<u64>::new_for_fp_rate_with_seed(
        keys.len(),
        0.004,
        &std::array::from_fn(|i| (i as u8).wrapping_mul(37).wrapping_add(1)),
    )
    .unwrap();
    for k in keys.iter() {
        bloom.set(k);
    }
    let bloom_build = t.elapsed();
    let bloom_bytes = bloomfilter::Bloom::<u64>::compute_bitmap_size(keys.len(), 0.004);
    let fp = |f: &dyn Fn(u64) -> bool| {
        let mut s = 5;
        let (mut n, mut fp) = (0u64, 0u64);
        for _ in 0..200_000 {
            let m = number(&mut s);
            if keys.binary_search(&m).is_err() {
                n += 1;
                fp += u64::from(f(m));
            }
        }
        100.0 * fp as f64 / n as f64
    };
    eprintln!(
        "[snapshot bench] front filter over {} keys: BinaryFuse8 {:.2} bytes/key, build {:.2?}, FP {:.2} %; bloomfilter p=0.4 % {:.2} bytes/key, k={}, build {:.2?}, FP {:.2} %",
        keys.len(),
        fuse.fingerprints.len() as f64 / keys.len() as f64,
        fuse_build,
        fp(&|m| fuse.contains(&m)),
        bloom_bytes as f64 / keys.len() as f64,
        bloom.number_of_hash_functions(),
        bloom_build,
        fp(&|m| bloom.check(&m)),
    );
    let mut g = group(c, "front_filter_50pct_hits");
    g.bench_function("xorf_binary_fuse8", |b| {
        b.iter(|| fx.dnc_q.iter().filter(|&&m| fuse.contains(&black_box(m))).count())
    });
    g.bench_function("bloomfilter_p0.4pct", |b| {
        b.iter(|| fx.dnc_q.iter().filter(|&&m| bloom.check(&black_box(m))).count())
    });
    g.finish();
}

criterion_group!(benches, lookups);
criterion_main!(benches);
