use std::collections::{HashMap, HashSet};
use std::fs::{self, File};
use std::path::{Path, PathBuf};
use std::thread;

use sha2::{Digest, Sha256};
use xxhash_rust::xxh3::xxh3_64;

use super::*;
use crate::consent::source::SourceError;
use crate::consent::statement::{EntityName, NodeId, Statement, StatementId, StatementKind, StatementSource};

const T0: i64 = 1_777_593_600_000; // 2026-05-01T00:00:00Z, Unix ms
const A: u64 = 8613800000001;
const B: u64 = 8613800000002;

fn splitmix(seed: &mut u64) -> u64 {
    *seed = seed.wrapping_add(0x9E37_79B9_7F4A_7C15);
    let mut z = *seed;
    z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
    z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
    z ^ (z >> 31)
}

fn node(s: &str) -> NodeId {
    NodeId::parse(s).unwrap()
}

/// A live statement from node `n1` (seq 1: the builder ignores identities).
fn st(msisdn: u64, entity: Option<&str>, kind: StatementKind, at: i64) -> Statement {
    Statement {
        kind,
        source: StatementSource::Api,
        msisdn,
        entity: entity.map(|e| EntityName::parse(e).unwrap()),
        at,
        id: StatementId { origin: node("n1"), seq: 1 },
    }
}

fn snap_of(statements: &[Statement]) -> Snapshot {
    let mut b = SnapshotBuilder::new();
    for s in statements {
        b.add(s).unwrap();
    }
    b.into_snapshot().unwrap()
}

fn state(s: &Snapshot, msisdn: u64, entity: &str) -> Option<PairState> {
    s.pair(msisdn, s.entity_id(entity)?)
}

/// (name, statements for msisdn A / entity "acme", expected state, expected is_dnc)
fn sequences() -> Vec<(&'static str, Vec<Statement>, Option<PairState>, bool)> {
    use StatementKind::*;
    let g = |at| st(A, Some("acme"), Grant, at);
    let r = |at| st(A, Some("acme"), Revoke, at);
    let d = |at| st(A, None, Dnc, at);
    vec![
        ("grant", vec![g(T0)], Some(PairState::Grant), false),
        ("grant→revoke", vec![g(T0), r(T0 + 1)], Some(PairState::Revoked), false),
        ("grant→revoke→grant", vec![g(T0), r(T0 + 1), g(T0 + 2)], Some(PairState::Grant), false),
        ("out of order input", vec![g(T0 + 2), r(T0 + 1), g(T0)], Some(PairState::Grant), false),
        ("revoke→grant→revoke", vec![r(T0), g(T0 + 5), r(T0 + 9)], Some(PairState::Revoked), false),
        ("dnc after grant", vec![g(T0), d(T0 + 1)], Some(PairState::DncNewer), true),
        ("grant after dnc", vec![d(T0), g(T0 + 1)], Some(PairState::Grant), true),
        ("revoke after dnc", vec![d(T0), r(T0 + 1)], Some(PairState::Revoked), true),
        ("revoke before dnc", vec![r(T0), d(T0 + 1)], Some(PairState::Revoked), true),
        ("tie grant/revoke: revoke wins", vec![r(T0), g(T0)], Some(PairState::Revoked), false),
        ("tie grant/revoke other order", vec![g(T0), r(T0)], Some(PairState::Revoked), false),
        ("tie grant/dnc: dnc wins", vec![g(T0), d(T0)], Some(PairState::DncNewer), true),
        ("latest dnc registration counts", vec![d(T0), g(T0 + 1), d(T0 + 2)], Some(PairState::DncNewer), true),
        ("older duplicate dnc ignored", vec![d(T0 + 2), g(T0 + 3), d(T0)], Some(PairState::Grant), true),
        ("dnc only", vec![d(T0)], None, true),
        ("negative timestamps", vec![g(-100), r(-200)], Some(PairState::Grant), false),
    ]
}

#[test]
fn latest_statement_wins_in_memory() {
    for (name, sts, want, dnc) in sequences() {
        let mut all = sts.clone();
        // Unrelated noise: another subscriber and another entity.
        all.push(st(B, Some("acme"), StatementKind::Revoke, T0 + 100));
        all.push(st(A, Some("zeta"), StatementKind::Grant, T0 - 100));
        let s = snap_of(&all);
        assert_eq!(state(&s, A, "acme"), want, "{name}");
        assert_eq!(s.is_dnc(A), dnc, "{name}");
        assert_eq!(state(&s, B, "acme"), Some(PairState::Revoked), "{name}");
        assert!(!s.is_dnc(B), "{name}");
    }
}

#[test]
fn latest_statement_wins_through_files() {
    // The same sequences, written as CSV rows, built to a file and opened.
    let dir = tempfile::tempdir().unwrap();
    for (i, (name, sts, want, dnc)) in sequences().into_iter().enumerate() {
        let (mut d, mut c) = (String::from("msisdn,registered_at\n"), String::from("msisdn,entity,action,at\n"));
        for s in &sts {
            let at = rfc3339(s.at);
            match s.kind {
                StatementKind::Dnc => d.push_str(&format!("+{},{at}\n", s.msisdn)),
                a => c.push_str(&format!("{},{},{},{at}\n", s.msisdn, s.entity.as_deref().unwrap(), a.as_str())),
            }
        }
        let (dp, cp) = (dir.path().join(format!("d{i}.csv")), dir.path().join(format!("c{i}.csv")));
        fs::write(&dp, d).unwrap();
        fs::write(&cp, c).unwrap();
        let out = dir.path().join(format!("s{i}.snap"));
        build(&opts(Some(&dp), Some(&cp), &out), |_| {}).unwrap();
        let s = Snapshot::open(&out).unwrap();
        assert_eq!(state(&s, A, "acme"), want, "{name}");
        assert_eq!(s.is_dnc(A), dnc, "{name}");
        assert_eq!(s.pair(B, EntityId(0)), None, "{name}");
    }
}

