//! The CMPP front end to end: the real `consentgate run` binary with `listen.cmpp`, the
//! project's ISMG simulator (`sim::cmpp`) behind it, and an SP speaking CMPP over TCP with
//! the wire layer's own builders (the independent Python clients are in `cmpp_sim.rs` and
//! `interop`). Both versions. What is checked: admission by Source_Addr (an unknown SP never
//! reaches the ISMG), every forwarded SUBMIT byte-exact at the ISMG but for its Sequence_Id,
//! an MO 退订 in GBK recorded as a revocation before its DELIVER_RESP reaches the ISMG, a
//! refused single SUBMIT answered with the reason's Result, a group SUBMIT forwarded without
//! its refused destination and that destination reported with the reason's Stat, and
//! ACTIVE_TEST / TERMINATE.

mod common;
mod tools;

use std::net::SocketAddr;
use std::time::Duration;

use bytes::BytesMut;
use common::conf::{AccountConf, GwConf};
use common::node::{free_addr, Node};
use consentgate::cmpp::frame::{Framer, Next};
use consentgate::cmpp::pdu::{self, SubmitFields};
use consentgate::cmpp::peek as cpeek;
use consentgate::cmpp::{self, cmd, Version};
use consentgate::sim::cmpp::{CmppSimConfig, CmppSimHandle};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;

const SP: &str = "901234";
const SRC_ID: &str = "1069001";
const REVOKED_RESULT: u32 = 101;

/// An SP: one CMPP connection, driven by hand.
struct Sp {
    s: TcpStream,
    buf: BytesMut,
    framer: Framer,
    seq: u32,
    version: Version,
}

impl Sp {
    async fn connect(addr: SocketAddr, sp_id: &str, version: Version) -> (Sp, u32) {
        let s = TcpStream::connect(addr).await.expect("connect to the CMPP listener");
        let mut sp = Sp { s, buf: BytesMut::new(), framer: Framer::default(), seq: 0, version };
        let mut out = BytesMut::new();
        let seq = sp.next_seq();
        consentgate::sim::cmpp::put_connect_as(&mut out, seq, sp_id, "", version.byte(), 1207120000);
        sp.s.write_all(&out).await.unwrap();
        let resp = sp.recv().await.expect("CONNECT_RESP");
        assert_eq!(cmpp::command_id(&resp), cmd::CONNECT_RESP);
        let status = cpeek::connect_resp(&resp, version).expect("CONNECT_RESP parses").status;
        (sp, status)
    }

    fn next_seq(&mut self) -> u32 {
        self.seq += 1;
        self.seq
    }

    async fn send(&mut self, frame: &[u8]) {
        self.s.write_all(frame).await.unwrap();
    }

    /// The next frame, within 5 s; `None` when the connection closed.
    async fn recv(&mut self) -> Option<Vec<u8>> {
        let deadline = tokio::time::Instant::now() + Duration::from_secs(5);
        loop {
            match self.framer.next(&self.buf) {
                Next::Frame(len) => return Some(self.buf.split_to(len).to_vec()),
                Next::Incomplete => {}
                other => panic!("framing: {other:?}"),
            }
            let mut chunk = [0u8; 4096];
            let n = tokio::time::timeout_at(deadline, self.s.read(&mut chunk)).await.expect("a frame within 5 s");
            match n {
                Ok(0) | Err(_) => return None,
                Ok(n) => self.buf.extend_from_slice(&chunk[..n]),
            }
        }
    }

    /// Frames until one with `command_id` comes; DELIVERs on the way are answered Result 0
    /// and collected.
    async fn recv_cmd(&mut self, command_id: u32, delivers: &mut Vec<Vec<u8>>) -> Vec<u8> {
        loop {
            let f = self.recv().await.expect("connection open");
            let id = cmpp::command_id(&f);
            if id == cmd::DELIVER && command_id != cmd::DELIVER {
                self.ack_deliver(&f).await;
                delivers.push(f);
                continue;
            }
            if id == command_id {
                return f;
            }
        }
    }

    async fn ack_deliver(&mut self, f: &[u8]) {
        let d = cpeek::deliver(f, self.version).expect("DELIVER parses");
        let mut out = BytesMut::new();
        pdu::put_deliver_resp(&mut out, self.version, cmpp::sequence(f), d.msg_id, 0);
        self.send(&out).await;
    }

