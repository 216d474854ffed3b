//! The Merkle tree hash of store objects and file sources (`forge-tree-v1`,
//! docs/store-format.md), and output normalization.
//!
//! This module owns two versioned policies:
//! - the **tree hash**: a regular file's digest is BLAKE3 of its bytes; a directory's digest is
//!   BLAKE3 over a domain-separated, canonical encoding of its entries sorted by name bytes.
//!   Only names, types, the executable bit, file contents and symlink targets are covered;
//!   mtimes, owners, permission bits other than "any x bit", xattrs and hardlinks are not.
//! - the **normalization** applied to an output before it is hashed and registered: fixed
//!   mtimes, canonical permission bits, xattrs stripped, special files rejected.
//!
//! Both are described byte for byte in docs/store-format.md; changing either means a new
//! format version.

use std::ffi::{CString, OsStr, OsString};
use std::fs::{self, Permissions};
use std::io;
use std::os::unix::ffi::OsStrExt;
use std::os::unix::fs::{FileTypeExt, OpenOptionsExt, PermissionsExt};
use std::path::{Path, PathBuf};

use nix::sys::stat::{utimensat, UtimensatFlags};
use nix::sys::time::TimeSpec;
use rayon::prelude::*;

use crate::hash::Digest;

/// Version tag of the tree-hash format; also the domain-separation prefix of every encoding.
pub const TREE_FORMAT: &str = "forge-tree-v1";

/// Prefix of a directory's encoding: `forge-tree-v1 NUL dir NUL`.
pub(crate) const DIR_DOMAIN: &[u8] = b"forge-tree-v1\0dir\0";
/// Prefix of a root symlink's encoding: `forge-tree-v1 NUL symlink NUL`.
pub(crate) const SYMLINK_DOMAIN: &[u8] = b"forge-tree-v1\0symlink\0";

/// Files larger than this are memory-mapped and hashed with several threads.
const MMAP_THRESHOLD: u64 = 1 << 20;

/// The mtime (and atime) every normalized path gets: 1 s after the epoch, as Nix does
/// (0 is avoided because some tools treat it as "unknown").
pub const NORMALIZED_MTIME_SECS: i64 = 1;
/// Mode of a normalized non-executable file.
pub const FILE_MODE: u32 = 0o444;
/// Mode of a normalized executable file (any x bit was set) and of a normalized directory.
pub const EXEC_MODE: u32 = 0o555;
/// The longest path, relative to the object's root, an output may have (bytes). Below
/// PATH_MAX (4096) by enough room for any prefix forge puts in front of it: the store's own
/// directory, `objects/<hash>/`, a sandbox farm and a staging directory.
pub const MAX_RELATIVE_PATH: usize = 3072;
/// Mode a directory gets while normalization (or registration) still needs to write into it.
const WRITABLE_DIR_MODE: u32 = 0o755;

/// What hashing a tree found: its digest, the number of regular files and their total size.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct TreeSummary {
    pub digest: Digest,
    pub files: u64,
    pub bytes: u64,
}

