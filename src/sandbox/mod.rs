//! The build sandbox (docs/sandbox.md): new user, mount, pid, net, uts and ipc
//! namespaces; a root assembled only from store objects; a fixed environment.
//!
//! This module owns everything between "here is a derivation's input closure,
//! sources, environment and script" and "the script ran, here is how it ended":
//!
//! * [`root`] merges the store-object layers into a hardlink farm (the future `/`);
//! * [`protocol`] is the JSON spec and report exchanged with the helper process;
//! * [`child`] is the helper (`forge __sandbox SPEC_FILE`): it unshares the
//!   namespaces, forks the sandbox's pid 1 and enforces the timeout;
//! * [`init`] is that pid 1: it mounts, pivots, execs the build and reaps;
//! * [`sys`] wraps the few raw system calls `nix` does not;
//! * [`diagnose`] turns a kernel refusal into [`SandboxError::Unsupported`] with
//!   a message saying which knob to change.
//!
//! The forge process itself never forks into namespaces: the executor calls
//! [`run`] from rayon threads, and `unshare(CLONE_NEWUSER)` requires a
//! single-threaded caller, so the work happens in a freshly exec'd helper.

mod child;
mod diagnose;
pub mod ids;
mod init;
mod limits;
mod logpump;
mod protocol;
mod root;
mod sys;

use std::collections::BTreeMap;
use std::fs::{self, File, OpenOptions};
use std::io::{self, Read};
use std::os::fd::AsRawFd;
use std::os::unix::process::CommandExt;
use std::path::{Path, PathBuf};
use std::process::{Command, ExitStatus, Stdio};
use std::time::{Duration, Instant};

pub use child::child_main;
pub use limits::{Breach, Limits, DEFAULT_DISK, DEFAULT_MAX_SILENT, DEFAULT_MEMORY, DEFAULT_PROCESSES, DEFAULT_TMP};
pub use logpump::Pumped;
use crate::recipe::stage;
use ids::IdBlock;
use limits::{Activity, Enforcer, Watch};
use protocol::{FailureKind, HelperReport, HelperSpec, HostIds, SetupFailure};

/// Where the build installs its output inside the sandbox (`$FORGE_OUT`).
pub const SANDBOX_OUT: &str = "/forge/out";
/// Where the staged sources are, read-only, inside the sandbox (`$FORGE_SOURCES`).
pub const SANDBOX_SOURCES: &str = "/forge/sources";
/// The writable working directory of the build.
pub const SANDBOX_BUILD: &str = "/build";
/// The hostname every build sees.
pub const SANDBOX_HOSTNAME: &str = "forge";
/// The first argument that turns the forge binary into the sandbox helper.
pub const HELPER_ARG: &str = "__sandbox";

/// One store object to be merged into the sandbox root.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Layer {
    /// Human-facing name used in error messages (usually the package name).
    pub name: String,
    /// The store object directory (its contents become `at`).
    pub path: PathBuf,
    /// Where in the sandbox the object's contents are placed: `/`, or a
    /// directory such as `/lfs` (a valid [`crate::recipe::stage`] location).
    pub at: PathBuf,
}

impl Layer {
    /// A layer whose contents become the sandbox's `/`.
    pub fn at_root(name: impl Into<String>, path: impl Into<PathBuf>) -> Layer {
        Layer { name: name.into(), path: path.into(), at: PathBuf::from(stage::ROOT) }
    }

    /// The name as shown in errors: `glibc`, or `glibc (at /lfs)` when staged.
    pub fn label(&self) -> String {
        if self.at == Path::new(stage::ROOT) {
            self.name.clone()
        } else {
            format!("{} (at {})", self.name, self.at.display())
        }
    }
}

