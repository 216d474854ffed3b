#!/usr/bin/env python3
"""Write the LFS book's SBU figure of each package into its recipe's `[requirements] sbu`.

The figures come from the book (data/lfs-12.3-packages.tsv, column `sbu`, e.g.
"tmp-sbu=0.2 SBU;fin-sbu=1.4 SBU"). A recipe is matched to its row by its first source's
file name (the book's URL); which of the row's figures applies follows the chapter the recipe
lives in (ch5 pass 1, ch6 pass 2 and ch6/ch7 temporary tools, ch8 final, ch10 kernel).
"less than 0.1 SBU" becomes 0.05; a range takes its "typically" figure, else its low end.
The scheduler and `forge status` use the hint until this machine has built the package
(docs/observability.md); it is not part of the derivation.

usage: scripts/lfs-sbu.py [--tsv FILE] [--check] RECIPE_DIR...
"""
import argparse, os, re, sys

from lfs_survey import DATA, table

def figure(text):
    text = text.strip()
    m = re.search(r"typically about ([0-9.]+)", text)
    if m:
        return float(m.group(1))
    if text.startswith("less than 0.1"):
        return 0.05
    m = re.match(r"([0-9.]+)", text)
    return float(m.group(1)) if m else None

def key_for(chapter, name):
    if chapter == "ch5":
        return {"binutils-pass1": "tmpp1", "gcc-pass1": "tmpp1", "linux-headers": "headers-tmp"}.get(name, "tmp")
    if chapter == "ch6":
        return "tmpp2" if name.endswith("-pass2") else "tmp"
    if chapter == "ch7":
        return "tmp"
    if chapter == "ch10":
        return "knl"
    return "fin"

def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--tsv", default=os.path.join(DATA, "lfs-12.3-packages.tsv"))
    ap.add_argument("--check", action="store_true", help="only report recipes whose figure differs")
    ap.add_argument("dirs", nargs="+")
    a = ap.parse_args()
    by_file = {}
    for row in table(a.tsv):
        figures = {}
        for part in filter(None, row.get("sbu", "").split(";")):
            k, _, v = part.partition("=")
            figures[k.removesuffix("-sbu")] = figure(v)
        by_file[os.path.basename(row["url"])] = figures
    stale = 0
    for d in a.dirs:
        chapter = os.path.basename(os.path.normpath(d))
        for entry in sorted(os.listdir(d)):
            if not entry.endswith(".toml"):
                continue
            path = os.path.join(d, entry)
            text = open(path).read()
            url = re.search(r'^url = "([^"]+)"', text, re.M)
            name = re.search(r'^name = "([^"]+)"', text, re.M)
            if not url or not name:
                continue
            figures = by_file.get(os.path.basename(url.group(1)), {})
            sbu = figures.get(key_for(chapter, name.group(1)))
            if sbu is None and len(figures) == 1:
                # The book lists a package once (e.g. tcl, expect: "tmp-sbu" for chapter 8).
                sbu = next(iter(figures.values()))
            if sbu is None:
                continue
            line = f"sbu = {sbu:g}"
            if re.search(r"^sbu = .*$", text, re.M):
                new = re.sub(r"^sbu = .*$", line, text, count=1, flags=re.M)
            elif re.search(r"^\[requirements\]$", text, re.M):
                new = re.sub(r"^\[requirements\]$", "[requirements]\n" + line, text, count=1, flags=re.M)
            else:
                new = re.sub(r"^\[build\]$", "[requirements]\n" + line + "\n\n[build]", text, count=1, flags=re.M)
            if new != text:
                stale += 1
                print(f"{path}: {line}")
                if not a.check:
                    open(path, "w").write(new)
    sys.exit(1 if a.check and stale else 0)

main()
