//! India DLT scrubbing with the real binary (architecture §11): a registry built by
//! `consentgate dlt build` from small CSVs, `consentgate run` under Debian's `faketime` (12:00
//! and 21:30 IST) in front of the project's SMSC simulator, and an ESME that sends submit_sm
//! with the PE id, template id and chain in the vendor TLVs 0x1400–0x1402. Each case asserts
//! the submit_sm_resp status and the `reason` label of `consentgate_submit_total`; a config
//! reload refuses a registry that does not load and puts a rebuilt one in force;
//! `GET /v1/dlt/lookup` explains the same decisions step by step, and a grant recorded through
//! the admin API lets a fully blocked subscriber's service-explicit message through. Python's
//! smpplib (an independent SMPP implementation, `tests/interop/smpplib_dlt.py`) sends the TLVs
//! too. Skipped (with a notice) without `faketime` on a developer machine; a failure under CI.

mod common;
mod tools;

use std::net::SocketAddr;
use std::path::Path;
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use common::conf::{AccountConf, GwConf};
use common::node::{free_addr, metric};
use common::Esme;
use consentgate::smpp::pdu::SubmitBuilder;
use consentgate::smpp::{self, cmd};

const BIN: &str = env!("CARGO_BIN_EXE_consentgate");
const TOKEN: &str = "dlt-test-token-0123456789";
const PE: &str = "1101000000000000001";
const PE2: &str = "1101000000000000002";
const TM: &str = "1302000000000000007";
const T_OTP: &str = "1107000000000000001";
const T_SALE: &str = "1107000000000000002";
const T_STATEMENT: &str = "1107000000000000003";
/// Long enough that its UCS-2 text needs two parts (134 bytes each).
const HINDI: &str = "प्रिय ग्राहक, आपके लिए विशेष ऑफर: {#var#} पर पचास प्रतिशत की छूट, केवल आज के लिए। अधिक जानकारी के लिए हमारी दुकान पर आएँ - Acme";
/// A subscriber with no preference registered.
const FREE: &str = "919800000001";
/// Fully blocked (`all`).
const BLOCKED: &str = "919812345678";

use tools::{spawn_group as spawn, wait_port, Group};

/// The five CSVs and `dlt build`; the registry's path. `otp`: with the OTP template.
fn build_registry(dir: &Path, otp: bool) -> String {
    let w = |n: &str, t: String| std::fs::write(dir.join(n), t).unwrap();
    w("entities.csv", format!("pe_id,name,status\n{PE},Acme Bank,active\n{PE2},Other Co,active\n"));
    w(
        "headers.csv",
        format!(
            "header,pe_id,type,status\nACMEBK,{PE},T,active\nACMEPR,{PE},P,active\nACMESE,{PE},S,active\n\
             OTHERS,{PE2},S,active\n"
        ),
    );
    let otp_row = if otp {
        format!("{T_OTP},{PE},ACMEBK,transactional,,\"Dear {{#var#}}, your OTP is {{#var#}}. - Acme\",active\n")
    } else {
        String::new()
    };
    w(
        "templates.csv",
        format!(
            "template_id,pe_id,headers,category,content_category,content,status\n\
             {otp_row}\
             {T_SALE},{PE},ACMEPR,promotional,4,\"Sale {{#var#}} today only - Acme\",active\n\
             {T_STATEMENT},{PE},ACMESE,service_explicit,1,\"Your statement for {{#var#}} is ready - Acme\",active\n\
             1107000000000000004,{PE},ACMEPR,promotional,4,\"{HINDI}\",active\n"
        ),
    );
    w("chains.csv", format!("pe_id,tm_id\n{PE},{TM}\n"));
    w("preferences.csv", "msisdn,categories,registered_at\n9812345678,all,2024-01-01\n".into());
    let p = |n: &str| dir.join(n).to_str().unwrap().to_owned();
    let out = Command::new(BIN)
        .args(["dlt", "build", "--entities", &p("entities.csv"), "--headers", &p("headers.csv")])
        .args(["--templates", &p("templates.csv"), "--chains", &p("chains.csv")])
        .args(["--preferences", &p("preferences.csv"), "--out", &p("india.dlt")])
        .output()
        .unwrap();
    assert!(out.status.success(), "dlt build: {}", String::from_utf8_lossy(&out.stderr));
    p("india.dlt")
}

