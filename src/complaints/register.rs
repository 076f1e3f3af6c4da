//! The complaint register: one SQLite file (`complaints.db`), schema versioned with
//! `PRAGMA user_version` and migrated forward at open (a file from a newer consentgate is
//! refused, never downgraded).
//!
//! **Durability.** WAL journal mode with `synchronous = FULL`: every commit is fsynced before
//! it returns, so a complaint acknowledged with 201 survives kill -9 *and* a power cut. WAL
//! with `NORMAL` would survive kill -9 alone (the WAL is in the OS cache) but may lose the last
//! commits on power loss — for a register whose entries carry regulatory deadlines, and whose
//! rate is a few complaints a second at most, one fsync per complaint (≈ 1–5 ms) is nothing.
//! WAL lets `consentgate complaints list` read while the gateway writes.
//!
//! One connection behind a mutex; every call is a short transaction run on a blocking thread
//! by the caller ([`super::Complaints`]).

use std::path::{Path, PathBuf};
use std::sync::Mutex;

use rusqlite::{params, Connection, OptionalExtension};

/// The schema, one entry per version: `MIGRATIONS[i]` takes a file from version `i` to `i + 1`.
/// Append only — a released migration is never edited.
const MIGRATIONS: &[&str] = &[
    // 1: complaints and suspensions.
    r#"
    CREATE TABLE complaints (
        id            INTEGER PRIMARY KEY,
        reference     TEXT    NOT NULL UNIQUE,   -- the 12321 centre's (or the channel's) reference
        subscriber    TEXT    NOT NULL,          -- E.164 digits
        entity        TEXT    NOT NULL,
        entity_from   TEXT    NOT NULL,          -- given | audit | sender_id
        source        TEXT,                      -- the sender address complained about, if given
        channel       TEXT    NOT NULL,
        content       TEXT,
        received_at   INTEGER NOT NULL,          -- Unix ms
        filed_at      INTEGER NOT NULL,          -- Unix ms
        due_date      TEXT    NOT NULL,          -- YYYY-MM-DD, calendar's zone
        due_at        INTEGER NOT NULL,          -- Unix ms: the end of due_date
        calendar_complete INTEGER NOT NULL,      -- 0: the calendar file ends before due_date
        revoke_seq    INTEGER,                   -- journal sequence of the revocation
        evidence      TEXT    NOT NULL,          -- JSON, frozen at filing
        status        TEXT    NOT NULL DEFAULT 'open' CHECK (status IN ('open', 'closed')),
        outcome       TEXT,
        note          TEXT,
        resolved_at   INTEGER
    );
    CREATE INDEX complaints_by_entity ON complaints (entity, filed_at);
    CREATE INDEX complaints_by_status ON complaints (status, due_at);
    CREATE TABLE suspensions (
        id          INTEGER PRIMARY KEY,
        entity      TEXT    NOT NULL,
        since       INTEGER NOT NULL,            -- Unix ms
        complaints  INTEGER NOT NULL,            -- complaints in the window that tripped it
        lifted_at   INTEGER
    );
    CREATE UNIQUE INDEX suspensions_active ON suspensions (entity) WHERE lifted_at IS NULL;
    "#,
];

/// The schema version this build writes.
pub const SCHEMA_VERSION: usize = MIGRATIONS.len();

