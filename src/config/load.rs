//! Reading a config from disk: the main file and its `include`s, every problem of every stage
//! at once with its file, line and dotted key.
//!
//! The stages: each file is parsed twice, by `toml` into a value tree and by `toml_edit` into a
//! spanned document (the lines of every key); the included `[[account]]` and
//! `[[policy.content_rule]]` tables are appended to the main file's, in include order; a
//! `system_id` (or rule `name`) defined twice is reported with both places and the later one
//! dropped; the tree is deserialized into [`RawConfig`] with the path of a failure recorded
//! (`serde_path_to_error`), the offending key reported and removed and the deserialization
//! retried, so an unknown key, a wrong type and a bad time zone come out of one run; then
//! [`RawConfig::validate`] checks meanings. Accounts are named by `system_id`
//! (`account[acme].max_tps`), content rules by `name`, elements without one by position.
//!
//! An included file may hold `[[account]]` and `[[policy.content_rule]]` tables and nothing else.

use std::collections::{BTreeMap, HashMap};
use std::fmt;
use std::path::{Path, PathBuf};

use sha2::{Digest, Sha256};
use toml::Value;

use super::raw::RawConfig;
use super::Config;

/// Whether a [`Diagnostic`] fails the check.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Severity {
    Error,
    /// A problem that does not fail `check-config`: a referenced file missing or unreadable,
    /// an include pattern matching nothing, a licence already expired.
    Warning,
}

/// One problem found in a config: printed `file:line: key: message`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Diagnostic {
    /// The file it is in (the main file, an included one; `<config>` for [`Config::parse`]).
    pub file: PathBuf,
    /// 1-based; `None` when the problem has no place in the file (a missing key, a whole file).
    pub line: Option<usize>,
    /// Dotted key path, e.g. `account[acme].licence_expires`; `""` for whole-file problems.
    pub key: String,
    pub message: String,
    pub severity: Severity,
}

impl Diagnostic {
    /// A problem not yet placed in a file (validators; [`Loader`] places it by its key).
    pub(super) fn new(key: impl Into<String>, message: impl Into<String>, severity: Severity) -> Diagnostic {
        Diagnostic { file: PathBuf::new(), line: None, key: key.into(), message: message.into(), severity }
    }

    pub fn is_error(&self) -> bool {
        self.severity == Severity::Error
    }

    /// How it is reported (check-config, run, a reload): `file:line: key: message`, a warning
    /// prefixed `warning: `.
    pub fn report(&self) -> String {
        if self.is_error() {
            self.to_string()
        } else {
            format!("warning: {self}")
        }
    }

    /// A warning that `run` does not accept: the file is needed at start and no later step
    /// reads it (the TLS files and the snapshot are read again by the gateway, which refuses
    /// or reports them itself; the complaints calendar is read only here).
    pub fn refuses_start(&self) -> bool {
        self.severity == Severity::Warning && NEEDED_AT_START.contains(&self.key.as_str())
    }
}

/// Keys whose file `run` needs and reads only through the config (see
/// [`Diagnostic::refuses_start`]).
pub const NEEDED_AT_START: &[&str] = &["complaints.calendar"];

impl fmt::Display for Diagnostic {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}", self.file.display())?;
        if let Some(l) = self.line {
            write!(f, ":{l}")?;
        }
        if !self.key.is_empty() {
            write!(f, ": {}", self.key)?;
        }
        write!(f, ": {}", self.message)
    }
}

/// A config read from disk with everything it references.
#[derive(Debug, Clone)]
pub struct Loaded {
    /// The validated gateway config.
    pub config: Config,
    /// Problems that do not fail the check.
    pub warnings: Vec<Diagnostic>,
    /// Every config file read: the main file first, then the includes in order.
    pub files: Vec<PathBuf>,
    /// Directories whose glob patterns were matched (a new file there must trigger a reload).
    pub include_dirs: Vec<PathBuf>,
    /// Lowercase hex SHA-256 over the files' contents in order (for a config without
    /// includes, that of the main file: `sha256sum` prints the same).
    pub sha256: String,
    /// Every leaf setting of the effective config after includes, as dotted key → canonical
    /// value text (TOML syntax): accounts keyed by system_id (`account.acme.max_tps`), content
    /// rules by name (`policy.content_rule.casino.literals`); secrets (`admin.token`,
    /// `replication.password`, a password inside `replication.redis`) masked as
    /// `*** (sha256:xxxxxxxx)`, which changes when the secret does.
    pub keys: BTreeMap<String, String>,
}

