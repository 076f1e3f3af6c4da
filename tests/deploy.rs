//! The deployment files under `deploy/` checked with the tools that consume them:
//! `promtool check rules` / `test rules` / `check config` on the Prometheus files, metric
//! names against `src/telemetry/metrics.rs`, every alert's runbook link against the headings
//! of `docs/src/sre/alerts.md`, the Grafana dashboard's structure, the
//! Kubernetes manifests parsed with PyYAML (and the ConfigMap's TOML through
//! `consentgate check-config`), the systemd unit through `systemd-analyze verify`, and the
//! Dockerfile's shape (Docker itself is not available to the tests).

mod tools;

use std::collections::BTreeSet;
use std::process::Command;
use std::time::Duration;

use consentgate::config::Config;
use serde_json::Value;
use tools::*;

const RULES: &str = "deploy/prometheus/consentgate-rules.yml";
const RULE_TESTS: &str = "deploy/prometheus/consentgate-rules.test.yml";
const ALERTS_DOC: &str = "docs/src/sre/alerts.md";
/// Where the package installs the book; every `runbook_url` starts with it.
const RUNBOOK_BASE: &str = "file:///usr/share/doc/consentgate/book/sre/alerts.html#";
const PROM_CONFIG: &str = "deploy/prometheus/prometheus.example.yml";
const DASHBOARD: &str = "deploy/grafana/consentgate-dashboard.json";
const UNIT: &str = "deploy/systemd/consentgate.service";
const K8S: &str = "deploy/kubernetes";
const BIN: &str = env!("CARGO_BIN_EXE_consentgate");

/// Alerts that must exist (the SRE guide and the dashboard refer to them).
const REQUIRED_ALERTS: &[&str] = &[
    "ConsentgateDown",
    "ConsentgateNoSnapshotLoaded",
    "ConsentgateSnapshotStale",
    "ConsentgateSnapshotReloadRefused",
    "ConsentgateUpstreamUnreachable",
    "ConsentgateNoUpstreamSessions",
    "ConsentgateRejectRatioJump",
    "ConsentgateAuditRecordsDropped",
    "ConsentgateJournalFsyncSlow",
    "ConsentgateUpstreamSlow",
    "ConsentgateReplicationBlocked",
    "ConsentgateTlsHandshakeFailures",
    "ConsentgateCertificateExpiresSoon",
    "ConsentgateCertificateExpiryImminent",
    "ConsentgateFileDescriptorsNearLimit",
];

// ---- Prometheus ------------------------------------------------------------------------

#[test]
fn promtool_check_rules_passes() {
    let Some(promtool) = prometheus_tool("promtool") else { return };
    let out = run_ok(Command::new(promtool).args(["check", "rules"]).arg(path(RULES)));
    assert!(out.contains("SUCCESS"), "{out}");
}

#[test]
fn promtool_rule_unit_tests_pass() {
    let Some(promtool) = prometheus_tool("promtool") else { return };
    // promtool resolves rule_files relative to the test file.
    let out = run_ok(Command::new(promtool).args(["test", "rules"]).arg(path(RULE_TESTS)));
    assert!(out.contains("SUCCESS"), "{out}");
}

#[test]
fn promtool_check_config_passes_on_the_example() {
    let Some(promtool) = prometheus_tool("promtool") else { return };
    let out = run_ok(Command::new(promtool).args(["check", "config"]).arg(path(PROM_CONFIG)));
    assert!(out.contains("consentgate-rules.yml") && out.contains("SUCCESS"), "{out}");
}

/// Every alert: a `for:`, a severity of `critical` or `warning`, a summary and a description;
/// every required alert present; every alert tested both firing and not firing.
#[test]
fn every_alert_is_complete_and_unit_tested_both_ways() {
    let rules = yaml_documents(RULES);
    let mut alerts = BTreeSet::new();
    for group in rules[0]["groups"].as_array().expect("groups") {
        for rule in group["rules"].as_array().expect("rules") {
            let Some(name) = rule["alert"].as_str() else {
                assert!(rule["record"].as_str().is_some_and(|r| r.starts_with("consentgate:")), "{rule}");
                continue;
            };
            assert!(alerts.insert(name.to_owned()), "duplicate alert {name}");
            let for_ = rule["for"].as_str().unwrap_or_else(|| panic!("{name}: no `for:`"));
            assert!(for_.ends_with('m') || for_.ends_with('s') || for_.ends_with('h'), "{name}: for {for_}");
            let sev = rule["labels"]["severity"].as_str().unwrap_or_else(|| panic!("{name}: no severity"));
            assert!(["critical", "warning"].contains(&sev), "{name}: severity {sev}");
            for a in ["summary", "description"] {
                let text = rule["annotations"][a].as_str().unwrap_or_else(|| panic!("{name}: no {a}"));
                assert!(text.len() > 20, "{name}: {a} too short: {text:?}");
            }
        }
    }
    let missing: Vec<_> = REQUIRED_ALERTS.iter().filter(|a| !alerts.contains(**a)).collect();
    assert!(missing.is_empty(), "alerts missing from {RULES}: {missing:?}");

    let tests = yaml_documents(RULE_TESTS);
    let (mut fires, mut quiet) = (BTreeSet::new(), BTreeSet::new());
    for t in tests[0]["tests"].as_array().expect("tests") {
        for case in t["alert_rule_test"].as_array().into_iter().flatten() {
            let name = case["alertname"].as_str().expect("alertname").to_owned();
            match case["exp_alerts"].as_array() {
                Some(a) if !a.is_empty() => fires.insert(name),
                _ => quiet.insert(name),
            };
        }
    }
    for a in &alerts {
        assert!(fires.contains(a), "{RULE_TESTS} never expects {a} to fire");
        assert!(quiet.contains(a), "{RULE_TESTS} never expects {a} to stay quiet");
    }
}

