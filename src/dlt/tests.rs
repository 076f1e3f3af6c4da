//! Tests of the DLT registry: the inputs' row errors, the matcher (placeholders at the start,
//! the end and adjacent, 30 against 31 characters, Hindi), matching without a template id
//! among many templates sharing a prefix, the lookups, and the file's validation.

use std::path::Path;

use super::template::match_content;
use super::*;

const PE: u64 = 1_101_000_000_000_000_001;
const PE2: u64 = 1_101_000_000_000_000_002;

/// Writes the five files into `dir` and builds `dir/r.dlt` (bad rows allowed).
fn build_in(dir: &Path, files: [&str; 5], max_invalid: u64) -> Result<BuildReport, BuildError> {
    let names = ["entities.csv", "headers.csv", "templates.csv", "chains.csv", "preferences.csv"];
    for (n, t) in names.iter().zip(files) {
        std::fs::write(dir.join(n), t).unwrap();
    }
    build(&BuildOptions {
        entities: dir.join(names[0]),
        headers: dir.join(names[1]),
        templates: dir.join(names[2]),
        chains: Some(dir.join(names[3])),
        preferences: Some(dir.join(names[4])),
        out: dir.join("r.dlt"),
        max_invalid,
        ..BuildOptions::default()
    })
}

fn entities() -> String {
    format!("pe_id,name,status\n{PE},Acme Bank,active\n{PE2},Other Ltd,inactive\n")
}

fn headers() -> String {
    format!("header,pe_id,type,status\nACMEBK,{PE},T,active\nACMEPR,{PE},P,active\nOTHERS,{PE2},S,active\n")
}

/// A registry of `templates` rows (after the header row) for PE / ACMEBK.
fn registry(templates: &str) -> (tempfile::TempDir, Registry) {
    let dir = tempfile::tempdir().unwrap();
    let t = format!("template_id,pe_id,headers,category,content_category,content,status\n{templates}");
    let chains = format!("pe_id,tm_id\n{PE},1302000000000000007\n{PE},1302000000000000009\n");
    let prefs = "msisdn,categories,registered_at\n9812345678,1;3,2024-01-01\n919812345678,all,2024-06-01\n\
                 +919800000001,8,2024-02-02\n";
    build_in(dir.path(), [&entities(), &headers(), &t, &chains, prefs], 0).unwrap();
    let r = Registry::open(dir.path().join("r.dlt")).unwrap();
    (dir, r)
}

fn m(content: &str, text: &str) -> Result<(), TextFail> {
    match_content(content, text).map_err(|(f, _)| f)
}

#[test]
fn var_split_is_str_split() {
    for c in
        ["", "a", "{#var#}", "{#var#}{#var#}", "a{#var#}b", "{x{#var#}{#var", "{{#var#}}", "Dear {#var#}, OTP {#var#}."]
    {
        let ours: Vec<&str> = super::template::var_split(c).collect();
        let std: Vec<&str> = c.split(VAR).collect();
        assert_eq!(ours, std, "{c:?}");
    }
}

#[test]
fn placeholders_at_start_end_and_adjacent() {
    assert_eq!(m("{#var#} is your OTP", "123456 is your OTP"), Ok(()));
    assert_eq!(m("{#var#} is your OTP", " is your OTP"), Ok(()));
    assert_eq!(m("Your OTP is {#var#}", "Your OTP is 42"), Ok(()));
    assert_eq!(m("Your OTP is {#var#}", "Your OTP is "), Ok(()));
    // Adjacent placeholders: up to 60 characters together.
    let c = "Hi {#var#}{#var#}, bye";
    assert_eq!(m(c, &format!("Hi {}, bye", "x".repeat(60))), Ok(()));
    assert_eq!(m(c, &format!("Hi {}, bye", "x".repeat(61))), Err(TextFail::VariableTooLong { var: 2, chars: 61 }));
    assert_eq!(m("{#var#}{#var#}", "a"), Ok(()));
    // Literal mismatches, with the part and the character.
    assert_eq!(m("Your OTP is {#var#}", "Your PIN is 4"), Err(TextFail::Literal { part: 0, at: 5 }));
    assert_eq!(m("A {#var#} B {#var#} C", "A x B y D"), Err(TextFail::Literal { part: 2, at: 7 }));
    assert_eq!(m("A {#var#} B", "A x Bq"), Err(TextFail::Literal { part: 1, at: 4 }));
    assert_eq!(m("No vars", "No vars"), Ok(()));
    assert_eq!(m("No vars", "No vars!"), Err(TextFail::Literal { part: 0, at: 7 }));
    // Case-sensitive literals.
    assert!(m("Dear {#var#}", "dear x").is_err());
}

