//! Every metric name, its labels, unit and help text, in one place (STYLE §10), and the
//! Prometheus recorder.
//!
//! Conventions: prefix `consentgate_`, base units (seconds, bytes), `_total` for counters,
//! bounded labels only — account ids come from the config (`account="unknown"` for a bind
//! from a system_id that is not configured), never an MSISDN, an address or message text.
//!
//! Hot-path rule (STYLE §11): nothing here is called per message. Sessions count into plain
//! integers and add the differences to handles resolved once per session, on their 100 ms
//! tick and when they close; timings are sampled (see [`DECISION_SAMPLE_EVERY`]).

use std::sync::OnceLock;
use std::time::Duration;

use metrics::{describe_counter, describe_gauge, describe_histogram, Unit};
use metrics_exporter_prometheus::{Matcher, PrometheusBuilder, PrometheusHandle};

/// `{account, verdict, reason}` — one per submit_sm / data_sm destination decided (a
/// submit_multi counts once per destination). verdict: `accepted` | `rejected` |
/// `would_reject`; reason: a [`crate::policy::Reason`] label, or `none` when accepted.
pub const SUBMIT_TOTAL: &str = "consentgate_submit_total";
/// Histogram: time spent in the policy decision for one destination (sampled: one in
/// [`DECISION_SAMPLE_EVERY`]).
pub const DECISION_DURATION: &str = "consentgate_decision_duration_seconds";
/// Histogram `{account}`: from writing a relayed request to the SMSC until its response
/// arrived (sampled: one in [`UPSTREAM_SAMPLE_EVERY`]).
pub const UPSTREAM_RESPONSE_DURATION: &str = "consentgate_upstream_response_duration_seconds";
/// `{direction, command}` — PDUs read; direction `from_esme` | `from_smsc`; command the SMPP
/// command name (`submit_sm`, `deliver_sm_resp`, …; `other` for unknown ids).
pub const PDUS_TOTAL: &str = "consentgate_pdus_total";
/// Gauge `{side}` — bound ESME sessions (`esme`) and their paired SMSC binds (`smsc`).
pub const SESSIONS: &str = "consentgate_sessions";
/// `{account, result}` — bind attempts: `ok`, `refused` (by consentgate: unknown system_id,
/// licence, bind type, the account's `max_sessions`), `upstream_refused`,
/// `upstream_unreachable`.
pub const BINDS_TOTAL: &str = "consentgate_binds_total";
/// Gauge `{account}` — requests relayed to the SMSC and not yet answered (window occupancy;
/// the limit is `session.window` per session).
pub const WINDOW_IN_FLIGHT: &str = "consentgate_window_in_flight";
/// Gauge: 1 when the last probe (every [`UPSTREAM_PROBE_EVERY`], and on each `/readyz`)
/// reached the upstream SMSC with a TCP connection, else 0.
pub const UPSTREAM_REACHABLE: &str = "consentgate_upstream_reachable";
/// Gauge `{kind}` — records in the serving snapshot: `dnc`, `pair` (consent statements).
pub const SNAPSHOT_RECORDS: &str = "consentgate_snapshot_records";
/// Gauge: unix time the serving snapshot was loaded (0 = none loaded).
pub const SNAPSHOT_LOADED_TIMESTAMP: &str = "consentgate_snapshot_loaded_timestamp_seconds";
/// Gauge: unix time the serving snapshot was built (how old its data is).
pub const SNAPSHOT_BUILT_TIMESTAMP: &str = "consentgate_snapshot_built_timestamp_seconds";
/// `{result}` — reload attempts: `ok` | `refused` (the previous snapshot keeps serving).
pub const SNAPSHOT_RELOADS_TOTAL: &str = "consentgate_snapshot_reloads_total";
/// `{result}` — config reloads (SIGHUP, `POST /v1/config/reload`, `--watch-config`): `ok`
/// (in force), `invalid` (refused with problems; the running config stays), `error` (could
/// not finish).
pub const CONFIG_RELOADS_TOTAL: &str = "consentgate_config_reloads_total";
/// Gauge: unix time of the last successful config load (the start, then each reload).
pub const CONFIG_LAST_RELOAD_SUCCESS_TIMESTAMP: &str = "consentgate_config_last_reload_success_timestamp_seconds";
/// Gauge: settings changed in the config file that only a restart puts in force (listen
/// addresses, directories, node id, …); 0 when the process runs what the file says.
pub const CONFIG_RESTART_REQUIRED: &str = "consentgate_config_restart_required";
/// Gauge `{sha256}`: 1 for the running config's SHA-256, 0 for configs it replaced.
pub const CONFIG_INFO: &str = "consentgate_config_info";
/// `{result}` — frequency-cap state saves (checkpoints and the save at stop): `ok` | `failed`.
pub const FREQUENCY_STATE_SAVES_TOTAL: &str = "consentgate_frequency_state_saves_total";
/// Gauge: unix time of the last frequency-cap state save that succeeded.
pub const FREQUENCY_STATE_SAVED_TIMESTAMP: &str = "consentgate_frequency_state_saved_timestamp_seconds";
/// Gauge: 1 while the gateway drains (`POST /v1/drain`): binds refused, `/readyz` 503.
pub const DRAINING: &str = "consentgate_draining";
/// Gauge: live statements held in memory on top of the snapshot (journalled since the
/// snapshot's watermark).
pub const DELTA_STATEMENTS: &str = "consentgate_delta_statements";
/// `{source}` — refusals recorded: `mo` (keyword captured from an MO), `api` (admin API).
pub const OPTOUTS_TOTAL: &str = "consentgate_optouts_total";
/// `{source, kind}` — statements posted through the admin API: kind `grant` | `revoke` | `dnc`.
pub const STATEMENTS_TOTAL: &str = "consentgate_statements_total";
/// Histogram: one journal group commit (write + fdatasync).
pub const JOURNAL_FSYNC_DURATION: &str = "consentgate_journal_fsync_duration_seconds";
/// `{kind}` — failed journal appends, each retried until it succeeds: kind `write` |
/// `fsync` | `rotate` | `poisoned` | `recover` (see `consent::store`).
pub const JOURNAL_WRITE_FAILURES_TOTAL: &str = "consentgate_journal_write_failures_total";
/// Gauge: 1 while the journal writer's appends succeed, 0 while they fail (and are retried) or
/// after it stopped. Absent without a journal.
pub const JOURNAL_HEALTHY: &str = "consentgate_journal_healthy";
/// `{stage, kind}` — things that went wrong: stage `esme` | `smsc` | `journal` | `audit` |
/// `admin`; kind a short stable word (`malformed_pdu`, `response_timeout`, …).
pub const ERRORS_TOTAL: &str = "consentgate_errors_total";
/// `{result}` — decision audit records: `written` | `dropped` (queue full or disk failing).
pub const AUDIT_RECORDS_TOTAL: &str = "consentgate_audit_records_total";
/// `{result}` — `[capture]` records (the bytes of one read or write on a leg) `written` to a
/// pcapng file or `dropped` (queue full, disk failing).
pub const CAPTURE_RECORDS_TOTAL: &str = "consentgate_capture_records_total";
/// Gauge `{status}` — complaints in the register (architecture §7), read at scrape time: `open`
/// (not yet resolved, overdue ones included), `overdue` (open past their due date: the
/// subset an alert watches), `closed`.
pub const COMPLAINTS: &str = "consentgate_complaints";
/// `{result}` — `POST /v1/complaints`: `accepted` (stored, consent revoked), `duplicate` (a
/// reference already filed), `incomplete` (422: fields missing), `invalid` (422: a field
/// unusable), `failed` (the journal or the register could not take it; nothing acknowledged).
pub const COMPLAINTS_TOTAL: &str = "consentgate_complaints_total";
/// Gauge: entities suspended by complaints now (step 1, `suspended`).
pub const ENTITIES_SUSPENDED: &str = "consentgate_entities_suspended";
/// `{limit}` — a limit of architecture §9 acted: `bind_backoff` (a bind refused because its source
/// IP is backing off), `bind_backoff_started` (an IP passed `limits.bind_failures_per_ip`),
/// `pdu_timeout` (a session closed with a PDU unfinished past `session.pdu_timeout`),
/// `sessions` (a connection refused at `session.max_sessions`), `account_sessions` (a bind
/// refused at an account's `max_sessions`), `unbound_per_ip` / `unbound_total` (an SMPP
/// connection closed at once at `limits.unbound_per_ip` / `limits.unbound_total`: too many
/// connections not bound yet), `admin_connections` (an admin connection closed at once at
/// `admin.max_connections`), `admin_header_timeout` (an admin connection closed without a
/// complete request head within `admin.header_timeout`), `fd_reserve` (an accept loop paused
/// with open descriptors within the reserve of RLIMIT_NOFILE), `accept_error` (accept
/// failed — EMFILE, ENFILE, … — and the loop backed off).
pub const LIMITS_TOTAL: &str = "consentgate_limits_total";
/// `{leg, result}` — TLS handshakes: `leg` = `esme` | `smsc`, `result` = `ok` | `failed`.
pub const TLS_HANDSHAKES_TOTAL: &str = "consentgate_tls_handshakes_total";
/// `{result}` — certificate reloads (SIGHUP, and a config reload through the admin API), one
/// per leg configured: `ok` | `refused` (the previous ones keep serving).
pub const TLS_RELOADS_TOTAL: &str = "consentgate_tls_reloads_total";
/// Gauge: 1 while the frequency-cap exchange (`replication.caps`) is connected to Redis.
pub const CAPS_EXCHANGE_CONNECTED: &str = "consentgate_caps_exchange_connected";
/// `{direction}` — frequency-cap marks (one per message step 8 allowed): `sent` to the other
/// nodes, `applied` from them, `dropped` (queued past the limit while Redis was down).
pub const CAPS_EXCHANGE_MARKS_TOTAL: &str = "consentgate_caps_exchange_marks_total";
/// Gauge `{leg}` — notAfter (unix time) of the certificate chain consentgate presents on a
/// leg, the earliest of the chain's certificates: `esme` = the `[listen.tls]` certificate
/// served to ESMEs, `smsc` = the `[upstream.tls]` client certificate (absent without one).
/// Set at start and at each TLS reload that succeeds.
pub const TLS_CERTIFICATE_EXPIRY: &str = "consentgate_tls_certificate_expiry_timestamp_seconds";
/// Gauge `{conn}` — 1 while replication's connection to Redis is up (architecture §8): `conn` =
/// `publisher` | `reader`.
pub const REPLICATION_CONNECTED: &str = "consentgate_replication_connected";
/// Gauge: how far the reader is behind the stream: now minus the time of the newest entry
/// it applied while it still has more to read, 0 when caught up; while disconnected, the time
/// since it was last caught up.
pub const REPLICATION_LAG_SECONDS: &str = "consentgate_replication_lag_seconds";
/// `{direction}` — statements through the stream: `published` (this node's, sent), `applied`
/// (another node's, applied and journalled here), `duplicate` (another node's, already held),
/// `invalid` (an entry that is not a statement; skipped and logged).
pub const REPLICATION_STATEMENTS_TOTAL: &str = "consentgate_replication_statements_total";
/// Gauge: this node's durable statements not yet confirmed in the stream.
pub const REPLICATION_UNPUBLISHED: &str = "consentgate_replication_unpublished_statements";
/// `{conn, kind}` — replication errors: `connect`, `timeout`, `io`, `protocol`, `server`,
/// `journal`; each is followed by a reconnect with back-off. `blocked` (publisher): a
/// condition only an operator can clear stopped it (see [`REPLICATION_BLOCKED`]).
pub const REPLICATION_ERRORS_TOTAL: &str = "consentgate_replication_errors_total";
/// Gauge `{reason}` — 1 while replication is blocked for that reason (a
/// [`crate::replication::BlockReason`] label: `lease_held`, `journal_behind_marker`,
/// `other_journal`, `recorded` on the publisher; `stream_trimmed`, `newer_schema` on the
/// reader), else 0. The node is not ready meanwhile; `/readyz` has the full reason.
pub const REPLICATION_BLOCKED: &str = "consentgate_replication_blocked";
/// Gauge `{version}` = 1.
pub const BUILD_INFO: &str = "consentgate_build_info";

