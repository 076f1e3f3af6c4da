//! `consentgate audit search` against files written by the real audit writer: every accepted
//! number form finds the same records, filters narrow them, `--json` prints the stored lines,
//! a half-written trailing line is skipped with a warning, bad arguments exit 64.

use std::path::Path;
use std::process::{Command, Output};

use consentgate::audit::{
    now_us, AccountId, Audit, AuditAddr, AuditConfig, AuditMode, AuditRecord, MessageId, SnapshotRef,
};
use consentgate::config::MessageClass;
use consentgate::policy::{Reason, Verdict};

fn record(account: AccountId, seq: u32, at_us: i64, dest: &[u8], msisdn: u64, verdict: Verdict) -> AuditRecord {
    AuditRecord {
        at_us,
        account,
        session: 3,
        sequence: seq,
        source: AuditAddr::new(1, 1, b"1069012345"),
        destination: AuditAddr::new(2, 1, dest),
        msisdn: Some(msisdn),
        class: Some(MessageClass::Marketing),
        verdict,
        status: Some(match verdict {
            Verdict::Reject(r) => r.label().len() as u32 + 0x400, // any non-zero status
            _ => 0,
        }),
        upstream_status: verdict.forwards().then_some(0),
        message_id: if verdict.forwards() { MessageId::new(b"a1b2c3") } else { MessageId::NONE },
        snapshot: SnapshotRef { id: 0xfeed_beef_0000_0001, generation: 1, built_at: 1_777_507_200 },
        protocol: Default::default(),
        dlt: Default::default(),
    }
}

/// Writes: subscriber 8613800138000 — acme rejected 2 h ago, bank accepted 1 min ago; another
/// subscriber in between.
fn write_log(dir: &Path) {
    let a =
        Audit::open(&AuditConfig { mode: AuditMode::All, dir: Some(dir.into()), ..AuditConfig::default() }).unwrap();
    let acme = a.account("acme", "acme-retail");
    let bank = a.account("bank", "acme-bank");
    let now = now_us();
    let mut b = a.sink();
    b.push(record(acme, 11, now - 7_200_000_000, b"13800138000", 8613800138000, Verdict::Reject(Reason::Revoked)));
    b.push(record(acme, 12, now - 3_600_000_000, b"13900139000", 8613900139000, Verdict::Reject(Reason::Dnc)));
    b.push(record(bank, 13, now - 60_000_000, b"+8613800138000", 8613800138000, Verdict::Accept));
    b.flush();
    a.close();
    assert_eq!(a.stats().written, 3);
    // A log spanning hours: name the file as if opened 3 h ago (the writer names it "now").
    let files = consentgate::audit::list_files(dir).unwrap();
    assert_eq!(files.len(), 1);
    let t = consentgate::audit::format_time_us(now - 3 * 3_600_000_000);
    let stamp: String = t[..19].chars().filter(|c| *c != '-' && *c != ':').collect();
    std::fs::rename(&files[0].path, dir.join(format!("audit-{stamp}Z.jsonl"))).unwrap();
}

fn search(dir: &Path, args: &[&str]) -> Output {
    Command::new(env!("CARGO_BIN_EXE_consentgate"))
        .args(["audit", "search", "--dir"])
        .arg(dir)
        .args(args)
        .output()
        .unwrap()
}

fn stdout(o: &Output) -> String {
    String::from_utf8_lossy(&o.stdout).into_owned()
}

fn stderr(o: &Output) -> String {
    String::from_utf8_lossy(&o.stderr).into_owned()
}

