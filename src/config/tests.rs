use super::*;
use crate::smpp::BindType;
use std::path::Path;
use std::time::Duration;

const MINIMAL: &str = r#"
[listen]
smpp = "0.0.0.0:2775"
admin = "127.0.0.1:9775"

[upstream]
address = "10.1.2.3:2775"

[policy]
mode = "enforce"
regime = "opt-in"
default_country_code = "86"

[consent]
snapshot = "/var/lib/consentgate/consent.snap"
journal = "/var/lib/consentgate/journal"

[[account]]
system_id = "acme"
entity = "acme-retail"
class = "marketing"
licence = "B2-20230001"
licence_expires = "2027-12-31"
sender_id = ["1069012345*"]
"#;

#[test]
fn design_minimal_shape_parses() {
    let c = Config::parse(MINIMAL).unwrap();
    assert_eq!(c.upstream.address, "10.1.2.3:2775");
    let a = c.account("acme").unwrap();
    assert_eq!(a.entity, "acme-retail");
    assert_eq!(a.licence_expires, parse_date("2027-12-31"));
    assert_eq!(c.session.window, DEFAULT_WINDOW);
}

#[test]
fn every_problem_is_reported_with_its_key() {
    let bad = r#"
[listen]
smpp = "nonsense"
[upstream]
response_timeout = "5 parsecs"
[session]
window = 0
[[account]]
system_id = "a"
class = "spam"
licence_expires = "2027-02-30"
bind_types = ["tx"]
"#;
    let errs = Config::parse(bad).unwrap_err();
    let keys: Vec<_> = errs.iter().map(|e| e.key.as_str()).collect();
    for k in [
        "listen.smpp",
        "upstream.address",
        "upstream.response_timeout",
        "session.window",
        "account[a].class",
        "account[a].licence_expires",
        "account[a].bind_types",
    ] {
        assert!(keys.contains(&k), "missing {k} in {keys:?}");
    }
}

/// `[node] id` defaults to the host name; an invalid id or account entity is an error naming
/// its key (the consent data's one rule for each, `consent::statement`).
#[test]
fn node_id_and_entity_are_validated() {
    let c = Config::parse(MINIMAL).unwrap();
    assert_eq!(c.consent.node, crate::consent::NodeId::from_hostname());
    assert_eq!(c.consent.journal.as_deref(), Some(std::path::Path::new("/var/lib/consentgate/journal")));
    let c = Config::parse(&format!("{MINIMAL}\n[node]\nid = \"gw-bj-1\"\n")).unwrap();
    assert_eq!(c.consent.node.as_str(), "gw-bj-1");
    let bad = format!("{MINIMAL}\n[node]\nid = \"gw 1\"\n").replace("entity = \"acme-retail\"", "entity = \"\"");
    let errs = Config::parse(&bad).unwrap_err();
    let keys: Vec<_> = errs.iter().map(|e| e.key.as_str()).collect();
    assert!(keys.contains(&"node.id") && keys.contains(&"account[acme].entity"), "{keys:?}");
    let msg = errs.iter().find(|e| e.key == "node.id").unwrap().message.clone();
    assert!(msg.contains("`gw 1`"), "{msg}");
}

#[test]
fn unknown_keys_are_refused_with_line() {
    let errs = Config::parse("[upstream]\naddress = \"h:1\"\nadress = \"x\"\n").unwrap_err();
    assert_eq!(errs.len(), 1);
    assert_eq!((errs[0].key.as_str(), errs[0].line), ("upstream.adress", Some(3)));
    assert!(errs[0].message.starts_with("unknown key (expected one of address,"), "{}", errs[0].message);
}

#[test]
fn admission_checks_system_id_licence_and_bind_type() {
    let mut c = Config::parse(MINIMAL).unwrap();
    let today = parse_date("2026-11-28").unwrap();
    assert!(c.engine().admit("acme", BindType::Transceiver, today).is_ok());
    assert_eq!(c.engine().admit("nobody", BindType::Transceiver, today).unwrap_err(), BindRefusal::UnknownSystemId);
    assert_eq!(
        c.engine().admit("acme", BindType::Transceiver, parse_date("2028-01-01").unwrap()).unwrap_err(),
        BindRefusal::LicenceExpired
    );
    c.accounts[0].bind_types = vec![BindType::Receiver];
    assert_eq!(c.engine().admit("acme", BindType::Transmitter, today).unwrap_err(), BindRefusal::BindTypeNotAllowed);
    c.accounts[0].licence = None;
    assert_eq!(c.engine().admit("acme", BindType::Receiver, today).unwrap_err(), BindRefusal::NoLicence);
}

