//! Sources: obtain each `[[source]]` of a recipe as a verified file, ready for the
//! store. A `url` source is downloaded (then each mirror in turn), a `deb` source is
//! fetched with `apt-get download`, both checked against the recipe's pinned
//! checksum while the bytes stream to disk. A `file` source is copied (symlinks kept)
//! and checked against the BLAKE3 tree hash computed when planning, so the build
//! sees exactly the bytes that were hashed into its derivation.
//!
//! [`fetch`] knows nothing of the store: the executor decides where `dest` is and
//! registers the result. The second half of this file is what `forge fetch`, `forge source
//! add` and `forge prefetch` add on top: registering a file *by content* (under its sha256,
//! md5 and blake3 at once, so any recipe pinning any of them finds it), downloading without a
//! pin (to compute one), and fetching many sources in parallel with per-download progress.

use std::fs::{self, File, OpenOptions};
use std::io::{self, Read, Write};
use std::path::{Path, PathBuf};
use std::process::Command;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

use crate::hash::{Checksum, Digest};
use crate::recipe::{Location, Source, SourceKind};
use crate::store::{Store, StoreError};

const CHUNK: usize = 64 * 1024;
const CONNECT_TIMEOUT: Duration = Duration::from_secs(30);
/// Per-read timeout: a stalled transfer fails, a slow but moving one does not.
const READ_TIMEOUT: Duration = Duration::from_secs(60);

#[derive(Debug, thiserror::Error)]
pub enum SourceError {
    #[error(
        "checksum mismatch for {filename} from {url}\n  expected {expected}\n  actual   {actual}\n\
         The file differs from the one the recipe pins. If the publisher really changed it, \
         check the new checksum against the publisher's own and update the recipe's `{}` key; \
         otherwise the download was tampered with or corrupted: do not use it.",
        expected.algorithm()
    )]
    ChecksumMismatch {
        filename: String,
        url: String,
        expected: Checksum,
        actual: Checksum,
    },

    #[error("download of {url} failed: {reason}")]
    Download { url: String, reason: String },

    #[error("{}", render_all_failed(filename, failures))]
    AllLocationsFailed {
        filename: String,
        failures: Vec<SourceError>,
    },

    #[error("source {filename} has no checksum: pin it with `sha256` (or `blake3`, `md5`)")]
    MissingChecksum { filename: String },

    #[error(
        "source {filename} is a local `file` source: it is staged with stage_local, not fetched"
    )]
    NotFetchable { filename: String },

    #[error(
        "cannot fetch deb {package}={version}: apt-get was not found ({reason}). \
         `deb` sources need a Debian or Ubuntu host with apt"
    )]
    AptMissing {
        package: String,
        version: String,
        reason: String,
    },

    #[error(
        "nothing has the bytes of {package}={version}: apt-get download failed ({stderr}); \
         it is not among the store's sources (`forge source add FILE.deb` registers a copy), \
         not in apt's cache {apt_cache}, and no trusted substituter offered the output of the \
         recipe that needs it. The Debian archive has moved on (a point release or security \
         update replaced this version): run `apt-get update` and then \
         `forge prefetch --update-debs RECIPE.toml...` to pin every deb source to the version \
         of the current signed index (see `apt-cache show {package}`, docs/toolchain.md)."
    )]
    DebUnavailable {
        package: String,
        version: String,
        stderr: String,
        apt_cache: String,
    },

    #[error("the apt index has no installable version of {package} (run `apt-get update`?){detail}")]
    NotInIndex { package: String, detail: String },

    #[error(
        "apt-get download {package}={version} produced {found} .deb files, expected exactly one"
    )]
    DebAmbiguous {
        package: String,
        version: String,
        found: usize,
    },

    #[error("unsupported URL {url}: only http://, https:// and file:// are supported")]
    UnsupportedScheme { url: String },

    #[error(
        "file source {path} changed since planning\n  expected blake3:{expected}\n  actual   blake3:{actual}\n\
         Re-run forge so the derivation is planned from the current contents."
    )]
    LocalChanged {
        path: PathBuf,
        expected: Digest,
        actual: Digest,
    },

    #[error("cannot hash {path}: {reason}")]
    Hash { path: PathBuf, reason: String },

    #[error("I/O error on {path}: {source}")]
    Io { path: PathBuf, source: io::Error },

    #[error("{path} is not a regular file: only files are registered as sources")]
    NotAFile { path: PathBuf },

    #[error(transparent)]
    Store(#[from] StoreError),
}

fn render_all_failed(filename: &str, failures: &[SourceError]) -> String {
    let mut text = format!("every location for {filename} failed:");
    for failure in failures {
        text.push_str("\n  - ");
        text.push_str(&failure.to_string().replace('\n', "\n    "));
    }
    text
}

fn io_err(path: &Path) -> impl FnOnce(io::Error) -> SourceError + '_ {
    move |source| SourceError::Io {
        path: path.to_path_buf(),
        source,
    }
}

/// Obtain a `url` (then each mirror in order; schemes http, https, file) or `deb`
/// source into `dest` (a new file), verifying it against the source's checksum.
/// `progress` receives (bytes so far, total if known); it restarts at 0 for each
/// mirror tried. `dest` must not exist yet; on failure it is removed again.
pub fn fetch(
    source: &Source,
    dest: &Path,
    progress: &mut dyn FnMut(u64, Option<u64>),
) -> Result<(), SourceError> {
    let expected = source
        .checksum
        .as_ref()
        .ok_or_else(|| SourceError::MissingChecksum {
            filename: source.filename.clone(),
        })?;
    match &source.kind {
        SourceKind::File { .. } => Err(SourceError::NotFetchable {
            filename: source.filename.clone(),
        }),
        SourceKind::Url { url, mirrors } => {
            refuse_existing(dest)?;
            let locations: Vec<&str> = std::iter::once(url.as_str())
                .chain(mirrors.iter().map(String::as_str))
                .collect();
            fetch_first_good(&source.filename, &locations, expected, dest, progress)
        }
        SourceKind::Deb { package, version } => {
            refuse_existing(dest)?;
            fetch_deb(&source.filename, package, version, expected, dest, progress)
        }
    }
}

