//! Running the real forge binary, the workload it builds, and small host-side helpers.

use std::fs;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, ExitStatus, Output, Stdio};
use std::time::{Duration, Instant};

/// Put into forge's environment; a sandbox probe that can read it got the host's environment.
pub const ENV_SECRET: &str = "forge-soak-env-secret-7f3c";

pub struct Forge {
    bin: PathBuf,
    work: PathBuf,
}

pub struct Logged {
    pub child: Child,
    stdout: PathBuf,
    stderr: PathBuf,
}

impl Logged {
    pub fn finish(mut self) -> Result<(ExitStatus, Vec<u8>, String), String> {
        let status = self.child.wait().map_err(|e| format!("wait: {e}"))?;
        let out = fs::read(&self.stdout).map_err(|e| format!("{}: {e}", self.stdout.display()))?;
        let err = fs::read(&self.stderr).map_err(|e| format!("{}: {e}", self.stderr.display()))?;
        Ok((status, out, String::from_utf8_lossy(&err).into_owned()))
    }
}

impl Forge {
    pub fn new(bin: &Path, work: &Path) -> Result<Forge, String> {
        let bin = fs::canonicalize(bin).map_err(|e| format!("forge binary {}: {e}", bin.display()))?;
        fs::create_dir_all(work.join("home")).map_err(|e| e.to_string())?;
        fs::create_dir_all(work.join("logs")).map_err(|e| e.to_string())?;
        Ok(Forge { bin, work: work.to_path_buf() })
    }

    /// forge with a clean environment on `store` (as the integration tests run it).
    pub fn cmd(&self, store: &Path) -> Command {
        let mut cmd = Command::new(&self.bin);
        cmd.env_clear()
            .env("PATH", std::env::var_os("PATH").unwrap_or_default())
            .env("HOME", self.work.join("home"))
            .env("FORGE_STORE", store)
            .env("FORGE_SOAK_SECRET", ENV_SECRET)
            .current_dir(&self.work);
        cmd
    }

    pub fn run_args(&self, store: &Path, args: &[String]) -> Result<Output, String> {
        self.cmd(store).args(args).stdin(Stdio::null()).output().map_err(|e| format!("run forge {args:?}: {e}"))
    }

    pub fn run_args_ok(&self, store: &Path, args: &[String]) -> Result<Output, String> {
        let out = self.run_args(store, args)?;
        if !out.status.success() {
            return Err(format!("forge {} ({}) failed: {}", args.join(" "), out.status, stderr_tail(&out)));
        }
        Ok(out)
    }

    pub fn run_ok(&self, store: &Path, args: &[&str]) -> Result<Output, String> {
        self.run_args_ok(store, &strings(args))
    }

    pub fn timed_ok(&self, store: &Path, args: &[&str]) -> Result<Duration, String> {
        self.timed_args_ok(store, &strings(args))
    }

    pub fn timed_args_ok(&self, store: &Path, args: &[String]) -> Result<Duration, String> {
        let t = Instant::now();
        self.run_args_ok(store, args)?;
        Ok(t.elapsed())
    }

    /// The last JSON document forge printed (whatever its exit status: verify exits 1 when it
    /// finds problems, and the report says which).
    pub fn json(&self, store: &Path, args: &[&str]) -> Result<serde_json::Value, String> {
        let out = self.run_args(store, &strings(args))?;
        json_lines(&out.stdout).pop().ok_or_else(|| format!("forge {} printed no JSON: {}", args.join(" "), stderr_tail(&out)))
    }

    /// Start `args`, SIGKILL forge after `delay`. `false` if it had already exited by then.
    pub fn run_and_kill(&self, store: &Path, args: &[String], delay: Duration) -> Result<bool, String> {
        let mut child = self.cmd(store).args(args).stdin(Stdio::null()).stdout(Stdio::null()).stderr(Stdio::null()).spawn().map_err(|e| format!("spawn forge: {e}"))?;
        std::thread::sleep(delay);
        let exited = child.try_wait().map_err(|e| e.to_string())?.is_some();
        if !exited {
            child.kill().map_err(|e| format!("kill forge: {e}"))?;
        }
        child.wait().map_err(|e| e.to_string())?;
        Ok(!exited)
    }

    pub fn spawn_logged(&self, store: &Path, args: &[String], name: &str) -> Result<Logged, String> {
        let stdout = self.work.join("logs").join(format!("{name}-{}.out", std::process::id()));
        let stderr = stdout.with_extension("err");
        let file = |p: &Path| fs::File::create(p).map_err(|e| format!("{}: {e}", p.display()));
        let child = self.cmd(store).args(args).stdin(Stdio::null()).stdout(file(&stdout)?).stderr(file(&stderr)?).spawn().map_err(|e| format!("spawn forge: {e}"))?;
        Ok(Logged { child, stdout, stderr })
    }

