//! ESME load generator: `consentgate load` (DESIGN §4).
//!
//! ```text
//!  run(cfg) ─┬─ session 0: connect → bind → [fill window → write → read → process]* → drain
//!            ├─ session 1:   …                                        → receipts → unbind
//!            └─ …            (one task per session; shared atomics for the count budget and
//!                             the global receipt/accept tallies) ──► merged Report
//! ```
//!
//! Hot-path choices (the tool must never be the bottleneck; target ≥ 1 M submit_sm/s):
//! * every submit_sm frame is built once ([`Templates`]); a send is a memcpy into the output
//!   buffer plus [`set_sequence`] (plus one byte for the concatenation reference);
//! * one task per session alternates *fill window → one write → read what is there →
//!   process*; reads and writes are `try_*` calls on the socket, awaiting readiness only when
//!   the kernel says "would block", so a batch costs one write syscall and usually one read;
//! * send timestamps live in a ring indexed by `seq & mask`; the clock is read once per write
//!   batch and once per read batch, never per PDU;
//! * counters are per session (plain integers) and merged at the end; the only cross-session
//!   traffic is one atomic claim per batch against the `count` budget.
//!
//! Replay (`--pcap`, [`pcap`]): the recorded requests become the templates, one list per
//! session (a recorded stream stays on one session, in order), each sent once with only the
//! sequence number rewritten. With a speed factor, a batch takes only the PDUs already due
//! (recorded offset / factor since the replay started) and the session sleeps until the next
//! one is; `max` is the plain window-bound loop. Each response is tallied against the
//! recorded status of its request ([`ReplayReport`]).

pub mod pcap;

use std::collections::BTreeMap;
use std::io::ErrorKind;
use std::net::SocketAddr;
use std::pin::Pin;
use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering};
use std::sync::{Arc, OnceLock};
use std::time::Duration;

use bytes::{Buf, BytesMut};
use hdrhistogram::Histogram;
use tokio::io::Interest;
use tokio::net::TcpStream;
use tokio::time::{Instant, Interval, MissedTickBehavior, Sleep};

use crate::smpp::frame::{Framer, Next};
use crate::smpp::pdu::{encode_bind, put_header_only, put_resp_with_id, SubmitBuilder};
use crate::smpp::{cmd, peek, set_sequence, status, BindType, Header, RESP_BIT};

/// TCP connect timeout per session.
const CONNECT_TIMEOUT: Duration = Duration::from_secs(5);
/// How long a session waits for its bind response.
const BIND_TIMEOUT: Duration = Duration::from_secs(5);
/// After the sending phase, how long a session waits for outstanding submit_sm_resp.
const DRAIN_TIMEOUT: Duration = Duration::from_secs(5);
/// How long a session waits for unbind_resp.
const UNBIND_TIMEOUT: Duration = Duration::from_secs(1);
/// A write that makes no progress for this long ends the session.
const WRITE_STALL_TIMEOUT: Duration = Duration::from_secs(10);
/// Sending phase: no byte from the peer for this long with submits in flight ends the session
/// (only matters when `duration` is zero, i.e. no time cap).
const READ_STALL_TIMEOUT: Duration = Duration::from_secs(30);
/// Polling period of the receipt phase (checks the global receipt tally).
const RECEIPT_POLL: Duration = Duration::from_millis(10);
/// Random traffic: number of distinct pre-built submit_sm frames.
const RANDOM_POOL: usize = 1024;
/// Largest PDU accepted from the peer.
const MAX_PDU_BYTES: usize = 64 * 1024;
/// Read granularity.
const READ_CHUNK: usize = 64 * 1024;
/// Upper bound on `window` (the latency ring is 4 × window, 16 bytes a slot).
const MAX_WINDOW: usize = 100_000;
/// Errors kept in the report; the rest are counted.
const MAX_ERRORS: usize = 64;

/// What to send, where, how hard. `Default` gives a 4 × 100 transceiver run of 10 s against
/// 127.0.0.1:2775 with random traffic.
#[derive(Debug, Clone)]
pub struct LoadConfig {
    /// SMPP address of the gateway or SMSC under test.
    pub target: SocketAddr,
    pub system_id: String,
    pub password: String,
    /// Transceiver by default. Receiver sessions send nothing: they listen for `duration`.
    pub bind_type: BindType,
    /// Parallel binds (default 4).
    pub sessions: usize,
    /// submit_sm in flight per session (default 100, at most 100 000).
    pub window: usize,
    /// Total submit_sm PDUs across sessions; 0 = until `duration`. A multi-part message that
    /// has begun is always finished, so `sent` may exceed `count` by fewer parts than one
    /// message has.
    pub count: u64,
    /// Hard cap on the sending phase (default 10 s); zero = no time cap (then `count` > 0).
    pub duration: Duration,
    /// Optional total submit_sm/s cap, split evenly across sessions (token buckets refilled
    /// every 1 ms).
    pub rate: Option<u64>,
    /// Ask for delivery receipts (registered_delivery = 1).
    pub registered_delivery: bool,
    /// `None` = built-in random traffic.
    pub scenario: Option<Vec<ScenarioLine>>,
    /// After the last response, wait up to this long for outstanding receipts (default 2 s).
    pub receipt_wait: Duration,
    /// Source address of random traffic.
    pub source: String,
    /// Replay these recorded requests instead of generating traffic (`--pcap`).
    pub replay: Option<Arc<pcap::Extracted>>,
    /// Replay pacing (default `1x`: as recorded).
    pub speed: pcap::Speed,
}

impl Default for LoadConfig {
    fn default() -> Self {
        LoadConfig {
            target: SocketAddr::from(([127, 0, 0, 1], 2775)),
            system_id: "load".into(),
            password: String::new(),
            bind_type: BindType::Transceiver,
            sessions: 4,
            window: 100,
            count: 0,
            duration: Duration::from_secs(10),
            rate: None,
            registered_delivery: false,
            scenario: None,
            receipt_wait: Duration::from_secs(2),
            source: "1069012345".into(),
            replay: None,
            speed: pcap::Speed::Factor(1.0),
        }
    }
}

/// Text encoding of a scenario line.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, serde::Deserialize, serde::Serialize)]
#[serde(rename_all = "lowercase")]
pub enum Encoding {
    /// GSM 03.38 default alphabet, unpacked (one septet per octet), data_coding 0x00.
    /// 160 septets per SMS, 153 per concatenated part.
    #[default]
    Gsm7,
    /// UTF-16BE, data_coding 0x08. 70 code units per SMS, 67 per part.
    Ucs2,
    /// ISO-8859-1, data_coding 0x03. 140 octets per SMS, 134 per part.
    Latin1,
}

impl Encoding {
    fn data_coding(self) -> u8 {
        match self {
            Encoding::Gsm7 => 0x00,
            Encoding::Ucs2 => 0x08,
            Encoding::Latin1 => 0x03,
        }
    }
    /// (octets in a single SMS, octets of text in one concatenated part).
    fn limits(self) -> (usize, usize) {
        match self {
            Encoding::Gsm7 => (160, 153),
            Encoding::Ucs2 | Encoding::Latin1 => (140, 134),
        }
    }
}

/// One message of a scenario file (one JSON object per line):
/// `{"source":"ACME","destination":"+8613800138000","text":"hi","encoding":"gsm7","expect":"ok"}`.
#[derive(Debug, Clone, serde::Deserialize, serde::Serialize)]
#[serde(deny_unknown_fields)]
pub struct ScenarioLine {
    /// Numeric (TON 0) or alphanumeric (TON 5) sender, ≤ 20 characters.
    pub source: String,
    /// Recipient, ≤ 20 digits; a leading `+` is dropped (always sent as TON 1 / NPI 1).
    pub destination: String,
    /// Message text; split into concatenated parts when too long for one SMS.
    pub text: String,
    #[serde(default)]
    pub encoding: Encoding,
    /// Expected submit_sm_resp status: `"0x00000058"`, `"88"`, `"ok"`, `"ESME_RTHROTTLED"` or
    /// `"throttled"`. Every part of a multi-part message is checked.
    #[serde(default)]
    pub expect: Option<String>,
}

/// Reads a JSONL scenario. Blank lines and lines starting with `#` are skipped; every error
/// names `file:line`.
pub fn parse_scenario(text: &str, file_name: &str) -> anyhow::Result<Vec<ScenarioLine>> {
    let mut out = Vec::new();
    for (i, raw) in text.lines().enumerate() {
        let line = raw.trim_start_matches('\u{feff}').trim();
        if line.is_empty() || line.starts_with('#') {
            continue;
        }
        let n = i + 1;
        let l: ScenarioLine = serde_json::from_str(line).map_err(|e| anyhow::anyhow!("{file_name}:{n}: {e}"))?;
        check_line(&l).map_err(|e| anyhow::anyhow!("{file_name}:{n}: {e}"))?;
        out.push(l);
    }
    if out.is_empty() {
        anyhow::bail!("{file_name}: no messages");
    }
    Ok(out)
}

fn check_line(l: &ScenarioLine) -> Result<(), String> {
    check_addr("source", &l.source)?;
    check_addr("destination", l.destination.strip_prefix('+').unwrap_or(&l.destination))?;
    if let Some(e) = &l.expect {
        parse_expect(e).ok_or_else(|| format!("expect {e:?}: not a status (0x…, decimal, ok, ESME_R…)"))?;
    }
    split_text(&l.text, l.encoding)?;
    Ok(())
}

