//! Loading the closure of the command-line files: expanding set includes
//! (relative/absolute paths, sorted globs, nested sets), detecting include
//! cycles, loading each file once. Files of one include list are parsed in
//! parallel; they are then visited in include order so results are deterministic.

use std::collections::{HashMap, HashSet};
use std::io;
use std::path::{Path, PathBuf};

use rayon::prelude::*;

use super::parse::{parse_file, FileOutcome, Parsed, SetFile};
use super::{Loaded, Location, Problem, ProblemKind, Recipe, RecipeError, Target};

/// What a canonical path turned out to hold.
enum Known {
    Recipe(usize),
    /// A set whose includes are being expanded (seeing it again is a cycle).
    Expanding,
    Set { name: String, packages: Vec<String> },
    Failed,
}

/// The result of visiting one file.
enum Visit {
    Recipe(String),
    Set { name: String, packages: Vec<String> },
    Cycle,
    Failed,
}

#[derive(Default)]
pub(crate) struct Loader {
    problems: Vec<Problem>,
    recipes: Vec<Recipe>,
    known: HashMap<PathBuf, Known>,
    /// Parsed ahead (in parallel) and not visited yet.
    pending: HashMap<PathBuf, FileOutcome>,
}

impl Loader {
    pub fn load(mut self, files: &[PathBuf]) -> Result<Loaded, RecipeError> {
        let canonical: Vec<(PathBuf, Option<PathBuf>)> = files
            .iter()
            .map(|file| match file.canonicalize() {
                Ok(path) => (file.clone(), Some(path)),
                Err(err) => {
                    self.problems.push(Problem::in_file(file, ProblemKind::Read(err)));
                    (file.clone(), None)
                }
            })
            .collect();
        self.parse_ahead(canonical.iter().filter_map(|(_, c)| c.clone()).collect());
        let mut targets = Vec::new();
        for path in canonical.into_iter().filter_map(|(_, c)| c) {
            let target = match self.visit(&path, &mut Vec::new()) {
                Visit::Recipe(name) => Target { file: path, packages: vec![name.clone()], name, is_set: false },
                Visit::Set { name, packages } => Target { file: path, name, is_set: true, packages },
                Visit::Cycle | Visit::Failed => continue,
            };
            targets.push(target);
        }
        if self.problems.is_empty() {
            Ok(Loaded { targets, recipes: self.recipes })
        } else {
            Err(RecipeError { problems: self.problems })
        }
    }

    /// Read and parse, in parallel, the files not seen yet.
    fn parse_ahead(&mut self, mut paths: Vec<PathBuf>) {
        paths.retain(|p| !self.known.contains_key(p) && !self.pending.contains_key(p));
        paths.sort();
        paths.dedup();
        let parsed: Vec<(PathBuf, FileOutcome)> =
            paths.into_par_iter().map(|path| { let outcome = read_and_parse(&path); (path, outcome) }).collect();
        self.pending.extend(parsed);
    }

    /// Load `path` (canonical) and, for a set, everything it includes.
    /// `stack` holds the sets being expanded, outermost first.
    fn visit(&mut self, path: &Path, stack: &mut Vec<PathBuf>) -> Visit {
        match self.known.get(path) {
            Some(Known::Recipe(i)) => return Visit::Recipe(self.recipes[*i].name.clone()),
            Some(Known::Set { name, packages }) => return Visit::Set { name: name.clone(), packages: packages.clone() },
            Some(Known::Expanding) => return Visit::Cycle,
            Some(Known::Failed) => return Visit::Failed,
            None => {}
        }
        let outcome = self.pending.remove(path).unwrap_or_else(|| read_and_parse(path));
        self.problems.extend(outcome.problems);
        match outcome.parsed {
            None => {
                self.known.insert(path.to_path_buf(), Known::Failed);
                Visit::Failed
            }
            Some(Parsed::Recipe(recipe)) => {
                let name = recipe.name.clone();
                self.known.insert(path.to_path_buf(), Known::Recipe(self.recipes.len()));
                self.recipes.push(*recipe);
                Visit::Recipe(name)
            }
            Some(Parsed::Set(set)) => {
                self.known.insert(path.to_path_buf(), Known::Expanding);
                stack.push(path.to_path_buf());
                let packages = self.expand(path, &set, stack);
                stack.pop();
                let name = set.name;
                self.known.insert(path.to_path_buf(), Known::Set { name: name.clone(), packages: packages.clone() });
                Visit::Set { name, packages }
            }
        }
    }

