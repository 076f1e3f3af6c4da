//! A template's content: checking it at build time, its match anchors, and matching one text
//! against one template (literal runs exact, each `{#var#}` 0–30 characters).

use xxhash_rust::xxh3::xxh3_64;

use super::TextFail;

/// The placeholder, case-sensitive (TRAI: `{#var#}`; `{#VAR#}` is refused at build time).
pub const VAR: &str = "{#var#}";
/// Characters one placeholder may stand for (Unicode scalar values, not bytes: a Devanagari
/// value of 30 characters is 30, whatever its UTF-8 or UCS-2 length).
pub const MAX_VAR_CHARS: usize = 30;
/// Longest template content accepted, in bytes of UTF-8.
pub const MAX_CONTENT_BYTES: usize = 4096;
/// Most placeholders in one template (the record keeps the count in a byte).
pub const MAX_VARS: usize = 255;

/// Prefix anchor lengths (bytes of the template's first literal run): a template is indexed
/// under the longest one its first run covers.
pub(crate) const PREFIX_RUNGS: [usize; 7] = [0, 4, 8, 16, 32, 64, 128];
/// Suffix anchor lengths (bytes of the last literal run, 0 when the content ends with a
/// placeholder).
pub(crate) const SUFFIX_RUNGS: [usize; 6] = [0, 4, 8, 16, 32, 64];

/// What the builder keeps of a valid content.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct Shape {
    /// Placeholders.
    pub(crate) vars: u8,
    /// Bytes of literal text (the content without its placeholders).
    pub(crate) literal_bytes: u16,
    /// Indexes into [`PREFIX_RUNGS`] and [`SUFFIX_RUNGS`].
    pub(crate) prefix_rung: u8,
    pub(crate) suffix_rung: u8,
}

/// Checks a content field (already UTF-8 and trimmed) and returns its shape.
pub(crate) fn check_content(content: &str) -> Result<Shape, String> {
    if content.is_empty() {
        return Err("empty".into());
    }
    if content.len() > MAX_CONTENT_BYTES {
        return Err(format!("{} bytes, more than {MAX_CONTENT_BYTES}", content.len()));
    }
    if let Some(c) = content.chars().find(|&c| c.is_control() && c != '\n' && c != '\r' && c != '\t') {
        return Err(format!("contains the control character U+{:04X}", c as u32));
    }
    // Anything that looks like a placeholder but is not exactly `{#var#}`.
    let mut rest = content;
    while let Some(i) = rest.find("{#") {
        let tail = &rest[i..];
        if let Some(after) = tail.strip_prefix(VAR) {
            rest = after;
            continue;
        }
        let shown: String = tail.chars().take(9).collect();
        return Err(format!("`{shown}…` is not a placeholder: write `{VAR}` exactly (lower case)"));
    }
    let vars = content.matches(VAR).count();
    if vars > MAX_VARS {
        return Err(format!("{vars} placeholders, more than {MAX_VARS}"));
    }
    let literal_bytes = content.len() - vars * VAR.len();
    if literal_bytes == 0 {
        return Err("no fixed text, only placeholders".into());
    }
    let first = content.split(VAR).next().unwrap_or("");
    let last = content.rsplit(VAR).next().unwrap_or("");
    Ok(Shape {
        vars: vars as u8,
        literal_bytes: literal_bytes as u16,
        prefix_rung: rung(&PREFIX_RUNGS, first.len()),
        suffix_rung: rung(&SUFFIX_RUNGS, last.len()),
    })
}

/// The longest rung not longer than `len`.
fn rung(rungs: &[usize], len: usize) -> u8 {
    rungs.iter().rposition(|&r| r <= len).unwrap_or(0) as u8
}

/// The splitmix64 finaliser: a bijection on u64, so ids hashed with it never collide.
#[inline]
pub(crate) fn mix(x: u64) -> u64 {
    let mut z = x;
    z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
    z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
    z ^ (z >> 31)
}

