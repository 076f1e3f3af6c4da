//! The offline commands as an operator runs them (the real binary): `snapshot build`, then
//! `snapshot lookup`, whose decision line must be the gateway's own (policy step 6), and bad
//! usage refused with exit 64.

use std::process::Command;

fn consentgate(args: &[&str]) -> (i32, String, String) {
    let out = Command::new(env!("CARGO_BIN_EXE_consentgate")).args(args).output().expect("run consentgate");
    (
        out.status.code().unwrap_or(-1),
        String::from_utf8_lossy(&out.stdout).into(),
        String::from_utf8_lossy(&out.stderr).into(),
    )
}

#[test]
fn snapshot_lookup_decides_like_the_gateway() {
    let dir = tempfile::tempdir().unwrap();
    let (dnc, consent, snap) = (dir.path().join("dnc.csv"), dir.path().join("consent.csv"), dir.path().join("c.snap"));
    std::fs::write(&dnc, "msisdn,registered_at\n+8613800000004,2026-01-01\n").unwrap();
    std::fs::write(
        &consent,
        "msisdn,entity,action,at\n+8613800000001,acme,grant,2026-02-01\n+8613800000003,acme,grant,2026-02-01\n+8613800000003,acme,revoke,2026-03-01\n",
    )
    .unwrap();
    let (code, _, err) = consentgate(&[
        "snapshot",
        "build",
        "--dnc",
        dnc.to_str().unwrap(),
        "--consent",
        consent.to_str().unwrap(),
        "--out",
        snap.to_str().unwrap(),
    ]);
    assert_eq!(code, 0, "{err}");
    let s = snap.to_str().unwrap();
    // (number, opt-in decision, opt-out decision)
    for (n, opt_in, opt_out) in [
        ("+8613800000001", "accept", "accept"),
        ("+8613800000002", "reject: no_consent", "accept"),
        ("+8613800000003", "reject: revoked", "reject: revoked"),
        ("+8613800000004", "reject: dnc", "reject: dnc"),
    ] {
        for (regime, want) in [("opt-in", opt_in), ("opt-out", opt_out)] {
            let (code, out, err) = consentgate(&["snapshot", "lookup", s, n, "--entity", "acme", "--regime", regime]);
            assert_eq!(code, 0, "{err}");
            let line = out.lines().find(|l| l.contains("decision (")).unwrap_or_else(|| panic!("{out}"));
            assert!(line.contains(&format!("({regime}, ")) && line.contains(want), "{n} {regime}: {line}");
        }
    }
    // A misspelt regime used to be read as opt-in silently.
    let (code, _, err) =
        consentgate(&["snapshot", "lookup", s, "+8613800000002", "--entity", "acme", "--regime", "optout"]);
    assert_eq!(code, 64, "{err}");
    assert!(err.contains("opt-out"), "{err}");
}