#[test]
fn dates_and_patterns() {
    assert_eq!(parse_date("1970-01-01"), Some(0));
    assert_eq!(parse_date("2024-02-29"), Some(19782));
    assert_eq!(parse_date("2023-02-29"), None);
    assert!(pattern_matches("1069012345*", b"10690123450001"));
    assert!(!pattern_matches("1069012345*", b"1069"));
    assert!(pattern_matches("*BANK", b"ACMEBANK"));
    assert!(pattern_matches("AC*B*K", b"ACMEBANK"));
    assert!(!pattern_matches("ACME", b"ACMEBANK"));
    // The fast paths (prefix, exact) agree with the general matcher's meaning.
    assert!(pattern_matches("ACME", b"ACME"));
    assert!(pattern_matches("*", b""));
    assert!(pattern_matches("*", b"ANY"));
    assert!(pattern_matches("1069*", b"1069"));
    assert!(!pattern_matches("1069*", b"106"));
    assert!(pattern_matches("", b""));
    assert!(!pattern_matches("", b"1"));
    assert!(pattern_matches("1*9*", b"1069"));
    assert!(!pattern_matches("1*8*", b"1069"));
}

/// An `[[account]] entity = ""` used to pass and then stop the journal writer at the
/// account's first MO opt-out: it is a config error now, naming the key.
#[test]
fn bad_entities_are_refused_with_their_key() {
    for (entity, why) in [("", "empty"), ("a\\u0007b", "control character")] {
        let text = MINIMAL.replace("entity = \"acme-retail\"", &format!("entity = \"{entity}\""));
        let errs = Config::parse(&text).unwrap_err();
        assert!(
            errs.iter().any(|e| e.key == "account[acme].entity" && e.message.contains(why)),
            "{entity:?}: {errs:?}"
        );
    }
    let long = MINIMAL.replace("acme-retail", &"x".repeat(256));
    assert!(Config::parse(&long).unwrap_err().iter().any(|e| e.key == "account[acme].entity"));
}

#[test]
fn durations() {
    assert_eq!(parse_duration("250ms").unwrap(), Duration::from_millis(250));
    assert_eq!(parse_duration("2m").unwrap(), Duration::from_secs(120));
    assert!(parse_duration("5").is_err());
    assert!(parse_duration("x5s").is_err());
}

#[test]
fn bundled_example_configs_parse() {
    for (name, text) in [
        ("config/consentgate.example.toml", include_str!("../../config/consentgate.example.toml")),
        ("config/demo.toml", include_str!("../../config/demo.toml")),
    ] {
        if let Err(e) = Config::parse(text) {
            panic!("{name}: {e:?}");
        }
    }
    // The example with its include line on, reading config/accounts.d/.
    let dir = Path::new(env!("CARGO_MANIFEST_DIR")).join("config");
    let text = std::fs::read_to_string(dir.join("consentgate.example.toml")).unwrap();
    let on = text.replace("# include = [\"accounts.d/*.toml\"]", "include = [\"accounts.d/*.toml\"]");
    assert_ne!(on, text, "the example shows the include line");
    let l = load::load_text(&dir.join("consentgate.example.toml"), on).unwrap_or_else(|e| panic!("{e:?}"));
    assert_eq!(l.files[1], dir.join("accounts.d/example.toml"));
    assert!(l.config.account("shop").is_some() && l.keys.contains_key("policy.content_rule.loans.action"));
}

#[test]
fn capture_config_section_parses_with_defaults_and_names_bad_keys() {
    let base = "[upstream]\naddress = \"127.0.0.1:2775\"\n[[account]]\nsystem_id = \"acme\"\nclass = \"marketing\"\n";
    let c = Config::parse(base).unwrap();
    assert!(c.capture.is_none(), "off unless enabled");
    let c = Config::parse(&format!("{base}[capture]\ndir = \"/tmp/c\"\n")).unwrap();
    assert!(c.capture.is_none(), "a dir alone does not enable it");
    let c = Config::parse(&format!(
        "{base}[capture]\nenabled = true\ndir = \"/tmp/c\"\nmax_file_bytes = 1000000\nmax_files = 3\naccounts = [\"acme\"]\n"
    ))
    .unwrap();
    let w = c.capture.expect("enabled");
    assert_eq!(
        (w.dir, w.max_file_bytes, w.max_files, w.accounts),
        ("/tmp/c".into(), 1_000_000, 3, vec!["acme".to_owned()])
    );
    let c = Config::parse(&format!("{base}[capture]\nenabled = true\ndir = \"/tmp/c\"\n")).unwrap().capture.unwrap();
    assert_eq!((c.max_file_bytes, c.max_files), (DEFAULT_CAPTURE_MAX_FILE_BYTES, DEFAULT_CAPTURE_MAX_FILES));
    let e = Config::parse(&format!(
        "{base}[capture]\nenabled = true\nmax_file_bytes = 10\nmax_files = 0\naccounts = [\"nobody\"]\n"
    ))
    .unwrap_err();
    let keys: Vec<&str> = e.iter().map(|e| e.key.as_str()).collect();
    for k in ["capture.dir", "capture.max_file_bytes", "capture.max_files", "capture.accounts[0]"] {
        assert!(keys.contains(&k), "{k} missing from {keys:?}");
    }
    assert!(Config::parse(&format!("{base}[capture]\nenable = true\n")).is_err());
}