/// Reads, includes and validates the config at `path`. `Err` holds every problem found, the
/// warnings among them (see [`Diagnostic::severity`]), errors first.
pub fn load(path: &Path) -> Result<Loaded, Vec<Diagnostic>> {
    match std::fs::read_to_string(path) {
        Ok(text) => load_text(path, text),
        Err(e) => Err(vec![Diagnostic {
            file: path.to_owned(),
            line: None,
            key: String::new(),
            message: format!("cannot read: {e}"),
            severity: Severity::Error,
        }]),
    }
}

/// [`load`] with the main file's text given; includes are relative to `path`'s directory.
pub(super) fn load_text(path: &Path, text: String) -> Result<Loaded, Vec<Diagnostic>> {
    Loader::default().run(path, text)
}

/// A JSON summary of a loaded config for `GET /v1/config`: its sections and their keys (from
/// [`Loaded::keys`], secrets masked), the files, the include directories, the SHA-256 and the
/// warnings.
pub fn summary(l: &Loaded) -> serde_json::Value {
    let mut sections = serde_json::Map::new();
    for (key, value) in &l.keys {
        let (section, rest) = match split_first(key) {
            Some((s, r)) => (s, Some(r)),
            None => (key.as_str(), None),
        };
        match rest {
            None => {
                sections.insert(section.to_owned(), value.clone().into());
            }
            Some(rest) => {
                let entry = sections.entry(section.to_owned()).or_insert_with(|| serde_json::json!({}));
                if let Some(m) = entry.as_object_mut() {
                    m.insert(rest.to_owned(), value.clone().into());
                }
            }
        }
    }
    serde_json::json!({
        "sha256": l.sha256,
        "files": l.files.iter().map(|f| f.display().to_string()).collect::<Vec<_>>(),
        "include_dirs": l.include_dirs.iter().map(|f| f.display().to_string()).collect::<Vec<_>>(),
        "accounts": l.config.accounts.len(),
        "warnings": l.warnings.iter().map(ToString::to_string).collect::<Vec<_>>(),
        "sections": sections,
    })
}

/// The first segment of a dotted key and the rest (`account.acme.max_tps` → `account`,
/// `acme.max_tps`); `None` for a one-segment key.
fn split_first(key: &str) -> Option<(&str, &str)> {
    let i = separators(key).into_iter().find(|&(_, dot)| dot)?.0;
    Some((&key[..i], &key[i + 1..]))
}

/// The arrays whose elements are named rather than numbered, and the field that names them.
const NAMED_ARRAYS: &[(&str, &str)] = &[("account", "system_id"), ("policy.content_rule", "name")];

/// The tables an included file may hold (top-level key, and the key under it or `""`).
const INCLUDABLE: &str = "[[account]] and [[policy.content_rule]]";

/// Where an element of a named array came from: the file's index and its position there.
type Origin = (usize, usize);

struct Source {
    path: PathBuf,
    text: String,
    doc: Option<toml_edit::ImDocument<String>>,
}

#[derive(Default)]
struct Loader {
    sources: Vec<Source>,
    diags: Vec<Diagnostic>,
    include_dirs: Vec<PathBuf>,
    /// Dotted key (display form) → (source, line).
    locs: HashMap<String, (usize, usize)>,
}

