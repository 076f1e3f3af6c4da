//! A synthetic DLT registry for benchmarks (`consentgate dlt synth`, `benches/dlt.rs`): the five
//! CSV exports at a chosen scale, reproducible from a seed.
//!
//! Shape (defaults at 10 M templates, after the national figures of 2021: 2.9 lakh entities,
//! 7.7 lakh headers, 94 lakh templates): entity 0 has 50 headers and
//! [`SynthOptions::big_pe_templates`] templates (100 k), entities 1–4 have 20 k templates
//! each, every other template belongs to a random entity with 3–4 headers of its own. Texts
//! are built from a bank of openers ("Dear Customer, ", "Dear {#var#}, ", Hindi "प्रिय
//! ग्राहक, " …), 3–7 phrases of generated words and a brand sign-off, with 1–4 placeholders:
//! so the big entities' templates share openers and sign-offs, as real banks' do. 5 % are in
//! Hindi. 97 % of entities, 95 % of headers and templates are active.

use std::fs::File;
use std::io::{self, BufWriter, Write};
use std::path::{Path, PathBuf};

use super::template::VAR;

/// What to generate.
#[derive(Debug, Clone)]
pub struct SynthOptions {
    pub dir: PathBuf,
    pub entities: u64,
    pub headers: u64,
    pub templates: u64,
    /// Templates of entity 0 (the biggest PE).
    pub big_pe_templates: u64,
    pub preferences: u64,
    pub seed: u64,
}

impl Default for SynthOptions {
    fn default() -> Self {
        SynthOptions {
            dir: ".".into(),
            entities: 300_000,
            headers: 1_000_000,
            templates: 10_000_000,
            big_pe_templates: 100_000,
            preferences: 1_000_000,
            seed: 1,
        }
    }
}

/// The paths written: entities, headers, templates, chains, preferences.
#[derive(Debug, Clone)]
pub struct SynthFiles {
    pub entities: PathBuf,
    pub headers: PathBuf,
    pub templates: PathBuf,
    pub chains: PathBuf,
    pub preferences: PathBuf,
}

impl SynthFiles {
    /// `dlt build` of these five files into `out`, the other options at their defaults.
    pub fn build_options(&self, out: PathBuf) -> super::BuildOptions {
        super::BuildOptions {
            entities: self.entities.clone(),
            headers: self.headers.clone(),
            templates: self.templates.clone(),
            chains: Some(self.chains.clone()),
            preferences: Some(self.preferences.clone()),
            out,
            ..super::BuildOptions::default()
        }
    }
}

/// splitmix64.
pub fn splitmix(seed: &mut u64) -> u64 {
    *seed = seed.wrapping_add(0x9E37_79B9_7F4A_7C15);
    let mut z = *seed;
    z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
    z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
    z ^ (z >> 31)
}

/// PE id of entity `p`.
pub fn pe_id(p: u64) -> u64 {
    1_101_000_000_000_000_000 + p
}

/// Template id of template `i`.
pub fn template_id(i: u64) -> u64 {
    1_107_000_000_000_000_000 + i
}

/// Telemarketer ids are drawn from 5 000.
pub fn tm_id(k: u64) -> u64 {
    1_302_000_000_000_000_000 + k % 5000
}

/// Headers of entity 0.
const BIG_HEADERS: u64 = 50;
/// Entities 1..=4 have this many templates each.
const LARGE_PE_TEMPLATES: u64 = 20_000;

/// Header `i`'s name: 6 capital letters, distinct for every i < 26^6.
pub fn header_name(i: u64) -> String {
    let mut x = (i.wrapping_mul(7919) + 12_345) % 308_915_776;
    let mut s = [b'A'; 6];
    for c in s.iter_mut().rev() {
        *c = b'A' + (x % 26) as u8;
        x /= 26;
    }
    String::from_utf8_lossy(&s).into_owned()
}

/// The entity that owns header `i`, and the headers of entity `p` (first, count, stride).
fn header_owner(i: u64, o: &SynthOptions) -> u64 {
    if i < BIG_HEADERS {
        0
    } else {
        1 + (i - BIG_HEADERS) % owners(o)
    }
}

/// Entities 1..=owners() own the headers after the first 50.
fn owners(o: &SynthOptions) -> u64 {
    (o.entities - 1).min(o.headers - BIG_HEADERS).max(1)
}

fn headers_of(p: u64, o: &SynthOptions) -> (u64, u64, u64) {
    if p == 0 {
        return (0, BIG_HEADERS.min(o.headers), 1);
    }
    let first = BIG_HEADERS + p - 1;
    let stride = owners(o);
    let count = if first >= o.headers { 0 } else { (o.headers - 1 - first) / stride + 1 };
    (first, count, stride)
}