#[test]
fn thirty_characters_not_thirty_one() {
    let c = "Code {#var#} ok";
    assert_eq!(m(c, &format!("Code {} ok", "9".repeat(30))), Ok(()));
    assert_eq!(m(c, &format!("Code {} ok", "9".repeat(31))), Err(TextFail::VariableTooLong { var: 1, chars: 31 }));
    // The same at the end and in the middle of three.
    assert_eq!(m("x {#var#}", &format!("x {}", "a".repeat(31))), Err(TextFail::VariableTooLong { var: 1, chars: 31 }));
    let c = "a {#var#} b {#var#} c {#var#} d";
    assert_eq!(m(c, &format!("a 1 b {} c 3 d", "z".repeat(30))), Ok(()));
    assert_eq!(m(c, &format!("a 1 b {} c 3 d", "z".repeat(31))), Err(TextFail::VariableTooLong { var: 2, chars: 31 }));
}

/// Hindi: a placeholder counts characters, not UTF-8 bytes (3 each here) or UCS-2 units.
#[test]
fn hindi_text_counts_characters() {
    let c = "प्रिय ग्राहक, आपका कोड {#var#} है";
    let v30: String = "क".repeat(30);
    assert_eq!(v30.len(), 90);
    assert_eq!(m(c, &format!("प्रिय ग्राहक, आपका कोड {v30} है")), Ok(()));
    assert_eq!(m(c, &format!("प्रिय ग्राहक, आपका कोड {v30}ख है")), Err(TextFail::VariableTooLong { var: 1, chars: 31 }));
    // Decoded from UCS-2 as the gateway does.
    let ucs2: Vec<u16> = "प्रिय ग्राहक, आपका कोड 1234 है".encode_utf16().collect();
    assert_eq!(m(c, &String::from_utf16(&ucs2).unwrap()), Ok(()));
    assert!(matches!(m(c, "प्रिय ग्राहक, आपकी कोड 1 है"), Err(TextFail::Literal { part: 0, .. })));
}

/// A run that occurs more than once inside a window: the match must not commit to the first.
#[test]
fn no_greedy_commitment() {
    let c = "a{#var#}b{#var#}c";
    assert_eq!(m(c, "a b b b c"), Ok(()));
    // The first placeholder may end at either `b`; only the second leaves the last one at
    // most 30 characters.
    let text = format!("a{}b{}b{}c", "x".repeat(5), "y".repeat(3), "z".repeat(30));
    assert_eq!(m(c, &text), Ok(()));
    let text = format!("a{}b{}b{}c", "x".repeat(5), "y".repeat(3), "z".repeat(31));
    assert_eq!(m(c, &text), Err(TextFail::VariableTooLong { var: 2, chars: 31 }));
}

#[test]
fn content_checks() {
    use super::template::check_content;
    assert!(check_content("Your OTP is {#var#}").is_ok());
    for (bad, why) in [
        ("", "empty"),
        ("Your OTP is {#VAR#}", "not a placeholder"),
        ("Your OTP is {#var}", "not a placeholder"),
        ("{#var#}{#var#}", "no fixed text"),
        ("bell\u{7}", "control character"),
    ] {
        let e = check_content(bad).unwrap_err();
        assert!(e.contains(why), "{bad:?}: {e}");
    }
    assert!(check_content(&"x".repeat(MAX_CONTENT_BYTES + 1)).unwrap_err().contains("bytes"));
}

