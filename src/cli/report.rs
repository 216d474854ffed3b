//! `forge report FILE.html [--run ID] [--trace FILE.json]` (and `forge build --report/--trace`):
//! a recorded run as one self-contained page: summary, timeline per worker coloured by
//! result, the critical path, the slowest packages, failures with the tail of their logs.

use std::fmt::Write as _;
use std::path::{Path, PathBuf};

use clap::Args;

use super::html::{esc, page_start, utc};
use super::fetch::human_bytes;
use super::{CliResult, Failure, GlobalArgs, EXIT_OK};
use crate::store::{RunId, Store};
use crate::timeline::Timeline;

#[derive(Args, Debug)]
pub struct ReportArgs {
    /// Where to write the HTML page
    #[arg(value_name = "FILE.html")]
    output: PathBuf,
    /// Which run [default: the newest] (ids: forge history NAME, forge status)
    #[arg(long, value_name = "ID")]
    run: Option<i64>,
    /// Also write the run as a Chrome trace (chrome://tracing, ui.perfetto.dev)
    #[arg(long, value_name = "FILE.json")]
    trace: Option<PathBuf>,
}

pub fn run(global: &GlobalArgs, args: ReportArgs) -> CliResult {
    let store = global.open_store()?;
    write(&store, args.run, Some(&args.output), args.trace.as_deref())?;
    Ok(EXIT_OK)
}

/// Write the report and/or the trace of run `id` (the newest when `None`).
pub fn write(store: &Store, id: Option<RunId>, html: Option<&Path>, trace: Option<&Path>) -> Result<(), Failure> {
    let timeline = Timeline::load(store, id)?.ok_or_else(|| Failure::usage("no recorded build run to report on (run forge build first)"))?;
    let save = |path: &Path, bytes: Vec<u8>| {
        std::fs::write(path, bytes).map_err(|e| Failure::failed(format!("cannot write {}: {e}", path.display())))
    };
    if let Some(path) = html {
        save(path, render(store, &timeline).into_bytes())?;
        eprintln!("report of build {}: {}", timeline.run.id, path.display());
    }
    if let Some(path) = trace {
        save(path, serde_json::to_vec(&timeline.chrome_trace()).expect("trace serializes"))?;
        eprintln!("trace of build {}: {} (open in ui.perfetto.dev or chrome://tracing)", timeline.run.id, path.display());
    }
    Ok(())
}

/// Rules of this page on top of [`super::html`]'s.
const STYLE: &str = "
td.num { text-align: right; font-variant-numeric: tabular-nums; }
.legend span { display: inline-block; margin-right: 1.2em; } .sw { display: inline-block; width: .9em; height: .9em; border-radius: 2px; vertical-align: -1px; margin-right: .3em; }
pre.log { background: #1d2433; color: #e8eaf0; padding: .7em; overflow-x: auto; border-radius: 6px; }
svg text { font: 11px ui-monospace, monospace; }
";

fn colour(result: &str) -> &'static str {
    match result {
        "built" => "#3f9b5a",
        "cached" => "#a7adba",
        "substituted" => "#4a7fd0",
        "failed" => "#d24b4b",
        "running" => "#e3a33b",
        _ => "#cfd3dc",
    }
}

