//! The admin HTTP API and /metrics against a real gateway on loopback, with the project's
//! SMSC simulator upstream, a real snapshot file, a real journal and a raw ESME client.

mod common;

use std::net::SocketAddr;
use std::path::{Path, PathBuf};

use common::conf::{AccountConf, GwConf};
use common::node::free_addr;
use common::{sim_cfg, submit_to, Esme};
use consentgate::admin::request;
use consentgate::config::Config;
use consentgate::consent::snapshot::{build, BuildOptions};
use consentgate::Gateway;
use serde_json::Value;
use tokio::sync::oneshot;

const TOKEN: &str = "s3cret-admin-token-0123456789";
const GRANTED: &str = "8613800000001";
const DNC: &str = "8613800000002";

fn build_snapshot(dir: &Path, out: &Path, extra_grant: Option<&str>) {
    let dnc = dir.join("dnc.csv");
    let consent = dir.join("consent.csv");
    std::fs::write(&dnc, format!("msisdn,registered_at\n{DNC},2026-01-01\n")).unwrap();
    let mut rows = format!("msisdn,entity,action,at\n{GRANTED},acme-retail,grant,2026-01-01\n");
    if let Some(m) = extra_grant {
        rows.push_str(&format!("{m},acme-retail,grant,2026-01-01\n"));
    }
    std::fs::write(&consent, rows).unwrap();
    build(&BuildOptions { dnc: Some(dnc), consent: Some(consent), out: out.to_owned(), ..Default::default() }, |_| {})
        .expect("build snapshot");
}

struct Stack {
    _dir: tempfile::TempDir,
    snap: PathBuf,
    sim: consentgate::sim::SimHandle,
    smpp: SocketAddr,
    admin: SocketAddr,
    stop: Option<oneshot::Sender<()>>,
    task: tokio::task::JoinHandle<std::io::Result<()>>,
}

impl Stack {
    /// A gateway with a snapshot, a journal and (if `with_token`) an admin token file.
    async fn start(with_token: bool) -> Stack {
        let dir = tempfile::tempdir().unwrap();
        let snap = dir.path().join("consent.snap");
        build_snapshot(dir.path(), &snap, None);
        let token_file = dir.path().join("admin.token");
        std::fs::write(&token_file, format!("{TOKEN}\n")).unwrap();
        let sim = consentgate::sim::start(sim_cfg()).await.expect("sim");
        let admin_line = if with_token {
            format!("token_file = \"{}\"", token_file.display())
        } else {
            "token_env = \"CONSENTGATE_TEST_TOKEN_THAT_IS_NOT_SET\"".to_owned()
        };
        let consent =
            format!("snapshot = \"{}\"\njournal = \"{}\"", snap.display(), dir.path().join("journal").display());
        let conf = common::consent_conf("127.0.0.1:0".parse().unwrap(), sim.local_addr, "", &consent);
        let cfg = Config::parse(&conf.set("admin", &admin_line).text()).expect("config");
        let g = Gateway::bind(cfg).await.expect("gateway");
        let (smpp, admin) = (g.local_addr(), g.admin_addr());
        let (stop, rx) = oneshot::channel();
        let task = tokio::spawn(g.serve(async {
            let _ = rx.await;
        }));
        Stack { _dir: dir, snap, sim, smpp, admin, stop: Some(stop), task }
    }

    async fn get(&self, path: &str) -> (u16, Value) {
        let (code, body) = request(self.admin, "GET", path, None, None).await.expect("GET");
        (code, serde_json::from_str(&body).unwrap_or(Value::String(body)))
    }

    async fn send(&self, method: &str, path: &str, token: Option<&str>, body: Option<&str>) -> (u16, Value) {
        let (code, body) = request(self.admin, method, path, token, body).await.expect("request");
        (code, serde_json::from_str(&body).unwrap_or(Value::String(body)))
    }

    async fn metrics(&self) -> String {
        let (code, body) = request(self.admin, "GET", "/metrics", None, None).await.expect("scrape");
        assert_eq!(code, 200);
        body
    }

    async fn stop(mut self) {
        let _ = self.stop.take().unwrap().send(());
        let _ = tokio::time::timeout(common::WAIT * 3, self.task).await;
        self.sim.shutdown().await;
    }
}

/// The value of one sample line `name{labels} value` in a Prometheus exposition.
fn sample(body: &str, prefix: &str) -> Option<f64> {
    body.lines().find(|l| l.starts_with(prefix)).and_then(|l| l.rsplit(' ').next()).and_then(|v| v.parse().ok())
}

