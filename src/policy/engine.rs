//! [`Engine`]: the decision pipeline of architecture §3, built once from the validated config, and
//! the steps it runs. Each step is a function of this file that returns `Some(verdict)` to end
//! the pipeline or `None` to pass the message on; [`Engine::decide`] lists them in order. A new
//! step (TPS, quiet hours, frequency caps, content rules) is a new function here, a new line in
//! `decide`, and, if it keeps state, a field of [`Engine`]: nothing outside `policy/` changes.

use std::collections::HashMap;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Instant;

use arc_swap::ArcSwap;

use crate::consent::delta::Delta;
use crate::consent::msisdn;
use crate::consent::snapshot::{EntityId, PairState, Snapshot};
use crate::consent::statement::StatementKind;
use crate::smpp::peek::Addr;
use crate::smpp::text::Coding;
use crate::smpp::BindType;
use crate::time::Now;

use super::content::{self, RuleAction};
use super::dlt::{self, Scrubbing};
use super::frequency::{self, Frequency};
use super::{
    Account, BindRefusal, Decision, MessageClass, PolicyConfig, Rate, Reason, Regime, SessionSlot, Sessions, Standing,
    Unavailable, Verdict,
};

/// An account's dense index in the engine (its position in the config file): what sessions,
/// metrics and (later) limiters key on instead of the system_id string.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct AccountIdx(u32);

impl AccountIdx {
    pub fn get(self) -> usize {
        self.0 as usize
    }
}

/// One message (one destination of it) as the steps read it, whatever protocol carried it:
/// the SMPP front builds it from a submit_sm / data_sm ([`Message::of`]) or from one
/// destination of a submit_multi ([`Message::of_multi`]); another front builds it from its
/// own PDU the same way. Nothing here is read again from the PDU.
#[derive(Debug, Clone, Copy)]
pub struct Message<'a> {
    pub source: Addr<'a>,
    pub destination: Addr<'a>,
    /// What an account's `service_type_class` matches (SMPP service_type).
    pub service: &'a [u8],
    /// How [`Self::user_data`] is encoded.
    pub coding: Coding,
    /// The text's bytes: the payload without its user data header (SMPP:
    /// [`crate::smpp::peek::MessageView::user_data`]).
    pub user_data: &'a [u8],
    /// The SMPP TLV area (checked well-formed when the PDU was peeked); empty on other
    /// fronts. The DLT steps read their ids from it.
    pub tlvs: &'a [u8],
    /// The message's whole text, decoded and folded ([`crate::smpp::text::fold_into`]), when
    /// a step reads the account's text ([`Engine::reads_text`]): for a concatenated message
    /// held for its parts, the text of every part in order. For an account with
    /// `scrubbing = "dlt"` ([`Engine::exact_text`]) decoded but not folded: DLT templates are
    /// case-sensitive. `None` = not decoded (the steps on text then see an empty text).
    pub text: Option<&'a str>,
}

impl<'a> Message<'a> {
    pub fn of(v: &crate::smpp::peek::MessageView<'a>) -> Message<'a> {
        Message {
            source: v.source,
            destination: v.destination,
            service: v.service_type,
            coding: Coding::of_data_coding(v.data_coding),
            user_data: v.user_data(),
            tlvs: v.tlvs,
            text: None,
        }
    }

    /// One SME destination of a submit_multi.
    pub fn of_multi(v: &crate::smpp::peek::MultiView<'a>, destination: Addr<'a>) -> Message<'a> {
        Message {
            source: v.source,
            destination,
            service: v.service_type,
            coding: Coding::of_data_coding(v.data_coding),
            user_data: v.user_data(),
            tlvs: v.tlvs,
            text: None,
        }
    }

    /// Appends the decoded and folded text of this message (one part) to `out`, using
    /// `scratch` for the decoding.
    pub fn fold_text_into(&self, scratch: &mut String, out: &mut String) {
        crate::smpp::text::decode_fold_append(self.coding, self.user_data, scratch, out);
    }

