//! The dependency graph: name resolution across the loaded closure, duplicate
//! names, unknown dependencies, cycles (reported member by member), order.
//!
//! Every check runs before anything is built and all problems are reported
//! together. The graph caches each node's runtime closure as a sorted vector,
//! so sandbox input closures cost time proportional to their size.
//!
//! Closures are made of [`Staged`] pairs: a node and where its output is placed
//! in the sandbox (`[deps]` `at`, docs/recipes.md). A dependency staged at `P`
//! brings its runtime closure staged under `P` too, so the same node may appear
//! at several places; identical pairs appear once.

use std::cmp::Reverse;
use std::collections::{BinaryHeap, HashMap, HashSet, VecDeque};
use std::fmt;
use std::path::Path;
use std::sync::Arc;

use crate::recipe::{stage, Loaded, Location, Recipe, Target};

/// Index into [`Graph::nodes`].
pub type NodeId = usize;

#[derive(Debug)]
pub struct Node {
    pub recipe: Recipe,
    /// `build_deps[i]` is `recipe.build_deps[i]` resolved (same for runtime).
    pub build_deps: Vec<NodeId>,
    pub runtime_deps: Vec<NodeId>,
}

impl Node {
    /// Build and runtime dependencies, build first, as written.
    pub fn deps(&self) -> impl Iterator<Item = NodeId> + '_ {
        self.build_deps.iter().chain(&self.runtime_deps).copied()
    }

    /// Build and runtime dependencies with their staging locations, build first.
    pub fn staged_deps(&self) -> impl Iterator<Item = (NodeId, &Path)> + '_ {
        let build = self.build_deps.iter().zip(&self.recipe.build_deps);
        build.chain(self.runtime_deps.iter().zip(&self.recipe.runtime_deps)).map(|(&id, dep)| (id, dep.staged_at.as_path()))
    }

    /// Runtime dependencies with their staging locations.
    fn staged_runtime_deps(&self) -> impl Iterator<Item = (NodeId, &Path)> + '_ {
        self.runtime_deps.iter().zip(&self.recipe.runtime_deps).map(|(&id, dep)| (id, dep.staged_at.as_path()))
    }
}

/// How a node depends on another.
#[derive(Debug, Clone, Copy, PartialEq, Eq, serde::Serialize)]
#[serde(rename_all = "lowercase")]
pub enum DepKind {
    Build,
    Runtime,
}

/// A node's output placed at an absolute directory of a sandbox (`/` by default).
#[derive(Clone, Debug, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct Staged {
    pub node: NodeId,
    /// A valid [`stage`] location; shared because most are `/`.
    pub at: Arc<Path>,
}

impl Staged {
    /// This pair seen from a sandbox where its owner is placed at `outer`.
    fn under(&self, outer: &Path) -> Staged {
        if outer == Path::new(stage::ROOT) {
            return self.clone();
        }
        Staged { node: self.node, at: stage::compose(outer, &self.at).into() }
    }
}

#[derive(Debug)]
pub struct Graph {
    pub nodes: Vec<Node>,
    pub targets: Vec<Target>,
    index: HashMap<String, NodeId>,
    /// Dependencies before dependents, ties by name.
    topo: Vec<NodeId>,
    /// `rank[id]` = position of `id` in `topo`.
    rank: Vec<usize>,
    /// Each node's runtime closure, itself included at `/`, locations relative to
    /// the node's own root, sorted by (id, location).
    runtime_closure: Vec<Vec<Staged>>,
}

/// Everything wrong with a graph; `Display` prints one problem per line.
#[derive(Debug)]
pub struct GraphError {
    pub problems: Vec<GraphProblem>,
}

impl fmt::Display for GraphError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let lines: Vec<String> = self.problems.iter().map(ToString::to_string).collect();
        f.write_str(&lines.join("\n"))
    }
}

impl std::error::Error for GraphError {}

#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum GraphProblem {
    #[error("{second}: duplicate package name {name:?} (also defined at {first})")]
    DuplicateName { name: String, first: Location, second: Location },
    #[error("{at}: package {package:?} depends on {name:?}, which no loaded recipe defines{}", did_you_mean(suggestion))]
    UnknownDependency { name: String, package: String, at: Location, suggestion: Option<String> },
    /// `members` in cycle order, the first repeated at the end; `at` is where
    /// the first member's dependency on the second is written.
    #[error("{at}: dependency cycle: {}", members.join(" -> "))]
    Cycle { members: Vec<String>, at: Location },
    #[error("no package named {name:?} in the loaded recipes{}", did_you_mean(suggestion))]
    UnknownPackage { name: String, suggestion: Option<String> },
}

