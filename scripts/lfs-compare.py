#!/usr/bin/env python3
"""Compare the LFS proof build's out hashes between two stores (docs/lfs.md).

    scripts/lfs-compare.py /var/tmp/lfs-a /var/tmp/lfs-c [PKG...]

Runs `forge show --json` on recipes/base.toml with the overlay recipes/lfs-debian/book.toml
(FILE and OVERLAY override them) against each store and prints a Markdown table: package, version, drv hash, out hash in each store, and
whether they match. Packages realised in neither store are left out. FORGE names the binary
(default target/debug/forge). Exits 1 if any package realised in both stores differs.
"""
import json
import os
import subprocess
import sys

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


def show(forge, store):
    file = os.environ.get("FILE", os.path.join(REPO, "recipes/base.toml"))
    overlay = os.environ.get("OVERLAY", os.path.join(REPO, "recipes/lfs-debian/book.toml"))
    cmd = [forge, "show", "--json", file, "--overlay", overlay, "--store", store]
    out = subprocess.run(cmd, check=True, capture_output=True, text=True).stdout
    nodes = [json.loads(line) for line in out.splitlines()]
    return {n["name"]: n for n in nodes if n.get("event") == "node"}


def main():
    if len(sys.argv) < 3:
        sys.exit(__doc__)
    forge = os.environ.get("FORGE", os.path.join(REPO, "target/debug/forge"))
    a_store, b_store, wanted = sys.argv[1], sys.argv[2], sys.argv[3:]
    a, b = show(forge, a_store), show(forge, b_store)
    print(f"| package | version | drv hash | out hash ({a_store}) | out hash ({b_store}) | same |")
    print("|---|---|---|---|---|---|")
    differ = 0
    for name, node in a.items():
        other = b.get(name, {})
        if wanted and name not in wanted or not (node["out"] or other.get("out")):
            continue
        drv_note = "" if other.get("drv") == node["drv"] else " (drv differs!)"
        if node["out"] and other.get("out"):
            same = "yes" if node["out"] == other["out"] else "**no**"
            differ += node["out"] != other["out"]
        else:
            same = "(one store only)"
        print(f"| {name} | {node['version']} | `{node['drv'][:12]}…`{drv_note} | `{node['out'] or '-'}` "
              f"| `{other.get('out') or '-'}` | {same} |")
    sys.exit(1 if differ else 0)


if __name__ == "__main__":
    main()
