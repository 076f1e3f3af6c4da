//! Steps 4 and 5 on the message text (DESIGN §3): the content rules (`[[policy.content_rule]]`)
//! and the commercial-message checks (`[policy.commercial]`: the registered 【signature】 and an
//! opt-out hint).
//!
//! Everything matches the **folded** text ([`crate::smpp::text::fold_into`]: full-width ASCII
//! to half-width, lower case), and every literal is folded the same way when the rules are
//! compiled, so "优惠", "ＳＴＯＰ" and "Stop" meet their rule whatever the sender's keyboard.
//! All literals of all rules are one `aho-corasick` automaton and all regexes one `RegexSet`:
//! one pass over the text each, however many rules (`benches/decide.rs` measures 1 000).

use aho_corasick::{AhoCorasick, AhoCorasickBuilder, MatchKind};
use regex::RegexSet;

use crate::smpp::text::fold_into;

/// `action` of a content rule.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum RuleAction {
    /// The message is commercial whatever its account or sender says.
    Marketing,
    /// The message is refused (`content_blocked`).
    Reject,
}

impl RuleAction {
    pub fn as_str(self) -> &'static str {
        match self {
            RuleAction::Marketing => "marketing",
            RuleAction::Reject => "reject",
        }
    }
}

/// One `[[policy.content_rule]]` as configured.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ContentRule {
    pub name: String,
    pub literals: Vec<String>,
    /// Regular expressions (Rust `regex` syntax), matched against the folded text.
    pub regex: Vec<String>,
    pub action: RuleAction,
}

/// Why a rule set could not be compiled (the config names the key).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RuleError {
    /// Index of the rule, and of the regex within it.
    pub rule: usize,
    pub regex: usize,
    pub message: String,
}

/// The compiled content rules.
#[derive(Debug, Clone, Default)]
pub struct ContentRules {
    rules: Vec<ContentRule>,
    literals: Option<AhoCorasick>,
    /// Rule index of each automaton pattern.
    literal_rule: Vec<u32>,
    regexes: Option<RegexSet>,
    regex_rule: Vec<u32>,
}

/// What the rules say about a text: the rule that decided, and its action. A `reject` rule
/// wins over a `marketing` one.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct RuleMatch {
    pub rule: usize,
    pub action: RuleAction,
}

impl ContentRules {
    pub fn new(rules: Vec<ContentRule>) -> Result<ContentRules, RuleError> {
        let mut folded = Vec::new();
        let mut literal_rule = Vec::new();
        let mut buf = String::new();
        for (i, r) in rules.iter().enumerate() {
            for l in &r.literals {
                fold_into(l, &mut buf);
                if !buf.is_empty() {
                    folded.push(buf.clone());
                    literal_rule.push(i as u32);
                }
            }
        }
        let literals = if folded.is_empty() {
            None
        } else {
            Some(automaton(&folded).map_err(|e| RuleError { rule: 0, regex: 0, message: e.to_string() })?)
        };
        let mut patterns = Vec::new();
        let mut regex_rule = Vec::new();
        for (i, r) in rules.iter().enumerate() {
            for (j, re) in r.regex.iter().enumerate() {
                // Each one alone first, so an error names its rule and position.
                regex::Regex::new(re).map_err(|e| RuleError { rule: i, regex: j, message: e.to_string() })?;
                patterns.push(re.as_str());
                regex_rule.push(i as u32);
            }
        }
        let regexes = if patterns.is_empty() {
            None
        } else {
            Some(RegexSet::new(&patterns).map_err(|e| RuleError { rule: 0, regex: 0, message: e.to_string() })?)
        };
        Ok(ContentRules { rules, literals, literal_rule, regexes, regex_rule })
    }

    pub fn rules(&self) -> &[ContentRule] {
        &self.rules
    }

    pub fn is_empty(&self) -> bool {
        self.rules.is_empty()
    }

    /// The deciding rule for a folded text, if any rule matches.
    pub fn verdict(&self, folded: &str) -> Option<RuleMatch> {
        let mut found: Option<RuleMatch> = None;
        let mut note = |rule: u32| {
            let action = self.rules[rule as usize].action;
            if found.is_none_or(|f| f.action == RuleAction::Marketing && action == RuleAction::Reject) {
                found = Some(RuleMatch { rule: rule as usize, action });
            }
            action == RuleAction::Reject
        };
        // The common case is no match at all: `is_match` stops early and runs the fast
        // searchers (prefilters, the lazy DFA); the matches are enumerated only when there is
        // one (a RegexSet's `matches` runs every regex of the set to the end of the text).
        if let Some(ac) = self.literals.as_ref().filter(|ac| ac.is_match(folded)) {
            for m in ac.find_overlapping_iter(folded) {
                if note(self.literal_rule[m.pattern().as_usize()]) {
                    return found;
                }
            }
        }
        if let Some(set) = self.regexes.as_ref().filter(|set| set.is_match(folded)) {
            for i in set.matches(folded).iter() {
                if note(self.regex_rule[i]) {
                    return found;
                }
            }
        }
        found
    }
}