/// Every field of every file refused with `file:line: field: message`; the build fails by
/// default and skips them with --max-invalid.
#[test]
fn bad_rows_name_file_line_and_field() {
    let dir = tempfile::tempdir().unwrap();
    let ent = format!(
        "pe_id,name,status\n{PE},Acme,active\n0123,Lead,active\nabc,X,active\n{PE2},,active\n\
         1101000000000000003,Y,asleep\n{PE},Again,active\n{PE2},Other,active\n"
    );
    let hdr = format!(
        "header,pe_id,type,status\nACMEBK,{PE},T,active\nAC ME,{PE},T,active\nACMEX1,999,T,active\n\
         ACMEX2,{PE},Q,active\nACMEX3,{PE},T,gone\nACMEBK,{PE},S,active\nOTHERS,{PE2},S,active\n"
    );
    let tpl = format!(
        "template_id,pe_id,headers,category,content_category,content,status\n\
         1107000000000000001,{PE},ACMEBK,transactional,,Your OTP is {{#var#}},active\n\
         1107000000000000002,{PE},NOPE,transactional,,x {{#var#}},active\n\
         1107000000000000003,{PE},OTHERS,transactional,,x {{#var#}},active\n\
         1107000000000000004,{PE},ACMEBK,marketing,,x {{#var#}},active\n\
         1107000000000000005,{PE},ACMEBK,promotional,,x {{#var#}},active\n\
         1107000000000000006,{PE},ACMEBK,transactional,3,x {{#var#}},active\n\
         1107000000000000007,{PE},ACMEBK,transactional,,x {{#VAR#}},active\n\
         1107000000000000008,{PE},ACMEBK,transactional,,x {{#var#}},maybe\n\
         1107000000000000001,{PE},ACMEBK,transactional,,dup {{#var#}},active\n\
         1107000000000000009,42x,ACMEBK,transactional,,x {{#var#}},active\n\
         1107000000000000010,{PE},ACMEBK,promotional,9,x {{#var#}},active\n"
    );
    let chains = format!("pe_id,tm_id\n{PE},1302000000000000007\n999,1302000000000000007\n{PE},tm\n");
    let prefs = "msisdn,categories,registered_at\n9812345678,1;3,2024-01-01\nabc,1,2024-01-01\n\
                 9812345679,9,2024-01-01\n9812345670,all,someday\n";
    let e = build_in(dir.path(), [&ent, &hdr, &tpl, &chains, prefs], 0).unwrap_err();
    let shown = e.to_string();
    assert!(shown.contains("/entities.csv:3: pe_id: `0123` is not a DLT id"), "{shown}");
    assert!(!dir.path().join("r.dlt").exists());

    let r = build_in(dir.path(), [&ent, &hdr, &tpl, &chains, prefs], 100).unwrap();
    let errs: Vec<String> = r.invalid.first.iter().map(|e| e.to_string()).collect();
    let want = [
        "entities.csv:3: pe_id: `0123`",
        "entities.csv:4: pe_id: `abc`",
        "entities.csv:5: name:",
        "entities.csv:6: status: `asleep`",
        "entities.csv:7: pe_id: 1101000000000000001 appears twice",
        "headers.csv:3: header: `AC ME`",
        "headers.csv:4: pe_id: 999 is not in the entities file",
        "headers.csv:5: type: `Q`",
        "headers.csv:6: status: `gone`",
        "headers.csv:7: header: `ACMEBK` appears twice",
        "templates.csv:3: headers: `NOPE` is not in the headers file",
        "templates.csv:4: headers: `OTHERS` is registered by PE 1101000000000000002",
        "templates.csv:5: category: `marketing`",
    ];
    for w in want {
        assert!(errs.iter().any(|e| e.contains(&format!("/{w}"))), "missing {w:?} in {errs:#?}");
    }
    // The first 20 are kept; the rest are counted by field.
    assert_eq!(r.invalid.count, 25, "{errs:#?}");
    for (field, n) in [("content_category", 3), ("content", 1), ("template_id", 1), ("tm_id", 1), ("categories", 1)] {
        assert_eq!(r.invalid.by_field.get(field), Some(&n), "{field}: {:?}", r.invalid.by_field);
    }
    assert_eq!(r.invalid.by_field.get("msisdn"), Some(&1));
    assert_eq!(r.invalid.by_field.get("registered_at"), Some(&1));
    assert_eq!((r.entities, r.headers, r.templates, r.chains, r.preferences), (2, 2, 1, 1, 1));
    let reg = Registry::open(dir.path().join("r.dlt")).unwrap();
    assert_eq!(reg.template(1_107_000_000_000_000_001).unwrap().content, "Your OTP is {#var#}");
}

