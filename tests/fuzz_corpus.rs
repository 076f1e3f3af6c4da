//! Every checked-in fuzz input — the corpora the fuzzer grew (`fuzz/corpus/<target>/`) and the
//! inputs that once crashed a target (`fuzz/regressions/<target>/`, one file per finding) —
//! through the targets' own code (`consentgate::fuzzing`), on stable, in every test run. The
//! fuzzing itself is `scripts/fuzz` (nightly + cargo-fuzz). One test per target, so that the
//! test runner spreads them over the cores.

use std::path::Path;

/// Replays the corpus and the regressions of `name`; panics naming the input that panics.
fn replay(name: &str) {
    let (_, target) = consentgate::fuzzing::TARGETS
        .iter()
        .find(|(n, _)| *n == name)
        .unwrap_or_else(|| panic!("no fuzz target {name} in consentgate::fuzzing::TARGETS"));
    let root = Path::new(env!("CARGO_MANIFEST_DIR")).join("fuzz");
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
    eprintln!("{name}: {n} fuzz inputs replayed");
}

macro_rules! corpus_tests {
    ($($t:ident),* $(,)?) => {
        $(#[test] fn $t() { replay(stringify!($t)); })*

        /// Every target of `consentgate::fuzzing::TARGETS` has its test above.
        #[test]
        fn every_target_is_replayed() {
            let here = [$(stringify!($t)),*];
            for (name, _) in consentgate::fuzzing::TARGETS {
                assert!(here.contains(name), "fuzz target {name} has no corpus test in tests/fuzz_corpus.rs");
            }
        }
    };
}

corpus_tests!(frame, peek, text, optout, config, snapshot, journal, csv, pcap, x509, cmpp);
