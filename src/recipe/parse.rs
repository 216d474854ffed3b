//! Parsing and validating one recipe or set file (format v1).
//!
//! serde + toml give typed, span-carrying raw structs (`deny_unknown_fields`
//! makes typos errors); the validation pass then turns them into [`Recipe`] /
//! [`SetFile`], collecting every semantic problem of the file rather than
//! stopping at the first.

use std::collections::BTreeMap;
use std::fmt;
use std::ops::Range;
use std::path::{Component, Path, PathBuf};

use serde::de::{self, Deserializer, Visitor};
use serde::Deserialize;
use toml::Spanned;

use super::{
    stage, Action, DepRef, DEFAULT_RETRY_DELAY, Location, Problem, ProblemKind, Recipe, Requirements, Source, SourceKind,
};
use crate::hash::Checksum;

/// The shell a `[build]` script runs with when the recipe names none.
pub const DEFAULT_SHELL: [&str; 3] = ["/bin/sh", "-e", "-c"];

/// A parsed set file: its name and what it includes (not yet expanded).
#[derive(Clone, Debug)]
pub(crate) struct SetFile {
    pub name: String,
    pub includes: Vec<(String, Location)>,
}

#[derive(Debug)]
pub(crate) enum Parsed {
    Recipe(Box<Recipe>),
    Set(SetFile),
}

/// Everything learned from one file: the parsed value if the file is valid, else the problems.
#[derive(Debug, Default)]
pub(crate) struct FileOutcome {
    pub parsed: Option<Parsed>,
    pub problems: Vec<Problem>,
}

