//! Replays every file of the fuzz corpus (fuzz/corpus/TARGET/) and every input the fuzzer ever
//! found a problem with (fuzz/regressions/TARGET/) through the fuzz targets' bodies, on stable,
//! so a parser change that panics on a known input fails `cargo test` (docs/reliability.md).

#[path = "../fuzz/targets.rs"]
mod targets;

use std::path::Path;

fn replay(target: &str, run: fn(&[u8])) {
    let root = Path::new(env!("CARGO_MANIFEST_DIR")).join("fuzz");
    let mut count = 0;
    for kind in ["corpus", "regressions"] {
        let Ok(dir) = std::fs::read_dir(root.join(kind).join(target)) else { continue };
        for entry in dir {
            let path = entry.expect("corpus entry").path();
            let data = std::fs::read(&path).expect("read corpus file");
            let outcome = std::panic::catch_unwind(|| run(&data));
            assert!(outcome.is_ok(), "fuzz target {target} panics on {}", path.display());
            count += 1;
        }
    }
    assert!(count > 0, "no corpus for fuzz target {target} in {}", root.display());
}

#[test]
fn recipe_corpus() {
    replay("recipe", targets::recipe);
}

#[test]
fn set_corpus() {
    replay("set", targets::set);
}

#[test]
fn object_info_corpus() {
    replay("object_info", targets::object_info);
}

#[test]
fn realisation_corpus() {
    replay("realisation", targets::realisation);
}

#[test]
fn archive_corpus() {
    replay("archive", targets::archive);
}
