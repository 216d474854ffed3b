//! `forge fetch FILE...`: make every url/deb source of the closure present in the store,
//! downloading in parallel with progress; failures are listed and exit 1, others still land.

use std::collections::HashSet;
use std::path::PathBuf;
use std::sync::Mutex;
use std::time::Duration;

use clap::Args;
use indicatif::{MultiProgress, ProgressBar, ProgressDrawTarget, ProgressStyle};

use super::progress::{self, Mode};
use super::{load_graph, CliResult, GlobalArgs, OverlayArgs, EXIT_FAILED, EXIT_OK};
use crate::recipe::SourceKind;
use crate::source::{self, FetchEvent, FetchItem, FetchOutcome};

#[derive(Args, Debug)]
pub struct FetchArgs {
    /// Recipe or set files whose sources to fetch
    #[arg(required = true, value_name = "FILE")]
    files: Vec<PathBuf>,
    /// Fetch only for these packages (and what they depend on) out of FILEs
    #[arg(short, long = "package", value_name = "NAME")]
    packages: Vec<String>,
    /// Downloads to run at once
    #[arg(short, long, value_name = "N", default_value_t = 4)]
    jobs: usize,
    #[command(flatten)]
    overlays: OverlayArgs,
}

pub fn run(global: &GlobalArgs, args: FetchArgs) -> CliResult {
    let graph = load_graph(&args.files, &args.packages, &args.overlays)?;
    let store = global.open_store()?;
    let items = fetchable_sources(&graph);
    let display = Downloads::new(progress::detect_mode());
    let outcomes = source::fetch_missing(&store, &items, args.jobs, &|event| display.event(&items, event));
    display.finish();

    let (mut fetched, mut bytes, mut present, mut failed) = (0, 0u64, 0, 0);
    for outcome in &outcomes {
        match outcome {
            FetchOutcome::Present => present += 1,
            FetchOutcome::Fetched { size } => {
                fetched += 1;
                bytes += size;
            }
            FetchOutcome::Failed(error) => {
                failed += 1;
                eprintln!("error: {error}");
            }
        }
    }
    let mut summary = format!("{fetched} fetched ({}), {present} already present", human_bytes(bytes));
    if failed > 0 {
        summary.push_str(&format!(", {failed} failed"));
    }
    eprintln!("{summary}");
    Ok(if failed > 0 { EXIT_FAILED } else { EXIT_OK })
}

/// Every url and deb source of the graph, in dependency order, once per checksum (two
/// packages pinning the same file need it once). `file` sources are local already.
fn fetchable_sources(graph: &crate::graph::Graph) -> Vec<FetchItem> {
    let mut seen = HashSet::new();
    let mut items = Vec::new();
    for &n in graph.topo_order() {
        let recipe = &graph.nodes[n].recipe;
        for source in &recipe.sources {
            if matches!(source.kind, SourceKind::File { .. }) {
                continue;
            }
            if source.checksum.as_ref().is_some_and(|c| !seen.insert(c.clone())) {
                continue;
            }
            items.push(FetchItem { package: recipe.name.clone(), source: source.clone() });
        }
    }
    items
}

pub(super) use crate::units::human_bytes;

/// Download progress: one bar per running download on a terminal; plain lines otherwise
/// (start, every 10% of a download larger than [`PLAIN_STEP_MIN`], end).
pub(super) struct Downloads {
    mode: Mode,
    multi: Option<MultiProgress>,
    state: Mutex<State>,
}

#[derive(Default)]
struct State {
    bars: std::collections::HashMap<usize, ProgressBar>,
    /// Last tenth reported per item (plain mode).
    tenths: std::collections::HashMap<usize, u64>,
}

/// Plain mode reports the progress of downloads of at least this size.
const PLAIN_STEP_MIN: u64 = 8 << 20;

impl Downloads {
    pub(super) fn new(mode: Mode) -> Downloads {
        let multi = (mode == Mode::Terminal).then(|| MultiProgress::with_draw_target(ProgressDrawTarget::stderr_with_hz(8)));
        Downloads { mode, multi, state: Mutex::new(State::default()) }
    }

    pub(super) fn event(&self, items: &[FetchItem], event: FetchEvent<'_>) {
        let Ok(mut state) = self.state.lock() else { return };
        match event {
            FetchEvent::Started { item, filename } => self.started(&mut state, item, filename, &items[item].package),
            FetchEvent::Bytes { item, done, total } => self.bytes(&mut state, item, done, total, &items[item]),
            FetchEvent::Finished { item, outcome } => {
                if let Some(bar) = state.bars.remove(&item) {
                    bar.finish_and_clear();
                }
                if let FetchOutcome::Fetched { size } = outcome {
                    self.line(format!("fetched {} ({}) for {}", items[item].source.filename, human_bytes(*size), items[item].package));
                }
            }
        }
    }

    fn started(&self, state: &mut State, item: usize, filename: &str, package: &str) {
        match &self.multi {
            Some(multi) => {
                let bar = multi.add(ProgressBar::new(0));
                bar.set_style(
                    ProgressStyle::with_template("  {prefix:30} {bar:30} {bytes}/{total_bytes} {bytes_per_sec} ETA {eta}")
                        .unwrap_or_else(|_| ProgressStyle::default_bar()),
                );
                bar.set_prefix(filename.to_string());
                bar.enable_steady_tick(Duration::from_millis(250));
                state.bars.insert(item, bar);
            }
            None if self.mode == Mode::Plain => eprintln!("fetching {filename} for {package}"),
            None => {}
        }
    }

    fn bytes(&self, state: &mut State, item: usize, done: u64, total: Option<u64>, what: &FetchItem) {
        if let Some(bar) = state.bars.get(&item) {
            if let Some(total) = total {
                bar.set_length(total);
            }
            bar.set_position(done);
            return;
        }
        let Some(total) = total.filter(|&t| t >= PLAIN_STEP_MIN && self.mode == Mode::Plain) else { return };
        let tenth = done * 10 / total;
        let last = state.tenths.entry(item).or_insert(0);
        if tenth > *last && tenth < 10 {
            *last = tenth;
            eprintln!("  {}: {}% of {}", what.source.filename, tenth * 10, human_bytes(total));
        }
    }

    pub(super) fn line(&self, text: String) {
        match &self.multi {
            Some(multi) => {
                let _ = multi.println(text);
            }
            None => eprintln!("{text}"),
        }
    }

    pub(super) fn finish(&self) {
        if let Ok(mut state) = self.state.lock() {
            state.bars.drain().for_each(|(_, bar)| bar.finish_and_clear());
        }
    }
}
