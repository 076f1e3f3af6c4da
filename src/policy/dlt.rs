//! India DLT scrubbing (architecture §11, TRAI TCCCPR 2018): the steps an account with
//! `scrubbing = "dlt"` runs after steps 1–2 (account, sender id) instead of steps 4–7, against
//! the registry `dlt build` compiled ([`crate::dlt::Registry`]).
//!
//! ```text
//!  PE id (TLV dlt.pe_id_tlv, else account pe_id)
//!   └► entity: registered, active ─► header: source_addr registered to that PE, active
//!      └► template: TLV dlt.template_id_tlv, or found by the text; match_text on the whole
//!         decoded text; category fits the header type (P: promotional only; T, S, G: not)
//!         └► chain: every TM id of TLV dlt.chain_tlv declared for the PE
//!            └► by category: transactional, service_implicit → pass
//!                            service_explicit → consent, or the subscriber not fully blocked
//!                            promotional      → (consent, or preferences allow its content
//!                                               category) and local time in promotional_hours
//! ```
//!
//! Consent is the consent snapshot's (and the live delta's) statement for (subscriber, entity)
//! with the entity named by the PE id in decimal (`"1101234567890123"`): a grant newer than
//! any do-not-call registration. "Consent overrides preferences" (the operators' scrubbing
//! order, reference mission-anchors §3).
//!
//! TLV values are ASCII (a trailing NUL, as in a C-Octet String, is accepted): the PE and
//! template ids 1–19 decimal digits, the chain TM ids separated by commas (spaces around them
//! ignored). Every step is a read of the immutable registry: no lock, no allocation (the PE
//! id's decimal name for the consent lookup is formatted on the stack).

use std::path::PathBuf;
use std::sync::Arc;

use crate::dlt::{Category, HeaderType, Mismatch, Registry, Status, TextFail};
use crate::smpp::peek;
use crate::time::{Now, Zone};

use super::engine::{standing, ConsentView, Message};
use super::{DailyWindow, DltIds, Reason, Standing};

/// `dlt.pe_id_tlv` default: the vendor TLV tag that carries the PE (entity) id.
pub const DEFAULT_PE_ID_TLV: u16 = 0x1400;
/// `dlt.template_id_tlv` default: the content template id.
pub const DEFAULT_TEMPLATE_ID_TLV: u16 = 0x1401;
/// `dlt.chain_tlv` default: the PE→TM chain, comma-separated TM ids.
pub const DEFAULT_CHAIN_TLV: u16 = 0x1402;
/// `dlt.promotional_hours` default: 09:00–21:00 (TCCCPR 2018), in [`DEFAULT_TIMEZONE`].
pub const DEFAULT_PROMOTIONAL_HOURS: DailyWindow = DailyWindow { start: 9 * 60, end: 21 * 60 };
/// `dlt.promotional_hours.timezone` default (India has one zone, IST, UTC+05:30).
pub const DEFAULT_TIMEZONE: &str = "Asia/Kolkata";

/// `[dlt]`, validated: the registry is open (a file that does not load refuses the config,
/// at start and at a reload, which keeps the running one).
#[derive(Debug, Clone)]
pub struct DltConfig {
    /// The loaded registry; shared by the engines built from this config.
    pub registry: Arc<Registry>,
    /// `dlt.registry`, as configured.
    pub path: PathBuf,
    pub pe_id_tlv: u16,
    pub template_id_tlv: u16,
    pub chain_tlv: u16,
    /// When promotional messages may be delivered, local time in `zone`.
    pub promotional_hours: DailyWindow,
    pub zone: Zone,
}

impl DltConfig {
    /// A config for `registry` outside the gateway (`dlt lookup`, benchmarks): the default
    /// TLV tags, `promotional_hours` in [`DEFAULT_TIMEZONE`].
    pub fn offline(
        registry: Arc<Registry>,
        path: PathBuf,
        promotional_hours: DailyWindow,
    ) -> Result<DltConfig, crate::time::UnknownZone> {
        Ok(DltConfig {
            registry,
            path,
            pe_id_tlv: DEFAULT_PE_ID_TLV,
            template_id_tlv: DEFAULT_TEMPLATE_ID_TLV,
            chain_tlv: DEFAULT_CHAIN_TLV,
            promotional_hours,
            zone: Zone::get(DEFAULT_TIMEZONE)?,
        })
    }
}