/// Compute `expected`'s algorithm over the file and compare.
pub fn verify_file(path: &Path, expected: &Checksum) -> Result<(), SourceError> {
    let mut file = File::open(path).map_err(io_err(path))?;
    let mut hasher = Hasher::like(expected);
    let mut buf = vec![0u8; CHUNK];
    loop {
        let n = file.read(&mut buf).map_err(io_err(path))?;
        if n == 0 {
            break;
        }
        hasher.update(&buf[..n]);
    }
    check(
        hasher.finish(),
        expected,
        &file_name_of(path),
        &format!("file://{}", path.display()),
    )
}

/// Copy a `file` source (file or directory, symlinks kept as symlinks) to `dest`
/// and check its BLAKE3 tree hash equals `expected` (what planning computed), so
/// the build sees exactly what was hashed. On a mismatch `dest` is removed.
pub fn stage_local(path: &Path, dest: &Path, expected: &Digest) -> Result<(), SourceError> {
    refuse_existing(dest)?;
    // From here on `dest` is ours: remove whatever a failure leaves behind.
    let staged = copy_preserving(path, dest).and_then(|()| tree_hash(dest));
    let result = match staged {
        Ok(actual) if actual == *expected => return Ok(()),
        Ok(actual) => Err(SourceError::LocalChanged {
            path: path.to_path_buf(),
            expected: *expected,
            actual,
        }),
        Err(err) => Err(err),
    };
    remove_any(dest);
    result
}

/// `dest` must be new: never overwrite (or clean up) something we did not create.
fn refuse_existing(dest: &Path) -> Result<(), SourceError> {
    if dest.symlink_metadata().is_ok() {
        return Err(SourceError::Io {
            path: dest.to_path_buf(),
            source: io::Error::new(io::ErrorKind::AlreadyExists, "destination already exists"),
        });
    }
    Ok(())
}

// ---------------------------------------------------------------------------
// URLs and mirrors

/// Try each location in order; the first one whose bytes verify wins.
fn fetch_first_good(
    filename: &str,
    locations: &[&str],
    expected: &Checksum,
    dest: &Path,
    progress: &mut dyn FnMut(u64, Option<u64>),
) -> Result<(), SourceError> {
    let mut failures = Vec::new();
    for url in locations {
        match fetch_one(filename, url, expected, dest, progress) {
            Ok(()) => return Ok(()),
            Err(err) => {
                remove_any(dest);
                failures.push(err);
            }
        }
    }
    // One location: its own error is the clearest message.
    if failures.len() == 1 {
        return Err(failures.remove(0));
    }
    Err(SourceError::AllLocationsFailed {
        filename: filename.to_string(),
        failures,
    })
}

fn fetch_one(
    filename: &str,
    url: &str,
    expected: &Checksum,
    dest: &Path,
    progress: &mut dyn FnMut(u64, Option<u64>),
) -> Result<(), SourceError> {
    let (mut reader, total) = open_url(url)?;
    let mut out = OpenOptions::new()
        .write(true)
        .create_new(true)
        .open(dest)
        .map_err(io_err(dest))?;
    let actual = copy_hashing(&mut *reader, &mut out, expected, dest, url, total, progress)?;
    out.sync_all().map_err(io_err(dest))?;
    check(actual, expected, filename, url)
}

/// Open a URL for streaming; returns the body reader and its length if known.
fn open_url(url: &str) -> Result<(Box<dyn Read>, Option<u64>), SourceError> {
    if let Some(rest) = url.strip_prefix("file://") {
        let path = PathBuf::from(percent_decode(rest));
        let file = File::open(&path).map_err(|e| SourceError::Download {
            url: url.to_string(),
            reason: e.to_string(),
        })?;
        let len = file.metadata().ok().map(|m| m.len());
        return Ok((Box::new(file), len));
    }
    if !(url.starts_with("http://") || url.starts_with("https://")) {
        return Err(SourceError::UnsupportedScheme {
            url: url.to_string(),
        });
    }
    let agent = ureq::AgentBuilder::new()
        .timeout_connect(CONNECT_TIMEOUT)
        .timeout_read(READ_TIMEOUT)
        .user_agent(concat!("forge/", env!("CARGO_PKG_VERSION")))
        .build();
    let response = agent.get(url).call().map_err(|err| SourceError::Download {
        url: url.to_string(),
        reason: describe_ureq_error(err),
    })?;
    let total = response
        .header("Content-Length")
        .and_then(|v| v.trim().parse().ok());
    Ok((Box::new(response.into_reader()), total))
}

fn describe_ureq_error(err: ureq::Error) -> String {
    match err {
        ureq::Error::Status(code, response) => {
            format!("HTTP {code} {}", response.status_text())
        }
        ureq::Error::Transport(transport) => transport.to_string(),
    }
}

/// Stream `reader` into `out`, hashing as it goes; never holds the whole file.
fn copy_hashing(
    reader: &mut dyn Read,
    out: &mut File,
    expected: &Checksum,
    dest: &Path,
    url: &str,
    total: Option<u64>,
    progress: &mut dyn FnMut(u64, Option<u64>),
) -> Result<Checksum, SourceError> {
    let mut hasher = Hasher::like(expected);
    let mut buf = vec![0u8; CHUNK];
    let mut done = 0u64;
    progress(0, total);
    loop {
        let n = match reader.read(&mut buf) {
            Ok(0) => break,
            Ok(n) => n,
            Err(e) if e.kind() == io::ErrorKind::Interrupted => continue,
            Err(e) => {
                return Err(SourceError::Download {
                    url: url.to_string(),
                    reason: e.to_string(),
                })
            }
        };
        hasher.update(&buf[..n]);
        out.write_all(&buf[..n]).map_err(io_err(dest))?;
        done += n as u64;
        progress(done, total);
    }
    if let Some(total) = total {
        if done != total {
            return Err(SourceError::Download {
                url: url.to_string(),
                reason: format!("connection closed after {done} of {total} bytes"),
            });
        }
    }
    Ok(hasher.finish())
}

