//! The tools: `smsc-sim` (the SMSC simulator, or with `--cmpp` the CMPP ISMG simulator), `load` (the ESME load generator and pcap
//! replay) and `relay` (the plain frame relay, the benchmark baseline).

use std::collections::HashMap;
use std::net::SocketAddr;
use std::path::PathBuf;
use std::process::ExitCode;
use std::time::Duration;

use clap::{Args, ValueEnum};
use consentgate::config::parse_duration;
use consentgate::smpp::BindType;

use super::{shutdown_signal, EX_USAGE};

/// `smsc-sim`: SMSC simulator (SMPP), or with `--cmpp` ISMG simulator (CMPP 2.0/3.0), for
/// tests, demos and benchmarks.
#[derive(Args)]
pub struct SmscSimArgs {
    /// Address to accept SMPP binds on (the gateway's `upstream.address`), or with --cmpp CMPP
    /// CONNECTs [default: 127.0.0.1:2776, with --cmpp 127.0.0.1:7890].
    #[arg(long, value_name = "ADDR")]
    listen: Option<SocketAddr>,
    /// Simulate a CMPP 2.0/3.0 ISMG (China Mobile) instead of an SMPP SMSC: SPs CONNECT, each
    /// link's version follows its CONNECT.
    #[arg(long)]
    cmpp: bool,
    /// Do not send delivery receipts (with --cmpp: status reports).
    #[arg(long, visible_alias = "no-reports")]
    no_receipts: bool,
    /// Delay before each batch of submit responses (with --cmpp: before the status reports).
    #[arg(long, value_parser = parse_duration, default_value = "0ms")]
    delay: Duration,
    /// Answer submits to DEST with STATUS (hex 0x.. or decimal), repeatable. With --cmpp,
    /// STATUS is the 7-character Stat of DEST's status report (e.g. UNDELIV, MA:0001).
    #[arg(long = "dest-error", value_name = "DEST=STATUS")]
    dest_errors: Vec<String>,
    /// Inject one MO message (source,destination,text) every interval into a bound session
    /// (with --cmpp: a DELIVER "TD" to 1069012345, the connected SPs in turn).
    #[arg(long, value_parser = parse_duration)]
    mo_every: Option<Duration>,
    /// With --cmpp: only SP_ID may CONNECT, authenticated by MD5 with SECRET; repeatable.
    /// Without any, every SP is accepted.
    #[arg(long = "secret", value_name = "SP_ID=SECRET")]
    secrets: Vec<String>,
    /// With --cmpp: send ACTIVE_TEST on every connected link at this interval.
    #[arg(long, value_name = "DURATION", value_parser = parse_duration)]
    active_test_every: Option<Duration>,
}

