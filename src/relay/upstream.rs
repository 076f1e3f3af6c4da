//! The upstream SMSC: its validated config (`[upstream]`), the paired upstream bind
//! ([`bind_upstream`]) and the reachability probe ([`probe`]).

use std::io;
use std::time::Duration;

use bytes::BytesMut;
use tokio::net::TcpStream;

use super::tls::{ClientTlsConfig, TlsClient};
use super::Transport;

use crate::smpp::frame::{Framer, Next};
use crate::smpp::{self, cmd, HEADER_LEN};

/// Default time allowed to connect to the upstream SMSC.
pub const DEFAULT_CONNECT_TIMEOUT: Duration = Duration::from_secs(5);
/// Default time the SMSC has to answer a bind.
pub const DEFAULT_BIND_TIMEOUT: Duration = Duration::from_secs(10);
/// Default time the SMSC has to answer one request.
pub const DEFAULT_RESPONSE_TIMEOUT: Duration = Duration::from_secs(30);
/// Default idle time before consentgate sends its own enquire_link upstream.
pub const DEFAULT_ENQUIRE_LINK_INTERVAL: Duration = Duration::from_secs(30);

/// The validated `[upstream]` section.
#[derive(Debug, Clone)]
pub struct UpstreamConfig {
    /// The carrier SMSC (host:port; resolved at connect time).
    pub address: String,
    pub connect_timeout: Duration,
    /// Time the SMSC has to answer a bind.
    pub bind_timeout: Duration,
    /// Time the SMSC has to answer any other request before the ESME is answered with
    /// `response_timeout_status`.
    pub response_timeout: Duration,
    pub response_timeout_status: u32,
    /// Idle time on the upstream leg before consentgate sends its own enquire_link.
    pub enquire_link_interval: Duration,
    /// `[upstream.tls]` (enabled): TLS towards the SMSC.
    pub tls: Option<ClientTlsConfig>,
    /// `[upstream.cmpp]`: the ISMG the CMPP front relays to (`None`: no CMPP front).
    pub cmpp: Option<CmppUpstreamConfig>,
}

/// `[upstream.cmpp]`: the carrier's ISMG (互联网短信网关) behind the CMPP front, and the link
/// timers of CMPP 3.0 §7.1 (T, N, C) and its window (W).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct CmppUpstreamConfig {
    /// host:port, resolved at connect time.
    pub address: String,
    pub connect_timeout: Duration,
    /// T: how long a request may go unanswered (60 s in the standard). An SP's SUBMIT the
    /// ISMG never answers is answered SUBMIT_RESP Result 8 (flow control: the SP resends).
    pub response_timeout: Duration,
    /// C: the idle time on a leg after which consentgate sends its own ACTIVE_TEST (3 min).
    pub active_test_interval: Duration,
    /// N: ACTIVE_TESTs unanswered in a row after which the leg counts as dead (3).
    pub active_test_retries: u32,
    /// W: SUBMITs in flight to the ISMG per SP connection (16); beyond, the SP gets Result 8.
    pub window: u32,
}

/// Defaults of [`CmppUpstreamConfig`] (the standard's T, C, N, W).
pub const CMPP_RESPONSE_TIMEOUT: Duration = Duration::from_secs(60);
pub const CMPP_ACTIVE_TEST_INTERVAL: Duration = Duration::from_secs(180);
pub const CMPP_ACTIVE_TEST_RETRIES: u32 = 3;
pub const CMPP_WINDOW: u32 = 16;

/// Why the upstream SMSC did not accept a TCP connection.
#[derive(Debug, thiserror::Error)]
pub enum ProbeError {
    #[error("{address}: {source}")]
    Connect {
        address: String,
        #[source]
        source: io::Error,
    },
    #[error("{address}: no connection within {timeout:?}")]
    Timeout { address: String, timeout: Duration },
}

/// Whether the upstream SMSC accepts a TCP connection (closed at once; no bind), within its
/// connect timeout capped at 2 s.
pub async fn probe(upstream: &UpstreamConfig) -> Result<(), ProbeError> {
    let (address, timeout) = (&upstream.address, upstream.connect_timeout.min(Duration::from_secs(2)));
    match tokio::time::timeout(timeout, TcpStream::connect(address)).await {
        Ok(Ok(_)) => Ok(()),
        Ok(Err(source)) => Err(ProbeError::Connect { address: address.clone(), source }),
        Err(_) => Err(ProbeError::Timeout { address: address.clone(), timeout }),
    }
}