/// The key of a (PE, header) group: its prefix/suffix rung masks live under it.
#[inline]
pub(crate) fn group_key(pe: u64, header: u32) -> u64 {
    mix(pe ^ mix(u64::from(header) | 1 << 40))
}

/// The anchor key: (PE, header, the first `prefix.len()` and last `suffix.len()` bytes).
#[inline]
pub(crate) fn anchor_key(pe: u64, header: u32, prefix: &[u8], suffix: &[u8]) -> u64 {
    let mut buf = [0u8; 14 + 128 + 64];
    buf[..8].copy_from_slice(&pe.to_le_bytes());
    buf[8..12].copy_from_slice(&header.to_le_bytes());
    buf[12] = prefix.len() as u8;
    buf[13] = suffix.len() as u8;
    let p = 14 + prefix.len();
    buf[14..p].copy_from_slice(prefix);
    buf[p..p + suffix.len()].copy_from_slice(suffix);
    xxh3_64(&buf[..p + suffix.len()])
}

/// The anchor of a template for one of its headers.
pub(crate) fn template_anchor(pe: u64, header: u32, content: &str, shape: Shape) -> u64 {
    let first = content.split(VAR).next().unwrap_or("").as_bytes();
    let last = content.rsplit(VAR).next().unwrap_or("").as_bytes();
    let (p, s) = (PREFIX_RUNGS[shape.prefix_rung as usize], SUFFIX_RUNGS[shape.suffix_rung as usize]);
    anchor_key(pe, header, &first[..p], &last[last.len() - s..])
}

// ---------------------------------------------------------------------------------------------
// The candidate filter of an anchor entry
// ---------------------------------------------------------------------------------------------

/// Set in an anchor entry's value when its upper bits carry a gram filter ([`gram_filter`]);
/// registries built before the filter have none, and every candidate is then matched.
pub(crate) const FILTER_FLAG: u64 = 1 << 63;
/// Bits of a text's gram set ([`TextGrams`]).
const GRAM_BITS: u32 = 1024;

/// The set bit of one 4-byte gram in a 1 024-bit set.
#[inline]
fn gram_bit(g: &[u8]) -> u32 {
    u32::from_le_bytes([g[0], g[1], g[2], g[3]]).wrapping_mul(0x9E37_79B1) >> (32 - GRAM_BITS.trailing_zeros())
}

/// The filter an anchor entry carries above the record number: two 4-byte grams of the
/// content's literal text (as bits of [`TextGrams`]) that any matching text must contain,
/// taken where templates sharing an anchor differ: from the longest of the longest literal
/// run between two placeholders, the part of the first run past the anchor's prefix and the
/// part of the last run before its suffix (on a tie the last of these), at a third and two
/// thirds of it. `None` when that run is shorter than 4 bytes.
pub(crate) fn gram_filter(content: &str, shape: Shape) -> Option<u64> {
    let runs: Vec<&[u8]> = content.split(VAR).map(str::as_bytes).collect();
    let (p, s) = (PREFIX_RUNGS[shape.prefix_rung as usize], SUFFIX_RUNGS[shape.suffix_rung as usize]);
    let n = runs.len();
    let middle = runs.iter().skip(1).take(n.saturating_sub(2)).copied().max_by_key(|r| r.len()).unwrap_or(&[]);
    // The first run past the anchor's prefix, the last before its suffix (when there are two).
    let first_rest = &runs[0][p.min(runs[0].len())..];
    let last_rest =
        if n > 1 { &runs[n - 1][..runs[n - 1].len() - s] } else { &runs[0][..runs[0].len() - s.min(runs[0].len())] };
    let run = [middle, first_rest, last_rest].into_iter().max_by_key(|r| r.len()).unwrap_or(&[]);
    if run.len() < 4 {
        return None;
    }
    let (a, b) = ((run.len() / 3).min(run.len() - 4), (2 * run.len() / 3).min(run.len() - 4));
    let (g1, g2) = (gram_bit(&run[a..a + 4]), gram_bit(&run[b..b + 4]));
    Some(FILTER_FLAG | u64::from(g1) << 32 | u64::from(g2) << 42)
}

