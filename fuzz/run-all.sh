#!/usr/bin/env bash
# Runs every fuzz target (or the ones named) for MINUTES minutes each, one
# after another, then minimises the corpus it grew (cargo fuzz cmin) and
# prints each target's executions and whether it crashed.
#
#   fuzz/run-all.sh MINUTES [TARGET...]
#
# The committed corpus (corpus/<target>/: seeds and regressions) is only
# read; what the fuzzer finds goes to corpus.local/<target>/ (not
# committed, kept between runs so that fuzzing time adds up).
#
# Works on the stable toolchain: RUSTC_BOOTSTRAP=1 lets cargo fuzz pass the
# nightly flags it needs (sanitizer, coverage). Needs `cargo install
# cargo-fuzz`. A crash leaves its input in fuzz/artifacts/<target>/: fix the
# node, then copy the input into fuzz/corpus/<target>/ as a regression
# (tests/fuzz_corpus.rs replays the corpus on stable in CI).
set -euo pipefail
cd "$(dirname "$0")"
minutes=${1:?usage: fuzz/run-all.sh MINUTES [TARGET...]}
shift
export RUSTC_BOOTSTRAP=1
if [ $# -gt 0 ]; then
    targets=("$@")
else
    mapfile -t targets < <(cargo fuzz list)
fi
cargo fuzz build
mkdir -p logs
status=0
summary=()
for target in "${targets[@]}"; do
    log="logs/$target.log"
    mkdir -p "corpus.local/$target"
    # One process, one thread; -timeout turns a hang into a reported bug.
    if cargo fuzz run "$target" "corpus.local/$target" "corpus/$target" -- \
        -max_total_time=$((minutes * 60)) -timeout=10 -print_final_stats=1 >"$log" 2>&1; then
        result=ok
        cargo fuzz cmin "$target" "corpus.local/$target" >>"$log" 2>&1
    else
        result=CRASH
        status=1
    fi
    execs=$(grep -o 'stat::number_of_executed_units: *[0-9]*' "$log" | grep -o '[0-9]*$' | tail -1)
    files=$(find "corpus.local/$target" -type f | wc -l)
    summary+=("$(printf '%-11s %-5s %12s executions  %5s inputs found' \
        "$target" "$result" "${execs:-?}" "$files")")
    echo "${summary[-1]}"
done
printf '\n%s\n' "${summary[@]}"
exit $status
