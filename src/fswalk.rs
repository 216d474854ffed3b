//! Walking a directory tree by directory file descriptor (`openat`, `fstatat`,
//! `unlinkat`, `fchownat`), as `rm -rf` does, so that no operation ever needs a path
//! longer than one name: a build can create a tree deeper than `PATH_MAX` (relative
//! `mkdir`/`cd` has no limit), and removing or re-owning it must still work.
//!
//! The walk keeps at most [`MAX_OPEN`] directories open. Deeper down, an ancestor's
//! descriptor is closed and reopened on the way back up through the child's `..`, checked
//! against the device and inode recorded on the way down (a directory moved meanwhile is an
//! error, never a walk of something else). Each directory's entries are read in full when
//! it is entered, so closing and reopening a descriptor loses no position.

use std::ffi::{CStr, CString};
use std::io;
use std::os::fd::{AsRawFd, FromRawFd, OwnedFd, RawFd};
use std::os::unix::ffi::OsStrExt;
use std::path::Path;

/// Directory descriptors a walk holds at most (well below the usual limit of 1024).
const MAX_OPEN: usize = 64;

/// What a walk does at each entry below the root. `parent` is the descriptor of the
/// directory holding `name`.
pub(crate) trait Visit {
    /// A non-directory entry, or a directory before its contents are read.
    fn visit(&mut self, parent: RawFd, name: &CStr, is_dir: bool) -> io::Result<()>;
    /// A directory after all its contents were visited.
    fn leave(&mut self, _parent: RawFd, _name: &CStr) -> io::Result<()> {
        Ok(())
    }
    /// Whether entries may vanish while the walk runs (a tree something else is writing):
    /// a directory gone before it could be opened is then skipped, not an error.
    fn tolerates_change(&self) -> bool {
        false
    }
}

/// One directory on the way from the root to where the walk is.
struct Frame {
    name: CString,
    id: (u64, u64),
    fd: Option<OwnedFd>,
    /// Entries not visited yet (name, is a directory), in reverse order.
    pending: Vec<(CString, bool)>,
}

/// Walks everything below the directory `root` (not following symlinks), depth first.
pub(crate) fn walk(root: &Path, visitor: &mut impl Visit) -> io::Result<()> {
    let root_fd = open_dir(libc::AT_FDCWD, &c_path(root)?)?;
    let pending = read_entries(&root_fd)?;
    let mut stack = vec![Frame { name: CString::default(), id: dev_ino(&root_fd)?, fd: Some(root_fd), pending }];
    loop {
        let top = stack.len() - 1;
        let Some((name, is_dir)) = stack[top].pending.pop() else {
            if top == 0 {
                return Ok(());
            }
            let done = stack.pop().expect("a frame above the root");
            let parent = &mut stack[top - 1];
            if parent.fd.is_none() {
                parent.fd = Some(reopen_parent(done.fd.as_ref().expect("the innermost frame is open"), parent.id)?);
            }
            drop(done.fd);
            visitor.leave(parent.fd.as_ref().expect("reopened").as_raw_fd(), &done.name)?;
            continue;
        };
        let parent_fd = stack[top].fd.as_ref().expect("the innermost frame is open").as_raw_fd();
        visitor.visit(parent_fd, &name, is_dir)?;
        if !is_dir {
            continue;
        }
        let fd = match open_dir(parent_fd, &name) {
            Ok(fd) => fd,
            Err(e) if visitor.tolerates_change() && matches!(e.raw_os_error(), Some(libc::ENOENT | libc::ENOTDIR | libc::ELOOP)) => continue,
            Err(e) => return Err(e),
        };
        let frame = Frame { id: dev_ino(&fd)?, pending: read_entries(&fd)?, fd: Some(fd), name };
        stack.push(frame);
        if stack.len() > MAX_OPEN {
            let oldest_open = stack.len() - 1 - MAX_OPEN;
            stack[oldest_open].fd = None;
        }
    }
}

/// Removes `path` and everything below it, whatever its depth, making read-only
/// directories writable on the way (file modes are left alone: files may be hard links
/// to store objects). A missing path is not an error.
pub(crate) fn remove_tree(path: &Path) -> io::Result<()> {
    let meta = match std::fs::symlink_metadata(path) {
        Ok(meta) => meta,
        Err(e) if e.kind() == io::ErrorKind::NotFound => return Ok(()),
        Err(e) => return Err(e),
    };
    if !meta.is_dir() {
        return ignore_missing(std::fs::remove_file(path));
    }
    make_listable(libc::AT_FDCWD, &c_path(path)?)?;
    walk(path, &mut Remover)?;
    ignore_missing(std::fs::remove_dir(path))
}

struct Remover;

