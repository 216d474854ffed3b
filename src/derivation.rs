//! Derivations: the canonical, versioned description of one build, and its hashes.
//!
//! Owner of the canonical derivation encoding (`forge-drv-v1`, docs/derivations.md).
//! - drv hash: BLAKE3 of the canonical bytes with inputs named by their drv hashes;
//! - resolved key: BLAKE3 of the canonical bytes with inputs named by their out hashes.
//!
//! The encoding is a canonical JSON text: UTF-8, no whitespace, only strings,
//! arrays and objects, a fixed set of keys per object written in bytewise
//! order except `format`, which always comes first. Parsing re-encodes and
//! compares, so only canonical bytes are ever accepted.

use std::collections::{BTreeMap, HashMap};
use std::path::{Path, PathBuf};

use rayon::prelude::*;
use serde::Deserialize;

use crate::graph::{Graph, Node, NodeId, Staged};
use crate::hash::{Checksum, Digest};
use crate::recipe::{stage, Action, SourceKind};

pub const DRV_FORMAT: &str = "forge-drv-v1";

/// The build environment every `[build]` derivation starts from; the recipe's
/// `[env]` may override these five.
pub const DEFAULT_ENV: [(&str, &str); 5] = [
    ("PATH", "/usr/local/bin:/usr/bin:/bin:/usr/local/sbin:/usr/sbin:/sbin"),
    ("HOME", "/homeless"),
    ("TZ", "UTC"),
    ("LC_ALL", "C"),
    ("SOURCE_DATE_EPOCH", "315532800"),
];
/// Where the sandbox mounts the output directory and the sources.
pub const FORGE_OUT: &str = "/forge/out";
pub const FORGE_SOURCES: &str = "/forge/sources";

#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Derivation {
    pub name: String,
    pub version: String,
    /// `x86_64-linux` (from the host architecture).
    pub system: String,
    pub builder: Builder,
    /// The complete build environment except `FORGE_JOBS` (varies with -j, not hashed).
    pub env: BTreeMap<String, String>,
    /// Recipe order.
    pub sources: Vec<SourceRef>,
    /// = `graph.input_closure(node)`, same order.
    pub inputs: Vec<Input>,
}

#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Builder {
    Script { shell: Vec<String>, script: String },
    Import { unpack: bool },
}

#[derive(Clone, Debug, PartialEq, Eq)]
pub struct SourceRef {
    pub filename: String,
    pub checksum: Checksum,
}

#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Input {
    pub name: String,
    pub id: InputId,
    /// Where the input's output is placed in the sandbox: a valid
    /// [`crate::recipe::stage`] location, `/` unless the recipe staged it elsewhere.
    /// Encoded only when not `/`, so unstaged derivations hash as before.
    pub at: PathBuf,
}