/// The SMSC simulator and the gateway at `at` (UTC, faketime's `@` form); their addresses.
struct Stack {
    _sim: Group,
    _gw: Group,
    smpp: SocketAddr,
    admin: SocketAddr,
}

fn stack(faketime: &Path, dir: &Path, registry: &str, at: &str, name: &str) -> Stack {
    let (sim_a, gw_a, admin) = (free_addr(), free_addr(), free_addr());
    let mut sim = spawn(Command::new(BIN).args(["smsc-sim", "--listen", &sim_a.to_string()]).stdout(Stdio::null()));
    wait_port(sim_a.port(), &mut sim, "smsc-sim");
    let cfg = dir.join(format!("{name}.toml"));
    GwConf::new(gw_a, admin, sim_a)
        .set("policy", "default_country_code = \"91\"")
        .set("dlt", &format!("registry = {registry:?}"))
        .account(AccountConf::marketing("dlt").entity("acme-in").licence("UL-1").set("scrubbing = \"dlt\""))
        .write(&cfg);
    // check-config opens the registry with the config and says what it holds.
    let out = Command::new(BIN).arg("check-config").arg(&cfg).output().unwrap();
    let said = String::from_utf8_lossy(&out.stdout);
    assert!(out.status.success(), "{said}{}", String::from_utf8_lossy(&out.stderr));
    assert!(
        said.contains(&format!(", dlt {registry} ("))
            && said.contains("templates,")
            && said.contains("; 1 account(s) scrubbing)"),
        "{said}"
    );
    let mut gw = spawn(
        Command::new(faketime)
            .args(["-f", at])
            .arg(BIN)
            .args(["run", "--config"])
            .arg(&cfg)
            .env("FAKETIME_DONT_FAKE_MONOTONIC", "1")
            .env("TZ", "UTC")
            .env("RUST_LOG", "warn")
            .env("CONSENTGATE_ADMIN_TOKEN", TOKEN)
            .stdout(Stdio::null()),
    );
    wait_port(gw_a.port(), &mut gw, "gateway");
    Stack { _sim: sim, _gw: gw, smpp: gw_a, admin }
}

/// A submit_sm from `header` to `dest` with `text` (GSM 7-bit default alphabet as ASCII) and
/// the DLT TLVs given.
fn dlt_submit(
    header: &str,
    dest: &str,
    text: &str,
    pe: Option<&str>,
    template: Option<&str>,
    chain: Option<&str>,
) -> SubmitBuilder {
    let mut b = SubmitBuilder::new(header, dest).source_ton_npi(5, 0).dest_ton_npi(1, 1).short_message(text.as_bytes());
    for (tag, v) in [(0x1400, pe), (0x1401, template), (0x1402, chain)] {
        if let Some(v) = v {
            b = b.tlv(tag, v.as_bytes());
        }
    }
    b
}

/// `text` as a concatenated UCS-2 promotional message from ACMEPR to FREE (8-bit reference
/// `reference`, 134 bytes a part), PE id and TM id in TLVs, no template id: the status of each
/// part in order.
async fn concat_ucs2(e: &mut Esme, text: &str, reference: u8) -> Vec<u32> {
    let ucs2: Vec<u8> = text.encode_utf16().flat_map(u16::to_be_bytes).collect();
    let n = ucs2.chunks(134).count() as u8;
    let mut seqs = Vec::new();
    for (i, p) in ucs2.chunks(134).enumerate() {
        let mut sm = vec![5, 0, 3, reference, n, i as u8 + 1];
        sm.extend_from_slice(p);
        let b = SubmitBuilder::new("ACMEPR", FREE)
            .source_ton_npi(5, 0)
            .dest_ton_npi(1, 1)
            .esm_class(0x40)
            .data_coding(8)
            .short_message(&sm)
            .tlv(0x1400, PE.as_bytes())
            .tlv(0x1402, TM.as_bytes());
        seqs.push(e.submit(&b).await);
    }
    let mut statuses = Vec::new();
    for seq in seqs {
        let r = e.recv_where(|f| smpp::command_id(f) == cmd::SUBMIT_SM_RESP && smpp::sequence(f) == seq).await;
        statuses.push(smpp::command_status(&r));
    }
    statuses
}

/// Sends `b` and returns the submit_sm_resp status.
async fn status(e: &mut Esme, b: &SubmitBuilder) -> u32 {
    let seq = e.submit(b).await;
    let r = e.recv_where(|f| smpp::command_id(f) == cmd::SUBMIT_SM_RESP && smpp::sequence(f) == seq).await;
    smpp::command_status(&r)
}

