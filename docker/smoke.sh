#!/usr/bin/env bash
# The docker smoke test (run by .ci/run): builds everything, brings up the
# 5-node, 3-zone cluster of compose.yml, and checks that losing a node and
# cutting one off the network lose nothing:
#
#   1. build (base image, release binaries, image) and start the cluster
#      with short recovery settings (through LEVEE_RECOVERY);
#   2. write SMOKE_KEYS keys from the host;
#   3. docker kill n2 and keep writing new keys and reading old ones while
#      the cluster marks it down, then out, and rebuilds its replicas on n5
#      (the other node of its zone): every operation must succeed;
#   4. wait for 0 under-replicated partitions and no moves in flight; check
#      that each sampled key is on exactly R live nodes (each node's own
#      copy, no quorum read) and that every key reads back its value;
#   5. cut n4 off the network, write, heal it: the writes it missed reach
#      it (each is on exactly R live nodes again) and every key reads back;
#   6. start n2 again: it rejoins as itself;
#   7. always: `down -v` (containers, network, volumes), even on failure.
#
# Exits non-zero, loudly, if docker is missing or any check fails. It runs
# its own compose project on its own network and ports (project
# levee-smoke, 172.28.6.0/24, 127.0.0.1:7510..7524), so a cluster started
# with docker/cluster.sh is left alone.
#
# Environment: SMOKE_KEYS (default 3000), SMOKE_PARALLEL (CLI processes at
# once, default 8), SMOKE_RECOVERY (replaces the recovery settings below),
# SMOKE_KEEP=1 (leave the cluster up on failure, for a
# look; tear down with LEVEE_COMPOSE_PROJECT=levee-smoke LEVEE_NET=172.28.6
# LEVEE_PORTS=75 docker/cluster.sh down -v).
set -euo pipefail

here=$(cd "$(dirname "$0")" && pwd)
root=$(cd "$here/.." && pwd)
cluster=$here/cluster.sh

export LEVEE_COMPOSE_PROJECT=levee-smoke LEVEE_NET=172.28.6 LEVEE_PORTS=75
# Short enough for CI: down after 4 s of silence, out after 10 s. The
# moves keep their default pace (1 started per second, at most 2 into a
# node), so rebuilding n2's ~128 partitions on n5 takes about two minutes.
export LEVEE_RECOVERY=${SMOKE_RECOVERY:-suspect_after=2000,down_after=4000,down_out_interval=10000}
keys=${SMOKE_KEYS:-3000}
par=${SMOKE_PARALLEL:-8}
replicas=3
export LEVEE_BIN=${CARGO_TARGET_DIR:-$root/target}/release/levee
export LEVEE_ENDPOINTS=127.0.0.1:7510,127.0.0.1:7511,127.0.0.1:7512,127.0.0.1:7513,127.0.0.1:7514
work=$(mktemp -d "${TMPDIR:-/tmp}/levee-smoke.XXXXXX")
# The cluster's certificates (cluster.sh up makes them); the CLI connects
# as client root.
export LEVEE_DOCKER_CERTS=$work/certs
export LEVEE_CERTS_DIR=$LEVEE_DOCKER_CERTS/client
errors=$work/status-errors.log
started=$SECONDS
phase_started=$SECONDS
summary=()

say() { printf 'smoke [%4ds]: %s\n' "$((SECONDS - started))" "$*"; }
fail() {
    echo "smoke: FAILED: $*" >&2
    exit 1
}
phase_done() {
    summary+=("$(printf '%-44s %4d s' "$1" "$((SECONDS - phase_started))")")
    phase_started=$SECONDS
}

# --- preconditions: fail loudly, never skip ---------------------------------------

command -v docker >/dev/null || fail "docker is not installed; the smoke test needs the docker engine and docker-compose"
docker info >/dev/null 2>&1 || fail "the docker engine is not reachable ('docker info' fails)"
command -v python3 >/dev/null || fail "python3 is needed to read 'levee status -o json'"

