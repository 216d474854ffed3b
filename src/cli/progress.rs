//! Build progress: a live display on a terminal, plain lines otherwise, JSON events
//! with `--json`. Implements the executor's [`Observer`].

use std::collections::HashMap;
use std::io::IsTerminal;
use std::path::Path;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use indicatif::{HumanDuration, MultiProgress, ProgressBar, ProgressDrawTarget, ProgressState, ProgressStyle};
use serde_json::json;

use super::emit_json;
use crate::executor::{Category, Event, NodeResult, Observer, Realised, Report};
use crate::graph::{Graph, NodeId};

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Mode {
    /// Live bars on stderr.
    Terminal,
    /// One line per started/finished build on stderr.
    Plain,
    /// One JSON object per event on stdout.
    Json,
}

pub fn detect_mode() -> Mode {
    if std::io::stderr().is_terminal() && std::env::var_os("TERM").is_some_and(|t| t != "dumb") {
        Mode::Terminal
    } else {
        Mode::Plain
    }
}

pub struct Reporter {
    mode: Mode,
    total: usize,
    state: Mutex<State>,
    eta: Arc<Mutex<Eta>>,
}

/// The remaining-work model behind the live ETA, the same as `forge status` uses: each package
/// still to build is expected to take its recorded median time, minus what a running one has
/// spent, spread over the jobs.
#[derive(Default)]
struct Eta {
    jobs: u64,
    /// Expected milliseconds of every node (0: unknown).
    expected: Vec<u64>,
    queued: HashMap<NodeId, u64>,
    running: HashMap<NodeId, (Instant, u64)>,
}

impl Eta {
    fn remaining(&self) -> Option<Duration> {
        if self.queued.values().chain(self.running.values().map(|(_, e)| e)).all(|&e| e == 0) {
            return None; // nothing recorded yet: no basis for an estimate
        }
        let queued = self.queued.values().map(|&e| (e, 0));
        let running = self.running.values().map(|(start, e)| (*e, start.elapsed().as_millis() as u64));
        Some(Duration::from_millis(remaining_ms(queued.chain(running), self.jobs)))
    }
}

/// The ETA model of `forge build` and `forge status`: for each package still to build, its
/// expected time minus what it has already run (`(expected, elapsed)` in ms), spread over `jobs`.
pub fn remaining_ms(work: impl IntoIterator<Item = (u64, u64)>, jobs: u64) -> u64 {
    work.into_iter().map(|(expected, elapsed)| expected.saturating_sub(elapsed)).sum::<u64>() / jobs.max(1)
}

struct State {
    finished: usize,
    multi: Option<MultiProgress>,
    overall: Option<ProgressBar>,
    running: HashMap<NodeId, ProgressBar>,
    /// Per node, the 8 MiB bucket of the last plain-mode download line.
    fetch_lines: HashMap<NodeId, u64>,
}

impl Reporter {
    pub fn new(mode: Mode, total: usize) -> Reporter {
        let eta = Arc::new(Mutex::new(Eta::default()));
        let (multi, overall) = if mode == Mode::Terminal {
            let multi = MultiProgress::with_draw_target(ProgressDrawTarget::stderr_with_hz(8));
            let bar = multi.add(ProgressBar::new(total as u64));
            let model = Arc::clone(&eta);
            let style = ProgressStyle::with_template("[{elapsed_precise}] {bar:30} {pos}/{len} done, ETA {recorded_eta}  {msg}")
                .map(|s| {
                    s.with_key("recorded_eta", move |state: &ProgressState, w: &mut dyn std::fmt::Write| {
                        let remaining = model.lock().ok().and_then(|m| m.remaining()).unwrap_or_else(|| state.eta());
                        let _ = write!(w, "{}", HumanDuration(remaining));
                    })
                })
                .unwrap_or_else(|_| ProgressStyle::default_bar());
            bar.set_style(style);
            bar.enable_steady_tick(Duration::from_millis(250));
            (Some(multi), Some(bar))
        } else {
            (None, None)
        };
        Reporter {
            mode,
            total,
            state: Mutex::new(State { finished: 0, multi, overall, running: HashMap::new(), fetch_lines: HashMap::new() }),
            eta,
        }
    }