#[derive(Debug, thiserror::Error)]
pub enum TreeError {
    #[error("cannot {op} {path}: {source}")]
    Io {
        op: &'static str,
        path: PathBuf,
        #[source]
        source: io::Error,
    },
    #[error("{path} is a {kind}: only regular files, directories and symlinks may be hashed or stored")]
    SpecialFile { path: PathBuf, kind: &'static str },
    #[error("{}...: a path in the output is longer than {limit} bytes; the store keeps paths below that length so that every later step (the object directory, a sandbox root, an archive) can reach them; shorten the output's names or nesting", String::from_utf8_lossy(&path.as_os_str().as_bytes()[..path.as_os_str().len().min(200)]))]
    PathTooLong { path: PathBuf, limit: usize },
}

impl TreeError {
    fn io<'a>(op: &'static str, path: &'a Path) -> impl FnOnce(io::Error) -> TreeError + 'a {
        move |source| TreeError::Io { op, path: path.to_path_buf(), source }
    }
}

/// The kinds of entry the tree hash knows; anything else is a [`TreeError::SpecialFile`].
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Kind {
    File,
    Dir,
    Symlink,
}

fn classify(path: &Path, ft: fs::FileType) -> Result<Kind, TreeError> {
    let special = |kind| Err(TreeError::SpecialFile { path: path.to_path_buf(), kind });
    if ft.is_file() {
        Ok(Kind::File)
    } else if ft.is_dir() {
        Ok(Kind::Dir)
    } else if ft.is_symlink() {
        Ok(Kind::Symlink)
    } else if ft.is_fifo() {
        special("fifo")
    } else if ft.is_socket() {
        special("socket")
    } else if ft.is_block_device() {
        special("block device")
    } else if ft.is_char_device() {
        special("character device")
    } else {
        special("file of unknown type")
    }
}

// ---------------------------------------------------------------------------------------------
// Hashing
// ---------------------------------------------------------------------------------------------

/// One child of a directory, ready to be encoded.
struct Entry {
    name: OsString,
    node: Node,
}

enum Node {
    File { digest: Digest, size: u64, executable: bool },
    Dir { digest: Digest, files: u64, bytes: u64 },
    Symlink { target: OsString },
}

impl Node {
    fn files_and_bytes(&self) -> (u64, u64) {
        match self {
            Node::File { size, .. } => (1, *size),
            Node::Dir { files, bytes, .. } => (*files, *bytes),
            Node::Symlink { .. } => (0, 0),
        }
    }
}

/// Hash the file, directory or symlink at `path` (symlinks are not followed) without changing
/// anything. A directory root's digest is its directory digest; a regular-file root's digest
/// is BLAKE3 of its bytes (what `b3sum` prints); a symlink root's digest is
/// BLAKE3(`forge-tree-v1\0symlink\0` || target).
pub fn hash_path(path: &Path) -> Result<TreeSummary, TreeError> {
    let meta = fs::symlink_metadata(path).map_err(TreeError::io("stat", path))?;
    let node = match classify(path, meta.file_type())? {
        Kind::Dir => hash_dir(path)?,
        Kind::File => hash_file(path)?,
        Kind::Symlink => read_symlink(path)?,
    };
    let (files, bytes) = node.files_and_bytes();
    let digest = match node {
        Node::File { digest, .. } | Node::Dir { digest, .. } => digest,
        Node::Symlink { target } => symlink_root_digest(target.as_bytes()),
    };
    Ok(TreeSummary { digest, files, bytes })
}

/// The digest of a symlink that is itself the root of a tree.
pub(crate) fn symlink_root_digest(target: &[u8]) -> Digest {
    let mut h = blake3::Hasher::new();
    h.update(SYMLINK_DOMAIN);
    h.update(target);
    h.finalize().into()
}

fn hash_dir(path: &Path) -> Result<Node, TreeError> {
    let children = list_dir(path)?;
    // Children are hashed in parallel; rayon's work stealing spreads whole subtrees and
    // single files over the pool alike.
    let mut entries = children
        .into_par_iter()
        .map(|(name, kind)| {
            let child = path.join(&name);
            let node = match kind {
                Kind::File => hash_file(&child)?,
                Kind::Dir => hash_dir(&child)?,
                Kind::Symlink => read_symlink(&child)?,
            };
            Ok(Entry { name, node })
        })
        .collect::<Result<Vec<Entry>, TreeError>>()?;
    entries.sort_by(|a, b| a.name.as_bytes().cmp(b.name.as_bytes()));

    let (mut files, mut bytes) = (0, 0);
    let mut h = blake3::Hasher::new();
    h.update(DIR_DOMAIN);
    for entry in &entries {
        let (f, b) = entry.node.files_and_bytes();
        files += f;
        bytes += b;
        encode_entry(&mut h, entry);
    }
    Ok(Node::Dir { digest: h.finalize().into(), files, bytes })
}

/// Append one entry's canonical encoding (docs/store-format.md, "Directory encoding").
fn encode_entry(h: &mut blake3::Hasher, entry: &Entry) {
    let name = entry.name.as_bytes();
    h.update(&(name.len() as u64).to_le_bytes());
    h.update(name);
    match &entry.node {
        Node::File { digest, size, executable } => {
            h.update(if *executable { b"x" } else { b"f" });
            h.update(&digest.0);
            h.update(&size.to_le_bytes());
        }
        Node::Dir { digest, .. } => {
            h.update(b"d");
            h.update(&digest.0);
        }
        Node::Symlink { target } => {
            let target = target.as_bytes();
            h.update(b"l");
            h.update(&(target.len() as u64).to_le_bytes());
            h.update(target);
        }
    }
}

/// The names and kinds of a directory's children, special files rejected.
fn list_dir(path: &Path) -> Result<Vec<(OsString, Kind)>, TreeError> {
    let mut out = Vec::new();
    for entry in fs::read_dir(path).map_err(TreeError::io("read directory", path))? {
        let entry = entry.map_err(TreeError::io("read directory", path))?;
        let child = entry.path();
        let ft = entry.file_type().map_err(TreeError::io("stat", &child))?;
        out.push((entry.file_name(), classify(&child, ft)?));
    }
    Ok(out)
}

fn hash_file(path: &Path) -> Result<Node, TreeError> {
    // O_NOFOLLOW: a file swapped for a symlink mid-walk must not be followed out of the tree;
    // O_NONBLOCK: a file swapped for a fifo must not hang us (fstat below then rejects it).
    let file = fs::OpenOptions::new()
        .read(true)
        .custom_flags(libc::O_NOFOLLOW | libc::O_NONBLOCK)
        .open(path)
        .map_err(TreeError::io("open", path))?;
    let meta = file.metadata().map_err(TreeError::io("stat", path))?;
    if classify(path, meta.file_type())? != Kind::File {
        return Err(TreeError::SpecialFile { path: path.to_path_buf(), kind: "non-regular file" });
    }
    let mut h = blake3::Hasher::new();
    if meta.len() > MMAP_THRESHOLD {
        h.update_mmap_rayon(path).map_err(TreeError::io("read", path))?;
    } else {
        h.update_reader(&file).map_err(TreeError::io("read", path))?;
    }
    // The size is what was actually hashed, so digest and size always agree.
    let size = h.count();
    let executable = meta.permissions().mode() & 0o111 != 0;
    Ok(Node::File { digest: h.finalize().into(), size, executable })
}

fn read_symlink(path: &Path) -> Result<Node, TreeError> {
    let target = fs::read_link(path).map_err(TreeError::io("read symlink", path))?;
    Ok(Node::Symlink { target: target.into_os_string() })
}

// ---------------------------------------------------------------------------------------------
// Normalization
// ---------------------------------------------------------------------------------------------

/// Whether normalization makes the root directory read-only too. Registration keeps it
/// writable until the tree has been renamed into `objects/` (renaming a directory to another
/// parent needs write permission on it for a non-root process), then seals it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum RootMode {
    Seal,
    KeepWritable,
}

