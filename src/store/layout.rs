//! The on-disk layout of a store (`forge-store-v1`), its location rule, scratch directories
//! and forced removal of read-only trees.
//!
//! ```text
//! STORE/VERSION              "forge-store-v1\n"
//!       db.sqlite            metadata (store-schema.sql + migrations), WAL mode
//!       objects/<outhex>/    normalized, read-only output trees
//!       sources/<algo>-<hex> verified source files (or trees), read-only
//!       logs/<id>-<name>.log build logs
//!       tmp/                 scratch space on the same file system as objects/
//!       failed/              failed builds kept by `--keep-failed` (never touched by gc)
//!       locks/               flock files: store.lock, drv-<hex>.lock, out-<hex>.lock
//! ```

use std::ffi::OsString;
use std::fs;
use std::io::{self, Write};
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU64, Ordering};

use super::lock::FileLock;
use super::StoreError;

/// Content of the `VERSION` file; a store with anything else is refused.
pub const STORE_FORMAT: &str = "forge-store-v1";

pub(crate) const VERSION_FILE: &str = "VERSION";
pub(crate) const DB_FILE: &str = "db.sqlite";
pub(crate) const OBJECTS: &str = "objects";
pub(crate) const SOURCES: &str = "sources";
pub(crate) const LOGS: &str = "logs";
pub(crate) const TMP: &str = "tmp";
pub(crate) const LOCKS: &str = "locks";
/// Failed builds kept by `forge build --keep-failed` (never touched by gc).
pub(crate) const FAILED: &str = "failed";
const SUBDIRS: [&str; 5] = [OBJECTS, SOURCES, LOGS, TMP, LOCKS];

/// The default store directory: `$FORGE_STORE`, else `$XDG_DATA_HOME/forge`, else
/// `$HOME/.local/share/forge`. (The CLI's `--store` takes precedence over all of these.)
pub fn default_store_dir() -> Result<PathBuf, StoreError> {
    store_dir_from(
        std::env::var_os("FORGE_STORE"),
        std::env::var_os("XDG_DATA_HOME"),
        std::env::var_os("HOME"),
    )
}

/// The location rule on explicit values. Empty variables count as unset, and a relative
/// `XDG_DATA_HOME` is ignored, as the XDG base directory specification requires.
pub(crate) fn store_dir_from(
    forge_store: Option<OsString>,
    xdg_data_home: Option<OsString>,
    home: Option<OsString>,
) -> Result<PathBuf, StoreError> {
    let set = |v: Option<OsString>| v.filter(|v| !v.is_empty()).map(PathBuf::from);
    if let Some(dir) = set(forge_store) {
        return Ok(dir);
    }
    if let Some(xdg) = set(xdg_data_home).filter(|p| p.is_absolute()) {
        return Ok(xdg.join("forge"));
    }
    set(home).map(|h| h.join(".local/share/forge")).ok_or(StoreError::NoStoreDir)
}

/// Create the layout in `dir` if it is missing or empty, or check the `VERSION` of an existing
/// store. Safe to run from several processes at once.
pub(crate) fn init_or_check(dir: &Path) -> Result<(), StoreError> {
    fs::create_dir_all(dir).map_err(StoreError::io("create store directory", dir))?;
    let version_path = dir.join(VERSION_FILE);
    match fs::read_to_string(&version_path) {
        Ok(found) if found.trim_end() == STORE_FORMAT => {}
        Ok(found) => {
            return Err(StoreError::UnknownVersion {
                path: dir.to_path_buf(),
                found: found.trim_end().to_string(),
                expected: STORE_FORMAT,
            })
        }
        Err(e) if e.kind() == io::ErrorKind::NotFound => {
            if !is_empty_or_only_layout(dir)? {
                return Err(StoreError::NotAStore { path: dir.to_path_buf() });
            }
            write_version(dir)?;
        }
        Err(e) => return Err(StoreError::Io { op: "read", path: version_path, source: e }),
    }
    for sub in SUBDIRS {
        let p = dir.join(sub);
        fs::create_dir_all(&p).map_err(StoreError::io("create", &p))?;
    }
    Ok(())
}

/// A directory without VERSION may be initialised only if it holds nothing, or only what a
/// concurrent `open` of the same new store may already have created.
fn is_empty_or_only_layout(dir: &Path) -> Result<bool, StoreError> {
    for entry in fs::read_dir(dir).map_err(StoreError::io("read directory", dir))? {
        let entry = entry.map_err(StoreError::io("read directory", dir))?;
        let name = entry.file_name();
        let known = SUBDIRS.iter().any(|s| name == *s) || name.to_string_lossy().starts_with(".VERSION.");
        if !known {
            return Ok(false);
        }
    }
    Ok(true)
}

/// Write VERSION through a temporary file and a rename, so it is never seen half-written.
fn write_version(dir: &Path) -> Result<(), StoreError> {
    let tmp = dir.join(format!(".VERSION.{}", std::process::id()));
    let mut f = fs::File::create(&tmp).map_err(StoreError::io("create", &tmp))?;
    f.write_all(format!("{STORE_FORMAT}\n").as_bytes())
        .and_then(|()| f.sync_all())
        .map_err(StoreError::io("write", &tmp))?;
    let dest = dir.join(VERSION_FILE);
    fs::rename(&tmp, &dest).map_err(StoreError::io("create", &dest))
}

