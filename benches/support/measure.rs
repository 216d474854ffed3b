//! Shared helpers of the benchmarks: run counts, medians, timing the real `forge` binary,
//! and the `FIGURE` lines that `benches/run.sh` collects into its table.

#![allow(dead_code)]

use std::path::{Path, PathBuf};
use std::process::{Command, Output, Stdio};
use std::time::{Duration, Instant};

/// Timed repetitions per figure: `FORGE_BENCH_RUNS`, default 5 (medians need several).
pub fn runs() -> usize {
    std::env::var("FORGE_BENCH_RUNS").ok().and_then(|s| s.parse().ok()).filter(|&n| n > 0).unwrap_or(5)
}

/// The forge checkout (for `toolchain/`).
pub fn repo() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR"))
}

/// The `forge` binary cargo built alongside this bench (same profile).
pub fn forge_bin() -> PathBuf {
    std::env::var_os("FORGE_BIN").map(PathBuf::from).unwrap_or_else(|| PathBuf::from(env!("CARGO_BIN_EXE_forge")))
}

/// Where scratch trees go: `FORGE_BENCH_DIR`, else the system temp dir.
pub fn scratch_parent() -> PathBuf {
    std::env::var_os("FORGE_BENCH_DIR").map(PathBuf::from).unwrap_or_else(std::env::temp_dir)
}

pub fn median(values: &[f64]) -> f64 {
    let mut v = values.to_vec();
    v.sort_by(f64::total_cmp);
    match v.len() {
        0 => f64::NAN,
        n if n % 2 == 1 => v[n / 2],
        n => (v[n / 2 - 1] + v[n / 2]) / 2.0,
    }
}

pub fn percentile(values: &[f64], p: f64) -> f64 {
    let mut v = values.to_vec();
    v.sort_by(f64::total_cmp);
    if v.is_empty() {
        return f64::NAN;
    }
    v[(((v.len() - 1) as f64) * p).round() as usize]
}

pub fn min_max(values: &[f64]) -> (f64, f64) {
    values.iter().fold((f64::INFINITY, f64::NEG_INFINITY), |(lo, hi), &x| (lo.min(x), hi.max(x)))
}

/// `forge --store STORE ARGS...` with a clean environment.
pub fn forge(store: &Path, args: &[&str]) -> Command {
    let mut cmd = Command::new(forge_bin());
    cmd.env_clear()
        .env("PATH", std::env::var_os("PATH").unwrap_or_default())
        .env("HOME", std::env::var_os("HOME").unwrap_or_default())
        .arg("--store")
        .arg(store)
        .args(args);
    cmd
}

/// Run to completion with stdout captured (stderr inherited: forge's errors stay visible);
/// returns the wall time. Panics (the bench is not library code) if forge fails.
pub fn timed(mut cmd: Command) -> (Duration, Output) {
    cmd.stdout(Stdio::piped()).stderr(Stdio::piped());
    let start = Instant::now();
    let output = cmd.output().unwrap_or_else(|e| panic!("cannot run {cmd:?}: {e}"));
    let elapsed = start.elapsed();
    if !output.status.success() {
        panic!(
            "{cmd:?} failed ({}):\n{}\n{}",
            output.status,
            String::from_utf8_lossy(&output.stderr),
            String::from_utf8_lossy(&output.stdout).lines().rev().take(20).collect::<Vec<_>>().join("\n")
        );
    }
    (elapsed, output)
}

/// The JSON events of a `--json` run.
pub fn events(output: &Output) -> Vec<serde_json::Value> {
    String::from_utf8_lossy(&output.stdout).lines().filter_map(|l| serde_json::from_str(l).ok()).collect()
}

/// One row of the figures table: `FIGURE<TAB>what<TAB>measured<TAB>target<TAB>verdict`.
pub fn figure(what: &str, measured: String, target: Option<(f64, f64, &str)>) {
    let (target, verdict) = match target {
        Some((value, limit, text)) if value <= limit => (text.to_string(), "ok".to_string()),
        Some((value, limit, text)) => (text.to_string(), format!("MISSED x{:.2}", value / limit)),
        None => ("-".to_string(), "-".to_string()),
    };
    println!("FIGURE\t{what}\t{measured}\t{target}\t{verdict}");
}