fn did_you_mean(suggestion: &Option<String>) -> String {
    suggestion.as_ref().map(|s| format!("; did you mean {s:?}?")).unwrap_or_default()
}

impl Graph {
    /// Resolve dependency names, reject duplicates, unknown names and cycles,
    /// and order the graph.
    pub fn resolve(loaded: Loaded) -> Result<Graph, GraphError> {
        let mut problems = Vec::new();
        let index = name_index(&loaded.recipes, &mut problems);
        let nodes: Vec<Node> = loaded
            .recipes
            .into_iter()
            .map(|recipe| {
                let build_deps = resolve_deps(&recipe, &recipe.build_deps, &index, &mut problems);
                let runtime_deps = resolve_deps(&recipe, &recipe.runtime_deps, &index, &mut problems);
                Node { recipe, build_deps, runtime_deps }
            })
            .collect();
        problems.extend(find_cycles(&nodes));
        if !problems.is_empty() {
            return Err(GraphError { problems });
        }
        let topo = topological_order(&nodes);
        let mut rank = vec![0; nodes.len()];
        for (position, &id) in topo.iter().enumerate() {
            rank[id] = position;
        }
        let runtime_closure = runtime_closures(&nodes, &topo);
        Ok(Graph { nodes, targets: loaded.targets, index, topo, rank, runtime_closure })
    }

    pub fn node_by_name(&self, name: &str) -> Option<NodeId> {
        self.index.get(name).copied()
    }

    /// The nodes a run is asked for: every package of every target.
    pub fn wanted(&self) -> Vec<NodeId> {
        let mut wanted: Vec<NodeId> =
            self.targets.iter().flat_map(|t| &t.packages).filter_map(|name| self.node_by_name(name)).collect();
        wanted.sort_unstable();
        wanted.dedup();
        wanted
    }

    /// Which nodes a run must realise, given which outputs it can have without building
    /// (`available`: in the store, or offered by a trusted binary cache): the runtime
    /// closure of [`Graph::wanted`], plus the whole input closure of every such node that
    /// must be built, and so on down. As in Nix, an output that can be had does not pull in
    /// its build-only dependencies.
    pub fn needed(&self, available: &[bool]) -> Vec<bool> {
        let mut needed = vec![false; self.nodes.len()];
        let mut todo = self.wanted();
        while let Some(id) = todo.pop() {
            if std::mem::replace(&mut needed[id], true) {
                continue;
            }
            if available[id] {
                todo.extend(&self.nodes[id].runtime_deps);
            } else {
                todo.extend(self.nodes[id].deps());
            }
        }
        needed
    }

    /// The shortest chain of dependencies from `from` to `to` (both included): each node with
    /// the kind of its dependency on the next one (`None` for `to`); `None` if `from` does
    /// not depend on `to`. Ties go to the dependency written first.
    pub fn dependency_chain(&self, from: NodeId, to: NodeId) -> Option<Vec<(NodeId, Option<DepKind>)>> {
        let mut reached_by: Vec<Option<(NodeId, DepKind)>> = vec![None; self.nodes.len()];
        let mut queue = std::collections::VecDeque::from([from]);
        let mut seen = vec![false; self.nodes.len()];
        seen[from] = true;
        while let Some(id) = queue.pop_front() {
            if id == to {
                let mut chain = vec![(to, None)];
                let mut at = to;
                while let Some((parent, kind)) = reached_by[at].filter(|_| at != from) {
                    chain.push((parent, Some(kind)));
                    at = parent;
                }
                chain.reverse();
                return Some(chain);
            }
            let node = &self.nodes[id];
            let edges = node.build_deps.iter().map(|&d| (d, DepKind::Build)).chain(node.runtime_deps.iter().map(|&d| (d, DepKind::Runtime)));
            for (dep, kind) in edges {
                if !std::mem::replace(&mut seen[dep], true) {
                    reached_by[dep] = Some((id, kind));
                    queue.push_back(dep);
                }
            }
        }
        None
    }

