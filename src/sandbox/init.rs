//! The sandbox's pid 1: mounts the sandbox file systems, pivots into the
//! assembled root, starts the build as its child, reaps every orphan until the
//! build exits, and sends the build's status to the helper. When pid 1 exits,
//! the kernel kills whatever the build left running in the pid namespace.
//!
//! Mount layout (all inside the helper's private mount namespace):
//!
//! | path             | what                                              |
//! |------------------|---------------------------------------------------|
//! | `/`              | the hardlink farm, bind-mounted read-only         |
//! | `/build`         | `scratch/build`, read-write, the cwd              |
//! | `/forge/sources` | the staged sources, read-only                     |
//! | `/forge/out`     | `scratch/out`, read-write                         |
//! | `/tmp`           | fresh tmpfs                                       |
//! | `/dev`           | tmpfs with host device nodes bound in, shm, pts   |
//! | `/proc`          | a new procfs for the sandbox's pid namespace      |
//!
//! The build itself runs one user + mount namespace deeper: mounts copied into
//! a namespace owned by a less privileged user namespace are locked, so the
//! build, although root in its namespace, cannot remount `/` read-write (and
//! write through the hardlinks into the store) nor unmount anything to look
//! underneath.

use std::ffi::CString;
use std::fs::{self, File};
use std::io::{Read, Write};
use std::os::fd::{AsRawFd, OwnedFd};
use std::os::unix::fs::symlink;
use std::path::{Path, PathBuf};

use nix::errno::Errno;
use nix::fcntl::OFlag;
use nix::mount::{mount, umount2, MntFlags, MsFlags};
use nix::sched::{unshare, CloneFlags};
use nix::sys::signal::Signal;
use nix::sys::statvfs::{statvfs, FsFlags};
use nix::sys::wait::{waitpid, WaitPidFlag, WaitStatus};
use nix::unistd::{fork, ForkResult, Pid};

use super::child::{io_failure, map_root_to, REFUSALS};
use super::protocol::{FailureKind, HelperReport, HelperSpec, SetupFailure};
use super::{sys, SANDBOX_OUT, SANDBOX_SOURCES};

/// Host device nodes bound into the sandbox's `/dev`.
const DEVICES: &[&str] = &["null", "zero", "full", "random", "urandom", "tty"];
const DEV_SYMLINKS: &[(&str, &str)] = &[
    ("fd", "/proc/self/fd"),
    ("stdin", "/proc/self/fd/0"),
    ("stdout", "/proc/self/fd/1"),
    ("stderr", "/proc/self/fd/2"),
];
/// The file system type of /proc; `diagnose` recognizes its mount step by it.
pub(crate) const PROC_FS: &str = "proc";
/// PATH used to find `argv[0]` when the build's environment has none.
const DEFAULT_PATH: &str = "/bin:/usr/bin";

/// Runs as the sandbox's pid 1 and never returns.
pub(crate) fn main(spec: &HelperSpec, status: OwnedFd, lifeline: OwnedFd) -> ! {
    let report = prepare(spec, &lifeline)
        .and_then(|()| supervise(spec))
        .unwrap_or_else(HelperReport::Failed);
    let mut status = File::from(status);
    let written = serde_json::to_vec(&report).map(|bytes| status.write_all(&bytes));
    // If the helper is gone there is nobody to tell; it notices a missing report itself.
    sys::exit_now(if matches!(written, Ok(Ok(()))) { 0 } else { 1 })
}

fn prepare(spec: &HelperSpec, lifeline: &OwnedFd) -> Result<(), SetupFailure> {
    nix::sys::prctl::set_pdeathsig(Signal::SIGKILL)
        .map_err(|e| SetupFailure::from_errno("setting the parent-death signal of pid 1", e))?;
    if sys::peer_closed(lifeline) {
        return Err(SetupFailure::other("starting the sandbox's pid 1", "the helper has exited"));
    }
    // Not dumpable: the build may not open /proc/1/exe or /proc/1/fd/*, which
    // lead to host files (the forge binary, the status pipe).
    nix::sys::prctl::set_dumpable(false).map_err(|e| SetupFailure::from_errno("making pid 1 undumpable", e))?;
    mount_filesystems(spec)?;
    enter_root(&spec.root)
}

