//! `[import]` recipes: the output is the sources themselves, unpacked (`.deb` data
//! archives, tarballs) or copied into the output root, in source order. Used by the
//! bootstrap seeds in toolchain/.
//!
//! Archives are untrusted input. Every entry is checked before anything is written:
//! no absolute paths, no `..`, and never writing through a symlink (no entry may
//! have a symlink among its parent directories inside `out`, so nothing can land
//! outside `out`). Symlink entries themselves are kept verbatim: they are data for
//! the sandbox, whose root is `out`, and are never followed here.
//!
//! Policy (see docs/toolchain.md):
//! - a later entry may overwrite an earlier file only with identical content (and
//!   a symlink only with the same target); otherwise it is a conflict naming both
//!   sources;
//! - hard links become copies (the store does not keep hard links);
//! - device nodes, FIFOs and sockets are skipped and counted in
//!   [`ImportStats::skipped_special`]: a store object cannot hold them and an
//!   unprivileged build could not create them;
//! - file modes are reduced to 0644 / 0755 (executable bit only); owners, mtimes,
//!   setuid bits and xattrs are dropped, as normalization would drop them anyway.

use std::collections::HashMap;
use std::fs::{self, File, OpenOptions};
use std::io::{self, Read, Write};
use std::os::unix::fs::{OpenOptionsExt, PermissionsExt};
use std::path::{Component, Path, PathBuf};

/// What an import wrote.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct ImportStats {
    pub files: u64,
    pub dirs: u64,
    pub symlinks: u64,
    /// Bytes of regular-file content written.
    pub bytes: u64,
    /// Device nodes, FIFOs and sockets that were skipped (see the module doc).
    pub skipped_special: u64,
}

#[derive(Debug, thiserror::Error)]
pub enum ImportError {
    #[error("{archive}: refusing entry {entry:?}: {reason}")]
    UnsafeEntry {
        archive: String,
        entry: String,
        reason: String,
    },

    #[error(
        "{path} is written by {first} and, with different content, by {second}: \
         remove one of them from the recipe or make them agree"
    )]
    Conflict {
        path: PathBuf,
        first: String,
        second: String,
    },

    #[error(
        "{archive} is not an archive forge can unpack (.deb, .tar, .tar.gz, .tgz, .tar.xz, .txz); \
         set `unpack = false` to copy it as-is"
    )]
    UnknownFormat { archive: String },

    #[error(
        "{archive}: member {member} uses a compression forge cannot read (supported: none, gz, xz)"
    )]
    UnsupportedCompression { archive: String, member: String },

    #[error("{archive}: no data.tar member, so it is not a Debian binary package")]
    NoDebData { archive: String },

    #[error("{archive}: entry {entry:?} has unsupported type {kind}")]
    UnsupportedEntry {
        archive: String,
        entry: String,
        kind: String,
    },

    #[error("{archive}: hard link {entry:?} points to {target:?}, which is not a regular file written before it")]
    DanglingHardlink {
        archive: String,
        entry: String,
        target: String,
    },

    #[error("cannot read {archive}: {source}")]
    Read { archive: String, source: io::Error },

    #[error("I/O error on {path}: {source}")]
    Io { path: PathBuf, source: io::Error },
}

fn io_err(path: &Path) -> impl FnOnce(io::Error) -> ImportError + '_ {
    move |source| ImportError::Io {
        path: path.to_path_buf(),
        source,
    }
}

/// Unpack (`.deb`: its data.tar[.gz|.xz]; `.tar`, `.tar.gz`/`.tgz`, `.tar.xz`/`.txz`)
/// or copy each source into `out`, in order. `sources` pairs each source's filename
/// (its name in `$FORGE_SOURCES`, used to pick the format and in errors) with where
/// its bytes are. A directory source is merged into `out` when unpacking and copied
/// to `out/FILENAME` otherwise, like a file. `out` must exist.
pub fn import(
    sources: &[(String, PathBuf)],
    unpack: bool,
    out: &Path,
) -> Result<ImportStats, ImportError> {
    let mut writer = Writer::new(out);
    for (filename, path) in sources {
        let is_dir = fs::metadata(path).map_err(io_err(path))?.is_dir();
        match (unpack, is_dir) {
            (true, true) => copy_tree(&mut writer, filename, path, Path::new(""))?,
            (true, false) => unpack_archive(&mut writer, filename, path)?,
            (false, _) => {
                let name = safe_relative(filename, filename)?;
                if name.components().count() != 1 {
                    return Err(unsafe_entry(
                        filename,
                        filename,
                        "a source name must be one path component",
                    ));
                }
                if is_dir {
                    writer.dir(filename, &name)?;
                    copy_tree(&mut writer, filename, path, &name)?;
                } else {
                    let mut file = File::open(path).map_err(io_err(path))?;
                    writer.file(filename, &name, &mut file, is_executable(path)?)?;
                }
            }
        }
    }
    Ok(writer.stats)
}

