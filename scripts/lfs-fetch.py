#!/usr/bin/env python3
"""Fetch every Debian orig tarball the LFS build at the book's versions uses (docs/lfs.md).

Reads the survey data/lfs-12.3-debian-sources.tsv: for each package the Debian
source package and version to take (the row's own, or the "usable here" fallback where the
mirror does not serve it), and the suite that has it. Calls scripts/debian-sources.sh
--orig-only once per suite, which verifies each file against the signed Sources index.
Files already in sources/debian/ are skipped. Rows with no usable source (category D) are
listed, not fetched: docs/lfs.md says what replaces each.

usage: scripts/lfs-fetch.py [--tsv FILE] [--dry-run] [PACKAGE...]
"""
import argparse, os, subprocess, sys

from lfs_survey import DATA, debian_source, table, upstream_version

here = os.path.dirname(os.path.abspath(__file__))
repo = os.path.dirname(here)

def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--tsv", default=os.path.join(DATA, "lfs-12.3-debian-sources.tsv"))
    ap.add_argument("--dry-run", action="store_true")
    ap.add_argument("packages", nargs="*")
    a = ap.parse_args()
    rows = table(a.tsv)
    by_suite = {}
    dest = os.path.join(repo, "sources/debian")
    for row in rows:
        if a.packages and row["package"] not in a.packages:
            continue
        c = debian_source(row)
        if c is None:
            print(f"# {row['package']}: no Debian source here ({row['note']})")
            continue
        suite, pkg, version, _ = c
        upstream = upstream_version(version)
        have = os.listdir(dest) if os.path.isdir(dest) else []
        if any(f.startswith(f"{pkg}_{upstream}.orig.tar.") for f in have):
            continue
        # The index's suite family: bookworm-backports and -updates are bookworm's mirror
        # entries, trixie-security trixie's.
        family = "bookworm" if suite.startswith("bookworm") else suite.split("-")[0]
        by_suite.setdefault(family, []).append(f"{pkg}={version}")
    commands = []
    for suite, specs in sorted(by_suite.items()):
        cmd = ["sh", os.path.join(here, "debian-sources.sh"), "--orig-only"]
        if suite != "bookworm":
            cmd += ["--suite", suite]
        commands.append(cmd + specs)
    # Replacements for rows with no Debian source (docs/lfs.md): GNU bc for bc, netbase for
    # iana-etc (a native package: its one tarball, with its .dsc).
    for pkg, version, file, orig_only in (("bc", "1.07.1-4", "bc_1.07.1.orig.tar.gz", True), ("netbase", "6.5", "netbase_6.5.tar.xz", False)):
        if (not a.packages or pkg in a.packages) and not os.path.exists(os.path.join(dest, file)):
            commands.append(["sh", os.path.join(here, "debian-sources.sh"), "--suite", "trixie"] + (["--orig-only"] if orig_only else []) + [f"{pkg}={version}"])
    status = 0
    for cmd in commands:
        print(" ".join(cmd), flush=True)
        if not a.dry_run:
            status |= subprocess.call(cmd)
    sys.exit(status)

main()
