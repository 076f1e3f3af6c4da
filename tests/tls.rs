//! TLS on both legs with the real binary (architecture §9). Certificates are made
//! by the `openssl` command for each test (a CA, gateway certificates for 127.0.0.1 /
//! localhost). The ESME side is Python `smpplib` over Python's `ssl` (OpenSSL), the SMSC side
//! the project's simulator behind `tests/interop/tls_terminator.py` (Python `ssl` again), so
//! both of consentgate's TLS legs (rustls) talk to an independent implementation.
//!
//! Checked: a TLS bind, GSM7 and concatenated UCS-2 submits and their receipts through TLS on
//! both legs; the certificate swapped by SIGHUP (new connections see the new one, a bad file
//! is refused and the current one kept); a plaintext client on the TLS port refused without
//! harm; an SMSC certificate from an unknown CA refused at bind; client certificates required
//! by `client_ca`; bad TLS settings refused by `check-config` naming the key and the file;
//! the notAfter the gateway reads from a certificate (`relay::x509`) equals what
//! `openssl x509 -enddate` says, for EC, RSA and Ed25519 keys, UTCTime and GeneralizedTime;
//! `consentgate_tls_certificate_expiry_timestamp_seconds` follows the certificates in force
//! across reloads.

mod common;
mod tools;

use std::io::{BufRead, BufReader, Read, Write};
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use common::conf::{AccountConf, GwConf};
use common::node::free_addr;
use common::Kill;
use consentgate::sim::SimConfig;
use consentgate::smpp::{self, cmd};

const BIN: &str = env!("CARGO_BIN_EXE_consentgate");

fn openssl(dir: &Path, args: &[&str]) {
    let out =
        Command::new("openssl").args(args).current_dir(dir).output().expect("run openssl (apt-get install openssl)");
    assert!(out.status.success(), "openssl {args:?}: {}", String::from_utf8_lossy(&out.stderr));
}

/// A test CA in `dir` and the certificates it issues.
struct Ca {
    dir: PathBuf,
    name: String,
}

impl Ca {
    fn new(dir: &Path, name: &str) -> Ca {
        let (key, pem) = (format!("{name}.key"), format!("{name}.pem"));
        openssl(dir, &["ecparam", "-name", "prime256v1", "-genkey", "-noout", "-out", &key]);
        openssl(
            dir,
            &[
                "req",
                "-x509",
                "-new",
                "-key",
                &key,
                "-out",
                &pem,
                "-days",
                "30",
                "-subj",
                &format!("/CN={name}"),
                "-addext",
                "basicConstraints=critical,CA:TRUE",
                "-addext",
                "keyUsage=critical,keyCertSign,cRLSign",
            ],
        );
        Ca { dir: dir.to_owned(), name: name.to_owned() }
    }

    fn pem(&self) -> PathBuf {
        self.dir.join(format!("{}.pem", self.name))
    }

    /// A certificate for `cn` (SAN localhost and 127.0.0.1): (cert, key).
    fn issue(&self, cn: &str) -> (PathBuf, PathBuf) {
        self.issue_days(cn, 30)
    }

    /// [`Ca::issue`] valid for `days`.
    fn issue_days(&self, cn: &str, days: u32) -> (PathBuf, PathBuf) {
        let d = &self.dir;
        let (key, csr, pem, ext) = (format!("{cn}.key"), format!("{cn}.csr"), format!("{cn}.pem"), format!("{cn}.ext"));
        std::fs::write(
            d.join(&ext),
            "subjectAltName=DNS:localhost,IP:127.0.0.1\nbasicConstraints=CA:FALSE\n\
             keyUsage=critical,digitalSignature\nextendedKeyUsage=serverAuth,clientAuth\n",
        )
        .unwrap();
        openssl(d, &["ecparam", "-name", "prime256v1", "-genkey", "-noout", "-out", &key]);
        // PKCS#8, the form most deployments hand over.
        openssl(d, &["pkcs8", "-topk8", "-nocrypt", "-in", &key, "-out", &format!("{key}.p8")]);
        openssl(d, &["req", "-new", "-key", &key, "-out", &csr, "-subj", &format!("/CN={cn}")]);
        openssl(
            d,
            &[
                "x509",
                "-req",
                "-in",
                &csr,
                "-CA",
                &format!("{}.pem", self.name),
                "-CAkey",
                &format!("{}.key", self.name),
                "-CAcreateserial",
                "-out",
                &pem,
                "-days",
                &days.to_string(),
                "-extfile",
                &ext,
            ],
        );
        (d.join(pem), d.join(format!("{key}.p8")))
    }
}

