//! The one statement type of consent data (architecture §4, §8): what a subscriber said, about whom,
//! when, where it came from, and which node first made it.
//!
//! Everything that handles live statements uses these types: the journal writes and replays
//! [`Statement`]s, the delta applies them, the snapshot builder folds them in
//! ([`super::snapshot::SnapshotBuilder::add`]), the admin API and the MO capture make them, and
//! replication (architecture §8) will carry them between nodes unchanged.
//!
//! # Identity and order
//!
//! A statement is identified by its [`StatementId`]: the node that first made it (its
//! *origin*, `[node] id`) and that node's sequence number for it. A locally made statement's
//! origin seq is its local journal sequence; a statement replicated from another node keeps
//! the origin it was made with, so the pair is unique across nodes.
//!
//! Between two statements on the same key (a (msisdn, entity) pair, or an msisdn's
//! do-not-call entry) the one that wins is the greatest by [`Precedence`]: later `at`, then a
//! revoke over a grant, then the greater origin node name, then the greater origin seq. Every
//! node sorts the same statements the same way, whatever order they arrived in, so applying
//! is idempotent and nodes converge.
//!
//! # Validation
//!
//! [`EntityName::parse`] (its rule: [`check_entity`]) and [`NodeId::parse`] are the only places
//! their rules live: config, the CSV sources, the builder, the admin API, complaints and MO
//! opt-outs all call them, so a value one of them accepts is accepted by all (review §4.1: an
//! entity the journal refused used to stop the journal writer). What was stored under the
//! earlier, looser entity rule (journal records, replication entries) is read back with
//! [`EntityName::parse_stored`], so that no statement already written is lost.

use std::collections::BTreeMap;
use std::fmt;
use std::str::FromStr;
use std::sync::Arc;

/// What a statement says.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, serde::Serialize, serde::Deserialize)]
#[serde(rename_all = "lowercase")]
#[repr(u8)]
pub enum StatementKind {
    /// The subscriber consents to commercial messages from the entity.
    Grant = 1,
    /// The subscriber withdraws consent for the entity (e.g. an MO "退订").
    Revoke = 2,
    /// The subscriber refuses commercial messages from everyone (do-not-call); no entity.
    Dnc = 3,
}

impl StatementKind {
    /// The journal's byte for this kind (`1` grant, `2` revoke, `3` dnc).
    pub fn from_u8(v: u8) -> Option<StatementKind> {
        match v {
            1 => Some(StatementKind::Grant),
            2 => Some(StatementKind::Revoke),
            3 => Some(StatementKind::Dnc),
            _ => None,
        }
    }

    /// Bounded label (metrics, admin API, `consent.csv`'s `action` column).
    pub fn as_str(self) -> &'static str {
        match self {
            StatementKind::Grant => "grant",
            StatementKind::Revoke => "revoke",
            StatementKind::Dnc => "dnc",
        }
    }

    /// Whether statements of this kind name an entity (grant and revoke do, dnc does not).
    pub fn has_entity(self) -> bool {
        self != StatementKind::Dnc
    }

    /// Rank within one `at` in [`Precedence`]: a revoke beats a grant made at the same
    /// instant. (Dnc is only ever compared with dnc.)
    fn rank(self) -> u8 {
        match self {
            StatementKind::Grant | StatementKind::Dnc => 0,
            StatementKind::Revoke => 1,
        }
    }
}

