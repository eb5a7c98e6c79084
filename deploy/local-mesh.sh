#!/usr/bin/env bash
# A three-org orgmesh mesh on one Linux machine, each org on a host of its own: a network
# namespace with its own address on a private bridge. Closer to a real deployment than
# `orgmesh demo` (every node has its own IP, p2p port 7000 and API port 7070, and traffic
# crosses a real link), and it needs no containers or VMs.
#
#   deploy/local-mesh.sh up      create (or complete) the mesh and wait until the nodes see each other
#   deploy/local-mesh.sh check   run a task from acme on globex and on initech; exit non-zero if it fails
#   deploy/local-mesh.sh status  what exists and what runs
#   deploy/local-mesh.sh down    stop the nodes and remove everything `up` made
#
# Needs root (namespaces, veth, bridge), iproute2 and curl; and the `orgmesh` binary on PATH or
# in $ORGMESH_BIN. Settings (environment):
#   MESH_PREFIX  names of everything made here (default "olm"; at most 6 of [a-z0-9])
#   MESH_SUBNET  first three octets of the /24 used (default 198.19.254, inside 198.18.0.0/15,
#                the benchmarking range, which no real network uses)
#   MESH_DIR     where configs, keys, data and logs live (default /tmp/orgmesh-local-mesh-$MESH_PREFIX)
#
# `up` is idempotent: it makes only what is missing and starts only nodes that are not running,
# reusing existing identities and data. If `up` fails it prints the nodes' last log lines and
# tears the mesh down again (MESH_KEEP=1 keeps it for inspection). `down` is idempotent too and
# only touches what carries this prefix.
set -euo pipefail

PREFIX=${MESH_PREFIX:-olm}
SUBNET=${MESH_SUBNET:-198.19.254}
DIR=${MESH_DIR:-/tmp/orgmesh-local-mesh-$PREFIX}
ORGS=(acme globex initech)
# Each org's labels (initech has the "GPU", as in the README tour).
declare -A LABELS=([acme]="" [globex]="" [initech]="gpu=yes")
P2P_PORT=7000
API_PORT=7070
BRIDGE="${PREFIX}br"

die() { echo "local-mesh: $*" >&2; exit 1; }
say() { echo "local-mesh: $*" >&2; }

[[ $PREFIX =~ ^[a-z0-9]{1,6}$ ]] || die "MESH_PREFIX must be 1 to 6 characters of a-z 0-9 (interface names are short)"
[[ $SUBNET =~ ^198\.(18|19)\.[0-9]{1,3}$ ]] || die "MESH_SUBNET must be 198.18.X or 198.19.X"

ns_of() { echo "${PREFIX}-$1"; }
ip_of() {
    local i
    for i in "${!ORGS[@]}"; do
        [[ ${ORGS[$i]} == "$1" ]] && { echo "$SUBNET.$((10 + i))"; return; }
    done
    die "unknown org $1"
}
# veth names: host side "<prefix>v<i>", namespace side "<prefix>p<i>" (15 characters at most).
veth_host() { echo "${PREFIX}v$1"; }
veth_ns() { echo "${PREFIX}p$1"; }

orgmesh_bin() {
    local bin=${ORGMESH_BIN:-}
    if [[ -z $bin ]]; then
        bin=$(command -v orgmesh) || die "no orgmesh on PATH: build it (cargo build --release) and add target/release to PATH, or set ORGMESH_BIN"
    fi
    [[ -x $bin ]] || die "$bin is not executable"
    # Absolute, because it runs from inside namespaces with a minimal environment.
    readlink -f "$bin"
}

need_root() {
    [[ $(id -u) -eq 0 ]] || die "must run as root (network namespaces, veth, bridge)"
    command -v ip >/dev/null || die "needs iproute2 (ip)"
    command -v curl >/dev/null || die "needs curl"
}

ns_exists() { ip netns list | awk '{print $1}' | grep -qx "$1"; }
link_exists() { ip link show "$1" >/dev/null 2>&1; }

