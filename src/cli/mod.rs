//! The command line: argument parsing (clap), output, exit statuses. Only this module prints.
//!
//! Each command is a thin file here: parse, call the library, render. Exit statuses:
//! 0 success, 1 a build (or check) failed or the store/sandbox could not do its job,
//! 2 bad usage or bad recipes.

mod audit;
mod audit_report;
mod build;
mod diff;
mod fetch;
mod gc;
mod graph;
mod html;
mod key;
mod log;
mod prefetch;
mod progress;
mod push;
mod record;
mod report;
mod serve;
mod shell;
mod show;
mod source;
mod status;
mod substitute;
mod verify;
mod why;

use std::path::PathBuf;

use clap::{Args, Parser, Subcommand};

use crate::derivation::{self, Plan};
use crate::graph::Graph;
use crate::recipe;
use crate::store::{self, Store};

pub const EXIT_OK: i32 = 0;
pub const EXIT_FAILED: i32 = 1;
pub const EXIT_USAGE: i32 = 2;

#[derive(Parser, Debug)]
#[command(
    name = "forge",
    version,
    about = "A declarative, content-addressed build system for whole Linux systems",
    long_about = "forge builds TOML recipes into content-addressed store objects.\n\n\
        Each recipe is hashed into a derivation (BLAKE3); each derivation is built in a \
        sandbox that sees only its declared inputs; outputs are kept in a store on disk \
        and nothing is rebuilt unless the content of one of its inputs changed.\n\n\
        Exit status: 0 success, 1 a build failed, 2 bad usage or bad recipes.",
    after_help = "Examples:\n  forge build recipes/demo.toml\n  forge show recipes/demo.toml\n  forge log hello\n  forge gc --dry-run"
)]
pub struct Cli {
    #[command(flatten)]
    global: GlobalArgs,
    #[command(subcommand)]
    command: Command,
}

#[derive(Args, Debug, Clone)]
pub struct GlobalArgs {
    /// The store directory [default: $FORGE_STORE, else $XDG_DATA_HOME/forge, else ~/.local/share/forge]
    #[arg(long, global = true, value_name = "DIR")]
    store: Option<PathBuf>,
    /// The config file (substituters, trusted keys, signing key) [default: $FORGE_CONFIG, else ~/.config/forge/config.toml]
    #[arg(long, global = true, value_name = "FILE")]
    config: Option<PathBuf>,
}

#[derive(Subcommand, Debug)]
enum Command {
    /// Build recipes or sets (and everything they depend on)
    Build(build::BuildArgs),
    /// Show each node: name, version, drv hash, out hash if realised, status
    Show(show::ShowArgs),
    /// Print the build log of a package's latest build
    Log(log::LogArgs),
    /// A shell (or a command) in a package's build sandbox, or in its kept failed build
    Shell(shell::ShellArgs),
    /// Re-hash every store object and report any whose content changed
    Verify(verify::VerifyArgs),
    /// Delete store objects that no root keeps (roots: the latest result of each built set)
    Gc(gc::GcArgs),
    /// Download and verify the sources of recipes or sets (and what they depend on) into the store
    Fetch(fetch::FetchArgs),
    /// Register local source files in the store by content (offline machines, LFS sources/ dirs)
    #[command(subcommand)]
    Source(source::SourceCommand),
    /// Download url sources and pin their sha256 into the recipe files
    Prefetch(prefetch::PrefetchArgs),
    /// Manage signing keys for binary caches
    #[command(subcommand)]
    Key(key::KeyCommand),
    /// Upload built outputs and signed realisations to a binary cache
    Push(push::PushArgs),
    /// Serve the store as a binary cache over HTTP
    Serve(serve::ServeArgs),
    /// Compare two outputs file by file (or a package with its last --check result)
    Diff(diff::DiffArgs),
    /// Compare local outputs with caches' signed realisations of the same derivations
    Audit(audit::AuditArgs),
    /// Why a package is (or would be) rebuilt: what changed, root cause and cascade
    Why(why::WhyArgs),
    /// Print the dependency graph (Graphviz dot or JSON)
    Graph(graph::GraphArgs),
    /// Show the chain of dependencies through which package A depends on package B
    WhyDepends(graph::WhyDependsArgs),
    /// The state of the running (or last) build: progress, current packages, ETA
    Status(status::StatusArgs),
    /// What happened to a package in past builds: result, time, peak memory, output size
    History(status::HistoryArgs),
    /// Write a build run's timeline as an HTML page (and a Chrome trace)
    Report(report::ReportArgs),
}