    /// Appends the decoded text of this message (one part) to `out`, not folded, using
    /// `scratch` for the decoding (the DLT steps: templates are case-sensitive).
    pub fn decode_text_into(&self, scratch: &mut String, out: &mut String) {
        crate::smpp::text::decode_into(self.coding, self.user_data, scratch);
        out.push_str(scratch);
    }

    /// The same message with its folded text.
    pub fn with_text(self, text: &'a str) -> Message<'a> {
        Message { text: Some(text), ..self }
    }
}

/// The consent data a decision reads: the serving snapshot (if any) and the live delta, with
/// the deciding entity's ids in each (resolved once per snapshot generation by
/// [`super::SessionPolicy`], never per message).
#[derive(Clone, Copy)]
pub struct ConsentView<'a> {
    pub snapshot: Option<&'a Snapshot>,
    pub delta: &'a Delta,
    /// The entity's id in the delta; `None` when it was never interned (it then has no
    /// live pair statement).
    pub live_entity: Option<u32>,
    pub snap_entity: Option<EntityId>,
}

/// See [`Engine::quiet_hours_state`].
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct QuietHoursState {
    pub zone: String,
    /// Minutes since local midnight.
    pub local_minute: u32,
    /// `[policy.quiet_hours]`, if set.
    pub window: Option<super::DailyWindow>,
    pub inside: bool,
}

/// The policy built from the validated config: accounts by dense index, compiled patterns,
/// statuses. Immutable; shared by every session (`Arc<Engine>`).
#[derive(Debug, Clone)]
pub struct Engine {
    config: PolicyConfig,
    accounts: Vec<Account>,
    by_system_id: HashMap<String, AccountIdx>,
    /// `max_tps` per account (step 3), shared by its sessions; clones of the engine share
    /// them too, and so does the engine a reload builds while the limit stays the same.
    rates: Vec<Option<Arc<Rate>>>,
    /// Bound sessions per account against `max_sessions`.
    sessions: Arc<Sessions>,
    /// Zero of the rates' monotonic clock.
    epoch: Instant,
    /// Step 8's counters (`None`: no cap configured); clones of the engine share them.
    frequency: Option<Arc<Frequency>>,
    /// Each account's signatures, folded and in 【】 (step 5).
    signatures: Vec<Vec<String>>,
    /// Steps 4 and 5's one pass over the text: the content rules and the opt-out hints.
    scanner: content::Scanner,
    /// Whether a step reads the message text, per account: the content rules read every
    /// account's; the commercial checks and the same-text cap only a message that can be
    /// commercial, so a transactional account none of whose overrides makes anything
    /// commercial has its text neither decoded nor scanned.
    reads_text: Vec<bool>,
    /// Step 1's complaint suspensions: each account's entity's flag, shared by every account
    /// of the entity, by clones of the engine and by the engines reloads build from it.
    suspended: Vec<Arc<AtomicBool>>,
    suspensions: Arc<Suspensions>,
    /// Each account's entity under step 8's [`frequency::entity_key`].
    cap_entity: Vec<u32>,
    /// Whether the account runs the DLT steps (`scrubbing = "dlt"`): its text is decoded
    /// unfolded ([`Engine::exact_text`]).
    dlt: Vec<bool>,
}

/// The complaint register's suspension flags by entity name (an entity named by no account
/// yet keeps its flag for the account a reload may add).
#[derive(Debug, Default)]
struct Suspensions(Mutex<HashMap<String, Arc<AtomicBool>>>);

impl Suspensions {
    /// The entity's flag, created (off) when first asked. A std Mutex: no await inside, and
    /// only engine builds and the complaint register take it.
    fn flag(&self, entity: &str) -> Arc<AtomicBool> {
        let mut m = self.0.lock().unwrap_or_else(|e| e.into_inner());
        m.entry(entity.to_owned()).or_default().clone()
    }
}