/// `[[account]] scrubbing`: which checks the account's messages go through after step 2.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum Scrubbing {
    /// Steps 4–8 (class, commercial checks, consent, quiet hours, frequency).
    #[default]
    Default,
    /// The DLT steps of this module, then step 8 for promotional and service-explicit ones.
    Dlt,
}

/// What the DLT steps found for a message that passed them.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Passed {
    pub category: Category,
}

/// Runs the DLT steps for one destination; `Err` is the refusal. `ids` gets the PE and
/// template ids as they are learnt (the audit log's). `msisdn` is the destination as E.164
/// digits, if a subscriber number; `account_pe` the account's `pe_id`.
#[inline]
pub(super) fn scrub(
    cfg: &DltConfig,
    account_pe: Option<u64>,
    m: &Message,
    data: &ConsentView,
    msisdn: Option<u64>,
    now: Now,
    ids: &mut DltIds,
) -> Result<Passed, Reason> {
    let reg = &*cfg.registry;
    let pe = step_entity(reg, tlv(m, cfg.pe_id_tlv), account_pe)?;
    ids.pe = pe;
    let header = step_header(reg, pe, m.source.addr)?;
    let template_id = match tlv(m, cfg.template_id_tlv) {
        None => None,
        Some(v) => Some(decimal(v).ok_or(Reason::DltTemplateUnknown)?),
    };
    ids.template = template_id.unwrap_or(0);
    let t = step_template(reg, pe, header, template_id, m.text.unwrap_or(""), ids)?;
    step_chain(reg, pe, tlv(m, cfg.chain_tlv))?;
    step_category(cfg, pe, t, data, msisdn, now)?;
    Ok(Passed { category: t.category })
}

/// Entity: the PE id from the TLV, else the account's; registered and active.
#[inline]
fn step_entity(reg: &Registry, tlv: Option<&[u8]>, account_pe: Option<u64>) -> Result<u64, Reason> {
    let pe = match tlv {
        Some(v) => decimal(v).ok_or(Reason::DltEntityMissing)?,
        None => account_pe.ok_or(Reason::DltEntityMissing)?,
    };
    match reg.entity(pe) {
        None => Err(Reason::DltEntityUnknown),
        Some(Status::Active) => Ok(pe),
        Some(Status::Inactive) => Err(Reason::DltEntityInactive),
        Some(Status::Blacklisted) => Err(Reason::DltEntityBlacklisted),
    }
}

/// A registered header: its name (as `match_text` takes it) and type.
#[derive(Clone, Copy)]
struct Header<'a> {
    name: &'a str,
    kind: HeaderType,
}

/// Header: source_addr is a header registered (case-sensitive) to this PE, active.
#[inline]
fn step_header<'m>(reg: &Registry, pe: u64, source: &'m [u8]) -> Result<Header<'m>, Reason> {
    let name = std::str::from_utf8(source).map_err(|_| Reason::DltHeaderUnknown)?;
    let h = reg.header(name).ok_or(Reason::DltHeaderUnknown)?;
    if h.pe != pe {
        return Err(Reason::DltHeaderOtherPe);
    }
    if h.status != Status::Active {
        return Err(Reason::DltHeaderInactive);
    }
    Ok(Header { name, kind: h.kind })
}

/// Template: `match_text` on the whole decoded text (with the TLV's id, or found by the text),
/// then the category against the header's type.
#[inline]
fn step_template<'r>(
    reg: &'r Registry,
    pe: u64,
    header: Header<'_>,
    template_id: Option<u64>,
    text: &str,
    ids: &mut DltIds,
) -> Result<crate::dlt::Template<'r>, Reason> {
    let t = reg.match_text(pe, header.name, template_id, text).map_err(|e| {
        if let Some(id) = mismatch_template(&e) {
            ids.template = id;
        }
        mismatch_reason(&e)
    })?;
    ids.template = t.id;
    if !fits_header(header.kind, t.category) {
        return Err(Reason::DltCategoryHeader);
    }
    Ok(t)
}

/// A P header carries promotional templates only; T, S and G headers everything else.
#[inline]
fn fits_header(kind: HeaderType, category: Category) -> bool {
    match kind {
        HeaderType::Promotional => category == Category::Promotional,
        HeaderType::Transactional | HeaderType::Service | HeaderType::Government => category != Category::Promotional,
    }
}

