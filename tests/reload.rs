//! Live operation through the real binary: the whole config reloads (SIGHUP,
//! `POST /v1/config/reload`, `--watch-config`) while sessions keep going, a bad edit changes
//! nothing, drain and resume, cap counts across a reload and a restart.

mod common;

use std::net::SocketAddr;

use std::time::{Duration, Instant};

use common::conf::{AccountConf, GwConf};
use common::node::{free_addr, sim, Node};
use common::Esme;
use consentgate::sim::SimConfig;
use consentgate::smpp::{self, cmd, BindType};
use serde_json::Value;

const TOKEN: &str = "reload-test-token";
const CONTENT_BLOCKED: u32 = 0x406;
const THROTTLED: u32 = 0x58;
const FREQUENCY_CAP: u32 = 0x404;
const BIND_INVALID_SYSTEM_ID: u32 = 0x0F;

/// The real `consentgate run` ([`Node`]) on a config the test edits.
struct Live {
    node: Node,
    c: GwConf,
    watch: bool,
}

impl Live {
    fn new(upstream: SocketAddr, f: impl FnOnce(GwConf) -> GwConf) -> Live {
        let dir = tempfile::tempdir().unwrap();
        let c = GwConf::new(free_addr(), free_addr(), upstream)
            .set("session", "window = 1000")
            .set("policy", "default_country_code = \"86\"")
            .set("policy", "regime = \"opt-out\"")
            .set("policy", "on_snapshot_unavailable = \"allow\"")
            .set("consent", &format!("journal = {:?}", dir.path().join("journal").display().to_string()))
            .account(AccountConf::marketing("acme").entity("acme-retail"))
            .account(AccountConf::transactional("bank"));
        let c = f(c);
        Live { node: Node::with_conf(dir, &c), c, watch: false }
    }

    async fn start(&mut self) {
        let args: &[&str] = if self.watch { &["--watch-config"] } else { &[] };
        self.node.start_with(&[("CONSENTGATE_ADMIN_TOKEN", TOKEN)], args).await;
    }

    fn edit(&mut self, f: impl FnOnce(&mut GwConf)) {
        f(&mut self.c);
        self.c.write(&self.node.conf);
    }

    fn signal(&self, sig: &str) {
        self.node.signal(sig);
    }

    async fn stop(&mut self) {
        self.node.stop().await;
    }

    async fn get(&self, path: &str) -> std::io::Result<(u16, String)> {
        self.node.get(path).await
    }

    async fn post(&self, path: &str, body: Option<&str>) -> (u16, Value) {
        let (code, b) = consentgate::admin::request(self.c.admin, "POST", path, Some(TOKEN), body).await.unwrap();
        (code, serde_json::from_str(&b).unwrap_or(Value::Null))
    }

    async fn reload(&self) -> (u16, Value) {
        self.post("/v1/config/reload", None).await
    }

    async fn metric(&self, series: &str) -> Option<f64> {
        self.node.metric(series).await
    }

    async fn status(&self, system_id: &str, b: &consentgate::smpp::pdu::SubmitBuilder) -> u32 {
        let mut e = Esme::bound(self.c.smpp, system_id).await;
        status_of(&mut e, b).await
    }
}

async fn status_of(e: &mut Esme, b: &consentgate::smpp::pdu::SubmitBuilder) -> u32 {
    let seq = e.submit(b).await;
    let r = e.recv_where(|f| smpp::command_id(f) == cmd::SUBMIT_SM_RESP && smpp::sequence(f) == seq).await;
    smpp::command_status(&r)
}

fn text(dest: &str, t: &str) -> consentgate::smpp::pdu::SubmitBuilder {
    consentgate::smpp::pdu::SubmitBuilder::new("1069012345", dest).short_message(t.as_bytes())
}

