//! What a run reports: counts, latency percentiles and, for a replay, recorded vs replayed
//! statuses.

use std::collections::BTreeMap;

use crate::pcap::ExtractSummary;

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
    /// The sessions ran over TLS (`--tls-ca`).
    pub tls: bool,
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
    /// `--cmpp`: the CMPP version spoken (`"3.0"`, `"2.0"`); then `statuses` are SUBMIT_RESP
    /// Results and `receipts` status reports. Absent for SMPP.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub cmpp: Option<String>,
}

/// The replay section of the report.
#[derive(Debug, Clone, serde::Serialize)]
pub struct ReplayReport {
    /// `1x`, `10x`, `max`, …
    pub speed: String,
    /// What was read from the capture: PDUs, streams, skipped streams, damage.
    pub capture: ExtractSummary,
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
    /// Why the run failed, for `consentgate load`'s exit status: binds refused, submits
    /// unanswered, statuses other than a scenario's `expect`, session errors. Empty when the
    /// run went as asked. (Replayed statuses that differ from the recorded ones are a
    /// finding, not a failure: a replay is often run against another config on purpose.)
    pub fn failures(&self) -> Vec<String> {
        let mut f = Vec::new();
        if self.bind_failures > 0 {
            f.push(format!("{} bind(s) refused", self.bind_failures));
        }
        if self.unanswered > 0 {
            f.push(format!("{} submit(s) unanswered", self.unanswered));
        }
        if self.expect_mismatches > 0 {
            f.push(format!("{} response(s) not as the scenario expects", self.expect_mismatches));
        }
        if !self.errors.is_empty() && self.bind_failures == 0 {
            f.push(format!("{} session error(s): {}", self.errors.len(), self.errors.join("; ")));
        }
        f
    }

    /// Prints a compact table to stdout.
    pub fn print_human(&self) {
        let l = &self.latency_us;
        println!("load report");
        let over = match (&self.cmpp, self.tls) {
            (Some(v), _) => format!(" over CMPP {v} (statuses are Results)"),
            (None, true) => " over TLS".to_owned(),
            (None, false) => String::new(),
        };
        println!("  {:<22} {} × {}{over}", "sessions × window", self.sessions, self.window);
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