/// The reason for a `match_text` refusal.
pub fn mismatch_reason(e: &Mismatch) -> Reason {
    match e {
        Mismatch::UnknownHeader => Reason::DltHeaderUnknown,
        Mismatch::HeaderOfOtherPe { .. } => Reason::DltHeaderOtherPe,
        Mismatch::UnknownTemplate { .. }
        | Mismatch::TemplateOfOtherPe { .. }
        | Mismatch::TemplateOfOtherHeader { .. }
        | Mismatch::NoTemplateForHeader => Reason::DltTemplateUnknown,
        Mismatch::TemplateInactive { .. } => Reason::DltTemplateInactive,
        Mismatch::Text { fail: TextFail::VariableTooLong { .. }, .. }
        | Mismatch::NoMatch { closest: Some((_, TextFail::VariableTooLong { .. })), .. } => Reason::DltVariableTooLong,
        Mismatch::Text { fail: TextFail::Literal { .. }, .. } | Mismatch::NoMatch { .. } => Reason::DltTemplateMismatch,
    }
}

/// The template a refusal names, if any (the closest one for a text no template matches).
fn mismatch_template(e: &Mismatch) -> Option<u64> {
    match *e {
        Mismatch::UnknownTemplate { template_id }
        | Mismatch::TemplateOfOtherPe { template_id, .. }
        | Mismatch::TemplateOfOtherHeader { template_id }
        | Mismatch::TemplateInactive { template_id, .. }
        | Mismatch::Text { template_id, .. } => Some(template_id),
        Mismatch::NoMatch { closest: Some((id, _)), .. } => Some(id),
        _ => None,
    }
}

/// Chain: the TLV is there, and every TM id in it is declared for the PE.
#[inline]
fn step_chain(reg: &Registry, pe: u64, tlv: Option<&[u8]>) -> Result<(), Reason> {
    let chain = tlv.ok_or(Reason::DltChainMissing)?;
    let mut any = false;
    for tm in chain.split(|&b| b == b',') {
        let tm = decimal(tm.trim_ascii()).ok_or(Reason::DltChainUndeclared)?;
        if !reg.chain_declared(pe, tm) {
            return Err(Reason::DltChainUndeclared);
        }
        any = true;
    }
    if any {
        Ok(())
    } else {
        Err(Reason::DltChainUndeclared)
    }
}

/// By category: transactional and service-implicit pass; service-explicit needs consent or a
/// subscriber not fully blocked; promotional needs consent or preferences that allow its
/// content category, and the local time inside `promotional_hours`.
#[inline]
fn step_category(
    cfg: &DltConfig,
    pe: u64,
    t: crate::dlt::Template<'_>,
    data: &ConsentView,
    msisdn: Option<u64>,
    now: Now,
) -> Result<(), Reason> {
    match t.category {
        Category::Transactional | Category::ServiceImplicit => Ok(()),
        Category::ServiceExplicit => {
            if consented(data, pe, msisdn) {
                return Ok(());
            }
            let blocked = msisdn.and_then(|n| cfg.registry.preference(n)).is_some_and(|p| p.fully_blocked);
            if blocked {
                Err(Reason::DltPreference)
            } else {
                Ok(())
            }
        }
        Category::Promotional => {
            if !consented(data, pe, msisdn) {
                let cc = t.content_category.unwrap_or(0);
                let refused = msisdn.and_then(|n| cfg.registry.preference(n)).is_some_and(|p| p.refuses(cc));
                if refused {
                    return Err(Reason::DltPreference);
                }
            }
            if !cfg.promotional_hours.contains(cfg.zone.local(now).minute_of_day) {
                return Err(Reason::DltPromotionalHours);
            }
            Ok(())
        }
    }
}

/// A message to explain with [`explain`]: what the TLVs and the submit would carry.
#[derive(Debug, Clone, Copy)]
pub struct Probe<'a> {
    /// The PE id (TLV `pe_id_tlv`, else the account's `pe_id`); `None`: neither.
    pub pe: Option<u64>,
    /// The header (source_addr), case-sensitive.
    pub header: &'a str,
    /// The template id (TLV `template_id_tlv`); `None`: found by the text.
    pub template_id: Option<u64>,
    /// The chain (TLV `chain_tlv`): TM ids, comma-separated; `None`: the TLV is absent.
    pub chain: Option<&'a str>,
    /// The whole decoded text.
    pub text: &'a str,
    /// The destination as E.164 digits; `None`: consent and preferences are not looked at.
    pub msisdn: Option<u64>,
}