/// mdBook's anchor for a heading (`normalize_id`): lowercased; letters, digits, `_` and `-`
/// kept; whitespace to `-`; everything else dropped.
fn mdbook_anchor(heading: &str) -> String {
    heading
        .chars()
        .filter_map(|c| {
            if c.is_alphanumeric() || c == '_' || c == '-' {
                Some(c.to_ascii_lowercase())
            } else if c.is_whitespace() {
                Some('-')
            } else {
                None
            }
        })
        .collect()
}

#[test]
fn mdbook_anchors_are_computed_as_mdbook_does() {
    assert_eq!(mdbook_anchor("ConsentgateDown"), "consentgatedown");
    assert_eq!(mdbook_anchor("Logs and the audit log"), "logs-and-the-audit-log");
    assert_eq!(mdbook_anchor("`RUST_LOG`, levels (and rate limits)"), "rust_log-levels-and-rate-limits");
}

/// Every alert links its runbook: `runbook_url` is the installed book's alerts page with the
/// anchor of a `##` heading of `docs/src/sre/alerts.md` that is the alert's name exactly;
/// every `##` section of that page is an alert of the rule file (no runbook for an alert that
/// no longer exists).
#[test]
fn every_alert_links_its_runbook_section() {
    let rules = yaml_documents(RULES);
    let doc = read(ALERTS_DOC);
    let headings: Vec<&str> = doc.lines().filter_map(|l| l.strip_prefix("## ")).map(str::trim).collect();
    let anchors: BTreeSet<String> = headings.iter().map(|h| mdbook_anchor(h)).collect();
    assert_eq!(anchors.len(), headings.len(), "{ALERTS_DOC}: two headings with one anchor: {headings:?}");
    let mut alerts = BTreeSet::new();
    for group in rules[0]["groups"].as_array().expect("groups") {
        for rule in group["rules"].as_array().expect("rules") {
            let Some(name) = rule["alert"].as_str() else { continue };
            alerts.insert(name.to_owned());
            let url = rule["annotations"]["runbook_url"].as_str().unwrap_or_else(|| panic!("{name}: no runbook_url"));
            let anchor =
                url.strip_prefix(RUNBOOK_BASE).unwrap_or_else(|| panic!("{name}: {url} is not under {RUNBOOK_BASE}"));
            assert!(anchors.contains(anchor), "{name}: {url}: no heading of {ALERTS_DOC} has the anchor #{anchor}");
            assert!(headings.contains(&name), "{ALERTS_DOC} has no `## {name}` section");
            assert_eq!(anchor, mdbook_anchor(name), "{name}: {url} links another alert's section");
        }
    }
    assert!(alerts.len() >= 20, "{alerts:?}");
    let orphans: Vec<_> = headings.iter().filter(|h| !alerts.contains(**h)).collect();
    assert!(orphans.is_empty(), "{ALERTS_DOC}: sections for no alert of {RULES}: {orphans:?}");
    // The header of the rule file tells how to point the links elsewhere.
    let text = read(RULES);
    assert!(text.contains("/usr/share/doc/consentgate/book") && text.contains("sed -i"), "{RULES}: header");
}

// ---- metric names ----------------------------------------------------------------------

#[test]
fn metric_scanner_finds_names_and_flags_unknown_ones() {
    let declared = declared_metrics();
    for must in ["consentgate_submit_total", "consentgate_snapshot_built_timestamp_seconds", "consentgate_build_info"] {
        assert!(declared.iter().any(|d| d == must), "{must} not parsed from metrics.rs: {declared:?}");
    }
    assert!(declared.len() >= 19, "only {} metric consts parsed: {declared:?}", declared.len());
    assert!(declared.iter().any(|d| d == "process_open_fds"), "{declared:?}");
    let expr = r#"rate(consentgate_submit_total{x="consentgate_not_a_label"}[5m]) + consentgate_nope_total
        + consentgate_upstream_response_duration_seconds_bucket + consentgate:submit:rate5m
        + process_open_fds / process_nope"#;
    assert_eq!(
        unknown_metrics(expr, &declared),
        vec!["consentgate_not_a_label".to_owned(), "consentgate_nope_total".to_owned(), "process_nope".to_owned()]
    );
}

