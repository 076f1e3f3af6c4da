//! SMPP wire layer: command ids and statuses, the 16-byte header, length-checked framing
//! ([`frame`]), zero-copy field peeking for the hot path ([`peek`]) and builders for the few
//! PDUs consentgate creates itself ([`pdu`]).
//!
//! Layering (STYLE §2): bytes ↔ [`frame::Framer`] (length-checked) ↔ [`peek`] views ↔ session
//! behaviour. rusmpp (pinned 0.4.0) fully decodes/encodes the PDUs consentgate must understand
//! (binds, bind_resp); its tokio codec is *not* used on live streams because it desynchronises
//! after a body decode error (see `shared/reference/smpp-tech.md` §1.3).

pub mod frame;
pub mod pdu;
pub mod peek;
pub mod text;

/// Length of the SMPP header: command_length, command_id, command_status, sequence_number.
pub const HEADER_LEN: usize = 16;

/// Bit set in the command_id of every response PDU.
pub const RESP_BIT: u32 = 0x8000_0000;

/// Command ids (SMPP v3.4 §5.1.2.1, v5.0 §4.7.5).
pub mod cmd {
    pub const GENERIC_NACK: u32 = 0x8000_0000;
    pub const BIND_RECEIVER: u32 = 0x0000_0001;
    pub const BIND_RECEIVER_RESP: u32 = 0x8000_0001;
    pub const BIND_TRANSMITTER: u32 = 0x0000_0002;
    pub const BIND_TRANSMITTER_RESP: u32 = 0x8000_0002;
    pub const QUERY_SM: u32 = 0x0000_0003;
    pub const QUERY_SM_RESP: u32 = 0x8000_0003;
    pub const SUBMIT_SM: u32 = 0x0000_0004;
    pub const SUBMIT_SM_RESP: u32 = 0x8000_0004;
    pub const DELIVER_SM: u32 = 0x0000_0005;
    pub const DELIVER_SM_RESP: u32 = 0x8000_0005;
    pub const UNBIND: u32 = 0x0000_0006;
    pub const UNBIND_RESP: u32 = 0x8000_0006;
    pub const REPLACE_SM: u32 = 0x0000_0007;
    pub const REPLACE_SM_RESP: u32 = 0x8000_0007;
    pub const CANCEL_SM: u32 = 0x0000_0008;
    pub const CANCEL_SM_RESP: u32 = 0x8000_0008;
    pub const BIND_TRANSCEIVER: u32 = 0x0000_0009;
    pub const BIND_TRANSCEIVER_RESP: u32 = 0x8000_0009;
    pub const OUTBIND: u32 = 0x0000_000B;
    pub const ENQUIRE_LINK: u32 = 0x0000_0015;
    pub const ENQUIRE_LINK_RESP: u32 = 0x8000_0015;
    pub const SUBMIT_MULTI: u32 = 0x0000_0021;
    pub const SUBMIT_MULTI_RESP: u32 = 0x8000_0021;
    pub const ALERT_NOTIFICATION: u32 = 0x0000_0102;
    pub const DATA_SM: u32 = 0x0000_0103;
    pub const DATA_SM_RESP: u32 = 0x8000_0103;
    /// v5.0 broadcast family (§4.6): recognised and relayed like any other request.
    pub const BROADCAST_SM: u32 = 0x0000_0111;
    pub const QUERY_BROADCAST_SM: u32 = 0x0000_0112;
    pub const CANCEL_BROADCAST_SM: u32 = 0x0000_0113;
}

