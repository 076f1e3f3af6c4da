use std::fs;
use std::path::Path;
use std::time::{Duration, Instant};

use super::search::{search, AuditLine, Query};
use super::*;
use crate::config::MessageClass;
use crate::policy::Reason;

fn cfg(dir: &Path) -> AuditConfig {
    AuditConfig { mode: AuditMode::All, dir: Some(dir.to_path_buf()), ..AuditConfig::default() }
}

fn rec(account: AccountId, i: u64, verdict: Verdict) -> AuditRecord {
    AuditRecord {
        at_us: 1_777_623_000_123_456 + i as i64,
        account,
        session: 7,
        sequence: i as u32,
        source: AuditAddr::new(1, 1, b"1069012345"),
        destination: AuditAddr::new(2, 1, format!("138{:08}", i % 1000).as_bytes()),
        msisdn: Some(8613800000000 + i % 1000),
        class: Some(MessageClass::Marketing),
        verdict,
        status: match verdict {
            Verdict::Reject(_) => Some(0x400),
            _ => Some(0),
        },
        upstream_status: (verdict != Verdict::Reject(Reason::NoConsent)).then_some(0),
        message_id: if verdict.forwards() { MessageId::new(format!("m{i}\0").as_bytes()) } else { MessageId::NONE },
        snapshot: SnapshotRef { id: 0x5f0c_1d2e_3a4b_5c6d, generation: 3, built_at: 1_777_507_200 },
        protocol: Default::default(),
        dlt: Default::default(),
    }
}

fn lines(dir: &Path) -> Vec<String> {
    let mut v = Vec::new();
    for f in list_files(dir).unwrap() {
        v.extend(fs::read_to_string(&f.path).unwrap().lines().map(str::to_owned));
    }
    v
}

/// Waits (bounded) until `cond` holds.
fn eventually(what: &str, mut cond: impl FnMut() -> bool) {
    let t = Instant::now();
    while !cond() {
        assert!(t.elapsed() < Duration::from_secs(10), "timed out waiting for {what}");
        std::thread::sleep(Duration::from_millis(5));
    }
}

#[test]
fn record_is_small_and_inline() {
    // Copy + fixed size: a push is a memcpy. Guard against a field quietly growing it
    // (200 bytes, then 216 with the DLT PE and template ids).
    assert!(std::mem::size_of::<AuditRecord>() <= 216, "{}", std::mem::size_of::<AuditRecord>());
}

#[test]
fn line_format_is_as_documented() {
    let mut out = Vec::new();
    let mut r = rec(AccountId(0), 0, Verdict::Reject(Reason::NoConsent));
    r.destination = AuditAddr::new(2, 1, b"13800138000");
    r.msisdn = Some(8613800138000);
    write_record(&mut out, &r, "acme", "acme-retail");
    let s = String::from_utf8(out).unwrap();
    assert_eq!(
        s,
        concat!(
            r#"{"time":"2026-05-01T08:10:00.123456Z","account":"acme","entity":"acme-retail","session":7,"seq":0,"#,
            r#""source":"1069012345","source_ton":1,"source_npi":1,"destination":"13800138000","destination_ton":2,"#,
            r#""destination_npi":1,"msisdn":"8613800138000","class":"marketing","verdict":"rejected","#,
            r#""reason":"no_consent","status":"0x00000400","upstream_status":null,"message_id":null,"#,
            r#""snapshot":"5f0c1d2e3a4b5c6d","snapshot_generation":3,"snapshot_built":"2026-04-30T00:00:00Z"}"#,
            "\n"
        )
    );
    // Every line is valid JSON and reads back.
    let back: AuditLine = serde_json::from_str(&s).unwrap();
    assert_eq!(back.reason.as_deref(), Some("no_consent"));
    assert_eq!(back.msisdn.as_deref(), Some("8613800138000"));
    assert_eq!(back.protocol, None, "SMPP records carry no protocol field");
}