#[test]
fn rules_and_dashboard_use_only_declared_metrics() {
    let declared = declared_metrics();
    let rules = read(RULES);
    let dashboard = read(DASHBOARD);
    for (file, text) in [(RULES, &rules), (RULE_TESTS, &read(RULE_TESTS)), (DASHBOARD, &dashboard)] {
        let used = identifiers_with_prefix(text, "consentgate_");
        assert!(used.len() >= 5, "{file}: the scan found only {used:?}");
        let unknown = unknown_metrics(text, &declared);
        assert!(unknown.is_empty(), "{file} uses metrics not in src/telemetry/metrics.rs: {unknown:?}");
    }
    // Recording rules used by alerts exist.
    let recorded: Vec<String> =
        rules.lines().filter_map(|l| l.trim().strip_prefix("- record: ")).map(|s| s.trim().to_owned()).collect();
    for r in identifiers_with_prefix(&rules, "consentgate:") {
        assert!(recorded.contains(&r), "{RULES} uses recording rule {r} it does not define");
    }
    for r in identifiers_with_prefix(&dashboard, "consentgate:") {
        assert!(recorded.contains(&r), "{DASHBOARD} uses recording rule {r} that {RULES} does not define");
    }
}

// ---- Grafana ---------------------------------------------------------------------------

fn dashboard() -> Value {
    serde_json::from_str(&read(DASHBOARD)).expect("dashboard is valid JSON")
}

/// Every PromQL expression of the dashboard, with its panel title.
pub fn dashboard_exprs(d: &Value) -> Vec<(String, String)> {
    let mut out = Vec::new();
    for p in d["panels"].as_array().expect("panels") {
        for t in p["targets"].as_array().into_iter().flatten() {
            out.push((p["title"].as_str().unwrap_or("").to_owned(), t["expr"].as_str().expect("expr").to_owned()));
        }
    }
    out
}

#[test]
fn dashboard_is_importable_with_the_expected_panels() {
    let d = dashboard();
    assert!(d["schemaVersion"].as_u64().expect("schemaVersion") >= 36);
    assert!(d["uid"].as_str().is_some_and(|u| !u.is_empty() && u.len() <= 40), "uid");
    assert!(d["title"].as_str().is_some_and(|t| !t.is_empty()));

    let vars = d["templating"]["list"].as_array().expect("templating.list");
    let var = |n: &str| vars.iter().find(|v| v["name"] == n).unwrap_or_else(|| panic!("variable {n} missing"));
    let ds = var("datasource");
    assert_eq!(ds["type"], "datasource");
    assert_eq!(ds["query"], "prometheus");
    let account = var("account");
    assert_eq!(account["type"], "query");
    assert_eq!(account["includeAll"], true);
    assert!(account["definition"].as_str().unwrap().contains("consentgate_submit_total"), "{account}");

    let panels = d["panels"].as_array().expect("panels");
    let mut ids = BTreeSet::new();
    for p in panels {
        let title = p["title"].as_str().expect("title");
        assert!(ids.insert(p["id"].as_u64().expect("id")), "duplicate panel id in {title}");
        let g = &p["gridPos"];
        let (x, w) = (g["x"].as_u64().expect("gridPos.x"), g["w"].as_u64().expect("gridPos.w"));
        assert!(x + w <= 24 && g["h"].as_u64().is_some() && g["y"].as_u64().is_some(), "{title}: gridPos {g}");
        if p["type"] == "row" {
            continue;
        }
        assert!(["timeseries", "stat"].contains(&p["type"].as_str().unwrap()), "{title}: type {}", p["type"]);
        assert_eq!(p["datasource"]["uid"], "${datasource}", "{title}: panel datasource");
        let targets = p["targets"].as_array().unwrap_or_else(|| panic!("{title}: no targets"));
        assert!(!targets.is_empty(), "{title}: no targets");
        for t in targets {
            assert_eq!(t["datasource"]["uid"], "${datasource}", "{title}: target datasource");
            let e = t["expr"].as_str().unwrap_or_else(|| panic!("{title}: target without expr"));
            let balanced = |o, c| e.matches(o).count() == e.matches(c).count();
            assert!(balanced('(', ')') && balanced('{', '}') && balanced('[', ']'), "{title}: unbalanced {e}");
        }
    }

    let exprs = dashboard_exprs(&d);
    let has = |title: &str, needle: &str| {
        assert!(
            exprs.iter().any(|(t, e)| t == title && e.contains(needle)),
            "dashboard: no panel {title:?} with an expression containing {needle:?}"
        )
    };
    has("Throughput by verdict", "sum by (verdict) (rate(consentgate_submit_total");
    has("Rejections by reason", "sum by (reason) (rate(consentgate_submit_total");
    has("Reject ratio by account", "verdict=~\"rejected|would_reject\"");
    has("Decision latency", "histogram_quantile(0.99, sum by (le) (rate(consentgate_decision_duration_seconds_bucket");
    has("Decision latency", "histogram_quantile(0.5,");
    has(
        "Upstream response latency",
        "histogram_quantile(0.99, sum by (account, le) (rate(consentgate_upstream_response_duration_seconds_bucket",
    );
    has("Sessions", "consentgate_sessions");
    has("Window in flight", "consentgate_window_in_flight");
    has("Snapshot age", "time() - max(consentgate_snapshot_built_timestamp_seconds");
    has("Snapshot records", "consentgate_snapshot_records");
    has("Snapshot reloads", "consentgate_snapshot_reloads_total");
    has("Opt-outs and live statements", "consentgate_optouts_total");
    has("Errors by stage and kind", "sum by (stage, kind) (rate(consentgate_errors_total");
    has("Audit records", "consentgate_audit_records_total");
    has("Journal fsync latency", "consentgate_journal_fsync_duration_seconds_bucket");
    has("Replication connections", "consentgate_replication_connected");
    has("Replication lag", "consentgate_replication_lag_seconds");
    has("Replication blocked", "consentgate_replication_blocked");
    has("Replication statements", "sum by (direction) (rate(consentgate_replication_statements_total");
    has("Unpublished statements", "consentgate_replication_unpublished_statements");
    has("Replication errors", "consentgate_replication_errors_total");
    has("Certificate expiry", "consentgate_tls_certificate_expiry_timestamp_seconds");
    has("TLS handshakes", "sum by (leg, result) (rate(consentgate_tls_handshakes_total");
    has("CPU", "rate(process_cpu_seconds_total");
    has("Memory", "process_resident_memory_bytes");
    has("File descriptors", "process_max_fds");
    has("Uptime", "process_start_time_seconds");
    // Account-labelled series follow the account variable.
    for (title, e) in &exprs {
        if e.contains("consentgate_submit_total") || e.contains("consentgate_window_in_flight") {
            assert!(e.contains("account=~\"$account\""), "{title}: {e} ignores $account");
        }
    }
}