/// command_status values consentgate produces or interprets (v3.4 §5.1.3, v5.0 §4.7.6).
pub mod status {
    pub const ESME_ROK: u32 = 0x0000_0000;
    pub const ESME_RINVMSGLEN: u32 = 0x0000_0001;
    pub const ESME_RINVCMDLEN: u32 = 0x0000_0002;
    pub const ESME_RINVCMDID: u32 = 0x0000_0003;
    pub const ESME_RINVBNDSTS: u32 = 0x0000_0004;
    pub const ESME_RALYBND: u32 = 0x0000_0005;
    pub const ESME_RSYSERR: u32 = 0x0000_0008;
    pub const ESME_RINVSRCADR: u32 = 0x0000_000A;
    pub const ESME_RINVDSTADR: u32 = 0x0000_000B;
    pub const ESME_RBINDFAIL: u32 = 0x0000_000D;
    pub const ESME_RINVPASWD: u32 = 0x0000_000E;
    pub const ESME_RINVSYSID: u32 = 0x0000_000F;
    pub const ESME_RINVNUMDESTS: u32 = 0x0000_0033;
    pub const ESME_RTHROTTLED: u32 = 0x0000_0058;
    /// ESME_RX_T_APPN: temporary application error; what consentgate answers the SMSC for a
    /// deliver_sm it could not hand to the ESME (the SMSC retries later).
    pub const ESME_RX_T_APPN: u32 = 0x0000_0064;
    pub const ESME_RINVTLVSTREAM: u32 = 0x0000_00C0;

    /// The statuses above by name.
    const NAMES: &[(&str, u32)] = &[
        ("ESME_ROK", ESME_ROK),
        ("ESME_RINVMSGLEN", ESME_RINVMSGLEN),
        ("ESME_RINVCMDLEN", ESME_RINVCMDLEN),
        ("ESME_RINVCMDID", ESME_RINVCMDID),
        ("ESME_RINVBNDSTS", ESME_RINVBNDSTS),
        ("ESME_RALYBND", ESME_RALYBND),
        ("ESME_RSYSERR", ESME_RSYSERR),
        ("ESME_RINVSRCADR", ESME_RINVSRCADR),
        ("ESME_RINVDSTADR", ESME_RINVDSTADR),
        ("ESME_RBINDFAIL", ESME_RBINDFAIL),
        ("ESME_RINVPASWD", ESME_RINVPASWD),
        ("ESME_RINVSYSID", ESME_RINVSYSID),
        ("ESME_RINVNUMDESTS", ESME_RINVNUMDESTS),
        ("ESME_RTHROTTLED", ESME_RTHROTTLED),
        ("ESME_RINVTLVSTREAM", ESME_RINVTLVSTREAM),
    ];

    /// The name of a status listed above (`"ESME_RTHROTTLED"`); `None` for any other value.
    pub fn name(status: u32) -> Option<&'static str> {
        NAMES.iter().find(|&&(_, v)| v == status).map(|&(n, _)| n)
    }

    /// Parses a status as people write it (scenario `expect`, `--dest-error`): hex
    /// `0x00000058`, decimal `88`, `ok`, or a name above with or without `ESME_` and the `R`
    /// (`ESME_RTHROTTLED`, `RTHROTTLED`, `throttled`), case-insensitive, surrounding spaces
    /// ignored.
    pub fn parse(s: &str) -> Option<u32> {
        let t = s.trim();
        if let Some(h) = t.strip_prefix("0x").or_else(|| t.strip_prefix("0X")) {
            return u32::from_str_radix(h, 16).ok();
        }
        if !t.is_empty() && t.bytes().all(|b| b.is_ascii_digit()) {
            return t.parse().ok();
        }
        let up = t.to_ascii_uppercase();
        if up == "OK" {
            return Some(ESME_ROK);
        }
        let name = up.strip_prefix("ESME_").unwrap_or(&up);
        NAMES
            .iter()
            .map(|&(n, v)| (&n["ESME_".len()..], v))
            .find(|(n, _)| *n == name || n.strip_prefix('R') == Some(name))
            .map(|(_, v)| v)
    }

    #[cfg(test)]
    mod tests {
        use super::*;

        #[test]
        fn names_and_parsing() {
            assert_eq!(parse("ok"), Some(ESME_ROK));
            assert_eq!(parse("0x00000058"), Some(ESME_RTHROTTLED));
            assert_eq!(parse("0X58"), Some(ESME_RTHROTTLED));
            assert_eq!(parse(" 88 "), Some(ESME_RTHROTTLED));
            assert_eq!(parse("ESME_RTHROTTLED"), Some(ESME_RTHROTTLED));
            assert_eq!(parse("rthrottled"), Some(ESME_RTHROTTLED));
            assert_eq!(parse("throttled"), Some(ESME_RTHROTTLED));
            assert_eq!(parse("13"), Some(13));
            assert_eq!(parse("nope"), None);
            assert_eq!(parse(""), None);
            assert_eq!(parse("0xZZ"), None);
            for &(n, v) in NAMES {
                assert_eq!(name(v), Some(n));
                assert_eq!(parse(n), Some(v), "{n}");
            }
            assert_eq!(name(0x0000_0400), None);
        }
    }
}

