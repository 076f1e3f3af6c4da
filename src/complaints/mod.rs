//! The 12321 complaint loop (architecture §7): the operator's side of it, in an embedded SQLite
//! register ([`register`]).
//!
//! A subscriber complains to the 12321 centre; the centre passes a complete complaint to the
//! operator within 3 working days; the operator checks it, acts and reports back within
//! `complaints.respond_within` working days (15); the centre answers the subscriber. Filing one
//! here ([`Complaints::file`], `POST /v1/complaints`) does, in this order, each step durable
//! before the next:
//!
//! 1. checks it is complete — subscriber, entity (or the sender address it came from),
//!    received_at, reference — naming every missing field, and that each field is usable;
//! 2. answers a reference filed before with that complaint (idempotent: the centre resends);
//! 3. revokes consent for (subscriber, entity) through the consent store: journalled and
//!    fsynced before anything else happens, so the next submit is refused;
//! 4. freezes its evidence: the consent standing on record just before the revocation and
//!    the consent proof, at once; every decision the audit log holds for that subscriber and
//!    entity over the last [`EVIDENCE_DAYS`] days (at most [`EVIDENCE_MAX`], the newest) on a
//!    task of its own after the answer (`evidence.audit.state` `collecting` → `complete`) —
//!    the search grows with the log (≈ 0.5 µs per record of the window) and must not hold up
//!    the centre's call; a restart finishes what a stopped process did not. Frozen because
//!    the audit log rotates away long before a dispute ends;
//! 5. stores it with its due date (received_at's local day + `respond_within` working days of
//!    the calendar, [`crate::time::Calendar`]), committed with `synchronous = FULL`;
//! 6. suspends the entity when `suspend_after` complaints about it were filed within
//!    [`SUSPEND_WINDOW_DAYS`] days (since its last lifted suspension): step 1 of the decision
//!    then refuses every message of its accounts (`suspended`) until an operator lifts it.
//!
//! A failure at 3 or 5 answers an error and acknowledges nothing: the centre retries with the
//! same reference, which is safe (a second revocation changes nothing).
//!
//! The entity, when only `source` is given: the one entity whose accounts' `sender_id`
//! patterns match it, else (none or several) the entity of the newest audited message from
//! that address to the subscriber; else a 422 saying which.

pub mod register;

use std::collections::{HashMap, VecDeque};
use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;

use serde::Deserialize;
use serde_json::{json, Value};

use crate::audit::search::{self, AuditLine};
use crate::consent::msisdn;
use crate::consent::statement::{EntityName, NewStatement, StatementKind, StatementSource};
use crate::consent::store::{ConsentStore, DurableError};
use crate::policy::{self, ConsentView, EngineCell};
use crate::telemetry::metrics as m;
use crate::time::{calendar, Calendar, Clock};
pub use register::{Counts, Register, RegisterError, Resolved, Row, StatusFilter, Suspension};

/// Default `complaints.respond_within`, working days.
pub const DEFAULT_RESPOND_WITHIN: u32 = 15;
/// The window `suspend_after` counts complaints in.
pub const SUSPEND_WINDOW_DAYS: i64 = 30;
/// How far back a complaint's evidence reaches into the audit log.
pub const EVIDENCE_DAYS: i64 = 90;
/// Most audit records kept as one complaint's evidence (the newest).
pub const EVIDENCE_MAX: usize = 200;
/// How long filing waits for the revocation to be durable.
const DURABLE_WAIT: Duration = Duration::from_secs(5);
/// A `received_at` this far in the future is refused (clock skew allowed).
const FUTURE_SLACK_MS: i64 = 86_400_000;

/// `[complaints]`, validated.
#[derive(Debug, Clone, PartialEq)]
pub struct ComplaintsConfig {
    /// The register's SQLite file.
    pub db: PathBuf,
    /// Working days: from `complaints.calendar`, else weekends only in the policy's zone.
    pub calendar: Calendar,
    /// Working days to handle a complaint in.
    pub respond_within: u32,
    /// Complaints about one entity within [`SUSPEND_WINDOW_DAYS`] that suspend it; 0 = never.
    pub suspend_after: u32,
}

