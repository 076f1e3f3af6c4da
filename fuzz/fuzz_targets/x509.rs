//! `consentgate::fuzzing::x509` (the invariants are documented there).
#![no_main]
libfuzzer_sys::fuzz_target!(|data: &[u8]| consentgate::fuzzing::x509(data));