/// `GET /v1/dlt/lookup?…` on the gateway: (HTTP status, JSON body).
async fn dlt_lookup(admin: SocketAddr, query: &[(&str, &str)]) -> (u16, serde_json::Value) {
    let q: Vec<String> = query.iter().map(|(k, v)| format!("{k}={}", tools::url_encode(v))).collect();
    let path = format!("/v1/dlt/lookup?{}", q.join("&"));
    let (code, body) = consentgate::admin::request(admin, "GET", &path, None, None).await.expect("lookup");
    (code, serde_json::from_str(&body).unwrap_or_else(|e| panic!("{path}: {e}: {body}")))
}

/// Runs `tests/interop/smpplib_dlt.py` against the gateway: the submit_sm_resp status of each
/// case, in order.
async fn smpplib_dlt(py: &str, gw: SocketAddr, cases: serde_json::Value) -> Vec<u32> {
    let script = concat!(env!("CARGO_MANIFEST_DIR"), "/tests/interop/smpplib_dlt.py");
    let mut c = tokio::process::Command::new(py);
    c.arg(script).arg(gw.ip().to_string()).arg(gw.port().to_string()).args(["dlt", "secret"]);
    c.arg(cases.to_string()).kill_on_drop(true);
    let out = tokio::time::timeout(Duration::from_secs(30), c.output()).await.expect("30 s").expect("spawn python");
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(out.status.success(), "smpplib_dlt.py: {}\n{stdout}", String::from_utf8_lossy(&out.stderr));
    let v: serde_json::Value = serde_json::from_str(stdout.lines().last().unwrap_or("")).expect("one JSON line");
    v["statuses"].as_array().unwrap().iter().map(|s| s.as_u64().expect("every submit answered") as u32).collect()
}