    fn submit(&mut self, dests: &[&str], text: &str) -> Vec<u8> {
        let content: Vec<u8> = text.encode_utf16().flat_map(u16::to_be_bytes).collect();
        let dests: Vec<&[u8]> = dests.iter().map(|d| d.as_bytes()).collect();
        let f = SubmitFields {
            pk_total: 1,
            pk_number: 1,
            registered_delivery: 1,
            service_id: b"MKT",
            msg_fmt: 8,
            msg_src: SP.as_bytes(),
            src_id: SRC_ID.as_bytes(),
            dest_terminal_ids: &dests,
            msg_content: &content,
            ..SubmitFields::default()
        };
        let mut out = BytesMut::new();
        let seq = self.next_seq();
        pdu::put_submit(&mut out, self.version, seq, &f);
        out.to_vec()
    }
}

/// The gateway with a CMPP front before the simulator (the SMPP side configured but idle),
/// its account limited to `sender_ids` (empty: any).
async fn gateway_with(ismg: SocketAddr, sender_ids: &[&str]) -> (Node, SocketAddr) {
    gateway_in(tempfile::tempdir().unwrap(), ismg, sender_ids, &[]).await
}

/// The gateway in `dir`, with more lines in some sections (`more`: section, lines).
async fn gateway_in(
    dir: tempfile::TempDir,
    ismg: SocketAddr,
    sender_ids: &[&str],
    more: &[(&str, &str)],
) -> (Node, SocketAddr) {
    let (smpp, admin, cmpp_addr) = (free_addr(), free_addr(), free_addr());
    let journal = dir.path().join("journal");
    let mut c = GwConf::new(smpp, admin, free_addr())
        .set("listen", &format!("cmpp = \"{cmpp_addr}\""))
        .set("policy", "default_country_code = \"86\"")
        .set("policy", "regime = \"opt-out\"")
        .set("policy", "on_snapshot_unavailable = \"allow\"")
        .set("consent", &format!("journal = \"{}\"", journal.display()))
        .account(if sender_ids.is_empty() {
            AccountConf::marketing(SP)
        } else {
            AccountConf::marketing(SP).sender_id(sender_ids)
        })
        .tail(&format!("[upstream.cmpp]\naddress = \"{ismg}\"\nresponse_timeout = \"5s\"\n"));
    for (section, lines) in more {
        c = c.set_lines(section, lines);
    }
    let mut node = Node::with_conf(dir, &c);
    node.start().await;
    (node, cmpp_addr)
}

async fn ismg() -> CmppSimHandle {
    consentgate::sim::cmpp::start(CmppSimConfig::default()).await.expect("ISMG simulator")
}

/// `frame` as the ISMG saw it equals what the SP sent, Sequence_Id aside.
fn same_but_sequence(sent: &[u8], seen: &[u8]) -> bool {
    sent.len() == seen.len() && sent[..8] == seen[..8] && sent[12..] == seen[12..]
}