// ---------------------------------------------------------------------------
// Raw serde shapes: exactly the keys of format v1, nothing else.

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct RawFile {
    package: Option<Spanned<RawPackage>>,
    set: Option<Spanned<RawSet>>,
    source: Option<Spanned<Vec<Spanned<RawSource>>>>,
    deps: Option<Spanned<RawDeps>>,
    env: Option<Spanned<BTreeMap<Spanned<String>, Spanned<String>>>>,
    build: Option<Spanned<RawBuild>>,
    import: Option<Spanned<RawImport>>,
    requirements: Option<Spanned<RawRequirements>>,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct RawPackage {
    name: Spanned<String>,
    version: Spanned<String>,
    description: Option<String>,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct RawSet {
    name: Spanned<String>,
    #[serde(default)]
    include: Vec<Spanned<String>>,
    #[allow(dead_code)] // accepted and documented; nothing consumes it yet
    description: Option<String>,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
pub(crate) struct RawSource {
    url: Option<Spanned<String>>,
    mirrors: Option<Spanned<Vec<String>>>,
    file: Option<Spanned<String>>,
    deb: Option<Spanned<String>>,
    name: Option<Spanned<String>>,
    sha256: Option<Spanned<String>>,
    blake3: Option<Spanned<String>>,
    md5: Option<Spanned<String>>,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct RawDeps {
    #[serde(default)]
    build: Vec<Spanned<RawDep>>,
    #[serde(default)]
    runtime: Vec<Spanned<RawDep>>,
}

/// A `[deps]` entry: `"name"`, or `{ name = "glibc", at = "/lfs" }`.
enum RawDep {
    /// Its span is that of the enclosing `Spanned<RawDep>`.
    Name(String),
    Table(RawDepTable),
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct RawDepTable {
    name: Spanned<String>,
    at: Option<Spanned<String>>,
}

impl<'de> Deserialize<'de> for RawDep {
    fn deserialize<D: Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        struct DepVisitor;
        impl<'de> Visitor<'de> for DepVisitor {
            type Value = RawDep;
            fn expecting(&self, f: &mut fmt::Formatter) -> fmt::Result {
                f.write_str("a package name or a table { name = \"...\", at = \"/dir\" }")
            }
            fn visit_str<E: de::Error>(self, v: &str) -> Result<RawDep, E> {
                Ok(RawDep::Name(v.to_string()))
            }
            fn visit_map<A: de::MapAccess<'de>>(self, map: A) -> Result<RawDep, A::Error> {
                RawDepTable::deserialize(de::value::MapAccessDeserializer::new(map)).map(RawDep::Table)
            }
        }
        deserializer.deserialize_any(DepVisitor)
    }
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct RawBuild {
    script: String,
    shell: Option<Spanned<Vec<String>>>,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct RawImport {
    #[serde(default = "default_unpack")]
    unpack: bool,
}

fn default_unpack() -> bool {
    true
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct RawRequirements {
    memory: Option<Spanned<Quantity>>,
    disk: Option<Spanned<Quantity>>,
    processes: Option<Spanned<i64>>,
    tmp: Option<Spanned<Quantity>>,
    #[serde(rename = "max-silent-time")]
    max_silent_time: Option<Spanned<Quantity>>,
    timeout: Option<Spanned<Quantity>>,
    retries: Option<Spanned<i64>>,
    #[serde(rename = "retry-delay")]
    retry_delay: Option<Spanned<Quantity>>,
    sbu: Option<Spanned<f64>>,
}

/// A requirement value: an integer, or a string with a unit.
enum Quantity {
    Int(i64),
    Text(String),
}

impl fmt::Display for Quantity {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Quantity::Int(n) => write!(f, "{n}"),
            Quantity::Text(s) => write!(f, "{s:?}"),
        }
    }
}

impl<'de> Deserialize<'de> for Quantity {
    fn deserialize<D: Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        struct QuantityVisitor;
        impl Visitor<'_> for QuantityVisitor {
            type Value = Quantity;
            fn expecting(&self, f: &mut fmt::Formatter) -> fmt::Result {
                f.write_str("an integer or a string such as \"4G\" or \"30m\"")
            }
            fn visit_i64<E: de::Error>(self, v: i64) -> Result<Quantity, E> {
                Ok(Quantity::Int(v))
            }
            fn visit_u64<E: de::Error>(self, v: u64) -> Result<Quantity, E> {
                i64::try_from(v).map(Quantity::Int).map_err(|_| E::custom("integer too large"))
            }
            fn visit_str<E: de::Error>(self, v: &str) -> Result<Quantity, E> {
                Ok(Quantity::Text(v.to_string()))
            }
        }
        deserializer.deserialize_any(QuantityVisitor)
    }
}

// ---------------------------------------------------------------------------
// Positions.

/// Byte offsets to 1-based line:column (columns count characters, not bytes).
pub(crate) struct LineIndex<'a> {
    text: &'a str,
    line_starts: Vec<usize>,
    /// (byte offset, characters before it) every [`CHECKPOINT_BYTES`] or so: a column is
    /// counted from the nearest checkpoint, so locating N problems on one long line costs
    /// O(N), not O(N * line length).
    checkpoints: Vec<(usize, usize)>,
}

const CHECKPOINT_BYTES: usize = 1024;

impl<'a> LineIndex<'a> {
    pub fn new(text: &'a str) -> Self {
        let mut line_starts = vec![0];
        line_starts.extend(text.match_indices('\n').map(|(i, _)| i + 1));
        let mut checkpoints = vec![(0, 0)];
        let mut at = CHECKPOINT_BYTES;
        while at < text.len() {
            while !text.is_char_boundary(at) {
                at += 1;
            }
            let &(previous, chars) = checkpoints.last().expect("starts with (0, 0)");
            checkpoints.push((at, chars + text[previous..at].chars().count()));
            at += CHECKPOINT_BYTES;
        }
        LineIndex { text, line_starts, checkpoints }
    }

    pub fn line_col(&self, offset: usize) -> (usize, usize) {
        let offset = offset.min(self.text.len());
        let line = self.line_starts.partition_point(|&start| start <= offset) - 1;
        let start = self.line_starts[line];
        let column = self.chars_before(offset).saturating_sub(self.chars_before(start));
        (line + 1, column + 1)
    }

    fn chars_before(&self, offset: usize) -> usize {
        let (at, chars) = self.checkpoints[self.checkpoints.partition_point(|&(at, _)| at <= offset) - 1];
        // `get` guards against an offset inside a multi-byte character.
        chars + self.text.get(at..offset).map_or(offset - at, |s| s.chars().count())
    }
}

/// Context for validating one file: its path and positions.
struct FileCtx<'a> {
    file: &'a Path,
    index: LineIndex<'a>,
    problems: Vec<Problem>,
}