// The standard process metrics, under the names every Prometheus client library uses. Read
// from /proc/self at scrape time and rendered by [`super::process`] (not through the
// recorder: its counters are integers and CPU time is not); absent where there is no /proc.

/// Counter: user + system CPU time of the process, seconds.
pub const PROCESS_CPU_SECONDS_TOTAL: &str = "process_cpu_seconds_total";
/// Gauge: resident set size, bytes.
pub const PROCESS_RESIDENT_MEMORY: &str = "process_resident_memory_bytes";
/// Gauge: virtual memory size, bytes.
pub const PROCESS_VIRTUAL_MEMORY: &str = "process_virtual_memory_bytes";
/// Gauge: open file descriptors (sockets, journal, audit and snapshot files, …).
pub const PROCESS_OPEN_FDS: &str = "process_open_fds";
/// Gauge: the soft `RLIMIT_NOFILE` (raised to the hard limit at start).
pub const PROCESS_MAX_FDS: &str = "process_max_fds";
/// Gauge: unix time the process started.
pub const PROCESS_START_TIME: &str = "process_start_time_seconds";

/// One decision in this many is timed (a clock read costs about as much as the decision).
pub const DECISION_SAMPLE_EVERY: u32 = 64;
/// One relayed request in this many has its upstream response time observed.
pub const UPSTREAM_SAMPLE_EVERY: u32 = 16;