impl Loader {
    fn run(mut self, path: &Path, text: String) -> Result<Loaded, Vec<Diagnostic>> {
        let Some(mut main) = self.parse(path.to_owned(), text) else { return Err(self.diags) };
        let base = path.parent().map(Path::to_owned).unwrap_or_default();
        let include = main.remove("include");
        let mut named: Vec<Vec<(Value, Origin)>> = vec![Vec::new(); NAMED_ARRAYS.len()];
        let mut blocked = [false; 2];
        for (n, &(array, _)) in NAMED_ARRAYS.iter().enumerate() {
            match take_array(&mut main, array) {
                Taken::Absent => {}
                Taken::Array(v) => named[n].extend(v.into_iter().enumerate().map(|(k, e)| (e, (0, k)))),
                // Left in place for the deserializer to report as a wrong type.
                Taken::Other => blocked[n] = true,
            }
        }
        if let Some(include) = include.clone() {
            for file in self.expand_includes(&base, include) {
                self.include(file, &mut named, &blocked);
            }
        }
        // The merged arrays' origins, in merged order, once duplicates are dropped.
        let mut origins: Vec<Vec<Origin>> = vec![Vec::new(); NAMED_ARRAYS.len()];
        for (n, &(array, field)) in NAMED_ARRAYS.iter().enumerate() {
            let elements = std::mem::take(&mut named[n]);
            if blocked[n] || elements.is_empty() {
                continue;
            }
            let (values, o) = self.drop_duplicates(array, field, elements).into_iter().unzip();
            put_array(&mut main, array, values);
            origins[n] = o;
        }
        let mut tree = Value::Table(main);
        // Lines of every key, with the named arrays' elements under their names.
        for s in 0..self.sources.len() {
            self.index_source(s, &tree, &origins);
        }
        let (raw, parse_keys) = self.deserialize(&mut tree);
        let config = raw.and_then(|raw| {
            let (config, diags) = raw.validate();
            for d in diags {
                // A key removed for a wrong type would also be reported missing: once is enough.
                if d.is_error() && parse_keys.iter().any(|k| is_within(&d.key, k)) {
                    continue;
                }
                let d = self.place(d);
                self.diags.push(d);
            }
            config
        });
        // In file order (main file first, includes in order), then by line.
        let mut diags = std::mem::take(&mut self.diags);
        let order = |d: &Diagnostic| {
            let file = self.sources.iter().position(|s| s.path == d.file).unwrap_or(usize::MAX);
            (file, d.line.unwrap_or(usize::MAX))
        };
        diags.sort_by_key(order);
        let (errors, warnings): (Vec<Diagnostic>, Vec<Diagnostic>) = diags.into_iter().partition(Diagnostic::is_error);
        let config = match config {
            Some(c) if errors.is_empty() => c,
            _ => return Err(errors.into_iter().chain(warnings).collect()),
        };
        if let (Value::Table(t), Some(include)) = (&mut tree, include) {
            t.insert("include".to_owned(), include);
        }
        let mut hasher = Sha256::new();
        for s in &self.sources {
            hasher.update(s.text.as_bytes());
        }
        let mut keys = BTreeMap::new();
        flatten(&tree, String::new(), &mut keys);
        mask_secrets(&config, &mut keys);
        Ok(Loaded {
            config,
            warnings,
            files: self.sources.iter().map(|s| s.path.clone()).collect(),
            include_dirs: self.include_dirs,
            sha256: hex(&hasher.finalize()),
            keys,
        })
    }

    /// Parses a file into a value tree (and its spanned document); a syntax error is reported
    /// with its line and gives `None`.
    fn parse(&mut self, path: PathBuf, text: String) -> Option<toml::Table> {
        let table = match toml::from_str::<toml::Table>(&text) {
            Ok(t) => t,
            Err(e) => {
                self.diags.push(Diagnostic {
                    line: e.span().map(|s| line_of(&text, s.start)),
                    file: path,
                    key: String::new(),
                    message: e.message().trim_end().to_owned(),
                    severity: Severity::Error,
                });
                return None;
            }
        };
        let doc = toml_edit::ImDocument::parse(text.clone()).ok();
        self.sources.push(Source { path, text, doc });
        Some(table)
    }

    /// A problem at a key of source `s`.
    fn at(&mut self, s: usize, key: &str, message: impl Into<String>, severity: Severity) {
        let line = self.sources[s].doc.as_ref().and_then(|d| key_line(d.as_table(), &self.sources[s].text, key));
        self.diags.push(Diagnostic {
            file: self.sources[s].path.clone(),
            line,
            key: key.to_owned(),
            message: message.into(),
            severity,
        });
    }