    /// Every node, dependencies before dependents, ties broken by name.
    pub fn topo_order(&self) -> &[NodeId] {
        &self.topo
    }

    /// What the sandbox of `id` holds: its build and runtime dependencies plus,
    /// transitively, their runtime dependencies; never `id` itself. Ordered as in
    /// [`Graph::topo_order`] (dependencies first, ties by name). That order,
    /// restricted to the closure, depends only on the closure's members and
    /// their own dependencies, not on unrelated recipes loaded alongside.
    ///
    /// Each distinct node once, wherever it is staged; see [`Graph::staged_closure`].
    pub fn input_closure(&self, id: NodeId) -> Vec<NodeId> {
        let mut members: Vec<NodeId> = self.staged_closure(id).into_iter().map(|s| s.node).collect();
        members.dedup();
        members
    }

    /// What the sandbox of `id` holds, with placements: each build and runtime
    /// dependency at its `at`, plus its runtime closure under that same place
    /// (nested `at`s compose). Ordered like [`Graph::input_closure`], then by
    /// location; identical pairs appear once.
    pub fn staged_closure(&self, id: NodeId) -> Vec<Staged> {
        let mut members: Vec<Staged> = self.nodes[id]
            .staged_deps()
            .flat_map(|(dep, at)| self.runtime_closure[dep].iter().map(move |member| member.under(at)))
            .collect();
        members.sort_unstable_by(|a, b| (self.rank[a.node], &a.at).cmp(&(self.rank[b.node], &b.at)));
        members.dedup();
        members
    }

    /// Keep only these packages and everything they depend on (`forge build --package`).
    /// Targets keep only the named packages: they are what the run is asked for, the rest
    /// is there because they depend on it.
    pub fn restrict(&self, names: &[&str]) -> Result<Graph, GraphError> {
        let mut problems = Vec::new();
        let roots: Vec<NodeId> = names
            .iter()
            .filter_map(|name| {
                let id = self.node_by_name(name);
                if id.is_none() {
                    let suggestion = closest_name(name, self.index.keys().map(String::as_str));
                    problems.push(GraphProblem::UnknownPackage { name: name.to_string(), suggestion });
                }
                id
            })
            .collect();
        if !problems.is_empty() {
            return Err(GraphError { problems });
        }
        let keep = self.dependency_closure(&roots);
        let recipes = self.nodes.iter().enumerate().filter(|(id, _)| keep[*id]).map(|(_, n)| n.recipe.clone()).collect();
        let targets = self
            .targets
            .iter()
            .map(|t| {
                let packages = t.packages.iter().filter(|p| names.contains(&p.as_str())).cloned().collect();
                Target { packages, ..t.clone() }
            })
            .collect();
        Graph::resolve(Loaded { targets, recipes })
    }

    /// The named packages and everything they depend on (unknown names are ignored).
    pub fn closure_of(&self, names: &[String]) -> Vec<NodeId> {
        let roots: Vec<NodeId> = names.iter().filter_map(|n| self.node_by_name(n)).collect();
        let keep = self.dependency_closure(&roots);
        (0..self.nodes.len()).filter(|&id| keep[id]).collect()
    }

    /// Membership flags of `roots` and all their transitive dependencies.
    fn dependency_closure(&self, roots: &[NodeId]) -> Vec<bool> {
        let mut keep = vec![false; self.nodes.len()];
        let mut todo: Vec<NodeId> = roots.to_vec();
        while let Some(id) = todo.pop() {
            if !std::mem::replace(&mut keep[id], true) {
                todo.extend(self.nodes[id].deps());
            }
        }
        keep
    }
}

fn name_index(recipes: &[Recipe], problems: &mut Vec<GraphProblem>) -> HashMap<String, NodeId> {
    let mut index: HashMap<String, NodeId> = HashMap::with_capacity(recipes.len());
    for (id, recipe) in recipes.iter().enumerate() {
        if let Some(&first) = index.get(&recipe.name) {
            problems.push(GraphProblem::DuplicateName {
                name: recipe.name.clone(),
                first: recipes[first].name_at.clone(),
                second: recipe.name_at.clone(),
            });
        } else {
            index.insert(recipe.name.clone(), id);
        }
    }
    index
}