#[test]
fn a_dlt_record_carries_the_pe_and_template_ids() {
    let mut out = Vec::new();
    let mut r = rec(AccountId(0), 0, Verdict::Reject(Reason::DltTemplateMismatch));
    r.dlt = crate::policy::DltIds { pe: 1_101_000_000_000_000_001, template: 1_107_000_000_000_000_042 };
    write_record(&mut out, &r, "in", "in-co");
    let s = String::from_utf8(out).unwrap();
    assert!(s.ends_with("\"dlt_pe\":\"1101000000000000001\",\"dlt_template\":\"1107000000000000042\"}\n"), "{s}");
    let back: AuditLine = serde_json::from_str(&s).unwrap();
    assert_eq!(back.reason.as_deref(), Some("dlt_template_mismatch"));
    assert_eq!(
        (back.dlt_pe.as_deref(), back.dlt_template.as_deref()),
        (Some("1101000000000000001"), Some("1107000000000000042"))
    );
    // Only the PE known (refused before a template): no template field.
    let mut out = Vec::new();
    r.dlt.template = 0;
    write_record(&mut out, &r, "in", "in-co");
    let s = String::from_utf8(out).unwrap();
    assert!(s.contains(r#""dlt_pe":"1101000000000000001""#) && !s.contains("\"dlt_template\""), "{s}");
}

#[test]
fn a_cmpp_record_is_marked_and_reads_back() {
    let mut out = Vec::new();
    let mut r = rec(AccountId(0), 0, Verdict::Reject(Reason::Revoked));
    r.protocol = super::Protocol::Cmpp;
    r.status = Some(101);
    write_record(&mut out, &r, "901234", "acme-retail");
    let s = String::from_utf8(out).unwrap();
    assert!(s.contains(r#""status":"0x00000065""#), "{s}");
    assert!(s.ends_with("\"snapshot_built\":\"2026-04-30T00:00:00Z\",\"protocol\":\"cmpp\"}\n"), "{s}");
    let back: AuditLine = serde_json::from_str(&s).unwrap();
    assert_eq!(back.protocol.as_deref(), Some("cmpp"));
}

#[test]
fn odd_bytes_stay_valid_json() {
    let mut out = Vec::new();
    let mut r = rec(AccountId(0), 1, Verdict::Accept);
    r.source = AuditAddr::new(5, 0, b"A\"\\\x01\xff\xc3\xa9");
    r.destination = AuditAddr::new(1, 1, &[b'9'; 30]);
    r.msisdn = None;
    r.class = None;
    r.snapshot = SnapshotRef::default();
    write_record(&mut out, &r, "we\"ird", "ü");
    let v: serde_json::Value = serde_json::from_slice(&out).unwrap();
    assert_eq!(v["source"], "A\"\\\u{1}\u{ff}é");
    assert_eq!(v["account"], "we\"ird");
    assert_eq!(v["destination"].as_str().unwrap().len(), ADDR_CAP);
    assert_eq!(v["destination_truncated"], true);
    assert_eq!(v["msisdn"], serde_json::Value::Null);
    assert_eq!(v["snapshot"], serde_json::Value::Null);
    assert_eq!(v["snapshot_built"], serde_json::Value::Null);
    assert_eq!(v["message_id"], "m1");
}

#[test]
fn times() {
    assert_eq!(format_time_us(0), "1970-01-01T00:00:00.000000Z");
    assert_eq!(format_time_us(1_709_164_800_000_001), "2024-02-29T00:00:00.000001Z");
    assert_eq!(format_time_us(-1), "1969-12-31T23:59:59.999999Z");
    assert_eq!(format::compact_time(1_777_623_000), "20260501T081000Z");
    for us in [0, 1_709_164_800_000_001, 1_777_623_000_123_456, 4_102_444_799_999_999] {
        assert_eq!(format::parse_time_us(&format_time_us(us)), Some(us));
    }
    assert_eq!(writer::parse_name("audit-20260501T081000Z.jsonl"), Some((1_777_623_000, 0)));
    assert_eq!(writer::parse_name("audit-20260501T081000Z-12.jsonl"), Some((1_777_623_000, 12)));
    assert_eq!(writer::parse_name("audit-20260501T081000Z-.jsonl"), None);
    assert_eq!(writer::parse_name("audit-20261301T081000Z.jsonl"), None);
    assert_eq!(writer::parse_name("journal-00000000000000000001.log"), None);
}

#[test]
fn modes() {
    let (acc, rej, would) = (Verdict::Accept, Verdict::Reject(Reason::Dnc), Verdict::WouldReject(Reason::Dnc));
    assert!([acc, rej, would].iter().all(|&v| AuditMode::All.records(v)));
    assert!(!AuditMode::Rejects.records(acc) && AuditMode::Rejects.records(rej) && AuditMode::Rejects.records(would));
    assert!([acc, rej, would].iter().all(|&v| !AuditMode::Off.records(v)));
}

#[test]
fn disabled_log_runs_nothing() {
    let dir = tempfile::tempdir().unwrap();
    let off = AuditConfig { mode: AuditMode::Off, ..cfg(dir.path()) };
    for c in [AuditConfig::default(), off] {
        let a = Audit::open(&c).unwrap();
        assert_eq!(a.mode(), AuditMode::Off);
        let mut b = a.sink();
        assert!(!b.wants(Verdict::Reject(Reason::Dnc)));
        b.push(rec(a.account("x", "y"), 0, Verdict::Accept));
        b.flush();
        a.close();
        assert_eq!(a.stats(), AuditStats::default());
    }
    assert!(list_files(dir.path()).unwrap().is_empty());
}

#[test]
fn round_trip_writer_file_search() {
    let dir = tempfile::tempdir().unwrap();
    let a = Audit::open(&cfg(dir.path())).unwrap();
    let acme = a.account("acme", "acme-retail");
    let bank = a.account("bank", "acme-bank");
    assert_eq!(a.account("acme", "acme-retail"), acme);
    let mut b1 = a.sink();
    let mut b2 = a.sink();
    for i in 0..3000u64 {
        let v = match i % 3 {
            0 => Verdict::Accept,
            1 => Verdict::Reject(Reason::NoConsent),
            _ => Verdict::WouldReject(Reason::Revoked),
        };
        if i % 2 == 0 {
            b1.push(rec(acme, i, v));
        } else {
            b2.push(rec(bank, i, v));
        }
        if i % 100 == 99 {
            b1.flush();
            b2.flush();
        }
    }
    drop(b1); // flushes
    b2.flush();
    a.close();
    let st = a.stats();
    assert_eq!((st.written, st.dropped, st.write_errors, st.queued), (3000, 0, 0, 0));
    let ls = lines(dir.path());
    assert_eq!(ls.len(), 3000);
    // Records of one session keep their order.
    let mut last = None;
    for l in &ls {
        let v: AuditLine = serde_json::from_str(l).unwrap();
        if v.account == "acme" {
            assert!(last.is_none_or(|p| p < v.seq), "{l}");
            last = Some(v.seq);
            assert_eq!(v.entity, "acme-retail");
        }
    }

    // Search: subscriber 8613800000042 got records i = 42, 1042, 2042.
    let q = Query { msisdn: 8613800000042, ..Query::default() };
    let mut got = Vec::new();
    let rep = search(dir.path(), &q, |r, line| {
        assert!(line.ends_with(b"\n"));
        got.push(r.clone());
        Ok(())
    })
    .unwrap();
    assert_eq!(rep.matched, 3);
    assert_eq!(got.iter().map(|r| r.seq).collect::<Vec<_>>(), [42, 1042, 2042]);
    let r = &got[0]; // i = 42: 42 % 3 == 0 → accepted, even → acme
    assert_eq!((r.account.as_str(), r.verdict.as_str(), r.reason.as_deref()), ("acme", "accepted", None));
    assert_eq!(r.message_id.as_deref(), Some("m42"));
    assert_eq!(r.destination, "13800000042");
    assert_eq!(r.snapshot.as_deref(), Some("5f0c1d2e3a4b5c6d"));
    // 1042 = 3·347 + 1 → rejected; 2042 = 3·680 + 2 → would_reject.
    assert_eq!((got[1].verdict.as_str(), got[1].reason.as_deref()), ("rejected", Some("no_consent")));
    assert_eq!(got[1].status.as_deref(), Some("0x00000400"));
    assert_eq!((got[2].verdict.as_str(), got[2].reason.as_deref()), ("would_reject", Some("revoked")));

    // After close, flushes are counted as dropped, never written or blocked.
    b2.push(rec(bank, 0, Verdict::Accept));
    b2.flush();
    assert_eq!(a.stats().dropped, 1);
}

#[test]
fn search_filters_account_and_time() {
    let dir = tempfile::tempdir().unwrap();
    let a = Audit::open(&cfg(dir.path())).unwrap();
    let acme = a.account("acme", "acme-retail");
    let bank = a.account("bank", "acme-bank");
    let mut b = a.sink();
    // Realistic times: just before the file was opened (search prunes files by their names).
    let base = now_us() - 20_000_000;
    for i in 0..10u64 {
        let mut r = rec(if i < 5 { acme } else { bank }, 0, Verdict::Reject(Reason::Dnc));
        r.sequence = i as u32;
        r.at_us = base + i as i64 * 1_000_000; // one a second
        b.push(r);
    }
    b.flush();
    a.close();
    let run = |q: Query| {
        let mut seqs = Vec::new();
        search(dir.path(), &q, |r, _| {
            seqs.push(r.seq);
            Ok(())
        })
        .unwrap();
        seqs
    };
    let m = 8613800000000;
    assert_eq!(run(Query { msisdn: m, ..Default::default() }).len(), 10);
    assert_eq!(run(Query { msisdn: m, account: Some("bank".into()), ..Default::default() }), [5, 6, 7, 8, 9]);
    let since = Some(base + 2_000_000);
    let until = Some(base + 6_000_000);
    assert_eq!(run(Query { msisdn: m, since_us: since, until_us: until, ..Default::default() }), [2, 3, 4, 5, 6]);
    assert!(run(Query { msisdn: m + 1, ..Default::default() }).is_empty());
}

#[test]
fn rotation_by_size() {
    let dir = tempfile::tempdir().unwrap();
    let a = Audit::open(&AuditConfig { rotate_bytes: 4096, ..cfg(dir.path()) }).unwrap();
    let acct = a.account("acme", "acme-retail");
    let mut b = a.sink();
    for i in 0..200u64 {
        b.push(rec(acct, i, Verdict::Reject(Reason::Revoked)));
        if i % 10 == 9 {
            b.flush();
            // One batch per write, so each file stays near the limit.
            eventually("queue drained", || a.stats().queued == 0);
        }
    }
    a.close();
    let files = list_files(dir.path()).unwrap();
    assert!(files.len() >= 10, "{files:?}");
    for f in &files[..files.len() - 1] {
        let len = fs::metadata(&f.path).unwrap().len();
        // Rotated after the write that crossed 4096; a batch of 10 lines is < 8 KiB.
        assert!((4096..8192).contains(&len), "{} is {len} bytes", f.path.display());
    }
    assert_eq!(a.stats().files_opened, files.len() as u64);
    assert_eq!(lines(dir.path()).len(), 200);
    // Files opened within the same second are told apart and read in order.
    let seqs: Vec<u32> = lines(dir.path()).iter().map(|l| serde_json::from_str::<AuditLine>(l).unwrap().seq).collect();
    assert_eq!(seqs, (0..200).collect::<Vec<u32>>());
}

#[test]
fn rotation_by_interval() {
    let dir = tempfile::tempdir().unwrap();
    let a = Audit::open(&AuditConfig { rotate_interval: Duration::from_millis(300), ..cfg(dir.path()) }).unwrap();
    let acct = a.account("acme", "acme-retail");
    let mut b = a.sink();
    for round in 0..3u64 {
        b.push(rec(acct, round, Verdict::Reject(Reason::Dnc)));
        b.flush();
        eventually("written", || a.stats().written == round + 1);
        std::thread::sleep(Duration::from_millis(1200)); // next file gets a later name
    }
    a.close();
    let files = list_files(dir.path()).unwrap();
    assert_eq!(files.len(), 3, "{files:?}");
    for f in &files {
        assert_eq!(fs::read_to_string(&f.path).unwrap().lines().count(), 1);
    }
    // Idle time leaves no empty files: rotation closes, the next record opens.
    assert_eq!(a.stats().files_opened, 3);
}

#[test]
fn retention_deletes_only_old_audit_files() {
    let dir = tempfile::tempdir().unwrap();
    let old = std::time::SystemTime::now() - Duration::from_secs(3 * 86_400);
    let mk = |name: &str, mtime: Option<std::time::SystemTime>| {
        let p = dir.path().join(name);
        fs::write(&p, "{}\n").unwrap();
        if let Some(t) = mtime {
            fs::File::options().write(true).open(&p).unwrap().set_modified(t).unwrap();
        }
        p
    };
    let old_audit = mk("audit-20200101T000000Z.jsonl", Some(old));
    let old_audit2 = mk("audit-20200101T000000Z-1.jsonl", Some(old));
    let recent_audit = mk("audit-20200102T000000Z.jsonl", None); // old name, recent writes
    let old_other = mk("notes.txt", Some(old));
    let old_journal = mk("journal-00000000000000000001.log", Some(old));
    let a = Audit::open(&AuditConfig { retention: Duration::from_secs(2 * 86_400), ..cfg(dir.path()) }).unwrap();
    assert_eq!(a.stats().files_deleted, 2);
    assert!(!old_audit.exists() && !old_audit2.exists());
    assert!(recent_audit.exists() && old_other.exists() && old_journal.exists());
    a.close();
    // The active file is not deleted.
    assert_eq!(list_files(dir.path()).unwrap().len(), 2);
}

#[test]
fn full_queue_drops_and_counts_without_blocking() {
    let dir = tempfile::tempdir().unwrap();
    // Counter handles are resolved at open: a local recorder sees what the gateway exports.
    let recorder = metrics_exporter_prometheus::PrometheusBuilder::new().build_recorder();
    let metrics = recorder.handle();
    let a = metrics::with_local_recorder(&recorder, || {
        Audit::open(&AuditConfig { queue_records: 1000, ..cfg(dir.path()) })
    })
    .unwrap();
    let acct = a.account("acme", "acme-retail");
    let mut b = a.sink();
    let stall = a.front.core.stall.lock().unwrap();
    let t = Instant::now();
    for i in 0..10_000u64 {
        b.push(rec(acct, i, Verdict::Reject(Reason::Dnc)));
        b.flush();
    }
    let took = t.elapsed();
    let st = a.stats();
    assert!(took < Duration::from_secs(2), "10 000 push+flush took {took:?} with a stalled writer");
    // The writer holds at most one batch it took before stalling; the queue is bounded.
    // One record per flush: exactly queue_records were accepted, the rest dropped.
    assert_eq!((st.queued, st.dropped), (1000, 9000), "{st:?}");
    let text = metrics.render();
    assert!(text.contains("consentgate_audit_records_total{result=\"dropped\"} 9000"), "{text}");
    // One error per dropping flush.
    assert!(text.contains("consentgate_errors_total{stage=\"audit\",kind=\"queue_full\"} 9000"), "{text}");
    drop(stall);
    a.close();
    let st = a.stats();
    assert_eq!((st.written, st.dropped, st.queued), (1000, 9000, 0), "{st:?}");
    assert_eq!(lines(dir.path()).len(), 1000);
    let text = metrics.render();
    assert!(text.contains("consentgate_audit_records_total{result=\"written\"} 1000"), "{text}");
}

#[test]
fn write_errors_are_counted_and_the_writer_recovers() {
    let tmp = tempfile::tempdir().unwrap();
    let dir = tmp.path().join("audit");
    let moved = tmp.path().join("moved");
    // Every write rotates, so every batch opens a new file in `dir`.
    let a = Audit::open(&AuditConfig { rotate_bytes: 1, ..cfg(&dir) }).unwrap();
    let acct = a.account("acme", "acme-retail");
    let mut b = a.sink();
    let mut pushed = 0u64;
    let mut push = |b: &mut AuditBatch| {
        b.push(rec(acct, pushed, Verdict::Reject(Reason::Dnc)));
        b.flush();
        pushed += 1;
    };
    push(&mut b);
    eventually("first record written", || a.stats().written == 1);

    // The directory disappears and a file takes its path (tests run as root: permissions
    // would not stop the writer, ENOTDIR does).
    fs::rename(&dir, &moved).unwrap();
    fs::write(&dir, "not a directory").unwrap();
    push(&mut b);
    eventually("open error counted", || a.stats().write_errors >= 1 && a.stats().dropped == 1);

    // The directory comes back: within the retry interval the writer writes again.
    fs::remove_file(&dir).unwrap();
    fs::rename(&moved, &dir).unwrap();
    let t = Instant::now();
    while a.stats().written < 2 {
        assert!(t.elapsed() < Duration::from_secs(10), "writer did not recover: {:?}", a.stats());
        push(&mut b);
        std::thread::sleep(Duration::from_millis(50));
    }
    drop(b);
    a.close();
    let st = a.stats();
    assert_eq!(st.written + st.dropped, pushed, "{st:?}");
    assert_eq!(lines(&dir).len() as u64, st.written);
}

#[test]
fn search_skips_partial_and_bad_lines() {
    let dir = tempfile::tempdir().unwrap();
    let mut good = Vec::new();
    for i in 0..3 {
        write_record(&mut good, &rec(AccountId(0), i * 1000, Verdict::Reject(Reason::Dnc)), "acme", "acme-retail");
    }
    let text = String::from_utf8(good).unwrap();
    let ls: Vec<&str> = text.lines().collect();
    // File 1: a line cut by an abandoned write in the middle (followed by a new record).
    let cut = &ls[1][..ls[1].len() / 2];
    fs::write(dir.path().join("audit-20260501T000000Z.jsonl"), format!("{}\n{cut}{}\n", ls[0], ls[1])).unwrap();
    // File 2 (active): ends in a partial line, as while the writer is mid-write.
    fs::write(dir.path().join("audit-20260501T010000Z.jsonl"), format!("{}\n{cut}", ls[2])).unwrap();
    let mut seqs = Vec::new();
    let rep = search(dir.path(), &Query { msisdn: 8613800000000, ..Default::default() }, |r, _| {
        seqs.push(r.seq);
        Ok(())
    })
    .unwrap();
    assert_eq!(seqs, [0, 2000]);
    assert_eq!((rep.partial_lines, rep.bad_lines, rep.files), (1, 1, 2));
    assert_eq!(rep.warnings.len(), 2);
    assert!(rep.warnings[1].contains("partial last line"), "{:?}", rep.warnings);
}

const BASE: &str = "[upstream]\naddress = \"10.1.2.3:2775\"\n";

fn audit_section(body: &str) -> Result<AuditConfig, Vec<(String, String)>> {
    crate::config::Config::parse(&format!("{BASE}[audit]\n{body}"))
        .map(|c| c.audit)
        .map_err(|e| e.into_iter().map(|e| (e.key, e.message)).collect())
}

#[test]
fn config_defaults_and_modes() {
    // No [audit] at all, or no dir: off (with a note at start), not an error.
    let c = crate::config::Config::parse(BASE).unwrap().audit;
    assert_eq!((c.mode, c.dir.is_none()), (AuditMode::Off, true));
    assert_eq!(audit_section("").unwrap().mode, AuditMode::Off);
    assert_eq!(audit_section("mode = \"off\"").unwrap().mode, AuditMode::Off);
    // A dir alone: rejects, every other key at its default.
    let c = audit_section("dir = \"/var/log/consentgate/audit\"").unwrap();
    assert_eq!(c.mode, AuditMode::Rejects);
    assert_eq!(c.dir.as_deref(), Some(Path::new("/var/log/consentgate/audit")));
    assert_eq!(c.rotate_bytes, 256 << 20);
    assert_eq!(c.rotate_interval, Duration::from_secs(3600));
    assert_eq!(c.retention, Duration::from_secs(150 * 86_400));
    assert_eq!(c.queue_records, 65_536);
    let c = audit_section(
        "mode = \"all\"\ndir = \"/a\"\nrotate_bytes = 1048576\nrotate_interval = \"10m\"\nretention = \"200d\"\nqueue_records = 4096",
    )
    .unwrap();
    assert_eq!(c.mode, AuditMode::All);
    assert_eq!((c.rotate_bytes, c.rotate_interval, c.queue_records), (1 << 20, Duration::from_secs(600), 4096));
    assert_eq!(c.retention, Duration::from_secs(200 * 86_400));
    // dir with mode off stays off.
    assert_eq!(audit_section("mode = \"off\"\ndir = \"/a\"").unwrap().mode, AuditMode::Off);
}

#[test]
fn config_problems_name_their_keys() {
    let keys = |body: &str| -> Vec<String> { audit_section(body).unwrap_err().into_iter().map(|e| e.0).collect() };
    assert_eq!(keys("mode = \"rejects\""), ["audit.dir"]);
    assert_eq!(keys("mode = \"all\""), ["audit.dir"]);
    assert_eq!(keys("dir = \"\""), ["audit.dir"]);
    assert_eq!(keys("mode = \"some\"\ndir = \"/a\""), ["audit.mode"]);
    assert_eq!(keys("dir = \"/a\"\nretention = \"12h\""), ["audit.retention"]);
    assert_eq!(keys("dir = \"/a\"\nretention = \"5 months\""), ["audit.retention"]);
    assert_eq!(keys("dir = \"/a\"\nrotate_bytes = 1000"), ["audit.rotate_bytes"]);
    assert_eq!(keys("dir = \"/a\"\nrotate_interval = \"1s\""), ["audit.rotate_interval"]);
    assert_eq!(keys("dir = \"/a\"\nqueue_records = 0"), ["audit.queue_records"]);
    // All at once.
    assert_eq!(
        keys("mode = \"all\"\nretention = \"1h\"\nqueue_records = 1").len(),
        3,
        "{:?}",
        audit_section("mode = \"all\"\nretention = \"1h\"\nqueue_records = 1")
    );
    let e = crate::config::Config::parse(&format!("{BASE}[audit]\ndirectory = \"/a\"\n")).unwrap_err();
    assert!(e[0].key == "audit.directory" && e[0].message.contains("unknown key"), "{e:?}");
}

#[test]
fn open_fails_when_dir_cannot_be_created() {
    let tmp = tempfile::tempdir().unwrap();
    let file = tmp.path().join("file");
    fs::write(&file, "x").unwrap();
    let e = Audit::open(&cfg(&file.join("audit"))).unwrap_err();
    assert!(e.to_string().contains("audit.dir"), "{e}");
}

#[test]
fn search_skips_files_outside_the_time_range() {
    let dir = tempfile::tempdir().unwrap();
    // Three hourly files, one record each, stamped 10 s after their file opened.
    let start = 1_777_600_800; // 2026-05-01T02:00:00Z
    for h in 0..3i64 {
        let mut out = Vec::new();
        let mut r = rec(AccountId(0), 0, Verdict::Reject(Reason::Dnc));
        r.sequence = h as u32;
        r.at_us = (start + h * 3600 + 10) * 1_000_000;
        write_record(&mut out, &r, "acme", "acme-retail");
        let name = format!("audit-{}.jsonl", format::compact_time(start + h * 3600));
        fs::write(dir.path().join(name), out).unwrap();
    }
    let q = |since: Option<i64>, until: Option<i64>| {
        let mut seqs = Vec::new();
        let q = Query {
            msisdn: 8613800000000,
            since_us: since.map(|s| s * 1_000_000),
            until_us: until.map(|s| s * 1_000_000),
            ..Default::default()
        };
        let rep = search(dir.path(), &q, |r, _| {
            seqs.push(r.seq);
            Ok(())
        })
        .unwrap();
        (seqs, rep.files_skipped)
    };
    assert_eq!(q(None, None), (vec![0, 1, 2], 0));
    // Since inside the third hour: the first two files end before it and are not read.
    assert_eq!(q(Some(start + 2 * 3600 + 5), None), (vec![2], 2));
    // Until the first record: the third file opened more than the 1 h slack later.
    assert_eq!(q(None, Some(start + 10)), (vec![0], 1));
}