#[test]
fn complaints_section_and_its_calendar_file() {
    let dir = tempfile::tempdir().unwrap();
    let cal = dir.path().join("cal.toml");
    std::fs::write(&cal, "timezone = \"Asia/Shanghai\"\nholidays = [\n  \"2026-10-01\",\n  \"2026-10-32\",\n]\n")
        .unwrap();
    let with = |body: &str| Config::parse(&format!("{MINIMAL}\n[complaints]\n{body}\n"));
    let c = with("db = \"/var/lib/consentgate/complaints.db\"").unwrap().complaints.unwrap();
    assert_eq!((c.respond_within, c.suspend_after), (15, 0));
    assert!(c.calendar.is_working(parse_date("2026-10-01").unwrap()), "no file: weekends only");
    let errs = with(&format!("calendar = \"{}\"\nrespond_within = 0\nsuspend_after = -1", cal.display())).unwrap_err();
    let keys: Vec<&str> = errs.iter().map(|e| e.key.as_str()).collect();
    assert_eq!(keys, ["complaints.db", "complaints.calendar", "complaints.respond_within", "complaints.suspend_after"]);
    let cal_err = &errs[1].message;
    assert!(cal_err.contains("cal.toml") && cal_err.contains("line 4") && cal_err.contains("holidays"), "{cal_err}");
    // A calendar that cannot be read is a warning (`run` refuses to start on it).
    let text = format!("{MINIMAL}\n[complaints]\ndb = \"x.db\"\ncalendar = \"/nonexistent/cal.toml\"\n");
    let w = load::load_text(Path::new("c.toml"), text).unwrap().warnings;
    let w: Vec<_> = w.into_iter().filter(|w| w.key == "complaints.calendar").collect();
    assert!(w.len() == 1 && w[0].refuses_start(), "{w:?}");
    assert!(w[0].message.contains("/nonexistent/cal.toml: cannot read"), "{w:?}");
    assert!(with("db = \"x.db\"\nsuspend = 3").is_err(), "unknown keys refused");
}

#[test]
fn replication_section_is_validated_with_its_keys() {
    let with = |body: &str| Config::parse(&format!("{MINIMAL}\n[replication]\n{body}\n"));
    let r = with("redis = \"redis://:pw@10.0.0.5:6380/2\"").unwrap().replication.unwrap();
    assert_eq!((r.redis.host.as_str(), r.redis.port, r.redis.db), ("10.0.0.5", 6380, 2));
    assert_eq!(
        (r.stream.as_str(), r.on_disconnect),
        ("consentgate:statements", crate::replication::OnDisconnect::Serve)
    );
    assert!(!format!("{r:?}").contains("pw"), "the password is never printed: {r:?}");
    let keys = |e: Vec<ConfigError>| e.into_iter().map(|e| e.key).collect::<Vec<_>>();
    assert_eq!(keys(with("stream = \"s\"").unwrap_err()), ["replication.redis"]);
    assert_eq!(
        keys(
            with("redis = \"rediss://x\"\non_disconnect = \"maybe\"\ntimeout = \"0s\"\nstream = \"a b\"").unwrap_err()
        ),
        ["replication.redis", "replication.on_disconnect", "replication.timeout", "replication.stream"]
    );
    assert_eq!(
        keys(with("redis = \"redis://h\"\npassword_env = \"CONSENTGATE_TEST_UNSET_REDIS_PW\"").unwrap_err()),
        ["replication.password_env"]
    );
    // The journal is the outbox: replication without one is refused.
    let no_journal = MINIMAL.replace("journal = \"/var/lib/consentgate/journal\"\n", "");
    let e = Config::parse(&format!("{no_journal}\n[replication]\nredis = \"redis://h\"\n")).unwrap_err();
    assert_eq!(keys(e), ["replication"]);
}

/// Writes `files` (name → text) into a fresh directory and loads its `main.toml`.
fn load_dir(files: &[(&str, &str)]) -> (tempfile::TempDir, Result<Loaded, Vec<Diagnostic>>) {
    let dir = tempfile::tempdir().unwrap();
    for (name, text) in files {
        let p = dir.path().join(name);
        std::fs::create_dir_all(p.parent().unwrap()).unwrap();
        std::fs::write(p, text).unwrap();
    }
    let r = load(&dir.path().join("main.toml"));
    (dir, r)
}

/// (file name, line, key) of each error, in order.
fn places(d: &[Diagnostic]) -> Vec<(String, Option<usize>, String)> {
    d.iter()
        .filter(|d| d.is_error())
        .map(|d| (d.file.file_name().unwrap().to_string_lossy().into_owned(), d.line, d.key.clone()))
        .collect()
}

