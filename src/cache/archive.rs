//! Object archives: a store object as a deterministic tar (compressed with zstd) plus its big
//! files as separate blobs, and the safe way back.
//!
//! Packing walks the object in name order and writes every entry with the same owner (0),
//! mtime (1) and the mode normalization gives it, so the same object always packs to the same
//! tar. Unpacking trusts nothing: every path must be relative and plain (no `..`, no absolute
//! path, no entry under a symlink or a file), only directories, regular files and symlinks are
//! accepted, each path once, and a blob's content must hash to its name. The caller then hashes
//! the whole tree against the out hash before registering it.

use std::collections::HashSet;
use std::fs;
use std::io::{self, Read, Write};
use std::os::unix::ffi::OsStrExt;
use std::os::unix::fs::{OpenOptionsExt, PermissionsExt};
use std::path::{Component, Path, PathBuf};

use super::format::{BlobRef, BLOB_MIN_SIZE};
use super::CacheError;
use crate::hash::Digest;

/// zstd level for archives and blobs; chosen by `cargo bench --bench cache` (docs/cache-format.md).
pub const ZSTD_LEVEL: i32 = 3;

/// A packed object: the compressed archive (written to a file) and the big files left out.
#[derive(Debug)]
pub struct Packed {
    pub archive: PathBuf,
    pub archive_hash: Digest,
    pub archive_size: u64,
    pub blobs: Vec<(BlobRef, PathBuf)>,
    pub files: u64,
    pub size: u64,
}

/// Pack the object directory `object` into `archive_file` (tar + zstd). Files of at least
/// [`BLOB_MIN_SIZE`] bytes are hashed and listed, not archived.
pub fn pack(object: &Path, archive_file: &Path) -> Result<Packed, CacheError> {
    let io = |what: &str, p: &Path| {
        let what = what.to_string();
        let p = p.to_path_buf();
        move |e: io::Error| CacheError::Io(format!("cannot {what} {}: {e}", p.display()))
    };
    let file = fs::File::create(archive_file).map_err(io("create", archive_file))?;
    let hashing = HashingWriter::new(io::BufWriter::with_capacity(1 << 20, file));
    let encoder = zstd::Encoder::new(hashing, ZSTD_LEVEL).map_err(io("compress", archive_file))?;
    let mut tar = tar::Builder::new(encoder);
    let mut blobs = Vec::new();
    let (mut files, mut size) = (0u64, 0u64);

    let walk = walkdir::WalkDir::new(object).min_depth(1).sort_by(|a, b| a.file_name().as_bytes().cmp(b.file_name().as_bytes()));
    for entry in walk {
        let entry = entry.map_err(|e| CacheError::Io(format!("cannot walk {}: {e}", object.display())))?;
        let path = entry.path();
        let rel = path.strip_prefix(object).expect("walkdir yields paths under its root");
        let meta = entry.metadata().map_err(|e| CacheError::Io(format!("cannot stat {}: {e}", path.display())))?;
        let mut header = tar::Header::new_gnu();
        header.set_uid(0);
        header.set_gid(0);
        header.set_mtime(1);
        let ft = meta.file_type();
        if ft.is_dir() {
            header.set_entry_type(tar::EntryType::Directory);
            header.set_mode(0o555);
            header.set_size(0);
            tar.append_data(&mut header, rel, io::empty()).map_err(io("archive", path))?;
        } else if ft.is_symlink() {
            let target = fs::read_link(path).map_err(io("read link", path))?;
            header.set_entry_type(tar::EntryType::Symlink);
            header.set_mode(0o777);
            header.set_size(0);
            tar.append_link(&mut header, rel, &target).map_err(io("archive", path))?;
        } else if ft.is_file() {
            let executable = meta.permissions().mode() & 0o111 != 0;
            files += 1;
            size += meta.len();
            // Big files travel as blobs, named in the object info's JSON, so their paths
            // must be UTF-8; a big file with any other name travels inside the archive,
            // which holds names as bytes (docs/cache-format.md).
            if let (true, Some(rel_utf8)) = (meta.len() >= BLOB_MIN_SIZE, rel.to_str()) {
                let digest = hash_file(path)?;
                blobs.push((BlobRef { path: rel_utf8.to_string(), blake3: digest, size: meta.len(), executable }, path.to_path_buf()));
                continue;
            }
            header.set_entry_type(tar::EntryType::Regular);
            header.set_mode(if executable { 0o555 } else { 0o444 });
            header.set_size(meta.len());
            let f = fs::File::open(path).map_err(io("open", path))?;
            tar.append_data(&mut header, rel, f.take(meta.len())).map_err(io("archive", path))?;
        } else {
            return Err(CacheError::Io(format!("{}: not a file, directory or symlink", path.display())));
        }
    }
    let encoder = tar.into_inner().map_err(io("archive", object))?;
    let hashing = encoder.finish().map_err(io("compress", archive_file))?;
    let (writer, archive_hash, archive_size) = hashing.finish();
    writer.into_inner().map_err(|e| CacheError::Io(format!("cannot write {}: {}", archive_file.display(), e.error())))?.sync_all().map_err(io("sync", archive_file))?;
    Ok(Packed { archive: archive_file.to_path_buf(), archive_hash, archive_size, blobs, files, size })
}