fn check(
    actual: Checksum,
    expected: &Checksum,
    filename: &str,
    url: &str,
) -> Result<(), SourceError> {
    if actual == *expected {
        return Ok(());
    }
    Err(SourceError::ChecksumMismatch {
        filename: filename.to_string(),
        url: url.to_string(),
        expected: expected.clone(),
        actual,
    })
}

/// Decode `%XX` escapes of a file:// URL path; malformed escapes are kept verbatim.
fn percent_decode(text: &str) -> String {
    let bytes = text.as_bytes();
    let mut out = Vec::with_capacity(bytes.len());
    let mut i = 0;
    while i < bytes.len() {
        let escaped = bytes
            .get(i + 1..i + 3)
            .filter(|_| bytes[i] == b'%')
            .and_then(|hex| std::str::from_utf8(hex).ok())
            .and_then(|hex| u8::from_str_radix(hex, 16).ok());
        match escaped {
            Some(byte) => {
                out.push(byte);
                i += 3;
            }
            None => {
                out.push(bytes[i]);
                i += 1;
            }
        }
    }
    String::from_utf8_lossy(&out).into_owned()
}

// ---------------------------------------------------------------------------
// Debian packages

/// `apt-get download PKG=VER` in a private directory beside `dest`, then move the
/// single .deb into place and verify it against the recipe's pin. apt checks the
/// file against the signed archive index too; our check catches a recipe whose
/// pin disagrees with the archive.
fn fetch_deb(
    filename: &str,
    package: &str,
    version: &str,
    expected: &Checksum,
    dest: &Path,
    progress: &mut dyn FnMut(u64, Option<u64>),
) -> Result<(), SourceError> {
    let apt_cache = apt_archives_dir();
    if from_apt_cache(&apt_cache, filename, expected, dest)? {
        let size = fs::metadata(dest).map(|m| m.len()).map_err(io_err(dest))?;
        progress(size, Some(size));
        return Ok(());
    }
    let work = ScratchDir::beside(dest)?;
    run_apt_download(package, version, work.path(), &apt_cache)?;
    let deb = single_deb(work.path(), package, version)?;
    fs::rename(&deb, dest).map_err(io_err(dest))?;
    let size = fs::metadata(dest).map(|m| m.len()).map_err(io_err(dest))?;
    progress(size, Some(size));
    let verified = verify_file(dest, expected).map_err(|err| match err {
        SourceError::ChecksumMismatch {
            expected, actual, ..
        } => SourceError::ChecksumMismatch {
            filename: filename.to_string(),
            url: format!("apt-get download {package}={version}"),
            expected,
            actual,
        },
        other => other,
    });
    if verified.is_err() {
        remove_any(dest);
    }
    verified
}

/// apt's own cache of downloaded packages (`Dir::Cache::archives`, as `apt-config` reads it,
/// so `APT_CONFIG` and apt.conf.d count); `/var/cache/apt/archives` where apt-config fails.
pub fn apt_archives_dir() -> PathBuf {
    let asked = Command::new("apt-config").args(["shell", "ARCHIVES", "Dir::Cache::archives/d"]).env("LC_ALL", "C").output();
    let parsed = asked.ok().filter(|o| o.status.success()).and_then(|o| {
        let text = String::from_utf8(o.stdout).ok()?;
        let value = text.trim().strip_prefix("ARCHIVES=")?.trim_matches('\'').to_string();
        (!value.is_empty()).then(|| PathBuf::from(value))
    });
    parsed.unwrap_or_else(|| PathBuf::from("/var/cache/apt/archives"))
}

/// A `.deb` apt downloaded before (apt names it as forge does: `PKG_VER_ARCH.deb`, the
/// epoch's colon as `%3a`), copied to `dest` when its checksum is the pin. apt's cache keeps
/// versions the archive has dropped since, until `apt-get clean`.
fn from_apt_cache(apt_cache: &Path, filename: &str, expected: &Checksum, dest: &Path) -> Result<bool, SourceError> {
    let cached = apt_cache.join(filename);
    if !cached.is_file() {
        return Ok(false);
    }
    fs::copy(&cached, dest).map_err(io_err(dest))?;
    if verify_file(dest, expected).is_ok() {
        return Ok(true);
    }
    // Another file under that name: not ours. The archive may still have the real one.
    remove_any(dest);
    Ok(false)
}

/// The version of `package` that apt would install now, and the SHA256 and architecture the
/// signed index publishes for it (what `forge prefetch --update-debs` pins).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct IndexedDeb {
    pub version: String,
    pub sha256: Checksum,
    pub arch: String,
}

/// The candidate: what apt would install now.
pub fn indexed_deb(package: &str) -> Result<IndexedDeb, SourceError> {
    indexed_version(package, None)
}

/// `package` at `version` as the signed index lists it, if it still does (`Ok(None)`: gone).
pub fn indexed_deb_version(package: &str, version: &str) -> Result<Option<IndexedDeb>, SourceError> {
    match indexed_version(package, Some(version)) {
        Ok(found) => Ok(Some(found)),
        Err(SourceError::NotInIndex { .. }) => Ok(None),
        Err(other) => Err(other),
    }
}

