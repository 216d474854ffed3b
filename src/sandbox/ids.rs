//! Host ids for builds started by root (docs/sandbox.md, "Users and ids").
//!
//! An ordinary user's build maps the sandbox's uid/gid 0 to that user: the kernel allows
//! nothing else, and the user has nothing more to lose. Root's build must not run as host
//! root: the sandbox's root would then be the host's root for every check the kernel makes
//! against host-owned objects (`/proc/sys`, core_pattern, ...). So when forge runs as root,
//! each concurrent build gets a block of [`BLOCK`] host ids of its own, starting at
//! [`FIRST_ID`], as Nix's `auto-allocate-uids` does: uid and gid 0 to 65535 inside are
//! `base` to `base + 65535` outside, none of them owns anything on the host, and two builds
//! never share a block.
//!
//! A block is taken by holding an exclusive `flock` on `POOL_DIR/SLOT.lock` for as long as
//! the build runs; the kernel releases it when the holder dies, so a crashed forge never
//! leaks a block. The pool is per machine, not per store: two stores on one machine must not
//! hand out the same ids.

use std::fs::{self, File, OpenOptions};
use std::os::fd::AsRawFd;
use std::path::{Path, PathBuf};

use super::SandboxError;

/// The first host id handed out; above the usual `/etc/subuid` ranges (100000 + 65536 n,
/// a few thousand users) and below Nix's pool (872415232), so neither collides with forge.
pub const FIRST_ID: u32 = 0x2000_0000;
/// Ids per build: the full 16-bit range, so that `chown`, tar and package managers inside
/// the build work with any ordinary uid or gid.
pub const BLOCK: u32 = 65_536;
/// Blocks in the pool: at most this many builds run as root at once on one machine.
pub const SLOTS: u32 = 1024;
/// Where the slot locks live unless `FORGE_ID_POOL` says otherwise.
pub const POOL_DIR: &str = "/run/forge/build-ids";

/// A block of host ids, held until dropped.
#[derive(Debug)]
pub struct IdBlock {
    pub base: u32,
    pub count: u32,
    _lock: File,
}

impl IdBlock {
    /// Takes the first free block of the machine's pool, or says that all are in use.
    pub fn allocate() -> Result<IdBlock, SandboxError> {
        IdBlock::allocate_in(&pool_dir())
    }

    fn allocate_in(dir: &Path) -> Result<IdBlock, SandboxError> {
        fs::create_dir_all(dir).map_err(SandboxError::io("create the build id pool", dir))?;
        for slot in 0..SLOTS {
            let path = dir.join(format!("{slot}.lock"));
            let file = OpenOptions::new()
                .create(true)
                .truncate(false)
                .write(true)
                .open(&path)
                .map_err(SandboxError::io("open", &path))?;
            // SAFETY: flock on a descriptor we own; no memory is involved.
            if unsafe { libc::flock(file.as_raw_fd(), libc::LOCK_EX | libc::LOCK_NB) } == 0 {
                return Ok(IdBlock { base: FIRST_ID + slot * BLOCK, count: BLOCK, _lock: file });
            }
            let err = std::io::Error::last_os_error();
            if err.raw_os_error() != Some(libc::EWOULDBLOCK) {
                return Err(SandboxError::Io { action: "lock", path, source: err });
            }
        }
        Err(SandboxError::Setup {
            step: "allocating host ids for the build".into(),
            detail: format!("all {SLOTS} blocks of {} are in use by running builds", dir.display()),
        })
    }
}

fn pool_dir() -> PathBuf {
    std::env::var_os("FORGE_ID_POOL").map_or_else(|| Path::new(POOL_DIR).to_path_buf(), PathBuf::from)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn blocks_fit_in_the_id_space_and_do_not_overlap() {
        let last = u64::from(FIRST_ID) + u64::from(SLOTS) * u64::from(BLOCK);
        // (uid_t)-1 and the overflow ids 65534 must never be handed out.
        assert!(last < u64::from(u32::MAX));
        assert!(u64::from(FIRST_ID) > 65_536 * 2);
    }

    #[test]
    fn concurrent_holders_get_distinct_blocks_and_a_dropped_block_is_reused() {
        let dir = tempfile::tempdir().unwrap();
        let first = IdBlock::allocate_in(dir.path()).unwrap();
        let second = IdBlock::allocate_in(dir.path()).unwrap();
        assert_eq!(first.base, FIRST_ID);
        assert_eq!(second.base, FIRST_ID + BLOCK);
        drop(first);
        assert_eq!(IdBlock::allocate_in(dir.path()).unwrap().base, FIRST_ID);
    }
}