/// `tests/interop/tls_terminator.py` in front of `upstream`: its TLS port.
struct Terminator {
    _child: Kill,
    addr: SocketAddr,
}

fn terminator(cert: &Path, key: &Path, upstream: SocketAddr) -> Terminator {
    let script = concat!(env!("CARGO_MANIFEST_DIR"), "/tests/interop/tls_terminator.py");
    let mut child = Command::new(tools::python())
        .arg(script)
        .arg(cert)
        .arg(key)
        .arg(upstream.ip().to_string())
        .arg(upstream.port().to_string())
        .stdout(Stdio::piped())
        .stderr(Stdio::null())
        .spawn()
        .expect("spawn the TLS terminator");
    let mut line = String::new();
    BufReader::new(child.stdout.take().unwrap()).read_line(&mut line).expect("terminator's PORT line");
    let port: u16 = line.trim().strip_prefix("PORT ").and_then(|p| p.parse().ok()).expect("PORT <n>");
    Terminator { _child: Kill(child), addr: ([127, 0, 0, 1], port).into() }
}

/// A written gateway config and its (free) addresses.
struct Conf {
    path: PathBuf,
    smpp: SocketAddr,
    smpp_tls: SocketAddr,
    admin: SocketAddr,
}

/// The gateway's config: plain and TLS listeners (on free ports) serving `cert`/`key`, the
/// upstream at `upstream`; `f` adds the rest (`[upstream.tls]`, `client_ca`, ...).
fn write_config(dir: &Path, cert: &Path, key: &Path, upstream: SocketAddr, f: impl FnOnce(GwConf) -> GwConf) -> Conf {
    let (smpp, smpp_tls, admin) = (free_addr(), free_addr(), free_addr());
    let path = dir.join("gateway.toml");
    let c = GwConf::new(smpp, admin, upstream)
        .listen_tls(smpp_tls, cert, key)
        .set("policy", "on_snapshot_unavailable = \"allow\"")
        .account(AccountConf::marketing("acme").entity("acme-retail").licence("B2-1"));
    f(c).write(&path);
    Conf { path, smpp, smpp_tls, admin }
}

/// `client_ca` in `[listen.tls]`: ESMEs must show a certificate from `ca`.
fn client_ca(c: GwConf, ca: &Path) -> GwConf {
    c.set("listen.tls", &format!("client_ca = \"{}\"", ca.display()))
}

async fn start(conf: &Path, admin: SocketAddr) -> Kill {
    let mut child = Kill(common::spawn_gateway(conf));
    let deadline = Instant::now() + Duration::from_secs(20);
    while Instant::now() < deadline {
        if let Ok((200, _)) = consentgate::admin::request(admin, "GET", "/livez", None, None).await {
            return child;
        }
        if let Some(st) = child.0.try_wait().unwrap() {
            panic!("consentgate exited at start: {st}");
        }
        tokio::time::sleep(Duration::from_millis(25)).await;
    }
    panic!("consentgate did not come up");
}

async fn metric(admin: SocketAddr, series: &str) -> f64 {
    let (_, text) = consentgate::admin::request(admin, "GET", "/metrics", None, None).await.unwrap();
    text.lines()
        .find(|l| l.starts_with(series))
        .and_then(|l| l.rsplit(' ').next())
        .and_then(|v| v.parse().ok())
        .unwrap_or(0.0)
}

