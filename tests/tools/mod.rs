//! Shared by the tests that drive external tools: finding them (promtool, prometheus,
//! systemd-analyze, a Python with PyYAML or smpplib), running the smpplib client, and the
//! metric names of `src/telemetry/metrics.rs`.
//!
//! Missing tools: under CI (`CI` set and not `false`/`0`) a test that needs promtool or
//! prometheus fails with the install hint (`.ci/run` installs Debian's `prometheus`
//! package); on a developer machine it prints a notice and returns early.
#![allow(dead_code)]

use std::path::{Path, PathBuf};
use std::process::{Child, Command, Output};
use std::time::{Duration, Instant};

pub const ROOT: &str = env!("CARGO_MANIFEST_DIR");

/// `<repo>/<rel>`.
pub fn path(rel: &str) -> PathBuf {
    Path::new(ROOT).join(rel)
}

pub fn read(rel: &str) -> String {
    std::fs::read_to_string(path(rel)).unwrap_or_else(|e| panic!("read {rel}: {e}"))
}

/// Whether this is a CI run (`.ci/run` is started with `CI=true`).
pub fn under_ci() -> bool {
    std::env::var("CI").is_ok_and(|v| !v.is_empty() && v != "false" && v != "0")
}

/// `name` on PATH, if it is there and executable.
pub fn which(name: &str) -> Option<PathBuf> {
    use std::os::unix::fs::PermissionsExt;
    let paths = std::env::var_os("PATH")?;
    std::env::split_paths(&paths)
        .map(|d| d.join(name))
        .find(|p| std::fs::metadata(p).is_ok_and(|m| m.is_file() && m.permissions().mode() & 0o111 != 0))
}

/// A tool from Debian's `prometheus` package. None (after a notice) when it is missing on a
/// developer machine; a failure under CI.
pub fn prometheus_tool(name: &str) -> Option<PathBuf> {
    debian_tool(name, "prometheus")
}

/// `name` from the Debian package `package`: None (after a notice) when it is missing on a
/// developer machine; a failure under CI (`.ci/run` installs it).
pub fn debian_tool(name: &str, package: &str) -> Option<PathBuf> {
    if let Some(p) = which(name) {
        return Some(p);
    }
    let hint = format!("install it with `apt-get install -y --no-install-recommends {package}` (.ci/run does)");
    if under_ci() {
        panic!("`{name}` is not on PATH under CI: {hint}");
    }
    eprintln!("NOTICE: skipping: `{name}` is not on PATH; {hint}");
    None
}

/// Runs a command to completion and returns its output (panics if it cannot start).
pub fn run(cmd: &mut Command) -> Output {
    cmd.output().unwrap_or_else(|e| panic!("cannot run {cmd:?}: {e}"))
}

/// Asserts success and returns stdout + stderr.
pub fn run_ok(cmd: &mut Command) -> String {
    let out = run(cmd);
    let text = format!("{}{}", String::from_utf8_lossy(&out.stdout), String::from_utf8_lossy(&out.stderr));
    assert!(out.status.success(), "{cmd:?} failed ({}):\n{text}", out.status);
    text
}

/// Metric names declared in `src/telemetry/metrics.rs`: every
/// `pub const NAME: &str = "consentgate_...";` line, and the standard `process_...` ones.
pub fn declared_metrics() -> Vec<String> {
    parse_metric_consts(&read("src/telemetry/metrics.rs"))
}

pub fn parse_metric_consts(src: &str) -> Vec<String> {
    let mut names = Vec::new();
    for line in src.lines() {
        let line = line.trim();
        let Some(rest) = line.strip_prefix("pub const ") else { continue };
        let Some((_, value)) = rest.split_once(": &str = \"") else { continue };
        let Some(name) = value.strip_suffix("\";") else { continue };
        if METRIC_PREFIXES.iter().any(|p| name.starts_with(p)) {
            names.push(name.to_owned());
        }
    }
    names
}

/// The prefixes of the metric names the gateway exports.
pub const METRIC_PREFIXES: [&str; 2] = ["consentgate_", "process_"];

fn is_name_char(c: char) -> bool {
    c.is_ascii_alphanumeric() || c == '_' || c == ':'
}

/// Every identifier in `text` that starts with `prefix` (at an identifier boundary) and
/// runs on over `[A-Za-z0-9_:]`, deduplicated, in order of appearance.
pub fn identifiers_with_prefix(text: &str, prefix: &str) -> Vec<String> {
    let mut found: Vec<String> = Vec::new();
    let mut from = 0;
    while let Some(i) = text[from..].find(prefix) {
        let start = from + i;
        let boundary = text[..start].chars().next_back().is_none_or(|c| !is_name_char(c));
        let end = text[start..].find(|c: char| !is_name_char(c)).map_or(text.len(), |e| start + e);
        if boundary {
            let id = &text[start..end];
            if !found.iter().any(|f| f == id) {
                found.push(id.to_owned());
            }
        }
        from = end.max(start + prefix.len());
    }
    found
}