/// `load`: ESME load generator. Exit 0 when every bind succeeded, every submit was answered
/// and (with --scenario) every status was the expected one; 1 otherwise (the reasons on
/// stderr); 64 bad usage.
#[derive(Args)]
pub struct LoadArgs {
    /// The gateway's (or an SMSC's) SMPP address.
    #[arg(long, value_name = "ADDR")]
    target: SocketAddr,
    /// system_id of every bind (the gateway's `[[account]] system_id`).
    #[arg(long)]
    system_id: String,
    /// Password of every bind (the gateway relays it; the SMSC checks it).
    #[arg(long, default_value = "")]
    password: String,
    /// Bind type of every session.
    #[arg(long, value_enum, default_value = "transceiver")]
    bind_type: BindArg,
    /// SMPP sessions to open, in parallel.
    #[arg(long, default_value_t = 4)]
    sessions: usize,
    /// Submits in flight per session (unanswered at once).
    #[arg(long, default_value_t = 100)]
    window: usize,
    /// Total submit_sm to send (0 = until --duration) [default: 100000; with --pcap: every
    /// recorded PDU].
    #[arg(long)]
    count: Option<u64>,
    /// Cap on the sending phase [default: 10s; with --pcap: none].
    #[arg(long, value_parser = parse_duration)]
    duration: Option<Duration>,
    /// Total rate cap (msg/s).
    #[arg(long)]
    rate: Option<u64>,
    /// Request delivery receipts.
    #[arg(long)]
    receipts: bool,
    /// Random traffic: each message to a destination drawn uniformly from LO-HI (two numbers
    /// of the same length, e.g. 8613800000000-8613899999999), so lookups spread over a
    /// consent snapshot as real traffic does [default: a pool of 1024 fixed numbers].
    #[arg(long, value_name = "LO-HI", conflicts_with_all = ["scenario", "pcap"])]
    destinations: Option<consentgate::load::DestRange>,
    /// Random traffic: this text in every message (UCS-2 unless it is all GSM 7-bit;
    /// split into parts when long) [default: a verification code].
    #[arg(long, conflicts_with_all = ["scenario", "pcap"])]
    text: Option<String>,
    /// Random traffic: the sender (source_addr) of every message: digits (TON 0) or an
    /// alphanumeric header (TON 5), e.g. an India DLT header.
    #[arg(long, default_value = "1069012345", conflicts_with_all = ["scenario", "pcap"])]
    source: String,
    /// An optional parameter on every submit_sm, TAG=VALUE (tag hex 0x… or decimal, value
    /// sent as its bytes), e.g. India DLT's `--tlv 0x1400=<PE id> --tlv 0x1401=<template id>
    /// --tlv 0x1402=<TM id>`; repeatable. A scenario line's "tlvs" win for their tags. SMPP only.
    #[arg(long = "tlv", value_name = "TAG=VALUE", value_parser = consentgate::load::parse_tlv_arg,
          conflicts_with_all = ["pcap", "cmpp"])]
    tlvs: Vec<(u16, Vec<u8>)>,
    /// JSONL scenario: {"source","destination","text","encoding","expect","tlvs"} per line.
    #[arg(long, conflicts_with = "pcap")]
    scenario: Option<PathBuf>,
    /// Replay the submit_sm / data_sm / submit_multi (with --cmpp: the CMPP_SUBMITs) of a pcap
    /// or pcapng capture.
    #[arg(long)]
    pcap: Option<PathBuf>,
    /// With --pcap: only TCP connections on this port (default: any port, SMPP detected).
    #[arg(long, requires = "pcap")]
    port: Option<u16>,
    /// With --pcap: only connections whose SMSC side is this IP address. In a capture made
    /// by consentgate's [capture], 10.0.0.1 keeps the ESME leg (what the ESMEs sent) and
    /// 10.0.0.2 the SMSC leg (what was forwarded).
    #[arg(long, requires = "pcap")]
    server: Option<std::net::IpAddr>,
    /// With --pcap: 1x = recorded timing, 10x = ten times faster, max = as fast as the
    /// window allows.
    #[arg(long, default_value = "1x", requires = "pcap")]
    speed: consentgate::load::pcap::Speed,
    /// Connect over TLS (to the gateway's `listen.smpp_tls` port), trusting the CA
    /// certificates in this PEM file.
    #[arg(long, value_name = "PEM")]
    tls_ca: Option<PathBuf>,
    /// With --tls-ca: the name the server's certificate must carry [default: the --target IP].
    #[arg(long, value_name = "NAME", requires = "tls_ca")]
    tls_server_name: Option<String>,
    /// With --tls-ca: a client certificate (PEM), for a listener with `client_ca`.
    #[arg(long, value_name = "PEM", requires_all = ["tls_ca", "tls_key"])]
    tls_cert: Option<PathBuf>,
    /// With --tls-cert: its private key (PEM).
    #[arg(long, value_name = "PEM", requires_all = ["tls_ca", "tls_cert"])]
    tls_key: Option<PathBuf>,
    /// Write the JSON report here.
    #[arg(long)]
    report: Option<PathBuf>,
    /// Speak CMPP as an SP (to the gateway's `listen.cmpp` port or an ISMG) instead of SMPP:
    /// --system-id is the SP_Id (CONNECT Source_Addr, Msg_src), --password the shared secret
    /// of the MD5 authenticator; the Src_Id is the scenario's source (random traffic: 1069012345);
    /// statuses are SUBMIT_RESP Results.
    /// With --pcap: the capture is read as CMPP (the SUBMITs of the SPs' connections, their
    /// recorded Results), and --port defaults to 7890.
    #[arg(long, value_enum, value_name = "VERSION", conflicts_with = "tls_ca")]
    cmpp: Option<CmppArg>,
}

/// `load --cmpp`: the protocol version of the CONNECT.
#[derive(Clone, Copy, ValueEnum)]
pub enum CmppArg {
    #[value(name = "3.0")]
    V30,
    #[value(name = "2.0")]
    V20,
}