/// zstd-compress one big file into `dest`.
pub fn compress_blob(file: &Path, dest: &Path) -> Result<u64, CacheError> {
    let err = |e: io::Error| CacheError::Io(format!("cannot compress {} to {}: {e}", file.display(), dest.display()));
    let mut input = fs::File::open(file).map_err(err)?;
    let out = fs::File::create(dest).map_err(err)?;
    let mut encoder = zstd::Encoder::new(io::BufWriter::with_capacity(1 << 20, out), ZSTD_LEVEL).map_err(err)?;
    io::copy(&mut input, &mut encoder).map_err(err)?;
    let out = encoder.finish().map_err(err)?.into_inner().map_err(|e| err(e.into_error()))?;
    out.sync_all().map_err(err)?;
    Ok(fs::metadata(dest).map_err(err)?.len())
}

/// What an object's (unsigned) info declares, and so the most an unpacker writes: a cache
/// can cost bandwidth, never disk beyond these numbers (docs/reliability.md).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Declared {
    /// Compressed bytes of the archive.
    pub archive_bytes: u64,
    /// Regular files, archive and blobs together, and their total size.
    pub files: u64,
    pub file_bytes: u64,
}

impl Declared {
    pub fn of(info: &super::format::ObjectInfo) -> Declared {
        Declared { archive_bytes: info.archive.size, files: info.files, file_bytes: info.size }
    }

    /// Bytes the decompressed tar stream may have: the files' contents, plus per file a
    /// header, padding and long-name records, plus room for directories, symlinks and the
    /// end-of-archive blocks (whose number the info does not declare).
    fn tar_stream_bytes(&self) -> u64 {
        const PER_FILE: u64 = 8 << 10;
        const OTHER_ENTRIES: u64 = 64 << 20;
        self.file_bytes.saturating_add(self.files.saturating_add(1).saturating_mul(PER_FILE)).saturating_add(OTHER_ENTRIES)
    }
}

/// A reader that fails as soon as more than `limit` bytes come through, instead of trusting
/// the other side to stop: `take(limit + 1)` and an error at the first byte too many.
struct Bounded<R> {
    inner: R,
    limit: u64,
    seen: u64,
    what: &'static str,
}

impl<R: Read> Bounded<R> {
    fn new(inner: R, limit: u64, what: &'static str) -> Bounded<R> {
        Bounded { inner, limit, seen: 0, what }
    }
}

impl<R: Read> Read for Bounded<R> {
    fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        let room = (self.limit - self.seen).saturating_add(1);
        let len = buf.len().min(usize::try_from(room).unwrap_or(usize::MAX));
        let n = self.inner.read(&mut buf[..len])?;
        self.seen += n as u64;
        if self.seen > self.limit {
            return Err(io::Error::new(
                io::ErrorKind::InvalidData,
                format!("{} is larger than the {} bytes its object info declares; stopped there", self.what, self.limit),
            ));
        }
        Ok(n)
    }
}

/// Unpacks one object into a fresh directory, refusing anything that could escape it or
/// exceed what its info declares.
pub struct Unpacker {
    root: PathBuf,
    declared: Declared,
    /// Bytes of regular files written so far (archive entries and blobs).
    written: u64,
    files: u64,
    /// Directories created so far (relative); a new entry's parent must be one of them.
    dirs: HashSet<PathBuf>,
    /// Every path created so far, so that no entry replaces another.
    seen: HashSet<PathBuf>,
}

