//! The live statements a snapshot folded in, kept beside it in `<snapshot>.live/` (a journal
//! directory, the journal's own format and checksums), so the next build can start from them
//! (`snapshot build --base PREV`).
//!
//! Why: a snapshot compiles CSV rows and journal statements into states; the statements
//! themselves are gone from it, yet its watermarks say "every statement of origin O up to seq
//! S is in here", and every node drops those from its delta and the stream may be trimmed to
//! them. The next build must therefore hold them again, and the journal it reads does not
//! always: a node that started from a snapshot never journals what that snapshot already held
//! (its reader skips it), so its journal lacks a prefix of every origin. Built from such a
//! journal alone, the next snapshot would claim the old watermarks and lack the statements:
//! acknowledged opt-outs lost on every node. With `--base` the build folds in the union of
//! the previous snapshot's live statements and the journal's (each statement once, by its
//! identity), which holds every statement up to the new watermarks as long as the base is the
//! newest snapshot built. A journal known to lack such a prefix says so in
//! [`PARTIAL_FILE`] (written by the replication reader), and the build refuses it without a
//! base that covers the gap.

use std::collections::{HashMap, HashSet};
use std::fs;
use std::io;
use std::path::{Path, PathBuf};

use crate::consent::journal::{self, Journal};
use crate::consent::statement::{NodeId, Statement, StatementId, Watermarks};

/// In a journal directory: per origin, the seq through which this journal may lack statements
/// (`<origin> <seq>` per line), because the node started from a snapshot that held them.
pub const PARTIAL_FILE: &str = "replication.partial";

/// `<snapshot>.live`.
pub fn path_for(snapshot: &Path) -> PathBuf {
    let mut p = snapshot.as_os_str().to_owned();
    p.push(".live");
    PathBuf::from(p)
}

/// In `<snapshot>.live/`: the id of the snapshot it belongs to (hex), so a directory is never
/// taken for another snapshot's.
const ID_FILE: &str = "SNAPSHOT";

/// Writes `statements` as `<snapshot>.live/` (replacing any) for the snapshot whose id is
/// `snapshot_id`: a temporary directory, fsynced, then renamed.
pub fn write(snapshot: &Path, snapshot_id: u64, statements: &[Statement]) -> io::Result<()> {
    let dir = path_for(snapshot);
    let mut tmp = dir.as_os_str().to_owned();
    tmp.push(".tmp");
    let tmp = PathBuf::from(tmp);
    if tmp.exists() {
        fs::remove_dir_all(&tmp)?;
    }
    {
        let (mut j, _) = Journal::open(&tmp).map_err(io::Error::other)?;
        j.set_segment_bytes(u64::MAX);
        for chunk in statements.chunks(65_536) {
            j.append_batch(chunk).map_err(|e| io::Error::other(e.to_string()))?;
        }
        let id = tmp.join(ID_FILE);
        fs::write(&id, format!("{snapshot_id:016x}\n"))?;
        fs::File::open(&id)?.sync_all()?;
    }
    if dir.exists() {
        fs::remove_dir_all(&dir)?;
    }
    fs::rename(&tmp, &dir)?;
    if let Some(parent) = dir.parent().filter(|p| !p.as_os_str().is_empty()) {
        fs::File::open(parent)?.sync_all()?;
    }
    Ok(())
}

/// The live statements of snapshot `path` (id `snapshot_id`, watermarks `marks`): read from
/// `<snapshot>.live/`, which must name that snapshot. A snapshot without watermarks folded no
/// statement.
pub fn read_base(path: &Path, snapshot_id: u64, marks: &Watermarks) -> Result<Vec<Statement>, String> {
    let dir = path_for(path);
    if marks.is_empty() {
        return Ok(Vec::new());
    }
    if !dir.is_dir() {
        return Err(format!(
            "{}: not found; {} folded live statements (watermarks {marks}) and the next build needs them \
             (copy the directory with the snapshot; a snapshot built before `.live` existed cannot be a base: \
             build from the complete journal of the node that has run longest instead)",
            dir.display(),
            path.display()
        ));
    }
    let id_file = dir.join(ID_FILE);
    let named = fs::read_to_string(&id_file).map_err(|e| format!("{}: {e}", id_file.display()))?;
    if named.trim() != format!("{snapshot_id:016x}") {
        return Err(format!(
            "{}: belongs to snapshot {}, not to {} ({snapshot_id:016x}): rebuild it",
            dir.display(),
            named.trim(),
            path.display()
        ));
    }
    journal::read_dir(&dir).map_err(|e| format!("{}: {e}", dir.display()))
}

