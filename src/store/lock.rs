//! Inter-process locks on files under `STORE/locks/` (flock(2): released when the holder's
//! file descriptor closes, so a killed process never leaves a lock behind).
//!
//! - `store.lock`: every build process holds it *shared* ([`StoreLock`]); gc and
//!   `verify --repair` take it *exclusive* and fail fast when builds are running.
//! - `drv-<hex>.lock`: exclusive per derivation ([`DrvLock`]), so one derivation is built once
//!   even by several processes.
//! - `out-<hex>.lock`: exclusive per out hash, held while an object is moved into place.
//!
//! Lock files are never deleted: unlinking a lock file that another process has open but not
//! yet locked would let two processes "hold" the same lock.

use std::fs::{File, OpenOptions};
use std::io;
use std::os::fd::AsRawFd;
use std::path::{Path, PathBuf};

use crate::hash::Digest;

use super::StoreError;

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Mode {
    Shared,
    Exclusive,
}

/// A held flock; dropping it closes the file and so releases the lock.
#[derive(Debug)]
pub(crate) struct FileLock {
    _file: File,
    path: PathBuf,
}

impl FileLock {
    /// Block until the lock is granted.
    pub(crate) fn acquire(path: &Path, mode: Mode) -> Result<FileLock, StoreError> {
        let file = open_lock_file(path)?;
        let op = match mode {
            Mode::Shared => libc::LOCK_SH,
            Mode::Exclusive => libc::LOCK_EX,
        };
        loop {
            match flock(&file, op) {
                Ok(()) => return Ok(FileLock { _file: file, path: path.to_path_buf() }),
                Err(e) if e.kind() == io::ErrorKind::Interrupted => continue,
                Err(e) => return Err(StoreError::Io { op: "lock", path: path.to_path_buf(), source: e }),
            }
        }
    }

    /// `Ok(None)` if someone else holds a conflicting lock.
    pub(crate) fn try_acquire(path: &Path, mode: Mode) -> Result<Option<FileLock>, StoreError> {
        let file = open_lock_file(path)?;
        let op = match mode {
            Mode::Shared => libc::LOCK_SH,
            Mode::Exclusive => libc::LOCK_EX,
        } | libc::LOCK_NB;
        match flock(&file, op) {
            Ok(()) => Ok(Some(FileLock { _file: file, path: path.to_path_buf() })),
            Err(e) if e.kind() == io::ErrorKind::WouldBlock => Ok(None),
            Err(e) => Err(StoreError::Io { op: "lock", path: path.to_path_buf(), source: e }),
        }
    }

    pub(crate) fn path(&self) -> &Path {
        &self.path
    }
}

fn open_lock_file(path: &Path) -> Result<File, StoreError> {
    OpenOptions::new()
        .read(true)
        .write(true)
        .create(true)
        .truncate(false)
        .open(path)
        .map_err(StoreError::io("open lock file", path))
}

fn flock(file: &File, op: libc::c_int) -> io::Result<()> {
    // SAFETY: the descriptor is valid for the lifetime of `file`.
    if unsafe { libc::flock(file.as_raw_fd(), op) } == 0 {
        Ok(())
    } else {
        Err(io::Error::last_os_error())
    }
}

/// Exclusive lock on one derivation, released on drop.
#[derive(Debug)]
pub struct DrvLock {
    pub(crate) drv_hash: Digest,
    pub(crate) _lock: FileLock,
}

impl DrvLock {
    pub fn drv_hash(&self) -> &Digest {
        &self.drv_hash
    }
}

/// The store-wide lock, shared by builds (or exclusive for gc), released on drop.
#[derive(Debug)]
pub struct StoreLock {
    pub(crate) lock: FileLock,
}

impl StoreLock {
    pub fn path(&self) -> &Path {
        self.lock.path()
    }
}