/// Formats Unix ms as RFC 3339 with milliseconds and a +08:00 offset (exercises the fraction
/// and offset paths).
fn rfc3339(t_ms: i64) -> String {
    let (t, ms) = (t_ms.div_euclid(1000), t_ms.rem_euclid(1000));
    let local = t + 8 * 3600;
    let (days, secs) = (local.div_euclid(86_400), local.rem_euclid(86_400));
    // civil_from_days (Howard Hinnant).
    let z = days + 719_468;
    let era = z.div_euclid(146_097);
    let doe = z - era * 146_097;
    let yoe = (doe - doe / 1460 + doe / 36_524 - doe / 146_096) / 365;
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    let mp = (5 * doy + 2) / 153;
    let d = doy - (153 * mp + 2) / 5 + 1;
    let m = if mp < 10 { mp + 3 } else { mp - 9 };
    let y = yoe + era * 400 + i64::from(m <= 2);
    format!("{y:04}-{m:02}-{d:02}T{:02}:{:02}:{:02}.{ms:03}+08:00", secs / 3600, secs / 60 % 60, secs % 60)
}

fn opts(dnc: Option<&Path>, consent: Option<&Path>, out: &Path) -> BuildOptions {
    BuildOptions {
        dnc: dnc.map(Path::to_owned),
        consent: consent.map(Path::to_owned),
        out: out.to_owned(),
        ..BuildOptions::default()
    }
}

#[test]
fn rfc3339_helper_roundtrips() {
    for t in [0, T0, T0 + 3_661_001, -1, -1001, 951_782_400_999] {
        assert_eq!(crate::time::parse_timestamp_ms(rfc3339(t).as_bytes()), Some(t), "{}", rfc3339(t));
    }
}

#[test]
fn absent_numbers_and_entities() {
    let s = snap_of(&[st(A, Some("acme"), StatementKind::Grant, T0), st(B, None, StatementKind::Dnc, T0)]);
    let acme = s.entity_id("acme").unwrap();
    assert_eq!(s.entity_name(acme), "acme");
    assert_eq!(s.entity_id("other"), None);
    assert_eq!(s.entity_name(EntityId(7)), "");
    for m in [0, 1, A - 1, B + 1, 999_999_999_999_999, u64::MAX, 1 << 60] {
        assert!(!s.is_dnc(m), "{m}");
        assert_eq!(s.pair(m, acme), None, "{m}");
    }
    assert_eq!(s.pair(A, EntityId(1)), None);
    assert_eq!(s.pair(A, EntityId(u32::MAX)), None);
    assert_eq!(s.pair(B, acme), None);
    assert!(s.is_dnc(B));

    let e = Snapshot::empty();
    assert!(!e.is_dnc(A));
    assert_eq!(e.pair(A, EntityId(0)), None);
    assert_eq!(e.entity_id("acme"), None);
    assert_eq!(e.info().records(), 0);
    assert!(!Snapshot::default().is_dnc(A));
}

#[test]
fn describe_and_pairs_of() {
    let s = snap_of(&[
        st(A, Some("acme"), StatementKind::Grant, T0),
        st(A, Some("beta"), StatementKind::Revoke, T0),
        st(A, Some("zeta"), StatementKind::Grant, T0),
        st(A, None, StatementKind::Dnc, T0 + 1),
        st(B, Some("beta"), StatementKind::Grant, T0),
    ]);
    let names: Vec<(&str, PairState)> = s.pairs_of(A).map(|(id, st)| (s.entity_name(id), st)).collect();
    assert_eq!(names, [("acme", PairState::DncNewer), ("beta", PairState::Revoked), ("zeta", PairState::DncNewer)]);
    assert_eq!(s.pairs_of(B).count(), 1);
    assert_eq!(s.pairs_of(B + 1).count(), 0);
    let d = s.describe(A, None);
    assert!(
        d.contains("dnc: yes") && d.contains("entity beta: revoked") && d.contains("entity acme: dnc_newer"),
        "{d}"
    );
    let d = s.describe(B, Some("beta"));
    assert!(d.contains("dnc: no") && d.contains("entity beta: grant"), "{d}");
    assert!(s.describe(B, Some("acme")).contains("none (no statement)"));
    assert!(s.describe(B, Some("nobody")).contains("not in this snapshot"));
    assert!(s.describe(B + 5, None).contains("no consent statements"));
}