const DECISION_BUCKETS: &[f64] = &[1e-7, 2.5e-7, 5e-7, 1e-6, 2.5e-6, 5e-6, 1e-5, 2.5e-5, 1e-4, 1e-3];
const RESPONSE_BUCKETS: &[f64] =
    &[1e-4, 2.5e-4, 5e-4, 1e-3, 2.5e-3, 5e-3, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0];
const FSYNC_BUCKETS: &[f64] = &[1e-4, 2.5e-4, 5e-4, 1e-3, 2.5e-3, 5e-3, 0.01, 0.025, 0.05, 0.1, 0.25, 1.0];

/// How often the gateway probes the upstream SMSC for [`UPSTREAM_REACHABLE`].
pub const UPSTREAM_PROBE_EVERY: Duration = Duration::from_secs(10);

/// How often the exporter drains histogram samples into buckets (bounds their memory).
pub const UPKEEP_EVERY: Duration = Duration::from_secs(5);

static HANDLE: OnceLock<PrometheusHandle> = OnceLock::new();

/// Installs the process-wide Prometheus recorder once (later calls return the same handle)
/// and describes every metric. Metrics recorded before this call are lost, so the gateway
/// calls it before binding.
pub fn install() -> PrometheusHandle {
    HANDLE
        .get_or_init(|| {
            let recorder = PrometheusBuilder::new()
                .set_buckets_for_metric(Matcher::Full(DECISION_DURATION.into()), DECISION_BUCKETS)
                .and_then(|b| {
                    b.set_buckets_for_metric(Matcher::Full(UPSTREAM_RESPONSE_DURATION.into()), RESPONSE_BUCKETS)
                })
                .and_then(|b| b.set_buckets_for_metric(Matcher::Full(JOURNAL_FSYNC_DURATION.into()), FSYNC_BUCKETS))
                .expect("bucket lists are non-empty")
                .build_recorder();
            let handle = recorder.handle();
            // Another recorder may already be installed (an embedding program): then ours
            // renders nothing, which /metrics makes visible, rather than panicking.
            let _ = metrics::set_global_recorder(recorder);
            describe();
            metrics::gauge!(BUILD_INFO, "version" => env!("CARGO_PKG_VERSION"), "commit" => super::COMMIT, "built" => super::BUILD_DATE)
                .set(1.0);
            register_alerting_series();
            handle
        })
        .clone()
}

