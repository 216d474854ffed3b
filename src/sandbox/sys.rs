//! The few raw system calls the sandbox needs that `nix` does not wrap (or
//! wraps behind a feature forge does not enable). Every `unsafe` block of the
//! helper that is not a `fork` lives here, each with its justification.

use std::os::fd::{AsRawFd, FromRawFd, OwnedFd, RawFd};
use std::time::{Duration, Instant};

use nix::errno::Errno;

/// Ends this process at once, without running destructors or atexit handlers:
/// the right way out of a forked child that shares nothing it should flush.
pub(crate) fn exit_now(code: i32) -> ! {
    // SAFETY: _exit has no preconditions.
    unsafe { libc::_exit(code) }
}

/// Waits until `fd` is readable or hung up, or until `deadline`.
/// Returns `Ok(false)` when the deadline passed first.
pub(crate) fn wait_readable(fd: &impl AsRawFd, deadline: Option<Instant>) -> Result<bool, Errno> {
    loop {
        let timeout_ms = match deadline {
            None => -1,
            Some(deadline) => {
                let left = deadline.saturating_duration_since(Instant::now());
                if left.is_zero() {
                    return Ok(false);
                }
                millis_rounded_up(left)
            }
        };
        let mut pollfd = libc::pollfd { fd: fd.as_raw_fd(), events: libc::POLLIN, revents: 0 };
        // SAFETY: one valid pollfd, and its count is 1.
        let ready = unsafe { libc::poll(&mut pollfd, 1, timeout_ms) };
        match ready {
            n if n > 0 => return Ok(true),
            0 => continue, // re-check the deadline; poll may wake early
            _ => match Errno::last() {
                Errno::EINTR => continue,
                errno => return Err(errno),
            },
        }
    }
}

fn millis_rounded_up(duration: Duration) -> i32 {
    let ms = duration.as_nanos().div_ceil(1_000_000);
    i32::try_from(ms).unwrap_or(i32::MAX)
}

/// True when the write end of the pipe `fd` reads from has been closed.
pub(crate) fn peer_closed(fd: &impl AsRawFd) -> bool {
    let mut pollfd = libc::pollfd { fd: fd.as_raw_fd(), events: libc::POLLIN, revents: 0 };
    // SAFETY: one valid pollfd; zero timeout.
    let ready = unsafe { libc::poll(&mut pollfd, 1, 0) };
    ready > 0 && pollfd.revents & libc::POLLHUP != 0
}

/// Closes every descriptor above stderr except `keep`, so nothing the forge
/// process had open (store database, other builds' pipes) reaches the build.
pub(crate) fn close_fds_except(keep: RawFd) {
    let keep = u32::try_from(keep).unwrap_or(0);
    for (first, last) in [(3, keep.saturating_sub(1)), (keep.saturating_add(1), u32::MAX)] {
        if first > last {
            continue;
        }
        // SAFETY: close_range only closes descriptors; this process owns all of
        // them and no Rust object outlives the exec that follows.
        let done = unsafe { libc::close_range(first, last, 0) } == 0;
        if !done {
            // Kernels before 5.9: close the usual range one by one.
            for fd in first..last.min(4096) {
                // SAFETY: as above; EBADF on unused numbers is expected.
                unsafe { libc::close(fd as RawFd) };
            }
        }
    }
}

/// Restores default dispositions and an empty signal mask. Ignored signals
/// survive `execve`, and the Rust runtime ignores SIGPIPE (as may whoever
/// started forge, e.g. SIGQUIT or glibc's reserved real-time signals): without
/// this, `yes | head` inside a build would behave differently than on a terminal.
pub(crate) fn reset_signals() {
    // The raw system call, because glibc's sigaction refuses the real-time
    // signals it reserves. An all-zero kernel `struct sigaction` means SIG_DFL,
    // no flags, empty mask whatever the architecture's field order.
    let default_action = [0u64; 6];
    let sigset_size: libc::size_t = if cfg!(any(target_arch = "mips", target_arch = "mips64")) { 16 } else { 8 };
    for signal in 1..=libc::SIGRTMAX() {
        if signal == libc::SIGKILL || signal == libc::SIGSTOP {
            continue;
        }
        // SAFETY: the action buffer is larger than any kernel struct sigaction
        // and lives across the call; the old-action pointer is null.
        unsafe {
            libc::syscall(libc::SYS_rt_sigaction, signal, default_action.as_ptr(), std::ptr::null_mut::<u8>(), sigset_size);
        }
    }
    // SAFETY: a zeroed sigset_t emptied by sigemptyset is a valid empty mask.
    unsafe {
        let mut empty: libc::sigset_t = std::mem::zeroed();
        libc::sigemptyset(&mut empty);
        libc::sigprocmask(libc::SIG_SETMASK, &empty, std::ptr::null_mut());
    }
}

