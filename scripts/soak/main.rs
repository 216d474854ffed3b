//! The reliability soak (docs/reliability.md): drives the real `forge` binary the way a careless
//! operator, a hostile cache and a hostile recipe author would, and prints figures.
//!
//! Per round: kill -9 at random instants during builds, pushes and substitutions (then check the
//! store and the cache and finish the work); four builders on one store with `forge gc` running
//! between them; every hostile-cache variant against a fresh store; every sandbox probe. Any
//! figure that breaks a promise makes the exit status 1.
//!
//! Run it with `scripts/soak.sh [--kills N] [--rounds R] [--seed S] [--keep]`.

mod hostile;
mod probes;
mod run;

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use run::{Forge, Rng, Workload};

struct Options {
    kills: usize,
    rounds: usize,
    builders: usize,
    seed: u64,
    keep: bool,
    forge: PathBuf,
    verbose: bool,
}

const USAGE: &str = "usage: soak --forge BIN [--kills N] [--rounds R] [--builders B] [--seed S] [--keep] [-v]

  --kills N     kill -9 this many forge processes in all (builds, pushes, substitutions) [30]
  --rounds R    repeat the concurrency, hostile-cache and probe phases R times; kills are spread
                over the rounds [3]
  --builders B  forge processes building one set on one store at once [4]
  --seed S      random seed (printed, so that a run can be repeated) [from the clock]
  --keep        keep the work directory (stores, caches, logs) for inspection
  -v            print every kill, variant and probe";

fn parse_options() -> Result<Options, String> {
    let mut o = Options { kills: 30, rounds: 3, builders: 4, seed: 0, keep: false, forge: PathBuf::new(), verbose: false };
    let mut args = std::env::args().skip(1);
    let number = |flag: &str, v: Option<String>| -> Result<u64, String> {
        v.ok_or(format!("{flag} needs a value"))?.parse().map_err(|e| format!("{flag}: {e}"))
    };
    while let Some(a) = args.next() {
        match a.as_str() {
            "--kills" => o.kills = number("--kills", args.next())? as usize,
            "--rounds" => o.rounds = number("--rounds", args.next())?.max(1) as usize,
            "--builders" => o.builders = number("--builders", args.next())?.max(2) as usize,
            "--seed" => o.seed = number("--seed", args.next())?,
            "--forge" => o.forge = PathBuf::from(args.next().ok_or("--forge needs a path")?),
            "--keep" => o.keep = true,
            "-v" | "--verbose" => o.verbose = true,
            "-h" | "--help" => return Err(USAGE.to_string()),
            other => return Err(format!("unknown argument {other:?}\n{USAGE}")),
        }
    }
    if o.forge.as_os_str().is_empty() {
        return Err(format!("--forge is required\n{USAGE}"));
    }
    if o.seed == 0 {
        o.seed = std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).map(|d| d.as_nanos() as u64).unwrap_or(1) | 1;
    }
    Ok(o)
}

/// Every figure the soak reports. The "must be 0" ones are promises (docs/reliability.md).
#[derive(Default)]
struct Figures {
    kills_build: usize,
    kills_push: usize,
    kills_substitute: usize,
    kills_missed: usize,
    corrupt_objects: usize,
    orphan_objects: usize,
    orphans_after_kill: usize,
    half_registered: usize,
    cache_problems: usize,
    stray_processes: usize,
    failed_recoveries: usize,
    concurrent_builds: usize,
    double_builds: usize,
    gc_runs: usize,
    gc_refused: usize,
    builder_failures: usize,
    hostile_variants: usize,
    hostile_refused: usize,
    hostile_unsafe: usize,
    hostile_peak_over: u64,
    probes: usize,
    probes_refused: usize,
    probes_info: std::collections::BTreeSet<String>,
    problems: Vec<String>,
}

impl Figures {
    fn problem(&mut self, what: String) {
        eprintln!("soak: PROBLEM: {what}");
        self.problems.push(what);
    }

