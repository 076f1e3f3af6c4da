//! Table-driven tests of [`decide`] for one marketing account ("acme-retail") over a snapshot
//! built in memory and a live delta. Configs go through [`Config::parse`] so they are validated.

use super::*;
use crate::config::{days_from_civil, Config};
use crate::consent::delta::Delta;
use crate::consent::snapshot::{Snapshot, SnapshotBuilder};
use crate::consent::statement::{EntityName, NodeId, Statement, StatementId, StatementKind, StatementSource};
use crate::smpp::peek::Addr;
use crate::smpp::text::Coding;
use crate::time::Now;

const ENTITY: &str = "acme-retail";
/// Snapshot statement times (Unix ms): T1 < T2, live statements later still.
const T1: i64 = 1_760_000_000_000;
const T2: i64 = 1_770_000_000_000;
const LIVE: i64 = 1_780_000_000_000;

// Destinations (E.164 digits).
const GRANTED: u64 = 8613800000001;
const NONE: u64 = 8613800000002;
const REVOKED: u64 = 8613800000003;
const DNC: u64 = 8613800000004;
const DNC_AFTER_GRANT: u64 = 8613800000005;
const GRANT_AFTER_DNC: u64 = 8613800000006;
/// Granted for another entity only: no standing for ours.
const OTHER_ENTITY: u64 = 8613800000007;

const SENDER: &[u8] = b"1069012345";

fn today() -> i64 {
    days_from_civil(2026, 6, 1)
}

/// A validated config: `policy` lines go under `[policy]`, `account` lines are appended to the
/// single marketing account `acme`; a transactional account `otp` is always present.
fn config(policy: &str, account: &str) -> Config {
    let text = format!(
        r#"
[upstream]
address = "10.1.2.3:2775"

[policy]
{policy}

[[account]]
system_id = "acme"
entity = "{ENTITY}"
class = "marketing"
licence = "B2-20230001"
licence_expires = "2027-12-31"
sender_id = ["1069*", "955*"]
{account}

[[account]]
system_id = "otp"
entity = "{ENTITY}"
class = "transactional"
licence = "B2-20230002"
"#
    );
    Config::parse(&text).unwrap_or_else(|e| panic!("config does not validate: {e:?}\n{text}"))
}

fn snapshot() -> Snapshot {
    let mut b = SnapshotBuilder::new();
    b.add_statement(GRANTED, ENTITY, StatementKind::Grant, T1).unwrap();
    b.add_statement(REVOKED, ENTITY, StatementKind::Grant, T1).unwrap();
    b.add_statement(REVOKED, ENTITY, StatementKind::Revoke, T2).unwrap();
    b.add_dnc(DNC, T1).unwrap();
    b.add_statement(DNC_AFTER_GRANT, ENTITY, StatementKind::Grant, T1).unwrap();
    b.add_dnc(DNC_AFTER_GRANT, T2).unwrap();
    b.add_dnc(GRANT_AFTER_DNC, T1).unwrap();
    b.add_statement(GRANT_AFTER_DNC, ENTITY, StatementKind::Grant, T2).unwrap();
    b.add_statement(OTHER_ENTITY, "other-brand", StatementKind::Grant, T1).unwrap();
    b.into_snapshot().expect("snapshot")
}

/// One scenario: config, snapshot (if loaded), delta, and the day.
struct World {
    cfg: Config,
    snap: Option<Snapshot>,
    delta: Delta,
    today: i64,
    seq: u64,
    /// The decision's instant (Unix ms); `None` = noon UTC of `today`.
    at_ms: Option<i64>,
    /// Built at the first decision and kept: the frequency counters live in it.
    engine: std::cell::OnceCell<Engine>,
}

impl World {
    fn new(policy: &str, account: &str) -> World {
        World {
            cfg: config(policy, account),
            snap: Some(snapshot()),
            delta: Delta::new(),
            today: today(),
            seq: 0,
            at_ms: None,
            engine: std::cell::OnceCell::new(),
        }
    }

    fn live(&mut self, kind: StatementKind, msisdn: u64, at: i64) {
        self.seq += 1;
        let entity = kind.has_entity().then(|| EntityName::parse(ENTITY).unwrap());
        let id = StatementId { origin: NodeId::parse("test").unwrap(), seq: self.seq };
        self.delta.apply(&Statement { at, kind, source: StatementSource::Api, msisdn, entity, id });
    }

    fn decide_full(&self, system_id: &str, src: &[u8], dest: Addr, service_type: &[u8]) -> Verdict {
        self.decide_message(system_id, src, dest, service_type, None)
    }

