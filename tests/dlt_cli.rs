//! `consentgate dlt build | inspect | lookup` as an operator runs them (the real binary): a
//! bad row fails the build naming the file, line and field and leaves no registry; with it
//! fixed the registry builds, inspects, and lookup says which DLT step passes or fails, with
//! the template and PE ids.

use std::path::Path;
use std::process::Command;

const PE: &str = "1101000000000000001";
const PE2: &str = "1101000000000000002";

fn consentgate(args: &[&str]) -> (i32, String, String) {
    let out = Command::new(env!("CARGO_BIN_EXE_consentgate")).args(args).output().expect("run consentgate");
    (
        out.status.code().unwrap_or(-1),
        String::from_utf8_lossy(&out.stdout).into(),
        String::from_utf8_lossy(&out.stderr).into(),
    )
}

fn write_inputs(dir: &Path, templates: &str) {
    let w = |n: &str, t: String| std::fs::write(dir.join(n), t).unwrap();
    w("entities.csv", format!("pe_id,name,status\n{PE},Acme Bank,active\n{PE2},Other,blacklisted\n"));
    w(
        "headers.csv",
        format!("header,pe_id,type,status\nACMEBK,{PE},T,active\nACMEOF,{PE},P,inactive\nACMEPR,{PE},P,active\nOTHERS,{PE2},S,active\n"),
    );
    w("templates.csv", format!("template_id,pe_id,headers,category,content_category,content,status\n{templates}"));
    w("chains.csv", format!("pe_id,tm_id\n{PE},1302000000000000007\n"));
    w("preferences.csv", "msisdn,categories,registered_at\n9812345678,all,2024-01-01\n".into());
}

fn build(dir: &Path) -> (i32, String, String) {
    let p = |n: &str| dir.join(n).to_str().unwrap().to_owned();
    consentgate(&[
        "dlt",
        "build",
        "--entities",
        &p("entities.csv"),
        "--headers",
        &p("headers.csv"),
        "--templates",
        &p("templates.csv"),
        "--chains",
        &p("chains.csv"),
        "--preferences",
        &p("preferences.csv"),
        "--out",
        &p("r.dlt"),
    ])
}