/// Bounded labels for command ids (metrics, logs), indexed by [`command_index`]; the last
/// one, `"other"`, stands for every unknown id.
pub const COMMAND_LABELS: [&str; 28] = [
    "generic_nack",
    "bind_receiver",
    "bind_receiver_resp",
    "bind_transmitter",
    "bind_transmitter_resp",
    "query_sm",
    "query_sm_resp",
    "submit_sm",
    "submit_sm_resp",
    "deliver_sm",
    "deliver_sm_resp",
    "unbind",
    "unbind_resp",
    "replace_sm",
    "replace_sm_resp",
    "cancel_sm",
    "cancel_sm_resp",
    "bind_transceiver",
    "bind_transceiver_resp",
    "outbind",
    "enquire_link",
    "enquire_link_resp",
    "submit_multi",
    "submit_multi_resp",
    "alert_notification",
    "data_sm",
    "data_sm_resp",
    "other",
];

/// Position of `id` in [`COMMAND_LABELS`], counted for every PDU: ids up to 0x21 (and
/// their responses) come from a 68-byte table, so the usual traffic mix costs one load and no
/// hard-to-predict branch (a `match` over these sparse ids compiles to a comparison tree).
#[inline]
pub fn command_index(id: u32) -> usize {
    const LOW: [u8; 0x44] = {
        let mut t = [0u8; 0x44];
        let mut i = 0;
        while i < 0x44 {
            t[i] = command_index_slow(((i as u32) >> 1) | (((i & 1) as u32) << 31)) as u8;
            i += 1;
        }
        t
    };
    let low = id & !RESP_BIT;
    if low < 0x22 {
        LOW[((low << 1) | (id >> 31)) as usize] as usize
    } else {
        command_index_slow(id)
    }
}

const fn command_index_slow(id: u32) -> usize {
    use cmd::*;
    match id {
        GENERIC_NACK => 0,
        BIND_RECEIVER => 1,
        BIND_RECEIVER_RESP => 2,
        BIND_TRANSMITTER => 3,
        BIND_TRANSMITTER_RESP => 4,
        QUERY_SM => 5,
        QUERY_SM_RESP => 6,
        SUBMIT_SM => 7,
        SUBMIT_SM_RESP => 8,
        DELIVER_SM => 9,
        DELIVER_SM_RESP => 10,
        UNBIND => 11,
        UNBIND_RESP => 12,
        REPLACE_SM => 13,
        REPLACE_SM_RESP => 14,
        CANCEL_SM => 15,
        CANCEL_SM_RESP => 16,
        BIND_TRANSCEIVER => 17,
        BIND_TRANSCEIVER_RESP => 18,
        OUTBIND => 19,
        ENQUIRE_LINK => 20,
        ENQUIRE_LINK_RESP => 21,
        SUBMIT_MULTI => 22,
        SUBMIT_MULTI_RESP => 23,
        ALERT_NOTIFICATION => 24,
        DATA_SM => 25,
        DATA_SM_RESP => 26,
        _ => 27,
    }
}

/// A short, bounded label for a command id (metrics, logs). Unknown ids map to `"other"`.
pub fn command_name(id: u32) -> &'static str {
    COMMAND_LABELS[command_index(id)]
}