/// Metric names used in `text` (PromQL inside YAML or JSON) that are not declared:
/// `consentgate_*` and `process_*` identifiers, with a histogram's `_bucket` / `_sum` /
/// `_count` series accepted for a declared base name.
pub fn unknown_metrics(text: &str, declared: &[String]) -> Vec<String> {
    METRIC_PREFIXES
        .iter()
        .flat_map(|p| identifiers_with_prefix(text, p))
        .filter(|name| {
            let base = ["_bucket", "_sum", "_count"].iter().find_map(|s| name.strip_suffix(s)).unwrap_or(name);
            !declared.iter().any(|d| d == name || d == base)
        })
        .collect()
}

/// The Python interpreter for YAML: `CONSENTGATE_PYTHON`, else `.venv/bin/python`, else
/// `python3` — and it must import `yaml` (scripts/test installs PyYAML into .venv).
pub fn python_with_yaml() -> String {
    let mut candidates = Vec::new();
    if let Ok(p) = std::env::var("CONSENTGATE_PYTHON") {
        if !p.is_empty() {
            candidates.push(p);
        }
    }
    let venv = path(".venv/bin/python");
    if venv.exists() {
        candidates.push(venv.display().to_string());
    }
    candidates.push("python3".to_owned());
    for py in &candidates {
        if Command::new(py).args(["-c", "import yaml"]).output().is_ok_and(|o| o.status.success()) {
            return py.clone();
        }
    }
    panic!(
        "none of {candidates:?} can `import yaml`: run `scripts/test` (it installs PyYAML into .venv) \
         or point CONSENTGATE_PYTHON at an interpreter with PyYAML"
    );
}

/// Parses every YAML document of `file` (repo-relative) with PyYAML and returns them as JSON
/// (null documents dropped).
pub fn yaml_documents(file: &str) -> Vec<serde_json::Value> {
    let py = python_with_yaml();
    let script = "import json, sys, yaml\n\
                  docs = [d for d in yaml.safe_load_all(open(sys.argv[1], encoding='utf-8')) if d is not None]\n\
                  print(json.dumps(docs))";
    let out = run(Command::new(&py).args(["-c", script]).arg(path(file)));
    assert!(out.status.success(), "{file} is not valid YAML:\n{}", String::from_utf8_lossy(&out.stderr));
    match serde_json::from_slice(&out.stdout) {
        Ok(serde_json::Value::Array(docs)) => docs,
        other => panic!("unexpected output for {file}: {other:?}"),
    }
}

/// The independent SMPP client (`tests/interop/smpplib_client.py`).
pub const SMPPLIB_CLIENT: &str = concat!(env!("CARGO_MANIFEST_DIR"), "/tests/interop/smpplib_client.py");

pub fn python() -> String {
    if let Ok(p) = std::env::var("CONSENTGATE_PYTHON") {
        if !p.is_empty() {
            return p;
        }
    }
    let venv = concat!(env!("CARGO_MANIFEST_DIR"), "/.venv/bin/python");
    if std::path::Path::new(venv).exists() {
        venv.to_owned()
    } else {
        "python3".to_owned()
    }
}

/// Fails the test (never skips) when the interpreter cannot import smpplib.
pub async fn require_smpplib() -> String {
    let py = python();
    let probe = tokio::process::Command::new(&py).args(["-c", "import smpplib"]).output().await;
    match probe {
        Ok(o) if o.status.success() => py,
        Ok(o) => panic!(
            "`{py}` cannot import smpplib ({}): run `scripts/test` (it creates .venv with smpplib==2.2.3) \
             or point CONSENTGATE_PYTHON at an interpreter that has it",
            String::from_utf8_lossy(&o.stderr).trim().lines().last().unwrap_or("")
        ),
        Err(e) => panic!(
            "cannot run `{py}` ({e}): run `scripts/test` (it creates .venv with smpplib==2.2.3) \
             or point CONSENTGATE_PYTHON at an interpreter that has it"
        ),
    }
}