fn check_addr(field: &str, a: &str) -> Result<(), String> {
    if a.is_empty() || a.len() > 20 || !a.is_ascii() || a.contains('\0') {
        return Err(format!("{field} {a:?}: must be 1–20 ASCII characters"));
    }
    Ok(())
}

/// Status names accepted in `expect` (without the `ESME_` prefix).
const STATUS_NAMES: &[(&str, u32)] = &[
    ("ROK", status::ESME_ROK),
    ("RINVMSGLEN", status::ESME_RINVMSGLEN),
    ("RINVCMDLEN", status::ESME_RINVCMDLEN),
    ("RINVCMDID", status::ESME_RINVCMDID),
    ("RINVBNDSTS", status::ESME_RINVBNDSTS),
    ("RALYBND", status::ESME_RALYBND),
    ("RSYSERR", status::ESME_RSYSERR),
    ("RINVSRCADR", status::ESME_RINVSRCADR),
    ("RINVDSTADR", status::ESME_RINVDSTADR),
    ("RBINDFAIL", status::ESME_RBINDFAIL),
    ("RINVPASWD", status::ESME_RINVPASWD),
    ("RINVSYSID", status::ESME_RINVSYSID),
    ("RINVNUMDESTS", status::ESME_RINVNUMDESTS),
    ("RTHROTTLED", status::ESME_RTHROTTLED),
    ("RINVTLVSTREAM", status::ESME_RINVTLVSTREAM),
];

fn parse_expect(s: &str) -> Option<u32> {
    let t = s.trim();
    if let Some(h) = t.strip_prefix("0x").or_else(|| t.strip_prefix("0X")) {
        return u32::from_str_radix(h, 16).ok();
    }
    if !t.is_empty() && t.bytes().all(|b| b.is_ascii_digit()) {
        return t.parse().ok();
    }
    let up = t.to_ascii_uppercase();
    if up == "OK" {
        return Some(status::ESME_ROK);
    }
    let name = up.strip_prefix("ESME_").unwrap_or(&up);
    STATUS_NAMES.iter().find(|(n, _)| *n == name || n.strip_prefix('R') == Some(name)).map(|&(_, v)| v)
}

// ---------------------------------------------------------------------------------------------
// Text encoding and splitting

/// Appends the encoding of one character.
fn encode_char(c: char, enc: Encoding, out: &mut Vec<u8>) {
    match enc {
        Encoding::Gsm7 => gsm7_char(c, out),
        Encoding::Ucs2 => {
            let mut u = [0u16; 2];
            for unit in c.encode_utf16(&mut u) {
                out.extend_from_slice(&unit.to_be_bytes());
            }
        }
        Encoding::Latin1 => out.push(if (c as u32) <= 0xFF { c as u8 } else { b'?' }),
    }
}

/// GSM 03.38 default alphabet and its extension table (escape 0x1B), unpacked.
fn gsm7_char(c: char, out: &mut Vec<u8>) {
    let b = match c {
        ' '..='#' | '%'..='?' | 'A'..='Z' | 'a'..='z' => c as u8,
        '@' => 0x00,
        '£' => 0x01,
        '$' => 0x02,
        '¥' => 0x03,
        'è' => 0x04,
        'é' => 0x05,
        'ù' => 0x06,
        'ì' => 0x07,
        'ò' => 0x08,
        'Ç' => 0x09,
        '\n' => 0x0A,
        'Ø' => 0x0B,
        'ø' => 0x0C,
        '\r' => 0x0D,
        'Å' => 0x0E,
        'å' => 0x0F,
        'Δ' => 0x10,
        '_' => 0x11,
        'Φ' => 0x12,
        'Γ' => 0x13,
        'Λ' => 0x14,
        'Ω' => 0x15,
        'Π' => 0x16,
        'Ψ' => 0x17,
        'Σ' => 0x18,
        'Θ' => 0x19,
        'Ξ' => 0x1A,
        'Æ' => 0x1C,
        'æ' => 0x1D,
        'ß' => 0x1E,
        'É' => 0x1F,
        '¤' => 0x24,
        '¡' => 0x40,
        'Ä' => 0x5B,
        'Ö' => 0x5C,
        'Ñ' => 0x5D,
        'Ü' => 0x5E,
        '§' => 0x5F,
        '¿' => 0x60,
        'ä' => 0x7B,
        'ö' => 0x7C,
        'ñ' => 0x7D,
        'ü' => 0x7E,
        'à' => 0x7F,
        _ => {
            let ext = match c {
                '\u{0C}' => 0x0A,
                '^' => 0x14,
                '{' => 0x28,
                '}' => 0x29,
                '\\' => 0x2F,
                '[' => 0x3C,
                '~' => 0x3D,
                ']' => 0x3E,
                '|' => 0x40,
                '€' => 0x65,
                _ => {
                    out.push(b'?');
                    return;
                }
            };
            out.extend_from_slice(&[0x1B, ext]);
            return;
        }
    };
    out.push(b);
}

/// Encodes `text` and returns the short_message of each part: one body without UDH when the
/// text fits one SMS, else parts that each begin with the 6-byte UDH `05 00 03 ref total seq`
/// (ref 0 here; the sender patches it per message). Parts break only between characters, so
/// neither a GSM escape pair nor a UTF-16 surrogate pair is ever split.
fn split_text(text: &str, enc: Encoding) -> Result<Vec<Vec<u8>>, String> {
    let mut bytes = Vec::with_capacity(text.len() * 2);
    let mut ends = Vec::with_capacity(text.len());
    for c in text.chars() {
        encode_char(c, enc, &mut bytes);
        ends.push(bytes.len());
    }
    let (single, part) = enc.limits();
    if bytes.len() <= single {
        return Ok(vec![bytes]);
    }
    let mut chunks = Vec::new();
    let (mut start, mut last) = (0, 0);
    for &end in &ends {
        if end - start > part {
            chunks.push(start..last);
            start = last;
        }
        last = end;
    }
    chunks.push(start..bytes.len());
    let total = chunks.len();
    if total > 255 {
        return Err(format!("text needs {total} parts (at most 255)"));
    }
    Ok(chunks
        .into_iter()
        .enumerate()
        .map(|(i, r)| {
            let mut v = Vec::with_capacity(6 + r.len());
            v.extend_from_slice(&[0x05, 0x00, 0x03, 0, total as u8, (i + 1) as u8]);
            v.extend_from_slice(&bytes[r]);
            v
        })
        .collect())
}

// ---------------------------------------------------------------------------------------------
// Pre-built frames

/// One pre-built submit_sm.
#[derive(Debug, Clone, Copy)]
struct Tpl {
    start: u32,
    len: u32,
    /// Offset of the UDH reference byte within the frame; 0 = single-part message.
    ref_off: u16,
    /// First (or only) part of a message.
    first: bool,
    expect: Option<u32>,
}

/// All frames back to back in one buffer, sent in order, cyclically (or once, for replay).
#[derive(Debug, Default)]
struct Templates {
    blob: Vec<u8>,
    pdus: Vec<Tpl>,
    max_len: usize,
    /// Send the list once, then stop (replay).
    once: bool,
    /// `expect` is the recorded status; tally (recorded, replayed) pairs.
    replay: bool,
    /// Replay pacing: when each PDU is due, ns after the replay start (empty = no pacing).
    due_ns: Vec<u64>,
}

impl Templates {
    fn push_message(
        &mut self,
        source: &str,
        destination: &str,
        enc: Encoding,
        bodies: &[Vec<u8>],
        registered_delivery: bool,
        expect: Option<u32>,
    ) {
        let dest = destination.strip_prefix('+').unwrap_or(destination);
        let multi = bodies.len() > 1;
        for (i, body) in bodies.iter().enumerate() {
            let mut b = SubmitBuilder::new(source, dest)
                .esm_class(if multi { 0x40 } else { 0 })
                .registered_delivery(registered_delivery as u8)
                .data_coding(enc.data_coding())
                .short_message(body);
            if !source.bytes().all(|c| c.is_ascii_digit()) {
                b = b.source_ton_npi(5, 0);
            }
            let f = b.build(0);
            // No TLVs: short_message is the tail of the frame; the ref is UDH byte 3.
            let ref_off = if multi { (f.len() - body.len() + 3) as u16 } else { 0 };
            self.pdus.push(Tpl { start: self.blob.len() as u32, len: f.len() as u32, ref_off, first: i == 0, expect });
            self.max_len = self.max_len.max(f.len());
            self.blob.extend_from_slice(&f);
        }
    }

    #[inline]
    fn frame(&self, p: &Tpl) -> &[u8] {
        &self.blob[p.start as usize..(p.start + p.len) as usize]
    }
}

/// xorshift64: good enough for test numbers, no dependency.
struct XorShift(u64);

impl XorShift {
    fn next_u64(&mut self) -> u64 {
        let mut x = self.0;
        x ^= x << 13;
        x ^= x >> 7;
        x ^= x << 17;
        self.0 = x;
        x
    }
}