/// The body of `POST /v1/complaints`: every field optional here so that a missing one is
/// named, not a parse error.
#[derive(Debug, Default, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ComplaintIn {
    pub subscriber: Option<String>,
    pub entity: Option<String>,
    /// The sender address the subscriber saw, when the entity is not known.
    pub source: Option<String>,
    /// When the centre received it: RFC 3339 time or date.
    pub received_at: Option<String>,
    pub reference: Option<String>,
    /// Default `12321`.
    pub channel: Option<String>,
    /// The subscriber's words, the message complained about.
    pub content: Option<String>,
}

/// Why a complaint was not filed.
#[derive(Debug, thiserror::Error)]
pub enum FileError {
    /// Required fields absent or empty (422), every one named.
    #[error("incomplete complaint: missing {}", .0.join(", "))]
    Incomplete(Vec<&'static str>),
    /// A field present but unusable (422).
    #[error("{field}: {message}")]
    Invalid { field: &'static str, message: String },
    /// The revocation could not be made durable: nothing filed (503).
    #[error("revocation not durable: {0}")]
    Journal(#[from] DurableError),
    /// The register failed: nothing acknowledged (500).
    #[error(transparent)]
    Register(#[from] RegisterError),
}

/// A filed complaint.
#[derive(Debug, Clone)]
pub struct Filed {
    pub row: Row,
    /// False when the reference was filed before (nothing done this time).
    pub created: bool,
    /// What filing did: `consent_revoked`, `entity_suspended`.
    pub actions: Vec<&'static str>,
}

/// The register and what filing acts on. Shared by the admin API (`Arc`).
#[derive(Debug)]
pub struct Complaints {
    register: Arc<Register>,
    config: ComplaintsConfig,
    store: Arc<ConsentStore>,
    /// The engine in force (a config reload swaps it; suspensions follow the entity).
    engine: Arc<EngineCell>,
    audit_dir: Option<PathBuf>,
    clock: Clock,
}

impl Complaints {
    /// Opens the register and applies its active suspensions to `engine`.
    pub fn open(
        config: ComplaintsConfig,
        store: Arc<ConsentStore>,
        engine: Arc<EngineCell>,
        audit_dir: Option<PathBuf>,
        clock: Clock,
    ) -> Result<Complaints, RegisterError> {
        let register = Arc::new(Register::open(&config.db)?);
        let active = register.suspensions()?;
        for s in &active {
            let n = engine.load().set_suspended(&s.entity, true);
            tracing::warn!(entity = %s.entity, accounts = n, "entity suspended by complaints (from the register)");
        }
        let c = Complaints { register, config, store, engine, audit_dir, clock };
        // Evidence a stopped process did not finish collecting.
        for (id, subscriber, entity, received_at) in c.register.collecting()? {
            if let Ok(msisdn) = subscriber.parse() {
                c.spawn_collect(id, msisdn, entity, (received_at - EVIDENCE_DAYS * 86_400_000) * 1000);
            }
        }
        Ok(c)
    }

    pub fn config(&self) -> &ComplaintsConfig {
        &self.config
    }

    pub fn register(&self) -> &Arc<Register> {
        &self.register
    }

    pub fn now_ms(&self) -> i64 {
        self.clock.now().unix_ms
    }

    /// Files a complaint (module docs, steps 1–6).
    pub async fn file(&self, input: ComplaintIn) -> Result<Filed, FileError> {
        let r = self.file_inner(input).await;
        let result = match &r {
            Ok(f) if f.created => "accepted",
            Ok(_) => "duplicate",
            Err(FileError::Incomplete(_)) => "incomplete",
            Err(FileError::Invalid { .. }) => "invalid",
            Err(_) => "failed",
        };
        metrics::counter!(m::COMPLAINTS_TOTAL, "result" => result).increment(1);
        r
    }

    async fn file_inner(&self, input: ComplaintIn) -> Result<Filed, FileError> {
        let present = |v: &Option<String>| v.as_deref().map(str::trim).filter(|s| !s.is_empty()).map(str::to_owned);
        let (subscriber, entity, source, received, reference) = (
            present(&input.subscriber),
            present(&input.entity),
            present(&input.source),
            present(&input.received_at),
            present(&input.reference),
        );
        let mut missing = Vec::new();
        if subscriber.is_none() {
            missing.push("subscriber");
        }
        if entity.is_none() && source.is_none() {
            missing.push("entity or source");
        }
        if received.is_none() {
            missing.push("received_at");
        }
        if reference.is_none() {
            missing.push("reference");
        }
        let (Some(subscriber), Some(received), Some(reference)) = (subscriber, received, reference) else {
            return Err(FileError::Incomplete(missing));
        };
        if !missing.is_empty() {
            return Err(FileError::Incomplete(missing));
        }
        let engine = self.engine.load();
        let cc = &engine.config().default_country_code;
        let msisdn = msisdn::normalise_text(&subscriber, cc)
            .map_err(|e| FileError::Invalid { field: "subscriber", message: format!("{subscriber}: {e}") })?;
        let now = self.now_ms();
        let received_at = crate::time::parse_timestamp_ms(received.as_bytes()).ok_or_else(|| FileError::Invalid {
            field: "received_at",
            message: format!("`{received}`: expected an RFC 3339 time or date"),
        })?;
        if received_at > now + FUTURE_SLACK_MS {
            return Err(FileError::Invalid { field: "received_at", message: format!("`{received}` is in the future") });
        }
        if reference.len() > 200 {
            return Err(FileError::Invalid { field: "reference", message: "longer than 200 bytes".into() });
        }
        if let Some(done) = self
            .blocking({
                let reference = reference.clone();
                move |r| r.by_reference(&reference)
            })
            .await?
        {
            return Ok(Filed { row: done, created: false, actions: vec![] });
        }
        // The entity of a bare source address: the accounts' sender ids when one entity's
        // match, else the audit log (what was sent from it to this subscriber).
        let since_us = (received_at - EVIDENCE_DAYS * 86_400_000) * 1000;
        let (entity, entity_from) = match entity {
            Some(e) => (e, "given"),
            None => {
                let source = source.clone().unwrap_or_default();
                match engine.entity_of_source(&source) {
                    Ok(e) => (e.to_owned(), "sender_id"),
                    Err(several) => {
                        let (audit, _, _) = audit_of(self.audit_dir.clone(), msisdn, since_us).await;
                        match audit.iter().rev().find(|l| l.source == source) {
                            Some(l) => (l.entity.clone(), "audit"),
                            None if several.is_empty() => {
                                return Err(FileError::Invalid {
                                    field: "source",
                                    message: format!("`{source}`: no account's sender_id matches it and the audit log has no message from it to this subscriber; give the entity"),
                                })
                            }
                            None => {
                                return Err(FileError::Invalid {
                                    field: "source",
                                    message: format!("`{source}` matches the sender ids of several entities ({}) and the audit log has no message from it to this subscriber; give the entity", several.join(", ")),
                                })
                            }
                        }
                    }
                }
            }
        };
        let entity_name = EntityName::parse(&entity)
            .map_err(|e| FileError::Invalid { field: "entity", message: format!("`{entity}`: {e}") })?;
        let standing_before = self.standing(msisdn, &entity);
        let proof = {
            let guard = self.store.current();
            proof_json(guard.as_deref(), msisdn, &entity)
        };
        // Step 3: the revocation, durable before the complaint is.
        let statement = NewStatement {
            kind: StatementKind::Revoke,
            source: StatementSource::Complaint,
            msisdn,
            entity: Some(entity_name),
            at: now,
        };
        let revoke_seq = self.store.record_durably(statement, DURABLE_WAIT).await?;
        metrics::counter!(m::STATEMENTS_TOTAL, "source" => "complaint", "kind" => "revoke").increment(1);
        metrics::counter!(m::OPTOUTS_TOTAL, "source" => "complaint").increment(1);
        // Step 4: the evidence. The consent part now; the audit log's part — a search that
        // grows with the log — after the 201, on a task of its own ([`collect_audit`]).
        let evidence = json!({
            "collected_at": crate::audit::format_time_us(now * 1000),
            "consent": { "standing_before": standing_before, "proof": proof },
            "audit": if self.audit_dir.is_some() { json!({ "state": "collecting" }) } else { json!({ "enabled": false }) },
        })
        .to_string();
        // Step 5: the due date, and the row.
        let cal = &self.config.calendar;
        let due_day = cal.add_working_days(cal.day_of(received_at), self.config.respond_within);
        let (due_date, due_at) = (calendar::fmt_date(due_day), cal.end_of_day_ms(due_day));
        let complete = cal.complete_through(due_day);
        if !complete {
            tracing::warn!(due = %due_date, "complaint due past the end of the working-day calendar: weekends only past it");
        }
        let (row, created) = self
            .blocking({
                let (subscriber, entity, source, channel, content) = (
                    msisdn.to_string(),
                    entity.clone(),
                    source.clone(),
                    present(&input.channel).unwrap_or_else(|| "12321".into()),
                    input.content.clone(),
                );
                move |r| {
                    r.insert(&register::NewRow {
                        reference: &reference,
                        subscriber: &subscriber,
                        entity: &entity,
                        entity_from,
                        source: source.as_deref(),
                        channel: &channel,
                        content: content.as_deref(),
                        received_at,
                        filed_at: now,
                        due_date: &due_date,
                        due_at,
                        calendar_complete: complete,
                        revoke_seq: revoke_seq.map(|s| s as i64),
                        evidence: &evidence,
                    })
                }
            })
            .await?;
        let mut actions = vec!["consent_revoked"];
        if created && self.suspend_if_due(&entity, now).await? {
            actions.push("entity_suspended");
        }
        if created && self.audit_dir.is_some() {
            self.spawn_collect(row.id, msisdn, entity.clone(), since_us);
        }
        if created {
            tracing::info!(id = row.id, entity = %entity, due = %row.due_date, "complaint filed; consent revoked");
        }
        Ok(Filed { row, created, actions })
    }

    /// Step 6.
    async fn suspend_if_due(&self, entity: &str, now: i64) -> Result<bool, RegisterError> {
        let after = i64::from(self.config.suspend_after);
        if after == 0 {
            return Ok(false);
        }
        let e = entity.to_owned();
        let since = now - SUSPEND_WINDOW_DAYS * 86_400_000;
        let suspended = self
            .blocking(move |r| {
                let n = r.recent_about(&e, since)?;
                if n >= after {
                    r.suspend(&e, now, n)
                } else {
                    Ok(false)
                }
            })
            .await?;
        if suspended {
            let accounts = self.engine.load().set_suspended(entity, true);
            tracing::warn!(entity, accounts, after, "entity suspended: complaints reached complaints.suspend_after");
        }
        Ok(suspended)
    }

    /// Lifts `entity`'s suspension (`DELETE /v1/entities/{entity}/suspension`).
    pub async fn lift(&self, entity: &str) -> Result<Option<Suspension>, RegisterError> {
        let (e, now) = (entity.to_owned(), self.now_ms());
        let lifted = self.blocking(move |r| r.lift(&e, now)).await?;
        if lifted.is_some() {
            let accounts = self.engine.load().set_suspended(entity, false);
            tracing::warn!(entity, accounts, "entity suspension lifted");
        }
        Ok(lifted)
    }

    /// Runs `f` on the register on a blocking thread.
    pub async fn blocking<R: Send + 'static>(
        &self,
        f: impl FnOnce(&Register) -> Result<R, RegisterError> + Send + 'static,
    ) -> Result<R, RegisterError> {
        let r = self.register.clone();
        match tokio::task::spawn_blocking(move || f(&r)).await {
            Ok(v) => v,
            Err(e) => std::panic::resume_unwind(e.into_panic()),
        }
    }

    /// Attaches the audit log's part of complaint `id`'s evidence on a task of its own.
    fn spawn_collect(&self, id: i64, msisdn: u64, entity: String, since_us: i64) {
        let (register, dir) = (self.register.clone(), self.audit_dir.clone());
        tokio::spawn(async move {
            let t = std::time::Instant::now();
            let audit = collect_audit(dir, msisdn, &entity, since_us).await;
            let r = tokio::task::spawn_blocking(move || register.set_audit_evidence(id, &audit)).await;
            match r {
                Ok(Ok(())) => tracing::debug!(id, ms = t.elapsed().as_millis() as u64, "complaint evidence collected"),
                Ok(Err(e)) => tracing::error!(id, error = %e, "complaint evidence not stored"),
                Err(e) => tracing::error!(id, error = %e, "complaint evidence task failed"),
            }
        });
    }

    /// The consent standing of (msisdn, entity) on record now (`no_snapshot`: none loaded and
    /// nothing live for the pair).
    fn standing(&self, msisdn: u64, entity: &str) -> &'static str {
        let guard = self.store.current();
        let snap = guard.as_deref().map(|l| &l.snapshot);
        let view = ConsentView {
            snapshot: snap,
            delta: &self.store.delta,
            live_entity: self.store.delta.lookup_entity(entity),
            snap_entity: snap.and_then(|s| s.entity_id(entity)),
        };
        policy::standing(&view, msisdn).map_or("no_snapshot", |s| s.label())
    }

    /// Sets the complaint gauges (at scrape time).
    pub fn refresh_gauges(&self) {
        let now = self.now_ms();
        if let Ok(c) = self.register.counts(now) {
            metrics::gauge!(m::COMPLAINTS, "status" => "open").set(c.open as f64);
            metrics::gauge!(m::COMPLAINTS, "status" => "overdue").set(c.overdue as f64);
            metrics::gauge!(m::COMPLAINTS, "status" => "closed").set(c.closed as f64);
        }
        if let Ok(s) = self.register.suspensions() {
            metrics::gauge!(m::ENTITIES_SUSPENDED).set(s.len() as f64);
        }
    }
}

/// The audit records for `msisdn` since `since_us`, oldest first (the newest
/// [`EVIDENCE_MAX`] of each entity), how many each entity had in all, and the search's
/// warnings (`None` without an audit log).
async fn audit_of(
    dir: Option<PathBuf>,
    msisdn: u64,
    since_us: i64,
) -> (Vec<AuditLine>, HashMap<String, u64>, Option<Vec<String>>) {
    let Some(dir) = dir else { return (Vec::new(), HashMap::new(), None) };
    let found = tokio::task::spawn_blocking(move || {
        let mut by_entity: HashMap<String, VecDeque<AuditLine>> = HashMap::new();
        let mut counts: HashMap<String, u64> = HashMap::new();
        let q = search::Query { msisdn, since_us: Some(since_us), until_us: None, account: None };
        let rep = search::search(&dir, &q, |l, _| {
            *counts.entry(l.entity.clone()).or_default() += 1;
            let lines = by_entity.entry(l.entity.clone()).or_default();
            if lines.len() == EVIDENCE_MAX {
                lines.pop_front();
            }
            lines.push_back(l.clone());
            Ok(())
        });
        let mut lines: Vec<AuditLine> = by_entity.into_values().flatten().collect();
        lines.sort_by(|a, b| a.time.cmp(&b.time));
        (lines, counts, rep)
    })
    .await;
    match found {
        Ok((lines, counts, Ok(rep))) => (lines, counts, Some(rep.warnings)),
        Ok((lines, counts, Err(e))) => (lines, counts, Some(vec![e.to_string()])),
        Err(e) => (Vec::new(), HashMap::new(), Some(vec![format!("audit search failed: {e}")])),
    }
}

/// The audit log's part of a complaint's evidence: the decisions for (msisdn, entity) since
/// `since_us` (the newest [`EVIDENCE_MAX`]) and how many there were.
pub async fn collect_audit(dir: Option<PathBuf>, msisdn: u64, entity: &str, since_us: i64) -> Value {
    let enabled = dir.is_some();
    let (lines, counts, warnings) = audit_of(dir, msisdn, since_us).await;
    if !enabled {
        return json!({ "enabled": false });
    }
    let kept: Vec<&AuditLine> = lines.iter().filter(|l| l.entity == entity).collect();
    json!({
        "enabled": true,
        "state": "complete",
        "collected_at": crate::audit::format_time_us(crate::time::unix_us()),
        "since": crate::audit::format_time_us(since_us),
        "records_found": counts.get(entity).copied().unwrap_or(0),
        "records_kept": kept.len(),
        "records": kept,
        "warnings": warnings.unwrap_or_default(),
    })
}

/// The JSON of a complaint as the API and the CLI show it (`now_ms` decides "overdue").
pub fn row_json(r: &Row, now_ms: i64) -> Value {
    let t = |ms: i64| crate::audit::format_time_us(ms * 1000);
    let closed = r.status == "closed";
    let mut v = json!({
        "id": r.id,
        "reference": r.reference,
        "status": r.status,
        "overdue": !closed && now_ms >= r.due_at,
        "subscriber": r.subscriber,
        "entity": r.entity,
        "entity_from": r.entity_from,
        "source": r.source,
        "channel": r.channel,
        "content": r.content,
        "received_at": t(r.received_at),
        "filed_at": t(r.filed_at),
        "due": r.due_date,
        "due_at": t(r.due_at),
        "calendar_complete": r.calendar_complete,
        "revocation_journal_seq": r.revoke_seq,
        "resolution": r.resolved_at.map(|at| json!({
            "outcome": r.outcome,
            "note": r.note,
            "at": t(at),
            "late": at > r.due_at,
        })),
    });
    if let Some(e) = &r.evidence {
        v["evidence"] = serde_json::from_str(e).unwrap_or(Value::String(e.clone()));
    }
    v
}

/// The consent proof on record for (msisdn, entity), as the API shows it: `{"proof", "granted_at"}`,
/// or `null` with why in `proof_status` (`none`, `no_snapshot`, `no_proofs_file`, `stale`,
/// `unreadable`).
pub fn proof_json(loaded: Option<&crate::consent::store::Loaded>, msisdn: u64, entity: &str) -> Value {
    use crate::consent::snapshot::proofs::ProofLookup;
    let Some(l) = loaded else { return json!({ "proof": null, "proof_status": "no_snapshot" }) };
    match l.proof(msisdn, entity) {
        Ok(ProofLookup::Found(p)) => json!({
            "proof": p.proof,
            "granted_at": crate::audit::format_time_us(p.granted_at * 1000),
            "proof_status": "found",
        }),
        Ok(ProofLookup::None) => json!({ "proof": null, "proof_status": "none" }),
        Ok(ProofLookup::NoFile) => json!({ "proof": null, "proof_status": "no_proofs_file" }),
        Ok(ProofLookup::Stale) => json!({ "proof": null, "proof_status": "stale" }),
        Err(e) => json!({ "proof": null, "proof_status": "unreadable", "error": e.to_string() }),
    }
}

/// Outcomes a resolution may report.
pub const OUTCOMES: &[&str] = &["upheld", "not_upheld", "withdrawn"];
