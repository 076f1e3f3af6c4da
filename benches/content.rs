//! The text steps' parts, without a snapshot (criterion, `cargo bench --bench content`): what a
//! session pays per message when a step reads the text — decode (UCS-2) and fold, the content
//! rules' verdict at 10 / 100 / 1 000 rules (the set of `benches/content_rules.py`, none
//! matching), the signature and opt-out-hint checks. `benches/decide.rs` (group `decide_text`)
//! prices the whole decision with them over a 20 M-record snapshot.

use std::fmt::Write as _;
use std::hint::black_box;
use std::time::Duration;

use consentgate::policy::content::{self, CommercialConfig, ContentRule, ContentRules, RuleAction};
use consentgate::policy::Message;
use consentgate::smpp::peek::Addr;
use criterion::{criterion_group, criterion_main, Criterion, Throughput};

const TEXT: &str = "【Bench】本周会员日全场八折，新老顾客均可参加，详情见官网，回T退订";

fn rules(n: usize) -> ContentRules {
    rules_with(n, 10)
}

/// `n` rules, every `regex_every`-th with a regex too (0 = none).
fn rules_with(n: usize, regex_every: usize) -> ContentRules {
    let mut v = Vec::with_capacity(n);
    for i in 0..n {
        let mut name = String::new();
        write!(name, "r{i}").unwrap();
        v.push(ContentRule {
            name,
            literals: vec![format!("blocked-{i}"), format!("违禁词{i}")],
            regex: if regex_every > 0 && i % regex_every == 0 { vec![format!("spam{i}[0-9]{{4}}")] } else { vec![] },
            action: if i % 2 == 0 { RuleAction::Reject } else { RuleAction::Marketing },
        });
    }
    ContentRules::new(v).expect("rules")
}

fn bench(c: &mut Criterion) {
    let ucs2: Vec<u8> = TEXT.encode_utf16().flat_map(u16::to_be_bytes).collect();
    let m = Message {
        source: Addr { ton: 0, npi: 1, addr: b"1069012345" },
        destination: Addr { ton: 1, npi: 1, addr: b"8613800138000" },
        service: b"",
        coding: consentgate::smpp::text::Coding::Ucs2,
        user_data: &ucs2,
        tlvs: b"",
        text: None,
    };
    let (mut scratch, mut folded) = (String::new(), String::new());
    m.fold_text_into(&mut scratch, &mut folded);
    let mut g = c.benchmark_group("content");
    g.throughput(Throughput::Elements(1));
    g.sample_size(30).measurement_time(Duration::from_secs(3)).warm_up_time(Duration::from_secs(1));
    g.bench_function("decode_and_fold_36_chars_ucs2", |b| {
        b.iter(|| {
            folded.clear();
            black_box(&m).fold_text_into(&mut scratch, &mut folded);
            black_box(folded.len())
        })
    });
    for n in [10, 100, 1000] {
        let r = rules(n);
        assert!(r.verdict(&folded).is_none());
        g.bench_function(format!("verdict_{n}_rules"), |b| b.iter(|| black_box(r.verdict(black_box(&folded)))));
    }
    let literals = rules_with(1000, 0);
    g.bench_function("verdict_1000_rules_literals_only", |b| {
        b.iter(|| black_box(literals.verdict(black_box(&folded))))
    });
    // What the engine runs: one pass for the rules and the hints together.
    let hints = vec!["回T退订".to_string(), "拒收请回复R".to_string()];
    let rule_set: Vec<ContentRule> = rules(1000).rules().to_vec();
    let scanner = content::Scanner::new(&rule_set, &hints).expect("scanner");
    assert!(scanner.scan(&folded).hint && scanner.scan(&folded).rule.is_none());
    g.bench_function("scan_1000_rules_and_hints", |b| b.iter(|| black_box(scanner.scan(black_box(&folded)))));
    let commercial = CommercialConfig::new(true, vec!["回T退订".into(), "拒收请回复R".into()]);
    let sigs = content::bracketed_signatures(&["Bench".into()]);
    g.bench_function("signature_and_hint", |b| {
        b.iter(|| {
            let t = black_box(&folded);
            black_box(content::has_signature(t, &sigs) && commercial.has_hint(t))
        })
    });
    g.finish();
}

criterion_group!(benches, bench);
criterion_main!(benches);