/// An unknown key, a wrong type and a bad time zone (parse stage and meaning stage) come out
/// of one run, each with its line and dotted key, printed `file:line: key: message`.
#[test]
fn three_mistakes_in_one_run() {
    let text = "[upstream]\naddress = \"10.1.2.3:2775\"\n[session]\nwindow = \"many\"\n[policy.frequency]\n\
                per_entity_per_dya = 3\n[policy.quiet_hours]\nstart = \"21:00\"\nend = \"08:00\"\ntimezone = \"Mars/Olympus\"\n";
    let (_d, r) = load_dir(&[("main.toml", text)]);
    let errs = r.unwrap_err();
    assert_eq!(
        places(&errs),
        [
            ("main.toml".into(), Some(4), "session.window".into()),
            ("main.toml".into(), Some(6), "policy.frequency.per_entity_per_dya".into()),
            ("main.toml".into(), Some(10), "policy.quiet_hours.timezone".into()),
        ]
    );
    assert!(errs[0].message.contains("invalid type: string \"many\""), "{}", errs[0]);
    let unknown = errs[1].to_string();
    assert!(unknown.ends_with(
        "main.toml:6: policy.frequency.per_entity_per_dya: unknown key (expected one of per_entity_per_day, \
         per_subscriber_per_day, same_text_window, subscribers, peak_rate, checkpoint_interval)"
    ));
    assert!(errs[2].message.contains("Mars/Olympus"), "{}", errs[2]);
}

/// An unknown key and a bad value inside `[[account]]` name the account by its system_id.
#[test]
fn account_problems_are_named_by_system_id() {
    let text = format!(
        "{MINIMAL}\n[[account]]\nsystem_id = \"bank\"\nclass = \"transactional\"\nmax_tpss = 5\nmax_sessions = 0\n"
    );
    let errs = Config::parse(&text).unwrap_err();
    let keys: Vec<(&str, Option<usize>)> = errs.iter().map(|e| (e.key.as_str(), e.line)).collect();
    assert_eq!(keys, [("account[bank].max_tpss", Some(29)), ("account[bank].max_sessions", Some(30))]);
    assert!(errs[0].message.starts_with("unknown key (expected one of system_id,"), "{}", errs[0]);
}

const MAIN_WITH_INCLUDE: &str = "include = [\"accounts.d/*.toml\"]\n[upstream]\naddress = \"10.1.2.3:2775\"\n";

/// Two account files, one with an error: the error names that file, its line and the account.
#[test]
fn an_error_in_an_included_file_names_that_file() {
    let a = "[[account]]\nsystem_id = \"acme\"\nclass = \"marketing\"\nmax_tps = 500\n";
    let b = "# bank\n[[account]]\nsystem_id = \"bank\"\nclass = \"transactional\"\nmax_tps = \"fast\"\nlicence_expires = \"2027-02-30\"\n";
    let (dir, r) = load_dir(&[("main.toml", MAIN_WITH_INCLUDE), ("accounts.d/a.toml", a), ("accounts.d/b.toml", b)]);
    let errs = r.unwrap_err();
    assert_eq!(
        places(&errs),
        [
            ("b.toml".into(), Some(5), "account[bank].max_tps".into()),
            ("b.toml".into(), Some(6), "account[bank].licence_expires".into()),
        ]
    );
    assert_eq!(errs[0].file, dir.path().join("accounts.d/b.toml"));
    // Fixed, both files load, in order, after the main file.
    std::fs::write(dir.path().join("accounts.d/b.toml"), b.replace("\"fast\"", "50").replace("02-30", "02-28"))
        .unwrap();
    let l = load(&dir.path().join("main.toml")).unwrap();
    let ids: Vec<&str> = l.config.accounts.iter().map(|a| a.system_id.as_str()).collect();
    assert_eq!(ids, ["acme", "bank"]);
    let names: Vec<_> = l.files.iter().map(|f| f.strip_prefix(dir.path()).unwrap().to_owned()).collect();
    assert_eq!(names, [Path::new("main.toml"), Path::new("accounts.d/a.toml"), Path::new("accounts.d/b.toml")]);
    assert_eq!(l.include_dirs, [dir.path().join("accounts.d")]);
    assert_eq!(l.config.account("bank").unwrap().max_tps, Some(50));
}

/// Anything but accounts and content rules in an included file is an error naming the file.
#[test]
fn an_included_file_holds_only_accounts_and_content_rules() {
    let a = "[[account]]\nsystem_id = \"acme\"\nclass = \"marketing\"\n[[policy.content_rule]]\nname = \"casino\"\n\
             literals = [\"casino\"]\naction = \"reject\"\n[listen]\nsmpp = \"0.0.0.0:1\"\n";
    let (_d, r) = load_dir(&[("main.toml", MAIN_WITH_INCLUDE), ("accounts.d/a.toml", a)]);
    assert_eq!(places(&r.unwrap_err()), [("a.toml".into(), Some(8), "listen".into())]);
    let (_d, r) = load_dir(&[
        ("main.toml", MAIN_WITH_INCLUDE),
        ("accounts.d/a.toml", &a.replace("[listen]\nsmpp = \"0.0.0.0:1\"\n", "")),
    ]);
    let l = r.unwrap();
    assert_eq!(l.keys["policy.content_rule.casino.literals"], "[\"casino\"]");
}

