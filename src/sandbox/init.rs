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

use super::child::{io_failure, REFUSALS};
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
    bind_host_directories(spec)?;
    // The host directories are bound: from here on nothing needs host root's access to
    // them, and everything mounted next belongs to the sandbox's root.
    if spec.host_ids.is_some() {
        become_namespace_root()?;
        // A change of ids clears the parent-death signal: arm it again, then make sure
        // the helper did not die in between.
        nix::sys::prctl::set_pdeathsig(Signal::SIGKILL)
            .map_err(|e| SetupFailure::from_errno("setting the parent-death signal of pid 1", e))?;
        if sys::peer_closed(lifeline) {
            return Err(SetupFailure::other("starting the sandbox's pid 1", "the helper has exited"));
        }
    }
    mount_filesystems(spec)?;
    enter_root(&spec.root)
}

fn inside(root: &Path, sandbox_path: &str) -> PathBuf {
    root.join(sandbox_path.trim_start_matches('/'))
}

/// The root farm and the scratch and source directories: the only host paths the sandbox
/// sees, bound while pid 1 still has the caller's access to them (root's store may sit in a
/// directory only root can enter).
fn bind_host_directories(spec: &HelperSpec) -> Result<(), SetupFailure> {
    let root = &spec.root;
    // Nothing we mount may propagate back to the host.
    mount_step(None, Path::new("/"), None, MsFlags::MS_REC | MsFlags::MS_PRIVATE, None)?;
    // pivot_root needs the new root to be a mount point.
    bind(root, root)?;
    bind(&spec.build, &inside(root, &spec.build_dir))?;
    let sources = inside(root, SANDBOX_SOURCES);
    bind(&spec.sources, &sources)?;
    remount_read_only(&sources)?;
    bind(&spec.out, &inside(root, SANDBOX_OUT))
}

/// The sandbox's own file systems, then `/` made read-only.
fn mount_filesystems(spec: &HelperSpec) -> Result<(), SetupFailure> {
    let root = &spec.root;
    let sized = format!("mode=1777,size={}", spec.tmp_bytes);
    mount_tmpfs(&root.join("tmp"), &sized)?;
    mount_dev(&root.join("dev"), &sized)?;
    let proc_flags = MsFlags::MS_NOSUID | MsFlags::MS_NODEV | MsFlags::MS_NOEXEC;
    mount_step(Some(Path::new("proc")), &root.join("proc"), Some(PROC_FS), proc_flags, None)
        .map_err(|f| f.refused_if(&[Errno::EPERM]))?;
    restrict_proc(&root.join("proc"))?;
    // Last: the submounts above keep their own (writable) flags.
    remount_read_only(root)
}

/// Pid 1 of root's build: from host uid 0 (unmapped here, shown as "nobody") to the
/// namespace's uid/gid 0, which are the build's unprivileged host ids. The capabilities in
/// the sandbox's namespaces stay (the kernel keeps them when the effective uid becomes the
/// namespace's root); what goes is every check in which host root's uid itself counted.
fn become_namespace_root() -> Result<(), SetupFailure> {
    let root_gid = nix::unistd::Gid::from_raw(0);
    let root_uid = nix::unistd::Uid::from_raw(0);
    nix::unistd::setresgid(root_gid, root_gid, root_gid)
        .map_err(|e| SetupFailure::from_errno("becoming gid 0 of the sandbox", e))?;
    nix::unistd::setresuid(root_uid, root_uid, root_uid)
        .map_err(|e| SetupFailure::from_errno("becoming uid 0 of the sandbox", e))?;
    // Changing ids resets the dumpable flag to the system default; pid 1 stays undumpable.
    nix::sys::prctl::set_dumpable(false).map_err(|e| SetupFailure::from_errno("making pid 1 undumpable", e))
}

/// Parts of `/proc` that reach past the sandbox, as runc's default `readonlyPaths`: bound
/// read-only onto themselves. Kernel settings (`sys`), the SysRq trigger, interrupt and bus
/// settings.
const PROC_READ_ONLY: &[&str] = &["sys", "sysrq-trigger", "irq", "bus", "fs", "asound"];
/// Parts of `/proc` that show the host's memory, keys or timers, as runc's default
/// `maskedPaths`: files covered by /dev/null, directories by an empty read-only tmpfs.
const PROC_MASKED: &[&str] =
    &["kcore", "keys", "key-users", "timer_list", "timer_stats", "sched_debug", "latency_stats", "acpi", "scsi"];

