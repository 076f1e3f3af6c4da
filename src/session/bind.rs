//! The bind phase of an ESME connection: admission against the account registry, then the
//! paired upstream bind with the ESME's own credentials, whose answer is relayed back.
//!
//! Before a successful bind only bind_*, enquire_link and unbind are served; any other
//! request is answered ESME_RINVBNDSTS and unknown command ids get generic_nack. A refused
//! bind leaves the connection open so the ESME may retry, until `session.bind_timeout`.

use std::net::SocketAddr;
use std::sync::Arc;

use bytes::{Buf, BytesMut};
use tokio::sync::watch;
use tracing::{debug, info, warn};

use super::Context;
use crate::policy::{AccountIdx, SessionSlot};
use crate::relay::{bind_upstream, Transport};
use crate::smpp::frame::{Framer, Next};
use crate::smpp::pdu::{decode_bind, encode_bind_resp, put_header_only, put_local_error_resp};
use crate::smpp::{self, cmd, status, BindType};

/// Result of the bind phase.
pub(super) struct Bound {
    pub esme: Transport,
    pub smsc: Transport,
    /// Bytes each peer sent after its bind (request / response), not yet framed.
    pub esme_rest: BytesMut,
    pub smsc_rest: BytesMut,
    /// The ESME leg's framer (it may be skipping an oversized PDU).
    pub down_framer: Framer,
    /// The engine that admitted the bind: `account` is an index into it.
    pub engine: Arc<crate::policy::Engine>,
    /// [`crate::policy::EngineCell::generation`] read before `engine` was loaded.
    pub generation: u64,
    pub account: AccountIdx,
    /// The account's session count, held while the session lives (`max_sessions`).
    pub slot: SessionSlot,
    pub bind_type: BindType,
    /// The ESME's bind PDU and the response it got (for the capture).
    pub bind: Vec<u8>,
    pub bind_resp: Vec<u8>,
}

/// An accepted bind: the upstream leg, the account and the bind type.
struct Admitted {
    /// The engine that admitted the bind (the account index is its).
    engine: Arc<crate::policy::Engine>,
    /// The engine generation read before `engine` was loaded.
    generation: u64,
    smsc: Transport,
    smsc_rest: BytesMut,
    account: AccountIdx,
    bind_type: BindType,
    slot: SessionSlot,
}