/// One DLT step's outcome in [`Explained`].
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct StepReport {
    /// `entity`, `header`, `template`, `chain`, `category`.
    pub step: &'static str,
    pub ok: bool,
    /// What was found, in words.
    pub detail: String,
}

/// The DLT steps for one message, each with what it found, up to the first refusal.
#[derive(Debug, Clone)]
pub struct Explained {
    pub steps: Vec<StepReport>,
    /// What [`scrub`] decides for the same message.
    pub outcome: Result<Passed, Reason>,
    pub ids: DltIds,
}

/// Runs the DLT steps for `p` as [`scrub`] does (the same checks, in the same order, on the
/// same data) and says what each one found: `consentgate dlt lookup` (offline: no consent
/// data) and `GET /v1/dlt/lookup` (the running gateway's registry, consent and clock).
pub fn explain(cfg: &DltConfig, p: &Probe, data: &ConsentView, now: Now) -> Explained {
    let reg = &*cfg.registry;
    let mut steps = Vec::new();
    let mut ids = DltIds::default();
    let mut step = |step: &'static str, ok: bool, detail: String| steps.push(StepReport { step, ok, detail });
    let outcome = (|| {
        let pe = match step_entity(reg, None, p.pe) {
            Ok(pe) => pe,
            Err(r) => {
                let detail = match p.pe {
                    None => "no PE id: neither the TLV nor the account's pe_id".to_owned(),
                    Some(pe) => match reg.entity(pe) {
                        None => format!("PE {pe} not registered"),
                        Some(s) => format!("PE {pe} is {}", s.as_str()),
                    },
                };
                step("entity", false, detail);
                return Err(r);
            }
        };
        ids.pe = pe;
        step("entity", true, format!("PE {pe} active"));
        let header = match step_header(reg, pe, p.header.as_bytes()) {
            Ok(h) => h,
            Err(r) => {
                let h = p.header;
                let detail = match reg.header(h) {
                    None => format!("{h:?} not registered (headers are case-sensitive)"),
                    Some(x) if x.pe != pe => format!("{h:?} belongs to PE {}, not PE {pe}", x.pe),
                    Some(x) => format!("{h:?} is {}", x.status.as_str()),
                };
                step("header", false, detail);
                return Err(r);
            }
        };
        step("header", true, format!("{:?} of PE {pe}, type {}", p.header, header.kind.letter()));
        ids.template = p.template_id.unwrap_or(0);
        let t = match reg.match_text(pe, header.name, p.template_id, p.text) {
            Ok(t) => t,
            Err(e) => {
                if let Some(id) = mismatch_template(&e) {
                    ids.template = id;
                }
                let detail = match (&e, p.template_id) {
                    (Mismatch::NoMatch { .. } | Mismatch::NoTemplateForHeader, _) => {
                        format!("{e} (PE {pe}, header {:?})", p.header)
                    }
                    (_, Some(id)) => format!("{e} (template {id}, PE {pe})"),
                    (_, None) => format!("{e} (PE {pe})"),
                };
                step("template", false, detail);
                return Err(mismatch_reason(&e));
            }
        };
        ids.template = t.id;
        let cc = t.content_category.map_or_else(String::new, |c| format!(", content category {c}"));
        let how = if p.template_id.is_some() { "" } else { ", found by its text" };
        let what = format!("template {} of PE {pe}{how} ({}{cc}): {:?}", t.id, t.category.as_str(), t.content);
        if !fits_header(header.kind, t.category) {
            step(
                "template",
                false,
                format!("{what}: a {} template on a type {} header", t.category.as_str(), header.kind.letter()),
            );
            return Err(Reason::DltCategoryHeader);
        }
        step("template", true, what);
        if let Err(r) = step_chain(reg, pe, p.chain.map(str::as_bytes)) {
            let detail = match p.chain {
                None => "no chain TLV: the PE→TM delivery chain is mandatory".to_owned(),
                Some(c) => format!("TM {c} not declared in PE {pe}'s delivery chain"),
            };
            step("chain", false, detail);
            return Err(r);
        }
        step("chain", true, format!("TM {} declared by PE {pe}", p.chain.unwrap_or("")));
        let consent = consented(data, pe, p.msisdn);
        let pref = p.msisdn.and_then(|n| reg.preference(n));
        let local = cfg.zone.local(now).minute_of_day;
        let subscriber = match (p.msisdn, pref) {
            (None, _) => "no subscriber given".to_owned(),
            (Some(n), None) => format!("{n}: consent of PE {pe} {}, no preference registered", yes(consent)),
            (Some(n), Some(x)) if x.fully_blocked => format!("{n}: consent of PE {pe} {}, fully blocked", yes(consent)),
            (Some(n), Some(x)) => {
                let cats: Vec<String> = (1..=8u8).filter(|&c| x.refuses(c)).map(|c| c.to_string()).collect();
                format!("{n}: consent of PE {pe} {}, refuses categories {}", yes(consent), cats.join(";"))
            }
        };
        let hours = format!(
            "{} {} (promotional hours {}-{})",
            super::DailyWindow::fmt_time(local as u16),
            cfg.zone.name(),
            super::DailyWindow::fmt_time(cfg.promotional_hours.start),
            super::DailyWindow::fmt_time(cfg.promotional_hours.end)
        );
        let detail = match t.category {
            Category::Transactional | Category::ServiceImplicit => format!("{}: passes", t.category.as_str()),
            Category::ServiceExplicit => format!("service_explicit; {subscriber}"),
            Category::Promotional => format!("promotional; {subscriber}; {hours}"),
        };
        let r = step_category(cfg, pe, t, data, p.msisdn, now);
        step("category", r.is_ok(), detail);
        r.map(|()| Passed { category: t.category })
    })();
    Explained { steps, outcome, ids }
}