// ---------------------------------------------------------------------------
// Formats

enum Format {
    Deb,
    Tar(Compression),
}

#[derive(Clone, Copy)]
enum Compression {
    None,
    Gzip,
    Xz,
}

fn format_of(filename: &str) -> Option<Format> {
    let name = filename.to_ascii_lowercase();
    let ends = |suffixes: &[&str]| suffixes.iter().any(|s| name.ends_with(s));
    if ends(&[".deb"]) {
        Some(Format::Deb)
    } else if ends(&[".tar"]) {
        Some(Format::Tar(Compression::None))
    } else if ends(&[".tar.gz", ".tgz"]) {
        Some(Format::Tar(Compression::Gzip))
    } else if ends(&[".tar.xz", ".txz"]) {
        Some(Format::Tar(Compression::Xz))
    } else {
        None
    }
}

fn decompress<'a>(reader: impl Read + 'a, compression: Compression) -> Box<dyn Read + 'a> {
    match compression {
        Compression::None => Box::new(reader),
        Compression::Gzip => Box::new(flate2::read::GzDecoder::new(reader)),
        Compression::Xz => Box::new(xz2::read::XzDecoder::new(reader)),
    }
}

fn unpack_archive(writer: &mut Writer, filename: &str, path: &Path) -> Result<(), ImportError> {
    let format = format_of(filename).ok_or_else(|| ImportError::UnknownFormat {
        archive: filename.to_string(),
    })?;
    let file = File::open(path).map_err(io_err(path))?;
    match format {
        Format::Tar(compression) => unpack_tar(writer, filename, decompress(file, compression)),
        Format::Deb => unpack_deb(writer, filename, file),
    }
}

/// A .deb is an `ar` archive whose `data.tar*` member holds the files.
fn unpack_deb(writer: &mut Writer, filename: &str, file: File) -> Result<(), ImportError> {
    let read_err = |source| ImportError::Read {
        archive: filename.to_string(),
        source,
    };
    let mut deb = ar::Archive::new(file);
    while let Some(member) = deb.next_entry() {
        let member = member.map_err(read_err)?;
        let name = String::from_utf8_lossy(member.header().identifier()).into_owned();
        let Some(suffix) = name.strip_prefix("data.tar") else {
            continue;
        };
        let compression = match suffix {
            "" => Compression::None,
            ".gz" => Compression::Gzip,
            ".xz" => Compression::Xz,
            _ => {
                return Err(ImportError::UnsupportedCompression {
                    archive: filename.to_string(),
                    member: name,
                })
            }
        };
        return unpack_tar(writer, filename, decompress(member, compression));
    }
    Err(ImportError::NoDebData {
        archive: filename.to_string(),
    })
}