    /// The package names of a set's include closure, in include order, once each.
    fn expand(&mut self, set_path: &Path, set: &SetFile, stack: &mut Vec<PathBuf>) -> Vec<String> {
        let dir = set_path.parent().unwrap_or(Path::new("/"));
        let mut included: Vec<(PathBuf, &Location)> = Vec::new();
        for (pattern, at) in &set.includes {
            match self.resolve_include(dir, pattern, at) {
                Ok(paths) => included.extend(paths.into_iter().map(|p| (p, at))),
                Err(problem) => self.problems.push(problem),
            }
        }
        self.parse_ahead(included.iter().map(|(p, _)| p.clone()).collect());
        let mut packages = Vec::new();
        let mut seen = HashSet::new();
        for (path, at) in included {
            let names = match self.visit(&path, stack) {
                Visit::Recipe(name) => vec![name],
                Visit::Set { packages, .. } => packages,
                Visit::Failed => continue,
                Visit::Cycle => {
                    self.problems.push(Problem::at(at.clone(), ProblemKind::IncludeCycle { chain: cycle_chain(stack, &path) }));
                    continue;
                }
            };
            packages.extend(names.into_iter().filter(|n| seen.insert(n.clone())));
        }
        packages
    }

    /// The canonical files one `include` entry names: a path, or a glob's sorted matches.
    fn resolve_include(&mut self, dir: &Path, include: &str, at: &Location) -> Result<Vec<PathBuf>, Problem> {
        let joined = dir.join(include);
        if !include.contains(['*', '?', '[']) {
            return match joined.canonicalize() {
                Ok(path) => Ok(vec![path]),
                Err(err) if err.kind() == io::ErrorKind::NotFound => {
                    Err(Problem::at(at.clone(), ProblemKind::IncludeNotFound { path: joined }))
                }
                Err(err) => Err(Problem::in_file(&joined, ProblemKind::Read(err))),
            };
        }
        let pattern = if Path::new(include).is_absolute() {
            include.to_string()
        } else {
            format!("{}/{include}", glob::Pattern::escape(&dir.to_string_lossy()))
        };
        let bad_glob = |message: String| Problem::at(at.clone(), ProblemKind::BadGlob { pattern: include.to_string(), message });
        let matches = glob::glob(&pattern).map_err(|e| bad_glob(e.to_string()))?;
        let mut matched = Vec::new();
        for entry in matches {
            match entry {
                Ok(path) => matched.push(path),
                Err(err) => {
                    let path = err.path().to_path_buf();
                    self.problems.push(Problem::in_file(&path, ProblemKind::Read(err.into())));
                }
            }
        }
        // One realpath per match dominates loading large trees: do them in parallel.
        let canonical: Vec<Result<Option<PathBuf>, Problem>> = matched
            .into_par_iter()
            .map(|path| {
                let canonical = path.canonicalize().map_err(|e| Problem::in_file(&path, ProblemKind::Read(e)))?;
                // Glob matches that are not regular files (directories, devices) are not recipes.
                Ok(canonical.is_file().then_some(canonical))
            })
            .collect();
        let mut paths = Vec::new();
        for path in canonical {
            paths.extend(path?);
        }
        if paths.is_empty() {
            return Err(Problem::at(at.clone(), ProblemKind::GlobMatchedNothing { pattern: include.to_string() }));
        }
        paths.sort();
        Ok(paths)
    }
}

fn read_and_parse(path: &Path) -> FileOutcome {
    match super::read_text(path) {
        Ok(text) => parse_file(path, &text),
        Err(err) => FileOutcome { problems: vec![Problem::in_file(path, ProblemKind::Read(err))], ..Default::default() },
    }
}

/// `a.toml -> b.toml -> a.toml`: the sets from `again`'s place on the stack to the top, then `again`.
fn cycle_chain(stack: &[PathBuf], again: &Path) -> String {
    let start = stack.iter().position(|p| p == again).unwrap_or(0);
    stack[start..]
        .iter()
        .map(|p| p.as_path())
        .chain(std::iter::once(again))
        .map(|p| p.display().to_string())
        .collect::<Vec<_>>()
        .join(" -> ")
}