/// What a reload carried from the running engine into its successor
/// ([`Engine::reloaded`]), for the reload's report.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Carried {
    /// Step 8 tables that had to start empty (their size changed).
    pub frequency_reset: Vec<&'static str>,
}

/// The engine in force, swapped whole by a config reload. Readers that keep an engine for a
/// while (a session) compare [`EngineCell::generation`] — one relaxed load — and take the
/// new one when it moved; others [`EngineCell::load`] it per use.
#[derive(Debug)]
pub struct EngineCell {
    current: ArcSwap<Engine>,
    generation: AtomicU64,
}

impl EngineCell {
    pub fn new(engine: Engine) -> EngineCell {
        EngineCell { current: ArcSwap::from_pointee(engine), generation: AtomicU64::new(1) }
    }

    /// The engine in force.
    pub fn load(&self) -> Arc<Engine> {
        self.current.load_full()
    }

    /// Moves by one with every swap.
    #[inline]
    pub fn generation(&self) -> u64 {
        self.generation.load(Ordering::Acquire)
    }

    /// Puts `engine` in force; the previous one is returned.
    pub fn swap(&self, engine: Engine) -> Arc<Engine> {
        let old = self.current.swap(Arc::new(engine));
        self.generation.fetch_add(1, Ordering::AcqRel);
        old
    }
}

impl Engine {
    /// Builds the engine. `accounts` come validated (unique system_ids, non-empty entities).
    pub fn new(config: PolicyConfig, accounts: Vec<Account>) -> Engine {
        Engine::assemble(config, accounts, |f| Frequency::new(f).map(Arc::new))
    }

    /// [`Engine::new`] with step 8's tables from `frequency` (given the caps in force): new
    /// ones at start, the running engine's at a reload (no table is allocated to be dropped).
    fn assemble(
        config: PolicyConfig,
        accounts: Vec<Account>,
        frequency: impl FnOnce(frequency::FrequencyConfig) -> Option<Arc<Frequency>>,
    ) -> Engine {
        let n_accounts = accounts.len();
        let accounts_entities: Vec<&str> = accounts.iter().map(|a| a.entity.as_str()).collect();
        let cap_entity = accounts.iter().map(|a| frequency::entity_key(&a.entity)).collect();
        let by_system_id =
            accounts.iter().enumerate().map(|(i, a)| (a.system_id.clone(), AccountIdx(i as u32))).collect();
        let rates = accounts.iter().map(|a| a.max_tps.map(|r| Arc::new(Rate::per_second(r)))).collect();
        let sessions = Arc::new(Sessions::new(accounts.iter().map(|a| a.max_sessions).collect()));
        let freq = Engine::frequency_config(&config, &accounts);
        let frequency = frequency(freq);
        let suspensions = Arc::new(Suspensions::default());
        let suspended = accounts_suspended(&suspensions, n_accounts, &accounts_entities);
        drop(accounts_entities);
        let signatures = accounts.iter().map(|a| content::bracketed_signatures(&a.signatures)).collect();
        // Validated with the config (each regex, the rules' own set): this set differs only
        // by the hints' literals.
        let scanner = content::Scanner::new(config.content.rules(), &config.commercial.opt_out_hints)
            .expect("content rules validated with the config");
        let commercial_reads = config.commercial.is_active() || freq.same_text_window_s > 0;
        let dlt: Vec<bool> = accounts.iter().map(|a| a.scrubbing == Scrubbing::Dlt).collect();
        let reads_text = accounts
            .iter()
            .zip(&dlt)
            .map(|(a, &d)| d || !config.content.is_empty() || (commercial_reads && a.may_be_commercial()))
            .collect();
        Engine {
            config,
            accounts,
            by_system_id,
            rates,
            sessions,
            epoch: Instant::now(),
            frequency,
            signatures,
            scanner,
            reads_text,
            suspended,
            suspensions,
            cap_entity,
            dlt,
        }
    }