/// A fresh directory under `STORE/tmp`, removed (with everything in it) on drop unless
/// [`ScratchDir::keep`] is called.
#[derive(Debug)]
pub struct ScratchDir {
    path: PathBuf,
    keep: bool,
    /// The store lock, shared, held while the directory exists so gc leaves it alone.
    _store_lock: Option<FileLock>,
}

impl ScratchDir {
    /// `tmp/LABEL-TOKEN-N`: TOKEN names the owning process (see `residue`).
    pub(crate) fn create(tmp: &Path, label: &str, token: &str, store_lock: Option<FileLock>) -> Result<ScratchDir, StoreError> {
        static COUNTER: AtomicU64 = AtomicU64::new(0);
        let label = sanitize(label);
        loop {
            let n = COUNTER.fetch_add(1, Ordering::Relaxed);
            let path = tmp.join(format!("{label}-{token}-{n}"));
            match fs::create_dir(&path) {
                Ok(()) => return Ok(ScratchDir { path, keep: false, _store_lock: store_lock }),
                // Left by an earlier process with our pid: try the next number.
                Err(e) if e.kind() == io::ErrorKind::AlreadyExists => continue,
                Err(e) => return Err(StoreError::Io { op: "create", path, source: e }),
            }
        }
    }

    pub fn path(&self) -> &Path {
        &self.path
    }

    /// Keep the directory (e.g. to inspect a failed build); gc removes it later.
    pub fn keep(mut self) -> PathBuf {
        self.keep = true;
        self._store_lock = None;
        self.path.clone()
    }
}

impl Drop for ScratchDir {
    fn drop(&mut self) {
        if !self.keep {
            // Drop cannot report errors; whatever is left is a stale tmp entry that gc removes.
            let _ = remove_tree(&self.path);
        }
    }
}

/// Replace anything but `[A-Za-z0-9._+-]` by `_` so a package name can be used in file names.
pub(crate) fn sanitize(name: &str) -> String {
    let s: String = name
        .chars()
        .map(|c| if c.is_ascii_alphanumeric() || "._+-".contains(c) { c } else { '_' })
        .collect();
    if s.is_empty() || s.starts_with('.') { format!("_{s}") } else { s }
}

/// Remove a file, symlink or directory tree even if it is read-only. Only *directories* are
/// made writable on the way: a file may be a hardlink into a store object (sandbox roots are
/// hardlink farms), and chmod-ing it would change the object. Missing paths are fine.
pub(crate) fn remove_tree(path: &Path) -> Result<(), StoreError> {
    // By directory descriptor: a build's scratch tree may be deeper than PATH_MAX.
    crate::fswalk::remove_tree(path).map_err(StoreError::io("remove", path))
}

/// Total size of the regular files under `path` (for gc reports), best effort.
pub(crate) fn tree_size(path: &Path) -> u64 {
    walkdir::WalkDir::new(path)
        .into_iter()
        .filter_map(Result::ok)
        .filter(|e| e.file_type().is_file())
        .filter_map(|e| e.metadata().ok())
        .map(|m| m.len())
        .sum()
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::os::unix::fs::PermissionsExt;

    #[test]
    fn location_rule_prefers_forge_store_then_xdg_then_home() {
        let s = |v: &str| Some(OsString::from(v));
        assert_eq!(store_dir_from(s("/f"), s("/x"), s("/h")).unwrap(), PathBuf::from("/f"));
        assert_eq!(store_dir_from(None, s("/x"), s("/h")).unwrap(), PathBuf::from("/x/forge"));
        assert_eq!(store_dir_from(s(""), s("rel"), s("/h")).unwrap(), PathBuf::from("/h/.local/share/forge"));
        assert!(matches!(store_dir_from(None, None, None), Err(StoreError::NoStoreDir)));
    }

    #[test]
    fn sanitize_keeps_safe_names_and_replaces_the_rest() {
        assert_eq!(sanitize("gcc-pass1_2.0+x"), "gcc-pass1_2.0+x");
        assert_eq!(sanitize("../etc/passwd"), "_.._etc_passwd");
        assert_eq!(sanitize(""), "_");
    }

    #[test]
    fn remove_tree_handles_read_only_dirs_without_touching_file_modes() {
        let tmp = tempfile::TempDir::new().unwrap();
        let outside = tmp.path().join("object-file");
        fs::write(&outside, b"x").unwrap();
        fs::set_permissions(&outside, fs::Permissions::from_mode(0o444)).unwrap();
        let tree = tmp.path().join("tree");
        fs::create_dir_all(tree.join("sub")).unwrap();
        fs::hard_link(&outside, tree.join("sub/link")).unwrap();
        fs::set_permissions(tree.join("sub"), fs::Permissions::from_mode(0o555)).unwrap();
        fs::set_permissions(&tree, fs::Permissions::from_mode(0o555)).unwrap();

        remove_tree(&tree).unwrap();
        assert!(!tree.exists());
        assert_eq!(fs::metadata(&outside).unwrap().permissions().mode() & 0o777, 0o444);
        remove_tree(&tree).unwrap(); // missing is fine
    }
}