/// Runs the bind phase; returns the bound session, or `None` when the connection ended.
/// The connection's place under the unbound caps (`unbound`) is given back as soon as a
/// bind succeeds, and when the connection ends unbound (the guard drops).
pub(super) async fn accept_bind(
    mut stream: Transport,
    peer: SocketAddr,
    ctx: &Context,
    shutdown: &mut watch::Receiver<bool>,
    mut unbound: super::limits::UnboundGuard,
) -> Option<Bound> {
    let settings = ctx.settings();
    let deadline = tokio::time::Instant::now() + settings.session.bind_timeout;
    let mut framer = Framer::new(settings.session.max_pdu_bytes);
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
                            let bind_type = BindType::from_command(id).expect("a bind command id");
                            match bind_one(&frame, bind_type, peer, ctx).await {
                                Ok((a, resp)) => {
                                    // Bound: no longer counted against the unbound caps.
                                    unbound.release();
                                    out.extend_from_slice(&resp);
                                    if stream.write_all(&out).await.is_err() {
                                        return None;
                                    }
                                    return Some(Bound {
                                        esme: stream,
                                        smsc: a.smsc,
                                        esme_rest: rbuf,
                                        down_framer: framer,
                                        smsc_rest: a.smsc_rest,
                                        engine: a.engine,
                                        generation: a.generation,
                                        account: a.account,
                                        slot: a.slot,
                                        bind_type: a.bind_type,
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
            r = stream.readable() => match r.and_then(|()| stream.try_read_buf(&mut rbuf)) {
                Ok(0) => return None,
                Err(e) if e.kind() != std::io::ErrorKind::WouldBlock => return None,
                _ => {}
            },
            _ = tokio::time::sleep_until(deadline) => {
                debug!(peer = %peer, "no bind within session.bind_timeout; closing");
                return None;
            }
            _ = shutdown.changed() => return None,
        }
    }
}

/// Handles one bind request. Ok = bound (the upstream leg and the response bytes for the
/// ESME); Err = the response bytes of a refusal.
async fn bind_one(
    frame: &[u8],
    bind_type: BindType,
    peer: SocketAddr,
    ctx: &Context,
) -> Result<(Admitted, BytesMut), BytesMut> {
    let seq = smpp::sequence(frame);
    let (ip, now) = (peer.ip(), std::time::Instant::now());
    if let Some(left) = ctx.bind_limiter.backoff_left(ip, now) {
        // Refused here: never forwarded, so a password guesser never reaches the SMSC.
        metrics::counter!(crate::telemetry::metrics::LIMITS_TOTAL, "limit" => "bind_backoff").increment(1);
        static LIMIT: crate::telemetry::RateLimit =
            crate::telemetry::RateLimit::new(std::time::Duration::from_secs(10));
        if let Some(suppressed) = LIMIT.allow() {
            warn!(peer = %peer, left_s = left.as_secs(), suppressed, "bind refused: source IP backing off after failed binds");
        }
        return Err(encode_bind_resp(bind_type, status::ESME_RBINDFAIL, seq, ""));
    }
    let failed = || {
        if ctx.bind_limiter.failure(ip, now) == crate::session::limits::Failure::BackoffStarted {
            metrics::counter!(crate::telemetry::metrics::LIMITS_TOTAL, "limit" => "bind_backoff_started").increment(1);
            static LIMIT: crate::telemetry::RateLimit =
                crate::telemetry::RateLimit::new(std::time::Duration::from_secs(10));
            if let Some(suppressed) = LIMIT.allow() {
                let l = ctx.bind_limiter.config();
                warn!(peer = %peer, failures = l.bind_failures_per_ip, window = ?l.bind_failure_window, backoff = ?l.bind_backoff, suppressed, "source IP backing off: too many failed binds");
            }
        }
    };
    let req = match decode_bind(frame) {
        Ok(r) => r,
        Err(e) => {
            debug!(peer = %peer, error = %e, "malformed bind");
            failed();
            return Err(encode_bind_resp(bind_type, status::ESME_RBINDFAIL, seq, ""));
        }
    };
    // One engine for the whole admission. The generation is read first: a reload that swaps
    // the engine while the bind waits on the SMSC moves it past this value, and the session
    // takes the new engine at its first read.
    let generation = ctx.engine.generation();
    let engine = ctx.engine();
    let settings = ctx.settings();
    let label = if engine.lookup(&req.system_id).is_some() { req.system_id.clone() } else { "unknown".to_owned() };
    let count = |result: &'static str| {
        metrics::counter!(crate::telemetry::metrics::BINDS_TOTAL, "account" => label.clone(), "result" => result)
            .increment(1)
    };
    let refused = |refusal: crate::policy::BindRefusal| {
        count("refused");
        if refusal == crate::policy::BindRefusal::TooManySessions {
            metrics::counter!(crate::telemetry::metrics::LIMITS_TOTAL, "limit" => "account_sessions").increment(1);
        } else {
            failed();
        }
        // A peer can repeat this thousands of times a second: one line per burst.
        static LIMIT: crate::telemetry::RateLimit =
            crate::telemetry::RateLimit::new(std::time::Duration::from_secs(10));
        if let Some(suppressed) = LIMIT.allow() {
            info!(peer = %peer, system_id = %req.system_id, bind = bind_type.as_str(), reason = refusal.as_str(), suppressed, "bind refused");
        }
        encode_bind_resp(bind_type, refusal.status(), seq, "")
    };
    let account = engine.admit(&req.system_id, bind_type, ctx.clock.now().utc_day()).map_err(refused)?;
    // Counted from here: a second bind racing this one sees the slot taken.
    let slot = engine.open_session(account).map_err(refused)?;
    let smsc =
        match bind_upstream(&settings.upstream, ctx.upstream_tls.as_deref(), frame, settings.session.max_pdu_bytes)
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
    let mut resp = smsc.resp;
    let st = smpp::command_status(&resp);
    if smpp::command_id(&resp) == cmd::GENERIC_NACK {
        let st = if st == 0 { status::ESME_RBINDFAIL } else { st };
        count("upstream_refused");
        failed();
        return Err(encode_bind_resp(bind_type, st, seq, ""));
    }
    smpp::set_sequence(&mut resp, seq);
    if st != status::ESME_ROK {
        count("upstream_refused");
        failed();
        static LIMIT: crate::telemetry::RateLimit =
            crate::telemetry::RateLimit::new(std::time::Duration::from_secs(10));
        if let Some(suppressed) = LIMIT.allow() {
            info!(peer = %peer, system_id = %req.system_id, status = format_args!("0x{st:08x}"), suppressed, "upstream refused bind");
        }
        return Err(resp);
    }
    count("ok");
    ctx.bind_limiter.success(ip);
    Ok((Admitted { engine, generation, smsc: smsc.stream, smsc_rest: smsc.rest, account, bind_type, slot }, resp))
}