// ---- Kubernetes ------------------------------------------------------------------------

fn k8s() -> Vec<(String, Value)> {
    k8s_in(K8S)
}

fn k8s_in(dir: &str) -> Vec<(String, Value)> {
    let mut files: Vec<_> = std::fs::read_dir(path(dir))
        .expect("deploy/kubernetes")
        .map(|e| e.unwrap().file_name().into_string().unwrap())
        .filter(|n| n.ends_with(".yaml") || n.ends_with(".yml"))
        .collect();
    files.sort();
    let mut docs = Vec::new();
    for f in files {
        let rel = format!("{dir}/{f}");
        let parsed = yaml_documents(&rel);
        assert!(!parsed.is_empty(), "{rel}: no document");
        docs.extend(parsed.into_iter().map(|d| (rel.clone(), d)));
    }
    docs
}

fn kind<'a>(docs: &'a [(String, Value)], k: &str) -> &'a Value {
    &docs.iter().find(|(_, d)| d["kind"] == k).unwrap_or_else(|| panic!("no {k} in {K8S}")).1
}

fn k8s_config(docs: &[(String, Value)]) -> String {
    kind(docs, "ConfigMap")["data"]["consentgate.toml"].as_str().expect("ConfigMap data consentgate.toml").to_owned()
}