async fn whole_flow(version: Version) {
    let sim = ismg().await;
    let dir = tempfile::tempdir().unwrap();
    let audit_dir = dir.path().join("audit");
    let audit = format!("dir = \"{}\"\nmode = \"all\"\n", audit_dir.display());
    let (mut node, addr) = gateway_in(dir, sim.local_addr, &["1069*"], &[("audit", &audit)]).await;

    // An SP the accounts do not name: refused, and the ISMG never sees it.
    let (_, status) = Sp::connect(addr, "999999", version).await;
    assert_eq!(status, cmpp::connect_status::BAD_SOURCE_ADDR);
    assert_eq!(sim.stats.connections.load(std::sync::atomic::Ordering::Relaxed), 0);

    let (mut sp, status) = Sp::connect(addr, SP, version).await;
    assert_eq!(status, 0, "CONNECT relayed and accepted by the ISMG");
    let mut delivers = Vec::new();

    // Allowed: forwarded byte for byte.
    let f = sp.submit(&["13800138001"], "【Acme】会员日八折，回T退订");
    sp.send(&f).await;
    let r = sp.recv_cmd(cmd::SUBMIT_RESP, &mut delivers).await;
    assert_eq!(cmpp::sequence(&r), cmpp::sequence(&f));
    assert_eq!(cpeek::submit_resp(&r, version).unwrap().result, 0);
    let seen = sim.submits();
    assert!(same_but_sequence(&f, seen.last().expect("the ISMG got the SUBMIT")), "forwarded SUBMIT differs");

    // ACTIVE_TEST answered on the SP leg.
    let mut out = BytesMut::new();
    let seq = sp.next_seq();
    pdu::put_active_test(&mut out, seq);
    sp.send(&out).await;
    let r = sp.recv_cmd(cmd::ACTIVE_TEST_RESP, &mut delivers).await;
    assert_eq!(cmpp::sequence(&r), seq);

    // The subscriber replies 退订 in GBK: the MO reaches the SP, and its DELIVER_RESP reaches
    // the ISMG once the revocation is on disk.
    let (mo, ()) = tokio::join!(sim.send_mo("13800138002", SRC_ID, 15, b"\xCD\xCB\xB6\xA9"), async {
        let d = sp.recv_cmd(cmd::DELIVER, &mut delivers).await;
        sp.ack_deliver(&d).await;
    });
    assert_eq!(mo, Ok(0), "the ISMG got the SP's DELIVER_RESP");

    // Refused: one destination, answered with the reason's Result, nothing forwarded.
    let before = sim.submits().len();
    let f = sp.submit(&["13800138002"], "【Acme】会员日八折，回T退订");
    sp.send(&f).await;
    let r = sp.recv_cmd(cmd::SUBMIT_RESP, &mut delivers).await;
    assert_eq!(cpeek::submit_resp(&r, version).unwrap().result, REVOKED_RESULT);
    assert_eq!(sim.submits().len(), before, "a refused SUBMIT reached the ISMG");

    // A group: forwarded without the revoked destination; that one reported with its Stat.
    let f = sp.submit(&["13800138003", "13800138002", "13800138004"], "【Acme】会员日八折，回T退订");
    sp.send(&f).await;
    let r = sp.recv_cmd(cmd::SUBMIT_RESP, &mut delivers).await;
    let resp = cpeek::submit_resp(&r, version).unwrap();
    assert_eq!(resp.result, 0);
    let seen = sim.submits();
    let fwd = cpeek::submit(seen.last().unwrap(), version).expect("the rewritten SUBMIT parses");
    let kept: Vec<&[u8]> = fwd.destinations().collect();
    assert_eq!(kept, [b"13800138003".as_slice(), b"13800138004".as_slice()]);
    let orig = cpeek::submit(&f, version).unwrap();
    assert_eq!((fwd.msg_content, fwd.src_id, fwd.service_id), (orig.msg_content, orig.src_id, orig.service_id));
    // The reports: the ISMG's two DELIVRD and consentgate's one for the refused number.
    let deadline = tokio::time::Instant::now() + Duration::from_secs(5);
    let mut ours = None;
    while ours.is_none() && tokio::time::Instant::now() < deadline {
        for d in &delivers {
            let d = cpeek::deliver(d, version).unwrap();
            if d.is_report() {
                let rep = d.report().unwrap();
                if rep.dest_terminal_id == b"13800138002" {
                    ours = Some((rep.msg_id, rep.stat.to_vec()));
                }
            }
        }
        if ours.is_none() {
            let f = sp.recv().await.expect("open");
            if cmpp::command_id(&f) == cmd::DELIVER {
                sp.ack_deliver(&f).await;
                delivers.push(f);
            }
        }
    }
    let (msg_id, stat) = ours.expect("a report for the refused destination");
    assert_eq!(msg_id, resp.msg_id, "reported under the group's Msg_Id");
    assert_eq!(stat, b"CG:0101");

    // TERMINATE: answered, and the ISMG told.
    let mut out = BytesMut::new();
    let seq = sp.next_seq();
    pdu::put_terminate(&mut out, seq);
    sp.send(&out).await;
    let r = sp.recv_cmd(cmd::TERMINATE_RESP, &mut delivers).await;
    assert_eq!(cmpp::sequence(&r), seq);
    let m = node.metrics().await;
    assert!(
        m.contains("consentgate_submit_total{account=\"901234\",verdict=\"rejected\",reason=\"revoked\"} 2"),
        "{m}"
    );
    assert!(m.contains("consentgate_optouts_total"), "{m}");

    // The audit log, read back with `consentgate audit search`: every decision marked CMPP,
    // its status the Result the SP got, the forwarded one with the ISMG's Msg_Id.
    node.stop().await;
    let accepted = audit_search(&audit_dir, "8613800138001");
    assert_eq!(accepted.len(), 1, "{accepted:?}");
    let a = &accepted[0];
    assert_eq!(
        (&a["verdict"], &a["protocol"], &a["status"]),
        (&"accepted".into(), &"cmpp".into(), &"0x00000000".into())
    );
    assert!(a["message_id"].as_str().is_some_and(|m| m.parse::<u64>().is_ok()), "the ISMG's Msg_Id: {a}");
    let refused = audit_search(&audit_dir, "8613800138002");
    assert_eq!(refused.len(), 2, "the single SUBMIT and the group's destination: {refused:?}");
    for r in &refused {
        assert_eq!((&r["reason"], &r["protocol"]), (&"revoked".into(), &"cmpp".into()), "{r}");
        assert_eq!(r["status"], format!("0x{REVOKED_RESULT:08X}"), "{r}");
        assert_eq!(r["account"], SP, "{r}");
    }
    let grouped = audit_search(&audit_dir, "8613800138003");
    assert_eq!(grouped.len(), 1, "{grouped:?}");
    assert_eq!((&grouped[0]["verdict"], &grouped[0]["status"]), (&"accepted".into(), &serde_json::Value::Null));
    println!(
        "CMPP|{version:?} SP through consentgate|{} DELIVERs seen by the SP, group Msg_Id {msg_id}",
        delivers.len()
    );
}