teardown() {
    local rc=$?
    if [[ $rc -ne 0 ]]; then
        echo "smoke: diagnostics after failure (exit $rc):" >&2
        "$cluster" status >&2 || true
        for n in 1 2 3 4 5; do
            echo "--- n$n, last 30 log lines" >&2
            "$cluster" logs "$n" --tail 30 2>&1 | sed "s/^/n$n| /" >&2 || true
        done
        if [[ -s $errors ]]; then
            echo "--- levee status errors (counted)" >&2
            sort "$errors" | uniq -c | sort -rn | head -20 >&2
        fi
    fi
    if [[ $rc -ne 0 && ${SMOKE_KEEP:-0} == 1 ]]; then
        echo "smoke: SMOKE_KEEP=1: cluster left up" >&2
    else
        say "teardown: down -v"
        "$cluster" down -v >/dev/null 2>&1 || "$cluster" down -v || true
    fi
    rm -rf "$work"
    exit "$rc"
}
trap teardown EXIT
trap 'exit 130' INT TERM

# --- helpers --------------------------------------------------------------------------

# Runs operations read from stdin, SMOKE_PARALLEL at once, each a fresh
# `levee` process. An operation is one line: `put KEY VALUE` or
# `get KEY VALUE` (must read VALUE), each printing `OP KEY: what went wrong`
# if it fails; or `has ID KEY VALUE`, printing KEY if node ID's own copy
# is VALUE.
ops() {
    # shellcheck disable=SC2016,SC2086 # the script expands its own arguments
    xargs -P "$par" -L 1 sh -c '
        case $0 in
        put) err=$("$LEVEE_BIN" put "$1" "$2" 2>&1 >/dev/null) || echo "put $1:" $err ;;
        get) out=$("$LEVEE_BIN" get "$1" 2>&1); [ "$out" = "$2" ] || echo "get $1: read" $out ;;
        has) if [ "$("$LEVEE_BIN" get "$2" --from "$1" 2>/dev/null)" = "$3" ]; then echo "$2"; fi ;;
        esac'
}

# `put`/`get` lines for keys PREFIX-FROM..PREFIX-TO, value v-KEY.
lines() { seq "$3" "$4" | sed "s/.*/$1 $2-& v-$2-&/"; }

# Runs `ops` and fails if any operation failed.
all_succeed() {
    local what=$1 failed
    ops >"$work/failed"
    failed=$(wc -l <"$work/failed")
    if [[ $failed -ne 0 ]]; then
        head -n 20 "$work/failed" | sed 's/^/smoke: failed: /' >&2
        fail "$what: $failed operations failed"
    fi
}

# `levee status -o json` as lines: `UNDER_REPLICATED MOVES_IN_FLIGHT`, then
# `ID ADDR STATE` per node. Nothing if no node answers.
view() {
    local json
    json=$("$LEVEE_BIN" status -o json 2>>"$errors") || return 0
    python3 -c '
import json, sys
d = json.load(sys.stdin)
print(d["under_replicated"], d["moves_in_flight"])
for n in d["nodes"]:
    print(n["id"], n["addr"], n["state"])' <<<"$json"
}

addr_of() { echo "$LEVEE_NET.1$1:7400"; }
id_of() { view | awk -v a="$(addr_of "$1")" '$2 == a { print $1 }'; }
state_of() { view | awk -v a="$(addr_of "$1")" '$2 == a { print $3 }'; }
state_is() { [[ $(state_of "$1") == "$2" ]]; }
# Map ids of the nodes whose state is up.
live_ids() { view | awk 'NR > 1 && $3 == "up" { print $1 }'; }

# wait_for DESCRIPTION SECONDS COMMAND...: polls COMMAND once a second.
wait_for() {
    local what=$1 limit=$2 deadline=$((SECONDS + $2))
    shift 2
    until "$@"; do
        ((SECONDS < deadline)) || fail "$what: not after $limit s"
        sleep 1
    done
}

# 0 under-replicated partitions and no moves in flight.
recovered() { [[ $(view | sed -n 1p) == "0 0" ]]; }

