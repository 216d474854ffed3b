//! The command line: argument parsing (clap), output, exit statuses. Only this module prints.

/// Entry point of the `forge` binary; returns the process exit status.
pub fn run() -> i32 {
    0
}
