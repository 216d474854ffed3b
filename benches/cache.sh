#!/bin/sh
# Binary cache throughput with the real binary over loopback HTTP (nginx + WebDAV):
# push ~1.1 GiB of outputs, substitute them into an empty store, and push an update where
# ~90% of the bytes are already cached. If nix is installed (Debian: nix-bin), `nix copy`
# moves the same directories through the same nginx, side by side, in the same run.
#
#   cargo build --release && sh benches/cache.sh        # RUNS=3 by default
#
# The outputs: 4 packages, each a copy of the bootstrap toolchain (~280 MB, 3,300 real
# binaries, headers and libraries) with one package-specific line appended to every file,
# so no two packages share content. The update ("v2") changes only the three compiler
# binaries of one package (cc1, cc1plus, lto1: ~100 MB, ~9% of the bytes).
# Prints Markdown; docs/performance.md quotes it. Needs root (sandbox) and nginx.
set -eu
repo=$(cd "$(dirname "$0")/.." && pwd)
forge=${FORGE:-$repo/target/release/forge}
runs=${RUNS:-3}
work=$(mktemp -d /var/tmp/forge-bench-cache.XXXXXX)
nginx_pid=
cleanup() { [ -n "$nginx_pid" ] && kill "$nginx_pid" 2>/dev/null; rm -rf "$work"; }
trap cleanup EXIT INT TERM

now() { date +%s.%N; }
rate() { awk -v b="$1" -v s="$2" 'BEGIN { printf "%.0f", b / s / 1e6 }'; }
secs() { awk -v a="$1" -v b="$2" 'BEGIN { printf "%.2f\n", b - a }'; }
median() { sort -n | awk '{ v[NR] = $1 } END { print v[int((NR + 1) / 2)] }'; }

# ---- the outputs ------------------------------------------------------------------------
mkdir -p "$work/pkgs"
for i in 1 2 3 4; do
    cat > "$work/pkgs/bulk$i.toml" <<TOML
[package]
name = "bulk$i"
version = "1"
[deps]
build = ["seed", "bootstrap-toolchain"]
[env]
SUFFIX = "bulk$i v1"
COMPILER_SUFFIX = "bulk$i v1"
[build]
script = '''
cp -a /usr /lib /lib64 /etc \$FORGE_OUT/ 2>/dev/null || true
chmod -R u+w \$FORGE_OUT
find \$FORGE_OUT -type f ! -name cc1 ! -name cc1plus ! -name lto1 -exec sh -c 'for f; do echo "\$SUFFIX" >> "\$f"; done' _ {} +
find \$FORGE_OUT -type f \( -name cc1 -o -name cc1plus -o -name lto1 \) -exec sh -c 'for f; do echo "\$COMPILER_SUFFIX" >> "\$f"; done' _ {} +
'''
TOML
done
cat > "$work/set.toml" <<TOML
[set]
name = "bulk"
include = ["$repo/toolchain/*.toml", "pkgs/*.toml"]
TOML
cd "$work"
echo "building the outputs..." >&2
"$forge" --store "$work/A" build set.toml -p bulk1 -p bulk2 -p bulk3 -p bulk4 >&2
bytes=0
for i in 1 2 3 4; do
    out=$("$forge" --store "$work/A" show set.toml -p bulk$i --json | grep "\"name\":\"bulk$i\"" | sed 's/.*"out":"\([0-9a-f]*\)".*/\1/')
    b=$(du -sb --apparent-size "$work/A/objects/$out" | cut -f1)
    bytes=$((bytes + b))
    echo "$work/A/objects/$out" >> "$work/outs"
done
files=$(cat "$work/outs" | xargs -I{} find {} -type f | wc -l)

