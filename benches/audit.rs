//! Decision audit log, hot-path cost (criterion, `cargo bench --bench audit`).
//!
//! **Hypothesis.** What a session pays per audited decision — `AuditBatch::push` of a
//! fixed-size `Copy` record plus its share of one `flush` per event-loop turn (one channel
//! send, one atomic add) — is a few nanoseconds, an order of magnitude below formatting the
//! JSON line on the hot path. **Baseline:** formatting the same record to its JSON line inline
//! (the production formatter, the fastest inline option): into a fresh `Vec` per record (what
//! a session would do to hand a line to a logger), and into a reused buffer (pure format cost).
//!
//! Setup outside the timed loops: an audit log in a temp dir (mode all, queue 1 M records),
//! 64 records with varied destinations and verdicts. The writer thread runs during the
//! measurement, as in production; records it cannot keep up with are dropped and counted
//! (printed after the run) — the hot-path cost is the same either way. After criterion, one
//! untimed-by-criterion run measures the writer's end-to-end throughput (1 M records pushed,
//! flushed in turns of 32, `close()` waits until they are on disk).

use std::hint::black_box;
use std::time::{Duration, Instant};

use consentgate::audit::{
    now_us, write_record, Audit, AuditAddr, AuditConfig, AuditMode, AuditRecord, MessageId, SnapshotRef,
};
use consentgate::config::MessageClass;
use consentgate::policy::{Reason, Verdict};
use criterion::{criterion_group, criterion_main, Criterion, Throughput};

/// Records per event-loop turn (one flush each).
const TURN: usize = 32;

fn records(audit: &Audit) -> Vec<AuditRecord> {
    let acct = audit.account("acme", "acme-retail");
    let now = now_us();
    (0..64u64)
        .map(|i| {
            let verdict = match i % 4 {
                0 => Verdict::Accept,
                1 => Verdict::Reject(Reason::NoConsent),
                2 => Verdict::Reject(Reason::Dnc),
                _ => Verdict::WouldReject(Reason::Revoked),
            };
            AuditRecord {
                at_us: now + i as i64,
                account: acct,
                session: 17,
                sequence: i as u32 + 1,
                source: AuditAddr::new(1, 1, b"1069012345"),
                destination: AuditAddr::new(1, 1, format!("86138{:08}", i * 7919).as_bytes()),
                msisdn: Some(8613800000000 + i * 7919),
                class: Some(MessageClass::Marketing),
                verdict,
                status: Some(if verdict.forwards() { 0 } else { 0x400 }),
                upstream_status: verdict.forwards().then_some(0),
                message_id: if verdict.forwards() { MessageId::new(b"0a1b2c3d4e5f6071") } else { MessageId::NONE },
                snapshot: SnapshotRef { id: 0x5f0c_1d2e_3a4b_5c6d, generation: 3, built_at: 1_777_507_200 },
                protocol: Default::default(),
                dlt: Default::default(),
            }
        })
        .collect()
}

fn bench(c: &mut Criterion) {
    let dir = tempfile::tempdir().unwrap();
    let cfg = AuditConfig {
        mode: AuditMode::All,
        dir: Some(dir.path().into()),
        queue_records: 1 << 20,
        ..AuditConfig::default()
    };
    let audit = Audit::open(&cfg).unwrap();
    let recs = records(&audit);
    println!("AuditRecord: {} bytes", std::mem::size_of::<AuditRecord>());

    let mut g = c.benchmark_group("audit");
    g.throughput(Throughput::Elements(TURN as u64));
    g.measurement_time(Duration::from_secs(4));
    let mut batch = audit.sink();
    // Accepted path: timed in chunks of 1000 turns (32 000 records, well inside the queue);
    // between chunks, untimed, wait for the writer to drain so nothing is dropped.
    g.bench_function("push+flush (32 records per turn, accepted)", |b| {
        let mut k = 0;
        b.iter_custom(|iters| {
            let mut total = Duration::ZERO;
            let mut left = iters;
            while left > 0 {
                let chunk = left.min(1000);
                let t = Instant::now();
                for _ in 0..chunk {
                    for _ in 0..TURN {
                        batch.push(black_box(recs[k & 63]));
                        k += 1;
                    }
                    batch.flush();
                }
                total += t.elapsed();
                left -= chunk;
                while audit.stats().queued > 0 {
                    std::thread::sleep(Duration::from_micros(200));
                }
            }
            total
        })
    });
    // Overload path: a one-record queue, so (nearly) every flush is dropped and counted.
    let full =
        Audit::open(&AuditConfig { queue_records: 1, dir: Some(dir.path().join("full")), ..cfg.clone() }).unwrap();
    let mut full_batch = full.sink();
    g.bench_function("push+flush (32 records per turn, queue full: dropped)", |b| {
        let mut k = 0;
        b.iter(|| {
            for _ in 0..TURN {
                full_batch.push(black_box(recs[k & 63]));
                k += 1;
            }
            full_batch.flush();
        })
    });
    g.bench_function("baseline: inline JSON, fresh Vec per record", |b| {
        let mut k = 0;
        b.iter(|| {
            for _ in 0..TURN {
                let mut line = Vec::new();
                write_record(&mut line, black_box(&recs[k & 63]), "acme", "acme-retail");
                black_box(line);
                k += 1;
            }
        })
    });
    let mut buf = Vec::with_capacity(64 << 10);
    g.bench_function("baseline: inline JSON, reused buffer", |b| {
        let mut k = 0;
        b.iter(|| {
            buf.clear();
            for _ in 0..TURN {
                write_record(&mut buf, black_box(&recs[k & 63]), "acme", "acme-retail");
                k += 1;
            }
            black_box(&buf);
        })
    });
    g.finish();
    drop(batch);
    drop(full_batch);
    audit.close();
    full.close();
    let st = audit.stats();
    println!("accepted-path run: written {} dropped {}", st.written, st.dropped);

    // Writer throughput, end to end.
    let dir = tempfile::tempdir().unwrap();
    let audit = Audit::open(&AuditConfig { dir: Some(dir.path().into()), ..cfg.clone() }).unwrap();
    let recs = records(&audit);
    let mut batch = audit.sink();
    let n = 1_000_000usize;
    let t = Instant::now();
    for i in 0..n {
        batch.push(recs[i & 63]);
        if i % TURN == TURN - 1 {
            batch.flush();
        }
    }
    batch.flush();
    let pushed = t.elapsed();
    audit.close();
    let total = t.elapsed();
    let st = audit.stats();
    let bytes: u64 = consentgate::audit::list_files(dir.path())
        .unwrap()
        .iter()
        .map(|f| std::fs::metadata(&f.path).unwrap().len())
        .sum();
    println!(
        "writer: {n} records pushed in {:.1} ms, on disk (fsynced) after {:.1} ms = {:.0} records/s, {:.0} MB/s, {} B/line; written {} dropped {}",
        pushed.as_secs_f64() * 1e3,
        total.as_secs_f64() * 1e3,
        st.written as f64 / total.as_secs_f64(),
        bytes as f64 / total.as_secs_f64() / 1e6,
        bytes / st.written.max(1),
        st.written,
        st.dropped
    );
}

criterion_group!(benches, bench);
criterion_main!(benches);