/// Runs the smpplib client against the gateway (30 s bound) and returns its JSON line.
pub async fn run_client(py: &str, addr: std::net::SocketAddr, extra: &[&str]) -> serde_json::Value {
    let mut c = tokio::process::Command::new(py);
    c.arg(SMPPLIB_CLIENT).arg(addr.ip().to_string()).arg(addr.port().to_string()).arg("acme").arg("secret").args(extra);
    c.kill_on_drop(true);
    let out = tokio::time::timeout(std::time::Duration::from_secs(30), c.output())
        .await
        .expect("smpplib client finishes within 30 s")
        .expect("spawn the smpplib client");
    let stdout = String::from_utf8_lossy(&out.stdout);
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(out.status.success(), "smpplib client failed ({}):\nstderr:\n{stderr}\nstdout:\n{stdout}", out.status);
    let line = stdout.lines().rfind(|l| !l.trim().is_empty()).unwrap_or("");
    serde_json::from_str(line).unwrap_or_else(|e| panic!("one JSON line from the client ({e}):\n{stdout}\n{stderr}"))
}

/// The independent CMPP clients (tests/interop): cmppy 0.3 (3.0) and pycmpp 2.0.2 (2.x).
pub const CMPPY_CLIENT: &str = concat!(env!("CARGO_MANIFEST_DIR"), "/tests/interop/cmppy_client.py");
pub const PYCMPP_CLIENT: &str = concat!(env!("CARGO_MANIFEST_DIR"), "/tests/interop/pycmpp_client.py");

/// The interpreter, when it imports `module`; else a notice and None, or a failure under CI.
pub async fn python_with(module: &str) -> Option<String> {
    let py = python();
    let probe = tokio::process::Command::new(&py).args(["-c", &format!("import {module}")]).output().await;
    if probe.as_ref().is_ok_and(|o| o.status.success()) {
        return Some(py);
    }
    let why = match probe {
        Ok(o) => String::from_utf8_lossy(&o.stderr).trim().lines().last().unwrap_or("").to_owned(),
        Err(e) => e.to_string(),
    };
    let hint = format!(
        "`{py}` cannot import {module} ({why}): run `scripts/test` (it installs cmppy==0.3 and pycmpp==2.0.2 into \
         .venv) or point CONSENTGATE_PYTHON at an interpreter that has them"
    );
    assert!(!under_ci(), "{hint}");
    eprintln!("NOTICE: skipping: {hint}");
    None
}

/// Runs a client script against the simulator (30 s bound) and returns its JSON line.
pub async fn run_script(
    py: &str,
    script: &str,
    addr: std::net::SocketAddr,
    sp: &str,
    secret: &str,
) -> serde_json::Value {
    let mut c = tokio::process::Command::new(py);
    c.arg(script).arg(addr.ip().to_string()).arg(addr.port().to_string()).arg(sp).arg(secret);
    c.kill_on_drop(true);
    let out = tokio::time::timeout(std::time::Duration::from_secs(30), c.output())
        .await
        .expect("the client finishes within 30 s")
        .expect("spawn the client");
    let stdout = String::from_utf8_lossy(&out.stdout);
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(out.status.success(), "{script} failed ({}):\nstderr:\n{stderr}\nstdout:\n{stdout}", out.status);
    let line = stdout.lines().rfind(|l| !l.trim().is_empty()).unwrap_or("");
    serde_json::from_str(line).unwrap_or_else(|e| panic!("one JSON line from {script} ({e}):\n{stdout}\n{stderr}"))
}

/// Percent-encodes a query-string value (RFC 3986 unreserved characters kept).
pub fn url_encode(s: &str) -> String {
    s.bytes()
        .map(|b| match b {
            b'A'..=b'Z' | b'a'..=b'z' | b'0'..=b'9' | b'-' | b'_' | b'.' | b'~' => (b as char).to_string(),
            _ => format!("%{b:02X}"),
        })
        .collect()
}

/// A child in its own process group, killed with the whole group on drop (`faketime` runs
/// the gateway as its own child).
pub struct Group(pub Child);

impl Drop for Group {
    fn drop(&mut self) {
        let _ = Command::new("kill").args(["-KILL", "--", &format!("-{}", self.0.id())]).status();
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

/// Starts `cmd` in a process group of its own.
pub fn spawn_group(cmd: &mut Command) -> Group {
    use std::os::unix::process::CommandExt;
    Group(cmd.process_group(0).spawn().unwrap_or_else(|e| panic!("start {cmd:?}: {e}")))
}

/// Waits (20 s at most) until 127.0.0.1:`port` accepts; panics if `child` exits first.
pub fn wait_port(port: u16, child: &mut Group, what: &str) {
    let deadline = Instant::now() + Duration::from_secs(20);
    while Instant::now() < deadline {
        if std::net::TcpStream::connect(("127.0.0.1", port)).is_ok() {
            return;
        }
        assert!(child.0.try_wait().unwrap().is_none(), "{what} exited early");
        std::thread::sleep(Duration::from_millis(50));
    }
    panic!("{what} not listening on {port}");
}