#[test]
fn kubernetes_manifests_parse_and_fit_together() {
    let docs = k8s();
    for (file, d) in &docs {
        assert!(d["apiVersion"].is_string() && d["kind"].is_string(), "{file}: apiVersion/kind");
        if d["kind"] != "Kustomization" {
            assert!(d["metadata"]["name"].is_string(), "{file}: metadata.name");
        }
    }
    let kinds: BTreeSet<_> = docs.iter().map(|(_, d)| d["kind"].as_str().unwrap().to_owned()).collect();
    for k in ["Deployment", "Service", "ConfigMap", "PersistentVolumeClaim", "Secret", "PodMonitor", "Kustomization"] {
        assert!(kinds.contains(k), "no {k} in {K8S}: {kinds:?}");
    }
    let kust = kind(&docs, "Kustomization");
    for r in kust["resources"].as_array().expect("resources") {
        let r = r.as_str().unwrap();
        assert!(path(&format!("{K8S}/{r}")).exists(), "kustomization lists missing {r}");
    }

    let cfg = Config::parse(&k8s_config(&docs)).expect("the ConfigMap's consentgate.toml parses");
    let dep = kind(&docs, "Deployment");
    let pod = &dep["spec"]["template"]["spec"];
    let labels = &dep["spec"]["template"]["metadata"]["labels"];
    assert_eq!(dep["spec"]["selector"]["matchLabels"], *labels);
    assert_eq!(dep["spec"]["replicas"], 1, "one journal writer");
    assert_eq!(dep["spec"]["strategy"]["type"], "Recreate", "the RWO volume and the journal have one owner");
    let c = &pod["containers"][0];

    // Ports, and the probes on the admin port.
    let port = |name: &str| {
        c["ports"].as_array().unwrap().iter().find(|p| p["name"] == name).unwrap_or_else(|| panic!("port {name}"))
            ["containerPort"]
            .as_u64()
            .unwrap()
    };
    assert_eq!(port("smpp"), u64::from(cfg.listen.smpp.port()));
    assert_eq!(port("admin"), u64::from(cfg.listen.admin.port()));
    assert!(cfg.listen.admin.ip().is_unspecified(), "admin must listen on the pod IP for probes and scraping");
    assert_eq!(c["livenessProbe"]["httpGet"]["path"], "/livez");
    assert_eq!(c["livenessProbe"]["httpGet"]["port"], "admin");
    assert_eq!(c["readinessProbe"]["httpGet"]["path"], "/readyz");
    assert_eq!(c["readinessProbe"]["httpGet"]["port"], "admin");

    // Security context.
    assert_eq!(pod["securityContext"]["runAsNonRoot"], true);
    assert!(pod["securityContext"]["runAsUser"].as_u64().unwrap() > 0);
    assert_eq!(c["securityContext"]["readOnlyRootFilesystem"], true);
    assert_eq!(c["securityContext"]["allowPrivilegeEscalation"], false);
    assert_eq!(c["securityContext"]["capabilities"]["drop"], serde_json::json!(["ALL"]));
    assert!(c["resources"]["requests"]["memory"].is_string() && c["resources"]["limits"]["memory"].is_string());

    check_drain_and_reload(K8S, pod, &cfg);
    // One replica: a PodDisruptionBudget that protects it would block every node drain.
    for (file, pdb) in docs.iter().filter(|(_, d)| d["kind"] == "PodDisruptionBudget") {
        let blocks = pdb["spec"]["maxUnavailable"] == 0 || pdb["spec"]["minAvailable"].as_u64().is_some_and(|m| m >= 1);
        assert!(!blocks, "{file}: a PDB that blocks the eviction of the only replica: {pdb}");
    }

    // Token from the Secret, under the variable the config names.
    assert!(cfg.admin.token_source.contains("CONSENTGATE_ADMIN_TOKEN"), "{}", cfg.admin.token_source);
    let env = c["env"].as_array().unwrap();
    let token = env.iter().find(|e| e["name"] == "CONSENTGATE_ADMIN_TOKEN").expect("env CONSENTGATE_ADMIN_TOKEN");
    let secret = kind(&docs, "Secret");
    assert_eq!(token["valueFrom"]["secretKeyRef"]["name"], secret["metadata"]["name"]);
    let key = token["valueFrom"]["secretKeyRef"]["key"].as_str().unwrap();
    assert!(secret["stringData"][key].as_str().is_some_and(|t| t.len() >= 16), "Secret example: {key} ≥ 16 chars");

    // Volumes: config from the ConfigMap at the path the container runs with; state on the PVC
    // holding the snapshot and the journal.
    let volumes = pod["volumes"].as_array().unwrap();
    let mounts = c["volumeMounts"].as_array().unwrap();
    let mount_of = |vol: &Value| -> String {
        let name = &vol["name"];
        mounts.iter().find(|m| m["name"] == *name).unwrap_or_else(|| panic!("volume {name} not mounted"))["mountPath"]
            .as_str()
            .unwrap()
            .to_owned()
    };
    let cm_vol = volumes.iter().find(|v| v["configMap"].is_object()).expect("ConfigMap volume");
    assert_eq!(cm_vol["configMap"]["name"], kind(&docs, "ConfigMap")["metadata"]["name"]);
    let args: Vec<&str> = c["args"].as_array().unwrap().iter().map(|a| a.as_str().unwrap()).collect();
    let config_arg = args.iter().position(|a| *a == "--config").map(|i| args[i + 1]).expect("--config");
    assert_eq!(config_arg, format!("{}/consentgate.toml", mount_of(cm_vol)));
    assert!(args.contains(&"run"), "{args:?}");
    let pvc_vol = volumes.iter().find(|v| v["persistentVolumeClaim"].is_object()).expect("PVC volume");
    assert_eq!(pvc_vol["persistentVolumeClaim"]["claimName"], kind(&docs, "PersistentVolumeClaim")["metadata"]["name"]);
    let state = mount_of(pvc_vol);
    for p in [cfg.consent.snapshot.as_ref().expect("snapshot"), cfg.consent.journal.as_ref().expect("journal")] {
        assert!(p.starts_with(&state), "{} is not on the PVC ({state})", p.display());
    }

    // Service and PodMonitor select the pods and name the ports.
    let svc = kind(&docs, "Service");
    for (k, v) in svc["spec"]["selector"].as_object().unwrap() {
        assert_eq!(labels[k], *v, "Service selector {k}");
    }
    let svc_ports: BTreeSet<_> = svc["spec"]["ports"]
        .as_array()
        .unwrap()
        .iter()
        .map(|p| (p["name"].as_str().unwrap(), p["port"].as_u64().unwrap()))
        .collect();
    assert_eq!(svc_ports, BTreeSet::from([("admin", 9775), ("smpp", 2775)]));
    let pm = kind(&docs, "PodMonitor");
    assert_eq!(pm["apiVersion"], "monitoring.coreos.com/v1");
    for (k, v) in pm["spec"]["selector"]["matchLabels"].as_object().unwrap() {
        assert_eq!(labels[k], *v, "PodMonitor selector {k}");
    }
    assert_eq!(pm["spec"]["podMetricsEndpoints"][0]["port"], "admin");
    assert_eq!(pm["spec"]["podMetricsEndpoints"][0]["path"], "/metrics");
}

