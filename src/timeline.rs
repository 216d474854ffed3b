//! A recorded build run as a timeline (docs/observability.md): its nodes with their times and
//! workers, the dependency edges between them (read back from the derivations in the store),
//! the critical path, and a Chrome trace that chrome://tracing and Perfetto open.

use std::collections::HashMap;

use serde_json::json;

use crate::derivation::{Derivation, InputId};
use crate::store::{Run, RunId, RunNode, Store, StoreError};

pub struct Timeline {
    pub run: Run,
    pub nodes: Vec<RunNode>,
    /// `deps[i]`: indexes into `nodes` of node i's inputs that are part of this run.
    pub deps: Vec<Vec<usize>>,
}

impl Timeline {
    /// Load run `id` (or the newest) from the store.
    pub fn load(store: &Store, id: Option<RunId>) -> Result<Option<Timeline>, StoreError> {
        let Some(run) = store.run(id)? else { return Ok(None) };
        let nodes = store.run_nodes(run.id)?;
        let index: HashMap<_, usize> = nodes.iter().enumerate().map(|(i, n)| (n.drv_hash, i)).collect();
        let mut deps = Vec::with_capacity(nodes.len());
        for node in &nodes {
            let drv = store.derivation(&node.drv_hash)?.and_then(|bytes| Derivation::from_canonical(&bytes).ok());
            let inputs = drv.map(|d| d.inputs).unwrap_or_default();
            deps.push(
                inputs
                    .iter()
                    .filter_map(|i| match i.id {
                        InputId::Drv(h) => index.get(&h).copied(),
                        InputId::Out(_) => None,
                    })
                    .collect(),
            );
        }
        Ok(Some(Timeline { run, nodes, deps }))
    }

    /// Milliseconds a node took in this run (0 when it did not run: cached, skipped...).
    pub fn duration_ms(&self, i: usize) -> i64 {
        self.nodes[i].duration_ms().unwrap_or(0).max(0)
    }

    /// The chain of dependencies with the largest total duration, first to last: what bounded
    /// the run's wall time however many workers it had.
    pub fn critical_path(&self) -> Vec<usize> {
        // Longest path ending at each node, memoized; inputs form a DAG.
        let n = self.nodes.len();
        let mut best: Vec<Option<(i64, Option<usize>)>> = vec![None; n];
        fn visit(t: &Timeline, i: usize, best: &mut Vec<Option<(i64, Option<usize>)>>) -> i64 {
            if let Some((total, _)) = best[i] {
                return total;
            }
            best[i] = Some((0, None)); // a cycle cannot occur; this only guards against bad data
            let mut via = None;
            let mut longest = 0;
            for &d in &t.deps[i] {
                let total = visit(t, d, best);
                if total > longest {
                    longest = total;
                    via = Some(d);
                }
            }
            let total = longest + t.duration_ms(i);
            best[i] = Some((total, via));
            total
        }
        let Some(end) = (0..n).max_by_key(|&i| (visit(self, i, &mut best), std::cmp::Reverse(i))) else { return Vec::new() };
        let mut path = vec![end];
        while let Some((_, Some(prev))) = best[*path.last().expect("non-empty")] {
            path.push(prev);
        }
        path.reverse();
        path
    }

    /// The run in the Trace Event Format: one complete event per node that ran, on the thread
    /// of its worker; zero-length instants for the rest.
    pub fn chrome_trace(&self) -> serde_json::Value {
        let start = self.run.started_ms;
        let events: Vec<serde_json::Value> = self
            .nodes
            .iter()
            .filter_map(|n| {
                let (s, f) = (n.started_ms?, n.finished_ms?);
                Some(json!({
                    "name": n.name, "cat": n.result, "ph": "X", "pid": self.run.id,
                    "tid": n.worker.unwrap_or(0), "ts": (s - start) * 1000, "dur": (f - s).max(0) * 1000,
                    "args": {"drv": n.drv_hash.to_hex(), "out": n.out_hash.map(|o| o.to_hex()),
                             "peak_memory": n.peak_memory, "out_size": n.out_size, "error": n.error},
                }))
            })
            .collect();
        let meta = json!({"name": "process_name", "ph": "M", "pid": self.run.id,
            "args": {"name": format!("forge build {}: {}", self.run.id, self.run.targets)}});
        json!({"traceEvents": std::iter::once(meta).chain(events).collect::<Vec<_>>(), "displayTimeUnit": "ms"})
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::hash::Digest;

    fn node(name: &str, start: i64, end: i64) -> RunNode {
        RunNode {
            name: name.into(),
            drv_hash: Digest([name.as_bytes()[0]; 32]),
            result: "built".into(),
            started_ms: Some(start),
            finished_ms: Some(end),
            worker: Some(0),
            peak_memory: None,
            out_hash: None,
            out_size: None,
            error: None,
            expected_ms: None,
            phase: None,
            sbu_hint: None,
        }
    }

    #[test]
    fn the_critical_path_is_the_longest_chain_by_duration() {
        // a(10) <- b(50) <- d(5); a <- c(20) <- d. Longest chain: a, b, d = 65.
        let run = Run { id: 1, started_ms: 0, finished_ms: Some(70), targets: "t".into(), total: 4, jobs: 2, pid: 1, host: "h".into(), status: "succeeded".into() };
        let nodes = vec![node("a", 0, 10), node("b", 10, 60), node("c", 10, 30), node("d", 60, 65)];
        let t = Timeline { run, nodes, deps: vec![vec![], vec![0], vec![0], vec![1, 2]] };
        assert_eq!(t.critical_path(), [0, 1, 3]);
        let trace = t.chrome_trace();
        let events = trace["traceEvents"].as_array().unwrap();
        assert_eq!(events.len(), 5);
        assert_eq!((events[2]["name"].as_str(), events[2]["ts"].as_i64(), events[2]["dur"].as_i64()), (Some("b"), Some(10_000), Some(50_000)));
    }
}
