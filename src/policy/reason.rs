//! The closed set of outcomes (STYLE §5): one [`Reason`] yields both the SMPP status (through
//! `policy.reject_status`) and the metric label; a [`Verdict`] is what happens to one
//! destination; a [`Decision`] is the verdict with what the pipeline learnt on the way.

use super::{MessageClass, PolicyMode};

/// Why a message is (or would be) rejected.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
#[repr(u8)]
pub enum Reason {
    /// Commercial, opt-in regime, and no grant from this subscriber for this entity.
    NoConsent = 0,
    /// The subscriber's latest statement for this entity is a revocation (e.g. replied "TD").
    Revoked = 1,
    /// The subscriber is on the do-not-call registry and gave no newer grant.
    Dnc = 2,
    /// Commercial, inside the quiet hours of the subscriber's local time (step 7).
    QuietHours = 3,
    /// A frequency cap reached: per entity or per subscriber per local day, or the same text
    /// again within the window (step 8).
    FrequencyCap = 4,
    /// The account's licence is missing or has expired.
    Unlicensed = 5,
    /// source_addr not among the account's allowed sender ids.
    SenderId = 6,
    /// Rate or window exceeded.
    Throttled = 7,
    /// Commercial traffic while no consent snapshot is loaded (`on_snapshot_unavailable = "reject"`).
    SnapshotUnavailable = 8,
    /// A `reject` content rule matched the message text (step 4).
    ContentBlocked = 9,
    /// Commercial without one of the account's 【signatures】 at its start or end (step 5).
    MissingSignature = 10,
    /// Commercial without any of `policy.commercial.opt_out_hints` (step 5).
    MissingOptOutHint = 11,
    /// The account's entity is suspended after too many complaints (step 1, architecture §7): any
    /// message, commercial or not, until an operator lifts it.
    Suspended = 12,
    // India DLT (architecture §11, `policy::dlt`): accounts with `scrubbing = "dlt"` only.
    /// No PE id: neither the `dlt.pe_id_tlv` TLV nor the account's `pe_id`.
    DltEntityMissing = 13,
    /// The PE id is not registered.
    DltEntityUnknown = 14,
    /// The PE is registered but inactive.
    DltEntityInactive = 15,
    /// The PE is blacklisted.
    DltEntityBlacklisted = 16,
    /// source_addr is not a registered header (headers are case-sensitive).
    DltHeaderUnknown = 17,
    /// The header is registered to another PE.
    DltHeaderOtherPe = 18,
    /// The header is inactive or blacklisted.
    DltHeaderInactive = 19,
    /// The template id is not registered, or not for this PE or header; or, without an id,
    /// the PE has no template for this header.
    DltTemplateUnknown = 20,
    /// The template (given, or the only one the text matches) is inactive or blacklisted.
    DltTemplateInactive = 21,
    /// The text does not match the template's fixed parts (or, without an id, any template).
    DltTemplateMismatch = 22,
    /// The text fits the template but a `{#var#}` value is longer than 30 characters.
    DltVariableTooLong = 23,
    /// The template's category does not fit the header's type (a P header carries only
    /// promotional templates; T and S headers no promotional ones).
    DltCategoryHeader = 24,
    /// No `dlt.chain_tlv` TLV: the PE→TM chain was not sent.
    DltChainMissing = 25,
    /// A telemarketer of the chain is not declared for the PE (or the chain is malformed).
    DltChainUndeclared = 26,
    /// Service-explicit to a fully blocked subscriber without consent; promotional without
    /// consent to a subscriber whose preferences refuse its content category.
    DltPreference = 27,
    /// Promotional outside `dlt.promotional_hours`.
    DltPromotionalHours = 28,
}

