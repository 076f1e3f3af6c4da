//! decide() over a realistic snapshot (criterion, `cargo bench --bench decide`).
//!
//! Hypothesis: the full per-destination decision — licence and sender checks, class, MSISDN
//! normalisation from the wire bytes, live-delta probe, snapshot lookup behind the binary-fuse
//! filter — costs ≤ 150 ns median at 10 M records (5 M do-not-call numbers + 5 M consent
//! pairs over 1000 brands), far below the relay's own ~2 µs per PDU.
//! Baseline: the same pair lookup in a std `HashMap<(u64, u32), u8>` with SipHash (the naive
//! structure), on the same queries.
//!
//! `CONSENTGATE_BENCH_RECORDS` sets the total record count (e.g. 200000000 for 100 M DNC +
//! 100 M pairs; needs ~10 GB during the build). Setup runs outside the timed loops.

use std::collections::HashMap;
use std::hint::black_box;
use std::time::{Duration, Instant};

use consentgate::config::Config;
use consentgate::consent::delta::Delta;
use consentgate::consent::journal::{Statement, StatementKind, StatementSource};
use consentgate::consent::snapshot::{Action, SnapshotBuilder};
use consentgate::policy::{decide, AccountView, Inputs, Submit};
use consentgate::smpp::peek::Addr;
use criterion::{criterion_group, criterion_main, Criterion, Throughput};

struct Rng(u64);
impl Rng {
    fn next(&mut self) -> u64 {
        self.0 ^= self.0 << 13;
        self.0 ^= self.0 >> 7;
        self.0 ^= self.0 << 17;
        self.0
    }
    fn msisdn(&mut self) -> u64 {
        8_613_000_000_000 + self.next() % 7_000_000_000
    }
}

fn bench(c: &mut Criterion) {
    let total: u64 = std::env::var("CONSENTGATE_BENCH_RECORDS").ok().and_then(|v| v.parse().ok()).unwrap_or(10_000_000);
    let half = total / 2;
    let t = Instant::now();
    let mut rng = Rng(0x9e37_79b9_7f4a_7c15);
    let mut b = SnapshotBuilder::new();
    let brands: Vec<String> = (0..1000).map(|i| format!("brand-{i}")).collect();
    let mut granted = Vec::new();
    let mut dnc = Vec::new();
    let mut naive: HashMap<(u64, u32), u8> = HashMap::new();
    let keep_naive = half <= 10_000_000;
    for i in 0..half {
        let m = rng.msisdn();
        b.add_dnc(m, 1_700_000_000).unwrap();
        if i % 64 == 0 {
            dnc.push(m);
        }
        let m = rng.msisdn();
        let e = (rng.next() % 1000) as usize;
        b.add_statement(m, &brands[e], Action::Grant, 1_750_000_000).unwrap();
        if e == 7 {
            granted.push(m);
        }
        if keep_naive {
            naive.insert((m, e as u32), 1);
        }
    }
    let snap = b.into_snapshot().expect("snapshot");
    eprintln!(
        "snapshot: {} dnc + {} pairs built in {:.1} s; {:.2} bytes/record",
        snap.info().dnc_count,
        snap.info().pair_count,
        t.elapsed().as_secs_f64(),
        snap.info().bytes_per_record
    );

    let cfg = Config::parse(
        "[upstream]\naddress = \"h:1\"\n[[account]]\nsystem_id = \"a\"\nentity = \"brand-7\"\nclass = \"marketing\"\nlicence = \"L\"\nsender_id = [\"1069*\"]\n",
    )
    .unwrap();
    let account = &cfg.accounts["a"];
    let empty = Delta::new();
    let busy = Delta::new();
    for i in 0..1_000_000u64 {
        busy.apply(&Statement {
            seq: i + 1,
            at: 1_800_000_000,
            kind: if i % 2 == 0 { StatementKind::Revoke } else { StatementKind::Dnc },
            source: StatementSource::Mo,
            msisdn: rng.msisdn(),
            entity: (i % 2 == 0).then(|| brands[(i % 1000) as usize].clone()),
        });
    }
    // 1 M queries: 50 % granted, 25 % DNC, 25 % random, as wire bytes stored inline (like the
    // destination_addr inside a just-read PDU, not behind a heap pointer per query).
    let queries: Vec<[u8; 13]> = (0..1_000_000u64)
        .map(|i| match i % 4 {
            0 | 1 => granted[(rng.next() as usize) % granted.len()],
            2 => dnc[(rng.next() as usize) % dnc.len()],
            _ => rng.msisdn(),
        })
        .map(|m| m.to_string().as_bytes().try_into().expect("13 digits"))
        .collect();
    let src = Addr { ton: 0, npi: 1, addr: b"1069012345" };

    let mut g = c.benchmark_group("decide");
    g.throughput(Throughput::Elements(1));
    g.sample_size(30).measurement_time(Duration::from_secs(5)).warm_up_time(Duration::from_secs(2));
    for (name, delta) in [("opt_in_empty_delta", &empty), ("opt_in_delta_1M", &busy)] {
        let inputs = Inputs { policy: &cfg.policy, snapshot: Some(&snap), delta, today: 20_000 };
        let acct =
            AccountView { account, live_entity: delta.intern("brand-7"), snap_entity: snap.entity_id("brand-7") };
        let mut i = 0usize;
        g.bench_function(format!("{name}_{}M", total / 1_000_000), |bch| {
            bch.iter(|| {
                let q = &queries[i % queries.len()];
                i += 1;
                let m = Submit { source: src, destination: Addr { ton: 1, npi: 1, addr: q }, service_type: b"" };
                black_box(decide(&inputs, &acct, &m))
            })
        });
    }
    let mut i = 0usize;
    g.bench_function("msisdn_normalise", |bch| {
        bch.iter(|| {
            i += 1;
            black_box(consentgate::consent::msisdn::normalise(&queries[i % queries.len()], 1, 1, "86"))
        })
    });
    let ids: Vec<u64> = queries.iter().map(|q| std::str::from_utf8(q).unwrap().parse().unwrap()).collect();
    let mut i = 0usize;
    g.bench_function("snapshot_pair_lookup", |bch| {
        let e = snap.entity_id("brand-7").unwrap();
        bch.iter(|| {
            i += 1;
            black_box(snap.pair(ids[i % ids.len()], e))
        })
    });
    if keep_naive {
        let mut i = 0usize;
        g.bench_function("baseline_std_hashmap_siphash_pair_lookup", |bch| {
            bch.iter(|| {
                i += 1;
                black_box(naive.get(&(ids[i % ids.len()], 7)))
            })
        });
    }
    g.finish();
}

criterion_group!(benches, bench);
criterion_main!(benches);