/// The pod's shutdown and reload path: the preStop hook runs `consentgate drain` against
/// the pod's own admin port and waits long enough for a drain to finish (its --wait at least
/// shutdown_grace + the 2 s close wait), terminationGracePeriodSeconds (counted from the
/// start of preStop) covers that wait + the SIGTERM drain (shutdown_grace) + 3 s unbind, the
/// real binary accepts the hook's arguments, and the gateway runs with --watch-config.
fn check_drain_and_reload(dir: &str, pod: &Value, cfg: &Config) {
    let c = &pod["containers"][0];
    let cmd: Vec<&str> = c["lifecycle"]["preStop"]["exec"]["command"]
        .as_array()
        .unwrap_or_else(|| panic!("{dir}: preStop exec command"))
        .iter()
        .map(|a| a.as_str().unwrap())
        .collect();
    assert_eq!(cmd[..2], ["consentgate", "drain"], "{dir}: preStop {cmd:?}");
    assert!(!cmd.contains(&"--cancel"), "{dir}: preStop {cmd:?}");
    let flag = |f: &str| cmd.iter().position(|a| *a == f).map(|i| cmd[i + 1]);
    let admin: std::net::SocketAddr =
        flag("--admin").unwrap_or_else(|| panic!("{dir}: preStop without --admin")).parse().expect("--admin ADDR");
    assert!(admin.ip().is_loopback(), "{dir}: the hook drains its own pod, not {admin}");
    assert_eq!(admin.port(), cfg.listen.admin.port(), "{dir}: --admin port vs listen.admin");
    let wait =
        consentgate::config::parse_duration(flag("--wait").unwrap_or_else(|| panic!("{dir}: preStop without --wait")))
            .expect("--wait DURATION");
    let shutdown_grace = cfg.session.shutdown_grace;
    assert!(
        wait >= shutdown_grace + Duration::from_secs(2),
        "{dir}: --wait {wait:?} ends before a drain can ({shutdown_grace:?} + 2 s)"
    );
    let tgp =
        Duration::from_secs(pod["terminationGracePeriodSeconds"].as_u64().expect("terminationGracePeriodSeconds"));
    assert!(
        wait + shutdown_grace + Duration::from_secs(3) < tgp,
        "{dir}: terminationGracePeriodSeconds {tgp:?} vs drain --wait {wait:?} + shutdown_grace {shutdown_grace:?} + 3 s"
    );
    // The binary takes the hook's arguments: pointed at a closed port it reports the admin
    // API unreachable (69), not bad usage (64).
    let closed = std::net::TcpListener::bind("127.0.0.1:0").unwrap().local_addr().unwrap().to_string();
    let args: Vec<&str> =
        cmd[1..].iter().map(|a| if *a == flag("--admin").unwrap() { closed.as_str() } else { *a }).collect();
    let out = run(Command::new(BIN).args(&args).env("CONSENTGATE_ADMIN_TOKEN", "deploy-test-token-0123"));
    assert_eq!(out.status.code(), Some(69), "{dir}: {args:?}: {}", String::from_utf8_lossy(&out.stderr));

    let args: Vec<&str> = c["args"].as_array().unwrap().iter().map(|a| a.as_str().unwrap()).collect();
    let run_at = args.iter().position(|a| *a == "run").unwrap_or_else(|| panic!("{dir}: args {args:?}"));
    assert!(args[run_at..].contains(&"--watch-config"), "{dir}: ConfigMap edits need --watch-config: {args:?}");
}

/// The real binary accepts the ConfigMap's config (`check-config` exits 0) — and refuses a
/// broken copy of it (exit 64), so the check is not vacuous.
#[test]
fn kubernetes_config_passes_check_config() {
    let text = k8s_config(&k8s());
    let dir = tempfile::tempdir().unwrap();
    let good = dir.path().join("consentgate.toml");
    std::fs::write(&good, &text).unwrap();
    run_ok(Command::new(BIN).arg("check-config").arg(&good));
    let bad = dir.path().join("bad.toml");
    std::fs::write(&bad, text.replace("regime = \"opt-in\"", "regime = \"opt-maybe\"")).unwrap();
    let out = run(Command::new(BIN).arg("check-config").arg(&bad));
    assert_eq!(out.status.code(), Some(64), "{}", String::from_utf8_lossy(&out.stderr));
}