    /// Decides a message of `text` (UCS-2 on the wire, decoded and folded as a session does
    /// when the engine reads text); `None` = no text.
    fn decide_message(
        &self,
        system_id: &str,
        src: &[u8],
        dest: Addr,
        service_type: &[u8],
        text: Option<&str>,
    ) -> Verdict {
        let engine = self.engine.get_or_init(|| self.cfg.engine());
        let ucs2: Vec<u8> = text.unwrap_or("").encode_utf16().flat_map(u16::to_be_bytes).collect();
        let data = ConsentView {
            snapshot: self.snap.as_ref(),
            delta: &self.delta,
            live_entity: Some(self.delta.intern(ENTITY)),
            snap_entity: self.snap.as_ref().and_then(|s| s.entity_id(ENTITY)),
        };
        let m = Message {
            source: Addr { ton: 0, npi: 1, addr: src },
            destination: dest,
            service: service_type,
            coding: Coding::Ucs2,
            user_data: &ucs2,
            tlvs: &[],
            text: None,
        };
        let (mut scratch, mut folded) = (String::new(), String::new());
        m.fold_text_into(&mut scratch, &mut folded);
        let idx = engine.lookup(system_id).expect("account");
        let m = if text.is_some() && engine.reads_text(idx) { m.with_text(&folded) } else { m };
        let now = Now::at(self.at_ms.unwrap_or(self.today * 86_400_000 + 43_200_000));
        let d = engine.decide(idx, &data, &m, now);
        assert_eq!(
            d.status,
            match d.verdict {
                Verdict::Reject(r) => engine.status(r),
                _ => 0,
            },
            "status of {d:?}"
        );
        d.verdict
    }

    /// [`World::decide`] with a text.
    fn say(&self, msisdn: u64, text: &str) -> Verdict {
        let digits = msisdn.to_string();
        self.decide_message("acme", SENDER, Addr { ton: 1, npi: 1, addr: digits.as_bytes() }, b"", Some(text))
    }

    /// The marketing account, an allowed sender, an international destination.
    fn decide(&self, msisdn: u64) -> Verdict {
        let digits = msisdn.to_string();
        self.decide_full("acme", SENDER, Addr { ton: 1, npi: 1, addr: digits.as_bytes() }, b"")
    }
}

use Reason as R;
use Verdict::{Accept, Reject, WouldReject};

#[test]
fn snapshot_standing_per_regime_and_mode() {
    // (destination, opt-in enforce, opt-out enforce, opt-in monitor)
    let table: [(&str, u64, Verdict, Verdict, Verdict); 7] = [
        ("granted", GRANTED, Accept, Accept, Accept),
        ("none", NONE, Reject(R::NoConsent), Accept, WouldReject(R::NoConsent)),
        ("other entity only", OTHER_ENTITY, Reject(R::NoConsent), Accept, WouldReject(R::NoConsent)),
        ("revoked", REVOKED, Reject(R::Revoked), Reject(R::Revoked), WouldReject(R::Revoked)),
        ("dnc", DNC, Reject(R::Dnc), Reject(R::Dnc), WouldReject(R::Dnc)),
        ("dnc after grant", DNC_AFTER_GRANT, Reject(R::Dnc), Reject(R::Dnc), WouldReject(R::Dnc)),
        ("grant after dnc", GRANT_AFTER_DNC, Accept, Accept, Accept),
    ];
    let opt_in = World::new("mode = \"enforce\"\nregime = \"opt-in\"", "");
    let opt_out = World::new("mode = \"enforce\"\nregime = \"opt-out\"", "");
    let monitor = World::new("mode = \"monitor\"\nregime = \"opt-in\"", "");
    for (name, msisdn, want_in, want_out, want_mon) in table {
        assert_eq!(opt_in.decide(msisdn), want_in, "{name}: opt-in enforce");
        assert_eq!(opt_out.decide(msisdn), want_out, "{name}: opt-out enforce");
        let got = monitor.decide(msisdn);
        assert_eq!(got, want_mon, "{name}: monitor");
        assert!(got.forwards(), "{name}: monitor always forwards");
    }
}

#[test]
fn opt_out_monitor_turns_rejects_into_would_reject() {
    let w = World::new("mode = \"monitor\"\nregime = \"opt-out\"", "");
    assert_eq!(w.decide(NONE), Accept);
    assert_eq!(w.decide(REVOKED), WouldReject(R::Revoked));
    assert_eq!(w.decide(DNC), WouldReject(R::Dnc));
}

#[test]
fn live_delta_overrides_snapshot() {
    // (name, live statements, destination, expected under opt-in enforce)
    type Live = &'static [(StatementKind, u64, i64)];
    let table: [(&str, Live, u64, Verdict); 5] = [
        ("live revoke after snapshot grant", &[(StatementKind::Revoke, GRANTED, LIVE)], GRANTED, Reject(R::Revoked)),
        ("live grant after snapshot dnc", &[(StatementKind::Grant, DNC, LIVE)], DNC, Accept),
        ("live grant after snapshot revoke", &[(StatementKind::Grant, REVOKED, LIVE)], REVOKED, Accept),
        (
            "live dnc after live grant",
            &[(StatementKind::Grant, NONE, LIVE), (StatementKind::Dnc, NONE, LIVE + 10)],
            NONE,
            Reject(R::Dnc),
        ),
        (
            "live grant after live dnc",
            &[(StatementKind::Dnc, NONE, LIVE), (StatementKind::Grant, NONE, LIVE + 10)],
            NONE,
            Accept,
        ),
    ];
    for (name, live, msisdn, want) in table {
        let mut w = World::new("regime = \"opt-in\"", "");
        for &(kind, m, at) in live {
            w.live(kind, m, at);
        }
        assert_eq!(w.decide(msisdn), want, "{name}");
    }
}