fn indexed_version(package: &str, version: Option<&str>) -> Result<IndexedDeb, SourceError> {
    let apt_cache = |args: &[&str]| -> Result<String, SourceError> {
        let out = Command::new("apt-cache").args(args).env("LC_ALL", "C").output().map_err(|e| SourceError::AptMissing {
            package: package.to_string(),
            version: String::new(),
            reason: e.to_string(),
        })?;
        Ok(String::from_utf8_lossy(&out.stdout).into_owned())
    };
    let missing = |detail: String| SourceError::NotInIndex { package: package.to_string(), detail };
    let version = match version {
        Some(version) => version.to_string(),
        None => apt_cache(&["policy", package])?
            .lines()
            .find_map(|l| l.trim().strip_prefix("Candidate:"))
            .map(str::trim)
            .filter(|v| !v.is_empty() && *v != "(none)")
            .ok_or_else(|| missing(String::new()))?
            .to_string(),
    };
    let show = apt_cache(&["show", &format!("{package}={version}")])?;
    // The first stanza of that version with a SHA256: an installed package's record (from
    // dpkg's status) has none, and several suites may list the same version.
    let stanza = show
        .split("\n\n")
        .find(|stanza| stanza.lines().any(|l| l.strip_prefix("Version:").map(str::trim) == Some(version.as_str())) && stanza.lines().any(|l| l.starts_with("SHA256:")))
        .ok_or_else(|| missing(format!(": the index has no downloadable version {version}")))?;
    let field = |name: &str| stanza.lines().find_map(|l| l.strip_prefix(name)).map(|v| v.trim().to_string());
    let sha256 = field("SHA256:").and_then(|hex| Checksum::parse("sha256", &hex).ok()).ok_or_else(|| missing(format!(": the index lists {version} with a malformed SHA256")))?;
    let arch = field("Architecture:").unwrap_or_else(|| "amd64".into());
    Ok(IndexedDeb { version, sha256, arch })
}

/// `apt_cache` is only named in the error (where else forge looked).
fn run_apt_download(package: &str, version: &str, dir: &Path, apt_cache: &Path) -> Result<(), SourceError> {
    let output = Command::new("apt-get")
        .args(["download", "-q"])
        .arg(format!("{package}={version}"))
        .current_dir(dir)
        .env("LC_ALL", "C")
        .output()
        .map_err(|e| SourceError::AptMissing {
            package: package.to_string(),
            version: version.to_string(),
            reason: e.to_string(),
        })?;
    if output.status.success() {
        return Ok(());
    }
    Err(SourceError::DebUnavailable {
        package: package.to_string(),
        version: version.to_string(),
        stderr: String::from_utf8_lossy(&output.stderr).trim().to_string(),
        apt_cache: apt_cache.display().to_string(),
    })
}

fn single_deb(dir: &Path, package: &str, version: &str) -> Result<PathBuf, SourceError> {
    let mut debs: Vec<PathBuf> = fs::read_dir(dir)
        .map_err(io_err(dir))?
        .filter_map(|entry| entry.ok().map(|e| e.path()))
        .filter(|p| p.extension().is_some_and(|ext| ext == "deb"))
        .collect();
    if debs.len() != 1 {
        return Err(SourceError::DebAmbiguous {
            package: package.to_string(),
            version: version.to_string(),
            found: debs.len(),
        });
    }
    Ok(debs.remove(0))
}

/// A directory created beside a destination (same file system, so a rename into
/// place is atomic) and removed when dropped.
struct ScratchDir(PathBuf);

impl ScratchDir {
    fn beside(dest: &Path) -> Result<ScratchDir, SourceError> {
        static COUNTER: AtomicU64 = AtomicU64::new(0);
        let parent = dest
            .parent()
            .filter(|p| !p.as_os_str().is_empty())
            .unwrap_or(Path::new("."));
        let name = format!(
            ".forge-fetch-{}-{}",
            std::process::id(),
            COUNTER.fetch_add(1, Ordering::Relaxed)
        );
        let path = parent.join(name);
        fs::create_dir(&path).map_err(io_err(&path))?;
        Ok(ScratchDir(path))
    }
    fn path(&self) -> &Path {
        &self.0
    }
}

impl Drop for ScratchDir {
    fn drop(&mut self) {
        let _ = fs::remove_dir_all(&self.0);
    }
}

// ---------------------------------------------------------------------------
// Hashing

/// Incremental hasher for whichever algorithm a checksum uses.
enum Hasher {
    Sha256(sha2::Sha256),
    Md5(md5::Md5),
    Blake3(Box<blake3::Hasher>),
}

impl Hasher {
    fn like(expected: &Checksum) -> Hasher {
        use md5::Digest as _;
        match expected {
            Checksum::Sha256(_) => Hasher::Sha256(sha2::Sha256::new()),
            Checksum::Md5(_) => Hasher::Md5(md5::Md5::new()),
            Checksum::Blake3(_) => Hasher::Blake3(Box::new(blake3::Hasher::new())),
        }
    }
    fn update(&mut self, bytes: &[u8]) {
        use md5::Digest as _;
        match self {
            Hasher::Sha256(h) => h.update(bytes),
            Hasher::Md5(h) => h.update(bytes),
            Hasher::Blake3(h) => {
                h.update(bytes);
            }
        }
    }
    fn finish(self) -> Checksum {
        use md5::Digest as _;
        match self {
            Hasher::Sha256(h) => Checksum::Sha256(h.finalize().into()),
            Hasher::Md5(h) => Checksum::Md5(h.finalize().into()),
            Hasher::Blake3(h) => Checksum::Blake3(h.finalize().into()),
        }
    }
}

/// The BLAKE3 tree hash planning computed for `file` sources (see [`crate::tree`]).
fn tree_hash(path: &Path) -> Result<Digest, SourceError> {
    crate::tree::hash_path(path)
        .map(|summary| summary.digest)
        .map_err(|e| SourceError::Hash { path: path.to_path_buf(), reason: e.to_string() })
}

// ---------------------------------------------------------------------------
// Local copies

/// Copy a file, symlink or directory tree to `dest` (which must not exist),
/// keeping symlinks as symlinks and the executable bit of files.
fn copy_preserving(src: &Path, dest: &Path) -> Result<(), SourceError> {
    let meta = fs::symlink_metadata(src).map_err(io_err(src))?;
    let kind = meta.file_type();
    if kind.is_symlink() {
        let target = fs::read_link(src).map_err(io_err(src))?;
        std::os::unix::fs::symlink(target, dest).map_err(io_err(dest))
    } else if kind.is_dir() {
        fs::create_dir(dest).map_err(io_err(dest))?;
        for entry in fs::read_dir(src).map_err(io_err(src))? {
            let entry = entry.map_err(io_err(src))?;
            copy_preserving(&entry.path(), &dest.join(entry.file_name()))?;
        }
        Ok(())
    } else if kind.is_file() {
        fs::copy(src, dest).map_err(io_err(dest)).map(|_| ())
    } else {
        Err(SourceError::Hash {
            path: src.to_path_buf(),
            reason: "a file source may contain only files, directories and symlinks".to_string(),
        })
    }
}