#[tokio::test]
async fn health_and_snapshot_info() {
    let s = Stack::start(true).await;
    let (code, body) = s.get("/livez").await;
    assert_eq!((code, body), (200, Value::String("ok\n".into())));
    let (code, body) = s.get("/readyz").await;
    assert_eq!(code, 200, "{body}");
    assert_eq!(body["ready"], true);
    let (code, body) = s.get("/v1/snapshot").await;
    assert_eq!(code, 200, "{body}");
    assert_eq!(body["snapshot"]["counts"]["dnc"], 1);
    assert_eq!(body["snapshot"]["counts"]["pairs"], 1);
    assert_eq!(body["snapshot"]["path"], s.snap.display().to_string());
    assert!(body["snapshot"]["sources"]["dnc_sha256"].as_str().is_some_and(|h| h.len() == 64), "{body}");
    let (code, body) = s.get("/nope").await;
    assert_eq!((code, body["error"].as_str()), (404, Some("not_found")));
    // The SMSC goes away: not ready, and the JSON says why.
    let s = {
        let Stack { _dir, snap, sim, smpp, admin, stop, task } = s;
        sim.shutdown().await;
        let (code, body) = request(admin, "GET", "/readyz", None, None).await.unwrap();
        assert_eq!(code, 503, "{body}");
        let body: Value = serde_json::from_str(&body).unwrap();
        assert_eq!(body["upstream"]["ok"], false);
        assert_eq!(body["snapshot"]["ok"], true);
        let sim = consentgate::sim::start(sim_cfg()).await.unwrap();
        Stack { _dir, snap, sim, smpp, admin, stop, task }
    };
    s.stop().await;
}