#[test]
fn live_dnc_alone_rejects_a_snapshot_grant() {
    let mut w = World::new("regime = \"opt-out\"", "");
    w.live(StatementKind::Dnc, GRANTED, LIVE);
    assert_eq!(w.decide(GRANTED), Reject(R::Dnc));
}

#[test]
fn grant_revoke_grant_sequence() {
    let mut w = World::new("regime = \"opt-in\"", "");
    assert_eq!(w.decide(NONE), Reject(R::NoConsent));
    let steps = [
        (StatementKind::Grant, Accept),
        (StatementKind::Revoke, Reject(R::Revoked)),
        (StatementKind::Grant, Accept),
        (StatementKind::Revoke, Reject(R::Revoked)),
    ];
    for (i, (kind, want)) in steps.into_iter().enumerate() {
        w.live(kind, NONE, LIVE + i as i64);
        assert_eq!(w.decide(NONE), want, "after step {i} ({kind:?})");
    }
}

#[test]
fn transactional_traffic_needs_no_consent() {
    let w = World::new(
        "regime = \"opt-in\"",
        "source_class = { \"955*\" = \"transactional\" }\nservice_type_class = { \"OTP\" = \"transactional\" }",
    );
    let dest = |s: &'static [u8]| Addr { ton: 1, npi: 1, addr: s };
    for msisdn in [b"8613800000002" as &[u8], b"8613800000003", b"8613800000004"] {
        // Transactional account.
        assert_eq!(w.decide_full("otp", SENDER, dest(msisdn), b""), Accept);
        // source_class override on the marketing account.
        assert_eq!(w.decide_full("acme", b"95588", dest(msisdn), b""), Accept);
        // service_type_class override.
        assert_eq!(w.decide_full("acme", SENDER, dest(msisdn), b"OTP"), Accept);
        // Neither override applies: consent is checked.
        assert!(matches!(w.decide_full("acme", SENDER, dest(msisdn), b"OTX"), Reject(_)));
    }
}

#[test]
fn sender_id_mismatch_rejects_before_consent() {
    let w = World::new("regime = \"opt-out\"", "");
    let dest = Addr { ton: 1, npi: 1, addr: b"8613800000001" };
    assert_eq!(w.decide_full("acme", b"12345", dest, b""), Reject(R::SenderId));
    assert_eq!(w.decide_full("acme", SENDER, dest, b""), Accept);
    let mon = World::new("mode = \"monitor\"", "");
    assert_eq!(mon.decide_full("acme", b"12345", dest, b""), WouldReject(R::SenderId));
}

#[test]
fn expired_licence_is_unlicensed() {
    let mut w = World::new("regime = \"opt-out\"", "");
    w.today = days_from_civil(2027, 12, 31);
    assert_eq!(w.decide(GRANTED), Accept, "last valid day");
    w.today += 1;
    assert_eq!(w.decide(GRANTED), Reject(R::Unlicensed));
    // Even transactional-by-service-type traffic of that account.
    let dest = Addr { ton: 1, npi: 1, addr: b"8613800000001" };
    assert_eq!(w.decide_full("acme", SENDER, dest, b"OTP"), Reject(R::Unlicensed));
}

#[test]
fn alphanumeric_destination() {
    let dest = Addr { ton: 5, npi: 0, addr: b"ACME" };
    let opt_in = World::new("regime = \"opt-in\"", "");
    assert_eq!(opt_in.decide_full("acme", SENDER, dest, b""), Reject(R::NoConsent));
    let opt_out = World::new("regime = \"opt-out\"", "");
    assert_eq!(opt_out.decide_full("acme", SENDER, dest, b""), Accept);
}

#[test]
fn no_snapshot_loaded() {
    // (policy, expected for a marketing message, expected for the transactional account)
    let table = [
        ("on_snapshot_unavailable = \"reject\"", Reject(R::SnapshotUnavailable)),
        ("on_snapshot_unavailable = \"allow\"", Accept),
        ("mode = \"monitor\"\non_snapshot_unavailable = \"reject\"", WouldReject(R::SnapshotUnavailable)),
    ];
    for (policy, want) in table {
        let mut w = World::new(policy, "");
        w.snap = None;
        assert_eq!(w.decide(GRANTED), want, "{policy}");
        assert_eq!(w.decide(NONE), want, "{policy}");
        let dest = Addr { ton: 1, npi: 1, addr: b"8613800000002" };
        assert_eq!(w.decide_full("otp", SENDER, dest, b""), Accept, "{policy}: transactional");
        // The live delta still answers on its own.
        w.live(StatementKind::Dnc, NONE, LIVE);
        assert_eq!(w.decide(NONE).reason(), Some(R::Dnc), "{policy}: live dnc without snapshot");
    }
}