fn remove_any(path: &Path) {
    let result = match fs::symlink_metadata(path) {
        Ok(meta) if meta.is_dir() => fs::remove_dir_all(path),
        Ok(_) => fs::remove_file(path),
        Err(_) => Ok(()),
    };
    // Best effort: the caller already reports the error that made us clean up.
    let _ = result;
}

fn file_name_of(path: &Path) -> String {
    path.file_name()
        .map(|n| n.to_string_lossy().into_owned())
        .unwrap_or_else(|| path.display().to_string())
}

// ---------------------------------------------------------------------------
// Registering by content

/// The three names a source file can be pinned by, computed in one pass.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ContentIds {
    pub sha256: Checksum,
    pub md5: Checksum,
    /// BLAKE3 of the bytes: the tree hash of a single-file root (see [`crate::tree`]).
    pub blake3: Checksum,
    pub size: u64,
}

impl ContentIds {
    pub fn all(&self) -> [&Checksum; 3] {
        [&self.sha256, &self.md5, &self.blake3]
    }
    /// The checksum of the same algorithm as `other`.
    pub fn like(&self, other: &Checksum) -> &Checksum {
        match other {
            Checksum::Sha256(_) => &self.sha256,
            Checksum::Md5(_) => &self.md5,
            Checksum::Blake3(_) => &self.blake3,
        }
    }
}

/// sha256, md5 and blake3 of a regular file, streamed.
pub fn content_ids(path: &Path) -> Result<ContentIds, SourceError> {
    let meta = fs::metadata(path).map_err(io_err(path))?;
    if !meta.is_file() {
        return Err(SourceError::NotAFile { path: path.to_path_buf() });
    }
    let mut file = File::open(path).map_err(io_err(path))?;
    let mut hashers = [
        Hasher::like(&Checksum::Sha256([0; 32])),
        Hasher::like(&Checksum::Md5([0; 16])),
        Hasher::like(&Checksum::Blake3(Digest([0; 32]))),
    ];
    let mut buf = vec![0u8; CHUNK];
    let mut size = 0u64;
    loop {
        let n = file.read(&mut buf).map_err(io_err(path))?;
        if n == 0 {
            break;
        }
        size += n as u64;
        hashers.iter_mut().for_each(|h| h.update(&buf[..n]));
    }
    let [sha256, md5, blake3] = hashers.map(Hasher::finish);
    Ok(ContentIds { sha256, md5, blake3, size })
}

/// What [`store_by_content`] did.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Stored {
    pub ids: ContentIds,
    /// The names it was not known by before (empty: it was fully present already).
    pub added: Vec<Checksum>,
}

/// Register the regular file `file` in the store under its sha256, md5 and blake3, so a
/// recipe pinning any of them finds it. The bytes are stored once: the md5 and blake3 names
/// are hard links to the sha256 one (a copy where the file system refuses links). A file
/// inside `STORE/tmp` is moved, any other is copied. `expected`, when given, must be one of
/// the three (a download verified against its pin); otherwise nothing is stored.
pub fn store_by_content(store: &Store, file: &Path, expected: Option<&Checksum>) -> Result<Stored, SourceError> {
    let ids = content_ids(file)?;
    if let Some(expected) = expected {
        let actual = ids.like(expected);
        if actual != expected {
            return Err(SourceError::ChecksumMismatch {
                filename: file_name_of(file),
                url: format!("file://{}", file.display()),
                expected: expected.clone(),
                actual: actual.clone(),
            });
        }
    }
    let mut added = Vec::new();
    let primary = store.source_path(&ids.sha256);
    if !store.has_source(&ids.sha256) {
        store.add_source(file, &ids.sha256)?;
        added.push(ids.sha256.clone());
    }
    for alias in [&ids.md5, &ids.blake3] {
        if !store.has_source(alias) {
            add_alias(store, &primary, alias)?;
            added.push(alias.clone());
        }
    }
    Ok(Stored { ids, added })
}

/// Register `primary` (already in `sources/`) under another checksum too, by hard link.
fn add_alias(store: &Store, primary: &Path, alias: &Checksum) -> Result<(), SourceError> {
    let scratch = store.scratch_dir("alias")?;
    let link = scratch.path().join("source");
    match fs::hard_link(primary, &link) {
        // Inside STORE/tmp, so add_source renames the link into place: no second copy.
        Ok(()) => store.add_source(&link, alias)?,
        Err(_) => store.add_source(primary, alias)?,
    };
    Ok(())
}

/// Download the first of `locations` that answers (no checksum to verify against: this is
/// how a pin is made) into `dest` (a new file), returning its sha256.
pub fn download_unpinned(
    filename: &str,
    locations: &[&str],
    dest: &Path,
    progress: &mut dyn FnMut(u64, Option<u64>),
) -> Result<Checksum, SourceError> {
    refuse_existing(dest)?;
    let like = Checksum::Sha256([0; 32]);
    let mut failures = Vec::new();
    for url in locations {
        let attempt = open_url(url).and_then(|(mut reader, total)| {
            let mut out = OpenOptions::new().write(true).create_new(true).open(dest).map_err(io_err(dest))?;
            let sha256 = copy_hashing(&mut *reader, &mut out, &like, dest, url, total, progress)?;
            out.sync_all().map_err(io_err(dest))?;
            Ok(sha256)
        });
        match attempt {
            Ok(sha256) => return Ok(sha256),
            Err(err) => {
                remove_any(dest);
                failures.push(err);
            }
        }
    }
    if failures.len() == 1 {
        return Err(failures.remove(0));
    }
    Err(SourceError::AllLocationsFailed { filename: filename.to_string(), failures })
}

// ---------------------------------------------------------------------------
// Fetching many sources

/// One source to make present, and who wants it (for messages).
#[derive(Clone, Debug)]
pub struct FetchItem {
    pub package: String,
    pub source: Source,
}