/// `consentgate audit search --json` for one number in `dir`: the matching records.
fn audit_search(dir: &std::path::Path, msisdn: &str) -> Vec<serde_json::Value> {
    let out = std::process::Command::new(env!("CARGO_BIN_EXE_consentgate"))
        .args(["audit", "search", "--json", "--dir"])
        .arg(dir)
        .args(["--msisdn", msisdn])
        .output()
        .expect("run audit search");
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    String::from_utf8(out.stdout).unwrap().lines().map(|l| serde_json::from_str(l).expect("a JSON record")).collect()
}

#[tokio::test]
async fn cmpp_3_0_sp_through_consentgate() {
    whole_flow(Version::V30).await;
}

#[tokio::test]
async fn cmpp_2_0_sp_through_consentgate() {
    whole_flow(Version::V20).await;
}

/// The two independent CMPP clients on PyPI, as SPs through consentgate to the simulator, which
/// checks their MD5 authenticators: the CONNECT and its answer pass untouched both ways
/// (cmppy checks AuthenticatorISMG), their SUBMITs are answered, and an SP_Id no account names
/// is refused by consentgate with Status 2 before the ISMG sees it.
#[tokio::test(flavor = "multi_thread")]
async fn independent_cmpp_clients_through_consentgate() {
    const SECRET: &str = "s3cret";
    for (module, script, version) in [("cmppy", tools::CMPPY_CLIENT, 0x30), ("pycmpp", tools::PYCMPP_CLIENT, 0x21)] {
        let Some(py) = tools::python_with(module).await else { return };
        let mut cfg = CmppSimConfig::default();
        cfg.secrets.insert(SP.to_owned(), SECRET.to_owned());
        let sim = consentgate::sim::cmpp::start(cfg).await.expect("ISMG simulator");
        // pycmpp sends no Src_Id: the account names no sender ids.
        let (node, addr) = gateway_with(sim.local_addr, &[]).await;
        let r = tools::run_script(&py, script, addr, SP, SECRET).await;
        assert_eq!(r["connect_status"], 0, "{module}: {r}");
        assert_eq!(r["version"], version, "{module}: {r}");
        assert_eq!(r["auth_ok"], true, "{module}: AuthenticatorISMG relayed untouched: {r}");
        let resps: Vec<&serde_json::Value> = match &r["submit_resp"] {
            serde_json::Value::Array(a) => a.iter().collect(),
            one => vec![one],
        };
        assert!(!resps.is_empty() && resps.iter().all(|x| x["result"] == 0), "{module}: {r}");
        assert_eq!(sim.submits().len(), resps.len(), "{module}: every SUBMIT reached the ISMG");
        let sim_version = if version == 0x30 { Version::V30 } else { Version::V20 };
        assert!(sim.submits().iter().all(|f| cpeek::submit(f, sim_version).is_ok()), "{module}");
        let refused = tools::run_script(&py, script, addr, "999999", SECRET).await;
        assert_eq!(refused["connect_status"], 2, "{module}: an unknown SP: {refused}");
        assert_eq!(sim.stats.connect_refused.load(std::sync::atomic::Ordering::Relaxed), 0, "{module}");
        println!(
            "CMPP|{module} through consentgate|{} SUBMITs answered Result 0; unknown SP refused with Status 2",
            resps.len()
        );
        drop(node);
    }
}

