#!/bin/sh
# Download Debian source packages (orig tarballs, debian tarballs, .dsc) for the LFS
# builds, and print each file's sha256.
#
#   scripts/debian-sources.sh [--suite SUITE]... [--orig-only] [--dest DIR] PKG[=VERSION]...
#
#   scripts/debian-sources.sh binutils gcc-12                 # bookworm, the machine's own
#   scripts/debian-sources.sh --suite trixie binutils=2.44-3  # LFS 12.3's versions (docs/lfs.md)
#
# deb-src entries are derived at run time from the machine's own apt sources (the
# same mirrors, components and keys, with Types: deb-src) into
# /etc/apt/sources.list.d/forge-deb-src.sources, unless deb-src is already enabled.
# `--suite trixie` adds deb-src entries for that release (trixie, trixie-updates,
# trixie-security on the same mirrors) in forge-deb-src-trixie.sources: source
# packages only, so the machine's installed packages never move to trixie.
#
# The mirror reachable here is partial: a `.dsc` or a Debian patch tarball may 404
# while the orig tarball downloads. When `apt-get source` fails, or with
# `--orig-only`, each `*.orig*.tar.*` file is fetched by its pool path with
# apt-helper, which checks it against the SHA256 of the signed Sources index (the
# same check apt-get source makes): nothing is trusted that the archive's signature
# does not cover.
#
# Files land in DIR (default sources/debian/ at the repository root, gitignored).
# Needs root (apt).
set -eu

usage() { echo "usage: $0 [--suite SUITE]... [--orig-only] [--dest DIR] PKG[=VERSION]..." >&2; exit 2; }
repo=$(cd "$(dirname "$0")/.." && pwd)
dest="$repo/sources/debian"
suites=
orig_only=
while [ $# -gt 0 ]; do
    case $1 in
        --suite) [ $# -ge 2 ] || usage; suites="$suites $2"; shift 2 ;;
        --orig-only) orig_only=1; shift ;;
        --dest) [ $# -ge 2 ] || usage; dest=$2; shift 2 ;;
        --help|-h) sed -n '2,/^set -eu/p' "$0" | sed '$d; s/^# \{0,1\}//'; exit 0 ;;
        -*) usage ;;
        *) break ;;
    esac
done
[ $# -gt 0 ] || usage
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
        case $f in */forge-deb-src*) continue ;; esac
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

# The machine's release (bookworm), to be replaced by SUITE in the derived entries.
own=$(. /etc/os-release && echo "${VERSION_CODENAME:-}")

write_sources() { # FILE: from stdin, replacing FILE only when non-empty
    cat > "$1.tmp"
    if [ ! -s "$1.tmp" ]; then
        rm -f "$1.tmp"
        echo "$0: no 'deb' entries in the apt sources to derive deb-src entries from" >&2
        exit 1
    fi
    mv "$1.tmp" "$1"
    echo "enabled deb-src in $1" >&2
}

if ! has_deb_src; then
    derive_deb_src | write_sources "$generated"
fi
for suite in $suites; do
    [ "$suite" = "$own" ] && continue
    file=/etc/apt/sources.list.d/forge-deb-src-$suite.sources
    [ -f "$file" ] && continue
    [ -n "$own" ] || { echo "$0: cannot tell this machine's release (/etc/os-release) to derive $suite from" >&2; exit 1; }
    # Only Debian's own mirrors (not third-party repositories), with the release renamed.
    # sid (unstable) has no -updates and no -security suites.
    derive_deb_src | awk -v own="$own" -v new="$suite" 'BEGIN { RS = ""; ORS = "\n\n" }
        /(^|\n)Suites:/ && /debian/ {
            gsub(own, new)
            if (new == "sid" || new == "unstable") {
                if ($0 ~ new "-security") next
                gsub(" " new "-updates", "")
            }
            print
        }' | write_sources "$file"
done

apt-get update -qq
mkdir -p "$dest"
cd "$dest"

# What the signed index lists for PKG[=VER]: `'URI' NAME SIZE SHA256:HEX` lines. Asked from
# an empty directory: apt leaves out the files already in the current one.
empty=$(mktemp -d)
trap 'rmdir "$empty"' EXIT
index_uris() {
    (cd "$empty" && apt-get source --print-uris -qq "$1")
}

# Fetch the orig tarball(s) of PKG[=VER] by pool path, verified against the signed index;
# fails unless every one is present with the index's SHA256.
fetch_orig() {
    uris=$(index_uris "$1") || return 1
    found=0
    # Lines: 'URI' NAME SIZE SHA256:HEX
    while read -r uri name size hash; do
        case $name in *.asc) continue ;; *.orig.tar.*|*.orig-*.tar.*) ;; *) continue ;; esac
        want=${hash#SHA256:}
        if [ ! -f "$name" ] || [ "$(sha256sum "$name" | cut -d' ' -f1)" != "$want" ]; then
            rm -f "$name"
            uri=$(echo "$uri" | tr -d "'")
            /usr/lib/apt/apt-helper download-file "$uri" "$name" "SHA256:$want" >&2 || return 1
        fi
        [ "$(sha256sum "$name" | cut -d' ' -f1)" = "$want" ] || { echo "$0: $name does not match the index" >&2; return 1; }
        found=$((found + 1))
    done <<URIS
$uris
URIS
    [ "$found" -gt 0 ]
}

for pkg in "$@"; do
    if [ -z "$orig_only" ]; then
        # _apt cannot write into root-owned dirs; the download is verified by apt anyway.
        if apt-get source --download-only -qq "$pkg" >&2; then
            continue
        fi
        echo "$0: apt-get source $pkg failed (the mirror lacks a file?): fetching its orig tarball by pool path" >&2
    fi
    fetch_orig "$pkg" || { echo "$0: no orig tarball of $pkg could be fetched" >&2; exit 1; }
done

# Every file fetched for these packages, with its sha256 (what recipes pin): the .dsc and
# the files it lists when all of them came, else the orig tarballs.
for pkg in "$@"; do
    uris=$(index_uris "$pkg")
    dsc=$(echo "$uris" | awk '$2 ~ /\.dsc$/ { print $2 }')
    complete=
    if [ -n "$dsc" ] && [ -f "$dsc" ] && [ -z "$orig_only" ]; then
        listed=$(awk '/^Files:/ { on = 1; next } /^[^ ]/ { on = 0 } on { print $3 }' "$dsc")
        complete=1
        for file in $listed; do
            [ -f "$file" ] || complete=
        done
    fi
    if [ -n "$complete" ]; then
        echo "# ${pkg%%=*} ($dsc)"
        for file in "$dsc" $listed; do
            sha256sum "$file"
        done
    else
        echo "# ${pkg%%=*} (orig tarballs only, verified against the signed Sources index)"
        for name in $(echo "$uris" | awk '$2 ~ /\.orig(-[^.]*)?\.tar\.[a-z0-9]*$/ { print $2 }'); do
            sha256sum "$name"
        done
    fi
done
