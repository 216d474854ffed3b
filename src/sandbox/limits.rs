//! The resource limits of one build (docs/sandbox.md, "Limits"): memory, processes, disk
//! (`/build` + `$FORGE_OUT`), the size of `/tmp`, and how long a build may stay silent.
//!
//! Memory and processes are enforced by the kernel: a cgroup per build where this process
//! may create one (cgroup v2, else the v1 `memory` and `pids` hierarchies), else rlimits
//! set in the build process (`RLIMIT_DATA`, `RLIMIT_NPROC`), which bound each process
//! rather than the build and cannot tell forge they were hit. `/tmp` and `/dev/shm` are
//! tmpfs mounts of a fixed size. Disk use and silence are watched by forge while the build
//! runs ([`Watch`]); so are the cgroups' breach counters. A breach kills the build: forge
//! kills the helper, whose death takes the sandbox's pid 1 and so the whole pid namespace.

use std::ffi::CString;
use std::fmt;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use crate::units::{human_bytes, human_duration};

/// Memory a build may use when its recipe names none (`[requirements] memory`).
pub const DEFAULT_MEMORY: u64 = 4 << 30;
/// Processes (and threads) a build may have at once unless `[requirements] processes` says.
pub const DEFAULT_PROCESSES: u64 = 4096;
/// Disk space `/build` and `$FORGE_OUT` may take together unless `[requirements] disk` says.
pub const DEFAULT_DISK: u64 = 20 << 30;
/// Size of the build's `/tmp` (and, separately, `/dev/shm`) unless `[requirements] tmp` says.
pub const DEFAULT_TMP: u64 = 1 << 30;
/// How long a build may print nothing before it is ended (Guix's default), unless
/// `[requirements] max-silent-time` or `forge build --max-silent-time` says.
pub const DEFAULT_MAX_SILENT: Duration = Duration::from_secs(3600);

/// The limits of one build. Every field has a value: the recipe's, or the default.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Limits {
    pub memory: u64,
    pub processes: u64,
    pub disk: u64,
    pub tmp: u64,
    /// `None`: silence is never a reason to stop (`max-silent-time = 0`).
    pub max_silent: Option<Duration>,
}

impl Default for Limits {
    fn default() -> Limits {
        Limits {
            memory: DEFAULT_MEMORY,
            processes: DEFAULT_PROCESSES,
            disk: DEFAULT_DISK,
            tmp: DEFAULT_TMP,
            max_silent: Some(DEFAULT_MAX_SILENT),
        }
    }
}

/// What enforces a limit.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Via {
    /// A cgroup of this version; the build's own directory in it.
    Cgroup { version: u8, dir: PathBuf },
    /// An rlimit of every process of the build.
    Rlimit(&'static str),
}

impl fmt::Display for Via {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Via::Cgroup { version, dir } => write!(f, "a cgroup v{version} per build under {}", dir.parent().unwrap_or(dir).display()),
            Via::Rlimit(name) => write!(f, "{name} (per process; no cgroup could be created)"),
        }
    }
}

/// A limit the build went over, and by how much: why forge ended it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Breach {
    /// The kernel's OOM killer ended a process of the build.
    Memory { limit: u64, peak: Option<u64>, via: String },
    /// A fork was refused because the build had `limit` processes.
    Processes { limit: u64, peak: Option<u64>, via: String },
    Disk { limit: u64, used: u64 },
    Silent { limit: Duration },
}

impl fmt::Display for Breach {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let peak = |p: &Option<u64>, show: fn(u64) -> String| p.map(|p| format!(", {} at peak", show(p))).unwrap_or_default();
        match self {
            Breach::Memory { limit, peak: p, via } => write!(
                f,
                "the build reached its memory limit of {} ([requirements] memory, enforced by {via}) and the kernel killed a process of it{}; the build was stopped",
                human_bytes(*limit),
                peak(p, human_bytes)
            ),
            Breach::Processes { limit, peak: p, via } => write!(
                f,
                "the build reached its limit of {limit} processes ([requirements] processes, enforced by {via}): a fork was refused{}; the build was stopped",
                peak(p, |n| format!("{n} processes"))
            ),
            Breach::Disk { limit, used } => write!(
                f,
                "the build used {} of disk in /build and $FORGE_OUT, over its limit of {} ([requirements] disk); the build was stopped",
                human_bytes(*used),
                human_bytes(*limit)
            ),
            Breach::Silent { limit } => write!(
                f,
                "the build printed nothing for {} (max-silent-time: [requirements] max-silent-time or forge build --max-silent-time) and was stopped",
                human_duration(*limit)
            ),
        }
    }
}