    /// Step 8's configuration: the policy's, where an account's own cap turns the table on
    /// even when the policy sets none.
    fn frequency_config(config: &PolicyConfig, accounts: &[Account]) -> frequency::FrequencyConfig {
        let mut freq = config.frequency;
        if freq.per_entity_per_day == 0 {
            freq.per_entity_per_day = accounts.iter().filter_map(|a| a.per_entity_per_day).max().unwrap_or(0);
        }
        freq
    }

    /// The engine for a reloaded config, carrying this one's state: each kept account
    /// (same `system_id`) keeps its bound-session count (against its new `max_sessions`)
    /// and, when its `max_tps` is unchanged, its rate; step 8's counts and same-text marks
    /// are kept (unless a table's size changed, see [`Carried`]); complaint suspensions
    /// follow the entity; the rates' clock is the same.
    pub fn reloaded(&self, config: PolicyConfig, accounts: Vec<Account>) -> (Engine, Carried) {
        let mut carried = Carried::default();
        let mut next = Engine::assemble(config, accounts, |f| match &self.frequency {
            Some(old) => {
                let (table, reset) = old.carried(f);
                carried.frequency_reset = reset;
                table.map(Arc::new)
            }
            None => Frequency::new(f).map(Arc::new),
        });
        next.epoch = self.epoch;
        next.suspensions = self.suspensions.clone();
        let entities: Vec<&str> = next.accounts.iter().map(|a| a.entity.as_str()).collect();
        next.suspended = accounts_suspended(&next.suspensions, entities.len(), &entities);
        let mut counts = Vec::with_capacity(next.accounts.len());
        for (i, a) in next.accounts.iter().enumerate() {
            let old = self.lookup(&a.system_id);
            let count = match old.and_then(|o| self.sessions.count(o.get())) {
                Some(c) => {
                    c.set_max(a.max_sessions);
                    c.clone()
                }
                None => super::limit::SessionCount::new(a.max_sessions),
            };
            counts.push(count);
            if let (Some(o), Some(max)) = (old, a.max_tps) {
                if let Some(r) = self.rates[o.get()].as_ref().filter(|r| r.max() == max) {
                    next.rates[i] = Some(r.clone());
                }
            }
        }
        next.sessions = Arc::new(Sessions::of(counts));
        (next, carried)
    }

    /// Suspends (`on`) or reinstates every account of `entity` (step 1, `suspended`); the
    /// number of accounts it names. The complaint register owns the state and sets it at
    /// start and on every change.
    pub fn set_suspended(&self, entity: &str, on: bool) -> usize {
        self.suspensions.flag(entity).store(on, Ordering::Relaxed);
        self.accounts.iter().filter(|a| a.entity == entity).count()
    }

    /// Whether account `idx`'s entity is suspended.
    #[inline]
    pub fn is_suspended(&self, idx: AccountIdx) -> bool {
        self.suspended[idx.get()].load(Ordering::Relaxed)
    }

    /// The entity of the accounts whose `sender_id` patterns match `source`, when exactly one
    /// entity does (a complaint that names only the sender's address).
    pub fn entity_of_source(&self, source: &str) -> Result<&str, Vec<&str>> {
        let mut found: Vec<&str> = Vec::new();
        for a in &self.accounts {
            if a.sender_id.iter().any(|p| p.matches(source.as_bytes())) && !found.contains(&a.entity.as_str()) {
                found.push(&a.entity);
            }
        }
        match found.as_slice() {
            [one] => Ok(one),
            _ => Err(found),
        }
    }

    /// Whether a step reads the text of account `idx`'s messages: the session then decodes
    /// and folds it ([`Message::text`]) and holds the parts of a concatenated message until
    /// all are in.
    #[inline]
    pub fn reads_text(&self, idx: AccountIdx) -> bool {
        self.reads_text[idx.get()]
    }

    /// Whether account `idx`'s text is decoded without folding (`scrubbing = "dlt"`: the
    /// template match is case-sensitive; [`Message::text`]).
    #[inline]
    pub fn exact_text(&self, idx: AccountIdx) -> bool {
        self.dlt[idx.get()]
    }