    fn print(&self, wall: Duration, seed: u64) {
        let kills = self.kills_build + self.kills_push + self.kills_substitute;
        let rows: Vec<(&str, String, &str)> = vec![
            ("kill -9 delivered", format!("{kills} (build {}, push {}, substitute {})", self.kills_build, self.kills_push, self.kills_substitute), ""),
            ("kills that came too late (process had exited)", self.kills_missed.to_string(), ""),
            ("corrupt or missing store objects", self.corrupt_objects.to_string(), "0"),
            ("unrecorded complete objects right after a kill", self.orphans_after_kill.to_string(), ""),
            ("  still there after the work was redone", self.orphan_objects.to_string(), "0"),
            ("half-registered realisations (store)", self.half_registered.to_string(), "0"),
            ("corrupt or half-registered cache entries", self.cache_problems.to_string(), "0"),
            ("sandbox processes outliving their forge", self.stray_processes.to_string(), "0"),
            ("work that did not complete after a kill", self.failed_recoveries.to_string(), "0"),
            ("concurrent builder processes run", self.concurrent_builds.to_string(), ""),
            ("derivations built twice", self.double_builds.to_string(), "0"),
            ("forge gc between those builds: ran / refused", format!("{} / {}", self.gc_runs, self.gc_refused), ""),
            ("concurrent builders that failed", self.builder_failures.to_string(), "0"),
            ("hostile cache variants", self.hostile_variants.to_string(), ""),
            ("  refused (built locally, correct output)", self.hostile_refused.to_string(), ""),
            ("  with an unsafe outcome", self.hostile_unsafe.to_string(), "0"),
            ("  worst disk use over the honest run", forge::units::human_bytes(self.hostile_peak_over), ""),
            ("sandbox probes", self.probes.to_string(), ""),
            ("  refused", self.probes_refused.to_string(), ""),
        ];
        println!();
        println!("{:<48} {:>34}  promise", "figure", "value");
        println!("{}", "-".repeat(92));
        for (name, value, promise) in rows {
            println!("{name:<48} {value:>34}  {promise}");
        }
        println!("{:<48} {:>34}  0", "  got out", (self.probes - self.probes_refused).to_string());
        for info in &self.probes_info {
            println!("  visible, not a way out (docs/sandbox.md, Known limits): {info}");
        }
        println!("{}", "-".repeat(92));
        println!("seed {seed}, {:.0} s", wall.as_secs_f64());
    }
}

fn main() {
    let options = match parse_options() {
        Ok(o) => o,
        Err(e) => {
            eprintln!("{e}");
            std::process::exit(2);
        }
    };
    let started = Instant::now();
    let work = tempfile::Builder::new().prefix("forge-soak-").tempdir_in(std::env::var_os("TMPDIR").map(PathBuf::from).unwrap_or_else(std::env::temp_dir)).expect("work dir");
    let mut figures = Figures::default();
    let result = soak(&options, work.path(), &mut figures);
    if let Err(e) = &result {
        figures.problem(format!("the soak itself failed: {e}"));
    }
    figures.print(started.elapsed(), options.seed);
    if options.keep {
        let kept = work.keep();
        println!("work directory kept: {}", kept.display());
    }
    if !figures.problems.is_empty() {
        println!("{} problem(s):", figures.problems.len());
        for p in &figures.problems {
            println!("  - {p}");
        }
        std::process::exit(1);
    }
}

fn soak(o: &Options, work: &Path, f: &mut Figures) -> Result<(), String> {
    let mut rng = Rng::new(o.seed);
    let forge = Forge::new(&o.forge, work)?;
    println!("soak: seed {}, {} kills over {} rounds, {} builders, work dir {}", o.seed, o.kills, o.rounds, o.builders, work.display());

    // The seed's sources once, then copied into each store (nothing downloads again).
    let base = work.join("base");
    forge.run_ok(&base, &["build", &run::seed_set(work)?.to_string_lossy()])?;
    let (key, public) = forge.keygen("soak-1")?;
    let (_, untrusted) = forge.keygen("soak-2")?;

    // K builds (killed), C is the cache K pushes to (killed), S substitutes from C (killed).
    let k = work.join("k");
    let cache = work.join("cache");
    let s = work.join("s");
    for store in [&k, &s] {
        forge.add_sources_from(&base, store)?;
    }
    let cache_url = format!("file://{}", cache.display());
    let push = vec!["push".to_string(), "--json".into(), "--to".into(), cache_url.clone(), "--key".into(), key.to_string_lossy().into()];

    // Calibrate: how long a whole build, push and substitution of one workload take.
    forge.run_ok(&k, &["build", &run::seed_set(work)?.to_string_lossy()])?;
    forge.run_args_ok(&k, &push)?;
    let cal = Workload::write(work, rng.salt())?;
    let t_build = forge.timed_ok(&k, &["build", "--json", &cal.set_str()])?;
    let t_push = forge.timed_args_ok(&k, &push)?;
    let subst = |w: &Workload| -> Vec<String> {
        vec!["build".into(), "--json".into(), w.set_str(), "--substituter".into(), cache_url.clone(), "--trusted-key".into(), public.clone()]
    };
    let t_subst = forge.timed_args_ok(&s, &subst(&cal))?;
    println!("soak: one workload takes {:.2} s to build, {:.2} s to push, {:.2} s to substitute", t_build.as_secs_f64(), t_push.as_secs_f64(), t_subst.as_secs_f64());

    let hostile_base = hostile::Honest::prepare(&forge, work, &base, &key, &public, &mut rng)?;

    for round in 1..=o.rounds {
        let kills_this_round = o.kills / o.rounds + usize::from(round <= o.kills % o.rounds);
        println!("soak: round {round}/{}: {kills_this_round} kills", o.rounds);
        let mut delivered = 0;
        let mut attempts = 0;
        while delivered < kills_this_round && attempts < kills_this_round * 6 + 6 {
            attempts += 1;
            let w = Workload::write(work, rng.salt())?;
            let phase = delivered % 3;
            // Build in K (killed if this is a build kill), and always finish it.
            if phase == 0 {
                delivered += kill_and_recover(o, f, &forge, &k, &w, &["build".into(), "--json".into(), w.set_str()], t_build, &mut rng, Phase::Build)?;
            } else {
                forge.run_ok(&k, &["build", "--json", &w.set_str()])?;
            }
            if phase == 1 {
                delivered += kill_and_recover(o, f, &forge, &k, &w, &push, t_push, &mut rng, Phase::Push)?;
                check_cache(f, &forge, &cache, &public, "after a push was killed and redone")?;
            } else {
                forge.run_args_ok(&k, &push)?;
            }
            if phase == 2 {
                delivered += kill_and_recover(o, f, &forge, &s, &w, &subst(&w), t_subst, &mut rng, Phase::Substitute)?;
            }
        }
        if delivered < kills_this_round {
            f.problem(format!("round {round}: only {delivered} of {kills_this_round} kills landed while forge was running"));
        }

        concurrent_builders(o, f, &forge, work, &base, t_build, &mut rng)?;
        hostile::run_all(o.verbose, f, &forge, &hostile_base, &untrusted, round)?;
        probes::run_all(o.verbose, f, &forge, work, &base, round)?;
    }
    check_cache(f, &forge, &cache, &public, "at the end")?;
    Ok(())
}

