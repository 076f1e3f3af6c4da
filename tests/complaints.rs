//! The 12321 complaint loop with the real binary (architecture §7): `consentgate run` with a journal,
//! an audit log and a register, the project's SMSC simulator behind it, SMPP over loopback.
//! A complaint revokes consent at once and carries its evidence; the same reference twice is
//! one complaint; an incomplete one is 422 naming each missing field; complaints past
//! `suspend_after` suspend the entity (every message refused, `suspended` 0x409) until the
//! suspension is lifted; everything acknowledged survives kill -9; the CLI reads the same
//! register; overdue complaints show under `faketime` in the CLI and in the metrics.

mod common;
mod tools;

use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::Duration;

use common::conf::{AccountConf, GwConf};
use common::node::{free_addr, metric};
use common::{Esme, Kill};
use consentgate::smpp::{self, cmd};
use serde_json::{json, Value};

const BIN: &str = env!("CARGO_BIN_EXE_consentgate");
const TOKEN: &str = "complaints-test-token-0123456789";
const D1: &str = "8613800000001";
const D2: &str = "8613800000002";
const D3: &str = "8613800000003";

struct Setup {
    dir: tempfile::TempDir,
    conf: PathBuf,
    smpp: SocketAddr,
    admin: SocketAddr,
}

/// A config with journal, audit (every decision), register and the bundled China calendar.
fn setup(upstream: SocketAddr, suspend_after: u32) -> Setup {
    setup_with(upstream, suspend_after, "opt-out", "")
}

/// [`setup`] with the regime and more `[consent]` lines.
fn setup_with(upstream: SocketAddr, suspend_after: u32, regime: &str, consent: &str) -> Setup {
    let dir = tempfile::tempdir().unwrap();
    let (smpp, admin) = (free_addr(), free_addr());
    let token = dir.path().join("token");
    std::fs::write(&token, TOKEN).unwrap();
    let calendar = Path::new(env!("CARGO_MANIFEST_DIR")).join("config/calendar-cn-2026.toml");
    let d = dir.path().display();
    let conf = dir.path().join("gw.toml");
    GwConf::new(smpp, admin, upstream)
        .set("policy", &format!("regime = \"{regime}\""))
        .set("policy", "on_snapshot_unavailable = \"allow\"")
        .set("consent", &format!("journal = \"{d}/journal\""))
        .set_lines("consent", consent)
        .set("audit", &format!("dir = \"{d}/audit\""))
        .set("audit", "mode = \"all\"")
        .set("admin", &format!("token_file = \"{}\"", token.display()))
        .set("complaints", &format!("db = \"{d}/complaints.db\""))
        .set("complaints", &format!("calendar = \"{}\"", calendar.display()))
        .set("complaints", "respond_within = 15")
        .set("complaints", &format!("suspend_after = {suspend_after}"))
        .account(AccountConf::marketing("acme").entity("acme-retail").licence("B2-1").sender_id(&["1069*"]))
        // Its sender ids overlap acme's: a complaint naming only 1069012345 needs the audit log.
        .account(AccountConf::marketing("beta").entity("beta-brand").licence("B2-2").sender_id(&["10690*"]))
        .write(&conf);
    Setup { dir, conf, smpp, admin }
}

async fn start(s: &Setup) -> Kill {
    let gw = Kill(common::spawn_gateway(&s.conf));
    let admin = s.admin;
    assert!(
        common::eventually(|| std::net::TcpStream::connect(admin).is_ok()).await
            || common::eventually(|| std::net::TcpStream::connect(admin).is_ok()).await,
        "gateway admin listening"
    );
    gw
}

async fn call(s: &Setup, method: &str, path: &str, body: Option<Value>) -> (u16, Value) {
    let body = body.map(|b| b.to_string());
    let (code, text) =
        consentgate::admin::request(s.admin, method, path, Some(TOKEN), body.as_deref()).await.expect("admin request");
    (code, serde_json::from_str(&text).unwrap_or(Value::String(text)))
}

/// One submit_sm from `1069012345` to `dest`: its submit_sm_resp status.
async fn submit(s: &Setup, dest: &str) -> u32 {
    let mut e = Esme::bound(s.smpp, "acme").await;
    let seq = e.submit(&common::submit_to(dest)).await;
    let r = e.recv_where(|f| smpp::command_id(f) == cmd::SUBMIT_SM_RESP && smpp::sequence(f) == seq).await;
    smpp::command_status(&r)
}

