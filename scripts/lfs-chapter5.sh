#!/bin/sh
# The LFS chapter-5 proof build (docs/lfs.md): serve sources/debian/ on 127.0.0.1:8731
# while `forge build` runs, so forge fetches Debian's source tarballs by checksum
# through its normal path (the upstream URL fails offline, the mirror answers).
#
#   scripts/lfs-chapter5.sh [FORGE BUILD ARGS...]
#   e.g. FORGE_STORE=/var/tmp/lfs-a scripts/lfs-chapter5.sh -j 1
#
# Fetch the sources first: scripts/debian-sources.sh binutils
# FORGE (default target/debug/forge) names the binary. Not run in CI: it takes minutes.
set -eu

repo=$(cd "$(dirname "$0")/.." && pwd)
forge=${FORGE:-$repo/target/debug/forge}
port=8731
[ -d "$repo/sources/debian" ] || { echo "$0: no sources/debian/: run scripts/debian-sources.sh binutils" >&2; exit 1; }

python3 -m http.server "$port" --bind 127.0.0.1 --directory "$repo/sources/debian" \
    > "${TMPDIR:-/tmp}/forge-lfs-http.log" 2>&1 &
server=$!
trap 'kill "$server" 2>/dev/null || true' EXIT INT TERM
# Wait until the server answers (at most ~10 s).
i=0
until python3 -c "import urllib.request; urllib.request.urlopen('http://127.0.0.1:$port/')" 2>/dev/null; do
    i=$((i + 1))
    [ "$i" -lt 50 ] || { echo "$0: the source server did not start" >&2; exit 1; }
    sleep 0.2
done

start=$(date +%s)
"$forge" build "$@" "$repo/recipes/lfs-debian/chapter5.toml"
echo "wall time: $(( $(date +%s) - start )) s" >&2
"$forge" show "$repo/recipes/lfs-debian/chapter5.toml"