# The node's process, if it runs: the pid in its pid file, if that pid is an `orgmesh up` for
# this org's config (so a recycled pid is never mistaken for it, nor ever signalled).
node_pid() {
    local org=$1 pidfile="$DIR/$1/orgmesh.pid" pid
    [[ -f $pidfile ]] || return 1
    pid=$(<"$pidfile")
    [[ $pid =~ ^[0-9]+$ ]] || return 1
    tr '\0' ' ' <"/proc/$pid/cmdline" 2>/dev/null | grep -q -- "up --config $DIR/$org/orgmesh.toml" || return 1
    echo "$pid"
}

api() { # api ORG PATH: GET from inside the org's namespace
    ip netns exec "$(ns_of "$1")" curl -fsS --max-time 3 "http://127.0.0.1:$API_PORT$2"
}

make_network() {
    if ! link_exists "$BRIDGE"; then
        # Refuse a subnet some other interface already uses: two routes for it would break both.
        if ip -4 addr show | grep -q "inet $SUBNET\."; then
            die "$SUBNET.0/24 is already in use on this machine; pick another MESH_SUBNET"
        fi
        ip link add "$BRIDGE" type bridge
        ip addr add "$SUBNET.1/24" dev "$BRIDGE"
    fi
    ip link set "$BRIDGE" up
    local i org ns
    for i in "${!ORGS[@]}"; do
        org=${ORGS[$i]}
        ns=$(ns_of "$org")
        ns_exists "$ns" || ip netns add "$ns"
        if ! ip netns exec "$ns" ip link show "$(veth_ns "$i")" >/dev/null 2>&1; then
            link_exists "$(veth_host "$i")" && ip link del "$(veth_host "$i")"
            ip link add "$(veth_host "$i")" type veth peer name "$(veth_ns "$i")"
            ip link set "$(veth_ns "$i")" netns "$ns"
            ip netns exec "$ns" ip addr add "$(ip_of "$org")/24" dev "$(veth_ns "$i")"
        fi
        ip link set "$(veth_host "$i")" master "$BRIDGE" up
        ip netns exec "$ns" ip link set "$(veth_ns "$i")" up
        ip netns exec "$ns" ip link set lo up
    done
}

init_nodes() {
    local bin=$1 first=${ORGS[0]} first_id org args
    mkdir -p "$DIR"
    chmod 700 "$DIR"
    for org in "${ORGS[@]}"; do
        # `init` rewrites the config but keeps an existing identity key, so the peer id is stable.
        # One mesh key for the three: their p2p listeners face the bridge, and a listener beyond
        # loopback with nothing deciding who may connect refuses to start. `init` creates the key
        # once and reuses it.
        args=(init --dir "$DIR/$org" --org "$org" --p2p-port "$P2P_PORT" --api-addr "127.0.0.1:$API_PORT"
            --mesh-key-file "$DIR/mesh.key")
        if [[ $org != "$first" ]]; then
            args+=(--bootstrap "/ip4/$(ip_of "$first")/tcp/$P2P_PORT/p2p/$first_id")
        fi
        if [[ -n ${LABELS[$org]} ]]; then
            args+=(--label "${LABELS[$org]}")
        fi
        local id
        id=$("$bin" "${args[@]}" 2>/dev/null) || die "orgmesh init for $org failed"
        echo "$id" >"$DIR/$org/peer_id"
        if [[ $org == "$first" ]]; then
            first_id=$id
        fi
    done
}