fn unpack_tar(writer: &mut Writer, archive: &str, reader: impl Read) -> Result<(), ImportError> {
    let read_err = |source| ImportError::Read {
        archive: archive.to_string(),
        source,
    };
    let mut tar = tar::Archive::new(reader);
    for entry in tar.entries().map_err(read_err)? {
        let mut entry = entry.map_err(read_err)?;
        let raw_path = entry
            .path()
            .map_err(read_err)?
            .to_string_lossy()
            .into_owned();
        let rel = safe_relative(archive, &raw_path)?;
        let kind = entry.header().entry_type();
        if rel.as_os_str().is_empty() {
            continue; // "./": the root itself
        }
        use tar::EntryType as T;
        match kind {
            T::Regular | T::Continuous | T::GNUSparse => {
                let executable = entry.header().mode().map_err(read_err)? & 0o111 != 0;
                writer.file(archive, &rel, &mut entry, executable)?;
            }
            T::Directory => writer.dir(archive, &rel)?,
            T::Symlink => {
                let target = link_name(&entry, archive, &raw_path)?;
                writer.symlink(archive, &rel, &target)?;
            }
            T::Link => {
                let target = link_name(&entry, archive, &raw_path)?;
                let target_rel = safe_relative(archive, &target.to_string_lossy())?;
                writer.hardlink(archive, &rel, &target_rel)?;
            }
            T::Char | T::Block | T::Fifo => writer.stats.skipped_special += 1,
            T::XGlobalHeader => {}
            other => {
                return Err(ImportError::UnsupportedEntry {
                    archive: archive.to_string(),
                    entry: raw_path,
                    kind: format!("{other:?}"),
                })
            }
        }
    }
    Ok(())
}

fn link_name<R: Read>(
    entry: &tar::Entry<R>,
    archive: &str,
    raw_path: &str,
) -> Result<PathBuf, ImportError> {
    match entry.link_name() {
        Ok(Some(target)) => Ok(target.into_owned()),
        Ok(None) => Err(unsafe_entry(archive, raw_path, "link without a target")),
        Err(source) => Err(ImportError::Read {
            archive: archive.to_string(),
            source,
        }),
    }
}

/// Merge the directory `src` into `out/under`, in sorted order (deterministic
/// conflict reports), keeping symlinks and executable bits.
fn copy_tree(
    writer: &mut Writer,
    source: &str,
    src: &Path,
    under: &Path,
) -> Result<(), ImportError> {
    let walk = walkdir::WalkDir::new(src)
        .min_depth(1)
        .sort_by_file_name()
        .follow_links(false);
    for entry in walk {
        let entry = entry.map_err(|e| ImportError::Io {
            path: e.path().unwrap_or(src).to_path_buf(),
            source: e.into(),
        })?;
        let rel = under.join(entry.path().strip_prefix(src).unwrap_or(entry.path()));
        let kind = entry.file_type();
        if kind.is_dir() {
            writer.dir(source, &rel)?;
        } else if kind.is_symlink() {
            let target = fs::read_link(entry.path()).map_err(io_err(entry.path()))?;
            writer.symlink(source, &rel, &target)?;
        } else if kind.is_file() {
            let mut file = File::open(entry.path()).map_err(io_err(entry.path()))?;
            writer.file(source, &rel, &mut file, is_executable(entry.path())?)?;
        } else {
            writer.stats.skipped_special += 1;
        }
    }
    Ok(())
}

fn is_executable(path: &Path) -> Result<bool, ImportError> {
    Ok(fs::metadata(path)
        .map_err(io_err(path))?
        .permissions()
        .mode()
        & 0o111
        != 0)
}

// ---------------------------------------------------------------------------
// Path safety

fn unsafe_entry(archive: &str, entry: &str, reason: &str) -> ImportError {
    ImportError::UnsafeEntry {
        archive: archive.to_string(),
        entry: entry.to_string(),
        reason: reason.to_string(),
    }
}

/// The entry's path relative to the output root, or an error for an absolute
/// path or one containing `..`. `./` components are dropped.
fn safe_relative(archive: &str, raw: &str) -> Result<PathBuf, ImportError> {
    let mut rel = PathBuf::new();
    for component in Path::new(raw).components() {
        match component {
            Component::Normal(part) => rel.push(part),
            Component::CurDir => {}
            Component::ParentDir => return Err(unsafe_entry(archive, raw, "path contains `..`")),
            Component::RootDir | Component::Prefix(_) => {
                return Err(unsafe_entry(archive, raw, "absolute path"))
            }
        }
    }
    Ok(rel)
}

// ---------------------------------------------------------------------------
// Writing

/// Writes entries under `out`, enforcing the overwrite and symlink policy and
/// remembering which source wrote each non-directory path.
struct Writer<'a> {
    out: &'a Path,
    written_by: HashMap<PathBuf, String>,
    stats: ImportStats,
}

enum Existing {
    Nothing,
    Dir,
    File,
    Symlink(PathBuf),
}