# Every key of the file (lines `get KEY VALUE`) is held, as each node's own
# copy, by exactly R of the live nodes; retried until DEADLINE for keys
# still catching up (hint replay, anti-entropy).
on_r_replicas() {
    local what=$1 limit=$2 file=$3 deadline=$(($2 + SECONDS)) ids bad
    ids=$(live_ids)
    while :; do
        for id in $ids; do sed "s/^get /has $id /" "$file"; done | ops >"$work/holders"
        bad=$(awk -v r="$replicas" 'NR == FNR { held[$1]++; next }
            held[$2] != r { bad++ } END { print bad + 0 }' "$work/holders" "$file")
        [[ $bad -eq 0 ]] && return 0
        ((SECONDS < deadline)) || fail "$what: $bad keys not on exactly $replicas live nodes after $limit s"
        say "$what: $bad keys not yet on $replicas live nodes; retrying"
        sleep 2
    done
}

# --- 1. build and start ----------------------------------------------------------------

say "building and starting the cluster (project $LEVEE_COMPOSE_PROJECT, network $LEVEE_NET.0/24)"
"$cluster" up
phase_done "build + up (5 nodes serving)"

# --- 2. write -------------------------------------------------------------------------

say "writing $keys keys (k-1..k-$keys), $par CLI processes at once"
lines put k 1 "$keys" | all_succeed "initial writes"
lines get k 1 "$keys" >"$work/initial"
say "wrote $keys keys"
phase_done "write $keys keys"

# --- 3. kill n2, keep working ------------------------------------------------------------

n2_id=$(id_of 2)
"$cluster" kill 2
say "reading and writing while n2 (map id $n2_id) is down, marked out, and its replicas rebuilt"
round=0 written=0 read=0 deadline=$((SECONDS + 600))
: >"$work/during-kill"
while :; do
    round=$((round + 1))
    # 50 new keys and 50 reads of the initial keys (a different slice each
    # round), all at once.
    first=$(((round - 1) * 50 + 1))
    lines put d "$first" "$((first + 49))" >"$work/round"
    from=$(((round - 1) * 50 % keys + 1))
    lines get k "$from" "$((from + 49 < keys ? from + 49 : keys))" >>"$work/round"
    all_succeed "round $round of reads and writes with n2 killed" <"$work/round"
    lines get d "$first" "$((first + 49))" >>"$work/during-kill"
    written=$((written + 50)) read=$((read + $(grep -c '^get' "$work/round")))
    state=$(state_of 2)
    if [[ $state == out ]] && recovered; then
        break
    fi
    ((round % 10 == 0)) && say "round $round: n2 $state; $(view | awk 'NR == 1 {print $1 " under-replicated, " $2 " moves in flight"}')"
    ((SECONDS < deadline)) || fail "n2 not out and re-replicated after 600 s"
done
say "n2 out and re-replicated after $round rounds: $written writes and $read reads, all succeeded"
phase_done "kill n2: r/w until re-replicated"

# --- 4. verify --------------------------------------------------------------------------

recovered || fail "levee status: not 0 under-replicated / 0 moves"
say "levee status: under_replicated 0, moves_in_flight 0"
# Each node's own copies, before any quorum read could repair them: every
# 10th key written before the kill and every 5th written after it.
{ awk 'NR % 10 == 0' "$work/initial"; awk 'NR % 5 == 0' "$work/during-kill"; } >"$work/sample"
on_r_replicas "after re-replication" 60 "$work/sample"
say "$(wc -l <"$work/sample") sampled keys each on exactly $replicas live nodes"
cat "$work/initial" "$work/during-kill" | all_succeed "reading every key after re-replication"
say "all $((keys + written)) keys read back their values"
phase_done "verify (replica counts, every key)"

# --- 5. partition n4, write, heal -------------------------------------------------------

"$cluster" partition 4
lines put p 1 300 | all_succeed "writes with n4 partitioned"
wait_for "n4 marked down while partitioned" 30 state_is 4 down
say "n4 is down in the map"
lines put p 301 600 | all_succeed "writes with n4 partitioned and down"
"$cluster" heal 4
wait_for "n4 back up after heal" 60 state_is 4 up
wait_for "0 under-replicated after heal" 60 recovered
say "n4 up again, 0 under-replicated"
lines get p 1 600 >"$work/during-partition"
on_r_replicas "after heal" 60 "$work/during-partition"
say "the 600 keys written during the partition are each on exactly $replicas live nodes"
cat "$work/initial" "$work/during-kill" "$work/during-partition" |
    all_succeed "reading every key after heal"
say "all $((keys + written + 600)) keys read back their values"
phase_done "partition n4, heal, converge"

# --- 6. n2 comes back ---------------------------------------------------------------------

"$cluster" start 2
wait_for "n2 up again after restart" 60 state_is 2 up
[[ $(id_of 2) == "$n2_id" ]] || fail "n2 came back as map id $(id_of 2), not $n2_id"
say "n2 rejoined as map id $n2_id"
phase_done "restart n2"

echo
echo "smoke: PASSED in $((SECONDS - started)) s"
printf '  %s\n' "${summary[@]}"
echo "  keys: $keys initial, $written written and $read read during the kill, 600 during the partition; 0 failed"
