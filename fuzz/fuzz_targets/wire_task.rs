//! Fuzz target `wire_task`: its body is `orgmesh_tests::fuzzing::wire_task`, which the test suite also runs.
#![no_main]

libfuzzer_sys::fuzz_target!(|data: &[u8]| orgmesh_tests::fuzzing::wire_task(data));
