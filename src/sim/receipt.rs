//! What the simulated SMSC answers with: delivery receipts, their dates, message ids, and
//! the configured per-destination errors.

use std::collections::HashMap;

use bytes::{BufMut, BytesMut};

use crate::smpp::peek::{tlv, MessageView};
use crate::smpp::{cmd, status};
use crate::time::Civil;

#[inline]
pub(super) fn dest_error(errs: &HashMap<String, u32>, addr: &[u8]) -> Option<u32> {
    if errs.is_empty() {
        return None;
    }
    std::str::from_utf8(addr).ok().and_then(|a| errs.get(a)).copied()
}

/// Lowercase hex without leading zeros (at most 16 digits).
#[inline]
pub(super) fn hex_id(v: u64, buf: &mut [u8; 16]) -> &[u8] {
    const HEX: &[u8; 16] = b"0123456789abcdef";
    let digits = if v == 0 { 1 } else { (64 - v.leading_zeros() as usize).div_ceil(4) };
    for (i, d) in buf.iter_mut().take(digits).enumerate() {
        *d = HEX[((v >> (4 * (digits - 1 - i))) & 0xF) as usize];
    }
    &buf[..digits]
}

/// Appends a delivery receipt deliver_sm for the submitted message `v`.
pub(super) fn put_receipt(out: &mut BytesMut, seq: u32, v: &MessageView<'_>, msg_id: &[u8], date: &[u8; 10]) {
    let src = &v.destination;
    let dst = &v.source;
    let sa = &src.addr[..src.addr.len().min(20)];
    let da = &dst.addr[..dst.addr.len().min(20)];
    let text = if v.data_coding == 0 { &v.short_message[..v.short_message.len().min(20)] } else { &[][..] };
    out.reserve(200 + sa.len() + da.len() + 2 * msg_id.len());
    let start = out.len();
    out.put_u32(0);
    out.put_u32(cmd::DELIVER_SM);
    out.put_u32(status::ESME_ROK);
    out.put_u32(seq);
    out.put_u8(0); // service_type
    out.put_u8(src.ton);
    out.put_u8(src.npi);
    out.put_slice(sa);
    out.put_u8(0);
    out.put_u8(dst.ton);
    out.put_u8(dst.npi);
    out.put_slice(da);
    out.put_u8(0);
    out.put_u8(0x04); // esm_class: SMSC delivery receipt
    out.put_slice(&[0, 0, 0, 0]); // protocol_id, priority_flag, schedule_delivery_time, validity_period
    out.put_slice(&[0, 0, 0, 0]); // registered_delivery, replace_if_present, data_coding, sm_default_msg_id
    let sm_len_at = out.len();
    out.put_u8(0);
    out.put_slice(b"id:");
    out.put_slice(msg_id);
    out.put_slice(b" sub:001 dlvrd:001 submit date:");
    out.put_slice(date);
    out.put_slice(b" done date:");
    out.put_slice(date);
    out.put_slice(b" stat:DELIVRD err:000 text:");
    out.put_slice(text);
    let sm_len = out.len() - sm_len_at - 1;
    out[sm_len_at] = sm_len.min(255) as u8;
    out.put_u16(tlv::RECEIPTED_MESSAGE_ID);
    out.put_u16(msg_id.len() as u16 + 1);
    out.put_slice(msg_id);
    out.put_u8(0);
    out.put_u16(tlv::MESSAGE_STATE);
    out.put_u16(1);
    out.put_u8(2); // DELIVERED
    let len = (out.len() - start) as u32;
    out[start..start + 4].copy_from_slice(&len.to_be_bytes());
}

/// The current UTC time as YYMMDDhhmm.
pub(super) fn smpp_date_now() -> [u8; 10] {
    smpp_date(crate::time::Clock::system().now().unix_s())
}

/// Unix second `unix_secs` as YYMMDDhhmm (UTC), the receipt's submit and done dates.
pub(super) fn smpp_date(unix_secs: i64) -> [u8; 10] {
    let c = Civil::from_unix_s(unix_secs);
    let parts = [c.year.rem_euclid(100) as u32, c.month, c.day, c.hour, c.minute];
    let mut out = [0u8; 10];
    for (i, p) in parts.iter().enumerate() {
        out[2 * i] = b'0' + (p / 10 % 10) as u8;
        out[2 * i + 1] = b'0' + (p % 10) as u8;
    }
    out
}
