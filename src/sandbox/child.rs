//! The sandbox helper: `forge __sandbox SPEC_FILE`, a freshly exec'd,
//! single-threaded copy of forge (so `unshare(CLONE_NEWUSER)` is allowed and
//! forking is safe). It
//!
//! 1. dies with its parent (`PR_SET_PDEATHSIG`), so a killed forge leaves no build behind;
//! 2. unshares user, mount, pid, net, uts and ipc namespaces and maps uid/gid 0
//!    to the caller's ids, or, when the caller is root, ids 0..65535 to a block of
//!    unprivileged host ids ([`super::ids`]);
//! 3. sets the hostname and brings `lo` up;
//! 4. forks the sandbox's pid 1 ([`super::init`]), which mounts, pivots and
//!    runs the build, and waits for its report, killing it on timeout;
//! 5. writes a [`HelperReport`] to `SPEC_FILE.report`.
//!
//! Killing pid 1 makes the kernel kill every process of the pid namespace, so
//! the timeout and the parent's death both take the whole build down.

use std::fs::{self, File};
use std::io::{self, Read, Write};
use std::os::fd::{FromRawFd, OwnedFd};
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use nix::errno::Errno;
use nix::fcntl::OFlag;
use nix::sched::{unshare, CloneFlags};
use nix::sys::signal::{kill, Signal};
use nix::sys::wait::{waitpid, WaitPidFlag, WaitStatus};
use nix::unistd::{fork, ForkResult, Pid};

use super::protocol::{HelperReport, HelperSpec, HostIds, SetupFailure, REPORT_FD};
use super::{init, sys, SANDBOX_HOSTNAME};

/// Exit statuses of the helper itself; the parent only looks at them when the
/// report is missing.
const EXIT_USAGE: i32 = 2;
const EXIT_NO_REPORT: i32 = 125;

/// Errors by which the kernel says namespaces are not available to us.
pub(crate) const REFUSALS: &[Errno] = &[Errno::EPERM, Errno::EACCES, Errno::ENOSPC, Errno::EUSERS, Errno::EINVAL, Errno::ENOSYS];

/// The `__sandbox` entry point, called by `main` before anything else runs.
pub fn child_main() -> i32 {
    let Some(spec_path) = std::env::args_os().nth(2).map(PathBuf::from) else {
        return EXIT_USAGE;
    };
    // The report pipe forge gave us; close-on-exec, so the build never inherits it.
    // SAFETY: F_SETFD on a descriptor number; fails harmlessly if it is not open.
    if unsafe { libc::fcntl(REPORT_FD, libc::F_SETFD, libc::FD_CLOEXEC) } != 0 {
        return EXIT_NO_REPORT;
    }
    // SAFETY: forge's invoke_helper opened REPORT_FD for us and nothing else owns it.
    let mut report_file = unsafe { File::from_raw_fd(REPORT_FD) };
    let report = match read_spec(&spec_path) {
        Ok(spec) => run_helper(&spec).unwrap_or_else(HelperReport::Failed),
        Err(failure) => HelperReport::Failed(failure),
    };
    match serde_json::to_vec(&report) {
        Ok(bytes) if report_file.write_all(&bytes).is_ok() => 0,
        _ => EXIT_NO_REPORT,
    }
}

fn read_spec(path: &Path) -> Result<HelperSpec, SetupFailure> {
    let step = format!("reading the sandbox spec {}", path.display());
    let bytes = fs::read(path).map_err(|e| io_failure(&step, &e))?;
    serde_json::from_slice(&bytes).map_err(|e| SetupFailure::other(step, e.to_string()))
}

pub(crate) fn io_failure(step: &str, err: &io::Error) -> SetupFailure {
    match err.raw_os_error() {
        Some(code) => SetupFailure::from_errno(step, Errno::from_raw(code)),
        None => SetupFailure::other(step, err.to_string()),
    }
}

fn run_helper(spec: &HelperSpec) -> Result<HelperReport, SetupFailure> {
    die_with_parent(spec.parent_pid)?;
    match spec.host_ids {
        None => {
            let (uid, gid) = (nix::unistd::getuid(), nix::unistd::getgid());
            unshare_namespaces()?;
            map_root_to(&uid.to_string(), &gid.to_string())?;
        }
        Some(ids) => enter_namespaces_as(ids)?,
    }
    nix::unistd::sethostname(SANDBOX_HOSTNAME).map_err(|e| SetupFailure::from_errno("setting the hostname", e))?;
    sys::set_domainname("(none)").map_err(|e| SetupFailure::from_errno("setting the domain name", e))?;
    sys::bring_up_loopback().map_err(|e| SetupFailure::from_errno("bringing up the loopback interface", e))?;
    start_init(spec)
}

