use super::*;
use crate::smpp::BindType;
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
        "account[0].class",
        "account[0].licence_expires",
        "account[0].bind_types",
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
    assert!(keys.contains(&"node.id") && keys.contains(&"account[0].entity"), "{keys:?}");
    let msg = errs.iter().find(|e| e.key == "node.id").unwrap().message.clone();
    assert!(msg.contains("`gw 1`"), "{msg}");
}

#[test]
fn unknown_keys_are_refused_with_line() {
    let errs = Config::parse("[upstream]\naddress = \"h:1\"\nadress = \"x\"\n").unwrap_err();
    assert_eq!(errs.len(), 1);
    assert_eq!(errs[0].key, "line 3");
    assert!(errs[0].message.contains("adress"), "{}", errs[0].message);
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
/// account's first MO opt-out (issue #10): it is a config error now, naming the key.
#[test]
fn bad_entities_are_refused_with_their_key() {
    for (entity, why) in [("", "empty"), ("a\\u0007b", "control character")] {
        let text = MINIMAL.replace("entity = \"acme-retail\"", &format!("entity = \"{entity}\""));
        let errs = Config::parse(&text).unwrap_err();
        assert!(errs.iter().any(|e| e.key == "account[0].entity" && e.message.contains(why)), "{entity:?}: {errs:?}");
    }
    let long = MINIMAL.replace("acme-retail", &"x".repeat(256));
    assert!(Config::parse(&long).unwrap_err().iter().any(|e| e.key == "account[0].entity"));
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
    let errs = with("db = \"x.db\"\ncalendar = \"/nonexistent/cal.toml\"").unwrap_err();
    assert!(errs[0].message.contains("/nonexistent/cal.toml: cannot read"), "{errs:?}");
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
        ["replication.redis", "replication.stream", "replication.on_disconnect", "replication.timeout"]
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