start_nodes() {
    local bin=$1 org pid
    for org in "${ORGS[@]}"; do
        if pid=$(node_pid "$org"); then
            say "$org already runs (pid $pid)"
            continue
        fi
        # A clean environment: an ORGMESH_* variable in the caller's shell must not override the
        # generated config. setsid: the node outlives this script and ignores its terminal.
        # nsenter, not `ip netns exec`: that remounts /sys for the namespace, which hides the
        # cgroup hierarchies the task sandbox needs.
        nsenter --net="/run/netns/$(ns_of "$org")" env -i PATH=/usr/local/bin:/usr/bin:/bin HOME="$DIR/$org" \
            ORGMESH_LOG="${ORGMESH_LOG:-info,libp2p=warn}" \
            setsid "$bin" up --config "$DIR/$org/orgmesh.toml" \
            </dev/null >>"$DIR/$org/orgmesh.log" 2>&1 &
        echo $! >"$DIR/$org/orgmesh.pid"
        say "started $org in namespace $(ns_of "$org") at $(ip_of "$org") (pid $!)"
    done
}

wait_mesh() {
    local org deadline=$((SECONDS + 30)) want=$((${#ORGS[@]} - 1)) alive
    for org in "${ORGS[@]}"; do
        until api "$org" /readyz >/dev/null 2>&1; do
            node_pid "$org" >/dev/null || die "$org exited; see $DIR/$org/orgmesh.log"
            ((SECONDS < deadline)) || die "$org not ready after 30 s; see $DIR/$org/orgmesh.log"
            sleep 0.2
        done
    done
    for org in "${ORGS[@]}"; do
        while :; do
            alive=$(api "$org" /v1/peers 2>/dev/null | grep -o '"state":"alive"' | wc -l || true)
            ((alive >= want)) && break
            ((SECONDS < deadline)) || die "$org sees $alive of $want peers alive after 30 s; see $DIR/$org/orgmesh.log"
            sleep 0.2
        done
    done
    say "every node sees the other $want alive"
}

usage_after_up() {
    local bin=$1 ns
    ns=$(ns_of acme)
    cat <<EOF

The mesh runs: acme $(ip_of acme), globex $(ip_of globex), initech $(ip_of initech)
(p2p on :$P2P_PORT, API on 127.0.0.1:$API_PORT in each namespace; files and logs in $DIR).
Try, as root:

  ip netns exec $ns $bin peers
  ip netns exec $ns $bin submit --org globex --wait -- sh -c 'echo hello from \$(hostname -I)'
  ip netns exec $ns $bin submit --label gpu=yes --wait -- sh -c 'echo ran on a gpu node'
  ip netns exec $ns curl -s localhost:$API_PORT/readyz
  (each API listens on 127.0.0.1 inside its namespace, open without a token there; to reach it
   through the bridge, give it tokens: see docs/security.md)
  $0 check     (runs a task from acme on globex and on initech, and checks where they ran)
  $0 down      (stops the nodes and removes everything)

EOF
}

up_failed() {
    local org
    for org in "${ORGS[@]}"; do
        if [[ -f $DIR/$org/orgmesh.log ]]; then
            echo "--- last lines of $DIR/$org/orgmesh.log" >&2
            tail -n 15 "$DIR/$org/orgmesh.log" >&2 || true
        fi
    done
    if [[ ${MESH_KEEP:-} == 1 ]]; then
        say "up failed; MESH_KEEP=1, so the mesh is left as it is ($0 down removes it)"
    else
        say "up failed; removing the mesh"
        cmd_down >/dev/null 2>&1 || true
    fi
}

cmd_up() {
    need_root
    local bin
    bin=$(orgmesh_bin)
    # Whatever fails below (a command, or `die`), leave nothing half-made behind.
    trap up_failed EXIT
    make_network
    init_nodes "$bin"
    start_nodes "$bin"
    wait_mesh
    trap - EXIT
    usage_after_up "$bin"
}

# The org a task ran at, from acme's record of it; $1 is `submit` output naming the task id.
placed_org() {
    local id
    id=$(grep -oE '[0-9A-HJKMNP-TV-Z]{26}' <<<"$1" | head -1)
    api acme "/v1/tasks/$id" | grep -oE '"placement":\{[^}]*\}' | grep -oE '"org":"[^"]*"' | head -1 | cut -d'"' -f4
}

cmd_check() {
    need_root
    local bin out ns
    bin=$(orgmesh_bin)
    ns=$(ns_of acme)
    # Where each task ran, from its record at acme: the task itself runs sandboxed, with no view
    # of the host's network to report.
    out=$(ip netns exec "$ns" "$bin" --api "http://127.0.0.1:$API_PORT" submit --org globex --timeout 30 --wait \
        -- sh -c 'echo ran on $(hostname)' 2>&1) || die "task from acme on globex failed: $out"
    [[ $(placed_org "$out") == globex ]] || die "task did not run on globex: $out"
    say "acme -> globex: $out"
    out=$(ip netns exec "$ns" "$bin" --api "http://127.0.0.1:$API_PORT" submit --label gpu=yes --timeout 30 --wait \
        -- sh -c 'echo ran on a gpu node' 2>&1) || die "task from acme on a gpu=yes node failed: $out"
    [[ $(placed_org "$out") == initech ]] || die "gpu task did not run on initech: $out"
    say "acme -> initech (gpu=yes): $out"
    say "check passed"
}

cmd_status() {
    local i org ns pid
    if link_exists "$BRIDGE"; then
        echo "bridge $BRIDGE: $SUBNET.1/24"
    else
        echo "bridge $BRIDGE: absent"
    fi
    for i in "${!ORGS[@]}"; do
        org=${ORGS[$i]}
        ns=$(ns_of "$org")
        if ! ns_exists "$ns"; then
            echo "$org: no namespace"
            continue
        fi
        if pid=$(node_pid "$org"); then
            echo "$org: namespace $ns, $(ip_of "$org"), node pid $pid, ready: $(api "$org" /readyz >/dev/null 2>&1 && echo yes || echo no)"
        else
            echo "$org: namespace $ns, $(ip_of "$org"), node not running"
        fi
    done
}

cmd_down() {
    need_root
    local i org ns pid
    for org in "${ORGS[@]}"; do
        if pid=$(node_pid "$org"); then
            kill -TERM "$pid" 2>/dev/null || true
        fi
    done
    # A node stops its tasks and its store within a few seconds of SIGTERM.
    for org in "${ORGS[@]}"; do
        for _ in $(seq 50); do
            node_pid "$org" >/dev/null || break
            sleep 0.2
        done
        if pid=$(node_pid "$org"); then
            say "$org did not stop in 10 s; killing it"
            kill -KILL "$pid" 2>/dev/null || true
        fi
    done
    for i in "${!ORGS[@]}"; do
        ns=$(ns_of "${ORGS[$i]}")
        if ns_exists "$ns"; then
            # Anything still inside (a task's orphan, a shell) was started in our namespace.
            for pid in $(ip netns pids "$ns" 2>/dev/null); do
                kill -KILL "$pid" 2>/dev/null || true
            done
            ip netns del "$ns"
        fi
        # Deleting the namespace deletes its veth pair, asynchronously: the host end may still be
        # listed for a moment, or be left from a failed `up`. Either way it must go, quietly.
        if link_exists "$(veth_host "$i")"; then
            ip link del "$(veth_host "$i")" 2>/dev/null || true
        fi
    done
    if link_exists "$BRIDGE"; then
        ip link del "$BRIDGE"
    fi
    # Only a directory this script made: it holds an org directory with an orgmesh.toml.
    if [[ -f $DIR/${ORGS[0]}/orgmesh.toml || -f $DIR/${ORGS[0]}/peer_id ]]; then
        rm -rf -- "$DIR"
    fi
    say "removed the mesh with prefix $PREFIX"
}

case ${1:-} in
    up) cmd_up ;;
    check) cmd_check ;;
    status) cmd_status ;;
    down) cmd_down ;;
    *) sed -n '2,23p' "$0" | sed 's/^# \{0,1\}//'; exit 2 ;;
esac