fn unshare_namespaces() -> Result<(), SetupFailure> {
    let namespaces = CloneFlags::CLONE_NEWUSER
        | CloneFlags::CLONE_NEWNS
        | CloneFlags::CLONE_NEWPID
        | CloneFlags::CLONE_NEWNET
        | CloneFlags::CLONE_NEWUTS
        | CloneFlags::CLONE_NEWIPC;
    unshare(namespaces).map_err(|e| {
        SetupFailure::from_errno("unshare(user, mount, pid, net, uts, ipc)", e).refused_if(REFUSALS)
    })
}

/// Root's build: namespaces whose ids 0.. are the block `ids` of unprivileged host ids
/// ([`super::ids`]). A process cannot write such a map for itself (the kernel wants
/// CAP_SETUID in the parent namespace, which a process inside the new one no longer has),
/// so the helper forks: the child unshares, the parent, still host root, writes the child's
/// maps, then only waits and passes the child's exit status on. Returns in the child, which
/// goes on as the helper; the child keeps host uid 0 (unmapped, "nobody" inside) only until
/// pid 1 has bound the host directories, then becomes the namespace's root (see init).
fn enter_namespaces_as(ids: HostIds) -> Result<(), SetupFailure> {
    let pipe = |what: &str| {
        nix::unistd::pipe2(OFlag::O_CLOEXEC).map_err(|e| SetupFailure::from_errno(format!("creating the {what} pipe"), e))
    };
    let (unshared_read, unshared_write) = pipe("id map")?;
    let (mapped_read, mapped_write) = pipe("id map")?;
    let helper = nix::unistd::getpid();
    // SAFETY: the helper is single-threaded (see start_init).
    match unsafe { fork() } {
        Ok(ForkResult::Child) => {
            drop((unshared_read, mapped_write));
            die_with_parent(helper.as_raw() as u32)?;
            unshare_namespaces()?;
            File::from(unshared_write)
                .write_all(b"u")
                .map_err(|e| io_failure("telling the helper the namespaces exist", &e))?;
            let mut answer = [0u8; 1];
            if !matches!(File::from(mapped_read).read(&mut answer), Ok(1)) {
                // The parent failed; it reports why and kills us.
                sys::exit_now(EXIT_NO_REPORT);
            }
            // Host root's supplementary groups (gid 0 among them) must not follow the build;
            // the privileged parent's gid map leaves setgroups allowed here.
            nix::unistd::setgroups(&[]).map_err(|e| SetupFailure::from_errno("dropping supplementary groups", e))
        }
        Ok(ForkResult::Parent { child }) => {
            drop((unshared_write, mapped_read));
            let mut byte = [0u8; 1];
            if !matches!(File::from(unshared_read).read(&mut byte), Ok(1)) {
                // The child failed before the namespaces existed and has written the report.
                sys::exit_now(exit_code(reap(child)?));
            }
            if let Err(failure) = write_id_maps(child, ids) {
                let _ = kill(child, Signal::SIGKILL);
                reap(child)?;
                return Err(failure);
            }
            File::from(mapped_write)
                .write_all(b"m")
                .map_err(|e| io_failure("telling the sandbox its ids are mapped", &e))?;
            sys::exit_now(exit_code(reap(child)?))
        }
        Err(e) => Err(SetupFailure::from_errno("forking the helper into its namespaces", e)),
    }
}

fn write_id_maps(child: Pid, ids: HostIds) -> Result<(), SetupFailure> {
    for file in ["uid_map", "gid_map"] {
        let path = format!("/proc/{child}/{file}");
        fs::write(&path, format!("0 {} {}\n", ids.base, ids.count))
            .map_err(|e| io_failure(&format!("writing {path}"), &e).refused_if(REFUSALS))?;
    }
    Ok(())
}

/// The helper's exit status for a child's end: its status, or "no report" for a signal.
fn exit_code(status: WaitStatus) -> i32 {
    match status {
        WaitStatus::Exited(_, code) => code,
        _ => EXIT_NO_REPORT,
    }
}

/// Makes sure the helper cannot outlive the forge process that started it.
fn die_with_parent(parent_pid: u32) -> Result<(), SetupFailure> {
    nix::sys::prctl::set_pdeathsig(Signal::SIGKILL)
        .map_err(|e| SetupFailure::from_errno("setting the parent-death signal", e))?;
    // The parent may have died before the prctl took effect.
    if nix::unistd::getppid() != Pid::from_raw(parent_pid as i32) {
        return Err(SetupFailure::other("starting the sandbox helper", "the forge process that started it has exited"));
    }
    Ok(())
}