/// The recorder's handle, if [`install`] ran.
pub fn handle() -> Option<&'static PrometheusHandle> {
    HANDLE.get()
}

/// Runs the exporter's upkeep (histogram draining) every [`UPKEEP_EVERY`] until dropped.
pub async fn upkeep(handle: PrometheusHandle) {
    let mut t = tokio::time::interval(UPKEEP_EVERY);
    loop {
        t.tick().await;
        handle.run_upkeep();
    }
}

/// Creates, at 0, the counter series that alerts watch with `increase()`: a series born with
/// its first increment would hide that first event from `increase()` over a window.
fn register_alerting_series() {
    for result in ["ok", "refused"] {
        metrics::counter!(SNAPSHOT_RELOADS_TOTAL, "result" => result).increment(0);
    }
    for result in ["ok", "invalid", "error"] {
        metrics::counter!(CONFIG_RELOADS_TOTAL, "result" => result).increment(0);
    }
    for result in ["ok", "failed"] {
        metrics::counter!(FREQUENCY_STATE_SAVES_TOTAL, "result" => result).increment(0);
    }
    metrics::gauge!(DRAINING).set(0.0);
    metrics::gauge!(CONFIG_RESTART_REQUIRED).set(0.0);
    for result in ["written", "dropped"] {
        metrics::counter!(AUDIT_RECORDS_TOTAL, "result" => result).increment(0);
    }
    for source in ["mo", "api"] {
        metrics::counter!(OPTOUTS_TOTAL, "source" => source).increment(0);
    }
    for limit in [
        "bind_backoff",
        "bind_backoff_started",
        "pdu_timeout",
        "sessions",
        "account_sessions",
        "unbound_per_ip",
        "unbound_total",
        "admin_connections",
        "admin_header_timeout",
        "fd_reserve",
        "accept_error",
    ] {
        metrics::counter!(LIMITS_TOTAL, "limit" => limit).increment(0);
    }
    for result in ["accepted", "duplicate", "incomplete", "invalid", "failed"] {
        metrics::counter!(COMPLAINTS_TOTAL, "result" => result).increment(0);
    }
    for kind in ["write", "fsync"] {
        metrics::counter!(JOURNAL_WRITE_FAILURES_TOTAL, "kind" => kind).increment(0);
    }
    for kind in ["fsync_failed", "optout_not_durable"] {
        metrics::counter!(ERRORS_TOTAL, "stage" => "journal", "kind" => kind).increment(0);
    }
}