    /// The files the main file's `include` patterns match, in order, each once; the patterns'
    /// directories recorded.
    fn expand_includes(&mut self, base: &Path, include: Value) -> Vec<PathBuf> {
        let Value::Array(patterns) = include else {
            self.at(0, "include", "expected an array of file patterns, e.g. [\"accounts.d/*.toml\"]", Severity::Error);
            return Vec::new();
        };
        let mut seen: Vec<PathBuf> = vec![canonical(&self.sources[0].path)];
        let mut files = Vec::new();
        for (i, p) in patterns.into_iter().enumerate() {
            let key = format!("include[{i}]");
            let Value::String(pattern) = p else {
                self.at(0, &key, "expected a string (a file pattern)", Severity::Error);
                continue;
            };
            match expand(base, &pattern) {
                Err(e) => self.at(0, &key, format!("`{pattern}`: {e}"), Severity::Error),
                Ok((dir, matched)) => {
                    if !self.include_dirs.contains(&dir) {
                        self.include_dirs.push(dir.clone());
                    }
                    if matched.is_empty() {
                        self.at(
                            0,
                            &key,
                            format!("`{pattern}` matches no file in {}", dir.display()),
                            Severity::Warning,
                        );
                    }
                    for f in matched {
                        let c = canonical(&f);
                        if !seen.contains(&c) {
                            seen.push(c);
                            files.push(f);
                        }
                    }
                }
            }
        }
        files
    }

    /// Reads an included file and appends its named-array elements; anything else in it is an
    /// error naming the file.
    fn include(&mut self, path: PathBuf, named: &mut [Vec<(Value, Origin)>], blocked: &[bool; 2]) {
        let text = match std::fs::read_to_string(&path) {
            Ok(t) => t,
            Err(e) => {
                self.diags.push(Diagnostic {
                    file: path,
                    line: None,
                    key: String::new(),
                    message: format!("cannot read: {e}"),
                    severity: Severity::Error,
                });
                return;
            }
        };
        let Some(mut table) = self.parse(path, text) else { return };
        let s = self.sources.len() - 1;
        let refuse = |l: &mut Loader, key: &str| {
            l.at(s, key, format!("not allowed in an included file (it may hold only {INCLUDABLE})"), Severity::Error)
        };
        for (n, &(array, _)) in NAMED_ARRAYS.iter().enumerate() {
            match take_array(&mut table, array) {
                Taken::Absent => {}
                Taken::Array(v) if !blocked[n] => {
                    named[n].extend(v.into_iter().enumerate().map(|(k, e)| (e, (s, k))));
                }
                Taken::Array(_) => {}
                Taken::Other => self.at(s, array, "expected an array of tables", Severity::Error),
            }
        }
        if let Some(Value::Table(policy)) = table.get("policy") {
            for k in policy.keys() {
                refuse(self, &format!("policy.{}", quote(k)));
            }
            table.remove("policy");
        }
        for k in table.keys() {
            refuse(self, &quote(k));
        }
    }

    /// The elements of a named array with a name not seen before; a repeated name is an error
    /// naming both places.
    fn drop_duplicates(&mut self, array: &str, field: &str, elements: Vec<(Value, Origin)>) -> Vec<(Value, Origin)> {
        let mut kept: Vec<(Value, Origin)> = Vec::with_capacity(elements.len());
        for (v, origin) in elements {
            let Some(name) = name_of(&v, field) else {
                kept.push((v, origin));
                continue;
            };
            let first = kept.iter().find(|(w, _)| name_of(w, field) == Some(name)).map(|&(_, o)| o);
            let Some(first) = first else {
                kept.push((v, origin));
                continue;
            };
            let key = format!("{array}[{name}].{field}");
            let (fs, fl) = (first.0, self.element_line(first, array, field));
            let (s, line) = (origin.0, self.element_line(origin, array, field));
            let first_at = match fl {
                Some(l) => format!("{}:{l}", self.sources[fs].path.display()),
                None => self.sources[fs].path.display().to_string(),
            };
            self.diags.push(Diagnostic {
                file: self.sources[s].path.clone(),
                line,
                key,
                message: format!("`{name}` is defined twice: first at {first_at}"),
                severity: Severity::Error,
            });
        }
        kept
    }

    /// The line of `field` (else of the table) in element `origin` of a named array.
    fn element_line(&self, (s, k): Origin, array: &str, field: &str) -> Option<usize> {
        let src = &self.sources[s];
        let doc = src.doc.as_ref()?;
        let mut item = doc.as_item();
        for seg in array.split('.') {
            item = item.get(seg)?;
        }
        let table: &dyn toml_edit::TableLike = match item {
            toml_edit::Item::ArrayOfTables(a) => a.get(k)?,
            toml_edit::Item::Value(toml_edit::Value::Array(a)) => a.get(k)?.as_inline_table()?,
            _ => return None,
        };
        let span = table.key(field).and_then(|k| k.span()).or_else(|| table.get(field).and_then(|i| i.span()));
        span.map(|s| line_of(&src.text, s.start))
    }

