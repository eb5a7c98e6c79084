#!/usr/bin/env bash
# Property-based API testing with schemathesis (PyPI) against a live node's own /openapi.json:
# every operation is called with generated valid and invalid inputs, and every response is
# checked against the schema (status codes, content types, headers, bodies) and for 5xx.
#
#   tests/schemathesis.sh [MAX_SECONDS]     (default 300; exit code is schemathesis's)
#
# Builds the release binary, starts one node in a temporary directory (noop executor, so
# generated tasks finish at once), installs schemathesis with pip if `st` is missing, runs it
# with an admin token, and stops the node. Reports land in target/schemathesis/.
set -euo pipefail
cd "$(dirname "$0")/.."

MAX_SECONDS=${1:-300}
TARGET=${CARGO_TARGET_DIR:-$PWD/target}
OUT=$TARGET/schemathesis
BIN=$TARGET/release/orgmesh
mkdir -p "$OUT"

command -v st >/dev/null 2>&1 || python3 -m pip install -q 'schemathesis>=4,<5'
cargo build --release -q -p orgmesh-node

DIR=$(mktemp -d /tmp/orgmesh-schemathesis-XXXXXX)
PORT=$(python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1",0)); print(s.getsockname()[1])')
cleanup() {
  [ -n "${NODE_PID:-}" ] && kill "$NODE_PID" 2>/dev/null && wait "$NODE_PID" 2>/dev/null
  rm -rf "$DIR"
}
trap cleanup EXIT

"$BIN" init --dir "$DIR" --org acme --p2p-port 0 --api-addr "127.0.0.1:$PORT" >/dev/null
TOKEN=$("$BIN" token create --name schemathesis --scope admin --config "$DIR/orgmesh.toml" --json |
  python3 -c 'import json,sys; print(json.load(sys.stdin)["token"])')
# Generated clients send thousands of requests a minute: no rate limit, tokens required.
sed -i -e 's/^open_on_loopback = .*/open_on_loopback = false/' "$DIR/orgmesh.toml"
ORGMESH_EXECUTOR=noop "$BIN" up --config "$DIR/orgmesh.toml" >"$OUT/node.log" 2>&1 &
NODE_PID=$!
for _ in $(seq 100); do
  curl -fsS "http://127.0.0.1:$PORT/healthz" >/dev/null 2>&1 && break
  sleep 0.1
done

set +e
st run "http://127.0.0.1:$PORT/openapi.json" \
  --checks all \
  --header "Authorization: Bearer $TOKEN" \
  --max-time "$MAX_SECONDS" \
  --request-timeout 10 \
  --workers 2 \
  --report junit,ndjson --report-dir "$OUT" \
  --seed "${SCHEMATHESIS_SEED:-1}"
status=$?
set -e
grep -c ' ERROR \| WARN ' "$OUT/node.log" >/dev/null && echo "node log: $OUT/node.log"
exit $status