fn signal(child: &Kill, sig: &str) {
    let st = Command::new("kill").args([sig, &child.0.id().to_string()]).status().unwrap();
    assert!(st.success());
}

async fn wait_metric(admin: SocketAddr, series: &str, want: f64) {
    let deadline = Instant::now() + Duration::from_secs(10);
    while metric(admin, series).await < want {
        assert!(Instant::now() < deadline, "{series} did not reach {want}");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn smpplib_over_tls_through_to_a_tls_smsc_and_certificates_reloaded_on_sighup() {
    let py = tools::require_smpplib().await;
    let dir = tempfile::tempdir().unwrap();
    let ca = Ca::new(dir.path(), "test-ca");
    let (gw1, gw1_key) = ca.issue("gateway-1");
    let (gw2, gw2_key) = ca.issue("gateway-2");
    let (smsc, smsc_key) = ca.issue("smsc");
    // The files the gateway reads; replaced in place for the reload.
    let (cert, key) = (dir.path().join("gw.pem"), dir.path().join("gw.key"));
    std::fs::copy(&gw1, &cert).unwrap();
    std::fs::copy(&gw1_key, &key).unwrap();

    let sim = consentgate::sim::start(SimConfig { record: true, ..SimConfig::default() }).await.unwrap();
    let term = terminator(&smsc, &smsc_key, sim.local_addr);
    let conf = write_config(dir.path(), &cert, &key, term.addr, |c| c.upstream_tls(&ca.pem(), "localhost"));
    let (smpp, smpp_tls, admin) = (conf.smpp, conf.smpp_tls, conf.admin);
    let gw = start(&conf.path, admin).await;

    let tls_arg = format!("tls:{}:localhost", ca.pem().display());
    let r = tools::run_client(&py, smpp_tls, &[&tls_arg]).await;
    assert_eq!(r["bound"], true, "{r}");
    assert_eq!(r["tls"]["peer_cn"], "gateway-1", "{r}");
    let resps = r["submit_resp"].as_array().unwrap();
    assert_eq!(resps.len(), 3, "{r}");
    assert!(resps.iter().all(|x| x["status"] == 0), "{r}");
    assert_eq!(r["receipts"].as_array().unwrap().len(), 3, "receipts back through both TLS legs: {r}");
    assert_eq!(r["unbind_ok"], true, "{r}");
    let subs = sim.recorded().into_iter().filter(|(_, f)| smpp::command_id(f) == cmd::SUBMIT_SM).count();
    assert_eq!(subs, 3, "the submits reached the SMSC through the upstream TLS leg");
    assert!(metric(admin, "consentgate_tls_handshakes_total{leg=\"esme\",result=\"ok\"}").await >= 1.0);
    assert!(metric(admin, "consentgate_tls_handshakes_total{leg=\"smsc\",result=\"ok\"}").await >= 1.0);
    eprintln!("TLS: {} {} through both legs", r["tls"]["version"], r["tls"]["cipher"]);

    // A plaintext SMPP client on the TLS port: refused (a TLS alert, then closed), nothing
    // reaches the SMSC, the plain port and TLS keep working.
    {
        let mut s = std::net::TcpStream::connect(smpp_tls).unwrap();
        s.set_read_timeout(Some(Duration::from_secs(5))).unwrap();
        s.write_all(&consentgate::smpp::pdu::encode_bind(consentgate::smpp::BindType::Transceiver, 1, "acme", "x"))
            .unwrap();
        let mut got = Vec::new();
        let _ = s.read_to_end(&mut got);
        assert!(got.is_empty() || got[0] == 0x15, "a TLS alert or nothing, never SMPP: {got:02x?}");
    }
    wait_metric(admin, "consentgate_tls_handshakes_total{leg=\"esme\",result=\"failed\"}", 1.0).await;
    let mut plain = common::Esme::bound(smpp, "acme").await;
    let seq = plain.submit(&common::submit_to("8613800000001")).await;
    let resp = plain.recv_where(|f| smpp::command_id(f) == cmd::SUBMIT_SM_RESP && smpp::sequence(f) == seq).await;
    assert_eq!(smpp::command_status(&resp), 0, "the plain listener serves alongside");

    // SIGHUP: the new certificate for new connections.
    std::fs::copy(&gw2, &cert).unwrap();
    std::fs::copy(&gw2_key, &key).unwrap();
    signal(&gw, "-HUP");
    wait_metric(admin, "consentgate_tls_reloads_total{result=\"ok\"}", 2.0).await; // both legs
    let r = tools::run_client(&py, smpp_tls, &[&tls_arg]).await;
    assert_eq!(r["tls"]["peer_cn"], "gateway-2", "reloaded certificate served: {r}");
    assert_eq!(r["bound"], true, "{r}");
    // A broken file: refused, the current certificate keeps serving.
    std::fs::write(&cert, "not a certificate\n").unwrap();
    signal(&gw, "-HUP");
    wait_metric(admin, "consentgate_tls_reloads_total{result=\"refused\"}", 1.0).await;
    let r = tools::run_client(&py, smpp_tls, &[&tls_arg]).await;
    assert_eq!(r["tls"]["peer_cn"], "gateway-2", "{r}");
    assert!(r["submit_resp"].as_array().unwrap().iter().all(|x| x["status"] == 0), "{r}");
    drop(gw);
}

/// The SMSC's certificate is not from the configured CA: the bind is refused (ESME_RSYSERR),
/// the failed handshake counted; nothing is sent in clear.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_untrusted_smsc_certificate_refuses_the_bind() {
    let dir = tempfile::tempdir().unwrap();
    let ca = Ca::new(dir.path(), "real-ca");
    let other = Ca::new(dir.path(), "other-ca");
    let (gw, gw_key) = ca.issue("gateway");
    let (smsc, smsc_key) = other.issue("smsc-elsewhere");
    let sim = consentgate::sim::start(SimConfig::default()).await.unwrap();
    let term = terminator(&smsc, &smsc_key, sim.local_addr);
    let conf = write_config(dir.path(), &gw, &gw_key, term.addr, |c| c.upstream_tls(&ca.pem(), "localhost"));
    let (smpp, admin) = (conf.smpp, conf.admin);
    let _gw = start(&conf.path, admin).await;
    let mut e = common::Esme::connect(smpp).await;
    assert_eq!(e.bind(consentgate::smpp::BindType::Transceiver, "acme", "pw").await, smpp::status::ESME_RSYSERR);
    assert_eq!(metric(admin, "consentgate_tls_handshakes_total{leg=\"smsc\",result=\"failed\"}").await, 1.0);
    assert_eq!(sim.stats.binds.load(std::sync::atomic::Ordering::SeqCst), 0);
}

/// `client_ca`: an ESME without a certificate from that CA is refused at the handshake; with
/// one it binds. (The client here is consentgate's own TLS client with a client certificate.)
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn client_certificates_required_by_client_ca() {
    let dir = tempfile::tempdir().unwrap();
    let ca = Ca::new(dir.path(), "esme-ca");
    let (gw, gw_key) = ca.issue("gateway");
    let (esme, esme_key) = ca.issue("esme-acme");
    let sim = consentgate::sim::start(SimConfig::default()).await.unwrap();
    let conf = write_config(dir.path(), &gw, &gw_key, sim.local_addr, |c| client_ca(c, &ca.pem()));
    let (smpp_tls, admin) = (conf.smpp_tls, conf.admin);
    let _gw = start(&conf.path, admin).await;
    let client = |cert: Option<(&Path, &Path)>| {
        consentgate::relay::TlsClient::new(consentgate::relay::ClientTlsConfig {
            ca: ca.pem(),
            server_name: "localhost".into(),
            cert: cert.map(|c| c.0.to_owned()),
            key: cert.map(|c| c.1.to_owned()),
        })
        .unwrap()
    };
    let bind_over = |c: consentgate::relay::TlsClient| async move {
        let tcp = tokio::net::TcpStream::connect(smpp_tls).await.unwrap();
        let mut t = consentgate::relay::Transport::Tls(Box::new(c.connect(tcp, Duration::from_secs(5)).await?));
        t.write_all(&consentgate::smpp::pdu::encode_bind(consentgate::smpp::BindType::Transceiver, 1, "acme", "pw"))
            .await?;
        let mut buf = bytes::BytesMut::with_capacity(256);
        while buf.len() < 16 || buf.len() < u32::from_be_bytes([buf[0], buf[1], buf[2], buf[3]]) as usize {
            if tokio::time::timeout(Duration::from_secs(5), t.read_buf(&mut buf))
                .await
                .map_err(std::io::Error::other)??
                == 0
            {
                return Err(std::io::Error::from(std::io::ErrorKind::UnexpectedEof));
            }
        }
        Ok::<u32, std::io::Error>(smpp::command_status(&buf))
    };
    // TLS 1.3: the server checks the client's certificate after the client has finished, so
    // the refusal shows as the connection failing at the first read or write.
    assert!(bind_over(client(None)).await.is_err(), "no client certificate: refused");
    assert_eq!(bind_over(client(Some((&esme, &esme_key)))).await.unwrap(), 0, "with a client certificate: bound");
    wait_metric(admin, "consentgate_tls_handshakes_total{leg=\"esme\",result=\"failed\"}", 1.0).await;
}

/// `consentgate load --tls-ca` (the load generator the TLS benchmark uses, a separate process)
/// through the TLS listener with a client certificate (`client_ca`): a window of 2 000 per
/// session puts more ciphertext in flight than rustls buffers (64 KiB), so both sides go
/// through "socket full, records still queued"; every submit answered once, every receipt
/// back. Without the client certificate the same run gets nothing through.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_load_generator_over_tls_with_a_client_certificate() {
    let dir = tempfile::tempdir().unwrap();
    let ca = Ca::new(dir.path(), "esme-ca");
    let (gw, gw_key) = ca.issue("gateway");
    let (esme, esme_key) = ca.issue("esme-acme");
    let sim = consentgate::sim::start(SimConfig::default()).await.unwrap();
    // The gateway's window as large as the load's.
    let conf = write_config(dir.path(), &gw, &gw_key, sim.local_addr, |c| {
        client_ca(c, &ca.pem()).set("session", "window = 2000")
    });
    let (smpp_tls, admin) = (conf.smpp_tls, conf.admin);
    let _gw = start(&conf.path, admin).await;
    let report = dir.path().join("load.json");
    let run = |client_cert: bool| {
        let mut c = Command::new(BIN);
        c.args(["load", "--target", &smpp_tls.to_string(), "--system-id", "acme", "--password", "pw"])
            .args(["--sessions", "2", "--window", "2000", "--count", "40000", "--duration", "60s", "--receipts"])
            .args(["--tls-ca", &ca.pem().display().to_string(), "--tls-server-name", "localhost"])
            .arg("--report")
            .arg(&report);
        if client_cert {
            c.arg("--tls-cert").arg(&esme).arg("--tls-key").arg(&esme_key);
        }
        let out = c.output().unwrap();
        // `load` exits 1 when a bind fails or a submit goes unanswered (a pipeline step).
        assert_eq!(out.status.success(), client_cert, "load: {}", String::from_utf8_lossy(&out.stderr));
        serde_json::from_slice::<serde_json::Value>(&std::fs::read(&report).unwrap()).unwrap()
    };
    let r = run(true);
    assert_eq!(r["tls"], true, "{r}");
    assert_eq!(r["sent"], 40_000, "{r}");
    assert_eq!(r["responses"], 40_000, "{r}");
    assert_eq!(r["unanswered"], 0, "{r}");
    assert_eq!(r["statuses"]["0x00000000"], 40_000, "{r}");
    assert_eq!(r["receipts"], 40_000, "every receipt back through TLS: {r}");
    assert_eq!(r["errors"].as_array().unwrap().len(), 0, "{r}");
    assert_eq!(sim.stats.submits.load(std::sync::atomic::Ordering::SeqCst), 40_000);
    assert_eq!(metric(admin, "consentgate_tls_handshakes_total{leg=\"esme\",result=\"ok\"}").await, 2.0);

    let r = run(false);
    assert_eq!(r["responses"], 0, "no client certificate, nothing answered: {r}");
    assert!(!r["errors"].as_array().unwrap().is_empty(), "{r}");
    assert_eq!(sim.stats.submits.load(std::sync::atomic::Ordering::SeqCst), 40_000, "nothing more reached the SMSC");
}