fn inside(root: &Path, sandbox_path: &str) -> PathBuf {
    root.join(sandbox_path.trim_start_matches('/'))
}

fn mount_filesystems(spec: &HelperSpec) -> Result<(), SetupFailure> {
    let root = &spec.root;
    // Nothing we mount may propagate back to the host.
    mount_step(None, Path::new("/"), None, MsFlags::MS_REC | MsFlags::MS_PRIVATE, None)?;
    // pivot_root needs the new root to be a mount point.
    bind(root, root)?;
    bind(&spec.build, &inside(root, &spec.build_dir))?;
    let sources = inside(root, SANDBOX_SOURCES);
    bind(&spec.sources, &sources)?;
    remount_read_only(&sources)?;
    bind(&spec.out, &inside(root, SANDBOX_OUT))?;
    mount_tmpfs(&root.join("tmp"), "mode=1777")?;
    mount_dev(&root.join("dev"))?;
    let proc_flags = MsFlags::MS_NOSUID | MsFlags::MS_NODEV | MsFlags::MS_NOEXEC;
    mount_step(Some(Path::new("proc")), &root.join("proc"), Some(PROC_FS), proc_flags, None)
        .map_err(|f| f.refused_if(&[Errno::EPERM]))?;
    // Last: the submounts above keep their own (writable) flags.
    remount_read_only(root)
}

fn mount_step(
    source: Option<&Path>,
    target: &Path,
    fstype: Option<&str>,
    flags: MsFlags,
    data: Option<&str>,
) -> Result<(), SetupFailure> {
    mount(source, target, fstype, flags, data).map_err(|e| {
        let what = match (fstype, source) {
            (Some(fs), _) => format!("mounting {fs} on {}", target.display()),
            (None, Some(src)) if flags.contains(MsFlags::MS_BIND) => {
                format!("bind-mounting {} on {}", src.display(), target.display())
            }
            _ => format!("changing the mount flags of {}", target.display()),
        };
        SetupFailure::from_errno(what, e)
    })
}

fn bind(source: &Path, target: &Path) -> Result<(), SetupFailure> {
    mount_step(Some(source), target, None, MsFlags::MS_BIND | MsFlags::MS_REC, None)
}

fn mount_tmpfs(target: &Path, options: &str) -> Result<(), SetupFailure> {
    let flags = MsFlags::MS_NOSUID | MsFlags::MS_NODEV;
    mount_step(Some(Path::new("tmpfs")), target, Some("tmpfs"), flags, Some(options))
}

/// Remounts the bind mount at `target` read-only, nosuid and nodev (store
/// objects need neither). Inside a user namespace the kernel refuses to drop
/// flags it locked (noexec, atime mode), so they are read back and kept.
fn remount_read_only(target: &Path) -> Result<(), SetupFailure> {
    let current = statvfs(target)
        .map_err(|e| SetupFailure::from_errno(format!("reading the mount flags of {}", target.display()), e))?
        .flags();
    let mut flags =
        MsFlags::MS_REMOUNT | MsFlags::MS_BIND | MsFlags::MS_RDONLY | MsFlags::MS_NOSUID | MsFlags::MS_NODEV;
    for (have, keep) in [
        (FsFlags::ST_NOEXEC, MsFlags::MS_NOEXEC),
        (FsFlags::ST_NOATIME, MsFlags::MS_NOATIME),
        (FsFlags::ST_NODIRATIME, MsFlags::MS_NODIRATIME),
        (FsFlags::ST_RELATIME, MsFlags::MS_RELATIME),
    ] {
        if current.contains(have) {
            flags |= keep;
        }
    }
    mount_step(None, target, None, flags, None)
}

