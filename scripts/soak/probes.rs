//! Sandbox escape probes: each is a recipe whose script tries one way out and writes
//! `escaped` into `$FORGE_OUT/verdict` if it worked; where the inside cannot tell (a write that
//! lands in the sandbox's own namespace), the soak checks the host instead. Writes to kernel
//! settings write back the value already there, so a probe that gets out changes nothing.

use std::fs;
use std::io::Read as _;
use std::net::TcpListener;
use std::os::unix::fs::{FileTypeExt, PermissionsExt};
use std::path::Path;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::Duration;

use crate::run::{self, Forge};
use crate::Figures;

/// How a probe is judged: by the verdict its script wrote, and/or by a check on the host
/// (where the script acts inside its own namespace and cannot tell).
#[derive(Clone, Copy, PartialEq)]
enum Host {
    /// Only the verdict the script wrote.
    Verdict,
    /// The verdict, and the store must still verify (an input must not change).
    VerdictAndStore,
    /// The host's hostname is unchanged.
    Hostname,
    /// No file WRITTEN appeared in the host's /tmp.
    TmpFile,
    /// The host's loopback listener saw no connection.
    Listener,
    /// The decoy process is alive.
    Decoy,
    /// The stored output has no setuid/setgid file.
    NoSetuid,
    /// The stored output has no device node.
    NoDevice,
    /// Not a way out but information a build can see, a documented known limit
    /// (docs/sandbox.md): reported, not counted as an escape.
    Info,
}

/// (name, host check, script). Placeholders: STORE (host path of the store), SECRET and
/// WRITTEN (host /tmp file names), PORT (a host loopback listener), SOAKPID, DECOYPID.
const PROBES: &[(&str, Host, &str)] = &[
    ("write /proc/sys/kernel/printk_ratelimit_burst", Host::Verdict, "v=$(cat /proc/sys/kernel/printk_ratelimit_burst) && echo \"$v\" > /proc/sys/kernel/printk_ratelimit_burst"),
    ("write /proc/sys/kernel/core_pattern", Host::Verdict, "v=$(cat /proc/sys/kernel/core_pattern) && printf '%s\\n' \"$v\" > /proc/sys/kernel/core_pattern"),
    ("write /proc/sys/vm/drop_caches", Host::Verdict, "echo 1 > /proc/sys/vm/drop_caches"),
    ("write /proc/sys/kernel/hostname", Host::Hostname, "echo forge-soak-evil > /proc/sys/kernel/hostname"),
    ("write /proc/sysrq-trigger", Host::Verdict, "echo h > /proc/sysrq-trigger"),
    ("write /proc/irq/*/smp_affinity", Host::Verdict, "for f in /proc/irq/*/smp_affinity; do v=$(cat $f) && echo $v > $f && exit 0; done; exit 1"),
    ("read /proc/kcore", Host::Verdict, "test -s /proc/kcore || [ -n \"$(head -c 16 /proc/kcore)\" ]"),
    ("read /proc/keys", Host::Verdict, "[ -n \"$(cat /proc/keys)\" ]"),
    ("read /proc/timer_list", Host::Verdict, "[ -n \"$(head -c 64 /proc/timer_list)\" ]"),
    ("read /proc/sched_debug", Host::Verdict, "[ -n \"$(head -c 64 /proc/sched_debug)\" ]"),
    ("host path of the store in /proc/self/mountinfo", Host::Info, "grep -q 'STORE' /proc/self/mountinfo"),
    ("inherited descriptor to a host path", Host::Verdict, "ls -l /proc/self/fd/ /proc/1/fd/ 2>/dev/null | grep -q 'STORE'"),
    ("forge's environment", Host::Verdict, "env | grep -q ENVSECRET"),
    ("read a host /tmp file", Host::Verdict, "cat /tmp/SECRET || cat /proc/1/root/tmp/SECRET || cat /../../tmp/SECRET"),
    ("write a host /tmp file", Host::TmpFile, "touch /tmp/WRITTEN /proc/1/root/tmp/WRITTEN /../../tmp/WRITTEN"),
    ("connect to a host loopback listener", Host::Listener, "echo hi | nc -w 2 127.0.0.1 PORT"),
    ("see a network interface besides lo", Host::Verdict, "[ -n \"$(ls /sys/class/net 2>/dev/null | grep -v '^lo$')\" ] || ip link 2>/dev/null | grep -q 'eth\\|ens\\|enp'"),
    ("see the soak's process", Host::Verdict, "grep -q soak /proc/SOAKPID/cmdline"),
    ("kill a host process", Host::Decoy, "kill -9 DECOYPID"),
    ("make and read a block device or /dev/mem", Host::Verdict, "for d in 'b 8 0' 'b 259 0' 'b 253 0' 'b 252 0' 'c 1 1'; do rm -f /tmp/dev; mknod /tmp/dev $d && head -c 1 /tmp/dev > /dev/null && exit 0; done; exit 1"),
    ("/dev/mem, /dev/kvm or a disk present", Host::Verdict, "[ -e /dev/mem ] || [ -e /dev/kvm ] || [ -e /dev/sda ] || [ -e /dev/vda ] || [ -e /dev/nvme0n1 ]"),
    ("write /dev/kmsg", Host::Verdict, "[ -c /dev/kmsg ] && echo forge-soak-probe > /dev/kmsg"),
    ("write /sys (transparent_hugepage)", Host::Verdict, "f=/sys/kernel/mm/transparent_hugepage/enabled; v=$(sed 's/.*\\[\\(.*\\)\\].*/\\1/' $f) && echo $v > $f"),
    ("move into the host's root cgroup", Host::Verdict, "echo $$ > /sys/fs/cgroup/cgroup.procs"),
    ("remount the inputs read-write and change one", Host::VerdictAndStore, "mount -o remount,rw / 2>/dev/null; mount -o remount,rw,bind /bin 2>/dev/null; echo x >> /bin/busybox"),
    ("hard link an input and append to it", Host::VerdictAndStore, "ln /bin/busybox /tmp/bb && echo x >> /tmp/bb"),
    ("leave a setuid binary in the output", Host::NoSetuid, "cp /bin/busybox \"$FORGE_OUT/suid\" && chmod 6755 \"$FORGE_OUT/suid\""),
    ("leave a device node in the output", Host::NoDevice, "mknod \"$FORGE_OUT/null\" c 1 3"),
];