impl<'a> Writer<'a> {
    fn new(out: &'a Path) -> Self {
        Writer {
            out,
            written_by: HashMap::new(),
            stats: ImportStats::default(),
        }
    }

    /// Check that no parent of `rel` inside `out` is a symlink or a non-directory,
    /// creating missing parents as directories; returns what is at `rel` now.
    fn prepare(&mut self, source: &str, rel: &Path) -> Result<Existing, ImportError> {
        let mut at = self.out.to_path_buf();
        let parents: Vec<_> = rel
            .parent()
            .map(|p| p.components().collect())
            .unwrap_or_default();
        for part in parents {
            at.push(part);
            match fs::symlink_metadata(&at) {
                Ok(meta) if meta.file_type().is_symlink() => {
                    return Err(unsafe_entry(
                        source,
                        &rel.to_string_lossy(),
                        &format!(
                            "its parent {} is a symlink; refusing to write through it",
                            self.shown(&at)
                        ),
                    ))
                }
                Ok(meta) if meta.is_dir() => {}
                Ok(_) => {
                    return Err(self.conflict(&at, source));
                }
                Err(e) if e.kind() == io::ErrorKind::NotFound => {
                    fs::create_dir(&at).map_err(io_err(&at))?;
                    set_mode(&at, 0o755)?;
                    self.stats.dirs += 1;
                }
                Err(e) => return Err(io_err(&at)(e)),
            }
        }
        let target = self.out.join(rel);
        match fs::symlink_metadata(&target) {
            Ok(meta) if meta.file_type().is_symlink() => Ok(Existing::Symlink(
                fs::read_link(&target).map_err(io_err(&target))?,
            )),
            Ok(meta) if meta.is_dir() => Ok(Existing::Dir),
            Ok(_) => Ok(Existing::File),
            Err(e) if e.kind() == io::ErrorKind::NotFound => Ok(Existing::Nothing),
            Err(e) => Err(io_err(&target)(e)),
        }
    }

    fn dir(&mut self, source: &str, rel: &Path) -> Result<(), ImportError> {
        let target = self.out.join(rel);
        match self.prepare(source, rel)? {
            Existing::Dir => Ok(()),
            Existing::Nothing => {
                fs::create_dir(&target).map_err(io_err(&target))?;
                set_mode(&target, 0o755)?;
                self.stats.dirs += 1;
                Ok(())
            }
            Existing::File | Existing::Symlink(_) => Err(self.conflict(&target, source)),
        }
    }

    fn file(
        &mut self,
        source: &str,
        rel: &Path,
        content: &mut dyn Read,
        executable: bool,
    ) -> Result<(), ImportError> {
        let target = self.out.join(rel);
        match self.prepare(source, rel)? {
            Existing::Nothing => {}
            Existing::File if same_content(&target, content, source)? => return Ok(()),
            _ => return Err(self.conflict(&target, source)),
        }
        let mode = if executable { 0o755 } else { 0o644 };
        let mut out = OpenOptions::new()
            .write(true)
            .create_new(true)
            .mode(mode)
            .open(&target)
            .map_err(io_err(&target))?;
        let bytes = io::copy(content, &mut out).map_err(|e| ImportError::Read {
            archive: source.to_string(),
            source: e,
        })?;
        out.flush().map_err(io_err(&target))?;
        set_mode(&target, mode)?; // the umask may have narrowed `mode` at creation
        self.record(rel, source);
        self.stats.files += 1;
        self.stats.bytes += bytes;
        Ok(())
    }

    fn symlink(&mut self, source: &str, rel: &Path, link_target: &Path) -> Result<(), ImportError> {
        let target = self.out.join(rel);
        match self.prepare(source, rel)? {
            Existing::Nothing => {}
            Existing::Symlink(existing) if existing == link_target => return Ok(()),
            _ => return Err(self.conflict(&target, source)),
        }
        std::os::unix::fs::symlink(link_target, &target).map_err(io_err(&target))?;
        self.record(rel, source);
        self.stats.symlinks += 1;
        Ok(())
    }