    /// `forge key generate NAME`: (secret key file, public key).
    pub fn keygen(&self, name: &str) -> Result<(PathBuf, String), String> {
        let keys = self.work.join("keys");
        let out = self.run_ok(&self.work.join("key-store"), &["key", "generate", name, "--dir", &keys.to_string_lossy()])?;
        Ok((keys.join(format!("{name}.secret")), String::from_utf8_lossy(&out.stdout).trim().to_string()))
    }

    /// Register every source file of `from` in `to` (by the checksum in its name), so `to`
    /// builds the seeds without downloading.
    pub fn add_sources_from(&self, from: &Path, to: &Path) -> Result<(), String> {
        let store = forge::store::Store::open(to).map_err(|e| e.to_string())?;
        for entry in fs::read_dir(from.join("sources")).map_err(|e| format!("{}: {e}", from.display()))? {
            let path = entry.map_err(|e| e.to_string())?.path();
            let name = path.file_name().and_then(|n| n.to_str()).unwrap_or_default().to_string();
            let Some((algo, hex)) = name.split_once('-') else { continue };
            let checksum = forge::hash::Checksum::parse(algo, hex).map_err(|e| format!("{name}: {e}"))?;
            store.add_source(&path, &checksum).map_err(|e| format!("{name}: {e}"))?;
        }
        Ok(())
    }
}

fn strings(args: &[&str]) -> Vec<String> {
    args.iter().map(|s| s.to_string()).collect()
}

/// xorshift64*: enough randomness for kill instants, and repeatable from the printed seed.
pub struct Rng {
    state: u64,
    salts: u64,
}

impl Rng {
    pub fn new(seed: u64) -> Rng {
        Rng { state: seed | 1, salts: 0 }
    }

    pub fn next(&mut self) -> u64 {
        self.state ^= self.state >> 12;
        self.state ^= self.state << 25;
        self.state ^= self.state >> 27;
        self.state.wrapping_mul(0x2545_f491_4f6c_dd1d)
    }

    /// Uniform in [0, 1).
    pub fn unit(&mut self) -> f64 {
        (self.next() >> 11) as f64 / (1u64 << 53) as f64
    }

    /// Digits unique within this run and across soaks running at once (the pid is in them).
    pub fn salt(&mut self) -> String {
        self.salts += 1;
        format!("{:07}{:04}{:04}", std::process::id() % 10_000_000, self.salts % 10_000, self.next() % 10_000)
    }
}

/// A small set of five recipes on the busybox seed, all new for each salt: many small files,
/// a big file (a blob in caches), nested directories and symlinks, a diamond of dependencies.
/// Every script sleeps a moment under a marker unique to the salt, so the soak can see the
/// sandbox's processes on the host.
pub struct Workload {
    pub set: PathBuf,
    pub marker: String,
}

impl Workload {
    pub fn write(work: &Path, salt: String) -> Result<Workload, String> {
        let dir = work.join("sets").join(&salt);
        fs::create_dir_all(&dir).map_err(|e| e.to_string())?;
        let marker = format!("0.2{salt}");
        let recipe = |name: &str, deps: &[&str], script: String| {
            let deps: Vec<String> = std::iter::once("seed").chain(deps.iter().copied()).map(|d| format!("{d:?}")).collect();
            format!("[package]\nname = \"{name}\"\nversion = \"{salt}\"\n\n[deps]\nbuild = [{}]\n\n[build]\nscript = '''\n{script}\n'''\n", deps.join(", "))
        };
        let recipes = [
            ("a", recipe("a", &[], format!(
                "sleep {marker}\ni=0\nwhile [ $i -lt 300 ]; do echo \"{salt} $i\" > \"$FORGE_OUT/a-$i\"; i=$((i+1)); done\n\
                 {{ echo {salt}; head -c 1048576 /dev/zero; }} > \"$FORGE_OUT/a-big.dat\""))),
            ("b", recipe("b", &[], format!(
                "sleep {marker}\nd=\"$FORGE_OUT/b\"\nfor i in 1 2 3 4 5 6 7 8 9 10 11 12; do d=\"$d/level$i\"; mkdir -p \"$d\"; echo \"{salt} $i\" > \"$d/f\"; ln -s f \"$d/link\"; done"))),
            ("c", recipe("c", &["a", "b"], format!(
                "sleep {marker}\ncat /a-1 /b/level1/f > \"$FORGE_OUT/c\"\ncp /a-big.dat \"$FORGE_OUT/c-big.dat\""))),
            ("d", recipe("d", &["c"], format!("echo {salt} > \"$FORGE_OUT/d\"\nwc -c /c-big.dat >> \"$FORGE_OUT/d\""))),
            ("e", recipe("e", &["a", "d"], format!("sleep {marker}\ncat /d /a-2 > \"$FORGE_OUT/e\""))),
        ];
        let mut includes = seed_includes();
        for (name, text) in &recipes {
            let path = dir.join(format!("{name}.toml"));
            fs::write(&path, text).map_err(|e| e.to_string())?;
            includes.push(path.to_string_lossy().into_owned());
        }
        let set = dir.join("set.toml");
        write_set(&set, &format!("workload-{salt}"), &includes)?;
        Ok(Workload { set, marker })
    }

