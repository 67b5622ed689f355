#!/usr/bin/env bash
# Restart-to-first-served of a real levee-node against the data it holds
# (issue #8: 0.4 GB and 4 GB). Makes a one-node cluster in DIR, preloads it
# with GIB gibibytes of 1 KiB values (examples/storage_open.rs), then
# restarts it RUNS times; each time a client asks for a preloaded key from
# the moment the node is spawned, and the node's own startup phases are
# read from /metrics. With --cold, the data files are dropped from the page
# cache before each start; --shards=N makes a new DIR with N storage shards.
# With --kill=N, each start follows a crash with a full journal: before it,
# the node stores N more 1 KiB values (`levee load`, per_write, so they sit
# in the write-ahead journal) and is killed with SIGKILL, so the start
# replays them (issue #17: lazy startup with the shared journal).
#
#   cargo build --release --example storage_open && cargo build --release
#   benches/restart-size.sh /tmp/levee-4g 4 [--cold] [--shards=N] [--kill=N] [RUNS]
#
# Prints one line per run and the medians of ready and first_served (ms
# from process start).
set -euo pipefail

dir=${1:?usage: restart-size.sh DIR GIB [--cold] [--shards=N] [--kill=N] [RUNS]}
gib=${2:?usage: restart-size.sh DIR GIB [--cold] [--shards=N] [--kill=N] [RUNS]}
cold=no
runs=5
shards=()
kill_writes=0
for arg in "${@:3}"; do
    case $arg in
        --cold) cold=yes ;;
        --shards=*) shards=(--storage-shards "${arg#--shards=}") ;;
        --kill=*) kill_writes=${arg#--kill=} ;;
        *) runs=$arg ;;
    esac
done

root=$(cd "$(dirname "$0")/.." && pwd)
node=$root/target/release/levee-node
levee=$root/target/release/levee
fill=$root/target/release/examples/storage_open
for bin in "$node" "$levee" "$fill"; do
    [[ -x $bin ]] || { echo "missing $bin: build with cargo build --release (--example storage_open)" >&2; exit 1; }
done

listen=127.0.0.1:7690
admin=127.0.0.1:7691
key=bench-0000000007
pid=

stop_node() {
    if [[ -n $pid ]]; then
        kill -TERM "$pid" 2>/dev/null || true
        wait "$pid" 2>/dev/null || true
        pid=
    fi
}
trap stop_node EXIT

start_node() {
    # Plaintext: this measures the storage's part of a restart; the TLS
    # handshake's cost is measured apart (BENCHMARKS.md, "Mutual TLS").
    "$node" --data-dir "$dir" --listen "$listen" --admin "$admin" --insecure \
        --replicas 1 --voters 1 "$@" >>"$dir/node.log" 2>&1 &
    pid=$!
}

# Polls a condition (a command) every 20 ms for up to 60 s.
wait_until() {
    local what=$1
    shift
    for _ in $(seq 3000); do
        if "$@" >/dev/null 2>&1; then return 0; fi
        sleep 0.02
    done
    echo "timed out waiting for $what" >&2
    exit 1
}

ready() { curl -fsS "http://$admin/health/ready"; }

if [[ ! -e $dir/meta ]]; then
    mkdir -p "$dir"
    start_node --init "${shards[@]}"
    wait_until "the new node to be ready" ready
    stop_node
    "$fill" fill "$dir" "$gib"
fi

# Writes $kill_writes values through the running node, then kills it with
# SIGKILL: what it acknowledged is in the journal only (its shards are
# flushed at the journal's checkpoints, every 8 MiB).
crash_node() {
    local batch=$dir/crash-batch.jsonl
    python3 - "$kill_writes" "$batch" <<'PY'
import json, os, sys
n, path = int(sys.argv[1]), sys.argv[2]
with open(path, "w") as f:
    for i in range(n):
        f.write(json.dumps({"key": "crash-%08d" % i, "value": os.urandom(512).hex()}) + "\n")
PY
    "$levee" --insecure --endpoints "$listen" load "$batch" >/dev/null
    kill -KILL "$pid"
    wait "$pid" 2>/dev/null || true
    pid=
}

if [[ $kill_writes -gt 0 ]]; then
    start_node
    wait_until "the node to be ready before the first crash" ready
    crash_node
fi

phase() { grep -F "levee_startup_phase_seconds{phase=\"$1\"}" <<<"$2" | awk '{printf "%.1f", $2 * 1000}'; }

ready_ms=()
served_ms=()
for run in $(seq "$runs"); do
    if [[ $cold == yes ]]; then
        sync
        find "$dir" -type f -exec dd if={} iflag=nocache count=0 status=none \;
    fi
    journal=$(du -sb "$dir/data/journal" 2>/dev/null | cut -f1)
    start_node
    # From the spawn on: the first answer is the first request served.
    until "$levee" --insecure --endpoints "$listen" --timeout-ms 2000 --connect-timeout-ms 100 get "$key" >/dev/null 2>&1; do :; done
    wait_until "the storage warm-up" bash -c "curl -fsS http://$admin/metrics | grep -q 'phase=\"storage_warm\"'"
    metrics=$(curl -fsS "http://$admin/metrics")
    r=$(phase ready "$metrics")
    s=$(phase first_served "$metrics")
    echo "run $run: journal_bytes=${journal:-0} storage_open_ms=$(phase storage_open "$metrics") ready_ms=$r first_served_ms=$s storage_warm_ms=$(phase storage_warm "$metrics")"
    ready_ms+=("$r")
    served_ms+=("$s")
    if [[ $kill_writes -gt 0 ]]; then
        crash_node
    else
        stop_node
    fi
done

median() { printf '%s\n' "$@" | sort -n | awk '{a[NR] = $1} END {print a[int((NR + 1) / 2)]}'; }
echo "gib=$gib cold=$cold kill_writes=$kill_writes runs=$runs median ready_ms=$(median "${ready_ms[@]}") first_served_ms=$(median "${served_ms[@]}")"