/// The flagship property: a session of an account that is kept loses nothing across any
/// number of reloads under load — no PDU unanswered, none answered twice, no reconnect —
/// while each reload changes what applies (a content rule added and removed, another
/// account's rate, an account added), alternating SIGHUP and `POST /v1/config/reload`.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_kept_session_loses_nothing_across_reloads_under_load() {
    let sim = sim(SimConfig { listen: "127.0.0.1:0".parse().unwrap(), ..Default::default() }).await;
    let mut gw = Live::new(sim.local_addr, |c| c);
    gw.start().await;
    // The project's load generator: one session, 500 in flight, 30 000 submits a second for
    // 8 s: the 8 reloads (about 4 s) all fall inside it.
    const N: u64 = 240_000;
    let load = tokio::spawn(consentgate::load::run(consentgate::load::LoadConfig {
        target: gw.c.smpp,
        system_id: "acme".into(),
        sessions: 1,
        window: 500,
        count: N,
        rate: Some(30_000),
        duration: Duration::from_secs(120),
        ..Default::default()
    }));
    let mut reloads = 0;
    for i in 0..8 {
        tokio::time::sleep(Duration::from_millis(300)).await;
        gw.edit(|c| {
            if i % 2 == 0 {
                *c = c.clone().rule(&format!("rule{i}"), &["casino"], "reject");
            } else {
                c.rules_mut().clear();
            }
            let bank = c.accounts_mut().iter_mut().find(|a| a.system_id == "bank").unwrap();
            bank.extra = vec![format!("max_tps = {}", 100 + i)];
            if i == 3 {
                c.accounts_mut().push(AccountConf::marketing(&format!("new{i}")));
            }
        });
        if i % 2 == 0 {
            gw.signal("-HUP");
            reloads += 1;
            // SIGHUP answers nobody: wait for the counter.
            let want = f64::from(reloads);
            let deadline = Instant::now() + Duration::from_secs(10);
            while gw.metric("consentgate_config_reloads_total{result=\"ok\"}").await.unwrap_or(0.0) < want {
                assert!(Instant::now() < deadline, "SIGHUP reload not counted");
                tokio::time::sleep(Duration::from_millis(20)).await;
            }
        } else {
            let (code, body) = gw.reload().await;
            assert_eq!(code, 200, "{body}");
            assert!(body["restart_required"].as_array().unwrap().is_empty(), "{body}");
            assert!(body["applied"].as_array().unwrap().iter().any(|k| k == "account.bank.max_tps"), "{body}");
            reloads += 1;
        }
    }
    assert!(!load.is_finished(), "the load ended before the last reload: lengthen it");
    let r = load.await.unwrap().expect("load run");
    // Every submit sent was answered (none pending at the end) and no response came twice
    // (responses count every submit_sm_resp, matched or not); one bind, never refused or lost.
    assert!(r.errors.is_empty(), "{:?}", r.errors);
    assert_eq!((r.bind_failures, r.unanswered), (0, 0), "{r:?}");
    assert_eq!(r.sent, N, "the session stopped early: {r:?}");
    assert_eq!(r.responses, r.sent, "responses {} for {} submits", r.responses, r.sent);
    assert_eq!(r.statuses.get("0x00000000").copied().unwrap_or(0), N, "{:?}", r.statuses);
    println!(
        "RELOAD|{N} submits on one session in {:.2} s ({:.0}/s) across {reloads} reloads: every one answered once, no reconnect",
        r.elapsed_seconds, r.submit_per_second
    );
    assert_eq!(gw.metric("consentgate_config_reloads_total{result=\"ok\"}").await, Some(f64::from(reloads)));
    // The account added by a reload binds.
    let mut e = Esme::connect(gw.c.smpp).await;
    assert_eq!(e.bind(BindType::Transceiver, "new3", "pw").await, 0);
    gw.stop().await;
}

