#!/usr/bin/env python3
"""Print the [[override]] entries chapter 8 needs in recipes/lfs-debian/book.toml.

For each chapter-8 recipe, its package's row in the survey
(data/lfs-12.3-debian-sources.tsv, matched through the book's table by the
recipe's tarball name) says what Debian has here. A byte-identical tarball needs no entry
(`forge source add sources/debian` satisfies the recipe's md5). Otherwise the entry names
Debian's tarball (pinned by the sha256 of the file in sources/debian/, which
scripts/debian-sources.sh verified against the signed index) under the name the recipe's
`lfs_unpack` pattern expects, with `version` where Debian has another one, and the Debian
fixes a repacked tarball needs (the patches chapters 5-7 use for the same tarball).

usage: scripts/lfs-book-overrides.py [RECIPE...]   (default: recipes/packages/ch8/*.toml)
"""
import glob, hashlib, os, re, sys, tomllib

from lfs_survey import DATA, debian_source, table, upstream_version

here = os.path.dirname(os.path.abspath(__file__))
repo = os.path.dirname(here)
overlay_dir = os.path.join(repo, "recipes/lfs-debian")
debian = os.path.join(repo, "sources/debian")

# Debian fixes of repacked tarballs (see their chapter 5-7 entries in book.toml).
FIXES = {
    "gcc": ('patches = [{ file = "patches/trixie/overlay-gcc-gfdl-build.patch" }]', 'env = { MAKEINFO = "true" }'),
    "gmp": ('patches = [{ file = "patches/trixie/overlay-gmp-no-doc.patch" }]',),
    "glibc": ('patches = [{ file = "patches/trixie/overlay-glibc-local-remove-manual.patch" }]', 'env = { MAKEINFO = ":" }'),
    "make": ('patches = [{ file = "patches/trixie/overlay-make-no-doc.patch" }]',),
    "gawk": ('patches = [{ file = "patches/trixie/overlay-gawk-no-doc.patch" }]',),
    "bison": ('patches = [{ file = "patches/trixie/overlay-bison-no-doc.patch" }]',),
}

def sha256(path):
    h = hashlib.sha256()
    with open(path, "rb") as f:
        for block in iter(lambda: f.read(1 << 20), b""):
            h.update(block)
    return h.hexdigest()

def main():
    book = {os.path.basename(r["url"]): r["package"] for r in table(os.path.join(DATA, "lfs-12.3-packages.tsv"))}
    survey = {r["package"]: r for r in table(os.path.join(DATA, "lfs-12.3-debian-sources.tsv"))}
    files = sys.argv[1:] or sorted(glob.glob(os.path.join(repo, "recipes/packages/ch8/*.toml")))
    have = os.listdir(debian)
    for path in files:
        text = open(path).read()
        recipe = tomllib.loads(text)
        name, book_version = recipe["package"]["name"], recipe["package"]["version"]
        sources = recipe.get("source", [])
        url = sources[0].get("url", "")
        # Python modules' URLs differ from the book's table: their recipe names are the rows'.
        package = book.get(os.path.basename(url)) or (name if name in survey else None)
        row = survey.get(package or "")
        if not row:
            continue
        source = debian_source(row)
        if source is None:
            print(f"# {name}: no usable Debian source ({row['note']})\n")
            continue
        _, src, deb_version, fallback = source
        if row["byte_identical"] == "yes" and not fallback:
            continue
        upstream = upstream_version(deb_version)
        orig = next((f for f in have if f.startswith(f"{src}_{upstream}.orig.tar.")), None)
        if orig is None:
            print(f"# {name}: {src}_{upstream}.orig.tar.* is not in sources/debian: run scripts/lfs-fetch.py\n")
            continue
        # The version the tarball holds: Debian's upstream version without its repack tags.
        version = re.sub(r"(\+dfsg.*|\.dfsg\+really)", "", upstream).replace("+", "-")
        if "really" in upstream:
            version = upstream.split("really")[-1]
        unpack = re.search(r'lfs_unpack "([^"$]*)\$FORGE_VERSION([^"$]*)\.tar\.\*"', text)
        if not unpack:
            print(f"# {name}: its script does not unpack by $FORGE_VERSION: edit it first\n")
            continue
        ext = orig.split(".orig.")[1]
        filename = f"{unpack.group(1)}{version}{unpack.group(2)}.{ext}"
        same = version == book_version
        lines = ["[[override]]", f'package = "{name}"']
        if not same:
            lines.append(f'version = "{version}"')
        what = "the book's version, other bytes (repacked by Debian)" if same else f"ANOTHER VERSION (the book has {book_version})"
        lines.append("sources = [")
        lines.append(f"  # {orig} ({src} {deb_version}): {what}")
        new_url = url.replace(book_version, version)
        lines.append(f'  {{ url = "{new_url}", name = "{filename}", sha256 = "{sha256(os.path.join(debian, orig))}" }},')
        for s in sources[1:]:
            if "file" in s:
                rel = os.path.relpath(os.path.normpath(os.path.join(os.path.dirname(path), s["file"])), overlay_dir)
                lines.append(f'  {{ file = "{rel}" }},')
        lines.append("]")
        lines += FIXES.get(package, ())
        print("\n".join(lines) + "\n")

main()