fn resolve_deps(
    recipe: &Recipe,
    deps: &[crate::recipe::DepRef],
    index: &HashMap<String, NodeId>,
    problems: &mut Vec<GraphProblem>,
) -> Vec<NodeId> {
    let mut ids = Vec::with_capacity(deps.len());
    for dep in deps {
        match index.get(&dep.name) {
            Some(&id) => ids.push(id),
            None => {
                let suggest = problems.len() < MAX_SUGGESTIONS;
                problems.push(GraphProblem::UnknownDependency {
                    name: dep.name.clone(),
                    package: recipe.name.clone(),
                    at: dep.at.clone(),
                    suggestion: suggest.then(|| closest_name(&dep.name, index.keys().map(String::as_str))).flatten(),
                })
            }
        }
    }
    ids
}

/// Unknown names that get a did-you-mean suggestion, per graph: each costs one edit distance
/// per known name, and a file of a million typos must not cost a million scans.
const MAX_SUGGESTIONS: usize = 100;

/// The known name closest to `name` by edit distance, if close enough to be a typo.
fn closest_name<'a>(name: &str, known: impl Iterator<Item = &'a str>) -> Option<String> {
    let limit = (name.chars().count() / 3).max(1);
    known
        .filter_map(|candidate| {
            let distance = edit_distance(name, candidate);
            (distance <= limit).then_some((distance, candidate))
        })
        .min()
        .map(|(_, candidate)| candidate.to_string())
}

fn edit_distance(a: &str, b: &str) -> usize {
    let b: Vec<char> = b.chars().collect();
    let mut previous: Vec<usize> = (0..=b.len()).collect();
    for (i, ca) in a.chars().enumerate() {
        let mut current = vec![i + 1; b.len() + 1];
        for (j, cb) in b.iter().enumerate() {
            let substitution = previous[j] + usize::from(ca != *cb);
            current[j + 1] = substitution.min(previous[j + 1] + 1).min(current[j] + 1);
        }
        previous = current;
    }
    previous[b.len()]
}

/// One cycle per strongly connected component that has one (Tarjan, iterative
/// so deep graphs cannot overflow the stack), ordered by first member name.
fn find_cycles(nodes: &[Node]) -> Vec<GraphProblem> {
    let mut cycles: Vec<GraphProblem> = strongly_connected_components(nodes)
        .into_iter()
        .filter(|scc| scc.len() > 1 || nodes[scc[0]].deps().any(|d| d == scc[0]))
        .map(|scc| cycle_in(nodes, &scc))
        .collect();
    cycles.sort_by(|a, b| match (a, b) {
        (GraphProblem::Cycle { members: x, .. }, GraphProblem::Cycle { members: y, .. }) => x.cmp(y),
        _ => std::cmp::Ordering::Equal,
    });
    cycles
}

fn strongly_connected_components(nodes: &[Node]) -> Vec<Vec<NodeId>> {
    const UNVISITED: usize = usize::MAX;
    let n = nodes.len();
    let mut index = vec![UNVISITED; n];
    let mut lowlink = vec![0; n];
    let mut on_stack = vec![false; n];
    let mut stack = Vec::new();
    let mut components = Vec::new();
    let mut next_index = 0;
    let deps: Vec<Vec<NodeId>> = nodes.iter().map(|node| node.deps().collect()).collect();
    for root in 0..n {
        if index[root] != UNVISITED {
            continue;
        }
        // Each frame: (node, how many of its edges have been explored).
        let mut frames: Vec<(NodeId, usize)> = vec![(root, 0)];
        index[root] = next_index;
        lowlink[root] = next_index;
        next_index += 1;
        stack.push(root);
        on_stack[root] = true;
        while let Some(&mut (v, ref mut edge)) = frames.last_mut() {
            if let Some(&w) = deps[v].get(*edge) {
                *edge += 1;
                if index[w] == UNVISITED {
                    index[w] = next_index;
                    lowlink[w] = next_index;
                    next_index += 1;
                    stack.push(w);
                    on_stack[w] = true;
                    frames.push((w, 0));
                } else if on_stack[w] {
                    lowlink[v] = lowlink[v].min(index[w]);
                }
                continue;
            }
            frames.pop();
            if let Some(&(parent, _)) = frames.last() {
                lowlink[parent] = lowlink[parent].min(lowlink[v]);
            }
            if lowlink[v] == index[v] {
                let mut component = Vec::new();
                while let Some(w) = stack.pop() {
                    on_stack[w] = false;
                    component.push(w);
                    if w == v {
                        break;
                    }
                }
                components.push(component);
            }
        }
    }
    components
}