#[test]
fn random_200k_no_false_absent() {
    let dir = tempfile::tempdir().unwrap();
    let mut seed = 42;
    let mut dnc: HashMap<u64, i64> = HashMap::new();
    let mut latest: HashMap<(u64, u32), (i64, bool)> = HashMap::new();
    let (mut dcsv, mut ccsv) = (String::from("msisdn,registered_at\n"), String::from("msisdn,entity,action,at\n"));
    let n = 200_000;
    // Mostly Chinese mobiles (national form in the CSV), some international numbers.
    let number = |seed: &mut u64| {
        if splitmix(seed) % 10 == 0 {
            1_000_000_000 + splitmix(seed) % 900_000_000_000_000
        } else {
            8_613_000_000_000 + splitmix(seed) % 700_000_000
        }
    };
    for _ in 0..n {
        let m = number(&mut seed);
        let at = T0 + (splitmix(&mut seed) % 1000) as i64;
        dcsv.push_str(&format!("+{m},{}\n", rfc3339(at)));
        let e = dnc.entry(m).or_insert(at);
        *e = (*e).max(at);
    }
    for _ in 0..n {
        // Reuse DNC numbers for a third of the pairs so that DncNewer occurs.
        let m = if splitmix(&mut seed) % 3 == 0 {
            *dnc.keys().next().unwrap() + splitmix(&mut seed) % 3
        } else {
            number(&mut seed)
        };
        let ent = (splitmix(&mut seed) % 300) as u32;
        let at = T0 + (splitmix(&mut seed) % 1000) as i64;
        let revoke = splitmix(&mut seed) % 4 == 0;
        ccsv.push_str(&format!(
            "+{m},brand-{ent:03},{},{at}\n",
            if revoke { "revoke" } else { "grant" },
            at = rfc3339(at)
        ));
        let e = latest.entry((m, ent)).or_insert((at, revoke));
        if (at, revoke) > *e {
            *e = (at, revoke);
        }
    }
    let (dp, cp, out) = (dir.path().join("dnc.csv"), dir.path().join("consent.csv"), dir.path().join("c.snap"));
    fs::write(&dp, &dcsv).unwrap();
    fs::write(&cp, &ccsv).unwrap();
    let mut phases = Vec::new();
    let report = build(&opts(Some(&dp), Some(&cp), &out), |p| {
        if phases.last() != Some(&p.phase) {
            phases.push(p.phase);
        }
    })
    .unwrap();
    assert_eq!(phases, [Phase::Reading, Phase::Sorting, Phase::Resolving, Phase::Hashing, Phase::Writing, Phase::Done]);
    assert_eq!(report.rows_read, 2 * n);
    assert_eq!(report.dnc, dnc.len() as u64);
    assert_eq!(report.pairs, latest.len() as u64);
    assert_eq!(report.entities, 300);
    assert_eq!(report.buckets, (report.dnc + report.pairs).div_ceil(7));
    assert_eq!(report.dnc_sha256, Some(Sha256::digest(dcsv.as_bytes()).into()));
    assert_eq!(report.consent_sha256, Some(Sha256::digest(ccsv.as_bytes()).into()));

    let s = Snapshot::open(&out).unwrap();
    let info = s.info();
    assert_eq!((info.dnc_count, info.pair_count, info.entity_count), (report.dnc, report.pairs, 300));
    assert_eq!(info.file_bytes, report.bytes_written);
    assert_eq!((info.buckets, info.table_slots * 8), (report.buckets, report.table_slots * 8));
    assert!(info.bytes_per_record < 10.0, "{}", info.bytes_per_record);
    let ids: Vec<EntityId> = (0..300).map(|e| s.entity_id(&format!("brand-{e:03}")).unwrap()).collect();

    // Every present key is found with the right state.
    let (mut grants, mut dnc_newer) = (0, 0);
    for &m in dnc.keys() {
        assert!(s.is_dnc(m), "dnc {m}");
    }
    for (&(m, e), &(at, revoke)) in &latest {
        let want = if revoke {
            PairState::Revoked
        } else if dnc.get(&m).is_some_and(|&d| d >= at) {
            dnc_newer += 1;
            PairState::DncNewer
        } else {
            grants += 1;
            PairState::Grant
        };
        assert_eq!(s.pair(m, ids[e as usize]), Some(want), "pair {m} brand-{e:03}");
    }
    assert!(grants > 0 && dnc_newer > 0, "{grants} {dnc_newer}");
    assert_eq!((report.grants, report.dnc_newer), (grants, dnc_newer));

    // Random probes (mostly absent) agree with the exact sets.
    let set: HashSet<u64> = dnc.keys().copied().collect();
    for _ in 0..200_000 {
        let m = number(&mut seed);
        assert_eq!(s.is_dnc(m), set.contains(&m), "{m}");
        let e = (splitmix(&mut seed) % 300) as u32;
        assert_eq!(s.pair(m, ids[e as usize]).is_some(), latest.contains_key(&(m, e)));
    }

    // An in-memory build of the same statements is byte-for-byte the same content.
    let mut b = SnapshotBuilder::new();
    for (&m, &at) in &dnc {
        b.add_dnc(m, at).unwrap();
    }
    for (&(m, e), &(at, revoke)) in &latest {
        let action = if revoke { StatementKind::Revoke } else { StatementKind::Grant };
        b.add_statement(m, &format!("brand-{e:03}"), action, at).unwrap();
    }
    let mem = b.into_snapshot().unwrap();
    assert_eq!(mem.slots(), s.slots());
    assert_eq!(mem.info().checksum, s.info().checksum);
}

