//! Interop: Python `smpplib` (PyPI, 2.2.3), an SMPP implementation independent of this crate,
//! binds through consentgate to the SMSC simulator, sends GSM7 and concatenated UCS-2 Chinese
//! text with delivery receipts, receives an MO, and unbinds.
//!
//! The client is `tests/interop/smpplib_client.py`. The interpreter is `CONSENTGATE_PYTHON`,
//! else `<manifest>/.venv/bin/python`, else `python3`; `scripts/test` creates `.venv` with
//! smpplib. Without smpplib these tests fail (they do not skip).

mod common;
mod tools;

use std::sync::atomic::Ordering;
use std::time::Duration;

use common::*;
use consentgate::smpp::{self, cmd, peek};
use serde_json::Value;
use tools::{require_smpplib, run_client};

const GSM_TEXT: &str = "Hello from smpplib via consentgate";
const CHINESE: &str = "您好，这是一条通过网关发送的中文测试短信。";

/// The UCS-2 text the script sends: 80 characters, two concatenated parts.
fn chinese_text() -> String {
    CHINESE.repeat(4).chars().take(80).collect()
}

fn strings(v: &Value) -> Vec<String> {
    v.as_array()
        .unwrap_or_else(|| panic!("array expected: {v}"))
        .iter()
        .map(|x| x.as_str().unwrap().to_owned())
        .collect()
}

/// GSM7 + 2-part UCS-2 submits with receipts; what reached the SMSC is exactly what smpplib sent.
#[tokio::test(flavor = "multi_thread")]
async fn smpplib_sends_gsm7_and_concatenated_ucs2_through_consentgate() {
    let py = require_smpplib().await;
    let (sim, gw) = stack(sim_cfg(), "", "").await;
    let r = run_client(&py, gw.addr, &[]).await;

    // What smpplib saw.
    assert_eq!(r["bound"], true, "{r}");
    let resps = r["submit_resp"].as_array().unwrap();
    assert_eq!(resps.len(), 3, "one submit_sm_resp per part: {r}");
    assert!(resps.iter().all(|x| x["status"] == 0), "all accepted: {r}");
    let mut ids: Vec<String> = resps.iter().map(|x| x["message_id"].as_str().unwrap().to_owned()).collect();
    assert!(ids.iter().all(|id| !id.is_empty()), "non-empty message ids: {r}");
    ids.sort();
    ids.dedup();
    assert_eq!(ids.len(), 3, "distinct message ids: {r}");
    let mut receipts = strings(&r["receipts"]);
    receipts.sort();
    assert_eq!(receipts, ids, "one receipt per part, correlated by receipted_message_id: {r}");
    assert_eq!(r["mo"], serde_json::json!([]), "{r}");
    assert_eq!(r["unbind_ok"], true, "{r}");

    // What the SMSC got.
    let subs: Vec<_> = sim.recorded().into_iter().filter(|(_, f)| smpp::command_id(f) == cmd::SUBMIT_SM).collect();
    assert_eq!(subs.len(), 3);
    assert!(subs.iter().all(|(sid, _)| sid == "acme"), "submitted on the acme upstream bind");
    let views: Vec<_> = subs.iter().map(|(_, f)| peek::message(f).expect("well-formed submit_sm")).collect();
    for v in &views {
        assert_eq!((v.source.ton, v.source.npi, v.source.addr), (1, 1, &b"1069012345"[..]));
        assert_eq!((v.destination.ton, v.destination.npi, v.destination.addr), (1, 1, &b"8613800138000"[..]));
        assert_eq!(v.registered_delivery & 0x03, 1, "receipt requested");
    }
    let gsm: Vec<_> = views.iter().filter(|v| v.data_coding == 0).collect();
    assert_eq!(gsm.len(), 1);
    assert_eq!(gsm[0].esm_class, 0);
    assert_eq!(gsm[0].short_message, GSM_TEXT.as_bytes());

    let mut ucs: Vec<_> = views.iter().filter(|v| v.data_coding == 8).collect();
    assert_eq!(ucs.len(), 2);
    ucs.sort_by_key(|v| v.short_message.get(5).copied());
    let reference = ucs[0].short_message[3];
    let mut payload = Vec::new();
    for (i, v) in ucs.iter().enumerate() {
        assert_eq!(v.esm_class, 0x40, "UDHI set");
        let m = v.short_message;
        assert!(m.len() > 6);
        assert_eq!(&m[..6], &[0x05, 0x00, 0x03, reference, 2, i as u8 + 1], "UDH 05 00 03 ref 02 seq");
        payload.extend_from_slice(&m[6..]);
    }
    assert_eq!(payload.len() % 2, 0);
    let units: Vec<u16> = payload.chunks(2).map(|c| u16::from_be_bytes([c[0], c[1]])).collect();
    assert_eq!(String::from_utf16(&units).expect("UTF-16BE"), chinese_text());

    // smpplib's unbind reached the SMSC.
    assert!(eventually(|| sim.stats.unbinds.load(Ordering::Relaxed) == 1).await, "unbind relayed upstream");
    gw.stop().await;
}

/// A UCS-2 MO ("退订", unsubscribe) from the SMSC reaches the smpplib session.
#[tokio::test(flavor = "multi_thread")]
async fn smpplib_receives_ucs2_mo_through_consentgate() {
    let py = require_smpplib().await;
    let (sim, gw) = stack(sim_cfg(), "", "").await;
    let addr = gw.addr;
    let client = tokio::spawn(async move { run_client(&py, addr, &["wait-mo"]).await });

    let deadline = tokio::time::Instant::now() + Duration::from_secs(15);
    while sim.sessions() < 1 {
        if client.is_finished() {
            let r = client.await;
            panic!("smpplib client ended before binding: {r:?}");
        }
        assert!(tokio::time::Instant::now() < deadline, "smpplib did not bind through consentgate");
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    // From another subscriber than the one the script sends to: "退订" is an opt-out keyword,
    // and the gateway rightly refuses (0x401) later submits to a subscriber who opted out.
    let tuiding: Vec<u8> = "退订".encode_utf16().flat_map(u16::to_be_bytes).collect();
    assert!(sim.inject_mo(Some("acme"), "8613912345678", "1069012345", 8, &tuiding), "MO handed to the acme session");

    let r = client.await.expect("client task");
    assert_eq!(r["bound"], true, "{r}");
    assert_eq!(r["mo"], serde_json::json!(["退订"]), "{r}");
    let resps = r["submit_resp"].as_array().unwrap();
    assert_eq!(resps.len(), 3, "{r}");
    assert!(resps.iter().all(|x| x["status"] == 0), "an opt-out by another subscriber refuses nothing here: {r}");
    assert_eq!(r["receipts"].as_array().unwrap().len(), 3, "{r}");
    assert_eq!(r["unbind_ok"], true, "{r}");
    assert!(eventually(|| sim.stats.unbinds.load(Ordering::Relaxed) == 1).await, "unbind relayed upstream");
    gw.stop().await;
}