/// Everything needed to run one build in the sandbox.
#[derive(Debug, Clone)]
pub struct SandboxSpec {
    /// The forge binary, re-executed as `HELPER_EXE __sandbox SPEC_FILE`.
    pub helper_exe: PathBuf,
    /// Store objects making up `/`, lowest first.
    pub layers: Vec<Layer>,
    /// Staged sources, bound read-only at [`SANDBOX_SOURCES`].
    pub sources: PathBuf,
    /// An empty directory on the store's file system; `root/`, `build/` and
    /// `out/` are created in it.
    pub scratch: PathBuf,
    /// The complete environment of the build; nothing else is inherited.
    pub env: BTreeMap<String, String>,
    /// The command, e.g. `["/bin/sh", "-e", "-c", script]`.
    pub argv: Vec<String>,
    pub timeout: Option<Duration>,
    /// Created or appended to; receives the build's stdout and stderr.
    pub log: PathBuf,
    /// Mount the working directory here and start there instead of [`SANDBOX_BUILD`], which
    /// becomes a symlink to it: a `forge build --check` variation. One component, e.g.
    /// `/build-check-1`.
    pub build_dir: Option<String>,
    /// Memory, processes, disk, `/tmp` size and silence (docs/sandbox.md, "Limits").
    pub limits: Limits,
    /// `forge shell`: run `argv` on this process's terminal instead of into the log.
    pub attach: Option<Attach>,
}

/// An interactive session in a build's sandbox (`forge shell`): `argv` gets this process's
/// stdin, stdout and stderr (the log is not written), stays in its session so that a shell
/// has job control, and forge ignores the terminal's signals (Ctrl-C is the shell's) until
/// it ends. No timeout and no silence limit apply.
#[derive(Debug, Clone, Default)]
pub struct Attach {
    /// Start in a kept failed build (`forge build --keep-failed`): these directories become
    /// `/build` and `$FORGE_OUT` for the session and are put back afterwards, with what the
    /// session changed in them.
    pub resume: Option<Kept>,
}

/// A failed build's kept `/build` and `$FORGE_OUT` on the host.
#[derive(Debug, Clone)]
pub struct Kept {
    pub build: PathBuf,
    pub out: PathBuf,
}

/// How the build process ended.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Exit {
    Success,
    /// Exited with this non-zero status.
    Failed(i32),
    /// Killed by this signal.
    Signaled(i32),
    /// Ran longer than the spec's timeout and was killed with everything it spawned.
    TimedOut,
    /// Went over one of its [`Limits`]: killed by forge (disk, silence) or failed after the
    /// kernel enforced one (memory, processes).
    LimitExceeded(Breach),
}

/// The record of a sandboxed run that got as far as starting the build.
#[derive(Debug)]
pub struct SandboxOutcome {
    pub exit: Exit,
    /// Wall time of the whole run, root assembly and namespace setup included.
    pub duration: Duration,
    /// `scratch/out` on the host: what the build wrote to [`SANDBOX_OUT`].
    pub out_dir: PathBuf,
    /// Peak resident memory of the largest process of the build, in bytes (the kernel's
    /// `ru_maxrss` over the reaped process tree), when known.
    pub peak_memory: Option<u64>,
    /// The end of the build's output, and whether writing the log failed (a full disk).
    pub log: Pumped,
}