/// Why the register could not be opened or used; each names the file.
#[derive(Debug, thiserror::Error)]
pub enum RegisterError {
    #[error("{}: {source}", path.display())]
    Sqlite {
        path: PathBuf,
        #[source]
        source: rusqlite::Error,
    },
    #[error("{}: schema version {found} is newer than this build's {SCHEMA_VERSION}: refusing to touch it (run the newer consentgate)", path.display())]
    NewerSchema { path: PathBuf, found: usize },
    #[error("{}: {source}", path.display())]
    Io {
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
    #[error("{}: schema version {found} is older than this build's {SCHEMA_VERSION}: start the gateway once (it migrates the register), then read it", path.display())]
    OlderSchema { path: PathBuf, found: usize },
}

/// A row of `complaints`, evidence left out unless asked for.
#[derive(Debug, Clone, PartialEq)]
pub struct Row {
    pub id: i64,
    pub reference: String,
    pub subscriber: String,
    pub entity: String,
    pub entity_from: String,
    pub source: Option<String>,
    pub channel: String,
    pub content: Option<String>,
    pub received_at: i64,
    pub filed_at: i64,
    pub due_date: String,
    pub due_at: i64,
    pub calendar_complete: bool,
    pub revoke_seq: Option<i64>,
    pub evidence: Option<String>,
    pub status: String,
    pub outcome: Option<String>,
    pub note: Option<String>,
    pub resolved_at: Option<i64>,
}

/// An active suspension.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Suspension {
    pub entity: String,
    pub since: i64,
    pub complaints: i64,
}

/// Complaints by status at one instant.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Counts {
    pub open: u64,
    pub overdue: u64,
    pub closed: u64,
}

/// Which complaints a list wants.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum StatusFilter {
    All,
    /// Not closed (overdue included).
    Open,
    /// Not closed and past due.
    Overdue,
    Closed,
}

impl StatusFilter {
    pub fn parse(s: &str) -> Option<StatusFilter> {
        match s {
            "all" => Some(StatusFilter::All),
            "open" => Some(StatusFilter::Open),
            "overdue" => Some(StatusFilter::Overdue),
            "closed" => Some(StatusFilter::Closed),
            _ => None,
        }
    }
}

/// What [`Register::resolve`] found.
#[derive(Debug, Clone, PartialEq)]
pub enum Resolved {
    Closed(Row),
    NotFound,
    AlreadyClosed(Row),
}

pub struct Register {
    path: PathBuf,
    conn: Mutex<Connection>,
}

impl std::fmt::Debug for Register {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Register").field("path", &self.path).finish()
    }
}

const COLUMNS: &str = "id, reference, subscriber, entity, entity_from, source, channel, content, received_at, \
     filed_at, due_date, due_at, calendar_complete, revoke_seq, status, outcome, note, resolved_at";

fn row(r: &rusqlite::Row<'_>, with_evidence: bool) -> rusqlite::Result<Row> {
    Ok(Row {
        id: r.get(0)?,
        reference: r.get(1)?,
        subscriber: r.get(2)?,
        entity: r.get(3)?,
        entity_from: r.get(4)?,
        source: r.get(5)?,
        channel: r.get(6)?,
        content: r.get(7)?,
        received_at: r.get(8)?,
        filed_at: r.get(9)?,
        due_date: r.get(10)?,
        due_at: r.get(11)?,
        calendar_complete: r.get(12)?,
        revoke_seq: r.get(13)?,
        status: r.get(14)?,
        outcome: r.get(15)?,
        note: r.get(16)?,
        resolved_at: r.get(17)?,
        evidence: if with_evidence { r.get(18)? } else { None },
    })
}

/// The complaint filed under `reference`, on `c` (a connection or a transaction).
fn find_reference(c: &Connection, reference: &str) -> rusqlite::Result<Option<Row>> {
    c.query_row(&format!("SELECT {COLUMNS} FROM complaints WHERE reference = ?1"), [reference], |r| row(r, false))
        .optional()
}

/// A complaint to insert (the register gives it its id).
#[derive(Debug, Clone)]
pub struct NewRow<'a> {
    pub reference: &'a str,
    pub subscriber: &'a str,
    pub entity: &'a str,
    pub entity_from: &'a str,
    pub source: Option<&'a str>,
    pub channel: &'a str,
    pub content: Option<&'a str>,
    pub received_at: i64,
    pub filed_at: i64,
    pub due_date: &'a str,
    pub due_at: i64,
    pub calendar_complete: bool,
    pub revoke_seq: Option<i64>,
    pub evidence: &'a str,
}