/// `base` and then the statements of `more` not already in it (by identity).
pub fn union(base: Vec<Statement>, more: Vec<Statement>) -> Vec<Statement> {
    let mut seen: HashSet<StatementId> = base.iter().map(|s| s.id.clone()).collect();
    let mut out = base;
    out.extend(more.into_iter().filter(|s| seen.insert(s.id.clone())));
    out
}

/// What of `all` (the statements a build folded) the next build still needs, in their order:
/// on each key — (subscriber, entity), or the subscriber alone for dnc — only the statement
/// that wins it ([`Statement::precedence`]: the builder keeps the latest per key, so a
/// superseded statement can never decide again, even when a journal brings it back by
/// identity), and per origin its highest seq, so the kept statements carry the same
/// watermarks as `all` (a later build's marks must not fall behind this one's: nodes skip
/// replication entries and the stream is trimmed by them). Without this, `<snapshot>.live/`
/// would grow by every statement ever taken (each repeated "TD" of one subscriber); with it,
/// by the keys touched.
pub fn compact(all: Vec<Statement>) -> Vec<Statement> {
    let mut winner: HashMap<(u64, Option<&str>), usize> = HashMap::with_capacity(all.len());
    let mut newest: HashMap<&NodeId, usize> = HashMap::new();
    for (i, st) in all.iter().enumerate() {
        let key = (st.msisdn, st.entity.as_ref().map(|e| e.as_str()));
        winner
            .entry(key)
            .and_modify(|w| {
                if st.precedence() > all[*w].precedence() {
                    *w = i;
                }
            })
            .or_insert(i);
        newest
            .entry(&st.id.origin)
            .and_modify(|w| {
                if st.id.seq > all[*w].id.seq {
                    *w = i;
                }
            })
            .or_insert(i);
    }
    let mut keep = vec![false; all.len()];
    for &i in winner.values().chain(newest.values()) {
        keep[i] = true;
    }
    all.into_iter().zip(keep).filter_map(|(st, k)| k.then_some(st)).collect()
}

/// The gaps a journal directory declares ([`PARTIAL_FILE`]); none when the file is absent.
pub fn read_partial(journal_dir: &Path) -> Result<Watermarks, String> {
    let file = journal_dir.join(PARTIAL_FILE);
    let text = match fs::read_to_string(&file) {
        Ok(t) => t,
        Err(e) if e.kind() == io::ErrorKind::NotFound => return Ok(Watermarks::new()),
        Err(e) => return Err(format!("{}: {e}", file.display())),
    };
    let mut w = Watermarks::new();
    for (i, line) in text.lines().enumerate() {
        let line = line.trim();
        if line.is_empty() || line.starts_with('#') {
            continue;
        }
        let parsed = line.split_once(' ').and_then(|(o, s)| Some((NodeId::parse(o).ok()?, s.trim().parse().ok()?)));
        let Some((origin, seq)) = parsed else {
            return Err(format!("{}:{}: expected `<origin> <seq>`, got `{line}`", file.display(), i + 1));
        };
        w.observe(&StatementId { origin, seq });
    }
    Ok(w)
}