#[test]
fn national_number_uses_default_country_code() {
    let nat = |s: &'static [u8]| Addr { ton: 2, npi: 1, addr: s };
    let w = World::new("regime = \"opt-in\"\ndefault_country_code = \"86\"", "");
    assert_eq!(w.decide_full("acme", SENDER, nat(b"13800000001"), b""), Accept);
    assert_eq!(w.decide_full("acme", SENDER, nat(b"013800000001"), b""), Accept, "trunk 0");
    assert_eq!(w.decide_full("acme", SENDER, nat(b"13800000004"), b""), Reject(R::Dnc));
    assert_eq!(w.decide_full("acme", SENDER, nat(b"13800000003"), b""), Reject(R::Revoked));
    // Another country code names another subscriber.
    let us = World::new("regime = \"opt-in\"\ndefault_country_code = \"1\"", "");
    assert_eq!(us.decide_full("acme", SENDER, nat(b"13800000001"), b""), Reject(R::NoConsent));
    let us_out = World::new("regime = \"opt-out\"\ndefault_country_code = \"1\"", "");
    assert_eq!(us_out.decide_full("acme", SENDER, nat(b"13800000004"), b""), Accept);
}

/// Unix ms of a UTC civil time.
fn utc(y: i64, mo: u32, d: u32, h: i64, mi: i64) -> i64 {
    days_from_civil(y, mo, d) * 86_400_000 + (h * 60 + mi) * 60_000
}

/// Step 7: marketing refused inside the quiet hours of the subscriber's local time (its
/// country code's zone, else the section's); transactional traffic and refusals by an earlier
/// step are untouched; monitor mode only counts.
#[test]
fn quiet_hours_in_the_subscribers_local_time() {
    let q = "[policy.quiet_hours]\nstart = \"21:00\"\nend = \"08:00\"\ntimezone = \"Asia/Shanghai\"\n\
             [policy.timezones]\n\"1\" = \"America/New_York\"\n\"91\" = \"Asia/Kolkata\"\n";
    let mut w = World::new(&format!("regime = \"opt-in\"\n{q}"), "");
    // 22:30 in Shanghai (14:30 UTC): marketing refused, transactional through.
    w.at_ms = Some(utc(2026, 6, 1, 14, 30));
    assert_eq!(w.decide(GRANTED), Reject(R::QuietHours));
    let digits = GRANTED.to_string();
    assert_eq!(w.decide_full("otp", SENDER, Addr { ton: 1, npi: 1, addr: digits.as_bytes() }, b""), Accept);
    // An earlier step's refusal stays the reason.
    assert_eq!(w.decide(REVOKED), Reject(R::Revoked));
    // Edges: 21:00 is inside, 08:00 is outside, 07:59 inside.
    for (h, m, inside) in [(13, 0, true), (23, 59, true), (0, 0, false), (22, 59, true), (12, 59, false)] {
        w.at_ms = Some(utc(2026, 6, 1, h, m));
        let v = w.decide(GRANTED);
        assert_eq!(v == Reject(R::QuietHours), inside, "{h:02}:{m:02} UTC: {v:?}");
    }
    // India (+05:30): 14:30 UTC is 20:00 there, allowed; 15:30 UTC is 21:00, refused.
    let india = 919812345678;
    let mut o = World::new(&format!("regime = \"opt-out\"\n{q}"), "");
    o.at_ms = Some(utc(2026, 6, 1, 14, 30));
    assert_eq!(o.decide(india), Accept);
    o.at_ms = Some(utc(2026, 6, 1, 15, 30));
    assert_eq!(o.decide(india), Reject(R::QuietHours));
    // Monitor mode: would_reject, forwarded.
    let mut m = World::new(&format!("mode = \"monitor\"\n{q}"), "");
    m.at_ms = Some(utc(2026, 6, 1, 14, 30));
    assert_eq!(m.decide(GRANTED), WouldReject(R::QuietHours));
}

/// New York across the 2026 change to daylight saving time (08 March, 02:00 EST → 03:00 EDT):
/// 12:30 UTC is 07:30 EST the day before (inside 21:00–08:00) and 08:30 EDT on the day.
#[test]
fn quiet_hours_follow_daylight_saving_time() {
    let q = "regime = \"opt-out\"\n[policy.quiet_hours]\nstart = \"21:00\"\nend = \"08:00\"\n\
             [policy.timezones]\n\"1\" = \"America/New_York\"\n";
    let mut w = World::new(q, "");
    let us = 12125550100;
    w.at_ms = Some(utc(2026, 3, 7, 12, 30));
    assert_eq!(w.decide(us), Reject(R::QuietHours));
    w.at_ms = Some(utc(2026, 3, 8, 12, 30));
    assert_eq!(w.decide(us), Accept);
    // And back (01 November, 02:00 EDT → 01:00 EST): 01:30 UTC is 21:30 EDT on 31 October
    // (inside) and 20:30 EST on 01 November (outside).
    w.at_ms = Some(utc(2026, 11, 1, 1, 30));
    assert_eq!(w.decide(us), Reject(R::QuietHours));
    w.at_ms = Some(utc(2026, 11, 2, 1, 30));
    assert_eq!(w.decide(us), Accept);
    // A number of no listed country code: the section's zone (UTC when not set).
    w.at_ms = Some(utc(2026, 3, 8, 22, 0));
    assert_eq!(w.decide(GRANTED), Reject(R::QuietHours));
}

