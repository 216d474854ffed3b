//! Recipes and sets: parse TOML (format v1, see docs/recipes.md), validate, expand sets.
//!
//! Owner of the recipe/set file format. Everything here is pure data plus the
//! loader; name resolution across files happens in [`crate::graph`].

use std::collections::BTreeMap;
use std::fmt;
use std::path::PathBuf;

use crate::hash::Checksum;

/// Where something was written: file, 1-based line and column.
#[derive(Clone, Debug, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct Location {
    pub file: PathBuf,
    pub line: usize,
    pub column: usize,
}

impl fmt::Display for Location {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}:{}:{}", self.file.display(), self.line, self.column)
    }
}

/// One package, as written in one recipe file.
#[derive(Clone, Debug)]
pub struct Recipe {
    /// Absolute, normalized path of the recipe file.
    pub file: PathBuf,
    pub name: String,
    /// Where `[package] name` is written.
    pub name_at: Location,
    pub version: String,
    pub description: Option<String>,
    pub sources: Vec<Source>,
    /// Present in the sandbox while building this package.
    pub build_deps: Vec<DepRef>,
    /// Present while building this package and for everyone who depends on it.
    pub runtime_deps: Vec<DepRef>,
    /// The recipe's `[env]`, verbatim (defaults are applied by the derivation).
    pub env: BTreeMap<String, String>,
    pub action: Action,
    pub requirements: Requirements,
}

/// A dependency written by name, with the place it was written (for errors).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct DepRef {
    pub name: String,
    pub at: Location,
}

/// One `[[source]]` entry.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Source {
    pub kind: SourceKind,
    /// The name it gets in `$FORGE_SOURCES` (key `name`, else derived from url/file/deb).
    pub filename: String,
    /// The pinned checksum (`sha256`, `blake3` or `md5`). `None` only for `file`
    /// sources, whose BLAKE3 tree hash is computed from the file when planning.
    pub checksum: Option<Checksum>,
    pub at: Location,
}

#[derive(Clone, Debug, PartialEq, Eq)]
pub enum SourceKind {
    /// `url = "..."`, optional `mirrors = [...]` tried in order after it.
    Url { url: String, mirrors: Vec<String> },
    /// `file = "relative/path"`: a file or directory beside the recipe (absolute path here).
    File { path: PathBuf },
    /// `deb = "package=version"`: a Debian binary package fetched with `apt-get download`.
    Deb { package: String, version: String },
}

/// What the recipe does to produce its output.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Action {
    /// `[build]`: run `shell... script` in the sandbox.
    Build {
        script: String,
        /// argv prefix; the script is appended as the last argument.
        /// Default `["/bin/sh", "-e", "-c"]`.
        shell: Vec<String>,
    },
    /// `[import]`: the output is the sources themselves, unpacked (`unpack = true`:
    /// `.deb` data, `.tar[.gz|.xz]` contents) or copied to the output root.
    Import { unpack: bool },
}

/// `[requirements]`: scheduling hints and limits; never part of any hash.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Requirements {
    /// Bytes of memory the build is expected to need at peak.
    pub memory: Option<u64>,
    /// Bytes of free disk the build needs in the store's file system.
    pub disk: Option<u64>,
    /// Wall-clock limit in seconds; exceeding it fails the build.
    pub timeout: Option<u64>,
}

/// What the user named on the command line, after loading.
#[derive(Clone, Debug)]
pub struct Target {
    pub file: PathBuf,
    /// Set name, or the package name for a recipe file.
    pub name: String,
    pub is_set: bool,
    /// Packages this target builds (for a set: every recipe in its include closure).
    pub packages: Vec<String>,
}

/// Every recipe reachable from the files given, plus the targets themselves.
#[derive(Clone, Debug, Default)]
pub struct Loaded {
    pub targets: Vec<Target>,
    /// Each recipe file once (a file included twice is loaded once), in load order.
    pub recipes: Vec<Recipe>,
    /// Non-fatal findings (e.g. an md5-only checksum), each naming file:line:col.
    pub warnings: Vec<String>,
}
