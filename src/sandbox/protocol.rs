//! The private contract between `sandbox::run` (in the forge process) and the
//! helper (`forge __sandbox SPEC_FILE`): the spec the parent writes, and the
//! report the helper sends back on descriptor [`REPORT_FD`]. Both are JSON and
//! only ever exchanged between a forge binary and itself, so the format is not
//! versioned; the helper is always the same executable as the caller.

use std::collections::BTreeMap;
use std::path::PathBuf;

use serde::{Deserialize, Serialize};

/// What the helper needs, with every path absolute and resolved.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub(crate) struct HelperSpec {
    /// The forge process; the helper stops if it is no longer its parent.
    pub parent_pid: u32,
    /// The assembled hardlink farm that becomes `/`.
    pub root: PathBuf,
    pub build: PathBuf,
    /// Where `build` is mounted inside, and the cwd ([`super::SANDBOX_BUILD`] unless varied).
    pub build_dir: String,
    pub out: PathBuf,
    pub sources: PathBuf,
    pub argv: Vec<String>,
    pub env: BTreeMap<String, String>,
    pub timeout_ms: Option<u64>,
    /// Set up everything, then exit 0 instead of executing `argv`.
    pub probe: bool,
    /// When forge runs as root: the host ids the sandbox's ids 0.. map to (see
    /// [`super::ids`]). `None`: uid/gid 0 map to the caller's own ids, and nothing else exists.
    pub host_ids: Option<HostIds>,
    /// Size of the `/tmp` and `/dev/shm` tmpfs mounts, in bytes.
    pub tmp_bytes: u64,
    /// Limits the build process sets on itself (those no cgroup holds).
    pub rlimits: super::limits::Rlimits,
    /// `forge shell`: the build process keeps the caller's session (and terminal).
    pub interactive: bool,
}

/// A block of host uids and gids, `base .. base + count`, owned by one build.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub(crate) struct HostIds {
    pub base: u32,
    pub count: u32,
}

/// How a sandboxed run ended, as seen by the helper (and by the sandbox's
/// pid 1, which sends the same type up to the helper through a pipe).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub(crate) enum HelperReport {
    Exited(i32),
    Signaled(i32),
    TimedOut,
    Failed(SetupFailure),
}

/// A setup step that failed, with the errno when a system call failed.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub(crate) struct SetupFailure {
    pub step: String,
    pub errno: Option<i32>,
    pub detail: String,
    pub kind: FailureKind,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub(crate) enum FailureKind {
    /// The kernel refused namespaces (becomes `SandboxError::Unsupported`).
    Refused,
    /// The build program could not be executed.
    Exec { program: String },
    Other,
}

impl SetupFailure {
    pub fn other(step: impl Into<String>, detail: impl Into<String>) -> SetupFailure {
        SetupFailure { step: step.into(), errno: None, detail: detail.into(), kind: FailureKind::Other }
    }

    pub fn from_errno(step: impl Into<String>, errno: nix::errno::Errno) -> SetupFailure {
        SetupFailure {
            step: step.into(),
            errno: Some(errno as i32),
            detail: errno.to_string(),
            kind: FailureKind::Other,
        }
    }

    /// Marks the failure as a kernel refusal when `errno` is one of the ways
    /// the kernel says "no namespaces for you" (rather than, say, ENOENT).
    pub fn refused_if(mut self, refusals: &[nix::errno::Errno]) -> SetupFailure {
        if refusals.iter().any(|e| Some(*e as i32) == self.errno) {
            self.kind = FailureKind::Refused;
        }
        self
    }
}

/// The helper's descriptor for its report: the write end of a pipe forge reads.
pub(crate) const REPORT_FD: i32 = 3;
/// The largest report forge reads (a report is a few hundred bytes).
pub(crate) const MAX_REPORT: u64 = 1 << 20;

#[cfg(test)]
mod tests {
    use super::*;
    use nix::errno::Errno;


    #[test]
    fn refusal_only_for_listed_errnos() {
        let eperm = SetupFailure::from_errno("unshare", Errno::EPERM).refused_if(&[Errno::EPERM]);
        assert_eq!(eperm.kind, FailureKind::Refused);
        let enoent = SetupFailure::from_errno("unshare", Errno::ENOENT).refused_if(&[Errno::EPERM]);
        assert_eq!(enoent.kind, FailureKind::Other);
    }

    #[test]
    fn report_round_trips_through_json() {
        let report = HelperReport::Failed(SetupFailure::from_errno("mount /proc", Errno::EPERM));
        let json = serde_json::to_string(&report).unwrap();
        assert_eq!(serde_json::from_str::<HelperReport>(&json).unwrap(), report);
    }
}