/// `path` escaped for a `file:` URI (RFC 3986 path characters kept, the rest %-encoded).
fn uri_path(path: &Path) -> String {
    let mut out = String::new();
    for b in path.as_os_str().as_encoded_bytes() {
        match b {
            b'A'..=b'Z' | b'a'..=b'z' | b'0'..=b'9' | b'/' | b'-' | b'.' | b'_' | b'~' => out.push(*b as char),
            _ => out.push_str(&format!("%{b:02X}")),
        }
    }
    out
}

impl Register {
    /// Opens (creating if absent) and migrates the register at `path`.
    pub fn open(path: &Path) -> Result<Register, RegisterError> {
        let sq = |source| RegisterError::Sqlite { path: path.to_owned(), source };
        if let Some(dir) = path.parent().filter(|d| !d.as_os_str().is_empty()) {
            std::fs::create_dir_all(dir).map_err(|e| sq(rusqlite::Error::ToSqlConversionFailure(Box::new(e))))?;
        }
        let mut conn = Connection::open(path).map_err(sq)?;
        conn.busy_timeout(std::time::Duration::from_secs(5)).map_err(sq)?;
        let mode: String = conn.query_row("PRAGMA journal_mode = WAL", [], |r| r.get(0)).map_err(sq)?;
        if !mode.eq_ignore_ascii_case("wal") {
            tracing::warn!(path = %path.display(), mode, "complaint register: WAL refused; using {mode}");
        }
        conn.pragma_update(None, "synchronous", "FULL").map_err(sq)?;
        let found: i64 = conn.pragma_query_value(None, "user_version", |r| r.get(0)).map_err(sq)?;
        let found = found.max(0) as usize;
        if found > SCHEMA_VERSION {
            return Err(RegisterError::NewerSchema { path: path.to_owned(), found });
        }
        for (v, sql) in MIGRATIONS.iter().enumerate().skip(found) {
            let tx = conn.transaction().map_err(sq)?;
            tx.execute_batch(sql).map_err(sq)?;
            tx.pragma_update(None, "user_version", (v + 1) as i64).map_err(sq)?;
            tx.commit().map_err(sq)?;
            tracing::info!(path = %path.display(), version = v + 1, "complaint register migrated");
        }
        Ok(Register { path: path.to_owned(), conn: Mutex::new(conn) })
    }

    /// Opens an existing register for reading only (the `complaints` commands): creates no
    /// directory, file or table, migrates nothing. `Ok(None)` when there is no register at
    /// `path` yet (the gateway creates it when it first runs with `[complaints]`). A register
    /// of another schema version is refused: older ones are migrated by the gateway at start.
    pub fn open_read_only(path: &Path) -> Result<Option<Register>, RegisterError> {
        let sq = |source| RegisterError::Sqlite { path: path.to_owned(), source };
        let io = |source| RegisterError::Io { path: path.to_owned(), source };
        // Only "not found" means no register: a directory this user may not read is an error,
        // not an empty register.
        let mut header = [0u8; 20];
        match std::fs::File::open(path) {
            Ok(mut f) => {
                use std::io::Read;
                let _ = f.read(&mut header).map_err(io)?;
            }
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(None),
            Err(e) => return Err(io(e)),
        }
        let flags = rusqlite::OpenFlags::SQLITE_OPEN_READ_ONLY | rusqlite::OpenFlags::SQLITE_OPEN_NO_MUTEX;
        // A read-only connection to a WAL database makes `-wal` and `-shm` files when they do
        // not exist and leaves them. They exist while a gateway has the register open: then
        // share them. A WAL database (header bytes 18–19 = 2) without them has no writer: open
        // it immutable (no locking, no side files). A rollback-journal database (WAL refused
        // by the filesystem) opens read-only with no side files and normal locking.
        let wal_format = header[18] == 2 && header[19] == 2;
        let mut wal = path.as_os_str().to_owned();
        wal.push("-wal");
        let writer_present = !matches!(Path::new(&wal).try_exists(), Ok(false));
        let conn = if !wal_format || writer_present {
            Connection::open_with_flags(path, flags).map_err(sq)?
        } else {
            let uri = format!("file:{}?immutable=1", uri_path(path));
            Connection::open_with_flags(uri, flags | rusqlite::OpenFlags::SQLITE_OPEN_URI).map_err(sq)?
        };
        conn.busy_timeout(std::time::Duration::from_secs(5)).map_err(sq)?;
        let found: i64 = conn.pragma_query_value(None, "user_version", |r| r.get(0)).map_err(sq)?;
        let found = found.max(0) as usize;
        if found > SCHEMA_VERSION {
            return Err(RegisterError::NewerSchema { path: path.to_owned(), found });
        }
        if found < SCHEMA_VERSION {
            return Err(RegisterError::OlderSchema { path: path.to_owned(), found });
        }
        Ok(Some(Register { path: path.to_owned(), conn: Mutex::new(conn) }))
    }