/// `consentgate_submit_total{account="dlt",verdict="rejected",reason}` once it reaches `want`
/// (sessions flush their counts every tick), or what it is after the wait.
async fn rejected(admin: SocketAddr, reason: &str, want: f64) -> f64 {
    let series = format!("consentgate_submit_total{{account=\"dlt\",verdict=\"rejected\",reason=\"{reason}\"}}");
    let deadline = Instant::now() + common::WAIT;
    loop {
        let (_, text) = consentgate::admin::request(admin, "GET", "/metrics", None, None).await.expect("scrape");
        let v = metric(&text, &series).unwrap_or(0.0);
        if v == want || Instant::now() > deadline {
            return v;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn dlt_steps_with_the_real_binary() {
    let Some(faketime) = tools::debian_tool("faketime", "faketime") else { return };
    let dir = tempfile::tempdir().unwrap();
    let registry = build_registry(dir.path(), true);
    // 06:30 UTC = 12:00 IST: inside the promotional hours.
    let noon = stack(&faketime, dir.path(), &registry, "@2026-06-01 06:30:00", "noon");
    let mut e = Esme::bound(noon.smpp, "dlt").await;
    let otp = "Dear Asha, your OTP is 482913. - Acme";
    let chain = Some(TM);

    // Passes: a transactional message with every id.
    assert_eq!(status(&mut e, &dlt_submit("ACMEBK", FREE, otp, Some(PE), Some(T_OTP), chain)).await, 0, "passes");
    // Passes without a template id: found by its text.
    assert_eq!(status(&mut e, &dlt_submit("ACMEBK", FREE, otp, Some(PE), None, chain)).await, 0, "found by text");

    let cases: &[(&str, SubmitBuilder, u32, &str)] = &[
        (
            "unknown PE",
            dlt_submit("ACMEBK", FREE, otp, Some("1101000000000000099"), Some(T_OTP), chain),
            0x40B,
            "dlt_entity_unknown",
        ),
        ("no PE id at all", dlt_submit("ACMEBK", FREE, otp, None, Some(T_OTP), chain), 0x40A, "dlt_entity_missing"),
        (
            "header of another PE",
            dlt_submit("OTHERS", FREE, otp, Some(PE), Some(T_OTP), chain),
            0x40F,
            "dlt_header_other_pe",
        ),
        (
            "template mismatch",
            dlt_submit("ACMEBK", FREE, "Dear Asha, your PIN is 4829. - Acme", Some(PE), Some(T_OTP), chain),
            0x413,
            "dlt_template_mismatch",
        ),
        (
            "a variable of 31 characters",
            dlt_submit(
                "ACMEBK",
                FREE,
                &format!("Dear {}, your OTP is 482913. - Acme", "A".repeat(31)),
                Some(PE),
                Some(T_OTP),
                chain,
            ),
            0x414,
            "dlt_variable_too_long",
        ),
        (
            "an undeclared telemarketer",
            dlt_submit("ACMEBK", FREE, otp, Some(PE), Some(T_OTP), Some(&format!("{TM},1302000000000000099"))),
            0x417,
            "dlt_chain_undeclared",
        ),
        ("no chain", dlt_submit("ACMEBK", FREE, otp, Some(PE), Some(T_OTP), None), 0x416, "dlt_chain_missing"),
        (
            "service-explicit to a fully blocked subscriber",
            dlt_submit("ACMESE", BLOCKED, "Your statement for May is ready - Acme", Some(PE), Some(T_STATEMENT), chain),
            0x418,
            "dlt_preference",
        ),
    ];
    for (what, b, want, label) in cases {
        assert_eq!(status(&mut e, b).await, *want, "{what}");
        assert_eq!(rejected(noon.admin, label, 1.0).await, 1.0, "{what}: {label} counted once");
    }
    // Service-explicit to a subscriber without preferences passes.
    let stmt = dlt_submit("ACMESE", FREE, "Your statement for May is ready - Acme", Some(PE), Some(T_STATEMENT), chain);
    assert_eq!(status(&mut e, &stmt).await, 0, "service-explicit, not blocked");

    // The admin lookup explains the same decisions, step by step.
    let statement = "Your statement for May is ready - Acme";
    let q = [("pe_id", PE), ("header", "ACMESE"), ("chain", TM), ("msisdn", BLOCKED), ("text", statement)];
    let (code, v) = dlt_lookup(noon.admin, &q).await;
    assert_eq!(code, 200, "{v}");
    assert_eq!((v["verdict"].as_str(), v["reason"].as_str()), (Some("rejected"), Some("dlt_preference")), "{v}");
    assert_eq!(v["command_status"], "0x00000418", "{v}");
    assert_eq!(v["template_id"], T_STATEMENT, "found by its text: {v}");
    let steps: Vec<(&str, bool)> =
        v["steps"].as_array().unwrap().iter().map(|s| (s["step"].as_str().unwrap(), s["ok"] == true)).collect();
    let want = [("entity", true), ("header", true), ("template", true), ("chain", true), ("category", false)];
    assert_eq!(steps, want, "{v}");
    assert!(v["steps"][4]["detail"].as_str().unwrap().contains("fully blocked"), "{v}");
    // A grant for (subscriber, PE) through the admin API: consent overrides the preference,
    // in the lookup and for the next message.
    let grant = format!(r#"{{"msisdn":"{BLOCKED}","kind":"grant","entity":"{PE}"}}"#);
    let (code, body) =
        consentgate::admin::request(noon.admin, "POST", "/v1/consent", Some(TOKEN), Some(&grant)).await.unwrap();
    assert_eq!(code, 201, "{body}");
    let (_, v) = dlt_lookup(noon.admin, &q).await;
    assert_eq!(v["verdict"], "accepted", "{v}");
    assert!(v["steps"][4]["detail"].as_str().unwrap().contains("consent of PE 1101000000000000001 granted"), "{v}");
    let blocked_stmt = dlt_submit("ACMESE", BLOCKED, statement, Some(PE), Some(T_STATEMENT), chain);
    assert_eq!(status(&mut e, &blocked_stmt).await, 0, "consent overrides the full block");
    // `at`: the promotional hours at another time; the account's pe_id when none is given
    // (this account has none); bad input named.
    let sale_q =
        [("pe_id", PE), ("header", "ACMEPR"), ("chain", TM), ("msisdn", FREE), ("text", "Sale 5 today only - Acme")];
    let (_, v) = dlt_lookup(noon.admin, &[&sale_q[..], &[("at", "2026-06-01T21:30:00+05:30")]].concat()).await;
    assert_eq!(v["reason"], "dlt_promotional_hours", "{v}");
    assert_eq!(v["local_time"], "21:30 Asia/Kolkata", "{v}");
    let (_, v) = dlt_lookup(noon.admin, &sale_q).await;
    assert_eq!(v["verdict"], "accepted", "{v}");
    let (_, v) = dlt_lookup(noon.admin, &[("account", "dlt"), ("header", "ACMEPR"), ("text", "x")]).await;
    assert_eq!(v["reason"], "dlt_entity_missing", "{v}");
    let (code, v) = dlt_lookup(noon.admin, &[("pe_id", "01"), ("header", "ACMEPR"), ("text", "x")]).await;
    assert_eq!((code, v["error"].as_str()), (400, Some("invalid_pe_id")), "{v}");

    // smpplib, an independent SMPP implementation, sends the TLVs.
    let py = tools::require_smpplib().await;
    let tlvs = |template: Option<&str>, chain: Option<&str>| {
        let mut m = serde_json::Map::new();
        m.insert("0x1400".into(), PE.into());
        if let Some(t) = template {
            m.insert("0x1401".into(), t.into());
        }
        if let Some(c) = chain {
            m.insert("0x1402".into(), c.into());
        }
        m
    };
    let case = |text: &str, t: Option<&str>, c: Option<&str>| serde_json::json!({ "header": "ACMEBK", "destination": FREE, "text": text, "tlvs": tlvs(t, c) });
    let cases = serde_json::json!([
        case(otp, Some(T_OTP), Some(TM)),
        case(otp, None, Some(TM)),
        case(otp, Some(T_OTP), None),
        case("Dear Asha, your PIN is 4829. - Acme", Some(T_OTP), Some(TM)),
    ]);
    assert_eq!(smpplib_dlt(&py, noon.smpp, cases).await, [0, 0, 0x416, 0x413], "smpplib's submits");

    // A concatenated UCS-2 Hindi promotional message, matched on its whole text (no template
    // id: found by the text across both parts).
    let text = HINDI.replace("{#var#}", "सभी कपड़ों");
    let statuses = concat_ucs2(&mut e, &text, 0x2A).await;
    assert_eq!(statuses.len(), 2, "two parts");
    for (i, st) in statuses.into_iter().enumerate() {
        assert_eq!(st, 0, "Hindi part {}", i + 1);
    }
    // The same message with a word of its fixed text changed is refused, whole.
    for (i, st) in concat_ucs2(&mut e, &text.replace("पचास", "साठ"), 0x2B).await.into_iter().enumerate() {
        assert_eq!(st, 0x413, "changed Hindi part {}", i + 1);
    }
    assert_eq!(rejected(noon.admin, "dlt_template_mismatch", 2.0).await, 2.0, "one more mismatch, counted once");

    // A promotional message at noon passes.
    let sale = dlt_submit("ACMEPR", FREE, "Sale 50% off today only - Acme", Some(PE), Some(T_SALE), chain);
    assert_eq!(status(&mut e, &sale).await, 0, "promotional at 12:00 IST");

    // The registry reloads with the config: a file that does not load is refused and the
    // running registry keeps serving; a good one is in force from the next message.
    let reload = || consentgate::admin::request(noon.admin, "POST", "/v1/config/reload", Some(TOKEN), None);
    std::fs::write(&registry, b"not a registry").unwrap();
    let (code, body) = reload().await.unwrap();
    assert_ne!(code, 200, "{body}");
    assert!(body.contains("dlt.registry") && body.contains("india.dlt"), "names the key and file: {body}");
    let otp_msg = dlt_submit("ACMEBK", FREE, otp, Some(PE), Some(T_OTP), chain);
    assert_eq!(status(&mut e, &otp_msg).await, 0, "the old registry keeps serving");
    build_registry(dir.path(), false);
    let (code, body) = reload().await.unwrap();
    assert_eq!(code, 200, "{body}");
    assert_eq!(status(&mut e, &otp_msg).await, 0x411, "the OTP template is gone");
    assert_eq!(rejected(noon.admin, "dlt_template_unknown", 1.0).await, 1.0);
    drop(noon);
    build_registry(dir.path(), true);

    // 16:00 UTC = 21:30 IST: promotional refused, transactional still passes.
    let late = stack(&faketime, dir.path(), &registry, "@2026-06-01 16:00:00", "late");
    let mut e = Esme::bound(late.smpp, "dlt").await;
    assert_eq!(status(&mut e, &sale).await, 0x419, "promotional at 21:30 IST");
    assert_eq!(rejected(late.admin, "dlt_promotional_hours", 1.0).await, 1.0);
    assert_eq!(status(&mut e, &otp_msg).await, 0, "transactional at 21:30 IST");
}