/// The rlimits the build process sets on itself where no cgroup holds a limit.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub(crate) struct Rlimits {
    pub data: Option<u64>,
    pub nproc: Option<u64>,
}

/// The kernel objects that hold one build's memory and process limits: its cgroup
/// directories (removed on drop, once the build's processes are gone).
pub(crate) struct Enforcer {
    pub memory: Via,
    pub processes: Via,
    created: Vec<PathBuf>,
}

impl Enforcer {
    /// Creates the build's cgroups (named after `name`, unique to this process), or
    /// settles for rlimits where no cgroup can be created.
    pub(crate) fn create(limits: &Limits, name: &str) -> Enforcer {
        let places = Hierarchies::discover();
        let mut enforcer = Enforcer { memory: Via::Rlimit("RLIMIT_DATA"), processes: Via::Rlimit("RLIMIT_NPROC"), created: Vec::new() };
        // Our own cgroup holds processes (us), so v2 forbids it children with controllers
        // unless it has been delegated empty; root may use the hierarchy's root instead,
        // which is exempt from that rule.
        let v2_bases = [places.v2.clone(), places.v2_root.clone().filter(|_| nix::unistd::geteuid().is_root())];
        if let Some(dir) = v2_bases.iter().flatten().find_map(|base| enforcer.make_v2(base, name, limits)) {
            enforcer.memory = Via::Cgroup { version: 2, dir: dir.clone() };
            enforcer.processes = Via::Cgroup { version: 2, dir };
            return enforcer;
        }
        if let Some(dir) = places.memory_v1.as_deref().and_then(|base| enforcer.make_v1(base, name, &[("memory.limit_in_bytes", limits.memory)])) {
            // Swap must not extend the limit; the file exists only with swap accounting on.
            let _ = std::fs::write(dir.join("memory.memsw.limit_in_bytes"), limits.memory.to_string());
            enforcer.memory = Via::Cgroup { version: 1, dir };
        }
        if let Some(dir) = places.pids_v1.as_deref().and_then(|base| enforcer.make_v1(base, name, &[("pids.max", limits.processes)])) {
            enforcer.processes = Via::Cgroup { version: 1, dir };
        }
        enforcer
    }

    /// Enforces nothing: for the sandbox probe, which runs no build.
    pub(crate) fn none() -> Enforcer {
        Enforcer { memory: Via::Rlimit("RLIMIT_DATA"), processes: Via::Rlimit("RLIMIT_NPROC"), created: Vec::new() }
    }

    /// A cgroup v2 directory with the memory and pids controllers, or `None`.
    fn make_v2(&mut self, base: &Path, name: &str, limits: &Limits) -> Option<PathBuf> {
        let has_both = |file: &Path| std::fs::read_to_string(file).is_ok_and(|c| c.split_whitespace().filter(|w| *w == "memory" || *w == "pids").count() == 2);
        if !has_both(&base.join("cgroup.subtree_control")) {
            // Refused (EBUSY) when the base holds processes itself, as a non-root cgroup
            // usually does: then v2 is not ours to use.
            std::fs::write(base.join("cgroup.subtree_control"), "+memory +pids").ok()?;
        }
        let dir = self.make_dir(base, name)?;
        if !has_both(&dir.join("cgroup.controllers")) {
            return None;
        }
        std::fs::write(dir.join("memory.max"), limits.memory.to_string()).ok()?;
        let _ = std::fs::write(dir.join("memory.swap.max"), "0");
        std::fs::write(dir.join("pids.max"), limits.processes.to_string()).ok()?;
        Some(dir)
    }

    fn make_v1(&mut self, base: &Path, name: &str, settings: &[(&str, u64)]) -> Option<PathBuf> {
        let dir = self.make_dir(base, name)?;
        for (file, value) in settings {
            std::fs::write(dir.join(file), value.to_string()).ok()?;
        }
        Some(dir)
    }

