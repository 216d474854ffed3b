//! Root assembly: merges store-object layers into a hardlink farm that the
//! helper later bind-mounts read-only as the sandbox's `/`.
//!
//! Directories are created fresh and merged; files and symlinks are hardlinked
//! (copied when `link(2)` is refused, e.g. across file systems). The first
//! layer to provide a path wins; a later layer may provide the same path only
//! with an identical entry (same type, same content or target, same executable
//! bit), else assembly stops with [`SandboxError::LayerConflict`] naming both
//! layers. Content is compared only when two layers collide, so the common case
//! costs one `readdir` walk per layer plus one syscall per entry.

use std::fs::{self, DirBuilder};
use std::io::{self, ErrorKind, Read};
use std::os::unix::fs::{DirBuilderExt, MetadataExt, PermissionsExt};
use std::path::{Path, PathBuf};

use walkdir::WalkDir;

use super::{Layer, SandboxError};
use crate::recipe::stage;

/// Directories the sandbox mounts over; created in the farm if no layer has them.
pub(crate) const MOUNT_POINTS: &[&str] = &["build", "forge", "forge/sources", "forge/out", "tmp", "dev", "proc"];

/// `$HOME` of every build; it must not exist (like Nix's /homeless-shelter), so
/// tools that insist on writing to `$HOME` fail loudly instead of leaking state.
pub(crate) const HOMELESS: &str = "homeless";

/// Builds the farm in `farm` (an existing empty directory) from `layers`,
/// lowest first, then adds the mount points. With `build_dir` (`/NAME`), the working
/// directory's mount point is NAME and `build` a symlink to it.
pub(crate) fn assemble(layers: &[Layer], farm: &Path, build_dir: Option<&str>) -> Result<(), SandboxError> {
    for index in 0..layers.len() {
        merge_layer(layers, index, farm)?;
    }
    add_mount_points(layers, farm)?;
    if let Some(dir) = build_dir {
        move_build_dir(layers, farm, dir)?;
    }
    if let Ok(meta) = fs::symlink_metadata(farm.join(HOMELESS)) {
        let path = PathBuf::from(HOMELESS);
        let layer = provider(layers, &path, Some(&meta)).unwrap_or_default();
        return Err(SandboxError::ReservedPath { path, layer, purpose: "$HOME must not exist" });
    }
    Ok(())
}

fn merge_layer(layers: &[Layer], index: usize, farm: &Path) -> Result<(), SandboxError> {
    let layer = &layers[index];
    let prefix = stage::relative(&layer.at);
    create_prefix(layers, index, prefix, farm)?;
    // Unsorted (readdir order): sorting would cost more than the links.
    for entry in WalkDir::new(&layer.path).min_depth(1) {
        let entry = entry.map_err(|e| walk_error(layer, e))?;
        let rel = entry.path().strip_prefix(&layer.path).map_err(|_| SandboxError::LayerUnreadable {
            name: layer.name.clone(),
            path: entry.path().to_path_buf(),
            source: io::Error::new(ErrorKind::InvalidData, "walked outside the layer"),
        })?;
        let rel = &prefix.join(rel);
        let dest = farm.join(rel);
        let file_type = entry.file_type();
        if file_type.is_dir() {
            merge_dir(layers, index, rel, &dest)?;
        } else if file_type.is_file() || file_type.is_symlink() {
            link_entry(layers, index, entry.path(), rel, &dest)?;
        } else {
            return Err(SandboxError::UnsupportedFileType {
                path: rel.to_path_buf(),
                layer: layer.name.clone(),
                kind: special_kind(&file_type),
            });
        }
    }
    Ok(())
}

/// The directories leading to a placed layer (`lfs`, then `lfs/usr` for
/// `/lfs/usr`), merged like directories the layer itself provides.
fn create_prefix(layers: &[Layer], index: usize, prefix: &Path, farm: &Path) -> Result<(), SandboxError> {
    let mut rel = PathBuf::new();
    for component in prefix.components() {
        rel.push(component);
        merge_dir(layers, index, &rel, &farm.join(&rel))?;
    }
    Ok(())
}

