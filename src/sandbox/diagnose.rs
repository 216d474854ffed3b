//! Explains a kernel refusal to create the sandbox: which sysctl or
//! environment is the likely cause and what to change. The text ends up in
//! `SandboxError::Unsupported`; forge never falls back to an unsandboxed build.

use std::fs;

use nix::errno::Errno;

use super::init::PROC_FS;

/// The kernel settings that commonly forbid (unprivileged) user namespaces.
/// `None` means the knob does not exist on this kernel.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub(crate) struct KernelKnobs {
    /// Debian/Arch patch: `kernel.unprivileged_userns_clone`.
    pub unprivileged_userns_clone: Option<u64>,
    pub max_user_namespaces: Option<u64>,
    /// Ubuntu 23.10+: `kernel.apparmor_restrict_unprivileged_userns`.
    pub apparmor_restrict_unprivileged_userns: Option<u64>,
}

impl KernelKnobs {
    pub fn read() -> KernelKnobs {
        KernelKnobs {
            unprivileged_userns_clone: read_knob("/proc/sys/kernel/unprivileged_userns_clone"),
            max_user_namespaces: read_knob("/proc/sys/user/max_user_namespaces"),
            apparmor_restrict_unprivileged_userns: read_knob(
                "/proc/sys/kernel/apparmor_restrict_unprivileged_userns",
            ),
        }
    }
}

fn read_knob(path: &str) -> Option<u64> {
    fs::read_to_string(path).ok()?.trim().parse().ok()
}

/// Why `step` failed with `errno`, and what to change.
pub(crate) fn explain_refusal(step: &str, errno: Option<i32>, knobs: &KernelKnobs, is_root: bool) -> String {
    let errno = errno.map(Errno::from_raw);
    let errno_text = errno.map_or_else(|| "an error".to_string(), |e| e.to_string());
    let cause = likely_cause(step, errno, knobs, is_root);
    format!("{step} failed with {errno_text}. {cause} forge does not build without its sandbox.")
}

fn likely_cause(step: &str, errno: Option<Errno>, knobs: &KernelKnobs, is_root: bool) -> &'static str {
    if knobs.max_user_namespaces == Some(0) {
        return "User namespaces are disabled (user.max_user_namespaces = 0); enable them with \
                `sysctl -w user.max_user_namespaces=15000` and persist it in /etc/sysctl.d/.";
    }
    if !is_root && knobs.unprivileged_userns_clone == Some(0) {
        return "Unprivileged user namespaces are disabled (kernel.unprivileged_userns_clone = 0); \
                enable them with `sysctl -w kernel.unprivileged_userns_clone=1` and persist it in \
                /etc/sysctl.d/, or run forge as root.";
    }
    if !is_root && knobs.apparmor_restrict_unprivileged_userns == Some(1) {
        return "AppArmor restricts unprivileged user namespaces \
                (kernel.apparmor_restrict_unprivileged_userns = 1, Ubuntu 23.10 and later); either \
                install an AppArmor profile for the forge binary that allows `userns,` or run \
                `sysctl -w kernel.apparmor_restrict_unprivileged_userns=0`.";
    }
    if matches!(errno, Some(Errno::ENOSPC | Errno::EUSERS)) {
        return "A namespace limit is exhausted (user.max_user_namespaces, user.max_net_namespaces, \
                user.max_pid_namespaces, ...); raise it with sysctl or wait for other sandboxes to exit.";
    }
    if step.starts_with(&format!("mounting {PROC_FS} ")) {
        return "The kernel refuses a fresh /proc inside a user namespace when the existing /proc is \
                partly covered by other mounts, which is typical inside containers; run forge on the \
                host or in a container with an unmasked /proc (e.g. Docker's \
                --security-opt systempaths=unconfined).";
    }
    if is_root {
        "The kernel or a security policy refused to create namespaces; inside a container a \
         seccomp filter is the usual cause (Docker: --security-opt seccomp=unconfined, or a \
         privileged container); on the host check the sysctl user.max_user_namespaces."
    } else {
        "The kernel or a security policy refused to create namespaces; inside a container a \
         seccomp filter is the usual cause (Docker: --security-opt seccomp=unconfined); on the \
         host check the sysctls user.max_user_namespaces and kernel.unprivileged_userns_clone, \
         and whether an LSM (AppArmor, SELinux) restricts unprivileged user namespaces."
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const EPERM: Option<i32> = Some(libc::EPERM);

    #[test]
    fn names_the_disabled_sysctl_and_how_to_enable_it() {
        let knobs = KernelKnobs { unprivileged_userns_clone: Some(0), ..Default::default() };
        let text = explain_refusal("unshare", EPERM, &knobs, false);
        assert!(text.contains("kernel.unprivileged_userns_clone=1"), "{text}");
        assert!(text.starts_with("unshare failed with EPERM"), "{text}");
        // Root is not subject to that knob, so it must not be blamed.
        let text = explain_refusal("unshare", EPERM, &knobs, true);
        assert!(!text.contains("unprivileged_userns_clone"), "{text}");
    }

    #[test]
    fn max_user_namespaces_zero_wins() {
        let knobs = KernelKnobs { max_user_namespaces: Some(0), unprivileged_userns_clone: Some(0), ..Default::default() };
        let text = explain_refusal("unshare", EPERM, &knobs, false);
        assert!(text.contains("user.max_user_namespaces=15000"), "{text}");
    }

    #[test]
    fn apparmor_restriction_is_named() {
        let knobs = KernelKnobs { apparmor_restrict_unprivileged_userns: Some(1), ..Default::default() };
        let text = explain_refusal("writing /proc/self/uid_map", EPERM, &knobs, false);
        assert!(text.contains("apparmor_restrict_unprivileged_userns=0"), "{text}");
    }

    #[test]
    fn exhausted_limits_and_masked_proc_and_seccomp() {
        let knobs = KernelKnobs::default();
        assert!(explain_refusal("unshare", Some(libc::ENOSPC), &knobs, false).contains("limit is exhausted"));
        assert!(explain_refusal("mounting proc on /s/root/proc", EPERM, &knobs, false).contains("unmasked /proc"));
        assert!(!explain_refusal("writing /proc/self/uid_map", EPERM, &knobs, false).contains("unmasked /proc"));
        assert!(explain_refusal("unshare", EPERM, &knobs, true).contains("seccomp"));
    }
}