impl Unpacker {
    /// `root` must not exist yet; it is created.
    pub fn new(root: &Path, declared: Declared) -> Result<Unpacker, CacheError> {
        fs::create_dir(root).map_err(|e| CacheError::Io(format!("cannot create {}: {e}", root.display())))?;
        let mut dirs = HashSet::new();
        dirs.insert(PathBuf::new());
        Ok(Unpacker { root: root.to_path_buf(), declared, written: 0, files: 0, dirs, seen: HashSet::new() })
    }

    /// Count a regular file of `size` bytes against the declared totals before writing it.
    fn reserve(&mut self, rel: &Path, size: u64, what: &str) -> Result<(), CacheError> {
        let total = self.written.saturating_add(size);
        self.files += 1;
        if total > self.declared.file_bytes || self.files > self.declared.files {
            return Err(CacheError::Refused(format!(
                "{what}: {} ({size} bytes) would make {} files of {total} bytes, but the object info declares {} files of {} bytes; nothing was registered",
                rel.display(),
                self.files,
                self.declared.files,
                self.declared.file_bytes
            )));
        }
        self.written = total;
        Ok(())
    }

    /// Unpack a compressed archive read from `input`. Returns the compressed bytes read, and
    /// the BLAKE3 of them (to check against the archive's name).
    pub fn archive(&mut self, input: impl Read, what: &str) -> Result<(Digest, u64), CacheError> {
        let mut hashing = HashingReader::new(Bounded::new(input, self.declared.archive_bytes, "the compressed archive"));
        {
            let decoder = zstd::Decoder::new(&mut hashing).map_err(|e| CacheError::Refused(format!("{what}: {e}")))?;
            let decoder = Bounded::new(decoder, self.declared.tar_stream_bytes(), "the unpacked archive");
            let mut archive = tar::Archive::new(decoder);
            let entries = archive.entries().map_err(|e| CacheError::Refused(format!("{what}: {e}")))?;
            for entry in entries {
                let mut entry = entry.map_err(|e| CacheError::Refused(format!("{what}: corrupt archive: {e}")))?;
                let raw = entry.path_bytes().into_owned();
                let rel = self.check_new_path(&raw, what)?;
                let dest = self.root.join(&rel);
                let created = match entry.header().entry_type() {
                    tar::EntryType::Directory => {
                        fs::create_dir(&dest).map(|_| {
                            self.dirs.insert(rel.clone());
                        })
                    }
                    tar::EntryType::Regular | tar::EntryType::Continuous => {
                        let executable = entry.header().mode().unwrap_or(0) & 0o111 != 0;
                        let size = entry.size();
                        self.reserve(&rel, size, what)?;
                        write_new_file(&dest, executable, &mut entry, size)
                    }
                    tar::EntryType::Symlink => {
                        let target = entry
                            .link_name_bytes()
                            .ok_or_else(|| CacheError::Refused(format!("{what}: symlink {} has no target", rel.display())))?;
                        std::os::unix::fs::symlink(Path::new(std::ffi::OsStr::from_bytes(&target)), &dest)
                    }
                    other => {
                        return Err(CacheError::Refused(format!(
                            "{what}: entry {} has type {other:?}; only directories, files and symlinks are allowed",
                            rel.display()
                        )))
                    }
                };
                created.map_err(|e| CacheError::Refused(format!("{what}: cannot unpack {}: {e}", rel.display())))?;
            }
            // Read to the end so the hash covers every byte (trailing zero blocks included).
            let mut rest = archive.into_inner();
            io::copy(&mut rest, &mut io::sink()).map_err(|e| CacheError::Refused(format!("{what}: {e}")))?;
        }
        Ok(hashing.finish())
    }

    /// Place one big file from the compressed stream `input`, checking it hashes to `blob.blake3`.
    pub fn blob(&mut self, blob: &BlobRef, input: impl Read, what: &str) -> Result<(), CacheError> {
        let decoder = zstd::Decoder::new(input).map_err(|e| CacheError::Refused(format!("{what}: {e}")))?;
        self.blob_plain(blob, decoder, what)
    }