impl Reason {
    pub const COUNT: usize = 29;
    pub const ALL: [Reason; Reason::COUNT] = [
        Reason::NoConsent,
        Reason::Revoked,
        Reason::Dnc,
        Reason::QuietHours,
        Reason::FrequencyCap,
        Reason::Unlicensed,
        Reason::SenderId,
        Reason::Throttled,
        Reason::SnapshotUnavailable,
        Reason::ContentBlocked,
        Reason::MissingSignature,
        Reason::MissingOptOutHint,
        Reason::Suspended,
        Reason::DltEntityMissing,
        Reason::DltEntityUnknown,
        Reason::DltEntityInactive,
        Reason::DltEntityBlacklisted,
        Reason::DltHeaderUnknown,
        Reason::DltHeaderOtherPe,
        Reason::DltHeaderInactive,
        Reason::DltTemplateUnknown,
        Reason::DltTemplateInactive,
        Reason::DltTemplateMismatch,
        Reason::DltVariableTooLong,
        Reason::DltCategoryHeader,
        Reason::DltChainMissing,
        Reason::DltChainUndeclared,
        Reason::DltPreference,
        Reason::DltPromotionalHours,
    ];

    /// The metric label and config key.
    pub fn label(self) -> &'static str {
        match self {
            Reason::NoConsent => "no_consent",
            Reason::Revoked => "revoked",
            Reason::Dnc => "dnc",
            Reason::QuietHours => "quiet_hours",
            Reason::FrequencyCap => "frequency_cap",
            Reason::Unlicensed => "unlicensed",
            Reason::SenderId => "sender_id",
            Reason::Throttled => "throttled",
            Reason::SnapshotUnavailable => "snapshot_unavailable",
            Reason::ContentBlocked => "content_blocked",
            Reason::MissingSignature => "missing_signature",
            Reason::MissingOptOutHint => "missing_opt_out_hint",
            Reason::Suspended => "suspended",
            Reason::DltEntityMissing => "dlt_entity_missing",
            Reason::DltEntityUnknown => "dlt_entity_unknown",
            Reason::DltEntityInactive => "dlt_entity_inactive",
            Reason::DltEntityBlacklisted => "dlt_entity_blacklisted",
            Reason::DltHeaderUnknown => "dlt_header_unknown",
            Reason::DltHeaderOtherPe => "dlt_header_other_pe",
            Reason::DltHeaderInactive => "dlt_header_inactive",
            Reason::DltTemplateUnknown => "dlt_template_unknown",
            Reason::DltTemplateInactive => "dlt_template_inactive",
            Reason::DltTemplateMismatch => "dlt_template_mismatch",
            Reason::DltVariableTooLong => "dlt_variable_too_long",
            Reason::DltCategoryHeader => "dlt_category_header",
            Reason::DltChainMissing => "dlt_chain_missing",
            Reason::DltChainUndeclared => "dlt_chain_undeclared",
            Reason::DltPreference => "dlt_preference",
            Reason::DltPromotionalHours => "dlt_promotional_hours",
        }
    }

    pub fn from_label(s: &str) -> Option<Reason> {
        Reason::ALL.into_iter().find(|r| r.label() == s)
    }

    pub fn labels() -> Vec<&'static str> {
        Reason::ALL.iter().map(|r| r.label()).collect()
    }

    /// architecture §3 default command_status: the vendor range 0x400– for policy rejects (never
    /// 0x0B, which senders read as "number does not exist").
    pub fn default_status(self) -> u32 {
        match self {
            Reason::NoConsent => 0x400,
            Reason::Revoked => 0x401,
            Reason::Dnc => 0x402,
            Reason::QuietHours => 0x403,
            Reason::FrequencyCap => 0x404,
            Reason::Unlicensed => 0x405,
            Reason::SenderId => 0x0A,
            Reason::Throttled => 0x58,
            Reason::SnapshotUnavailable => 0x08,
            Reason::ContentBlocked => 0x406,
            Reason::MissingSignature => 0x407,
            Reason::MissingOptOutHint => 0x408,
            Reason::Suspended => 0x409,
            // The DLT reasons follow on, 0x40A–0x419, in declaration order.
            r => 0x40A + (r as u32 - Reason::DltEntityMissing as u32),
        }
    }

    /// Every default status, indexed by `Reason as usize`.
    pub fn default_statuses() -> [u32; Reason::COUNT] {
        Reason::ALL.map(Reason::default_status)
    }

    /// The default CMPP SUBMIT_RESP Result: the vendor range 100–199 the standard leaves to
    /// gateways, one code per reason (100 + its number), except a sender id refusal (10,
    /// "Src_Id错误") and throttling (8, flow control: the one code SPs resend on, right for
    /// throughput and never used for a refusal).
    pub fn default_cmpp_result(self) -> u32 {
        match self {
            Reason::SenderId => 10,
            Reason::Throttled => 8,
            r => 100 + r as u32,
        }
    }

    /// The default Stat of the status report that tells an SP about one refused destination
    /// of a group SUBMIT: `CG:` and the default Result in four digits (`CG:0101` = revoked),
    /// in the `XX:nnnn` shape gateways use for their own codes.
    pub fn default_cmpp_stat(self) -> [u8; 7] {
        let s = format!("CG:{:04}", self.default_cmpp_result());
        let mut out = [0u8; 7];
        out.copy_from_slice(&s.as_bytes()[..7]);
        out
    }
}