/// A system_id defined twice, in two files or in one, is an error naming both places.
#[test]
fn a_system_id_defined_twice_names_both_places() {
    let a = "[[account]]\nsystem_id = \"acme\"\nclass = \"marketing\"\n";
    let b = "\n\n[[account]]\nclass = \"marketing\"\nsystem_id = \"acme\"\n";
    let (dir, r) = load_dir(&[("main.toml", MAIN_WITH_INCLUDE), ("accounts.d/a.toml", a), ("accounts.d/b.toml", b)]);
    let errs = r.unwrap_err();
    assert_eq!(places(&errs), [("b.toml".into(), Some(5), "account[acme].system_id".into())]);
    let first = format!("first at {}:2", dir.path().join("accounts.d/a.toml").display());
    assert!(errs[0].message.contains(&first), "{}", errs[0]);
    let (_d, r) = load_dir(&[("main.toml", &format!("{MINIMAL}{}", &MINIMAL[MINIMAL.find("[[account]]").unwrap()..]))]);
    let errs = r.unwrap_err();
    assert_eq!(places(&errs), [("main.toml".into(), Some(26), "account[acme].system_id".into())]);
    assert!(errs[0].message.contains("main.toml:19"), "{}", errs[0]);
}

/// Warnings do not fail the load: an include pattern matching nothing, a snapshot file that
/// is not there, an expired licence.
#[test]
fn missing_files_and_expired_licences_are_warnings() {
    let text =
        MINIMAL.replace("2027-12-31", "2020-01-01").replace("[listen]", "include = [\"none.d/*.toml\"]\n[listen]");
    let (_d, r) = load_dir(&[("main.toml", &text)]);
    let l = r.unwrap();
    let w: Vec<(&str, Option<usize>)> = l.warnings.iter().map(|w| (w.key.as_str(), w.line)).collect();
    assert_eq!(
        w,
        [("include[0]", Some(2)), ("consent.snapshot", Some(16)), ("account[acme].licence_expires", Some(24))]
    );
    assert!(l.warnings.iter().all(|w| w.severity == Severity::Warning && !w.refuses_start()));
    assert!(l.warnings[1].message.contains("/var/lib/consentgate/consent.snap: cannot read"), "{}", l.warnings[1]);
    assert!(l.warnings[2].message.contains("expired on 2020-01-01"), "{}", l.warnings[2]);
    // The same warnings ride along with an error.
    let (_d, r) = load_dir(&[("main.toml", &text.replace("class = \"marketing\"", "class = \"spam\""))]);
    let d = r.unwrap_err();
    assert_eq!(d.iter().filter(|d| d.is_error()).count(), 1);
    assert_eq!(d.len(), 4);
}

/// A TLS file that is not there is a warning; one that is there but is not PEM is an error.
#[test]
fn missing_tls_files_are_warnings_bad_ones_errors() {
    let dir = tempfile::tempdir().unwrap();
    let junk = dir.path().join("junk.pem");
    std::fs::write(&junk, "not a certificate").unwrap();
    let tls = |cert: &Path| {
        MINIMAL.replace(
            "admin = \"127.0.0.1:9775\"\n",
            &format!(
                "admin = \"127.0.0.1:9775\"\nsmpp_tls = \"0.0.0.0:3550\"\n[listen.tls]\ncert = \"{}\"\nkey = \"{}\"\n",
                cert.display(),
                cert.display()
            ),
        )
    };
    let l = load::load_text(&dir.path().join("c.toml"), tls(&dir.path().join("nowhere.pem"))).unwrap();
    let w: Vec<&str> = l.warnings.iter().map(|w| w.key.as_str()).filter(|k| k.starts_with("listen")).collect();
    assert_eq!(w, ["listen.tls.cert", "listen.tls.key"]);
    let e = load::load_text(&dir.path().join("c.toml"), tls(&junk)).unwrap_err();
    assert!(e.iter().any(|e| e.is_error() && e.key.starts_with("listen.tls.")), "{e:?}");
}

/// `keys`: every leaf under its dotted key, accounts by system_id; the admin token masked but
/// changing with the token. `summary` groups them by section.
#[test]
fn keys_name_accounts_by_system_id_and_mask_secrets() {
    let dir = tempfile::tempdir().unwrap();
    let token = dir.path().join("token");
    std::fs::write(&token, "0123456789abcdef-secret").unwrap();
    let text = format!("{MINIMAL}max_tps = 500\n[admin]\ntoken_file = \"{}\"\n", token.display());
    // [admin] after [[account]] would belong to the account table: put it first.
    let (body, admin) = text.split_at(text.find("[admin]").unwrap());
    let text = format!("{admin}{body}");
    let main = dir.path().join("main.toml");
    std::fs::write(&main, &text).unwrap();
    let l = load(&main).unwrap();
    assert_eq!(l.keys["account.acme.max_tps"], "500");
    assert_eq!(l.keys["account.acme.sender_id"], "[\"1069012345*\"]");
    assert_eq!(l.keys["upstream.address"], "\"10.1.2.3:2775\"");
    let masked = l.keys["admin.token"].clone();
    assert!(masked.starts_with("*** (sha256:") && !masked.contains("secret"), "{masked}");
    assert!(l.keys.values().all(|v| !v.contains("0123456789abcdef")), "{:?}", l.keys);
    std::fs::write(&token, "0123456789abcdef-changed").unwrap();
    let again = load(&main).unwrap();
    assert!(again.keys["admin.token"] != masked && again.keys["admin.token"].starts_with("*** (sha256:"));
    assert_eq!(again.sha256, l.sha256, "the token file is not a config file");
    let s = summary(&l);
    assert_eq!(s["sections"]["account"]["acme.max_tps"], "500");
    assert_eq!(s["sections"]["admin"]["token"], masked);
    assert_eq!(s["sha256"], l.sha256);
    assert_eq!(s["files"][0], main.display().to_string());
}

