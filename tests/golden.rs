//! Golden files for the canonical derivation encoding (`forge-drv-v1`).
//!
//! The fixture set tests/fixtures/recipes/all.toml is loaded, resolved and
//! planned; each package's canonical bytes must equal tests/golden/NAME.drv and
//! its drv hash the line in tests/golden/drv-hashes.txt.
//!
//! To accept an intended change, run
//!     FORGE_UPDATE_GOLDEN=1 cargo test --test golden
//! and review the diff: a changed drv hash invalidates every stored build.

use std::fs;
use std::path::{Path, PathBuf};

use forge::derivation::{plan, Derivation};
use forge::graph::Graph;
use forge::recipe::load;

fn root() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("tests")
}

fn golden_pairs() -> (Vec<(String, Vec<u8>)>, String) {
    let loaded = load(&[root().join("fixtures/recipes/all.toml")]).expect("fixtures load");
    let graph = Graph::resolve(loaded).expect("fixtures resolve");
    let plan = plan(&graph).expect("fixtures plan");
    let mut hashes = String::new();
    let mut drvs = Vec::new();
    for &id in graph.topo_order() {
        let name = &graph.nodes[id].recipe.name;
        hashes.push_str(&format!("{} {name}\n", plan.drv_hashes[id]));
        drvs.push((name.clone(), plan.drvs[id].canonical_bytes()));
    }
    (drvs, hashes)
}

#[test]
fn canonical_derivations_match_golden_files() {
    assert_eq!(forge::derivation::host_system(), "x86_64-linux", "golden files are for x86_64 hosts");
    let (drvs, hashes) = golden_pairs();
    let dir = root().join("golden");
    if std::env::var_os("FORGE_UPDATE_GOLDEN").is_some() {
        for (name, bytes) in &drvs {
            fs::write(dir.join(format!("{name}.drv")), bytes).unwrap();
        }
        fs::write(dir.join("drv-hashes.txt"), &hashes).unwrap();
    }
    for (name, bytes) in &drvs {
        let path = dir.join(format!("{name}.drv"));
        let golden = fs::read(&path).unwrap_or_else(|e| panic!("{}: {e}", path.display()));
        assert!(
            &golden == bytes,
            "{name}: canonical bytes changed\n  golden: {}\n  now:    {}",
            String::from_utf8_lossy(&golden),
            String::from_utf8_lossy(bytes)
        );
        // The stored form parses back to the same derivation.
        assert_eq!(Derivation::from_canonical(&golden).unwrap().canonical_bytes(), golden);
    }
    assert_eq!(fs::read_to_string(dir.join("drv-hashes.txt")).unwrap(), hashes);
}

#[test]
fn golden_plan_has_the_expected_shape() {
    let loaded = load(&[root().join("fixtures/recipes/all.toml")]).unwrap();
    assert_eq!(loaded.targets[0].packages, ["seed", "app", "hello", "zlib"]);
    assert_eq!(loaded.warnings().len(), 1, "hello's md5-only source warns");
    let graph = Graph::resolve(loaded).unwrap();
    let plan = plan(&graph).unwrap();
    let app = graph.node_by_name("app").unwrap();
    let inputs: Vec<&str> = plan.drvs[app].inputs.iter().map(|i| i.name.as_str()).collect();
    assert_eq!(inputs, ["seed", "zlib", "hello"]);
    let hello = graph.node_by_name("hello").unwrap();
    assert_eq!(plan.drvs[hello].sources[0].checksum.to_string(), format!("blake3:{}", blake3::hash(
        &fs::read(root().join("fixtures/recipes/packages/files/hello.c")).unwrap()
    )));
    assert!(plan.drvs[graph.node_by_name("seed").unwrap()].env.is_empty(), "import builders get no env");
}
