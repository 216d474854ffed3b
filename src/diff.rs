//! Compare two output trees entry by entry (`forge diff`): what was added, removed, or
//! changed in content, executable bit, symlink target or type; unified diffs for text.

use std::collections::BTreeMap;
use std::fs;
use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};

use serde::Serialize;

use crate::hash::Digest;

/// One entry of a tree, as the out hash sees it (names, types, executable bit, content,
/// symlink targets; nothing else).
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
#[serde(tag = "type", rename_all = "lowercase")]
pub enum Entry {
    File { size: u64, executable: bool },
    Symlink { target: String },
    Dir,
}

impl Entry {
    fn kind(&self) -> &'static str {
        match self {
            Entry::File { .. } => "file",
            Entry::Symlink { .. } => "symlink",
            Entry::Dir => "directory",
        }
    }
}

/// How one path differs between tree A and tree B.
#[derive(Debug, Clone, Serialize)]
#[serde(tag = "change", rename_all = "lowercase")]
pub enum Change {
    Added { path: String, entry: Entry },
    Removed { path: String, entry: Entry },
    /// Present in both; `what` lists `type`, `content`, `mode` and/or `symlink target`.
    Changed { path: String, what: Vec<&'static str>, a: Entry, b: Entry },
}

impl Change {
    pub fn path(&self) -> &str {
        match self {
            Change::Added { path, .. } | Change::Removed { path, .. } | Change::Changed { path, .. } => path,
        }
    }
}

#[derive(Debug, thiserror::Error)]
#[error("cannot read {path}: {source}")]
pub struct DiffError {
    path: PathBuf,
    source: std::io::Error,
}

/// Every difference between the trees at `a` and `b`, sorted by path.
pub fn compare(a: &Path, b: &Path) -> Result<Vec<Change>, DiffError> {
    let (left, right) = (entries(a)?, entries(b)?);
    let mut changes = Vec::new();
    for (path, entry) in &left {
        match right.get(path) {
            None => changes.push(Change::Removed { path: path.clone(), entry: entry.clone() }),
            Some(other) => {
                let what = differences(entry, other, &a.join(path), &b.join(path))?;
                if !what.is_empty() {
                    changes.push(Change::Changed { path: path.clone(), what, a: entry.clone(), b: other.clone() });
                }
            }
        }
    }
    for (path, entry) in &right {
        if !left.contains_key(path) {
            changes.push(Change::Added { path: path.clone(), entry: entry.clone() });
        }
    }
    changes.sort_by(|x, y| x.path().cmp(y.path()));
    Ok(changes)
}

fn differences(a: &Entry, b: &Entry, path_a: &Path, path_b: &Path) -> Result<Vec<&'static str>, DiffError> {
    Ok(match (a, b) {
        (Entry::File { size: sa, executable: xa }, Entry::File { size: sb, executable: xb }) => {
            let mut what = Vec::new();
            if sa != sb || file_digest(path_a)? != file_digest(path_b)? {
                what.push("content");
            }
            if xa != xb {
                what.push("mode");
            }
            what
        }
        (Entry::Symlink { target: ta }, Entry::Symlink { target: tb }) if ta != tb => vec!["symlink target"],
        (a, b) if a.kind() != b.kind() => vec!["type"],
        _ => Vec::new(),
    })
}

/// Relative path -> entry, for everything below `root` (the root itself excluded).
fn entries(root: &Path) -> Result<BTreeMap<String, Entry>, DiffError> {
    let mut map = BTreeMap::new();
    for item in walkdir::WalkDir::new(root).min_depth(1) {
        let item = item.map_err(|e| DiffError {
            path: e.path().unwrap_or(root).to_path_buf(),
            source: e.into_io_error().unwrap_or_else(|| std::io::Error::other("file system loop")),
        })?;
        let io = |source| DiffError { path: item.path().to_path_buf(), source };
        let rel = item.path().strip_prefix(root).expect("walkdir stays under its root").to_string_lossy().into_owned();
        let meta = item.path().symlink_metadata().map_err(io)?;
        let entry = if meta.file_type().is_symlink() {
            Entry::Symlink { target: fs::read_link(item.path()).map_err(io)?.to_string_lossy().into_owned() }
        } else if meta.is_dir() {
            Entry::Dir
        } else {
            Entry::File { size: meta.len(), executable: meta.permissions().mode() & 0o111 != 0 }
        };
        map.insert(rel, entry);
    }
    Ok(map)
}