/// Apply the `forge-tree-v1` normalization policy to the tree at `path`, root included:
/// every mtime/atime set to 1 s after the epoch (symlinks too, without following them);
/// regular files 0444, or 0555 if any x bit was set; directories 0555; setuid, setgid and
/// sticky bits dropped; extended attributes removed (see docs/store-format.md for the ones the
/// kernel does not let us remove); owners untouched; fifos, sockets and devices rejected.
/// Normalizing a normalized tree changes nothing and [`hash_path`] is the same before and after.
pub fn normalize(path: &Path) -> Result<(), TreeError> {
    normalize_with(path, RootMode::Seal)
}

pub(crate) fn normalize_with(path: &Path, root: RootMode) -> Result<(), TreeError> {
    let meta = fs::symlink_metadata(path).map_err(TreeError::io("stat", path))?;
    match classify(path, meta.file_type())? {
        Kind::Dir => normalize_dir(path, root, path.as_os_str().len()),
        Kind::File => normalize_file(path, meta.permissions().mode()),
        Kind::Symlink => normalize_symlink(path),
    }
}

/// `root_len`: the length of the tree root's path, to measure paths inside the tree.
fn normalize_dir(path: &Path, root: RootMode, root_len: usize) -> Result<(), TreeError> {
    // Make sure we (the owner) can list the directory before descending; the final mode is
    // set after the children, so that nothing below needs a write it is no longer allowed.
    set_mode(path, WRITABLE_DIR_MODE)?;
    list_dir(path)?.into_par_iter().try_for_each(|(name, kind)| {
        let child = path.join(name);
        if child.as_os_str().len() - root_len > MAX_RELATIVE_PATH {
            let relative = &child.as_os_str().as_bytes()[root_len + 1..];
            return Err(TreeError::PathTooLong {
                path: PathBuf::from(OsStr::from_bytes(relative)),
                limit: MAX_RELATIVE_PATH,
            });
        }
        match kind {
            Kind::Dir => normalize_dir(&child, RootMode::Seal, root_len),
            Kind::File => {
                let mode = fs::symlink_metadata(&child)
                    .map_err(TreeError::io("stat", &child))?
                    .permissions()
                    .mode();
                normalize_file(&child, mode)
            }
            Kind::Symlink => normalize_symlink(&child),
        }
    })?;
    strip_xattrs(path)?;
    if root == RootMode::Seal {
        set_mode(path, EXEC_MODE)?;
    }
    set_normalized_times(path)
}

