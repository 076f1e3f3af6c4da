//! Consent data (architecture §4): subscriber numbers, the operator's source files, and the binary
//! snapshot the policy reads on the hot path.
//!
//! ```text
//!  dnc.csv ─┐                                      ┌─ Snapshot::open (read, validate)
//!           ├─ source (stream) ─┐                  │        │
//!  consent.csv ┘                ├─ snapshot::build ─► file ─┘        ▼
//!  journal records ─────────────┘   (sort, resolve,        statements(msisdn, entity): one line
//!                                    hash, write)          ← policy::Engine::decide, per submit_sm
//! ```
//!
//! * [`statement`] — the one statement type: kind, source, entity and node ids, identity
//!   (origin node, origin seq), the cross-node order, per-origin watermarks.
//! * [`msisdn`] — addresses → E.164 digits as `u64` ([`normalise`]).
//! * [`source`] — streaming `dnc.csv` / `consent.csv` readers and their row errors.
//! * [`journal`] — the append-only journal of live statements; [`delta`] — the in-memory live
//!   layer; [`store`] — snapshot + delta + journal writer, as the gateway runs them.
//! * [`config`] — [`ConsentConfig`], the validated `[consent]` section and `[node] id`.
//! * [`snapshot`] — the file format, [`build`], and the loaded [`Snapshot`] with its lookups.
//!   `snapshot::table` is the bucketised hash table inside a snapshot, its lookup and checks.

pub mod config;
pub mod delta;
pub mod journal;
pub mod msisdn;
pub mod snapshot;
pub mod source;
pub mod statement;
pub mod store;

pub use config::ConsentConfig;
pub use msisdn::{normalise, normalise_text, MsisdnError};
pub use snapshot::{
    build, BuildError, BuildOptions, BuildReport, EntityId, PairState, Phase, Progress, Snapshot, SnapshotBuilder,
    SnapshotError, SnapshotInfo,
};
pub use source::{RowError, RowErrors};
pub use statement::{
    EntityName, NewStatement, NodeId, Statement, StatementId, StatementKind, StatementSource, Watermarks,
};
