//! Sandbox overhead per trivial build (issue 2, figure 2).
//!
//! `FORGE_BENCH_TRIVIAL` (default 100) independent recipes on `seed`, each writing one small
//! file, built by the real `forge build --json` with `-j 1` and `-j 2`, `FORGE_BENCH_RUNS`
//! times each (alternating, so both see the same machine load). Every run changes one `[env]`
//! value so that all its derivations are new while `seed` stays realised. Per-build time is
//! the `seconds` of each `built` event (lookup, staging, root assembly, namespaces, script,
//! normalization, hashing, registration); throughput is builds / wall time of the command.
//!
//! The store persists in `FORGE_BENCH_STORE` (default `target/forge-bench/sandbox-store`) so the
//! busybox .deb is fetched (`apt-get download`) once per machine, not once per run.
//!
//! Run: `benches/run.sh` (everything) or `cargo bench --bench sandbox`.

#[path = "support/measure.rs"]
mod measure;

use std::fs;
use std::path::{Path, PathBuf};
use std::time::{SystemTime, UNIX_EPOCH};

use measure::{figure, forge, median, percentile, timed};

fn main() -> Result<(), Box<dyn std::error::Error>> {
    let count: usize = std::env::var("FORGE_BENCH_TRIVIAL").ok().and_then(|s| s.parse().ok()).unwrap_or(100);
    let runs = measure::runs();
    let store = std::env::var_os("FORGE_BENCH_STORE")
        .map(PathBuf::from)
        .unwrap_or_else(|| measure::repo().join("target/forge-bench/sandbox-store"));
    let tmp = tempfile::Builder::new().prefix("forge-bench-sandbox-").tempdir_in(measure::scratch_parent())?;
    println!("sandbox bench: {count} trivial builds per run, {runs} runs per -j, store {}", store.display());

    // Realise the seed first (fetches busybox-static once per store); not timed.
    let seed = measure::repo().join("toolchain/seed.toml");
    let busybox = measure::repo().join("toolchain/busybox-static.toml");
    timed(forge(&store, &["build", "--json", path_str(&busybox), path_str(&seed)]));

    let unique = SystemTime::now().duration_since(UNIX_EPOCH)?.as_nanos();
    let mut per_build: [Vec<f64>; 2] = [Vec::new(), Vec::new()];
    let mut throughput: [Vec<f64>; 2] = [Vec::new(), Vec::new()];
    let mut speedups = Vec::new();
    for run in 0..runs {
        let mut rates = [0.0; 2];
        for (slot, jobs) in [1usize, 2].into_iter().enumerate() {
            let dir = tmp.path().join(format!("run{run}-j{jobs}"));
            let set = write_trivial(&dir, count, &format!("{unique}-{run}-{jobs}"), &seed, &busybox)?;
            let (wall, output) = timed(forge(&store, &["build", "--json", "-j", &jobs.to_string(), path_str(&set)]));
            let seconds: Vec<f64> = measure::events(&output)
                .iter()
                .filter(|e| e["event"] == "built")
                .filter_map(|e| e["seconds"].as_f64())
                .collect();
            assert_eq!(seconds.len(), count, "every trivial recipe is built (seed is cached)");
            rates[slot] = count as f64 / wall.as_secs_f64();
            println!(
                "run {run} -j {jobs}: wall {:.2} s = {:.1} builds/s; per build median {:.1} ms, p90 {:.1} ms",
                wall.as_secs_f64(),
                rates[slot],
                1e3 * median(&seconds),
                1e3 * percentile(&seconds, 0.9)
            );
            per_build[slot].extend(seconds);
            throughput[slot].push(rates[slot]);
        }
        speedups.push(rates[1] / rates[0]);
    }

    for (slot, jobs) in [1, 2].into_iter().enumerate() {
        let ms = 1e3 * median(&per_build[slot]);
        println!(
            "-j {jobs}: per build median {ms:.1} ms (p10 {:.1}, p90 {:.1}, max {:.1}; {} builds); {:.1} builds/s (median of {runs} runs)",
            1e3 * percentile(&per_build[slot], 0.1),
            1e3 * percentile(&per_build[slot], 0.9),
            1e3 * measure::min_max(&per_build[slot]).1,
            per_build[slot].len(),
            median(&throughput[slot])
        );
        let target = (jobs == 1).then_some((ms / 1e3, 0.020, "< 20 ms"));
        figure(&format!("trivial build, -j {jobs}, per build (median)"), format!("{ms:.1} ms"), target);
        figure(&format!("trivial builds/s, -j {jobs}"), format!("{:.1}", median(&throughput[slot])), None);
    }
    println!("speed-up -j 2 / -j 1 (within each run): median {:.2}", median(&speedups));
    figure("speed-up -j 2 over -j 1 (same run)", format!("{:.2}", median(&speedups)), None);
    Ok(())
}

/// `count` independent recipes on `seed` plus a set of them; `token` goes into every
/// recipe's `[env]` so this run's derivations are new.
fn write_trivial(dir: &Path, count: usize, token: &str, seed: &Path, busybox: &Path) -> std::io::Result<PathBuf> {
    fs::create_dir_all(dir.join("pkgs"))?;
    for i in 0..count {
        let text = format!(
            r#"[package]
name = "trivial-{i:03}"
version = "1"

[deps]
build = ["seed"]

[env]
BENCH_RUN = "{token}"

[build]
script = 'echo "$FORGE_NAME $BENCH_RUN" > "$FORGE_OUT/hello"'
"#
        );
        fs::write(dir.join("pkgs").join(format!("trivial-{i:03}.toml")), text)?;
    }
    let set = dir.join("trivial.toml");
    fs::write(
        &set,
        format!("[set]\nname = \"trivial\"\ninclude = [\"pkgs/*.toml\", {:?}, {:?}]\n", path_str(busybox), path_str(seed)),
    )?;
    Ok(set)
}

fn path_str(p: &Path) -> &str {
    p.to_str().expect("bench paths are UTF-8")
}