/// Sets the NIS domain name of the (new) uts namespace.
pub(crate) fn set_domainname(name: &str) -> Result<(), Errno> {
    // SAFETY: pointer and length describe `name`, which outlives the call.
    let rc = unsafe { libc::setdomainname(name.as_ptr().cast(), name.len()) };
    Errno::result(rc).map(drop)
}

/// Brings `lo` up in the current network namespace (it starts down).
pub(crate) fn bring_up_loopback() -> Result<(), Errno> {
    // SAFETY: plain socket(2); ownership of the result is taken right below.
    let fd = Errno::result(unsafe { libc::socket(libc::AF_INET, libc::SOCK_DGRAM | libc::SOCK_CLOEXEC, 0) })?;
    // SAFETY: `fd` is a fresh descriptor nobody else owns.
    let socket = unsafe { OwnedFd::from_raw_fd(fd) };
    // SAFETY: ifreq is plain old data; all-zero is a valid value.
    let mut request: libc::ifreq = unsafe { std::mem::zeroed() };
    for (dst, src) in request.ifr_name.iter_mut().zip(b"lo") {
        *dst = *src as libc::c_char;
    }
    // SAFETY: SIOCGIFFLAGS/SIOCSIFFLAGS read and write an ifreq, which `request` is.
    unsafe {
        Errno::result(libc::ioctl(socket.as_raw_fd(), libc::SIOCGIFFLAGS, &mut request))?;
        request.ifr_ifru.ifru_flags |= (libc::IFF_UP | libc::IFF_RUNNING) as libc::c_short;
        Errno::result(libc::ioctl(socket.as_raw_fd(), libc::SIOCSIFFLAGS, &request))?;
    }
    Ok(())
}

/// setsid gave the build a new scheduler autogroup, whose nice value starts at 0
/// whatever the process's own: CPU time is shared between autogroups first, so
/// without this `nice forge build` would not lower the build's share of the
/// machine. Copies the process's nice value (inherited from forge) to its
/// autogroup. Best effort: kernels without autogroups have no such file.
pub(crate) fn carry_nice_into_autogroup() {
    // SAFETY: getpriority reads the calling process's nice value; no memory is involved.
    // -1 is also its error value, but only a positive value is acted on.
    let nice = unsafe { libc::getpriority(libc::PRIO_PROCESS, 0) };
    if nice > 0 {
        let _ = std::fs::write("/proc/self/autogroup", nice.to_string());
    }
}

/// While an interactive session (`forge shell`) has the terminal: this process and the
/// helpers it starts ignore the signals the terminal sends (the session's foreground job
/// gets them; the build process resets them to their defaults). On drop: the previous
/// dispositions again, and this process's group back in the terminal's foreground, in case
/// the session's shell ended without giving it back.
pub(crate) struct TerminalSignalsIgnored {
    previous: Vec<(libc::c_int, libc::sighandler_t)>,
    /// This process's group had the terminal's foreground when the session started.
    foreground: bool,
}

impl TerminalSignalsIgnored {
    const SIGNALS: [libc::c_int; 5] = [libc::SIGINT, libc::SIGQUIT, libc::SIGTSTP, libc::SIGTTIN, libc::SIGTTOU];

    pub(crate) fn now() -> TerminalSignalsIgnored {
        // SAFETY: setting a signal to SIG_IGN installs no handler code.
        let previous = Self::SIGNALS.iter().map(|&s| (s, unsafe { libc::signal(s, libc::SIG_IGN) })).collect();
        // SAFETY: isatty and tcgetpgrp only read the terminal's state.
        let foreground = unsafe { libc::isatty(0) == 1 && libc::tcgetpgrp(0) == libc::getpgrp() };
        TerminalSignalsIgnored { previous, foreground }
    }
}

impl Drop for TerminalSignalsIgnored {
    fn drop(&mut self) {
        // SAFETY: tcsetpgrp on fd 0 only changes the terminal's foreground group (SIGTTOU
        // is still ignored here, so a background caller is not stopped); restoring the
        // dispositions read above reinstalls what was there.
        unsafe {
            if self.foreground {
                libc::tcsetpgrp(0, libc::getpgrp());
            }
            for &(signal, handler) in &self.previous {
                libc::signal(signal, handler);
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn poll_timeout_rounds_up() {
        assert_eq!(millis_rounded_up(Duration::from_nanos(1)), 1);
        assert_eq!(millis_rounded_up(Duration::from_secs(u64::MAX)), i32::MAX);
    }

    #[test]
    fn wait_readable_times_out_then_sees_hangup() {
        let (read_end, write_end) = nix::unistd::pipe().unwrap();
        let deadline = Some(Instant::now() + Duration::from_millis(20));
        assert_eq!(wait_readable(&read_end, deadline), Ok(false));
        assert!(!peer_closed(&read_end));
        drop(write_end);
        assert_eq!(wait_readable(&read_end, None), Ok(true));
        assert!(peer_closed(&read_end));
    }
}