    pub fn path(&self) -> &Path {
        &self.path
    }

    fn with<R>(&self, f: impl FnOnce(&mut Connection) -> rusqlite::Result<R>) -> Result<R, RegisterError> {
        let mut c = self.conn.lock().unwrap_or_else(|p| p.into_inner());
        f(&mut c).map_err(|source| RegisterError::Sqlite { path: self.path.clone(), source })
    }

    /// The complaint filed under `reference`, if any.
    pub fn by_reference(&self, reference: &str) -> Result<Option<Row>, RegisterError> {
        self.with(|c| find_reference(c, reference))
    }

    /// Inserts `n` unless its reference is filed already; the stored row and whether it is new.
    pub fn insert(&self, n: &NewRow<'_>) -> Result<(Row, bool), RegisterError> {
        self.with(|c| {
            let tx = c.transaction()?;
            let added = tx.execute(
                "INSERT INTO complaints (reference, subscriber, entity, entity_from, source, channel, content, \
                 received_at, filed_at, due_date, due_at, calendar_complete, revoke_seq, evidence) \
                 VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8, ?9, ?10, ?11, ?12, ?13, ?14) ON CONFLICT (reference) DO NOTHING",
                params![
                    n.reference,
                    n.subscriber,
                    n.entity,
                    n.entity_from,
                    n.source,
                    n.channel,
                    n.content,
                    n.received_at,
                    n.filed_at,
                    n.due_date,
                    n.due_at,
                    n.calendar_complete,
                    n.revoke_seq,
                    n.evidence
                ],
            )?;
            let r = find_reference(&tx, n.reference)?.expect("the row just inserted or found");
            tx.commit()?;
            Ok((r, added == 1))
        })
    }

    /// One complaint with its evidence.
    pub fn get(&self, id: i64) -> Result<Option<Row>, RegisterError> {
        self.with(|c| {
            c.query_row(&format!("SELECT {COLUMNS}, evidence FROM complaints WHERE id = ?1"), [id], |r| row(r, true))
                .optional()
        })
    }

    /// Complaints matching `status` (at `now_ms`) and `entity`, newest first, at most `limit`.
    pub fn list(
        &self,
        status: StatusFilter,
        entity: Option<&str>,
        now_ms: i64,
        limit: u32,
    ) -> Result<Vec<Row>, RegisterError> {
        let cond = match status {
            StatusFilter::All => "1",
            StatusFilter::Open => "status = 'open'",
            StatusFilter::Overdue => "status = 'open' AND due_at <= ?1",
            StatusFilter::Closed => "status = 'closed'",
        };
        let sql = format!(
            "SELECT {COLUMNS} FROM complaints WHERE {cond} AND (?2 IS NULL OR entity = ?2) AND ?1 = ?1 \
             ORDER BY id DESC LIMIT ?3"
        );
        self.with(|c| {
            let mut st = c.prepare(&sql)?;
            let rows = st.query_map(params![now_ms, entity, limit], |r| row(r, false))?;
            rows.collect()
        })
    }