/// An account's own window replaces the policy's; a window that does not wrap midnight.
#[test]
fn quiet_hours_per_account() {
    let q = "regime = \"opt-out\"\n[policy.quiet_hours]\nstart = \"21:00\"\nend = \"08:00\"\ntimezone = \"Asia/Shanghai\"\n";
    let mut w = World::new(q, "quiet_hours = { start = \"12:00\", end = \"14:00\" }");
    w.at_ms = Some(utc(2026, 6, 1, 14, 30)); // 22:30 Shanghai: outside the account's window
    assert_eq!(w.decide(GRANTED), Accept);
    w.at_ms = Some(utc(2026, 6, 1, 4, 30)); // 12:30 Shanghai
    assert_eq!(w.decide(GRANTED), Reject(R::QuietHours));
    w.at_ms = Some(utc(2026, 6, 1, 6, 0)); // 14:00: the end is outside
    assert_eq!(w.decide(GRANTED), Accept);
    // Without [policy.quiet_hours], only such accounts have quiet hours.
    let mut n = World::new("regime = \"opt-out\"", "");
    n.at_ms = Some(utc(2026, 6, 1, 14, 30));
    assert_eq!(n.decide(GRANTED), Accept);
}

/// Bad quiet-hours config names the key.
#[test]
fn quiet_hours_config_errors_name_the_key() {
    let base = "[upstream]\naddress = \"10.1.2.3:2775\"\n";
    for (text, key, what) in [
        ("[policy.quiet_hours]\nstart = \"21:00\"\nend = \"08:00\"\ntimezone = \"Mars/Olympus\"", "policy.quiet_hours.timezone", "Mars/Olympus"),
        ("[policy.quiet_hours]\nstart = \"25:00\"\nend = \"08:00\"", "policy.quiet_hours.start", "HH:MM"),
        ("[policy.quiet_hours]\nstart = \"21:00\"", "policy.quiet_hours.end", "required"),
        ("[policy.quiet_hours]\nstart = \"08:00\"\nend = \"08:00\"", "policy.quiet_hours.end", "empty"),
        ("[policy.timezones]\n\"086\" = \"Asia/Shanghai\"", "policy.timezones.\"086\"", "country code"),
        ("[policy.timezones]\n\"86\" = \"Asia/Shangai\"", "policy.timezones.\"86\"", "Asia/Shangai"),
        ("[[account]]\nsystem_id = \"a\"\nclass = \"marketing\"\nquiet_hours = { start = \"9:00\", end = \"10:00\" }", "account[a].quiet_hours.start", "HH:MM"),
        ("[[account]]\nsystem_id = \"a\"\nclass = \"marketing\"\nquiet_hours = { start = \"09:00\", end = \"10:00\", timezone = \"UTC\" }", "account[a].quiet_hours.timezone", "once"),
    ] {
        let errs = Config::parse(&format!("{base}{text}")).expect_err(text);
        assert!(errs.iter().any(|e| e.key == key && e.message.contains(what)), "{text}: {errs:?}");
    }
}

/// Step 4, content rules on the folded text: a `reject` rule refuses whatever the class (the
/// transactional account too), a `marketing` rule makes a transactional account's message
/// commercial and so subject to consent; full-width and upper case meet lower-case literals.
#[test]
fn content_rules_reject_or_reclassify() {
    let rules = r#"regime = "opt-in"
[[policy.content_rule]]
name = "gambling"
literals = ["博彩", "casino"]
action = "reject"
[[policy.content_rule]]
name = "promo"
literals = ["优惠"]
regex = ['\d+% ?off']
action = "marketing"
"#;
    let w = World::new(rules, "");
    let otp = |text: &str, to: u64| {
        let digits = to.to_string();
        w.decide_message("otp", SENDER, Addr { ton: 1, npi: 1, addr: digits.as_bytes() }, b"", Some(text))
    };
    assert_eq!(w.say(GRANTED, "在线博彩，注册即送"), Reject(R::ContentBlocked));
    assert_eq!(w.say(GRANTED, "Best ＣＡＳＩＮＯ in town"), Reject(R::ContentBlocked), "full-width, upper case");
    assert_eq!(otp("your code 1234 — casino", NONE), Reject(R::ContentBlocked), "reject is whatever the class");
    assert_eq!(w.say(GRANTED, "hello"), Accept);
    // Transactional account, no consent: through, unless a marketing rule matches.
    assert_eq!(otp("您的验证码是 1234", NONE), Accept);
    assert_eq!(otp("验证码 1234，本周优惠", NONE), Reject(R::NoConsent));
    assert_eq!(otp("today 30% OFF", NONE), Reject(R::NoConsent), "regex on the folded text");
    assert_eq!(otp("today 30% OFF", GRANTED), Accept, "commercial with consent");
    // Both rules match: reject wins.
    assert_eq!(otp("优惠 casino", GRANTED), Reject(R::ContentBlocked));
    // Monitor mode only counts.
    let m = World::new(&format!("mode = \"monitor\"\n{rules}"), "");
    assert_eq!(m.say(GRANTED, "博彩"), WouldReject(R::ContentBlocked));
}