/// `relay`: plain frame-forwarding TCP relay (no SMPP logic).
#[derive(Args)]
pub struct RelayArgs {
    /// Address to accept ESME connections on.
    #[arg(long, value_name = "ADDR")]
    listen: SocketAddr,
    /// Address every connection is relayed to (one upstream connection each).
    #[arg(long, value_name = "ADDR")]
    upstream: SocketAddr,
}

#[derive(Clone, Copy, ValueEnum)]
pub enum BindArg {
    Transmitter,
    Receiver,
    Transceiver,
}

pub async fn smsc_sim(a: SmscSimArgs) -> anyhow::Result<ExitCode> {
    if a.cmpp {
        return cmpp_sim(a).await;
    }
    let SmscSimArgs { listen, no_receipts, delay, dest_errors, mo_every, secrets, active_test_every, .. } = a;
    if !secrets.is_empty() || active_test_every.is_some() {
        eprintln!("--secret and --active-test-every need --cmpp");
        return Ok(ExitCode::from(EX_USAGE));
    }
    let mut errors = HashMap::new();
    for d in dest_errors {
        let Some((dest, st)) = d.split_once('=') else {
            eprintln!("--dest-error {d}: expected DEST=STATUS");
            return Ok(ExitCode::from(EX_USAGE));
        };
        let Some(st) = consentgate::smpp::status::parse(st) else {
            eprintln!("--dest-error {d}: STATUS must be hex (0x..) or decimal");
            return Ok(ExitCode::from(EX_USAGE));
        };
        errors.insert(dest.to_owned(), st);
    }
    let cfg = consentgate::sim::SimConfig {
        listen: listen.unwrap_or_else(|| SocketAddr::from(([127, 0, 0, 1], 2776))),
        receipts: !no_receipts,
        response_delay: delay,
        dest_errors: errors,
        ..Default::default()
    };
    let sim = consentgate::sim::start(cfg).await?;
    println!("smsc-sim listening on {}", sim.local_addr);
    let injector = every(mo_every, |n| {
        let src = format!("86139{:08}", n % 100_000_000);
        sim.inject_mo(None, &src, "1069012345", 0, b"STOP");
    });
    tokio::select! {
        _ = shutdown_signal() => {}
        _ = injector => {}
    }
    sim.shutdown().await;
    Ok(ExitCode::SUCCESS)
}

/// `smsc-sim --cmpp`: the ISMG simulator (`sim::cmpp`).
async fn cmpp_sim(a: SmscSimArgs) -> anyhow::Result<ExitCode> {
    use consentgate::sim::cmpp::{self, CmppSimConfig};
    let SmscSimArgs { listen, no_receipts, delay, dest_errors, mo_every, secrets, active_test_every, .. } = a;
    let mut errors = HashMap::new();
    for d in dest_errors {
        let stat = d.split_once('=').and_then(|(dest, st)| Some((dest, <[u8; 7]>::try_from(st.as_bytes()).ok()?)));
        let Some((dest, stat)) = stat.filter(|(_, st)| st.iter().all(u8::is_ascii_graphic)) else {
            eprintln!(
                "--dest-error {d}: expected DEST=STAT, STAT 7 printable ASCII characters (e.g. UNDELIV, MA:0001)"
            );
            return Ok(ExitCode::from(EX_USAGE));
        };
        errors.insert(dest.to_owned(), stat);
    }
    let mut sps = HashMap::new();
    for s in secrets {
        let Some((sp, secret)) = s.split_once('=').filter(|(sp, _)| !sp.is_empty() && sp.len() <= 6) else {
            eprintln!("--secret: expected SP_ID=SECRET, SP_ID 1 to 6 characters (CMPP Source_Addr)");
            return Ok(ExitCode::from(EX_USAGE));
        };
        sps.insert(sp.to_owned(), secret.to_owned());
    }
    let cfg = CmppSimConfig {
        listen: listen.unwrap_or_else(|| SocketAddr::from(([127, 0, 0, 1], 7890))),
        secrets: sps,
        reports: !no_receipts,
        report_delay: delay,
        dest_errors: errors,
        active_test_every,
        ..Default::default()
    };
    let sim = cmpp::start(cfg).await?;
    println!("cmpp-sim listening on {}", sim.local_addr);
    let injector = every(mo_every, |n| {
        let src = format!("86139{:08}", n % 100_000_000);
        sim.inject_mo(&src, "1069012345", consentgate::cmpp::text::fmt::ASCII, b"TD");
    });
    tokio::select! {
        _ = shutdown_signal() => {}
        _ = injector => {}
    }
    sim.shutdown().await;
    Ok(ExitCode::SUCCESS)
}