/// Bad TLS settings are refused before anything starts, naming the key and the file.
#[test]
fn check_config_names_the_tls_key_and_file() {
    let dir = tempfile::tempdir().unwrap();
    let missing = dir.path().join("nowhere.pem");
    let conf = write_config(dir.path(), &missing, &missing, "127.0.0.1:1".parse().unwrap(), |c| {
        c.set("upstream.tls", "server_name = \"smsc\"")
    });
    let out = Command::new(BIN).arg("check-config").arg(&conf.path).output().unwrap();
    assert_eq!(out.status.code(), Some(64));
    let text = String::from_utf8_lossy(&out.stderr).into_owned() + &String::from_utf8_lossy(&out.stdout);
    assert!(text.contains("listen.tls.cert") && text.contains("nowhere.pem"), "{text}");
    assert!(text.contains("upstream.tls.ca"), "{text}");
}

/// `openssl x509 -enddate` of a PEM certificate, in Unix seconds.
fn openssl_not_after(pem: &Path) -> i64 {
    let out = Command::new("openssl")
        .args(["x509", "-noout", "-enddate", "-dateopt", "iso_8601", "-in"])
        .arg(pem)
        .output()
        .expect("run openssl");
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    let text = String::from_utf8_lossy(&out.stdout);
    let iso = text.trim().strip_prefix("notAfter=").unwrap_or_else(|| panic!("{text}"));
    consentgate::time::parse_timestamp_ms(iso.as_bytes()).unwrap_or_else(|| panic!("{iso}")) / 1000
}

