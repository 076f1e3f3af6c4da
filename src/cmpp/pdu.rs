//! CMPP PDUs consentgate writes: local answers (CONNECT_RESP refusing an SP, SUBMIT_RESP,
//! DELIVER_RESP, ACTIVE_TEST(_RESP), TERMINATE(_RESP)), a synthetic status report for a
//! refused destination ([`put_report`]), the SUBMIT rewrite that drops destinations
//! ([`put_submit_keeping`]), and whole SUBMIT / DELIVER / CONNECT frames for tests, the
//! simulators and the fuzz corpus ([`put_submit`], [`put_deliver`], [`put_connect`]).
//!
//! Everything appends to a caller-owned `BytesMut` (as [`crate::smpp::pdu`] does), sized once
//! with `reserve`; the response writers are a header plus a few bytes. Octet Strings longer
//! than their field are cut to it and shorter ones NUL-padded, as the spec pads.

use bytes::{BufMut, BytesMut};

use super::peek::{octets, Report, Submit};
use super::{cmd, Version, HEADER_LEN};

/// Starts a frame: Total_Length (patched by [`finish`]), Command_Id, Sequence_Id. Returns
/// where the frame starts in `out`.
#[inline]
fn start(out: &mut BytesMut, command_id: u32, seq: u32, body: usize) -> usize {
    out.reserve(HEADER_LEN + body);
    let at = out.len();
    out.put_u32(0);
    out.put_u32(command_id);
    out.put_u32(seq);
    at
}

/// Writes the Total_Length of the frame that starts at `at` and runs to the end of `out`.
#[inline]
fn finish(out: &mut BytesMut, at: usize) {
    let len = (out.len() - at) as u32;
    out[at..at + 4].copy_from_slice(&len.to_be_bytes());
}

/// A fixed-width Octet String: `s` cut to `width`, NUL-padded.
#[inline]
fn put_octets(out: &mut BytesMut, s: &[u8], width: usize) {
    let n = s.len().min(width);
    out.put_slice(&s[..n]);
    out.put_bytes(0, width - n);
}

/// A Status / Result in the version's width (1 byte in 2.0: the low byte).
#[inline]
fn put_status(out: &mut BytesMut, version: Version, v: u32) {
    match version {
        Version::V20 => out.put_u8(v as u8),
        Version::V30 => out.put_u32(v),
    }
}

/// A `*_type` byte, written in 3.0 only.
#[inline]
fn put_terminal_type(out: &mut BytesMut, version: Version, t: u8) {
    if version.has_terminal_type() {
        out.put_u8(t);
    }
}

/// Appends a body-less PDU: ACTIVE_TEST, TERMINATE, TERMINATE_RESP.
#[inline]
pub fn put_header_only(out: &mut BytesMut, command_id: u32, seq: u32) {
    let at = start(out, command_id, seq, 0);
    finish(out, at);
}

/// Appends CMPP_ACTIVE_TEST (12 bytes).
pub fn put_active_test(out: &mut BytesMut, seq: u32) {
    put_header_only(out, cmd::ACTIVE_TEST, seq);
}

/// Appends CMPP_ACTIVE_TEST_RESP: the header and the 1-byte `Reserved` (13 bytes).
pub fn put_active_test_resp(out: &mut BytesMut, seq: u32) {
    let at = start(out, cmd::ACTIVE_TEST_RESP, seq, 1);
    out.put_u8(0);
    finish(out, at);
}

/// Appends CMPP_TERMINATE (12 bytes).
pub fn put_terminate(out: &mut BytesMut, seq: u32) {
    put_header_only(out, cmd::TERMINATE, seq);
}

/// Appends CMPP_TERMINATE_RESP (12 bytes).
pub fn put_terminate_resp(out: &mut BytesMut, seq: u32) {
    put_header_only(out, cmd::TERMINATE_RESP, seq);
}

/// Appends CMPP_CONNECT (39 bytes). The authenticator is opaque here: the caller computes
/// MD5(Source_Addr + 9×0x00 + secret + "%010d" timestamp).
pub fn put_connect(
    out: &mut BytesMut,
    seq: u32,
    source_addr: &[u8],
    authenticator: &[u8; 16],
    version_byte: u8,
    timestamp: u32,
) {
    let at = start(out, cmd::CONNECT, seq, 27);
    put_octets(out, source_addr, 6);
    out.put_slice(authenticator);
    out.put_u8(version_byte);
    out.put_u32(timestamp);
    finish(out, at);
}

