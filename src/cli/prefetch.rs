//! `forge prefetch FILE...`: download url sources and pin their sha256 into the file that
//! declares them (recipe or overlay), keeping its formatting and comments.
//!
//! Two passes. First, sources written without any checksum (which the loader refuses) are
//! found leniently, downloaded and pinned: trust on first use, said so in a comment. Then the
//! files load normally and every url source is made present; an md5 pin (as the LFS book
//! publishes) is replaced by the sha256 of a download verified against that md5, so the
//! published checksum stays the trust anchor. A download that contradicts its pin is refused
//! unless `--repin` says the new file is the right one.

use std::path::PathBuf;

use clap::Args;

use super::fetch::Downloads;
use super::progress;
use super::{load_with_overlays, CliResult, Failure, GlobalArgs, OverlayArgs, EXIT_FAILED, EXIT_OK};
use crate::hash::Checksum;
use crate::recipe::{self, PinTarget, ProblemKind, RecipeError, Source, SourceKind, UnpinnedSource};
use crate::source::{self, FetchEvent, FetchItem, FetchOutcome, SourceError};
use crate::store::Store;

#[derive(Args, Debug)]
pub struct PrefetchArgs {
    /// Recipe or set files whose url sources to pin
    #[arg(required = true, value_name = "FILE")]
    files: Vec<PathBuf>,
    /// Pin only these packages' own sources (not their dependencies')
    #[arg(short, long = "package", value_name = "NAME")]
    packages: Vec<String>,
    /// Replace a pin that the download contradicts (after you checked the new file)
    #[arg(long)]
    repin: bool,
    /// Instead of downloading url sources: re-pin every deb source whose version the signed
    /// apt index no longer has to the version apt would install now, with the index's SHA256
    /// (run `apt-get update` first); prints what changed and leaves the rest of each file as it was
    #[arg(long, conflicts_with = "repin")]
    update_debs: bool,
    /// With --update-debs: move every deb source to apt's candidate version, also those the
    /// index still has
    #[arg(long, requires = "update_debs")]
    latest: bool,
    /// Downloads to run at once
    #[arg(short, long, value_name = "N", default_value_t = 4)]
    jobs: usize,
    #[command(flatten)]
    overlays: OverlayArgs,
}

/// Counts for the summary; failures are printed as they happen.
#[derive(Default)]
struct Tally {
    pinned: usize,
    present: usize,
    failed: usize,
}

pub fn run(global: &GlobalArgs, args: PrefetchArgs) -> CliResult {
    if args.update_debs {
        return update_debs(&args);
    }
    let store = global.open_store()?;
    let display = Downloads::new(progress::detect_mode());
    let mut tally = Tally::default();
    for unpinned in unpinned_sources(&args)? {
        report(&mut tally, pin_from_download(&store, &display, &unpinned.target, &unpinned.mirrors, None));
    }
    let loaded = load_with_overlays(&args.files, &args.overlays)?;
    if let Some(unknown) = args.packages.iter().find(|p| !loaded.recipes.iter().any(|r| &r.name == *p)) {
        return Err(Failure::usage(format!("no package named {unknown:?} in the files given")));
    }
    let items: Vec<FetchItem> = loaded
        .recipes
        .iter()
        .filter(|r| args.packages.is_empty() || args.packages.contains(&r.name))
        .flat_map(|r| r.sources.iter().map(|s| FetchItem { package: r.name.clone(), source: s.clone() }))
        .filter(|item| matches!(item.source.kind, SourceKind::Url { .. }))
        .collect();
    let outcomes = source::fetch_missing(&store, &items, args.jobs, &|event| display.event(&items, event));
    for (item, outcome) in items.iter().zip(outcomes) {
        let result = match outcome {
            FetchOutcome::Failed(error) if args.repin && is_mismatch(&error.error) => {
                let (url, mirrors) = url_of(&item.source);
                pin_from_download(&store, &display, &target_of(item), &mirrors, Some(url))
            }
            FetchOutcome::Failed(error) => Err(error.to_string()),
            FetchOutcome::Present | FetchOutcome::Fetched { .. } => upgrade_md5_pin(&store, item),
        };
        report(&mut tally, result);
    }
    display.finish();
    let mut summary = format!("{} pinned, {} already pinned by sha256 or blake3", tally.pinned, tally.present);
    if tally.failed > 0 {
        summary.push_str(&format!(", {} failed", tally.failed));
    }
    eprintln!("{summary}");
    Ok(if tally.failed > 0 { EXIT_FAILED } else { EXIT_OK })
}

