#!/usr/bin/env python3
"""Print the record of an LFS store as the Markdown table docs/lfs.md keeps.

    scripts/lfs-record.py STORE [FILE] [OVERLAY]
    default FILE recipes/base.toml, OVERLAY recipes/lfs-debian/book.toml

One row per package realised in STORE under the recipes as they are now (`forge show`), with
its latest build there (`forge history`): version, wall time, SBU (the reference package's
time in this store), output size and out hash. FORGE names the binary (default
target/debug/forge).
"""
import json, os, subprocess, sys

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


def lines(cmd):
    out = subprocess.run(cmd, check=True, capture_output=True, text=True).stdout
    return [json.loads(l) for l in out.splitlines() if l.strip()]


def main():
    if len(sys.argv) < 2:
        sys.exit(__doc__)
    store = sys.argv[1]
    file = sys.argv[2] if len(sys.argv) > 2 else os.path.join(REPO, "recipes/base.toml")
    overlay = sys.argv[3] if len(sys.argv) > 3 else os.path.join(REPO, "recipes/lfs-debian/book.toml")
    forge = os.environ.get("FORGE", os.path.join(REPO, "target/debug/forge"))
    nodes = [n for n in lines([forge, "show", "--json", file, "--overlay", overlay, "--store", store]) if n.get("event") == "node"]
    print("| package | version | wall time | SBU | output | out hash |")
    print("|---|---|---|---|---|---|")
    for node in nodes:
        if not node.get("out"):
            continue
        history = lines([forge, "history", "--json", "-n", "50", node["name"], "--store", store])
        built = next((h for h in history if h["result"] == "built" and h.get("out_hash") == node["out"]), None)
        secs = f"{built['seconds']:.0f} s" if built else "-"
        sbu = f"{built['sbu']:.1f}" if built and built.get("sbu") is not None else "-"
        size = f"{built['out_size'] / 2**20:.1f} MiB" if built and built.get("out_size") is not None else "-"
        print(f"| {node['name']} | {node['version']} | {secs} | {sbu} | {size} | `{node['out']}` |")


if __name__ == "__main__":
    main()
