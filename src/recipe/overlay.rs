//! Overlays: override a package's version, sources, patches and environment without editing
//! its recipe (docs/sources.md). An overlay file holds `[[override]]` tables; each names a
//! package and is applied to the [`Loaded`] recipes after loading, before graph resolution.
//!
//! Overlays are not magic: applying one yields an ordinary recipe value whose derivation (and
//! so drv hash) follows the overridden content. Sources, patches and env entries are validated
//! with exactly a recipe's rules (see `parse::validate_fragment`); `file` paths are relative to
//! the overlay file.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

use serde::Deserialize;
use toml::Spanned;

use super::parse::{validate_fragment, LineIndex, RawSource};
use super::{Loaded, Location, Problem, ProblemKind, RecipeError, Source};

/// One overlay file, parsed and validated.
#[derive(Clone, Debug)]
pub struct Overlay {
    /// Absolute path of the overlay file.
    pub file: PathBuf,
    pub overrides: Vec<Override>,
}

/// One `[[override]]` table.
#[derive(Clone, Debug)]
pub struct Override {
    pub package: String,
    /// Where `package = ...` is written.
    pub at: Location,
    pub version: Option<String>,
    /// `sources = [...]`: replaces every source of the package when present.
    pub sources: Option<Vec<Source>>,
    /// `patches = [...]`: appended after the (possibly replaced) sources.
    pub patches: Vec<Source>,
    /// Merged into the recipe's `[env]`, overriding keys it already has.
    pub env: BTreeMap<String, String>,
    /// `omit = true`: the package does not exist here (no source for it anywhere reachable):
    /// it is removed, and so is every dependency on it.
    pub omit: bool,
}

