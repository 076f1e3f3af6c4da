//! Steps 4 and 5 on the message text (architecture §3): the content rules (`[[policy.content_rule]]`)
//! and the commercial-message checks (`[policy.commercial]`: the registered 【signature】 and an
//! opt-out hint).
//!
//! Everything matches the **folded** text ([`crate::smpp::text::fold_into`]: full-width ASCII
//! to half-width, lower case), and every literal is folded the same way when the rules are
//! compiled, so "优惠", "ＳＴＯＰ" and "Stop" meet their rule whatever the sender's keyboard.
//! All literals of all rules, the opt-out hints and the regexes' literal prefixes are one
//! `aho-corasick` automaton ([`Scanner`]): one pass over the text, however many rules
//! (`benches/content.rs` and `benches/decide.rs` measure 1 000).

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
    /// The rules alone (the engine builds its own with the opt-out hints in it).
    scanner: Scanner,
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
        for (i, r) in rules.iter().enumerate() {
            for (j, re) in r.regex.iter().enumerate() {
                // Each one alone, so an error names its rule and position.
                regex::Regex::new(re).map_err(|e| RuleError { rule: i, regex: j, message: e.to_string() })?;
            }
        }
        let scanner = Scanner::new(&rules, &[]).map_err(|message| RuleError { rule: 0, regex: 0, message })?;
        Ok(ContentRules { rules, scanner })
    }

    pub fn rules(&self) -> &[ContentRule] {
        &self.rules
    }

    pub fn is_empty(&self) -> bool {
        self.rules.is_empty()
    }

    /// The deciding rule for a folded text, if any rule matches.
    pub fn verdict(&self, folded: &str) -> Option<RuleMatch> {
        self.scanner.scan(folded).rule
    }
}

/// One pass over the folded text for steps 4 and 5 together: every literal of every content
/// rule, every opt-out hint, and the literal prefixes of the regexes ("gates") in one
/// `aho-corasick` automaton. A regex whose matches all begin with one of a few literals
/// (`spam\d{4}`, `满\d+减`) runs only when the automaton saw one; the others
/// (`\d+% ?off`) are one `RegexSet`, run on every text. The common message — no rule
/// matches — then costs one automaton pass (plus that set, if any regex has no prefix).
#[derive(Debug, Clone, Default)]
pub struct Scanner {
    ac: Option<AhoCorasick>,
    /// What each automaton pattern stands for.
    roles: Vec<Role>,
    /// Gated regexes, by gate index, with their rule.
    gated: Vec<(regex::Regex, u32)>,
    /// The regexes without a literal prefix, and each one's rule.
    ungated: Option<(RegexSet, Vec<u32>)>,
    actions: Vec<RuleAction>,
    has_hints: bool,
}

#[derive(Debug, Clone, Copy)]
enum Role {
    Literal(u32),
    Hint,
    Gate(u32),
}

/// The outcome of [`Scanner::scan`].
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Scan {
    /// The deciding content rule, if any.
    pub rule: Option<RuleMatch>,
    /// Whether an opt-out hint is in the text (true when none is configured).
    pub hint: bool,
}

/// Most literals a regex's prefix may have to be gated by them.
const MAX_GATES: usize = 32;
/// Gates seen in one text beyond which every gated regex runs.
const MAX_HITS: usize = 16;

impl Scanner {
    /// Rules (regexes already checked one by one) and opt-out hints; errors are the whole
    /// set's (its size).
    pub fn new(rules: &[ContentRule], hints: &[String]) -> Result<Scanner, String> {
        let mut patterns: Vec<Vec<u8>> = Vec::new();
        let mut roles = Vec::new();
        let mut buf = String::new();
        for (i, r) in rules.iter().enumerate() {
            for l in &r.literals {
                fold_into(l, &mut buf);
                if !buf.is_empty() {
                    patterns.push(buf.clone().into_bytes());
                    roles.push(Role::Literal(i as u32));
                }
            }
        }
        let mut has_hints = false;
        for h in hints {
            fold_into(h, &mut buf);
            if !buf.is_empty() {
                patterns.push(buf.clone().into_bytes());
                roles.push(Role::Hint);
                has_hints = true;
            }
        }
        let (mut gated, mut ungated, mut ungated_rule) = (Vec::new(), Vec::new(), Vec::new());
        for (i, r) in rules.iter().enumerate() {
            for re in &r.regex {
                match prefixes(re) {
                    Some(lits) => {
                        let g = gated.len() as u32;
                        gated.push((regex::Regex::new(re).map_err(|e| e.to_string())?, i as u32));
                        for l in lits {
                            patterns.push(l);
                            roles.push(Role::Gate(g));
                        }
                    }
                    None => {
                        ungated.push(re.as_str());
                        ungated_rule.push(i as u32);
                    }
                }
            }
        }
        let ac = if patterns.is_empty() { None } else { Some(automaton(&patterns).map_err(|e| e.to_string())?) };
        let ungated = if ungated.is_empty() {
            None
        } else {
            Some((RegexSet::new(&ungated).map_err(|e| e.to_string())?, ungated_rule))
        };
        let actions = rules.iter().map(|r| r.action).collect();
        Ok(Scanner { ac, roles, gated, ungated, actions, has_hints })
    }