fn yes(b: bool) -> &'static str {
    if b {
        "granted"
    } else {
        "not granted"
    }
}

/// Whether (subscriber, PE) has consent: the latest statement for the entity named by the PE
/// id in decimal is a grant newer than any do-not-call registration.
#[inline]
fn consented(data: &ConsentView, pe: u64, msisdn: Option<u64>) -> bool {
    let Some(msisdn) = msisdn else { return false };
    let mut buf = [0u8; 20];
    let name = decimal_str(pe, &mut buf);
    let view = ConsentView {
        snapshot: data.snapshot,
        delta: data.delta,
        live_entity: data.delta.lookup_entity(name),
        snap_entity: data.snapshot.and_then(|s| s.entity_id(name)),
    };
    standing(&view, msisdn) == Some(Standing::Granted)
}

/// The value of the TLV `tag` in the message, if present.
#[inline]
fn tlv<'a>(m: &Message<'a>, tag: u16) -> Option<&'a [u8]> {
    peek::tlvs(m.tlvs).find_map(|t| match t {
        Ok((t, v)) if t == tag => Some(v),
        _ => None,
    })
}

/// A DLT id in ASCII decimal: 1–19 digits, no leading zero; a trailing NUL is dropped.
#[inline]
pub fn decimal(v: &[u8]) -> Option<u64> {
    let v = v.strip_suffix(&[0]).unwrap_or(v);
    if v.is_empty() || v.len() > 19 || v[0] == b'0' {
        return None;
    }
    v.iter().try_fold(0u64, |acc, &c| c.is_ascii_digit().then(|| acc * 10 + u64::from(c - b'0')))
}