    /// Records the line of every key of source `s` under its display path. `origins[n]` holds
    /// where each element of the merged named array `n` came from, in merged order.
    fn index_source(&mut self, s: usize, tree: &Value, origins: &[Vec<Origin>]) {
        let Some(doc) = self.sources[s].doc.as_ref() else { return };
        let mut names: HashMap<(&str, usize), String> = HashMap::new();
        for (n, &(array, field)) in NAMED_ARRAYS.iter().enumerate() {
            let merged = get_path(tree, array).and_then(Value::as_array);
            for (m, origin) in origins[n].iter().enumerate() {
                if origin.0 == s {
                    let name = merged.and_then(|a| a.get(m)).and_then(|v| name_of(v, field));
                    names.insert((array, origin.1), name.map_or_else(|| m.to_string(), str::to_owned));
                }
            }
        }
        let mut ix = Indexer { s, text: &self.sources[s].text, names: &names, locs: &mut self.locs };
        ix.table(doc.as_table(), "");
    }

    /// Deserializes the tree into [`RawConfig`], reporting and removing each key the
    /// deserializer refuses until it succeeds. Gives the config and the keys reported.
    fn deserialize(&mut self, tree: &mut Value) -> (Option<RawConfig>, Vec<String>) {
        let mut reported = Vec::new();
        // Each round removes one key, so this ends; the bound is a guard.
        for _ in 0..100_000 {
            let e = match serde_path_to_error::deserialize::<_, RawConfig>(tree.clone()) {
                Ok(raw) => return (Some(raw), reported),
                Err(e) => e,
            };
            let segs: Vec<Seg> = e
                .path()
                .iter()
                .map(|s| match s {
                    serde_path_to_error::Segment::Seq { index } => Seg::Index(*index),
                    serde_path_to_error::Segment::Map { key } => Seg::Key(key.clone()),
                    _ => Seg::Key("?".to_owned()),
                })
                .collect();
            let key = display_path(tree, &segs);
            let message = tidy(e.inner().message(), get_segs(tree, &segs));
            let d = self.place(Diagnostic::new(&key, message, Severity::Error));
            self.diags.push(d);
            reported.push(key);
            if !remove_at(tree, &segs) {
                return (None, reported);
            }
        }
        (None, reported)
    }

    /// A validator's problem with its file and line, from its key (or the nearest parent key
    /// that has a place).
    fn place(&self, mut d: Diagnostic) -> Diagnostic {
        let mut key = d.key.as_str();
        loop {
            if let Some(&(s, line)) = self.locs.get(key) {
                d.file = self.sources[s].path.clone();
                d.line = Some(line);
                return d;
            }
            match separators(key).last() {
                Some(&(i, _)) => key = &key[..i],
                None => break,
            }
        }
        d.file = self.sources.first().map(|s| s.path.clone()).unwrap_or_default();
        d
    }
}

/// Walks a spanned document recording the line of each key under its display path.
struct Indexer<'a> {
    s: usize,
    text: &'a str,
    names: &'a HashMap<(&'a str, usize), String>,
    locs: &'a mut HashMap<String, (usize, usize)>,
}

impl Indexer<'_> {
    fn record(&mut self, path: &str, span: Option<std::ops::Range<usize>>) {
        if let Some(span) = span {
            let line = line_of(self.text, span.start);
            self.locs.entry(path.to_owned()).or_insert((self.s, line));
        }
    }

    fn table(&mut self, t: &dyn toml_edit::TableLike, prefix: &str) {
        for (k, item) in t.iter() {
            let path = join(prefix, k);
            let span = t.key(k).and_then(|k| k.span()).or_else(|| item.span());
            self.record(&path, span);
            self.item(item, &path);
        }
    }

    fn element(&self, path: &str, k: usize) -> String {
        match NAMED_ARRAYS.iter().find(|(a, _)| *a == path) {
            Some(&(a, _)) => format!("{path}[{}]", self.names.get(&(a, k)).cloned().unwrap_or_else(|| k.to_string())),
            None => format!("{path}[{k}]"),
        }
    }

    fn item(&mut self, item: &toml_edit::Item, path: &str) {
        match item {
            toml_edit::Item::Table(t) => self.table(t, path),
            toml_edit::Item::ArrayOfTables(a) => {
                for (k, t) in a.iter().enumerate() {
                    let p = self.element(path, k);
                    self.record(&p, t.span());
                    self.table(t, &p);
                }
            }
            toml_edit::Item::Value(v) => self.value(v, path),
            toml_edit::Item::None => {}
        }
    }

    fn value(&mut self, v: &toml_edit::Value, path: &str) {
        match v {
            toml_edit::Value::InlineTable(t) => self.table(t, path),
            toml_edit::Value::Array(a) => {
                for (k, e) in a.iter().enumerate() {
                    let p = self.element(path, k);
                    self.record(&p, e.span());
                    self.value(e, &p);
                }
            }
            _ => {}
        }
    }
}

