//! The bind phase of an ESME connection: admission against the account registry, then the
//! paired upstream bind with the ESME's own credentials, whose answer is relayed back.
//!
//! Before a successful bind only bind_*, enquire_link and unbind are served; any other
//! request is answered ESME_RINVBNDSTS and unknown command ids get generic_nack. A refused
//! bind leaves the connection open so the ESME may retry, until `session.bind_timeout`.

use std::net::SocketAddr;

use bytes::{Buf, BytesMut};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;
use tokio::sync::watch;
use tracing::{debug, info, warn};

use super::Bound;
use crate::config::{self, Config};
use crate::relay::{bind_upstream, Leg};
use crate::smpp::frame::{Framer, Next};
use crate::smpp::pdu::{decode_bind, encode_bind_resp, put_header_only, put_local_error_resp};
use crate::smpp::{self, cmd, status, BindType};

/// Runs the bind phase; returns the bound session, or `None` when the connection ended.
pub(crate) async fn accept_bind(
    mut stream: TcpStream,
    peer: SocketAddr,
    config: &Config,
    shutdown: &mut watch::Receiver<bool>,
) -> Option<Bound> {
    let deadline = tokio::time::Instant::now() + config.session.bind_timeout;
    let mut framer = Framer::new(config.session.max_pdu_bytes);
    let mut rbuf = BytesMut::with_capacity(4096);
    let mut out = BytesMut::new();
    loop {
        // Serve every complete PDU already buffered.
        loop {
            match framer.next(&rbuf) {
                Next::Frame(len) => {
                    let frame = rbuf.split_to(len);
                    let id = smpp::command_id(&frame);
                    let seq = smpp::sequence(&frame);
                    match id {
                        cmd::BIND_TRANSMITTER | cmd::BIND_RECEIVER | cmd::BIND_TRANSCEIVER => {
                            match bind_one(&frame, peer, config).await {
                                Ok((up, resp)) => {
                                    out.extend_from_slice(&resp);
                                    if stream.write_all(&out).await.is_err() {
                                        return None;
                                    }
                                    let mut down = Leg::new(stream, config.session.max_pdu_bytes, rbuf);
                                    down.framer = framer;
                                    return Some(Bound {
                                        down,
                                        up: up.0,
                                        account: up.1,
                                        bind_type: up.2,
                                        peer,
                                        bind: frame.to_vec(),
                                        bind_resp: resp.to_vec(),
                                    });
                                }
                                Err(resp) => out.extend_from_slice(&resp),
                            }
                        }
                        cmd::ENQUIRE_LINK => put_header_only(&mut out, cmd::ENQUIRE_LINK_RESP, 0, seq),
                        cmd::UNBIND => {
                            put_header_only(&mut out, cmd::UNBIND_RESP, 0, seq);
                            let _ = stream.write_all(&out).await;
                            let _ = stream.shutdown().await;
                            return None;
                        }
                        id if id & smpp::RESP_BIT != 0 => {}
                        id if smpp::is_known_command(id) => {
                            put_local_error_resp(&mut out, id, status::ESME_RINVBNDSTS, seq)
                        }
                        _ => put_header_only(&mut out, cmd::GENERIC_NACK, status::ESME_RINVCMDID, seq),
                    }
                }
                Next::Skip(n) => rbuf.advance(n),
                Next::TooLong { sequence, .. } => {
                    put_header_only(&mut out, cmd::GENERIC_NACK, status::ESME_RINVCMDLEN, sequence)
                }
                Next::TooShort { .. } => {
                    put_header_only(&mut out, cmd::GENERIC_NACK, status::ESME_RINVCMDLEN, 0);
                    let _ = stream.write_all(&out).await;
                    return None;
                }
                Next::Incomplete => break,
            }
        }
        if !out.is_empty() {
            if stream.write_all(&out).await.is_err() {
                return None;
            }
            out.clear();
        }
        rbuf.reserve(4096);
        tokio::select! {
            r = stream.read_buf(&mut rbuf) => match r {
                Ok(0) | Err(_) => return None,
                Ok(_) => {}
            },
            _ = tokio::time::sleep_until(deadline) => {
                debug!(peer = %peer, "no bind within session.bind_timeout; closing");
                return None;
            }
            _ = shutdown.changed() => return None,
        }
    }
}

type Admitted = (Leg, config::Account, BindType);

/// Handles one bind request. Ok = bound (the upstream leg and the response bytes for the
/// ESME); Err = the response bytes of a refusal.
async fn bind_one(frame: &[u8], peer: SocketAddr, config: &Config) -> Result<(Admitted, BytesMut), BytesMut> {
    let seq = smpp::sequence(frame);
    let bind_type = BindType::from_command(smpp::command_id(frame)).expect("bind command id");
    let req = match decode_bind(frame) {
        Ok(r) => r,
        Err(e) => {
            debug!(peer = %peer, error = %e, "malformed bind");
            return Err(encode_bind_resp(bind_type, status::ESME_RBINDFAIL, seq, ""));
        }
    };
    let label = if config.accounts.contains_key(&req.system_id) { req.system_id.clone() } else { "unknown".to_owned() };
    let count = |result: &'static str| {
        metrics::counter!(crate::telemetry::metrics::BINDS_TOTAL, "account" => label.clone(), "result" => result)
            .increment(1)
    };
    let account = match config.admit(&req.system_id, bind_type, config::today()) {
        Ok(a) => a.clone(),
        Err(refusal) => {
            count("refused");
            info!(peer = %peer, system_id = %req.system_id, bind = bind_type.as_str(), reason = refusal.as_str(), "bind refused");
            return Err(encode_bind_resp(bind_type, refusal.status(), seq, ""));
        }
    };
    let up = match bind_upstream(
        &config.upstream.address,
        frame,
        config.upstream.connect_timeout,
        config.upstream.bind_timeout,
        config.session.max_pdu_bytes,
    )
    .await
    {
        Ok(u) => u,
        Err(e) => {
            count("upstream_unreachable");
            static LIMIT: crate::telemetry::RateLimit =
                crate::telemetry::RateLimit::new(std::time::Duration::from_secs(10));
            if let Some(suppressed) = LIMIT.allow() {
                warn!(peer = %peer, system_id = %req.system_id, error = %e, suppressed, "upstream bind failed");
            }
            return Err(encode_bind_resp(bind_type, status::ESME_RSYSERR, seq, ""));
        }
    };
    let mut resp = up.resp;
    let st = smpp::command_status(&resp);
    if smpp::command_id(&resp) == cmd::GENERIC_NACK {
        let st = if st == 0 { status::ESME_RBINDFAIL } else { st };
        count("upstream_refused");
        return Err(encode_bind_resp(bind_type, st, seq, ""));
    }
    smpp::set_sequence(&mut resp, seq);
    if st != status::ESME_ROK {
        count("upstream_refused");
        info!(peer = %peer, system_id = %req.system_id, status = format_args!("0x{st:08x}"), "upstream refused bind");
        return Err(resp);
    }
    count("ok");
    let leg = Leg::new(up.stream, config.session.max_pdu_bytes, up.rest);
    Ok(((leg, account, bind_type), resp))
}