/// A shortest cycle through the alphabetically first member of `scc`.
fn cycle_in(nodes: &[Node], scc: &[NodeId]) -> GraphProblem {
    let members: HashSet<NodeId> = scc.iter().copied().collect();
    let name = |id: NodeId| nodes[id].recipe.name.clone();
    let start = scc.iter().copied().min_by_key(|&id| &nodes[id].recipe.name).unwrap_or(scc[0]);
    // Breadth-first from `start` inside the component until an edge leads back to it.
    let mut parent: HashMap<NodeId, NodeId> = HashMap::new();
    let mut queue = VecDeque::from([start]);
    let mut last = start;
    'search: while let Some(v) = queue.pop_front() {
        for w in nodes[v].deps().filter(|w| members.contains(w)) {
            if w == start {
                last = v;
                break 'search;
            }
            if let std::collections::hash_map::Entry::Vacant(e) = parent.entry(w) {
                e.insert(v);
                queue.push_back(w);
            }
        }
    }
    let mut path = vec![last];
    while let Some(&p) = path.last().and_then(|v| parent.get(v)) {
        path.push(p);
    }
    if path.last() != Some(&start) {
        path.push(start);
    }
    path.reverse();
    let second = path.get(1).copied().unwrap_or(start);
    let start_recipe = &nodes[start].recipe;
    let at = start_recipe
        .build_deps
        .iter()
        .chain(&start_recipe.runtime_deps)
        .find(|dep| dep.name == nodes[second].recipe.name)
        .map_or_else(|| start_recipe.name_at.clone(), |dep| dep.at.clone());
    let mut member_names: Vec<String> = path.into_iter().map(name).collect();
    member_names.push(name(start));
    GraphProblem::Cycle { members: member_names, at }
}

/// Kahn's algorithm with a name-ordered ready queue: the lexicographically
/// smallest topological order by name, which is deterministic.
fn topological_order(nodes: &[Node]) -> Vec<NodeId> {
    let mut waiting: Vec<usize> = nodes.iter().map(|n| n.deps().count()).collect();
    let mut dependents: Vec<Vec<NodeId>> = vec![Vec::new(); nodes.len()];
    for (id, node) in nodes.iter().enumerate() {
        for dep in node.deps() {
            dependents[dep].push(id);
        }
    }
    let name = |id: NodeId| nodes[id].recipe.name.as_str();
    let mut ready: BinaryHeap<Reverse<(&str, NodeId)>> =
        (0..nodes.len()).filter(|&id| waiting[id] == 0).map(|id| Reverse((name(id), id))).collect();
    let mut order = Vec::with_capacity(nodes.len());
    while let Some(Reverse((_, id))) = ready.pop() {
        order.push(id);
        for &d in &dependents[id] {
            waiting[d] -= 1;
            if waiting[d] == 0 {
                ready.push(Reverse((name(d), d)));
            }
        }
    }
    order
}

fn runtime_closures(nodes: &[Node], topo: &[NodeId]) -> Vec<Vec<Staged>> {
    let root: Arc<Path> = Arc::from(Path::new(stage::ROOT));
    let mut closures: Vec<Vec<Staged>> = vec![Vec::new(); nodes.len()];
    for &id in topo {
        let mut closure = vec![Staged { node: id, at: root.clone() }];
        for (dep, at) in nodes[id].staged_runtime_deps() {
            closure.extend(closures[dep].iter().map(|member| member.under(at)));
        }
        closure.sort_unstable();
        closure.dedup();
        closures[id] = closure;
    }
    closures
}

#[cfg(test)]
pub(crate) mod tests {
    use super::*;
    use crate::recipe::{Action, DepRef, Requirements};
    use std::collections::BTreeMap;
    use std::path::{Path, PathBuf};

    fn at(file: &str, line: usize) -> Location {
        Location { file: PathBuf::from(file), line, column: 1 }
    }