    /// Place one big file whose uncompressed content is `input` (a local copy being reused).
    pub fn blob_plain(&mut self, blob: &BlobRef, input: impl Read, what: &str) -> Result<(), CacheError> {
        let rel = self.check_new_path(blob.path.as_bytes(), what)?;
        self.reserve(&rel, blob.size, what)?;
        let dest = self.root.join(&rel);
        // One byte more than declared is enough to know it is wrong; never write more.
        let mut hashing = HashingReader::new(input.take(blob.size.saturating_add(1)));
        write_new_file(&dest, blob.executable, &mut hashing, blob.size)
            .map_err(|e| CacheError::Refused(format!("{what}: cannot write {}: {e}", rel.display())))?;
        let (digest, len) = hashing.finish();
        if len != blob.size || digest != blob.blake3 {
            return Err(CacheError::Refused(format!(
                "{what}: {} should hash to {} ({} bytes) but got {digest} ({len} bytes)",
                rel.display(),
                blob.blake3,
                blob.size
            )));
        }
        Ok(())
    }

    /// A path for a new entry: relative, plain components only, not seen before, and its parent
    /// a directory this unpacker created (so nothing is ever written through a symlink).
    fn check_new_path(&mut self, raw: &[u8], what: &str) -> Result<PathBuf, CacheError> {
        let refuse = |why: &str| {
            CacheError::Refused(format!("{what}: entry {:?} {why}; nothing was registered", String::from_utf8_lossy(raw)))
        };
        let trimmed = raw.strip_suffix(b"/").unwrap_or(raw);
        if trimmed.is_empty() || raw.contains(&0) {
            return Err(refuse("has an empty or invalid path"));
        }
        if trimmed.len() > crate::tree::MAX_RELATIVE_PATH {
            return Err(refuse(&format!("is longer than {} bytes, the store's limit", crate::tree::MAX_RELATIVE_PATH)));
        }
        let path = Path::new(std::ffi::OsStr::from_bytes(trimmed));
        if path.components().any(|c| !matches!(c, Component::Normal(_))) || trimmed.windows(2).any(|w| w == b"//") {
            return Err(refuse("is absolute or contains '.' or '..'"));
        }
        let rel = path.to_path_buf();
        let parent = rel.parent().map(Path::to_path_buf).unwrap_or_default();
        if !self.dirs.contains(&parent) {
            return Err(refuse("is not inside a directory of the archive (a symlink or file cannot be a parent)"));
        }
        if !self.seen.insert(rel.clone()) {
            return Err(refuse("appears twice"));
        }
        Ok(rel)
    }
}

const WRITE_BUFFER: usize = 1 << 20;

/// Create `dest` (it must not exist), copy `input` into it, and check the length.
fn write_new_file(dest: &Path, executable: bool, input: &mut impl Read, size: u64) -> io::Result<()> {
    let mut file = fs::OpenOptions::new()
        .write(true)
        .create_new(true)
        .custom_flags(libc::O_NOFOLLOW)
        .mode(if executable { 0o755 } else { 0o644 })
        .open(dest)?;
    // Through a large buffer: a tar entry or decoder hands out 8 KiB reads, and one write(2)
    // per 8 KiB was a visible share of substitution time (strace: 37,000 writes for 280 MB).
    let mut writer = io::BufWriter::with_capacity(WRITE_BUFFER.min(size as usize).max(1), &mut file);
    let copied = io::copy(input, &mut writer)?;
    writer.flush()?;
    drop(writer);
    if copied != size {
        return Err(io::Error::other(format!("expected {size} bytes, got {copied}")));
    }
    file.set_permissions(fs::Permissions::from_mode(if executable { 0o555 } else { 0o444 }))
}

/// BLAKE3 of a file's content (memory-mapped when large).
pub fn hash_file(path: &Path) -> Result<Digest, CacheError> {
    let mut hasher = blake3::Hasher::new();
    hasher
        .update_mmap_rayon(path)
        .map_err(|e| CacheError::Io(format!("cannot hash {}: {e}", path.display())))?;
    Ok(hasher.finalize().into())
}

/// Counts and hashes what passes through.
pub struct HashingWriter<W> {
    inner: W,
    hasher: blake3::Hasher,
    len: u64,
}