impl fmt::Display for StatementKind {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// `"grant"`, `"revoke"` or `"dnc"` (exactly, lowercase) was expected.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("`{0}`: expected grant | revoke | dnc")]
pub struct UnknownKind(pub String);

impl FromStr for StatementKind {
    type Err = UnknownKind;
    fn from_str(s: &str) -> Result<StatementKind, UnknownKind> {
        match s {
            "grant" => Ok(StatementKind::Grant),
            "revoke" => Ok(StatementKind::Revoke),
            "dnc" => Ok(StatementKind::Dnc),
            other => Err(UnknownKind(other.to_owned())),
        }
    }
}

/// Where a statement came from (the `source` label of `consentgate_optouts_total`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, serde::Serialize, serde::Deserialize)]
#[serde(rename_all = "lowercase")]
#[repr(u8)]
pub enum StatementSource {
    /// A mobile-originated keyword captured from a deliver_sm.
    Mo = 1,
    /// The admin API.
    Api = 2,
    /// A subscriber complaint (the 12321 loop, architecture §7).
    Complaint = 3,
    /// Received from another node (architecture §8); its origin is that node.
    Replica = 4,
}

impl StatementSource {
    /// The journal's byte for this source.
    pub fn from_u8(v: u8) -> Option<StatementSource> {
        match v {
            1 => Some(StatementSource::Mo),
            2 => Some(StatementSource::Api),
            3 => Some(StatementSource::Complaint),
            4 => Some(StatementSource::Replica),
            _ => None,
        }
    }

    pub fn as_str(self) -> &'static str {
        match self {
            StatementSource::Mo => "mo",
            StatementSource::Api => "api",
            StatementSource::Complaint => "complaint",
            StatementSource::Replica => "replica",
        }
    }
}

/// Longest entity id, in bytes.
pub const MAX_ENTITY_BYTES: usize = 255;

/// The characters an entity id may hold besides letters, digits and combining marks.
pub const ENTITY_PUNCTUATION: &str = "-_.:@/+&";

/// The entity rule in words, for messages and docs.
pub const ENTITY_RULE: &str = "1 to 255 bytes of UTF-8: letters and digits of any script (with their combining \
     marks) and - _ . : @ / + &; no spaces, quotes, commas, backslashes or control characters";

/// Why a string is not an entity id.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
pub enum EntityError {
    #[error("entity id is empty; an entity id is {ENTITY_RULE}")]
    Empty,
    #[error("entity id is {0} bytes; an entity id is {ENTITY_RULE}")]
    TooLong(usize),
    #[error("entity id is not valid UTF-8")]
    NotUtf8,
    /// A character outside the rule, e.g. the `"` of a CSV field quoted twice.
    #[error("entity id contains {}, not allowed; an entity id is {ENTITY_RULE}", show_char(*.0))]
    Char(char),
    /// Only from [`EntityName::parse_stored`] (the rule stored records were written under).
    #[error("entity id contains a control character")]
    Control,
}

/// `'"' (U+0022)`, or only the code point for an invisible character.
fn show_char(c: char) -> String {
    if c.is_control() || c.is_whitespace() {
        format!("U+{:04X}", c as u32)
    } else {
        format!("`{c}` (U+{:04X})", c as u32)
    }
}

/// A validated entity id (brand / sender organisation, architecture §4): see [`check_entity`] for
/// the rule. Cheap to clone.
#[derive(Clone, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct EntityName(Arc<str>);

impl EntityName {
    /// Validates `s` as an entity id ([`check_entity`]). The one rule for every entity that
    /// enters the gateway: config, CSV sources, the snapshot builder, the admin API,
    /// complaints, MO opt-outs.
    pub fn parse(s: &str) -> Result<EntityName, EntityError> {
        check_entity(s.as_bytes())?;
        Ok(EntityName(s.into()))
    }

    /// [`EntityName::parse`] for raw bytes (CSV fields).
    pub fn parse_bytes(b: &[u8]) -> Result<EntityName, EntityError> {
        Ok(EntityName(check_entity(b)?.into()))
    }

    /// An entity read back from what this program (or another node of the cluster) already
    /// stored: journal records, replication stream entries. These were accepted under the
    /// rule before the strict one (1 to 255 bytes of UTF-8 without control characters, so
    /// e.g. `品牌 A` or `"acme"`), and a journalled revocation must not be dropped on replay
    /// because the rule got stricter since it was written: such records keep being read under
    /// that old rule. New input never goes through here.
    pub fn parse_stored(b: &[u8]) -> Result<EntityName, EntityError> {
        if b.is_empty() {
            return Err(EntityError::Empty);
        }
        if b.len() > MAX_ENTITY_BYTES {
            return Err(EntityError::TooLong(b.len()));
        }
        let s = std::str::from_utf8(b).map_err(|_| EntityError::NotUtf8)?;
        if s.chars().any(char::is_control) {
            return Err(EntityError::Control);
        }
        Ok(EntityName(s.into()))
    }