#[test]
fn lookups() {
    let (_d, r) =
        registry(&format!("1107000000000000001,{PE},ACMEBK;ACMEPR,promotional,3,\"Sale, {{#var#}} off\",active\n"));
    assert_eq!(r.entity(PE), Some(Status::Active));
    assert_eq!(r.entity(PE2), Some(Status::Inactive));
    assert_eq!(r.entity(7), None);
    assert_eq!(
        r.header("ACMEBK"),
        Some(HeaderInfo { pe: PE, kind: HeaderType::Transactional, status: Status::Active })
    );
    assert_eq!(r.header("acmebk"), None, "headers are case-sensitive");
    assert_eq!(r.header(""), None);
    let t = r.template(1_107_000_000_000_000_001).unwrap();
    assert_eq!((t.pe, t.category, t.content_category, t.vars), (PE, Category::Promotional, Some(3), 1));
    assert_eq!(r.template_headers(&t).collect::<Vec<_>>(), ["ACMEBK", "ACMEPR"]);
    assert!(r.chain_declared(PE, 1_302_000_000_000_000_007));
    assert!(r.chain_declared(PE, 1_302_000_000_000_000_009));
    assert!(!r.chain_declared(PE, 1_302_000_000_000_000_008));
    assert!(!r.chain_declared(PE2, 1_302_000_000_000_000_007));
    // National and international forms are one number; the later registration wins.
    let p = r.preference(919_812_345_678).unwrap();
    assert!(p.fully_blocked && p.refuses(5));
    let p = r.preference(919_800_000_001).unwrap();
    assert_eq!((p.fully_blocked, p.blocked), (false, 0x80));
    assert!(p.refuses(8) && !p.refuses(1));
    assert_eq!(r.preference(919_800_000_002), None);
}

#[test]
fn mismatches_say_which_check() {
    let (_d, r) = registry(&format!(
        "1107000000000000001,{PE},ACMEBK,transactional,,Your OTP is {{#var#}} - Acme,active\n\
         1107000000000000002,{PE},ACMEPR,promotional,2,Big sale {{#var#}},active\n\
         1107000000000000003,{PE},ACMEBK,transactional,,Old OTP {{#var#}},inactive\n\
         1107000000000000004,{PE2},OTHERS,transactional,,Hello {{#var#}},active\n"
    ));
    let id = Some(1_107_000_000_000_000_001);
    assert_eq!(r.match_text(PE, "ACMEBK", id, "Your OTP is 1234 - Acme").map(|t| t.id), Ok(1_107_000_000_000_000_001));
    assert_eq!(r.match_text(PE, "NOSUCH", id, "x"), Err(Mismatch::UnknownHeader));
    assert_eq!(r.match_text(PE, "OTHERS", id, "x"), Err(Mismatch::HeaderOfOtherPe { owner: PE2 }));
    assert_eq!(
        r.match_text(PE, "ACMEBK", Some(1_107_000_000_000_000_099), "x"),
        Err(Mismatch::UnknownTemplate { template_id: 1_107_000_000_000_000_099 })
    );
    assert_eq!(
        r.match_text(PE, "ACMEBK", Some(1_107_000_000_000_000_004), "Hello x"),
        Err(Mismatch::TemplateOfOtherPe { template_id: 1_107_000_000_000_000_004, owner: PE2 })
    );
    assert_eq!(
        r.match_text(PE, "ACMEBK", Some(1_107_000_000_000_000_002), "Big sale now"),
        Err(Mismatch::TemplateOfOtherHeader { template_id: 1_107_000_000_000_000_002 })
    );
    assert_eq!(
        r.match_text(PE, "ACMEBK", Some(1_107_000_000_000_000_003), "Old OTP 1"),
        Err(Mismatch::TemplateInactive { template_id: 1_107_000_000_000_000_003, status: Status::Inactive })
    );
    let e = r.match_text(PE, "ACMEBK", id, &format!("Your OTP is {} - Acme", "1".repeat(31))).unwrap_err();
    assert_eq!(
        e,
        Mismatch::Text {
            template_id: 1_107_000_000_000_000_001,
            fail: TextFail::VariableTooLong { var: 1, chars: 31 }
        }
    );
    assert_eq!(e.label(), "template_variable_too_long");
    // Without an id.
    assert_eq!(r.match_text(PE, "ACMEBK", None, "Your OTP is 9 - Acme").map(|t| t.id), Ok(1_107_000_000_000_000_001));
    assert_eq!(
        r.match_text(PE, "ACMEBK", None, "Old OTP 9"),
        Err(Mismatch::TemplateInactive { template_id: 1_107_000_000_000_000_003, status: Status::Inactive })
    );
    let e = r.match_text(PE, "ACMEBK", None, "Your OTP is 9 - Acme Bank").unwrap_err();
    assert_eq!(e.label(), "template_not_matched");
    assert_eq!(r.match_text(PE2, "OTHERS", None, "Bye"), Err(Mismatch::NoMatch { candidates: 0, closest: None }));
    let e = r.match_text(PE, "ACMEBK", None, &format!("Your OTP is {} - Acme", "1".repeat(31))).unwrap_err();
    assert_eq!(
        e,
        Mismatch::NoMatch {
            candidates: 1,
            closest: Some((1_107_000_000_000_000_001, TextFail::VariableTooLong { var: 1, chars: 31 }))
        }
    );
    assert!(
        e.to_string().contains("closest template 1107000000000000001: placeholder 1 would be 31 characters"),
        "{e}"
    );
}