/// `--update-debs`: every deb source of the files (and overlays) that the index no longer
/// lists as pinned moves to the index's candidate version (with `--latest`, every one does).
/// A pin the index still has stays: a deliberate choice (the point release's
/// linux-libc-dev rather than the security update's) survives. Nothing is downloaded: the
/// next build fetches and verifies the new pins.
fn update_debs(args: &PrefetchArgs) -> CliResult {
    let loaded = load_with_overlays(&args.files, &args.overlays)?;
    if let Some(unknown) = args.packages.iter().find(|p| !loaded.recipes.iter().any(|r| &r.name == *p)) {
        return Err(Failure::usage(format!("no package named {unknown:?} in the files given")));
    }
    let mut indexed: std::collections::BTreeMap<String, Result<source::IndexedDeb, String>> = Default::default();
    let (mut changed, mut current, mut failed) = (0, 0, 0);
    for recipe in loaded.recipes.iter().filter(|r| args.packages.is_empty() || args.packages.contains(&r.name)) {
        for src in &recipe.sources {
            let SourceKind::Deb { package, version } = &src.kind else { continue };
            let still = match args.latest {
                true => Ok(None),
                false => source::indexed_deb_version(package, version).map_err(|e| e.to_string()),
            };
            let index = match still {
                Ok(Some(listed)) => Ok(listed),
                Ok(None) => indexed.entry(package.clone()).or_insert_with(|| source::indexed_deb(package).map_err(|e| e.to_string())).clone(),
                Err(message) => Err(message),
            };
            let new = match &index {
                Ok(new) => new.clone(),
                Err(message) => {
                    failed += 1;
                    eprintln!("error: {}: {}: {message}", src.at, recipe.name);
                    continue;
                }
            };
            if *version == new.version && src.checksum.as_ref() == Some(&new.sha256) {
                current += 1;
                continue;
            }
            let default_name = recipe::deb_filename(package, version, "amd64");
            let name = (src.filename != default_name || new.arch != "amd64").then(|| recipe::deb_filename(package, &new.version, &new.arch));
            let repin = recipe::DebRepin {
                file: src.at.file.clone(),
                recipe: recipe.name.clone(),
                package: package.clone(),
                from: version.clone(),
                to: new.version.clone(),
                sha256: new.sha256.clone(),
                name,
            };
            match recipe::repin_deb(&repin) {
                Ok(()) if *version == new.version => {
                    changed += 1;
                    println!("{}: {}: {package} {version}: sha256 now {} (the index's)", src.at.file.display(), recipe.name, new.sha256.hex());
                }
                Ok(()) => {
                    changed += 1;
                    println!("{}: {}: {package} {version} -> {}", src.at.file.display(), recipe.name, new.version);
                }
                Err(e) => {
                    failed += 1;
                    eprintln!("error: {}: {}: {e}", src.at, recipe.name);
                }
            }
        }
    }
    let mut summary = format!("{changed} deb source(s) re-pinned, {current} still in the index as pinned");
    if failed > 0 {
        summary.push_str(&format!(", {failed} failed"));
    }
    eprintln!("{summary}");
    if changed > 0 {
        eprintln!("a new version may depend on packages the old did not: compare with `toolchain/pin-debs.sh --closure PKG...` (docs/toolchain.md)");
    }
    Ok(if failed > 0 { EXIT_FAILED } else { EXIT_OK })
}

/// What happened to one source: a message to print when it was pinned, or an error.
type Step = Result<Option<String>, String>;

fn report(tally: &mut Tally, step: Step) {
    match step {
        Ok(Some(message)) => {
            tally.pinned += 1;
            eprintln!("{message}");
        }
        Ok(None) => tally.present += 1,
        Err(message) => {
            tally.failed += 1;
            eprintln!("error: {message}");
        }
    }
}