#[test]
fn search_finds_a_subscriber_in_any_number_form() {
    let dir = tempfile::tempdir().unwrap();
    write_log(dir.path());
    for form in ["+8613800138000", "008613800138000", "8613800138000", "13800138000"] {
        let o = search(dir.path(), &["--msisdn", form]);
        assert!(o.status.success(), "{form}: {}", stderr(&o));
        let out = stdout(&o);
        assert!(out.contains("2 matching record(s) for 8613800138000"), "{form}: {out}");
        let rows: Vec<&str> = out.lines().filter(|l| l.contains("acme")).collect();
        assert_eq!(rows.len(), 2, "{out}");
        assert!(rows[0].contains("acme-retail") && rows[0].contains("rejected") && rows[0].contains("revoked"));
        assert!(rows[0].contains("3/11") && rows[0].contains("feedbeef00000001 #1"), "{}", rows[0]);
        assert!(rows[1].contains("bank") && rows[1].contains("accepted") && rows[1].contains("a1b2c3"));
        assert!(out.starts_with("TIME (UTC)"), "{out}");
    }
    // National number with another country code finds nothing (a different subscriber).
    let o = search(dir.path(), &["--msisdn", "13800138000", "--country-code", "91"]);
    assert!(stdout(&o).contains("0 matching record(s) for 9113800138000"), "{}", stdout(&o));
}

#[test]
fn filters_and_json_output() {
    let dir = tempfile::tempdir().unwrap();
    write_log(dir.path());
    let m = ["--msisdn", "+8613800138000"];
    let o = search(dir.path(), &[&m[..], &["--account", "acme"]].concat());
    assert!(stdout(&o).contains("1 matching record(s)"), "{}", stdout(&o));
    let o = search(dir.path(), &[&m[..], &["--since", "30m"]].concat());
    assert!(stdout(&o).contains("1 matching record(s)") && stdout(&o).contains("bank"), "{}", stdout(&o));
    let o = search(dir.path(), &[&m[..], &["--until", "30m"]].concat());
    assert!(stdout(&o).contains("1 matching record(s)") && stdout(&o).contains("revoked"), "{}", stdout(&o));
    let o = search(dir.path(), &[&m[..], &["--since", "2000-01-01", "--until", "2000-01-02T00:00:00Z"]].concat());
    assert!(stdout(&o).contains("0 matching record(s)"), "{}", stdout(&o));

    let o = search(dir.path(), &[&m[..], &["--json"]].concat());
    assert!(o.status.success());
    let lines: Vec<serde_json::Value> =
        stdout(&o).lines().map(|l| serde_json::from_str(l).expect("stdout is pure JSON lines")).collect();
    assert_eq!(lines.len(), 2);
    assert_eq!(lines[0]["verdict"], "rejected");
    assert_eq!(lines[0]["reason"], "revoked");
    assert_eq!(lines[0]["destination"], "13800138000");
    assert_eq!(lines[1]["destination"], "+8613800138000");
    assert_eq!(lines[1]["message_id"], "a1b2c3");
    assert!(stderr(&o).contains("2 matching record(s)"), "{}", stderr(&o));
}

#[test]
fn half_written_trailing_line_is_skipped_with_a_warning() {
    let dir = tempfile::tempdir().unwrap();
    write_log(dir.path());
    let files = consentgate::audit::list_files(dir.path()).unwrap();
    let last = &files.last().unwrap().path;
    let mut text = std::fs::read_to_string(last).unwrap();
    let first = text.lines().next().unwrap().to_owned();
    text.push_str(&first[..first.len() - 10]); // a record cut mid-way, no newline
    std::fs::write(last, text).unwrap();
    let o = search(dir.path(), &["--msisdn", "8613800138000"]);
    assert!(o.status.success(), "{}", stderr(&o));
    assert!(stdout(&o).contains("2 matching record(s)"), "{}", stdout(&o));
    assert!(stderr(&o).contains("warning:") && stderr(&o).contains("partial last line"), "{}", stderr(&o));
}

#[test]
fn bad_arguments_exit_64() {
    let dir = tempfile::tempdir().unwrap();
    for args in [
        &["--msisdn", "not-a-number"][..],
        &["--msisdn", "8613800138000", "--since", "last tuesday"],
        &["--msisdn", "8613800138000", "--until", "2026-13-01"],
    ] {
        let o = search(dir.path(), args);
        assert_eq!(o.status.code(), Some(64), "{args:?}: {}", stderr(&o));
        assert!(stderr(&o).contains("audit search:"), "{}", stderr(&o));
    }
    let o = search(&dir.path().join("missing"), &["--msisdn", "8613800138000"]);
    assert_eq!(o.status.code(), Some(64), "{}", stderr(&o));
}
