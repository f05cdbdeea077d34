#![no_main]
// The property is gw_fuzzing::differential, shared with compiler/fuzzing/tests/regressions.rs.
libfuzzer_sys::fuzz_target!(|data: &[u8]| gw_fuzzing::differential(data));