/// Applies [`PROC_READ_ONLY`] and [`PROC_MASKED`] to the freshly mounted `proc`. These
/// mounts are locked with the rest in the build's nested namespace, and a procfs covered
/// like this is no longer "fully visible", so the kernel refuses the build a fresh one.
/// Entries this kernel does not have are skipped.
fn restrict_proc(proc: &Path) -> Result<(), SetupFailure> {
    for name in PROC_READ_ONLY {
        let path = proc.join(name);
        if fs::symlink_metadata(&path).is_ok() {
            mount_step(Some(&path), &path, None, MsFlags::MS_BIND | MsFlags::MS_REC, None)?;
            remount_read_only(&path)?;
        }
    }
    for name in PROC_MASKED {
        let path = proc.join(name);
        match fs::symlink_metadata(&path) {
            Ok(meta) if meta.is_dir() => {
                let flags = MsFlags::MS_RDONLY | MsFlags::MS_NOSUID | MsFlags::MS_NODEV | MsFlags::MS_NOEXEC;
                mount_step(Some(Path::new("tmpfs")), &path, Some("tmpfs"), flags, Some("size=0,mode=0555"))?;
            }
            Ok(_) => mount_step(Some(Path::new("/dev/null")), &path, None, MsFlags::MS_BIND, None)?,
            Err(_) => {}
        }
    }
    Ok(())
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

fn mount_dev(dev: &Path, shm_options: &str) -> Result<(), SetupFailure> {
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
    mount_tmpfs(&shm, shm_options)?;
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
    let pipe = |what: &str| {
        nix::unistd::pipe2(OFlag::O_CLOEXEC).map_err(|e| SetupFailure::from_errno(format!("creating the {what} pipe"), e))
    };
    let (exec_read, exec_write) = pipe("exec status")?;
    let (unshared_read, unshared_write) = pipe("nested namespace")?;
    let (mapped_read, mapped_write) = pipe("nested namespace")?;
    // SAFETY: pid 1 is single-threaded, like the helper it was forked from.
    match unsafe { fork() } {
        Ok(ForkResult::Child) => {
            drop((exec_read, unshared_read, mapped_write));
            let failure = become_build(spec, &command, &exec_write, NestedHandshake { unshared_write, mapped_read });
            let mut pipe = File::from(exec_write);
            // Best effort: if this write fails pid 1 still sees exit status 127.
            let _ = serde_json::to_vec(&failure).map(|bytes| pipe.write_all(&bytes));
            sys::exit_now(127)
        }
        Ok(ForkResult::Parent { child }) => {
            drop((exec_write, unshared_write, mapped_read));
            let mapped = map_nested_namespace(child, spec, unshared_read, mapped_write);
            let exec_failure = read_exec_failure(exec_read);
            let exit = reap_until(child)?;
            mapped?;
            match exec_failure {
                Some(failure) => Err(failure),
                None => Ok(exit),
            }
        }
        Err(e) => Err(SetupFailure::from_errno("forking the build process", e)),
    }
}

/// The build's side of [`map_nested_namespace`].
struct NestedHandshake {
    unshared_write: OwnedFd,
    mapped_read: OwnedFd,
}

/// Pid 1's side of moving the build into its nested user namespace (see [`lock_mounts`]):
/// once the build has unshared, write its id maps, the identity over every id the sandbox
/// has (0..65535 for root's build, 0 alone otherwise). Pid 1 writes them because the build,
/// inside the new namespace, no longer holds CAP_SETUID over the one that maps more than its
/// own id. On failure the build is killed, so it never runs half set up.
fn map_nested_namespace(build: Pid, spec: &HelperSpec, unshared: OwnedFd, mapped: OwnedFd) -> Result<(), SetupFailure> {
    let mut byte = [0u8; 1];
    if !matches!(File::from(unshared).read(&mut byte), Ok(1)) {
        return Ok(()); // the build failed before unsharing and reports that itself
    }
    let count = spec.host_ids.map_or(1, |ids| ids.count);
    for file in ["uid_map", "gid_map"] {
        let path = format!("/proc/{build}/{file}");
        if let Err(e) = fs::write(&path, format!("0 0 {count}\n")) {
            let _ = nix::sys::signal::kill(build, Signal::SIGKILL);
            return Err(io_failure(&format!("writing {path}"), &e).refused_if(REFUSALS));
        }
    }
    File::from(mapped).write_all(b"m").map_err(|e| io_failure("telling the build its ids are mapped", &e))
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
fn become_build(spec: &HelperSpec, command: &Command, exec_pipe: &OwnedFd, nested: NestedHandshake) -> SetupFailure {
    // A build gets a session of its own (no terminal); `forge shell` keeps the caller's, so
    // that the shell can take the terminal's foreground for job control.
    if !spec.interactive {
        if let Err(e) = nix::unistd::setsid() {
            return SetupFailure::from_errno("starting a new session for the build", e);
        }
    }
    // Undo pid 1's setting inherited through fork: a non-dumpable process's /proc/self
    // files belong to the host's root, so pid 1 could not write the id maps of the nested
    // namespace. execve re-evaluates it anyway.
    if let Err(e) = nix::sys::prctl::set_dumpable(true) {
        return SetupFailure::from_errno("making the build process dumpable", e);
    }
    sys::carry_nice_into_autogroup();
    if let Err(failure) = lock_mounts(nested) {
        return failure;
    }
    // After the nested namespace exists, so that the process count is the build's own.
    if let Err(failure) = set_rlimits(spec.rlimits) {
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

/// The limits no cgroup holds, as rlimits of the build process (inherited by all it starts).
fn set_rlimits(limits: super::limits::Rlimits) -> Result<(), SetupFailure> {
    use nix::sys::resource::{setrlimit, Resource};
    for (resource, value, name) in [(Resource::RLIMIT_DATA, limits.data, "RLIMIT_DATA"), (Resource::RLIMIT_NPROC, limits.nproc, "RLIMIT_NPROC")] {
        if let Some(value) = value {
            setrlimit(resource, value, value).map_err(|e| SetupFailure::from_errno(format!("setting {name} to {value}"), e))?;
        }
    }
    Ok(())
}

/// Moves into a nested user + mount namespace; the copied mounts are then locked (see the
/// module documentation). Root stays root: pid 1 maps the ids one to one.
fn lock_mounts(nested: NestedHandshake) -> Result<(), SetupFailure> {
    unshare(CloneFlags::CLONE_NEWUSER | CloneFlags::CLONE_NEWNS).map_err(|e| {
        SetupFailure::from_errno("unshare(user, mount) to lock the sandbox mounts", e).refused_if(REFUSALS)
    })?;
    File::from(nested.unshared_write)
        .write_all(b"u")
        .map_err(|e| io_failure("telling pid 1 the nested namespace exists", &e))?;
    let mut byte = [0u8; 1];
    match File::from(nested.mapped_read).read(&mut byte) {
        Ok(1) => Ok(()),
        _ => Err(SetupFailure::other("mapping the ids of the nested namespace", "pid 1 did not map them")),
    }
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