/// Step 5: a commercial message carries its account's registered 【signature】 at the start or
/// end and an opt-out hint; transactional traffic is not checked.
#[test]
fn commercial_messages_need_signature_and_opt_out_hint() {
    let pol = "regime = \"opt-out\"\n[policy.commercial]\nrequire_signature = true\nopt_out_hints = [\"回T退订\", \"reply stop\"]\n";
    let w = World::new(pol, "signatures = [\"Acme商城\"]");
    assert_eq!(w.say(GRANTED, "【Acme商城】双十一五折，回T退订"), Accept);
    assert_eq!(w.say(GRANTED, "双十一五折，回T退订【ACME商城】"), Accept, "at the end, any case");
    assert_eq!(w.say(GRANTED, "【ａｃｍｅ商城】sale! Reply STOP to opt out"), Accept, "full-width");
    assert_eq!(w.say(GRANTED, "双十一五折，回T退订"), Reject(R::MissingSignature));
    assert_eq!(w.say(GRANTED, "【别家】双十一五折，回T退订"), Reject(R::MissingSignature), "not its signature");
    assert_eq!(w.say(GRANTED, "双十一【Acme商城】五折，回T退订"), Reject(R::MissingSignature), "in the middle");
    assert_eq!(w.say(GRANTED, "【Acme商城】双十一五折"), Reject(R::MissingOptOutHint));
    // Before consent: a refused subscriber is refused for the checks' reason first.
    assert_eq!(w.say(REVOKED, "双十一五折"), Reject(R::MissingSignature));
    let digits = NONE.to_string();
    let otp =
        w.decide_message("otp", SENDER, Addr { ton: 1, npi: 1, addr: digits.as_bytes() }, b"", Some("验证码 1234"));
    assert_eq!(otp, Accept, "transactional: not checked");
    // Hints alone (no signature required).
    let h = World::new("regime = \"opt-out\"\n[policy.commercial]\nopt_out_hints = [\"回T退订\"]", "");
    assert_eq!(h.say(GRANTED, "五折 回t退订"), Accept);
    assert_eq!(h.say(GRANTED, "五折"), Reject(R::MissingOptOutHint));
}

/// The text is decoded and scanned only for accounts a step reads it for: every account when
/// content rules exist; otherwise, under the commercial checks or the same-text cap, only
/// an account whose class or overrides can make a message commercial.
#[test]
fn text_is_read_only_where_a_step_needs_it() {
    let reads = |pol: &str, account: &str| {
        let cfg = config(pol, account);
        let e = cfg.engine();
        (e.reads_text(e.lookup("acme").unwrap()), e.reads_text(e.lookup("otp").unwrap()))
    };
    assert_eq!(reads("", ""), (false, false), "no step reads text");
    let hints = "[policy.commercial]\nopt_out_hints = [\"回T退订\"]";
    assert_eq!(reads(hints, ""), (true, false), "commercial checks: marketing account only");
    let same = "[policy.frequency]\nsame_text_window = \"1h\"";
    assert_eq!(reads(same, ""), (true, false), "same-text cap: marketing account only");
    let rule = "[[policy.content_rule]]\nname = \"r\"\naction = \"reject\"\nliterals = [\"赌博\"]";
    assert_eq!(reads(rule, ""), (true, true), "content rules read every account's text");
    // A transactional account with a marketing source override can send commercial messages.
    let cfg = config(hints, "");
    let mut accounts: Vec<_> = cfg.engine().accounts().map(|(_, a)| a.clone()).collect();
    let otp = accounts.iter_mut().find(|a| a.system_id == "otp").unwrap();
    assert!(!otp.may_be_commercial());
    otp.service_type_class.push(("PROMO".into(), MessageClass::Marketing));
    assert!(otp.may_be_commercial());
}