/// 3 000 templates of one PE and header sharing a long prefix (and 3 000 sharing a suffix, and
/// some starting with a placeholder): each text finds its own template without an id, and
/// the anchor buckets stay small where the first or last literal run differs.
#[test]
fn many_templates_sharing_prefixes() {
    let mut rows = String::new();
    let n = 3000u64;
    let word = |i: u64| format!("w{}x{}", i * 7 % 1000, i);
    for i in 0..n {
        let id = 1_107_000_000_000_100_000 + i;
        let content = match i % 3 {
            // Shared prefix, own ending.
            0 => format!("Dear Customer, your account {{#var#}} was {} today {}", word(i), word(i + 1)),
            // Own beginning, shared ending.
            1 => format!("{} credited Rs {{#var#}} - Acme Bank", word(i)),
            // A placeholder first, own middle, shared ending.
            _ => format!("{{#var#}} is your code for {} - Acme Bank", word(i)),
        };
        rows.push_str(&format!("{id},{PE},ACMEBK,transactional,,\"{content}\",active\n"));
    }
    let (_d, r) = registry(&rows);
    let mut seed = 7;
    for i in 0..n {
        let id = 1_107_000_000_000_100_000 + i;
        let t = r.template(id).unwrap();
        let text = synth::fill(t.content, &mut seed);
        let got = r.match_text(PE, "ACMEBK", None, &text).unwrap_or_else(|e| panic!("{text:?}: {e}"));
        assert_eq!(got.content, t.content, "{text:?} matched {} instead of {id}", got.id);
        assert_eq!(r.match_text(PE, "ACMEBK", Some(id), &text).map(|t| t.id), Ok(id));
    }
    // Each template's first or last run holds its own word: one template per anchor, so a
    // text is matched in full against one template whatever the PE's count.
    let s = r.anchor_stats();
    assert_eq!((s.anchors, s.largest, s.groups), (3000, 1, 1), "{s:?}");
    assert!(s.most_probes <= 6, "{s:?}");
    // Where the runs at both ends are shared, the bucket holds them all: the worst case,
    // which `dlt inspect` reports.
    let mut rows = String::new();
    for i in 0..200u64 {
        let id = 1_107_000_000_000_200_000 + i;
        rows.push_str(&format!("{id},{PE},ACMEBK,transactional,,\"A/c {{#var#}} {} - Acme\",active\n", word(i)));
    }
    let (_d, r) = registry(&rows);
    // The last run ` wNNNxI - Acme` is 14–16 bytes: most are anchored on its last 8, shared.
    let largest = r.anchor_stats().largest;
    assert!((2..=20).contains(&largest), "{largest}");
    let mut rows = String::new();
    for i in 0..200u64 {
        let id = 1_107_000_000_000_200_000 + i;
        rows.push_str(&format!(
            "{id},{PE},ACMEBK,transactional,,\"A/c {{#var#}} {} {{#var#}} - Acme\",active\n",
            word(i)
        ));
    }
    let (_d, r) = registry(&rows);
    assert_eq!(r.anchor_stats().largest, 200);
    // The bucket holds all 200, but each entry's gram filter (two 4-byte grams of its middle
    // run) drops most before their contents are read: every template is still found, after
    // matching few of the others.
    let h = r.header_id("ACMEBK").unwrap();
    let group = r.index(S_GROUPS).get(super::template::group_key(PE, h)).unwrap();
    let (mut seed, mut skipped_total) = (3, 0u64);
    for i in 0..200u64 {
        let id = 1_107_000_000_000_200_000 + i;
        let text = synth::fill(r.template(id).unwrap().content, &mut seed);
        assert_eq!(r.match_text(PE, "ACMEBK", None, &text).map(|t| t.id), Ok(id), "{text:?}");
        let (found, skipped) = r.match_anchored(PE, h, group, &text, true);
        assert_eq!(found.map(|t| t.id), Ok(id));
        // The i templates before it in the bucket: the filter keeps only those whose two
        // grams hash into the text's set.
        skipped_total += u64::from(skipped);
    }
    assert!(skipped_total >= 19_900 * 9 / 10, "{skipped_total} of 19 900 earlier candidates skipped");
    let text = format!("A/c 12 {} 34 - Acme", word(150));
    assert_eq!(r.match_text(PE, "ACMEBK", None, &text).map(|t| t.id), Ok(1_107_000_000_000_200_150));
    // A text no template matches: the filter drops most, then the refusal is worked out
    // without it, so its closest template and reason are those of a full match.
    let near = format!("A/c 12 {}X 34 - Acme", word(150));
    let long = format!("A/c {} {} 34 - Acme", "1".repeat(31), word(150));
    for text in ["A/c 12 nothing-alike 34 - Acme", &near, &long] {
        let (filtered, skipped) = r.match_anchored(PE, h, group, text, true);
        assert!(matches!(filtered, Err(Mismatch::NoMatch { .. })) && skipped > 0, "{filtered:?} {skipped}");
        let full = r.match_anchored(PE, h, group, text, false).0;
        assert_eq!(r.match_text(PE, "ACMEBK", None, text).map(|t| t.id), full.map(|t| t.id), "{text:?}");
    }
    // The template whose runs are all in the text, one value too long, is the closest of the
    // 200 (the others fail at their middle run): the reason is the variable's length.
    match r.match_text(PE, "ACMEBK", None, &long) {
        Err(Mismatch::NoMatch {
            candidates: 200,
            closest: Some((id, TextFail::VariableTooLong { var: 1, chars: 31 })),
        }) => {
            assert_eq!(id, 1_107_000_000_000_200_150)
        }
        other => panic!("{other:?}"),
    }
}