impl Input {
    /// An input placed at the sandbox root.
    pub fn at_root(name: impl Into<String>, id: InputId) -> Input {
        Input { name: name.into(), id, at: PathBuf::from(stage::ROOT) }
    }
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum InputId {
    Drv(Digest),
    Out(Digest),
}

#[derive(Debug, thiserror::Error)]
pub enum DerivationError {
    #[error("package {package:?}: cannot hash `file` source {}: {source}", path.display())]
    SourceHash { package: String, path: PathBuf, source: Box<dyn std::error::Error + Send + Sync> },
    #[error("derivation of {package:?} has {expected} inputs but {got} output hashes were given")]
    InputCount { package: String, expected: usize, got: usize },
    /// Only for hand-built recipes: the loader requires checksums on url/deb sources.
    #[error("package {package:?}: source {filename:?} has no checksum")]
    MissingChecksum { package: String, filename: String },
    #[error("not a forge derivation: {0}")]
    Malformed(String),
    #[error("unsupported derivation format {found:?}: this forge reads {DRV_FORMAT}")]
    UnsupportedFormat { found: String },
    #[error("derivation bytes are not in canonical form (whitespace, key order or escaping differ)")]
    NotCanonical,
}

impl Derivation {
    /// The canonical encoding (docs/derivations.md): what every hash is taken of.
    pub fn canonical_bytes(&self) -> Vec<u8> {
        let mut out = Vec::with_capacity(512 + self.env.len() * 64 + self.inputs.len() * 100);
        out.extend_from_slice(b"{\"format\":");
        push_string(&mut out, DRV_FORMAT);
        out.extend_from_slice(b",\"builder\":");
        match &self.builder {
            Builder::Script { shell, script } => {
                out.extend_from_slice(b"{\"script\":");
                push_string(&mut out, script);
                out.extend_from_slice(b",\"shell\":");
                push_array(&mut out, shell, |out, arg| push_string(out, arg));
                out.extend_from_slice(b",\"type\":\"script\"}");
            }
            Builder::Import { unpack } => {
                out.extend_from_slice(b"{\"type\":\"import\",\"unpack\":");
                push_string(&mut out, if *unpack { "true" } else { "false" });
                out.push(b'}');
            }
        }
        out.extend_from_slice(b",\"env\":{");
        for (i, (key, value)) in self.env.iter().enumerate() {
            if i > 0 {
                out.push(b',');
            }
            push_string(&mut out, key);
            out.push(b':');
            push_string(&mut out, value);
        }
        out.extend_from_slice(b"},\"inputs\":");
        push_array(&mut out, &self.inputs, |out, input| {
            let (key, digest) = match input.id {
                InputId::Drv(d) => ("drv", d),
                InputId::Out(d) => ("out", d),
            };
            // Keys in bytewise order: "at" < "drv" < "name" < "out"; `at` only when not `/`.
            out.push(b'{');
            if input.at != Path::new(stage::ROOT) {
                out.extend_from_slice(b"\"at\":");
                // Valid locations are UTF-8 (they come from TOML strings).
                push_string(out, &input.at.to_string_lossy());
                out.push(b',');
            }
            if key == "drv" {
                out.extend_from_slice(b"\"drv\":");
                push_digest(out, &digest);
                out.extend_from_slice(b",\"name\":");
                push_string(out, &input.name);
            } else {
                out.extend_from_slice(b"\"name\":");
                push_string(out, &input.name);
                out.extend_from_slice(b",\"out\":");
                push_digest(out, &digest);
            }
            out.push(b'}');
        });
        out.extend_from_slice(b",\"name\":");
        push_string(&mut out, &self.name);
        out.extend_from_slice(b",\"sources\":");
        push_array(&mut out, &self.sources, |out, source| {
            out.extend_from_slice(b"{\"checksum\":");
            push_string(out, &source.checksum.to_string());
            out.extend_from_slice(b",\"filename\":");
            push_string(out, &source.filename);
            out.push(b'}');
        });
        out.extend_from_slice(b",\"system\":");
        push_string(&mut out, &self.system);
        out.extend_from_slice(b",\"version\":");
        push_string(&mut out, &self.version);
        out.push(b'}');
        out
    }

    /// BLAKE3 of the canonical bytes: the drv hash when inputs are `Drv`, the
    /// resolved key when they are `Out`.
    pub fn hash(&self) -> Digest {
        Digest::of(&self.canonical_bytes())
    }

    /// The same derivation with input `i` named by `outs[i]` (its out hash).
    pub fn resolve(&self, outs: &[Digest]) -> Result<Derivation, DerivationError> {
        if outs.len() != self.inputs.len() {
            return Err(DerivationError::InputCount {
                package: self.name.clone(),
                expected: self.inputs.len(),
                got: outs.len(),
            });
        }
        let inputs = self
            .inputs
            .iter()
            .zip(outs)
            .map(|(input, out)| Input { id: InputId::Out(*out), ..input.clone() })
            .collect();
        Ok(Derivation { inputs, ..self.clone() })
    }

    /// The resolved key: the hash of [`Derivation::resolve`]`(outs)`.
    pub fn resolved_key(&self, outs: &[Digest]) -> Result<Digest, DerivationError> {
        Ok(self.resolve(outs)?.hash())
    }