impl Visit for Remover {
    fn visit(&mut self, parent: RawFd, name: &CStr, is_dir: bool) -> io::Result<()> {
        if is_dir {
            make_listable(parent, name)
        } else {
            // SAFETY: a valid directory descriptor and a NUL-terminated name.
            check(unsafe { libc::unlinkat(parent, name.as_ptr(), 0) }).or_else(missing_is_fine)
        }
    }

    fn leave(&mut self, parent: RawFd, name: &CStr) -> io::Result<()> {
        // SAFETY: as above.
        check(unsafe { libc::unlinkat(parent, name.as_ptr(), libc::AT_REMOVEDIR) }).or_else(missing_is_fine)
    }
}

/// Gives `path` and everything below it (symlinks themselves, not their targets) the
/// owner `uid` and group `gid`.
pub(crate) fn chown_tree(path: &Path, uid: u32, gid: u32) -> io::Result<()> {
    std::os::unix::fs::lchown(path, Some(uid), Some(gid))?;
    if std::fs::symlink_metadata(path)?.is_dir() {
        walk(path, &mut Chowner { uid, gid })?;
    }
    Ok(())
}

struct Chowner {
    uid: u32,
    gid: u32,
}

impl Visit for Chowner {
    fn visit(&mut self, parent: RawFd, name: &CStr, _is_dir: bool) -> io::Result<()> {
        // SAFETY: a valid directory descriptor and a NUL-terminated name.
        check(unsafe { libc::fchownat(parent, name.as_ptr(), self.uid, self.gid, libc::AT_SYMLINK_NOFOLLOW) })
    }
}

/// The disk space `path` and everything below it take (allocated blocks, each hard-linked
/// file once). Made for trees a build is writing to while they are measured: entries that
/// vanish meanwhile are skipped.
pub(crate) fn disk_usage(path: &Path) -> io::Result<u64> {
    let meta = std::fs::symlink_metadata(path)?;
    let mut usage = Usage { bytes: std::os::unix::fs::MetadataExt::blocks(&meta) * 512, seen: Default::default() };
    if meta.is_dir() {
        walk(path, &mut usage)?;
    }
    Ok(usage.bytes)
}

struct Usage {
    bytes: u64,
    /// (device, inode) of the files with more than one link counted so far.
    seen: std::collections::HashSet<(u64, u64)>,
}

impl Visit for Usage {
    fn visit(&mut self, parent: RawFd, name: &CStr, _is_dir: bool) -> io::Result<()> {
        let mut st = std::mem::MaybeUninit::<libc::stat>::uninit();
        // SAFETY: valid descriptor and name; fstatat fills `st` on success.
        match check(unsafe { libc::fstatat(parent, name.as_ptr(), st.as_mut_ptr(), libc::AT_SYMLINK_NOFOLLOW) }) {
            Ok(()) => {}
            Err(e) if e.kind() == io::ErrorKind::NotFound => return Ok(()),
            Err(e) => return Err(e),
        }
        // SAFETY: initialised by the successful fstatat above.
        let st = unsafe { st.assume_init() };
        if st.st_nlink > 1 && st.st_mode & libc::S_IFMT != libc::S_IFDIR && !self.seen.insert((st.st_dev, st.st_ino)) {
            return Ok(());
        }
        self.bytes += st.st_blocks as u64 * 512;
        Ok(())
    }

    fn tolerates_change(&self) -> bool {
        true
    }
}

/// Owner read, write and search on a directory, so that it can be listed and emptied.
fn make_listable(parent: RawFd, name: &CStr) -> io::Result<()> {
    let mut st = std::mem::MaybeUninit::<libc::stat>::uninit();
    // SAFETY: valid descriptor and name; fstatat fills `st` on success.
    check(unsafe { libc::fstatat(parent, name.as_ptr(), st.as_mut_ptr(), libc::AT_SYMLINK_NOFOLLOW) })?;
    // SAFETY: initialised by the successful fstatat above.
    let mode = unsafe { st.assume_init() }.st_mode;
    if mode & 0o700 == 0o700 {
        return Ok(());
    }
    // SAFETY: valid descriptor and name. (fchmodat has no NOFOLLOW on Linux; the entry
    // was just seen to be a directory, and a symlink's target is not what is changed here
    // unless it was swapped in between, which only the tree's owner could do.)
    check(unsafe { libc::fchmodat(parent, name.as_ptr(), (mode & 0o7777) | 0o700, 0) })
}

fn open_dir(parent: RawFd, name: &CStr) -> io::Result<OwnedFd> {
    let flags = libc::O_RDONLY | libc::O_DIRECTORY | libc::O_NOFOLLOW | libc::O_CLOEXEC;
    // SAFETY: valid descriptor (or AT_FDCWD) and a NUL-terminated name.
    let fd = cvt(unsafe { libc::openat(parent, name.as_ptr(), flags) })?;
    // SAFETY: a fresh descriptor nobody else owns.
    Ok(unsafe { OwnedFd::from_raw_fd(fd) })
}

