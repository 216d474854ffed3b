#!/bin/sh
# Download Debian source packages (orig tarballs, debian tarballs, .dsc) for the LFS
# proof builds, and print each file's sha256.
#
#   scripts/debian-sources.sh PKG[=VERSION]...   e.g. scripts/debian-sources.sh binutils gcc-12
#
# The LFS chapter-5 set (recipes/lfs-debian/overlay.toml pins these versions):
#   scripts/debian-sources.sh binutils gcc-12 gmp mpfr4 mpclib3 glibc linux=6.1.176-1
# (linux: the security suite's newest version may be listed but absent from the mirror;
# 6.1.176-1 is in bookworm main.)
#
# deb-src entries are derived at run time from the machine's own apt sources (the
# same mirrors, suites, components and keys, with Types: deb-src) into
# /etc/apt/sources.list.d/forge-deb-src.sources, unless deb-src is already enabled.
# Files land in sources/debian/ at the repository root (gitignored). Needs root (apt).
set -eu

[ $# -gt 0 ] || { echo "usage: $0 PKG..." >&2; exit 2; }
repo=$(cd "$(dirname "$0")/.." && pwd)
dest="$repo/sources/debian"
generated=/etc/apt/sources.list.d/forge-deb-src.sources

has_deb_src() {
    grep -qsE '^[[:space:]]*(Types:.*deb-src|deb-src[[:space:]])' \
        /etc/apt/sources.list /etc/apt/sources.list.d/*.list /etc/apt/sources.list.d/*.sources
}

# deb822 files: copy each stanza whose Types has `deb`, with Types: deb-src.
# One-line files: `deb URI SUITE COMP...` becomes `deb-src URI SUITE COMP...`.
derive_deb_src() {
    for f in /etc/apt/sources.list.d/*.sources; do
        [ -f "$f" ] || continue
        awk 'BEGIN { RS = ""; ORS = "\n\n" }
             /(^|\n)Types:[^\n]*deb([ \t\n]|$)/ { sub(/Types:[^\n]*/, "Types: deb-src"); print }' "$f"
    done
    for f in /etc/apt/sources.list /etc/apt/sources.list.d/*.list; do
        [ -f "$f" ] || continue
        sed 's/\[[^]]*\]//' "$f" | sed -n 's/^[[:space:]]*deb\([[:space:]]\)/Types: deb-src\nOneLine:\1/p' \
            | awk '/^OneLine:/ { n = split($0, w, /[ \t]+/); printf "URIs: %s\nSuites: %s\nComponents:", w[2], w[3];
                                  for (i = 4; i <= n; i++) printf " %s", w[i]; printf "\n\n"; next } { print }'
    done
}

if ! has_deb_src; then
    derive_deb_src > "$generated.tmp"
    if [ ! -s "$generated.tmp" ]; then
        rm -f "$generated.tmp"
        echo "$0: no 'deb' entries in the apt sources to derive deb-src entries from" >&2
        exit 1
    fi
    mv "$generated.tmp" "$generated"
    echo "enabled deb-src in $generated" >&2
fi

apt-get update -qq
mkdir -p "$dest"
cd "$dest"
for pkg in "$@"; do
    # _apt cannot write into root-owned dirs; the download is verified by apt anyway.
    apt-get source --download-only -qq "$pkg" >&2
done
# Every file apt fetched for these packages, with its sha256 (what recipes pin).
for pkg in "$@"; do
    pkg=${pkg%%=*}
    dsc=$(ls -t "$pkg"_*.dsc 2>/dev/null | head -n 1) || true
    [ -n "$dsc" ] || { echo "$0: no .dsc for $pkg in $dest" >&2; exit 1; }
    echo "# $pkg ($dsc)"
    for file in "$dsc" $(awk '/^Files:/ { on = 1; next } /^[^ ]/ { on = 0 } on { print $3 }' "$dsc"); do
        sha256sum "$file"
    done
done