impl FileCtx<'_> {
    fn at(&self, span: &Range<usize>) -> Location {
        let (line, column) = self.index.line_col(span.start);
        Location { file: self.file.to_path_buf(), line, column }
    }

    fn problem(&mut self, span: &Range<usize>, kind: ProblemKind) {
        let at = self.at(span);
        self.problems.push(Problem::at(at, kind));
    }
}

// ---------------------------------------------------------------------------
// Entry point.

/// Parse and validate the text of the file at `file` (an absolute path).
pub(crate) fn parse_file(file: &Path, text: &str) -> FileOutcome {
    let mut ctx = FileCtx { file, index: LineIndex::new(text), problems: Vec::new() };
    let raw: RawFile = match toml::from_str(text) {
        Ok(raw) => raw,
        Err(err) => {
            let span = err.span().unwrap_or(0..0);
            ctx.problem(&span, ProblemKind::Toml(err.message().trim_end().to_string()));
            return FileOutcome { parsed: None, problems: ctx.problems };
        }
    };
    let parsed = match (raw.package.is_some(), raw.set.is_some()) {
        (true, true) => {
            ctx.problem(&(0..0), ProblemKind::SetAndPackage);
            None
        }
        (false, false) => {
            ctx.problem(&(0..0), ProblemKind::NeitherRecipeNorSet);
            None
        }
        (false, true) => validate_set(&mut ctx, raw).map(Parsed::Set),
        (true, false) => validate_recipe(&mut ctx, raw).map(|r| Parsed::Recipe(Box::new(r))),
    };
    let parsed = if ctx.problems.is_empty() { parsed } else { None };
    FileOutcome { parsed, problems: ctx.problems }
}

fn validate_set(ctx: &mut FileCtx, raw: RawFile) -> Option<SetFile> {
    let extra = [
        ("[[source]]", raw.source.as_ref().map(Spanned::span)),
        ("[deps]", raw.deps.as_ref().map(Spanned::span)),
        ("[env]", raw.env.as_ref().map(Spanned::span)),
        ("[build]", raw.build.as_ref().map(Spanned::span)),
        ("[import]", raw.import.as_ref().map(Spanned::span)),
        ("[requirements]", raw.requirements.as_ref().map(Spanned::span)),
    ];
    for (table, span) in extra {
        if let Some(span) = span {
            ctx.problem(&span, ProblemKind::TableInSet { table });
        }
    }
    let set = raw.set?.into_inner();
    check_name(ctx, "set", &set.name);
    let includes = set.include.iter().map(|inc| (inc.get_ref().clone(), ctx.at(&inc.span()))).collect();
    Some(SetFile { name: set.name.into_inner(), includes })
}

fn validate_recipe(ctx: &mut FileCtx, raw: RawFile) -> Option<Recipe> {
    let package_span = raw.package.as_ref()?.span();
    let package = raw.package?.into_inner();
    check_name(ctx, "package", &package.name);
    if package.version.get_ref().trim().is_empty() {
        ctx.problem(&package.version.span(), ProblemKind::EmptyVersion);
    }
    let sources = validate_sources(ctx, raw.source.map(Spanned::into_inner).unwrap_or_default());
    let (build_deps, runtime_deps) = match raw.deps {
        Some(deps) => {
            let deps = deps.into_inner();
            (validate_deps(ctx, deps.build), validate_deps(ctx, deps.runtime))
        }
        None => (Vec::new(), Vec::new()),
    };
    let env = validate_env(ctx, raw.env.map(Spanned::into_inner).unwrap_or_default());
    let action = validate_action(ctx, &package_span, raw.build, raw.import);
    let requirements = raw.requirements.map(|r| validate_requirements(ctx, r.into_inner())).unwrap_or_default();
    Some(Recipe {
        file: ctx.file.to_path_buf(),
        name_at: ctx.at(&package.name.span()),
        name: package.name.into_inner(),
        version: package.version.into_inner(),
        description: package.description,
        sources,
        build_deps,
        runtime_deps,
        env,
        action: action?,
        requirements,
    })
}