#[test]
fn journal_records_are_folded_in() {
    let dir = tempfile::tempdir().unwrap();
    let (dp, cp, out) = (dir.path().join("dnc.csv"), dir.path().join("consent.csv"), dir.path().join("j.snap"));
    fs::write(&dp, "msisdn,registered_at\n13800000002,2026-05-01\n").unwrap();
    fs::write(&cp, "msisdn,entity,action,at\n13800000001,acme,grant,2026-05-01\n13800000003,acme,grant,2026-05-03\n")
        .unwrap();
    let mut o = opts(Some(&dp), Some(&cp), &out);
    o.journal_records = vec![
        // Newer revoke beats the CSV grant.
        st(A, Some("acme"), StatementKind::Revoke, T0 + 60),
        // Older journal revoke loses to the newer CSV grant.
        st(8613800000003, Some("acme"), StatementKind::Revoke, T0),
        // Journal grant after the CSV DNC registration.
        st(B, Some("beta"), StatementKind::Grant, T0 + 60),
        // Journal DNC for a new number; a new entity only in the journal.
        st(8613800000004, None, StatementKind::Dnc, T0),
        st(8613800000004, Some("gamma"), StatementKind::Grant, T0 - 1),
    ];
    for (i, s) in o.journal_records.iter_mut().enumerate() {
        s.id.seq = i as u64 + 1;
    }
    o.journal_records[4].id = StatementId { origin: node("gw-2"), seq: 1234 };
    let r = build(&o, |_| {}).unwrap();
    assert_eq!(r.journal_records, 5);
    assert_eq!(r.rows_read, 8);
    let s = Snapshot::open(&out).unwrap();
    assert_eq!(state(&s, A, "acme"), Some(PairState::Revoked));
    assert_eq!(state(&s, 8613800000003, "acme"), Some(PairState::Grant));
    assert_eq!(state(&s, B, "beta"), Some(PairState::Grant));
    assert!(s.is_dnc(B) && s.is_dnc(8613800000004));
    assert_eq!(state(&s, 8613800000004, "gamma"), Some(PairState::DncNewer));
    assert_eq!(s.info().watermarks.to_string(), "gw-2:1234, n1:4");
    assert_eq!(s.entities().map(|(_, n)| n).collect::<Vec<_>>(), ["acme", "beta", "gamma"]);

    // Invalid journal records count against max_invalid like bad rows.
    o.journal_records.push(st(A, None, StatementKind::Grant, T0));
    o.journal_records.push(st(12, None, StatementKind::Dnc, T0));
    match build(&o, |_| {}) {
        Err(BuildError::TooManyInvalid { max: 0, errors }) => {
            assert_eq!(errors.count, 1);
            assert_eq!(errors.first[0].to_string(), "journal:6: entity: grant/revoke without an entity");
        }
        other => panic!("{other:?}"),
    }
    o.max_invalid = 2;
    let r = build(&o, |_| {}).unwrap();
    assert_eq!(r.invalid.count, 2);
    assert_eq!(r.invalid.by_field.get("msisdn"), Some(&1));
}

/// `<out>.live/` keeps each key's winner and each origin's newest statement: a build from the
/// kept statements compiles the same table with the same watermarks as one from all of them.
#[test]
fn the_kept_live_statements_build_the_same_snapshot() {
    let dir = tempfile::tempdir().unwrap();
    let (cp, all_out, kept_out) =
        (dir.path().join("consent.csv"), dir.path().join("all.snap"), dir.path().join("kept.snap"));
    fs::write(
        &cp,
        "msisdn,entity,action,at\n8613800000001,acme,grant,2026-05-01\n8613800000002,beta,grant,2026-05-01\n",
    )
    .unwrap();
    let mut seed = 11;
    let mut seqs = [0u64; 2];
    let journal: Vec<Statement> = (0..3_000)
        .map(|_| {
            let o = (splitmix(&mut seed) % 2) as usize;
            seqs[o] += 1;
            let kind =
                [StatementKind::Grant, StatementKind::Revoke, StatementKind::Dnc][(splitmix(&mut seed) % 3) as usize];
            let entity = kind.has_entity().then(|| ["acme", "beta", "gamma"][(splitmix(&mut seed) % 3) as usize]);
            let mut s =
                st(8_613_800_000_000 + splitmix(&mut seed) % 40, entity, kind, T0 + (splitmix(&mut seed) % 500) as i64);
            s.id = StatementId { origin: node(["gw-1", "gw-2"][o]), seq: seqs[o] };
            s
        })
        .collect();
    let mut o = opts(None, Some(&cp), &all_out);
    o.journal_records = journal.clone();
    let r = build(&o, |_| {}).unwrap();
    assert_eq!(r.journal_records, 3_000);
    assert!(r.live_kept < 300, "kept {}", r.live_kept);
    let all = Snapshot::open(&all_out).unwrap();
    let kept = live::read_base(&all_out, all.info().checksum, &all.info().watermarks).unwrap();
    assert_eq!(kept.len() as u64, r.live_kept);
    let mut o = opts(None, Some(&cp), &kept_out);
    o.journal_records = kept;
    build(&o, |_| {}).unwrap();
    let from_kept = Snapshot::open(&kept_out).unwrap();
    assert_eq!(from_kept.slots(), all.slots());
    assert_eq!(from_kept.info().watermarks, all.info().watermarks);
    assert_eq!(from_kept.entities().collect::<Vec<_>>(), all.entities().collect::<Vec<_>>());
}