fn walk_error(layer: &Layer, err: walkdir::Error) -> SandboxError {
    let path = err.path().unwrap_or(&layer.path).to_path_buf();
    let source = err
        .into_io_error()
        .unwrap_or_else(|| io::Error::new(ErrorKind::InvalidData, "file system loop"));
    SandboxError::LayerUnreadable { name: layer.name.clone(), path, source }
}

fn merge_dir(layers: &[Layer], index: usize, rel: &Path, dest: &Path) -> Result<(), SandboxError> {
    match DirBuilder::new().mode(0o755).create(dest) {
        Ok(()) => Ok(()),
        Err(e) if e.kind() == ErrorKind::AlreadyExists => {
            // lstat, not stat: a symlink from a lower layer must not let this
            // layer's files land outside the farm.
            let existing = fs::symlink_metadata(dest).map_err(SandboxError::io("inspect", dest))?;
            if existing.is_dir() {
                Ok(())
            } else {
                let detail = format!("{} vs a directory", describe(&existing, dest));
                Err(conflict(layers, index, rel, &existing, detail))
            }
        }
        Err(e) => Err(SandboxError::Io { action: "create", path: dest.to_path_buf(), source: e }),
    }
}

fn link_entry(layers: &[Layer], index: usize, src: &Path, rel: &Path, dest: &Path) -> Result<(), SandboxError> {
    match fs::hard_link(src, dest) {
        Ok(()) => Ok(()),
        Err(e) if e.kind() == ErrorKind::AlreadyExists => {
            let existing = fs::symlink_metadata(dest).map_err(SandboxError::io("inspect", dest))?;
            match difference(dest, &existing, src).map_err(SandboxError::io("compare", src))? {
                None => Ok(()),
                Some(detail) => Err(conflict(layers, index, rel, &existing, detail)),
            }
        }
        // Different file system, protected_hardlinks, or too many links: copy.
        Err(e) if matches!(e.raw_os_error(), Some(libc::EXDEV | libc::EPERM | libc::EMLINK)) => {
            copy_entry(src, dest).map_err(SandboxError::io("copy into the sandbox root", src))
        }
        Err(e) => Err(SandboxError::Io { action: "hardlink into the sandbox root", path: src.to_path_buf(), source: e }),
    }
}

fn copy_entry(src: &Path, dest: &Path) -> io::Result<()> {
    let meta = fs::symlink_metadata(src)?;
    if meta.file_type().is_symlink() {
        std::os::unix::fs::symlink(fs::read_link(src)?, dest)
    } else {
        fs::copy(src, dest).map(|_| ())
    }
}

/// `None` when `candidate` is interchangeable with the `existing` farm entry,
/// else a description of how they differ.
fn difference(existing_path: &Path, existing: &fs::Metadata, candidate: &Path) -> io::Result<Option<String>> {
    let new = fs::symlink_metadata(candidate)?;
    if existing.dev() == new.dev() && existing.ino() == new.ino() {
        return Ok(None);
    }
    let (old_kind, new_kind) = (describe(existing, existing_path), describe(&new, candidate));
    let old_type = existing.file_type();
    if old_type.is_symlink() && new.file_type().is_symlink() {
        let same = fs::read_link(existing_path)? == fs::read_link(candidate)?;
        return Ok((!same).then(|| format!("{old_kind} vs {new_kind}")));
    }
    if !(old_type.is_file() && new.file_type().is_file()) {
        return Ok(Some(format!("{old_kind} vs {new_kind}")));
    }
    if is_executable(existing) != is_executable(&new) {
        return Ok(Some(format!("{old_kind} vs {new_kind}: executable bits differ")));
    }
    if existing.len() != new.len() || !same_contents(existing_path, candidate)? {
        return Ok(Some("regular files with different contents".into()));
    }
    Ok(None)
}