/// Package and set names: `[a-zA-Z0-9][a-zA-Z0-9+._-]*`.
/// The name of a `deb` source in `$FORGE_SOURCES` (the default for `deb = "PKG=VER"`), which
/// is also what apt calls its download: `PKG_VER_ARCH.deb`, the epoch's colon as `%3a`.
pub fn deb_filename(package: &str, version: &str, arch: &str) -> String {
    format!("{package}_{}_{arch}.deb", version.replace(':', "%3a"))
}

pub fn is_valid_name(name: &str) -> bool {
    let mut chars = name.chars();
    chars.next().is_some_and(|c| c.is_ascii_alphanumeric())
        && chars.all(|c| c.is_ascii_alphanumeric() || matches!(c, '+' | '.' | '_' | '-'))
}

fn check_name(ctx: &mut FileCtx, what: &'static str, name: &Spanned<String>) {
    if !is_valid_name(name.get_ref()) {
        ctx.problem(&name.span(), ProblemKind::InvalidName { what, name: name.get_ref().clone() });
    }
}

fn validate_deps(ctx: &mut FileCtx, deps: Vec<Spanned<RawDep>>) -> Vec<DepRef> {
    deps.into_iter().map(|dep| validate_dep(ctx, dep)).collect()
}

/// One `[deps]` entry; errors point at the name or the `at` value.
fn validate_dep(ctx: &mut FileCtx, dep: Spanned<RawDep>) -> DepRef {
    let entry_span = dep.span();
    let (name, name_span, staged_at) = match dep.into_inner() {
        RawDep::Name(name) => (name, entry_span.clone(), None),
        RawDep::Table(table) => (table.name.get_ref().clone(), table.name.span(), table.at),
    };
    if !is_valid_name(&name) {
        ctx.problem(&name_span, ProblemKind::InvalidName { what: "dependency", name: name.clone() });
    }
    let staged_at = match staged_at {
        None => PathBuf::from(stage::ROOT),
        Some(at) => {
            if let Some(reason) = stage::problem(at.get_ref()) {
                ctx.problem(&at.span(), ProblemKind::BadStage { path: at.get_ref().clone(), reason });
            }
            PathBuf::from(at.into_inner())
        }
    };
    DepRef { name, at: ctx.at(&entry_span), staged_at }
}

// ---------------------------------------------------------------------------
// Sources.

fn validate_sources(ctx: &mut FileCtx, raw: Vec<Spanned<RawSource>>) -> Vec<Source> {
    let mut sources: Vec<Source> = Vec::new();
    for entry in raw {
        let span = entry.span();
        let Some(source) = validate_source(ctx, &span, entry.into_inner()) else { continue };
        if let Some(first) = sources.iter().find(|s| s.filename == source.filename) {
            let kind = ProblemKind::DuplicateSourceName { name: source.filename.clone(), first: first.at.clone() };
            ctx.problem(&span, kind);
            continue;
        }
        sources.push(source);
    }
    sources
}