    pub fn as_str(&self) -> &str {
        &self.0
    }
}

/// The entity rule, the only one (config, CSV sources, snapshot builder, admin API,
/// complaints and MO opt-outs call it, through [`EntityName::parse`] or directly):
/// 1 to [`MAX_ENTITY_BYTES`] bytes of UTF-8 made of
///
/// * letters and digits of any script ([`char::is_alphanumeric`]: `acme`, `品牌`, `Ünïcødé`,
///   `한국`), with the combining marks some scripts write them with (Unicode category M:
///   `हिन्दी`'s virama),
/// * and the ASCII punctuation `- _ . : @ / + &` ([`ENTITY_PUNCTUATION`]).
///
/// No spaces, quotes, commas, backslashes, control characters or other punctuation: an entity
/// that arrives with the quotes of a CSV field (`"acme-retail"`) or a stray space would
/// otherwise become a different entity that no account names, and its revocations would
/// reach nobody. Returns the validated `&str` without allocating.
#[inline]
pub fn check_entity(b: &[u8]) -> Result<&str, EntityError> {
    if b.is_empty() {
        return Err(EntityError::Empty);
    }
    if b.len() > MAX_ENTITY_BYTES {
        return Err(EntityError::TooLong(b.len()));
    }
    let s = std::str::from_utf8(b).map_err(|_| EntityError::NotUtf8)?;
    // The usual entity id is ASCII: no char decoding.
    if b.iter().all(|&c| c.is_ascii_alphanumeric() || is_entity_punctuation(c)) {
        return Ok(s);
    }
    match s.chars().find(|&c| !is_entity_char(c)) {
        Some(c) => Err(EntityError::Char(c)),
        None => Ok(s),
    }
}

#[inline]
fn is_entity_punctuation(c: u8) -> bool {
    matches!(c, b'-' | b'_' | b'.' | b':' | b'@' | b'/' | b'+' | b'&')
}

fn is_entity_char(c: char) -> bool {
    if c.is_ascii() {
        return c.is_ascii_alphanumeric() || is_entity_punctuation(c as u8);
    }
    c.is_alphanumeric() || is_combining_mark(c)
}

/// Unicode general category M (Mn, Mc, Me), which `char` has no method for.
fn is_combining_mark(c: char) -> bool {
    static MARK: std::sync::OnceLock<regex::Regex> = std::sync::OnceLock::new();
    let re = MARK.get_or_init(|| regex::Regex::new(r"^\p{M}$").expect("a valid regex"));
    re.is_match(c.encode_utf8(&mut [0; 4]))
}

/// The traits of a validated string id: it reads as `&str` (`Debug` quoted, `Display` bare),
/// and parses (`FromStr`, serde) only through its own `parse`, so no unchecked value exists.
macro_rules! validated_str {
    ($name:ident, $err:ty) => {
        impl fmt::Debug for $name {
            fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                fmt::Debug::fmt(&*self.0, f)
            }
        }

        impl fmt::Display for $name {
            fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                f.write_str(&self.0)
            }
        }

        impl FromStr for $name {
            type Err = $err;
            fn from_str(s: &str) -> Result<$name, $err> {
                $name::parse(s)
            }
        }

        impl serde::Serialize for $name {
            fn serialize<S: serde::Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
                s.serialize_str(&self.0)
            }
        }

        impl<'de> serde::Deserialize<'de> for $name {
            fn deserialize<D: serde::Deserializer<'de>>(d: D) -> Result<$name, D::Error> {
                let s = <std::borrow::Cow<'de, str>>::deserialize(d)?;
                $name::parse(&s).map_err(serde::de::Error::custom)
            }
        }
    };
}

validated_str!(EntityName, EntityError);
validated_str!(NodeId, NodeIdError);

impl std::ops::Deref for EntityName {
    type Target = str;
    fn deref(&self) -> &str {
        &self.0
    }
}

