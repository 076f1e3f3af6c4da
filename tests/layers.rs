//! architecture §6: the module layers point one way. Each top-level module of `src/` may import
//! (`crate::<module>` in code, comments and test modules aside) only the modules listed for it
//! here; `config`, `demo` and the binary compose everything and are imported by nobody but the
//! binary. A new edge either belongs in this table (and in architecture §6) or is a layering bug.

use std::collections::{BTreeMap, BTreeSet};
use std::path::Path;

/// Module → the modules it may import.
const ALLOWED: &[(&str, &[&str])] = &[
    // 0: leaves
    ("time", &[]),
    ("smpp", &["time"]),
    // the CMPP wire reuses smpp::text (UDH readers, case folding) so both protocols fold alike
    ("cmpp", &["time", "smpp"]),
    ("telemetry", &["time"]),
    // capture reading frames SMPP or CMPP streams (`load --pcap`, `load --cmpp --pcap`)
    ("pcap", &["time", "smpp", "cmpp"]),
    // 1: consent data
    ("consent", &["time", "smpp", "telemetry"]),
    // the India DLT registry: compiled like the consent snapshot, with its file conventions
    ("dlt", &["time", "consent"]),
    // 2: decisions and sinks
    // policy runs the DLT steps against the registry (`policy::dlt`)
    ("policy", &["time", "smpp", "telemetry", "consent", "dlt"]),
    ("optout", &["time", "smpp", "telemetry", "consent"]),
    ("audit", &["time", "smpp", "telemetry", "consent", "policy"]),
    ("capture", &["time", "smpp", "telemetry", "pcap"]),
    // 3: per connection
    ("relay", &["time", "smpp", "telemetry"]),
    ("session", &["time", "smpp", "cmpp", "telemetry", "consent", "policy", "optout", "audit", "capture", "relay"]),
    // 4: process (complaints below admin, admin below gateway: the gateway opens the register
    // and spawns the admin API with a narrow handle on both)
    ("complaints", &["time", "smpp", "telemetry", "consent", "policy", "audit"]),
    // replication below admin (its state is part of /readyz) and gateway (which starts it)
    ("replication", &["time", "telemetry", "consent", "policy"]),
    (
        "admin",
        &[
            "time",
            "smpp",
            "telemetry",
            "consent",
            "policy",
            "optout",
            "audit",
            "capture",
            "relay",
            "complaints",
            "replication",
        ],
    ),
    (
        "gateway",
        &[
            "time",
            "smpp",
            "telemetry",
            "consent",
            "policy",
            "optout",
            "audit",
            "capture",
            "relay",
            "session",
            "complaints",
            "replication",
            "admin",
        ],
    ),
    // tools: never imported by the layers above
    // the ISMG simulator (sim::cmpp) speaks CMPP with the wire layer's views and builders
    ("sim", &["time", "smpp", "cmpp", "telemetry", "pcap"]),
    // the load generator speaks CMPP as an SP (`load --cmpp`) with the wire layer's builders
    ("load", &["time", "smpp", "cmpp", "telemetry", "pcap", "relay"]),
];

/// Composition: may import anything.
const TOP: &[&str] = &["config", "demo", "fuzzing", "lib", "main"];

fn module_of(rel: &Path) -> String {
    let first = rel.components().next().unwrap().as_os_str().to_string_lossy().into_owned();
    first.trim_end_matches(".rs").to_owned()
}

/// `crate::x` references in code: comments and `#[cfg(test)] mod tests` blocks left out.
fn imports(text: &str) -> BTreeSet<String> {
    let mut out = BTreeSet::new();
    let mut lines = text.lines().peekable();
    while let Some(line) = lines.next() {
        let t = line.trim_start();
        if t.starts_with("#[cfg(test)]") && lines.peek().is_some_and(|n| n.trim_start().starts_with("mod tests")) {
            if lines.peek().is_some_and(|n| n.trim_end().ends_with(';')) {
                lines.next();
                continue;
            }
            break; // an inline test module runs to the end of the file, by convention here
        }
        if t.starts_with("//") {
            continue;
        }
        let code = t.split("//").next().unwrap_or("");
        let mut rest = code;
        while let Some(i) = rest.find("crate::") {
            let tail = &rest[i + 7..];
            let name: String = tail.chars().take_while(|c| c.is_ascii_alphanumeric() || *c == '_').collect();
            if !name.is_empty() {
                out.insert(name);
            }
            rest = tail;
        }
    }
    out
}

fn walk(dir: &Path, root: &Path, edges: &mut BTreeMap<String, BTreeSet<(String, String)>>) {
    for e in std::fs::read_dir(dir).unwrap() {
        let p = e.unwrap().path();
        if p.is_dir() {
            walk(&p, root, edges);
            continue;
        }
        let name = p.file_name().unwrap().to_string_lossy().into_owned();
        if !name.ends_with(".rs") || name == "tests.rs" || name.ends_with("_tests.rs") {
            continue;
        }
        let rel = p.strip_prefix(root).unwrap();
        let module = module_of(rel);
        for dep in imports(&std::fs::read_to_string(&p).unwrap()) {
            if dep != module {
                edges.entry(module.clone()).or_default().insert((dep, rel.display().to_string()));
            }
        }
    }
}

#[test]
fn modules_import_only_lower_layers() {
    let root = Path::new(env!("CARGO_MANIFEST_DIR")).join("src");
    let mut edges = BTreeMap::new();
    walk(&root, &root, &mut edges);
    let allowed: BTreeMap<&str, &[&str]> = ALLOWED.iter().copied().collect();
    let mut bad = Vec::new();
    for (module, deps) in &edges {
        if TOP.contains(&module.as_str()) {
            continue;
        }
        let Some(ok) = allowed.get(module.as_str()) else {
            bad.push(format!("{module}: not in the layer table of tests/layers.rs"));
            continue;
        };
        for (dep, file) in deps {
            if !ok.contains(&dep.as_str()) {
                bad.push(format!("{module} -> {dep} (src/{file})"));
            }
        }
    }
    assert!(bad.is_empty(), "layering violations (architecture §6):\n  {}", bad.join("\n  "));
}

#[test]
fn the_checker_sees_code_and_skips_comments_and_tests() {
    let text = "use crate::policy::X;\n// crate::config in a comment\nfn f() { crate::time::now(); } // crate::demo\n#[cfg(test)]\nmod tests {\n use crate::config;\n}\n";
    let got: Vec<_> = imports(text).into_iter().collect();
    assert_eq!(got, vec!["policy".to_owned(), "time".to_owned()]);
}