/// Two templates of a header that one text matches: the earlier row of templates.csv wins,
/// whatever their ids or gram filters.
#[test]
fn earlier_row_wins_a_tie() {
    let rows = format!(
        "1107000000000000902,{PE},ACMEBK,transactional,,\"Your OTP is {{#var#}} code {{#var#}} for login\",active\n\
         1107000000000000901,{PE},ACMEBK,service_implicit,,\"Your OTP is {{#var#}} for login\",active\n"
    );
    let (_d, r) = registry(&rows);
    assert_eq!(
        r.match_text(PE, "ACMEBK", None, "Your OTP is 1234 code 5 for login").map(|t| t.id),
        Ok(1_107_000_000_000_000_902)
    );
    assert_eq!(
        r.match_text(PE, "ACMEBK", None, "Your OTP is 1234 for login").map(|t| t.id),
        Ok(1_107_000_000_000_000_901)
    );
}

#[test]
fn damaged_files_are_refused() {
    let (d, _r) = registry(&format!("1107000000000000001,{PE},ACMEBK,transactional,,Your OTP is {{#var#}},active\n"));
    let path = d.path().join("r.dlt");
    let good = std::fs::read(&path).unwrap();
    assert!(Registry::from_bytes(&good, "r").is_ok());
    let mut bad = good.clone();
    let last = bad.len() - 70;
    bad[last] ^= 1;
    assert!(matches!(Registry::from_bytes(&bad, "r"), Err(RegistryError::PayloadChecksum { .. })));
    let mut bad = good.clone();
    bad[20] ^= 1;
    assert!(matches!(Registry::from_bytes(&bad, "r"), Err(RegistryError::HeaderChecksum { .. })));
    assert!(matches!(Registry::from_bytes(&good[..good.len() - 64], "r"), Err(RegistryError::Truncated { .. })));
    assert!(matches!(Registry::from_bytes(b"CGSNAP\0\x01xxxxxxxx", "r"), Err(RegistryError::Truncated { .. })));
    let mut bad = good.clone();
    bad[0] = b'X';
    assert!(matches!(Registry::from_bytes(&bad, "r"), Err(RegistryError::BadMagic { .. })));
    // A structural fault behind a valid checksum: a template record's category.
    let mut bad = good.clone();
    let h = format::Header::check(&bad, bad.len() as u64, "r").unwrap();
    let rec = h.sections[format::S_TEMPLATES].offset as usize;
    bad[rec + 33] = 9;
    let mut hasher = crate::consent::snapshot::BlockHasher::at(HEADER_LEN as u64);
    hasher.update(&bad[HEADER_LEN..]);
    let h2 = format::Header { payload_checksum: hasher.finish(), ..h };
    bad[..HEADER_LEN].copy_from_slice(&h2.encode());
    let e = Registry::from_bytes(&bad, "r").unwrap_err();
    assert!(e.to_string().contains("section templates: record 0 invalid"), "{e}");
}