    /// What the ETA expects: each node's expected milliseconds (the nodes to build come with
    /// the executor's `Planned` event).
    pub fn expect(&self, expected: Vec<u64>, jobs: usize) {
        if let Ok(mut eta) = self.eta.lock() {
            eta.jobs = jobs as u64;
            eta.expected = expected;
        }
    }

    fn track(&self, node: NodeId, started: bool) {
        if let Ok(mut eta) = self.eta.lock() {
            let expected = eta.queued.remove(&node).or_else(|| eta.running.remove(&node).map(|(_, e)| e));
            if let (true, Some(expected)) = (started, expected) {
                eta.running.insert(node, (Instant::now(), expected));
            }
        }
    }

    /// Clear the live display before the summary is printed.
    pub fn finish(&self) {
        let Ok(mut state) = self.state.lock() else { return };
        for (_, bar) in state.running.drain() {
            bar.finish_and_clear();
        }
        if let Some(bar) = state.overall.take() {
            bar.finish_and_clear();
        }
    }

    fn line(&self, state: &State, text: String) {
        match &state.multi {
            Some(multi) => {
                let _ = multi.println(text);
            }
            None => eprintln!("{text}"),
        }
    }
}

impl Observer for Reporter {
    fn event(&self, event: Event<'_>) {
        match &event {
            Event::Planned { to_build } => {
                if let Ok(mut eta) = self.eta.lock() {
                    let queued = to_build.iter().map(|&id| (id, eta.expected.get(id).copied().unwrap_or(0))).collect();
                    eta.queued = queued;
                }
                return;
            }
            Event::Started { node, .. } => self.track(*node, true),
            Event::Finished { node, .. } => self.track(*node, false),
            _ => {}
        }
        let Ok(mut state) = self.state.lock() else { return };
        match event {
            Event::Planned { .. } => {}
            Event::Started { node, name, drv, .. } => match self.mode {
                Mode::Json => emit_json(json!({"event": "started", "name": name, "drv": drv.to_hex()})),
                Mode::Plain => eprintln!("[{}/{}] building {name}", state.finished, self.total),
                Mode::Terminal => {
                    if let Some(multi) = &state.multi {
                        let bar = multi.add(ProgressBar::new_spinner());
                        bar.set_style(
                            ProgressStyle::with_template("  {spinner} {prefix} [{elapsed}] {wide_msg}")
                                .unwrap_or_else(|_| ProgressStyle::default_spinner()),
                        );
                        bar.set_prefix(name.to_string());
                        bar.enable_steady_tick(Duration::from_millis(200));
                        state.running.insert(node, bar);
                    }
                }
            },
            Event::Waiting { node, name } => match self.mode {
                Mode::Json => emit_json(json!({"event": "waiting", "name": name})),
                Mode::Plain => eprintln!("waiting for another forge process building {name}"),
                Mode::Terminal => {
                    if let Some(bar) = state.running.get(&node) {
                        bar.set_message("waiting for another forge process");
                    }
                }
            },
            Event::Fetching { node, name, file, bytes, total } => {
                let text = match total {
                    Some(t) => format!("fetching {file}: {} / {} KiB", bytes >> 10, t >> 10),
                    None => format!("fetching {file}: {} KiB", bytes >> 10),
                };
                match self.mode {
                    Mode::Json => {} // too chatty for a machine stream; the node's events suffice
                    Mode::Plain => {
                        // One line per 8 MiB downloaded, and one at the end.
                        let bucket = bytes >> 23;
                        let last = state.fetch_lines.insert(node, bucket);
                        if total == Some(bytes) || last.is_none_or(|b| b != bucket) {
                            eprintln!("{name}: {text}");
                        }
                    }
                    Mode::Terminal => {
                        if let Some(bar) = state.running.get(&node) {
                            bar.set_message(text);
                        }
                    }
                }
            }
            Event::Finished { node, name, drv, result } => {
                state.finished += 1;
                if let Some(bar) = state.overall.as_ref() {
                    bar.set_position(state.finished as u64);
                }
                if let Some(bar) = state.running.remove(&node) {
                    bar.finish_and_clear();
                }
                if self.mode == Mode::Json {
                    emit_json(json_event(name, &drv.to_hex(), result));
                    return;
                }
                let text = match result {
                    NodeResult::Done { out, how: Realised::Built, duration, .. } => {
                        format!("built {name} in {:.1}s -> {}", duration.as_secs_f64(), out.short())
                    }
                    NodeResult::Done { .. } | NodeResult::NotNeeded => return,
                    NodeResult::Failed { error, category, .. } => format!("FAILED {name}: {}: {error}", category.as_str()),
                    NodeResult::Skipped { reason } => format!("skipped {name}: {reason}"),
                };
                let text = if self.mode == Mode::Plain {
                    format!("[{}/{}] {text}", state.finished, self.total)
                } else {
                    text
                };
                self.line(&state, text);
            }
        }
    }
}

