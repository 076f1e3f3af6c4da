//! One audit record and its inline, allocation-free parts.

use crate::policy::MessageClass;
use crate::policy::Verdict;

/// Longest address kept inline in a record (SMPP v3.4 addresses are ≤ 20 characters + NUL).
pub const ADDR_CAP: usize = 21;
/// Longest message_id kept (SMPP v3.4 §5.2.23: 64 characters + NUL).
pub const MESSAGE_ID_CAP: usize = 64;

/// An account as the audit log names it: an index into the (system_id, entity) pairs
/// registered with [`super::Audit::account`]. Copy, so records stay allocation-free.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct AccountId(pub(super) u32);

impl AccountId {
    /// Written as `"?"` (more than a million distinct accounts, or a disabled log).
    pub const UNKNOWN: AccountId = AccountId(u32::MAX);
}

/// An SMPP address kept inline (no allocation): TON, NPI and up to [`ADDR_CAP`] bytes.
#[derive(Clone, Copy, PartialEq, Eq)]
pub struct AuditAddr {
    pub ton: u8,
    pub npi: u8,
    /// Length as sent, saturating at 255; bytes beyond [`ADDR_CAP`] are not kept.
    len: u8,
    bytes: [u8; ADDR_CAP],
}

impl AuditAddr {
    pub const EMPTY: AuditAddr = AuditAddr { ton: 0, npi: 0, len: 0, bytes: [0; ADDR_CAP] };

    #[inline]
    pub fn new(ton: u8, npi: u8, addr: &[u8]) -> AuditAddr {
        let mut bytes = [0; ADDR_CAP];
        let keep = addr.len().min(ADDR_CAP);
        bytes[..keep].copy_from_slice(&addr[..keep]);
        AuditAddr { ton, npi, len: addr.len().min(255) as u8, bytes }
    }

    /// From a PDU field view.
    #[inline]
    pub fn from_peek(a: crate::smpp::peek::Addr<'_>) -> AuditAddr {
        AuditAddr::new(a.ton, a.npi, a.addr)
    }

    /// The bytes kept (at most [`ADDR_CAP`]).
    pub fn as_bytes(&self) -> &[u8] {
        &self.bytes[..(self.len as usize).min(ADDR_CAP)]
    }

    /// Whether the address as sent was longer than [`ADDR_CAP`].
    pub fn truncated(&self) -> bool {
        self.len as usize > ADDR_CAP
    }
}

impl std::fmt::Debug for AuditAddr {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{}/{}:{}", self.ton, self.npi, String::from_utf8_lossy(self.as_bytes()))
    }
}

/// The SMSC's message_id, inline (up to [`MESSAGE_ID_CAP`] bytes; a trailing NUL is dropped).
#[derive(Clone, Copy, PartialEq, Eq)]
pub struct MessageId {
    len: u8,
    bytes: [u8; MESSAGE_ID_CAP],
}

impl MessageId {
    /// No message_id (not forwarded, or not answered yet).
    pub const NONE: MessageId = MessageId { len: 0, bytes: [0; MESSAGE_ID_CAP] };

    #[inline]
    pub fn new(id: &[u8]) -> MessageId {
        let id = id.strip_suffix(&[0]).unwrap_or(id);
        let keep = id.len().min(MESSAGE_ID_CAP);
        let mut bytes = [0; MESSAGE_ID_CAP];
        bytes[..keep].copy_from_slice(&id[..keep]);
        MessageId { len: keep as u8, bytes }
    }

    pub fn as_bytes(&self) -> &[u8] {
        &self.bytes[..self.len as usize]
    }

    pub fn is_none(&self) -> bool {
        self.len == 0
    }
}

impl std::fmt::Debug for MessageId {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{:?}", String::from_utf8_lossy(self.as_bytes()))
    }
}

/// Which consent snapshot a decision used.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct SnapshotRef {
    /// The snapshot's payload checksum ([`crate::consent::snapshot::SnapshotInfo::checksum`]);
    /// 0 = no snapshot loaded.
    pub id: u64,
    /// [`crate::consent::store::Loaded::generation`].
    pub generation: u64,
    /// Build time, unix seconds.
    pub built_at: i64,
}

/// One decision, as the session fills it. Fixed size (about 200 bytes), `Copy`, no heap data:
/// pushing it is a memcpy into the session's batch.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct AuditRecord {
    /// Decision time, unix microseconds ([`crate::time::unix_us`]).
    pub at_us: i64,
    /// From [`super::Audit::account`] at bind.
    pub account: AccountId,
    /// The session id.
    pub session: u64,
    /// The ESME's sequence_number of the submit_sm / data_sm / submit_multi.
    pub sequence: u32,
    pub source: AuditAddr,
    /// The destination as sent (one record per destination of a submit_multi).
    pub destination: AuditAddr,
    /// The destination normalised to E.164 digits; `None` if it is not a subscriber number.
    pub msisdn: Option<u64>,
    /// `None` when the decision came before classification (unlicensed, sender_id).
    pub class: Option<MessageClass>,
    pub verdict: Verdict,
    /// command_status answered to the ESME: the reject status, or the SMSC's status relayed
    /// (or the response-timeout status). `None` if not answered (yet).
    pub status: Option<u32>,
    /// The SMSC's submit_sm_resp status, when forwarded and answered.
    pub upstream_status: Option<u32>,
    /// The SMSC's message_id, when forwarded and accepted.
    pub message_id: MessageId,
    pub snapshot: SnapshotRef,
    /// The protocol the message came in; written as `"protocol":"cmpp"` for CMPP (whose
    /// `status` and `upstream_status` are Results), absent for SMPP.
    pub protocol: Protocol,
    /// India DLT accounts: the PE and template ids the decision learnt (0 = none), written
    /// as `dlt_pe` and `dlt_template` when set. Two words, inline.
    pub dlt: crate::policy::DltIds,
}

/// The front a decision was made on.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum Protocol {
    #[default]
    Smpp,
    Cmpp,
}