    /// A recipe named `name` in `name.toml`; deps written on lines 10, 11, ...
    pub(crate) fn recipe(name: &str, build: &[&str], runtime: &[&str]) -> Recipe {
        let file = format!("{name}.toml");
        let dep = |(i, n): (usize, &&str)| DepRef::new(*n, at(&file, 10 + i));
        Recipe {
            file: PathBuf::from(&file),
            name: name.to_string(),
            name_at: at(&file, 2),
            version: "1".into(),
            description: None,
            sources: Vec::new(),
            build_deps: build.iter().enumerate().map(dep).collect(),
            runtime_deps: runtime.iter().enumerate().map(|(i, n)| dep((i + build.len(), n))).collect(),
            env: BTreeMap::new(),
            action: Action::Build { script: "true".into(), shell: vec!["/bin/sh".into()] },
            requirements: Requirements::default(),
        }
    }

    pub(crate) fn graph(recipes: Vec<Recipe>) -> Result<Graph, GraphError> {
        Graph::resolve(Loaded { recipes, ..Loaded::default() })
    }

    fn names(g: &Graph, ids: &[NodeId]) -> Vec<String> {
        ids.iter().map(|&id| g.nodes[id].recipe.name.clone()).collect()
    }

    #[test]
    fn topo_order_puts_deps_first_and_breaks_ties_by_name() {
        let g = graph(vec![
            recipe("zlib", &["cc"], &[]),
            recipe("cc", &[], &[]),
            recipe("app", &["zlib"], &[]),
            recipe("bash", &[], &[]),
        ])
        .unwrap();
        assert_eq!(names(&g, g.topo_order()), ["bash", "cc", "zlib", "app"]);
        assert_eq!(g.node_by_name("zlib"), Some(0));
        assert_eq!(g.node_by_name("nope"), None);
    }

    #[test]
    fn input_closure_follows_runtime_edges_only_past_the_first_hop() {
        let g = graph(vec![
            recipe("app", &["gcc", "libfoo"], &[]),
            recipe("gcc", &["bootstrap"], &["binutils"]),
            recipe("binutils", &[], &["zlib"]),
            recipe("libfoo", &["cmake"], &["libbar"]),
            recipe("libbar", &[], &[]),
            recipe("zlib", &[], &[]),
            recipe("bootstrap", &[], &[]),
            recipe("cmake", &[], &[]),
        ])
        .unwrap();
        let closure = g.input_closure(g.node_by_name("app").unwrap());
        // Build deps of deps (bootstrap, cmake) stay out; runtime deps come in, deps first.
        assert_eq!(names(&g, &closure), ["libbar", "libfoo", "zlib", "binutils", "gcc"]);
        assert_eq!(names(&g, &g.input_closure(g.node_by_name("zlib").unwrap())), Vec::<String>::new());
    }

    /// `recipe(...)` with the dependency `dep` (build or runtime, first match) staged at `at`.
    fn staged(mut r: Recipe, dep: &str, at: &str) -> Recipe {
        let found = r.build_deps.iter_mut().chain(r.runtime_deps.iter_mut()).find(|d| d.name == dep && d.staged_at == Path::new("/"));
        found.expect("dep to stage").staged_at = PathBuf::from(at);
        r
    }

    fn placed(g: &Graph, id: NodeId) -> Vec<String> {
        g.staged_closure(id).iter().map(|s| format!("{}@{}", g.nodes[s.node].recipe.name, s.at.display())).collect()
    }

    #[test]
    fn staged_closure_places_runtime_closures_under_the_dependency() {
        let g = graph(vec![
            // gcc-pass1 sees glibc (and its runtime closure) in the sysroot, binutils at /.
            staged(recipe("gcc-pass1", &["binutils", "glibc"], &[]), "glibc", "/lfs"),
            recipe("binutils", &[], &["zlib"]),
            // glibc stages its runtime dep on headers at /opt/h: the two locations compose.
            staged(recipe("glibc", &[], &["headers", "zlib"]), "headers", "/opt/h"),
            recipe("headers", &[], &[]),
            recipe("zlib", &[], &[]),
        ])
        .unwrap();
        let gcc = g.node_by_name("gcc-pass1").unwrap();
        assert_eq!(placed(&g, gcc), ["headers@/lfs/opt/h", "zlib@/", "zlib@/lfs", "binutils@/", "glibc@/lfs"]);
        // input_closure lists each node once, in the same order.
        assert_eq!(names(&g, &g.input_closure(gcc)), ["headers", "zlib", "binutils", "glibc"]);
        // Unstaged graphs give the same closures as before (every location `/`).
        let glibc = g.node_by_name("glibc").unwrap();
        assert_eq!(placed(&g, glibc), ["headers@/opt/h", "zlib@/"]);
    }