/// Longest node id, in bytes.
pub const MAX_NODE_BYTES: usize = 64;

/// Why a string is not a node id.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("node id `{0}` must be 1 to {MAX_NODE_BYTES} characters of A-Z a-z 0-9 . _ -")]
pub struct NodeIdError(pub String);

/// A validated node id (`[node] id`, architecture §8): 1 to [`MAX_NODE_BYTES`] bytes of
/// `[A-Za-z0-9._-]`. The origin of the statements a node makes. Cheap to clone.
#[derive(Clone, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct NodeId(Arc<str>);

impl NodeId {
    pub fn parse(s: &str) -> Result<NodeId, NodeIdError> {
        NodeId::parse_bytes(s.as_bytes()).map_err(|_| NodeIdError(s.to_owned()))
    }

    /// [`NodeId::parse`] for raw bytes (journal records, snapshot sections).
    pub fn parse_bytes(b: &[u8]) -> Result<NodeId, NodeIdError> {
        let ok = (1..=MAX_NODE_BYTES).contains(&b.len())
            && b.iter().all(|&c| c.is_ascii_alphanumeric() || matches!(c, b'.' | b'_' | b'-'));
        match ok {
            // All ASCII, checked above.
            true => Ok(NodeId(String::from_utf8_lossy(b).into())),
            false => Err(NodeIdError(String::from_utf8_lossy(b).into_owned())),
        }
    }

    /// The host name (`gethostname`) if it is a valid node id, else `localhost`: the default
    /// of `[node] id`.
    pub fn from_hostname() -> NodeId {
        hostname().and_then(|h| NodeId::parse(&h).ok()).unwrap_or_else(|| NodeId("localhost".into()))
    }

    pub fn as_str(&self) -> &str {
        &self.0
    }
}

fn hostname() -> Option<String> {
    let mut buf = [0u8; 256];
    // SAFETY: `buf` is writable for `buf.len()` bytes; gethostname writes at most that many
    // and we only read up to the first NUL (or the whole buffer if it truncated without one).
    #[allow(unsafe_code)]
    let rc = unsafe { libc::gethostname(buf.as_mut_ptr().cast(), buf.len()) };
    if rc != 0 {
        return None;
    }
    let end = buf.iter().position(|&b| b == 0).unwrap_or(buf.len());
    std::str::from_utf8(&buf[..end]).ok().map(str::to_owned)
}

/// A statement's identity, unique across nodes: the node that first made it and that node's
/// sequence number for it (from 1).
#[derive(Debug, Clone, PartialEq, Eq, Hash, PartialOrd, Ord, serde::Serialize, serde::Deserialize)]
pub struct StatementId {
    pub origin: NodeId,
    pub seq: u64,
}

/// Why a statement is malformed (refused before it is journalled).
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
pub enum StatementError {
    #[error("a dnc statement is global and names no entity")]
    DncWithEntity,
    #[error("a grant or revoke statement needs an entity")]
    MissingEntity,
}

/// A statement as its maker states it, before it has an identity: what
/// [`super::store::ConsentStore::record`] takes. The store gives it its [`StatementId`] (origin
/// = this node, seq = its journal ticket).
#[derive(Debug, Clone, PartialEq, Eq, Hash, serde::Serialize, serde::Deserialize)]
pub struct NewStatement {
    pub kind: StatementKind,
    pub source: StatementSource,
    /// Subscriber, E.164 digits as a number.
    pub msisdn: u64,
    /// The entity for grant / revoke (required); `None` for dnc.
    pub entity: Option<EntityName>,
    /// When the statement was made, Unix milliseconds.
    pub at: i64,
}

impl NewStatement {
    /// Checks that the entity matches the kind (grant / revoke name one, dnc does not).
    pub fn check(&self) -> Result<(), StatementError> {
        check_kind_entity(self.kind, self.entity.is_some())
    }

    /// The statement with its identity.
    pub fn with_id(self, id: StatementId) -> Statement {
        let NewStatement { kind, source, msisdn, entity, at } = self;
        Statement { kind, source, msisdn, entity, at, id }
    }
}