impl<W: Write> HashingWriter<W> {
    pub fn new(inner: W) -> Self {
        HashingWriter { inner, hasher: blake3::Hasher::new(), len: 0 }
    }
    pub fn finish(self) -> (W, Digest, u64) {
        (self.inner, self.hasher.finalize().into(), self.len)
    }
}

impl<W: Write> Write for HashingWriter<W> {
    fn write(&mut self, buf: &[u8]) -> io::Result<usize> {
        let n = self.inner.write(buf)?;
        self.hasher.update(&buf[..n]);
        self.len += n as u64;
        Ok(n)
    }
    fn flush(&mut self) -> io::Result<()> {
        self.inner.flush()
    }
}

pub struct HashingReader<R> {
    inner: R,
    hasher: blake3::Hasher,
    len: u64,
}

impl<R: Read> HashingReader<R> {
    pub fn new(inner: R) -> Self {
        HashingReader { inner, hasher: blake3::Hasher::new(), len: 0 }
    }
    pub fn finish(self) -> (Digest, u64) {
        (self.hasher.finalize().into(), self.len)
    }
}

impl<R: Read> Read for HashingReader<R> {
    fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        let n = self.inner.read(buf)?;
        self.hasher.update(&buf[..n]);
        self.len += n as u64;
        Ok(n)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::tree;

    /// A compressed tar whose entries are written raw (the tar crate's safe setters refuse
    /// exactly the paths these tests need): (path, type, content or link target).
    /// (path, type, content or link target) of one raw tar entry.
    type RawEntry<'a> = (&'a [u8], tar::EntryType, &'a [u8]);