    pub fn set_str(&self) -> String {
        self.set.to_string_lossy().into_owned()
    }
}

pub fn seed_includes() -> Vec<String> {
    let toolchain = Path::new(env!("CARGO_MANIFEST_DIR")).join("toolchain");
    ["busybox-static.toml", "seed.toml"].iter().map(|f| toolchain.join(f).to_string_lossy().into_owned()).collect()
}

pub fn write_set(path: &Path, name: &str, includes: &[String]) -> Result<(), String> {
    let includes: Vec<String> = includes.iter().map(|i| format!("{i:?}")).collect();
    fs::write(path, format!("[set]\nname = \"{name}\"\ninclude = [{}]\n", includes.join(", "))).map_err(|e| e.to_string())
}

/// A set of just the seeds.
pub fn seed_set(work: &Path) -> Result<PathBuf, String> {
    let path = work.join("seeds.toml");
    write_set(&path, "seeds", &seed_includes())?;
    Ok(path)
}

/// Realisations whose object was never registered (gc and repair mark objects absent but keep
/// the rows, so only a missing row is half-registered).
pub fn half_registered(store: &Path) -> Result<usize, String> {
    let db = rusqlite::Connection::open_with_flags(store.join("db.sqlite"), rusqlite::OpenFlags::SQLITE_OPEN_READ_ONLY).map_err(|e| format!("{}: {e}", store.display()))?;
    db.busy_timeout(Duration::from_secs(30)).map_err(|e| e.to_string())?;
    db.query_row(
        "SELECT COUNT(*) FROM realisations r WHERE NOT EXISTS (SELECT 1 FROM objects o WHERE o.out_hash = r.out_hash)",
        [],
        |row| row.get::<_, i64>(0),
    )
    .map(|n| n as usize)
    .map_err(|e| format!("{}: {e}", store.display()))
}

pub fn processes_with(marker: &str) -> Vec<u32> {
    let me = std::process::id();
    let Ok(dir) = fs::read_dir("/proc") else { return Vec::new() };
    dir.filter_map(|e| e.ok()?.file_name().to_str()?.parse::<u32>().ok())
        .filter(|pid| *pid != me)
        .filter(|pid| fs::read(format!("/proc/{pid}/cmdline")).is_ok_and(|c| String::from_utf8_lossy(&c).replace('\0', " ").contains(marker)))
        .collect()
}

pub fn kill_processes_with(marker: &str) {
    for pid in processes_with(marker) {
        // SAFETY: kill(2) on a pid read from /proc; no memory is shared.
        unsafe { libc::kill(pid as libc::pid_t, libc::SIGKILL) };
    }
}

pub fn wait_until(limit: Duration, mut done: impl FnMut() -> bool) -> bool {
    let t = Instant::now();
    while t.elapsed() < limit {
        if done() {
            return true;
        }
        std::thread::sleep(Duration::from_millis(50));
    }
    done()
}

pub fn json_lines(stdout: &[u8]) -> Vec<serde_json::Value> {
    String::from_utf8_lossy(stdout).lines().filter_map(|l| serde_json::from_str(l).ok()).collect()
}

pub fn summary(out: &Output) -> serde_json::Value {
    json_lines(&out.stdout).into_iter().find(|e| e["event"] == "summary").unwrap_or_default()
}

/// name -> out hash of every realised node in a `build --json` run.
pub fn outs(stdout: &[u8]) -> std::collections::BTreeMap<String, String> {
    json_lines(stdout)
        .into_iter()
        .filter_map(|e| Some((e["name"].as_str()?.to_string(), e["out"].as_str()?.to_string())))
        .collect()
}

pub fn tail(text: &str) -> String {
    let lines: Vec<&str> = text.lines().collect();
    lines[lines.len().saturating_sub(6)..].join(" | ")
}

pub fn stderr_tail(out: &Output) -> String {
    tail(&String::from_utf8_lossy(&out.stderr))
}

/// Bytes a directory tree occupies on disk (allocated blocks, so sparse files count as such).
pub fn disk_use(dir: &Path) -> u64 {
    use std::os::unix::fs::MetadataExt;
    walkdir::WalkDir::new(dir).into_iter().filter_map(|e| e.ok()?.metadata().ok()).map(|m| m.blocks() * 512).sum()
}
