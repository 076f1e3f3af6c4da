//! The decision pipeline (architecture §3, STYLE §4–5): for every submit_sm, data_sm and submit_multi
//! destination, forward or reject, and why.
//!
//! ```text
//!  config ──► PolicyConfig + [Account] ──► Engine (once; Arc, shared by all sessions)
//!                                             │
//!  session ─► SessionPolicy::decide(&MessageView, Now) ─► Engine::decide ─► steps ─► Decision
//!               (account, entity ids per snapshot          │
//!                generation, concat cache, prefetch)       └─ reads consent::{delta, snapshot}
//! ```
//!
//! * [`config`] — the validated `[policy]` and `[[account]]` types ([`PolicyConfig`],
//!   [`Account`], compiled sender [`Pattern`]s); `crate::config` fills them from TOML.
//! * [`Engine`] — built once from them: accounts by dense [`AccountIdx`], statuses, and the
//!   steps in order (`engine.rs`). Bind admission ([`Engine::admit`]) lives here too.
//! * [`SessionPolicy`] — one per session: what the session used to keep for the policy.
//! * [`Reason`], [`Verdict`], [`Standing`], [`Decision`] — the closed set of outcomes.
//!
//! Decision order (architecture §3); the first step that answers gives the verdict:
//!
//! 1. **account** — licence present and not expired *today* (binds: [`Engine::admit`]);
//! 2. **sender id** — source_addr matches one of the account's `sender_id` patterns;
//! 3. **throughput** — the account's `max_tps` ([`Engine::throttle`], asked by the session
//!    for every PDU before the rest; the session window is enforced by the session);
//! 4. **class** — per-source-address override, then service_type, then the account's class;
//!    then the content rules on the folded text ([`content`]: `reject` → `content_blocked`
//!    whatever the class, `marketing` makes it commercial); transactional traffic stops here;
//! 5. **commercial checks** — 【signature】 at the start or end, an opt-out hint ([`content`]);
//! 6. **consent** — `opt-in`: allowed only if the latest statement for (subscriber, entity) is a
//!    grant newer than any do-not-call registration; `opt-out`: allowed unless refused;
//! 7. **quiet hours** — in the subscriber's local time ([`Zones`]);
//! 8. **frequency** — daily caps and the same-text window ([`frequency`]); counted only when
//!    allowed.
//!
//! An account with `scrubbing = "dlt"` runs steps 1–2, then the India DLT steps ([`dlt`]:
//! entity, header, template, chain, then consent / preferences / promotional hours by the
//! template's category) instead of 4–7, and step 8 for its commercial categories.
//!
//! Steps 4–5 and the same-text cap read the message text: the session decodes and folds it
//! only when [`Engine::reads_text`], and then holds the parts of a concatenated message until
//! the whole text is there ([`concat`]).
//!
//! In `monitor` mode every reject becomes [`Verdict::WouldReject`] ([`Verdict::under`]) and the
//! message is forwarded.
//!
//! The decision is synchronous and allocation-free (the text, when read, is folded into a
//! buffer the session reuses). The snapshot is lock-free; the live delta
//! is too unless the destination has (or shares a membership bit with a number that has) a
//! live statement — then one uncontended dashmap shard read lock is taken for one probe.

pub mod concat;
pub mod config;
pub mod content;
pub mod dlt;
mod engine;
pub mod frequency;
mod limit;
mod reason;
mod session;

pub use concat::{Held, HeldPart, CONCAT_TTL_MS};
pub use config::{
    pattern_matches, Account, BindRefusal, DailyWindow, MessageClass, Pattern, PolicyConfig, PolicyMode, Regime,
    Unavailable, Zones,
};
pub use engine::{classify, standing, AccountIdx, Carried, ConsentView, Engine, EngineCell, Message, QuietHoursState};
pub use limit::{Rate, SessionCount, SessionSlot, Sessions};
pub use reason::{Decision, DltIds, Reason, Standing, Verdict};
pub use session::{MessageOf, Part, SessionPolicy, SnapshotStamp, PREFETCH_DISTANCE, PREFETCH_GROUP};

#[cfg(test)]
mod tests;
