#!/usr/bin/env bash
# What a durable put costs a 3-node cluster's nodes: their CPU time and
# their system calls per put, by kind.
#
#   benches/syscalls-per-put.sh OUT_DIR [BIN_DIR] [PUTS]
#
# Starts `levee local --nodes 3 --insecure` with `per_write` durability
# from BIN_DIR (default ./target/release, which holds levee and
# levee-node), stores PUTS (default 300000) new keys with 256 B values
# through `levee load --concurrency 64`, and counts, over the whole load,
# the nodes' system calls (`perf stat`, tracepoints; needs perf and
# root or perf_event_paranoid ≤ -1), their context switches, the CPU
# time they used (/proc/PID/stat) and what they wrote (/proc/PID/io).
# Divides each by the puts and writes OUT_DIR/report.txt. The load runs
# on the same CPUs as the nodes; run it on an idle machine and twice.
set -euo pipefail

out=${1:?usage: syscalls-per-put.sh OUT_DIR [BIN_DIR] [PUTS]}
bin=${2:-./target/release}
puts=${3:-300000}
command -v perf >/dev/null || { echo "perf is not installed (apt-get install linux-perf)" >&2; exit 2; }
[[ -x $bin/levee && -x $bin/levee-node ]] || { echo "no levee and levee-node in $bin" >&2; exit 2; }
bin=$(cd "$bin" && pwd)
rm -rf "$out"
mkdir -p "$out"
out=$(cd "$out" && pwd)

python3 - "$out/puts.jsonl" "$puts" <<'PY'
import json, sys
value = "x" * 256
with open(sys.argv[1], "w") as f:
    for i in range(int(sys.argv[2])):
        f.write(json.dumps({"key": "k%039d" % i, "value": value}) + "\n")
PY

LEVEE_DURABILITY=per_write "$bin/levee" local --nodes 3 --insecure --port 7480 \
    --data-dir "$out/data" >"$out/local.log" 2>&1 &
local_pid=$!
trap 'kill -TERM $local_pid 2>/dev/null || true' EXIT
deadline=$((SECONDS + 60))
until grep -q "nodes ready" "$out/local.log"; do
    ((SECONDS < deadline)) || { echo "the cluster did not start; see $out/local.log" >&2; exit 1; }
    kill -0 $local_pid 2>/dev/null || { echo "levee local exited; see $out/local.log" >&2; exit 1; }
    sleep 0.2
done
pids=$(pgrep -f "levee-node.*$out/data" | paste -sd,)

cpu_ticks() { for p in ${pids//,/ }; do awk '{print $14 + $15}' "/proc/$p/stat"; done | paste -sd+ | bc; }
written() { for p in ${pids//,/ }; do awk '/^write_bytes/ {print $2}' "/proc/$p/io"; done | paste -sd+ | bc; }

ticks0=$(cpu_ticks)
bytes0=$(written)
start=$(date +%s.%N)
perf stat -x, -o "$out/perf.txt" -p "$pids" -e \
    'syscalls:sys_enter_recvfrom,syscalls:sys_enter_sendto,syscalls:sys_enter_write,syscalls:sys_enter_pwrite64,syscalls:sys_enter_fdatasync,syscalls:sys_enter_epoll_wait,syscalls:sys_enter_futex,raw_syscalls:sys_enter,context-switches' &
perf_pid=$!
"$bin/levee" load --concurrency 64 --insecure \
    --endpoints 127.0.0.1:7480,127.0.0.2:7480,127.0.0.3:7480 "$out/puts.jsonl" >"$out/load.txt" 2>&1 || true
end=$(date +%s.%N)
ticks1=$(cpu_ticks)
bytes1=$(written)
kill -INT $perf_pid
wait $perf_pid 2>/dev/null || true

python3 - "$out" "$puts" "$start" "$end" "$ticks0" "$ticks1" "$bytes0" "$bytes1" "$(getconf CLK_TCK)" <<'PY' | tee "$out/report.txt"
import sys
out, puts = sys.argv[1], int(sys.argv[2])
start, end, t0, t1, b0, b1, hz = map(float, sys.argv[3:10])
print(f"{puts} puts in {end - start:.1f} s: {puts / (end - start):.0f} puts/s "
      "(the load's own figures: load.txt)")
print(f"nodes' CPU per put: {(t1 - t0) / hz / puts * 1000:.4f} ms")
print(f"nodes' disk writes per put: {(b1 - b0) / puts:.0f} B")
for line in open(out + "/perf.txt"):
    f = line.strip().split(",")
    if len(f) > 2 and f[0].replace(".", "").isdigit():
        print(f"{f[2]:32s} {float(f[0]) / puts:8.2f} per put")
PY