#[test]
fn bad_rows_and_max_invalid() {
    let dir = tempfile::tempdir().unwrap();
    let (dp, cp, out) = (dir.path().join("dnc.csv"), dir.path().join("consent.csv"), dir.path().join("b.snap"));
    fs::write(&dp, "msisdn,registered_at\n13800000001,2026-05-01\nACME,2026-05-01\n").unwrap();
    fs::write(
        &cp,
        "msisdn,entity,action,at\n13800000001,acme,grant,2026-05-01\n13800000001,acme,maybe,2026-05-01\n13800000002,acme,grant,soon\n",
    )
    .unwrap();
    let mut o = opts(Some(&dp), Some(&cp), &out);
    let err = build(&o, |_| {}).unwrap_err();
    assert!(matches!(err, BuildError::TooManyInvalid { max: 0, .. }), "{err}");
    assert!(!out.exists(), "no output on failure");
    o.max_invalid = 2;
    assert!(matches!(build(&o, |_| {}), Err(BuildError::TooManyInvalid { max: 2, .. })));
    o.max_invalid = 3;
    let r = build(&o, |_| {}).unwrap();
    assert_eq!(r.invalid.count, 3);
    assert_eq!(r.rows_read, 5);
    assert_eq!((r.dnc_rows, r.consent_rows), (1, 1));
    let mut shown: Vec<String> = r.invalid.first.iter().map(ToString::to_string).collect();
    shown.sort();
    let d = dp.display().to_string();
    let c = cp.display().to_string();
    assert_eq!(shown.len(), 3);
    assert!(shown.iter().any(|s| s.starts_with(&format!("{d}:3: msisdn: `ACME`"))), "{shown:?}");
    assert!(shown.iter().any(|s| s.starts_with(&format!("{c}:3: action: `maybe`"))), "{shown:?}");
    assert!(shown.iter().any(|s| s.starts_with(&format!("{c}:4: at: `soon`"))), "{shown:?}");
    assert_eq!(r.invalid.by_field.values().sum::<u64>(), 3);
    assert!(Snapshot::open(&out).unwrap().is_dnc(A));

    // Fatal source problems.
    fs::write(&cp, "msisdn,entity,at\n").unwrap();
    let e = build(&o, |_| {}).unwrap_err();
    assert!(e.to_string().contains("header: expected `msisdn,entity,action,at`"), "{e}");
    let e = build(&opts(Some(&dir.path().join("missing.csv")), None, &out), |_| {}).unwrap_err();
    assert!(matches!(e, BuildError::Source(SourceError::Io { .. })), "{e}");
}

#[test]
fn no_sources_and_key_width() {
    let dir = tempfile::tempdir().unwrap();
    let out = dir.path().join("e.snap");
    let r = build(&opts(None, None, &out), |_| {}).unwrap();
    assert_eq!((r.dnc, r.pairs, r.entities), (0, 0, 0));
    assert_eq!((r.buckets, r.table_slots), (1, 8));
    let s = Snapshot::open(&out).unwrap();
    assert!(!s.is_dnc(A));
    assert_eq!(s.info().dnc_sha256, None);

    // 50-bit msisdn + 13-bit entity ids + 2 > 64.
    let mut b = SnapshotBuilder::new();
    for e in 0..5000 {
        b.add_statement(999_999_999_999_999, &format!("e{e}"), StatementKind::Grant, T0).unwrap();
    }
    assert!(matches!(b.into_snapshot(), Err(BuildError::KeyTooWide { msisdn_bits: 50, entity_bits: 13 })));
    // 4096 entities (12 bits) still fit with 15-digit numbers.
    let mut b = SnapshotBuilder::new();
    for e in 0..4096 {
        b.add_statement(999_999_999_999_999, &format!("e{e:04}"), StatementKind::Grant, T0).unwrap();
    }
    let s = b.into_snapshot().unwrap();
    assert_eq!(s.pair(999_999_999_999_999, s.entity_id("e4095").unwrap()), Some(PairState::Grant));

    let mut b = SnapshotBuilder::new();
    assert_eq!(b.add_dnc(123, T0), Err(StatementError::Msisdn(123)));
    assert_eq!(b.add_dnc(A, MAX_AT + 1), Err(StatementError::At(MAX_AT + 1)));
    use crate::consent::statement::EntityError;
    assert_eq!(b.add_statement(A, "", StatementKind::Grant, T0), Err(StatementError::BadEntity(EntityError::Empty)));
    // The builder takes the one entity rule: a name still in its CSV quotes is refused.
    assert_eq!(
        b.add_statement(A, "\"acme\"", StatementKind::Revoke, T0),
        Err(StatementError::BadEntity(EntityError::Char('"')))
    );
    assert!(b.is_empty());
}

// --- Corruption -------------------------------------------------------------------------------

fn built(dir: &Path) -> PathBuf {
    let mut b = SnapshotBuilder::new();
    let mut seed = 9;
    for i in 0..5000u64 {
        b.add_dnc(8_613_000_000_000 + splitmix(&mut seed) % 1_000_000_000, T0).unwrap();
        b.add_statement(8_613_000_000_000 + i * 7, if i % 2 == 0 { "acme" } else { "beta" }, StatementKind::Grant, T0)
            .unwrap();
    }
    let c = b.compile(&mut |_, _| {}).unwrap();
    let out = dir.join("ok.snap");
    let mut watermarks = Watermarks::new();
    watermarks.insert(node("n1"), 7);
    write_file(&out, &c, &WriteMeta { built_at: T0 / 1000, watermarks, ..WriteMeta::default() }).unwrap();
    Snapshot::open(&out).unwrap();
    out
}

fn refused(bytes: &[u8], dir: &Path) -> SnapshotError {
    let p = dir.join("bad.snap");
    fs::write(&p, bytes).unwrap();
    let e = Snapshot::open(&p).unwrap_err();
    assert!(e.to_string().starts_with(&p.display().to_string()), "error names the file: {e}");
    e
}

/// Recomputes both checksums, so that a structural check (not the checksum) must catch it.
fn reseal(b: &mut [u8]) {
    let mut hasher = BlockHasher::at(HEADER_LEN as u64);
    hasher.update(&b[HEADER_LEN..]);
    let p = hasher.finish();
    b[240..248].copy_from_slice(&p.to_le_bytes());
    let h = xxh3_64(&b[..248]);
    b[248..256].copy_from_slice(&h.to_le_bytes());
}