/// The synthetic generator's files build, and every template is found again without its id.
#[test]
fn synthetic_registry_round_trip() {
    let dir = tempfile::tempdir().unwrap();
    let o = synth::SynthOptions {
        dir: dir.path().to_owned(),
        entities: 200,
        headers: 700,
        templates: 20_000,
        big_pe_templates: 3_000,
        preferences: 500,
        seed: 3,
    };
    let f = synth::write(&o, |_| {}).unwrap();
    let out = dir.path().join("s.dlt");
    let rep = build(&f.build_options(out.clone())).unwrap();
    assert_eq!(rep.templates, 20_000);
    let r = Registry::open(&out).unwrap();
    let mut seed = 1;
    let mut found = 0;
    for t in r.templates().step_by(7) {
        let text = synth::fill(t.content, &mut seed);
        let h = r.template_headers(&t).next().unwrap().to_owned();
        match r.match_text(t.pe, &h, None, &text) {
            Ok(got) => {
                assert!(super::template::match_content(got.content, &text).is_ok());
                found += 1;
            }
            Err(Mismatch::TemplateInactive { .. }) => assert_ne!(t.status, Status::Active),
            Err(e) => panic!("{text:?} of {}: {e}", t.id),
        }
        if t.status == Status::Active {
            assert_eq!(r.match_text(t.pe, &h, Some(t.id), &text).map(|x| x.id), Ok(t.id));
        }
    }
    assert!(found > 2000);
}

/// This build writes format 2 (anchor entries with gram filters) and still reads format 1;
/// a version-1 file with filter bits, or a version it does not know, is refused.
#[test]
fn format_versions_read_and_refused() {
    let with_version = |path: &Path, v: u32| {
        let mut b = std::fs::read(path).unwrap();
        b[8..12].copy_from_slice(&v.to_le_bytes());
        let sum = xxhash_rust::xxh3::xxh3_64(&b[..504]);
        b[504..512].copy_from_slice(&sum.to_le_bytes());
        std::fs::write(path, b).unwrap();
    };
    // No literal text outside the anchor: no filter, so the file is also a valid version 1.
    let (d, r) = registry(&format!("1107000000000000001,{PE},ACMEBK,transactional,,\"A/c {{#var#}} - Acme\",active\n"));
    assert_eq!(r.info().format_version, FORMAT_VERSION);
    let path = d.path().join("r.dlt");
    with_version(&path, 1);
    let r = Registry::open(&path).unwrap();
    assert_eq!(r.info().format_version, 1);
    assert_eq!(r.match_text(PE, "ACMEBK", None, "A/c 12 - Acme").map(|t| t.id), Ok(1_107_000_000_000_000_001));
    with_version(&path, FORMAT_VERSION + 1);
    let e = Registry::open(&path).unwrap_err().to_string();
    assert!(e.contains("unsupported DLT registry format version 3 (this build reads 1 to 2)"), "{e}");
    // With a filter: refused as version 1, naming the section.
    let (d, _) = registry(&format!(
        "1107000000000000001,{PE},ACMEBK,transactional,,\"Dear customer, your OTP is {{#var#}}\",active\n"
    ));
    let path = d.path().join("r.dlt");
    with_version(&path, 1);
    let e = Registry::open(&path).unwrap_err().to_string();
    assert!(e.contains("anchors") && e.contains("out of range"), "{e}");
}
