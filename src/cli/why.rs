//! `forge why NAME [FILE...]`: why a package is (or would be) rebuilt, from the derivations
//! kept in the store's database; without FILEs, why its newest realisation was built.

use std::path::PathBuf;

use clap::Args;

use super::{emit_json, load_and_plan, CliResult, Failure, GlobalArgs, EXIT_OK};
use crate::executor;
use crate::why::{self, Explanation, FieldChange, Verdict};

#[derive(Args, Debug)]
pub struct WhyArgs {
    /// The package
    #[arg(value_name = "NAME")]
    name: String,
    /// Recipe or set files holding NAME as it is now; without them, explain NAME's newest
    /// realisation against the one before it
    #[arg(value_name = "FILE")]
    files: Vec<PathBuf>,
    #[command(flatten)]
    overlays: super::OverlayArgs,
    /// One JSON object on stdout: the explanation tree
    #[arg(long)]
    json: bool,
}

pub fn run(global: &GlobalArgs, args: WhyArgs) -> CliResult {
    let store = global.open_store()?;
    let explanation = if args.files.is_empty() {
        let found = why::explain_last(&store, &args.name)?;
        found.ok_or_else(|| {
            Failure::usage(format!(
                "{}: fewer than two derivations of it were ever realised in this store, so there is no rebuild to explain; \
                 give the recipe FILE to compare it as it is now",
                args.name
            ))
        })?
    } else {
        let planned = load_and_plan(&args.files, std::slice::from_ref(&args.name), &args.overlays)?;
        let (graph, plan) = (&planned.graph, &planned.plan);
        let id = graph.node_by_name(&args.name).expect("restricted to NAME");
        executor::record_plan(&store, plan)?;
        let status = executor::assess(&store, graph, plan, &Default::default())?;
        let e = why::explain(&store, graph, plan, id, &status)?;
        super::exit_without_freeing(planned);
        e
    };
    if args.json {
        let mut v = serde_json::to_value(&explanation).expect("explanation serializes");
        v["rebuilt"] = explanation.rebuilt().into();
        v["root_causes"] = explanation.root_causes().iter().map(|e| e.name.clone()).collect::<Vec<_>>().into();
        emit_json(v);
    } else {
        print(&explanation, args.files.is_empty());
    }
    Ok(EXIT_OK)
}

fn print(e: &Explanation, last: bool) {
    let (is, would) = if last { ("was", "was") } else { ("is", "would be") };
    match &e.verdict {
        Verdict::Realised { out } => println!("{}: not rebuilt: this derivation is realised ({})", e.name, out.short()),
        Verdict::NotNeeded => println!("{}: not rebuilt: it is only a build input of outputs already here", e.name),
        Verdict::NeverBuilt => println!("{}: {would} built: no derivation of it was ever realised in this store", e.name),
        Verdict::OutputGone { out } => {
            println!("{}: {would} rebuilt: this very derivation was realised ({}) but its output is gone (forge gc)", e.name, out.short())
        }
        Verdict::PreviousUnknown { previous } => println!(
            "{}: {would} rebuilt: it changed since derivation {} was realised, whose fields are not in the database (built by an older forge)",
            e.name,
            previous.short()
        ),
        Verdict::Cutoff { out } => {
            println!("{}: not rebuilt: its derivation changed, but its inputs are unchanged in content (early cutoff to {})", e.name, out.short());
            print_tree(e, 1);
        }
        Verdict::Changed { previous } => {
            let when = if last { "the realisation before it" } else { "it was last realised" };
            println!("{}: {would} rebuilt: its derivation {} differs from {} ({when}):", e.name, e.drv.short(), previous.short());
            print_tree(e, 1);
            if e.own.is_empty() && !last {
                println!("(unless the changed inputs rebuild to the outputs they had: then early cutoff skips it)");
            }
        }
    }
    let causes = e.root_causes();
    if !causes.is_empty() && !e.inputs.is_empty() && !matches!(e.verdict, Verdict::Realised { .. } | Verdict::NotNeeded) {
        let names: Vec<&str> = causes.iter().map(|c| c.name.as_str()).collect();
        println!("root cause{}: {} (everything else {is} the cascade)", if names.len() > 1 { "s" } else { "" }, names.join(", "));
    }
}

fn print_tree(e: &Explanation, depth: usize) {
    let pad = "  ".repeat(depth);
    for change in &e.own {
        print_change(change, &pad);
    }
    for input in &e.inputs {
        let kind = if input.is_root_cause() { "ROOT CAUSE" } else { "cascade" };
        println!("{pad}input {} changed ({kind}):", input.name);
        if let Verdict::PreviousUnknown { previous } = &input.verdict {
            println!("{pad}  its previous derivation {} is not in the database", previous.short());
        }
        print_tree(input, depth + 1);
    }
}

fn print_change(change: &FieldChange, pad: &str) {
    let show = |v: &Option<String>| v.as_deref().map(|s| format!("{s:?}")).unwrap_or_else(|| "(none)".into());
    match change {
        FieldChange::Version { from, to } => println!("{pad}version: {from} -> {to}"),
        FieldChange::System { from, to } => println!("{pad}system: {from} -> {to}"),
        FieldChange::Builder { from, to } => println!("{pad}builder: {from} -> {to}"),
        FieldChange::Shell { from, to } => println!("{pad}shell: {from:?} -> {to:?}"),
        FieldChange::Script { diff } => {
            println!("{pad}script:");
            for line in diff.lines().skip(2).filter(|l| !l.starts_with("\\ No newline")) {
                println!("{pad}  {line}");
            }
        }
        FieldChange::Env { key, from, to } => println!("{pad}env {key}: {} -> {}", show(from), show(to)),
        FieldChange::Source { filename, from, to } => println!("{pad}source {filename}: {} -> {}", show(from), show(to)),
        FieldChange::Input { name, from, to } => println!("{pad}dependency {name}: {} -> {}", show(from), show(to)),
    }
}
