//! Property tests of derivation hashing:
//! - the TOML layout (table order, key order, whitespace), the recipe's
//!   location, its description and its [requirements] never change the drv hash;
//! - every meaningful field change does;
//! - the canonical encoding round-trips (which makes it injective).

use std::collections::BTreeMap;
use std::fs;
use std::path::Path;

use forge::derivation::{plan, Builder, Derivation, Input, InputId, SourceRef};
use forge::graph::Graph;
use forge::hash::{Checksum, Digest};
use forge::recipe::load;
use proptest::prelude::*;

#[derive(Clone, Debug)]
struct RecipeSpec {
    name: String,
    version: String,
    script: String,
    shell: Option<Vec<String>>,
    env: BTreeMap<String, String>,
    sources: Vec<[u8; 32]>,
    depends_on_base: bool,
}

/// How to lay one recipe out as TOML: what varies must not matter.
#[derive(Clone, Debug)]
struct Layout {
    order: Vec<u32>,
    description: Option<String>,
    memory: Option<u32>,
    timeout: Option<u32>,
    subdir: String,
}

fn toml_string(s: &str) -> String {
    toml::Value::String(s.to_string()).to_string()
}

fn spec() -> impl Strategy<Value = RecipeSpec> {
    (
        "p-[a-z0-9]{1,8}",
        "[0-9]{1,2}\\.[0-9]{1,2}(-r[0-9])?",
        any::<String>(),
        proptest::option::of(proptest::collection::vec("[ -~]{0,6}", 1..4)),
        proptest::collection::btree_map("[A-Z][A-Z0-9_]{0,7}", any::<String>(), 0..5)
            .prop_filter("FORGE_* is reserved", |env| env.keys().all(|k| !k.starts_with("FORGE_"))),
        proptest::collection::vec(any::<[u8; 32]>(), 0..3),
        any::<bool>(),
    )
        .prop_map(|(name, version, script, shell, env, sources, depends_on_base)| RecipeSpec {
            name,
            version,
            script,
            shell,
            env,
            sources,
            depends_on_base,
        })
}

fn layout() -> impl Strategy<Value = Layout> {
    (
        proptest::collection::vec(any::<u32>(), 64),
        proptest::option::of("[ -~]{0,20}"),
        proptest::option::of(1u32..100_000),
        proptest::option::of(1u32..100_000),
        "[a-z]{1,6}(/[a-z]{1,6})?",
    )
        .prop_map(|(order, description, memory, timeout, subdir)| Layout { order, description, memory, timeout, subdir })
}

/// Render `spec` as TOML, tables and keys in the order `layout.order` picks;
/// the `[[source]]` entries keep their relative order (it is meaningful).
fn render(spec: &RecipeSpec, layout: &Layout) -> String {
    let mut keys = layout.order.iter().copied().cycle();
    let mut shuffled = |mut lines: Vec<String>| {
        let mut keyed: Vec<(u32, String)> = lines.drain(..).map(|l| (keys.next().unwrap_or(0), l)).collect();
        keyed.sort();
        keyed.into_iter().map(|(_, l)| l).collect::<Vec<_>>()
    };
    let mut package = vec![format!("name = {}", toml_string(&spec.name)), format!("version = {}", toml_string(&spec.version))];
    if let Some(d) = &layout.description {
        package.push(format!("description = {}", toml_string(d)));
    }
    let mut build = vec![format!("script = {}", toml_string(&spec.script))];
    if let Some(shell) = &spec.shell {
        let args: Vec<String> = shell.iter().map(|a| toml_string(a)).collect();
        build.push(format!("shell = [{}]", args.join(", ")));
    }
    let mut tables: Vec<(String, Vec<String>)> = vec![("[package]".into(), shuffled(package)), ("[build]".into(), shuffled(build))];
    if !spec.env.is_empty() {
        let env = spec.env.iter().map(|(k, v)| format!("{k} = {}", toml_string(v))).collect();
        tables.push(("[env]".into(), shuffled(env)));
    }
    if spec.depends_on_base {
        tables.push(("[deps]".into(), shuffled(vec!["build = [\"base\"]".into(), "runtime = []".into()])));
    }
    let mut requirements = Vec::new();
    if let Some(m) = layout.memory {
        requirements.push(format!("memory = \"{m}M\""));
    }
    if let Some(t) = layout.timeout {
        requirements.push(format!("timeout = {t}"));
    }
    if !requirements.is_empty() {
        tables.push(("[requirements]".into(), shuffled(requirements)));
    }
    let source_slots: Vec<(String, Vec<String>)> = spec
        .sources
        .iter()
        .enumerate()
        .map(|(i, sha)| {
            let lines = vec![
                format!("url = \"https://example.org/src-{i}.tar.gz\""),
                format!("sha256 = \"{}\"", forge::hash::hex(sha)),
            ];
            ("[[source]]".into(), shuffled(lines))
        })
        .collect();
    tables.extend(source_slots.iter().cloned());
    let mut order: Vec<(u32, (String, Vec<String>))> = tables.into_iter().map(|t| (keys.next().unwrap_or(0), t)).collect();
    order.sort_by_key(|(k, _)| *k);
    // Put the [[source]] entries back in their original relative order.
    let mut sources = source_slots.into_iter();
    let mut text = String::new();
    for (_, (header, lines)) in order {
        let (header, lines) = if header == "[[source]]" { sources.next().unwrap_or((header, lines)) } else { (header, lines) };
        text.push_str(&format!("\n{header}\n{}\n", lines.join("\n")));
    }
    text
}