fn validate_source(ctx: &mut FileCtx, span: &Range<usize>, raw: RawSource) -> Option<Source> {
    let given: Vec<&str> = [("url", raw.url.is_some()), ("file", raw.file.is_some()), ("deb", raw.deb.is_some())]
        .into_iter()
        .filter_map(|(key, present)| present.then_some(key))
        .collect();
    if given.len() != 1 {
        ctx.problem(span, ProblemKind::SourceKind { found: given.join(", ") });
        return None;
    }
    if let (Some(mirrors), None) = (&raw.mirrors, &raw.url) {
        ctx.problem(&mirrors.span(), ProblemKind::MirrorsWithoutUrl);
    }
    let checksum = validate_checksum(ctx, span, &raw);
    let (kind, default_name) = if let Some(url) = raw.url {
        let name = url_filename(url.get_ref());
        let mirrors = raw.mirrors.map(Spanned::into_inner).unwrap_or_default();
        (SourceKind::Url { url: url.into_inner(), mirrors }, name)
    } else if let Some(file) = raw.file {
        let kind = file_source(ctx, &file)?;
        let name = Path::new(file.get_ref()).file_name().map(|n| n.to_string_lossy().into_owned());
        (kind, name)
    } else {
        let deb = raw.deb?;
        let Some((package, version)) = parse_deb(deb.get_ref()) else {
            ctx.problem(&deb.span(), ProblemKind::BadDeb { value: deb.into_inner() });
            return None;
        };
        let name = deb_filename(&package, &version, "amd64");
        (SourceKind::Deb { package, version }, Some(name))
    };
    let filename = match (raw.name, default_name) {
        (Some(name), _) => {
            if !is_plain_filename(name.get_ref()) {
                ctx.problem(&name.span(), ProblemKind::BadSourceName { name: name.get_ref().clone() });
                return None;
            }
            name.into_inner()
        }
        (None, Some(name)) if is_plain_filename(&name) => name,
        (None, _) => {
            ctx.problem(span, ProblemKind::NoDefaultSourceName);
            return None;
        }
    };
    if matches!(kind, SourceKind::File { .. }) {
        Some(Source { kind, filename, checksum: None, at: ctx.at(span) })
    } else {
        Some(Source { kind, filename, checksum: Some(checksum?), at: ctx.at(span) })
    }
}

/// Source and env entries written outside a recipe (an overlay, see `overlay.rs`), validated
/// with exactly a recipe's rules; `file` paths resolve against `file`'s directory.
pub(crate) struct Fragment {
    pub sources: Vec<Source>,
    pub env: BTreeMap<String, String>,
    pub problems: Vec<Problem>,
}

pub(crate) fn validate_fragment(
    file: &Path,
    text: &str,
    sources: Vec<Spanned<RawSource>>,
    env: BTreeMap<Spanned<String>, Spanned<String>>,
) -> Fragment {
    let mut ctx = FileCtx { file, index: LineIndex::new(text), problems: Vec::new() };
    let sources = validate_sources(&mut ctx, sources);
    let env = validate_env(&mut ctx, env);
    Fragment { sources, env, problems: ctx.problems }
}

/// The checksum of a source, with problems for missing, duplicate or malformed keys.
fn validate_checksum(ctx: &mut FileCtx, span: &Range<usize>, raw: &RawSource) -> Option<Checksum> {
    let keys = [("sha256", &raw.sha256), ("blake3", &raw.blake3), ("md5", &raw.md5)];
    let given: Vec<(&str, &Spanned<String>)> =
        keys.into_iter().filter_map(|(key, value)| value.as_ref().map(|v| (key, v))).collect();
    if raw.file.is_some() {
        if let Some((key, value)) = given.first() {
            ctx.problem(&value.span(), ProblemKind::ChecksumOnFileSource { key });
        }
        return None;
    }
    let kind = if raw.url.is_some() { "url" } else { "deb" };
    let (key, value) = match given.as_slice() {
        [] => {
            ctx.problem(span, ProblemKind::MissingChecksum { kind });
            return None;
        }
        [one] => *one,
        [_, second, ..] => {
            let keys = given.iter().map(|(k, _)| *k).collect::<Vec<_>>().join(", ");
            ctx.problem(&second.1.span(), ProblemKind::ManyChecksums { keys });
            return None;
        }
    };
    match Checksum::parse(key, value.get_ref()) {
        Ok(checksum) => Some(checksum),
        Err(source) => {
            ctx.problem(&value.span(), ProblemKind::BadChecksum { key, source });
            None
        }
    }
}

fn file_source(ctx: &mut FileCtx, file: &Spanned<String>) -> Option<SourceKind> {
    let dir = ctx.file.parent().unwrap_or(Path::new("/"));
    let path = normalize(&dir.join(file.get_ref()));
    if file.get_ref().is_empty() || !path.exists() {
        ctx.problem(&file.span(), ProblemKind::MissingFileSource { path });
        return None;
    }
    Some(SourceKind::File { path })
}