/// The line of a dotted key (plain keys only) in a spanned table.
fn key_line(root: &toml_edit::Table, text: &str, key: &str) -> Option<usize> {
    let mut t: &dyn toml_edit::TableLike = root;
    let mut span = None;
    let mut parts = key.split('.').peekable();
    while let Some(seg) = parts.next() {
        let seg = seg.split('[').next().unwrap_or(seg).trim_matches('"');
        span = t.key(seg).and_then(|k| k.span()).or_else(|| t.get(seg).and_then(|i| i.span())).or(span);
        if parts.peek().is_some() {
            t = t.get(seg)?.as_table_like()?;
        }
    }
    span.map(|s| line_of(text, s.start))
}

enum Taken {
    Absent,
    Array(Vec<Value>),
    Other,
}

/// Removes the array at a dotted path (`account`, `policy.content_rule`) from a table; a value
/// of another type is left where it is.
fn take_array(t: &mut toml::Table, path: &str) -> Taken {
    let (parent, last) = match path.rsplit_once('.') {
        Some((p, l)) => (Some(p), l),
        None => (None, path),
    };
    let t = match parent {
        None => t,
        Some(p) => match t.get_mut(p) {
            Some(Value::Table(t)) => t,
            _ => return Taken::Absent,
        },
    };
    match t.get(last) {
        None => Taken::Absent,
        Some(Value::Array(_)) => match t.remove(last) {
            Some(Value::Array(v)) => Taken::Array(v),
            _ => Taken::Absent,
        },
        Some(_) => Taken::Other,
    }
}

/// Puts an array at a dotted path, creating the parent table if needed.
fn put_array(t: &mut toml::Table, path: &str, values: Vec<Value>) {
    match path.rsplit_once('.') {
        None => {
            t.insert(path.to_owned(), Value::Array(values));
        }
        Some((p, l)) => {
            let parent = t.entry(p.to_owned()).or_insert_with(|| Value::Table(toml::Table::new()));
            if let Value::Table(parent) = parent {
                parent.insert(l.to_owned(), Value::Array(values));
            }
        }
    }
}

fn get_path<'a>(v: &'a Value, path: &str) -> Option<&'a Value> {
    path.split('.').try_fold(v, |v, k| v.get(k))
}

/// The non-empty string naming an element of a named array.
fn name_of<'a>(v: &'a Value, field: &str) -> Option<&'a str> {
    v.get(field).and_then(Value::as_str).filter(|s| !s.is_empty())
}

enum Seg {
    Key(String),
    Index(usize),
}

fn get_segs<'a>(v: &'a Value, segs: &[Seg]) -> Option<&'a Value> {
    segs.iter().try_fold(v, |v, s| match s {
        Seg::Key(k) => v.get(k.as_str()),
        Seg::Index(i) => v.get(*i),
    })
}

/// The display path of a deserializer failure: keys joined by dots, named-array elements by
/// name (`account[acme].max_tps`), others by index.
fn display_path(tree: &Value, segs: &[Seg]) -> String {
    let mut out = String::new();
    let mut plain = String::new(); // the path without indices, to recognise named arrays
    let mut v = Some(tree);
    for s in segs {
        match s {
            Seg::Key(k) => {
                out = join(&out, k);
                plain = join(&plain, k);
                v = v.and_then(|v| v.get(k.as_str()));
            }
            Seg::Index(i) => {
                let e = v.and_then(|v| v.get(*i));
                let name = NAMED_ARRAYS
                    .iter()
                    .find(|(a, _)| *a == plain)
                    .and_then(|&(_, field)| e.and_then(|e| name_of(e, field)));
                out.push_str(&format!("[{}]", name.map_or_else(|| i.to_string(), str::to_owned)));
                v = e;
            }
        }
    }
    out
}