/// Appends CMPP_CONNECT_RESP in `version`'s width (30 or 33 bytes). To refuse an SP locally:
/// a non-zero `status` ([`super::connect_status`]) and a zeroed authenticator (the spec
/// leaves it empty on error), `version_byte` the highest version offered.
pub fn put_connect_resp(
    out: &mut BytesMut,
    version: Version,
    seq: u32,
    status: u32,
    authenticator: &[u8; 16],
    version_byte: u8,
) {
    let at = start(out, cmd::CONNECT_RESP, seq, version.connect_resp_body_len());
    put_status(out, version, status);
    out.put_slice(authenticator);
    out.put_u8(version_byte);
    finish(out, at);
}

fn put_msg_resp(out: &mut BytesMut, command_id: u32, version: Version, seq: u32, msg_id: u64, result: u32) {
    let at = start(out, command_id, seq, version.msg_resp_body_len());
    out.put_u64(msg_id);
    put_status(out, version, result);
    finish(out, at);
}

/// Appends CMPP_SUBMIT_RESP (21 bytes in 2.0, 24 in 3.0). `result` per [`super::result`];
/// in 2.0 only its low byte is sent.
pub fn put_submit_resp(out: &mut BytesMut, version: Version, seq: u32, msg_id: u64, result: u32) {
    put_msg_resp(out, cmd::SUBMIT_RESP, version, seq, msg_id, result);
}

/// Appends CMPP_DELIVER_RESP (21 bytes in 2.0, 24 in 3.0).
pub fn put_deliver_resp(out: &mut BytesMut, version: Version, seq: u32, msg_id: u64, result: u32) {
    put_msg_resp(out, cmd::DELIVER_RESP, version, seq, msg_id, result);
}

/// The fields of a CMPP_SUBMIT to write ([`put_submit`]); `Default` is an empty 2.0-style
/// submit with no destination.
#[derive(Debug, Clone, Default)]
pub struct SubmitFields<'a> {
    pub msg_id: u64,
    pub pk_total: u8,
    pub pk_number: u8,
    pub registered_delivery: u8,
    pub msg_level: u8,
    pub service_id: &'a [u8],
    pub fee_user_type: u8,
    pub fee_terminal_id: &'a [u8],
    /// Written in 3.0 only.
    pub fee_terminal_type: u8,
    pub tp_pid: u8,
    pub tp_udhi: u8,
    pub msg_fmt: u8,
    pub msg_src: &'a [u8],
    pub fee_type: &'a [u8],
    pub fee_code: &'a [u8],
    pub valid_time: &'a [u8],
    pub at_time: &'a [u8],
    pub src_id: &'a [u8],
    /// At most 255 are written (DestUsr_tl is one byte); the views refuse more than 99.
    pub dest_terminal_ids: &'a [&'a [u8]],
    /// Written in 3.0 only.
    pub dest_terminal_type: u8,
    /// At most 255 bytes are written (Msg_Length is one byte).
    pub msg_content: &'a [u8],
    /// Reserve (2.0) or LinkID (3.0).
    pub reserve: &'a [u8],
}

/// Appends a CMPP_SUBMIT in `version`'s layout.
pub fn put_submit(out: &mut BytesMut, version: Version, seq: u32, s: &SubmitFields) {
    let tid = version.terminal_id_len();
    let dests = &s.dest_terminal_ids[..s.dest_terminal_ids.len().min(255)];
    let content = &s.msg_content[..s.msg_content.len().min(255)];
    let at = start(out, cmd::SUBMIT, seq, 160 + dests.len() * tid + content.len());
    out.put_u64(s.msg_id);
    out.put_slice(&[s.pk_total, s.pk_number, s.registered_delivery, s.msg_level]);
    put_octets(out, s.service_id, 10);
    out.put_u8(s.fee_user_type);
    put_octets(out, s.fee_terminal_id, tid);
    put_terminal_type(out, version, s.fee_terminal_type);
    out.put_slice(&[s.tp_pid, s.tp_udhi, s.msg_fmt]);
    put_octets(out, s.msg_src, 6);
    put_octets(out, s.fee_type, 2);
    put_octets(out, s.fee_code, 6);
    put_octets(out, s.valid_time, 17);
    put_octets(out, s.at_time, 17);
    put_octets(out, s.src_id, 21);
    out.put_u8(dests.len() as u8);
    for d in dests {
        put_octets(out, d, tid);
    }
    put_terminal_type(out, version, s.dest_terminal_type);
    out.put_u8(content.len() as u8);
    out.put_slice(content);
    put_octets(out, s.reserve, version.tail_len());
    finish(out, at);
}

