//! Every checked-in fuzz input — the corpora the fuzzer grew (`fuzz/corpus/<target>/`) and the
//! inputs that once crashed a target (`fuzz/regressions/<target>/`, one file per finding) —
//! through the targets' own code (`consentgate::fuzzing`), on stable, in every test run. The
//! fuzzing itself is `scripts/fuzz` (nightly + cargo-fuzz).

use std::path::Path;

#[test]
fn every_corpus_and_regression_input_runs_clean() {
    let root = Path::new(env!("CARGO_MANIFEST_DIR")).join("fuzz");
    let mut total = 0;
    for (name, target) in consentgate::fuzzing::TARGETS {
        let mut n = 0;
        for dir in ["corpus", "regressions"] {
            let Ok(entries) = std::fs::read_dir(root.join(dir).join(name)) else { continue };
            for e in entries.flatten() {
                let data = std::fs::read(e.path()).unwrap();
                let result = std::panic::catch_unwind(|| target(&data));
                assert!(result.is_ok(), "{name}: {} panics", e.path().display());
                n += 1;
            }
        }
        assert!(n > 0, "no corpus for fuzz target {name}");
        total += n;
    }
    eprintln!("{total} fuzz inputs replayed");
}