    fn make_dir(&mut self, base: &Path, name: &str) -> Option<PathBuf> {
        sweep_dead(base);
        let dir = base.join(name);
        std::fs::create_dir(&dir).ok()?;
        self.created.push(dir.clone());
        Some(dir)
    }

    /// The `cgroup.procs` files the helper writes itself into before it starts anything
    /// (its descendants, the build, are then in the cgroups too).
    pub(crate) fn join_files(&self) -> Vec<CString> {
        self.created.iter().filter_map(|dir| CString::new(dir.join("cgroup.procs").into_os_string().into_encoded_bytes()).ok()).collect()
    }

    /// What the build process sets on itself: the limits no cgroup holds.
    pub(crate) fn rlimits(&self, limits: &Limits) -> Rlimits {
        Rlimits {
            data: matches!(self.memory, Via::Rlimit(_)).then_some(limits.memory),
            nproc: matches!(self.processes, Via::Rlimit(_)).then_some(limits.processes),
        }
    }

    /// A limit the kernel enforced on the build since it started, if any.
    pub(crate) fn breach(&self, limits: &Limits) -> Option<Breach> {
        if let Via::Cgroup { version, dir } = &self.memory {
            let (events, peak) = if *version == 2 { ("memory.events", "memory.peak") } else { ("memory.oom_control", "memory.max_usage_in_bytes") };
            if counter(&dir.join(events), "oom_kill").unwrap_or(0) > 0 {
                return Some(Breach::Memory { limit: limits.memory, peak: read_number(&dir.join(peak)), via: self.memory.to_string() });
            }
        }
        if let Via::Cgroup { dir, .. } = &self.processes {
            if counter(&dir.join("pids.events"), "max").unwrap_or(0) > 0 {
                return Some(Breach::Processes { limit: limits.processes, peak: read_number(&dir.join("pids.peak")), via: self.processes.to_string() });
            }
        }
        None
    }
}

impl Drop for Enforcer {
    fn drop(&mut self) {
        for dir in self.created.iter().rev() {
            remove_cgroup(dir);
        }
    }
}

/// Removes an (empty) cgroup directory. The build's last processes may still be on their
/// way out just after the helper has been reaped, so it is tried for a moment.
fn remove_cgroup(dir: &Path) {
    for _ in 0..50 {
        match std::fs::remove_dir(dir) {
            Err(e) if e.raw_os_error() == Some(libc::EBUSY) => std::thread::sleep(Duration::from_millis(20)),
            _ => return,
        }
    }
}

/// Removes the cgroups of forge processes that are gone (killed before they could).
fn sweep_dead(base: &Path) {
    let Ok(entries) = std::fs::read_dir(base) else { return };
    for entry in entries.flatten() {
        let name = entry.file_name();
        let Some(pid) = name.to_str().and_then(|n| n.strip_prefix(CGROUP_PREFIX)).and_then(|rest| rest.split('x').next()) else { continue };
        if !pid.is_empty() && pid.bytes().all(|b| b.is_ascii_digit()) && !Path::new("/proc").join(pid).exists() {
            let _ = std::fs::remove_dir(entry.path());
        }
    }
}

/// Every build cgroup's name starts with this, then the owning process's token.
pub(crate) const CGROUP_PREFIX: &str = "forge-build-";

/// A number in a flat-keyed cgroup file: `oom_kill 3` in memory.events.
fn counter(file: &Path, key: &str) -> Option<u64> {
    let text = std::fs::read_to_string(file).ok()?;
    text.lines().find_map(|line| line.strip_prefix(key)?.strip_prefix(' ')?.trim().parse().ok())
}

fn read_number(file: &Path) -> Option<u64> {
    std::fs::read_to_string(file).ok()?.trim().parse().ok()
}

/// Where this process's own cgroups are, per hierarchy that matters here.
#[derive(Debug, Default, PartialEq)]
struct Hierarchies {
    v2: Option<PathBuf>,
    /// Where the v2 hierarchy is mounted (its root, as this process sees it).
    v2_root: Option<PathBuf>,
    memory_v1: Option<PathBuf>,
    pids_v1: Option<PathBuf>,
}