    /// Closes complaint `id` with `outcome` at `at_ms`.
    pub fn resolve(&self, id: i64, outcome: &str, note: Option<&str>, at_ms: i64) -> Result<Resolved, RegisterError> {
        self.with(|c| {
            let tx = c.transaction()?;
            let get = |tx: &rusqlite::Transaction<'_>| {
                tx.query_row(&format!("SELECT {COLUMNS} FROM complaints WHERE id = ?1"), [id], |r| row(r, false))
                    .optional()
            };
            let Some(before) = get(&tx)? else { return Ok(Resolved::NotFound) };
            if before.status == "closed" {
                return Ok(Resolved::AlreadyClosed(before));
            }
            tx.execute(
                "UPDATE complaints SET status = 'closed', outcome = ?2, note = ?3, resolved_at = ?4 WHERE id = ?1",
                params![id, outcome, note, at_ms],
            )?;
            let after = get(&tx)?.expect("the row just updated");
            tx.commit()?;
            Ok(Resolved::Closed(after))
        })
    }

    /// Complaints by status at `now_ms` (for the metrics).
    pub fn counts(&self, now_ms: i64) -> Result<Counts, RegisterError> {
        self.with(|c| {
            c.query_row(
                "SELECT COALESCE(SUM(status = 'open'), 0), COALESCE(SUM(status = 'open' AND due_at <= ?1), 0), \
                 COALESCE(SUM(status = 'closed'), 0) FROM complaints",
                [now_ms],
                |r| {
                    Ok(Counts {
                        open: r.get::<_, i64>(0)? as u64,
                        overdue: r.get::<_, i64>(1)? as u64,
                        closed: r.get::<_, i64>(2)? as u64,
                    })
                },
            )
        })
    }

    /// Complaints about `entity` filed at or after `since_ms` and after its last lifted
    /// suspension (a lift starts the count again).
    pub fn recent_about(&self, entity: &str, since_ms: i64) -> Result<i64, RegisterError> {
        self.with(|c| {
            c.query_row(
                "SELECT COUNT(*) FROM complaints WHERE entity = ?1 AND filed_at >= MAX(?2, \
                 COALESCE((SELECT MAX(lifted_at) FROM suspensions WHERE entity = ?1), ?2))",
                params![entity, since_ms],
                |r| r.get(0),
            )
        })
    }

    /// Suspends `entity` unless it is already; whether this call suspended it.
    pub fn suspend(&self, entity: &str, since_ms: i64, complaints: i64) -> Result<bool, RegisterError> {
        self.with(|c| {
            let n = c.execute(
                "INSERT INTO suspensions (entity, since, complaints) VALUES (?1, ?2, ?3) \
                 ON CONFLICT (entity) WHERE lifted_at IS NULL DO NOTHING",
                params![entity, since_ms, complaints],
            )?;
            Ok(n == 1)
        })
    }

    /// Lifts `entity`'s suspension; the one lifted, if it was suspended.
    pub fn lift(&self, entity: &str, at_ms: i64) -> Result<Option<Suspension>, RegisterError> {
        self.with(|c| {
            let tx = c.transaction()?;
            let s = tx
                .query_row(
                    "SELECT entity, since, complaints FROM suspensions WHERE entity = ?1 AND lifted_at IS NULL",
                    [entity],
                    |r| Ok(Suspension { entity: r.get(0)?, since: r.get(1)?, complaints: r.get(2)? }),
                )
                .optional()?;
            if s.is_some() {
                tx.execute(
                    "UPDATE suspensions SET lifted_at = ?2 WHERE entity = ?1 AND lifted_at IS NULL",
                    params![entity, at_ms],
                )?;
            }
            tx.commit()?;
            Ok(s)
        })
    }

    /// Replaces the `audit` part of complaint `id`'s evidence (collected after filing).
    pub fn set_audit_evidence(&self, id: i64, audit: &serde_json::Value) -> Result<(), RegisterError> {
        self.with(|c| {
            let tx = c.transaction()?;
            let text: Option<String> =
                tx.query_row("SELECT evidence FROM complaints WHERE id = ?1", [id], |r| r.get(0)).optional()?;
            if let Some(text) = text {
                let mut v: serde_json::Value = serde_json::from_str(&text).unwrap_or_else(|_| serde_json::json!({}));
                v["audit"] = audit.clone();
                tx.execute("UPDATE complaints SET evidence = ?2 WHERE id = ?1", params![id, v.to_string()])?;
            }
            tx.commit()
        })
    }

    /// Complaints whose audit evidence was still being collected (the process stopped first):
    /// (id, subscriber, entity, received_at).
    pub fn collecting(&self) -> Result<Vec<(i64, String, String, i64)>, RegisterError> {
        self.with(|c| {
            let mut st = c.prepare(
                "SELECT id, subscriber, entity, received_at FROM complaints \
                 WHERE json_extract(evidence, '$.audit.state') = 'collecting'",
            )?;
            let rows = st.query_map([], |r| Ok((r.get(0)?, r.get(1)?, r.get(2)?, r.get(3)?)))?;
            rows.collect()
        })
    }

    /// Every active suspension.
    pub fn suspensions(&self) -> Result<Vec<Suspension>, RegisterError> {
        self.with(|c| {
            let mut st =
                c.prepare("SELECT entity, since, complaints FROM suspensions WHERE lifted_at IS NULL ORDER BY entity")?;
            let rows =
                st.query_map([], |r| Ok(Suspension { entity: r.get(0)?, since: r.get(1)?, complaints: r.get(2)? }))?;
            rows.collect()
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn new_row<'a>(reference: &'a str, entity: &'a str, filed_at: i64, due_at: i64) -> NewRow<'a> {
        NewRow {
            reference,
            subscriber: "8613800138000",
            entity,
            entity_from: "given",
            source: None,
            channel: "12321",
            content: None,
            received_at: filed_at,
            filed_at,
            due_date: "2026-12-24",
            due_at,
            calendar_complete: true,
            revoke_seq: Some(7),
            evidence: "{}",
        }
    }

    #[test]
    fn migrates_stores_and_reopens() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("sub/complaints.db");
        let r = Register::open(&path).unwrap();
        let (a, new) = r.insert(&new_row("R-1", "acme", 1_000, 5_000)).unwrap();
        assert!(new && a.id == 1 && a.status == "open");
        let (again, new) = r.insert(&new_row("R-1", "other", 2_000, 6_000)).unwrap();
        assert!(!new && again == a, "the same reference twice is the first complaint");
        r.insert(&new_row("R-2", "acme", 2_000, 3_000)).unwrap();
        assert_eq!(r.counts(4_000).unwrap(), Counts { open: 2, overdue: 1, closed: 0 });
        assert_eq!(r.list(StatusFilter::Overdue, None, 4_000, 10).unwrap().len(), 1);
        assert!(matches!(r.resolve(2, "upheld", Some("sender warned"), 4_500).unwrap(), Resolved::Closed(_)));
        assert!(matches!(r.resolve(2, "upheld", None, 4_600).unwrap(), Resolved::AlreadyClosed(_)));
        assert_eq!(r.resolve(9, "upheld", None, 4_600).unwrap(), Resolved::NotFound);
        assert_eq!(r.counts(4_000).unwrap(), Counts { open: 1, overdue: 0, closed: 1 });
        assert_eq!(r.recent_about("acme", 0).unwrap(), 2);
        assert!(r.suspend("acme", 4_000, 2).unwrap() && !r.suspend("acme", 4_100, 2).unwrap());
        drop(r);
        let r = Register::open(&path).unwrap();
        assert_eq!(r.get(1).unwrap().unwrap().evidence.as_deref(), Some("{}"));
        assert_eq!(r.suspensions().unwrap().len(), 1);
        assert_eq!(r.lift("acme", 5_000).unwrap().map(|s| s.complaints), Some(2));
        assert_eq!(r.lift("acme", 5_001).unwrap(), None);
        assert_eq!(r.recent_about("acme", 0).unwrap(), 0, "a lift starts the count again");
        assert!(r.suspensions().unwrap().is_empty());
    }

    #[test]
    fn a_newer_schema_is_refused() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("c.db");
        drop(Register::open(&path).unwrap());
        Connection::open(&path).unwrap().pragma_update(None, "user_version", 99).unwrap();
        let e = Register::open(&path).unwrap_err().to_string();
        assert!(e.contains("c.db") && e.contains("99"), "{e}");
    }
}