fn render(store: &Store, t: &Timeline) -> String {
    let run = &t.run;
    let end = run.finished_ms.unwrap_or_else(crate::store::now_ms);
    let wall = (end - run.started_ms).max(1);
    let count = |r: &str| t.nodes.iter().filter(|n| n.result == r).count();
    let mut h = page_start(&format!("forge build {}", run.id), STYLE);
    let _ = write!(
        h,
        "<h1>Build {id}: {targets}</h1><p class=\"meta\">{start} &middot; {secs:.1} s wall &middot; {jobs} jobs &middot; host <code>{host}</code> &middot; {status}</p>",
        id = run.id,
        targets = esc(&run.targets),
        start = utc(run.started_ms / 1000),
        secs = wall as f64 / 1000.0,
        jobs = run.jobs,
        host = esc(&run.host),
        status = esc(&run.status)
    );
    h.push_str("<div class=\"cards\">");
    for (label, n) in [("packages", t.nodes.len()), ("built", count("built")), ("cached", count("cached")), ("substituted", count("substituted")), ("failed", count("failed")), ("skipped", count("skipped"))] {
        let _ = write!(h, "<div class=\"card\"><b>{n}</b>{label}</div>");
    }
    h.push_str("</div>");

    // Timeline: one lane per worker, a bar per node that ran.
    let ran: Vec<usize> = (0..t.nodes.len()).filter(|&i| t.nodes[i].started_ms.is_some() && t.nodes[i].finished_ms.is_some() && t.duration_ms(i) > 0).collect();
    let lanes = ran.iter().filter_map(|&i| t.nodes[i].worker).max().map_or(1, |w| w as usize + 1);
    let (width, lane_h, left) = (1000.0, 26.0, 70.0);
    let scale = (width - left - 10.0) / wall as f64;
    let height = lanes as f64 * lane_h + 30.0;
    let _ = write!(h, "<h2>Timeline</h2><p class=\"legend\">");
    for r in ["built", "substituted", "cached", "failed"] {
        let _ = write!(h, "<span><i class=\"sw\" style=\"background:{}\"></i>{r}</span>", colour(r));
    }
    let _ = write!(h, "<span>critical path outlined</span></p><svg viewBox=\"0 0 {width} {height}\" width=\"100%\" role=\"img\" aria-label=\"timeline\">");
    for lane in 0..lanes {
        let y = lane as f64 * lane_h + 4.0;
        let _ = write!(h, "<text x=\"0\" y=\"{:.1}\">worker {lane}</text><line x1=\"{left}\" x2=\"{width}\" y1=\"{:.1}\" y2=\"{:.1}\" stroke=\"#eef0f4\"/>", y + 15.0, y + lane_h - 2.0, y + lane_h - 2.0);
    }
    let critical = t.critical_path();
    for &i in &ran {
        let n = &t.nodes[i];
        let x = left + (n.started_ms.unwrap_or(0) - run.started_ms) as f64 * scale;
        let w = (t.duration_ms(i) as f64 * scale).max(2.0);
        let y = n.worker.unwrap_or(0) as f64 * lane_h + 4.0;
        let stroke = if critical.contains(&i) { " stroke=\"#1d2433\" stroke-width=\"2\"" } else { "" };
        let secs = t.duration_ms(i) as f64 / 1000.0;
        let _ = write!(
            h,
            "<g><title>{name}: {result}, {secs:.1} s</title><rect x=\"{x:.1}\" y=\"{y:.1}\" width=\"{w:.1}\" height=\"{:.1}\" rx=\"3\" fill=\"{}\"{stroke}/>",
            lane_h - 8.0,
            colour(&n.result),
            name = esc(&n.name),
            result = n.result
        );
        if w > 60.0 {
            let _ = write!(h, "<text x=\"{:.1}\" y=\"{:.1}\" fill=\"#fff\">{}</text>", x + 4.0, y + 13.0, esc(&n.name));
        }
        h.push_str("</g>");
    }
    let axis_y = lanes as f64 * lane_h + 20.0;
    for k in 0..=4 {
        let ms = wall * k / 4;
        let x = left + ms as f64 * scale;
        let anchor = match k {
            0 => "start",
            4 => "end",
            _ => "middle",
        };
        let _ = write!(h, "<text x=\"{x:.1}\" y=\"{axis_y:.1}\" fill=\"#667\" text-anchor=\"{anchor}\">{:.1}s</text>", ms as f64 / 1000.0);
    }
    h.push_str("</svg>");

    // Critical path.
    let total: i64 = critical.iter().map(|&i| t.duration_ms(i)).sum();
    let _ = write!(h, "<h2>Critical path</h2><p>{:.1} s of the {:.1} s wall time is this chain of dependencies: no number of workers could make the run shorter than it.</p><table><tr><th>package</th><th>result</th><th class=\"num\">seconds</th></tr>", total as f64 / 1000.0, wall as f64 / 1000.0);
    for &i in &critical {
        let n = &t.nodes[i];
        let _ = write!(h, "<tr><td>{}</td><td>{}</td><td class=\"num\">{:.1}</td></tr>", esc(&n.name), n.result, t.duration_ms(i) as f64 / 1000.0);
    }
    h.push_str("</table>");

    // Slowest packages.
    let mut slowest = ran.clone();
    slowest.sort_by_key(|&i| std::cmp::Reverse(t.duration_ms(i)));
    h.push_str("<h2>Slowest packages</h2><table><tr><th>package</th><th>result</th><th class=\"num\">seconds</th><th class=\"num\">peak memory</th><th class=\"num\">output</th><th>out hash</th></tr>");
    for &i in slowest.iter().take(10) {
        let n = &t.nodes[i];
        let _ = write!(
            h,
            "<tr><td>{}</td><td>{}</td><td class=\"num\">{:.1}</td><td class=\"num\">{}</td><td class=\"num\">{}</td><td><code>{}</code></td></tr>",
            esc(&n.name),
            n.result,
            t.duration_ms(i) as f64 / 1000.0,
            n.peak_memory.map(human_bytes).unwrap_or_default(),
            n.out_size.map(human_bytes).unwrap_or_default(),
            n.out_hash.map(|o| o.short()).unwrap_or_default()
        );
    }
    h.push_str("</table>");

    // Failures, with the tail of their logs.
    let failures: Vec<_> = t.nodes.iter().filter(|n| n.result == "failed").collect();
    if !failures.is_empty() {
        h.push_str("<h2>Failures</h2>");
        for n in failures {
            let _ = write!(h, "<h3>{}</h3><p>{}</p>", esc(&n.name), esc(n.error.as_deref().unwrap_or("")));
            if let Ok(Some(log)) = store.latest_log(&n.name) {
                let text = std::fs::read(&log).map(|b| String::from_utf8_lossy(&b).into_owned()).unwrap_or_default();
                let lines: Vec<&str> = text.lines().collect();
                let tail = lines[lines.len().saturating_sub(25)..].join("\n");
                let _ = write!(h, "<p class=\"meta\">last lines of <code>{}</code> (forge log {}):</p><pre class=\"log\">{}</pre>", esc(&log.display().to_string()), esc(&n.name), esc(&tail));
            }
        }
    }
    let skipped = count("skipped") + count("not-needed");
    if skipped > 0 {
        let _ = write!(h, "<p class=\"meta\">{skipped} packages were skipped or not needed and do not appear on the timeline.</p>");
    }
    h.push_str("<p class=\"meta\">Written by <code>forge report</code>. The same run as a trace: <code>forge report --trace FILE.json</code>, then ui.perfetto.dev.</p></body></html>\n");
    h
}
