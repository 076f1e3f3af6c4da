//! Consent data (DESIGN §4): subscriber numbers, the operator's source files, and the binary
//! snapshot the policy reads on the hot path.
//!
//! ```text
//!  dnc.csv ─┐                                      ┌─ Snapshot::open (read, validate)
//!           ├─ source (stream) ─┐                  │        │
//!  consent.csv ┘                ├─ snapshot::build ─► file ─┘        ▼
//!  journal records ─────────────┘   (sort, resolve,        statements(msisdn, entity): one line
//!                                    hash, write)          ← policy::decide, per submit_sm
//! ```
//!
//! * [`msisdn`] — addresses → E.164 digits as `u64` ([`normalise`]).
//! * [`source`] — streaming `dnc.csv` / `consent.csv` readers, RFC 3339 timestamps, row errors.
//! * [`snapshot`] — the file format, [`build`], and the loaded [`Snapshot`] with its lookups.
//! * `table` — the bucketised hash table inside a snapshot, its lookup and its validation.

pub mod delta;
pub mod journal;
pub mod msisdn;
pub mod snapshot;
pub mod source;
pub mod store;
mod table;

pub use msisdn::{normalise, normalise_text, MsisdnError};
pub use snapshot::{
    build, Action, BuildError, BuildOptions, BuildReport, EntityId, JournalStatement, PairState, Phase, Progress,
    Snapshot, SnapshotBuilder, SnapshotError, SnapshotInfo,
};
pub use source::{RowError, RowErrors};
