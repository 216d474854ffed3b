//! Recording a build run in the store as it goes (docs/observability.md): an [`Observer`]
//! that writes each node's start and result to `run_nodes`, then passes the event on to the
//! progress display. What it records is what `forge status`, `forge history` and
//! `forge report` read.
//!
//! Nodes that did not run (cached, not needed, skipped) are written in batches, together with
//! the next node that starts or ends a build and at the end: a no-op build of 10,000 nodes
//! must not cost 10,000 transactions.

use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Mutex;

use crate::derivation::Plan;
use crate::executor::{Event, NodeResult, Observer, Realised};
use crate::graph::{Graph, NodeId};
use crate::store::{now_ms, RunId, RunNode, Store};

pub struct Recorder<'a> {
    store: &'a Store,
    run: RunId,
    graph: &'a Graph,
    plan: &'a Plan,
    /// Each node's expected build time (by node id), recorded with it when queued.
    expected_ms: &'a [u64],
    inner: &'a dyn Observer,
    warned: AtomicBool,
    pending: Mutex<Vec<RunNode>>,
}

/// Pending rows written at once when this many have accumulated.
const BATCH: usize = 1000;

impl<'a> Recorder<'a> {
    /// Record run `run` of `graph`; the nodes to build are entered as `queued`, with their
    /// expected time and phase, when the executor says which they are.
    pub fn new(store: &'a Store, run: RunId, graph: &'a Graph, plan: &'a Plan, expected_ms: &'a [u64], inner: &'a dyn Observer) -> Recorder<'a> {
        Recorder { store, run, graph, plan, expected_ms, inner, warned: AtomicBool::new(false), pending: Mutex::new(Vec::new()) }
    }

    /// Record `row` with everything pending now (`urgent`: a build started or ended), or
    /// later in a batch.
    fn record(&self, row: RunNode, urgent: bool) {
        let Ok(mut pending) = self.pending.lock() else { return };
        pending.push(row);
        if urgent || pending.len() >= BATCH {
            let rows = std::mem::take(&mut *pending);
            drop(pending);
            self.write(&rows);
        }
    }

    /// Write what is pending (at the end of the run).
    pub fn flush(&self) {
        let rows = self.pending.lock().map(|mut p| std::mem::take(&mut *p)).unwrap_or_default();
        self.write(&rows);
    }

    /// Node `id`'s row, with what the run knows of it before it runs.
    fn row(&self, id: NodeId, result: &str) -> RunNode {
        let recipe = &self.graph.nodes[id].recipe;
        RunNode {
            name: recipe.name.clone(),
            drv_hash: self.plan.drv_hashes[id],
            result: result.to_string(),
            started_ms: None,
            finished_ms: None,
            worker: None,
            peak_memory: None,
            out_hash: None,
            out_size: None,
            error: None,
            expected_ms: self.expected_ms.get(id).copied(),
            phase: Some(recipe.phase()),
            sbu_hint: recipe.requirements.sbu,
        }
    }

    fn write(&self, rows: &[RunNode]) {
        if let Err(e) = self.store.record_run_nodes(self.run, rows) {
            // Recording is for observability: a failure to write it never fails the build.
            if !self.warned.swap(true, Ordering::Relaxed) {
                eprintln!("forge: warning: cannot record this run's progress in the store ({e}); the build goes on");
            }
        }
    }
}

impl Observer for Recorder<'_> {
    fn event(&self, event: Event<'_>) {
        match &event {
            Event::Planned { to_build } => {
                let queued: Vec<RunNode> = to_build.iter().map(|&id| self.row(id, "queued")).collect();
                self.write(&queued);
            }
            Event::Started { node, worker, .. } => {
                self.record(RunNode { started_ms: Some(now_ms()), worker: Some(*worker as u64), ..self.row(*node, "running") }, true);
            }
            Event::Finished { node, result, .. } => {
                let now = now_ms();
                let recorded = match result {
                    NodeResult::Done { out, how, duration, peak_memory } => RunNode {
                        started_ms: Some(now - duration.as_millis() as i64),
                        finished_ms: Some(now),
                        peak_memory: *peak_memory,
                        out_hash: Some(*out),
                        ..self.row(*node, how.as_str())
                    },
                    NodeResult::Failed { error, category, .. } => RunNode {
                        finished_ms: Some(now),
                        error: Some(format!("{}: {error}", category.as_str())),
                        ..self.row(*node, "failed")
                    },
                    NodeResult::Skipped { reason } => RunNode { error: Some(reason.clone()), ..self.row(*node, "skipped") },
                    NodeResult::NotNeeded => self.row(*node, "not-needed"),
                };
                let ran = matches!(result, NodeResult::Done { how: Realised::Built, .. } | NodeResult::Failed { .. });
                self.record(recorded, ran);
            }
            Event::Waiting { .. } | Event::Fetching { .. } => {}
        }
        self.inner.event(event);
    }
}