fn is_executable(meta: &fs::Metadata) -> bool {
    meta.permissions().mode() & 0o111 != 0
}

fn same_contents(a: &Path, b: &Path) -> io::Result<bool> {
    let (mut a, mut b) = (fs::File::open(a)?, fs::File::open(b)?);
    let (mut buf_a, mut buf_b) = (vec![0u8; 64 * 1024], vec![0u8; 64 * 1024]);
    loop {
        let n = read_full(&mut a, &mut buf_a)?;
        let m = read_full(&mut b, &mut buf_b)?;
        if n != m || buf_a[..n] != buf_b[..m] {
            return Ok(false);
        }
        if n == 0 {
            return Ok(true);
        }
    }
}

/// Reads until `buf` is full or EOF, so chunk boundaries line up between files.
fn read_full(file: &mut fs::File, buf: &mut [u8]) -> io::Result<usize> {
    let mut filled = 0;
    while filled < buf.len() {
        match file.read(&mut buf[filled..]) {
            Ok(0) => break,
            Ok(n) => filled += n,
            Err(e) if e.kind() == ErrorKind::Interrupted => {}
            Err(e) => return Err(e),
        }
    }
    Ok(filled)
}

fn describe(meta: &fs::Metadata, path: &Path) -> String {
    let file_type = meta.file_type();
    if file_type.is_dir() {
        "a directory".into()
    } else if file_type.is_symlink() {
        match fs::read_link(path) {
            Ok(target) => format!("a symlink to {}", target.display()),
            Err(_) => "a symlink".into(),
        }
    } else if file_type.is_file() {
        if is_executable(meta) { "an executable file".into() } else { "a regular file".into() }
    } else {
        special_kind(&file_type).into()
    }
}

fn special_kind(file_type: &fs::FileType) -> &'static str {
    use std::os::unix::fs::FileTypeExt;
    if file_type.is_fifo() {
        "a named pipe"
    } else if file_type.is_socket() {
        "a socket"
    } else if file_type.is_block_device() || file_type.is_char_device() {
        "a device node"
    } else {
        "an unknown file type"
    }
}

fn conflict(layers: &[Layer], index: usize, rel: &Path, existing: &fs::Metadata, detail: String) -> SandboxError {
    SandboxError::LayerConflict {
        path: rel.to_path_buf(),
        first: provider(&layers[..index], rel, Some(existing)).unwrap_or_default(),
        second: layers[index].label(),
        detail,
    }
}

/// The lowest layer that provides `rel` (a path in the farm; with the same file
/// type as `existing` if given), as labelled in errors. A placed layer provides
/// the directories leading to it too. Only called on the error path, so the
/// extra lstat calls are fine.
fn provider(layers: &[Layer], rel: &Path, existing: Option<&fs::Metadata>) -> Option<String> {
    let wanted = existing.map(|m| m.file_type());
    layers
        .iter()
        .find(|layer| {
            let prefix = stage::relative(&layer.at);
            if prefix.starts_with(rel) && rel != prefix {
                return wanted.is_none_or(|t| t.is_dir());
            }
            let Ok(inside) = rel.strip_prefix(prefix) else { return false };
            match fs::symlink_metadata(layer.path.join(inside)) {
                Ok(meta) => wanted.is_none_or(|t| t == meta.file_type()),
                Err(_) => false,
            }
        })
        .map(Layer::label)
}