/// Replay: the recorded streams dealt to `sessions` template lists (largest stream first, to
/// the least loaded session), each PDU with its recorded status as `expect`.
fn build_replay_templates(x: &pcap::Extracted, sessions: usize, speed: pcap::Speed) -> Vec<Templates> {
    let n = sessions.min(x.streams.len()).max(1);
    let mut order: Vec<usize> = (0..x.streams.len()).collect();
    order.sort_by_key(|&i| std::cmp::Reverse(x.streams[i].pdus));
    let mut load = vec![0u64; n];
    let mut session_of = vec![0usize; x.streams.len()];
    for i in order {
        let s = (0..n).min_by_key(|&k| load[k]).unwrap_or(0);
        load[s] += x.streams[i].pdus;
        session_of[i] = s;
    }
    let t0 = x.pdus.iter().map(|p| p.ts_ns).min().unwrap_or(0);
    let mut out: Vec<Templates> =
        (0..n).map(|_| Templates { once: true, replay: true, ..Default::default() }).collect();
    for p in &x.pdus {
        let t = &mut out[session_of[p.stream as usize]];
        let f = x.frame(p);
        t.pdus.push(Tpl {
            start: t.blob.len() as u32,
            len: f.len() as u32,
            ref_off: 0,
            first: true,
            expect: p.recorded_status,
        });
        t.max_len = t.max_len.max(f.len());
        t.blob.extend_from_slice(f);
        if let pcap::Speed::Factor(k) = speed {
            let due = ((p.ts_ns - t0) as f64 / k) as u64;
            // Never earlier than the PDU before it on this session (capture clocks can step).
            let due = due.max(t.due_ns.last().copied().unwrap_or(0));
            t.due_ns.push(due);
        }
    }
    out
}

fn build_templates(cfg: &LoadConfig) -> anyhow::Result<Templates> {
    let mut t = Templates::default();
    match &cfg.scenario {
        Some(lines) => {
            if lines.is_empty() {
                anyhow::bail!("scenario has no messages");
            }
            for (i, l) in lines.iter().enumerate() {
                check_line(l).map_err(|e| anyhow::anyhow!("scenario message {}: {e}", i + 1))?;
                let bodies = split_text(&l.text, l.encoding).map_err(anyhow::Error::msg)?;
                let expect = l.expect.as_deref().and_then(parse_expect);
                t.push_message(&l.source, &l.destination, l.encoding, &bodies, cfg.registered_delivery, expect);
            }
        }
        None => {
            check_addr("source", &cfg.source).map_err(anyhow::Error::msg)?;
            let mut rng = XorShift(0x9E37_79B9_7F4A_7C15);
            for _ in 0..RANDOM_POOL {
                let dest = format!("86138{:08}", rng.next_u64() % 100_000_000);
                let text =
                    format!("Your verification code is {:06}. It expires in 5 minutes.", rng.next_u64() % 1_000_000);
                let bodies = split_text(&text, Encoding::Gsm7).map_err(anyhow::Error::msg)?;
                t.push_message(&cfg.source, &dest, Encoding::Gsm7, &bodies, cfg.registered_delivery, None);
            }
        }
    }
    Ok(t)
}

// ---------------------------------------------------------------------------------------------
// Report

/// Response latency percentiles in microseconds (send batch → read batch).
#[derive(Debug, Clone, Default, serde::Serialize)]
pub struct Latency {
    pub p50: f64,
    pub p90: f64,
    pub p99: f64,
    pub p999: f64,
    pub max: f64,
}

/// The outcome of a run (also written as JSON by `consentgate load --report`).
#[derive(Debug, Clone, serde::Serialize)]
pub struct Report {
    pub sessions: usize,
    pub window: usize,
    /// submit_sm PDUs written.
    pub sent: u64,
    /// Logical messages (a multi-part message counts once).
    pub messages: u64,
    /// submit_sm_resp (and generic_nack answering a submit_sm) received.
    pub responses: u64,
    /// submit_sm_resp count by command_status, `"0x00000000"` → n.
    pub statuses: BTreeMap<String, u64>,
    /// sent − responses.
    pub unanswered: u64,
    /// deliver_sm with esm_class & 0x3C ≠ 0.
    pub receipts: u64,
    /// Other deliver_sm (mobile originated).
    pub mo_received: u64,
    /// Responses whose status differs from the scenario's `expect`.
    pub expect_mismatches: u64,
    /// First send → last response (the receipt wait is not included).
    pub elapsed_seconds: f64,
    /// responses / elapsed_seconds.
    pub submit_per_second: f64,
    pub latency_us: Latency,
    pub bind_failures: u64,
    /// Per-session failures, each prefixed with `session N:`.
    pub errors: Vec<String>,
    /// Replay only: what the capture held and how the replayed statuses compare.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub replay: Option<ReplayReport>,
}

/// The replay section of the report.
#[derive(Debug, Clone, serde::Serialize)]
pub struct ReplayReport {
    /// `1x`, `10x`, `max`, …
    pub speed: String,
    /// What was read from the capture: PDUs, streams, skipped streams, damage.
    pub capture: pcap::ExtractSummary,
    /// Responses compared (replayed PDUs that were answered).
    pub compared: u64,
    /// Of those, how many had a recorded status that differs from the replayed one.
    pub differ: u64,
    /// Answered, but the capture held no response for the original.
    pub no_recorded_status: u64,
    /// Count per (recorded, replayed) status pair; `recorded` is `"none"` when unknown.
    pub statuses: Vec<StatusPair>,
}

/// One row of the recorded-vs-replayed table.
#[derive(Debug, Clone, serde::Serialize, PartialEq, Eq)]
pub struct StatusPair {
    pub recorded: String,
    pub replayed: String,
    pub count: u64,
}

impl Report {
    /// Prints a compact table to stdout.
    pub fn print_human(&self) {
        let l = &self.latency_us;
        println!("load report");
        println!("  {:<22} {} × {}", "sessions × window", self.sessions, self.window);
        println!("  {:<22} {} ({} messages)", "sent submit_sm", self.sent, self.messages);
        println!("  {:<22} {} (unanswered {})", "responses", self.responses, self.unanswered);
        println!("  {:<22} {:.0} over {:.3} s", "submit_sm/s", self.submit_per_second, self.elapsed_seconds);
        println!(
            "  {:<22} p50 {:.0}  p90 {:.0}  p99 {:.0}  p99.9 {:.0}  max {:.0}",
            "latency µs", l.p50, l.p90, l.p99, l.p999, l.max
        );
        for (s, n) in &self.statuses {
            println!("  {:<22} {}", format!("status {s}"), n);
        }
        println!("  {:<22} {} / {}", "receipts / MO", self.receipts, self.mo_received);
        println!("  {:<22} {}", "expect mismatches", self.expect_mismatches);
        println!("  {:<22} {}", "bind failures", self.bind_failures);
        for e in &self.errors {
            println!("  {:<22} {}", "error", e);
        }
        if let Some(r) = &self.replay {
            let c = &r.capture;
            let d = &c.damage;
            println!("replay of {} at {}", c.file, r.speed);
            println!("  {:<22} {} packets, {} TCP connections", "capture", c.packets, c.tcp_connections);
            let cmds: Vec<String> = c.by_command.iter().map(|(k, v)| format!("{k} {v}")).collect();
            println!("  {:<22} {} ({})", "PDUs extracted", c.pdus_extracted, cmds.join(", "));
            println!("  {:<22} {} (with recorded status {})", "SMPP streams", c.streams_found, c.with_recorded_status);
            println!("  {:<22} {} (other ports {})", "skipped streams", c.skipped_streams, c.other_port);
            for s in &c.skipped {
                println!("  {:<22} {} <-> {}: {} ({} bytes)", "", s.a, s.b, s.reason, s.bytes);
            }
            println!(
                "  {:<22} gaps {}, resyncs {}, skipped bytes {}, retransmissions {}, out of order {}, truncated packets {}, fragments {}, file truncated {}",
                "damage",
                d.gaps,
                d.resyncs,
                d.bytes_skipped,
                d.retransmissions,
                d.out_of_order,
                d.truncated_packets,
                d.ip_fragments,
                d.file_truncated
            );
            if let Some(b) = &d.bad_block {
                println!("  {:<22} {}", "unreadable", b);
            }
            println!(
                "  {:<22} {} compared, {} differ, {} without recorded status",
                "statuses", r.compared, r.differ, r.no_recorded_status
            );
            println!("  {:<12} {:<12} {:>10}", "recorded", "replayed", "count");
            for p in &r.statuses {
                let mark = if p.recorded != "none" && p.recorded != p.replayed { "  ≠" } else { "" };
                println!("  {:<12} {:<12} {:>10}{mark}", p.recorded, p.replayed, p.count);
            }
        }
    }
}

// ---------------------------------------------------------------------------------------------
// Run

/// State shared by the sessions of one run.
struct Shared {
    /// Total submit_sm budget; 0 = unlimited.
    budget: u64,
    claimed: AtomicU64,
    /// submit_sm_resp with status 0, published by each session when it stops sending.
    accepted: AtomicU64,
    /// Receipts received on any session (published after each read batch).
    receipts: AtomicU64,
    /// Sessions still in their sending or drain phase.
    senders_active: AtomicUsize,
    /// When the last sender finished.
    senders_done_at: OnceLock<Instant>,
    /// Replay pacing: when the first session started sending (time zero of the recording).
    replay_epoch: OnceLock<Instant>,
}

impl Shared {
    /// Claims up to `want` submits from the budget.
    #[inline]
    fn claim(&self, want: u64) -> u64 {
        if self.budget == 0 {
            return want;
        }
        if self.claimed.load(Ordering::Relaxed) >= self.budget {
            return 0;
        }
        let prev = self.claimed.fetch_add(want, Ordering::Relaxed);
        want.min(self.budget.saturating_sub(prev))
    }
}

/// Marks a session as done sending when dropped (on every path, errors included).
struct SenderGuard(Arc<Shared>);