fn normalize_file(path: &Path, mode: u32) -> Result<(), TreeError> {
    strip_xattrs(path)?;
    let wanted = if mode & 0o111 != 0 { EXEC_MODE } else { FILE_MODE };
    if mode & 0o7777 != wanted {
        set_mode(path, wanted)?;
    }
    set_normalized_times(path)
}

fn normalize_symlink(path: &Path) -> Result<(), TreeError> {
    strip_xattrs(path)?;
    set_normalized_times(path)
}

/// Seal a directory root after it has been moved into place (see [`RootMode`]).
pub(crate) fn seal_root_dir(path: &Path) -> Result<(), TreeError> {
    set_mode(path, EXEC_MODE)?;
    set_normalized_times(path)
}

fn set_mode(path: &Path, mode: u32) -> Result<(), TreeError> {
    fs::set_permissions(path, Permissions::from_mode(mode)).map_err(TreeError::io("chmod", path))
}

fn set_normalized_times(path: &Path) -> Result<(), TreeError> {
    let t = TimeSpec::new(NORMALIZED_MTIME_SECS, 0);
    utimensat(None, path, &t, &t, UtimensatFlags::NoFollowSymlink)
        .map_err(|e| TreeError::Io { op: "set times of", path: path.to_path_buf(), source: e.into() })
}

/// Remove every extended attribute of `path` (not following symlinks). Attributes in the
/// `security.` namespace (SELinux labels, file capabilities) may be owned by the kernel or an
/// LSM; when it refuses to remove them they stay, which is harmless since xattrs are never
/// hashed nor transferred.
fn strip_xattrs(path: &Path) -> Result<(), TreeError> {
    let names = match list_xattrs(path) {
        Ok(names) => names,
        Err(e) if e.raw_os_error() == Some(libc::ENOTSUP) => return Ok(()),
        Err(e) => return Err(TreeError::Io { op: "list xattrs of", path: path.to_path_buf(), source: e }),
    };
    let c_path = c_path(path)?;
    for name in names {
        let c_name = CString::new(name.as_bytes()).map_err(|_| nul_error(path))?;
        // SAFETY: both arguments are valid NUL-terminated strings for the duration of the call.
        let rc = unsafe { libc::lremovexattr(c_path.as_ptr(), c_name.as_ptr()) };
        if rc != 0 {
            let err = io::Error::last_os_error();
            let refused = matches!(err.raw_os_error(), Some(libc::EPERM | libc::EACCES | libc::ENOTSUP));
            if !(refused && name.as_bytes().starts_with(b"security.")) {
                return Err(TreeError::Io { op: "remove xattrs of", path: path.to_path_buf(), source: err });
            }
        }
    }
    Ok(())
}