/// `[capture]` records a CMPP session's two legs on port 7890, and tshark's own CMPP
/// dissector (3.0) reads every PDU of it without a malformed packet: CONNECT, SUBMIT (the
/// forwarded one and the rewritten group), SUBMIT_RESP, DELIVER (reports, consentgate's own
/// included), DELIVER_RESP, ACTIVE_TEST, TERMINATE.
#[tokio::test]
async fn a_capture_of_a_cmpp_session_decodes_in_tshark() {
    let Some(tshark) = tools::debian_tool("tshark", "tshark") else { return };
    let sim = ismg().await;
    let dir = tempfile::tempdir().unwrap();
    let cap_dir = dir.path().join("capture");
    let capture = format!("enabled = true\ndir = \"{}\"\n", cap_dir.display());
    let (mut node, addr) = gateway_in(dir, sim.local_addr, &["1069*"], &[("capture", &capture)]).await;
    let (mut sp, status) = Sp::connect(addr, SP, Version::V30).await;
    assert_eq!(status, 0);
    let mut delivers = Vec::new();
    let f = sp.submit(&["13800138001", "13800138005"], "【Acme】会员日八折，回T退订");
    sp.send(&f).await;
    sp.recv_cmd(cmd::SUBMIT_RESP, &mut delivers).await;
    let mut out = BytesMut::new();
    let seq = sp.next_seq();
    pdu::put_active_test(&mut out, seq);
    sp.send(&out).await;
    sp.recv_cmd(cmd::ACTIVE_TEST_RESP, &mut delivers).await;
    while delivers.len() < 2 {
        let d = sp.recv_cmd(cmd::DELIVER, &mut delivers).await;
        sp.ack_deliver(&d).await;
        delivers.push(d);
    }
    let files = terminate_and_stop(&mut sp, &mut node, &cap_dir).await;
    let run = |filter: &str, fields: &[&str]| {
        let mut c = std::process::Command::new(&tshark);
        c.arg("-r").arg(&files[0]).args(["-Y", filter, "-T", "fields"]);
        for f in fields {
            c.args(["-e", f]);
        }
        let out = c.output().expect("run tshark");
        assert!(out.status.success(), "tshark: {}", String::from_utf8_lossy(&out.stderr));
        String::from_utf8_lossy(&out.stdout).lines().map(str::to_owned).collect::<Vec<_>>()
    };
    let malformed = run("_ws.malformed || _ws.expert.severity >= error", &["frame.number"]);
    assert!(malformed.is_empty(), "malformed packets in the capture: {malformed:?}");
    let commands = run("cmpp", &["cmpp.Command_Id"]);
    let seen: std::collections::BTreeSet<&str> = commands.iter().map(String::as_str).collect();
    println!("CMPP|tshark on the capture|{} CMPP packets, Command_Ids {seen:?}", commands.len());
    for id in
        ["0x00000001", "0x80000001", "0x00000004", "0x80000004", "0x00000005", "0x80000005", "0x00000008", "0x00000002"]
    {
        assert!(commands.iter().any(|c| c.contains(id)), "{id} not decoded as CMPP: {commands:?}");
    }
}

