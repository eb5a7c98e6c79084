//! Fuzz target `config_toml`: its body is `orgmesh_tests::fuzzing::config_toml`, which the test suite also runs.
#![no_main]

libfuzzer_sys::fuzz_target!(|data: &[u8]| orgmesh_tests::fuzzing::config_toml(data));