fn list_xattrs(path: &Path) -> io::Result<Vec<OsString>> {
    let c_path = CString::new(path.as_os_str().as_bytes())
        .map_err(|_| io::Error::from(io::ErrorKind::InvalidInput))?;
    loop {
        // SAFETY: a NULL buffer with size 0 asks for the needed size only.
        let size = unsafe { libc::llistxattr(c_path.as_ptr(), std::ptr::null_mut(), 0) };
        if size < 0 {
            return Err(io::Error::last_os_error());
        }
        if size == 0 {
            return Ok(Vec::new());
        }
        let mut buf = vec![0u8; size as usize];
        // SAFETY: buf is valid for buf.len() bytes.
        let got = unsafe { libc::llistxattr(c_path.as_ptr(), buf.as_mut_ptr().cast(), buf.len()) };
        if got < 0 {
            let err = io::Error::last_os_error();
            if err.raw_os_error() == Some(libc::ERANGE) {
                continue; // the list grew between the two calls
            }
            return Err(err);
        }
        buf.truncate(got as usize);
        return Ok(buf
            .split(|&b| b == 0)
            .filter(|n| !n.is_empty())
            .map(|n| OsStr::from_bytes(n).to_os_string())
            .collect());
    }
}

fn c_path(path: &Path) -> Result<CString, TreeError> {
    CString::new(path.as_os_str().as_bytes()).map_err(|_| nul_error(path))
}

fn nul_error(path: &Path) -> TreeError {
    TreeError::Io {
        op: "encode",
        path: path.to_path_buf(),
        source: io::Error::new(io::ErrorKind::InvalidInput, "path contains a NUL byte"),
    }
}


#[cfg(test)]
mod tests {
    use super::*;
    use std::os::unix::fs::{symlink, MetadataExt};
    use tempfile::TempDir;

    fn write(path: &Path, contents: &[u8], mode: u32) {
        if let Some(parent) = path.parent() {
            fs::create_dir_all(parent).unwrap();
        }
        fs::write(path, contents).unwrap();
        fs::set_permissions(path, Permissions::from_mode(mode)).unwrap();
    }

    fn digest(path: &Path) -> Digest {
        hash_path(path).unwrap().digest
    }

    /// The tree used by the worked example in docs/store-format.md.
    fn example_tree(root: &Path) {
        fs::create_dir(root).unwrap();
        write(&root.join("hello.txt"), b"hello\n", 0o644);
        write(&root.join("bin/run"), b"#!/bin/sh\necho hi\n", 0o755);
        symlink("hello.txt", root.join("link")).unwrap();
    }

    /// A second implementation written only from docs/store-format.md, with no code shared with
    /// the module: if the doc and the code disagree, this test fails.
    fn reference_dir_digest(entries: &[(&[u8], Vec<u8>)]) -> Digest {
        let mut bytes = b"forge-tree-v1\0dir\0".to_vec();
        let mut sorted = entries.to_vec();
        sorted.sort();
        for (name, rest) in sorted {
            bytes.extend((name.len() as u64).to_le_bytes());
            bytes.extend(name);
            bytes.extend(rest);
        }
        Digest::of(&bytes)
    }
    fn file_entry(exec: bool, contents: &[u8]) -> Vec<u8> {
        let mut v = vec![if exec { b'x' } else { b'f' }];
        v.extend(blake3::hash(contents).as_bytes());
        v.extend((contents.len() as u64).to_le_bytes());
        v
    }

    #[test]
    fn worked_example_matches_the_documented_encoding_and_pinned_digest() {
        let tmp = TempDir::new().unwrap();
        let root = tmp.path().join("out");
        example_tree(&root);

        let bin = reference_dir_digest(&[(b"run", file_entry(true, b"#!/bin/sh\necho hi\n"))]);
        let mut link = vec![b'l'];
        link.extend(9u64.to_le_bytes());
        link.extend(b"hello.txt");
        let mut bin_entry = vec![b'd'];
        bin_entry.extend(bin.0);
        let expected = reference_dir_digest(&[
            (b"hello.txt", file_entry(false, b"hello\n")),
            (b"bin", bin_entry),
            (b"link", link),
        ]);

        let summary = hash_path(&root).unwrap();
        assert_eq!(summary.digest, expected);
        assert_eq!(summary.files, 2);
        assert_eq!(summary.bytes, 6 + 18);
        assert_eq!(digest(&root.join("bin")), bin);
        // Pinned: quoted in docs/store-format.md. A change here is a format change.
        assert_eq!(bin.to_hex(), "fd6a0d9008902ae39e28840080c694a9ba51391bb556d2d444bbe491381312af");
        assert_eq!(summary.digest.to_hex(), "57e464f48450e8b97746dacd1b11340f8289fd11cb37be83ed4046ce6302bdb3");
    }