impl Drop for SenderGuard {
    fn drop(&mut self) {
        if self.0.senders_active.fetch_sub(1, Ordering::SeqCst) == 1 {
            let _ = self.0.senders_done_at.set(Instant::now());
        }
    }
}

/// Runs the load: connects and binds `sessions` sessions, sends, drains, waits for receipts,
/// unbinds, and returns the merged report. Session failures are reported in `errors`; only an
/// invalid configuration is an `Err`.
pub async fn run(cfg: LoadConfig) -> anyhow::Result<Report> {
    if cfg.sessions == 0 {
        anyhow::bail!("sessions must be at least 1");
    }
    if cfg.window == 0 || cfg.window > MAX_WINDOW {
        anyhow::bail!("window must be 1..={MAX_WINDOW}");
    }
    if cfg.count == 0 && cfg.duration.is_zero() && cfg.replay.is_none() {
        anyhow::bail!("count and duration are both 0: the run would never stop");
    }
    if cfg.rate == Some(0) {
        anyhow::bail!("rate must be positive");
    }
    if cfg.replay.is_some() && cfg.scenario.is_some() {
        anyhow::bail!("a scenario and a capture replay are alternatives");
    }
    if let pcap::Speed::Factor(k) = cfg.speed {
        if !(k.is_finite() && k > 0.0) {
            anyhow::bail!("speed must be a positive factor or max");
        }
    }
    // One template list per session: shared for generated traffic, dealt out for a replay.
    let tpls: Vec<Arc<Templates>> = match &cfg.replay {
        Some(x) => {
            if x.pdus.is_empty() {
                anyhow::bail!("{}: no SMPP submit_sm / data_sm / submit_multi to replay", x.file);
            }
            build_replay_templates(x, cfg.sessions, cfg.speed).into_iter().map(Arc::new).collect()
        }
        None => {
            let t = Arc::new(build_templates(&cfg)?);
            (0..cfg.sessions).map(|_| t.clone()).collect()
        }
    };
    let sessions = tpls.len();
    let shared = Arc::new(Shared {
        budget: cfg.count,
        claimed: AtomicU64::new(0),
        accepted: AtomicU64::new(0),
        receipts: AtomicU64::new(0),
        senders_active: AtomicUsize::new(sessions),
        senders_done_at: OnceLock::new(),
        replay_epoch: OnceLock::new(),
    });
    let cfg = Arc::new(cfg);
    let handles: Vec<_> = tpls
        .into_iter()
        .enumerate()
        .map(|(i, tpl)| {
            let guard = SenderGuard(shared.clone());
            tokio::spawn(session_task(i, guard, cfg.clone(), tpl, shared.clone()))
        })
        .collect();

    let mut total = Stats::new();
    let mut errors = Vec::new();
    let mut first_send: Option<Instant> = None;
    let mut last_resp: Option<Instant> = None;
    for (i, h) in handles.into_iter().enumerate() {
        match h.await {
            Ok(st) => {
                first_send = min_opt(first_send, st.first_send);
                last_resp = max_opt(last_resp, st.last_resp);
                errors.extend(st.errors.iter().cloned());
                total.merge(&st);
            }
            Err(e) => errors.push(format!("session {i}: task failed: {e}")),
        }
    }
    if errors.len() > MAX_ERRORS {
        let more = errors.len() - MAX_ERRORS;
        errors.truncate(MAX_ERRORS);
        errors.push(format!("… and {more} more errors"));
    }
    let elapsed = match (first_send, last_resp) {
        (Some(a), Some(b)) if b > a => (b - a).as_secs_f64(),
        _ => 0.0,
    };
    let h = &total.hist;
    let latency_us = if h.is_empty() {
        Latency::default()
    } else {
        Latency {
            p50: h.value_at_quantile(0.5) as f64,
            p90: h.value_at_quantile(0.9) as f64,
            p99: h.value_at_quantile(0.99) as f64,
            p999: h.value_at_quantile(0.999) as f64,
            max: h.max() as f64,
        }
    };
    let mut statuses = BTreeMap::new();
    for (s, &n) in total.status_small.iter().enumerate() {
        if n > 0 {
            statuses.insert(format!("0x{s:08x}"), n);
        }
    }
    for &(s, n) in &total.status_other {
        *statuses.entry(format!("0x{s:08x}")).or_insert(0) += n;
    }
    let replay = cfg.replay.as_ref().map(|x| {
        let mut statuses: Vec<StatusPair> = total
            .pairs
            .iter()
            .map(|&((rec, rep), count)| StatusPair {
                recorded: rec.map_or_else(|| "none".to_owned(), |s| format!("0x{s:08x}")),
                replayed: format!("0x{rep:08x}"),
                count,
            })
            .collect();
        statuses.sort_by(|a, b| (&a.recorded, &a.replayed).cmp(&(&b.recorded, &b.replayed)));
        let compared = total.pairs.iter().map(|p| p.1).sum();
        let differ = total.pairs.iter().filter(|((r, p), _)| r.is_some_and(|r| r != *p)).map(|p| p.1).sum();
        let no_recorded_status = total.pairs.iter().filter(|((r, _), _)| r.is_none()).map(|p| p.1).sum();
        ReplayReport {
            speed: cfg.speed.to_string(),
            capture: x.summary(),
            compared,
            differ,
            no_recorded_status,
            statuses,
        }
    });
    Ok(Report {
        sessions,
        window: cfg.window,
        sent: total.sent,
        messages: total.messages,
        responses: total.responses,
        statuses,
        unanswered: total.sent.saturating_sub(total.responses),
        receipts: total.receipts,
        mo_received: total.mo,
        expect_mismatches: total.expect_mismatches,
        elapsed_seconds: elapsed,
        submit_per_second: if elapsed > 0.0 { total.responses as f64 / elapsed } else { 0.0 },
        latency_us,
        bind_failures: total.bind_failures,
        errors,
        replay,
    })
}

fn min_opt(a: Option<Instant>, b: Option<Instant>) -> Option<Instant> {
    match (a, b) {
        (Some(a), Some(b)) => Some(a.min(b)),
        (a, b) => a.or(b),
    }
}

fn max_opt(a: Option<Instant>, b: Option<Instant>) -> Option<Instant> {
    match (a, b) {
        (Some(a), Some(b)) => Some(a.max(b)),
        (a, b) => a.or(b),
    }
}

/// Per-session tallies, merged at the end.
struct Stats {
    sent: u64,
    messages: u64,
    responses: u64,
    accepted: u64,
    /// Count by status for status < 256 (the common case, no map on the hot path).
    status_small: Vec<u64>,
    status_other: Vec<(u32, u64)>,
    receipts: u64,
    mo: u64,
    expect_mismatches: u64,
    /// Submits whose ring slot was reused before they were answered (no latency recorded).
    evicted: u64,
    bind_failures: u64,
    /// Replay: responses per (recorded status, replayed status).
    pairs: Vec<((Option<u32>, u32), u64)>,
    hist: Histogram<u64>,
    errors: Vec<String>,
    first_send: Option<Instant>,
    last_resp: Option<Instant>,
}

impl Stats {
    fn new() -> Stats {
        Stats {
            sent: 0,
            messages: 0,
            responses: 0,
            accepted: 0,
            status_small: vec![0; 256],
            status_other: Vec::new(),
            receipts: 0,
            mo: 0,
            expect_mismatches: 0,
            evicted: 0,
            bind_failures: 0,
            pairs: Vec::new(),
            hist: Histogram::new_with_bounds(1, 60_000_000, 3).expect("static histogram bounds are valid"),
            errors: Vec::new(),
            first_send: None,
            last_resp: None,
        }
    }

    #[inline]
    fn count_status(&mut self, s: u32, n: u64) {
        match self.status_small.get_mut(s as usize) {
            Some(c) => *c += n,
            None => match self.status_other.iter_mut().find(|(k, _)| *k == s) {
                Some((_, c)) => *c += n,
                None => self.status_other.push((s, n)),
            },
        }
    }

    /// Replay tally; a short list (a handful of distinct pairs in practice), linear search.
    fn count_pair(&mut self, key: (Option<u32>, u32), n: u64) {
        match self.pairs.iter_mut().find(|(k, _)| *k == key) {
            Some((_, c)) => *c += n,
            None => self.pairs.push((key, n)),
        }
    }

    fn merge(&mut self, o: &Stats) {
        self.sent += o.sent;
        self.messages += o.messages;
        self.responses += o.responses;
        self.accepted += o.accepted;
        for (s, &n) in o.status_small.iter().enumerate() {
            self.status_small[s] += n;
        }
        for &(s, n) in &o.status_other {
            self.count_status(s, n);
        }
        self.receipts += o.receipts;
        self.mo += o.mo;
        self.expect_mismatches += o.expect_mismatches;
        self.evicted += o.evicted;
        self.bind_failures += o.bind_failures;
        for &(k, n) in &o.pairs {
            self.count_pair(k, n);
        }
        let _ = self.hist.add(&o.hist);
    }
}

