//! Fuzz target `wire_place`: its body is `orgmesh_tests::fuzzing::wire_place`, which the test suite also runs.
#![no_main]

libfuzzer_sys::fuzz_target!(|data: &[u8]| orgmesh_tests::fuzzing::wire_place(data));
