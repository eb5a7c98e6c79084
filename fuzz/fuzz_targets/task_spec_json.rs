//! Fuzz target `task_spec_json`: its body is `orgmesh_tests::fuzzing::task_spec_json`, which the test suite also runs.
#![no_main]

libfuzzer_sys::fuzz_target!(|data: &[u8]| orgmesh_tests::fuzzing::task_spec_json(data));