/// The DER of a PEM certificate, converted by openssl.
fn der_of(dir: &Path, pem: &Path) -> Vec<u8> {
    let der = dir.join("cert.der");
    openssl(dir, &["x509", "-in", &pem.display().to_string(), "-outform", "DER", "-out", &der.display().to_string()]);
    std::fs::read(der).unwrap()
}

/// `relay::x509::not_after` on certificates made by openssl agrees with openssl to the
/// second: EC, RSA and Ed25519 keys, a CA-issued certificate with extensions, UTCTime
/// (before 2050) and GeneralizedTime (from 2050) notAfter.
#[test]
fn not_after_agrees_with_openssl() {
    let dir = tempfile::tempdir().unwrap();
    let d = dir.path();
    let ca = Ca::new(d, "ca");
    let mut pems = vec![(ca.pem(), 30), (ca.issue_days("leaf-ec", 45).0, 45)];
    for (name, newkey, days) in [("rsa", "rsa:2048", 400), ("ed25519", "ed25519", 9000), ("far", "ed25519", 20000)] {
        let pem = d.join(format!("{name}.pem"));
        let key = d.join(format!("{name}.key"));
        openssl(
            d,
            &[
                "req",
                "-x509",
                "-newkey",
                newkey,
                "-nodes",
                "-keyout",
                &key.display().to_string(),
                "-out",
                &pem.display().to_string(),
                "-days",
                &days.to_string(),
                "-subj",
                &format!("/CN={name}"),
            ],
        );
        pems.push((pem, days));
    }
    let now = consentgate::time::unix_us() / 1_000_000;
    for (pem, days) in pems {
        let got =
            consentgate::relay::x509::not_after(&der_of(d, &pem)).unwrap_or_else(|e| panic!("{}: {e}", pem.display()));
        assert_eq!(got, openssl_not_after(&pem), "{}", pem.display());
        // -days N from about now (openssl stamps notBefore at its own clock).
        let expect = now + i64::from(days) * 86_400;
        assert!((got - expect).abs() < 300, "{}: {got} vs now + {days} d = {expect}", pem.display());
    }
}

