fn main() {
    // The sandbox helper must run before anything else (single-threaded, no CLI).
    if std::env::args_os().nth(1).as_deref() == Some(std::ffi::OsStr::new(forge::sandbox::HELPER_ARG)) {
        std::process::exit(forge::sandbox::child_main());
    }
    std::process::exit(forge::cli::run());
}