    fn evil_archive(entries: &[RawEntry<'_>]) -> Vec<u8> {
        let mut tar = tar::Builder::new(Vec::new());
        for (path, kind, data) in entries {
            let mut header = tar::Header::new_old();
            header.as_old_mut().name[..path.len()].copy_from_slice(path);
            header.set_entry_type(*kind);
            header.set_mode(0o644);
            if *kind == tar::EntryType::Symlink || *kind == tar::EntryType::Link {
                header.as_old_mut().linkname[..data.len()].copy_from_slice(data);
                header.set_size(0);
                header.set_cksum();
                tar.append(&header, io::empty()).unwrap();
            } else {
                header.set_size(data.len() as u64);
                header.set_cksum();
                tar.append(&header, *data).unwrap();
            }
        }
        zstd::encode_all(&tar.into_inner().unwrap()[..], 1).unwrap()
    }

    const GENEROUS: Declared = Declared { archive_bytes: 1 << 30, files: 1000, file_bytes: 1 << 30 };

    fn unpack(bytes: &[u8]) -> (tempfile::TempDir, Result<(Digest, u64), CacheError>) {
        let dir = tempfile::tempdir().unwrap();
        let mut u = Unpacker::new(&dir.path().join("out"), GENEROUS).unwrap();
        let r = u.archive(bytes, "test");
        (dir, r)
    }

    #[test]
    fn pack_then_unpack_gives_the_same_tree_hash_and_packing_is_deterministic() {
        let dir = tempfile::tempdir().unwrap();
        let obj = dir.path().join("obj");
        fs::create_dir_all(obj.join("a/b")).unwrap();
        fs::write(obj.join("a/b/small"), "hello").unwrap();
        fs::write(obj.join("big"), vec![7u8; BLOB_MIN_SIZE as usize + 1]).unwrap();
        fs::write(obj.join("run"), "#!/bin/sh\n").unwrap();
        fs::set_permissions(obj.join("run"), fs::Permissions::from_mode(0o755)).unwrap();
        std::os::unix::fs::symlink("a/b/small", obj.join("link")).unwrap();
        tree::normalize(&obj).unwrap();
        let expected = tree::hash_path(&obj).unwrap().digest;

        let p1 = pack(&obj, &dir.path().join("1.tar.zst")).unwrap();
        let p2 = pack(&obj, &dir.path().join("2.tar.zst")).unwrap();
        assert_eq!(p1.archive_hash, p2.archive_hash, "same object, same bytes");
        assert_eq!((p1.files, p1.blobs.len()), (3, 1));

        let declared = Declared { archive_bytes: p1.archive_size, files: 4, file_bytes: p1.size };
        let mut u = Unpacker::new(&dir.path().join("back"), declared).unwrap();
        let (hash, size) = u.archive(fs::File::open(&p1.archive).unwrap(), "t").unwrap();
        assert_eq!((hash, size), (p1.archive_hash, p1.archive_size));
        let (blob, file) = &p1.blobs[0];
        let compressed = dir.path().join("blob.zst");
        compress_blob(file, &compressed).unwrap();
        u.blob(blob, fs::File::open(&compressed).unwrap(), "t").unwrap();
        assert_eq!(tree::hash_path(&dir.path().join("back")).unwrap().digest, expected);
    }

    #[test]
    fn archives_that_try_to_escape_or_smuggle_are_refused() {
        use tar::EntryType::*;
        let cases: Vec<(&str, Vec<RawEntry<'_>>)> = vec![
            ("dot-dot", vec![(b"../evil", Regular, b"x")]),
            ("nested dot-dot", vec![(b"d/", Directory, b""), (b"d/../../evil", Regular, b"x")]),
            ("absolute", vec![(b"/tmp/evil", Regular, b"x")]),
            ("through a symlink", vec![(b"d", Symlink, b"/tmp"), (b"d/evil", Regular, b"x")]),
            ("under a file", vec![(b"f", Regular, b"x"), (b"f/evil", Regular, b"x")]),
            ("parent not in archive", vec![(b"nodir/evil", Regular, b"x")]),
            ("hardlink", vec![(b"f", Regular, b"x"), (b"g", Link, b"/etc/passwd")]),
            ("duplicate", vec![(b"f", Regular, b"x"), (b"f", Regular, b"y")]),
            ("symlink replaced", vec![(b"l", Symlink, b"/etc/passwd"), (b"l", Regular, b"y")]),
            ("device", vec![(b"dev", Char, b"")]),
        ];
        for (what, entries) in cases {
            let (dir, result) = unpack(&evil_archive(&entries));
            assert!(matches!(result, Err(CacheError::Refused(_))), "{what}: {result:?}");
            assert!(!dir.path().join("evil").exists() && !Path::new("/tmp/evil").exists(), "{what} wrote outside");
        }
        let (_, garbage) = unpack(b"not zstd at all");
        assert!(garbage.is_err());
    }

    #[test]
    fn a_blob_must_hash_to_its_name_and_go_into_a_directory_of_the_archive() {
        let dir = tempfile::tempdir().unwrap();
        let mut u = Unpacker::new(&dir.path().join("out"), GENEROUS).unwrap();
        let content = b"the real content";
        let good = BlobRef { path: "f".into(), blake3: Digest::of(content), size: content.len() as u64, executable: false };
        let wrong = BlobRef { path: "g".into(), ..good.clone() };
        assert!(u.blob_plain(&wrong, &b"other content!!!"[..], "t").is_err());
        let escape = BlobRef { path: "../f".into(), ..good.clone() };
        assert!(u.blob_plain(&escape, &content[..], "t").is_err());
        let too_long = BlobRef { path: "d/".repeat(1600) + "f", ..good.clone() };
        let err = u.blob_plain(&too_long, &content[..], "t").unwrap_err().to_string();
        assert!(err.contains("longer than 3072 bytes"), "{err}");
        u.blob_plain(&good, &content[..], "t").unwrap();
        assert!(u.blob_plain(&good, &content[..], "t").is_err(), "same path twice");
    }

    /// Total bytes of the regular files under `dir`.
    fn bytes_on_disk(dir: &Path) -> u64 {
        walkdir::WalkDir::new(dir).into_iter().flatten().filter(|e| e.file_type().is_file()).map(|e| e.metadata().unwrap().len()).sum()
    }

    /// Issue 13, defect 2: a tar entry of 256 MiB of zeros (a few KB compressed) in an object
    /// declared as 1 MiB is refused before a byte of it is written.
    #[test]
    fn an_archive_entry_larger_than_the_declared_object_is_never_written() {
        let mut tar = tar::Builder::new(zstd::Encoder::new(Vec::new(), 3).unwrap());
        let mut header = tar::Header::new_gnu();
        header.set_path("zeros").unwrap();
        header.set_mode(0o644);
        header.set_size(256 << 20);
        header.set_cksum();
        tar.append(&header, io::repeat(0).take(256 << 20)).unwrap();
        let bomb = tar.into_inner().unwrap().finish().unwrap();
        assert!(bomb.len() < 1 << 20, "{} bytes compressed", bomb.len());
        let dir = tempfile::tempdir().unwrap();
        let declared = Declared { archive_bytes: bomb.len() as u64, files: 1, file_bytes: 1 << 20 };
        let mut u = Unpacker::new(&dir.path().join("out"), declared).unwrap();
        match u.archive(&bomb[..], "zeros from file:///cache") {
            Err(CacheError::Refused(why)) => {
                assert!(why.contains("zeros from file:///cache") && why.contains("268435456 bytes") && why.contains("1048576 bytes"), "{why}")
            }
            other => panic!("{other:?}"),
        }
        assert_eq!(bytes_on_disk(dir.path()), 0);
    }

    /// A compressed archive longer than declared, or a tar stream far longer than its files,
    /// is cut off where it passes the bound.
    #[test]
    fn archive_streams_are_bounded_by_the_declared_sizes() {
        let archive = evil_archive(&[(b"f", tar::EntryType::Regular, b"x")]);
        let dir = tempfile::tempdir().unwrap();
        let declared = Declared { archive_bytes: archive.len() as u64 - 1, files: 1, file_bytes: 1 };
        let mut u = Unpacker::new(&dir.path().join("out"), declared).unwrap();
        let why = u.archive(&archive[..], "t").unwrap_err().to_string();
        assert!(why.contains("compressed archive is larger than the"), "{why}");

        // A one-file tar followed by 70 MiB of zero blocks (a tar reader stops at the first
        // two, the hash must cover the rest): the decompressed stream is bounded too.
        let mut tar = tar::Builder::new(Vec::new());
        let mut header = tar::Header::new_gnu();
        header.set_path("f").unwrap();
        header.set_size(1);
        header.set_cksum();
        tar.append(&header, &b"x"[..]).unwrap();
        let mut stream = tar.into_inner().unwrap();
        stream.resize(stream.len() + (70 << 20), 0);
        let padded = zstd::encode_all(&stream[..], 3).unwrap();
        let declared = Declared { archive_bytes: padded.len() as u64, files: 1, file_bytes: 1 };
        let mut u = Unpacker::new(&dir.path().join("padded"), declared).unwrap();
        let why = u.archive(&padded[..], "t").unwrap_err().to_string();
        assert!(why.contains("unpacked archive is larger than the"), "{why}");
    }

    /// A blob declared as 1,000 bytes that decompresses to 64 MiB: at most one byte more than
    /// declared reaches the disk before it is refused; blobs beyond the object's total too.
    #[test]
    fn a_blob_is_bounded_by_its_declared_size_and_the_objects_total() {
        let bomb = zstd::encode_all(io::repeat(0).take(64 << 20), 3).unwrap();
        let dir = tempfile::tempdir().unwrap();
        let mut u = Unpacker::new(&dir.path().join("out"), GENEROUS).unwrap();
        let blob = BlobRef { path: "b".into(), blake3: Digest::of(&[0u8; 1000]), size: 1000, executable: false };
        let why = u.blob(&blob, &bomb[..], "t").unwrap_err().to_string();
        assert!(why.contains("1000 bytes"), "{why}");
        assert!(bytes_on_disk(dir.path()) <= 1001, "{} bytes written", bytes_on_disk(dir.path()));

        let declared = Declared { archive_bytes: 1 << 20, files: 2, file_bytes: 1500 };
        let mut u = Unpacker::new(&dir.path().join("total"), declared).unwrap();
        let content = vec![1u8; 1000];
        let first = BlobRef { path: "first".into(), blake3: Digest::of(&content), size: 1000, executable: false };
        u.blob_plain(&first, &content[..], "t").unwrap();
        let second = BlobRef { path: "second".into(), ..first.clone() };
        let why = u.blob_plain(&second, &content[..], "t").unwrap_err().to_string();
        assert!(why.contains("declares 2 files of 1500 bytes"), "{why}");
        assert!(!dir.path().join("total/second").exists());
    }
}