#[test]
fn build_inspect_lookup() {
    let dir = tempfile::tempdir().unwrap();
    let good = format!(
        "1107000000000000001,{PE},ACMEBK,transactional,,\"Dear {{#var#}}, your OTP is {{#var#}}. - Acme\",active\n\
         1107000000000000002,{PE},ACMEPR,promotional,4,\"प्रिय ग्राहक, ऑफर {{#var#}} - Acme\",active\n"
    );
    // A bad row: the build fails, names file, line and field, and writes nothing.
    write_inputs(dir.path(), &format!("{good}1107000000000000003,{PE},ACMEBK,promotional,,Sale {{#var#}},active\n"));
    let (code, out, err) = build(dir.path());
    assert_eq!(code, 1, "{out}{err}");
    assert!(err.contains("templates.csv:4: content_category: ``: a promotional template needs 1 to 8"), "{err}");
    assert!(!dir.path().join("r.dlt").exists());

    write_inputs(dir.path(), &good);
    let (code, out, err) = build(dir.path());
    assert_eq!(code, 0, "{out}{err}");
    assert!(out.contains("templates:    2 (2 template-header pairs)"), "{out}");
    let reg = dir.path().join("r.dlt");
    let reg = reg.to_str().unwrap();

    let (code, out, err) = consentgate(&["dlt", "inspect", reg]);
    assert_eq!(code, 0, "{err}");
    for want in ["entities:           2", "headers:            4", "templates:          2", "preferences:        1"] {
        assert!(out.contains(want), "{want:?} in {out}");
    }

    let lookup = |args: &[&str]| {
        let mut a = vec!["dlt", "lookup", reg];
        a.extend_from_slice(args);
        consentgate(&a)
    };
    // Without a template id: found by its text (Hindi included), chain declared.
    let (code, out, _) = lookup(&[
        "--pe-id",
        PE,
        "--header",
        "ACMEBK",
        "--tm",
        "1302000000000000007",
        "--text",
        "Dear Asha, your OTP is 4711. - Acme",
    ]);
    assert_eq!(code, 0, "{out}");
    assert!(
        out.contains("template  ok: template 1107000000000000001 of PE 1101000000000000001, found by its text"),
        "{out}"
    );
    assert!(out.contains("chain     ok") && out.contains("verdict: pass"), "{out}");
    // Promotional: preferences and the hours, at a chosen time (IST).
    let hindi = "प्रिय ग्राहक, ऑफर दस प्रतिशत - Acme";
    let run = |msisdn: &str, at: &str| {
        let a = ["--pe-id", PE, "--header", "ACMEPR", "--chain", "1302000000000000007", "--msisdn", msisdn];
        lookup(&[&a[..], &["--at", at, "--text", hindi]].concat())
    };
    let (code, out, _) = run("9800000001", "2026-06-01T12:00:00+05:30");
    assert_eq!(code, 0, "{out}");
    assert!(out.contains("template 1107000000000000002") && out.contains("content category 4"), "{out}");
    assert!(out.contains("category  ok: promotional; 919800000001: consent of PE 1101000000000000001 not granted, no preference registered; 12:00 Asia/Kolkata (promotional hours 09:00-21:00)"), "{out}");
    assert!(out.contains("verdict: pass (promotional"), "{out}");
    let (code, out, _) = run("9800000001", "2026-06-01T21:30:00+05:30");
    assert_eq!(code, 1, "{out}");
    assert!(
        out.contains("21:30 Asia/Kolkata") && out.contains("verdict: reject (category: dlt_promotional_hours)"),
        "{out}"
    );
    let (code, out, _) = run("9812345678", "2026-06-01T12:00:00+05:30");
    assert_eq!(code, 1, "{out}");
    assert!(out.contains("fully blocked") && out.contains("verdict: reject (category: dlt_preference)"), "{out}");

    // Each failing step, named, with its ids.
    let var31 = format!("Dear {}, your OTP is 1. - Acme", "x".repeat(31));
    for (args, want) in [
        (vec!["--pe-id", "1101000000000000009", "--header", "ACMEBK", "--text", "x"], "entity    FAIL: PE 1101000000000000009 not registered"),
        (vec!["--pe-id", PE2, "--header", "OTHERS", "--text", "x"], "entity    FAIL: PE 1101000000000000002 is blacklisted"),
        (vec!["--pe-id", PE, "--header", "acmebk", "--text", "x"], "header    FAIL: \"acmebk\" not registered"),
        (vec!["--pe-id", PE, "--header", "ACMEOF", "--text", "x"], "header    FAIL: \"ACMEOF\" is inactive"),
        (vec!["--pe-id", PE, "--header", "OTHERS", "--text", "x"], "header    FAIL: \"OTHERS\" belongs to PE 1101000000000000002"),
        (
            vec!["--pe-id", PE, "--header", "ACMEBK", "--template-id", "1107000000000000001", "--text", &var31],
            "template  FAIL: text does not match template 1107000000000000001: placeholder 1 would be 31 characters (at most 30) (template 1107000000000000001, PE 1101000000000000001)",
        ),
        (
            vec!["--pe-id", PE, "--header", "ACMEBK", "--text", "Your OTP is 1"],
            "template  FAIL: no template matches (0 candidate(s) tried) (PE 1101000000000000001, header \"ACMEBK\")",
        ),
        (
            vec!["--pe-id", PE, "--header", "ACMEBK", "--template-id", "1107000000000000002", "--text", "प्रिय ग्राहक, ऑफर x - Acme"],
            "verdict: reject (template: dlt_template_unknown)",
        ),
        (
            vec!["--pe-id", PE, "--header", "ACMEBK", "--text", "Dear A, your OTP is 1. - Acme"],
            "chain     FAIL: no chain TLV",
        ),
        (
            vec!["--pe-id", PE, "--header", "ACMEBK", "--tm", "1302000000000000008", "--text", "Dear A, your OTP is 1. - Acme"],
            "chain     FAIL: TM 1302000000000000008 not declared in PE 1101000000000000001's delivery chain",
        ),
    ] {
        let (code, out, _) = lookup(&args);
        assert_eq!(code, 1, "{args:?}: {out}");
        assert!(out.contains(want), "{args:?}: want {want:?} in\n{out}");
        assert!(out.contains("verdict: reject"), "{out}");
    }
}
