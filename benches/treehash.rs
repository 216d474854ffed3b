//! Tree-hash throughput: 1 GiB in 20,000 files (many small, some multi-MB) hashed from the
//! page cache with `forge::tree::hash_path`, 5 runs, median reported.
//!
//! Run: `cargo bench --bench treehash` (optimized), or for a quick look
//! `cargo build --bench treehash && target/debug/deps/treehash-*` (debug build).
//! `FORGE_BENCH_DIR` picks where the 1 GiB tree is written (default: the system temp dir).

use std::fs;
use std::path::Path;
use std::time::{Duration, Instant};

const FILES: usize = 20_000;
const BIG_FILES: usize = 200;
const BIG_SIZE: usize = 4 << 20; // 200 x 4 MiB = 800 MiB
const TOTAL: usize = 1 << 30;
const RUNS: usize = 5;

fn main() -> Result<(), Box<dyn std::error::Error>> {
    let parent = std::env::var_os("FORGE_BENCH_DIR").map(Into::into).unwrap_or_else(std::env::temp_dir);
    let tmp = tempfile::TempDir::new_in(parent)?;
    let root = tmp.path().join("tree");
    let bytes = create_tree(&root)?;
    eprintln!("created {FILES} files, {bytes} bytes in {}", root.display());

    // Warm the page cache (and check the tree is what we think it is).
    let warm = forge::tree::hash_path(&root)?;
    assert_eq!((warm.files, warm.bytes), (FILES as u64, bytes as u64));

    let mut times: Vec<Duration> = (0..RUNS)
        .map(|_| {
            let start = Instant::now();
            let summary = forge::tree::hash_path(&root).expect("hashing the bench tree");
            assert_eq!(summary.digest, warm.digest);
            start.elapsed()
        })
        .collect();
    times.sort();
    let median = times[RUNS / 2];
    let gbps = bytes as f64 / median.as_secs_f64() / 1e9;
    println!(
        "treehash: {FILES} files, {:.2} GiB, {} threads: median {:.3} s over {RUNS} runs = {gbps:.2} GB/s (min {:.3} s, max {:.3} s)",
        bytes as f64 / (1u64 << 30) as f64,
        rayon::current_num_threads(),
        median.as_secs_f64(),
        times[0].as_secs_f64(),
        times[RUNS - 1].as_secs_f64(),
    );
    Ok(())
}

/// 200 files of 4 MiB and 19,800 small ones (sizes spread over 1..~22 KiB) filling up to
/// exactly 1 GiB, in 100 directories two levels deep. Contents are BLAKE3 XOF output, so no
/// file system or page cache can compress or deduplicate them.
fn create_tree(root: &Path) -> std::io::Result<usize> {
    let small_files = FILES - BIG_FILES;
    let small_total = TOTAL - BIG_FILES * BIG_SIZE;
    let mut reader = blake3::Hasher::new().update(b"forge treehash bench").finalize_xof();
    let mut buf = vec![0u8; BIG_SIZE];
    let mut written = 0;
    for i in 0..FILES {
        let size = if i % (FILES / BIG_FILES) == 0 {
            BIG_SIZE
        } else {
            // Sizes vary around the mean; the last small file takes up the remainder.
            let mean = small_total / small_files;
            let k = i % (FILES / BIG_FILES);
            if i == FILES - 1 { TOTAL.saturating_sub(written) } else { mean / 8 + (k * 7919) % (mean * 7 / 4) }
        };
        let dir = root.join(format!("d{:02}/e{}", i % 100, i % 3));
        fs::create_dir_all(&dir)?;
        reader.fill(&mut buf[..size]);
        fs::write(dir.join(format!("f{i}")), &buf[..size])?;
        written += size;
    }
    Ok(written)
}