    #[test]
    fn empty_directory_digest_is_hash_of_prefix() {
        let tmp = TempDir::new().unwrap();
        assert_eq!(digest(tmp.path()), Digest::of(b"forge-tree-v1\0dir\0"));
        // Quoted in docs/store-format.md.
        assert_eq!(digest(tmp.path()).to_hex(), "0059b659ca8d40dfb2f6fb8afa8c6d8283e4dbcc55c7877c6800629e3f459842");
        assert_eq!(hash_path(tmp.path()).unwrap().files, 0);
    }

    #[test]
    fn file_root_is_plain_blake3_small_and_mmapped() {
        let tmp = TempDir::new().unwrap();
        let small = tmp.path().join("small");
        write(&small, b"abc", 0o644);
        assert_eq!(digest(&small), Digest::of(b"abc"));

        let big_bytes: Vec<u8> = (0..3 * MMAP_THRESHOLD as usize + 17).map(|i| (i * 7 % 251) as u8).collect();
        let big = tmp.path().join("big");
        write(&big, &big_bytes, 0o644);
        let s = hash_path(&big).unwrap();
        assert_eq!(s.digest, Digest::of(&big_bytes));
        assert_eq!((s.files, s.bytes), (1, big_bytes.len() as u64));
    }

    #[test]
    fn symlink_root_is_not_followed() {
        let tmp = TempDir::new().unwrap();
        let link = tmp.path().join("l");
        symlink("/nonexistent/target", &link).unwrap();
        let mut expected = b"forge-tree-v1\0symlink\0".to_vec();
        expected.extend(b"/nonexistent/target");
        assert_eq!(digest(&link), Digest::of(&expected));
    }

    #[test]
    fn ignores_mtime_owner_bits_and_creation_order() {
        let tmp = TempDir::new().unwrap();
        let (a, b) = (tmp.path().join("a"), tmp.path().join("b"));
        for (name, data) in [("x", "1"), ("y/z", "2"), ("w", "3")] {
            write(&a.join(name), data.as_bytes(), 0o644);
        }
        for (name, data) in [("w", "3"), ("y/z", "2"), ("x", "1")] {
            write(&b.join(name), data.as_bytes(), 0o600);
        }
        let old = TimeSpec::new(1_000_000, 0);
        utimensat(None, &b.join("x"), &old, &old, UtimensatFlags::NoFollowSymlink).unwrap();
        assert_eq!(digest(&a), digest(&b));
    }

    #[test]
    fn changes_with_exec_bit_content_target_name_and_type() {
        let tmp = TempDir::new().unwrap();
        let base = tmp.path().join("base");
        example_tree(&base);
        let original = digest(&base);

        type Change = Box<dyn Fn(&Path)>;
        let variants: Vec<(&str, Change)> = vec![
            ("exec bit", Box::new(|r: &Path| fs::set_permissions(r.join("hello.txt"), Permissions::from_mode(0o744)).unwrap())),
            ("content", Box::new(|r: &Path| write(&r.join("hello.txt"), b"hellp\n", 0o644))),
            ("symlink target", Box::new(|r: &Path| {
                fs::remove_file(r.join("link")).unwrap();
                symlink("bin/run", r.join("link")).unwrap();
            })),
            ("name", Box::new(|r: &Path| fs::rename(r.join("hello.txt"), r.join("hello.tx")).unwrap())),
            ("type", Box::new(|r: &Path| {
                fs::remove_file(r.join("link")).unwrap();
                write(&r.join("link"), b"hello.txt", 0o644);
            })),
            ("nested content", Box::new(|r: &Path| write(&r.join("bin/run"), b"#!/bin/sh\necho ho\n", 0o755))),
            ("new empty dir", Box::new(|r: &Path| fs::create_dir(r.join("empty")).unwrap())),
        ];
        for (i, (what, change)) in variants.iter().enumerate() {
            let root = tmp.path().join(format!("v{i}"));
            example_tree(&root);
            change(&root);
            assert_ne!(digest(&root), original, "changing the {what} must change the digest");
        }
    }