const OPENERS: [&str; 8] = [
    "Dear Customer, ",
    "Dear {#var#}, ",
    "Hi {#var#}, ",
    "Alert: ",
    "Your ",
    "",
    "Dear Customer, your A/c XX{#var#} ",
    "Greetings from ",
];
const HINDI_OPENERS: [&str; 2] = ["प्रिय ग्राहक, ", "प्रिय {#var#}, "];
const SYLLABLES: [&str; 24] = [
    "ka", "ro", "mi", "ten", "sa", "lu", "pre", "dor", "vi", "na", "ex", "tra", "bal", "cre", "dit", "pay", "ment",
    "or", "der", "ship", "ped", "ac", "count", "lo",
];
const HINDI_WORDS: [&str; 16] = [
    "आपका",
    "खाता",
    "राशि",
    "जमा",
    "किया",
    "गया",
    "है",
    "भुगतान",
    "सफल",
    "रहा",
    "धन्यवाद",
    "ऑर्डर",
    "भेजा",
    "कोड",
    "बैंक",
    "सेवा",
];

/// One word of the generated vocabulary (about 24^3 of them).
fn word(r: u64, out: &mut String) {
    let n = 1 + r % 3;
    for k in 0..n {
        out.push_str(SYLLABLES[((r >> (8 + 5 * k)) % 24) as usize]);
    }
}

/// The content of template `i` (of entity `p`).
pub fn template_text(i: u64, p: u64, seed: u64) -> String {
    let mut s = seed ^ i.wrapping_mul(0x2545_F491_4F6C_DD1D);
    let r = splitmix(&mut s);
    let hindi = r % 100 < 5;
    let mut vars_left = 1 + (r >> 8) % 4;
    let mut t = String::with_capacity(160);
    let opener = if hindi { HINDI_OPENERS[((r >> 12) % 2) as usize] } else { OPENERS[((r >> 12) % 8) as usize] };
    t.push_str(opener);
    vars_left -= opener.matches(VAR).count().min(vars_left as usize - 1) as u64;
    let phrases = 3 + (r >> 20) % 5;
    for ph in 0..phrases {
        let words = 2 + splitmix(&mut s) % 5;
        for w in 0..words {
            let x = splitmix(&mut s);
            if hindi {
                t.push_str(HINDI_WORDS[(x % 16) as usize]);
            } else {
                word(x, &mut t);
            }
            if w + 1 < words {
                t.push(' ');
            }
        }
        // Placeholders between phrases, the last one possibly at the very end.
        if vars_left > 1 && ph + 1 < phrases && splitmix(&mut s) % 2 == 0 {
            t.push_str(" Rs ");
            t.push_str(VAR);
            vars_left -= 1;
        }
        t.push_str(if ph + 1 < phrases { ", " } else { "." });
    }
    match (vars_left, (r >> 28) % 3) {
        (0, _) => {}
        (1, 0) => {
            t.push_str(" Code ");
            t.push_str(VAR);
        }
        _ => {
            while vars_left > 0 {
                t.push_str(" Ref ");
                t.push_str(VAR);
                vars_left -= 1;
            }
        }
    }
    if !t.ends_with(VAR) {
        t.push_str(&format!(" - BRAND{p}"));
    }
    t
}

/// A text that matches `content`: each placeholder filled with 0–30 characters (digits,
/// letters, Devanagari for a Hindi content; now and then exactly 30).
pub fn fill(content: &str, seed: &mut u64) -> String {
    let hindi = content.contains('ि') || content.contains('ा');
    let mut out = String::with_capacity(content.len() + 32);
    let mut parts = content.split(VAR);
    out.push_str(parts.next().unwrap_or(""));
    for part in parts {
        let r = splitmix(seed);
        let len = if r % 10 == 0 { 30 } else { (r >> 8) % 13 };
        for k in 0..len {
            let x = (r >> (16 + k % 40)) ^ k.wrapping_mul(0x9E37);
            if hindi && k % 2 == 1 {
                out.push(char::from_u32(0x0915 + (x % 30) as u32).unwrap_or('क'));
            } else {
                out.push((b'0' + (x % 10) as u8) as char);
            }
        }
        out.push_str(part);
    }
    out
}

fn csv_field(out: &mut Vec<u8>, s: &str) {
    if s.contains([',', '"', '\n', '\r']) {
        out.push(b'"');
        out.extend_from_slice(s.replace('"', "\"\"").as_bytes());
        out.push(b'"');
    } else {
        out.extend_from_slice(s.as_bytes());
    }
}

