#!/usr/bin/env bash
# Every check CI runs, from a fresh clone: formatting, lints, and the whole test suite (unit tests,
# state-machine tests, and multi-process tests with real orgmesh nodes on 127.0.0.1).
# Needs the Rust toolchain and root (some tests build hosts of their own with network
# namespaces) and headless Chromium (the dashboard test); installs iproute2, nftables, chromium
# and chromium-driver, bubblewrap and slirp4netns (the task sandbox and its `outbound`
# network), if they are missing.
set -euo pipefail
cd "$(dirname "$0")/.."

missing=()
command -v ip >/dev/null 2>&1 || missing+=(iproute2)   # network namespaces for multi-host tests
command -v nft >/dev/null 2>&1 || missing+=(nftables)  # packet drop in the chaos test (no netem here)
command -v bwrap >/dev/null 2>&1 || missing+=(bubblewrap)  # the task sandbox (namespaces)
command -v setpriv >/dev/null 2>&1 || missing+=(util-linux)  # the sandbox's drop to a task's uid
command -v slirp4netns >/dev/null 2>&1 || missing+=(slirp4netns)  # the sandbox's network "outbound"
if [ ${#missing[@]} -gt 0 ]; then
  echo "== installing ${missing[*]}"
  apt-get update -qq && apt-get install -y -qq "${missing[@]}"
fi
if ! command -v chromium >/dev/null 2>&1 || ! command -v chromedriver >/dev/null 2>&1; then
  echo "== installing chromium and chromedriver (the dashboard's browser test)"
  apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq chromium chromium-driver
fi

# A clean clone gains nothing from incremental artifacts; they only take disk.
export CARGO_INCREMENTAL=0

echo "== cargo fmt --check"
cargo fmt --all -- --check
echo "== cargo clippy"
cargo clippy --workspace --all-targets --locked -- -D warnings
echo "== cargo test"
cargo test --workspace --locked