    #[test]
    fn the_same_dependency_may_be_staged_twice_and_identical_pairs_dedupe() {
        let mut r = recipe("app", &["lib", "lib", "lib"], &["lib"]);
        r.build_deps[1].staged_at = PathBuf::from("/sysroot");
        let g = graph(vec![r, recipe("lib", &[], &["rt"]), recipe("rt", &[], &[])]).unwrap();
        let app = g.node_by_name("app").unwrap();
        assert_eq!(placed(&g, app), ["rt@/", "rt@/sysroot", "lib@/", "lib@/sysroot"]);
        assert_eq!(names(&g, &g.input_closure(app)), ["rt", "lib"]);
        // Staging changes what is placed, never the build order.
        assert_eq!(names(&g, g.topo_order()), ["rt", "lib", "app"]);
    }

    #[test]
    fn duplicate_names_report_both_places() {
        let mut second = recipe("a", &[], &[]);
        second.name_at = at("other.toml", 3);
        let err = graph(vec![recipe("a", &[], &[]), second]).unwrap_err();
        assert_eq!(err.to_string(), "other.toml:3:1: duplicate package name \"a\" (also defined at a.toml:2:1)");
    }

    #[test]
    fn unknown_dependency_names_the_place_and_suggests() {
        let err = graph(vec![recipe("app", &["binutlis", "qqq"], &[]), recipe("binutils", &[], &[])]).unwrap_err();
        assert_eq!(
            err.to_string(),
            "app.toml:10:1: package \"app\" depends on \"binutlis\", which no loaded recipe defines; did you mean \"binutils\"?\n\
             app.toml:11:1: package \"app\" depends on \"qqq\", which no loaded recipe defines"
        );
    }

    #[test]
    fn cycles_are_reported_member_by_member() {
        let err = graph(vec![
            recipe("c", &[], &["a"]),
            recipe("b", &["c"], &[]),
            recipe("a", &["b"], &[]),
            recipe("ok", &["a"], &[]),
            recipe("self", &["self"], &[]),
        ])
        .unwrap_err();
        assert_eq!(err.problems.len(), 2);
        assert_eq!(
            err.problems[0],
            GraphProblem::Cycle { members: vec!["a".into(), "b".into(), "c".into(), "a".into()], at: at("a.toml", 10) }
        );
        assert_eq!(err.problems[1].to_string(), "self.toml:10:1: dependency cycle: self -> self");
    }

    #[test]
    fn cycle_report_picks_a_shortest_cycle_in_the_component() {
        // a -> b -> a and a -> c -> d -> a share one component.
        let err = graph(vec![
            recipe("a", &["c", "b"], &[]),
            recipe("b", &["a"], &[]),
            recipe("c", &["d"], &[]),
            recipe("d", &["a"], &[]),
        ])
        .unwrap_err();
        assert_eq!(err.to_string(), "a.toml:11:1: dependency cycle: a -> b -> a");
    }

    #[test]
    fn restrict_keeps_the_dependency_closure() {
        let mut loaded = Loaded {
            recipes: vec![recipe("app", &["lib"], &[]), recipe("lib", &[], &["rt"]), recipe("rt", &[], &[]), recipe("other", &[], &[])],
            ..Loaded::default()
        };
        loaded.targets.push(Target {
            file: PathBuf::from("set.toml"),
            name: "all".into(),
            is_set: true,
            packages: vec!["app".into(), "lib".into(), "rt".into(), "other".into()],
        });
        let g = Graph::resolve(loaded).unwrap();
        let r = g.restrict(&["lib"]).unwrap();
        assert_eq!(names(&r, r.topo_order()), ["rt", "lib"]);
        assert_eq!(r.targets[0].packages, ["lib"]);
        let err = g.restrict(&["apq"]).unwrap_err();
        assert_eq!(err.to_string(), "no package named \"apq\" in the loaded recipes; did you mean \"app\"?");
    }