fn check_kind_entity(kind: StatementKind, has_entity: bool) -> Result<(), StatementError> {
    match (kind.has_entity(), has_entity) {
        (true, false) => Err(StatementError::MissingEntity),
        (false, true) => Err(StatementError::DncWithEntity),
        _ => Ok(()),
    }
}

/// One live statement about a subscriber, with its identity.
#[derive(Debug, Clone, PartialEq, Eq, Hash, serde::Serialize, serde::Deserialize)]
pub struct Statement {
    pub kind: StatementKind,
    pub source: StatementSource,
    /// Subscriber, E.164 digits as a number.
    pub msisdn: u64,
    /// The entity for grant / revoke (always present for them); `None` for dnc.
    pub entity: Option<EntityName>,
    /// When the statement was made, Unix milliseconds.
    pub at: i64,
    pub id: StatementId,
}

impl Statement {
    /// Checks that the entity matches the kind; see [`NewStatement::check`].
    pub fn check(&self) -> Result<(), StatementError> {
        check_kind_entity(self.kind, self.entity.is_some())
    }

    /// Where this statement stands in the cross-node order of its key (module docs).
    #[inline]
    pub fn precedence(&self) -> Precedence<'_> {
        Precedence::new(self.at, self.kind, &self.id.origin, self.id.seq)
    }
}

/// The cross-node order of statements on one key (architecture §4, module docs): the greater wins.
/// The derived `Ord` compares the fields in declaration order: `at`, then the kind's rank
/// (revoke over grant), then the origin node name, then the origin seq. This is the only
/// definition of that order; the delta uses it, and the snapshot builder's row order
/// agrees with it on `at` and kind (it keeps no identities; see `snapshot::compile`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
pub struct Precedence<'a> {
    at: i64,
    rank: u8,
    origin: &'a str,
    seq: u64,
}

impl<'a> Precedence<'a> {
    #[inline]
    pub fn new(at: i64, kind: StatementKind, origin: &'a NodeId, seq: u64) -> Precedence<'a> {
        Precedence { at, rank: kind.rank(), origin: origin.as_str(), seq }
    }
}

/// For each origin node, the highest origin seq folded into a snapshot (architecture §8: a
/// snapshot's watermark is per origin). Statements at or below their origin's mark are in the
/// snapshot; [`super::delta::Delta::prune_through`] drops them from the delta.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Watermarks(BTreeMap<NodeId, u64>);

impl Watermarks {
    pub fn new() -> Watermarks {
        Watermarks::default()
    }

    /// The marks of a set of statements: the highest seq per origin.
    pub fn of<'a>(statements: impl IntoIterator<Item = &'a Statement>) -> Watermarks {
        let mut w = Watermarks::new();
        for s in statements {
            w.observe(&s.id);
        }
        w
    }

    /// Raises `id.origin`'s mark to `id.seq` if that is higher.
    pub fn observe(&mut self, id: &StatementId) {
        let e = self.0.entry(id.origin.clone()).or_insert(0);
        *e = (*e).max(id.seq);
    }

    /// Sets `origin`'s mark (replacing any).
    pub fn insert(&mut self, origin: NodeId, seq: u64) {
        self.0.insert(origin, seq);
    }

    /// The mark of `origin`: 0 when none of its statements is folded in.
    pub fn get(&self, origin: &NodeId) -> u64 {
        self.0.get(origin).copied().unwrap_or(0)
    }

    /// Whether the statement `id` is at or below its origin's mark.
    pub fn covers(&self, id: &StatementId) -> bool {
        id.seq <= self.get(&id.origin)
    }

    /// Marks by node name.
    pub fn iter(&self) -> impl Iterator<Item = (&NodeId, u64)> {
        self.0.iter().map(|(n, &s)| (n, s))
    }

    pub fn len(&self) -> usize {
        self.0.len()
    }

    pub fn is_empty(&self) -> bool {
        self.0.is_empty()
    }
}