    /// Account `idx`'s entity as step 8 keys it ([`frequency::entity_key`]).
    pub fn cap_entity(&self, idx: AccountIdx) -> u32 {
        self.cap_entity[idx.get()]
    }

    /// Step 8's tables, when a cap is configured.
    pub fn frequency(&self) -> Option<&Frequency> {
        self.frequency.as_deref()
    }

    /// Starts the loads of the cap counters and the DLT preference a decision for `msisdn`
    /// will read.
    #[inline]
    pub fn prefetch(&self, msisdn: u64) {
        if let Some(f) = &self.frequency {
            f.prefetch(msisdn);
        }
        if let Some(d) = &self.config.dlt {
            d.registry.prefetch_preference(msisdn);
        }
    }

    pub fn config(&self) -> &PolicyConfig {
        &self.config
    }

    pub fn account(&self, idx: AccountIdx) -> &Account {
        &self.accounts[idx.get()]
    }

    pub fn accounts(&self) -> impl Iterator<Item = (AccountIdx, &Account)> {
        self.accounts.iter().enumerate().map(|(i, a)| (AccountIdx(i as u32), a))
    }

    pub fn account_count(&self) -> usize {
        self.accounts.len()
    }

    pub fn lookup(&self, system_id: &str) -> Option<AccountIdx> {
        self.by_system_id.get(system_id).copied()
    }

    /// The command_status configured for `reason`.
    #[inline]
    pub fn status(&self, reason: Reason) -> u32 {
        self.config.reject_status[reason as usize]
    }

    /// Checks a bind against the account registry on UTC day `day`.
    pub fn admit(&self, system_id: &str, bind_type: BindType, day: i64) -> Result<AccountIdx, BindRefusal> {
        let idx = self.lookup(system_id).ok_or(BindRefusal::UnknownSystemId)?;
        let acct = self.account(idx);
        acct.licence_valid_on(day)?;
        if !acct.bind_types.contains(&bind_type) {
            return Err(BindRefusal::BindTypeNotAllowed);
        }
        Ok(idx)
    }

    /// A slot for one more bound session of account `idx` (hold it for the session's life),
    /// or the refusal when it has `max_sessions` already.
    pub fn open_session(&self, idx: AccountIdx) -> Result<SessionSlot, BindRefusal> {
        self.sessions.open(idx.get()).ok_or(BindRefusal::TooManySessions)
    }

    /// Sessions of account `idx` bound on this node now.
    pub fn active_sessions(&self, idx: AccountIdx) -> u32 {
        self.sessions.active(idx.get())
    }

    /// The destination as E.164 digits, if it is a subscriber number.
    #[inline]
    pub fn subscriber(&self, a: &Addr) -> Option<u64> {
        msisdn::normalise(a.addr, a.ton, a.npi, &self.config.default_country_code).ok()
    }