/// `n` in decimal, written into `buf` (no allocation; the audit writer's numbers too).
pub(crate) fn decimal_str(mut n: u64, buf: &mut [u8; 20]) -> &str {
    let mut i = buf.len();
    loop {
        i -= 1;
        buf[i] = b'0' + (n % 10) as u8;
        n /= 10;
        if n == 0 {
            break;
        }
    }
    // ASCII digits only.
    std::str::from_utf8(&buf[i..]).unwrap_or("0")
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::config::Config;
    use crate::consent::delta::Delta;
    use crate::consent::statement::{EntityName, NodeId, Statement, StatementId, StatementKind, StatementSource};
    use crate::policy::{Decision, Engine, Verdict};
    use crate::smpp::peek::Addr;
    use crate::smpp::text::Coding;

    #[test]
    fn ids_are_decimal() {
        assert_eq!(decimal(b"1101234567890123"), Some(1_101_234_567_890_123));
        assert_eq!(decimal(b"42\0"), Some(42));
        assert_eq!(decimal(b""), None);
        assert_eq!(decimal(b"0123"), None);
        assert_eq!(decimal(b"12a"), None);
        assert_eq!(decimal(b"12345678901234567890"), None);
        let mut b = [0; 20];
        assert_eq!(decimal_str(u64::MAX, &mut b), "18446744073709551615");
        assert_eq!(decimal_str(7, &mut b), "7");
    }

    #[test]
    fn statuses_follow_on() {
        assert_eq!(Reason::DltEntityMissing.default_status(), 0x40A);
        assert_eq!(Reason::DltPromotionalHours.default_status(), 0x419);
        assert_eq!(Reason::DltPromotionalHours.default_cmpp_result(), 128);
    }

    const PE: u64 = 1_101_000_000_000_000_001;
    const TM: &str = "1302000000000000007";
    /// Fully blocked.
    const BLOCKED: u64 = 919_812_345_678;
    /// Refuses content category 4.
    const NO_CC4: u64 = 919_811_111_111;

    /// A registry and an engine with one DLT account `in` (no `pe_id`) and the live delta.
    struct World {
        engine: Engine,
        delta: Delta,
        _dir: tempfile::TempDir,
    }

    fn world() -> World {
        let dir = tempfile::tempdir().unwrap();
        let w = |n: &str, t: &str| std::fs::write(dir.path().join(n), t).unwrap();
        w("e.csv", &format!("pe_id,name,status\n{PE},Acme,active\n"));
        w(
            "h.csv",
            &format!("header,pe_id,type,status\nACMEBK,{PE},T,active\nACMEPR,{PE},P,active\nACMESE,{PE},S,active\n"),
        );
        w(
            "t.csv",
            &format!(
                "template_id,pe_id,headers,category,content_category,content,status\n\
                 11,{PE},ACMEBK,transactional,,Dear {{#var#}}: OTP {{#var#}} - Acme,active\n\
                 12,{PE},ACMEPR,promotional,4,Sale {{#var#}} - Acme,active\n\
                 13,{PE},ACMESE,service_explicit,1,Statement {{#var#}} - Acme,active\n\
                 14,{PE},ACMEBK,promotional,4,Offer {{#var#}} - Acme,active\n\
                 15,{PE},ACMEBK,transactional,,Old {{#var#}} - Acme,inactive\n"
            ),
        );
        w("c.csv", &format!("pe_id,tm_id\n{PE},{TM}\n"));
        w("p.csv", "msisdn,categories,registered_at\n9812345678,all,2024-01-01\n9811111111,4,2024-01-01\n");
        let p = |n: &str| dir.path().join(n);
        crate::dlt::build(&crate::dlt::BuildOptions {
            entities: p("e.csv"),
            headers: p("h.csv"),
            templates: p("t.csv"),
            chains: Some(p("c.csv")),
            preferences: Some(p("p.csv")),
            out: p("r.dlt"),
            default_cc: "91".into(),
            ..Default::default()
        })
        .expect("build");
        let text = format!(
            "[upstream]\naddress = \"10.1.2.3:2775\"\n[policy]\ndefault_country_code = \"91\"\n\
             [dlt]\nregistry = {:?}\n[[account]]\nsystem_id = \"in\"\nlicence = \"UL-1\"\nscrubbing = \"dlt\"\n",
            p("r.dlt").display().to_string()
        );
        let engine = Config::parse(&text).unwrap_or_else(|e| panic!("{e:?}")).engine();
        World { engine, delta: Delta::new(), _dir: dir }
    }

    impl World {
        fn grant(&self, msisdn: u64) {
            let id = StatementId { origin: NodeId::parse("test").unwrap(), seq: msisdn };
            let entity = Some(EntityName::parse(&PE.to_string()).unwrap());
            let kind = StatementKind::Grant;
            self.delta.apply(&Statement {
                at: 1_700_000_000_000,
                kind,
                source: StatementSource::Api,
                msisdn,
                entity,
                id,
            });
        }

        /// Decides `text` from `header` to `msisdn` with the PE id, template id `t` (if any)
        /// and the declared TM in the TLVs, at `hh:mm` IST on 2026-06-01.
        fn decide(&self, header: &str, msisdn: u64, text: &str, t: Option<u64>, hhmm: (i64, i64)) -> Decision {
            let mut tlvs = Vec::new();
            let mut put = |tag: u16, v: &str| {
                tlvs.extend_from_slice(&tag.to_be_bytes());
                tlvs.extend_from_slice(&(v.len() as u16).to_be_bytes());
                tlvs.extend_from_slice(v.as_bytes());
            };
            put(0x1400, &PE.to_string());
            put(0x1402, TM);
            if let Some(t) = t {
                put(0x1401, &t.to_string());
            }
            let dest = msisdn.to_string();
            let m = Message {
                source: Addr { ton: 5, npi: 0, addr: header.as_bytes() },
                destination: Addr { ton: 1, npi: 1, addr: dest.as_bytes() },
                service: b"",
                coding: Coding::Ascii,
                user_data: text.as_bytes(),
                tlvs: &tlvs,
                text: Some(text),
            };
            let data = ConsentView { snapshot: None, delta: &self.delta, live_entity: None, snap_entity: None };
            // 2026-06-01 00:00 IST = 2026-05-31 18:30 UTC.
            let midnight_ist = crate::time::days_from_civil(2026, 6, 1) * 86_400_000 - 330 * 60_000;
            let now = Now::at(midnight_ist + (hhmm.0 * 60 + hhmm.1) * 60_000);
            let idx = self.engine.lookup("in").unwrap();
            self.engine.decide(idx, &data, &m, now)
        }
    }

    fn reason(d: &Decision) -> Option<Reason> {
        d.verdict.reason()
    }

    #[test]
    fn by_category_consent_preferences_and_hours() {
        let w = world();
        let noon = (12, 0);
        let otp = "Dear Asha: OTP 1234 - Acme";
        let d = w.decide("ACMEBK", BLOCKED, otp, Some(11), noon);
        assert_eq!(d.verdict, Verdict::Accept, "transactional ignores preferences");
        assert_eq!((d.dlt.pe, d.dlt.template), (PE, 11), "the ids for the audit record");
        assert_eq!(d.class, Some(crate::policy::MessageClass::Transactional));
        // Case-sensitive: the text is not folded.
        assert_eq!(
            reason(&w.decide("ACMEBK", BLOCKED, "dear Asha: OTP 1234 - Acme", Some(11), noon)),
            Some(Reason::DltTemplateMismatch)
        );
        assert_eq!(
            reason(&w.decide("ACMEBK", BLOCKED, "Old x - Acme", Some(15), noon)),
            Some(Reason::DltTemplateInactive)
        );
        assert_eq!(
            reason(&w.decide("ACMEBK", BLOCKED, "Old x - Acme", Some(99), noon)),
            Some(Reason::DltTemplateUnknown)
        );
        let d = w.decide("ACMEBK", NO_CC4, "Offer x - Acme", None, noon);
        assert_eq!((reason(&d), d.dlt.template), (Some(Reason::DltCategoryHeader), 14), "promotional on a T header");
        assert_eq!(reason(&w.decide("ACMEPR", NO_CC4, otp, None, noon)), Some(Reason::DltTemplateMismatch));

        // Service-explicit: a fully blocked subscriber only with consent (entity = the PE id).
        let stmt = "Statement May - Acme";
        assert_eq!(reason(&w.decide("ACMESE", BLOCKED, stmt, Some(13), noon)), Some(Reason::DltPreference));
        assert_eq!(w.decide("ACMESE", NO_CC4, stmt, Some(13), noon).verdict, Verdict::Accept, "not fully blocked");
        w.grant(BLOCKED);
        assert_eq!(w.decide("ACMESE", BLOCKED, stmt, Some(13), noon).verdict, Verdict::Accept, "consent overrides");

        // Promotional: consent or preferences, and the hours.
        let sale = "Sale 50% - Acme";
        assert_eq!(reason(&w.decide("ACMEPR", NO_CC4, sale, Some(12), noon)), Some(Reason::DltPreference));
        let d = w.decide("ACMEPR", 919_800_000_001, sale, Some(12), noon);
        assert_eq!((d.verdict, d.class), (Verdict::Accept, Some(crate::policy::MessageClass::Marketing)));
        w.grant(NO_CC4);
        assert_eq!(w.decide("ACMEPR", NO_CC4, sale, Some(12), noon).verdict, Verdict::Accept, "consent overrides");
        assert_eq!(w.decide("ACMEPR", NO_CC4, sale, Some(12), (9, 0)).verdict, Verdict::Accept, "09:00 is in");
        assert_eq!(reason(&w.decide("ACMEPR", NO_CC4, sale, Some(12), (8, 59))), Some(Reason::DltPromotionalHours));
        assert_eq!(reason(&w.decide("ACMEPR", NO_CC4, sale, Some(12), (21, 0))), Some(Reason::DltPromotionalHours));
    }
}