#[derive(Clone, Copy, Debug)]
enum Phase {
    Build,
    Push,
    Substitute,
}

/// Start `args` on `store`, SIGKILL it at a random instant within `typical`, check what the
/// crash left, then run the same command to completion. Returns 1 if the kill landed.
#[allow(clippy::too_many_arguments)]
fn kill_and_recover(o: &Options, f: &mut Figures, forge: &Forge, store: &Path, w: &Workload, args: &[String], typical: Duration, rng: &mut Rng, phase: Phase) -> Result<usize, String> {
    let delay = typical.mul_f64(0.05 + 0.9 * rng.unit());
    let killed = forge.run_and_kill(store, args, delay)?;
    if o.verbose {
        println!("  kill {phase:?} after {:.3} s: {}", delay.as_secs_f64(), if killed { "landed" } else { "too late" });
    }
    if !killed {
        f.kills_missed += 1;
    } else {
        match phase {
            Phase::Build => f.kills_build += 1,
            Phase::Push => f.kills_push += 1,
            Phase::Substitute => f.kills_substitute += 1,
        }
    }
    // The build's sandbox dies with forge (PR_SET_PDEATHSIG and the pid namespace).
    if !run::wait_until(Duration::from_secs(10), || run::processes_with(&w.marker).is_empty()) {
        f.stray_processes += run::processes_with(&w.marker).len();
        f.problem(format!("sandbox processes of {} outlived their killed forge ({phase:?})", w.marker));
        run::kill_processes_with(&w.marker);
    }
    check_store(f, forge, store, &format!("after a {phase:?} kill"), true)?;
    let out = forge.run_args(store, args)?;
    if !out.status.success() {
        f.failed_recoveries += 1;
        f.problem(format!("{phase:?} after a kill failed: {}", run::stderr_tail(&out)));
    } else if matches!(phase, Phase::Substitute) {
        let built = run::summary(&out)["built"].as_u64().unwrap_or(u64::MAX);
        if built != 0 {
            f.failed_recoveries += 1;
            f.problem(format!("the substitution after a kill built {built} derivations instead of substituting them"));
        }
    }
    check_store(f, forge, store, &format!("after the {phase:?} that followed a kill"), false)?;
    Ok(usize::from(killed))
}