/// The fields of a CMPP_DELIVER to write ([`put_deliver`]).
#[derive(Debug, Clone, Default)]
pub struct DeliverFields<'a> {
    pub msg_id: u64,
    pub dest_id: &'a [u8],
    pub service_id: &'a [u8],
    pub tp_pid: u8,
    pub tp_udhi: u8,
    pub msg_fmt: u8,
    pub src_terminal_id: &'a [u8],
    /// Written in 3.0 only.
    pub src_terminal_type: u8,
    pub registered_delivery: u8,
    /// At most 255 bytes are written.
    pub msg_content: &'a [u8],
    /// Reserve (2.0) or LinkID (3.0).
    pub reserve: &'a [u8],
}

/// Appends a CMPP_DELIVER in `version`'s layout.
pub fn put_deliver(out: &mut BytesMut, version: Version, seq: u32, d: &DeliverFields) {
    let content = &d.msg_content[..d.msg_content.len().min(255)];
    put_deliver_with(out, version, seq, d, content.len(), |out| out.put_slice(content));
}

/// [`put_deliver`] with Msg_Content (`len` ≤ 255 bytes) written by `content`.
fn put_deliver_with(
    out: &mut BytesMut,
    version: Version,
    seq: u32,
    d: &DeliverFields,
    len: usize,
    content: impl FnOnce(&mut BytesMut),
) {
    let at = start(out, cmd::DELIVER, seq, 98 + len);
    out.put_u64(d.msg_id);
    put_octets(out, d.dest_id, 21);
    put_octets(out, d.service_id, 10);
    out.put_slice(&[d.tp_pid, d.tp_udhi, d.msg_fmt]);
    put_octets(out, d.src_terminal_id, version.terminal_id_len());
    put_terminal_type(out, version, d.src_terminal_type);
    out.put_u8(d.registered_delivery);
    out.put_u8(len as u8);
    content(out);
    put_octets(out, d.reserve, version.tail_len());
    finish(out, at);
}

/// Appends the status-report body (60 bytes in 2.0, 71 in 3.0) that a report DELIVER carries
/// as Msg_Content.
pub fn put_report_content(out: &mut BytesMut, version: Version, r: &Report) {
    out.reserve(version.report_len());
    out.put_u64(r.msg_id);
    put_octets(out, r.stat, 7);
    put_octets(out, r.submit_time, 10);
    put_octets(out, r.done_time, 10);
    put_octets(out, r.dest_terminal_id, version.terminal_id_len());
    out.put_u32(r.smsc_sequence);
}

/// Appends a CMPP_DELIVER status report (Registered_Delivery 1, Msg_Fmt 0), as consentgate
/// sends an SP for a destination it refused: `deliver_msg_id` is the DELIVER's own Msg_Id,
/// `dest_id` and `service_id` come from the SUBMIT (its Src_Id and Service_Id), and
/// Src_terminal_Id is the report's Dest_terminal_Id.
pub fn put_report(
    out: &mut BytesMut,
    version: Version,
    seq: u32,
    deliver_msg_id: u64,
    dest_id: &[u8],
    service_id: &[u8],
    r: &Report,
) {
    let d = DeliverFields {
        msg_id: deliver_msg_id,
        dest_id,
        service_id,
        src_terminal_id: r.dest_terminal_id,
        registered_delivery: 1,
        ..DeliverFields::default()
    };
    put_deliver_with(out, version, seq, &d, version.report_len(), |out| put_report_content(out, version, r));
}

/// Appends `s`'s frame with only the destinations `keep(index, destination)` accepts, in
/// their order: DestUsr_tl and Total_Length fixed, every other byte (Sequence_Id included,
/// the kept 21/32-byte slots with their padding, trailing bytes) copied as it was. Returns how
/// many were kept; with none kept nothing is written (a SUBMIT needs a destination).
pub fn put_submit_keeping(out: &mut BytesMut, s: &Submit, mut keep: impl FnMut(usize, &[u8]) -> bool) -> u8 {
    let frame = s.frame();
    let count_at = s.dests.start - 1;
    let at = out.len();
    out.reserve(frame.len());
    out.put_slice(&frame[..count_at]);
    out.put_u8(0);
    let mut kept = 0u8;
    for (i, slot) in frame[s.dests.clone()].chunks_exact(s.version.terminal_id_len()).enumerate() {
        if keep(i, octets(slot)) {
            out.put_slice(slot);
            kept += 1;
        }
    }
    if kept == 0 {
        out.truncate(at);
        return 0;
    }
    out.put_slice(&frame[s.dests.end..]);
    out[at + count_at] = kept;
    finish(out, at);
    kept
}

/// Appends `frame` (a whole PDU) with its Sequence_Id replaced by `seq`: how a relayed PDU
/// leaves on the other leg.
#[inline]
pub fn put_renumbered(out: &mut BytesMut, frame: &[u8], seq: u32) {
    let at = out.len();
    out.extend_from_slice(frame);
    super::set_sequence(&mut out[at..], seq);
}