async fn session_task(
    idx: usize,
    guard: SenderGuard,
    cfg: Arc<LoadConfig>,
    tpl: Arc<Templates>,
    shared: Arc<Shared>,
) -> Stats {
    let mut st = Stats::new();
    let stream = match tokio::time::timeout(CONNECT_TIMEOUT, TcpStream::connect(cfg.target)).await {
        Ok(Ok(s)) => s,
        Ok(Err(e)) => {
            st.errors.push(format!("session {idx}: connect {}: {e}", cfg.target));
            return st;
        }
        Err(_) => {
            st.errors.push(format!("session {idx}: connect {}: timed out after {:?}", cfg.target, CONNECT_TIMEOUT));
            return st;
        }
    };
    let _ = stream.set_nodelay(true);
    let mut s = Session::new(idx, &cfg, &tpl, &shared, stream, st);
    if let Err(e) = s.drive(guard).await {
        s.st.errors.push(format!("session {idx}: {e}"));
    }
    if s.st.evicted > 0 {
        s.st.errors.push(format!(
            "session {idx}: {} submits outstanding past 4 windows; their latency was not recorded",
            s.st.evicted
        ));
    }
    s.st
}

/// Send time of an in-flight submit_sm.
#[derive(Debug, Clone, Copy, Default)]
struct Slot {
    /// 0 = free.
    seq: u32,
    tpl: u32,
    sent_ns: u64,
}

/// Why [`Session::pump`] returned.
enum Wake {
    /// Bytes were read and processed.
    Data,
    /// The wake-up time passed.
    Timer,
    /// The rate ticker fired.
    Tick,
    /// The peer closed the connection.
    Eof,
}

struct Session<'a> {
    idx: usize,
    cfg: &'a LoadConfig,
    tpl: &'a Templates,
    shared: &'a Shared,
    stream: TcpStream,
    inbuf: BytesMut,
    out: BytesMut,
    framer: Framer,
    ring: Vec<Slot>,
    mask: u32,
    inflight: usize,
    seq: u32,
    tidx: usize,
    msg_ref: u8,
    epoch: Instant,
    sleep: Pin<Box<Sleep>>,
    ticker: Option<Interval>,
    /// Coarse time of the last read (updated at most once a second).
    stall_base: Instant,
    bind_seq: u32,
    bind_status: Option<u32>,
    peer_unbound: bool,
    got_unbind_resp: bool,
    published_receipts: u64,
    oversized_reported: bool,
    st: Stats,
}

