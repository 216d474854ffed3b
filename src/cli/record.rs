//! Recording a build run in the store as it goes (docs/observability.md): an [`Observer`]
//! that writes each node's start and result to `run_nodes`, then passes the event on to the
//! progress display. What it records is what `forge status`, `forge history` and
//! `forge report` read.

use std::sync::atomic::{AtomicBool, Ordering};

use crate::derivation::Plan;
use crate::executor::{self, Event, NodeResult, Observer, Status};
use crate::graph::Graph;
use crate::store::{now_ms, RunId, RunNode, Store};

pub struct Recorder<'a> {
    store: &'a Store,
    run: RunId,
    inner: &'a dyn Observer,
    warned: AtomicBool,
}

impl<'a> Recorder<'a> {
    /// Start recording run `run`: the nodes that will be built are entered as `queued`.
    pub fn new(store: &'a Store, run: RunId, graph: &Graph, plan: &Plan, status: &[Status], inner: &'a dyn Observer) -> Recorder<'a> {
        let recorder = Recorder { store, run, inner, warned: AtomicBool::new(false) };
        for (id, s) in status.iter().enumerate() {
            if matches!(s, Status::ToBuild(_)) {
                recorder.record(RunNode { result: "queued".into(), ..node(&graph.nodes[id].recipe.name, &plan.drv_hashes[id]) });
            }
        }
        recorder
    }

    fn record(&self, node: RunNode) {
        if let Err(e) = self.store.record_run_node(self.run, &node) {
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
            Event::Started { name, drv, worker, .. } => {
                self.record(RunNode { result: "running".into(), started_ms: Some(now_ms()), worker: Some(*worker as u64), ..node(name, drv) });
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
                self.record(recorded);
            }
            Event::Waiting { .. } | Event::Fetching { .. } => {}
        }
        self.inner.event(event);
    }
}

/// The status of every node before the run, for [`Recorder::new`].
pub fn plan_status(store: &Store, graph: &Graph, plan: &Plan) -> Vec<Status> {
    executor::assess(store, graph, plan, &Default::default()).unwrap_or_default()
}