/// Removes what a deserializer failure points at: the last key of its path (an array element
/// of a wrong type takes its array with it, whose key is the last). `false` if nothing could
/// be removed (then the loop would not end).
fn remove_at(tree: &mut Value, segs: &[Seg]) -> bool {
    let Some(last_key) = segs.iter().rposition(|s| matches!(s, Seg::Key(_))) else { return false };
    let mut v = tree;
    for s in &segs[..last_key] {
        v = match (s, v) {
            (Seg::Key(k), Value::Table(t)) => match t.get_mut(k.as_str()) {
                Some(v) => v,
                None => return false,
            },
            (Seg::Index(i), Value::Array(a)) => match a.get_mut(*i) {
                Some(v) => v,
                None => return false,
            },
            _ => return false,
        };
    }
    match (&segs[last_key], v) {
        (Seg::Key(k), Value::Table(t)) => t.remove(k.as_str()).is_some(),
        _ => false,
    }
}

/// A deserializer message in the house words: `unknown key (expected one of a, b)`, and a
/// hint for a TOML date written without quotes.
fn tidy(message: &str, value: Option<&Value>) -> String {
    if let Some(rest) = message.strip_prefix("unknown field ") {
        let expected = rest.split_once(", expected ").map(|(_, e)| e.replace('`', "")).unwrap_or_default();
        let expected = expected.strip_prefix("one of ").unwrap_or(&expected).to_owned();
        return if expected.is_empty() {
            "unknown key".to_owned()
        } else {
            format!("unknown key (expected one of {expected})")
        };
    }
    if let Some(Value::Datetime(d)) = value {
        return format!("{d} is a TOML date; write it as a string: \"{d}\"");
    }
    message.to_owned()
}

/// Whether `key` is `parent` or below it.
fn is_within(key: &str, parent: &str) -> bool {
    key.strip_prefix(parent).is_some_and(|rest| rest.is_empty() || rest.starts_with(['.', '[']))
}

/// Byte positions where a dotted key can be cut to its parent, with `true` for a dot (`false`
/// for an opening bracket); dots inside quotes or brackets do not count.
fn separators(key: &str) -> Vec<(usize, bool)> {
    let (mut out, mut quoted, mut depth) = (Vec::new(), false, 0usize);
    for (i, c) in key.char_indices() {
        match c {
            '"' if depth == 0 => quoted = !quoted,
            '.' if !quoted && depth == 0 => out.push((i, true)),
            '[' if !quoted => {
                if depth == 0 {
                    out.push((i, false));
                }
                depth += 1;
            }
            ']' if !quoted => depth = depth.saturating_sub(1),
            _ => {}
        }
    }
    out
}

/// A key as written in a dotted path: bare if it can be, else quoted.
fn quote(k: &str) -> String {
    if !k.is_empty() && k.bytes().all(|b| b.is_ascii_alphanumeric() || b == b'_' || b == b'-') {
        k.to_owned()
    } else {
        serde_json::to_string(k).unwrap_or_else(|_| format!("\"{k}\""))
    }
}

fn join(prefix: &str, k: &str) -> String {
    if prefix.is_empty() {
        quote(k)
    } else {
        format!("{prefix}.{}", quote(k))
    }
}

/// Every leaf of the tree as dotted key → canonical TOML text; named arrays' elements under
/// their names.
fn flatten(v: &Value, path: String, out: &mut BTreeMap<String, String>) {
    match v {
        Value::Table(t) => {
            for (k, v) in t {
                flatten(v, join(&path, k), out);
            }
        }
        Value::Array(a) => {
            if let Some(&(_, field)) = NAMED_ARRAYS.iter().find(|(n, _)| *n == path) {
                for (i, e) in a.iter().enumerate() {
                    let name = name_of(e, field).map_or_else(|| i.to_string(), str::to_owned);
                    flatten(e, format!("{path}.{}", quote(&name)), out);
                }
            } else if !a.is_empty() && a.iter().all(Value::is_table) {
                for (i, e) in a.iter().enumerate() {
                    flatten(e, format!("{path}[{i}]"), out);
                }
            } else {
                out.insert(path, canon(v));
            }
        }
        _ => {
            out.insert(path, canon(v));
        }
    }
}