/// Why a sandbox could not be set up. A build that ran and failed is not an
/// error: it is an [`Exit`] in the [`SandboxOutcome`].
#[derive(Debug, thiserror::Error)]
pub enum SandboxError {
    #[error("build sandbox unavailable: {reason}")]
    Unsupported { reason: String },
    #[error("invalid sandbox spec: {0}")]
    InvalidSpec(String),
    #[error("layer {name:?}: store object {} does not exist or is not a directory", path.display())]
    LayerMissing { name: String, path: PathBuf },
    #[error("layer {name:?}: cannot read {}: {source}", path.display())]
    LayerUnreadable { name: String, path: PathBuf, source: io::Error },
    #[error("layer conflict at /{}: {first:?} and {second:?} both provide it ({detail})", path.display())]
    LayerConflict { path: PathBuf, first: String, second: String, detail: String },
    #[error("layer {layer:?} provides /{}, which the sandbox reserves ({purpose})", path.display())]
    ReservedPath { path: PathBuf, layer: String, purpose: &'static str },
    #[error("layer {layer:?}: /{} is {kind}, which a store object cannot contain", path.display())]
    UnsupportedFileType { path: PathBuf, layer: String, kind: &'static str },
    #[error("sources directory {} does not exist or is not a directory", path.display())]
    SourcesMissing { path: PathBuf },
    #[error("cannot {action} {}: {source}", path.display())]
    Io { action: &'static str, path: PathBuf, source: io::Error },
    #[error("cannot start the sandbox helper {}: {source}", exe.display())]
    HelperSpawn { exe: PathBuf, source: io::Error },
    #[error("the sandbox helper {} ended ({status}) without reporting: {detail}", exe.display())]
    HelperDied { exe: PathBuf, status: String, detail: String },
    #[error("sandbox setup failed while {step}: {detail}")]
    Setup { step: String, detail: String },
    #[error("cannot execute {program:?} inside the sandbox: {detail}")]
    Exec { program: String, detail: String },
}

impl SandboxError {
    fn io(action: &'static str, path: &Path) -> impl FnOnce(io::Error) -> SandboxError {
        let path = path.to_path_buf();
        move |source| SandboxError::Io { action, path, source }
    }
}

/// Runs `spec.argv` in a fresh sandbox and waits for it (or for the timeout).
///
/// `Err` means the sandbox could not be set up (nothing ran, or the program
/// could not be executed); a build that ran and failed is `Ok` with its [`Exit`].
/// After returning, `scratch/root` and `scratch/build` are left for the caller,
/// which removes the scratch directory.
pub fn run(spec: &SandboxSpec) -> Result<SandboxOutcome, SandboxError> {
    let started = Instant::now();
    validate(spec)?;
    let dirs = ScratchDirs::create(&spec.scratch)?;
    root::assemble(&spec.layers, &dirs.root, spec.build_dir.as_deref())?;
    let ids = BuildIds::for_this_process()?;
    ids.hand_over(&dirs)?;
    let enforcer = Enforcer::create(&spec.limits, &cgroup_name());
    let attached = spec.attach.is_some();
    let helper_spec = HelperSpec {
        parent_pid: std::process::id(),
        root: dirs.root.clone(),
        build: dirs.build.clone(),
        build_dir: spec.build_dir.clone().unwrap_or_else(|| SANDBOX_BUILD.into()),
        out: dirs.out.clone(),
        sources: canonical(&spec.sources, "resolve the sources directory")?,
        argv: spec.argv.clone(),
        env: spec.env.clone(),
        timeout_ms: spec.timeout.map(duration_to_ms),
        probe: false,
        host_ids: ids.host_ids(),
        tmp_bytes: spec.limits.tmp,
        rlimits: enforcer.rlimits(&spec.limits),
        interactive: attached,
    };
    let resume = spec.attach.as_ref().and_then(|a| a.resume.as_ref());
    let helper_result = match &spec.attach {
        None => {
            let log = open_log(&spec.log)?;
            let activity = Activity::new();
            let watch = Watch::new(&spec.limits, &enforcer, vec![dirs.build.clone(), dirs.out.clone()], Some(activity.clone()));
            invoke_helper(&spec.helper_exe, &dirs.spec_file, &helper_spec, Some((log, activity)), Some(watch), &enforcer)
        }
        Some(_) => {
            if let Some(kept) = resume {
                if let Err(e) = adopt(kept, &dirs, &ids) {
                    // Whatever was moved in already goes back: the kept build is the user's.
                    let _ = give_back(kept, &dirs);
                    return Err(e);
                }
            }
            // No activity to watch: silence is no limit here.
            let watch = Watch::new(&spec.limits, &enforcer, vec![dirs.build.clone(), dirs.out.clone()], None);
            let _quiet = sys::TerminalSignalsIgnored::now();
            invoke_helper(&spec.helper_exe, &dirs.spec_file, &helper_spec, None, Some(watch), &enforcer)
        }
    };
    let taken = ids.take_back(&dirs.out);
    if let Some(kept) = resume {
        // The kept build goes back whatever else failed: the scratch dir is removed after.
        let taken_build = ids.take_back(&dirs.build);
        give_back(kept, &dirs)?;
        taken_build?;
    }
    taken?;
    let ended = helper_result?;
    let exit = match (ended.report, ended.breach) {
        (HelperReport::Failed(failure), None) => return Err(failure_to_error(failure)),
        // A build over its disk limit fails even when its script succeeded: the output
        // would not fit. The kernel's limits explain a failure, they do not cause one.
        (_, Some(breach @ Breach::Disk { .. })) => Exit::LimitExceeded(breach),
        (HelperReport::Exited(0), _) => Exit::Success,
        (_, Some(breach)) => Exit::LimitExceeded(breach),
        (HelperReport::Exited(code), None) => Exit::Failed(code),
        (HelperReport::Signaled(signal), None) => Exit::Signaled(signal),
        (HelperReport::TimedOut, None) => Exit::TimedOut,
    };
    drop(enforcer);
    Ok(SandboxOutcome { exit, duration: started.elapsed(), out_dir: dirs.out, peak_memory: ended.peak_memory, log: ended.log })
}

/// What enforces each limit of a build started now (`forge build -v`): found by creating,
/// and removing, a build's cgroups.
pub fn describe_enforcement() -> String {
    limits::describe(&Enforcer::create(&Limits::default(), &cgroup_name()))
}

/// A name for this build's cgroups no other build (of any forge process) uses:
/// `forge-build-PIDxNANOS-N`, the pid first so that a later forge can remove it once
/// this process is gone.
fn cgroup_name() -> String {
    static NEXT: std::sync::atomic::AtomicU64 = std::sync::atomic::AtomicU64::new(0);
    static STARTED: std::sync::OnceLock<u128> = std::sync::OnceLock::new();
    let nanos = STARTED.get_or_init(|| std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).map(|d| d.as_nanos()).unwrap_or(0));
    let n = NEXT.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
    format!("{}{}x{nanos:x}-{n}", limits::CGROUP_PREFIX, std::process::id())
}

/// Checks that this machine can create the sandbox: runs the helper through
/// every step of a real build (namespaces, id maps, mounts, pivot_root, the
/// nested namespace that locks the mounts) without executing anything.
pub fn probe(helper_exe: &Path) -> Result<(), SandboxError> {
    let scratch = TempDir::create()?;
    let dirs = ScratchDirs::create(&scratch.path)?;
    let sources = scratch.path.join("sources");
    fs::create_dir(&sources).map_err(SandboxError::io("create", &sources))?;
    root::assemble(&[], &dirs.root, None)?;
    let ids = BuildIds::for_this_process()?;
    ids.hand_over(&dirs)?;
    let helper_spec = HelperSpec {
        parent_pid: std::process::id(),
        root: dirs.root.clone(),
        build: dirs.build.clone(),
        build_dir: SANDBOX_BUILD.into(),
        out: dirs.out.clone(),
        sources,
        argv: Vec::new(),
        env: BTreeMap::new(),
        timeout_ms: Some(10_000),
        probe: true,
        host_ids: ids.host_ids(),
        tmp_bytes: limits::DEFAULT_TMP,
        rlimits: limits::Rlimits::default(),
        interactive: false,
    };
    let no_limits = Enforcer::none();
    match invoke_helper(helper_exe, &dirs.spec_file, &helper_spec, None, None, &no_limits)?.report {
        HelperReport::Exited(0) => Ok(()),
        HelperReport::Failed(failure) => Err(failure_to_error(failure)),
        other => Err(SandboxError::Setup {
            step: "probing the sandbox".into(),
            detail: format!("unexpected probe result {other:?}"),
        }),
    }
}

fn validate(spec: &SandboxSpec) -> Result<(), SandboxError> {
    let invalid = |msg: String| Err(SandboxError::InvalidSpec(msg));
    if spec.argv.is_empty() {
        return invalid("argv is empty".into());
    }
    if let Some(arg) = spec.argv.iter().find(|a| a.contains('\0')) {
        return invalid(format!("argument {arg:?} contains a NUL byte"));
    }
    if let Some(dir) = &spec.build_dir {
        let name = dir.strip_prefix('/').unwrap_or("");
        let plain = !name.is_empty() && name.bytes().all(|b| b.is_ascii_alphanumeric() || b == b'-' || b == b'_');
        if !plain || root::MOUNT_POINTS.contains(&name) || name == root::HOMELESS {
            return invalid(format!("build directory {dir:?} must be /NAME, NAME made of letters, digits, - and _, and not reserved"));
        }
    }
    for (key, value) in &spec.env {
        if key.is_empty() || key.contains('=') || key.contains('\0') {
            return invalid(format!("environment variable name {key:?} is not valid"));
        }
        if value.contains('\0') {
            return invalid(format!("environment variable {key} contains a NUL byte"));
        }
    }
    for layer in &spec.layers {
        if let Some(reason) = layer.at.to_str().map_or(Some("not UTF-8".to_string()), stage::problem) {
            return invalid(format!("layer {:?} placed at {}: {reason}", layer.name, layer.at.display()));
        }
        if !layer.path.is_dir() {
            return Err(SandboxError::LayerMissing {
                name: layer.name.clone(),
                path: layer.path.clone(),
            });
        }
    }
    if !spec.sources.is_dir() {
        return Err(SandboxError::SourcesMissing { path: spec.sources.clone() });
    }
    Ok(())
}

/// Whose ids the build runs as: the caller's own (an ordinary user), or a block of
/// unprivileged host ids held for the duration of the build (root, see [`ids`]).
enum BuildIds {
    Caller,
    Block(IdBlock),
}

impl BuildIds {
    fn for_this_process() -> Result<BuildIds, SandboxError> {
        if nix::unistd::geteuid().is_root() {
            IdBlock::allocate().map(BuildIds::Block)
        } else {
            Ok(BuildIds::Caller)
        }
    }

    fn host_ids(&self) -> Option<HostIds> {
        match self {
            BuildIds::Caller => None,
            BuildIds::Block(block) => Some(HostIds { base: block.base, count: block.count }),
        }
    }

    /// The writable directories belong to the sandbox's root before the build starts.
    fn hand_over(&self, dirs: &ScratchDirs) -> Result<(), SandboxError> {
        if let BuildIds::Block(block) = self {
            for dir in [&dirs.build, &dirs.out] {
                std::os::unix::fs::chown(dir, Some(block.base), Some(block.base))
                    .map_err(SandboxError::io("hand over to the build's ids", dir))?;
            }
        }
        Ok(())
    }

    /// What the build wrote to `$FORGE_OUT` belongs to the store's owner (this process)
    /// again, whoever in the block it was created as; nothing is left owned by ids that the
    /// next build holding the block would own too.
    fn take_back(&self, out: &Path) -> Result<(), SandboxError> {
        if let BuildIds::Caller = self {
            return Ok(());
        }
        let (uid, gid) = (nix::unistd::geteuid().as_raw(), nix::unistd::getegid().as_raw());
        crate::fswalk::chown_tree(out, uid, gid).map_err(|source| SandboxError::Io {
            action: "take back ownership of the output in",
            path: out.to_path_buf(),
            source,
        })
    }
}

/// Move a kept failed build's directories in as the sandbox's `/build` and `$FORGE_OUT`,
/// owned by the ids the build runs as (as they were when it failed, whichever block of ids
/// that build had).
fn adopt(kept: &Kept, dirs: &ScratchDirs, ids: &BuildIds) -> Result<(), SandboxError> {
    for (from, to) in [(&kept.build, &dirs.build), (&kept.out, &dirs.out)] {
        fs::remove_dir(to).map_err(SandboxError::io("remove", to))?;
        if from.symlink_metadata().is_ok() {
            fs::rename(from, to).map_err(SandboxError::io("move the kept build directory", from))?;
        } else {
            fs::create_dir(to).map_err(SandboxError::io("create", to))?;
        }
        if let BuildIds::Block(block) = ids {
            crate::fswalk::chown_tree(to, block.base, block.base).map_err(SandboxError::io("hand over to the build's ids", to))?;
        }
    }
    Ok(())
}

/// Put a kept build's directories back where `forge build --keep-failed` left them: each
/// that is in the sandbox's place and not back yet (after a partial [`adopt`] too). Both are
/// tried; the first error is returned.
fn give_back(kept: &Kept, dirs: &ScratchDirs) -> Result<(), SandboxError> {
    let mut first_error = None;
    for (from, to) in [(&dirs.build, &kept.build), (&dirs.out, &kept.out)] {
        if from.symlink_metadata().is_err() || to.symlink_metadata().is_ok() {
            continue;
        }
        if let Err(e) = fs::rename(from, to) {
            first_error.get_or_insert(SandboxError::io("move back the kept build directory", to)(e));
        }
    }
    first_error.map_or(Ok(()), Err)
}

/// The directories and files `run` creates inside the scratch dir.
struct ScratchDirs {
    root: PathBuf,
    build: PathBuf,
    out: PathBuf,
    spec_file: PathBuf,
}

impl ScratchDirs {
    fn create(scratch: &Path) -> Result<ScratchDirs, SandboxError> {
        // Absolute paths: the helper changes directory before it uses them.
        let scratch = canonical(scratch, "resolve the scratch directory")?;
        let dirs = ScratchDirs {
            root: scratch.join("root"),
            build: scratch.join("build"),
            out: scratch.join("out"),
            spec_file: scratch.join("sandbox.json"),
        };
        for dir in [&dirs.root, &dirs.build, &dirs.out] {
            fs::create_dir(dir).map_err(SandboxError::io("create", dir))?;
        }
        Ok(dirs)
    }
}

fn canonical(path: &Path, action: &'static str) -> Result<PathBuf, SandboxError> {
    fs::canonicalize(path).map_err(SandboxError::io(action, path))
}

fn open_log(path: &Path) -> Result<File, SandboxError> {
    OpenOptions::new()
        .create(true)
        .append(true)
        .open(path)
        .map_err(SandboxError::io("open the build log", path))
}

fn duration_to_ms(timeout: Duration) -> u64 {
    // Round up so that a sub-millisecond timeout still means "a timeout".
    let ms = timeout.as_nanos().div_ceil(1_000_000);
    u64::try_from(ms).unwrap_or(u64::MAX)
}

/// How the helper ended: its report, the limit it went over (if any), its tree's peak memory
/// and what the log pump saw.
struct Ended {
    report: HelperReport,
    breach: Option<Breach>,
    peak_memory: Option<u64>,
    log: Pumped,
}

/// Writes the spec, runs `HELPER_EXE __sandbox SPEC_FILE` in the `enforcer`'s cgroups with
/// stdout/stderr going to `log` (through a [`logpump`]) and nothing else inherited, and
/// reads back its report, which the helper sends through a pipe on descriptor
/// [`protocol::REPORT_FD`] (a pipe needs no disk space: a build that filled the disk still
/// gets its report home). While waiting, `watch` checks the limits every [`Watch::TICK`];
/// on a breach the helper is killed, and with it the sandbox's pid namespace.
fn invoke_helper(
    exe: &Path,
    spec_file: &Path,
    spec: &HelperSpec,
    log: Option<(File, std::sync::Arc<Activity>)>,
    mut watch: Option<Watch<'_>>,
    enforcer: &Enforcer,
) -> Result<Ended, SandboxError> {
    let json = serde_json::to_vec(spec).map_err(|e| {
        SandboxError::InvalidSpec(format!("cannot encode the helper spec (non UTF-8 path?): {e}"))
    })?;
    fs::write(spec_file, json).map_err(SandboxError::io("write", spec_file))?;
    let pipe = || nix::unistd::pipe2(nix::fcntl::OFlag::O_CLOEXEC).map_err(|e| SandboxError::io("create a pipe for", spec_file)(e.into()));
    let (report_read, report_write) = pipe()?;
    let (stdout, stderr, pump) = match log {
        Some((file, activity)) => {
            let (output_read, output_write) = pipe()?;
            let copy = output_write.try_clone().map_err(SandboxError::io("duplicate the log pipe", spec_file))?;
            let pump = logpump::LogPump::start(File::from(output_read), file, activity).map_err(SandboxError::io("start the log writer for", spec_file))?;
            (Stdio::from(output_write), Stdio::from(copy), Some(pump))
        }
        None if spec.interactive => (Stdio::inherit(), Stdio::inherit(), None),
        None => (Stdio::null(), Stdio::null(), None),
    };
    let report_fd = report_write.as_raw_fd();
    let cgroup_procs = enforcer.join_files();
    let mut command = Command::new(exe);
    let stdin = if spec.interactive { Stdio::inherit() } else { Stdio::null() };
    command.arg(HELPER_ARG).arg(spec_file).env_clear().stdin(stdin).stdout(stdout).stderr(stderr);
    // SAFETY: between fork and exec only dup2, open, write and close run, which are
    // async-signal-safe, on memory allocated before the fork. dup2 clears close-on-exec on
    // the new descriptor, so exactly this one pipe end reaches the helper. Writing "0" to a
    // cgroup.procs file moves the writer (the helper-to-be) into that cgroup, before it
    // starts anything.
    unsafe {
        command.pre_exec(move || {
            if libc::dup2(report_fd, protocol::REPORT_FD) < 0 {
                return Err(std::io::Error::last_os_error());
            }
            for procs in &cgroup_procs {
                let fd = libc::open(procs.as_ptr(), libc::O_WRONLY | libc::O_CLOEXEC);
                if fd < 0 || libc::write(fd, b"0".as_ptr().cast(), 1) != 1 {
                    return Err(std::io::Error::last_os_error());
                }
                libc::close(fd);
            }
            Ok(())
        });
    }
    let spawned = command.spawn();
    // Our copies of the write ends: the pipes reach EOF when the helper's side is gone.
    drop(command);
    drop(report_write);
    let child = spawned.map_err(|source| SandboxError::HelperSpawn { exe: exe.to_path_buf(), source })?;
    let (report, breach) = read_report(File::from(report_read), child.id(), watch.as_mut());
    let (status, peak_memory) = wait_with_peak_memory(child).map_err(|source| SandboxError::HelperSpawn { exe: exe.to_path_buf(), source })?;
    let log = pump.map(logpump::LogPump::finish).unwrap_or_default();
    if let Some(breach) = breach {
        // Killed by us: whatever the report says (usually nothing), the breach is why.
        let report = parse_report(exe, &report, status).unwrap_or(HelperReport::Signaled(libc::SIGKILL));
        return Ok(Ended { report, breach: Some(breach), peak_memory, log });
    }
    let breach = watch.as_mut().and_then(Watch::final_check);
    Ok(Ended { report: parse_report(exe, &report, status)?, breach, peak_memory, log })
}

/// Reads the helper's report until EOF (the helper and the sandbox's pid 1 have exited; the
/// build holds no copy), checking the limits between reads. On a breach the helper is killed
/// and the pipe drained.
fn read_report(pipe: File, helper: u32, mut watch: Option<&mut Watch<'_>>) -> (Vec<u8>, Option<Breach>) {
    let mut report = Vec::new();
    let mut breach = None;
    let mut buf = [0u8; 8192];
    loop {
        if breach.is_none() {
            if let Some(watch) = watch.as_deref_mut() {
                // An error from poll is no reason to stop reading: the read below blocks.
                if let Ok(false) = sys::wait_readable(&pipe, Some(Instant::now() + Watch::TICK)) {
                    if let Some(found) = watch.check() {
                        // SAFETY: kill has no memory-safety preconditions; the helper is our
                        // child and not yet reaped, so the pid is still its.
                        unsafe { libc::kill(helper as libc::pid_t, libc::SIGKILL) };
                        breach = Some(found);
                    }
                    continue;
                }
            }
        }
        match (&pipe).read(&mut buf) {
            Ok(0) => break,
            Ok(n) => {
                let room = (protocol::MAX_REPORT as usize + 1).saturating_sub(report.len());
                report.extend_from_slice(&buf[..n.min(room)]);
            }
            Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
            Err(_) => break,
        }
    }
    (report, breach)
}

/// Wait for the helper with wait4(2): its exit status, and the peak resident memory of the
/// largest process in its tree (ru_maxrss covers the reaped descendants), in bytes.
fn wait_with_peak_memory(child: std::process::Child) -> std::io::Result<(ExitStatus, Option<u64>)> {
    use std::os::unix::process::ExitStatusExt;
    let pid = child.id() as libc::pid_t;
    let mut status: libc::c_int = 0;
    // SAFETY: rusage is plain old data, zero is a valid value; wait4 writes both out-params.
    let mut usage: libc::rusage = unsafe { std::mem::zeroed() };
    loop {
        // SAFETY: `pid` is our own unreaped child; the pointers are valid for the call.
        let r = unsafe { libc::wait4(pid, &mut status, 0, &mut usage) };
        if r == pid {
            break;
        }
        let err = std::io::Error::last_os_error();
        if err.kind() != std::io::ErrorKind::Interrupted {
            return Err(err);
        }
    }
    let peak = u64::try_from(usage.ru_maxrss).ok().filter(|&kib| kib > 0).map(|kib| kib * 1024);
    Ok((ExitStatus::from_raw(status), peak))
}

fn parse_report(exe: &Path, bytes: &[u8], status: ExitStatus) -> Result<HelperReport, SandboxError> {
    let died = |detail: String| SandboxError::HelperDied {
        exe: exe.to_path_buf(),
        status: status.to_string(),
        detail,
    };
    if bytes.is_empty() {
        return Err(died("its report pipe closed without a report".into()));
    }
    serde_json::from_slice(bytes).map_err(|e| died(format!("unreadable report: {e}")))
}

fn failure_to_error(failure: SetupFailure) -> SandboxError {
    match failure.kind {
        FailureKind::Refused => SandboxError::Unsupported {
            reason: diagnose::explain_refusal(
                &failure.step,
                failure.errno,
                &diagnose::KernelKnobs::read(),
                nix::unistd::geteuid().is_root(),
            ),
        },
        FailureKind::Exec { program } => SandboxError::Exec { program, detail: failure.detail },
        FailureKind::Other => SandboxError::Setup { step: failure.step, detail: failure.detail },
    }
}

/// A private temporary directory for [`probe`], removed on drop.
struct TempDir {
    path: PathBuf,
}

impl TempDir {
    fn create() -> Result<TempDir, SandboxError> {
        let nanos = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map(|d| d.subsec_nanos())
            .unwrap_or(0);
        let name = format!("forge-sandbox-probe-{}-{nanos}", std::process::id());
        let path = std::env::temp_dir().join(name);
        fs::create_dir(&path).map_err(SandboxError::io("create", &path))?;
        Ok(TempDir { path })
    }
}

impl Drop for TempDir {
    fn drop(&mut self) {
        // Best effort: the probe's result matters, a leftover empty temp dir does not.
        let _ = fs::remove_dir_all(&self.path);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn timeout_rounds_up_to_whole_milliseconds() {
        assert_eq!(duration_to_ms(Duration::from_micros(1)), 1);
        assert_eq!(duration_to_ms(Duration::from_millis(1500)), 1500);
        assert_eq!(duration_to_ms(Duration::from_nanos(2_000_001)), 3);
    }

    fn spec_in(dir: &Path) -> SandboxSpec {
        SandboxSpec {
            helper_exe: PathBuf::from("/nonexistent/forge"),
            layers: vec![],
            sources: dir.to_path_buf(),
            scratch: dir.to_path_buf(),
            env: BTreeMap::new(),
            argv: vec!["/bin/sh".into()],
            timeout: None,
            log: dir.join("log"),
            build_dir: None,
            limits: Limits::default(),
            attach: None,
        }
    }

    #[test]
    fn validate_rejects_bad_env_names_and_empty_argv() {
        let dir = std::env::temp_dir();
        let mut spec = spec_in(&dir);
        assert!(validate(&spec).is_ok());
        spec.env.insert("A=B".into(), "x".into());
        assert!(matches!(validate(&spec), Err(SandboxError::InvalidSpec(m)) if m.contains("A=B")));
        let mut spec = spec_in(&dir);
        spec.argv.clear();
        assert!(matches!(validate(&spec), Err(SandboxError::InvalidSpec(_))));
        let mut spec = spec_in(&dir);
        let mut layer = Layer::at_root("glibc", &dir);
        layer.at = PathBuf::from("/tmp/sysroot");
        spec.layers.push(layer);
        assert!(matches!(validate(&spec), Err(SandboxError::InvalidSpec(m)) if m.contains("\"glibc\" placed at /tmp/sysroot: /tmp is reserved")));
        let mut spec = spec_in(&dir);
        spec.sources = dir.join("forge-definitely-missing-sources");
        assert!(matches!(validate(&spec), Err(SandboxError::SourcesMissing { .. })));
        for bad in ["/tmp", "/a/b", "build-1", "/../x", "/"] {
            let mut spec = spec_in(&dir);
            spec.build_dir = Some(bad.into());
            assert!(matches!(validate(&spec), Err(SandboxError::InvalidSpec(m)) if m.contains("build directory")), "{bad}");
        }
    }
}