impl<'a> Session<'a> {
    fn new(
        idx: usize,
        cfg: &'a LoadConfig,
        tpl: &'a Templates,
        shared: &'a Shared,
        stream: TcpStream,
        st: Stats,
    ) -> Session<'a> {
        let ring_len = (cfg.window.next_power_of_two() * 4).max(64);
        let now = Instant::now();
        Session {
            idx,
            cfg,
            tpl,
            shared,
            stream,
            inbuf: BytesMut::with_capacity(READ_CHUNK * 2),
            out: BytesMut::with_capacity(cfg.window.min(4096) * tpl.max_len.max(64) + 4096),
            framer: Framer::new(MAX_PDU_BYTES),
            ring: vec![Slot::default(); ring_len],
            mask: (ring_len - 1) as u32,
            inflight: 0,
            seq: 1,
            // Spread sessions over the random pool and over concatenation references.
            tidx: if cfg.scenario.is_none() && cfg.replay.is_none() {
                idx * RANDOM_POOL / cfg.sessions.max(1) % tpl.pdus.len().max(1)
            } else {
                0
            },
            msg_ref: (idx as u8).wrapping_mul(37),
            epoch: now,
            sleep: Box::pin(tokio::time::sleep_until(far_future(now))),
            ticker: None,
            stall_base: now,
            bind_seq: 0,
            bind_status: None,
            peer_unbound: false,
            got_unbind_resp: false,
            published_receipts: 0,
            oversized_reported: false,
            st,
        }
    }

    #[inline]
    fn next_seq(&mut self) -> u32 {
        let s = self.seq;
        self.seq = if s >= 0x7FFF_FFFF { 1 } else { s + 1 };
        s
    }

    /// The whole life of a bound session.
    async fn drive(&mut self, guard: SenderGuard) -> Result<(), String> {
        // Bind.
        self.bind_seq = self.next_seq();
        let bind = encode_bind(self.cfg.bind_type, self.bind_seq, &self.cfg.system_id, &self.cfg.password);
        self.out.extend_from_slice(&bind);
        self.flush().await?;
        let bind_end = Instant::now() + BIND_TIMEOUT;
        while self.bind_status.is_none() {
            match self.pump(bind_end, false).await? {
                Wake::Data | Wake::Tick => self.flush().await?,
                Wake::Timer => return Err(format!("no bind response within {BIND_TIMEOUT:?}")),
                Wake::Eof => return Err("peer closed the connection during bind".into()),
            }
        }
        let bs = self.bind_status.unwrap_or(status::ESME_RSYSERR);
        if bs != status::ESME_ROK {
            self.st.bind_failures += 1;
            return Err(format!("bind refused: status 0x{bs:08x}"));
        }

        // Send (or, on a receiver bind, listen) and drain.
        if self.cfg.bind_type.can_submit() {
            self.send_phase().await?;
            if self.peer_unbound {
                return self.peer_unbind();
            }
            self.drain_phase().await?;
            if self.peer_unbound {
                return self.peer_unbind();
            }
            self.shared.accepted.fetch_add(self.st.accepted, Ordering::SeqCst);
            drop(guard);
        } else {
            drop(guard);
            self.listen_phase().await?;
            if self.peer_unbound {
                return self.peer_unbind();
            }
        }

        // Receipts.
        if self.cfg.registered_delivery && self.cfg.bind_type.can_receive() {
            self.receipt_phase().await?;
            if self.peer_unbound {
                return self.peer_unbind();
            }
        }

        // Unbind.
        let seq = self.next_seq();
        put_header_only(&mut self.out, cmd::UNBIND, 0, seq);
        self.flush().await?;
        let end = Instant::now() + UNBIND_TIMEOUT;
        while !self.got_unbind_resp && !self.peer_unbound {
            match self.pump(end, false).await? {
                Wake::Data | Wake::Tick => self.flush().await?,
                Wake::Timer => return Err(format!("no unbind_resp within {UNBIND_TIMEOUT:?}")),
                Wake::Eof => break,
            }
        }
        if self.peer_unbound {
            self.flush().await?;
        }
        Ok(())
    }

    /// The peer sent unbind: it has been answered (in `out`); send that and stop.
    fn peer_unbind(&mut self) -> Result<(), String> {
        // Best effort: the answer is small and the socket writable in practice.
        let _ = self.stream.try_write(&self.out);
        self.out.clear();
        Err("peer sent unbind".into())
    }

    /// Sending phase: fill the window, write, read, repeat, until the budget or the time cap
    /// is exhausted.
    async fn send_phase(&mut self) -> Result<(), String> {
        let start = Instant::now();
        let deadline = if self.cfg.duration.is_zero() { far_future(start) } else { start + self.cfg.duration };
        let window = self.cfg.window;
        let mut bucket = self.cfg.rate.map(|r| {
            let rate = r as f64 / self.cfg.sessions as f64;
            Bucket { rate, cap: (rate * 0.01).max(1.0), tokens: 1.0, last: start }
        });
        if bucket.is_some() {
            let mut t = tokio::time::interval(Duration::from_millis(1));
            t.set_missed_tick_behavior(MissedTickBehavior::Delay);
            self.ticker = Some(t);
        }
        self.stall_base = start;
        // Set when no new message may begin (budget or time exhausted); a multi-part message
        // already begun is still finished, until `stop_by`.
        let mut stopping = false;
        let mut stop_by = far_future(start);
        let paced = !self.tpl.due_ns.is_empty();
        let replay_epoch = if paced { *self.shared.replay_epoch.get_or_init(|| start) } else { start };
        loop {
            let now = Instant::now();
            if !stopping && now >= deadline {
                stopping = true;
                stop_by = now + DRAIN_TIMEOUT;
            }
            if self.tidx == self.tpl.pdus.len() || (stopping && self.tpl.pdus[self.tidx].first) {
                break; // (tidx only reaches the end of a `once` list)
            }
            let mut allow = window.saturating_sub(self.inflight);
            if self.tpl.once {
                allow = allow.min(self.tpl.pdus.len() - self.tidx);
            }
            // Replay pacing: only the PDUs already due; otherwise wake when the next one is.
            let mut next_due = None;
            if paced && allow > 0 {
                let rel = (now - replay_epoch).as_nanos() as u64;
                let due = &self.tpl.due_ns[self.tidx..self.tidx + allow];
                let n = due.iter().take_while(|&&d| d <= rel).count();
                if n < allow {
                    next_due = Some(replay_epoch + Duration::from_nanos(due[n]));
                    allow = n;
                }
            }
            let mut token_limited = false;
            if let Some(b) = bucket.as_mut() {
                b.refill(now);
                let t = b.tokens as usize;
                if t < allow {
                    allow = t;
                    token_limited = true;
                }
            }
            if stopping {
                allow = allow.min(self.parts_left());
            } else if allow > 0 {
                let got = self.shared.claim(allow as u64) as usize;
                if got < allow {
                    stopping = true;
                    stop_by = now + DRAIN_TIMEOUT;
                }
                allow = got;
            }
            if allow > 0 {
                self.fill(allow, now);
                if let Some(b) = bucket.as_mut() {
                    b.tokens -= allow as f64;
                }
            }
            if !self.out.is_empty() {
                self.flush().await?;
            }
            if self.tidx == self.tpl.pdus.len() || (stopping && self.tpl.pdus[self.tidx].first) {
                break;
            }
            // Wait for responses (or tokens, or the clock, or the next recorded PDU).
            let mut wake_at = if stopping { stop_by } else { deadline.min(self.stall_base + READ_STALL_TIMEOUT) };
            if let Some(d) = next_due {
                wake_at = wake_at.min(d);
            }
            let need_tick = token_limited && self.inflight < window;
            match self.pump(wake_at, need_tick).await? {
                Wake::Data | Wake::Tick => {}
                Wake::Eof => return Err("peer closed the connection".into()),
                Wake::Timer => {
                    let now = Instant::now();
                    if stopping && now >= stop_by {
                        break;
                    }
                    if !stopping && now < deadline && now >= self.stall_base + READ_STALL_TIMEOUT {
                        if self.inflight > 0 {
                            return Err(format!(
                                "no data from the peer for {READ_STALL_TIMEOUT:?} with {} submits in flight",
                                self.inflight
                            ));
                        }
                        self.stall_base = now;
                    }
                }
            }
            if self.peer_unbound {
                return Ok(());
            }
            // Let other tasks on this worker run when the socket is always ready.
            tokio::task::coop::consume_budget().await;
        }
        self.ticker = None;
        if !self.out.is_empty() {
            self.flush().await?;
        }
        Ok(())
    }

    /// Parts of the current message not yet sent (counting the one at `tidx`).
    fn parts_left(&self) -> usize {
        let pdus = &self.tpl.pdus;
        let mut n = 1;
        while self.tidx + n < pdus.len() && !pdus[self.tidx + n].first {
            n += 1;
        }
        n
    }

    /// Appends `n` submit_sm to `out`, all stamped `now`.
    #[inline]
    fn fill(&mut self, n: usize, now: Instant) {
        let tpl = self.tpl;
        let sent_ns = (now - self.epoch).as_nanos() as u64;
        for _ in 0..n {
            let p = tpl.pdus[self.tidx];
            let seq = self.next_seq();
            let at = self.out.len();
            self.out.extend_from_slice(tpl.frame(&p));
            let f = &mut self.out[at..];
            set_sequence(f, seq);
            if p.first {
                self.st.messages += 1;
                if p.ref_off != 0 {
                    self.msg_ref = self.msg_ref.wrapping_add(1);
                }
            }
            if p.ref_off != 0 {
                f[p.ref_off as usize] = self.msg_ref;
            }
            let slot = &mut self.ring[(seq & self.mask) as usize];
            if slot.seq != 0 {
                // Still unanswered after 4 windows: give its slot (and its window place) up.
                self.inflight -= 1;
                self.st.evicted += 1;
            }
            *slot = Slot { seq, tpl: self.tidx as u32, sent_ns };
            self.inflight += 1;
            self.tidx += 1;
            if self.tidx == tpl.pdus.len() && !tpl.once {
                self.tidx = 0;
            }
        }
        self.st.sent += n as u64;
        if self.st.first_send.is_none() {
            self.st.first_send = Some(now);
        }
    }

    /// Waits for the outstanding responses (bounded).
    async fn drain_phase(&mut self) -> Result<(), String> {
        let end = Instant::now() + DRAIN_TIMEOUT;
        while self.inflight > 0 && !self.peer_unbound {
            match self.pump(end, false).await? {
                Wake::Data | Wake::Tick => self.flush().await?,
                Wake::Timer => break,
                Wake::Eof => return Err("peer closed the connection while draining".into()),
            }
        }
        Ok(())
    }

    /// Receiver bind: only listen (answering deliver_sm) for `duration`.
    async fn listen_phase(&mut self) -> Result<(), String> {
        let d = if self.cfg.duration.is_zero() { Duration::from_secs(10) } else { self.cfg.duration };
        let end = Instant::now() + d;
        while !self.peer_unbound {
            match self.pump(end, false).await? {
                Wake::Data | Wake::Tick => self.flush().await?,
                Wake::Timer => break,
                Wake::Eof => return Err("peer closed the connection".into()),
            }
        }
        Ok(())
    }

    /// Waits until every sender has finished and receipts ≥ accepted (run-wide), or
    /// `receipt_wait` after the last sender finished.
    async fn receipt_phase(&mut self) -> Result<(), String> {
        let start = Instant::now();
        // Safety net in case the senders take unusually long to finish.
        let hard_end = start + self.cfg.receipt_wait + self.cfg.duration + DRAIN_TIMEOUT + WRITE_STALL_TIMEOUT;
        while !self.peer_unbound {
            let now = Instant::now();
            if let Some(&done_at) = self.shared.senders_done_at.get() {
                if self.shared.receipts.load(Ordering::SeqCst) >= self.shared.accepted.load(Ordering::SeqCst)
                    || now >= done_at + self.cfg.receipt_wait
                {
                    break;
                }
            }
            if now >= hard_end {
                break;
            }
            match self.pump((now + RECEIPT_POLL).min(hard_end), false).await? {
                Wake::Data | Wake::Tick => self.flush().await?,
                Wake::Timer => {}
                Wake::Eof => return Err("peer closed the connection while waiting for receipts".into()),
            }
        }
        Ok(())
    }

    /// Reads once (waiting for readiness if needed, until `wake_at` or a ticker tick when
    /// `tick` is set) and processes every complete PDU read.
    async fn pump(&mut self, wake_at: Instant, tick: bool) -> Result<Wake, String> {
        loop {
            self.inbuf.reserve(READ_CHUNK);
            match self.stream.try_read_buf(&mut self.inbuf) {
                Ok(0) => return Ok(Wake::Eof),
                Ok(_) => {
                    let now = Instant::now();
                    if now.duration_since(self.stall_base) > Duration::from_secs(1) {
                        self.stall_base = now;
                    }
                    self.process(now)?;
                    return Ok(Wake::Data);
                }
                Err(e) if e.kind() == ErrorKind::WouldBlock => {}
                Err(e) if e.kind() == ErrorKind::Interrupted => continue,
                Err(e) => return Err(format!("read: {e}")),
            }
            if self.sleep.deadline() != wake_at {
                self.sleep.as_mut().reset(wake_at);
            }
            let stream = &self.stream;
            let sleep = &mut self.sleep;
            let ticker = &mut self.ticker;
            tokio::select! {
                biased;
                r = stream.readable() => r.map_err(|e| format!("read: {e}"))?,
                _ = sleep.as_mut() => return Ok(Wake::Timer),
                _ = async { match ticker.as_mut() { Some(t) => { t.tick().await; } None => std::future::pending::<()>().await } }, if tick => return Ok(Wake::Tick),
            }
        }
    }

    /// Writes all of `out`. While the socket is full, keeps reading (into `inbuf`, processed
    /// later) so that a peer blocked on its own writes cannot deadlock us.
    async fn flush(&mut self) -> Result<(), String> {
        let mut pos = 0;
        while pos < self.out.len() {
            match self.stream.try_write(&self.out[pos..]) {
                Ok(n) => pos += n,
                Err(e) if e.kind() == ErrorKind::WouldBlock => {
                    let ready = tokio::time::timeout(
                        WRITE_STALL_TIMEOUT,
                        self.stream.ready(Interest::READABLE | Interest::WRITABLE),
                    )
                    .await
                    .map_err(|_| format!("write stalled for {WRITE_STALL_TIMEOUT:?}"))?
                    .map_err(|e| format!("write: {e}"))?;
                    if ready.is_readable() {
                        self.inbuf.reserve(READ_CHUNK);
                        match self.stream.try_read_buf(&mut self.inbuf) {
                            Ok(0) => return Err("peer closed the connection".into()),
                            Ok(_) => {}
                            Err(e) if matches!(e.kind(), ErrorKind::WouldBlock | ErrorKind::Interrupted) => {}
                            Err(e) => return Err(format!("read: {e}")),
                        }
                    }
                }
                Err(e) if e.kind() == ErrorKind::Interrupted => {}
                Err(e) => return Err(format!("write: {e}")),
            }
        }
        self.out.clear();
        Ok(())
    }

    /// Handles every complete PDU in `inbuf`; answers go to `out`.
    fn process(&mut self, now: Instant) -> Result<(), String> {
        let now_ns = (now - self.epoch).as_nanos() as u64;
        let inbuf = std::mem::take(&mut self.inbuf);
        let mut pos = 0;
        let mut result = Ok(());
        loop {
            match self.framer.next(&inbuf[pos..]) {
                Next::Incomplete => break,
                Next::Skip(n) => pos += n,
                Next::Frame(n) => {
                    self.on_frame(&inbuf[pos..pos + n], now, now_ns);
                    pos += n;
                }
                Next::TooLong { command_id, sequence, length } => {
                    if command_id & RESP_BIT == 0 {
                        put_header_only(&mut self.out, cmd::GENERIC_NACK, status::ESME_RINVCMDLEN, sequence);
                    }
                    if !self.oversized_reported {
                        self.oversized_reported = true;
                        self.err(format!("peer sent a {length}-byte PDU (0x{command_id:08x}); skipped"));
                    }
                }
                Next::TooShort { length } => {
                    result = Err(format!("peer sent command_length {length}; stream out of sync"));
                    break;
                }
            }
        }
        self.inbuf = inbuf;
        self.inbuf.advance(pos);
        if self.st.receipts != self.published_receipts {
            self.shared.receipts.fetch_add(self.st.receipts - self.published_receipts, Ordering::SeqCst);
            self.published_receipts = self.st.receipts;
        }
        result
    }

    fn err(&mut self, e: String) {
        if self.st.errors.len() < MAX_ERRORS {
            self.st.errors.push(format!("session {}: {e}", self.idx));
        }
    }

    #[inline]
    fn on_frame(&mut self, f: &[u8], now: Instant, now_ns: u64) {
        let h = Header::read(f);
        let seq = h.sequence_number;
        match h.command_id {
            cmd::SUBMIT_SM_RESP | cmd::DATA_SM_RESP | cmd::SUBMIT_MULTI_RESP => {
                self.on_submit_resp(seq, h.command_status, now, now_ns)
            }
            cmd::DELIVER_SM | cmd::DATA_SM => {
                let st = match peek::message(f) {
                    Ok(m) => {
                        if m.is_receipt() {
                            self.st.receipts += 1;
                        } else {
                            self.st.mo += 1;
                        }
                        status::ESME_ROK
                    }
                    Err(e) => e.status(),
                };
                put_resp_with_id(&mut self.out, h.command_id | RESP_BIT, st, seq, b"");
            }
            cmd::ENQUIRE_LINK => put_header_only(&mut self.out, cmd::ENQUIRE_LINK_RESP, 0, seq),
            cmd::UNBIND => {
                put_header_only(&mut self.out, cmd::UNBIND_RESP, 0, seq);
                self.peer_unbound = true;
            }
            cmd::UNBIND_RESP => self.got_unbind_resp = true,
            cmd::GENERIC_NACK => {
                if self.bind_status.is_none() && seq == self.bind_seq {
                    self.bind_status = Some(h.command_status.max(1));
                } else if seq != 0 && self.ring[(seq & self.mask) as usize].seq == seq {
                    self.on_submit_resp(seq, h.command_status, now, now_ns);
                } else {
                    self.err(format!("generic_nack 0x{:08x} for sequence {seq}", h.command_status));
                }
            }
            id if self.bind_status.is_none() && id == self.cfg.bind_type.command_id() | RESP_BIT => {
                self.bind_status = Some(h.command_status);
            }
            cmd::ALERT_NOTIFICATION | cmd::OUTBIND => {}
            id if id & RESP_BIT == 0 => put_header_only(&mut self.out, cmd::GENERIC_NACK, status::ESME_RINVCMDID, seq),
            _ => {} // enquire_link_resp, deliver_sm_resp, …
        }
    }

    #[inline]
    fn on_submit_resp(&mut self, seq: u32, st: u32, now: Instant, now_ns: u64) {
        self.st.responses += 1;
        self.st.last_resp = Some(now);
        self.st.count_status(st, 1);
        if st == status::ESME_ROK {
            self.st.accepted += 1;
        }
        let slot = &mut self.ring[(seq & self.mask) as usize];
        if seq != 0 && slot.seq == seq {
            slot.seq = 0;
            let us = (now_ns.saturating_sub(slot.sent_ns) / 1000).clamp(1, 60_000_000);
            let tpl = slot.tpl as usize;
            self.inflight -= 1;
            self.st.hist.saturating_record(us);
            let expect = self.tpl.pdus[tpl].expect;
            if let Some(exp) = expect {
                if exp != st {
                    self.st.expect_mismatches += 1;
                }
            }
            if self.tpl.replay {
                self.st.count_pair((expect, st), 1);
            }
        }
    }
}