    /// Parse canonical bytes (as stored in the store). Anything that is not
    /// exactly what [`Derivation::canonical_bytes`] would write is rejected.
    pub fn from_canonical(bytes: &[u8]) -> Result<Derivation, DerivationError> {
        let raw: RawDerivation =
            serde_json::from_slice(bytes).map_err(|e| DerivationError::Malformed(e.to_string()))?;
        if raw.format != DRV_FORMAT {
            return Err(DerivationError::UnsupportedFormat { found: raw.format });
        }
        let drv = raw.into_derivation()?;
        if drv.canonical_bytes() != bytes {
            return Err(DerivationError::NotCanonical);
        }
        Ok(drv)
    }
}

fn push_array<T>(out: &mut Vec<u8>, items: &[T], mut push_item: impl FnMut(&mut Vec<u8>, &T)) {
    out.push(b'[');
    for (i, item) in items.iter().enumerate() {
        if i > 0 {
            out.push(b',');
        }
        push_item(out, item);
    }
    out.push(b']');
}

/// A JSON string: `"` and `\` escaped, control characters as `\b \t \n \f \r`
/// or `\u00xx` (lowercase hex), everything else as raw UTF-8.
fn push_string(out: &mut Vec<u8>, s: &str) {
    out.push(b'"');
    let bytes = s.as_bytes();
    let mut plain_from = 0;
    for (i, &b) in bytes.iter().enumerate() {
        let escape: &[u8] = match b {
            b'"' => b"\\\"",
            b'\\' => b"\\\\",
            0x08 => b"\\b",
            b'\t' => b"\\t",
            b'\n' => b"\\n",
            0x0c => b"\\f",
            b'\r' => b"\\r",
            0..=0x1f => b"",
            _ => continue,
        };
        out.extend_from_slice(&bytes[plain_from..i]);
        plain_from = i + 1;
        if escape.is_empty() {
            out.extend_from_slice(format!("\\u{b:04x}").as_bytes());
        } else {
            out.extend_from_slice(escape);
        }
    }
    out.extend_from_slice(&bytes[plain_from..]);
    out.push(b'"');
}

/// A digest as a JSON string of lowercase hex, without an intermediate String.
fn push_digest(out: &mut Vec<u8>, digest: &Digest) {
    const DIGITS: &[u8; 16] = b"0123456789abcdef";
    out.push(b'"');
    for b in digest.0 {
        out.push(DIGITS[(b >> 4) as usize]);
        out.push(DIGITS[(b & 15) as usize]);
    }
    out.push(b'"');
}

// ---------------------------------------------------------------------------
// Parsing back.

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct RawDerivation {
    format: String,
    builder: RawBuilder,
    env: BTreeMap<String, String>,
    inputs: Vec<RawInput>,
    name: String,
    sources: Vec<RawSourceRef>,
    system: String,
    version: String,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct RawBuilder {
    #[serde(rename = "type")]
    kind: String,
    script: Option<String>,
    shell: Option<Vec<String>>,
    unpack: Option<String>,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct RawInput {
    at: Option<String>,
    name: String,
    drv: Option<String>,
    out: Option<String>,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct RawSourceRef {
    checksum: String,
    filename: String,
}

impl RawDerivation {
    fn into_derivation(self) -> Result<Derivation, DerivationError> {
        let malformed = |what: String| DerivationError::Malformed(what);
        let builder = match (self.builder.kind.as_str(), self.builder.script, self.builder.shell, self.builder.unpack) {
            ("script", Some(script), Some(shell), None) => Builder::Script { shell, script },
            ("import", None, None, Some(unpack)) => match unpack.as_str() {
                "true" => Builder::Import { unpack: true },
                "false" => Builder::Import { unpack: false },
                other => return Err(malformed(format!("builder unpack {other:?} is not \"true\" or \"false\""))),
            },
            (kind, ..) => return Err(malformed(format!("builder of type {kind:?} with the wrong fields"))),
        };
        let parse_digest = |hex: &str| hex.parse::<Digest>().map_err(|e| malformed(e.to_string()));
        let inputs = self
            .inputs
            .into_iter()
            .map(|input| {
                let id = match (input.drv, input.out) {
                    (Some(drv), None) => InputId::Drv(parse_digest(&drv)?),
                    (None, Some(out)) => InputId::Out(parse_digest(&out)?),
                    _ => return Err(malformed(format!("input {:?} needs exactly one of drv, out", input.name))),
                };
                let at = input.at.unwrap_or_else(|| stage::ROOT.to_string());
                if let Some(reason) = stage::problem(&at) {
                    return Err(malformed(format!("input {:?} at {at:?}: {reason}", input.name)));
                }
                Ok(Input { name: input.name, id, at: PathBuf::from(at) })
            })
            .collect::<Result<_, _>>()?;
        let sources = self
            .sources
            .into_iter()
            .map(|source| {
                let (algorithm, hex) = source
                    .checksum
                    .split_once(':')
                    .filter(|(algorithm, _)| matches!(*algorithm, "sha256" | "md5" | "blake3"))
                    .ok_or_else(|| malformed(format!("bad checksum {:?}", source.checksum)))?;
                let checksum = Checksum::parse(algorithm, hex).map_err(|e| malformed(e.to_string()))?;
                Ok(SourceRef { filename: source.filename, checksum })
            })
            .collect::<Result<_, _>>()?;
        Ok(Derivation {
            name: self.name,
            version: self.version,
            system: self.system,
            builder,
            env: self.env,
            sources,
            inputs,
        })
    }
}

// ---------------------------------------------------------------------------
// Planning: every node's derivation and drv hash.

/// The derivations of a whole graph, indexed by [`NodeId`].
#[derive(Debug)]
pub struct Plan {
    pub drvs: Vec<Derivation>,
    pub drv_hashes: Vec<Digest>,
    /// `closures[id][k]` is the node of `drvs[id].inputs[k]`: the nodes of
    /// `graph.staged_closure(id)`, so a node staged at two places appears twice.
    pub closures: Vec<Vec<NodeId>>,
}

/// The system string derivations are built for, e.g. `x86_64-linux`.
pub fn host_system() -> String {
    format!("{}-linux", std::env::consts::ARCH)
}

/// Compute every derivation and drv hash. `file` sources are tree-hashed in
/// parallel first; then nodes are hashed level by level (a node's level is one
/// more than its deepest dependency's), each level in parallel.
pub fn plan(graph: &Graph) -> Result<Plan, DerivationError> {
    let file_hashes = hash_file_sources(graph)?;
    let staged: Vec<Vec<Staged>> = (0..graph.nodes.len()).into_par_iter().map(|id| graph.staged_closure(id)).collect();
    let system = host_system();
    let mut drvs: Vec<Option<Derivation>> = vec![None; graph.nodes.len()];
    let mut drv_hashes: Vec<Option<Digest>> = vec![None; graph.nodes.len()];
    for level in levels(graph) {
        let done: Vec<(NodeId, Derivation, Digest)> = level
            .par_iter()
            .map(|&id| {
                let inputs = staged[id]
                    .iter()
                    .map(|input| Input {
                        name: graph.nodes[input.node].recipe.name.clone(),
                        // Every input sits on an earlier level, so its hash is known.
                        id: InputId::Drv(drv_hashes[input.node].unwrap_or(Digest([0; 32]))),
                        at: input.at.to_path_buf(),
                    })
                    .collect();
                let drv = derivation_of(&graph.nodes[id], &system, &file_hashes, inputs)?;
                let hash = drv.hash();
                Ok((id, drv, hash))
            })
            .collect::<Result<_, DerivationError>>()?;
        for (id, drv, hash) in done {
            drvs[id] = Some(drv);
            drv_hashes[id] = Some(hash);
        }
    }
    Ok(Plan {
        drvs: drvs.into_iter().flatten().collect(),
        drv_hashes: drv_hashes.into_iter().flatten().collect(),
        closures: staged.into_iter().map(|inputs| inputs.into_iter().map(|input| input.node).collect()).collect(),
    })
}

/// Nodes grouped by depth: level 0 has no dependencies, level k+1 depends on level k.
fn levels(graph: &Graph) -> Vec<Vec<NodeId>> {
    let mut depth = vec![0usize; graph.nodes.len()];
    let mut levels: Vec<Vec<NodeId>> = Vec::new();
    for &id in graph.topo_order() {
        let d = graph.nodes[id].deps().map(|dep| depth[dep] + 1).max().unwrap_or(0);
        depth[id] = d;
        if levels.len() <= d {
            levels.resize_with(d + 1, Vec::new);
        }
        levels[d].push(id);
    }
    levels
}

fn derivation_of(
    node: &Node,
    system: &str,
    file_hashes: &HashMap<&Path, Digest>,
    inputs: Vec<Input>,
) -> Result<Derivation, DerivationError> {
    let recipe = &node.recipe;
    let (builder, env) = match &recipe.action {
        Action::Build { script, shell } => (
            Builder::Script { shell: shell.clone(), script: script.clone() },
            build_env(&recipe.name, &recipe.version, &recipe.env),
        ),
        Action::Import { unpack } => (Builder::Import { unpack: *unpack }, BTreeMap::new()),
    };
    let sources = recipe
        .sources
        .iter()
        .map(|source| {
            let checksum = match (&source.kind, &source.checksum) {
                (_, Some(checksum)) => Some(checksum.clone()),
                (SourceKind::File { path }, None) => file_hashes.get(path.as_path()).map(|d| Checksum::Blake3(*d)),
                (_, None) => None,
            };
            let checksum = checksum.ok_or_else(|| DerivationError::MissingChecksum {
                package: recipe.name.clone(),
                filename: source.filename.clone(),
            })?;
            Ok(SourceRef { filename: source.filename.clone(), checksum })
        })
        .collect::<Result<_, _>>()?;
    Ok(Derivation {
        name: recipe.name.clone(),
        version: recipe.version.clone(),
        system: system.to_string(),
        builder,
        env,
        sources,
        inputs,
    })
}

/// The environment a `[build]` script sees (except `FORGE_JOBS`).
pub fn build_env(name: &str, version: &str, recipe_env: &BTreeMap<String, String>) -> BTreeMap<String, String> {
    let mut env: BTreeMap<String, String> = DEFAULT_ENV.iter().map(|(k, v)| (k.to_string(), v.to_string())).collect();
    // The loader rejects FORGE_* keys in [env]; skipping them here keeps the
    // invariant even for recipes built by hand.
    env.extend(recipe_env.iter().filter(|(k, _)| !k.starts_with("FORGE_")).map(|(k, v)| (k.clone(), v.clone())));
    env.insert("FORGE_OUT".into(), FORGE_OUT.into());
    env.insert("FORGE_SOURCES".into(), FORGE_SOURCES.into());
    env.insert("FORGE_NAME".into(), name.into());
    env.insert("FORGE_VERSION".into(), version.into());
    env
}

/// The BLAKE3 tree hash of every distinct `file` source path, computed in parallel.
fn hash_file_sources(graph: &Graph) -> Result<HashMap<&Path, Digest>, DerivationError> {
    let mut files: Vec<(&Path, &str)> = graph
        .nodes
        .iter()
        .flat_map(|node| node.recipe.sources.iter().map(move |s| (s, node.recipe.name.as_str())))
        .filter_map(|(source, package)| match &source.kind {
            SourceKind::File { path } => Some((path.as_path(), package)),
            _ => None,
        })
        .collect();
    files.sort();
    files.dedup_by(|a, b| a.0 == b.0);
    files
        .into_par_iter()
        .map(|(path, package)| match crate::tree::hash_path(path) {
            Ok(summary) => Ok((path, summary.digest)),
            Err(err) => Err(DerivationError::SourceHash {
                package: package.to_string(),
                path: path.to_path_buf(),
                source: Box::new(err),
            }),
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn sample() -> Derivation {
        Derivation {
            name: "hello".into(),
            version: "2.12".into(),
            system: "x86_64-linux".into(),
            builder: Builder::Script { shell: vec!["/bin/sh".into(), "-c".into()], script: "echo \"hi\"\n\tdone\u{1}".into() },
            env: build_env("hello", "2.12", &BTreeMap::from([("CFLAGS".into(), "-O2".into())])),
            sources: vec![SourceRef { filename: "hello.tar.gz".into(), checksum: Checksum::Md5([7; 16]) }],
            inputs: vec![
                Input::at_root("seed", InputId::Drv(Digest::of(b"seed"))),
                Input::at_root("zlib", InputId::Out(Digest::of(b"zlib"))),
            ],
        }
    }

    #[test]
    fn canonical_bytes_are_exact_json() {
        let drv = Derivation {
            name: "a".into(),
            version: "1".into(),
            system: "x86_64-linux".into(),
            builder: Builder::Import { unpack: false },
            env: BTreeMap::new(),
            sources: vec![],
            inputs: vec![],
        };
        assert_eq!(
            String::from_utf8(drv.canonical_bytes()).unwrap(),
            r#"{"format":"forge-drv-v1","builder":{"type":"import","unpack":"false"},"env":{},"inputs":[],"name":"a","sources":[],"system":"x86_64-linux","version":"1"}"#
        );
    }

    #[test]
    fn strings_are_escaped_like_json() {
        let mut out = Vec::new();
        push_string(&mut out, "a\"b\\c\nd\u{1f}é\u{7f}");
        assert_eq!(String::from_utf8(out).unwrap(), "\"a\\\"b\\\\c\\nd\\u001fé\u{7f}\"");
    }

    #[test]
    fn canonical_bytes_round_trip() {
        let drv = sample();
        let bytes = drv.canonical_bytes();
        assert_eq!(Derivation::from_canonical(&bytes).unwrap(), drv);
        let value: serde_json::Value = serde_json::from_slice(&bytes).unwrap();
        assert_eq!(value["inputs"][1]["out"], Digest::of(b"zlib").to_hex());
    }

    #[test]
    fn non_canonical_encodings_are_rejected() {
        let text = String::from_utf8(sample().canonical_bytes()).unwrap();
        let spaced = text.replacen(",\"builder\"", ", \"builder\"", 1);
        assert!(matches!(Derivation::from_canonical(spaced.as_bytes()), Err(DerivationError::NotCanonical)));
        let escaped = text.replacen("hello", "hell\\u006f", 1);
        assert!(matches!(Derivation::from_canonical(escaped.as_bytes()), Err(DerivationError::NotCanonical)));
        let extra = text.replacen("{\"format\"", "{\"extra\":\"x\",\"format\"", 1);
        assert!(matches!(Derivation::from_canonical(extra.as_bytes()), Err(DerivationError::Malformed(_))));
        let v2 = text.replacen(DRV_FORMAT, "forge-drv-v2", 1);
        assert!(matches!(Derivation::from_canonical(v2.as_bytes()), Err(DerivationError::UnsupportedFormat { .. })));
        let unpack = text.replacen("{\"script\"", "{\"unpack\":\"true\",\"script\"", 1);
        assert!(matches!(Derivation::from_canonical(unpack.as_bytes()), Err(DerivationError::Malformed(_))));
    }

    #[test]
    fn env_defaults_are_overridable_but_forge_keys_are_not() {
        let recipe_env = BTreeMap::from([
            ("PATH".to_string(), "/tools/bin:/usr/bin".to_string()),
            ("FORGE_OUT".to_string(), "/elsewhere".to_string()),
            ("LFS".to_string(), "/mnt/lfs".to_string()),
        ]);
        let env = build_env("gcc", "14.2", &recipe_env);
        assert_eq!(env["PATH"], "/tools/bin:/usr/bin");
        assert_eq!(env["FORGE_OUT"], FORGE_OUT);
        assert_eq!(env["FORGE_SOURCES"], FORGE_SOURCES);
        assert_eq!(env["FORGE_NAME"], "gcc");
        assert_eq!(env["FORGE_VERSION"], "14.2");
        assert_eq!(env["HOME"], "/homeless");
        assert_eq!(env["SOURCE_DATE_EPOCH"], "315532800");
        assert_eq!(env["LFS"], "/mnt/lfs");
        assert!(!env.contains_key("FORGE_JOBS"));
        assert_eq!(env.len(), 10);
    }

    #[test]
    fn resolve_renames_inputs_and_checks_lengths() {
        let drv = sample();
        let outs = [Digest::of(b"o1"), Digest::of(b"o2")];
        let resolved = drv.resolve(&outs).unwrap();
        assert_eq!(resolved.inputs[0], Input::at_root("seed", InputId::Out(outs[0])));
        assert_ne!(resolved.hash(), drv.hash());
        assert_eq!(drv.resolved_key(&outs).unwrap(), resolved.hash());
        let err = drv.resolve(&outs[..1]).unwrap_err();
        assert_eq!(err.to_string(), "derivation of \"hello\" has 2 inputs but 1 output hashes were given");
    }

    #[test]
    fn staged_inputs_encode_at_first_and_only_when_not_root() {
        let mut drv = sample();
        drv.inputs.truncate(1);
        let root_bytes = String::from_utf8(drv.canonical_bytes()).unwrap();
        assert!(root_bytes.contains(&format!("\"inputs\":[{{\"drv\":\"{}\",\"name\":\"seed\"}}]", Digest::of(b"seed"))));
        drv.inputs[0].at = PathBuf::from("/lfs");
        let staged = String::from_utf8(drv.canonical_bytes()).unwrap();
        assert!(staged.contains(&format!("\"inputs\":[{{\"at\":\"/lfs\",\"drv\":\"{}\",\"name\":\"seed\"}}]", Digest::of(b"seed"))));
        assert_eq!(Derivation::from_canonical(staged.as_bytes()).unwrap(), drv);
        // Resolving keeps the placement, so the resolved key covers it too.
        let outs = [Digest::of(b"o")];
        assert_eq!(drv.resolve(&outs).unwrap().inputs[0].at, PathBuf::from("/lfs"));
        let mut at_root = drv.clone();
        at_root.inputs[0].at = PathBuf::from("/");
        assert_ne!(drv.resolved_key(&outs).unwrap(), at_root.resolved_key(&outs).unwrap());
    }

    #[test]
    fn explicit_root_or_invalid_locations_are_rejected_when_parsing() {
        let mut drv = sample();
        drv.inputs.truncate(1);
        drv.inputs[0].at = PathBuf::from("/lfs");
        let text = String::from_utf8(drv.canonical_bytes()).unwrap();
        let explicit_root = text.replacen("\"at\":\"/lfs\"", "\"at\":\"/\"", 1);
        assert!(matches!(Derivation::from_canonical(explicit_root.as_bytes()), Err(DerivationError::NotCanonical)));
        let relative = text.replacen("\"at\":\"/lfs\"", "\"at\":\"lfs\"", 1);
        match Derivation::from_canonical(relative.as_bytes()) {
            Err(DerivationError::Malformed(m)) => assert!(m.contains("absolute"), "{m}"),
            other => panic!("expected Malformed, got {other:?}"),
        }
    }

    #[test]
    fn drv_and_out_inputs_never_encode_alike() {
        let mut a = sample();
        a.inputs.truncate(1);
        let mut b = a.clone();
        b.inputs[0].id = match a.inputs[0].id {
            InputId::Drv(d) => InputId::Out(d),
            InputId::Out(d) => InputId::Drv(d),
        };
        assert_ne!(a.hash(), b.hash());
    }
}
