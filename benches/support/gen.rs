//! Generated recipe graphs for the benchmarks: a layered DAG in which every node depends on
//! 2-5 nodes of earlier layers (half of them on the layer just below, the rest anywhere
//! earlier; about one edge in four is a runtime dependency), written as one recipe file per
//! node plus a set including them all. Deterministic: the same node count gives the same files.
//!
//! Two kinds:
//! - [`Kind::Build`]: what a distribution's recipes look like: a pinned tarball (`url` +
//!   `sha256`, never fetched, planning does not need it), a small patch (`file` source, tree-
//!   hashed when planning), a few `[env]` keys, a configure/make script, requirements, and a
//!   build dependency on `seed`. Plannable, not buildable (the tarballs do not exist).
//! - [`Kind::Import`]: `[import] unpack = false` recipes with one tiny `file` source, same DAG.
//!   Realising one needs no sandbox and no network, so a 10,000-node store can be filled in
//!   about a minute for the no-op rebuild figure.

#![allow(dead_code)]

use std::fmt::Write as _;
use std::fs;
use std::io;
use std::path::{Path, PathBuf};

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Kind {
    Build,
    Import,
}

/// What was generated: the set file to hand to forge, and the graph's shape.
pub struct Generated {
    pub set: PathBuf,
    pub nodes: usize,
    pub layers: usize,
    pub edges: usize,
    pub runtime_edges: usize,
}

/// splitmix64: small, deterministic, good enough to spread dependencies.
struct Rng(u64);

impl Rng {
    fn next(&mut self) -> u64 {
        self.0 = self.0.wrapping_add(0x9e37_79b9_7f4a_7c15);
        let mut z = self.0;
        z = (z ^ (z >> 30)).wrapping_mul(0xbf58_476d_1ce4_e5b9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94d0_49bb_1331_11eb);
        z ^ (z >> 31)
    }
    fn below(&mut self, n: usize) -> usize {
        (self.next() % n as u64) as usize
    }
}

fn name(i: usize) -> String {
    format!("pkg-{i:05}")
}

/// About sqrt(n)/2.5 layers: 13 for 1,000 nodes, 40 for 10,000 (250 nodes wide).
fn layer_count(nodes: usize) -> usize {
    (((nodes as f64).sqrt() / 2.5).round() as usize).max(2)
}

/// Write `nodes` recipes of `kind` under `dir` (created) and a set `dir/all.toml` including
/// them. `repo` is the forge checkout, whose `toolchain/` seeds the Build kind includes.
pub fn write_graph(dir: &Path, nodes: usize, kind: Kind, repo: &Path) -> io::Result<Generated> {
    let layers = layer_count(nodes);
    let width = nodes.div_ceil(layers);
    fs::create_dir_all(dir.join("pkgs"))?;
    fs::create_dir_all(dir.join("files"))?;
    let mut rng = Rng(0x666f_7267_6562_656e ^ nodes as u64);
    let (mut edges, mut runtime_edges) = (0, 0);
    for i in 0..nodes {
        let layer = i / width;
        let (build, runtime) = pick_deps(&mut rng, layer, width);
        edges += build.len() + runtime.len();
        runtime_edges += runtime.len();
        let file_source = dir.join("files").join(format!("{}.patch", name(i)));
        fs::write(&file_source, patch_text(i, &mut rng))?;
        let text = match kind {
            Kind::Build => build_recipe(i, layer, &build, &runtime, &mut rng),
            Kind::Import => import_recipe(i, layer, &build, &runtime),
        };
        fs::write(dir.join("pkgs").join(format!("{}.toml", name(i))), text)?;
    }
    let mut include = vec!["\"pkgs/*.toml\"".to_string()];
    if kind == Kind::Build {
        for seed in ["toolchain/busybox-static.toml", "toolchain/seed.toml"] {
            include.push(format!("{:?}", repo.join(seed).display().to_string()));
        }
    }
    let set = dir.join("all.toml");
    fs::write(&set, format!("[set]\nname = \"bench-{nodes}\"\ninclude = [{}]\n", include.join(", ")))?;
    Ok(Generated { set, nodes, layers, edges, runtime_edges })
}

