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
use crate::graph::Graph;
use crate::store::{now_ms, RunId, RunNode, Store};

pub struct Recorder<'a> {
    store: &'a Store,
    run: RunId,
    graph: &'a Graph,
    plan: &'a Plan,
    inner: &'a dyn Observer,
    warned: AtomicBool,
    pending: Mutex<Vec<RunNode>>,
}

/// Pending rows written at once when this many have accumulated.
const BATCH: usize = 1000;

impl<'a> Recorder<'a> {
    /// Record run `run` of `graph`; the nodes to build are entered as `queued` when the
    /// executor says which they are.
    pub fn new(store: &'a Store, run: RunId, graph: &'a Graph, plan: &'a Plan, inner: &'a dyn Observer) -> Recorder<'a> {
        Recorder { store, run, graph, plan, inner, warned: AtomicBool::new(false), pending: Mutex::new(Vec::new()) }
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

    fn write(&self, rows: &[RunNode]) {
        if let Err(e) = self.store.record_run_nodes(self.run, rows) {
            // Recording is for observability: a failure to write it never fails the build.
            if !self.warned.swap(true, Ordering::Relaxed) {
                eprintln!("forge: warning: cannot record this run's progress in the store ({e}); the build goes on");
            }
        }
    }
}

fn node(name: &str, drv: &crate::hash::Digest) -> RunNode {
    RunNode {
        name: name.to_string(),
        drv_hash: *drv,
        result: String::new(),
        started_ms: None,
        finished_ms: None,
        worker: None,
        peak_memory: None,
        out_hash: None,
        out_size: None,
        error: None,
    }
}

impl Observer for Recorder<'_> {
    fn event(&self, event: Event<'_>) {
        match &event {
            Event::Planned { to_build } => {
                let (graph, plan) = (self.graph, self.plan);
                let queued: Vec<RunNode> =
                    to_build.iter().map(|&id| RunNode { result: "queued".into(), ..node(&graph.nodes[id].recipe.name, &plan.drv_hashes[id]) }).collect();
                self.write(&queued);
            }
            Event::Started { name, drv, worker, .. } => {
                self.record(RunNode { result: "running".into(), started_ms: Some(now_ms()), worker: Some(*worker as u64), ..node(name, drv) }, true);
            }
            Event::Finished { name, drv, result, .. } => {
                let now = now_ms();
                let recorded = match result {
                    NodeResult::Done { out, how, duration, peak_memory } => RunNode {
                        result: how.as_str().into(),
                        started_ms: Some(now - duration.as_millis() as i64),
                        finished_ms: Some(now),
                        peak_memory: *peak_memory,
                        out_hash: Some(*out),
                        ..node(name, drv)
                    },
                    NodeResult::Failed { error, category, .. } => RunNode {
                        result: "failed".into(),
                        finished_ms: Some(now),
                        error: Some(format!("{}: {error}", category.as_str())),
                        ..node(name, drv)
                    },
                    NodeResult::Skipped { reason } => {
                        RunNode { result: "skipped".into(), error: Some(reason.clone()), ..node(name, drv) }
                    }
                    NodeResult::NotNeeded => RunNode { result: "not-needed".into(), ..node(name, drv) },
                };
                let ran = matches!(result, NodeResult::Done { how: Realised::Built, .. } | NodeResult::Failed { .. });
                self.record(recorded, ran);
            }
            Event::Waiting { .. } | Event::Fetching { .. } => {}
        }
        self.inner.event(event);
    }
}