/// Entry point of the `forge` binary; returns the process exit status.
pub fn run() -> i32 {
    let cli = match Cli::try_parse() {
        Ok(cli) => cli,
        Err(e) => {
            let _ = e.print();
            return if e.use_stderr() { EXIT_USAGE } else { EXIT_OK };
        }
    };
    if matches!(
        cli.command,
        Command::Show(_) | Command::Log(_) | Command::Diff(_) | Command::Why(_) | Command::Graph(_) | Command::WhyDepends(_)
    ) {
        // `forge show | head` should end quietly like any filter. Only for these pure output
        // commands: builds and the server talk to pipes and sockets that may close early.
        unsafe { libc::signal(libc::SIGPIPE, libc::SIG_DFL) };
    }
    let result = match cli.command {
        Command::Build(args) => build::run(&cli.global, args),
        Command::Show(args) => show::run(&cli.global, args),
        Command::Log(args) => log::run(&cli.global, args),
        Command::Shell(args) => shell::run(&cli.global, args),
        Command::Verify(args) => verify::run(&cli.global, args),
        Command::Gc(args) => gc::run(&cli.global, args),
        Command::Fetch(args) => fetch::run(&cli.global, args),
        Command::Source(command) => source::run(&cli.global, command),
        Command::Prefetch(args) => prefetch::run(&cli.global, args),
        Command::Key(command) => key::run(command),
        Command::Push(args) => push::run(&cli.global, args),
        Command::Serve(args) => serve::run(&cli.global, args),
        Command::Diff(args) => diff::run(&cli.global, args),
        Command::Audit(args) => audit::run(&cli.global, args),
        Command::Why(args) => why::run(&cli.global, args),
        Command::Graph(args) => graph::run(args),
        Command::WhyDepends(args) => graph::why_depends(args),
        Command::Status(args) => status::run(&cli.global, args),
        Command::History(args) => status::history(&cli.global, args),
        Command::Report(args) => report::run(&cli.global, args),
    };
    match result {
        Ok(code) => code,
        Err(failure) => {
            eprintln!("forge: {}", failure.message);
            failure.code
        }
    }
}

/// An error at the edge: the message to print and the exit status it implies.
#[derive(Debug)]
pub struct Failure {
    pub message: String,
    pub code: i32,
}

impl Failure {
    pub fn usage(message: impl std::fmt::Display) -> Failure {
        Failure { message: message.to_string(), code: EXIT_USAGE }
    }
    pub fn failed(message: impl std::fmt::Display) -> Failure {
        Failure { message: message.to_string(), code: EXIT_FAILED }
    }
}

impl From<store::StoreError> for Failure {
    fn from(e: store::StoreError) -> Self {
        Failure::failed(e)
    }
}

impl From<crate::executor::ExecError> for Failure {
    fn from(e: crate::executor::ExecError) -> Self {
        Failure::failed(e)
    }
}

pub type CliResult = Result<i32, Failure>;

impl GlobalArgs {
    fn open_store(&self) -> Result<Store, Failure> {
        let dir = match &self.store {
            Some(dir) => dir.clone(),
            None => store::default_store_dir()?,
        };
        Ok(Store::open(&dir)?)
    }
}