    /// Runs the pipeline for one destination of one message (architecture §3; the first step that
    /// answers gives the verdict) and applies monitor mode.
    #[inline]
    pub fn decide(&self, idx: AccountIdx, data: &ConsentView, m: &Message, now: Now) -> Decision {
        let a = self.account(idx);
        let mut d = Decision::accept();
        // Each step ends the pipeline with `break 'steps verdict` or passes the message on.
        // Step 3 (throughput) runs before, once per PDU ([`Engine::throttle`]).
        let verdict = 'steps: {
            if let Some(v) = step_account(a, now, self.is_suspended(idx)) {
                break 'steps v;
            }
            if let Some(v) = step_sender_id(a, m) {
                break 'steps v;
            }
            if a.scrubbing == Scrubbing::Dlt {
                break 'steps self.decide_dlt(idx, a, data, m, now, &mut d);
            }
            let (class, blocked, hint) = self.step_class(a, m);
            d.class = Some(class);
            if let Some(v) = blocked {
                break 'steps v;
            }
            if class == MessageClass::Transactional {
                break 'steps Verdict::Accept;
            }
            if let Some(v) = self.step_commercial(idx, m, hint) {
                break 'steps v;
            }
            d.msisdn = self.subscriber(&m.destination);
            let consent = self.step_consent(data, d.msisdn);
            if consent != Verdict::Accept {
                break 'steps consent;
            }
            let local = self.config.zones.of(d.msisdn).local(now);
            if let Some(v) = self.step_quiet_hours(a, local) {
                break 'steps v;
            }
            if let Some(v) = self.step_frequency(idx, a, m, d.msisdn, local.day, now) {
                break 'steps v;
            }
            Verdict::Accept
        };
        self.finish(d, verdict)
    }

    /// The DLT steps ([`dlt`]) for an account with `scrubbing = "dlt"`, then step 8 for a
    /// promotional or service-explicit message (the commercial ones).
    #[inline]
    fn decide_dlt(
        &self,
        idx: AccountIdx,
        a: &Account,
        data: &ConsentView,
        m: &Message,
        now: Now,
        d: &mut Decision,
    ) -> Verdict {
        // Validated: an account with scrubbing = "dlt" needs [dlt] registry.
        let Some(cfg) = &self.config.dlt else { return Verdict::Reject(Reason::DltEntityMissing) };
        d.msisdn = self.subscriber(&m.destination);
        match dlt::scrub(cfg, a.pe_id, m, data, d.msisdn, now, &mut d.dlt) {
            Err(r) => Verdict::Reject(r),
            Ok(p) if p.category.has_content_category() => {
                d.class = Some(MessageClass::Marketing);
                let day = self.config.zones.of(d.msisdn).local(now).day;
                self.step_frequency(idx, a, m, d.msisdn, day, now).unwrap_or(Verdict::Accept)
            }
            Ok(_) => {
                d.class = Some(MessageClass::Transactional);
                Verdict::Accept
            }
        }
    }

    /// Step 4, class: registration ([`classify`]), then the content rules on the text: a
    /// `marketing` rule makes the message commercial, a `reject` rule refuses it
    /// (`content_blocked`) whatever its class. The same pass tells step 5 whether an opt-out
    /// hint is in the text (the third value; true when none is configured).
    #[inline]
    fn step_class(&self, a: &Account, m: &Message) -> (MessageClass, Option<Verdict>, bool) {
        let class = classify(a, m);
        if self.scanner.is_empty() {
            return (class, None, true);
        }
        let scan = self.scanner.scan(m.text.unwrap_or(""));
        match scan.rule {
            Some(r) if r.action == RuleAction::Reject => {
                (class, Some(Verdict::Reject(Reason::ContentBlocked)), scan.hint)
            }
            Some(_) => (MessageClass::Marketing, None, scan.hint),
            None => (class, None, scan.hint),
        }
    }

    /// Step 5, commercial-message checks: one of the account's 【signatures】 at the start or
    /// end, and one of the opt-out hints (`hint`, found by step 4's pass).
    #[inline]
    fn step_commercial(&self, idx: AccountIdx, m: &Message, hint: bool) -> Option<Verdict> {
        let c = &self.config.commercial;
        if !c.is_active() {
            return None;
        }
        if c.require_signature && !content::has_signature(m.text.unwrap_or(""), &self.signatures[idx.get()]) {
            return Some(Verdict::Reject(Reason::MissingSignature));
        }
        (!hint).then_some(Verdict::Reject(Reason::MissingOptOutHint))
    }

    /// Step 8, frequency: the caps of [`Frequency`] for a message that passed every other
    /// step; an allowed one is counted (so only messages this step lets through count).
    #[inline]
    #[allow(clippy::too_many_arguments)]
    fn step_frequency(
        &self,
        a_idx: AccountIdx,
        a: &Account,
        m: &Message,
        msisdn: Option<u64>,
        day: i64,
        now: Now,
    ) -> Option<Verdict> {
        let f = self.frequency.as_deref()?;
        let msisdn = msisdn?;
        let per_entity = a.per_entity_per_day.unwrap_or(self.config.frequency.per_entity_per_day);
        let text = if f.config().same_text_window_s > 0 { text_hash(m) } else { 0 };
        let key = frequency::Key { msisdn, entity: self.cap_entity[a_idx.get()], day, text, unix_s: now.unix_s() };
        f.check_and_count(&key, per_entity).map(|_| Verdict::Reject(Reason::FrequencyCap))
    }

    /// Step 3, throughput: the account's `max_tps` over all its sessions on this node. Every
    /// PDU counts — each part of a concatenated message, each submit_multi destination — so
    /// the session asks before anything else, for every one; `Some` = refused (`throttled`,
    /// or `would_reject` in monitor mode).
    #[inline]
    pub fn throttle(&self, idx: AccountIdx) -> Option<Decision> {
        let rate = self.rates.get(idx.get())?.as_ref()?;
        if rate.try_take(self.epoch.elapsed().as_nanos() as u64) {
            return None;
        }
        Some(self.refuse(Reason::Throttled))
    }

    /// A refusal for `reason` before any step ran (`would_reject` in monitor mode).
    pub fn refuse(&self, reason: Reason) -> Decision {
        let d = Decision::accept();
        self.finish(d, Verdict::Reject(reason))
    }

    /// A submit_multi distribution list: it hides its subscribers, so nobody on it can have
    /// been checked — refused under opt-in, allowed under opt-out.
    pub fn decide_list(&self) -> Decision {
        let d = Decision::accept();
        let v = match self.config.regime {
            Regime::OptIn => Verdict::Reject(Reason::NoConsent),
            Regime::OptOut => Verdict::Accept,
        };
        self.finish(d, v)
    }

    #[inline]
    fn finish(&self, mut d: Decision, enforced: Verdict) -> Decision {
        d.verdict = enforced.under(self.config.mode);
        if let Verdict::Reject(r) = d.verdict {
            d.status = self.status(r);
        }
        d
    }

    /// Step 7, time window, for a commercial message: refused inside the account's quiet hours
    /// (else the policy's) in the subscriber's local time.
    #[inline]
    fn step_quiet_hours(&self, a: &Account, local: crate::time::Local) -> Option<Verdict> {
        let w = a.quiet_hours.or(self.config.quiet_hours)?;
        w.contains(local.minute_of_day).then_some(Verdict::Reject(Reason::QuietHours))
    }

    /// The quiet-hours state of `msisdn` now under `[policy.quiet_hours]` (the admin lookup;
    /// an account's own window may differ): its zone, local time, the window and whether a
    /// commercial message would be refused by step 7.
    pub fn quiet_hours_state(&self, msisdn: u64, now: Now) -> QuietHoursState {
        let zone = self.config.zones.of(Some(msisdn));
        let minute = zone.local(now).minute_of_day;
        let window = self.config.quiet_hours;
        QuietHoursState {
            zone: zone.name().to_owned(),
            local_minute: minute,
            window,
            inside: window.is_some_and(|w| w.contains(minute)),
        }
    }

    /// Step 6, consent, for a commercial message (monitor mode not applied).
    #[inline]
    fn step_consent(&self, data: &ConsentView, msisdn: Option<u64>) -> Verdict {
        let Some(msisdn) = msisdn else {
            // Not a subscriber number (alphanumeric, short code, malformed): nobody can have
            // consented; under opt-out nobody can have refused either.
            return match self.config.regime {
                Regime::OptIn => Verdict::Reject(Reason::NoConsent),
                Regime::OptOut => Verdict::Accept,
            };
        };
        self.consent_verdict(standing(data, msisdn))
    }

    /// The verdict a consent standing gives under the configured regime (`None` = no snapshot
    /// and no live statement: `on_snapshot_unavailable`). Enforce-mode verdict; apply
    /// [`Verdict::under`] for monitor mode. The admin lookup and `snapshot lookup` use it too,
    /// so they cannot disagree with `decide`.
    pub fn consent_verdict(&self, st: Option<Standing>) -> Verdict {
        let Some(st) = st else {
            return match self.config.on_snapshot_unavailable {
                Unavailable::Reject => Verdict::Reject(Reason::SnapshotUnavailable),
                Unavailable::Allow => Verdict::Accept,
            };
        };
        match (st, self.config.regime) {
            (Standing::Granted, _) | (Standing::None, Regime::OptOut) => Verdict::Accept,
            (Standing::None, Regime::OptIn) => Verdict::Reject(Reason::NoConsent),
            (Standing::Revoked, _) => Verdict::Reject(Reason::Revoked),
            (Standing::Dnc, _) => Verdict::Reject(Reason::Dnc),
        }
    }
}