#[tokio::test]
async fn mutating_endpoints_need_the_token() {
    let s = Stack::start(true).await;
    let revoke = format!(r#"{{"msisdn":"+{GRANTED}","kind":"revoke","entity":"acme-retail"}}"#);
    for (method, path, body) in [
        ("POST", "/v1/snapshot/reload", None),
        ("POST", "/v1/consent", Some(revoke.as_str())),
        ("PUT", "/v1/log-level", Some(r#"{"filter":"debug"}"#)),
    ] {
        let (code, resp) = s.send(method, path, None, body).await;
        assert_eq!((code, resp["error"].as_str()), (401, Some("unauthorized")), "{method} {path}");
        let (code, resp) = s.send(method, path, Some("wrong-token-wrong-token"), body).await;
        assert_eq!((code, resp["error"].as_str()), (401, Some("invalid_token")), "{method} {path}");
    }
    // Nothing changed: the subscriber is still granted.
    let (_, body) = s.get(&format!("/v1/consent/{GRANTED}?entity=acme-retail")).await;
    assert_eq!(body["decision"]["verdict"], "accepted", "{body}");
    s.stop().await;

    // Without a configured token the mutating endpoints are off.
    let s = Stack::start(false).await;
    let (code, resp) = s.send("POST", "/v1/snapshot/reload", Some(TOKEN), None).await;
    assert_eq!((code, resp["error"].as_str()), (403, Some("admin_token_not_configured")), "{resp}");
    s.stop().await;
}

#[tokio::test]
async fn reload_success_and_exact_failure() {
    let s = Stack::start(true).await;
    let (_, before) = s.get("/v1/snapshot").await;
    let old_id = before["snapshot"]["id"].as_str().unwrap().to_owned();

    // A new file with one more grant: reload answers with it.
    let tmp = s.snap.with_extension("new");
    build_snapshot(s.snap.parent().unwrap(), &tmp, Some("8613800000009"));
    std::fs::rename(&tmp, &s.snap).unwrap();
    let (code, body) = s.send("POST", "/v1/snapshot/reload", Some(TOKEN), None).await;
    assert_eq!(code, 200, "{body}");
    assert_eq!(body["snapshot"]["counts"]["pairs"], 2);
    let new_id = body["snapshot"]["id"].as_str().unwrap().to_owned();
    assert_ne!(new_id, old_id);

    // A truncated file: 422 naming the file; the previous snapshot keeps serving.
    let bytes = std::fs::read(&s.snap).unwrap();
    std::fs::write(&s.snap, &bytes[..bytes.len() / 2]).unwrap();
    let (code, body) = s.send("POST", "/v1/snapshot/reload", Some(TOKEN), None).await;
    assert_eq!(code, 422, "{body}");
    assert_eq!(body["error"], "snapshot_invalid");
    assert!(body["message"].as_str().unwrap().contains("consent.snap"), "{body}");
    let (_, now) = s.get("/v1/snapshot").await;
    assert_eq!(now["snapshot"]["id"], new_id.as_str());
    let m = s.metrics().await;
    assert_eq!(sample(&m, "consentgate_snapshot_reloads_total{result=\"ok\"}"), Some(1.0), "{m}");
    assert_eq!(sample(&m, "consentgate_snapshot_reloads_total{result=\"refused\"}"), Some(1.0), "{m}");
    assert_eq!(sample(&m, "consentgate_snapshot_records{kind=\"pair\"}"), Some(2.0), "{m}");
    s.stop().await;
}

#[tokio::test]
async fn lookup_then_posted_revoke_rejects_the_next_submit() {
    let s = Stack::start(true).await;
    let (code, body) = s.get(&format!("/v1/consent/+{GRANTED}?entity=acme-retail")).await;
    assert_eq!(code, 200, "{body}");
    assert_eq!(body["msisdn"], GRANTED);
    assert_eq!(body["snapshot"]["pairs"][0]["state"], "grant", "{body}");
    assert_eq!(body["decision"]["standing"], "granted");
    assert_eq!(body["decision"]["verdict"], "accepted");
    let (_, body) = s.get(&format!("/v1/consent/{DNC}?entity=acme-retail")).await;
    assert_eq!(
        (body["decision"]["reason"].as_str(), body["decision"]["command_status"].as_str()),
        (Some("dnc"), Some("0x00000402"))
    );
    let (code, body) = s.get("/v1/consent/not-a-number").await;
    assert_eq!((code, body["error"].as_str()), (400, Some("invalid_msisdn")));

    let mut esme = Esme::bound(s.smpp, "acme").await;
    let status = |f: &[u8]| consentgate::smpp::command_status(f);
    esme.submit(&submit_to(GRANTED)).await;
    let r = esme.recv().await.expect("submit_sm_resp");
    assert_eq!(status(&r), 0);

    // Bad statements are refused with a stable code.
    for (body, code_want) in [
        (r#"{"msisdn":"8613800000001","kind":"maybe","entity":"acme-retail"}"#, "invalid_kind"),
        (r#"{"msisdn":"8613800000001","kind":"revoke"}"#, "missing_entity"),
        (r#"{"msisdn":"8613800000001","kind":"dnc","entity":"acme-retail"}"#, "invalid_entity"),
        (r#"{"msisdn":"8613800000001","kind":"revoke","entity":"acme-retail","at":"yesterday"}"#, "invalid_at"),
        (r#"{"msisdn":"8613800000001""#, "invalid_json"),
    ] {
        let (code, resp) = s.send("POST", "/v1/consent", Some(TOKEN), Some(body)).await;
        assert_eq!((code, resp["error"].as_str()), (400, Some(code_want)), "{body}: {resp}");
    }

    let revoke = format!(r#"{{"msisdn":"+{GRANTED}","kind":"revoke","entity":"acme-retail"}}"#);
    let (code, body) = s.send("POST", "/v1/consent", Some(TOKEN), Some(&revoke)).await;
    assert_eq!(code, 201, "{body}");
    assert_eq!(body["durable"], true);
    esme.submit(&submit_to(GRANTED)).await;
    let r = esme.recv().await.expect("submit_sm_resp");
    assert_eq!(status(&r), 0x401, "revoked");
    let (_, body) = s.get(&format!("/v1/consent/{GRANTED}?entity=acme-retail")).await;
    assert_eq!(body["live"]["pair"]["kind"], "revoke", "{body}");
    assert_eq!(body["decision"]["reason"], "revoked");

    // The counters of this traffic, read from a scrape after the sessions' 100 ms flush.
    let mut m = String::new();
    for _ in 0..50 {
        m = s.metrics().await;
        if sample(&m, "consentgate_submit_total{account=\"acme\",verdict=\"rejected\",reason=\"revoked\"}") == Some(1.0)
        {
            break;
        }
        tokio::time::sleep(std::time::Duration::from_millis(100)).await;
    }
    assert_eq!(
        sample(&m, "consentgate_submit_total{account=\"acme\",verdict=\"accepted\",reason=\"none\"}"),
        Some(1.0),
        "{m}"
    );
    assert_eq!(
        sample(&m, "consentgate_submit_total{account=\"acme\",verdict=\"rejected\",reason=\"revoked\"}"),
        Some(1.0),
        "{m}"
    );
    assert_eq!(sample(&m, "consentgate_statements_total{source=\"api\",kind=\"revoke\"}"), Some(1.0), "{m}");
    assert_eq!(sample(&m, "consentgate_sessions{side=\"esme\"}"), Some(1.0), "{m}");
    assert_eq!(sample(&m, "consentgate_binds_total{account=\"acme\",result=\"ok\"}"), Some(1.0), "{m}");
    assert_eq!(sample(&m, "consentgate_pdus_total{direction=\"from_esme\",command=\"submit_sm\"}"), Some(2.0), "{m}");
    assert!(m.contains("consentgate_journal_fsync_duration_seconds_bucket{le="), "{m}");
    s.stop().await;
}

#[tokio::test]
async fn log_level_endpoint_validates_the_filter() {
    let s = Stack::start(true).await;
    let (code, resp) = s.send("PUT", "/v1/log-level", Some(TOKEN), Some(r#"{"filter":"consentgate=[[["}"#)).await;
    assert_eq!((code, resp["error"].as_str()), (400, Some("invalid_filter")), "{resp}");
    let (code, resp) = s.send("PUT", "/v1/log-level", Some(TOKEN), Some(r#"{"level":"debug"}"#)).await;
    assert_eq!((code, resp["error"].as_str()), (400, Some("invalid_json")), "{resp}");
    s.stop().await;
}

/// The real binary: SIGHUP and SIGTERM arrive on the same control channel as the admin API.
/// SIGHUP reloads (seen in /v1/snapshot and the reload counter); SIGTERM drains (the bound
/// ESME is unbound) and the process exits 0.
#[tokio::test]
async fn real_binary_reloads_on_sighup_and_drains_on_sigterm() {
    let dir = tempfile::tempdir().unwrap();
    let snap = dir.path().join("consent.snap");
    build_snapshot(dir.path(), &snap, None);
    let sim = consentgate::sim::start(sim_cfg()).await.expect("sim");
    let (smpp, admin) = (free_addr(), free_addr());
    let conf = dir.path().join("gateway.toml");
    GwConf::new(smpp, admin, sim.local_addr)
        .set("session", "shutdown_grace = \"2s\"")
        .set("consent", &format!("snapshot = \"{}\"", snap.display()))
        .account(AccountConf::marketing("acme").entity("acme-retail").licence("B2-1"))
        .write(&conf);
    let mut child = common::Kill(common::spawn_gateway(&conf));
    let mut up = false;
    for _ in 0..200 {
        if matches!(request(admin, "GET", "/livez", None, None).await, Ok((200, _))) {
            up = true;
            break;
        }
        tokio::time::sleep(std::time::Duration::from_millis(50)).await;
    }
    assert!(up, "admin listener did not come up on {admin}");
    let signal = |sig: &str| {
        let st = std::process::Command::new("kill").args([sig, &child.0.id().to_string()]).status().expect("kill");
        assert!(st.success(), "kill {sig}");
    };

    let tmp = snap.with_extension("new");
    build_snapshot(dir.path(), &tmp, Some("8613800000009"));
    std::fs::rename(&tmp, &snap).unwrap();
    signal("-HUP");
    let mut pairs = Value::Null;
    for _ in 0..100 {
        let (_, body) = request(admin, "GET", "/v1/snapshot", None, None).await.unwrap();
        pairs = serde_json::from_str::<Value>(&body).unwrap()["snapshot"]["counts"]["pairs"].clone();
        if pairs == 2 {
            break;
        }
        tokio::time::sleep(std::time::Duration::from_millis(50)).await;
    }
    assert_eq!(pairs, 2, "SIGHUP reloaded the new file");
    let (_, m) = request(admin, "GET", "/metrics", None, None).await.unwrap();
    assert_eq!(sample(&m, "consentgate_snapshot_reloads_total{result=\"ok\"}"), Some(1.0), "{m}");

    let mut esme = Esme::bound(smpp, "acme").await;
    signal("-TERM");
    let unbind = esme.recv_where(|f| consentgate::smpp::command_id(f) == consentgate::smpp::cmd::UNBIND).await;
    esme.send_header(consentgate::smpp::cmd::UNBIND_RESP, 0, consentgate::smpp::sequence(&unbind)).await;
    let mut exit = None;
    for _ in 0..300 {
        if let Some(st) = child.0.try_wait().unwrap() {
            exit = Some(st);
            break;
        }
        tokio::time::sleep(std::time::Duration::from_millis(50)).await;
    }
    let exit = exit.expect("consentgate exited after SIGTERM");
    assert!(exit.success(), "exit status {exit:?}");
    sim.shutdown().await;
}