/// Why the paired upstream bind did not succeed.
#[derive(Debug, thiserror::Error)]
pub enum UpstreamBindError {
    /// The SMSC could not be reached within the connect timeout, or the connection failed.
    #[error("upstream unreachable: {0}")]
    Unreachable(io::Error),
    /// The SMSC did not answer the bind in time.
    #[error("upstream bind timed out")]
    Timeout,
    /// The SMSC answered with something that is not a bind response.
    #[error("upstream answered the bind with command 0x{0:08x}")]
    Protocol(u32),
    /// The SMSC closed the connection during the bind.
    #[error("upstream closed the connection during bind")]
    Closed,
    /// The TLS handshake with the SMSC failed (certificate, protocol, timeout).
    #[error("upstream TLS handshake: {0}")]
    Tls(io::Error),
}

/// A bound (or refused) upstream connection.
#[derive(Debug)]
pub struct UpstreamBind {
    pub stream: Transport,
    /// The SMSC's bind response frame, as received (sequence number 1).
    pub resp: BytesMut,
    /// Bytes the SMSC sent after the bind response.
    pub rest: BytesMut,
}

/// Opens the paired upstream session: connects to `address` and sends the ESME's own bind
/// frame (its bytes unchanged but for sequence number 1), then waits for the bind response.
/// The caller relays the response's status to the ESME, whatever it is. With `tls`, the TLS
/// handshake (within the bind timeout) comes first; its result is counted in
/// `consentgate_tls_handshakes_total{leg="smsc"}`.
pub async fn bind_upstream(
    cfg: &UpstreamConfig,
    tls: Option<&TlsClient>,
    bind_frame: &[u8],
    max_pdu_bytes: usize,
) -> Result<UpstreamBind, UpstreamBindError> {
    let tcp = match tokio::time::timeout(cfg.connect_timeout, TcpStream::connect(&cfg.address)).await {
        Ok(Ok(s)) => s,
        Ok(Err(e)) => return Err(UpstreamBindError::Unreachable(e)),
        Err(_) => return Err(UpstreamBindError::Unreachable(io::ErrorKind::TimedOut.into())),
    };
    let mut stream = match tls {
        None => Transport::tcp(tcp),
        Some(t) => {
            let r = t.connect(tcp, cfg.bind_timeout).await;
            let result = if r.is_ok() { "ok" } else { "failed" };
            metrics::counter!(crate::telemetry::metrics::TLS_HANDSHAKES_TOTAL, "leg" => "smsc", "result" => result)
                .increment(1);
            Transport::Tls(Box::new(r.map_err(UpstreamBindError::Tls)?))
        }
    };
    let mut frame = BytesMut::from(bind_frame);
    smpp::set_sequence(&mut frame, 1);
    let expect = smpp::command_id(bind_frame) | smpp::RESP_BIT;
    let exchange = async {
        stream.write_all(&frame).await.map_err(UpstreamBindError::Unreachable)?;
        let mut buf = BytesMut::with_capacity(1024);
        let mut framer = Framer::new(max_pdu_bytes);
        loop {
            match framer.next(&buf) {
                Next::Frame(len) => {
                    let f = buf.split_to(len);
                    let id = smpp::command_id(&f);
                    if id == expect || (id == cmd::GENERIC_NACK && f.len() >= HEADER_LEN) {
                        return Ok((f, buf));
                    }
                    if id == cmd::ENQUIRE_LINK {
                        // Some SMSCs probe before answering the bind.
                        let mut r = BytesMut::new();
                        smpp::pdu::put_header_only(&mut r, cmd::ENQUIRE_LINK_RESP, 0, smpp::sequence(&f));
                        stream.write_all(&r).await.map_err(UpstreamBindError::Unreachable)?;
                        continue;
                    }
                    return Err(UpstreamBindError::Protocol(id));
                }
                Next::Incomplete => {
                    let n = stream.read_buf(&mut buf).await.map_err(UpstreamBindError::Unreachable)?;
                    if n == 0 {
                        return Err(UpstreamBindError::Closed);
                    }
                }
                _ => return Err(UpstreamBindError::Protocol(0)),
            }
        }
    };
    let (resp, rest) =
        tokio::time::timeout(cfg.bind_timeout, exchange).await.map_err(|_| UpstreamBindError::Timeout)??;
    Ok(UpstreamBind { stream, resp, rest })
}