/// 2-5 distinct dependencies on earlier layers, split into (build, runtime).
fn pick_deps(rng: &mut Rng, layer: usize, width: usize) -> (Vec<String>, Vec<String>) {
    if layer == 0 {
        return (Vec::new(), Vec::new());
    }
    let want = 2 + rng.below(4);
    let mut picked: Vec<usize> = Vec::new();
    while picked.len() < want {
        let from_layer = if rng.below(2) == 0 { layer - 1 } else { rng.below(layer) };
        let dep = from_layer * width + rng.below(width);
        if !picked.contains(&dep) {
            picked.push(dep);
        }
    }
    picked.sort_unstable();
    let (mut build, mut runtime) = (Vec::new(), Vec::new());
    for dep in picked {
        if rng.below(4) == 0 { runtime.push(name(dep)) } else { build.push(name(dep)) }
    }
    (build, runtime)
}

fn quoted(names: &[String]) -> String {
    names.iter().map(|n| format!("{n:?}")).collect::<Vec<_>>().join(", ")
}

fn patch_text(i: usize, rng: &mut Rng) -> String {
    format!(
        "--- a/src/main.c\n+++ b/src/main.c\n@@ -1,3 +1,3 @@\n #include <stdio.h>\n-#define BUFSZ 512\n+#define BUFSZ {}\n /* {} */\n",
        1024 << (i % 4),
        rng.next()
    )
}

fn build_recipe(i: usize, layer: usize, build: &[String], runtime: &[String], rng: &mut Rng) -> String {
    let n = name(i);
    let version = format!("{}.{}.{}", 1 + i % 3, i % 17, i % 5);
    let mut sha = String::new();
    for _ in 0..4 {
        let _ = write!(sha, "{:016x}", rng.next());
    }
    let mut build_deps = vec!["\"seed\"".to_string()];
    if !build.is_empty() {
        build_deps.push(quoted(build));
    }
    format!(
        r#"[package]
name = "{n}"
version = "{version}"
description = "Generated benchmark package {i} (layer {layer})"

[[source]]
url = "https://example.org/dist/{n}/{n}-{version}.tar.gz"
sha256 = "{sha}"

[[source]]
file = "../files/{n}.patch"

[deps]
build = [{build_deps}]
runtime = [{runtime}]

[env]
CFLAGS = "-O2 -pipe -fstack-protector-strong"
PREFIX = "/usr"
{n_upper}_FEATURES = "{features}"

[build]
script = '''
tar -xf "$FORGE_SOURCES/{n}-{version}.tar.gz"
cd {n}-{version}
patch -p1 < "$FORGE_SOURCES/{n}.patch"
./configure --prefix="$PREFIX" --disable-static CFLAGS="$CFLAGS" --with-features="${n_upper}_FEATURES"
make -j"$FORGE_JOBS"
make DESTDIR="$FORGE_OUT" install
rm -rf "$FORGE_OUT/usr/share/doc"
'''

[requirements]
memory = "{mem}M"
timeout = "30m"
"#,
        build_deps = build_deps.join(", "),
        runtime = quoted(runtime),
        n_upper = n.replace('-', "_").to_uppercase(),
        features = ["ssl,zlib", "nls", "threads,ipv6", "none"][i % 4],
        mem = 256 << (i % 3),
    )
}

fn import_recipe(i: usize, layer: usize, build: &[String], runtime: &[String]) -> String {
    let n = name(i);
    format!(
        r#"[package]
name = "{n}"
version = "1.{i}"
description = "Generated benchmark import {i} (layer {layer})"

[[source]]
file = "../files/{n}.patch"

[deps]
build = [{build}]
runtime = [{runtime}]

[import]
unpack = false
"#,
        build = quoted(build),
        runtime = quoted(runtime),
    )
}