fn mount_dev(dev: &Path) -> Result<(), SetupFailure> {
    let flags = MsFlags::MS_NOSUID | MsFlags::MS_NOEXEC;
    mount_step(Some(Path::new("tmpfs")), dev, Some("tmpfs"), flags, Some("mode=0755"))?;
    for name in DEVICES {
        let node = dev.join(name);
        File::create(&node).map_err(|e| io_failure(&format!("creating {}", node.display()), &e))?;
        bind(&Path::new("/dev").join(name), &node)?;
    }
    for (name, target) in DEV_SYMLINKS {
        let link = dev.join(name);
        symlink(target, &link).map_err(|e| io_failure(&format!("creating {}", link.display()), &e))?;
    }
    let shm = dev.join("shm");
    make_dir(&shm)?;
    mount_tmpfs(&shm, "mode=1777")?;
    mount_devpts(dev)
}

/// A private devpts instance, so builds that need a pseudo-terminal (expect,
/// some test suites) get one. Best effort: kernels that refuse devpts in a
/// user namespace get a /dev without pts rather than no sandbox at all.
fn mount_devpts(dev: &Path) -> Result<(), SetupFailure> {
    let pts = dev.join("pts");
    make_dir(&pts)?;
    let flags = MsFlags::MS_NOSUID | MsFlags::MS_NOEXEC;
    let options = "newinstance,ptmxmode=0666,mode=0620";
    if mount(Some("devpts"), &pts, Some("devpts"), flags, Some(options)).is_ok() {
        let ptmx = dev.join("ptmx");
        symlink("pts/ptmx", &ptmx).map_err(|e| io_failure(&format!("creating {}", ptmx.display()), &e))
    } else {
        fs::remove_dir(&pts).map_err(|e| io_failure(&format!("removing {}", pts.display()), &e))
    }
}

fn make_dir(path: &Path) -> Result<(), SetupFailure> {
    fs::create_dir(path).map_err(|e| io_failure(&format!("creating {}", path.display()), &e))
}

/// `pivot_root(".", ".")` stacks the old root on top of the new one, so it
/// can be detached without a writable put_old directory in the farm.
fn enter_root(root: &Path) -> Result<(), SetupFailure> {
    let chdir = |path: &Path| {
        nix::unistd::chdir(path).map_err(|e| SetupFailure::from_errno(format!("changing directory to {}", path.display()), e))
    };
    chdir(root)?;
    nix::unistd::pivot_root(".", ".").map_err(|e| SetupFailure::from_errno("pivot_root into the sandbox root", e))?;
    umount2(".", MntFlags::MNT_DETACH).map_err(|e| SetupFailure::from_errno("detaching the host root", e))?;
    chdir(Path::new("/"))
}

/// The build's command line, converted before forking.
struct Command {
    program: String,
    argv: Vec<CString>,
    envp: Vec<CString>,
    candidates: Vec<CString>,
}

impl Command {
    fn new(spec: &HelperSpec) -> Result<Command, SetupFailure> {
        let cstring = |s: String| {
            CString::new(s).map_err(|e| SetupFailure::other("preparing the build command", e.to_string()))
        };
        let program = spec.argv.first().cloned().unwrap_or_default();
        let argv = spec.argv.iter().cloned().map(cstring).collect::<Result<Vec<_>, _>>()?;
        let envp = spec.env.iter().map(|(k, v)| cstring(format!("{k}={v}"))).collect::<Result<Vec<_>, _>>()?;
        let candidates = if program.contains('/') {
            vec![cstring(program.clone())?]
        } else {
            let path = spec.env.get("PATH").map_or(DEFAULT_PATH, String::as_str);
            path.split(':')
                .map(|dir| cstring(format!("{}/{program}", if dir.is_empty() { "." } else { dir })))
                .collect::<Result<Vec<_>, _>>()?
        };
        Ok(Command { program, argv, envp, candidates })
    }

    /// Replaces this process with the build; returns only on failure.
    fn exec(&self) -> SetupFailure {
        let mut failure = Errno::ENOENT;
        for candidate in &self.candidates {
            let errno = match nix::unistd::execve(candidate, &self.argv, &self.envp) {
                Ok(never) => match never {},
                Err(errno) => errno,
            };
            // Like execvp: a later PATH entry may still work; keep the most telling error.
            if !matches!(errno, Errno::ENOENT | Errno::ENOTDIR) {
                failure = errno;
            }
        }
        SetupFailure {
            step: format!("executing {}", self.program),
            errno: Some(failure as i32),
            detail: failure.to_string(),
            kind: FailureKind::Exec { program: self.program.clone() },
        }
    }
}

