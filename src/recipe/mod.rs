//! Recipes and sets: parse TOML (format v1, see docs/recipes.md), validate, expand sets.
//!
//! Owner of the recipe/set file format. Everything here is pure data plus the
//! loader; name resolution across files happens in [`crate::graph`].

mod overlay;
mod parse;
mod pin;
mod set;
pub mod stage;

use std::collections::BTreeMap;
use std::fmt;
use std::path::{Path, PathBuf};

use crate::hash::{Checksum, ParseDigestError};

pub use overlay::{apply_overlays, load_overlay, load_overlays, Overlay, OverlayProblem, Override};
pub use parse::{deb_filename, is_valid_name, DEFAULT_SHELL};
pub(crate) use parse::parse_duration;
pub use pin::{pin_sha256, repin_deb, unpinned_url_sources, DebRepin, PinError, PinTarget, UnpinnedSource};

/// Load the recipes and sets named on the command line, with everything their
/// sets include. Every problem found in any file is reported, one per line.
pub fn load(files: &[PathBuf]) -> Result<Loaded, RecipeError> {
    set::Loader::default().load(files)
}

/// The largest recipe, set or overlay file forge reads (the whole LFS tree's largest is a
/// few KiB).
pub const MAX_FILE_BYTES: u64 = 1 << 20;

/// The text of a recipe, set or overlay file: a regular file of at most [`MAX_FILE_BYTES`],
/// UTF-8. Anything else (a device, a fifo, a directory, something larger) is an error that
/// says what the path is, read without blocking and without reading more than the limit:
/// `include = ["/dev/zero"]` must be an error, not a read that never ends.
pub fn read_text(path: &Path) -> std::io::Result<String> {
    use std::io::Read;
    use std::os::unix::fs::{FileTypeExt, OpenOptionsExt};
    let invalid = |message: String| std::io::Error::new(std::io::ErrorKind::InvalidInput, message);
    // O_NONBLOCK: opening a fifo for reading would otherwise wait for a writer.
    let file = std::fs::OpenOptions::new().read(true).custom_flags(libc::O_NONBLOCK).open(path)?;
    let meta = file.metadata()?;
    let kind = meta.file_type();
    let what = if kind.is_file() {
        None
    } else if kind.is_dir() {
        Some("a directory")
    } else if kind.is_fifo() {
        Some("a fifo")
    } else if kind.is_char_device() {
        Some("a character device")
    } else if kind.is_block_device() {
        Some("a block device")
    } else {
        Some("a socket")
    };
    if let Some(what) = what {
        return Err(invalid(format!("it is {what}; recipes, sets and overlays are regular files")));
    }
    if meta.len() > MAX_FILE_BYTES {
        return Err(invalid(format!("it is {} bytes; recipes, sets and overlays are at most {MAX_FILE_BYTES}", meta.len())));
    }
    let mut bytes = Vec::new();
    file.take(MAX_FILE_BYTES + 1).read_to_end(&mut bytes)?;
    if bytes.len() as u64 > MAX_FILE_BYTES {
        return Err(invalid(format!("it grew past {MAX_FILE_BYTES} bytes while being read")));
    }
    String::from_utf8(bytes).map_err(|e| invalid(format!("it is not UTF-8 (byte {})", e.utf8_error().valid_up_to())))
}

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

impl Recipe {
    /// The phase of a long build this package belongs to: the name of the directory its
    /// recipe file is in (`ch6` for recipes/packages/ch6/ncurses.toml), as `forge status`
    /// groups a run's progress (docs/observability.md).
    pub fn phase(&self) -> String {
        self.file.parent().and_then(|d| d.file_name()).map(|d| d.to_string_lossy().into_owned()).unwrap_or_default()
    }
}

/// A dependency written by name, with the place it was written (for errors).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct DepRef {
    pub name: String,
    pub at: Location,
    /// Where the dependency's output is placed in the sandbox: the entry's `at`
    /// key (`{ name = "glibc", at = "/lfs" }`), else `/`. Always a valid
    /// [`stage`] location.
    pub staged_at: PathBuf,
}

