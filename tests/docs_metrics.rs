//! The SRE guide's metric reference (`docs/src/sre/metrics.md`) against what the gateway
//! exports, so the page cannot drift from the code:
//!
//! * every metric name declared in `src/telemetry/metrics.rs` (the `consentgate_*` names and
//!   the standard `process_*` ones) has a row of its own, and every row names a declared one;
//! * the real binary, started with every feature a test can give it (TLS listener, snapshot,
//!   journal, audit log, capture, complaint register, replication towards an unreachable
//!   Redis) and driven with traffic, an opt-out and a bind refused, is scraped: every family
//!   in `/metrics` has a row, with the type `# TYPE` says, and every label name the scrape
//!   shows is in that row, and so is every label value, but for the values that come from the
//!   config or from open sets (account ids, the config hash, the version, SMPP command names);
//! * the process metrics of that binary are plausible: open descriptors > 0 and under the
//!   limit, resident memory > 1 MiB, started within the test's run, some CPU used.

mod common;
mod tools;

use std::collections::{BTreeMap, BTreeSet};
use std::path::Path;
use std::process::Command;
use std::time::{Duration, Instant};

use common::conf::{AccountConf, GwConf};
use common::node::{free_addr, Node};
use common::{submit_to, Esme};
use consentgate::consent::snapshot::{build, BuildOptions};
use consentgate::smpp::{self, cmd};

const DOC: &str = "docs/src/sre/metrics.md";
const TOKEN: &str = "docs-metrics-test-token";

/// `(metric, label)` pairs whose values are not listed in the page: ids from the config,
/// hashes, the version, and the SMPP command names (the page names the set instead).
const OPEN_VALUES: &[(&str, &str)] = &[
    ("*", "account"),
    ("consentgate_config_info", "sha256"),
    ("consentgate_build_info", "version"),
    ("consentgate_build_info", "commit"),
    ("consentgate_build_info", "built"),
    ("consentgate_pdus_total", "command"),
];

/// One table row of the page: its type and label cells, and the whole row's text.
struct Row {
    kind: String,
    labels: String,
    text: String,
}

/// The page's metric rows: `| `name` | type | labels | … |`, by name. A name with two rows
/// fails.
fn doc_rows() -> BTreeMap<String, Row> {
    let mut rows = BTreeMap::new();
    for line in tools::read(DOC).lines() {
        let Some(rest) = line.strip_prefix("| `") else { continue };
        let Some((name, _)) = rest.split_once('`') else { continue };
        if !tools::METRIC_PREFIXES.iter().any(|p| name.starts_with(p)) {
            continue;
        }
        let cells: Vec<&str> = line.split(" | ").collect();
        assert!(cells.len() >= 4, "{DOC}: a metric row needs name, type, labels and meaning: {line}");
        let row = Row { kind: cells[1].trim().to_owned(), labels: cells[2].to_owned(), text: line.to_owned() };
        assert!(rows.insert(name.to_owned(), row).is_none(), "{DOC}: two rows for {name}");
    }
    rows
}

/// A self-signed certificate and key for localhost, by the `openssl` command.
fn certificate(dir: &Path) -> (std::path::PathBuf, std::path::PathBuf) {
    let (cert, key) = (dir.join("gw.pem"), dir.join("gw.key"));
    let out = Command::new("openssl")
        .args(["req", "-x509", "-newkey", "ec", "-pkeyopt", "ec_paramgen_curve:prime256v1", "-nodes", "-days", "30"])
        .args(["-subj", "/CN=localhost", "-addext", "subjectAltName=DNS:localhost,IP:127.0.0.1", "-keyout"])
        .arg(&key)
        .arg("-out")
        .arg(&cert)
        .output()
        .expect("run openssl (apt-get install openssl)");
    assert!(out.status.success(), "openssl: {}", String::from_utf8_lossy(&out.stderr));
    (cert, key)
}

/// `(family, label name, label value)`.
type Label = (String, String, String);

