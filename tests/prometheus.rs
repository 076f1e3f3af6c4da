//! A real Prometheus server (Debian's `prometheus`, as in production) scrapes the admin
//! listener of a real gateway that relayed accepted and rejected traffic: the counters it
//! stores must equal what was sent; it loads `deploy/prometheus/consentgate-rules.yml` and
//! evaluates every rule without error; every expression of the Grafana dashboard runs on it;
//! `promtool check metrics` accepts the exposition of `/metrics`; and the process metrics
//! (`process_*`, read from /proc) reach Prometheus with plausible values.
//!
//! Without `prometheus`/`promtool` on PATH the test prints a notice and returns, except
//! under CI, where it fails (`.ci/run` installs them).

mod common;
mod tools;

use std::collections::BTreeMap;
use std::io::Write;
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::Duration;

use common::{sim_cfg, submit_to, Esme, Kill};
use consentgate::admin::request;
use consentgate::config::Config;
use consentgate::consent::snapshot::{build, BuildOptions};
use consentgate::smpp::{self, cmd};
use consentgate::Gateway;
use serde_json::Value;
use tokio::sync::oneshot;

const GRANTED: &str = "8613800000001";
const DNC: &str = "8613800000002";
const UNKNOWN: &str = "8613800000003";
/// submit_sm sent per destination, and the (verdict, reason, command_status) each must get.
const TRAFFIC: &[(&str, u32, &str, &str, u32)] = &[
    (GRANTED, 30, "accepted", "none", 0),
    (DNC, 20, "rejected", "dnc", 0x402),
    (UNKNOWN, 10, "rejected", "no_consent", 0x400),
];
/// Bound on every wait for Prometheus (start, scrape, rule evaluation).
const PROM_WAIT: Duration = Duration::from_secs(30);

fn build_snapshot(dir: &Path) -> PathBuf {
    let (dnc, consent, out) = (dir.join("dnc.csv"), dir.join("consent.csv"), dir.join("consent.snap"));
    std::fs::write(&dnc, format!("msisdn,registered_at\n{DNC},2026-01-01\n")).unwrap();
    std::fs::write(&consent, format!("msisdn,entity,action,at\n{GRANTED},acme-retail,grant,2026-01-01\n")).unwrap();
    build(&BuildOptions { dnc: Some(dnc), consent: Some(consent), out: out.clone(), ..Default::default() }, |_| {})
        .expect("build snapshot");
    out
}

/// A Prometheus server process (killed and reaped on drop) and its HTTP address.
struct Prometheus {
    addr: SocketAddr,
    log: PathBuf,
    _proc: Kill,
}

impl Prometheus {
    /// Starts `prometheus` scraping `target` every second with the project's rule file, and
    /// waits until it answers `/-/ready`. Retries on another port if the chosen one was taken
    /// between probing and binding.
    async fn start(bin: &Path, dir: &Path, target: SocketAddr) -> Prometheus {
        let rules = tools::path("deploy/prometheus/consentgate-rules.yml");
        let config = dir.join("prometheus.yml");
        std::fs::write(
            &config,
            format!(
                "global:\n  scrape_interval: 1s\n  scrape_timeout: 1s\n  evaluation_interval: 1s\n\
                 rule_files:\n  - {rules}\n\
                 scrape_configs:\n  - job_name: consentgate\n    static_configs:\n      - targets: [\"{target}\"]\n",
                rules = rules.display()
            ),
        )
        .unwrap();
        let mut last_log = String::new();
        for attempt in 0..3 {
            let port = std::net::TcpListener::bind("127.0.0.1:0").unwrap().local_addr().unwrap().port();
            let addr: SocketAddr = ([127, 0, 0, 1], port).into();
            let log = dir.join(format!("prometheus-{attempt}.log"));
            let child = Command::new(bin)
                .arg(format!("--config.file={}", config.display()))
                .arg(format!("--storage.tsdb.path={}", dir.join(format!("data-{attempt}")).display()))
                .arg(format!("--web.listen-address={addr}"))
                .stdout(Stdio::null())
                .stderr(std::fs::File::create(&log).unwrap())
                .spawn()
                .unwrap_or_else(|e| panic!("start {}: {e}", bin.display()));
            let mut proc = Kill(child);
            let deadline = tokio::time::Instant::now() + PROM_WAIT;
            while tokio::time::Instant::now() < deadline {
                if let Ok((200, _)) = request(addr, "GET", "/-/ready", None, None).await {
                    return Prometheus { addr, log, _proc: proc };
                }
                if proc.0.try_wait().unwrap().is_some() {
                    break; // exited (port taken?): try again
                }
                tokio::time::sleep(Duration::from_millis(100)).await;
            }
            last_log = std::fs::read_to_string(&log).unwrap_or_default();
        }
        panic!("prometheus did not become ready within {PROM_WAIT:?}:\n{last_log}");
    }

    fn log(&self) -> String {
        std::fs::read_to_string(&self.log).unwrap_or_default()
    }