    #[test]
    fn hardlinks_hash_like_copies() {
        let tmp = TempDir::new().unwrap();
        let (a, b) = (tmp.path().join("a"), tmp.path().join("b"));
        write(&a.join("one"), b"same", 0o644);
        fs::hard_link(a.join("one"), a.join("two")).unwrap();
        write(&b.join("one"), b"same", 0o644);
        write(&b.join("two"), b"same", 0o644);
        assert_eq!(digest(&a), digest(&b));
        assert_eq!(hash_path(&a).unwrap().files, 2);
    }

    #[test]
    fn non_utf8_names_are_hashed_as_bytes() {
        let tmp = TempDir::new().unwrap();
        let name = OsStr::from_bytes(b"caf\xe9");
        write(&tmp.path().join(name), b"x", 0o644);
        let expected = reference_dir_digest(&[(b"caf\xe9", file_entry(false, b"x"))]);
        assert_eq!(digest(tmp.path()), expected);
    }

    #[test]
    fn special_files_are_rejected_with_their_path() {
        let tmp = TempDir::new().unwrap();
        let fifo = tmp.path().join("sub/pipe");
        fs::create_dir(tmp.path().join("sub")).unwrap();
        nix::unistd::mkfifo(&fifo, nix::sys::stat::Mode::from_bits_truncate(0o644)).unwrap();
        for result in [hash_path(tmp.path()).map(|_| ()), normalize(tmp.path())] {
            match result {
                Err(TreeError::SpecialFile { path, kind }) => {
                    assert_eq!(path, fifo);
                    assert_eq!(kind, "fifo");
                }
                other => panic!("expected SpecialFile, got {other:?}"),
            }
        }
    }

    #[test]
    fn missing_path_error_names_it() {
        let err = hash_path(Path::new("/nonexistent/forge-tree")).unwrap_err();
        assert!(err.to_string().contains("/nonexistent/forge-tree"), "{err}");
    }

    #[test]
    fn normalize_sets_modes_times_and_keeps_the_digest() {
        let tmp = TempDir::new().unwrap();
        // `twin` is `root` with readable modes: a non-root process cannot hash `root` before
        // normalization has made `secret` readable.
        let (root, twin) = (tmp.path().join("out"), tmp.path().join("twin"));
        for (dir, secret_mode) in [(&root, 0o000), (&twin, 0o644)] {
            example_tree(dir);
            write(&dir.join("suid"), b"s", 0o4750);
            write(&dir.join("secret"), b"s", secret_mode);
            fs::create_dir(dir.join("locked")).unwrap();
            write(&dir.join("locked/f"), b"f", 0o600);
            fs::set_permissions(dir.join("locked"), Permissions::from_mode(0o1700)).unwrap();
        }
        let before = digest(&twin);

        normalize(&root).unwrap();

        let mode = |p: &str| fs::symlink_metadata(root.join(p)).unwrap().mode() & 0o7777;
        assert_eq!(mode(""), 0o555);
        assert_eq!(mode("hello.txt"), 0o444);
        assert_eq!(mode("bin"), 0o555);
        assert_eq!(mode("bin/run"), 0o555);
        assert_eq!(mode("suid"), 0o555);
        assert_eq!(mode("secret"), 0o444);
        assert_eq!(mode("locked"), 0o555);
        assert_eq!(mode("locked/f"), 0o444);
        for p in ["", "hello.txt", "bin", "bin/run", "link", "locked/f"] {
            let m = fs::symlink_metadata(root.join(p)).unwrap();
            assert_eq!((m.mtime(), m.mtime_nsec()), (1, 0), "mtime of {p:?}");
        }
        assert_eq!(digest(&root), before, "normalization must not change the tree hash");

        normalize(&root).unwrap();
        assert_eq!(digest(&root), before);
    }

