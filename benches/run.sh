#!/usr/bin/env bash
# The performance benchmarks of issue 2 (see docs/performance.md): builds the optimized
# benches and the forge binary, runs them, and prints the machine and a table of figures.
#
#   benches/run.sh                      # everything (about 10 minutes on 2 cores)
#   FORGE_BENCHES="graph" benches/run.sh  # a subset: graph, sandbox, treehash
#
# Knobs (environment): FORGE_BENCH_RUNS (timed runs per figure, default 5; medians are
# quoted), FORGE_BENCH_NODES (graph sizes, default 1000,10000), FORGE_BENCH_TRIVIAL (trivial
# builds per run, default 100), FORGE_BENCH_DIR (scratch space, default the temp dir; the
# treehash bench writes 1 GiB there), FORGE_BENCH_STORE (the sandbox bench's persistent store).
# Not part of `cargo test`: the bench targets are `test = false`.
set -euo pipefail
cd "$(dirname "$0")/.."

benches=${FORGE_BENCHES:-graph sandbox treehash}
log=$(mktemp -t forge-bench-XXXXXX.log)

machine() {
    echo "date:    $(date -u +%Y-%m-%dT%H:%MZ)"
    echo "commit:  $(git rev-parse --short HEAD 2>/dev/null || echo unknown)$(git diff --quiet HEAD -- src 2>/dev/null || echo ' (src modified)')"
    echo "cpu:     $(nproc) x $(sed -n 's/^model name[^:]*: //p' /proc/cpuinfo | head -1)"
    echo "memory:  $(awk '/MemTotal/ {printf "%.1f GiB", $2/1048576}' /proc/meminfo)"
    echo "kernel:  $(uname -sr)"
    echo "disk:    $(df -hT "${FORGE_BENCH_DIR:-${TMPDIR:-/tmp}}" | awk 'NR==2 {print $1" "$2", "$4" free"}')"
    echo "load:    $(cut -d' ' -f1-3 /proc/loadavg)"
    echo "rustc:   $(rustc --version)"
}

machine | tee "$log"
bench_args=()
for b in $benches; do bench_args+=(--bench "$b"); done
echo "building (release profile, benches and the forge binary) ..."
cargo bench --no-run "${bench_args[@]}" 2>&1 | grep -v '^ *\(Compiling\|Executable\)' || true

for b in $benches; do
    echo
    echo "### $b (load $(cut -d' ' -f1-3 /proc/loadavg))"
    cargo bench -q --bench "$b" 2>&1 | tee -a "$log"
done
echo "load after: $(cut -d' ' -f1-3 /proc/loadavg)" | tee -a "$log"

# The table: every FIGURE line, plus the treehash summary line.
echo
printf '%-52s %-12s %-10s %s\n' "figure" "measured" "target" "verdict"
awk -F'\t' '/^FIGURE\t/ {printf "%-52s %-12s %-10s %s\n", $2, $3, $4, $5}' "$log"
sed -n 's/^treehash: \([0-9]*\) files, \([0-9.]*\) GiB.*median \([0-9.]*\) s.*= \([0-9.]*\) GB\/s.*/\1 \2 \3 \4/p' "$log" |
    while read -r files gib secs gbps; do
        printf '%-52s %-12s %-10s %s\n' "tree hash, $gib GiB in $files files (warm cache)" "$secs s" "-" "$gbps GB/s"
    done
echo "(full log: $log)"