/// One automaton over folded literals: a full DFA (one table lookup a byte) and no
/// prefilter — in Chinese text the first byte of a CJK literal (0xE4–0xE9) is in almost every
/// character, so a prefilter's candidates come every few bytes and cost more than they save.
fn automaton(patterns: &[String]) -> Result<AhoCorasick, aho_corasick::BuildError> {
    AhoCorasickBuilder::new()
        .match_kind(MatchKind::Standard)
        .kind(Some(aho_corasick::AhoCorasickKind::DFA))
        .prefilter(false)
        .build(patterns)
}

/// `[policy.commercial]`.
#[derive(Debug, Clone, Default)]
pub struct CommercialConfig {
    /// A commercial message must start or end with one of its account's `signatures` in
    /// 【…】.
    pub require_signature: bool,
    /// One of these must appear in a commercial message; empty = no check.
    pub opt_out_hints: Vec<String>,
    hints: Option<AhoCorasick>,
}

impl CommercialConfig {
    pub fn new(require_signature: bool, opt_out_hints: Vec<String>) -> CommercialConfig {
        let mut buf = String::new();
        let folded: Vec<String> = opt_out_hints
            .iter()
            .filter_map(|h| {
                fold_into(h, &mut buf);
                (!buf.is_empty()).then(|| buf.clone())
            })
            .collect();
        let hints = (!folded.is_empty()).then(|| automaton(&folded).ok()).flatten();
        CommercialConfig { require_signature, opt_out_hints, hints }
    }

    pub fn is_active(&self) -> bool {
        self.require_signature || self.hints.is_some()
    }

    /// Whether the folded text carries one of the opt-out hints (true when none is
    /// configured).
    pub fn has_hint(&self, folded: &str) -> bool {
        self.hints.as_ref().is_none_or(|ac| ac.is_match(folded))
    }
}

/// The account's registered signatures, folded and bracketed (`【acme商城】`), as
/// [`has_signature`] compares them.
pub fn bracketed_signatures(signatures: &[String]) -> Vec<String> {
    let mut buf = String::new();
    signatures
        .iter()
        .filter_map(|s| {
            fold_into(s, &mut buf);
            (!buf.is_empty()).then(|| format!("【{buf}】"))
        })
        .collect()
}

/// Whether the folded text starts or ends (spaces aside) with one of `bracketed`.
pub fn has_signature(folded: &str, bracketed: &[String]) -> bool {
    let t = folded.trim();
    bracketed.iter().any(|s| t.starts_with(s.as_str()) || t.ends_with(s.as_str()))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn fold(s: &str) -> String {
        let mut o = String::new();
        fold_into(s, &mut o);
        o
    }

    fn rule(name: &str, literals: &[&str], regex: &[&str], action: RuleAction) -> ContentRule {
        ContentRule {
            name: name.into(),
            literals: literals.iter().map(|s| s.to_string()).collect(),
            regex: regex.iter().map(|s| s.to_string()).collect(),
            action,
        }
    }

    #[test]
    fn literals_fold_case_and_width_and_reject_wins() {
        let r = ContentRules::new(vec![
            rule("markers", &["优惠", "Reply STOP"], &[], RuleAction::Marketing),
            rule("gambling", &["博彩"], &[r"\bcasino\b"], RuleAction::Reject),
        ])
        .unwrap();
        let v = |t: &str| r.verdict(&fold(t));
        assert_eq!(v("本周优惠大促"), Some(RuleMatch { rule: 0, action: RuleAction::Marketing }));
        assert_eq!(v("ＲＥＰＬＹ stop to end").map(|m| m.rule), Some(0), "full-width and case folded");
        assert_eq!(v("优惠博彩").map(|m| m.action), Some(RuleAction::Reject));
        assert_eq!(v("Best CASINO in town").map(|m| m.action), Some(RuleAction::Reject));
        assert_eq!(v("casinos"), None, "regex word boundary");
        assert_eq!(v("您的验证码是 123456"), None);
    }

    #[test]
    fn a_bad_regex_names_its_rule() {
        let e = ContentRules::new(vec![
            rule("ok", &[], &["a+"], RuleAction::Reject),
            rule("bad", &[], &["b", "("], RuleAction::Reject),
        ])
        .unwrap_err();
        assert_eq!((e.rule, e.regex), (1, 1));
    }

    #[test]
    fn signatures_at_either_end_and_hints() {
        let sigs = bracketed_signatures(&["ACME商城".into()]);
        assert!(has_signature(&fold("【ACME商城】双十一优惠，回T退订"), &sigs));
        assert!(has_signature(&fold("双十一优惠，回T退订 【acme商城】 "), &sigs));
        assert!(!has_signature(&fold("双十一【ACME商城】优惠"), &sigs), "in the middle");
        assert!(!has_signature(&fold("[ACME商城]双十一优惠"), &sigs), "not 【】");
        let c = CommercialConfig::new(true, vec!["回T退订".into(), "Reply STOP".into()]);
        assert!(c.has_hint(&fold("优惠，回t退订")));
        assert!(c.has_hint(&fold("Sale! reply stop to opt out")));
        assert!(!c.has_hint(&fold("优惠")));
        assert!(CommercialConfig::new(false, vec![]).has_hint("anything"));
    }
}