/// Each account's suspension flag (its entity's), in account order.
fn accounts_suspended(s: &Suspensions, n: usize, entities: &[&str]) -> Vec<Arc<AtomicBool>> {
    debug_assert_eq!(n, entities.len());
    entities.iter().map(|e| s.flag(e)).collect()
}

/// The hash a same-text check keys on: the folded text when decoded, else the raw bytes.
fn text_hash(m: &Message) -> u64 {
    match m.text {
        Some(t) => xxhash_rust::xxh3::xxh3_64(t.as_bytes()),
        None => xxhash_rust::xxh3::xxh3_64(m.user_data) ^ m.coding as u64,
    }
}

/// Step 1, account: the licence is present and not expired today (a licence that expires
/// during a session rejects with `unlicensed`; binds are checked by [`Engine::admit`]), and
/// the entity is not suspended by complaints (architecture §7).
#[inline]
fn step_account(a: &Account, now: Now, suspended: bool) -> Option<Verdict> {
    if a.licence_valid_on(now.utc_day()).is_err() {
        return Some(Verdict::Reject(Reason::Unlicensed));
    }
    suspended.then_some(Verdict::Reject(Reason::Suspended))
}

/// Step 2, sender id: source_addr matches one of the account's patterns (none = any).
#[inline]
fn step_sender_id(a: &Account, m: &Message) -> Option<Verdict> {
    (!a.sender_id.is_empty() && !a.sender_id.iter().any(|p| p.matches(m.source.addr)))
        .then_some(Verdict::Reject(Reason::SenderId))
}