fn add_mount_points(layers: &[Layer], farm: &Path) -> Result<(), SandboxError> {
    for point in MOUNT_POINTS {
        let dest = farm.join(point);
        match DirBuilder::new().mode(0o755).create(&dest) {
            Ok(()) => {}
            Err(e) if e.kind() == ErrorKind::AlreadyExists => {
                let meta = fs::symlink_metadata(&dest).map_err(SandboxError::io("inspect", &dest))?;
                if !meta.is_dir() {
                    let path = PathBuf::from(point);
                    let layer = provider(layers, &path, Some(&meta)).unwrap_or_default();
                    return Err(SandboxError::ReservedPath { path, layer, purpose: "a sandbox mount point" });
                }
            }
            Err(e) => return Err(SandboxError::Io { action: "create", path: dest, source: e }),
        }
    }
    Ok(())
}

/// `build` becomes a symlink to the fresh mount point `dir`; both must be free of layers.
fn move_build_dir(layers: &[Layer], farm: &Path, dir: &str) -> Result<(), SandboxError> {
    let reserved = |path: &str| {
        let path = PathBuf::from(path);
        let layer = provider(layers, &path, None).unwrap_or_default();
        SandboxError::ReservedPath { path, layer, purpose: "the build directory of a --check round" }
    };
    let build = farm.join("build");
    fs::remove_dir(&build).map_err(|_| reserved("build"))?;
    std::os::unix::fs::symlink(dir, &build).map_err(SandboxError::io("create", &build))?;
    let name = dir.trim_start_matches('/');
    DirBuilder::new().mode(0o755).create(farm.join(name)).map_err(|_| reserved(name))
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::os::unix::fs::symlink;

    fn layer(dir: &Path, name: &str) -> Layer {
        let path = dir.join(name);
        fs::create_dir_all(&path).unwrap();
        Layer::at_root(name, path)
    }

    fn placed(dir: &Path, name: &str, at: &str) -> Layer {
        Layer { at: PathBuf::from(at), ..layer(dir, name) }
    }

    fn write(layer: &Layer, rel: &str, contents: &str, mode: u32) {
        let path = layer.path.join(rel);
        fs::create_dir_all(path.parent().unwrap()).unwrap();
        fs::write(&path, contents).unwrap();
        fs::set_permissions(&path, fs::Permissions::from_mode(mode)).unwrap();
    }

    fn farm(dir: &Path) -> PathBuf {
        let farm = dir.join("farm");
        fs::create_dir(&farm).unwrap();
        farm
    }

    #[test]
    fn merges_directories_and_hardlinks_files() {
        let tmp = tempfile::tempdir().unwrap();
        let (a, b) = (layer(tmp.path(), "a"), layer(tmp.path(), "b"));
        write(&a, "usr/bin/x", "x", 0o755);
        write(&b, "usr/lib/y", "y", 0o644);
        symlink("usr/bin", b.path.join("bin")).unwrap();
        let farm = farm(tmp.path());
        assemble(&[a.clone(), b], &farm, None).unwrap();
        assert_eq!(fs::read_to_string(farm.join("usr/bin/x")).unwrap(), "x");
        assert_eq!(fs::read_to_string(farm.join("usr/lib/y")).unwrap(), "y");
        assert_eq!(fs::read_link(farm.join("bin")).unwrap(), PathBuf::from("usr/bin"));
        // A hardlink, not a copy: same inode as the store object.
        let (src, dst) = (fs::metadata(a.path.join("usr/bin/x")).unwrap(), fs::metadata(farm.join("usr/bin/x")).unwrap());
        assert_eq!(src.ino(), dst.ino());
        for point in MOUNT_POINTS {
            assert!(farm.join(point).is_dir(), "{point}");
        }
        assert!(!farm.join(HOMELESS).exists());
    }

    #[test]
    fn identical_duplicates_are_fine() {
        let tmp = tempfile::tempdir().unwrap();
        let (a, b) = (layer(tmp.path(), "a"), layer(tmp.path(), "b"));
        write(&a, "etc/f", "same", 0o644);
        write(&b, "etc/f", "same", 0o644);
        symlink("f", a.path.join("etc/g")).unwrap();
        symlink("f", b.path.join("etc/g")).unwrap();
        assemble(&[a, b], &farm(tmp.path()), None).unwrap();
    }

    #[test]
    fn different_contents_conflict_names_both_layers() {
        let tmp = tempfile::tempdir().unwrap();
        let (a, b, c) = (layer(tmp.path(), "a"), layer(tmp.path(), "b"), layer(tmp.path(), "c"));
        write(&a, "other", "1", 0o644);
        write(&b, "etc/f", "one", 0o644);
        write(&c, "etc/f", "two", 0o644);
        let err = assemble(&[a, b, c], &farm(tmp.path()), None).unwrap_err();
        match err {
            SandboxError::LayerConflict { path, first, second, detail } => {
                assert_eq!(path, PathBuf::from("etc/f"));
                assert_eq!((first.as_str(), second.as_str()), ("b", "c"));
                assert!(detail.contains("different contents"), "{detail}");
            }
            other => panic!("expected a conflict, got {other:?}"),
        }
    }

    #[test]
    fn exec_bit_and_symlink_target_and_type_differences_conflict() {
        type MakeLayer = fn(&Layer);
        let cases: [(&str, MakeLayer, MakeLayer); 3] = [
            ("executable bits differ", |l| write(l, "f", "x", 0o755), |l| write(l, "f", "x", 0o644)),
            ("a symlink to t1 vs a symlink to t2", |l| symlink("t1", l.path.join("f")).unwrap(), |l| symlink("t2", l.path.join("f")).unwrap()),
            ("a symlink to usr/lib vs a directory", |l| symlink("usr/lib", l.path.join("f")).unwrap(), |l| write(l, "f/inner", "x", 0o644)),
        ];
        for (expected, make_a, make_b) in cases {
            let tmp = tempfile::tempdir().unwrap();
            let (a, b) = (layer(tmp.path(), "a"), layer(tmp.path(), "b"));
            make_a(&a);
            make_b(&b);
            let farm = farm(tmp.path());
            match assemble(&[a, b], &farm, None) {
                Err(SandboxError::LayerConflict { detail, first, second, .. }) => {
                    assert!(detail.contains(expected), "{detail} should mention {expected}");
                    assert_eq!((first.as_str(), second.as_str()), ("a", "b"));
                }
                other => panic!("expected a conflict for {expected}, got {other:?}"),
            }
            // The symlinked directory was not followed out of the farm.
            assert!(!tmp.path().join("usr/lib/inner").exists());
        }
    }

    #[test]
    fn layer_cannot_shadow_mount_points_or_homeless() {
        let tmp = tempfile::tempdir().unwrap();
        let a = layer(tmp.path(), "a");
        write(&a, "proc", "not a dir", 0o644);
        match assemble(&[a], &farm(tmp.path()), None) {
            Err(SandboxError::ReservedPath { path, layer, .. }) => {
                assert_eq!((path, layer.as_str()), (PathBuf::from("proc"), "a"));
            }
            other => panic!("expected ReservedPath, got {other:?}"),
        }
        let tmp = tempfile::tempdir().unwrap();
        let b = layer(tmp.path(), "b");
        fs::create_dir(b.path.join("homeless")).unwrap();
        assert!(matches!(assemble(&[b], &farm(tmp.path()), None), Err(SandboxError::ReservedPath { .. })));
    }

    #[test]
    fn layer_directories_under_mount_points_are_accepted() {
        let tmp = tempfile::tempdir().unwrap();
        let a = layer(tmp.path(), "a");
        write(&a, "tmp/.keep", "", 0o644);
        assemble(&[a], &farm(tmp.path()), None).unwrap();
    }

    #[test]
    fn placed_layers_land_under_their_directory_beside_the_same_object_at_root() {
        let tmp = tempfile::tempdir().unwrap();
        let (root_glibc, lfs_glibc) = (layer(tmp.path(), "glibc"), placed(tmp.path(), "glibc", "/lfs/sysroot"));
        write(&root_glibc, "usr/lib/libc.so", "libc", 0o644);
        let lfs_glibc = Layer { path: root_glibc.path.clone(), ..lfs_glibc };
        let root = farm(tmp.path());
        assemble(&[root_glibc, lfs_glibc], &root, None).unwrap();
        assert_eq!(fs::read_to_string(root.join("usr/lib/libc.so")).unwrap(), "libc");
        assert_eq!(fs::read_to_string(root.join("lfs/sysroot/usr/lib/libc.so")).unwrap(), "libc");
        // An empty object still gets its directory.
        let tmp = tempfile::tempdir().unwrap();
        let root = farm(tmp.path());
        assemble(&[placed(tmp.path(), "empty", "/opt/x")], &root, None).unwrap();
        assert!(root.join("opt/x").is_dir());
    }

    #[test]
    fn conflicts_under_a_placed_layer_show_the_full_path_and_placement() {
        let tmp = tempfile::tempdir().unwrap();
        let (a, b) = (layer(tmp.path(), "host"), placed(tmp.path(), "glibc", "/lfs"));
        write(&a, "lfs/usr/lib/libc.so", "host", 0o644);
        write(&b, "usr/lib/libc.so", "target", 0o644);
        match assemble(&[a, b], &farm(tmp.path()), None) {
            Err(err @ SandboxError::LayerConflict { .. }) => assert_eq!(
                err.to_string(),
                "layer conflict at /lfs/usr/lib/libc.so: \"host\" and \"glibc (at /lfs)\" both provide it (regular files with different contents)"
            ),
            other => panic!("expected a conflict, got {other:?}"),
        }
    }

    #[test]
    fn a_placement_directory_cannot_replace_a_file_or_follow_a_symlink() {
        // A lower layer's file where the placement directory goes.
        let tmp = tempfile::tempdir().unwrap();
        let (a, b) = (layer(tmp.path(), "a"), placed(tmp.path(), "b", "/lfs/usr"));
        write(&a, "lfs", "a file", 0o644);
        write(&b, "x", "x", 0o644);
        match assemble(&[a, b], &farm(tmp.path()), None) {
            Err(SandboxError::LayerConflict { path, first, second, detail }) => {
                assert_eq!(path, PathBuf::from("lfs"));
                assert_eq!((first.as_str(), second.as_str()), ("a", "b (at /lfs/usr)"));
                assert_eq!(detail, "a regular file vs a directory");
            }
            other => panic!("expected a conflict, got {other:?}"),
        }
        // A symlink where the placement goes is not followed out of the farm.
        let tmp = tempfile::tempdir().unwrap();
        let outside = tmp.path().join("outside");
        fs::create_dir(&outside).unwrap();
        let (a, b) = (layer(tmp.path(), "a"), placed(tmp.path(), "b", "/lfs"));
        symlink(&outside, a.path.join("lfs")).unwrap();
        write(&b, "x", "x", 0o644);
        assert!(matches!(assemble(&[a, b], &farm(tmp.path()), None), Err(SandboxError::LayerConflict { .. })));
        assert!(!outside.join("x").exists());
        // The other way round: the placed layer came first, a later layer's file collides
        // with the directory, and the placed layer is named as its provider.
        let tmp = tempfile::tempdir().unwrap();
        let (b, a) = (placed(tmp.path(), "b", "/lfs"), layer(tmp.path(), "a"));
        write(&b, "x", "x", 0o644);
        write(&a, "lfs", "a file", 0o644);
        match assemble(&[b, a], &farm(tmp.path()), None) {
            Err(SandboxError::LayerConflict { path, first, second, .. }) => {
                assert_eq!(path, PathBuf::from("lfs"));
                assert_eq!((first.as_str(), second.as_str()), ("b (at /lfs)", "a"));
            }
            other => panic!("expected a conflict, got {other:?}"),
        }
    }
}