    /// A hard link becomes a copy of the regular file it names, which must have
    /// been written earlier by this import.
    fn hardlink(
        &mut self,
        source: &str,
        rel: &Path,
        existing_rel: &Path,
    ) -> Result<(), ImportError> {
        let existing = self.out.join(existing_rel);
        let dangling = || ImportError::DanglingHardlink {
            archive: source.to_string(),
            entry: rel.to_string_lossy().into_owned(),
            target: existing_rel.to_string_lossy().into_owned(),
        };
        // Only a file this import wrote, reached without symlinks, may be copied.
        if !self.written_by.contains_key(existing_rel) {
            return Err(dangling());
        }
        match self.prepare(source, existing_rel)? {
            Existing::File => {}
            _ => return Err(dangling()),
        }
        let executable = is_executable(&existing)?;
        let mut file = File::open(&existing).map_err(io_err(&existing))?;
        self.file(source, rel, &mut file, executable)
    }

    fn record(&mut self, rel: &Path, source: &str) {
        self.written_by
            .insert(rel.to_path_buf(), source.to_string());
    }

    fn conflict(&self, target: &Path, second: &str) -> ImportError {
        let rel = target.strip_prefix(self.out).unwrap_or(target);
        let first = self
            .written_by
            .get(rel)
            .cloned()
            .unwrap_or_else(|| "an earlier entry".to_string());
        ImportError::Conflict {
            path: PathBuf::from("/").join(rel),
            first,
            second: second.to_string(),
        }
    }

    /// A path inside `out` as the sandbox will see it.
    fn shown(&self, path: &Path) -> String {
        let rel = path.strip_prefix(self.out).unwrap_or(path);
        format!("/{}", rel.display())
    }
}

fn set_mode(path: &Path, mode: u32) -> Result<(), ImportError> {
    fs::set_permissions(path, fs::Permissions::from_mode(mode)).map_err(io_err(path))
}

/// Compare an existing file with incoming content chunk by chunk, consuming the
/// incoming stream; never buffers either whole.
fn same_content(
    existing: &Path,
    incoming: &mut dyn Read,
    source: &str,
) -> Result<bool, ImportError> {
    let mut file = File::open(existing).map_err(io_err(existing))?;
    let mut a = vec![0u8; 64 * 1024];
    let mut b = vec![0u8; 64 * 1024];
    loop {
        let n = read_full(incoming, &mut a).map_err(|e| ImportError::Read {
            archive: source.to_string(),
            source: e,
        })?;
        let m = read_full(&mut file, &mut b[..n.max(1)]).map_err(io_err(existing))?;
        if n == 0 {
            return Ok(m == 0);
        }
        if n != m || a[..n] != b[..m] {
            return Ok(false);
        }
    }
}