impl DepRef {
    /// A dependency staged at `/`.
    pub fn new(name: impl Into<String>, at: Location) -> DepRef {
        DepRef { name: name.into(), at, staged_at: PathBuf::from(stage::ROOT) }
    }
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
#[derive(Clone, Debug, PartialEq)]
pub struct Requirements {
    /// Bytes of memory the build needs at peak: what the scheduler reserves, and the build's
    /// memory limit (docs/sandbox.md, "Limits"; default [`crate::sandbox::DEFAULT_MEMORY`]).
    pub memory: Option<u64>,
    /// Bytes of disk the build needs: free space required in the store's file system before
    /// it starts, and the limit on `/build` + `$FORGE_OUT` while it runs.
    pub disk: Option<u64>,
    /// Processes and threads the build may have at once.
    pub processes: Option<u64>,
    /// Size of the build's `/tmp` (and of `/dev/shm`), in bytes.
    pub tmp: Option<u64>,
    /// Seconds the build may print nothing before it is ended; `Some(0)`: never.
    pub max_silent_time: Option<u64>,
    /// Wall-clock limit in seconds; exceeding it fails the build.
    pub timeout: Option<u64>,
    /// How many times a build whose script exits 75 (transient) is tried again.
    pub retries: u32,
    /// Seconds before the first retry; doubled before each next one.
    pub retry_delay: u64,
    /// Expected build time in SBU (multiples of the reference package's build time, as the
    /// LFS book gives them): the scheduler's guess before this machine has built it.
    pub sbu: Option<f64>,
}

/// Seconds before the first retry of a transient failure, unless `retry-delay` says.
pub const DEFAULT_RETRY_DELAY: u64 = 10;

impl Default for Requirements {
    fn default() -> Requirements {
        Requirements { memory: None, disk: None, processes: None, tmp: None, max_silent_time: None, timeout: None, retries: 0, retry_delay: DEFAULT_RETRY_DELAY, sbu: None }
    }
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
}

impl Loaded {
    /// Non-fatal findings, each naming file:line:col: every source pinned only by the md5
    /// the LFS book publishes. Computed from the recipes as they are now, so a source an
    /// overlay replaced warns no more.
    pub fn warnings(&self) -> Vec<String> {
        warnings(&self.recipes)
    }
}

/// The warnings of [`Loaded::warnings`] for some of the recipes (those a build selected).
pub fn warnings<'a>(recipes: impl IntoIterator<Item = &'a Recipe>) -> Vec<String> {
    let sources = recipes.into_iter().flat_map(|r| &r.sources);
    let md5_only = sources.filter(|s| matches!(s.checksum, Some(Checksum::Md5(_))));
    md5_only.map(|s| format!("{}: md5 only, pin a sha256 (`forge prefetch` computes it)", s.at)).collect()
}

/// Every problem found while loading; `Display` prints one per line.
#[derive(Debug)]
pub struct RecipeError {
    pub problems: Vec<Problem>,
}

impl fmt::Display for RecipeError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        for (i, problem) in self.problems.iter().enumerate() {
            if i > 0 {
                writeln!(f)?;
            }
            write!(f, "{problem}")?;
        }
        Ok(())
    }
}

impl std::error::Error for RecipeError {}

/// One problem in one file; `position` is `None` when the file itself is the problem.
#[derive(Debug)]
pub struct Problem {
    pub file: PathBuf,
    /// 1-based line and column.
    pub position: Option<(usize, usize)>,
    pub kind: ProblemKind,
}

impl Problem {
    pub(crate) fn at(at: Location, kind: ProblemKind) -> Problem {
        Problem { file: at.file, position: Some((at.line, at.column)), kind }
    }
    pub(crate) fn in_file(file: &Path, kind: ProblemKind) -> Problem {
        Problem { file: file.to_path_buf(), position: None, kind }
    }
}

impl fmt::Display for Problem {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self.position {
            Some((line, column)) => write!(f, "{}:{line}:{column}: {}", self.file.display(), self.kind),
            None => write!(f, "{}: {}", self.file.display(), self.kind),
        }
    }
}