/// The last path segment of a URL, without query or fragment.
pub(crate) fn url_filename(url: &str) -> Option<String> {
    let path = url.split(['?', '#']).next().unwrap_or(url);
    let after_scheme = path.split_once("://").map_or(path, |(_, rest)| rest);
    let (_host, path) = after_scheme.split_once('/')?;
    path.rsplit('/').next().filter(|s| !s.is_empty()).map(str::to_string)
}

/// `package=version`; Debian package names are lowercase `[a-z0-9][a-z0-9+.-]+`.
fn parse_deb(value: &str) -> Option<(String, String)> {
    let (package, version) = value.split_once('=')?;
    let mut chars = package.chars();
    let package_ok = package.len() >= 2
        && chars.next().is_some_and(|c| c.is_ascii_lowercase() || c.is_ascii_digit())
        && chars.all(|c| c.is_ascii_lowercase() || c.is_ascii_digit() || matches!(c, '+' | '.' | '-'));
    let version_ok = !version.is_empty()
        && version.chars().all(|c| c.is_ascii_alphanumeric() || matches!(c, '.' | '+' | '-' | '~' | ':'));
    (package_ok && version_ok).then(|| (package.to_string(), version.to_string()))
}

fn is_plain_filename(name: &str) -> bool {
    !name.is_empty() && name != "." && name != ".." && !name.contains(['/', '\0'])
}

/// Lexically resolve `.` and `..` (the path need not exist).
pub(crate) fn normalize(path: &Path) -> PathBuf {
    let mut out = PathBuf::new();
    for component in path.components() {
        match component {
            Component::CurDir => {}
            Component::ParentDir => {
                out.pop();
            }
            other => out.push(other),
        }
    }
    out
}

// ---------------------------------------------------------------------------
// Env, action, requirements.

fn validate_env(ctx: &mut FileCtx, raw: BTreeMap<Spanned<String>, Spanned<String>>) -> BTreeMap<String, String> {
    let mut env = BTreeMap::new();
    for (key, value) in raw {
        let name = key.get_ref();
        if !is_env_name(name) {
            ctx.problem(&key.span(), ProblemKind::BadEnvName { name: name.clone() });
        } else if name.starts_with("FORGE_") {
            ctx.problem(&key.span(), ProblemKind::ReservedEnvName { name: name.clone() });
        } else {
            env.insert(key.into_inner(), value.into_inner());
        }
    }
    env
}

fn is_env_name(name: &str) -> bool {
    let mut chars = name.chars();
    chars.next().is_some_and(|c| c.is_ascii_alphabetic() || c == '_')
        && chars.all(|c| c.is_ascii_alphanumeric() || c == '_')
}

fn validate_action(
    ctx: &mut FileCtx,
    package_span: &Range<usize>,
    build: Option<Spanned<RawBuild>>,
    import: Option<Spanned<RawImport>>,
) -> Option<Action> {
    match (build, import) {
        (Some(_), Some(import)) => {
            ctx.problem(&import.span(), ProblemKind::BothActions);
            None
        }
        (None, None) => {
            ctx.problem(package_span, ProblemKind::NoAction);
            None
        }
        (None, Some(import)) => Some(Action::Import { unpack: import.into_inner().unpack }),
        (Some(build), None) => {
            let build = build.into_inner();
            let shell = match build.shell {
                None => DEFAULT_SHELL.iter().map(|s| s.to_string()).collect(),
                Some(shell) if shell.get_ref().is_empty() => {
                    ctx.problem(&shell.span(), ProblemKind::EmptyShell);
                    return None;
                }
                Some(shell) => shell.into_inner(),
            };
            Some(Action::Build { script: build.script, shell })
        }
    }
}

/// More retries than this is a loop, not a policy.
const MAX_RETRIES: u32 = 10;

