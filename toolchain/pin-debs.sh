#!/bin/sh
# Print `[[source]]` stanzas pinning Debian packages to the version apt would
# install now and the SHA256 published for it in the signed archive index.
#
#   toolchain/pin-debs.sh PKG...             just these packages
#   toolchain/pin-debs.sh --closure PKG...   these and their Depends/Pre-Depends closure
#
# Run `apt-get update` first. See docs/toolchain.md for how the output is used.
set -eu

closure=false
if [ "${1:-}" = --closure ]; then
    closure=true
    shift
fi
[ $# -gt 0 ] || { echo "usage: $0 [--closure] PKG..." >&2; exit 2; }

packages() {
    if $closure; then
        # Virtual packages (shown as <name>) have no .deb of their own: drop them.
        apt-cache depends --recurse --no-recommends --no-suggests --no-conflicts \
            --no-breaks --no-replaces --no-enhances "$@" \
            | grep -v '^ ' | grep -v '^<' | sort -u
    else
        printf '%s\n' "$@"
    fi
}

for pkg in $(packages "$@"); do
    version=$(apt-cache policy "$pkg" | awk '/Candidate:/ { print $2 }')
    if [ -z "$version" ] || [ "$version" = "(none)" ]; then
        echo "$0: no installable version of $pkg (run apt-get update?)" >&2
        exit 1
    fi
    sha256=$(apt-cache show "$pkg=$version" | awk '/^SHA256:/ { print $2; exit }')
    if [ -z "$sha256" ]; then
        echo "$0: the index has no SHA256 for $pkg=$version" >&2
        exit 1
    fi
    arch=$(apt-cache show "$pkg=$version" | awk '/^Architecture:/ { print $2; exit }')
    printf '[[source]]\ndeb = "%s=%s"\n' "$pkg" "$version"
    if [ "$arch" != amd64 ]; then
        # forge names a deb source {package}_{version}_amd64.deb unless told otherwise.
        printf 'name = "%s_%s_%s.deb"\n' "$pkg" "$(echo "$version" | sed 's/:/%3a/')" "$arch"
    fi
    printf 'sha256 = "%s"\n\n' "$sha256"
done
