#!/bin/sh
# Generate a report on libtally and wordfreq, as installed in the build root:
#   report.sh CORPUS OUTDIR
# Writes OUTDIR/report.txt and OUTDIR/report.html. Everything in them is derived
# from the inputs (no dates, no paths of the build), so rebuilding reproduces
# them byte for byte.
set -eu
corpus=$1
outdir=$2
lib=/usr/lib/libtally.so.1
header=/usr/include/tally.h

mkdir -p "$outdir"
txt=$outdir/report.txt

# Functions the header declares: the identifier before "(" on prototype lines.
declared() {
    sed -n -e '/^typedef/d' -e 's/^[a-z].*[ *]\(tally_[a-z_]*\)(.*/\1/p' "$header" | sort -u
}
# Functions the shared library exports.
exported() {
    nm -D --defined-only "$lib" | awk '$2 == "T" { print $3 }' | sort -u
}

section() {
    printf '\n== %s ==\n' "$1"
}

{
    printf 'tally report\n'
    section "libtally"
    printf 'version (header): %s\n' "$(sed -n 's/^#define TALLY_VERSION "\(.*\)"/\1/p' "$header")"
    printf 'soname: %s\n' "$(readelf -d "$lib" | sed -n 's/.*(SONAME).*\[\(.*\)\]/\1/p')"
    printf 'needs: %s\n' "$(readelf -d "$lib" | sed -n 's/.*(NEEDED).*\[\(.*\)\]/\1/p' | paste -s -d ' ')"
    printf 'static archive members: %s\n' "$(ar t /usr/lib/libtally.a | paste -s -d ' ')"
    printf 'pkg-config: %s\n' "$(sed -n 's/^Libs: //p' /usr/lib/pkgconfig/tally.pc)"
    section "exported functions"
    exported
    section "header vs library"
    missing=$(declared | grep -vxF "$(exported)" || true)
    extra=$(exported | grep -vxF "$(declared)" || true)
    printf 'declared but not exported: %s\n' "${missing:-none}"
    printf 'exported but not declared: %s\n' "${extra:-none}"
    section "wordfreq $(basename "$corpus")"
    wordfreq -n 12 "$corpus"
    section "wordfreq links"
    readelf -d /usr/bin/wordfreq | sed -n 's/.*(NEEDED).*\[\(.*\)\]/\1/p'
} > "$txt"

# The same content as HTML, escaped.
{
    printf '<!DOCTYPE html>\n<html><head><meta charset="utf-8"><title>tally report</title></head>\n'
    printf '<body><pre>\n'
    sed -e 's/&/\&amp;/g' -e 's/</\&lt;/g' -e 's/>/\&gt;/g' \
        -e 's|^== \(.*\) ==$|</pre><h2>\1</h2><pre>|' "$txt"
    printf '</pre></body></html>\n'
} > "$outdir/report.html"

# Fail the build if the library and its header disagree.
test -z "$missing" && test -z "$extra"