    /// The content verdict and the hint check on a folded text.
    pub fn scan(&self, folded: &str) -> Scan {
        let mut found: Option<RuleMatch> = None;
        let mut hint = !self.has_hints;
        let note = |found: &mut Option<RuleMatch>, rule: u32| {
            let action = self.actions[rule as usize];
            if found.is_none_or(|f| f.action == RuleAction::Marketing && action == RuleAction::Reject) {
                *found = Some(RuleMatch { rule: rule as usize, action });
            }
        };
        let rejected = |f: &Option<RuleMatch>| f.is_some_and(|m| m.action == RuleAction::Reject);
        // The gated regexes to run: distinct gates seen, or all of them past MAX_HITS.
        let (mut hits, mut n_hits, mut overflow) = ([0u32; MAX_HITS], 0usize, false);
        if let Some(ac) = &self.ac {
            for m in ac.find_overlapping_iter(folded) {
                match self.roles[m.pattern().as_usize()] {
                    Role::Literal(r) => note(&mut found, r),
                    Role::Hint => hint = true,
                    Role::Gate(g) if !hits[..n_hits].contains(&g) => {
                        if n_hits == MAX_HITS {
                            overflow = true;
                        } else {
                            hits[n_hits] = g;
                            n_hits += 1;
                        }
                    }
                    Role::Gate(_) => {}
                }
                if hint && rejected(&found) {
                    return Scan { rule: found, hint };
                }
            }
        }
        if n_hits > 0 && !rejected(&found) {
            let all: Vec<u32>;
            let which: &[u32] = if !overflow {
                &hits[..n_hits]
            } else {
                all = (0..self.gated.len() as u32).collect();
                &all
            };
            for &g in which {
                let (re, rule) = &self.gated[g as usize];
                if re.is_match(folded) {
                    note(&mut found, *rule);
                }
            }
        }
        if let Some((set, rule_of)) = self.ungated.as_ref().filter(|_| !rejected(&found)) {
            if set.is_match(folded) {
                for i in set.matches(folded).iter() {
                    note(&mut found, rule_of[i]);
                }
            }
        }
        Scan { rule: found, hint }
    }

    pub fn is_empty(&self) -> bool {
        self.ac.is_none() && self.ungated.is_none()
    }
}

/// The literal prefixes every match of `re` begins with, if a few non-empty ones exist.
fn prefixes(re: &str) -> Option<Vec<Vec<u8>>> {
    use regex_syntax::hir::literal::{ExtractKind, Extractor};
    let hir = regex_syntax::Parser::new().parse(re).ok()?;
    // A class stops the prefix (so `spam[0-9]` gives `spam`, not ten literals).
    let seq = Extractor::new().kind(ExtractKind::Prefix).limit_class(1).limit_total(MAX_GATES).extract(&hir);
    let lits = seq.literals()?;
    if lits.is_empty() || lits.len() > MAX_GATES || lits.iter().any(|l| l.as_bytes().is_empty()) {
        return None;
    }
    Some(lits.iter().map(|l| l.as_bytes().to_vec()).collect())
}

/// One automaton over folded literals: a full DFA (one table lookup a byte) and no
/// prefilter — in Chinese text the first byte of a CJK literal (0xE4–0xE9) is in almost every
/// character, so a prefilter's candidates come every few bytes and cost more than they save.
fn automaton<P: AsRef<[u8]>>(patterns: &[P]) -> Result<AhoCorasick, aho_corasick::BuildError> {
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

    /// Gated regexes (a literal prefix) run only when the automaton saw their gate; those
    /// without one always; hints come from the same pass.
    #[test]
    fn one_pass_finds_rules_regexes_and_hints() {
        let rules = vec![
            rule("spam", &[], &["spam[0-9]{4}", "(win|won) \\d+ yuan"], RuleAction::Reject),
            rule("off", &[], &["\\d+% ?off"], RuleAction::Marketing),
            rule("lit", &["优惠"], &[], RuleAction::Marketing),
        ];
        assert!(prefixes("spam[0-9]{4}").is_some() && prefixes("(win|won) \\d+ yuan").is_some());
        assert!(prefixes("\\d+% ?off").is_none());
        let sc = Scanner::new(&rules, &["回T退订".into()]).unwrap();
        let v = |t: &str| sc.scan(&fold(t));
        assert_eq!(v("SPAM1234 now").rule.map(|m| m.rule), Some(0));
        assert_eq!(v("spam12 now").rule, None, "gate seen, regex does not match");
        assert_eq!(v("you WON 500 yuan").rule.map(|m| m.action), Some(RuleAction::Reject));
        assert_eq!(v("today 30% OFF").rule.map(|m| m.rule), Some(1), "ungated regex");
        assert_eq!(v("优惠 spam9999").rule.map(|m| m.action), Some(RuleAction::Reject), "reject wins");
        assert!(v("优惠，回t退订").hint);
        assert!(!v("优惠").hint);
        assert!(Scanner::new(&rules, &[]).unwrap().scan("x").hint, "no hints configured");
        // More gates in one text than are tracked: every gated regex runs.
        let many: Vec<ContentRule> =
            (0..40).map(|i| rule(&format!("r{i}"), &[], &[&format!("g{i}x[0-9]")], RuleAction::Reject)).collect();
        let sc = Scanner::new(&many, &[]).unwrap();
        let text: String = (0..39).map(|i| format!("g{i}x ")).collect::<String>() + "g39x7";
        assert_eq!(sc.scan(&text).rule.map(|m| m.rule), Some(39));
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