/// Complaint `id` once its audit evidence is collected (polled, bounded).
async fn shown_complete(s: &Setup, id: i64) -> Value {
    let deadline = tokio::time::Instant::now() + Duration::from_secs(20);
    loop {
        let (code, v) = call(s, "GET", &format!("/v1/complaints/{id}"), None).await;
        assert_eq!(code, 200, "{v}");
        if v["evidence"]["audit"]["state"] == "complete" || tokio::time::Instant::now() > deadline {
            return v;
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

fn cli(args: &[&str], conf: &Path) -> (bool, String) {
    let out = Command::new(BIN).args(args).arg("--config").arg(conf).output().expect("run cli");
    (out.status.success(), String::from_utf8_lossy(&out.stdout).into_owned())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_complaint_revokes_carries_evidence_suspends_and_survives_kill_9() {
    let sim = consentgate::sim::start(common::sim_cfg()).await.expect("sim");
    let s = setup(sim.local_addr, 2);
    let mut gw = start(&s).await;

    // A message the subscriber will complain about: forwarded (opt-out regime), audited.
    assert_eq!(submit(&s, D1).await, 0);
    let audit_dir = s.dir.path().join("audit");
    let audited = || {
        std::fs::read_dir(&audit_dir)
            .into_iter()
            .flatten()
            .flatten()
            .any(|f| std::fs::read_to_string(f.path()).is_ok_and(|t| t.contains(&format!("\"msisdn\":\"{D1}\""))))
    };
    assert!(common::eventually(audited).await, "the decision is in the audit log");

    // Without the token: refused. Incomplete: every missing field named.
    let (code, _) =
        consentgate::admin::request(s.admin, "POST", "/v1/complaints", None, Some("{}")).await.expect("request");
    assert_eq!(code, 401);
    let (code, v) = call(&s, "POST", "/v1/complaints", Some(json!({ "channel": "12321" }))).await;
    assert_eq!(code, 422, "{v}");
    assert_eq!(v["error"], "complaint_incomplete");
    assert_eq!(v["missing"], json!(["subscriber", "entity or source", "received_at", "reference"]), "{v}");
    let (code, v) = call(
        &s,
        "POST",
        "/v1/complaints",
        Some(json!({ "subscriber": "x", "entity": "acme-retail", "received_at": "2026-12-03", "reference": "R" })),
    )
    .await;
    assert_eq!((code, v["field"].as_str()), (422, Some("subscriber")), "{v}");

    // Complete, the entity found from the source address through the audit log (both
    // accounts' sender ids match it).
    let complaint = json!({
        "subscriber": "13800000001",           // national form: the default country code is added
        "source": "1069012345",
        "received_at": "2026-12-03T09:30:00+08:00",
        "reference": "12321-2026-0001",
        "content": "未经同意发送营销短信",
    });
    let (code, v) = call(&s, "POST", "/v1/complaints", Some(complaint.clone())).await;
    assert_eq!(code, 201, "{v}");
    let id = v["id"].as_i64().expect("id");
    assert_eq!((v["entity"].as_str(), v["entity_from"].as_str()), (Some("acme-retail"), Some("audit")), "{v}");
    assert_eq!(v["subscriber"], D1);
    // Thu 2026-12-03 + 15 working days (calendar-cn-2026), due at the end of that day, Shanghai.
    assert_eq!(
        (v["due"].as_str(), v["due_at"].as_str()),
        (Some("2026-12-24"), Some("2026-12-24T16:00:00.000000Z")),
        "{v}"
    );
    assert_eq!(v["actions"], json!(["consent_revoked"]));
    assert_eq!(v["status"], "open");
    // The same reference again: the same complaint, nothing done twice.
    let (code, again) = call(&s, "POST", "/v1/complaints", Some(complaint.clone())).await;
    assert_eq!((code, again["id"].as_i64(), again["created"].as_bool()), (200, Some(id), Some(false)), "{again}");

    // Consent revoked at once: the next message to that subscriber is refused.
    assert_eq!(submit(&s, D1).await, 0x401, "revoked by the complaint");
    assert_eq!(submit(&s, D2).await, 0, "other subscribers unaffected");

    // The evidence: the audited decision (collected after the 201), and the standing before
    // the revocation.
    let shown = shown_complete(&s, id).await;
    let ev = &shown["evidence"];
    assert_eq!(ev["consent"]["standing_before"], "no_snapshot", "{ev}");
    assert_eq!(
        (ev["audit"]["enabled"].as_bool(), ev["audit"]["state"].as_str()),
        (Some(true), Some("complete")),
        "{ev}"
    );
    let records = ev["audit"]["records"].as_array().expect("records");
    assert!(!records.is_empty() && records.iter().all(|r| r["msisdn"] == D1 && r["entity"] == "acme-retail"), "{ev}");
    assert_eq!(records[0]["verdict"], "accepted");

    // A second complaint about the entity reaches suspend_after = 2: suspended.
    let (code, v) = call(
        &s,
        "POST",
        "/v1/complaints",
        Some(json!({ "subscriber": D2, "entity": "acme-retail", "received_at": "2026-12-03", "reference": "12321-2026-0002" })),
    )
    .await;
    assert_eq!(code, 201, "{v}");
    assert_eq!(v["actions"], json!(["consent_revoked", "entity_suspended"]));
    assert_eq!(submit(&s, D3).await, 0x409, "every message of a suspended entity");
    let (_, list) = call(&s, "GET", "/v1/suspensions", None).await;
    assert_eq!(list["suspended"][0]["entity"], "acme-retail", "{list}");

    // The metrics, scraped.
    let (_, text) = consentgate::admin::request(s.admin, "GET", "/metrics", None, None).await.unwrap();
    assert_eq!(metric(&text, "consentgate_complaints{status=\"open\"}"), Some(2.0), "{text}");
    assert_eq!(metric(&text, "consentgate_complaints{status=\"overdue\"}"), Some(0.0));
    assert_eq!(metric(&text, "consentgate_entities_suspended"), Some(1.0));
    assert_eq!(metric(&text, "consentgate_complaints_total{result=\"accepted\"}"), Some(2.0));
    assert_eq!(metric(&text, "consentgate_complaints_total{result=\"duplicate\"}"), Some(1.0));
    assert_eq!(metric(&text, "consentgate_complaints_total{result=\"incomplete\"}"), Some(1.0));
    assert_eq!(metric(&text, "consentgate_complaints_total{result=\"invalid\"}"), Some(1.0));

    // kill -9, restart: the complaints, the suspension and the revocations are all still there.
    gw.0.kill().unwrap();
    gw.0.wait().unwrap();
    drop(gw);
    let gw = start(&s).await;
    let (code, v) = call(&s, "GET", "/v1/complaints?status=open&entity=acme-retail", None).await;
    assert_eq!((code, v["count"].as_u64()), (200, Some(2)), "{v}");
    assert_eq!(submit(&s, D3).await, 0x409, "still suspended after the restart");

    // Lifted: D3 sends again; D1 and D2 stay revoked.
    let (code, v) = call(&s, "DELETE", "/v1/entities/acme-retail/suspension", None).await;
    assert_eq!((code, v["complaints"].as_i64()), (200, Some(2)), "{v}");
    let (code, _) = call(&s, "DELETE", "/v1/entities/acme-retail/suspension", None).await;
    assert_eq!(code, 404);
    // A name no entity can have (the entity rule): told apart from one not suspended.
    let (code, v) = call(&s, "DELETE", "/v1/entities/%22acme-retail%22/suspension", None).await;
    assert_eq!((code, v["error"].as_str()), (400, Some("invalid_entity")), "{v}");
    assert_eq!((submit(&s, D3).await, submit(&s, D1).await, submit(&s, D2).await), (0, 0x401, 0x401));

    // Resolution: closed once, with the outcome; a second close is a conflict.
    let path = format!("/v1/complaints/{id}/resolution");
    let (code, v) = call(&s, "POST", &path, Some(json!({ "outcome": "maybe" }))).await;
    assert_eq!(code, 422, "{v}");
    let (code, v) = call(&s, "POST", &path, Some(json!({ "outcome": "upheld", "note": "sender warned" }))).await;
    assert_eq!(
        (code, v["status"].as_str(), v["resolution"]["outcome"].as_str()),
        (200, Some("closed"), Some("upheld"))
    );
    let (code, _) = call(&s, "POST", &path, Some(json!({ "outcome": "upheld" }))).await;
    assert_eq!(code, 409);

    // The CLI on the same register, while the gateway runs.
    let (ok, out) = cli(&["complaints", "list", "--status", "open"], &s.conf);
    assert!(ok && out.contains("12321-2026-0002") && !out.contains("12321-2026-0001"), "{out}");
    let (ok, out) = cli(&["complaints", "show", &id.to_string()], &s.conf);
    let shown: Value = serde_json::from_str(&out).expect("show prints JSON");
    assert!(ok && shown["evidence"]["audit"]["records"].is_array(), "{out}");
    drop(gw);
}

/// kill -9 in the middle of a burst of complaint POSTs: every complaint answered 201 is in the
/// register after the restart, and so is its revocation.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn every_acknowledged_complaint_survives_kill_9_mid_burst() {
    let sim = consentgate::sim::start(common::sim_cfg()).await.expect("sim");
    let s = std::sync::Arc::new(setup(sim.local_addr, 0));
    let mut gw = start(&s).await;
    const N: u64 = 400;
    let acked = std::sync::Arc::new(std::sync::Mutex::new(Vec::new()));
    let mut tasks = Vec::new();
    for w in 0..8u64 {
        let (s, acked) = (s.clone(), acked.clone());
        tasks.push(tokio::spawn(async move {
            for i in (w..N).step_by(8) {
                let body = json!({
                    "subscriber": format!("86139{i:08}"),
                    "entity": "acme-retail",
                    "received_at": "2026-12-01",
                    "reference": format!("burst-{i}"),
                });
                let Ok((code, _)) = consentgate::admin::request(
                    s.admin,
                    "POST",
                    "/v1/complaints",
                    Some(TOKEN),
                    Some(&body.to_string()),
                )
                .await
                else {
                    return; // the gateway is gone
                };
                if code == 201 {
                    acked.lock().unwrap().push(i);
                }
            }
        }));
    }
    // Kill once a good share is acknowledged (bounded wait).
    let deadline = tokio::time::Instant::now() + Duration::from_secs(60);
    while acked.lock().unwrap().len() < 60 && tokio::time::Instant::now() < deadline {
        tokio::time::sleep(Duration::from_millis(5)).await;
    }
    gw.0.kill().unwrap();
    gw.0.wait().unwrap();
    for t in tasks {
        let _ = t.await;
    }
    let acked: Vec<u64> = acked.lock().unwrap().clone();
    assert!(acked.len() >= 60 && (acked.len() as u64) < N, "killed mid-burst: {} acknowledged", acked.len());
    drop(gw);

    let gw = start(&s).await;
    let (code, v) = call(&s, "GET", "/v1/complaints?limit=1000", None).await;
    assert_eq!(code, 200);
    let stored: std::collections::HashSet<String> =
        v["complaints"].as_array().unwrap().iter().map(|c| c["reference"].as_str().unwrap().to_owned()).collect();
    for i in &acked {
        assert!(stored.contains(&format!("burst-{i}")), "complaint burst-{i} was acknowledged and is gone");
        let (_, c) = call(&s, "GET", &format!("/v1/consent/86139{i:08}?entity=acme-retail"), None).await;
        assert_eq!(c["live"]["pair"]["kind"], "revoke", "revocation of burst-{i}: {c}");
    }
    eprintln!("kill -9 mid-burst: {} acknowledged, {} stored, all acknowledged present", acked.len(), stored.len());
    drop(gw);
}

/// Overdue at a chosen wall-clock time: the CLI and the gateway's metrics under `faketime`,
/// 40 days after the complaint was filed. Skipped without `faketime` on a developer machine.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn overdue_under_faketime() {
    let Some(faketime) = tools::debian_tool("faketime", "faketime") else { return };
    let sim = consentgate::sim::start(common::sim_cfg()).await.expect("sim");
    let s = setup(sim.local_addr, 0);
    let gw = start(&s).await;
    let now = consentgate::time::Clock::system().now().unix_ms;
    let received = consentgate::audit::format_time_us(now * 1000);
    let (code, v) = call(
        &s,
        "POST",
        "/v1/complaints",
        Some(json!({ "subscriber": D1, "entity": "acme-retail", "received_at": received, "reference": "late-1" })),
    )
    .await;
    assert_eq!((code, v["overdue"].as_bool()), (201, Some(false)), "{v}");
    let (_, v) = call(&s, "GET", "/v1/complaints?status=overdue", None).await;
    assert_eq!(v["count"], 0);
    drop(gw);

    let later = consentgate::audit::format_time_us((now + 40 * 86_400_000) * 1000);
    let at = format!("@{} {}", &later[..10], &later[11..19]);
    let faked = |args: &[&str]| {
        let mut c = Command::new(&faketime);
        c.args(["-f", &at]).arg(BIN).args(args).arg("--config").arg(&s.conf).env("TZ", "UTC");
        c
    };
    let out = faked(&["complaints", "list", "--status", "overdue"]).output().unwrap();
    let text = String::from_utf8_lossy(&out.stdout);
    assert!(out.status.success() && text.contains("late-1") && text.contains("overdue"), "{text}");

    // The gateway itself at that time: the overdue gauge the alert watches.
    let mut run = faked(&["run"]);
    run.env("FAKETIME_DONT_FAKE_MONOTONIC", "1").env("RUST_LOG", "warn").stdout(Stdio::null());
    let _gw = tools::spawn_group(&mut run);
    let admin = s.admin;
    assert!(common::eventually(|| std::net::TcpStream::connect(admin).is_ok()).await);
    let (_, text) = consentgate::admin::request(s.admin, "GET", "/metrics", None, None).await.unwrap();
    assert_eq!(metric(&text, "consentgate_complaints{status=\"overdue\"}"), Some(1.0), "{text}");
    let (_, v) = call(&s, "GET", "/v1/complaints?status=overdue", None).await;
    assert_eq!((v["count"].as_u64(), v["complaints"][0]["reference"].as_str()), (Some(1), Some("late-1")), "{v}");
}

/// The consent proof of `consent.csv` (`proof` column) through `snapshot build`, the
/// `snapshot lookup` CLI, the admin lookup and a complaint's evidence.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_consent_proof_is_shown_and_attached_as_evidence() {
    let sim = consentgate::sim::start(common::sim_cfg()).await.expect("sim");
    let data = tempfile::tempdir().unwrap();
    let csv = data.path().join("consent.csv");
    std::fs::write(
        &csv,
        format!("msisdn,entity,action,at,proof\n{D1},acme-retail,grant,2026-06-01,urn:acme:optin:42\n{D2},acme-retail,grant,2026-06-01,\n"),
    )
    .unwrap();
    let snap = data.path().join("consent.snap");
    let out = Command::new(BIN)
        .args(["snapshot", "build", "--require-proof", "--consent"])
        .arg(&csv)
        .arg("--out")
        .arg(&snap)
        .output()
        .unwrap();
    let report = String::from_utf8_lossy(&out.stdout);
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    assert!(report.contains("proofs:       1 pair(s)") && report.contains("--require-proof): 1"), "{report}");
    let out = Command::new(BIN)
        .args(["snapshot", "lookup"])
        .arg(&snap)
        .args([D1, "--entity", "acme-retail"])
        .output()
        .unwrap();
    let text = String::from_utf8_lossy(&out.stdout);
    assert!(text.contains("consent proof:      urn:acme:optin:42"), "{text}");

    let s = setup_with(sim.local_addr, 0, "opt-in", &format!("snapshot = \"{}\"", snap.display()));
    let _gw = start(&s).await;
    assert_eq!(submit(&s, D1).await, 0, "granted with proof");
    assert_eq!(submit(&s, D2).await, 0x400, "a grant without proof is no grant under --require-proof");
    let (_, v) = call(&s, "GET", &format!("/v1/consent/{D1}?entity=acme-retail"), None).await;
    assert_eq!(v["decision"]["consent_proof"]["proof"], "urn:acme:optin:42", "{v}");
    let (code, v) = call(
        &s,
        "POST",
        "/v1/complaints",
        Some(json!({ "subscriber": D1, "entity": "acme-retail", "received_at": "2026-12-03", "reference": "proof-1" })),
    )
    .await;
    assert_eq!(code, 201, "{v}");
    let (_, shown) = call(&s, "GET", &format!("/v1/complaints/{}", v["id"]), None).await;
    let c = &shown["evidence"]["consent"];
    assert_eq!(
        (c["standing_before"].as_str(), c["proof"]["proof"].as_str()),
        (Some("granted"), Some("urn:acme:optin:42")),
        "{c}"
    );
    assert_eq!(submit(&s, D1).await, 0x401, "revoked by the complaint despite the proof");
}
