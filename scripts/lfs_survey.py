"""The LFS data tables (data/README.md), read the same way by every scripts/lfs-*.py.

`table(path)`: a TSV file as a list of dicts by column name. `debian_source(row)`: where a
package's bytes come from here, from a row of data/lfs-12.3-debian-sources.tsv: the row's own
source package and version, or the "usable here" fallback where the mirror does not serve
it; None where nothing usable exists. scripts/lfs-fetch.py fetches what this names and
scripts/lfs-book-overrides.py pins it, so the two cannot disagree.
"""
import os
import re

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
DATA = os.path.join(REPO, "data")


def table(path):
    with open(path) as f:
        header = f.readline().rstrip("\n").split("\t")
        return [dict(zip(header, line.rstrip("\n").split("\t"))) for line in f]


def debian_source(row):
    """(suite, source package, Debian version, whether it is a fallback), or None."""
    if "usable here: nothing" in row["here_if_different"]:
        return None
    fallback = re.search(r"usable here: (\S+) (\S+) \((\S+)\)", row["here_if_different"])
    if fallback:
        pkg, version, suite = fallback.groups()
        return suite, pkg, version, True
    if row["debian_src"] in ("", "-"):
        return None
    suites = row["suite"].split(",")
    suite = next((s for s in ("trixie", "trixie-security") if s in suites), None)
    if suite is None:
        suite = next((s for s in suites if s.startswith("bookworm")), suites[0])
    return suite, row["debian_src"], row["debian_version"], False


def upstream_version(debian_version):
    """A Debian version without its epoch and revision: 1:2.5.2-3 -> 2.5.2."""
    return debian_version.split(":")[-1].rsplit("-", 1)[0]
