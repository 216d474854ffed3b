//! Staging locations: where in the sandbox a dependency's output is placed.
//!
//! A `[deps]` entry `{ name = "glibc", at = "/lfs" }` places glibc's output (and,
//! transitively, its runtime closure) under `/lfs` instead of `/`. This module owns
//! what a valid location is and how nested locations compose; the graph, the
//! derivation and the sandbox all rely on these two functions.

use std::path::{Component, Path, PathBuf};

/// The default location: the sandbox root.
pub const ROOT: &str = "/";

/// Directories the sandbox mounts over or requires absent (docs/sandbox.md); a
/// dependency placed at or under one of them would be hidden or break the build.
pub const RESERVED: [&str; 6] = ["/build", "/forge", "/tmp", "/dev", "/proc", "/homeless"];

/// Why `path` is not a valid staging location, or `None` if it is one.
///
/// Valid: absolute, normalized (no `.`, `..`, empty or trailing components, no
/// repeated `/`), UTF-8 without NUL, and not at or under a [`RESERVED`] directory.
pub fn problem(path: &str) -> Option<String> {
    if !path.starts_with('/') {
        return Some("must be an absolute path (start with '/')".into());
    }
    if path.contains('\0') {
        return Some("must not contain a NUL byte".into());
    }
    if path == ROOT {
        return None;
    }
    if path.ends_with('/') || path.contains("//") {
        return Some("must be normalized: no trailing '/' and no '//'".into());
    }
    if path.split('/').any(|segment| segment == "." || segment == "..") {
        return Some("must be normalized: no '.' or '..' segments".into());
    }
    RESERVED
        .iter()
        .find(|reserved| Path::new(path).starts_with(reserved))
        .map(|reserved| format!("{reserved} is reserved by the sandbox (reserved: {})", RESERVED.join(" ")))
}

/// `inner` (a location relative to a dependency's own root) seen from a sandbox
/// where that dependency is placed at `outer`: `/lfs` + `/usr` = `/lfs/usr`.
/// Both must be valid locations.
pub fn compose(outer: &Path, inner: &Path) -> PathBuf {
    let mut out = outer.to_path_buf();
    out.extend(inner.components().filter(|c| matches!(c, Component::Normal(_))));
    out
}

/// `path` relative to the sandbox root (`/lfs/usr` -> `lfs/usr`, `/` -> ``).
pub fn relative(path: &Path) -> &Path {
    path.strip_prefix(ROOT).unwrap_or(path)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn valid_locations() {
        for ok in ["/", "/lfs", "/sysroot/usr", "/tools", "/builder", "/tmpfs", "/a.b/c-d"] {
            assert_eq!(problem(ok), None, "{ok}");
        }
    }

    #[test]
    fn invalid_locations_say_why() {
        let cases = [
            ("lfs", "absolute"),
            ("", "absolute"),
            ("/lfs/", "normalized"),
            ("//lfs", "normalized"),
            ("/a//b", "normalized"),
            ("/lfs/../etc", "'..'"),
            ("/./lfs", "'.'"),
            ("/tmp", "/tmp is reserved"),
            ("/tmp/x", "/tmp is reserved"),
            ("/proc", "/proc is reserved"),
            ("/forge/out", "/forge is reserved"),
            ("/build", "/build is reserved"),
            ("/dev", "/dev is reserved"),
            ("/homeless", "/homeless is reserved"),
            ("/a\0b", "NUL"),
        ];
        for (path, why) in cases {
            let message = problem(path).unwrap_or_else(|| panic!("{path:?} must be rejected"));
            assert!(message.contains(why), "{path:?}: {message} should mention {why}");
        }
    }

    #[test]
    fn compose_nests_and_root_is_neutral() {
        let p = |s: &str| PathBuf::from(s);
        assert_eq!(compose(&p("/"), &p("/")), p("/"));
        assert_eq!(compose(&p("/lfs"), &p("/")), p("/lfs"));
        assert_eq!(compose(&p("/"), &p("/usr")), p("/usr"));
        assert_eq!(compose(&p("/lfs"), &p("/usr/x")), p("/lfs/usr/x"));
        assert_eq!(relative(&p("/lfs/usr")), p("lfs/usr"));
        assert_eq!(relative(&p("/")), p(""));
    }
}