fn validate_requirements(ctx: &mut FileCtx, raw: RawRequirements) -> Requirements {
    // Limits: a build under 1 MiB of memory, disk or /tmp could not even start its shell
    // (and tmpfs takes size=0 as "no limit").
    let mut size = |key: &'static str, value: Option<Spanned<Quantity>>| {
        let value = value?;
        let parsed = match value.get_ref() {
            Quantity::Int(n) => u64::try_from(*n).ok(),
            Quantity::Text(text) => parse_size(text),
        };
        match parsed {
            None => ctx.problem(&value.span(), ProblemKind::BadSize { key, value: value.get_ref().to_string() }),
            Some(bytes) if bytes < MIN_LIMIT_BYTES => {
                ctx.problem(&value.span(), ProblemKind::LimitTooSmall { key, value: value.get_ref().to_string(), min: "\"1M\"" })
            }
            Some(_) => {}
        }
        parsed
    };
    let memory = size("memory", raw.memory);
    let disk = size("disk", raw.disk);
    let tmp = size("tmp", raw.tmp);
    let processes = raw.processes.and_then(|value| {
        let parsed = u64::try_from(*value.get_ref()).ok().filter(|n| (1..=MAX_PROCESSES).contains(n));
        if parsed.is_none() {
            ctx.problem(&value.span(), ProblemKind::BadProcesses { value: *value.get_ref() });
        }
        parsed
    });
    let mut duration = |key: &'static str, value: Option<Spanned<Quantity>>| {
        let value = value?;
        let parsed = match value.get_ref() {
            Quantity::Int(n) => u64::try_from(*n).ok(),
            Quantity::Text(text) => parse_duration(text),
        };
        if parsed.is_none() {
            ctx.problem(&value.span(), ProblemKind::BadDuration { key, value: value.get_ref().to_string() });
        }
        parsed
    };
    let timeout = duration("timeout", raw.timeout);
    let max_silent_time = duration("max-silent-time", raw.max_silent_time);
    let retry_delay = duration("retry-delay", raw.retry_delay).unwrap_or(DEFAULT_RETRY_DELAY);
    let retries = raw.retries.and_then(|value| {
        let parsed = u32::try_from(*value.get_ref()).ok().filter(|&n| n <= MAX_RETRIES);
        if parsed.is_none() {
            ctx.problem(&value.span(), ProblemKind::BadRetries { value: *value.get_ref() });
        }
        parsed
    });
    let sbu = raw.sbu.and_then(|value| {
        let sbu = *value.get_ref();
        let valid = sbu.is_finite() && sbu > 0.0 && sbu < 100_000.0;
        if !valid {
            ctx.problem(&value.span(), ProblemKind::BadSbu { value: sbu });
        }
        valid.then_some(sbu)
    });
    Requirements { memory, disk, processes, tmp, max_silent_time, timeout, retries: retries.unwrap_or(0), retry_delay, sbu }
}

/// The smallest memory, disk or `/tmp` limit a recipe may declare.
const MIN_LIMIT_BYTES: u64 = 1 << 20;
/// The most processes a recipe may ask for: the kernel's own ceiling (`pid_max` limit).
const MAX_PROCESSES: u64 = 1 << 22;

/// `"512M"`, `"1.5G"`, `"4096"`: a decimal number and an optional unit K, M, G
/// or T (powers of 1024). Fractions are exact, rounded down to whole bytes.
pub(crate) fn parse_size(text: &str) -> Option<u64> {
    let text = text.trim();
    let (number, shift) = match text.char_indices().last()? {
        (i, 'K' | 'k') => (&text[..i], 10),
        (i, 'M' | 'm') => (&text[..i], 20),
        (i, 'G' | 'g') => (&text[..i], 30),
        (i, 'T' | 't') => (&text[..i], 40),
        _ => (text, 0),
    };
    scaled_decimal(number, 1u64 << shift)
}

/// `"90s"`, `"30m"`, `"2h"`, `"1d"`, or plain seconds `"600"`.
pub(crate) fn parse_duration(text: &str) -> Option<u64> {
    let text = text.trim();
    let (number, unit) = match text.char_indices().last()? {
        (i, 's') => (&text[..i], 1),
        (i, 'm') => (&text[..i], 60),
        (i, 'h') => (&text[..i], 3600),
        (i, 'd') => (&text[..i], 86400),
        _ => (text, 1),
    };
    scaled_decimal(number, unit)
}