/// Maps uid and gid 0 of the current (new) user namespace to `uid`/`gid` of
/// the parent namespace. `setgroups` must be denied first for an unprivileged
/// caller to be allowed to write the gid map.
fn map_root_to(uid: &str, gid: &str) -> Result<(), SetupFailure> {
    match fs::write("/proc/self/setgroups", "deny") {
        Ok(()) => {}
        // Kernels before 3.19 have no setgroups file and need no denial.
        Err(e) if e.kind() == io::ErrorKind::NotFound => {}
        Err(e) => return Err(io_failure("writing /proc/self/setgroups", &e).refused_if(REFUSALS)),
    }
    for (file, id) in [("/proc/self/uid_map", uid), ("/proc/self/gid_map", gid)] {
        fs::write(file, format!("0 {id} 1\n"))
            .map_err(|e| io_failure(&format!("writing {file}"), &e).refused_if(REFUSALS))?;
    }
    Ok(())
}

fn start_init(spec: &HelperSpec) -> Result<HelperReport, SetupFailure> {
    let pipe = |what: &str| {
        nix::unistd::pipe2(OFlag::O_CLOEXEC).map_err(|e| SetupFailure::from_errno(format!("creating the {what} pipe"), e))
    };
    let (status_read, status_write) = pipe("status")?;
    // Pid 1 watches this pipe's write end (held only by us) to notice if we
    // died before its parent-death signal was armed.
    let (lifeline_read, lifeline_write) = pipe("lifeline")?;
    // SAFETY: the helper is single-threaded (child_main runs before anything
    // could start a thread), so the child may allocate and use any Rust code.
    match unsafe { fork() } {
        Ok(ForkResult::Child) => {
            drop(status_read);
            drop(lifeline_write);
            init::main(spec, status_write, lifeline_read)
        }
        Ok(ForkResult::Parent { child }) => {
            drop(status_write);
            drop(lifeline_read);
            let deadline = spec.timeout_ms.map(|ms| Instant::now() + Duration::from_millis(ms));
            let report = await_init(child, status_read, deadline);
            drop(lifeline_write);
            report
        }
        Err(e) => Err(SetupFailure::from_errno("forking the sandbox's pid 1", e)),
    }
}

/// Reads pid 1's report (it writes it just before exiting), or kills pid 1 —
/// and with it the whole pid namespace — once the deadline passes.
fn await_init(pid1: Pid, status: OwnedFd, deadline: Option<Instant>) -> Result<HelperReport, SetupFailure> {
    let mut status = File::from(status);
    let mut message = Vec::new();
    let mut chunk = [0u8; 4096];
    loop {
        let readable = sys::wait_readable(&status, deadline)
            .map_err(|e| SetupFailure::from_errno("waiting for the build", e))?;
        if !readable {
            // ESRCH cannot happen: pid 1 is our unreaped child until waitpid below.
            let _ = kill(pid1, Signal::SIGKILL);
            reap(pid1)?;
            return Ok(HelperReport::TimedOut);
        }
        match status.read(&mut chunk) {
            Ok(0) => break,
            Ok(n) => message.extend_from_slice(&chunk[..n]),
            Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
            Err(e) => return Err(io_failure("reading the report of the sandbox's pid 1", &e)),
        }
    }
    let ended = reap(pid1)?;
    if message.is_empty() {
        return Err(SetupFailure::other(
            "running the sandbox's pid 1",
            format!("it ended without a report ({})", describe_wait(ended)),
        ));
    }
    serde_json::from_slice(&message)
        .map_err(|e| SetupFailure::other("reading the report of the sandbox's pid 1", e.to_string()))
}

fn reap(pid: Pid) -> Result<WaitStatus, SetupFailure> {
    loop {
        match waitpid(pid, Some(WaitPidFlag::__WALL)) {
            Err(Errno::EINTR) => continue,
            Err(e) => return Err(SetupFailure::from_errno("waiting for the sandbox's pid 1", e)),
            Ok(status @ (WaitStatus::Exited(..) | WaitStatus::Signaled(..))) => return Ok(status),
            Ok(_) => continue,
        }
    }
}

fn describe_wait(status: WaitStatus) -> String {
    match status {
        WaitStatus::Exited(_, code) => format!("exit status {code}"),
        WaitStatus::Signaled(_, signal, _) => format!("killed by {signal}"),
        other => format!("{other:?}"),
    }
}