/// Writes the five CSVs into `o.dir`; `progress(templates written)` every 1 M templates.
pub fn write(o: &SynthOptions, mut progress: impl FnMut(u64)) -> io::Result<SynthFiles> {
    if o.entities < 6 || o.headers <= BIG_HEADERS + 4 {
        return Err(io::Error::other("synthetic registry: at least 6 entities and 55 headers"));
    }
    std::fs::create_dir_all(&o.dir)?;
    let path = |n: &str| o.dir.join(n);
    let files = SynthFiles {
        entities: path("entities.csv"),
        headers: path("headers.csv"),
        templates: path("templates.csv"),
        chains: path("chains.csv"),
        preferences: path("preferences.csv"),
    };
    let open = |p: &Path| File::create(p).map(|f| BufWriter::with_capacity(4 << 20, f));
    let mut seed = o.seed;
    let status = |r: u64, active_pct: u64| match r % 100 {
        x if x < active_pct => "active",
        x if x < active_pct + (100 - active_pct) * 2 / 3 => "inactive",
        _ => "blacklisted",
    };

    let mut w = open(&files.entities)?;
    w.write_all(b"pe_id,name,status\n")?;
    for p in 0..o.entities {
        let st = if p < 5 { "active" } else { status(splitmix(&mut seed), 97) };
        writeln!(w, "{},Brand {p} Pvt Ltd,{st}", pe_id(p))?;
    }
    w.flush()?;

    let mut w = open(&files.headers)?;
    w.write_all(b"header,pe_id,type,status\n")?;
    for i in 0..o.headers {
        let r = splitmix(&mut seed);
        let kind = ["T", "S", "P", "G"][[0, 0, 1, 1, 1, 2, 2, 2, 2, 3][(r % 10) as usize]];
        let st = if i < BIG_HEADERS { "active" } else { status(r >> 8, 95) };
        writeln!(w, "{},{},{kind},{st}", header_name(i), pe_id(header_owner(i, o)))?;
    }
    w.flush()?;

    let mut w = open(&files.templates)?;
    w.write_all(b"template_id,pe_id,headers,category,content_category,content,status\n")?;
    let mut line = Vec::with_capacity(512);
    let large_end = o.big_pe_templates + 4 * LARGE_PE_TEMPLATES;
    for i in 0..o.templates {
        let r = splitmix(&mut seed);
        let p = if i < o.big_pe_templates {
            0
        } else if i < large_end {
            1 + (i - o.big_pe_templates) / LARGE_PE_TEMPLATES
        } else {
            1 + (r >> 16) % owners(o)
        };
        let (first, count, stride) = headers_of(p, o);
        line.clear();
        line.extend_from_slice(format!("{},{},", template_id(i), pe_id(p)).as_bytes());
        let nh = if r % 100 < 85 { 1 } else { 2.min(count) };
        let h0 = (r >> 8) % count;
        for k in 0..nh {
            if k > 0 {
                line.push(b';');
            }
            line.extend_from_slice(header_name(first + ((h0 + k) % count) * stride).as_bytes());
        }
        line.push(b',');
        let (cat, cc) = match (r >> 24) % 20 {
            0..=4 => ("transactional", 0),
            5..=11 => ("service_implicit", 0),
            12..=13 => ("service_explicit", 1 + (r >> 32) % 8),
            _ => ("promotional", 1 + (r >> 32) % 8),
        };
        line.extend_from_slice(cat.as_bytes());
        line.push(b',');
        if cc > 0 {
            line.extend_from_slice(cc.to_string().as_bytes());
        }
        line.push(b',');
        csv_field(&mut line, &template_text(i, p, o.seed));
        line.push(b',');
        line.extend_from_slice(status(r >> 40, 95).as_bytes());
        line.push(b'\n');
        w.write_all(&line)?;
        if (i + 1) % 1_000_000 == 0 {
            progress(i + 1);
        }
    }
    w.flush()?;

    let mut w = open(&files.chains)?;
    w.write_all(b"pe_id,tm_id\n")?;
    for p in 0..o.entities {
        let r = splitmix(&mut seed);
        for k in 0..1 + r % 3 {
            writeln!(w, "{},{}", pe_id(p), tm_id((r >> 8).wrapping_add(k * 977)))?;
        }
    }
    w.flush()?;

    let mut w = open(&files.preferences)?;
    w.write_all(b"msisdn,categories,registered_at\n")?;
    for _ in 0..o.preferences {
        let r = splitmix(&mut seed);
        let m = 6_000_000_000 + (r >> 4) % 4_000_000_000;
        let cats = if r % 10 == 0 {
            "all".to_owned()
        } else {
            let n = 1 + (r >> 40) % 3;
            (0..n).map(|k| (1 + ((r >> (44 + 3 * k)) % 8)).to_string()).collect::<Vec<_>>().join(";")
        };
        writeln!(w, "91{m},{cats},2024-{:02}-{:02}", 1 + (r >> 50) % 12, 1 + (r >> 56) % 28)?;
    }
    w.flush()?;
    Ok(files)
}
