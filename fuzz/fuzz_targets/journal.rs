//! `consentgate::fuzzing::journal` (the invariants are documented there).
#![no_main]
libfuzzer_sys::fuzz_target!(|data: &[u8]| consentgate::fuzzing::journal(data));