/// Write `spec` (and the `base` recipe it may depend on) under `dir` and return its drv hash.
fn drv_hash(dir: &Path, spec: &RecipeSpec, layout: &Layout) -> Digest {
    let recipe_dir = dir.join(&layout.subdir);
    fs::create_dir_all(&recipe_dir).unwrap();
    let base = dir.join("base.toml");
    fs::write(&base, "[package]\nname = \"base\"\nversion = \"1\"\n[import]\n").unwrap();
    let file = recipe_dir.join("recipe.toml");
    let text = render(spec, layout);
    fs::write(&file, &text).unwrap();
    let loaded = load(&[base, file]).unwrap_or_else(|e| panic!("{e}\n--- recipe ---\n{text}"));
    let graph = Graph::resolve(loaded).unwrap();
    let plan = plan(&graph).unwrap();
    plan.drv_hashes[graph.node_by_name(&spec.name).unwrap()]
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(96))]

    #[test]
    fn layout_location_description_and_requirements_do_not_change_the_hash(
        spec in spec(), a in layout(), b in layout()
    ) {
        let dir_a = tempfile::tempdir().unwrap();
        let dir_b = tempfile::tempdir().unwrap();
        prop_assert_eq!(drv_hash(dir_a.path(), &spec, &a), drv_hash(dir_b.path(), &spec, &b));
    }

    #[test]
    fn recipe_changes_change_the_hash(spec in spec(), layout in layout(), change in 0..5usize) {
        let mut changed = spec.clone();
        match change {
            0 => changed.script.push('x'),
            1 => changed.version.push_str(".1"),
            2 => changed.name.push('x'),
            3 => changed.env.insert("ADDED_BY_TEST".into(), String::new()).map_or((), |_| ()),
            _ => changed.depends_on_base = !changed.depends_on_base,
        }
        let dir = tempfile::tempdir().unwrap();
        let other = tempfile::tempdir().unwrap();
        prop_assert_ne!(drv_hash(dir.path(), &spec, &layout), drv_hash(other.path(), &changed, &layout));
    }
}

fn derivation() -> impl Strategy<Value = Derivation> {
    let builder = prop_oneof![
        (proptest::collection::vec(any::<String>(), 1..4), any::<String>())
            .prop_map(|(shell, script)| Builder::Script { shell, script }),
        any::<bool>().prop_map(|unpack| Builder::Import { unpack }),
    ];
    let checksum = prop_oneof![
        any::<[u8; 32]>().prop_map(Checksum::Sha256),
        any::<[u8; 16]>().prop_map(Checksum::Md5),
        any::<[u8; 32]>().prop_map(|b| Checksum::Blake3(Digest(b))),
    ];
    let source = (any::<String>(), checksum).prop_map(|(filename, checksum)| SourceRef { filename, checksum });
    let input = (any::<String>(), any::<[u8; 32]>(), any::<bool>(), location()).prop_map(|(name, d, drv, at)| Input {
        name,
        id: if drv { InputId::Drv(Digest(d)) } else { InputId::Out(Digest(d)) },
        at: at.into(),
    });
    (
        any::<String>(),
        any::<String>(),
        any::<String>(),
        builder,
        proptest::collection::btree_map(any::<String>(), any::<String>(), 0..4),
        proptest::collection::vec(source, 1..3),
        proptest::collection::vec(input, 1..4),
    )
        .prop_map(|(name, version, system, builder, env, sources, inputs)| Derivation {
            name,
            version,
            system,
            builder,
            env,
            sources,
            inputs,
        })
}

/// A valid staging location: `/` or up to two plain segments.
fn location() -> impl Strategy<Value = String> {
    "(/[a-z0-9_+-]{1,6}){0,2}".prop_map(|s| if s.is_empty() { "/".to_string() } else { s })
}