/// `number * unit` for a non-negative decimal like `1.5`, exactly, rounded down.
fn scaled_decimal(number: &str, unit: u64) -> Option<u64> {
    let (whole, fraction) = number.split_once('.').unwrap_or((number, ""));
    let all_digits = |s: &str| s.bytes().all(|b| b.is_ascii_digit());
    if whole.is_empty() || !all_digits(whole) || !all_digits(fraction) || fraction.len() > 9 {
        return None;
    }
    if number.ends_with('.') {
        return None;
    }
    let whole: u64 = whole.parse().ok()?;
    let scale = 10u128.pow(fraction.len() as u32);
    let fraction: u128 = if fraction.is_empty() { 0 } else { fraction.parse().ok()? };
    let extra = u64::try_from(fraction * unit as u128 / scale).ok()?;
    whole.checked_mul(unit)?.checked_add(extra)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn sizes_use_powers_of_1024_and_exact_fractions() {
        assert_eq!(parse_size("512M"), Some(512 << 20));
        assert_eq!(parse_size("4G"), Some(4 << 30));
        assert_eq!(parse_size("1.5G"), Some(3 << 29));
        assert_eq!(parse_size("2T"), Some(2 << 40));
        assert_eq!(parse_size("1K"), Some(1024));
        assert_eq!(parse_size("1000"), Some(1000));
        for bad in ["", "G", "1.G", "-1G", "1.5X", "1,5G", "4 GB", "99999999999999999999T"] {
            assert_eq!(parse_size(bad), None, "{bad:?} must be rejected");
        }
    }

    #[test]
    fn durations_accept_units() {
        assert_eq!(parse_duration("90s"), Some(90));
        assert_eq!(parse_duration("30m"), Some(1800));
        assert_eq!(parse_duration("2h"), Some(7200));
        assert_eq!(parse_duration("600"), Some(600));
        assert_eq!(parse_duration("1.5h"), Some(5400));
        assert_eq!(parse_duration("2w"), None);
        assert_eq!(parse_duration("h"), None);
    }

    #[test]
    fn line_col_counts_characters_from_one() {
        let text = "ab\nçd = 1\n\nx";
        let index = LineIndex::new(text);
        assert_eq!(index.line_col(0), (1, 1));
        assert_eq!(index.line_col(1), (1, 2));
        assert_eq!(index.line_col(3), (2, 1));
        // 'ç' is two bytes but one column.
        assert_eq!(index.line_col(5), (2, 2));
        assert_eq!(index.line_col(text.len() - 1), (4, 1));
    }

    #[test]
    fn url_filenames_drop_query_and_need_a_segment() {
        assert_eq!(url_filename("https://h/a/b-1.0.tar.xz?x=1#f").as_deref(), Some("b-1.0.tar.xz"));
        assert_eq!(url_filename("https://h/"), None);
        assert_eq!(url_filename("https://h"), None);
    }

    #[test]
    fn deb_values_need_package_and_version() {
        assert_eq!(parse_deb("busybox-static=1:1.35.0-4+b3"), Some(("busybox-static".into(), "1:1.35.0-4+b3".into())));
        assert_eq!(parse_deb("busybox-static"), None);
        assert_eq!(parse_deb("Busybox=1"), None);
        assert_eq!(parse_deb("busybox="), None);
    }

    #[test]
    fn names_follow_the_documented_pattern() {
        assert!(is_valid_name("gcc-pass1"));
        assert!(is_valid_name("libstdc++.so_2"));
        assert!(!is_valid_name("-x"));
        assert!(!is_valid_name(""));
        assert!(!is_valid_name("a b"));
    }

    #[test]
    fn line_col_counts_characters_like_the_naive_scan_on_long_non_ascii_lines() {
        let line: String = (0..5000).map(|i| if i % 7 == 0 { 'é' } else if i % 11 == 0 { '日' } else { 'a' }).collect();
        let text = format!("first\n{line}\nlast é\n");
        let index = LineIndex::new(&text);
        for (offset, _) in text.char_indices().step_by(13) {
            let start = text[..offset].rfind('\n').map_or(0, |i| i + 1);
            let line_no = text[..offset].matches('\n').count() + 1;
            assert_eq!(index.line_col(offset), (line_no, text[start..offset].chars().count() + 1), "offset {offset}");
        }
        assert_eq!(index.line_col(text.len()), (4, 1));
    }
}
