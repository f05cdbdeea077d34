#![no_main]
// The property is gw_fuzzing::compile_structured, shared with compiler/fuzzing/tests/regressions.rs.
libfuzzer_sys::fuzz_target!(|data: &[u8]| gw_fuzzing::compile_structured(data));