/// What happened to one [`FetchItem`].
#[derive(Debug)]
pub enum FetchOutcome {
    /// Already in the store under its pinned checksum: nothing downloaded.
    Present,
    Fetched { size: u64 },
    Failed(FetchError),
}

/// A failed fetch, with everything needed to act on it.
#[derive(Debug, thiserror::Error)]
#[error("{at}: package {package}: cannot fetch {filename}\n  {}\n  what to do: {}", indent(&error.to_string()), advice(error, &at.file, package))]
pub struct FetchError {
    /// Where the `[[source]]` is written (recipe or overlay file).
    pub at: Location,
    pub package: String,
    pub filename: String,
    pub error: SourceError,
}

fn indent(text: &str) -> String {
    text.replace('\n', "\n  ")
}

/// The next step for the user, by kind of failure.
fn advice(error: &SourceError, file: &Path, package: &str) -> String {
    match error {
        SourceError::ChecksumMismatch { .. } => format!(
            "if the new file is right (check it against the publisher's announcement), pin it with \
             `forge prefetch --repin {} -p {package}`",
            file.display()
        ),
        SourceError::AllLocationsFailed { failures, .. }
            if failures.iter().any(|f| matches!(f, SourceError::ChecksumMismatch { .. })) =>
        {
            advice(&failures[0], file, package)
        }
        SourceError::DebUnavailable { .. } | SourceError::AptMissing { .. } | SourceError::DebAmbiguous { .. } => {
            "see the apt message above".to_string()
        }
        _ => "check the URL and the network (add `mirrors = [...]` to the source); on an offline machine, \
              download the file elsewhere and register it with `forge source add FILE`"
            .to_string(),
    }
}