/// Calls `f(1)`, `f(2)`, … every `interval`; never returns (pending forever without one).
async fn every(interval: Option<Duration>, mut f: impl FnMut(u64)) {
    let Some(interval) = interval else { return std::future::pending().await };
    let mut t = tokio::time::interval(interval);
    let mut n = 0u64;
    loop {
        t.tick().await;
        n += 1;
        f(n);
    }
}

pub async fn load(a: LoadArgs) -> anyhow::Result<ExitCode> {
    let LoadArgs {
        target,
        system_id,
        password,
        bind_type,
        sessions,
        window,
        count,
        duration,
        rate,
        receipts,
        scenario,
        pcap,
        port,
        server,
        speed,
        report,
        destinations,
        text,
        source,
        tlvs,
        tls_ca,
        tls_server_name,
        tls_cert,
        tls_key,
        cmpp,
    } = a;
    let tls = match tls_ca {
        Some(ca) => {
            let server_name = tls_server_name.unwrap_or_else(|| target.ip().to_string());
            let cfg = consentgate::relay::tls::ClientTlsConfig { ca, server_name, cert: tls_cert, key: tls_key };
            Some(std::sync::Arc::new(consentgate::relay::tls::TlsClient::new(cfg)?))
        }
        None => None,
    };
    let replay = match &pcap {
        Some(p) => {
            let opts = consentgate::load::pcap::ExtractOptions {
                port: port.or(cmpp.map(|_| 7890)),
                server,
                cmpp: cmpp.is_some(),
                ..Default::default()
            };
            let x = consentgate::load::pcap::extract(p, &opts)?;
            Some(std::sync::Arc::new(x))
        }
        None => None,
    };
    let (count, duration) = match replay {
        Some(_) => (count.unwrap_or(0), duration.unwrap_or(Duration::ZERO)),
        None => (count.unwrap_or(100_000), duration.unwrap_or(Duration::from_secs(10))),
    };
    let scenario = match scenario {
        Some(p) => {
            let lines = std::fs::read_to_string(&p).map_err(|e| anyhow::anyhow!("{}: {e}", p.display()))?;
            Some(consentgate::load::parse_scenario(&lines, &p.display().to_string())?)
        }
        None => None,
    };
    let cfg = consentgate::load::LoadConfig {
        target,
        system_id,
        password,
        bind_type: match bind_type {
            BindArg::Transmitter => BindType::Transmitter,
            BindArg::Receiver => BindType::Receiver,
            BindArg::Transceiver => BindType::Transceiver,
        },
        sessions,
        window,
        count,
        duration,
        rate,
        registered_delivery: receipts,
        scenario,
        replay,
        speed,
        destinations,
        text,
        source,
        tlvs,
        tls,
        cmpp: cmpp.map(|v| match v {
            CmppArg::V30 => consentgate::cmpp::Version::V30,
            CmppArg::V20 => consentgate::cmpp::Version::V20,
        }),
        ..Default::default()
    };
    let r = consentgate::load::run(cfg).await?;
    r.print_human();
    if let Some(p) = report {
        std::fs::write(&p, serde_json::to_vec_pretty(&r)?).map_err(|e| anyhow::anyhow!("{}: {e}", p.display()))?;
    }
    // A pipeline step: exit 1 when the run did not go as asked (the report says the same).
    let failures = r.failures();
    if failures.is_empty() {
        Ok(ExitCode::SUCCESS)
    } else {
        eprintln!("load failed: {}", failures.join("; "));
        Ok(ExitCode::FAILURE)
    }
}

pub async fn relay(a: RelayArgs) -> anyhow::Result<ExitCode> {
    let RelayArgs { listen, upstream } = a;
    let l = tokio::net::TcpListener::bind(listen).await?;
    println!("relay listening on {} -> {upstream}", l.local_addr()?);
    consentgate::relay::plain::run(l, upstream, shutdown_signal()).await?;
    Ok(ExitCode::SUCCESS)
}