/// `forge verify` and the database: nothing corrupt, nothing half-registered.
fn check_store(f: &mut Figures, forge: &Forge, store: &Path, when: &str, right_after_kill: bool) -> Result<(), String> {
    let report = forge.json(store, &["verify", "--json"])?;
    let count = |key: &str| report[key].as_array().map_or(0, Vec::len);
    let (corrupt, missing, orphans) = (count("corrupt"), count("missing"), count("orphans"));
    if corrupt + missing > 0 {
        f.corrupt_objects += corrupt + missing;
        f.problem(format!("{when}: {corrupt} corrupt and {missing} missing objects in {}", store.display()));
    }
    if orphans > 0 && right_after_kill {
        // A kill between the move into objects/ and the commit: the next registration of that
        // out hash re-verifies and records it (docs/store-format.md); gc removes it otherwise.
        f.orphans_after_kill += orphans;
    } else if orphans > 0 {
        f.orphan_objects += orphans;
        f.problem(format!("{when}: {orphans} orphan object directories in {}", store.display()));
    }
    let half = run::half_registered(store)?;
    if half > 0 {
        f.half_registered += half;
        f.problem(format!("{when}: {half} realisations name an object that is not present in {}", store.display()));
    }
    Ok(())
}

fn check_cache(f: &mut Figures, forge: &Forge, cache: &Path, public: &str, when: &str) -> Result<(), String> {
    let scratch = cache.with_extension("verify-store");
    let report = forge.json(&scratch, &["verify", "--json", "--cache", &format!("file://{}", cache.display()), "--trusted-key", public])?;
    let problems = report["problems"].as_array().cloned().unwrap_or_default();
    if !problems.is_empty() {
        f.cache_problems += problems.len();
        f.problem(format!("{when}: the cache has {} bad entries: {problems:?}", problems.len()));
    }
    Ok(())
}

/// `o.builders` forge processes build one new workload on one store at once while `forge gc`
/// runs in a loop; every derivation must be built exactly once and every builder succeed.
fn concurrent_builders(o: &Options, f: &mut Figures, forge: &Forge, work: &Path, base: &Path, t_build: Duration, rng: &mut Rng) -> Result<(), String> {
    let store = work.join(format!("d-{}", rng.salt()));
    forge.add_sources_from(base, &store)?;
    let w = Workload::write(work, rng.salt())?;
    // Builders start at random instants over about one build's time, and gc is tried between
    // them all along: it runs when no build holds the store and must refuse (not wait, not
    // break anything) while one does.
    let mut starts: Vec<Duration> = (0..o.builders).map(|i| if i == 0 { Duration::ZERO } else { t_build.mul_f64(rng.unit()) }).collect();
    starts.sort();
    let begun = Instant::now();
    let mut children = Vec::new();
    let (mut gc_runs, mut gc_refused) = (0, 0);
    loop {
        while children.len() < starts.len() && begun.elapsed() >= starts[children.len()] {
            let i = children.len();
            children.push(forge.spawn_logged(&store, &["build".into(), "--json".into(), "-j".into(), "2".into(), w.set_str()], &format!("builder-{i}"))?);
        }
        let running = children.iter_mut().map(|c| matches!(c.child.try_wait(), Ok(None))).filter(|r| *r).count();
        if running == 0 && children.len() == starts.len() {
            break;
        }
        let gc = forge.run_args(&store, &["gc".into()])?;
        if gc.status.success() {
            gc_runs += 1;
        } else if run::stderr_tail(&gc).contains("builds are running on the store") {
            gc_refused += 1;
        } else {
            f.problem(format!("forge gc during builds failed: {}", run::stderr_tail(&gc)));
        }
        std::thread::sleep(Duration::from_millis(100));
    }
    f.concurrent_builds += o.builders;
    f.gc_refused += gc_refused;
    f.gc_runs += gc_runs;
    let mut built: BTreeMap<String, usize> = BTreeMap::new();
    for c in children {
        let (status, stdout, stderr) = c.finish()?;
        if !status.success() {
            f.builder_failures += 1;
            f.problem(format!("a concurrent builder failed ({status}): {}", run::tail(&stderr)));
        }
        for e in run::json_lines(&stdout) {
            if e["event"] == "built" {
                *built.entry(e["name"].as_str().unwrap_or("?").to_string()).or_default() += 1;
            }
        }
    }
    for (name, n) in &built {
        if *n > 1 {
            f.double_builds += n - 1;
            f.problem(format!("{name} was built {n} times by {} concurrent builders", o.builders));
        }
    }
    if o.verbose {
        println!("  {} builders, gc ran {gc_runs} times and refused {gc_refused} times, built: {built:?}", o.builders);
    }
    check_store(f, forge, &store, "after concurrent builders and gc", false)?;
    // A final build finds everything (gc may have collected unrooted outputs; then it rebuilds
    // them, which is correct, but it must succeed).
    let out = forge.run_args(&store, &["build".into(), "--json".into(), w.set_str()])?;
    if !out.status.success() {
        f.builder_failures += 1;
        f.problem(format!("a build after the concurrent builders failed: {}", run::stderr_tail(&out)));
    }
    let _ = std::fs::remove_dir_all(&store);
    Ok(())
}