/// The 4-byte grams of a text, as a 1 024-bit set: built once per text, when an anchor's
/// bucket is big enough for the filter to pay ([`TextGrams::admits`]).
pub(crate) struct TextGrams([u64; (GRAM_BITS / 64) as usize]);

impl TextGrams {
    pub(crate) fn of(text: &[u8]) -> TextGrams {
        let mut set = [0u64; (GRAM_BITS / 64) as usize];
        for g in text.windows(4) {
            let b = gram_bit(g);
            set[(b / 64) as usize] |= 1 << (b % 64);
        }
        TextGrams(set)
    }

    /// Whether a template whose anchor entry has `value` may match this text: no filter, or
    /// both of its grams in the text.
    #[inline]
    pub(crate) fn admits(&self, value: u64) -> bool {
        if value & FILTER_FLAG == 0 {
            return true;
        }
        let has = |b: u64| self.0[(b / 64) as usize] & (1 << (b % 64)) != 0;
        has((value >> 32) & 0x3FF) && has((value >> 42) & 0x3FF)
    }
}

// ---------------------------------------------------------------------------------------------
// Matching one template
// ---------------------------------------------------------------------------------------------

/// Positions in the text (byte offsets just after a literal run) a match may have reached:
/// inline up to 32, on the heap beyond (only pathological contents get there).
struct Positions {
    inline: [u32; 32],
    n: usize,
    heap: Vec<u32>,
}

impl Positions {
    fn new() -> Positions {
        Positions { inline: [0; 32], n: 0, heap: Vec::new() }
    }

    fn clear(&mut self) {
        self.n = 0;
        self.heap.clear();
    }

    fn iter(&self) -> impl Iterator<Item = usize> + '_ {
        self.inline[..self.n].iter().chain(&self.heap).map(|&p| p as usize)
    }

    fn insert(&mut self, p: usize) {
        let p = p as u32;
        if self.inline[..self.n].contains(&p) || self.heap.contains(&p) {
            return;
        }
        if self.n < self.inline.len() {
            self.inline[self.n] = p;
            self.n += 1;
        } else {
            self.heap.push(p);
        }
    }

    fn is_empty(&self) -> bool {
        self.n == 0
    }

    fn min(&self) -> usize {
        self.iter().min().unwrap_or(0)
    }

    fn max(&self) -> usize {
        self.iter().max().unwrap_or(0)
    }
}

fn chars(s: &str) -> usize {
    s.chars().count()
}

/// The byte offset `n` characters after `from` (or the end).
fn advance(text: &str, from: usize, n: usize) -> usize {
    text[from..].char_indices().nth(n).map_or(text.len(), |(i, _)| from + i)
}

/// `content.split(VAR)` without `str::split`'s per-call searcher setup (every match on the
/// message path splits its template): the runs between placeholders, found by a SIMD search
/// for the `{` each one starts with. On the synthetic templates (2–4 placeholders, ~180 bytes)
/// it splits one in ~54 ns against ~155 ns for `str::split`.
struct VarSplit<'a>(Option<&'a str>);

/// [`VarSplit`] over `content` (tests compare it with `str::split`).
#[cfg(test)]
pub(crate) fn var_split(content: &str) -> impl Iterator<Item = &str> {
    VarSplit(Some(content))
}

impl<'a> Iterator for VarSplit<'a> {
    type Item = &'a str;

    #[inline]
    fn next(&mut self) -> Option<&'a str> {
        let rest = self.0?;
        let b = rest.as_bytes();
        for at in memchr::memchr_iter(b'{', b) {
            if b[at..].starts_with(VAR.as_bytes()) {
                self.0 = Some(&rest[at + VAR.len()..]);
                return Some(&rest[..at]);
            }
        }
        self.0 = None;
        Some(rest)
    }
}

