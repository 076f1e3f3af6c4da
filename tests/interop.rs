//! Interop: Python `smpplib`, an independent SMPP implementation, binds through consentgate
//! to the SMSC simulator and sends GSM7 and concatenated UCS-2 Chinese messages.
//! `scripts/test` installs smpplib into `.venv`; `CONSENTGATE_PYTHON` points at another
//! interpreter.

mod common;

use std::sync::atomic::Ordering;
use std::time::Duration;

use common::*;
use consentgate::smpp::{self, cmd, peek};

fn python() -> String {
    if let Ok(p) = std::env::var("CONSENTGATE_PYTHON") {
        return p;
    }
    let venv = concat!(env!("CARGO_MANIFEST_DIR"), "/.venv/bin/python");
    if std::path::Path::new(venv).exists() {
        venv.to_owned()
    } else {
        "python3".to_owned()
    }
}

async fn run_client(addr: std::net::SocketAddr, extra: &[&str]) -> serde_json::Value {
    let py = python();
    let script = concat!(env!("CARGO_MANIFEST_DIR"), "/tests/interop/smpplib_client.py");
    let probe = std::process::Command::new(&py).args(["-c", "import smpplib"]).output();
    match probe {
        Ok(o) if o.status.success() => {}
        _ => panic!("{py} cannot import smpplib: run `scripts/test` (it creates .venv with smpplib) or set CONSENTGATE_PYTHON"),
    }
    let mut cmd = tokio::process::Command::new(&py);
    cmd.arg(script).arg("127.0.0.1").arg(addr.port().to_string()).arg("acme").arg("secret").args(extra);
    cmd.kill_on_drop(true);
    let out = tokio::time::timeout(Duration::from_secs(30), cmd.output()).await.expect("smpplib client finishes").unwrap();
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(out.status.success(), "smpplib client failed:\n{}\n{stdout}", String::from_utf8_lossy(&out.stderr));
    serde_json::from_str(stdout.lines().last().unwrap_or("")).expect("one JSON line")
}

const CHINESE: &str = "您好，这是一条通过网关发送的中文测试短信。";

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn smpplib_sends_gsm7_and_concatenated_ucs2_through_consentgate() {
    let (sim, gw) = stack(sim_cfg(), "", "").await;
    let r = run_client(gw.addr, &[]).await;
    assert_eq!(r["bound"], true);
    let resps = r["submit_resp"].as_array().unwrap();
    assert_eq!(resps.len(), 3, "{r}");
    let ids: Vec<String> = resps.iter().map(|x| x["message_id"].as_str().unwrap().to_owned()).collect();
    assert!(resps.iter().all(|x| x["status"] == 0));
    let mut uniq = ids.clone();
    uniq.sort();
    uniq.dedup();
    assert_eq!(uniq.len(), 3, "distinct message ids");
    let mut receipts: Vec<String> = r["receipts"].as_array().unwrap().iter().map(|x| x.as_str().unwrap().to_owned()).collect();
    receipts.sort();
    assert_eq!(receipts, uniq, "one receipt per part, correlated by message id");
    assert_eq!(r["unbind_ok"], true);

    let subs: Vec<_> = sim.recorded().into_iter().filter(|(_, f)| smpp::command_id(f) == cmd::SUBMIT_SM).collect();
    assert_eq!(subs.len(), 3);
    assert!(subs.iter().all(|(sid, _)| sid == "acme"));
    let views: Vec<_> = subs.iter().map(|(_, f)| peek::message(f).unwrap()).collect();
    let gsm: Vec<_> = views.iter().filter(|v| v.data_coding == 0).collect();
    assert_eq!(gsm.len(), 1);
    assert_eq!(gsm[0].short_message, b"Hello from smpplib via consentgate");
    let mut ucs: Vec<_> = views.iter().filter(|v| v.data_coding == 8).collect();
    assert_eq!(ucs.len(), 2);
    ucs.sort_by_key(|v| v.short_message[5]);
    let mut text = Vec::new();
    for (i, v) in ucs.iter().enumerate() {
        assert_eq!(v.esm_class & 0x40, 0x40, "UDHI set");
        let m = v.short_message;
        assert_eq!(&m[..3], &[0x05, 0x00, 0x03]);
        assert_eq!((m[4], m[5]), (2, i as u8 + 1));
        assert_eq!(m[3], ucs[0].short_message[3], "same reference");
        text.extend_from_slice(&m[6..]);
    }
    let units: Vec<u16> = text.chunks(2).map(|c| u16::from_be_bytes([c[0], c[1]])).collect();
    assert_eq!(String::from_utf16(&units).unwrap(), CHINESE.repeat(4));
    assert!(eventually(|| sim.stats.unbinds.load(Ordering::Relaxed) == 1).await);
    gw.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn smpplib_receives_ucs2_mo_through_consentgate() {
    let (sim, gw) = stack(sim_cfg(), "", "").await;
    let addr = gw.addr;
    let client = tokio::spawn(async move { run_client(addr, &["wait-mo"]).await });
    assert!(eventually(|| sim.sessions() == 1).await, "smpplib bound");
    let tuiding: Vec<u8> = "退订".encode_utf16().flat_map(|u| u.to_be_bytes()).collect();
    let mut sent = false;
    for _ in 0..50 {
        if sim.inject_mo(Some("acme"), "8613912345678", "1069012345", 8, &tuiding) {
            sent = true;
            break;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    assert!(sent);
    let r = client.await.unwrap();
    assert_eq!(r["mo"], serde_json::json!(["退订"]), "{r}");
    gw.stop().await;
}