/// The expiry gauges: the served certificate (`esme`) and the upstream client certificate
/// (`smsc`) at start; a served chain counts by its earliest certificate; a SIGHUP with a new
/// certificate moves the gauge, a refused reload leaves it. The handshake failure counters
/// of both TLS legs exist at 0 from the start.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn certificate_expiry_gauges_follow_the_certificates_in_force() {
    let dir = tempfile::tempdir().unwrap();
    let d = dir.path();
    let ca = Ca::new(d, "expiry-ca");
    let (short, short_key) = ca.issue_days("gw-short", 10);
    let (long, long_key) = ca.issue_days("gw-long", 400);
    let (client, client_key) = ca.issue_days("gw-client", 20);
    let (cert, key) = (d.join("gw.pem"), d.join("gw.key"));
    std::fs::copy(&short, &cert).unwrap();
    std::fs::copy(&short_key, &key).unwrap();
    let sim = consentgate::sim::start(SimConfig::default()).await.unwrap();
    let conf = write_config(d, &cert, &key, sim.local_addr, |c| {
        c.upstream_tls(&ca.pem(), "localhost")
            .set("upstream.tls", &format!("cert = {:?}", client.display().to_string()))
            .set("upstream.tls", &format!("key = {:?}", client_key.display().to_string()))
    });
    let gw = start(&conf.path, conf.admin).await;
    let esme = "consentgate_tls_certificate_expiry_timestamp_seconds{leg=\"esme\"}";
    let smsc = "consentgate_tls_certificate_expiry_timestamp_seconds{leg=\"smsc\"}";
    assert_eq!(metric(conf.admin, esme).await, openssl_not_after(&short) as f64);
    assert_eq!(metric(conf.admin, smsc).await, openssl_not_after(&client) as f64);
    let (_, text) = consentgate::admin::request(conf.admin, "GET", "/metrics", None, None).await.unwrap();
    for leg in ["esme", "smsc"] {
        let series = format!("consentgate_tls_handshakes_total{{leg=\"{leg}\",result=\"failed\"}} 0\n");
        assert!(text.contains(&series), "{series} missing:\n{text}");
    }

    // The 400-day certificate followed by its CA (30 days): the chain expires with the CA.
    std::fs::write(&cert, std::fs::read_to_string(&long).unwrap() + &std::fs::read_to_string(ca.pem()).unwrap())
        .unwrap();
    std::fs::copy(&long_key, &key).unwrap();
    signal(&gw, "-HUP");
    wait_metric(conf.admin, "consentgate_tls_reloads_total{result=\"ok\"}", 2.0).await;
    assert_eq!(metric(conf.admin, esme).await, openssl_not_after(&ca.pem()) as f64);
    // The leaf alone: its own notAfter.
    std::fs::copy(&long, &cert).unwrap();
    signal(&gw, "-HUP");
    wait_metric(conf.admin, "consentgate_tls_reloads_total{result=\"ok\"}", 4.0).await;
    let long_after = openssl_not_after(&long) as f64;
    assert_eq!(metric(conf.admin, esme).await, long_after);
    // Refused: the certificate in force, and its gauge, stay.
    std::fs::write(&cert, "not a certificate\n").unwrap();
    signal(&gw, "-HUP");
    wait_metric(conf.admin, "consentgate_tls_reloads_total{result=\"refused\"}", 1.0).await;
    assert_eq!(metric(conf.admin, esme).await, long_after);
    assert_eq!(metric(conf.admin, smsc).await, openssl_not_after(&client) as f64);
}