/// Change one meaningful field of `drv`, always to a different value.
fn mutate(drv: &mut Derivation, which: usize, pick: usize) {
    let flip = |d: &mut [u8]| d[pick % d.len()] ^= 1;
    match which {
        0 => match &mut drv.builder {
            Builder::Script { script, .. } => script.push('\n'),
            Builder::Import { unpack } => *unpack = !*unpack,
        },
        1 => match &mut drv.builder {
            Builder::Script { shell, .. } => {
                let i = pick % shell.len();
                shell[i].push('x')
            }
            Builder::Import { .. } => drv.builder = Builder::Script { shell: vec![], script: String::new() },
        },
        2 => {
            let key = drv.env.keys().nth(pick % drv.env.len().max(1)).cloned().unwrap_or_default();
            drv.env.entry(key).or_default().push('x');
        }
        3 => {
            let n = drv.inputs.len();
            match &mut drv.inputs[pick % n].id {
                InputId::Drv(d) | InputId::Out(d) => flip(&mut d.0),
            }
        }
        4 => {
            let n = drv.sources.len();
            match &mut drv.sources[pick % n].checksum {
                Checksum::Sha256(b) => flip(b),
                Checksum::Md5(b) => flip(b),
                Checksum::Blake3(d) => flip(&mut d.0),
            }
        }
        5 => drv.version.push('x'),
        6 => drv.name.push('x'),
        7 => drv.system.push('x'),
        8 => {
            let n = drv.inputs.len();
            drv.inputs[pick % n].name.push('x');
        }
        9 => {
            let n = drv.inputs.len();
            let at = &mut drv.inputs[pick % n].at;
            *at = if at.as_os_str() == "/" { "/x".into() } else { at.join("x") };
        }
        _ => {
            let n = drv.sources.len();
            drv.sources[pick % n].filename.push('x');
        }
    }
}

proptest! {
    #[test]
    fn canonical_bytes_round_trip(drv in derivation()) {
        let bytes = drv.canonical_bytes();
        prop_assert_eq!(Derivation::from_canonical(&bytes).unwrap(), drv);
    }

    #[test]
    fn any_field_change_changes_the_hash(drv in derivation(), which in 0..11usize, pick in any::<usize>()) {
        let mut changed = drv.clone();
        mutate(&mut changed, which, pick);
        prop_assert_ne!(&changed, &drv);
        prop_assert_ne!(changed.hash(), drv.hash());
    }
}

/// The drv hash of `app`, which build-depends on `base` written as `dep` (a TOML value).
fn staged_app_hash(dep: &str) -> Digest {
    let dir = tempfile::tempdir().unwrap();
    let base = "[package]\nname = \"base\"\nversion = \"1\"\n[build]\nscript = \"true\"\n";
    let app = format!("[package]\nname = \"app\"\nversion = \"1\"\n[deps]\nbuild = [{dep}]\n[build]\nscript = \"true\"\n");
    fs::write(dir.path().join("base.toml"), base).unwrap();
    fs::write(dir.path().join("app.toml"), app).unwrap();
    let files = [dir.path().join("base.toml"), dir.path().join("app.toml")];
    let graph = Graph::resolve(load(&files).unwrap()).unwrap();
    let planned = plan(&graph).unwrap();
    planned.drv_hashes[graph.node_by_name("app").unwrap()]
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(24))]

    /// Through the whole loader: where a dependency is staged is part of the
    /// dependent's identity; `at = "/"` is the same as a plain name.
    #[test]
    fn changing_at_changes_the_hash(a in location(), b in location()) {
        let table = |at: &str| format!("{{ name = \"base\", at = \"{at}\" }}");
        let (hash_a, hash_b) = (staged_app_hash(&table(&a)), staged_app_hash(&table(&b)));
        if a == b {
            prop_assert_eq!(hash_a, hash_b);
        } else {
            prop_assert_ne!(hash_a, hash_b);
        }
        if a == "/" {
            prop_assert_eq!(hash_a, staged_app_hash("\"base\""));
        }
    }
}

#[test]
fn render_really_permutes_tables_and_keys() {
    let spec = RecipeSpec {
        name: "p-x".into(),
        version: "1.0".into(),
        script: "make".into(),
        shell: Some(vec!["/bin/sh".into(), "-c".into()]),
        env: BTreeMap::from([("A".into(), "1".into()), ("B".into(), "2".into())]),
        sources: vec![[1; 32], [2; 32]],
        depends_on_base: true,
    };
    let forward = Layout { order: (0..64).collect(), description: None, memory: None, timeout: None, subdir: "a".into() };
    let backward = Layout { order: (0..64).rev().collect(), description: Some("d".into()), memory: Some(5), timeout: Some(9), subdir: "b/c".into() };
    let (a, b) = (render(&spec, &forward), render(&spec, &backward));
    assert!(a.find("[package]") < a.find("[build]") && b.find("[package]") > b.find("[build]"), "{a}\n{b}");
    assert!(a.find("name =") < a.find("version =") && b.find("name =") > b.find("version ="), "{a}\n{b}");
    assert!(b.find("src-0") < b.find("src-1"), "source order is kept: {b}");
    let (dir_a, dir_b) = (tempfile::tempdir().unwrap(), tempfile::tempdir().unwrap());
    assert_eq!(drv_hash(dir_a.path(), &spec, &forward), drv_hash(dir_b.path(), &spec, &backward));
}
