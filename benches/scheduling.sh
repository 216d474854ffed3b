#!/bin/sh
# Duration-aware scheduling, measured with the real binary: a generated graph with skewed
# durations, built with --schedule topological and --schedule critical-path, alternately.
#
#   cargo build --release && sh benches/scheduling.sh      # RUNS=3 by default
#
# The graph: a chain of 4 slow packages (z-chain-1 .. z-chain-4, 3 s each, every one
# depending on the previous) and 8 quick independent ones (a-quick-1 .. a-quick-8, 1.5 s),
# built with -j 2. Their names make topological order (ties by name) start the quick ones
# first. A first run records the build times; before each timed build every recipe's ROUND
# variable changes, so everything is rebuilt, with the durations recorded before.
# Builds sleep rather than compute, so the figures measure the schedule, not the CPU.
# Prints Markdown; docs/performance.md quotes it. Needs root (sandbox) like any build.
set -eu
repo=$(cd "$(dirname "$0")/.." && pwd)
forge=${FORGE:-$repo/target/release/forge}
runs=${RUNS:-3}
work=$(mktemp -d /var/tmp/forge-bench-sched.XXXXXX)
trap 'rm -rf "$work"' EXIT INT TERM
cd "$work"
mkdir pkgs
recipe() { # name seconds deps
    printf '[package]\nname = "%s"\nversion = "1"\n[deps]\nbuild = ["seed"%s]\n[env]\nROUND = "0"\n[build]\nscript = '"'"'sleep %s; mkdir -p $FORGE_OUT && echo %s > $FORGE_OUT/done'"'"'\n' \
        "$1" "$3" "$2" "$1" > "pkgs/$1.toml"
}
prev=""
for i in 1 2 3 4; do recipe "z-chain-$i" 3 "$prev"; prev=", \"z-chain-$i\""; done
for i in 1 2 3 4 5 6 7 8; do recipe "a-quick-$i" 1.5 ""; done
printf '[set]\nname = "sched"\ninclude = ["%s/toolchain/busybox-static.toml", "%s/toolchain/seed.toml", "pkgs/*.toml"]\n' "$repo" "$repo" > set.toml

round=0
build() { # schedule -> prints wall seconds
    round=$((round + 1))
    sed -i "s/^ROUND = .*/ROUND = \"$round\"/" pkgs/*.toml
    t0=$(date +%s.%N)
    "$forge" --store "$work/store" build set.toml -j 2 --schedule "$1" >/dev/null 2>&1
    t1=$(date +%s.%N)
    awk -v a="$t0" -v b="$t1" 'BEGIN { printf "%.2f\n", b - a }'
}
median() { sort -n | awk '{ v[NR] = $1 } END { print v[int((NR + 1) / 2)] }'; }

echo "training run (records build times)..." >&2
build topological >/dev/null
: > topo.t; : > cp.t
for r in $(seq "$runs"); do
    build topological >> topo.t
    build critical-path >> cp.t
    echo "repetition $r: topological $(tail -1 topo.t) s, critical-path $(tail -1 cp.t) s" >&2
done
topo=$(median < topo.t); cp=$(median < cp.t)
cat <<REPORT
### Scheduling a graph with skewed durations ($(nproc) cores, -j 2, medians of $runs runs)

| schedule | wall time | all runs |
|---|---|---|
| topological (ties by name) | ${topo} s | $(tr '\n' ' ' < topo.t) |
| critical-path first (recorded durations) | ${cp} s | $(tr '\n' ' ' < cp.t) |
| gain | $(awk -v a="$topo" -v b="$cp" 'BEGIN { printf "%.0f%% shorter (%.2fx)", (a - b) / a * 100, a / b }') | |

Lower bound: the chain alone takes 12 s; all the work is 24 s on 2 workers, so 12 s is optimal.
REPORT