/// The SHA-256 covers the included files: changing one changes it (and a single file's is the
/// file's own).
#[test]
fn sha256_changes_when_an_included_file_changes() {
    let a = "[[account]]\nsystem_id = \"acme\"\nclass = \"marketing\"\n";
    let (dir, r) = load_dir(&[("main.toml", MAIN_WITH_INCLUDE), ("accounts.d/a.toml", a)]);
    let before = r.unwrap().sha256;
    let both = format!("{MAIN_WITH_INCLUDE}{a}");
    let plain = load::load_text(Path::new("x.toml"), both.clone()).unwrap().sha256;
    assert_eq!(before, plain, "the files' contents in order, as if one file");
    use sha2::Digest;
    assert_eq!(plain, sha2::Sha256::digest(both.as_bytes()).iter().map(|b| format!("{b:02x}")).collect::<String>());
    std::fs::write(dir.path().join("accounts.d/a.toml"), a.replace("marketing", "transactional")).unwrap();
    let after = load(&dir.path().join("main.toml")).unwrap();
    assert_ne!(after.sha256, before);
    assert_eq!(after.keys["account.acme.class"], "\"transactional\"");
}

#[test]
fn include_patterns_match_file_names() {
    assert!(load::glob_match("*.toml", "acme.toml"));
    assert!(!load::glob_match("*.toml", "acme.toml.bak"));
    assert!(!load::glob_match("*.toml", ".acme.toml"), "hidden files only by a leading dot");
    assert!(load::glob_match(".*.toml", ".acme.toml"));
    assert!(load::glob_match("a?c*", "abc"));
    assert!(!load::glob_match("a?c", "ac"));
    assert!(load::glob_match("*a*b*", "xxaxxbxx"));
    assert!(!load::glob_match("*a*b", "xxbxxa"));
}

/// The book's key reference (docs/src/reference/config.md) names exactly the keys the parser
/// accepts: for every section it documents, an unknown key makes serde list the section's
/// fields, and those must be the documented ones (sub-tables included). A key added to a raw
/// struct without a row, or a row for a key that is gone, fails here.
#[test]
fn the_key_reference_names_every_key_the_parser_accepts() {
    let doc = include_str!("../../docs/src/reference/config.md");
    let documented: std::collections::BTreeSet<String> = doc
        .lines()
        .filter_map(|l| l.strip_prefix("| `"))
        .filter_map(|l| l.split_once('`').map(|(k, _)| k.to_owned()))
        .filter(|k| !k.contains(' ') && !k.contains('"'))
        .collect();
    assert!(documented.len() > 100, "{documented:?}");
    // Free-form maps: their children are names the operator chooses.
    let maps = [
        "policy.timezones",
        "account.source_class",
        "account.service_type_class",
        "policy.cmpp.result",
        "policy.cmpp.stat",
    ];
    let mut sections: std::collections::BTreeSet<String> = std::collections::BTreeSet::from([String::new()]);
    for k in &documented {
        let mut p = k.as_str();
        while let Some((parent, _)) = p.rsplit_once('.') {
            sections.insert(parent.to_owned());
            p = parent;
        }
    }
    // Its keys are the reason labels (validated against them, not by serde).
    let reasons: std::collections::BTreeSet<String> =
        crate::policy::Reason::labels().iter().map(|r| format!("policy.reject_status.{r}")).collect();
    let documented_reasons: std::collections::BTreeSet<String> =
        documented.iter().filter(|k| k.starts_with("policy.reject_status.")).cloned().collect();
    assert_eq!(reasons, documented_reasons, "policy.reject_status: the reasons vs docs/src/reference/config.md");
    let arrays = ["account", "policy.content_rule"];
    for s in sections.iter().filter(|s| !maps.contains(&s.as_str()) && s.as_str() != "policy.reject_status") {
        let header = match s.as_str() {
            "" => String::new(),
            a if arrays.contains(&a) => format!("[[{a}]]\n"),
            nested if nested.starts_with("account.") => format!("[[account]]\n[{nested}]\n"),
            other => format!("[{other}]\n"),
        };
        let text = format!("{header}zz_not_a_key = 1\n");
        let err = toml::from_str::<raw::RawConfig>(&text).expect_err(&text).to_string();
        let list = err.split_once("expected").map(|(_, l)| l).unwrap_or_else(|| panic!("{s}: {err}"));
        let mut accepted: std::collections::BTreeSet<String> = list
            .split('`')
            .skip(1)
            .step_by(2)
            .map(|f| if s.is_empty() { f.to_owned() } else { format!("{s}.{f}") })
            .collect();
        if s.is_empty() {
            // Read by the loader before the file is deserialized (config/load.rs).
            accepted.insert("include".to_owned());
        }
        let doc_children: std::collections::BTreeSet<String> = documented
            .iter()
            .chain(sections.iter())
            .filter(|k| !k.is_empty())
            .filter(|k| match k.rsplit_once('.') {
                Some((parent, _)) => parent == s,
                None => s.is_empty(),
            })
            .cloned()
            .collect();
        assert_eq!(accepted, doc_children, "section `{s}`: the parser's keys vs docs/src/reference/config.md");
    }
}