/// `{family: type}` from the `# TYPE` lines, and the labels of every sample line. A
/// histogram's `_bucket` / `_sum` / `_count` samples count for the family (its `le` label is
/// not the page's business).
fn parse_exposition(text: &str) -> (BTreeMap<String, String>, BTreeSet<Label>) {
    let mut types = BTreeMap::new();
    for l in text.lines() {
        if let Some(rest) = l.strip_prefix("# TYPE ") {
            let (name, kind) = rest.split_once(' ').expect("# TYPE name kind");
            types.insert(name.to_owned(), kind.trim().to_owned());
        }
    }
    let mut labels = BTreeSet::new();
    for l in text.lines().filter(|l| !l.starts_with('#') && !l.trim().is_empty()) {
        let name_end = l.find(['{', ' ']).expect("a sample line");
        let mut family = &l[..name_end];
        if !types.contains_key(family) {
            family = ["_bucket", "_sum", "_count"].iter().find_map(|s| family.strip_suffix(s)).unwrap_or(family);
        }
        assert!(types.contains_key(family), "sample without # TYPE: {l}");
        let Some(body) = l[name_end..].strip_prefix('{').and_then(|b| b.split_once('}')).map(|(b, _)| b) else {
            continue;
        };
        for pair in body.split("\",").filter(|p| !p.is_empty()) {
            let (k, v) = pair.split_once("=\"").unwrap_or_else(|| panic!("label in {l}"));
            if k != "le" {
                labels.insert((family.to_owned(), k.to_owned(), v.trim_end_matches('"').to_owned()));
            }
        }
    }
    (types, labels)
}