/// Each kind of change, through `POST /v1/config/reload`: an account added binds at once; a
/// content rule, an account's max_tps and an account removed take effect on live sessions;
/// a bad edit changes nothing and answers 422 with every problem; a listen address change
/// is reported as needing a restart while the rest applies; `GET /v1/config` and the
/// metric carry the running config's SHA-256.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn each_kind_of_change_applies_and_a_bad_edit_changes_nothing() {
    let sim = sim(SimConfig { listen: "127.0.0.1:0".parse().unwrap(), ..Default::default() }).await;
    let mut gw = Live::new(sim.local_addr, |c| c);
    gw.start().await;
    let (_, before) = gw.get("/v1/config").await.unwrap();
    let before: Value = serde_json::from_str(&before).unwrap();
    let sha0 = before["sha256"].as_str().unwrap().to_owned();
    assert_eq!(gw.metric(&format!("consentgate_config_info{{sha256=\"{sha0}\"}}")).await, Some(1.0));

    // Unknown before the reload.
    let mut e = Esme::connect(gw.c.smpp).await;
    assert_eq!(e.bind(BindType::Transceiver, "shop", "pw").await, BIND_INVALID_SYSTEM_ID);
    // A session of acme, open across every reload below.
    let mut acme = Esme::bound(gw.c.smpp, "acme").await;
    assert_eq!(status_of(&mut acme, &text("8613800000001", "casino night")).await, 0);

    gw.edit(|c| {
        *c = c.clone().rule("gambling", &["casino"], "reject").account(AccountConf::marketing("shop"));
        let a = c.accounts_mut().iter_mut().find(|a| a.system_id == "acme").unwrap();
        a.extra.push("max_tps = 10".into());
    });
    let (code, r) = gw.reload().await;
    assert_eq!(code, 200, "{r}");
    assert_eq!(r["accounts_added"], serde_json::json!(["shop"]), "{r}");
    assert_eq!(r["accounts_changed"], serde_json::json!(["acme"]), "{r}");
    let sha1 = r["sha256"].as_str().unwrap().to_owned();
    assert_ne!(sha1, sha0);
    assert_eq!(gw.metric(&format!("consentgate_config_info{{sha256=\"{sha1}\"}}")).await, Some(1.0));
    assert_eq!(gw.metric(&format!("consentgate_config_info{{sha256=\"{sha0}\"}}")).await, Some(0.0));
    // The added account binds at once; the live session gets the content rule and the rate.
    let mut e = Esme::connect(gw.c.smpp).await;
    assert_eq!(e.bind(BindType::Transceiver, "shop", "pw").await, 0);
    assert_eq!(status_of(&mut acme, &text("8613800000002", "casino night")).await, CONTENT_BLOCKED);
    let mut seqs = Vec::new();
    for i in 0..100 {
        seqs.push(acme.submit(&text(&format!("86138000001{i:02}"), "hello")).await);
    }
    let mut throttled = 0;
    for _ in 0..100 {
        let r = acme.recv_where(|f| smpp::command_id(f) == cmd::SUBMIT_SM_RESP).await;
        throttled += u32::from(smpp::command_status(&r) == THROTTLED);
    }
    assert!(throttled >= 80, "max_tps = 10 let {} of 100 through", 100 - throttled);
    // Let the rate's bucket refill before the next single submits.
    tokio::time::sleep(Duration::from_millis(1200)).await;

    // A bad edit: an unknown key and a bad value. Nothing changes.
    let good = gw.c.clone();
    gw.edit(|c| {
        c.put("policy", "mode = \"sometimes\"");
        c.put("session", "windw = 3");
    });
    let (code, r) = gw.reload().await;
    assert_eq!(code, 422, "{r}");
    assert_eq!(r["error"], "config_invalid");
    let problems: Vec<String> =
        r["problems"].as_array().unwrap().iter().map(|p| p.as_str().unwrap().to_owned()).collect();
    assert!(problems.iter().any(|p| p.contains("gateway.toml")), "problems name the file: {problems:?}");
    assert_eq!(gw.metric("consentgate_config_reloads_total{result=\"invalid\"}").await, Some(1.0));
    assert_eq!(status_of(&mut acme, &text("8613800000003", "casino")).await, CONTENT_BLOCKED, "old config kept");
    let (_, now) = gw.get("/v1/config").await.unwrap();
    assert_eq!(serde_json::from_str::<Value>(&now).unwrap()["sha256"], sha1.as_str());
    gw.c = good;

    // A listen address: reported, not applied; the rest applies.
    let old_smpp = gw.c.smpp;
    gw.edit(|c| {
        c.smpp = free_addr();
        c.rules_mut().clear();
    });
    let (code, r) = gw.reload().await;
    assert_eq!(code, 200, "{r}");
    assert_eq!(r["restart_required"], serde_json::json!(["listen.smpp"]), "{r}");
    assert_eq!(gw.metric("consentgate_config_restart_required").await, Some(1.0));
    // Still pending at the next reload and in GET /v1/config, until a restart.
    let (_, r) = gw.reload().await;
    assert_eq!(r["restart_required"], serde_json::json!(["listen.smpp"]), "{r}");
    let (_, now) = gw.get("/v1/config").await.unwrap();
    assert_eq!(serde_json::from_str::<Value>(&now).unwrap()["restart_required"], serde_json::json!(["listen.smpp"]));
    gw.c.smpp = old_smpp;
    assert_eq!(status_of(&mut acme, &text("8613800000004", "casino")).await, 0, "rule removal applied");

    // acme removed: its live session is unbound, new binds refused.
    gw.edit(|c| c.accounts_mut().retain(|a| a.system_id != "acme"));
    let (code, r) = gw.reload().await;
    assert_eq!(code, 200, "{r}");
    assert_eq!(r["accounts_removed"], serde_json::json!(["acme"]), "{r}");
    let got_unbind = tokio::time::timeout(Duration::from_secs(10), async {
        loop {
            match acme.recv_within(Duration::from_secs(10)).await {
                Ok(Some(f)) if smpp::command_id(&f) == cmd::UNBIND => return true,
                Ok(Some(_)) => continue,
                _ => return false,
            }
        }
    })
    .await
    .unwrap_or(false);
    assert!(got_unbind, "the removed account's session got no unbind");
    let mut e = Esme::connect(gw.c.smpp).await;
    assert_eq!(e.bind(BindType::Transceiver, "acme", "pw").await, BIND_INVALID_SYSTEM_ID);
    gw.stop().await;
}

