#!/usr/bin/env bash
# The reliability soak (docs/reliability.md): kill -9 at random instants during builds, pushes
# and substitutions; concurrent builders with gc between them; every hostile-cache variant;
# every sandbox probe. Prints a table of figures; exit 1 if any promise was broken.
#
#   scripts/soak.sh                      # 30 kills over 3 rounds (about 10 minutes)
#   scripts/soak.sh --kills 10 --rounds 2  # the short run CI does
#   scripts/soak.sh --kills 300 --rounds 10 --seed 42 -v --keep
#
# Uses the debug binary the tests build (set FORGE_SOAK_PROFILE=release for the release one).
# Needs what the tests need (.ci/run installs it): the busybox seed's .deb via apt.
set -euo pipefail
cd "$(dirname "$0")/.."
profile=${FORGE_SOAK_PROFILE:-debug}
flag=; [ "$profile" = release ] && flag=--release
cargo build --locked -q $flag --bin forge --example soak
exec "target/$profile/examples/soak" --forge "target/$profile/forge" "$@"