/// What a command works on: recipe or set FILEs, optionally narrowed with `-p NAME`, with
/// overlays applied.
#[derive(Args, Debug)]
pub struct Targets {
    /// Recipe or set files
    #[arg(required = true, value_name = "FILE")]
    pub files: Vec<PathBuf>,
    /// Only these packages and what they depend on (repeatable)
    #[arg(short, long = "package", value_name = "NAME")]
    pub packages: Vec<String>,
    #[command(flatten)]
    pub overlays: OverlayArgs,
}

impl Targets {
    pub fn plan(&self) -> Result<Planned, Failure> {
        load_and_plan(&self.files, &self.packages, &self.overlays)
    }
}

/// `--overlay FILE` (repeatable): override packages' version, sources, patches and env.
#[derive(Args, Debug, Clone, Default)]
pub struct OverlayArgs {
    /// Apply the overrides in this overlay file (repeatable; later files apply on top)
    #[arg(long = "overlay", value_name = "FILE")]
    pub overlay_files: Vec<PathBuf>,
}

/// Recipes loaded, resolved and hashed: everything `build` and `show` start from.
pub struct Planned {
    pub graph: Graph,
    pub plan: Plan,
}

/// Load FILEs, apply overlays, resolve names, keep the closure of `packages` (all when
/// empty), hash. Every recipe problem is a usage failure (exit 2) listing all errors found.
pub fn load_and_plan(files: &[PathBuf], packages: &[String], overlays: &OverlayArgs) -> Result<Planned, Failure> {
    let graph = load_graph(files, packages, overlays)?;
    let plan = derivation::plan(&graph).map_err(Failure::usage)?;
    Ok(Planned { graph, plan })
}

/// Load FILEs, apply overlays, resolve names, keep the closure of `packages` (all when empty).
/// Prints the warnings of the recipes kept.
pub fn load_graph(files: &[PathBuf], packages: &[String], overlays: &OverlayArgs) -> Result<Graph, Failure> {
    let loaded = load_with_overlays(files, overlays)?;
    let mut graph = Graph::resolve(loaded).map_err(Failure::usage)?;
    if !packages.is_empty() {
        let names: Vec<&str> = packages.iter().map(String::as_str).collect();
        graph = graph.restrict(&names).map_err(Failure::usage)?;
    }
    print_warnings(&recipe::warnings(graph.nodes.iter().map(|n| &n.recipe)));
    Ok(graph)
}

/// Load FILEs and apply the overlays to them.
pub fn load_with_overlays(files: &[PathBuf], overlays: &OverlayArgs) -> Result<recipe::Loaded, Failure> {
    let overlays = recipe::load_overlays(&overlays.overlay_files).map_err(Failure::usage)?;
    let mut loaded = recipe::load(files).map_err(Failure::usage)?;
    recipe::apply_overlays(&mut loaded, &overlays).map_err(Failure::usage)?;
    Ok(loaded)
}

/// How many loader warnings are printed before the rest are summarised (a tree pinned by the
/// LFS book's md5s has one per package); `FORGE_WARNINGS=all` prints every one.
const WARNINGS_SHOWN: usize = 5;

fn print_warnings(warnings: &[String]) {
    let all = std::env::var("FORGE_WARNINGS").is_ok_and(|v| v == "all");
    let shown = if all { warnings.len() } else { warnings.len().min(WARNINGS_SHOWN) };
    for warning in &warnings[..shown] {
        eprintln!("forge: warning: {warning}");
    }
    if shown < warnings.len() {
        eprintln!(
            "forge: warning: ... and {} more warnings like these (FORGE_WARNINGS=all lists them)",
            warnings.len() - shown
        );
    }
}

/// The process is about to exit: skip freeing the graph and plan, which costs ~60 ms for a
/// 10,000-node graph and gains nothing (the same trick rustc uses).
pub fn exit_without_freeing(planned: Planned) {
    std::mem::forget(planned);
}

/// One JSON object per line on stdout (`--json`).
pub fn emit_json(value: serde_json::Value) {
    use std::io::Write;
    let mut out = std::io::stdout().lock();
    let _ = writeln!(out, "{value}");
}