    /// `GET /api/v1/<endpoint>?query=<q>`: the `data` of a successful answer, or the error.
    async fn api(&self, endpoint: &str, query: Option<&str>) -> Result<Value, String> {
        let path = match query {
            Some(q) => format!("/api/v1/{endpoint}?query={}", tools::url_encode(q)),
            None => format!("/api/v1/{endpoint}"),
        };
        let (code, body) = request(self.addr, "GET", &path, None, None).await.map_err(|e| e.to_string())?;
        let v: Value = serde_json::from_str(&body).map_err(|e| format!("{code} {e}: {body}"))?;
        if code == 200 && v["status"] == "success" {
            Ok(v["data"].clone())
        } else {
            Err(format!("{code}: {body}"))
        }
    }

    /// Polls `check` over the query's result vector until it returns true (≤ PROM_WAIT).
    async fn wait_for(&self, query: &str, mut check: impl FnMut(&[Value]) -> bool) -> Vec<Value> {
        let deadline = tokio::time::Instant::now() + PROM_WAIT;
        let mut last = Err("no answer yet".to_owned());
        while tokio::time::Instant::now() < deadline {
            last = self.api("query", Some(query)).await;
            if let Ok(data) = &last {
                let result = data["result"].as_array().cloned().unwrap_or_default();
                if check(&result) {
                    return result;
                }
            }
            tokio::time::sleep(Duration::from_millis(250)).await;
        }
        panic!("`{query}` did not reach the expected value within {PROM_WAIT:?}; last answer: {last:?}\nprometheus log:\n{}", self.log());
    }
}