    #[test]
    fn available_outputs_do_not_need_their_build_inputs() {
        // app builds with cc and runs with lib; lib builds with cc and runs with rt.
        let mut loaded = Loaded {
            recipes: vec![
                recipe("app", &["cc"], &["lib"]),
                recipe("lib", &["cc"], &["rt"]),
                recipe("rt", &["cc"], &[]),
                recipe("cc", &[], &[]),
            ],
            ..Loaded::default()
        };
        loaded.targets.push(Target { file: PathBuf::from("app.toml"), name: "app".into(), is_set: false, packages: vec!["app".into()] });
        let g = Graph::resolve(loaded).unwrap();
        let id = |n: &str| g.node_by_name(n).unwrap();
        let needed_names = |available: &[&str]| {
            let flags: Vec<bool> = (0..g.nodes.len()).map(|i| available.contains(&g.nodes[i].recipe.name.as_str())).collect();
            let needed = g.needed(&flags);
            let mut names: Vec<&str> = (0..g.nodes.len()).filter(|&i| needed[i]).map(|i| g.nodes[i].recipe.name.as_str()).collect();
            names.sort_unstable();
            names
        };
        assert_eq!(g.wanted(), [id("app")]);
        // Nothing available: everything is built.
        assert_eq!(needed_names(&[]), ["app", "cc", "lib", "rt"]);
        // app and its runtime closure available: the compiler is not needed.
        assert_eq!(needed_names(&["app", "lib", "rt"]), ["app", "lib", "rt"]);
        // rt missing: it must be built, so the compiler comes back.
        assert_eq!(needed_names(&["app", "lib"]), ["app", "cc", "lib", "rt"]);
        // app missing: its whole input closure is needed, available or not.
        assert_eq!(needed_names(&["lib", "rt", "cc"]), ["app", "cc", "lib", "rt"]);
    }

    #[test]
    fn dependency_chains_are_shortest_and_typed() {
        let g = graph(vec![
            recipe("app", &["cc"], &["lib"]),
            recipe("lib", &["cc"], &["rt"]),
            recipe("rt", &[], &[]),
            recipe("cc", &[], &[]),
        ])
        .unwrap();
        let id = |n: &str| g.node_by_name(n).unwrap();
        let chain = |a: &str, b: &str| {
            g.dependency_chain(id(a), id(b)).map(|c| c.iter().map(|(n, k)| format!("{}:{k:?}", g.nodes[*n].recipe.name)).collect::<Vec<_>>())
        };
        // The kind on each element is that of its dependency on the next.
        assert_eq!(chain("app", "rt").unwrap(), ["app:Some(Runtime)", "lib:Some(Runtime)", "rt:None"]);
        assert_eq!(chain("app", "cc").unwrap(), ["app:Some(Build)", "cc:None"]);
        assert_eq!(chain("rt", "app"), None);
        assert_eq!(chain("lib", "lib").unwrap(), ["lib:None"]);
    }

    #[test]
    fn deep_chains_resolve_without_recursion() {
        let n = 20_000;
        let names: Vec<String> = (0..n).map(|i| format!("p{i}")).collect();
        let recipes = (0..n)
            .map(|i| if i == 0 { recipe(&names[i], &[], &[]) } else { recipe(&names[i], &[&names[i - 1]], &[]) })
            .collect();
        let g = graph(recipes).unwrap();
        assert_eq!(g.topo_order().len(), n);
        assert_eq!(g.topo_order()[n - 1], n - 1);
        assert_eq!(g.input_closure(n - 1), [n - 2]);
        // Closing the chain into a ring must be found without recursing 20,000 deep.
        let mut recipes: Vec<Recipe> = g.nodes.into_iter().map(|node| node.recipe).collect();
        recipes[0] = recipe(&names[0], &[&names[n - 1]], &[]);
        let err = graph(recipes).unwrap_err();
        assert!(matches!(&err.problems[0], GraphProblem::Cycle { members, .. } if members.len() == n + 1));
    }

    #[test]
    fn edit_distance_is_levenshtein() {
        assert_eq!(edit_distance("kitten", "sitting"), 3);
        assert_eq!(edit_distance("", "abc"), 3);
        assert_eq!(edit_distance("gcc", "gcc"), 0);
    }
}