/// Values that used to be taken silently are refused with their key: an SMSC timeout
/// answered as ESME_ROK, a reassembly wait past the one-minute cap, an account's own
/// checkpoint interval (there is one per gateway).
#[test]
fn values_once_ignored_or_capped_are_refused() {
    let text = MINIMAL
        .replace("address = \"10.1.2.3:2775\"", "address = \"10.1.2.3:2775\"\nresponse_timeout_status = 0")
        .replace("default_country_code = \"86\"", "default_country_code = \"86\"\nreassembly_timeout = \"90s\"")
        + "[account.frequency]\nper_entity_per_day = 3\ncheckpoint_interval = \"10s\"\n";
    let errs = Config::parse(&text).unwrap_err();
    let keys: Vec<_> = errs.iter().map(|e| e.key.as_str()).collect();
    assert_eq!(
        keys,
        ["upstream.response_timeout_status", "policy.reassembly_timeout", "account[acme].frequency"],
        "{errs:?}"
    );
    assert!(Config::parse(&MINIMAL.replace("[policy]", "[policy]\nreassembly_timeout = \"60s\"")).is_ok());
}

/// The CMPP front's keys: `listen.cmpp` needs `[upstream.cmpp]`; a Result of 8 is only for
/// throttling, 0 and 2.0's one byte are out of range, a Stat is 7 ASCII characters.
#[test]
fn cmpp_front_keys_are_checked() {
    let with = |extra: &str| MINIMAL.to_owned() + extra;
    let listen = |extra: &str| {
        MINIMAL.replace("admin = \"127.0.0.1:9775\"", "admin = \"127.0.0.1:9775\"\ncmpp = \"127.0.0.1:7890\"") + extra
    };
    let errs = Config::parse(&listen("")).unwrap_err();
    assert!(errs.iter().any(|e| e.key == "listen.cmpp"), "{errs:?}");
    let ok = Config::parse(&listen("[upstream.cmpp]\naddress = \"10.0.0.9:7890\"\nwindow = 32\n"))
        .expect("valid cmpp front");
    let c = ok.upstream.cmpp.as_ref().expect("[upstream.cmpp]");
    assert_eq!((c.window, c.active_test_retries, c.response_timeout.as_secs()), (32, 3, 60));
    assert_eq!(ok.policy.cmpp_result[crate::policy::Reason::Revoked as usize], 101);
    assert_eq!(&ok.policy.cmpp_stat[crate::policy::Reason::Revoked as usize], b"CG:0101");
    let bad = "[policy.cmpp.result]\nrevoked = 8\nno_consent = 0\ndnc = 300\nnot_a_reason = 120\n\
               [policy.cmpp.stat]\nrevoked = \"TOOLONG!\"\n";
    let errs = Config::parse(&with(bad)).unwrap_err();
    let keys: std::collections::BTreeSet<&str> = errs.iter().map(|e| e.key.as_str()).collect();
    for k in [
        "policy.cmpp.result.revoked",
        "policy.cmpp.result.no_consent",
        "policy.cmpp.result.dnc",
        "policy.cmpp.result.not_a_reason",
        "policy.cmpp.stat.revoked",
    ] {
        assert!(keys.contains(k), "{k} not refused: {keys:?}");
    }
    let tuned = Config::parse(&with("[policy.cmpp.result]\nthrottled = 8\nrevoked = 150\n")).expect("valid");
    assert_eq!(tuned.policy.cmpp_result[crate::policy::Reason::Revoked as usize], 150);
}