# ---- nginx --------------------------------------------------------------------------------
port=$(python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1",0)); print(s.getsockname()[1])')
mkdir -p "$work/nginx/tmp" "$work/www"
cat > "$work/nginx/nginx.conf" <<CONF
worker_processes 2;
pid $work/nginx/pid;
error_log $work/nginx/error.log;
events { worker_connections 256; }
http {
    access_log off;
    sendfile on;
    client_body_temp_path $work/nginx/tmp;
    server {
        listen 127.0.0.1:$port;
        root $work/www;
        client_max_body_size 0;
        dav_methods PUT;
        create_full_put_path on;
        dav_access user:rw group:r all:r;
    }
}
CONF
nginx -p "$work/nginx" -c "$work/nginx/nginx.conf" -g 'daemon off; user root;' &
nginx_pid=$!
sleep 1
url="http://127.0.0.1:$port"

"$forge" key generate bench --dir "$work/keys" > "$work/pub"
pub=$(cat "$work/pub")

push_mb=; sub_mb=; : > "$work/push.t"; : > "$work/sub.t"
for run in $(seq "$runs"); do
    rm -rf "$work/www/forge$run" "$work/B"
    t0=$(now)
    "$forge" --store "$work/A" push --to "$url/forge$run/" --key "$work/keys/bench.secret" set.toml \
        -p bulk1 -p bulk2 -p bulk3 -p bulk4 --json > "$work/push.json"
    t1=$(now)
    secs "$t0" "$t1" >> "$work/push.t"
    moved=$(sed 's/.*"bytes_uploaded":\([0-9]*\).*/\1/' "$work/push.json")
    sync   # the push's writes are on disk, not competing with the substitution's
    t0=$(now)
    "$forge" --store "$work/B" build set.toml -p bulk1 -p bulk2 -p bulk3 -p bulk4 --json \
        --substituter "$url/forge$run/" --trusted-key "$pub" > "$work/sub.json"
    t1=$(now)
    secs "$t0" "$t1" >> "$work/sub.t"
    grep -q '"built":0' "$work/sub.json" || { echo "substitution built something:" >&2; tail -1 "$work/sub.json" >&2; exit 1; }
done
push_s=$(median < "$work/push.t"); sub_s=$(median < "$work/sub.t")
# what was substituted (the build-only seed and toolchain are not needed, so not fetched)
total_sub=$(du -sb --apparent-size "$work/B/objects" | cut -f1)

# ---- incremental push: v2 of bulk1 changes its three compiler binaries only ---------------
sed -i 's/^COMPILER_SUFFIX = "bulk1 v1"/COMPILER_SUFFIX = "bulk1 v2"/' pkgs/bulk1.toml
sed -i 's/^version = "1"/version = "2"/' pkgs/bulk1.toml
"$forge" --store "$work/A" build set.toml -p bulk1 >&2
t0=$(now)
"$forge" --store "$work/A" push --to "$url/forge1/" --key "$work/keys/bench.secret" set.toml \
    -p bulk1 -p bulk2 -p bulk3 -p bulk4 --json > "$work/inc.json"
t1=$(now)
inc_s=$(secs "$t0" "$t1")
inc_moved=$(sed 's/.*"bytes_uploaded":\([0-9]*\).*/\1/' "$work/inc.json")
inc_skipped=$(sed 's/.*"blob_bytes_skipped":\([0-9]*\).*/\1/' "$work/inc.json")
v2=$("$forge" --store "$work/A" show set.toml -p bulk1 --json | grep '"name":"bulk1"' | sed 's/.*"out":"\([0-9a-f]*\)".*/\1/')
v2_bytes=$(du -sb --apparent-size "$work/A/objects/$v2" | cut -f1)
changed=$(find "$work/A/objects/$v2" -type f \( -name cc1 -o -name cc1plus -o -name lto1 \) -printf '%s\n' | awk '{ s += $1 } END { print s }')
# substitute v2 into B, which has v1: only the changed big files are downloaded
t0=$(now)
"$forge" --store "$work/B" build set.toml -p bulk1 --json --substituter "$url/forge1/" --trusted-key "$pub" > "$work/sub2.json"
t1=$(now)
sub2_s=$(secs "$t0" "$t1")

cat <<REPORT
### Binary cache over loopback HTTP (nginx WebDAV), $(nproc) cores, medians of $runs runs

| | bytes | files | time | MB/s |
|---|---|---|---|---|
| push 4 packages | $bytes ($(rate "$bytes" 1) MB) uncompressed, $moved compressed moved | $files | ${push_s} s (all: $(tr '\n' ' ' < "$work/push.t")) | $(rate "$bytes" "$push_s") |
| substitute the 4 packages into an empty store (their build inputs are not needed) | $total_sub | | ${sub_s} s (all: $(tr '\n' ' ' < "$work/sub.t")) | $(rate "$total_sub" "$sub_s") |
| incremental push: bulk1 v2, ${changed} of ${v2_bytes} bytes changed (cc1, cc1plus, lto1) | $inc_moved moved, $inc_skipped of big files skipped | | ${inc_s} s | $(rate "$bytes" "$inc_s") (of the whole set) |
| substitute bulk1 v2 into the store holding v1 | | | ${sub2_s} s | $(rate "$v2_bytes" "$sub2_s") |
REPORT

# ---- nix copy, same bytes, same nginx ----------------------------------------------------
if command -v nix >/dev/null 2>&1; then
    nixflags="--extra-experimental-features nix-command"
    rm -rf "$work/B"  # room
    paths=$(i=0; while read -r dir; do i=$((i+1)); cp -a "$dir" "$work/nixsrc$i"; chmod -R u+w "$work/nixsrc$i"
            nix-store --store "$work/nixA" --add "$work/nixsrc$i"; rm -rf "$work/nixsrc$i"; done < "$work/outs")
    : > "$work/nixpush.t"; : > "$work/nixsub.t"
    for run in $(seq "$runs"); do
        rm -rf "$work/www/nix$run" "$work/nixB"; mkdir -p "$work/www/nix$run"
        t0=$(now)
        # shellcheck disable=SC2086
        nix $nixflags copy --store "$work/nixA" --to "file://$work/www/nix$run?compression=zstd" $paths
        t1=$(now); secs "$t0" "$t1" >> "$work/nixpush.t"
        sync
        t0=$(now)
        # shellcheck disable=SC2086
        nix $nixflags copy --no-check-sigs --from "$url/nix$run" --to "$work/nixB" $paths
        t1=$(now); secs "$t0" "$t1" >> "$work/nixsub.t"
    done
    np=$(median < "$work/nixpush.t"); ns=$(median < "$work/nixsub.t")
    cat <<REPORT

| nix copy $(nix --version | awk '{print $NF}'), same 4 directories | time | MB/s | forge MB/s / nix MB/s |
|---|---|---|---|
| push (nix copy --to file://, zstd; forge pushes over HTTP PUT) | ${np} s (all: $(tr '\n' ' ' < "$work/nixpush.t")) | $(rate "$bytes" "$np") | $(awk -v a="$push_s" -v b="$np" 'BEGIN{printf "%.2f", b/a}') |
| substitute from nginx (nix copy --from http://) | ${ns} s (all: $(tr '\n' ' ' < "$work/nixsub.t")) | $(rate "$bytes" "$ns") | $(awk -v fs="$total_sub" -v a="$sub_s" -v nb="$bytes" -v b="$ns" 'BEGIN{printf "%.2f", (fs/a)/(nb/b)}') |
REPORT
else
    echo; echo "(nix not installed: no side-by-side nix copy run; apt-get install nix-bin)"
fi