pub fn run_all(verbose: bool, f: &mut Figures, forge: &Forge, work: &Path, base: &Path, round: usize) -> Result<(), String> {
    let tag = format!("{}-{round}", std::process::id());
    let store = work.join(format!("probes-{round}"));
    forge.add_sources_from(base, &store)?;
    let store_path = fs::canonicalize(&store).map_err(|e| e.to_string())?.to_string_lossy().into_owned();
    let secret = format!("forge-soak-secret-{tag}");
    let written = format!("forge-soak-written-{tag}");
    fs::write(Path::new("/tmp").join(&secret), "host secret\n").map_err(|e| e.to_string())?;
    let mut decoy = std::process::Command::new("sleep").arg("600").spawn().map_err(|e| format!("decoy: {e}"))?;
    let listener = TcpListener::bind("127.0.0.1:0").map_err(|e| e.to_string())?;
    let port = listener.local_addr().map_err(|e| e.to_string())?.port();
    listener.set_nonblocking(true).map_err(|e| e.to_string())?;
    let (stop, connections) = (Arc::new(AtomicBool::new(false)), Arc::new(AtomicUsize::new(0)));
    let accepter = {
        let (stop, connections) = (stop.clone(), connections.clone());
        std::thread::spawn(move || {
            while !stop.load(Ordering::Relaxed) {
                if let Ok((mut s, _)) = listener.accept() {
                    connections.fetch_add(1, Ordering::Relaxed);
                    let _ = s.read(&mut [0u8; 16]);
                }
                std::thread::sleep(Duration::from_millis(10));
            }
        })
    };
    let hostname_before = fs::read_to_string("/proc/sys/kernel/hostname").unwrap_or_default();
    let kernel_before = kernel_settings();

    let dir = work.join(format!("probe-recipes-{round}"));
    fs::create_dir_all(&dir).map_err(|e| e.to_string())?;
    let mut includes = run::seed_includes();
    for (i, (name, _, script)) in PROBES.iter().enumerate() {
        let script = script
            .replace("STORE", &store_path)
            .replace("SECRET", &secret)
            .replace("WRITTEN", &written)
            .replace("ENVSECRET", run::ENV_SECRET)
            .replace("PORT", &port.to_string())
            .replace("SOAKPID", &std::process::id().to_string())
            .replace("DECOYPID", &decoy.id().to_string());
        let recipe = format!(
            "[package]\nname = \"probe-{i}\"\nversion = \"{tag}\"\ndescription = {name:?}\n\n[deps]\nbuild = [\"seed\"]\n\n[build]\nscript = '''\n\
             verdict=refused\nif ( {script} ) > /dev/null 2>&1; then verdict=escaped; fi\necho \"$verdict\" > \"$FORGE_OUT/verdict\"\n'''\n"
        );
        let path = dir.join(format!("probe-{i}.toml"));
        fs::write(&path, recipe).map_err(|e| e.to_string())?;
        includes.push(path.to_string_lossy().into_owned());
    }
    let set = dir.join("set.toml");
    run::write_set(&set, "probes", &includes)?;
    let out = forge.run_args(&store, &["build".into(), "--json".into(), "--keep-going".into(), set.to_string_lossy().into_owned()]);
    stop.store(true, Ordering::Relaxed);
    let _ = accepter.join();
    let decoy_alive = decoy.try_wait().ok().flatten().is_none();
    let _ = decoy.kill();
    let _ = decoy.wait();
    let _ = fs::remove_file(Path::new("/tmp").join(&secret));
    let out = out?;
    let events = run::json_lines(&out.stdout);

    let store_clean = forge.json(&store, &["verify", "--json"])?["clean"] == true;
    let kernel_changed = kernel_settings() != kernel_before;
    for (i, (name, host, _)) in PROBES.iter().enumerate() {
        let event = events.iter().find(|e| e["name"] == format!("probe-{i}") && e["event"] != "started");
        let object = event.and_then(|e| e["out"].as_str()).map(|out| store.join("objects").join(out));
        let verdict = object.as_ref().and_then(|o| fs::read_to_string(o.join("verdict")).ok()).unwrap_or_default();
        let by_verdict = matches!(host, Host::Verdict | Host::VerdictAndStore);
        let mut escaped = by_verdict && verdict.trim() == "escaped";
        let mut why = if escaped { "its script says it got out".to_string() } else { String::new() };
        if *host == Host::Info {
            if verdict.trim() == "escaped" {
                f.probes_info.insert(name.to_string());
            }
            if verbose {
                println!("  probe {name}: {}", if verdict.trim() == "escaped" { "visible (documented known limit)" } else { "not visible" });
            }
            continue;
        }
        let host_check = match host {
            Host::Verdict | Host::Info => None,
            Host::Hostname => (fs::read_to_string("/proc/sys/kernel/hostname").unwrap_or_default() != hostname_before).then(|| "the host's hostname changed".to_string()),
            Host::TmpFile => Path::new("/tmp").join(&written).exists().then(|| format!("/tmp/{written} appeared on the host")),
            Host::Listener => (connections.load(Ordering::Relaxed) > 0).then(|| "the host's loopback listener was reached".to_string()),
            Host::Decoy => (!decoy_alive).then(|| "the host's decoy process was killed".to_string()),
            Host::VerdictAndStore => (!store_clean).then(|| "the store no longer verifies: an input was changed".to_string()),
            Host::NoSetuid => object.as_ref().and_then(|o| fs::symlink_metadata(o.join("suid")).ok()).filter(|m| m.permissions().mode() & 0o6000 != 0).map(|_| "the stored output keeps a setuid bit".to_string()),
            Host::NoDevice => object.as_ref().and_then(|o| fs::symlink_metadata(o.join("null")).ok()).filter(|m| m.file_type().is_char_device() || m.file_type().is_block_device()).map(|_| "the stored output holds a device node".to_string()),
        };
        if let Some(h) = host_check {
            escaped = true;
            why = h;
        }
        if kernel_changed {
            escaped = true;
            why = "the host's kernel settings changed".into();
        }
        f.probes += 1;
        let result = event.and_then(|e| e["event"].as_str()).unwrap_or("no event");
        if escaped {
            f.problem(format!("sandbox probe {name:?} got out: {why}"));
        } else {
            f.probes_refused += 1;
        }
        if verbose {
            println!("  probe {name}: {result}, {}", if escaped { "ESCAPED" } else { "refused" });
        }
    }
    let _ = fs::remove_file(Path::new("/tmp").join(&written));
    let _ = fs::remove_dir_all(&store);
    Ok(())
}

fn kernel_settings() -> Vec<String> {
    ["/proc/sys/kernel/printk_ratelimit_burst", "/proc/sys/kernel/core_pattern", "/sys/kernel/mm/transparent_hugepage/enabled"]
        .iter()
        .map(|p| fs::read_to_string(p).unwrap_or_default())
        .collect()
}