fn describe() {
    describe_counter!(
        SUBMIT_TOTAL,
        Unit::Count,
        "submit_sm/data_sm destinations decided, by account, verdict and reason"
    );
    describe_histogram!(DECISION_DURATION, Unit::Seconds, "policy decision time per destination (sampled 1/64)");
    describe_histogram!(
        UPSTREAM_RESPONSE_DURATION,
        Unit::Seconds,
        "time from relaying a request to the SMSC until its response (sampled 1/16)"
    );
    describe_counter!(PDUS_TOTAL, Unit::Count, "PDUs read, by direction and SMPP command");
    describe_gauge!(SESSIONS, Unit::Count, "bound sessions: esme = ESME binds, smsc = their paired upstream binds");
    describe_counter!(BINDS_TOTAL, Unit::Count, "bind attempts by account and result");
    describe_gauge!(WINDOW_IN_FLIGHT, Unit::Count, "requests relayed upstream and not yet answered");
    describe_gauge!(UPSTREAM_REACHABLE, Unit::Count, "1 if the last probe reached the upstream SMSC");
    describe_gauge!(SNAPSHOT_RECORDS, Unit::Count, "records in the serving consent snapshot");
    describe_gauge!(SNAPSHOT_LOADED_TIMESTAMP, Unit::Seconds, "unix time the serving snapshot was loaded");
    describe_gauge!(SNAPSHOT_BUILT_TIMESTAMP, Unit::Seconds, "unix time the serving snapshot was built");
    describe_counter!(SNAPSHOT_RELOADS_TOTAL, Unit::Count, "snapshot reload attempts by result");
    describe_counter!(CONFIG_RELOADS_TOTAL, Unit::Count, "config reloads by result");
    describe_gauge!(
        CONFIG_LAST_RELOAD_SUCCESS_TIMESTAMP,
        Unit::Seconds,
        "unix time of the last successful config load"
    );
    describe_gauge!(CONFIG_INFO, Unit::Count, "1 for the running config's SHA-256");
    describe_gauge!(CONFIG_RESTART_REQUIRED, Unit::Count, "config changes waiting for a restart");
    describe_counter!(FREQUENCY_STATE_SAVES_TOTAL, Unit::Count, "frequency-cap state saves by result");
    describe_gauge!(FREQUENCY_STATE_SAVED_TIMESTAMP, Unit::Seconds, "unix time of the last frequency-cap state save");
    describe_gauge!(DRAINING, Unit::Count, "1 while the gateway drains");
    describe_gauge!(DELTA_STATEMENTS, Unit::Count, "live consent statements held on top of the snapshot");
    describe_counter!(OPTOUTS_TOTAL, Unit::Count, "refusals recorded, by source");
    describe_counter!(STATEMENTS_TOTAL, Unit::Count, "consent statements recorded, by source and kind");
    describe_histogram!(JOURNAL_FSYNC_DURATION, Unit::Seconds, "journal group commit (write + fdatasync)");
    describe_counter!(JOURNAL_WRITE_FAILURES_TOTAL, Unit::Count, "failed journal appends (retried until they succeed)");
    describe_gauge!(JOURNAL_HEALTHY, "1 while journal appends succeed, 0 while they fail and are retried");
    describe_counter!(ERRORS_TOTAL, Unit::Count, "errors by stage and kind");
    describe_counter!(AUDIT_RECORDS_TOTAL, Unit::Count, "decision audit records written or dropped");
    describe_counter!(CAPTURE_RECORDS_TOTAL, Unit::Count, "capture records (one leg read or write) written or dropped");
    describe_gauge!(COMPLAINTS, Unit::Count, "complaints in the register: open (overdue included), overdue, closed");
    describe_counter!(COMPLAINTS_TOTAL, Unit::Count, "complaints posted, by result");
    describe_gauge!(ENTITIES_SUSPENDED, Unit::Count, "entities suspended by complaints");
    describe_counter!(
        LIMITS_TOTAL,
        Unit::Count,
        "limits that acted: bind back-off, pdu timeout, session and connection caps, descriptors"
    );
    describe_counter!(TLS_HANDSHAKES_TOTAL, Unit::Count, "TLS handshakes by leg and result");
    describe_counter!(TLS_RELOADS_TOTAL, Unit::Count, "TLS certificate reloads by result");
    describe_gauge!(
        TLS_CERTIFICATE_EXPIRY,
        Unit::Seconds,
        "unix time the certificate chain presented on a leg expires (its earliest notAfter)"
    );
    describe_gauge!(REPLICATION_CONNECTED, Unit::Count, "1 while the replication connection (publisher, reader) is up");
    describe_gauge!(REPLICATION_LAG_SECONDS, Unit::Seconds, "how far the replication reader is behind the stream");
    describe_counter!(REPLICATION_STATEMENTS_TOTAL, Unit::Count, "statements published, applied, duplicate or invalid");
    describe_gauge!(REPLICATION_UNPUBLISHED, Unit::Count, "durable local statements not yet confirmed in the stream");
    describe_counter!(REPLICATION_ERRORS_TOTAL, Unit::Count, "replication errors by connection and kind");
    describe_gauge!(
        REPLICATION_BLOCKED,
        Unit::Count,
        "1 while replication is blocked for that reason (operator action needed)"
    );
    describe_gauge!(BUILD_INFO, Unit::Count, "build information");
}