/// Step 8: per entity and per subscriber per local day (the subscriber's midnight, not
/// UTC's), the same text within the window; only allowed messages count, so a refusal by an
/// earlier step or by a cap does not use the allowance.
#[test]
fn frequency_caps_per_local_day() {
    let pol = "regime = \"opt-out\"\n[policy.frequency]\nper_entity_per_day = 2\nsame_text_window = \"2h\"\n               [policy.timezones]\n\"86\" = \"Asia/Shanghai\"\n";
    let mut w = World::new(pol, "");
    // 23:00 Shanghai on 01 June (15:00 UTC).
    w.at_ms = Some(utc(2026, 6, 1, 15, 0));
    assert_eq!(w.say(GRANTED, "one"), Accept);
    assert_eq!(w.say(GRANTED, "one"), Reject(R::FrequencyCap), "same text within the window");
    assert_eq!(w.say(GRANTED, "two"), Accept);
    assert_eq!(w.say(GRANTED, "three"), Reject(R::FrequencyCap), "two a day");
    assert_eq!(w.say(NONE, "three"), Accept, "another subscriber");
    // Refused earlier (revoked): not counted against REVOKED's allowance — nothing to check.
    assert_eq!(w.say(REVOKED, "x"), Reject(R::Revoked));
    // 00:30 Shanghai on 02 June (16:30 UTC, still 01 June in UTC): a new day.
    w.at_ms = Some(utc(2026, 6, 1, 16, 30));
    assert_eq!(w.say(GRANTED, "three"), Accept);
    assert_eq!(w.say(GRANTED, "one"), Reject(R::FrequencyCap), "the window spans midnight");
    w.at_ms = Some(utc(2026, 6, 1, 17, 30));
    assert_eq!(w.say(GRANTED, "one"), Accept, "2 h 30 after: the window is over, the day's second");
    assert_eq!(w.say(GRANTED, "four"), Reject(R::FrequencyCap), "two a day");
    // Transactional traffic is not capped.
    let digits = GRANTED.to_string();
    for _ in 0..5 {
        let v = w.decide_message("otp", SENDER, Addr { ton: 1, npi: 1, addr: digits.as_bytes() }, b"", Some("code"));
        assert_eq!(v, Accept);
    }
}

/// Over all entities, and an account's own cap; a cap refusal does not count.
#[test]
fn frequency_per_subscriber_and_account_override() {
    let pol = "regime = \"opt-out\"\n[policy.frequency]\nper_entity_per_day = 1\nper_subscriber_per_day = 3\n";
    let w = World::new(pol, "[account.frequency]\nper_entity_per_day = 5");
    for i in 0..3 {
        assert_eq!(w.say(GRANTED, &format!("m{i}")), Accept, "acme may send 5; subscriber 3");
    }
    assert_eq!(w.say(GRANTED, "m3"), Reject(R::FrequencyCap), "subscriber's 3 a day");
    let mut x = World::new(pol, "");
    x.at_ms = Some(utc(2026, 6, 1, 12, 0));
    assert_eq!(x.say(NONE, "a"), Accept);
    for _ in 0..10 {
        assert_eq!(x.say(NONE, "b"), Reject(R::FrequencyCap));
    }
    x.at_ms = Some(utc(2026, 6, 2, 12, 0));
    assert_eq!(x.say(NONE, "b"), Accept, "refusals did not count; a new UTC day");
}

/// Bad content, commercial and frequency config names the key.
#[test]
fn text_step_config_errors_name_the_key() {
    let base = "[upstream]\naddress = \"10.1.2.3:2775\"\n";
    let acct = "[[account]]\nsystem_id = \"a\"\nclass = \"marketing\"\n";
    for (text, key, what) in [
        ("[[policy.content_rule]]\nname = \"x\"\nregex = [\"ok\", \"(unclosed\"]\naction = \"reject\"", "policy.content_rule[x].regex[1]", "unclosed"),
        ("[[policy.content_rule]]\nname = \"x\"\nliterals = [\"a\"]\naction = \"block\"", "policy.content_rule[x].action", "marketing | reject"),
        ("[[policy.content_rule]]\nliterals = [\"a\"]\naction = \"reject\"", "policy.content_rule[0].name", "required"),
        ("[[policy.content_rule]]\nname = \"x\"\naction = \"reject\"", "policy.content_rule[x].literals", "at least one"),
        ("[[policy.content_rule]]\nname = \"x\"\nliterals = [\"a\"]\naction = \"reject\"\n[[policy.content_rule]]\nname = \"x\"\nliterals = [\"b\"]\naction = \"reject\"", "policy.content_rule[x].name", "twice"),
        ("[policy.frequency]\nper_entity_per_day = 255", "policy.frequency.per_entity_per_day", "1..=254"),
        ("[policy.frequency]\nper_subscriber_per_day = 0", "policy.frequency.per_subscriber_per_day", "1..=254"),
        ("[policy.frequency]\nsame_text_window = \"soon\"", "policy.frequency.same_text_window", "soon"),
        ("[policy.frequency]\nsame_text_window = \"8d\"", "policy.frequency.same_text_window", "7d"),
        ("[policy.commercial]\nopt_out_hints = [\" \"]", "policy.commercial.opt_out_hints", "empty"),
        ("[policy]\nreassembly_timeout = \"0s\"", "policy.reassembly_timeout", "greater than zero"),
    ] {
        let errs = Config::parse(&format!("{base}{text}")).expect_err(text);
        assert!(errs.iter().any(|e| e.key == key && e.message.contains(what)), "{text}: {errs:?}");
    }
    for (text, key, what) in [
        ("signatures = [\"【Acme】\"]", "account[a].signatures", "brackets"),
        ("[account.frequency]\nper_entity_per_day = 300", "account[a].frequency.per_entity_per_day", "1..=254"),
        ("[account.frequency]\nper_subscriber_per_day = 3", "account[a].frequency", "only per_entity_per_day"),
    ] {
        let errs = Config::parse(&format!("{base}{acct}{text}")).expect_err(text);
        assert!(errs.iter().any(|e| e.key == key && e.message.contains(what)), "{text}: {errs:?}");
    }
}