fn file_digest(path: &Path) -> Result<Digest, DiffError> {
    let mut hasher = blake3::Hasher::new();
    hasher.update_mmap(path).map_err(|source| DiffError { path: path.to_path_buf(), source })?;
    Ok(hasher.finalize().into())
}

/// Files larger than this are not diffed as text.
pub const TEXT_DIFF_LIMIT: u64 = 1 << 20;

/// A unified diff of two files if both are text (UTF-8 without NUL, at most
/// [`TEXT_DIFF_LIMIT`] bytes); `None` for anything else.
pub fn text_diff(a: &Path, b: &Path, label_a: &str, label_b: &str) -> Option<String> {
    let read = |p: &Path| -> Option<String> {
        let meta = p.symlink_metadata().ok()?;
        if !meta.is_file() || meta.len() > TEXT_DIFF_LIMIT {
            return None;
        }
        let bytes = fs::read(p).ok()?;
        if bytes.contains(&0) {
            return None;
        }
        String::from_utf8(bytes).ok()
    };
    let (old, new) = (read(a)?, read(b)?);
    let diff = similar::TextDiff::from_lines(&old, &new);
    Some(diff.unified_diff().context_radius(3).header(label_a, label_b).to_string())
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::os::unix::fs::symlink;

    fn tree(dir: &Path, files: &[(&str, &str)]) {
        for (path, content) in files {
            let p = dir.join(path);
            fs::create_dir_all(p.parent().unwrap()).unwrap();
            if let Some(target) = content.strip_prefix("->") {
                symlink(target, &p).unwrap();
            } else {
                fs::write(&p, content).unwrap();
            }
        }
    }

    #[test]
    fn names_every_kind_of_change() {
        let tmp = tempfile::tempdir().unwrap();
        let (a, b) = (tmp.path().join("a"), tmp.path().join("b"));
        tree(&a, &[("same.txt", "x"), ("gone.txt", "x"), ("text.txt", "one\ntwo\n"), ("link", "->same.txt"), ("bin/tool", "#!")]);
        tree(&b, &[("same.txt", "x"), ("new.txt", "x"), ("text.txt", "one\nTWO\n"), ("link", "->new.txt"), ("bin/tool", "#!")]);
        fs::set_permissions(b.join("bin/tool"), fs::Permissions::from_mode(0o755)).unwrap();
        let changes = compare(&a, &b).unwrap();
        let summary: Vec<(String, String)> = changes
            .iter()
            .map(|c| {
                let kind = match c {
                    Change::Added { .. } => "added".to_string(),
                    Change::Removed { .. } => "removed".to_string(),
                    Change::Changed { what, .. } => what.join("+"),
                };
                (c.path().to_string(), kind)
            })
            .collect();
        let expected = [("bin/tool", "mode"), ("gone.txt", "removed"), ("link", "symlink target"), ("new.txt", "added"), ("text.txt", "content")];
        assert_eq!(summary, expected.map(|(p, k)| (p.to_string(), k.to_string())));
        let diff = text_diff(&a.join("text.txt"), &b.join("text.txt"), "a/text.txt", "b/text.txt").unwrap();
        assert!(diff.contains("-two\n+TWO\n"), "{diff}");
        fs::write(a.join("bin/tool"), b"\0\x01binary").unwrap();
        assert!(text_diff(&a.join("bin/tool"), &b.join("bin/tool"), "a", "b").is_none());
        assert!(compare(&a, &a).unwrap().is_empty());
    }
}