fn json_event(name: &str, drv: &str, result: &NodeResult) -> serde_json::Value {
    match result {
        NodeResult::Done { out, how, duration, .. } => json!({
            "event": how.as_str(), "name": name, "drv": drv, "out": out.to_hex(),
            "cutoff": *how == Realised::Cutoff, "seconds": duration.as_secs_f64(),
        }),
        NodeResult::Failed { error, log, category } => json!({
            "event": "failed", "name": name, "drv": drv, "out": null, "error": error, "category": category,
            "log": log.as_ref().map(|l| l.display().to_string()),
        }),
        NodeResult::Skipped { reason } => json!({
            "event": "skipped", "name": name, "drv": drv, "out": null, "reason": reason, "category": Category::Dependency,
        }),
        NodeResult::NotNeeded => json!({
            "event": "not-needed", "name": name, "drv": drv, "out": null,
            "reason": "only a build input of outputs already in the store",
        }),
    }
}

/// How the nodes of a run ended, by kind.
#[derive(Debug, Clone, Copy, serde::Serialize)]
pub struct Counts {
    pub built: usize,
    /// Found in the store, by drv hash or by resolved key.
    pub cached: usize,
    pub substituted: usize,
    pub failed: usize,
    pub skipped: usize,
    pub not_needed: usize,
}

impl Counts {
    pub fn of(report: &Report) -> Counts {
        let done = |how: Realised| report.count(|r| matches!(r, NodeResult::Done { how: h, .. } if *h == how));
        Counts {
            built: done(Realised::Built),
            cached: done(Realised::Cached) + done(Realised::Cutoff),
            substituted: done(Realised::Substituted),
            failed: report.failed(),
            skipped: report.count(|r| matches!(r, NodeResult::Skipped { .. })),
            not_needed: report.count(|r| matches!(r, NodeResult::NotNeeded)),
        }
    }
}

/// The human summary after a build: counts, then each failure with the tail of its log.
pub fn print_summary(graph: &Graph, report: &Report, counts: Counts) {
    let Counts { built, cached, substituted, failed, skipped, not_needed } = counts;
    for (node, result) in report.results.iter().enumerate() {
        if let NodeResult::Failed { error, log, category } = result {
            let name = &graph.nodes[node].recipe.name;
            eprintln!("\nerror: {name} failed ({}): {error}", category.as_str());
            if let Some(log) = log {
                print_log_tail(log, 20);
                eprintln!("full log: {} (or: forge log {name})", log.display());
            }
        }
    }
    let mut summary = format!("{built} built, {cached} cached");
    if substituted > 0 {
        summary.push_str(&format!(", {substituted} substituted"));
    }
    if failed > 0 {
        summary.push_str(&format!(", {failed} failed"));
    }
    if skipped > 0 {
        summary.push_str(&format!(", {skipped} not built because of a failure"));
    }
    if not_needed > 0 {
        summary.push_str(&format!(", {not_needed} not needed (build inputs of outputs already here)"));
    }
    eprintln!("{summary}");
}

fn print_log_tail(log: &Path, lines: usize) {
    let Ok(text) = std::fs::read(log) else { return };
    let text = String::from_utf8_lossy(&text);
    let all: Vec<&str> = text.lines().collect();
    let start = all.len().saturating_sub(lines);
    if start < all.len() {
        eprintln!("last {} lines of the log:", all.len() - start);
    }
    for line in &all[start..] {
        eprintln!("  | {line}");
    }
}
