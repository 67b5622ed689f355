#!/usr/bin/env bash
# Durable put throughput of a 3-node levee cluster beside a 3-member etcd
# cluster on this machine (issue #17, item 1: levee ≥ ×3 etcd). One system
# at a time, the same load generator against both (put-load, this
# directory's crate): CLIENTS closed-loop clients, put only, VALUE_BYTES
# values, a new key per put, WARMUP_S seconds of load and then DURATION_S
# measured.
#
#   benches/etcd/compare.sh OUT_DIR [--duration-s 20] [--warmup-s 3]
#       [--clients 64] [--value-bytes 256] [--data-dir DIR] [--no-build]
#
# etcd: Debian's etcd-server (installed with apt if missing, with
# etcd-client and protobuf-compiler), member i on 127.0.0.i, default
# settings, so it fsyncs its WAL before it answers. levee: `levee local
# --nodes 3` (node i on 127.0.0.i, zone i, R = 3, W = 2, plaintext) with
# durability per_write, which answers after the fsync. Neither is pinned
# to CPUs: both share every core with the generator the same way.
#
# Writes OUT_DIR/etcd.json, levee.json (each run's figures), compare.md and
# compare.json (the table, the ratio and the setup) and the servers' logs;
# prints the table. Data goes to a temporary directory (or --data-dir),
# removed at the end. Builds levee and put-load in release first (in
# CARGO_TARGET_DIR, default ./target) unless --no-build.
set -euo pipefail

usage="usage: compare.sh OUT_DIR [--duration-s N] [--warmup-s N] [--clients N] [--value-bytes N] [--data-dir DIR] [--no-build]"
out=${1:?$usage}
shift
duration_s=20
warmup_s=3
clients=64
value_bytes=256
data=
build=yes
while (($#)); do
    case $1 in
        --duration-s) duration_s=${2:?$usage}; shift ;;
        --warmup-s) warmup_s=${2:?$usage}; shift ;;
        --clients) clients=${2:?$usage}; shift ;;
        --value-bytes) value_bytes=${2:?$usage}; shift ;;
        --data-dir) data=${2:?$usage}; shift ;;
        --no-build) build=no ;;
        *) echo "$usage" >&2; exit 2 ;;
    esac
    shift
done

root=$(cd "$(dirname "$0")/../.." && pwd)
target=${CARGO_TARGET_DIR:-$root/target}
# put-load has its own lock file and dependencies (tonic): its own target
# directory, so the workspace's builds and its never wait on each other.
load_target=$target/etcd-compare
levee=$target/release/levee
put_load=$load_target/release/put-load
# Ports on 127.0.0.1..3; not the defaults (2379, 7400), so a cluster
# someone left running is not measured by mistake.
etcd_client_port=23790
etcd_peer_port=23800
levee_port=7470

mkdir -p "$out"
out=$(cd "$out" && pwd)

# --- what is needed ---------------------------------------------------------

