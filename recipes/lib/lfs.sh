# Shared build conventions of the LFS/BLFS recipe tree (docs/lfs-recipes.md).
#
# Every recipe under recipes/packages/ lists this file as a `file` source and
# starts its script with `. "$FORGE_SOURCES/lfs.sh"`. Because it is a source,
# editing it changes the derivation of every package that uses it.
#
# Sourcing it also registers lfs_finish to run when the script ends with
# status 0, so every output gets the same book-wide cleanup.

# configure scripts and the Makefiles they write use bash, not the seed's busybox
# /bin/sh (docs/toolchain.md, "lfs-host").
export CONFIG_SHELL=/bin/bash
export MAKEFLAGS="-j${FORGE_JOBS:-1}"
# Read by the ninja of chapter 8 (patched as the book suggests); meson builds pass -j too.
export NINJAJOBS="${FORGE_JOBS:-1}"
# BLFS's Xorg build environment (BLFS "Introduction to Xorg").
export XORG_PREFIX=/usr
export XORG_CONFIG="--prefix=$XORG_PREFIX --sysconfdir=/etc --localstatedir=/var --disable-static"

# lfs_unpack ARCHIVE: extract $FORGE_SOURCES/ARCHIVE under /build and cd into
# its single top-level directory (whatever it is called, so Debian's
# repacked orig tarballs work as well as upstream's). ARCHIVE may be a
# pattern matching exactly one source, e.g. "gcc-$FORGE_VERSION.tar.*" (quoted),
# so an overlay may substitute a tarball compressed differently.
# Debian wraps some upstream tarballs in its orig tarball (gcc-12:
# gcc-12-12.2.0/ holds gcc-12.2.0-dfsg.tar.xz beside newlib and gm2): when the
# top-level directory holds only tarballs, the one named like ARCHIVE (the
# same name up to the first '-') is extracted in its place.
# Then the patches an overlay added for it are applied (lfs_overlay_patches).
lfs_unpack() {
  local archive scratch inner
  archive=$(lfs_source "$1") || return 1
  scratch=$(lfs_scratch "$archive") || return 1
  lfs_untar "$archive" "$scratch" || return 1
  if ! find "$scratch"/*/ -mindepth 1 -maxdepth 1 ! -name '*.tar.*' | grep -q .; then
    inner=$(lfs_one "$scratch"/*/"${1%%-*}"-*.tar.*) || return 1
    scratch=$(lfs_scratch "$inner") || return 1
    lfs_untar "$inner" "$scratch" || return 1
  fi
  cd "$scratch"/*
  lfs_overlay_patches "${1%%-*}"
}

# lfs_overlay_patches STEM: apply every $FORGE_SOURCES/overlay-STEM-*.patch, in
# name order, with -p1 in the current directory. Overlays add patches under
# these names (e.g. Debian's dfsg patches, docs/lfs.md); the book's own
# patches are applied by the recipes that list them, by name.
lfs_overlay_patches() {
  local p
  for p in "$FORGE_SOURCES/overlay-$1-"*.patch; do
    [ -e "$p" ] || continue
    echo "lfs.sh: applying $(basename "$p")"
    patch -Np1 -i "$p"
  done
}

# lfs_scratch ARCHIVE: a new, empty directory to extract ARCHIVE in, named after
# it: /build/unpack-NAME. Never a random name (mktemp): the source directory ends
# up in debug info and __FILE__ strings, and a random one makes every build differ.
lfs_scratch() {
  local dir
  dir="/build/unpack-$(basename "$1")"
  mkdir "$dir" || { echo "lfs.sh: $dir exists: $1 unpacked twice?" >&2; return 1; }
  printf '%s\n' "$dir"
}

# lfs_source PATTERN: the one file of $FORGE_SOURCES matching PATTERN.
lfs_source() {
  # shellcheck disable=SC2086 # PATTERN is a glob on purpose
  lfs_one "$FORGE_SOURCES"/$1
}

# lfs_one FILE...: print the single existing FILE, fail unless exactly one.
lfs_one() {
  if [ $# -ne 1 ] || [ ! -e "$1" ]; then
    echo "lfs.sh: expected exactly one match, found: $*" >&2
    return 1
  fi
  printf '%s\n' "$1"
}

# lfs_untar ARCHIVE DIR: extract into DIR, which must then hold one directory.
# --no-same-owner: the sandbox maps only uid 0, so the tarball's owners cannot be kept.
lfs_untar() {
  tar --no-same-owner -xf "$1" -C "$2"
  set -- "$2"/*
  if [ $# -ne 1 ] || [ ! -d "$1" ]; then
    echo "lfs_unpack: expected one top-level directory in the archive, found: $*" >&2
    return 1
  fi
}

# lfs_config_guess: the build triplet, from the package's own config.guess.
lfs_config_guess() {
  local guess
  for guess in build-aux/config.guess config.guess support/config.guess scripts/config.guess ../config.guess; do
    if [ -f "$guess" ]; then sh "$guess"; return; fi
  done
  echo "lfs_config_guess: no config.guess in $PWD" >&2
  return 1
}

# lfs_install: `make DESTDIR=$FORGE_OUT install` plus any extra make arguments.
lfs_install() {
  make DESTDIR="$FORGE_OUT" "$@" install
}

# lfs_gnu ARGS...: the common autotools case of chapters 7, 8 and BLFS.
lfs_gnu() {
  ./configure --prefix=/usr "$@"
  make
  lfs_install
}

# lfs_cross_gnu ARGS...: the same for chapter 6: cross-compiled for $LFS_TGT
# against the sysroot staged at $LFS.
lfs_cross_gnu() {
  ./configure --prefix=/usr --host="$LFS_TGT" --build="$(lfs_config_guess)" "$@"
  make
  lfs_install
}

# lfs_meson ARGS...: a meson project, built in ./build.
lfs_meson() {
  mkdir -p build
  (cd build && meson setup --prefix=/usr --buildtype=release "$@" .. && ninja -j"${FORGE_JOBS:-1}" && DESTDIR="$FORGE_OUT" ninja install)
}

# lfs_pip NAME: the book's way to build and install a Python module from source.
lfs_pip() {
  pip3 wheel -w dist --no-cache-dir --no-build-isolation --no-deps "$PWD"
  pip3 install --no-index --no-user --root="$FORGE_OUT" --find-links dist "$1"
}

# lfs_gcc_prereqs: unpack GMP, MPFR and MPC into the GCC source tree as gmp/,
# mpfr/ and mpc/ (chapters 5 and 6). Each is the one source named NAME-VERSION.tar.*
# whatever its version, so an overlay can substitute other releases (and add
# overlay-gmp-*.patch and the like).
lfs_gcc_prereqs() {
  local dep archive scratch
  for dep in gmp mpfr mpc; do
    archive=$(lfs_source "$dep-[0-9]*.tar.*") || return 1
    scratch=$(lfs_scratch "$archive") || return 1
    lfs_untar "$archive" "$scratch" || return 1
    mv "$scratch"/* "$dep"
    (cd "$dep" && lfs_overlay_patches "$dep")
  done
}

# lfs_finish: the cleanup every output gets.
# - /bin, /sbin and /lib are symlinks into /usr (lfs-layout), so a package
#   must not ship them as directories: move such files under usr/.
# - The info directory index (usr/share/info/dir, and tools/share/info/dir of
#   the cross tools) and perllocal.pod are rewritten by every package
#   that installs info pages or Perl modules; kept, they would make any two
#   such packages collide in a sandbox root. The system builds its own index.
# - Libtool archives are removed (LFS 8.84 "Cleaning Up" does it for all).
lfs_finish() {
  local dir
  for dir in bin sbin lib; do
    if [ -d "$FORGE_OUT/$dir" ] && [ ! -L "$FORGE_OUT/$dir" ]; then
      mkdir -p "$FORGE_OUT/usr/$dir"
      cp -a "$FORGE_OUT/$dir/." "$FORGE_OUT/usr/$dir/"
      rm -rf "${FORGE_OUT:?}/$dir"
    fi
  done
  find "$FORGE_OUT" -path "*/share/info/dir" -type f -delete
  find "$FORGE_OUT" \( -name '*.la' -o -name perllocal.pod \) -type f -delete
}

lfs_on_exit() {
  local status=$?
  if [ "$status" -eq 0 ]; then lfs_finish; fi
}
trap lfs_on_exit EXIT