/// Url sources without a checksum, in the files whose only load problems are exactly that.
/// Any other recipe problem is a usage error (exit 2), reported in full.
fn unpinned_sources(args: &PrefetchArgs) -> Result<Vec<UnpinnedSource>, Failure> {
    let mut files = Vec::new();
    let mut others = Vec::new();
    let errors = [recipe::load(&args.files).err(), recipe::load_overlays(&args.overlays.overlay_files).err()];
    for problem in errors.into_iter().flatten().flat_map(|e| e.problems) {
        match problem.kind {
            ProblemKind::MissingChecksum { kind: "url" } => files.push(problem.file),
            _ => others.push(problem),
        }
    }
    if !others.is_empty() {
        return Err(Failure::usage(RecipeError { problems: others }));
    }
    files.sort();
    files.dedup();
    let mut found = Vec::new();
    for file in files {
        found.extend(recipe::unpinned_url_sources(&file, &args.packages).map_err(Failure::usage)?);
    }
    Ok(found)
}

/// Download without a pin to trust (a new source, or `--repin`), store it, and write its sha256.
/// `replacing` names the url whose old pin is being replaced, for the message.
fn pin_from_download(store: &Store, display: &Downloads, target: &PinTarget, mirrors: &[String], replacing: Option<&str>) -> Step {
    let fail = |e: &dyn std::fmt::Display| format!("{}: package {}: {}: {e}", target.file.display(), target.package, target.filename);
    let locations: Vec<&str> = std::iter::once(target.url.as_str()).chain(mirrors.iter().map(String::as_str)).collect();
    let item = [FetchItem { package: target.package.clone(), source: unpinned_source(target, mirrors) }];
    display.event(&item, FetchEvent::Started { item: 0, filename: &target.filename });
    let scratch = store.scratch_dir("prefetch").map_err(|e| fail(&e))?;
    let dest = scratch.path().join(&target.filename);
    let mut progress = |done, total| display.event(&item, FetchEvent::Bytes { item: 0, done, total });
    let sha256 = source::download_unpinned(&target.filename, &locations, &dest, &mut progress).map_err(|e| fail(&e))?;
    let stored = source::store_by_content(store, &dest, Some(&sha256)).map_err(|e| fail(&e))?;
    display.event(&item, FetchEvent::Finished { item: 0, outcome: &FetchOutcome::Fetched { size: stored.ids.size } });
    let note = "from the download, not a published checksum: compare it with the publisher's";
    recipe::pin_sha256(target, &sha256, Some(note)).map_err(|e| fail(&e))?;
    let what = if replacing.is_some() { "re-pinned (the old pin did not match)" } else { "pinned (new)" };
    Ok(Some(format!("{what} {} of {} in {}: {sha256}", target.filename, target.package, target.file.display())))
}

/// A present source pinned by md5: replace the pin by the sha256 of the verified file.
fn upgrade_md5_pin(store: &Store, item: &FetchItem) -> Step {
    let Some(md5 @ Checksum::Md5(_)) = &item.source.checksum else { return Ok(None) };
    let target = target_of(item);
    let fail = |e: &dyn std::fmt::Display| format!("{}: package {}: {}: {e}", item.source.at, item.package, item.source.filename);
    let ids = source::content_ids(&store.source_path(md5)).map_err(|e| fail(&e))?;
    let note = format!("verified against the published md5 {}", md5.hex());
    recipe::pin_sha256(&target, &ids.sha256, Some(&note)).map_err(|e| fail(&e))?;
    Ok(Some(format!(
        "pinned {} of {} in {}: {} (verified against {md5})",
        item.source.filename,
        item.package,
        target.file.display(),
        ids.sha256
    )))
}

fn is_mismatch(error: &SourceError) -> bool {
    match error {
        SourceError::ChecksumMismatch { .. } => true,
        SourceError::AllLocationsFailed { failures, .. } => failures.iter().any(is_mismatch),
        _ => false,
    }
}

fn url_of(source: &Source) -> (&str, Vec<String>) {
    match &source.kind {
        SourceKind::Url { url, mirrors } => (url.as_str(), mirrors.clone()),
        _ => ("", Vec::new()),
    }
}

fn target_of(item: &FetchItem) -> PinTarget {
    PinTarget {
        file: item.source.at.file.clone(),
        package: item.package.clone(),
        url: url_of(&item.source).0.to_string(),
        filename: item.source.filename.clone(),
    }
}

/// A `Source` value for a source not pinned yet (only used to label progress).
fn unpinned_source(target: &PinTarget, mirrors: &[String]) -> Source {
    Source {
        kind: SourceKind::Url { url: target.url.clone(), mirrors: mirrors.to_vec() },
        filename: target.filename.clone(),
        checksum: None,
        at: recipe::Location { file: target.file.clone(), line: 0, column: 0 },
    }
}