    #[test]
    fn normalize_keep_writable_leaves_root_open() {
        let tmp = TempDir::new().unwrap();
        let root = tmp.path().join("out");
        example_tree(&root);
        normalize_with(&root, RootMode::KeepWritable).unwrap();
        assert_eq!(fs::metadata(&root).unwrap().mode() & 0o777, WRITABLE_DIR_MODE);
        assert_eq!(fs::metadata(root.join("bin")).unwrap().mode() & 0o777, 0o555);
        seal_root_dir(&root).unwrap();
        assert_eq!(fs::metadata(&root).unwrap().mode() & 0o777, 0o555);
        assert_eq!(fs::metadata(&root).unwrap().mtime(), 1);
    }

    #[test]
    fn normalize_strips_user_xattrs() {
        let tmp = TempDir::new().unwrap();
        let file = tmp.path().join("f");
        write(&file, b"x", 0o644);
        let c_file = c_path(&file).unwrap();
        // SAFETY: valid NUL-terminated strings and a 1-byte value buffer.
        let rc = unsafe {
            libc::lsetxattr(c_file.as_ptr(), c"user.forge".as_ptr(), b"1".as_ptr().cast(), 1, 0)
        };
        assert_eq!(rc, 0, "the test file system must support user xattrs: {}", io::Error::last_os_error());
        assert_eq!(list_xattrs(&file).unwrap(), vec![OsString::from("user.forge")]);
        normalize(tmp.path()).unwrap();
        assert!(list_xattrs(&file).unwrap().is_empty());
    }

    mod props {
        use super::*;
        use proptest::prelude::*;
        use std::collections::BTreeMap;

        /// name -> (contents, executable); names are single path components.
        fn tree_spec() -> impl Strategy<Value = BTreeMap<String, (Vec<u8>, bool)>> {
            proptest::collection::btree_map("[a-z]{1,6}(/[a-z]{1,4})?", (proptest::collection::vec(any::<u8>(), 0..64), any::<bool>()), 1..8)
                .prop_filter("a name cannot be both a file and a directory", |m| {
                    m.keys().all(|k| !m.keys().any(|other| other.starts_with(&format!("{k}/"))))
                })
        }

        fn build(root: &Path, spec: &BTreeMap<String, (Vec<u8>, bool)>, reverse: bool, mtime: i64) {
            fs::create_dir_all(root).unwrap();
            let mut items: Vec<_> = spec.iter().collect();
            if reverse {
                items.reverse();
            }
            for (name, (data, exec)) in items {
                let p = root.join(name);
                write(&p, data, if *exec { 0o700 } else { 0o640 });
                let t = TimeSpec::new(mtime, 0);
                utimensat(None, &p, &t, &t, UtimensatFlags::NoFollowSymlink).unwrap();
            }
        }

        proptest! {
            #![proptest_config(ProptestConfig::with_cases(48))]
            #[test]
            fn independent_of_creation_order_and_mtime(spec in tree_spec(), mtime in 0i64..2_000_000_000) {
                let tmp = TempDir::new().unwrap();
                build(&tmp.path().join("a"), &spec, false, 5);
                build(&tmp.path().join("b"), &spec, true, mtime);
                prop_assert_eq!(digest(&tmp.path().join("a")), digest(&tmp.path().join("b")));
            }

            #[test]
            fn any_single_change_changes_the_digest(spec in tree_spec(), pick in any::<prop::sample::Index>(), change in 0u8..3) {
                let tmp = TempDir::new().unwrap();
                build(&tmp.path().join("a"), &spec, false, 5);
                let mut changed = spec.clone();
                let key = pick.get(&spec.keys().cloned().collect::<Vec<_>>()).clone();
                match change {
                    0 => changed.get_mut(&key).unwrap().0.push(0),
                    1 => changed.get_mut(&key).unwrap().1 ^= true,
                    _ => {
                        let v = changed.remove(&key).unwrap();
                        changed.insert(format!("{key}q"), v);
                    }
                }
                build(&tmp.path().join("b"), &changed, false, 5);
                prop_assert_ne!(digest(&tmp.path().join("a")), digest(&tmp.path().join("b")));
            }
        }
    }
}