/// `check-config` as an operator runs it: every problem of the file and its includes in one
/// run, each `file:line: key: message`, exit 64; warnings alone exit 0 with the counts; `run`
/// refuses a calendar it cannot read (check-config only warns about it).
#[test]
fn check_config_reports_everything_once_and_warnings_pass() {
    let dir = tempfile::tempdir().unwrap();
    std::fs::create_dir(dir.path().join("accounts.d")).unwrap();
    let main = dir.path().join("consentgate.toml");
    let account = |id: &str, extra: &str| format!("[[account]]\nsystem_id = \"{id}\"\nclass = \"marketing\"\n{extra}");
    std::fs::write(
        &main,
        "include = [\"accounts.d/*.toml\", \"more.d/*.toml\"]\n[upstream]\naddress = \"127.0.0.1:2775\"\n\
         [session]\nwindow = \"many\"\n[consent]\nsnapshot = \"/nonexistent/c.snap\"\n",
    )
    .unwrap();
    std::fs::write(dir.path().join("accounts.d/a.toml"), account("acme", "max_tpss = 5\n")).unwrap();
    std::fs::write(dir.path().join("accounts.d/b.toml"), account("bank", "")).unwrap();
    let m = main.to_str().unwrap();
    let (code, _, err) = consentgate(&["check-config", m]);
    assert_eq!(code, 64, "{err}");
    assert!(err.contains(&format!("{m}:5: session.window: invalid type")), "{err}");
    let a = dir.path().join("accounts.d/a.toml");
    assert!(err.contains(&format!("{}:4: account[acme].max_tpss: unknown key", a.display())), "{err}");
    assert!(err.contains(&format!("warning: {m}:1: include[1]: `more.d/*.toml` matches no file")), "{err}");
    assert!(err.contains(&format!("warning: {m}:7: consent.snapshot")), "{err}");
    // Fixed: warnings only, exit 0.
    std::fs::write(&main, std::fs::read_to_string(&main).unwrap().replace("\"many\"", "10")).unwrap();
    std::fs::write(dir.path().join("accounts.d/a.toml"), account("acme", "max_tps = 5\n")).unwrap();
    let (code, out, err) = consentgate(&["check-config", m]);
    assert_eq!(code, 0, "{err}");
    assert!(out.contains("ok, 2 accounts, 3 files, 2 warning(s)"), "{out}");
    assert_eq!(err.lines().filter(|l| l.starts_with("warning: ")).count(), 2, "{err}");
    // A calendar that cannot be read: check-config warns, run refuses before binding anything.
    let with_cal = std::fs::read_to_string(&main).unwrap()
        + "[complaints]\ndb = \"/nonexistent/c.db\"\ncalendar = \"/nonexistent/cal.toml\"\n";
    std::fs::write(&main, with_cal).unwrap();
    assert_eq!(consentgate(&["check-config", m]).0, 0);
    let (code, _, err) = consentgate(&["run", "--config", m]);
    assert_eq!(code, 64, "{err}");
    assert!(err.contains("cannot start without complaints.calendar"), "{err}");
}

/// A consent.csv exported as spreadsheets and databases write CSV (RFC 4180: quoted fields, a
/// BOM, CRLF): the quoted `acme-retail` revocation is acme-retail's, and refuses its next
/// message to that subscriber even under opt-out (it used to build an entity `"acme-retail"`,
/// quotes included, that no account names, and nothing warned).
#[test]
fn a_quoted_revocation_reaches_its_entity() {
    let dir = tempfile::tempdir().unwrap();
    let (consent, snap) = (dir.path().join("consent.csv"), dir.path().join("q.snap"));
    std::fs::write(
        &consent,
        "\u{feff}\"msisdn\",\"entity\",\"action\",\"at\",\"proof\"\r\n\
         8613800000001,acme-retail,grant,2026-10-01,\"urn:acme:optin:1, web form \"\"A\"\"\"\r\n\
         8613800000001,\"acme-bank\",grant,2026-10-01,\r\n\
         \"8613800000001\",\"acme-retail\",\"revoke\",\"2026-11-01\",\"\"\r\n",
    )
    .unwrap();
    let (code, out, err) =
        consentgate(&["snapshot", "build", "--consent", consent.to_str().unwrap(), "--out", snap.to_str().unwrap()]);
    assert_eq!(code, 0, "{err}");
    assert!(out.contains("entities:     2") && !out.contains("skipped"), "{out}");
    let s = snap.to_str().unwrap();
    for (entity, want) in [("acme-retail", "reject: revoked"), ("acme-bank", "accept")] {
        let (code, out, err) =
            consentgate(&["snapshot", "lookup", s, "8613800000001", "--entity", entity, "--regime", "opt-out"]);
        assert_eq!(code, 0, "{err}");
        let line = out.lines().find(|l| l.contains("decision (")).unwrap_or_else(|| panic!("{out}"));
        assert!(line.contains(want), "{entity}: {line}");
    }
    // The entity with its quotes is no entity at all now.
    let (code, out, _) = consentgate(&["snapshot", "lookup", s, "8613800000001", "--entity", "\"acme-retail\""]);
    assert!(code != 0 || !out.contains("revoked"), "{out}");
}

fn listing(dir: &std::path::Path) -> Vec<String> {
    let mut v: Vec<String> =
        walk(dir).into_iter().map(|p| p.strip_prefix(dir).unwrap().display().to_string()).collect();
    v.sort();
    v
}

fn walk(dir: &std::path::Path) -> Vec<std::path::PathBuf> {
    let mut out = Vec::new();
    for e in std::fs::read_dir(dir).unwrap() {
        let p = e.unwrap().path();
        if p.is_dir() {
            out.extend(walk(&p));
        }
        out.push(p);
    }
    out
}