/// A value in TOML syntax, tables' keys sorted.
fn canon(v: &Value) -> String {
    match v {
        Value::String(s) => serde_json::to_string(s).unwrap_or_default(),
        Value::Integer(i) => i.to_string(),
        Value::Float(f) => format!("{f:?}"),
        Value::Boolean(b) => b.to_string(),
        Value::Datetime(d) => d.to_string(),
        Value::Array(a) => format!("[{}]", a.iter().map(canon).collect::<Vec<_>>().join(", ")),
        Value::Table(t) => {
            let mut kv: Vec<String> = t.iter().map(|(k, v)| format!("{} = {}", quote(k), canon(v))).collect();
            kv.sort();
            format!("{{ {} }}", kv.join(", "))
        }
    }
}

/// `*** (sha256:xxxxxxxx)`: a secret's mask that changes when the secret does.
fn mask(secret: &str) -> String {
    format!("*** (sha256:{})", &hex(&Sha256::digest(secret.as_bytes()))[..8])
}

/// The secrets among the keys, masked; the admin token and the Redis password (which live
/// outside the file) added as `admin.token` and `replication.password`.
fn mask_secrets(config: &Config, keys: &mut BTreeMap<String, String>) {
    if let Some(t) = &config.admin.token {
        keys.insert("admin.token".to_owned(), mask(&t.0));
    }
    if let Some(r) = &config.replication {
        if let Some(pw) = &r.redis.password {
            keys.insert("replication.password".to_owned(), mask(pw));
        }
    }
    if let Some(url) = keys.get_mut("replication.redis") {
        // redis://user:password@host: the user info masked whole.
        if let Some((scheme, rest)) = url.trim_matches('"').split_once("://") {
            if let Some((userinfo, host)) = rest.rsplit_once('@') {
                *url = format!("\"{scheme}://***@{host}\" {}", mask(userinfo).trim_start_matches("*** "));
            }
        }
    }
}

fn hex(bytes: &[u8]) -> String {
    bytes.iter().map(|b| format!("{b:02x}")).collect()
}

pub(super) fn line_of(text: &str, offset: usize) -> usize {
    text.as_bytes()[..offset.min(text.len())].iter().filter(|&&b| b == b'\n').count() + 1
}

fn canonical(p: &Path) -> PathBuf {
    std::fs::canonicalize(p).unwrap_or_else(|_| p.to_owned())
}

/// The regular files in `base/pattern`'s directory whose names match its last component
/// (`*` any run of characters, `?` one; a leading `.` only matched by a pattern's leading `.`),
/// sorted; and that directory. Wildcards in the directory part are refused.
fn expand(base: &Path, pattern: &str) -> Result<(PathBuf, Vec<PathBuf>), String> {
    let full = base.join(pattern);
    let name = full.file_name().and_then(|n| n.to_str()).ok_or("no file name")?.to_owned();
    let dir = match full.parent() {
        Some(d) if !d.as_os_str().is_empty() => d.to_owned(),
        _ => PathBuf::from("."),
    };
    if dir.to_string_lossy().contains(['*', '?']) {
        return Err("wildcards are allowed in the file name only".to_owned());
    }
    let Ok(entries) = std::fs::read_dir(&dir) else { return Ok((dir, Vec::new())) };
    let mut files: Vec<PathBuf> = entries
        .filter_map(Result::ok)
        .filter(|e| e.file_name().to_str().is_some_and(|n| glob_match(&name, n)))
        .map(|e| e.path())
        .filter(|p| std::fs::metadata(p).is_ok_and(|m| m.is_file()))
        .collect();
    files.sort();
    Ok((dir, files))
}

/// `*` and `?` over characters; a name's leading `.` must be matched literally.
pub(super) fn glob_match(pattern: &str, name: &str) -> bool {
    if name.starts_with('.') && !pattern.starts_with('.') {
        return false;
    }
    let (p, n): (Vec<char>, Vec<char>) = (pattern.chars().collect(), name.chars().collect());
    let (mut pi, mut ni) = (0, 0);
    let mut star: Option<(usize, usize)> = None;
    while ni < n.len() {
        if pi < p.len() && (p[pi] == '?' || p[pi] == n[ni]) {
            pi += 1;
            ni += 1;
        } else if pi < p.len() && p[pi] == '*' {
            star = Some((pi, ni));
            pi += 1;
        } else if let Some((sp, sn)) = star {
            pi = sp + 1;
            ni = sn + 1;
            star = Some((sp, sn + 1));
        } else {
            return false;
        }
    }
    p[pi..].iter().all(|&c| c == '*')
}