/// Read until `buf` is full or the stream ends; returns the bytes read.
fn read_full(reader: &mut dyn Read, buf: &mut [u8]) -> io::Result<usize> {
    let mut filled = 0;
    while filled < buf.len() {
        match reader.read(&mut buf[filled..]) {
            Ok(0) => break,
            Ok(n) => filled += n,
            Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
            Err(e) => return Err(e),
        }
    }
    Ok(filled)
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::io::Cursor;

    /// One tar entry as a test writes it; names are written raw, unvalidated,
    /// so that hostile archives can be built.
    enum E<'a> {
        Dir(&'a str),
        File(&'a str, &'a [u8], u32),
        Symlink(&'a str, &'a str),
        Hardlink(&'a str, &'a str),
        Fifo(&'a str),
    }

    fn tar_bytes(entries: &[E]) -> Vec<u8> {
        let mut builder = tar::Builder::new(Vec::new());
        for entry in entries {
            let mut header = tar::Header::new_ustar();
            let (name, kind, data, mode, link): (&str, tar::EntryType, &[u8], u32, Option<&str>) =
                match entry {
                    E::Dir(n) => (n, tar::EntryType::Directory, b"", 0o755, None),
                    E::File(n, d, m) => (n, tar::EntryType::Regular, d, *m, None),
                    E::Symlink(n, t) => (n, tar::EntryType::Symlink, b"", 0o777, Some(t)),
                    E::Hardlink(n, t) => (n, tar::EntryType::Link, b"", 0o644, Some(t)),
                    E::Fifo(n) => (n, tar::EntryType::Fifo, b"", 0o644, None),
                };
            let raw = &mut header.as_old_mut().name;
            raw[..name.len()].copy_from_slice(name.as_bytes());
            if let Some(link) = link {
                header.as_old_mut().linkname[..link.len()].copy_from_slice(link.as_bytes());
            }
            header.set_entry_type(kind);
            header.set_mode(mode);
            header.set_size(data.len() as u64);
            header.set_cksum();
            builder.append(&header, data).unwrap();
        }
        builder.into_inner().unwrap()
    }

    fn gzip(bytes: &[u8]) -> Vec<u8> {
        let mut enc = flate2::write::GzEncoder::new(Vec::new(), flate2::Compression::fast());
        enc.write_all(bytes).unwrap();
        enc.finish().unwrap()
    }

    fn xz(bytes: &[u8]) -> Vec<u8> {
        let mut enc = xz2::write::XzEncoder::new(Vec::new(), 1);
        enc.write_all(bytes).unwrap();
        enc.finish().unwrap()
    }

    fn deb_bytes(members: &[(&str, Vec<u8>)]) -> Vec<u8> {
        let mut builder = ar::Builder::new(Vec::new());
        for (name, data) in members {
            let header = ar::Header::new(name.as_bytes().to_vec(), data.len() as u64);
            builder.append(&header, Cursor::new(data)).unwrap();
        }
        builder.into_inner().unwrap()
    }

    struct Fixture {
        dir: tempfile::TempDir,
        out: PathBuf,
    }

    impl Fixture {
        fn new() -> Self {
            let dir = tempfile::tempdir().unwrap();
            let out = dir.path().join("out");
            fs::create_dir(&out).unwrap();
            Fixture { dir, out }
        }
        fn source(&self, name: &str, bytes: &[u8]) -> (String, PathBuf) {
            let path = self.dir.path().join("src").join(name);
            fs::create_dir_all(path.parent().unwrap()).unwrap();
            fs::write(&path, bytes).unwrap();
            (name.to_string(), path)
        }
        fn import(&self, sources: &[(String, PathBuf)]) -> Result<ImportStats, ImportError> {
            import(sources, true, &self.out)
        }
    }

    fn mode(path: &Path) -> u32 {
        fs::symlink_metadata(path).unwrap().permissions().mode() & 0o7777
    }

    #[test]
    fn unpacks_a_tarball_with_links_and_modes() {
        let fx = Fixture::new();
        let tar = tar_bytes(&[
            E::Dir("./"),
            E::Dir("./usr/"),
            E::File("./usr/bin/tool", b"#!/bin/sh\n", 0o4755),
            E::File("./usr/share/doc", b"docs", 0o600),
            E::Symlink("./usr/bin/alias", "tool"),
            E::Hardlink("./usr/bin/copy", "./usr/bin/tool"),
        ]);
        let stats = fx.import(&[fx.source("t.tar.gz", &gzip(&tar))]).unwrap();
        let bin = fx.out.join("usr/bin");
        assert_eq!(fs::read(bin.join("tool")).unwrap(), b"#!/bin/sh\n");
        assert_eq!(mode(&bin.join("tool")), 0o755, "setuid dropped, exec kept");
        assert_eq!(mode(&fx.out.join("usr/share/doc")), 0o644);
        assert_eq!(
            fs::read_link(bin.join("alias")).unwrap(),
            PathBuf::from("tool")
        );
        assert_eq!(fs::read(bin.join("copy")).unwrap(), b"#!/bin/sh\n");
        assert!(!fs::symlink_metadata(bin.join("copy"))
            .unwrap()
            .file_type()
            .is_symlink());
        assert_eq!(
            stats,
            ImportStats {
                files: 3,
                dirs: 3,
                symlinks: 1,
                bytes: 24,
                skipped_special: 0
            }
        );
    }

    #[test]
    fn unpacks_tar_xz_and_plain_tar() {
        let fx = Fixture::new();
        let a = tar_bytes(&[E::File("a.txt", b"a", 0o644)]);
        let b = tar_bytes(&[E::File("b.txt", b"b", 0o644)]);
        fx.import(&[fx.source("a.tar.xz", &xz(&a)), fx.source("b.tar", &b)])
            .unwrap();
        assert_eq!(fs::read(fx.out.join("a.txt")).unwrap(), b"a");
        assert_eq!(fs::read(fx.out.join("b.txt")).unwrap(), b"b");
    }

    #[test]
    fn unpacks_the_data_member_of_a_deb() {
        let fx = Fixture::new();
        let control = tar_bytes(&[E::File("./control", b"Package: x\n", 0o644)]);
        let data = tar_bytes(&[E::File("./bin/busybox", b"\x7fELF", 0o755)]);
        let deb = deb_bytes(&[
            ("debian-binary", b"2.0\n".to_vec()),
            ("control.tar.xz", xz(&control)),
            ("data.tar.xz", xz(&data)),
        ]);
        fx.import(&[fx.source("x_1_amd64.deb", &deb)]).unwrap();
        assert_eq!(fs::read(fx.out.join("bin/busybox")).unwrap(), b"\x7fELF");
        assert_eq!(mode(&fx.out.join("bin/busybox")), 0o755);
        assert!(
            !fx.out.join("control").exists(),
            "control data must not be imported"
        );
    }

    #[test]
    fn deb_without_data_or_with_unknown_compression_is_refused() {
        let fx = Fixture::new();
        let no_data = deb_bytes(&[("debian-binary", b"2.0\n".to_vec())]);
        let err = fx.import(&[fx.source("a.deb", &no_data)]).unwrap_err();
        assert!(
            matches!(&err, ImportError::NoDebData { archive } if archive == "a.deb"),
            "{err}"
        );
        let zst = deb_bytes(&[
            ("debian-binary", b"2.0\n".to_vec()),
            ("data.tar.zst", vec![1, 2]),
        ]);
        let err = fx.import(&[fx.source("b.deb", &zst)]).unwrap_err();
        assert!(
            matches!(&err, ImportError::UnsupportedCompression { archive, member } if archive == "b.deb" && member == "data.tar.zst"),
            "{err}"
        );
    }

    fn assert_unsafe(err: ImportError, archive: &str, entry: &str) {
        match &err {
            ImportError::UnsafeEntry {
                archive: a,
                entry: e,
                ..
            } => {
                assert_eq!(a, archive);
                assert_eq!(e, entry);
            }
            other => panic!("expected UnsafeEntry, got {other:?}"),
        }
        let message = err.to_string();
        assert!(
            message.contains(archive) && message.contains(entry),
            "{message}"
        );
    }

    #[test]
    fn refuses_absolute_paths() {
        let fx = Fixture::new();
        let tar = tar_bytes(&[E::File("/etc/passwd", b"root::0:0", 0o644)]);
        let err = fx.import(&[fx.source("evil.tar", &tar)]).unwrap_err();
        assert_unsafe(err, "evil.tar", "/etc/passwd");
    }

    #[test]
    fn refuses_parent_directory_traversal() {
        let fx = Fixture::new();
        let tar = tar_bytes(&[E::File("usr/../../escaped", b"x", 0o644)]);
        let err = fx.import(&[fx.source("evil.tar", &tar)]).unwrap_err();
        assert_unsafe(err, "evil.tar", "usr/../../escaped");
        assert!(!fx.dir.path().join("escaped").exists());
    }

    #[test]
    fn refuses_writing_through_a_symlink() {
        let fx = Fixture::new();
        let outside = fx.dir.path().join("outside");
        fs::create_dir(&outside).unwrap();
        let tar = tar_bytes(&[
            E::Symlink("lib", outside.to_str().unwrap()),
            E::File("lib/pwned", b"x", 0o644),
        ]);
        let err = fx.import(&[fx.source("evil.tar", &tar)]).unwrap_err();
        assert_unsafe(err, "evil.tar", "lib/pwned");
        assert!(!outside.join("pwned").exists());
    }

    #[test]
    fn refuses_a_symlink_planted_by_an_earlier_source() {
        let fx = Fixture::new();
        let first = tar_bytes(&[E::Symlink("etc", "../../..")]);
        let second = tar_bytes(&[E::Dir("etc/"), E::File("etc/x", b"x", 0o644)]);
        let err = fx
            .import(&[fx.source("one.tar", &first), fx.source("two.tar", &second)])
            .unwrap_err();
        assert!(
            matches!(&err, ImportError::Conflict { path, first, second }
            if path == Path::new("/etc") && first == "one.tar" && second == "two.tar"),
            "{err}"
        );
    }

    #[test]
    fn hardlinks_must_name_a_file_written_before() {
        let fx = Fixture::new();
        let tar = tar_bytes(&[E::Hardlink("copy", "../../etc/shadow")]);
        assert_unsafe(
            fx.import(&[fx.source("a.tar", &tar)]).unwrap_err(),
            "a.tar",
            "../../etc/shadow",
        );
        let tar = tar_bytes(&[E::Hardlink("copy", "missing")]);
        let err = fx.import(&[fx.source("b.tar", &tar)]).unwrap_err();
        assert!(matches!(err, ImportError::DanglingHardlink { .. }), "{err}");
    }

    #[test]
    fn identical_overwrites_pass_and_different_ones_name_both_sources() {
        let fx = Fixture::new();
        let a = tar_bytes(&[
            E::File("usr/share/common", b"same", 0o644),
            E::Symlink("l", "t"),
        ]);
        let b = tar_bytes(&[
            E::File("usr/share/common", b"same", 0o644),
            E::Symlink("l", "t"),
        ]);
        let c = tar_bytes(&[E::File("usr/share/common", b"different", 0o644)]);
        let sources = [fx.source("a.tar", &a), fx.source("b.tar", &b)];
        assert_eq!(fx.import(&sources).unwrap().files, 1);

        let fx = Fixture::new();
        let err = fx
            .import(&[fx.source("a.tar", &a), fx.source("c.tar", &c)])
            .unwrap_err();
        let message = err.to_string();
        assert!(
            matches!(&err, ImportError::Conflict { path, first, second }
            if path == Path::new("/usr/share/common") && first == "a.tar" && second == "c.tar"),
            "{err}"
        );
        assert!(
            message.contains("a.tar") && message.contains("c.tar"),
            "{message}"
        );
        // A prefix of the earlier content is different content too.
        let fx = Fixture::new();
        let d = tar_bytes(&[E::File("usr/share/common", b"sam", 0o644)]);
        assert!(fx
            .import(&[fx.source("a.tar", &a), fx.source("d.tar", &d)])
            .is_err());
    }

    #[test]
    fn device_nodes_and_fifos_are_skipped_and_counted() {
        let fx = Fixture::new();
        let tar = tar_bytes(&[E::Fifo("dev/initctl"), E::File("ok", b"1", 0o644)]);
        let stats = fx.import(&[fx.source("a.tar", &tar)]).unwrap();
        assert_eq!(stats.skipped_special, 1);
        assert!(!fx.out.join("dev/initctl").exists());
        assert!(fx.out.join("ok").exists());
    }

    #[test]
    fn without_unpack_sources_are_copied_as_is() {
        let fx = Fixture::new();
        let tar = tar_bytes(&[E::File("inner", b"x", 0o644)]);
        let stats = import(&[fx.source("keep.tar", &tar)], false, &fx.out).unwrap();
        assert_eq!(fs::read(fx.out.join("keep.tar")).unwrap(), tar);
        assert!(!fx.out.join("inner").exists());
        assert_eq!(stats.files, 1);
    }

    #[test]
    fn unknown_formats_ask_for_unpack_false() {
        let fx = Fixture::new();
        let err = fx.import(&[fx.source("notes.txt", b"hi")]).unwrap_err();
        assert!(err.to_string().contains("unpack = false"), "{err}");
    }

    #[test]
    fn directory_sources_merge_into_the_root_keeping_symlinks() {
        let fx = Fixture::new();
        let overlay = fx.dir.path().join("overlay");
        fs::create_dir_all(overlay.join("usr/bin")).unwrap();
        std::os::unix::fs::symlink("gcc", overlay.join("usr/bin/cc")).unwrap();
        let tar = tar_bytes(&[E::File("usr/bin/gcc", b"gcc", 0o755)]);
        let sources = [fx.source("gcc.tar", &tar), ("overlay".to_string(), overlay)];
        fx.import(&sources).unwrap();
        assert_eq!(
            fs::read_link(fx.out.join("usr/bin/cc")).unwrap(),
            PathBuf::from("gcc")
        );
        assert_eq!(fs::read(fx.out.join("usr/bin/cc")).unwrap(), b"gcc");
    }
}