/// The child's `..`, which must still be the directory recorded as its parent.
fn reopen_parent(child: &OwnedFd, expected: (u64, u64)) -> io::Result<OwnedFd> {
    let parent = open_dir(child.as_raw_fd(), c"..")?;
    if dev_ino(&parent)? != expected {
        return Err(io::Error::other("a directory was moved while the tree was being walked"));
    }
    Ok(parent)
}

fn dev_ino(fd: &OwnedFd) -> io::Result<(u64, u64)> {
    let mut st = std::mem::MaybeUninit::<libc::stat>::uninit();
    // SAFETY: valid descriptor; fstat fills `st` on success.
    check(unsafe { libc::fstat(fd.as_raw_fd(), st.as_mut_ptr()) })?;
    // SAFETY: initialised by the successful fstat above.
    let st = unsafe { st.assume_init() };
    Ok((st.st_dev, st.st_ino))
}

/// Every entry of the directory `fd` but `.` and `..`, with whether it is a directory
/// (from `d_type`, or `fstatat` where the file system does not fill it in).
fn read_entries(fd: &OwnedFd) -> io::Result<Vec<(CString, bool)>> {
    // fdopendir takes the descriptor over: give it a duplicate.
    // SAFETY: F_DUPFD_CLOEXEC on a valid descriptor returns a new one or -1.
    let dup = cvt(unsafe { libc::fcntl(fd.as_raw_fd(), libc::F_DUPFD_CLOEXEC, 0) })?;
    // SAFETY: `dup` is ours; on success the DIR owns it, on failure we close it.
    let dir = unsafe { libc::fdopendir(dup) };
    if dir.is_null() {
        let err = io::Error::last_os_error();
        // SAFETY: fdopendir failed, so `dup` is still ours to close.
        unsafe { libc::close(dup) };
        return Err(err);
    }
    let mut entries = Vec::new();
    let result = loop {
        // SAFETY: errno is thread-local; readdir reports errors only through it.
        unsafe { *libc::__errno_location() = 0 };
        // SAFETY: `dir` is a valid open DIR stream.
        let entry = unsafe { libc::readdir(dir) };
        if entry.is_null() {
            let errno = io::Error::last_os_error();
            break if errno.raw_os_error() == Some(0) { Ok(()) } else { Err(errno) };
        }
        // SAFETY: readdir returned a valid dirent whose d_name is NUL-terminated.
        let (name, d_type) = unsafe { (CStr::from_ptr((*entry).d_name.as_ptr()), (*entry).d_type) };
        if name == c"." || name == c".." {
            continue;
        }
        let is_dir = match d_type {
            libc::DT_DIR => Ok(true),
            libc::DT_UNKNOWN => is_directory_at(fd.as_raw_fd(), name),
            _ => Ok(false),
        };
        match is_dir {
            Ok(is_dir) => entries.push((name.to_owned(), is_dir)),
            Err(e) => break Err(e),
        }
    };
    // SAFETY: `dir` is valid and closed exactly once.
    unsafe { libc::closedir(dir) };
    result.map(|()| {
        entries.reverse();
        entries
    })
}

fn is_directory_at(parent: RawFd, name: &CStr) -> io::Result<bool> {
    let mut st = std::mem::MaybeUninit::<libc::stat>::uninit();
    // SAFETY: valid descriptor and name; fstatat fills `st` on success.
    check(unsafe { libc::fstatat(parent, name.as_ptr(), st.as_mut_ptr(), libc::AT_SYMLINK_NOFOLLOW) })?;
    // SAFETY: initialised by the successful fstatat above.
    Ok(unsafe { st.assume_init() }.st_mode & libc::S_IFMT == libc::S_IFDIR)
}

fn c_path(path: &Path) -> io::Result<CString> {
    CString::new(path.as_os_str().as_bytes())
        .map_err(|_| io::Error::new(io::ErrorKind::InvalidInput, "path contains a NUL byte"))
}

/// A descriptor-returning call's result.
fn cvt(rc: libc::c_int) -> io::Result<libc::c_int> {
    if rc < 0 {
        Err(io::Error::last_os_error())
    } else {
        Ok(rc)
    }
}

/// A status-returning call's result.
fn check(rc: libc::c_int) -> io::Result<()> {
    cvt(rc).map(drop)
}

fn missing_is_fine(e: io::Error) -> io::Result<()> {
    if e.kind() == io::ErrorKind::NotFound {
        Ok(())
    } else {
        Err(e)
    }
}

fn ignore_missing(r: io::Result<()>) -> io::Result<()> {
    match r {
        Err(e) if e.kind() != io::ErrorKind::NotFound => Err(e),
        _ => Ok(()),
    }
}