/// The read-only commands create nothing: `complaints list` on a gateway that never ran made
/// the register's directory and an empty database; on an existing register nothing is added
/// (no migration, no WAL files left behind), and the rows are read. Only `complaints.db` is
/// read from the config: a shell without the gateway's environment (here the Redis password
/// variable) can still read the register.
#[test]
fn read_only_commands_create_nothing() {
    let dir = tempfile::tempdir().unwrap();
    let db = dir.path().join("state/complaints.db");
    let conf = dir.path().join("gw.toml");
    std::fs::write(
        &conf,
        format!(
            "[listen]\nsmpp = \"127.0.0.1:0\"\nadmin = \"127.0.0.1:0\"\n[upstream]\naddress = \"127.0.0.1:1\"\n\
             [policy]\non_snapshot_unavailable = \"allow\"\n[complaints]\ndb = \"{}\"\n\
             [replication]\nredis = \"redis://127.0.0.1:1\"\npassword_env = \"CONSENTGATE_TEST_UNSET_PW\"\n",
            db.display()
        ),
    )
    .unwrap();
    let c = conf.to_str().unwrap();
    let before = listing(dir.path());
    let (code, out, err) = consentgate(&["complaints", "list", "--config", c]);
    assert_eq!(code, 0, "{err}");
    assert!(err.contains("0 complaint(s)"), "{out}{err}");
    let (code, _, err) = consentgate(&["complaints", "show", "--config", c, "1"]);
    assert_eq!(code, 1, "{err}");
    assert_eq!(listing(dir.path()), before, "a read created files");

    // A register the gateway made: read, and left as it was.
    drop(consentgate::complaints::Register::open(&db).unwrap());
    let before = listing(dir.path());
    let (code, out, err) = consentgate(&["complaints", "list", "--config", c, "--status", "open"]);
    assert_eq!(code, 0, "{err}");
    assert!(out.contains("reference"), "{out}");
    assert_eq!(listing(dir.path()), before, "a read changed the register's directory");
}

/// `--version` names the commit and the build date; the completions and the man pages come
/// from the same definitions as `--help`; the book's CLI reference is what the binary prints.
#[test]
fn version_completions_man_pages_and_the_reference_page() {
    let (code, out, _) = consentgate(&["--version"]);
    assert_eq!(code, 0);
    assert!(
        out.starts_with(&format!("consentgate {} (commit ", env!("CARGO_PKG_VERSION"))) && out.contains(", built 20"),
        "{out}"
    );
    for shell in ["bash", "zsh", "fish"] {
        let (code, out, err) = consentgate(&["completions", shell]);
        assert_eq!(code, 0, "{err}");
        assert!(out.contains("snapshot") && out.contains("check-config") && out.len() > 1000, "{shell}: {out}");
    }
    let dir = tempfile::tempdir().unwrap();
    let (code, _, err) = consentgate(&["man", "--out", dir.path().to_str().unwrap()]);
    assert_eq!(code, 0, "{err}");
    let page = std::fs::read_to_string(dir.path().join("consentgate-snapshot-build.1")).unwrap();
    assert!(page.starts_with(".ie") || page.contains(".TH"), "{page}");
    assert!(page.contains("consentgate snapshot build") || page.contains("consentgate\\-snapshot\\-build"), "{page}");
    let (code, reference, _) = consentgate(&["reference"]);
    assert_eq!(code, 0);
    let path = concat!(env!("CARGO_MANIFEST_DIR"), "/docs/src/reference/cli.md");
    let book = std::fs::read_to_string(path).unwrap_or_default();
    assert!(
        book == reference,
        "docs/src/reference/cli.md is not what the binary prints: run `cargo run -- reference > docs/src/reference/cli.md`"
    );
}

/// `check-config` on the bundled demo config names the CMPP front and the ISMG behind it.
#[test]
fn check_config_names_the_cmpp_front() {
    let demo = concat!(env!("CARGO_MANIFEST_DIR"), "/config/demo.toml");
    let (code, out, err) = consentgate(&["check-config", demo]);
    assert_eq!(code, 0, "{err}");
    assert!(out.contains("cmpp 127.0.0.1:0 -> ISMG 127.0.0.1:7890"), "{out}");
}
