#!/bin/sh
# The LFS chapter-5 proof build (docs/lfs.md): the tree's chapter-5 recipes
# (recipes/toolchain.toml) at Debian bookworm's versions through the overlay
# recipes/lfs-debian/overlay.toml, from Debian's orig tarballs registered by content
# with `forge source add` (no network needed once they are downloaded).
#
#   FORGE_STORE=/var/tmp/lfs-a scripts/lfs-chapter5.sh [PKG|ch5|ch6...]
#   default: ch5 = binutils-pass1 gcc-pass1 linux-headers glibc libstdcxx
#   ch6 = the chapter-6 tools (make only with the trixie overlay book.toml: docs/lfs.md)
#   ch7 = the chroot stage and its tools (book.toml only; sources: docs/lfs.md)
#   base = all of recipes/base.toml: chapters 5-10 (book.toml; scripts/lfs-fetch.py first)
#
# Fetch the sources first (needs root for apt):
#   scripts/debian-sources.sh binutils gcc-12 gmp mpfr4 mpclib3 glibc linux=6.1.176-1
#   scripts/debian-sources.sh m4 ncurses bash coreutils diffutils file findutils gawk \
#       grep gzip patch=2.7.6-7 sed tar xz-utils                                  # for ch6
# OVERLAY (default recipes/lfs-debian/overlay.toml, bookworm's versions) picks the
# overlay: recipes/lfs-debian/book.toml builds the book's versions from trixie.
# FORGE (default target/debug/forge) names the binary. --keep-failed: a failed build's
# /build and $FORGE_OUT stay in $FORGE_STORE/failed/. --keep-going: a failed package
# does not stop the others that do not need it. One build at a time (-j 1), so
# each package's time is comparable (SBU). Not run in CI: it takes a long time.
set -eu

repo=$(cd "$(dirname "$0")/.." && pwd)
forge=${FORGE:-$repo/target/debug/forge}
overlay=${OVERLAY:-$repo/recipes/lfs-debian/overlay.toml}
: "${FORGE_STORE:?set FORGE_STORE to a dedicated store directory}"
export FORGE_STORE
[ -d "$repo/sources/debian" ] || { echo "$0: no sources/debian/: run scripts/debian-sources.sh (see above)" >&2; exit 1; }
[ $# -gt 0 ] || set -- ch5
ch5="binutils-pass1 gcc-pass1 linux-headers glibc libstdcxx"
ch6="m4 ncurses bash coreutils diffutils file findutils gawk grep gzip make patch sed tar xz binutils-pass2 gcc-pass2"
ch7="lfs-chroot-tools gettext bison perl python texinfo util-linux lfs-chroot"

"$forge" source add "$repo/sources/debian" | tail -n 1
# base.toml includes toolchain.toml; book.toml overrides chapter-8 packages too, so it
# applies to base.toml only.
file=$repo/recipes/base.toml
packages=
all=
for arg in "$@"; do
    case $arg in
        base) all=1; list= ;;
        ch5) list=$ch5 ;; ch6) list=$ch6 ;; ch7) list=$ch7 ;; *) list=$arg ;;
    esac
    for pkg in $list; do packages="$packages -p $pkg"; done
done
# base: the whole of recipes/base.toml (chapters 5-10), whatever else was named.
[ -z "$all" ] || packages=
start=$(date +%s)
# shellcheck disable=SC2086 # one -p per word
"$forge" build "$file" --overlay "$overlay" -j 1 --keep-going --keep-failed $packages
echo "wall time: $(( $(date +%s) - start )) s" >&2
"$forge" show "$file" --overlay "$overlay" 2>/dev/null | grep -v " to build$"