/// Every declared metric has a row, and every row is a declared metric.
#[test]
fn every_declared_metric_has_a_row_and_every_row_a_metric() {
    let declared: BTreeSet<String> = tools::declared_metrics().into_iter().collect();
    assert!(declared.len() >= 45, "{declared:?}");
    let rows = doc_rows();
    let missing: Vec<_> = declared.iter().filter(|d| !rows.contains_key(*d)).collect();
    assert!(missing.is_empty(), "{DOC} does not describe {missing:?}");
    let stale: Vec<_> = rows.keys().filter(|r| !declared.contains(*r)).collect();
    assert!(stale.is_empty(), "{DOC} describes metrics the code does not declare: {stale:?}");
    for (name, row) in &rows {
        assert!(["counter", "gauge", "histogram"].contains(&row.kind.as_str()), "{name}: type {:?}", row.kind);
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_scrape_of_the_real_binary_matches_the_metric_reference() {
    let started = consentgate::time::unix_us() as f64 / 1e6;
    let dir = tempfile::tempdir().unwrap();
    let d = dir.path();
    let (dnc, consent, snap) = (d.join("dnc.csv"), d.join("consent.csv"), d.join("consent.snap"));
    std::fs::write(&dnc, "msisdn,registered_at\n8613800000002,2026-01-01\n").unwrap();
    std::fs::write(&consent, "msisdn,entity,action,at\n8613800000001,acme-retail,grant,2026-01-01\n").unwrap();
    build(&BuildOptions { dnc: Some(dnc), consent: Some(consent), out: snap.clone(), ..Default::default() }, |_| {})
        .expect("build snapshot");
    let (cert, key) = certificate(d);
    let sim = common::node::sim(consentgate::sim::SimConfig::default()).await;
    let closed_redis = free_addr();
    let c = GwConf::new(free_addr(), free_addr(), sim.local_addr)
        .listen_tls(free_addr(), &cert, &key)
        .set("policy", "default_country_code = \"86\"")
        .set("policy", "regime = \"opt-in\"")
        .set("consent", &format!("snapshot = \"{}\"", snap.display()))
        .set("consent", &format!("journal = \"{}\"", d.join("journal").display()))
        .set("audit", &format!("dir = \"{}\"", d.join("audit").display()))
        .set("audit", "mode = \"all\"")
        .set("capture", "enabled = true")
        .set("capture", &format!("dir = \"{}\"", d.join("capture").display()))
        .set("complaints", &format!("db = \"{}\"", d.join("complaints.db").display()))
        .set("node", "id = \"docs-1\"")
        .set("replication", &format!("redis = \"redis://{closed_redis}\""))
        .set("replication", "on_disconnect = \"serve\"")
        .account(AccountConf::marketing("acme").entity("acme-retail").licence("B2-1"));
    let node_dir = tempfile::tempdir().unwrap();
    let mut node = Node::with_conf(node_dir, &c);
    node.start_with_env(&[("CONSENTGATE_ADMIN_TOKEN", TOKEN)]).await;

    // Traffic: accepted, rejected (dnc, no consent), enough for the sampled histograms.
    let mut esme = Esme::bound(node.smpp, "acme").await;
    for i in 0..192u32 {
        let dest = ["8613800000001", "8613800000002", "8613800000003"][i as usize % 3];
        let seq = esme.submit(&submit_to(dest)).await;
        esme.recv_where(|f| smpp::command_id(f) == cmd::SUBMIT_SM_RESP && smpp::sequence(f) == seq).await;
    }
    // An unknown system_id (binds_total{account="unknown"}), an opt-out through the API.
    let mut stranger = Esme::connect(node.smpp).await;
    let _ = stranger.bind(consentgate::smpp::BindType::Transceiver, "nobody", "pw").await;
    let body = r#"{"msisdn":"8613800000001","kind":"revoke","entity":"acme-retail"}"#;
    let (code, resp) =
        consentgate::admin::request(node.admin, "POST", "/v1/consent", Some(TOKEN), Some(body)).await.unwrap();
    assert_eq!(code, 201, "{resp}");
    // Sessions publish every 100 ms: wait for the traffic to show.
    let deadline = Instant::now() + Duration::from_secs(10);
    let text = loop {
        let text = node.metrics().await;
        if text.contains("consentgate_upstream_response_duration_seconds_bucket")
            && text.contains("verdict=\"rejected\"")
        {
            break text;
        }
        assert!(Instant::now() < deadline, "traffic did not show in /metrics:\n{text}");
        tokio::time::sleep(Duration::from_millis(100)).await;
    };

    let (types, labels) = parse_exposition(&text);
    assert!(types.len() >= 40, "only {} families scraped:\n{text}", types.len());
    let rows = doc_rows();
    for (name, kind) in &types {
        let row = rows.get(name).unwrap_or_else(|| panic!("{DOC} has no row for {name} (scraped as a {kind})"));
        assert_eq!(&row.kind, kind, "{DOC}: {name} is a {kind}");
    }
    for (family, label, value) in &labels {
        let row = &rows[family];
        assert!(row.labels.contains(&format!("`{label}`")), "{DOC}: {family}'s labels do not name `{label}`");
        let open = OPEN_VALUES.iter().any(|(f, l)| (*f == "*" || f == family) && l == label);
        if !open {
            assert!(row.text.contains(&format!("`{value}`")), "{DOC}: {family} row does not list {label} `{value}`");
        }
    }

    // The process metrics of this process, from /proc (Linux).
    let v = |name: &str| common::node::metric(&text, &format!("{name} ")).unwrap_or_else(|| panic!("{name} missing"));
    let now = consentgate::time::unix_us() as f64 / 1e6;
    let (open, max) = (v("process_open_fds"), v("process_max_fds"));
    assert!(open >= 5.0 && open < max, "open fds {open}, limit {max}");
    assert!(v("process_resident_memory_bytes") > 1024.0 * 1024.0);
    assert!(v("process_virtual_memory_bytes") >= v("process_resident_memory_bytes"));
    let start = v("process_start_time_seconds");
    assert!(start >= started - 2.0 && start <= now + 1.0, "started {start}, test ran {started}..{now}");
    let cpu = v("process_cpu_seconds_total");
    assert!(cpu > 0.0 && cpu < (now - started) * 4.0 + 1.0, "cpu {cpu} s in {} s", now - started);
    let fds = node.fds() as f64;
    assert!((open - fds).abs() <= 3.0, "process_open_fds {open} vs /proc/<pid>/fd {fds}");

    node.stop().await;
    sim.shutdown().await;
}