/// The outcome for one destination.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Verdict {
    Accept,
    Reject(Reason),
    /// `policy.mode = "monitor"`: would be rejected; forwarded anyway.
    WouldReject(Reason),
}

impl Verdict {
    /// The verdict under `mode`: in monitor mode a reject becomes a would-reject. The one
    /// place monitor mode is applied.
    #[inline]
    pub fn under(self, mode: PolicyMode) -> Verdict {
        match (self, mode) {
            (Verdict::Reject(r), PolicyMode::Monitor) => Verdict::WouldReject(r),
            (v, _) => v,
        }
    }

    /// Whether the message goes upstream.
    #[inline]
    pub fn forwards(self) -> bool {
        !matches!(self, Verdict::Reject(_))
    }

    pub fn label(self) -> &'static str {
        match self {
            Verdict::Accept => "accepted",
            Verdict::Reject(_) => "rejected",
            Verdict::WouldReject(_) => "would_reject",
        }
    }

    pub fn reason(self) -> Option<Reason> {
        match self {
            Verdict::Accept => None,
            Verdict::Reject(r) | Verdict::WouldReject(r) => Some(r),
        }
    }
}

/// What consent data says about (subscriber, entity).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Standing {
    /// Latest statement is a grant newer than any DNC registration.
    Granted,
    /// Latest statement for this entity is a revocation.
    Revoked,
    /// On the do-not-call registry with no newer grant for this entity.
    Dnc,
    /// No statement at all.
    None,
}

impl Standing {
    pub fn label(self) -> &'static str {
        match self {
            Standing::Granted => "granted",
            Standing::Revoked => "revoked",
            Standing::Dnc => "dnc",
            Standing::None => "none",
        }
    }
}

/// The pipeline's answer for one destination: the verdict (monitor mode applied), the status
/// an ESME gets for a reject, and what was learnt on the way, so the session and the audit log
/// need not work it out again.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Decision {
    pub verdict: Verdict,
    /// The submit_sm_resp command_status for a [`Verdict::Reject`]; 0 otherwise.
    pub status: u32,
    /// The message class, once classified (`None`: decided before step 4).
    pub class: Option<MessageClass>,
    /// The destination as E.164 digits, when it is a subscriber number.
    pub msisdn: Option<u64>,
    /// A later part of a concatenated message, answered with its first part's decision.
    pub from_cache: bool,
    /// DLT accounts: the PE id and the template id as far as the DLT steps learnt them (0 =
    /// not known: no PE id sent, or refused before a template matched).
    pub dlt: DltIds,
}

/// The DLT ids a decision carries into the audit log (two words, `Copy`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct DltIds {
    pub pe: u64,
    pub template: u64,
}

impl Decision {
    /// Accepted, nothing learnt yet: where every decision starts.
    pub const fn accept() -> Decision {
        Decision {
            verdict: Verdict::Accept,
            status: 0,
            class: None,
            msisdn: None,
            from_cache: false,
            dlt: DltIds { pe: 0, template: 0 },
        }
    }
}