/// `[dlt]` and `scrubbing = "dlt"`: an account that needs the registry without one is
/// refused naming its key; a registry that does not load is refused naming the file; TLV
/// tags and PE ids are checked; a good registry loads with the defaults.
#[test]
fn dlt_section_and_scrubbing_accounts() {
    let account =
        "[[account]]\nsystem_id = \"in1\"\nlicence = \"UL-1\"\nscrubbing = \"dlt\"\npe_id = \"1101000000000000001\"\n";
    let errs = Config::parse(account).unwrap_err();
    assert!(errs.iter().any(|e| e.key == "account[in1].scrubbing" && e.message.contains("dlt.registry")), "{errs:?}");

    let dir = tempfile::tempdir().unwrap();
    let junk = dir.path().join("junk.dlt");
    std::fs::write(&junk, b"not a registry").unwrap();
    let text = format!("[dlt]\nregistry = {:?}\npe_id_tlv = 0x1401\n{account}", junk.display().to_string());
    let errs = Config::parse(&text).unwrap_err();
    let keys: Vec<_> = errs.iter().map(|e| e.key.as_str()).collect();
    assert!(keys.contains(&"dlt.registry") && keys.contains(&"dlt.template_id_tlv"), "{errs:?}");
    let reg = errs.iter().find(|e| e.key == "dlt.registry").unwrap();
    assert!(reg.message.contains("junk.dlt"), "names the file: {}", reg.message);

    let bad_pe = "[[account]]\nsystem_id = \"in2\"\nclass = \"marketing\"\nlicence = \"x\"\npe_id = \"0123\"\n";
    let errs = Config::parse(bad_pe).unwrap_err();
    let keys: Vec<_> = errs.iter().map(|e| e.key.as_str()).collect();
    assert!(keys.contains(&"account[in2].pe_id"), "{errs:?}");

    // A registry that loads (no chains, no preferences).
    let w = |n: &str, t: &str| std::fs::write(dir.path().join(n), t).unwrap();
    w("e.csv", "pe_id,name,status\n1101000000000000001,Acme,active\n");
    w("h.csv", "header,pe_id,type,status\nACMEBK,1101000000000000001,T,active\n");
    w("t.csv", "template_id,pe_id,headers,category,content_category,content,status\n1107000000000000001,1101000000000000001,ACMEBK,transactional,,OTP {#var#} - Acme,active\n");
    let p = |n: &str| dir.path().join(n);
    let out = p("r.dlt");
    let opts = crate::dlt::BuildOptions {
        entities: p("e.csv"),
        headers: p("h.csv"),
        templates: p("t.csv"),
        out: out.clone(),
        ..Default::default()
    };
    crate::dlt::build(&opts).expect("build");
    let text = format!(
        "[upstream]\naddress = \"10.1.2.3:2775\"\n[dlt]\nregistry = {:?}\n{account}",
        out.display().to_string()
    );
    let c = Config::parse(&text).unwrap();
    let d = c.policy.dlt.as_ref().expect("[dlt]");
    assert_eq!((d.pe_id_tlv, d.template_id_tlv, d.chain_tlv), (0x1400, 0x1401, 0x1402));
    // A reload of an unchanged file keeps the registry in use; a rebuilt one is read again.
    let again = Config::parse(&text).unwrap();
    assert!(std::sync::Arc::ptr_eq(&d.registry, &again.policy.dlt.as_ref().unwrap().registry));
    crate::dlt::build(&opts).expect("rebuild");
    let rebuilt = Config::parse(&text).unwrap();
    assert!(!std::sync::Arc::ptr_eq(&d.registry, &rebuilt.policy.dlt.as_ref().unwrap().registry));
    assert_eq!((d.promotional_hours.start, d.promotional_hours.end, d.zone.name()), (540, 1260, "Asia/Kolkata"));
    let a = c.account("in1").unwrap();
    assert_eq!((a.scrubbing, a.pe_id), (crate::policy::dlt::Scrubbing::Dlt, Some(1_101_000_000_000_000_001)));

    // The bundled India example, with its registry path pointed at this one.
    let india = include_str!("../../config/india.toml");
    let india = india.replace("/var/lib/consentgate/india.dlt", &out.display().to_string());
    assert_ne!(india, include_str!("../../config/india.toml"), "the example names the registry");
    let c = Config::parse(&india).unwrap_or_else(|e| panic!("config/india.toml: {e:?}"));
    assert_eq!(c.account("acmebank").and_then(|a| a.pe_id), Some(1_101_000_000_000_000_001));
}

#[test]
fn opt_in_keywords_default_none_per_account_override_and_no_overlap() {
    let c = Config::parse(MINIMAL).unwrap();
    assert!(c.opt_in_keywords.is_empty() && c.account_opt_in_keywords.is_empty());
    let with = MINIMAL.replace(
        "default_country_code = \"86\"",
        "default_country_code = \"86\"\nopt_in_keywords = [\"START\", \"YES\"]",
    ) + "opt_in_keywords = [\"SUBSCRIBE\"]\n";
    let c = Config::parse(&with).unwrap();
    assert_eq!(c.opt_in_keywords, ["START", "YES"]);
    assert_eq!(c.account_opt_in_keywords["acme"], ["SUBSCRIBE"]);
    // An opt-out keyword (T, STOP, …) cannot also be an opt-in: opt-out is checked first.
    let bad = with.replace("[\"START\", \"YES\"]", "[\"START\", \"stop\"]").replace("[\"SUBSCRIBE\"]", "[\"\"]");
    let errs = Config::parse(&bad).unwrap_err();
    let got: Vec<_> = errs.iter().map(|e| (e.key.as_str(), e.message.as_str())).collect();
    assert!(
        got.contains(&("policy.opt_in_keywords", "`stop` is also an opt-out keyword (policy.optout_keywords)")),
        "{got:?}"
    );
    assert!(got.contains(&("account[acme].opt_in_keywords", "keywords must not be empty")), "{got:?}");
}

#[test]
fn the_us_example_config_parses() {
    let c = Config::parse(include_str!("../../config/us.toml")).unwrap_or_else(|e| panic!("config/us.toml: {e:?}"));
    assert_eq!(c.opt_in_keywords, ["START", "UNSTOP", "YES"]);
    assert!(c.optout_keywords.iter().any(|k| k == "STOP"));
}
