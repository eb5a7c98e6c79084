#!/usr/bin/env bash
# Every check CI runs, from a fresh clone: formatting, lints, and the whole test suite (unit tests,
# state-machine tests, and multi-process tests with real orgmesh nodes on 127.0.0.1).
# Needs only the Rust toolchain; installs nothing else yet.
set -euo pipefail
cd "$(dirname "$0")/.."

echo "== cargo fmt --check"
cargo fmt --all -- --check
echo "== cargo clippy"
cargo clippy --workspace --all-targets --locked -- -D warnings
echo "== cargo test"
cargo test --workspace --locked