/// What is wrong; the message is written for the recipe author.
#[derive(Debug, thiserror::Error)]
pub enum ProblemKind {
    #[error("cannot read: {0}")]
    Read(#[source] std::io::Error),
    /// TOML syntax, unknown keys, wrong value types, missing required keys.
    #[error("{0}")]
    Toml(String),
    #[error("a file is either a recipe ([package]) or a set ([set]), not both")]
    SetAndPackage,
    #[error("neither a recipe (no [package] table) nor a set (no [set] table)")]
    NeitherRecipeNorSet,
    #[error("a set file holds only [set]; {table} belongs in a recipe")]
    TableInSet { table: &'static str },
    #[error("invalid {what} name {name:?}: names match [a-zA-Z0-9][a-zA-Z0-9+._-]*")]
    InvalidName { what: &'static str, name: String },
    #[error("empty version")]
    EmptyVersion,
    #[error("a [[source]] needs exactly one of `url`, `file`, `deb` (found: {})", if found.is_empty() { "none" } else { found })]
    SourceKind { found: String },
    #[error("`mirrors` only goes with `url`")]
    MirrorsWithoutUrl,
    #[error("{kind} source without a checksum: pin it with `sha256 = \"...\"` (`forge prefetch` computes it)")]
    MissingChecksum { kind: &'static str },
    #[error("more than one checksum ({keys}): give exactly one")]
    ManyChecksums { keys: String },
    #[error("`file` sources take no `{key}`: their BLAKE3 tree hash is computed from the file")]
    ChecksumOnFileSource { key: &'static str },
    #[error("bad `{key}` value: {source}")]
    BadChecksum { key: &'static str, source: ParseDigestError },
    #[error("`deb` must be \"package=version\" (e.g. \"busybox-static=1:1.35.0-4+b3\"), got {value:?}")]
    BadDeb { value: String },
    #[error("source `name` {name:?} must be a plain file name (no '/', not '.' or '..')")]
    BadSourceName { name: String },
    #[error("cannot derive a file name for this source: set `name`")]
    NoDefaultSourceName,
    #[error("`file` source {} does not exist", path.display())]
    MissingFileSource { path: PathBuf },
    #[error("two sources named {name:?} in $FORGE_SOURCES (the first at {first}): set `name` on one")]
    DuplicateSourceName { name: String, first: Location },
    #[error("{0}")]
    Overlay(overlay::OverlayProblem),
    #[error("invalid staging location `at = {path:?}`: {reason}")]
    BadStage { path: String, reason: String },
    #[error("invalid environment variable name {name:?}")]
    BadEnvName { name: String },
    #[error("{name:?}: FORGE_* variables are reserved for forge")]
    ReservedEnvName { name: String },
    #[error("a recipe needs a [build] or an [import] table")]
    NoAction,
    #[error("a recipe has either [build] or [import], not both")]
    BothActions,
    #[error("`shell` must not be empty")]
    EmptyShell,
    #[error("invalid size {value} for `{key}`: use bytes or a number with K, M, G or T (powers of 1024), e.g. \"512M\", \"1.5G\"")]
    BadSize { key: &'static str, value: String },
    #[error("invalid `{key}` {value}: use seconds or a number with s, m, h or d, e.g. \"90s\", \"30m\", \"2h\"")]
    BadDuration { key: &'static str, value: String },
    #[error("`{key}` {value} is too small to build anything: use at least {min}")]
    LimitTooSmall { key: &'static str, value: String, min: &'static str },
    #[error("invalid `processes` {value}: a number of processes from 1 to 4194304")]
    BadProcesses { value: i64 },
    #[error("invalid `retries` {value}: a number of retries from 0 to 10")]
    BadRetries { value: i64 },
    #[error("invalid `sbu` {value}: a positive number of SBU, e.g. 0.5 or 12")]
    BadSbu { value: f64 },
    #[error("included file {} does not exist", path.display())]
    IncludeNotFound { path: PathBuf },
    #[error("include pattern {pattern:?} matches no file")]
    GlobMatchedNothing { pattern: String },
    #[error("invalid include pattern {pattern:?}: {message}")]
    BadGlob { pattern: String, message: String },
    #[error("include cycle: {chain}")]
    IncludeCycle { chain: String },
}

#[cfg(test)]
mod tests;