/// `POST /v1/drain`: every session unbinds, binds are refused, `/readyz` is 503, the process
/// and its admin API stay up; `{"cancel": true}` takes binds again.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn drain_and_resume() {
    let sim = sim(SimConfig { listen: "127.0.0.1:0".parse().unwrap(), ..Default::default() }).await;
    let mut gw = Live::new(sim.local_addr, |c| c);
    gw.start().await;
    let mut acme = Esme::bound(gw.c.smpp, "acme").await;
    assert_eq!(status_of(&mut acme, &text("8613800000001", "hi")).await, 0);
    let (code, r) = gw.post("/v1/drain", None).await;
    assert_eq!(code, 202, "{r}");
    assert_eq!(r["draining"], true);
    acme.expect_closed().await;
    let (code, _) = gw.get("/readyz").await.unwrap();
    assert_eq!(code, 503);
    let deadline = Instant::now() + Duration::from_secs(10);
    loop {
        let (_, b) = gw.get("/v1/drain").await.unwrap();
        if serde_json::from_str::<Value>(&b).unwrap()["sessions"] == 0 {
            break;
        }
        assert!(Instant::now() < deadline, "sessions left after the drain: {b}");
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    // New connections are closed at once.
    let mut e = Esme::connect(gw.c.smpp).await;
    e.send(&consentgate::smpp::pdu::encode_bind(BindType::Transceiver, 1, "acme", "pw")).await;
    assert!(matches!(e.recv_within(Duration::from_secs(5)).await, Ok(None)), "a bind was served while draining");
    assert_eq!(gw.metric("consentgate_draining").await, Some(1.0));

    let (code, r) = gw.post("/v1/drain", Some(r#"{"cancel": true}"#)).await;
    assert_eq!(code, 200, "{r}");
    assert_eq!(r["draining"], false);
    let mut acme = Esme::bound(gw.c.smpp, "acme").await;
    assert_eq!(status_of(&mut acme, &text("8613800000002", "hi")).await, 0);
    let (code, _) = gw.get("/readyz").await.unwrap();
    assert_eq!(code, 200);
    gw.stop().await;
}

/// Frequency caps count on across a reload (the tables are carried), across SIGTERM and a
/// start (saved at the stop, restored before serving), and a reload that resizes a table
/// says so.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn cap_counts_survive_a_reload_and_a_restart() {
    let sim = sim(SimConfig { listen: "127.0.0.1:0".parse().unwrap(), ..Default::default() }).await;
    let mut gw = Live::new(sim.local_addr, |c| {
        c.set("policy.frequency", "per_entity_per_day = 3").set("policy.frequency", "subscribers = 100000")
    });
    gw.start().await;
    let sub = "8613900000001";
    assert_eq!(gw.status("acme", &text(sub, "one")).await, 0);
    assert_eq!(gw.status("acme", &text(sub, "two")).await, 0);
    gw.edit(|c| c.put("policy", "reassembly_timeout = \"3s\""));
    let (code, r) = gw.reload().await;
    assert_eq!(code, 200, "{r}");
    assert!(r["notes"].as_array().unwrap().is_empty(), "{r}");
    assert_eq!(gw.status("acme", &text(sub, "three")).await, 0);
    assert_eq!(gw.status("acme", &text(sub, "four")).await, FREQUENCY_CAP, "count lost by the reload");
    gw.stop().await;
    assert!(gw.node.dir.path().join("journal/frequency.state").exists(), "no state saved at the stop");
    gw.start().await;
    assert_eq!(gw.status("acme", &text(sub, "five")).await, FREQUENCY_CAP, "count lost by the restart");
    assert_eq!(gw.status("acme", &text("8613900000002", "one")).await, 0);
    // A table resized by a reload starts empty, and the reply says so.
    gw.edit(|c| {
        c.unset("policy.frequency", "subscribers");
        c.put("policy.frequency", "subscribers = 200000");
    });
    let (code, r) = gw.reload().await;
    assert_eq!(code, 200, "{r}");
    assert!(r["notes"].to_string().contains("day counts"), "{r}");
    gw.stop().await;
}

/// `run --watch-config`: an edited file is reloaded without a signal or a request.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn watch_config_reloads_an_edited_file() {
    let sim = sim(SimConfig { listen: "127.0.0.1:0".parse().unwrap(), ..Default::default() }).await;
    let mut gw = Live::new(sim.local_addr, |c| c);
    gw.watch = true;
    gw.start().await;
    gw.edit(|c| c.accounts_mut().push(AccountConf::marketing("late")));
    let t0 = Instant::now();
    loop {
        let n = gw.metric("consentgate_config_reloads_total{result=\"ok\"}").await.unwrap_or(0.0);
        if n >= 1.0 {
            break;
        }
        assert!(t0.elapsed() < Duration::from_secs(15), "no reload within 15 s of the edit");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    let mut e = Esme::connect(gw.c.smpp).await;
    assert_eq!(e.bind(BindType::Transceiver, "late", "pw").await, 0);
    println!("WATCH|reloaded {:.1} s after the edit", t0.elapsed().as_secs_f64());
    gw.stop().await;
}

/// kill -9: the counts of the last checkpoint survive; what was counted after it is lost (at
/// most one `checkpoint_interval`, the documented bound), never more.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn after_kill_9_the_last_checkpoint_holds() {
    let sim = sim(SimConfig { listen: "127.0.0.1:0".parse().unwrap(), ..Default::default() }).await;
    let mut gw = Live::new(sim.local_addr, |c| {
        c.set("policy.frequency", "per_entity_per_day = 2")
            .set("policy.frequency", "subscribers = 100000")
            .set("policy.frequency", "checkpoint_interval = \"1s\"")
    });
    gw.start().await;
    let state = gw.node.dir.path().join("journal/frequency.state");
    let (a, b) = ("8613900000011", "8613900000012");
    // a reaches its cap before a checkpoint.
    assert_eq!(gw.status("acme", &text(a, "one")).await, 0);
    assert_eq!(gw.status("acme", &text(a, "two")).await, 0);
    let saved = |p: &std::path::Path| std::fs::metadata(p).and_then(|m| m.modified()).ok();
    let before = saved(&state);
    let deadline = Instant::now() + Duration::from_secs(10);
    while saved(&state) == before {
        assert!(Instant::now() < deadline, "no checkpoint within 10 s at checkpoint_interval = 1s");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    gw.signal("-KILL");
    let _ = gw.node.child.take();
    gw.start().await;
    assert_eq!(gw.status("acme", &text(a, "three")).await, FREQUENCY_CAP, "checkpointed count lost after kill -9");
    assert_eq!(gw.status("acme", &text(b, "one")).await, 0);
    gw.stop().await;
}