/// Problems specific to overlays (the rest are ordinary [`ProblemKind`]s).
#[derive(Debug, thiserror::Error)]
pub enum OverlayProblem {
    #[error("override of package {package:?}, which none of the loaded recipes defines")]
    UnknownPackage { package: String },
    #[error("`omit = true` removes package {package:?}: it cannot also set version, sources, patches or env")]
    OmitWithChanges { package: String },
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct RawOverlay {
    #[serde(rename = "override", default)]
    overrides: Vec<RawOverride>,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct RawOverride {
    package: Spanned<String>,
    version: Option<Spanned<String>>,
    sources: Option<Vec<Spanned<RawSource>>>,
    #[serde(default)]
    patches: Vec<Spanned<RawSource>>,
    #[serde(default)]
    env: BTreeMap<Spanned<String>, Spanned<String>>,
    #[serde(default)]
    omit: bool,
}

/// Read and validate overlay files; every problem of every file is reported.
pub fn load_overlays(paths: &[PathBuf]) -> Result<Vec<Overlay>, RecipeError> {
    let mut overlays = Vec::new();
    let mut problems = Vec::new();
    for path in paths {
        match load_overlay(path) {
            Ok(overlay) => overlays.push(overlay),
            Err(err) => problems.extend(err.problems),
        }
    }
    if problems.is_empty() {
        Ok(overlays)
    } else {
        Err(RecipeError { problems })
    }
}

/// Read and validate one overlay file.
pub fn load_overlay(path: &Path) -> Result<Overlay, RecipeError> {
    let fail = |problem| RecipeError { problems: vec![problem] };
    let file = path.canonicalize().map_err(|e| fail(Problem::in_file(path, ProblemKind::Read(e))))?;
    let text = super::read_text(&file).map_err(|e| fail(Problem::in_file(&file, ProblemKind::Read(e))))?;
    parse_overlay(&file, &text)
}

/// Parse the text of the overlay at `file` (an absolute path).
pub(crate) fn parse_overlay(file: &Path, text: &str) -> Result<Overlay, RecipeError> {
    let index = LineIndex::new(text);
    let at = |offset: usize| {
        let (line, column) = index.line_col(offset);
        Location { file: file.to_path_buf(), line, column }
    };
    let raw: RawOverlay = toml::from_str(text).map_err(|err| {
        let start = err.span().map_or(0, |s| s.start);
        let kind = ProblemKind::Toml(err.message().trim_end().to_string());
        RecipeError { problems: vec![Problem::at(at(start), kind)] }
    })?;
    let mut problems = Vec::new();
    let mut overrides = Vec::new();
    for raw in raw.overrides {
        let package_at = at(raw.package.span().start);
        if !super::is_valid_name(raw.package.get_ref()) {
            let kind = ProblemKind::InvalidName { what: "package", name: raw.package.get_ref().clone() };
            problems.push(Problem::at(package_at.clone(), kind));
        }
        if let Some(version) = raw.version.as_ref().filter(|v| v.get_ref().trim().is_empty()) {
            problems.push(Problem::at(at(version.span().start), ProblemKind::EmptyVersion));
        }
        let changes = raw.version.is_some() || raw.sources.is_some() || !raw.patches.is_empty() || !raw.env.is_empty();
        if raw.omit && changes {
            let kind = OverlayProblem::OmitWithChanges { package: raw.package.get_ref().clone() };
            problems.push(Problem::at(package_at.clone(), ProblemKind::Overlay(kind)));
        }
        let mut replaced = raw.sources.map(|sources| validate_fragment(file, text, sources, BTreeMap::new()));
        let mut patches = validate_fragment(file, text, raw.patches, raw.env);
        for fragment in replaced.iter_mut().chain([&mut patches]) {
            problems.append(&mut fragment.problems);
        }
        overrides.push(Override {
            package: raw.package.into_inner(),
            at: package_at,
            version: raw.version.map(Spanned::into_inner),
            sources: replaced.map(|f| f.sources),
            patches: patches.sources,
            env: patches.env,
            omit: raw.omit,
        });
    }
    if problems.is_empty() {
        Ok(Overlay { file: file.to_path_buf(), overrides })
    } else {
        Err(RecipeError { problems })
    }
}

/// Apply each overlay's overrides, in order, to the loaded recipes. Later overrides of the same
/// package apply on top of earlier ones. An override naming no loaded package is an error, as
/// is a patch whose file name collides with a source the package keeps.
pub fn apply_overlays(loaded: &mut Loaded, overlays: &[Overlay]) -> Result<(), RecipeError> {
    let mut problems = Vec::new();
    for overlay in overlays {
        for over in &overlay.overrides {
            match loaded.recipes.iter_mut().position(|r| r.name == over.package) {
                Some(index) if over.omit => omit(loaded, index),
                Some(index) => apply_one(&mut loaded.recipes[index], over, &mut problems),
                None => {
                    let kind = OverlayProblem::UnknownPackage { package: over.package.clone() };
                    problems.push(Problem::at(over.at.clone(), ProblemKind::Overlay(kind)));
                }
            }
        }
    }
    if problems.is_empty() {
        Ok(())
    } else {
        Err(RecipeError { problems })
    }
}

/// Remove recipe `index` and every dependency on it (recipes and targets alike).
fn omit(loaded: &mut Loaded, index: usize) {
    let name = loaded.recipes.remove(index).name;
    for recipe in &mut loaded.recipes {
        recipe.build_deps.retain(|d| d.name != name);
        recipe.runtime_deps.retain(|d| d.name != name);
    }
    for target in &mut loaded.targets {
        target.packages.retain(|p| *p != name);
    }
}

fn apply_one(recipe: &mut super::Recipe, over: &Override, problems: &mut Vec<Problem>) {
    if let Some(version) = &over.version {
        recipe.version = version.clone();
    }
    if let Some(sources) = &over.sources {
        recipe.sources = sources.clone();
    }
    for patch in &over.patches {
        if let Some(first) = recipe.sources.iter().find(|s| s.filename == patch.filename) {
            let kind = ProblemKind::DuplicateSourceName { name: patch.filename.clone(), first: first.at.clone() };
            problems.push(Problem::at(patch.at.clone(), kind));
            continue;
        }
        recipe.sources.push(patch.clone());
    }
    recipe.env.extend(over.env.iter().map(|(k, v)| (k.clone(), v.clone())));
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::recipe::{Action, Recipe, Requirements, SourceKind};
    use crate::hash::Checksum;

    const SHA: &str = "ba7816bf8f01cfea414140de5dae2223b00361a396177a9cb410ff61f20015ad";

    fn recipe(name: &str) -> Recipe {
        let at = Location { file: "/r/x.toml".into(), line: 1, column: 1 };
        Recipe {
            file: "/r/x.toml".into(),
            name: name.into(),
            name_at: at.clone(),
            version: "1.0".into(),
            description: None,
            sources: vec![Source {
                kind: SourceKind::Url { url: "http://h/x-1.0.tar.gz".into(), mirrors: vec![] },
                filename: "x-1.0.tar.gz".into(),
                checksum: Some(Checksum::parse("sha256", SHA).unwrap()),
                at,
            }],
            build_deps: vec![],
            runtime_deps: vec![],
            env: BTreeMap::from([("A".into(), "1".into()), ("B".into(), "2".into())]),
            action: Action::Build { script: "true".into(), shell: vec!["/bin/sh".into()] },
            requirements: Requirements::default(),
        }
    }

    fn overlay(text: &str) -> Result<Overlay, RecipeError> {
        parse_overlay(Path::new("/o/overlay.toml"), text)
    }

    #[test]
    fn version_sources_and_env_are_overridden_and_patches_appended() {
        let dir = tempfile::tempdir().unwrap();
        std::fs::write(dir.path().join("fix.patch"), "--- a\n").unwrap();
        let file = dir.path().join("overlay.toml");
        let text = format!(
            "[[override]]\npackage = \"x\"\nversion = \"2.0\"\n\
             sources = [{{ url = \"http://h/x-2.0.tar.gz\", sha256 = \"{SHA}\" }}]\n\
             patches = [{{ file = \"fix.patch\" }}]\nenv = {{ B = \"3\", C = \"4\" }}\n"
        );
        let overlay = parse_overlay(&file, &text).unwrap();
        let mut loaded = Loaded { recipes: vec![recipe("x"), recipe("y")], ..Default::default() };
        apply_overlays(&mut loaded, &[overlay]).unwrap();
        let x = &loaded.recipes[0];
        assert_eq!(x.version, "2.0");
        let names: Vec<&str> = x.sources.iter().map(|s| s.filename.as_str()).collect();
        assert_eq!(names, ["x-2.0.tar.gz", "fix.patch"]);
        assert_eq!(x.sources[1].kind, SourceKind::File { path: dir.path().join("fix.patch") });
        assert_eq!(x.sources[0].at.line, 4);
        let env: Vec<(&str, &str)> = x.env.iter().map(|(k, v)| (k.as_str(), v.as_str())).collect();
        assert_eq!(env, [("A", "1"), ("B", "3"), ("C", "4")]);
        assert_eq!(loaded.recipes[1].version, "1.0", "y is untouched");
    }

    #[test]
    fn md5_warnings_follow_the_sources_an_overlay_leaves() {
        let pinned_by_md5 = |name, line| {
            let mut r = recipe(name);
            r.sources[0].checksum = Some(Checksum::Md5([0; 16]));
            r.sources[0].at.line = line;
            r
        };
        let (x, y) = (pinned_by_md5("x", 7), pinned_by_md5("y", 9));
        let mut loaded = Loaded { recipes: vec![x, y], ..Default::default() };
        assert_eq!(loaded.warnings().len(), 2);
        let text = format!(
            "[[override]]\npackage = \"x\"\nsources = [{{ url = \"http://h/x-2.tar.gz\", sha256 = \"{SHA}\" }}]\n"
        );
        apply_overlays(&mut loaded, &[overlay(&text).unwrap()]).unwrap();
        assert_eq!(
            loaded.warnings(),
            ["/r/x.toml:9:1: md5 only, pin a sha256 (`forge prefetch` computes it)"],
            "x's md5 source was replaced; y's still warns"
        );
    }

    #[test]
    fn unknown_keys_are_errors_with_a_position() {
        let err = overlay("[[override]]\npackage = \"x\"\nversoin = \"2\"\n").unwrap_err();
        let text = err.to_string();
        assert!(text.starts_with("/o/overlay.toml:3:1: "), "{text}");
        assert!(text.contains("versoin"), "{text}");
        let err = overlay("[[overrides]]\npackage = \"x\"\n").unwrap_err();
        assert!(err.to_string().starts_with("/o/overlay.toml:1:"), "{err}");
    }

    #[test]
    fn an_override_of_an_unknown_package_is_an_error() {
        let over = overlay("\n[[override]]\npackage = \"nope\"\nversion = \"2\"\n").unwrap();
        let mut loaded = Loaded { recipes: vec![recipe("x")], ..Default::default() };
        let err = apply_overlays(&mut loaded, &[over]).unwrap_err();
        assert_eq!(
            err.to_string(),
            "/o/overlay.toml:3:11: override of package \"nope\", which none of the loaded recipes defines"
        );
    }

    #[test]
    fn sources_follow_recipe_rules() {
        let err = overlay("[[override]]\npackage = \"x\"\nsources = [{ url = \"http://h/a.tgz\" }]\n").unwrap_err();
        let text = err.to_string();
        assert!(text.starts_with("/o/overlay.toml:3:12: url source without a checksum"), "{text}");
        let err = overlay("[[override]]\npackage = \"x\"\nenv = { FORGE_X = \"1\" }\n").unwrap_err();
        assert!(err.to_string().contains("reserved"), "{err}");
    }

    #[test]
    fn a_patch_colliding_with_a_kept_source_is_an_error() {
        let text = format!(
            "[[override]]\npackage = \"x\"\npatches = [{{ url = \"http://m/x-1.0.tar.gz\", sha256 = \"{SHA}\" }}]\n"
        );
        let over = overlay(&text).unwrap();
        let mut loaded = Loaded { recipes: vec![recipe("x")], ..Default::default() };
        let err = apply_overlays(&mut loaded, &[over]).unwrap_err();
        assert!(err.to_string().contains("two sources named \"x-1.0.tar.gz\""), "{err}");
    }

    #[test]
    fn omit_removes_the_package_and_every_dependency_on_it() {
        let dep = |name: &str| crate::recipe::DepRef {
            name: name.into(),
            at: Location { file: "/r/x.toml".into(), line: 2, column: 1 },
            staged_at: "/".into(),
        };
        let mut y = recipe("y");
        y.build_deps = vec![dep("x"), dep("z")];
        y.runtime_deps = vec![dep("x")];
        let target = crate::recipe::Target { file: "/r/s.toml".into(), name: "s".into(), is_set: true, packages: vec!["x".into(), "y".into()] };
        let mut loaded = Loaded { recipes: vec![recipe("x"), y, recipe("z")], targets: vec![target] };
        apply_overlays(&mut loaded, &[overlay("[[override]]\npackage = \"x\"\nomit = true\n").unwrap()]).unwrap();
        let names: Vec<&str> = loaded.recipes.iter().map(|r| r.name.as_str()).collect();
        assert_eq!(names, ["y", "z"]);
        let y = &loaded.recipes[0];
        assert_eq!(y.build_deps.iter().map(|d| d.name.as_str()).collect::<Vec<_>>(), ["z"]);
        assert!(y.runtime_deps.is_empty());
        assert_eq!(loaded.targets[0].packages, ["y"]);
        // Omitting and changing at once is a contradiction.
        let err = overlay("[[override]]\npackage = \"x\"\nomit = true\nversion = \"2\"\n").unwrap_err();
        assert!(err.to_string().contains("cannot also set"), "{err}");
    }
}