/// Starts the build and reaps children until it exits.
fn supervise(spec: &HelperSpec) -> Result<HelperReport, SetupFailure> {
    let command = Command::new(spec)?;
    let (exec_read, exec_write) = nix::unistd::pipe2(OFlag::O_CLOEXEC)
        .map_err(|e| SetupFailure::from_errno("creating the exec status pipe", e))?;
    // SAFETY: pid 1 is single-threaded, like the helper it was forked from.
    match unsafe { fork() } {
        Ok(ForkResult::Child) => {
            drop(exec_read);
            let failure = become_build(spec, &command, &exec_write);
            let mut pipe = File::from(exec_write);
            // Best effort: if this write fails pid 1 still sees exit status 127.
            let _ = serde_json::to_vec(&failure).map(|bytes| pipe.write_all(&bytes));
            sys::exit_now(127)
        }
        Ok(ForkResult::Parent { child }) => {
            drop(exec_write);
            let exec_failure = read_exec_failure(exec_read);
            let exit = reap_until(child)?;
            match exec_failure {
                Some(failure) => Err(failure),
                None => Ok(exit),
            }
        }
        Err(e) => Err(SetupFailure::from_errno("forking the build process", e)),
    }
}

/// The exec pipe is close-on-exec: EOF without data means `execve` succeeded.
fn read_exec_failure(pipe: OwnedFd) -> Option<SetupFailure> {
    let mut bytes = Vec::new();
    let read = File::from(pipe).read_to_end(&mut bytes);
    if read.is_err() || bytes.is_empty() {
        return None;
    }
    Some(serde_json::from_slice(&bytes).unwrap_or_else(|e| {
        SetupFailure::other("starting the build", format!("unreadable failure report: {e}"))
    }))
}

/// In the forked build process: final isolation steps, then exec.
fn become_build(spec: &HelperSpec, command: &Command, exec_pipe: &OwnedFd) -> SetupFailure {
    if let Err(e) = nix::unistd::setsid() {
        return SetupFailure::from_errno("starting a new session for the build", e);
    }
    // Undo pid 1's setting inherited through fork: a non-dumpable process's
    // /proc/self files belong to the host's root, so an ordinary user could not
    // write the id maps below. execve re-evaluates it anyway.
    if let Err(e) = nix::sys::prctl::set_dumpable(true) {
        return SetupFailure::from_errno("making the build process dumpable", e);
    }
    sys::carry_nice_into_autogroup();
    if let Err(failure) = lock_mounts() {
        return failure;
    }
    sys::reset_signals();
    sys::close_fds_except(exec_pipe.as_raw_fd());
    if let Err(e) = nix::unistd::chdir(spec.build_dir.as_str()) {
        return SetupFailure::from_errno(format!("changing directory to {}", spec.build_dir), e);
    }
    if spec.probe {
        sys::exit_now(0);
    }
    command.exec()
}

/// Moves into a nested user + mount namespace; the copied mounts are then
/// locked (see the module documentation). Root stays root: 0 maps to 0.
fn lock_mounts() -> Result<(), SetupFailure> {
    unshare(CloneFlags::CLONE_NEWUSER | CloneFlags::CLONE_NEWNS).map_err(|e| {
        SetupFailure::from_errno("unshare(user, mount) to lock the sandbox mounts", e).refused_if(REFUSALS)
    })?;
    map_root_to("0", "0")
}

/// Waits for `build`, reaping any other process that ends in the meantime
/// (orphans are re-parented to pid 1). Returns the build's status.
fn reap_until(build: Pid) -> Result<HelperReport, SetupFailure> {
    loop {
        match waitpid(Pid::from_raw(-1), Some(WaitPidFlag::__WALL)) {
            Ok(WaitStatus::Exited(pid, code)) if pid == build => return Ok(HelperReport::Exited(code)),
            Ok(WaitStatus::Signaled(pid, signal, _)) if pid == build => return Ok(HelperReport::Signaled(signal as i32)),
            Ok(_) | Err(Errno::EINTR) => continue,
            Err(e) => return Err(SetupFailure::from_errno("waiting for the build", e)),
        }
    }
}