/// Step 1: a suspended entity is refused on every account it has, transactional included,
/// ahead of every later step, and sends again once reinstated; monitor mode only counts it.
#[test]
fn a_suspended_entity_is_refused_until_reinstated() {
    let w = World::new("regime = \"opt-in\"", "");
    let engine = w.engine.get_or_init(|| w.cfg.engine());
    let otp = |w: &World| {
        let digits = NONE.to_string();
        w.decide_full("otp", SENDER, Addr { ton: 1, npi: 1, addr: digits.as_bytes() }, b"")
    };
    assert_eq!((w.decide(GRANTED), otp(&w)), (Accept, Accept));
    assert_eq!(engine.set_suspended(ENTITY, true), 2, "both accounts of the entity");
    assert_eq!(engine.set_suspended("nobody", true), 0);
    assert_eq!(
        (w.decide(GRANTED), w.decide(DNC), otp(&w)),
        (Reject(R::Suspended), Reject(R::Suspended), Reject(R::Suspended))
    );
    assert_eq!(engine.status(R::Suspended), 0x409);
    engine.set_suspended(ENTITY, false);
    assert_eq!((w.decide(GRANTED), w.decide(DNC), otp(&w)), (Accept, Reject(R::Dnc), Accept));
    let m = World::new("mode = \"monitor\"", "");
    m.engine.get_or_init(|| m.cfg.engine()).set_suspended(ENTITY, true);
    assert_eq!(m.decide(GRANTED), WouldReject(R::Suspended));
}

#[test]
fn the_entity_of_a_source_address() {
    let w = World::new("", "");
    let e = w.cfg.engine();
    assert_eq!(e.entity_of_source("10690123459"), Ok(ENTITY));
    assert_eq!(e.entity_of_source("12345"), Err(vec![]));
}

/// A config reload builds the next engine from the running one: a kept account keeps its
/// bound-session count (against its new limit) and, with the same `max_tps`, its rate; a
/// suspension follows the entity; the cap counts are the same tables.
#[test]
fn a_reload_carries_sessions_rates_suspensions_and_counts() {
    const FREQ: &str = "[policy.frequency]\nper_entity_per_day = 1\nsubscribers = 1024";
    // One PDU a second: the bucket cannot refill between the two engines' checks.
    let old = config(FREQ, "max_tps = 1\nmax_sessions = 2").engine();
    let acme = old.lookup("acme").unwrap();
    let s1 = old.open_session(acme).unwrap();
    let _s2 = old.open_session(acme).unwrap();
    assert!(old.open_session(acme).is_err());
    // Spend acme's burst.
    while old.throttle(acme).is_none() {}
    old.set_suspended(ENTITY, true);
    let f = old.frequency().unwrap();
    let k = frequency::Key { msisdn: 8613800000001, entity: old.cap_entity(acme), day: 9, text: 0, unix_s: 1 };
    assert_eq!(f.check_and_count(&k, 1), None);

    // The reloaded config puts a new account first (acme's index moves) and raises the limit.
    let new = config(FREQ, "max_tps = 1\nmax_sessions = 3");
    let mut accounts = new.accounts.clone();
    let mut first = accounts[1].clone();
    first.system_id = "first".into();
    first.entity = "first-co".into();
    accounts.insert(0, first);
    let (next, carried) = old.reloaded(new.policy.clone(), accounts);
    assert!(carried.frequency_reset.is_empty());
    let acme2 = next.lookup("acme").unwrap();
    assert_ne!(acme2, acme);
    assert_eq!(next.active_sessions(acme2), 2, "bound sessions carried");
    let s3 = next.open_session(acme2).expect("the raised limit applies");
    assert!(next.open_session(acme2).is_err());
    drop((s1, s3));
    assert_eq!(next.active_sessions(acme2), 1, "a slot from the old engine frees the carried count");
    assert!(next.throttle(acme2).is_some(), "the rate's bucket was carried");
    assert!(next.is_suspended(acme2), "the suspension follows the entity");
    assert!(!next.is_suspended(next.lookup("first").unwrap()));
    // Lifted through either engine, lifted in both.
    next.set_suspended(ENTITY, false);
    assert!(!old.is_suspended(acme));
    let f2 = next.frequency().unwrap();
    assert_eq!(f2.check_and_count(&k, 1), Some(frequency::Cap::PerEntity), "the counts were carried");
    // A changed max_tps starts a fresh bucket.
    let changed = config("", "max_tps = 50");
    let (third, _) = next.reloaded(changed.policy.clone(), changed.accounts.clone());
    assert!(third.throttle(third.lookup("acme").unwrap()).is_none());
}