#[test]
fn corrupted_files_are_refused() {
    let dir = tempfile::tempdir().unwrap();
    let good = fs::read(built(dir.path())).unwrap();
    let h = Header::decode(&good);

    // One flipped payload bit anywhere.
    for off in [HEADER_LEN, h.sections[1].offset as usize + 100, good.len() - 9] {
        let mut b = good.clone();
        b[off] ^= 0x10;
        assert!(matches!(refused(&b, dir.path()), SnapshotError::PayloadChecksum { .. }), "offset {off}");
    }
    // A flipped header byte.
    let mut b = good.clone();
    b[33] ^= 1;
    assert!(matches!(refused(&b, dir.path()), SnapshotError::HeaderChecksum { .. }));
    // Truncated: inside the payload, inside the header, empty.
    for len in [good.len() - 8, good.len() / 2, 100, 0] {
        assert!(matches!(refused(&good[..len], dir.path()), SnapshotError::Truncated { .. }), "len {len}");
    }
    // Trailing garbage.
    let mut b = good.clone();
    b.extend_from_slice(&[0; 64]);
    assert!(matches!(refused(&b, dir.path()), SnapshotError::Invalid { .. }));
    // Wrong magic, other versions (format 1 and 2 files must be rebuilt).
    let mut b = good.clone();
    b[0] = b'X';
    assert!(matches!(refused(&b, dir.path()), SnapshotError::BadMagic { .. }));
    for v in [1, 2, 4] {
        let mut b = good.clone();
        b[8] = v;
        let e = refused(&b, dir.path());
        assert!(e.to_string().contains(&format!("unsupported snapshot format version {v}")), "{e}");
        assert!(e.to_string().contains("rebuild with `consentgate snapshot build`"), "{e}");
        assert!(matches!(e, SnapshotError::UnsupportedVersion { found, .. } if found == u32::from(v)));
    }
    let e = refused(b"not a snapshot at all, just some text that is long enough? no", dir.path());
    assert!(matches!(e, SnapshotError::Truncated { .. }), "{e}");

    // Structural damage with valid checksums.
    let invalid = |mutate: &dyn Fn(&mut Vec<u8>), want: &str| {
        let mut b = good.clone();
        mutate(&mut b);
        reseal(&mut b);
        match refused(&b, dir.path()) {
            SnapshotError::Invalid { what, .. } => assert!(what.contains(want), "{what} !~ {want}"),
            e => panic!("{e:?}, wanted Invalid({want})"),
        }
    };
    let t0 = h.sections[1].offset as usize;
    let k = |b: &[u8], i: usize| u64::from_le_bytes(b[t0 + 8 * i..t0 + 8 * i + 8].try_into().unwrap());
    let put = |b: &mut Vec<u8>, i: usize, v: u64| b[t0 + 8 * i..t0 + 8 * i + 8].copy_from_slice(&v.to_le_bytes());
    let slots = h.sections[1].len as usize / 8;
    let shift = u32::from(h.entity_bits) + 2;
    // Two occupied neighbours in one bucket; a pair (state 0) followed by an empty slot.
    let adjacent = (0..slots - 1).find(|&i| i % 8 != 7 && k(&good, i) != 0 && k(&good, i + 1) != 0).unwrap();
    let lone = (0..slots - 1).find(|&i| k(&good, i) & 3 == 0 && k(&good, i + 1) == 0).unwrap();
    invalid(
        &|b| {
            let (x, y) = (k(b, adjacent), k(b, adjacent + 1));
            put(b, adjacent, y);
            put(b, adjacent + 1, x);
        },
        &format!("table slot {}: entries not in (home, key) order", adjacent + 1),
    );
    invalid(&|b| put(b, lone + 1, k(b, lone) | 1), &format!("table slot {}: two states", lone + 1));
    invalid(&|b| put(b, lone, (5 << shift) | 4), &format!("table slot {lone}: msisdn 5 out of range"));
    invalid(&|b| put(b, lone, k(b, lone) | 7), &format!("table slot {lone}: entity id"));
    invalid(&|b| put(b, lone, 0), "table holds");
    invalid(&|b| b[53] = 5, "bit widths");
    invalid(&|b| b[52] = 60, "bit widths");
    invalid(&|b| b[54] |= 4, "unknown flags");
    invalid(&|b| b[152] ^= 1, "buckets");
    invalid(&|b| b[160] ^= 1, "do not add up");
    invalid(&|b| b[200] = 1, "reserved");
    invalid(&|b| b[24] = 1, "reserved");
    // The watermarks section: count, node id, order.
    let w0 = h.sections[2].offset as usize;
    invalid(&|b| b[w0] = 2, "watermarks section: entry 1 truncated");
    invalid(&|b| b[w0 + 4 + 9] = b'/', "watermarks section: entry 0: node id");
    invalid(&|b| b[w0 + 4..w0 + 12].copy_from_slice(&0u64.to_le_bytes()), "seq 0");
    invalid(
        &|b| {
            let o = h.sections[0].offset as usize + 12;
            b[o] = b'z';
        },
        "entity 1 (beta)",
    );
    invalid(
        &|b| {
            let o = h.sections[0].offset as usize;
            b[o + 4] = 9;
        },
        "entity",
    );
    invalid(&|b| b[136] ^= 8, "section");
}

