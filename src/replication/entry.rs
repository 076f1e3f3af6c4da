//! A statement as a stream entry (architecture §8): short field names, readable with
//! `redis-cli XRANGE` — `v` schema (1), `o` origin node, `q` origin seq, `k` kind (`g` grant,
//! `r` revoke, `d` dnc), `m` msisdn digits, `e` entity (absent for dnc), `a` when (Unix ms),
//! `s` source (`mo`, `api`, `complaint`, `replica`). Entry ids are server-assigned `<ms>-<seq>`.

use std::fmt;

use crate::consent::statement::{EntityName, NodeId, Statement, StatementId, StatementKind, StatementSource};

/// The schema written in `v`.
pub const SCHEMA: &str = "1";

/// A stream entry id `<ms>-<seq>`; ordered as Redis orders them.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct EntryId {
    pub ms: u64,
    pub seq: u64,
}

impl EntryId {
    pub const ZERO: EntryId = EntryId { ms: 0, seq: 0 };

    pub fn parse(s: &str) -> Option<EntryId> {
        let (ms, seq) = s.split_once('-')?;
        Some(EntryId { ms: ms.parse().ok()?, seq: seq.parse().ok()? })
    }

    /// The smallest id after this one (`XTRIM MINID` keeps ids at or above it).
    pub fn next(self) -> EntryId {
        match self.seq.checked_add(1) {
            Some(seq) => EntryId { ms: self.ms, seq },
            None => EntryId { ms: self.ms + 1, seq: 0 },
        }
    }
}

impl fmt::Display for EntryId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}-{}", self.ms, self.seq)
    }
}

fn kind_code(k: StatementKind) -> &'static str {
    match k {
        StatementKind::Grant => "g",
        StatementKind::Revoke => "r",
        StatementKind::Dnc => "d",
    }
}

/// The `XADD` arguments after the key and id: field, value, field, value …
pub fn fields(st: &Statement) -> Vec<(&'static str, String)> {
    let mut f = vec![
        ("v", SCHEMA.to_owned()),
        ("o", st.id.origin.to_string()),
        ("q", st.id.seq.to_string()),
        ("k", kind_code(st.kind).to_owned()),
        ("m", st.msisdn.to_string()),
    ];
    if let Some(e) = &st.entity {
        f.push(("e", e.to_string()));
    }
    f.push(("a", st.at.to_string()));
    f.push(("s", st.source.as_str().to_owned()));
    f
}

/// Why an entry is not a statement.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("entry {id}: {what}")]
pub struct EntryError {
    pub id: String,
    pub what: String,
    /// The entry is of a schema this build does not know (written by a newer version).
    pub newer_schema: bool,
}