/// `deploy/kubernetes/cluster`: N pods with a volume each, Redis with the settings the
/// outbox relies on, the config pointing at that Redis and accepted by `check-config`.
#[test]
fn kubernetes_cluster_runs_several_nodes_on_redis() {
    let dir = format!("{K8S}/cluster");
    let docs = k8s_in(&dir);
    let kust = kind(&docs, "Kustomization");
    for r in kust["resources"].as_array().expect("resources") {
        let r = r.as_str().unwrap();
        assert!(path(&format!("{dir}/{r}")).exists(), "kustomization lists missing {r}");
    }
    let sts: Vec<&Value> = docs.iter().filter(|(_, d)| d["kind"] == "StatefulSet").map(|(_, d)| d).collect();
    let gw = sts.iter().find(|d| d["metadata"]["name"] == "consentgate").expect("consentgate StatefulSet");
    let redis = sts.iter().find(|d| d["metadata"]["name"] == "consentgate-redis").expect("Redis StatefulSet");
    assert!(gw["spec"]["replicas"].as_u64().unwrap() >= 2, "several nodes");
    let pod = &gw["spec"]["template"]["spec"];
    let c = &pod["containers"][0];
    assert_eq!(c["readinessProbe"]["httpGet"]["path"], "/readyz");
    // One volume per pod, holding snapshot and journal.
    let claim = gw["spec"]["volumeClaimTemplates"][0]["metadata"]["name"].as_str().expect("volumeClaimTemplates");
    let state = c["volumeMounts"].as_array().unwrap().iter().find(|m| m["name"] == claim).expect("claim mounted")
        ["mountPath"]
        .as_str()
        .unwrap()
        .to_owned();
    assert!(
        !pod["volumes"].as_array().unwrap().iter().any(|v| v["persistentVolumeClaim"].is_object()),
        "no shared PVC"
    );
    let gov = docs
        .iter()
        .find(|(_, d)| d["kind"] == "Service" && d["metadata"]["name"] == gw["spec"]["serviceName"])
        .expect("governing Service");
    assert_eq!(gov.1["spec"]["clusterIP"], "None");
    // The config: [replication] at the Redis Service, node id left to the pod's host name.
    let cm_name = pod["volumes"].as_array().unwrap().iter().find_map(|v| v["configMap"]["name"].as_str()).unwrap();
    let cm =
        docs.iter().find(|(_, d)| d["kind"] == "ConfigMap" && d["metadata"]["name"] == cm_name).expect("ConfigMap");
    let text = cm.1["data"]["consentgate.toml"].as_str().unwrap();
    assert!(!text.contains("[node]"), "each pod's id must be its own host name");
    let cfg = Config::parse(text).expect("the cluster config parses");
    let r = cfg.replication.as_ref().expect("[replication]");
    let redis_svc = docs
        .iter()
        .find(|(_, d)| d["kind"] == "Service" && d["spec"]["selector"] == redis["spec"]["selector"]["matchLabels"])
        .expect("Redis Service");
    assert_eq!(r.redis.host, redis_svc.1["metadata"]["name"].as_str().unwrap());
    assert_eq!(u64::from(r.redis.port), redis_svc.1["spec"]["ports"][0]["port"].as_u64().unwrap());
    for p in [cfg.consent.snapshot.as_ref().unwrap(), cfg.consent.journal.as_ref().unwrap()] {
        assert!(p.starts_with(&state), "{} not on the pod's volume {state}", p.display());
    }
    // Redis: durable before it answers, never evicting, data on its own volume.
    let rconf = docs
        .iter()
        .find_map(|(_, d)| d["data"]["redis.conf"].as_str().map(str::to_owned))
        .expect("redis.conf ConfigMap");
    for line in ["appendonly yes", "appendfsync always", "maxmemory-policy noeviction"] {
        assert!(rconf.lines().any(|l| l.trim() == line), "redis.conf lacks `{line}`");
    }
    assert!(redis["spec"]["volumeClaimTemplates"][0]["metadata"]["name"].is_string());

    check_drain_and_reload(&dir, pod, &cfg);
    // Evictions (node drains) take one pod at a time; the pods prefer distinct nodes.
    let labels = &gw["spec"]["template"]["metadata"]["labels"];
    let selects = |sel: &Value| {
        let m = sel["matchLabels"].as_object().expect("matchLabels");
        !m.is_empty() && m.iter().all(|(k, v)| labels[k] == *v)
    };
    let pdbs: Vec<&Value> = docs.iter().filter(|(_, d)| d["kind"] == "PodDisruptionBudget").map(|(_, d)| d).collect();
    let pdb = pdbs.iter().find(|p| selects(&p["spec"]["selector"])).expect("a PodDisruptionBudget selecting the pods");
    assert_eq!(pdb["apiVersion"], "policy/v1");
    assert_eq!(pdb["spec"]["maxUnavailable"], 1, "{pdb}");
    assert!(pdb["spec"]["minAvailable"].is_null(), "maxUnavailable or minAvailable, not both: {pdb}");
    let anti = pod["affinity"]["podAntiAffinity"]["preferredDuringSchedulingIgnoredDuringExecution"]
        .as_array()
        .expect("preferred pod anti-affinity");
    assert!(
        anti.iter().any(|t| t["podAffinityTerm"]["topologyKey"] == "kubernetes.io/hostname"
            && selects(&t["podAffinityTerm"]["labelSelector"])
            && t["weight"].as_u64().is_some_and(|w| (1..=100).contains(&w))),
        "no anti-affinity by kubernetes.io/hostname on the pods' labels: {anti:?}"
    );
    for t in pod["topologySpreadConstraints"].as_array().into_iter().flatten() {
        assert!(selects(&t["labelSelector"]), "topology spread on other pods: {t}");
        assert_eq!(t["whenUnsatisfiable"], "ScheduleAnyway", "a hard spread can leave pods pending: {t}");
    }
    let good = tempfile::tempdir().unwrap();
    let f = good.path().join("c.toml");
    std::fs::write(&f, text).unwrap();
    run_ok(Command::new(BIN).arg("check-config").arg(&f));
}

// ---- systemd ---------------------------------------------------------------------------

fn unit_values(unit: &str, key: &str) -> Vec<String> {
    unit.lines().filter_map(|l| l.strip_prefix(&format!("{key}="))).map(str::to_owned).collect()
}

