#!/usr/bin/env bash
# Fuzzes orgmesh with libFuzzer (cargo fuzz, nightly): every target for SECONDS each (default 600),
# starting from the seed corpus (written fresh from orgmesh_tests::fuzzing::seeds) plus what
# earlier runs found. A crash leaves its input in fuzz/artifacts/<target>/; copy it into
# fuzz/regressions/<target>/ with the fix, and the test suite replays it forever after.
#   fuzz/run.sh [SECONDS] [TARGET...]
set -euo pipefail
cd "$(dirname "$0")"
seconds="${1:-600}"; shift || true
targets=("$@")
[ ${#targets[@]} -eq 0 ] && targets=(wire_gossip wire_place wire_task task_spec_json config_toml)
command -v cargo-fuzz >/dev/null || cargo install cargo-fuzz --locked
rustup toolchain list | grep -q nightly || { echo "cargo fuzz needs a nightly toolchain (rustup toolchain install nightly)" >&2; exit 2; }
# Seeds come from the code, so they always match the current wire format.
ORGMESH_WRITE_SEEDS="$PWD/corpus" cargo test -q -p orgmesh-tests --manifest-path ../Cargo.toml --test fuzz_smoke write_seeds -- --ignored >/dev/null
for t in "${targets[@]}"; do
  mkdir -p "corpus/$t" "artifacts/$t"
  echo "== $t: ${seconds}s"
  cargo +nightly fuzz run "$t" "corpus/$t" "regressions/$t" -- \
    -max_total_time="$seconds" -timeout=10 -rss_limit_mb=2048 -print_final_stats=1 \
    -artifact_prefix="artifacts/$t/" 2>&1 | tee "artifacts/$t.log" | grep -E "^(#[0-9]+ *DONE|stat::|==|SUMMARY|.*panicked)" || true
  if ls "artifacts/$t"/crash-* >/dev/null 2>&1; then echo "$t: CRASH, see fuzz/artifacts/$t/" >&2; exit 1; fi
done
echo "fuzz ok: ${targets[*]} for ${seconds}s each"