#[test]
fn in_memory_and_file_agree_on_info() {
    let dir = tempfile::tempdir().unwrap();
    let p = built(dir.path());
    let s = Snapshot::open(&p).unwrap();
    let i = s.info();
    assert_eq!(i.path.as_deref(), Some(p.as_path()));
    assert_eq!((i.format_version, i.built_at, i.watermarks.to_string()), (FORMAT_VERSION, T0 / 1000, "n1:7".into()));
    assert_eq!(i.entity_count, 2);
    assert_eq!(i.pair_count, 5000);
    assert!(i.dnc_count > 4990);
    assert_eq!(i.entity_bits, 1);
    assert_eq!(i.msisdn_bits, 43);
    assert_eq!(i.id().len(), 16);
    let again = Snapshot::from_bytes(&fs::read(&p).unwrap(), "mem").unwrap();
    assert_eq!(again.info().checksum, i.checksum);
    assert_eq!(again.slots(), s.slots());
}

#[test]
fn snapshot_is_send_and_sync() {
    fn assert_send_sync<T: Send + Sync>() {}
    assert_send_sync::<Snapshot>();
}

/// Diagnostic, not a regression test: `Snapshot::open` of a large file against the floor, a
/// plain two-thread read of the same file into a fresh buffer.
/// `CG_OPEN_PROBE_N=50000000 cargo test --release --lib open_probe -- --ignored --nocapture`
#[test]
#[ignore]
fn open_probe() {
    use std::time::Instant;
    let n: u64 = std::env::var("CG_OPEN_PROBE_N").ok().and_then(|v| v.parse().ok()).unwrap_or(5_000_000);
    let dir = tempfile::tempdir().unwrap();
    let out = dir.path().join("probe.snap");
    let t = Instant::now();
    let mut b = SnapshotBuilder::new();
    let mut seed = 3;
    let names: Vec<String> = (0..1000).map(|i| format!("brand-{i:03}")).collect();
    for _ in 0..n {
        b.add_dnc(8_613_000_000_000 + splitmix(&mut seed) % 7_000_000_000, T0).unwrap();
        let r = splitmix(&mut seed);
        b.add_statement(
            8_613_000_000_000 + (r >> 10) % 7_000_000_000,
            &names[(r % 1000) as usize],
            StatementKind::Grant,
            T0,
        )
        .unwrap();
    }
    let c = b.compile(&mut |_, _| {}).unwrap();
    write_file(&out, &c, &WriteMeta::default()).unwrap();
    drop(c);
    eprintln!("built {n}+{n} in {:?}", t.elapsed());
    for _ in 0..3 {
        let t = Instant::now();
        let f = File::open(&out).unwrap();
        let mut buf = vec![0u8; f.metadata().unwrap().len() as usize];
        let mid = buf.len() / 2;
        let (a, b) = buf.split_at_mut(mid);
        thread::scope(|s| {
            s.spawn(|| read_at(&f, b, mid as u64).unwrap());
            read_at(&f, a, 0).unwrap();
        });
        let t_read = t.elapsed();
        drop(buf);
        let t = Instant::now();
        let s = Snapshot::open(&out).unwrap();
        let t_open = t.elapsed();
        let t = Instant::now();
        let huge = s.use_huge_pages();
        eprintln!("plain read {t_read:?}; open {t_open:?}; use_huge_pages {huge} in {:?}", t.elapsed());
    }
}

/// The bounded-memory build (rows partitioned to files, table placed part by part and
/// streamed) writes the same table as the in-memory build, whatever the part count —
/// including more parts than buckets, parts with nothing in them, and journal statements.
#[test]
fn partitioned_build_writes_the_same_table() {
    let dir = tempfile::tempdir().unwrap();
    let (dp, cp) = (dir.path().join("dnc.csv"), dir.path().join("consent.csv"));
    let mut seed = 7;
    let (mut d, mut c) = (String::from("msisdn,registered_at\n"), String::from("msisdn,entity,action,at\n"));
    for _ in 0..30_000 {
        let m = 8_613_800_000_000 + splitmix(&mut seed) % 200_000;
        d.push_str(&format!("{m},{}\n", rfc3339(T0 + (splitmix(&mut seed) % 100) as i64)));
    }
    for i in 0..60_000 {
        // Every 1000th subscriber has hundreds of pairs: runs that cross part seams.
        let m = if i % 1000 == 0 { 8_613_800_000_777 } else { 8_613_800_000_000 + splitmix(&mut seed) % 200_000 };
        let act = if splitmix(&mut seed) % 3 == 0 { "revoke" } else { "grant" };
        c.push_str(&format!(
            "{m},brand-{},{act},{}\n",
            splitmix(&mut seed) % 500,
            rfc3339(T0 + (splitmix(&mut seed) % 100) as i64)
        ));
    }
    fs::write(&dp, d).unwrap();
    fs::write(&cp, c).unwrap();
    let journal = vec![
        st(8_613_800_000_777, Some("zeta"), StatementKind::Revoke, T0 + 500),
        st(8_613_800_000_001, None, StatementKind::Dnc, T0 + 500),
    ];
    let build_with = |parts: Option<u64>, name: &str| {
        let out = dir.path().join(name);
        let mut o = opts(Some(&dp), Some(&cp), &out);
        o.journal_records = journal.clone();
        o.parts = parts;
        let r = build(&o, |_| {}).unwrap();
        (r, Snapshot::open(&out).unwrap())
    };
    let (r0, s0) = build_with(None, "memory.snap");
    for k in [1, 2, 7, 64, 256] {
        let (r, s) = build_with(Some(k), &format!("parts{k}.snap"));
        assert_eq!(s.slots(), s0.slots(), "{k} parts");
        assert_eq!(
            (r.dnc, r.pairs, r.grants, r.revoked, r.dnc_newer),
            (r0.dnc, r0.pairs, r0.grants, r0.revoked, r0.dnc_newer)
        );
        assert_eq!(
            (r.buckets, r.table_slots, r.msisdn_bits, r.entity_bits),
            (r0.buckets, r0.table_slots, r0.msisdn_bits, r0.entity_bits)
        );
        assert_eq!(s.info().checksum, s0.info().checksum, "{k} parts");
        assert_eq!(s.entities().collect::<Vec<_>>(), s0.entities().collect::<Vec<_>>());
        // No part file is left behind.
        let left: Vec<_> = fs::read_dir(dir.path())
            .unwrap()
            .flatten()
            .filter(|e| e.file_name().to_string_lossy().contains(".parts"))
            .collect();
        assert!(left.is_empty(), "{left:?}");
    }
    assert_eq!(state(&s0, 8_613_800_000_777, "zeta"), Some(PairState::Revoked));
    // More parts than buckets (most parts empty, the carry runs across them), and a forced
    // part count of 0 (taken as 1).
    let tiny = dir.path().join("tiny.csv");
    fs::write(
        &tiny,
        "msisdn,registered_at\n8613800000001,2026-05-01\n8613800000002,2026-05-01\n8613800000003,2026-05-01\n",
    )
    .unwrap();
    let slots_of = |parts: Option<u64>, name: &str| {
        let out = dir.path().join(name);
        let mut o = opts(Some(&tiny), None, &out);
        o.parts = parts;
        build(&o, |_| {}).unwrap();
        Snapshot::open(&out).unwrap().slots().to_vec()
    };
    let mem = slots_of(None, "tiny-mem.snap");
    assert_eq!(slots_of(Some(256), "tiny-256.snap"), mem);
    assert_eq!(slots_of(Some(0), "tiny-0.snap"), mem);
    // A build killed mid-way leaves its part files; the next build of that output removes them.
    let stale = dir.path().join(".tiny-mem.snap.parts999999");
    fs::create_dir_all(&stale).unwrap();
    fs::write(stale.join("dnc.0"), [0u8; 16]).unwrap();
    slots_of(Some(2), "tiny-mem.snap");
    assert!(!stale.exists());
    // --memory picks the part count from the input size.
    assert_eq!(external::parts_for(1 << 30, 1 << 40), 1);
    assert!(external::parts_for(40_000_000_000, 8 << 30) > 8);
    assert_eq!(external::parts_for(u64::MAX / 32, 1), external::MAX_PARTS);
    assert_eq!(external::parts_for(0, 8 << 30), external::PARTS_UNKNOWN_SIZE);
}