/// The SP TERMINATEs, the gateway stops; the capture files it wrote (one).
async fn terminate_and_stop(sp: &mut Sp, node: &mut Node, cap_dir: &std::path::Path) -> Vec<std::path::PathBuf> {
    let mut out = BytesMut::new();
    let seq = sp.next_seq();
    pdu::put_terminate(&mut out, seq);
    sp.send(&out).await;
    sp.recv_cmd(cmd::TERMINATE_RESP, &mut Vec::new()).await;
    tokio::time::sleep(Duration::from_millis(300)).await;
    node.stop().await;
    let files: Vec<_> = std::fs::read_dir(cap_dir).unwrap().flatten().map(|e| e.path()).collect();
    assert_eq!(files.len(), 1, "{files:?}");
    files
}

/// `load --cmpp --pcap` replays a CMPP capture: the SP leg of a recorded session (an allowed
/// SUBMIT, a group, and a SUBMIT refused after the subscriber's 退订) sent again through the
/// restarted gateway, each answered with the Result recorded for it.
#[tokio::test]
async fn a_cmpp_capture_replays_with_the_recorded_results() {
    let sim = ismg().await;
    let dir = tempfile::tempdir().unwrap();
    let (cap_dir, report) = (dir.path().join("capture"), dir.path().join("replay.json"));
    let capture = format!("enabled = true\ndir = \"{}\"\n", cap_dir.display());
    let (mut node, addr) = gateway_in(dir, sim.local_addr, &["1069*"], &[("capture", &capture)]).await;
    let (mut sp, status) = Sp::connect(addr, SP, Version::V30).await;
    assert_eq!(status, 0);
    let mut delivers = Vec::new();
    for dests in [&["13800138001"][..], &["13800138003", "13800138004"]] {
        let f = sp.submit(dests, "【Acme】会员日八折，回T退订");
        sp.send(&f).await;
        let r = sp.recv_cmd(cmd::SUBMIT_RESP, &mut delivers).await;
        assert_eq!(cpeek::submit_resp(&r, Version::V30).unwrap().result, 0);
    }
    // The status reports that came meanwhile are answered, then the MO (after its reports).
    for d in std::mem::take(&mut delivers) {
        if cmpp::command_id(&d) == cmd::DELIVER {
            sp.ack_deliver(&d).await;
        }
    }
    let (mo, ()) = tokio::join!(sim.send_mo("13800138002", SRC_ID, 15, b"\xCD\xCB\xB6\xA9"), async {
        loop {
            let d = sp.recv_cmd(cmd::DELIVER, &mut delivers).await;
            sp.ack_deliver(&d).await;
            if !cpeek::deliver(&d, Version::V30).unwrap().is_report() {
                break;
            }
        }
    });
    assert_eq!(mo, Ok(0));
    let f = sp.submit(&["13800138002"], "【Acme】会员日八折，回T退订");
    sp.send(&f).await;
    let r = sp.recv_cmd(cmd::SUBMIT_RESP, &mut delivers).await;
    assert_eq!(cpeek::submit_resp(&r, Version::V30).unwrap().result, REVOKED_RESULT);
    let files = terminate_and_stop(&mut sp, &mut node, &cap_dir).await;

    // The same gateway again (its journal holds the 退订), and the SP leg replayed into it.
    node.start().await;
    // Off the runtime: the simulator runs on it.
    let mut load = tokio::process::Command::new(env!("CARGO_BIN_EXE_consentgate"));
    load.args(["load", "--cmpp", "3.0", "--speed", "max", "--server", "10.0.0.1", "--system-id", SP])
        .arg("--target")
        .arg(addr.to_string())
        .arg("--pcap")
        .arg(&files[0])
        .arg("--report")
        .arg(&report);
    let out = tokio::time::timeout(Duration::from_secs(30), load.output()).await.expect("load ends").expect("run load");
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    let r: serde_json::Value = serde_json::from_slice(&std::fs::read(&report).unwrap()).unwrap();
    assert_eq!(r["sent"], 3, "{r}");
    assert_eq!((&r["replay"]["compared"], &r["replay"]["differ"]), (&3.into(), &0.into()), "{r}");
    assert_eq!(r["statuses"][format!("0x{REVOKED_RESULT:08x}")], 1, "{r}");
    println!(
        "CMPP|load --cmpp --pcap of a CMPP capture|3 SUBMITs replayed, every Result as recorded ({})",
        r["statuses"]
    );
}