missing=()
command -v etcd >/dev/null || missing+=(etcd-server)
command -v etcdctl >/dev/null || missing+=(etcd-client)
command -v protoc >/dev/null || missing+=(protobuf-compiler)
if ((${#missing[@]})); then
    sudo=
    [[ $(id -u) -eq 0 ]] || sudo=sudo
    echo "== installing ${missing[*]}"
    $sudo apt-get update -qq
    DEBIAN_FRONTEND=noninteractive $sudo apt-get install -y -qq "${missing[@]}" >/dev/null
fi

if [[ $build == yes ]]; then
    echo "== building levee and put-load (release)"
    (cd "$root" && CARGO_TARGET_DIR=$target cargo build --release --bin levee --bin levee-node)
    (cd "$root/benches/etcd" && CARGO_TARGET_DIR=$load_target cargo build --release --locked)
fi
for bin in "$levee" "$target/release/levee-node" "$put_load"; do
    [[ -x $bin ]] || { echo "missing $bin (run without --no-build)" >&2; exit 1; }
done

for host in 1 2 3; do
    for port in $etcd_client_port $etcd_peer_port $levee_port $((levee_port + 1)); do
        if (exec 3<>"/dev/tcp/127.0.0.$host/$port") 2>/dev/null; then
            echo "127.0.0.$host:$port is in use: stop what listens there first" >&2
            exit 1
        fi
    done
done

if [[ -z $data ]]; then
    data=$(mktemp -d "${TMPDIR:-/tmp}/levee-etcd.XXXXXX")
    remove_data=yes
else
    mkdir -p "$data"
    remove_data=no
fi
fs=$(df -T "$data" | awk 'NR == 2 {print $2}')
[[ $fs == tmpfs ]] && echo "warning: $data is on tmpfs, where fsync costs nothing" >&2

# --- processes ----------------------------------------------------------------

# Every process this script started, by id; stopped on the way out.
pids=()
stop() {
    local pid
    for pid in "$@"; do kill -TERM "$pid" 2>/dev/null || true; done
    for pid in "$@"; do wait "$pid" 2>/dev/null || true; done
}
cleanup() {
    stop "${pids[@]}"
    [[ $remove_data == yes ]] && rm -rf "$data"
}
trap cleanup EXIT

# Polls a condition (a command) every 100 ms for up to 60 s; gives up at
# once if process $1 has exited.
wait_until() {
    local pid=$1 what=$2
    shift 2
    local deadline=$((SECONDS + 60))
    while ((SECONDS < deadline)); do
        if "$@" >/dev/null 2>&1; then return 0; fi
        kill -0 "$pid" 2>/dev/null || { echo "$what: the process exited (see the logs in $out)" >&2; exit 1; }
        sleep 0.1
    done
    echo "timed out after 60 s waiting for $what" >&2
    exit 1
}

load() {
    local system=$1 endpoints=$2 version=$3 server_pids=$4
    echo "== $system: $clients clients, ${value_bytes} B values, ${warmup_s} s warm-up, ${duration_s} s measured; load before: $(cut -d' ' -f1-3 /proc/loadavg)"
    "$put_load" run --system "$system" --endpoints "$endpoints" --clients "$clients" \
        --value-bytes "$value_bytes" --warmup-s "$warmup_s" --duration-s "$duration_s" \
        --version "$version" --pids "$server_pids" --out "$out/$system.json"
}

# --- etcd -------------------------------------------------------------------

etcd_version=$(etcd --version | awk '/^etcd Version/ {print $3}')
cluster=m1=http://127.0.0.1:$etcd_peer_port,m2=http://127.0.0.2:$etcd_peer_port,m3=http://127.0.0.3:$etcd_peer_port
etcd_pids=()
endpoints=()
for i in 1 2 3; do
    client=http://127.0.0.$i:$etcd_client_port
    peer=http://127.0.0.$i:$etcd_peer_port
    etcd --name "m$i" --data-dir "$data/etcd/m$i" \
        --listen-client-urls "$client" --advertise-client-urls "$client" \
        --listen-peer-urls "$peer" --initial-advertise-peer-urls "$peer" \
        --initial-cluster "$cluster" --initial-cluster-state new \
        --initial-cluster-token levee-compare --logger zap \
        >"$out/etcd-m$i.log" 2>&1 &
    etcd_pids+=($!)
    pids+=($!)
    endpoints+=("$client")
done
etcd_endpoints=$(IFS=,; echo "${endpoints[*]}")
wait_until "${etcd_pids[0]}" "etcd to be healthy" \
    etcdctl --endpoints "$etcd_endpoints" --command-timeout 2s endpoint health
load etcd "$etcd_endpoints" "etcd $etcd_version" "$(IFS=,; echo "${etcd_pids[*]}")"
stop "${etcd_pids[@]}"
pids=()

# --- levee ------------------------------------------------------------------

levee_version=$(git -C "$root" describe --always --dirty 2>/dev/null || echo unknown)
LEVEE_DURABILITY=per_write "$levee" local --nodes 3 --data-dir "$data/levee" \
    --port "$levee_port" >"$out/levee-local.log" 2>&1 &
local_pid=$!
pids+=("$local_pid")
wait_until "$local_pid" "levee to be ready" grep -q "nodes ready" "$out/levee-local.log"
node_pids=$(pgrep -d, -P "$local_pid")
load levee "127.0.0.1:$levee_port,127.0.0.2:$levee_port,127.0.0.3:$levee_port" \
    "levee $levee_version" "$node_pids"
stop "$local_pid"
pids=()
cp "$data"/levee/node-*.log "$out/" 2>/dev/null || true

# --- the comparison -----------------------------------------------------------

model=$(awk -F': ' '/^model name/ {print $2; exit}' /proc/cpuinfo)
echo
"$put_load" report --etcd "$out/etcd.json" --levee "$out/levee.json" \
    --machine "$(nproc) CPUs ($model), data on $fs" --out-dir "$out"
echo "(written to $out/compare.md and compare.json)"