/// Step 4, class: per-source-address override, then service_type, then the account's class.
pub fn classify(account: &Account, m: &Message) -> MessageClass {
    for (pat, class) in &account.source_class {
        if pat.matches(m.source.addr) {
            return *class;
        }
    }
    for (st, class) in &account.service_type_class {
        if st.as_bytes() == m.service {
            return *class;
        }
    }
    account.class
}

/// Consent standing of `msisdn` for the view's entity: live delta first (newest), then the
/// snapshot. `None` when no snapshot is loaded and the delta has no answer.
#[inline]
pub fn standing(data: &ConsentView, msisdn: u64) -> Option<Standing> {
    let live_dnc = data.delta.dnc(msisdn);
    if let Some((kind, at)) = data.live_entity.and_then(|e| data.delta.pair(msisdn, e)) {
        return Some(match kind {
            StatementKind::Revoke => Standing::Revoked,
            _ if live_dnc.is_some_and(|d| d > at) => Standing::Dnc,
            _ => Standing::Granted,
        });
    }
    if live_dnc.is_some() {
        return Some(Standing::Dnc);
    }
    let snap = data.snapshot?;
    let st = snap.statements(msisdn, data.snap_entity);
    Some(match st.pair {
        Some(PairState::Grant) => Standing::Granted,
        Some(PairState::Revoked) => Standing::Revoked,
        Some(PairState::DncNewer) => Standing::Dnc,
        None if st.dnc => Standing::Dnc,
        None => Standing::None,
    })
}