/// Records in `journal_dir` that the journal may lack statements through `gaps` (merged with
/// what the file already says; written to a temporary file, fsynced, renamed).
pub fn note_partial(journal_dir: &Path, gaps: &Watermarks) -> Result<(), String> {
    let mut all = read_partial(journal_dir)?;
    let before = all.clone();
    for (origin, seq) in gaps.iter() {
        all.observe(&StatementId { origin: origin.clone(), seq });
    }
    if all == before {
        return Ok(());
    }
    let mut text = String::from(
        "# This journal lacks statements of these origins up to these seqs: the node started from a snapshot\n\
         # that held them. `snapshot build --journal` of this directory needs `--base` with a snapshot that\n\
         # holds them too (the newest built).\n",
    );
    for (origin, seq) in all.iter() {
        text.push_str(&format!("{origin} {seq}\n"));
    }
    let file = journal_dir.join(PARTIAL_FILE);
    let tmp = journal_dir.join(format!("{PARTIAL_FILE}.tmp"));
    let write = || -> io::Result<()> {
        fs::write(&tmp, &text)?;
        fs::File::open(&tmp)?.sync_all()?;
        fs::rename(&tmp, &file)?;
        fs::File::open(journal_dir)?.sync_all()
    };
    write().map_err(|e| format!("{}: {e}", file.display()))
}