/// Token bucket for the optional rate cap (refilled by elapsed time; the 1 ms ticker only
/// wakes the session).
struct Bucket {
    rate: f64,
    cap: f64,
    tokens: f64,
    last: Instant,
}

impl Bucket {
    #[inline]
    fn refill(&mut self, now: Instant) {
        let dt = now.duration_since(self.last).as_secs_f64();
        self.last = now;
        self.tokens = (self.tokens + self.rate * dt).min(self.cap);
    }
}

/// "Never", without overflowing `Instant` (tokio uses the same 30 years).
fn far_future(now: Instant) -> Instant {
    now + Duration::from_secs(86_400 * 365 * 30)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::smpp::pdu::encode_bind_resp;
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    use tokio::net::TcpListener;

    #[test]
    fn parse_scenario_reads_lines_skips_comments_and_names_bad_lines() {
        let text = "# a comment\n\
                    {\"source\":\"ACME\",\"destination\":\"+8613800138000\",\"text\":\"hi\",\"expect\":\"ok\"}\n\
                    \n\
                    {\"source\":\"1069\",\"destination\":\"8613800138001\",\"text\":\"你好\",\"encoding\":\"ucs2\",\"expect\":\"0x00000058\"}\n";
        let v = parse_scenario(text, "s.jsonl").unwrap();
        assert_eq!(v.len(), 2);
        assert_eq!(v[0].encoding, Encoding::Gsm7);
        assert_eq!(v[1].encoding, Encoding::Ucs2);
        assert_eq!(parse_expect(v[0].expect.as_deref().unwrap()), Some(0));
        assert_eq!(parse_expect(v[1].expect.as_deref().unwrap()), Some(0x58));
        assert_eq!(parse_expect("ESME_RTHROTTLED"), Some(0x58));
        assert_eq!(parse_expect("throttled"), Some(0x58));
        assert_eq!(parse_expect("13"), Some(13));
        assert_eq!(parse_expect("nope"), None);

        let bad = "{\"source\":\"a\",\"destination\":\"1\",\"text\":\"x\"}\n# c\n{\"source\":\"a\",\"text\":\"x\"}\n";
        let e = parse_scenario(bad, "s.jsonl").unwrap_err().to_string();
        assert!(e.starts_with("s.jsonl:3: "), "{e}");
        let e = parse_scenario("\n\n{\"source\":\"a\",\"destination\":\"1\",\"text\":\"x\",\"expect\":\"what\"}", "f")
            .unwrap_err()
            .to_string();
        assert!(e.starts_with("f:3: "), "{e}");
        assert!(parse_scenario("# only comments\n", "f").is_err());
    }

    #[test]
    fn long_gsm7_text_splits_into_two_parts_with_udh() {
        let text: String = (0..200).map(|i| (b'a' + (i % 26) as u8) as char).collect();
        let parts = split_text(&text, Encoding::Gsm7).unwrap();
        assert_eq!(parts.len(), 2);
        assert_eq!(&parts[0][..6], &[0x05, 0x00, 0x03, 0, 2, 1]);
        assert_eq!(&parts[1][..6], &[0x05, 0x00, 0x03, 0, 2, 2]);
        assert_eq!(parts[0].len(), 6 + 153);
        assert_eq!(parts[1].len(), 6 + 47);
        assert_eq!(&parts[0][6..], &text.as_bytes()[..153]);
        // 160 septets still fit one SMS, without UDH; GSM specials are mapped.
        let one = split_text(&"x".repeat(160), Encoding::Gsm7).unwrap();
        assert_eq!(one.len(), 1);
        assert_eq!(one[0].len(), 160);
        assert_eq!(split_text("@$_{", Encoding::Gsm7).unwrap()[0], vec![0x00, 0x02, 0x11, 0x1B, 0x28]);
        // An escape pair is never split across parts.
        let esc = format!("{}{{{}", "a".repeat(152), "b".repeat(20));
        let p = split_text(&esc, Encoding::Gsm7).unwrap();
        assert_eq!(p[0].len(), 6 + 152);
        assert_eq!(&p[1][6..8], &[0x1B, 0x28]);
    }

    #[test]
    fn long_ucs2_text_splits_at_67_chars_per_part() {
        let text: String = "中".repeat(100);
        let parts = split_text(&text, Encoding::Ucs2).unwrap();
        assert_eq!(parts.len(), 2);
        for (i, p) in parts.iter().enumerate() {
            assert!(p.len() <= 140, "part {i} is {} bytes", p.len());
            assert_eq!(&p[..6], &[0x05, 0x00, 0x03, 0, 2, i as u8 + 1]);
        }
        assert_eq!(parts[0].len(), 6 + 134);
        assert_eq!(&parts[0][6..8], &[0x4E, 0x2D]);
        assert_eq!(split_text(&"中".repeat(70), Encoding::Ucs2).unwrap().len(), 1);
        assert_eq!(split_text("é€", Encoding::Latin1).unwrap()[0], vec![0xE9, b'?']);
    }

    #[test]
    fn templates_mark_multipart_and_point_at_the_reference_byte() {
        let cfg = LoadConfig {
            scenario: Some(vec![ScenarioLine {
                source: "ACME".into(),
                destination: "+8613800138000".into(),
                text: "z".repeat(200),
                encoding: Encoding::Gsm7,
                expect: None,
            }]),
            ..Default::default()
        };
        let t = build_templates(&cfg).unwrap();
        assert_eq!(t.pdus.len(), 2);
        assert!(t.pdus[0].first && !t.pdus[1].first);
        for p in &t.pdus {
            let f = t.frame(p);
            let m = peek::message(f).unwrap();
            assert!(m.has_udh());
            assert_eq!(m.destination.addr, b"8613800138000");
            assert_eq!(m.source.ton, 5);
            let r = p.ref_off as usize;
            assert_eq!(&f[r - 3..r], &[0x05, 0x00, 0x03]);
        }
    }

    /// A minimal SMSC: bind OK (or refused), one MO and one enquire_link after the bind,
    /// submit_sm_resp for every submit (0x58 when the text contains THROTTLE) and a receipt
    /// when asked for.
    async fn sink(refuse: bool) -> SocketAddr {
        let l = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = l.local_addr().unwrap();
        tokio::spawn(async move {
            while let Ok((s, _)) = l.accept().await {
                tokio::spawn(sink_conn(s, refuse));
            }
        });
        addr
    }

    async fn sink_conn(mut s: TcpStream, refuse: bool) {
        let mut framer = Framer::new(MAX_PDU_BYTES);
        let mut inb = BytesMut::with_capacity(READ_CHUNK);
        let mut out = BytesMut::new();
        let (mut dseq, mut id) = (1u32, 0u64);
        loop {
            inb.reserve(READ_CHUNK);
            match s.read_buf(&mut inb).await {
                Ok(0) | Err(_) => return,
                Ok(_) => {}
            }
            let mut pos = 0;
            let mut close = false;
            while let Next::Frame(n) = framer.next(&inb[pos..]) {
                let f = &inb[pos..pos + n];
                pos += n;
                let h = Header::read(f);
                let seq = h.sequence_number;
                match h.command_id {
                    c @ (cmd::BIND_TRANSCEIVER | cmd::BIND_TRANSMITTER | cmd::BIND_RECEIVER) => {
                        let bt = BindType::from_command(c).unwrap();
                        let st = if refuse { status::ESME_RBINDFAIL } else { 0 };
                        out.extend_from_slice(&encode_bind_resp(bt, st, seq, "sink"));
                        if !refuse {
                            out.extend_from_slice(
                                &SubmitBuilder::new("8613900000000", "1069")
                                    .deliver()
                                    .short_message(b"STOP")
                                    .build(dseq),
                            );
                            put_header_only(&mut out, cmd::ENQUIRE_LINK, 0, dseq + 1);
                            dseq += 2;
                        }
                    }
                    cmd::SUBMIT_SM => {
                        let m = peek::message(f).unwrap();
                        let st = if m.short_message.windows(8).any(|w| w == b"THROTTLE") { 0x58 } else { 0 };
                        id += 1;
                        let mid = format!("{id:x}");
                        put_resp_with_id(&mut out, cmd::SUBMIT_SM_RESP, st, seq, mid.as_bytes());
                        if st == 0 && m.registered_delivery & 1 != 0 {
                            let src = std::str::from_utf8(m.destination.addr).unwrap();
                            let dst = std::str::from_utf8(m.source.addr).unwrap();
                            let text = format!("id:{mid} stat:DELIVRD");
                            out.extend_from_slice(
                                &SubmitBuilder::new(src, dst)
                                    .deliver()
                                    .esm_class(0x04)
                                    .short_message(text.as_bytes())
                                    .build(dseq),
                            );
                            dseq += 1;
                        }
                    }
                    cmd::UNBIND => {
                        put_header_only(&mut out, cmd::UNBIND_RESP, 0, seq);
                        close = true;
                    }
                    _ => {}
                }
            }
            inb.advance(pos);
            if !out.is_empty() {
                if s.write_all(&out).await.is_err() {
                    return;
                }
                out.clear();
            }
            if close || refuse {
                return;
            }
        }
    }

    fn bounded<F: std::future::Future>(f: F) -> tokio::time::Timeout<F> {
        tokio::time::timeout(Duration::from_secs(10), f)
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn random_traffic_against_sink_gets_every_response_and_receipt() {
        let addr = sink(false).await;
        let cfg = LoadConfig {
            target: addr,
            sessions: 2,
            window: 50,
            count: 2000,
            duration: Duration::from_secs(5),
            registered_delivery: true,
            ..Default::default()
        };
        let r = bounded(run(cfg)).await.expect("run finished in time").unwrap();
        assert!(r.errors.is_empty(), "{:?}", r.errors);
        assert_eq!(r.sent, 2000);
        assert_eq!(r.messages, 2000);
        assert_eq!(r.responses, 2000);
        assert_eq!(r.unanswered, 0);
        assert_eq!(r.receipts, 2000);
        assert_eq!(r.mo_received, 2);
        assert_eq!(r.statuses.get("0x00000000"), Some(&2000));
        assert_eq!(r.bind_failures, 0);
        assert!(r.elapsed_seconds > 0.0 && r.submit_per_second > 0.0);
        assert!(r.latency_us.p50 >= 1.0 && r.latency_us.max >= r.latency_us.p50);
        let json = serde_json::to_string(&r).unwrap();
        assert!(json.contains("\"latency_us\""));
        r.print_human();
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn scenario_counts_parts_messages_and_expect_mismatches() {
        let addr = sink(false).await;
        let line = |text: String, expect: &str| ScenarioLine {
            source: "ACME".into(),
            destination: "8613800138000".into(),
            text,
            encoding: Encoding::Gsm7,
            expect: Some(expect.into()),
        };
        let cfg = LoadConfig {
            target: addr,
            sessions: 1,
            window: 10,
            count: 8,
            duration: Duration::from_secs(5),
            scenario: Some(vec![
                line("y".repeat(200), "ok"),                  // 2 parts, OK as expected
                line("please THROTTLE".into(), "0x00000058"), // throttled as expected
                line("hello".into(), "ESME_RTHROTTLED"),      // OK: mismatch
            ]),
            ..Default::default()
        };
        let r = bounded(run(cfg)).await.expect("run finished in time").unwrap();
        assert!(r.errors.is_empty(), "{:?}", r.errors);
        assert_eq!(r.sent, 8);
        assert_eq!(r.messages, 6);
        assert_eq!(r.responses, 8);
        assert_eq!(r.statuses.get("0x00000000"), Some(&6));
        assert_eq!(r.statuses.get("0x00000058"), Some(&2));
        assert_eq!(r.expect_mismatches, 2);
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn rate_cap_limits_the_total_send_rate() {
        let addr = sink(false).await;
        let cfg = LoadConfig {
            target: addr,
            sessions: 2,
            window: 50,
            count: 0,
            duration: Duration::from_millis(500),
            rate: Some(4000),
            ..Default::default()
        };
        let r = bounded(run(cfg)).await.expect("run finished in time").unwrap();
        assert!(r.errors.is_empty(), "{:?}", r.errors);
        // 4000/s for 0.5 s = 2000, plus the initial token per session.
        assert!((1700..=2200).contains(&r.sent), "sent {}", r.sent);
        assert_eq!(r.responses, r.sent);
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn refused_bind_and_refused_connect_are_reported() {
        let addr = sink(true).await;
        let cfg = LoadConfig { target: addr, sessions: 2, count: 10, ..Default::default() };
        let r = bounded(run(cfg)).await.unwrap().unwrap();
        assert_eq!(r.bind_failures, 2);
        assert_eq!(r.sent, 0);
        assert_eq!(r.errors.len(), 2);
        assert!(r.errors[0].contains("0x0000000d"), "{:?}", r.errors);

        let l = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let dead = l.local_addr().unwrap();
        drop(l);
        let cfg = LoadConfig { target: dead, sessions: 1, count: 10, ..Default::default() };
        let r = bounded(run(cfg)).await.unwrap().unwrap();
        assert_eq!(r.sent, 0);
        assert!(r.errors[0].contains("connect"), "{:?}", r.errors);
    }
}

#[cfg(test)]
mod perf {
    use super::*;
    use crate::smpp::pdu::encode_bind_resp;
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    use tokio::net::TcpListener;

    /// Fastest possible sink: header-only parsing, one write per read.
    async fn fast_sink() -> SocketAddr {
        let l = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = l.local_addr().unwrap();
        tokio::spawn(async move {
            while let Ok((mut s, _)) = l.accept().await {
                s.set_nodelay(true).unwrap();
                tokio::spawn(async move {
                    let mut inb = BytesMut::with_capacity(1 << 18);
                    let mut out = BytesMut::with_capacity(1 << 18);
                    let mut framer = Framer::new(MAX_PDU_BYTES);
                    loop {
                        inb.reserve(1 << 17);
                        match s.read_buf(&mut inb).await {
                            Ok(0) | Err(_) => return,
                            Ok(_) => {}
                        }
                        let mut pos = 0;
                        let mut close = false;
                        while let Next::Frame(n) = framer.next(&inb[pos..]) {
                            let h = Header::read(&inb[pos..]);
                            pos += n;
                            match h.command_id {
                                cmd::SUBMIT_SM => {
                                    put_resp_with_id(&mut out, cmd::SUBMIT_SM_RESP, 0, h.sequence_number, b"1")
                                }
                                cmd::BIND_TRANSCEIVER => out.extend_from_slice(&encode_bind_resp(
                                    BindType::Transceiver,
                                    0,
                                    h.sequence_number,
                                    "s",
                                )),
                                cmd::UNBIND => {
                                    put_header_only(&mut out, cmd::UNBIND_RESP, 0, h.sequence_number);
                                    close = true;
                                }
                                _ => {}
                            }
                        }
                        inb.advance(pos);
                        if s.write_all(&out).await.is_err() {
                            return;
                        }
                        out.clear();
                        if close {
                            return;
                        }
                    }
                });
            }
        });
        addr
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    #[ignore = "throughput smoke test: cargo test --release --lib load::perf -- --ignored --nocapture"]
    async fn throughput() {
        let addr = fast_sink().await;
        for (sessions, window) in [(4, 100), (2, 500), (4, 1000)] {
            let cfg = LoadConfig {
                target: addr,
                sessions,
                window,
                count: 0,
                duration: Duration::from_secs(3),
                ..Default::default()
            };
            let r = run(cfg).await.unwrap();
            println!(
                "{sessions}x{window}: {:.0} submit/s, sent {}, unanswered {}, p50 {} µs, errors {:?}",
                r.submit_per_second, r.sent, r.unanswered, r.latency_us.p50, r.errors
            );
        }
    }
}