/// The proof column: kept in `<out>.proofs` (the latest grant's proof per pair), found by
/// lookup; `require_proof` compiles a grant without one as no grant and counts it; a build
/// without proofs removes a stale proofs file.
#[test]
fn consent_proofs_beside_the_snapshot_and_require_proof() {
    use super::proofs::{self, Proof, ProofLookup};
    let dir = tempfile::tempdir().unwrap();
    let csv = dir.path().join("consent.csv");
    std::fs::write(
        &csv,
        "msisdn,entity,action,at,proof\n\
         8613800000001,acme,grant,2026-01-01,urn:acme:optin:1\n\
         8613800000001,acme,grant,2026-02-01,urn:acme:optin:1b\n\
         8613800000002,acme,grant,2026-01-01,\n\
         8613800000003,acme,grant,2026-01-01,sha256:9f86d081\n\
         8613800000003,acme,revoke,2026-03-01,\n",
    )
    .unwrap();
    let out = dir.path().join("c.snap");
    let r = build(&opts(None, Some(&csv), &out), |_| {}).unwrap();
    assert_eq!((r.proofs, r.grants_without_proof, r.grants), (2, 0, 2));
    let s = Snapshot::open(&out).unwrap();
    let id = s.info().checksum;
    let acme = s.entity_id("acme").unwrap();
    assert_eq!(
        proofs::lookup(&out, id, 8613800000001, "acme").unwrap(),
        ProofLookup::Found(Proof { proof: "urn:acme:optin:1b".into(), granted_at: 1_769_904_000_000 })
    );
    assert_eq!(proofs::lookup(&out, id, 8613800000002, "acme").unwrap(), ProofLookup::None);
    // The proof of a grant since revoked is still on record; the snapshot says it is revoked.
    assert!(matches!(proofs::lookup(&out, id, 8613800000003, "acme").unwrap(), ProofLookup::Found(_)));
    assert_eq!(s.pair(8613800000003, acme), Some(PairState::Revoked));
    assert_eq!(s.pair(8613800000002, acme), Some(PairState::Grant));

    let strict = BuildOptions { require_proof: true, ..opts(None, Some(&csv), &out) };
    let r = build(&strict, |_| {}).unwrap();
    assert_eq!((r.grants_without_proof, r.grants), (1, 1), "{r}");
    assert!(r.to_string().contains("grants without proof, compiled as no grant (--require-proof): 1"), "{r}");
    let s = Snapshot::open(&out).unwrap();
    assert_eq!(s.pair(8613800000002, s.entity_id("acme").unwrap()), None, "no proof: no grant");
    assert_eq!(proofs::lookup(&out, id, 8613800000001, "acme").unwrap(), ProofLookup::Stale, "the old build's id");

    std::fs::write(&csv, "msisdn,entity,action,at\n8613800000001,acme,grant,2026-01-01\n").unwrap();
    let r = build(&opts(None, Some(&csv), &out), |_| {}).unwrap();
    assert_eq!(r.proofs, 0);
    let id = Snapshot::open(&out).unwrap().info().checksum;
    assert_eq!(proofs::lookup(&out, id, 8613800000001, "acme").unwrap(), ProofLookup::NoFile);
}