/// Decodes one entry's field/value list.
pub fn decode(id: &str, kv: &[(&[u8], &[u8])]) -> Result<Statement, EntryError> {
    let err = |what: String| EntryError { id: id.to_owned(), what, newer_schema: false };
    let get = |name: &str| kv.iter().find(|(k, _)| *k == name.as_bytes()).map(|(_, v)| *v);
    let text = |name: &str| -> Result<&str, EntryError> {
        let v = get(name).ok_or_else(|| err(format!("no `{name}` field")))?;
        std::str::from_utf8(v).map_err(|_| err(format!("`{name}` is not UTF-8")))
    };
    let num = |name: &str| -> Result<i64, EntryError> {
        text(name)?.parse::<i64>().map_err(|_| err(format!("`{name}` is not a number")))
    };
    let v = text("v")?;
    if v != SCHEMA {
        return Err(EntryError {
            newer_schema: v.parse::<u32>().is_ok_and(|n| n > 1),
            ..err(format!("schema `{v}` (this build reads {SCHEMA})"))
        });
    }
    let origin = NodeId::parse(text("o")?).map_err(|e| err(e.to_string()))?;
    let seq = num("q")?;
    if seq < 1 {
        return Err(err("`q` must be at least 1".into()));
    }
    let kind = match text("k")? {
        "g" => StatementKind::Grant,
        "r" => StatementKind::Revoke,
        "d" => StatementKind::Dnc,
        other => return Err(err(format!("kind `{other}`"))),
    };
    let msisdn = text("m")?.parse::<u64>().map_err(|_| err("`m` is not an msisdn".into()))?;
    if msisdn == 0 {
        return Err(err("`m` is 0".into()));
    }
    let entity = match get("e") {
        None => None,
        // A statement some node already journalled, perhaps under the looser rule of an
        // earlier version: read leniently, or a rolling upgrade would drop its revocations
        // here. The strict rule applies where statements are made (`EntityName::parse`).
        Some(b) => Some(EntityName::parse_stored(b).map_err(|e| err(e.to_string()))?),
    };
    let at = num("a")?;
    let source = match text("s")? {
        "mo" => StatementSource::Mo,
        "api" => StatementSource::Api,
        "complaint" => StatementSource::Complaint,
        "replica" => StatementSource::Replica,
        other => return Err(err(format!("source `{other}`"))),
    };
    let st = Statement { kind, source, msisdn, entity, at, id: StatementId { origin, seq: seq as u64 } };
    st.check().map_err(|e| err(e.to_string()))?;
    Ok(st)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn st(kind: StatementKind, entity: Option<&str>) -> Statement {
        Statement {
            kind,
            source: StatementSource::Mo,
            msisdn: 8613800000001,
            entity: entity.map(|e| EntityName::parse(e).unwrap()),
            at: 1_780_000_000_123,
            id: StatementId { origin: NodeId::parse("gw-a").unwrap(), seq: 42 },
        }
    }

    fn roundtrip(s: &Statement) -> Result<Statement, EntryError> {
        let f = fields(s);
        let kv: Vec<(&[u8], &[u8])> = f.iter().map(|(k, v)| (k.as_bytes(), v.as_bytes())).collect();
        decode("1-0", &kv)
    }

    #[test]
    fn statements_round_trip() {
        for s in [
            st(StatementKind::Revoke, Some("acme")),
            st(StatementKind::Grant, Some("银行")),
            st(StatementKind::Dnc, None),
        ] {
            assert_eq!(roundtrip(&s).unwrap(), s);
        }
        // An entry a node of an earlier version published, its entity under the looser rule:
        // applied as it is, not skipped (its revocation would be lost on this node).
        let mut old = st(StatementKind::Revoke, None);
        old.entity = Some(EntityName::parse_stored("品牌 A".as_bytes()).unwrap());
        assert!(EntityName::parse("品牌 A").is_err());
        assert_eq!(roundtrip(&old).unwrap(), old);
        // Control characters were never allowed.
        let mut f = fields(&st(StatementKind::Revoke, Some("acme")));
        f.iter_mut().filter(|(k, _)| *k == "e").for_each(|(_, v)| *v = "a\tb".into());
        let kv: Vec<(&[u8], &[u8])> = f.iter().map(|(k, v)| (k.as_bytes(), v.as_bytes())).collect();
        assert!(decode("5-4", &kv).is_err());
    }

    #[test]
    fn bad_entries_are_named() {
        let kv: Vec<(&[u8], &[u8])> = vec![(b"v", b"1"), (b"o", b"gw-a"), (b"q", b"x")];
        let e = decode("5-1", &kv).unwrap_err();
        assert_eq!(e.to_string(), "entry 5-1: `q` is not a number");
        let kv: Vec<(&[u8], &[u8])> = vec![(b"v", b"2")];
        let e = decode("5-2", &kv).unwrap_err();
        assert!(e.what.contains("schema") && e.newer_schema, "{e:?}");
        let mut dnc_with_entity = fields(&st(StatementKind::Dnc, None));
        dnc_with_entity.push(("e", "acme".into()));
        let kv: Vec<(&[u8], &[u8])> = dnc_with_entity.iter().map(|(k, v)| (k.as_bytes(), v.as_bytes())).collect();
        assert!(decode("5-3", &kv).is_err());
    }

    #[test]
    fn ids_order_and_next() {
        let a = EntryId::parse("1700000000000-5").unwrap();
        assert!(a < EntryId::parse("1700000000001-0").unwrap());
        assert_eq!(a.next().to_string(), "1700000000000-6");
        assert!(EntryId::parse("17-").is_none());
    }
}
