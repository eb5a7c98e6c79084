//! A seconds-long run of every fuzz target's body on stable Rust, so the suite catches what the
//! fuzzers would on their first inputs: the seeds, every regression input found so far
//! (`fuzz/regressions/<target>/`), and a few thousand seeded mutations of them. The real fuzzing
//! is `fuzz/run.sh` (libFuzzer through cargo fuzz, nightly).

use std::path::Path;

use orgmesh_tests::fuzzing;
use rand::{Rng, SeedableRng};
use rand_chacha::ChaCha8Rng;

/// Mutations per target; enough to cross every decoder branch near the seeds in a second or two.
const MUTATIONS: usize = 4000;

fn inputs_on_disk(dir: &Path) -> Vec<Vec<u8>> {
    let Ok(entries) = std::fs::read_dir(dir) else { return Vec::new() };
    let mut files: Vec<_> = entries
        .filter_map(|e| e.ok())
        .map(|e| e.path())
        .filter(|p| p.is_file() && !p.file_name().is_some_and(|n| n.to_string_lossy().starts_with('.')))
        .collect();
    files.sort();
    files.iter().filter_map(|p| std::fs::read(p).ok()).collect()
}

fn mutate(rng: &mut ChaCha8Rng, base: &[u8], other: &[u8]) -> Vec<u8> {
    let mut out = base.to_vec();
    for _ in 0..rng.random_range(1..4) {
        match rng.random_range(0..5) {
            0 if !out.is_empty() => {
                let i = rng.random_range(0..out.len());
                out[i] ^= 1 << rng.random_range(0..8);
            }
            1 if !out.is_empty() => {
                let i = rng.random_range(0..out.len());
                out[i] = [0, 0x7f, 0x80, 0xff][rng.random_range(0..4)];
            }
            2 => out.truncate(rng.random_range(0..=out.len())),
            3 if !other.is_empty() => {
                // Splice: our head, their tail.
                let cut = rng.random_range(0..=out.len());
                let from = rng.random_range(0..other.len());
                out.truncate(cut);
                out.extend_from_slice(&other[from..]);
            }
            _ => {
                let i = rng.random_range(0..=out.len());
                out.insert(i, rng.random());
            }
        }
    }
    out
}

#[test]
fn every_fuzz_target_survives_its_seeds_regressions_and_mutations() {
    let root = Path::new(env!("CARGO_MANIFEST_DIR")).join("..").join("fuzz");
    let mut rng = ChaCha8Rng::seed_from_u64(0x0f5a_2026);
    for target in fuzzing::TARGETS {
        let mut corpus = fuzzing::seeds(target);
        assert!(!corpus.is_empty(), "{target} has seeds");
        let regressions = inputs_on_disk(&root.join("regressions").join(target));
        corpus.extend(regressions.iter().cloned());
        corpus.extend(inputs_on_disk(&root.join("corpus").join(target)));
        for input in &corpus {
            fuzzing::run(target, input);
        }
        for _ in 0..MUTATIONS {
            let base = &corpus[rng.random_range(0..corpus.len())];
            let other = &corpus[rng.random_range(0..corpus.len())];
            fuzzing::run(target, &mutate(&mut rng, base, other));
        }
        println!(
            "{target}: {} seed/regression inputs ({} regressions), {MUTATIONS} mutations",
            corpus.len(),
            regressions.len()
        );
    }
}

#[test]
fn seeds_are_valid_inputs_not_just_bytes() {
    use orgmesh_protocol::wire::{decode, limits};
    // A seed that does not decode would leave the fuzzer starting from nothing.
    for seed in fuzzing::seeds("wire_task") {
        let ok = decode::<orgmesh_protocol::wire::task::TaskRequest>(&seed, limits::TASK).is_ok()
            || decode::<orgmesh_protocol::wire::task::TaskResponse>(&seed, limits::TASK).is_ok();
        assert!(ok, "wire_task seed does not decode");
    }
    for seed in fuzzing::seeds("config_toml") {
        let text = std::str::from_utf8(&seed).expect("utf-8");
        orgmesh_node::config::Config::parse_and_validate(text).expect("config seed is valid");
    }
    for seed in fuzzing::seeds("task_spec_json") {
        let spec: orgmesh_protocol::TaskSpec = serde_json::from_slice(&seed).expect("spec seed parses");
        spec.validate().expect("spec seed is valid");
    }
}

/// Writes the seeds as files for `fuzz/run.sh` (`ORGMESH_WRITE_SEEDS=<corpus dir>`).
#[test]
#[ignore = "a tool for fuzz/run.sh, not a check"]
fn write_seeds() {
    let Some(dir) = std::env::var_os("ORGMESH_WRITE_SEEDS") else { return };
    for target in fuzzing::TARGETS {
        let dir = Path::new(&dir).join(target);
        std::fs::create_dir_all(&dir).expect("corpus dir");
        for (i, seed) in fuzzing::seeds(target).iter().enumerate() {
            std::fs::write(dir.join(format!("seed-{i}")), seed).expect("seed written");
        }
    }
}
