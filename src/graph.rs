//! The dependency graph: name resolution across the loaded closure, duplicate
//! names, unknown dependencies, cycles (reported member by member), order.

use crate::recipe::{Loaded, Recipe, Target};

/// Index into [`Graph::nodes`].
pub type NodeId = usize;

#[derive(Debug)]
pub struct Node {
    pub recipe: Recipe,
    pub build_deps: Vec<NodeId>,
    pub runtime_deps: Vec<NodeId>,
}

#[derive(Debug)]
pub struct Graph {
    pub nodes: Vec<Node>,
    pub targets: Vec<Target>,
    // private: name index, topological order
}

// API (implemented in this module):
//   Graph::resolve(loaded: Loaded) -> Result<Graph, GraphError>
//   graph.node_by_name(&str) -> Option<NodeId>
//   graph.topo_order() -> &[NodeId]            dependencies before dependents, ties by name
//   graph.input_closure(id) -> Vec<NodeId>     what the sandbox of `id` contains: build and
//                                              runtime deps plus their runtime closure, in a
//                                              deterministic layering order (deps first)
//   graph.restrict(&[names]) -> Result<Graph, GraphError>   keep the closure of these packages