impl Hierarchies {
    fn discover() -> Hierarchies {
        let read = |path| std::fs::read_to_string(path).unwrap_or_default();
        Hierarchies::parse(&read("/proc/self/mountinfo"), &read("/proc/self/cgroup"))
    }

    /// From /proc/self/mountinfo (where each hierarchy is mounted, and which of its
    /// directories the mount shows as its root) and /proc/self/cgroup (our cgroup in each).
    fn parse(mountinfo: &str, cgroup: &str) -> Hierarchies {
        // (root inside the hierarchy, mount point) per "2", "memory", "pids".
        let mut mounts: Vec<(&str, &str, &str)> = Vec::new();
        for line in mountinfo.lines() {
            let Some((left, right)) = line.split_once(" - ") else { continue };
            let left: Vec<&str> = left.split(' ').collect();
            let right: Vec<&str> = right.split(' ').collect();
            let (Some(root), Some(point), Some(fstype), Some(options)) = (left.get(3), left.get(4), right.first(), right.get(2)) else { continue };
            match *fstype {
                "cgroup2" => mounts.push(("2", root, point)),
                "cgroup" => {
                    for controller in options.split(',').filter(|o| *o == "memory" || *o == "pids") {
                        mounts.push((controller, root, point));
                    }
                }
                _ => {}
            }
        }
        let place = |key: &str, path: &str| -> Option<PathBuf> {
            let (_, root, point) = mounts.iter().find(|(k, _, _)| *k == key)?;
            let inside = path.strip_prefix(root.trim_end_matches('/')).unwrap_or(path);
            Some(Path::new(point).join(inside.trim_start_matches('/')))
        };
        let mut found = Hierarchies::default();
        for line in cgroup.lines() {
            let mut fields = line.splitn(3, ':');
            let (Some(id), Some(controllers), Some(path)) = (fields.next(), fields.next(), fields.next()) else { continue };
            if id == "0" && controllers.is_empty() {
                found.v2 = place("2", path);
                found.v2_root = mounts.iter().find(|(k, _, _)| *k == "2").map(|(_, _, point)| PathBuf::from(point));
            }
            for controller in controllers.split(',') {
                match controller {
                    "memory" => found.memory_v1 = place("memory", path),
                    "pids" => found.pids_v1 = place("pids", path),
                    _ => {}
                }
            }
        }
        found
    }
}

/// When the build last wrote to its log: shared between the log pump and the [`Watch`].
#[derive(Debug)]
pub(crate) struct Activity {
    started: Instant,
    last_ms: AtomicU64,
}

impl Activity {
    pub(crate) fn new() -> Arc<Activity> {
        Arc::new(Activity { started: Instant::now(), last_ms: AtomicU64::new(0) })
    }

    pub(crate) fn touch(&self) {
        self.last_ms.store(self.started.elapsed().as_millis() as u64, Ordering::Relaxed);
    }

    fn silent_for(&self) -> Duration {
        self.started.elapsed().saturating_sub(Duration::from_millis(self.last_ms.load(Ordering::Relaxed)))
    }
}

/// The shortest time between two measurements of the build's disk use; a walk that takes
/// longer spaces them out to 20 times its own duration, so that watching costs at most
/// about 5% of one core.
const DISK_INTERVAL_MIN: Duration = Duration::from_secs(2);

/// What forge checks while a build runs, between reads of the helper's report pipe.
pub(crate) struct Watch<'a> {
    limits: &'a Limits,
    enforcer: &'a Enforcer,
    disk_dirs: Vec<PathBuf>,
    activity: Option<Arc<Activity>>,
    next_disk_check: Instant,
}