impl fmt::Display for Watermarks {
    /// `node-a:12, node-b:7`, or `-` when empty.
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        if self.0.is_empty() {
            return f.write_str("-");
        }
        for (i, (n, s)) in self.0.iter().enumerate() {
            if i > 0 {
                f.write_str(", ")?;
            }
            write!(f, "{n}:{s}")?;
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn node(s: &str) -> NodeId {
        NodeId::parse(s).unwrap()
    }

    fn st(at: i64, kind: StatementKind, origin: &str, seq: u64) -> Statement {
        NewStatement {
            kind,
            source: StatementSource::Api,
            msisdn: 8613800138000,
            entity: kind.has_entity().then(|| EntityName::parse("acme").unwrap()),
            at,
        }
        .with_id(StatementId { origin: node(origin), seq })
    }

    #[test]
    fn kind_parses_and_prints() {
        for k in [StatementKind::Grant, StatementKind::Revoke, StatementKind::Dnc] {
            assert_eq!(k.as_str().parse::<StatementKind>(), Ok(k));
            assert_eq!(StatementKind::from_u8(k as u8), Some(k));
            assert_eq!(serde_json::to_string(&k).unwrap(), format!("\"{k}\""));
        }
        let e = "Grant".parse::<StatementKind>().unwrap_err();
        assert_eq!(e.to_string(), "`Grant`: expected grant | revoke | dnc");
    }

    /// The one entity rule: what it accepts and what it refuses, with the character named.
    #[test]
    fn entity_rules() {
        let accept = [
            "acme-retail",
            "acme",
            "demo-unlicensed",
            "brand-007",
            "A",
            "7",
            "acme_retail.cn",
            "acme:retail",
            "ops@acme",
            "acme/retail",
            "a+b",
            "M&S",
            "品牌",
            "华为技术",
            "品牌-A",
            "中国移动10086",
            "ヤマト運輸",
            "카카오",
            "Ünïcødé",
            "Москва",
            "हिन्दी",
            "ไทย",
            "٣٤",
        ];
        for a in accept {
            assert_eq!(EntityName::parse(a).map(|e| e.as_str().to_owned()), Ok(a.to_owned()), "{a}");
            assert_eq!(check_entity(a.as_bytes()), Ok(a), "{a}");
        }
        assert_eq!(EntityName::parse(&"x".repeat(255)).map(|e| e.len()), Ok(255));
        assert_eq!(EntityName::parse(&"品".repeat(85)).map(|e| e.len()), Ok(255));
        let refuse: [(&str, EntityError); 19] = [
            ("", EntityError::Empty),
            ("\"acme-retail\"", EntityError::Char('"')),
            ("acme\"s", EntityError::Char('"')),
            ("'acme'", EntityError::Char('\'')),
            ("acme retail", EntityError::Char(' ')),
            (" acme", EntityError::Char(' ')),
            ("品牌 A", EntityError::Char(' ')),
            ("acme,retail", EntityError::Char(',')),
            ("acme;retail", EntityError::Char(';')),
            ("acme\\retail", EntityError::Char('\\')),
            ("a\tb", EntityError::Char('\t')),
            ("a\nb", EntityError::Char('\n')),
            ("a\u{85}b", EntityError::Char('\u{85}')),
            ("a\u{a0}b", EntityError::Char('\u{a0}')),
            ("a\u{3000}b", EntityError::Char('\u{3000}')),
            ("“acme”", EntityError::Char('“')),
            ("品牌（深圳）", EntityError::Char('（')),
            ("a\u{200b}b", EntityError::Char('\u{200b}')),
            ("acme™", EntityError::Char('™')),
        ];
        for (r, want) in refuse {
            assert_eq!(EntityName::parse(r), Err(want), "{r:?}");
        }
        assert_eq!(EntityName::parse(&"x".repeat(256)), Err(EntityError::TooLong(256)));
        assert_eq!(EntityName::parse_bytes(b"a\xffb"), Err(EntityError::NotUtf8));
        assert!(serde_json::from_str::<EntityName>("\"\"").is_err());
        assert!(serde_json::from_str::<EntityName>("\"a b\"").is_err());
        // The message names the character and states the rule.
        let m = EntityName::parse("\"acme\"").unwrap_err().to_string();
        assert_eq!(
            m,
            "entity id contains `\"` (U+0022), not allowed; an entity id is 1 to 255 bytes of UTF-8: letters \
             and digits of any script (with their combining marks) and - _ . : @ / + &; no spaces, quotes, \
             commas, backslashes or control characters"
        );
        assert!(EntityName::parse("a b").unwrap_err().to_string().starts_with("entity id contains U+0020,"));
    }

    /// What earlier versions stored is read back under the rule it was written with.
    #[test]
    fn stored_entities_are_read_leniently() {
        for old in ["品牌 A", "\"acme\"", "acme, inc", "a\\b"] {
            assert!(EntityName::parse(old).is_err(), "{old}");
            assert_eq!(EntityName::parse_stored(old.as_bytes()).unwrap().as_str(), old);
        }
        assert_eq!(EntityName::parse_stored(b""), Err(EntityError::Empty));
        assert_eq!(EntityName::parse_stored(b"a\tb"), Err(EntityError::Control));
        assert_eq!(EntityName::parse_stored(b"a\xffb"), Err(EntityError::NotUtf8));
        assert_eq!(EntityName::parse_stored(&[b'x'; 256]), Err(EntityError::TooLong(256)));
    }

    #[test]
    fn node_rules() {
        assert_eq!(node("gw-1.bj_2").as_str(), "gw-1.bj_2");
        for bad in ["", "a b", "gw/1", "节点", &"n".repeat(65)] {
            let e = NodeId::parse(bad).unwrap_err();
            assert!(e.to_string().contains("A-Z a-z 0-9 . _ -"), "{e}");
        }
        assert!(NodeId::parse(&"n".repeat(64)).is_ok());
        let h = NodeId::from_hostname();
        assert!(NodeId::parse(h.as_str()).is_ok(), "{h}");
    }

    #[test]
    fn entity_must_match_kind() {
        let mut s = st(1, StatementKind::Grant, "a", 1);
        assert_eq!(s.check(), Ok(()));
        s.entity = None;
        assert_eq!(s.check(), Err(StatementError::MissingEntity));
        let mut d = st(1, StatementKind::Dnc, "a", 1);
        assert_eq!(d.check(), Ok(()));
        d.entity = Some(EntityName::parse("x").unwrap());
        assert_eq!(d.check(), Err(StatementError::DncWithEntity));
    }

    /// Later at, then revoke over grant, then origin, then seq; the same on any arrival order.
    #[test]
    fn precedence_is_at_kind_origin_seq() {
        use StatementKind::*;
        let ordered = [
            st(100, Revoke, "z", 9),
            st(200, Grant, "z", 9),
            st(200, Revoke, "a", 1),
            st(200, Revoke, "a", 2),
            st(200, Revoke, "b", 1),
            st(201, Grant, "a", 1),
        ];
        for w in ordered.windows(2) {
            assert!(w[0].precedence() < w[1].precedence(), "{:?} < {:?}", w[0], w[1]);
        }
        let mut shuffled = ordered.to_vec();
        shuffled.reverse();
        shuffled.swap(1, 4);
        let max = shuffled.iter().max_by(|a, b| a.precedence().cmp(&b.precedence())).unwrap();
        assert_eq!(max, &ordered[5]);
    }

    #[test]
    fn watermarks_per_origin() {
        let sts =
            [st(1, StatementKind::Dnc, "a", 3), st(1, StatementKind::Dnc, "b", 9), st(1, StatementKind::Dnc, "a", 5)];
        let w = Watermarks::of(&sts);
        assert_eq!((w.get(&node("a")), w.get(&node("b")), w.get(&node("c"))), (5, 9, 0));
        assert!(w.covers(&StatementId { origin: node("a"), seq: 5 }));
        assert!(!w.covers(&StatementId { origin: node("a"), seq: 6 }));
        assert_eq!(w.to_string(), "a:5, b:9");
        assert_eq!(Watermarks::new().to_string(), "-");
    }
}
