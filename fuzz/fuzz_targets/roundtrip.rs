#![no_main]
// The property is gw_fuzzing::roundtrip, shared with compiler/fuzzing/tests/regressions.rs.
libfuzzer_sys::fuzz_target!(|data: &[u8]| gw_fuzzing::roundtrip(data));