/// `{(verdict, reason): value}` of a `consentgate_submit_total` query result.
fn by_verdict(result: &[Value]) -> BTreeMap<(String, String), f64> {
    result
        .iter()
        .map(|s| {
            let m = &s["metric"];
            let v: f64 = s["value"][1].as_str().and_then(|v| v.parse().ok()).unwrap_or(f64::NAN);
            ((m["verdict"].as_str().unwrap_or("").to_owned(), m["reason"].as_str().unwrap_or("").to_owned()), v)
        })
        .collect()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn real_prometheus_scrapes_the_gateway() {
    let Some(prometheus_bin) = tools::prometheus_tool("prometheus") else { return };
    let Some(promtool) = tools::prometheus_tool("promtool") else { return };

    // SMSC simulator + gateway (admin on an ephemeral loopback port) with an opt-in snapshot.
    let dir = tempfile::tempdir().unwrap();
    let snap = build_snapshot(dir.path());
    let sim = consentgate::sim::start(sim_cfg()).await.expect("sim");
    let consent = format!("snapshot = \"{}\"\njournal = \"{}\"", snap.display(), dir.path().join("journal").display());
    let cfg = Config::parse(
        &common::consent_conf("127.0.0.1:0".parse().unwrap(), sim.local_addr, "regime = \"opt-in\"", &consent).text(),
    )
    .expect("config");
    let gw = Gateway::bind(cfg).await.expect("gateway");
    let (smpp_addr, admin) = (gw.local_addr(), gw.admin_addr());
    let (stop, stop_rx) = oneshot::channel::<()>();
    let gw_task = tokio::spawn(gw.serve(async {
        let _ = stop_rx.await;
    }));

    // Traffic: every submit_sm answered with the status its verdict implies.
    let mut esme = Esme::bound(smpp_addr, "acme").await;
    for &(dest, n, verdict, reason, status) in TRAFFIC {
        for _ in 0..n {
            let seq = esme.submit(&submit_to(dest)).await;
            let resp =
                esme.recv_where(|f| smpp::command_id(f) == cmd::SUBMIT_SM_RESP && smpp::sequence(f) == seq).await;
            assert_eq!(smpp::command_status(&resp), status, "{dest} ({verdict}/{reason})");
        }
    }
    // /readyz sets consentgate_upstream_reachable.
    let (code, body) = request(admin, "GET", "/readyz", None, None).await.expect("readyz");
    assert_eq!(code, 200, "{body}");

    // promtool lints the exposition (it reads stdin).
    // Sessions publish their counts every 100 ms: wait (bounded) for this traffic to show.
    let mut exposition = String::new();
    for _ in 0..50 {
        let (code, body) = request(admin, "GET", "/metrics", None, None).await.expect("scrape");
        assert_eq!(code, 200);
        exposition = body;
        if exposition.contains("consentgate_submit_total") {
            break;
        }
        tokio::time::sleep(std::time::Duration::from_millis(100)).await;
    }
    assert!(exposition.contains("consentgate_submit_total"), "{exposition}");
    for family in ["process_cpu_seconds_total counter", "process_open_fds gauge", "process_start_time_seconds gauge"] {
        assert!(exposition.contains(&format!("\n# TYPE {family}\n")), "no `# TYPE {family}`:\n{exposition}");
    }
    let mut lint = Command::new(&promtool)
        .args(["check", "metrics"])
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("promtool");
    lint.stdin.take().unwrap().write_all(exposition.as_bytes()).unwrap();
    let lint = lint.wait_with_output().unwrap();
    assert!(
        lint.status.success(),
        "promtool check metrics ({}):\n{}{}\n--- exposition ---\n{exposition}",
        lint.status,
        String::from_utf8_lossy(&lint.stdout),
        String::from_utf8_lossy(&lint.stderr)
    );

    // A real Prometheus scrapes it every second.
    let prom = Prometheus::start(&prometheus_bin, dir.path(), admin).await;
    let want: BTreeMap<(String, String), f64> =
        TRAFFIC.iter().map(|&(_, n, v, r, _)| ((v.to_owned(), r.to_owned()), f64::from(n))).collect();
    let result = prom
        .wait_for(r#"consentgate_submit_total{job="consentgate", account="acme"}"#, |r| by_verdict(r) == want)
        .await;
    for s in &result {
        assert_eq!(s["metric"]["instance"], admin.to_string(), "{s}");
    }
    prom.wait_for(r#"sum(consentgate_sessions{job="consentgate", side="esme"})"#, |r| {
        r.first().is_some_and(|s| s["value"][1] == "1")
    })
    .await;
    prom.wait_for(r#"consentgate_upstream_reachable{job="consentgate"}"#, |r| {
        r.first().is_some_and(|s| s["value"][1] == "1")
    })
    .await;
    prom.wait_for(r#"consentgate_build_info{job="consentgate"}"#, |r| {
        r.len() == 1 && r[0]["metric"]["version"] == env!("CARGO_PKG_VERSION")
    })
    .await;
    prom.wait_for(r#"consentgate_snapshot_records{job="consentgate", kind="dnc"}"#, |r| {
        r.first().is_some_and(|s| s["value"][1] == "1")
    })
    .await;
    // The process metrics (this test process: the gateway runs in it), each a plausible value.
    for q in [
        r#"process_open_fds{job="consentgate"} > 0 and process_open_fds < process_max_fds"#,
        r#"process_resident_memory_bytes{job="consentgate"} > 1024 * 1024"#,
        r#"process_virtual_memory_bytes{job="consentgate"} >= process_resident_memory_bytes"#,
        r#"time() - process_start_time_seconds{job="consentgate"} < 600 and time() - process_start_time_seconds > 0"#,
        r#"rate(process_cpu_seconds_total{job="consentgate"}[10s]) > 0"#,
    ] {
        prom.wait_for(q, |r| r.len() == 1).await;
    }

    // Every rule of the shipped rule file loads and evaluates without error.
    let deadline = tokio::time::Instant::now() + PROM_WAIT;
    let rules = loop {
        let data = prom.api("rules", None).await.expect("/api/v1/rules");
        let rules: Vec<Value> = data["groups"]
            .as_array()
            .into_iter()
            .flatten()
            .flat_map(|g| g["rules"].as_array().cloned().unwrap_or_default())
            .collect();
        if !rules.is_empty() && rules.iter().all(|r| r["health"] == "ok") {
            break rules;
        }
        let bad: Vec<_> = rules.iter().filter(|r| r["health"] == "err").collect();
        assert!(bad.is_empty(), "rules failing in Prometheus: {bad:#?}");
        assert!(tokio::time::Instant::now() < deadline, "rules not all evaluated within {PROM_WAIT:?}: {rules:#?}");
        tokio::time::sleep(Duration::from_millis(250)).await;
    };
    let file_rules = tools::read("deploy/prometheus/consentgate-rules.yml");
    let declared = file_rules
        .lines()
        .filter(|l| l.trim_start().starts_with("- alert: ") || l.trim_start().starts_with("- record: "))
        .count();
    assert_eq!(rules.len(), declared, "Prometheus loaded {} rules, the file declares {declared}", rules.len());

    // Every dashboard expression runs (variables as Grafana would substitute them for "All").
    let dashboard: Value = serde_json::from_str(&tools::read("deploy/grafana/consentgate-dashboard.json")).unwrap();
    let mut exprs = Vec::new();
    for p in dashboard["panels"].as_array().unwrap() {
        for t in p["targets"].as_array().into_iter().flatten() {
            exprs.push((p["title"].as_str().unwrap().to_owned(), t["expr"].as_str().unwrap().to_owned()));
        }
    }
    assert!(exprs.len() >= 15, "{exprs:?}");
    let substitute = |e: &str| {
        e.replace("$__rate_interval", "1m")
            .replace("$job", "consentgate")
            .replace("$instance", ".*")
            .replace("$account", ".*")
    };
    for (title, e) in &exprs {
        let q = substitute(e);
        if let Err(err) = prom.api("query", Some(&q)).await {
            panic!("dashboard panel {title:?}: `{q}` fails on Prometheus: {err}");
        }
    }
    // ... and the traffic shows up in the verdict panel once two scrapes cover it.
    let verdicts = exprs.iter().find(|(t, _)| t == "Throughput by verdict").expect("verdict panel").1.clone();
    prom.wait_for(&substitute(&verdicts), |r| {
        let got: Vec<&str> = r.iter().filter_map(|s| s["metric"]["verdict"].as_str()).collect();
        got.contains(&"accepted") && got.contains(&"rejected")
    })
    .await;

    drop(prom);
    let _ = stop.send(());
    tokio::time::timeout(Duration::from_secs(20), gw_task).await.expect("gateway stops").unwrap().unwrap();
    sim.shutdown().await;
}
