#![no_main]
// The property is gw_compiler::fuzzing::differential, shared with compiler/tests/fuzz_regressions.rs.
libfuzzer_sys::fuzz_target!(|data: &[u8]| gw_compiler::fuzzing::differential(data));
