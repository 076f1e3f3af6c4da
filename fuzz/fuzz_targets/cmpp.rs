//! `consentgate::fuzzing::cmpp` (the invariants are documented there).
#![no_main]
libfuzzer_sys::fuzz_target!(|data: &[u8]| consentgate::fuzzing::cmpp(data));