#[test]
fn systemd_unit_has_the_lifecycle_and_hardening() {
    let unit = read(UNIT);
    let one = |k: &str| {
        let v = unit_values(&unit, k);
        assert_eq!(v.len(), 1, "{k}= should appear once: {v:?}");
        v[0].clone()
    };
    assert_eq!(one("ExecStartPre"), "/usr/bin/consentgate check-config /etc/consentgate/consentgate.toml");
    assert!(one("ExecStart").ends_with(" run --config /etc/consentgate/consentgate.toml"));
    assert_eq!(one("ExecReload"), "/bin/kill -HUP $MAINPID");
    assert_eq!(one("KillSignal"), "SIGTERM");
    assert_eq!(one("Restart"), "on-failure");
    assert_eq!(one("User"), "consentgate");
    assert_eq!(one("StateDirectory"), "consentgate");
    assert_eq!(one("CapabilityBoundingSet"), "");
    assert_eq!(one("RestrictAddressFamilies"), "AF_INET AF_INET6 AF_UNIX");
    assert_eq!(one("ProtectSystem"), "strict");
    let stop = one("TimeoutStopSec");
    let stop: u64 = stop.strip_suffix('s').unwrap_or(&stop).parse().expect("TimeoutStopSec in seconds");
    let grace = Config::parse(&read("config/consentgate.example.toml")).unwrap().session.shutdown_grace;
    assert!(Duration::from_secs(stop) > grace + Duration::from_secs(5), "TimeoutStopSec {stop}s vs grace {grace:?}");
    for k in [
        "NoNewPrivileges",
        "ProtectHome",
        "PrivateTmp",
        "PrivateDevices",
        "ProtectKernelTunables",
        "ProtectKernelModules",
        "ProtectKernelLogs",
        "ProtectControlGroups",
        "MemoryDenyWriteExecute",
        "LockPersonality",
        "RestrictNamespaces",
    ] {
        assert_eq!(one(k), "yes", "{k}");
    }
    assert!(unit_values(&unit, "SystemCallFilter").contains(&"@system-service".to_owned()));
    assert!(one("LimitNOFILE").parse::<u64>().unwrap() >= 20_000);
    let rw = one("ReadWritePaths");
    assert!(rw.contains("/var/lib/consentgate") && rw.contains("/var/log/consentgate"), "{rw}");
    // The header's drain example (drain, then --cancel) is a command the binary takes: at a
    // closed port it reports the admin API unreachable (69), not bad usage (64).
    let examples: Vec<Vec<&str>> = unit
        .lines()
        .filter_map(|l| {
            l.split_once("exec consentgate drain").map(|(_, r)| r.trim_end_matches('\'').split_whitespace().collect())
        })
        .collect();
    assert_eq!(examples.len(), 2, "the header shows drain and drain --cancel: {examples:?}");
    assert!(examples[1].contains(&"--cancel"), "{examples:?}");
    let closed = std::net::TcpListener::bind("127.0.0.1:0").unwrap().local_addr().unwrap().to_string();
    for args in examples {
        let out = run(Command::new(BIN)
            .arg("drain")
            .args(&args)
            .args(["--admin", &closed])
            .env("CONSENTGATE_ADMIN_TOKEN", "deploy-test-token-0123"));
        assert_eq!(out.status.code(), Some(69), "drain {args:?}: {}", String::from_utf8_lossy(&out.stderr));
    }
}

/// `systemd-analyze verify` with the binary path pointed at the built binary: no unknown
/// keys, no bad values, executables present. Skipped (with a notice) without systemd.
#[test]
fn systemd_analyze_verify_accepts_the_unit() {
    let Some(analyze) = which("systemd-analyze") else {
        eprintln!("NOTICE: skipping: systemd-analyze is not installed");
        return;
    };
    let dir = tempfile::tempdir().unwrap();
    let unit = dir.path().join("consentgate.service");
    std::fs::write(&unit, read(UNIT).replace("/usr/bin/consentgate", BIN)).unwrap();
    let out = run(Command::new(&analyze).arg("verify").arg(&unit));
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(out.status.success() && stderr.trim().is_empty(), "systemd-analyze verify ({}):\n{stderr}", out.status);
    // The same tool reports a misspelt key, so a clean run means something.
    let typo = dir.path().join("typo.service");
    std::fs::write(
        &typo,
        read(UNIT).replace("/usr/bin/consentgate", BIN).replace("LockPersonality=", "LockPersonalty="),
    )
    .unwrap();
    let out = run(Command::new(&analyze).arg("verify").arg(&typo));
    assert!(String::from_utf8_lossy(&out.stderr).contains("LockPersonalty"), "verify did not flag a misspelt key");
}

// ---- container -------------------------------------------------------------------------

/// The image is the Debian package's stripped binary on an empty base (scripts/package
/// assembles target/image/rootfs and runs the binary in it under chroot): no build stage, no
/// shell, a non-root user, the listeners' ports, the run command.
#[test]
fn dockerfile_shape() {
    let df = read("deploy/Dockerfile");
    let from: Vec<&str> = df.lines().filter(|l| l.starts_with("FROM ")).collect();
    assert_eq!(from, ["FROM scratch"], "one stage, empty base");
    assert!(df.contains("\nCOPY target/image/rootfs/ /\n"), "the root filesystem scripts/package assembles");
    let package = read("scripts/package");
    assert!(
        package.contains("target/image") && package.contains("chroot"),
        "scripts/package assembles and runs the image root"
    );
    let user = df.lines().filter_map(|l| l.strip_prefix("USER ")).next_back().expect("USER");
    assert!(!user.starts_with("root") && !user.starts_with('0'), "runs as {user}");
    assert!(df.contains("\nEXPOSE 2775 9775\n"));
    assert!(df.contains("\nENTRYPOINT [\"/usr/bin/consentgate\"]\n"));
    assert!(df.contains("\nCMD [\"run\", \"--config\", \"/etc/consentgate/consentgate.toml\"]\n"));
    let ignore = read(".dockerignore");
    let lines: Vec<&str> = ignore.lines().map(str::trim).filter(|l| !l.starts_with('#') && !l.is_empty()).collect();
    assert_eq!(lines, ["*", "!target/image/"], "the build context is the image root only");
}