/// Matches `text` against `content`: the literal runs exactly (bytes), each run of k adjacent
/// placeholders by 0 to 30·k characters. A forward pass over the runs keeps every position
/// the text may have reached (a run can occur more than once inside a placeholder's window),
/// so the answer never depends on a greedy choice. No allocation unless more than 32
/// positions are alive at once.
///
/// On failure: the run that could not be placed (`part`, 0 = the text before the first
/// placeholder) and the character where it was expected, or the placeholder whose value
/// would be longer than allowed, with its length in characters. `progress` is how far into
/// the text the match got, in bytes (to tell the closest of several templates).
pub(crate) fn match_content(content: &str, text: &str) -> Result<(), (TextFail, usize)> {
    let mut runs = VarSplit(Some(content)).peekable();
    let first = runs.next().unwrap_or("");
    if runs.peek().is_none() {
        // No placeholder: the whole text.
        if text == first {
            return Ok(());
        }
        let same = common_prefix(first, text);
        return Err((TextFail::Literal { part: 0, at: chars(&text[..same]) as u32 }, same));
    }
    if !text.starts_with(first) {
        let same = common_prefix(first, text);
        return Err((TextFail::Literal { part: 0, at: chars(&text[..same]) as u32 }, same));
    }
    let mut pos = Positions::new();
    let mut next = Positions::new();
    pos.insert(first.len());
    let (mut part, mut var, mut gap) = (0u16, 0u16, 0usize);
    while let Some(run) = runs.next() {
        var += 1;
        gap += MAX_VAR_CHARS;
        part += 1;
        let last = runs.peek().is_none();
        if run.is_empty() && !last {
            // Adjacent placeholders: one value of up to 30 characters each.
            continue;
        }
        if last {
            // The text must end with the run, after at most `gap` characters.
            if !text.ends_with(run) {
                let at = pos.max().max(text.len().saturating_sub(run.len()));
                let at = floor_char(text, at);
                return Err((TextFail::Literal { part, at: chars(&text[..at]) as u32 }, pos.max()));
            }
            let end = text.len() - run.len();
            let mut best: Option<usize> = None;
            for p in pos.iter().filter(|&p| p <= end) {
                let n = chars(&text[p..end]);
                if n <= gap {
                    return Ok(());
                }
                best = Some(best.map_or(n, |b| b.min(n)));
            }
            return Err(match best {
                // Every run found, the text's end included: as far as a text that fails can get.
                Some(n) => (TextFail::VariableTooLong { var, chars: n as u32 }, text.len()),
                None => (TextFail::Literal { part, at: chars(&text[..floor_char(text, end)]) as u32 }, pos.max()),
            });
        }
        // A run between placeholders: every place it starts within `gap` characters.
        next.clear();
        for p in pos.iter() {
            let mut q = p;
            for _ in 0..=gap {
                if text.as_bytes()[q..].starts_with(run.as_bytes()) {
                    next.insert(q + run.len());
                }
                if q >= text.len() {
                    break;
                }
                q = advance(text, q, 1);
            }
        }
        if next.is_empty() {
            let from = pos.min();
            // A run found further on than its placeholder allows got further into the text
            // than one not found at all (so it names the closest template).
            return Err(match text[from..].find(run) {
                Some(i) => (
                    TextFail::VariableTooLong { var, chars: chars(&text[from..from + i]) as u32 },
                    from + i + run.len(),
                ),
                None => (TextFail::Literal { part, at: chars(&text[..from]) as u32 }, from),
            });
        }
        std::mem::swap(&mut pos, &mut next);
        gap = 0;
    }
    unreachable!("the last run returns")
}

fn common_prefix(a: &str, b: &str) -> usize {
    let n = a.bytes().zip(b.bytes()).take_while(|(x, y)| x == y).count();
    floor_char(b, n)
}

fn floor_char(s: &str, mut i: usize) -> usize {
    i = i.min(s.len());
    while !s.is_char_boundary(i) {
        i -= 1;
    }
    i
}