impl<'a> Watch<'a> {
    pub(crate) fn new(limits: &'a Limits, enforcer: &'a Enforcer, disk_dirs: Vec<PathBuf>, activity: Option<Arc<Activity>>) -> Watch<'a> {
        Watch { limits, enforcer, disk_dirs, activity, next_disk_check: Instant::now() + DISK_INTERVAL_MIN }
    }

    /// How long to wait for the report before the next check.
    pub(crate) const TICK: Duration = Duration::from_millis(250);

    /// A limit the build is over right now, if any.
    pub(crate) fn check(&mut self) -> Option<Breach> {
        if let Some(breach) = self.enforcer.breach(self.limits) {
            return Some(breach);
        }
        if let (Some(limit), Some(activity)) = (self.limits.max_silent, &self.activity) {
            if activity.silent_for() >= limit {
                return Some(Breach::Silent { limit });
            }
        }
        if Instant::now() >= self.next_disk_check {
            let started = Instant::now();
            let breach = self.disk_breach();
            self.next_disk_check = Instant::now() + DISK_INTERVAL_MIN.max(started.elapsed() * 20);
            return breach;
        }
        None
    }

    /// After the build has ended: what the kernel counted, and the disk use it left.
    pub(crate) fn final_check(&mut self) -> Option<Breach> {
        self.enforcer.breach(self.limits).or_else(|| self.disk_breach())
    }

    fn disk_breach(&self) -> Option<Breach> {
        // A walk that fails (a directory moved under it) is no measurement: the next one is.
        let used: u64 = self.disk_dirs.iter().map(|dir| crate::fswalk::disk_usage(dir).ok()).sum::<Option<u64>>()?;
        (used > self.limits.disk).then_some(Breach::Disk { limit: self.limits.disk, used })
    }
}

/// One line for `forge build -v`: what enforces each limit, as found by creating (and
/// removing) the cgroups of a build.
pub(crate) fn describe(enforcer: &Enforcer) -> String {
    format!(
        "limits: memory by {} (default {}); processes by {} (default {DEFAULT_PROCESSES}); disk of /build + $FORGE_OUT measured by forge every {}s or more (default {}); /tmp and /dev/shm are tmpfs of {} each by default; a build silent for {} is ended by default",
        enforcer.memory,
        human_bytes(DEFAULT_MEMORY),
        enforcer.processes,
        DISK_INTERVAL_MIN.as_secs(),
        human_bytes(DEFAULT_DISK),
        human_bytes(DEFAULT_TMP),
        human_duration(DEFAULT_MAX_SILENT)
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn finds_our_cgroups_in_a_hybrid_hierarchy() {
        let mountinfo = "\
35 24 0:30 / /sys/fs/cgroup ro,nosuid - tmpfs tmpfs ro,mode=755
36 35 0:31 / /sys/fs/cgroup/unified rw,nosuid - cgroup2 cgroup2 rw
40 35 0:35 / /sys/fs/cgroup/memory rw,relatime shared:9 - cgroup cgroup rw,memory
41 35 0:36 /outer /sys/fs/cgroup/pids rw,relatime - cgroup cgroup rw,pids
";
        let cgroup = "8:pids:/outer/job\n4:memory:/api/3cd\n1:cpu,cpuacct:/\n0::/user.slice\n";
        let h = Hierarchies::parse(mountinfo, cgroup);
        assert_eq!(h.v2.as_deref(), Some(Path::new("/sys/fs/cgroup/unified/user.slice")));
        assert_eq!(h.v2_root.as_deref(), Some(Path::new("/sys/fs/cgroup/unified")));
        assert_eq!(h.memory_v1.as_deref(), Some(Path::new("/sys/fs/cgroup/memory/api/3cd")));
        assert_eq!(h.pids_v1.as_deref(), Some(Path::new("/sys/fs/cgroup/pids/job")));
        assert_eq!(Hierarchies::parse("", "0::/\n"), Hierarchies::default());
    }

    #[test]
    fn counters_are_read_by_key() {
        let dir = tempfile::tempdir().unwrap();
        let file = dir.path().join("memory.oom_control");
        std::fs::write(&file, "oom_kill_disable 0\nunder_oom 0\noom_kill 2\n").unwrap();
        assert_eq!(counter(&file, "oom_kill"), Some(2));
        assert_eq!(counter(&file, "missing"), None);
    }

    #[test]
    fn breaches_say_which_limit_its_value_and_the_use() {
        let disk = Breach::Disk { limit: 32 << 20, used: 64 << 20 };
        assert!(disk.to_string().contains("64.0 MiB of disk") && disk.to_string().contains("limit of 32.0 MiB"), "{disk}");
        let silent = Breach::Silent { limit: Duration::from_secs(90) };
        assert!(silent.to_string().contains("nothing for 1m30s"), "{silent}");
    }
}