/// Creates `depth` nested directories named `name` below `dir` with relative `mkdirat`,
/// ending in a file: a tree deeper than PATH_MAX, as a hostile build can make one.
#[cfg(test)]
pub(crate) fn make_deep_tree(dir: &Path, depth: usize, name: &std::ffi::OsStr) -> io::Result<()> {
    let name = CString::new(name.as_bytes()).map_err(|_| io::Error::from(io::ErrorKind::InvalidInput))?;
    let mut fd = open_dir(libc::AT_FDCWD, &c_path(dir)?)?;
    for _ in 0..depth {
        // SAFETY: valid descriptor and name.
        check(unsafe { libc::mkdirat(fd.as_raw_fd(), name.as_ptr(), 0o755) })?;
        fd = open_dir(fd.as_raw_fd(), &name)?;
    }
    // SAFETY: valid descriptor and name.
    let file = cvt(unsafe { libc::openat(fd.as_raw_fd(), c"leaf".as_ptr(), libc::O_CREAT | libc::O_WRONLY | libc::O_CLOEXEC, 0o644) })?;
    // SAFETY: a fresh descriptor we own.
    drop(unsafe { OwnedFd::from_raw_fd(file) });
    // Read-only on the way, as a sealed store object's directories are.
    // SAFETY: valid descriptor.
    check(unsafe { libc::fchmod(fd.as_raw_fd(), 0o555) })?;
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::ffi::OsStr;
    use std::os::unix::fs::MetadataExt;

    #[test]
    fn disk_usage_counts_blocks_once_per_inode_at_any_depth() {
        let tmp = tempfile::tempdir().unwrap();
        let top = tmp.path().join("t");
        std::fs::create_dir(&top).unwrap();
        std::fs::write(top.join("a"), vec![1u8; 1 << 20]).unwrap();
        std::fs::hard_link(top.join("a"), top.join("b")).unwrap();
        make_deep_tree(&top, 100, OsStr::new(&"d".repeat(100))).unwrap();
        let used = disk_usage(&top).unwrap();
        assert!((1 << 20..3 << 20).contains(&used), "{used}");
        remove_tree(&top).unwrap();
    }

    #[test]
    fn removes_a_tree_deeper_than_path_max_with_read_only_dirs() {
        let tmp = tempfile::tempdir().unwrap();
        let top = tmp.path().join("deep");
        std::fs::create_dir(&top).unwrap();
        // 200 levels of 200-byte names: 40,000 bytes of path, ten times PATH_MAX, and
        // deeper than MAX_OPEN so descriptors are closed and reopened.
        make_deep_tree(&top, 200, OsStr::new(&"d".repeat(200))).unwrap();
        remove_tree(&top).unwrap();
        assert!(!top.exists());
        remove_tree(&top).unwrap(); // missing is fine
    }

    #[test]
    fn removal_keeps_the_modes_of_hard_linked_files() {
        let tmp = tempfile::tempdir().unwrap();
        let outside = tmp.path().join("object-file");
        std::fs::write(&outside, b"x").unwrap();
        std::fs::set_permissions(&outside, std::os::unix::fs::PermissionsExt::from_mode(0o444)).unwrap();
        let tree = tmp.path().join("tree");
        std::fs::create_dir_all(tree.join("sub")).unwrap();
        std::fs::hard_link(&outside, tree.join("sub/link")).unwrap();
        std::os::unix::fs::symlink("/nonexistent", tree.join("dangling")).unwrap();
        std::fs::set_permissions(tree.join("sub"), std::os::unix::fs::PermissionsExt::from_mode(0o555)).unwrap();
        remove_tree(&tree).unwrap();
        assert!(!tree.exists());
        assert_eq!(std::fs::metadata(&outside).unwrap().mode() & 0o777, 0o444);
    }

    #[test]
    fn walk_visits_every_entry_once_at_any_depth() {
        struct Count(usize, usize);
        impl Visit for Count {
            fn visit(&mut self, _: RawFd, _: &CStr, _: bool) -> io::Result<()> {
                self.0 += 1;
                Ok(())
            }
            fn leave(&mut self, _: RawFd, _: &CStr) -> io::Result<()> {
                self.1 += 1;
                Ok(())
            }
        }
        let tmp = tempfile::tempdir().unwrap();
        make_deep_tree(tmp.path(), 150, OsStr::new("level")).unwrap();
        std::fs::write(tmp.path().join("level/side"), b"").unwrap();
        let mut count = Count(0, 0);
        walk(tmp.path(), &mut count).unwrap();
        assert_eq!((count.0, count.1), (150 + 2, 150));
        remove_tree(tmp.path()).unwrap();
    }
}