/// The origins whose gap in a journal `base` does not cover: `(origin, gap through, base's mark)`.
pub fn uncovered(gaps: &Watermarks, base: &Watermarks) -> Vec<(NodeId, u64, u64)> {
    gaps.iter().filter(|(o, s)| base.get(o) < *s).map(|(o, s)| (o.clone(), s, base.get(o))).collect()
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::consent::statement::{EntityName, NewStatement, StatementKind, StatementSource};

    fn st(origin: &str, seq: u64) -> Statement {
        on(8613800000000 + seq, Some("acme"), StatementKind::Revoke, 1_700_000_000_000 + seq as i64, origin, seq)
    }

    fn on(msisdn: u64, entity: Option<&str>, kind: StatementKind, at: i64, origin: &str, seq: u64) -> Statement {
        NewStatement {
            kind,
            source: StatementSource::Mo,
            msisdn,
            entity: entity.map(|e| EntityName::parse(e).unwrap()),
            at,
        }
        .with_id(StatementId { origin: NodeId::parse(origin).unwrap(), seq })
    }

    #[test]
    fn compaction_keeps_each_keys_winner_and_each_origins_newest() {
        use StatementKind::{Dnc, Grant, Revoke};
        let all = vec![
            on(1, Some("acme"), Grant, 100, "a", 1),
            on(1, Some("acme"), Revoke, 200, "a", 2), // wins (1, acme)
            on(1, Some("acme"), Grant, 200, "b", 1),  // same instant: the revoke wins
            on(1, Some("beta"), Grant, 150, "b", 2),  // wins (1, beta)
            on(1, None, Dnc, 50, "a", 3),
            on(1, None, Dnc, 60, "b", 3),             // wins (1, dnc)
            on(2, Some("acme"), Revoke, 300, "a", 4), // wins (2, acme)
            on(2, Some("acme"), Grant, 10, "a", 5),   // superseded, but a's newest: kept
        ];
        let kept = compact(all.clone());
        let seqs: Vec<(&str, u64)> = kept.iter().map(|s| (s.id.origin.as_str(), s.id.seq)).collect();
        assert_eq!(seqs, [("a", 2), ("b", 2), ("b", 3), ("a", 4), ("a", 5)]);
        assert_eq!(Watermarks::of(&kept), Watermarks::of(&all));
    }

    #[test]
    fn compaction_changes_no_keys_winner_nor_the_marks() {
        // Pseudo-random statements over few keys (many superseded), origins and instants.
        let mut x: u64 = 0x9e37_79b9_7f4a_7c15;
        let mut next = |n: u64| {
            x ^= x << 13;
            x ^= x >> 7;
            x ^= x << 17;
            x % n
        };
        let mut seqs = [0u64; 3];
        let all: Vec<Statement> = (0..5_000)
            .map(|_| {
                let o = next(3) as usize;
                seqs[o] += 1;
                let kind = [StatementKind::Grant, StatementKind::Revoke, StatementKind::Dnc][next(3) as usize];
                let entity = kind.has_entity().then(|| ["acme", "beta"][next(2) as usize]);
                on(next(50), entity, kind, next(400) as i64, ["a", "b", "c"][o], seqs[o])
            })
            .collect();
        let kept = compact(all.clone());
        assert!(kept.len() < all.len() / 10, "{} of {}", kept.len(), all.len());
        let winners = |sts: &[Statement]| {
            let mut w: HashMap<(u64, Option<String>), Statement> = HashMap::new();
            for s in sts {
                let key = (s.msisdn, s.entity.as_ref().map(|e| e.as_str().to_owned()));
                match w.get(&key) {
                    Some(cur) if cur.precedence() >= s.precedence() => {}
                    _ => {
                        w.insert(key, s.clone());
                    }
                }
            }
            w
        };
        assert_eq!(winners(&kept), winners(&all));
        assert_eq!(Watermarks::of(&kept), Watermarks::of(&all));
        // Compacting again, or with the same statements brought back by a journal, keeps it.
        assert_eq!(compact(kept.clone()), kept);
        assert_eq!(winners(&compact(union(kept.clone(), all.clone()))), winners(&all));
    }

    #[test]
    fn written_read_back_and_checked_against_the_snapshots_marks() {
        let dir = tempfile::tempdir().unwrap();
        let snap = dir.path().join("day1.snap");
        let sts = vec![st("a", 1), st("b", 7), st("a", 2)];
        write(&snap, 0xabc, &sts).unwrap();
        let marks = Watermarks::of(&sts);
        assert_eq!(read_base(&snap, 0xabc, &marks).unwrap(), sts);
        // Rewritten in place by a rebuild to the same path: another snapshot's.
        write(&snap, 0xdef, &sts[..2]).unwrap();
        let err = read_base(&snap, 0xabc, &marks).unwrap_err();
        assert!(err.contains("belongs to snapshot 0000000000000def"), "{err}");
        // A snapshot without marks needs no directory; one with marks does.
        assert!(read_base(&dir.path().join("none.snap"), 1, &Watermarks::new()).unwrap().is_empty());
        let err = read_base(&dir.path().join("none.snap"), 1, &marks).unwrap_err();
        assert!(err.contains("none.snap.live: not found"), "{err}");
    }

    #[test]
    fn union_keeps_each_statement_once() {
        let u = union(vec![st("a", 1), st("a", 2)], vec![st("a", 2), st("b", 1), st("a", 3)]);
        let ids: Vec<(String, u64)> = u.iter().map(|s| (s.id.origin.to_string(), s.id.seq)).collect();
        assert_eq!(ids, [("a".into(), 1), ("a".into(), 2), ("b".into(), 1), ("a".into(), 3)]);
    }

    #[test]
    fn partial_file_merges_and_refuses_bad_lines() {
        let dir = tempfile::tempdir().unwrap();
        assert!(read_partial(dir.path()).unwrap().is_empty());
        note_partial(dir.path(), &Watermarks::of(&[st("a", 5)])).unwrap();
        note_partial(dir.path(), &Watermarks::of(&[st("a", 3), st("b", 2)])).unwrap();
        let w = read_partial(dir.path()).unwrap();
        assert_eq!((w.get(&NodeId::parse("a").unwrap()), w.get(&NodeId::parse("b").unwrap())), (5, 2));
        let mut base = Watermarks::new();
        base.insert(NodeId::parse("a").unwrap(), 5);
        assert_eq!(uncovered(&w, &base), vec![(NodeId::parse("b").unwrap(), 2, 0)]);
        std::fs::write(dir.path().join(PARTIAL_FILE), "a 5\nb two\n").unwrap();
        let err = read_partial(dir.path()).unwrap_err();
        assert!(err.contains("replication.partial:2: expected `<origin> <seq>`"), "{err}");
    }
}