/// Whether `id` is a command id defined by SMPP v3.4/v5.0 that a proxy may see (request or
/// response). Anything else is answered with generic_nack ESME_RINVCMDID.
pub fn is_known_command(id: u32) -> bool {
    command_name(id) != "other" || matches!(id & !RESP_BIT, cmd::BROADCAST_SM..=cmd::CANCEL_BROADCAST_SM)
}

/// The fixed 16-byte header of every PDU (v3.4 §3.2).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Header {
    pub command_length: u32,
    pub command_id: u32,
    pub command_status: u32,
    pub sequence_number: u32,
}

impl Header {
    /// Reads the header from the first 16 bytes. The caller guarantees `b.len() >= 16`.
    #[inline]
    pub fn read(b: &[u8]) -> Header {
        Header {
            command_length: be32(b, 0),
            command_id: be32(b, 4),
            command_status: be32(b, 8),
            sequence_number: be32(b, 12),
        }
    }

    #[inline]
    pub fn is_response(&self) -> bool {
        self.command_id & RESP_BIT != 0
    }
}

#[inline]
pub(crate) fn be32(b: &[u8], at: usize) -> u32 {
    u32::from_be_bytes([b[at], b[at + 1], b[at + 2], b[at + 3]])
}

/// Rewrites the sequence_number of a complete frame in place.
#[inline]
pub fn set_sequence(frame: &mut [u8], seq: u32) {
    frame[12..16].copy_from_slice(&seq.to_be_bytes());
}

/// Reads the sequence_number of a complete frame.
#[inline]
pub fn sequence(frame: &[u8]) -> u32 {
    be32(frame, 12)
}

/// Reads the command_id of a complete frame.
#[inline]
pub fn command_id(frame: &[u8]) -> u32 {
    be32(frame, 4)
}

/// Reads the command_status of a complete frame.
#[inline]
pub fn command_status(frame: &[u8]) -> u32 {
    be32(frame, 8)
}

/// The bind flavour of a session, from the bind command id.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, serde::Serialize, serde::Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum BindType {
    Transmitter,
    Receiver,
    Transceiver,
}

impl BindType {
    pub fn from_command(id: u32) -> Option<BindType> {
        match id {
            cmd::BIND_TRANSMITTER => Some(BindType::Transmitter),
            cmd::BIND_RECEIVER => Some(BindType::Receiver),
            cmd::BIND_TRANSCEIVER => Some(BindType::Transceiver),
            _ => None,
        }
    }
    pub fn command_id(self) -> u32 {
        match self {
            BindType::Transmitter => cmd::BIND_TRANSMITTER,
            BindType::Receiver => cmd::BIND_RECEIVER,
            BindType::Transceiver => cmd::BIND_TRANSCEIVER,
        }
    }
    /// May the ESME send submit_sm and friends on this bind?
    pub fn can_submit(self) -> bool {
        !matches!(self, BindType::Receiver)
    }
    /// May the SMSC send deliver_sm on this bind?
    pub fn can_receive(self) -> bool {
        !matches!(self, BindType::Transmitter)
    }
    pub fn as_str(self) -> &'static str {
        match self {
            BindType::Transmitter => "transmitter",
            BindType::Receiver => "receiver",
            BindType::Transceiver => "transceiver",
        }
    }
}

#[cfg(test)]
mod command_index_tests {
    use super::*;

    #[test]
    fn table_matches_the_labels() {
        for id in (0..0x200u32).chain([0x8000_0000, 0x8000_0102, 0x8000_0103, 0x111, 0xFFFF_FFFF, 0x7FFF_FFFF]) {
            for id in [id, id | RESP_BIT] {
                assert_eq!(command_index(id), command_index_slow(id), "id 0x{id:08x}");
            }
        }
        assert_eq!(command_name(cmd::SUBMIT_SM), "submit_sm");
        assert_eq!(command_name(cmd::SUBMIT_SM_RESP), "submit_sm_resp");
        assert_eq!(command_name(cmd::GENERIC_NACK), "generic_nack");
        assert_eq!(command_name(cmd::DATA_SM_RESP), "data_sm_resp");
        assert_eq!(command_name(0x0000_0100), "other");
    }
}