/// Progress of the downloads of [`fetch_missing`], by index into its `items`.
pub enum FetchEvent<'a> {
    Started { item: usize, filename: &'a str },
    Bytes { item: usize, done: u64, total: Option<u64> },
    Finished { item: usize, outcome: &'a FetchOutcome },
}

/// Make every item's source present in the store: skip those already there, download the
/// others (`jobs` at once; URL, then mirrors), verify them against their pin and register them
/// by content. A failure does not stop the others. Returns one outcome per item, in order.
pub fn fetch_missing(
    store: &Store,
    items: &[FetchItem],
    jobs: usize,
    observe: &(dyn Fn(FetchEvent<'_>) + Sync),
) -> Vec<FetchOutcome> {
    let next = AtomicU64::new(0);
    let slots: Vec<std::sync::Mutex<Option<FetchOutcome>>> = items.iter().map(|_| Default::default()).collect();
    let worker = || loop {
        let i = next.fetch_add(1, Ordering::Relaxed) as usize;
        let Some(item) = items.get(i) else { break };
        let outcome = fetch_item(store, i, item, observe);
        observe(FetchEvent::Finished { item: i, outcome: &outcome });
        if let Ok(mut slot) = slots[i].lock() {
            *slot = Some(outcome);
        }
    };
    std::thread::scope(|scope| {
        for _ in 1..jobs.max(1) {
            // Fewer helpers if the system refuses threads: this thread works too.
            let _ = std::thread::Builder::new().spawn_scoped(scope, worker);
        }
        worker();
    });
    slots
        .into_iter()
        .zip(items)
        .map(|(slot, item)| {
            // Empty only if the worker panicked (scope re-raises that panic anyway).
            slot.into_inner().ok().flatten().unwrap_or_else(|| {
                FetchOutcome::Failed(FetchError {
                    at: item.source.at.clone(),
                    package: item.package.clone(),
                    filename: item.source.filename.clone(),
                    error: SourceError::Download { url: String::new(), reason: "internal error: the fetch worker stopped".into() },
                })
            })
        })
        .collect()
}

fn fetch_item(store: &Store, i: usize, item: &FetchItem, observe: &(dyn Fn(FetchEvent<'_>) + Sync)) -> FetchOutcome {
    let source = &item.source;
    let fail = |error: SourceError| {
        FetchOutcome::Failed(FetchError {
            at: source.at.clone(),
            package: item.package.clone(),
            filename: source.filename.clone(),
            error,
        })
    };
    let Some(checksum) = &source.checksum else {
        return fail(SourceError::MissingChecksum { filename: source.filename.clone() });
    };
    if store.has_source(checksum) {
        return FetchOutcome::Present;
    }
    observe(FetchEvent::Started { item: i, filename: &source.filename });
    let result = store.scratch_dir("fetch").map_err(SourceError::from).and_then(|scratch| {
        let dest = scratch.path().join(&source.filename);
        fetch(source, &dest, &mut |done, total| observe(FetchEvent::Bytes { item: i, done, total }))?;
        store_by_content(store, &dest, Some(checksum))
    });
    match result {
        Ok(stored) => FetchOutcome::Fetched { size: stored.ids.size },
        Err(error) => fail(error),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::recipe::Location;
    use std::collections::HashMap;
    use std::io::{BufRead, BufReader};
    use std::net::TcpListener;

    /// A route of the test server: status code, body, and a Content-Length that
    /// may lie (to simulate a truncated transfer).
    #[derive(Clone)]
    struct Route {
        status: u16,
        body: Vec<u8>,
        claimed_len: Option<usize>,
    }

    fn ok(body: &[u8]) -> Route {
        Route {
            status: 200,
            body: body.to_vec(),
            claimed_len: None,
        }
    }

    /// A tiny HTTP/1.0-style server on 127.0.0.1 serving fixed routes; unknown paths 404.
    fn serve(routes: HashMap<&'static str, Route>) -> String {
        let listener = TcpListener::bind("127.0.0.1:0").unwrap();
        let base = format!("http://{}", listener.local_addr().unwrap());
        std::thread::spawn(move || {
            for stream in listener.incoming() {
                let Ok(mut stream) = stream else { continue };
                let mut reader = BufReader::new(stream.try_clone().unwrap());
                let mut request_line = String::new();
                reader.read_line(&mut request_line).unwrap();
                loop {
                    let mut header = String::new();
                    if reader.read_line(&mut header).unwrap() == 0 || header == "\r\n" {
                        break;
                    }
                }
                let path = request_line
                    .split_whitespace()
                    .nth(1)
                    .unwrap_or("/")
                    .to_string();
                let route = routes.get(path.as_str()).cloned().unwrap_or(Route {
                    status: 404,
                    body: b"not found".to_vec(),
                    claimed_len: None,
                });
                let len = route.claimed_len.unwrap_or(route.body.len());
                let head = format!(
                    "HTTP/1.1 {} X\r\nContent-Length: {len}\r\nConnection: close\r\n\r\n",
                    route.status
                );
                let _ = stream.write_all(head.as_bytes());
                let _ = stream.write_all(&route.body);
            }
        });
        base
    }

    fn sha256_of(bytes: &[u8]) -> Checksum {
        Checksum::Sha256([0; 32]).compute_like(bytes)
    }

    fn url_source(url: &str, mirrors: &[String], checksum: Checksum) -> Source {
        Source {
            kind: SourceKind::Url {
                url: url.to_string(),
                mirrors: mirrors.to_vec(),
            },
            filename: "hello.tar.gz".to_string(),
            checksum: Some(checksum),
            at: Location {
                file: "test.toml".into(),
                line: 1,
                column: 1,
            },
        }
    }

    #[test]
    fn downloads_and_verifies_with_progress() {
        let body = b"forge source bytes".repeat(10_000);
        let base = serve(HashMap::from([("/hello.tar.gz", ok(&body))]));
        let dir = tempfile::tempdir().unwrap();
        let dest = dir.path().join("hello.tar.gz");
        let mut seen = Vec::new();
        let source = url_source(&format!("{base}/hello.tar.gz"), &[], sha256_of(&body));
        fetch(&source, &dest, &mut |done, total| seen.push((done, total))).unwrap();
        assert_eq!(fs::read(&dest).unwrap(), body);
        assert_eq!(seen.first(), Some(&(0, Some(body.len() as u64))));
        assert_eq!(
            seen.last(),
            Some(&(body.len() as u64, Some(body.len() as u64)))
        );
    }

    #[test]
    fn mismatch_names_both_checksums_and_leaves_nothing() {
        let base = serve(HashMap::from([("/hello.tar.gz", ok(b"tampered"))]));
        let dir = tempfile::tempdir().unwrap();
        let dest = dir.path().join("hello.tar.gz");
        let expected = sha256_of(b"original");
        let source = url_source(&format!("{base}/hello.tar.gz"), &[], expected.clone());
        let err = fetch(&source, &dest, &mut |_, _| {}).unwrap_err();
        let message = err.to_string();
        match err {
            SourceError::ChecksumMismatch {
                expected: e,
                actual,
                url,
                filename,
            } => {
                assert_eq!(e, expected);
                assert_eq!(actual, sha256_of(b"tampered"));
                assert!(url.ends_with("/hello.tar.gz"));
                assert_eq!(filename, "hello.tar.gz");
            }
            other => panic!("expected ChecksumMismatch, got {other:?}"),
        }
        assert!(message.contains(&expected.hex()), "{message}");
        assert!(message.contains(&sha256_of(b"tampered").hex()), "{message}");
        assert!(message.contains("`sha256` key"), "{message}");
        assert!(!dest.exists());
    }

    #[test]
    fn a_404_falls_through_to_the_next_mirror() {
        let body = b"from the mirror";
        let base = serve(HashMap::from([("/mirror/hello.tar.gz", ok(body))]));
        let dir = tempfile::tempdir().unwrap();
        let dest = dir.path().join("hello.tar.gz");
        let source = url_source(
            &format!("{base}/gone/hello.tar.gz"),
            &[format!("{base}/mirror/hello.tar.gz")],
            sha256_of(body),
        );
        fetch(&source, &dest, &mut |_, _| {}).unwrap();
        assert_eq!(fs::read(&dest).unwrap(), body);
    }

    #[test]
    fn every_failed_location_is_reported() {
        let base = serve(HashMap::from([("/bad/hello.tar.gz", ok(b"wrong bytes"))]));
        let dir = tempfile::tempdir().unwrap();
        let dest = dir.path().join("hello.tar.gz");
        let missing = format!("{base}/gone/hello.tar.gz");
        let bad = format!("{base}/bad/hello.tar.gz");
        let source = url_source(
            &missing,
            std::slice::from_ref(&bad),
            sha256_of(b"right bytes"),
        );
        let err = fetch(&source, &dest, &mut |_, _| {}).unwrap_err();
        let message = err.to_string();
        assert!(
            matches!(&err, SourceError::AllLocationsFailed { failures, .. } if failures.len() == 2)
        );
        assert!(
            message.contains(&format!("download of {missing} failed: HTTP 404")),
            "{message}"
        );
        assert!(
            message.contains(&format!("checksum mismatch for hello.tar.gz from {bad}")),
            "{message}"
        );
        assert!(!dest.exists());
    }

    #[test]
    fn a_truncated_transfer_is_a_download_error() {
        let route = Route {
            status: 200,
            body: b"short".to_vec(),
            claimed_len: Some(100),
        };
        let base = serve(HashMap::from([("/t", route)]));
        let dir = tempfile::tempdir().unwrap();
        let dest = dir.path().join("t");
        let source = url_source(&format!("{base}/t"), &[], sha256_of(b"short"));
        let err = fetch(&source, &dest, &mut |_, _| {}).unwrap_err();
        assert!(matches!(err, SourceError::Download { .. }), "{err:?}");
        assert!(!dest.exists());
    }

    #[test]
    fn file_urls_are_read_locally_and_percent_decoded() {
        let dir = tempfile::tempdir().unwrap();
        let src = dir.path().join("with space.txt");
        fs::write(&src, b"local bytes").unwrap();
        let url = format!("file://{}", src.display()).replace(' ', "%20");
        let dest = dir.path().join("out.txt");
        fetch(
            &url_source(&url, &[], sha256_of(b"local bytes")),
            &dest,
            &mut |_, _| {},
        )
        .unwrap();
        assert_eq!(fs::read(&dest).unwrap(), b"local bytes");
    }

    #[test]
    fn unsupported_schemes_and_file_sources_are_refused() {
        let dir = tempfile::tempdir().unwrap();
        let dest = dir.path().join("x");
        let ftp = url_source("ftp://example.invalid/x", &[], sha256_of(b""));
        assert!(matches!(
            fetch(&ftp, &dest, &mut |_, _| {}),
            Err(SourceError::UnsupportedScheme { .. })
        ));
        let mut local = ftp.clone();
        local.kind = SourceKind::File {
            path: dir.path().to_path_buf(),
        };
        assert!(matches!(
            fetch(&local, &dest, &mut |_, _| {}),
            Err(SourceError::NotFetchable { .. })
        ));
    }

    #[test]
    fn verify_file_supports_each_algorithm() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("f");
        fs::write(&path, b"abc").unwrap();
        let md5 = Checksum::Md5([0; 16]).compute_like(b"abc");
        assert_eq!(md5.hex(), "900150983cd24fb0d6963f7d28e17f72");
        for good in [sha256_of(b"abc"), md5, Checksum::Blake3(Digest::of(b"abc"))] {
            verify_file(&path, &good).unwrap();
        }
        let bad = Checksum::Blake3(Digest::of(b"abd"));
        assert!(matches!(
            verify_file(&path, &bad),
            Err(SourceError::ChecksumMismatch { .. })
        ));
    }

    #[test]
    fn percent_decoding_keeps_malformed_escapes() {
        assert_eq!(percent_decode("/a%20b%2"), "/a b%2");
        assert_eq!(percent_decode("%zz%41"), "%zzA");
    }

    fn sample_tree(root: &Path) {
        fs::create_dir_all(root.join("src/sub")).unwrap();
        fs::write(root.join("src/main.c"), b"int main(void){return 0;}\n").unwrap();
        fs::write(root.join("src/sub/data"), b"data").unwrap();
        std::os::unix::fs::symlink("main.c", root.join("src/link.c")).unwrap();
    }

    #[test]
    fn stage_local_copies_directories_keeping_symlinks() {
        let dir = tempfile::tempdir().unwrap();
        sample_tree(dir.path());
        let src = dir.path().join("src");
        let planned = tree_hash(&src).unwrap();
        let dest = dir.path().join("staged");
        stage_local(&src, &dest, &planned).unwrap();
        assert_eq!(
            fs::read_link(dest.join("link.c")).unwrap(),
            PathBuf::from("main.c")
        );
        assert_eq!(fs::read(dest.join("sub/data")).unwrap(), b"data");
        assert_eq!(tree_hash(&dest).unwrap(), planned);
    }

    #[test]
    fn stage_local_refuses_a_source_changed_since_planning() {
        let dir = tempfile::tempdir().unwrap();
        sample_tree(dir.path());
        let src = dir.path().join("src");
        let planned = tree_hash(&src).unwrap();
        fs::write(src.join("sub/data"), b"edited").unwrap();
        let dest = dir.path().join("staged");
        let err = stage_local(&src, &dest, &planned).unwrap_err();
        match &err {
            SourceError::LocalChanged { path, expected, .. } => {
                assert_eq!(path, &src);
                assert_eq!(expected, &planned);
            }
            other => panic!("expected LocalChanged, got {other:?}"),
        }
        assert!(err.to_string().contains(&planned.to_hex()));
        assert!(!dest.exists());
    }

    #[test]
    fn an_existing_destination_is_refused_and_left_alone() {
        let dir = tempfile::tempdir().unwrap();
        let dest = dir.path().join("taken");
        fs::write(&dest, b"precious").unwrap();
        let src = dir.path().join("src.txt");
        fs::write(&src, b"new").unwrap();
        let url = format!("file://{}", src.display());
        let err = fetch(
            &url_source(&url, &[], sha256_of(b"new")),
            &dest,
            &mut |_, _| {},
        );
        assert!(matches!(err, Err(SourceError::Io { .. })), "{err:?}");
        let err = stage_local(&src, &dest, &tree_hash(&src).unwrap());
        assert!(matches!(err, Err(SourceError::Io { .. })), "{err:?}");
        assert_eq!(fs::read(&dest).unwrap(), b"precious");
    }

    #[test]
    fn stage_local_handles_a_single_file() {
        let dir = tempfile::tempdir().unwrap();
        let src = dir.path().join("fix.patch");
        fs::write(&src, b"--- a\n+++ b\n").unwrap();
        let dest = dir.path().join("staged.patch");
        stage_local(&src, &dest, &tree_hash(&src).unwrap()).unwrap();
        assert_eq!(fs::read(&dest).unwrap(), b"--- a\n+++ b\n");
    }

    #[test]
    fn store_by_content_links_one_copy_under_three_names() {
        use std::os::unix::fs::MetadataExt;
        let dir = tempfile::tempdir().unwrap();
        let store = Store::open(&dir.path().join("store")).unwrap();
        let file = dir.path().join("lfs-sources.tar");
        fs::write(&file, b"one copy").unwrap();
        let stored = store_by_content(&store, &file, None).unwrap();
        assert_eq!(stored.added.len(), 3);
        assert_eq!(stored.ids.sha256, sha256_of(b"one copy"));
        assert_eq!(stored.ids.md5, Checksum::Md5([0; 16]).compute_like(b"one copy"));
        let inode = |c: &Checksum| fs::metadata(store.source_path(c)).unwrap().ino();
        assert_eq!(inode(&stored.ids.sha256), inode(&stored.ids.md5));
        assert_eq!(inode(&stored.ids.sha256), inode(&stored.ids.blake3));
        assert_eq!(stored.ids.blake3, Checksum::Blake3(Digest::of(b"one copy")));
        // A second registration adds nothing; a wrong expected checksum stores nothing.
        assert!(store_by_content(&store, &file, None).unwrap().added.is_empty());
        fs::write(&file, b"other bytes").unwrap();
        let err = store_by_content(&store, &file, Some(&sha256_of(b"one copy"))).unwrap_err();
        assert!(matches!(err, SourceError::ChecksumMismatch { .. }), "{err:?}");
        assert!(!store.has_source(&sha256_of(b"other bytes")));
    }
}
