//! The HTML page of `forge audit --report`: one self-contained file (inline CSS, no script,
//! nothing fetched) with the summary, a verdict per package and cache, each package's
//! history of out hashes, and the diffs of disputed outputs.

use std::fmt::Write as _;

use super::html::{esc, page_start, utc};
use crate::audit::{PackageAudit, Verdict};
use crate::diff::{self, Change};
use crate::hash::Digest;
use crate::store::{Attestation, Source, Store};

/// Rules of this page on top of [`super::html`]'s.
const STYLE: &str = "
.card.match { background: #e3f5e8; } .card.mismatch { background: #fde5e5; } .card.unknown { background: #f0f0f0; }
.card.nondet { background: #fff1d6; }
.badge { display: inline-block; border-radius: 4px; padding: 0 .45em; font-size: .85em; font-weight: 600; }
.b-match { background: #d4f1dc; color: #17602e; } .b-mismatch { background: #fbd3d3; color: #8a1717; }
.b-unknown { background: #ececec; color: #555; } .b-nondet { background: #ffe3a6; color: #7a4b00; }
details { margin: .4em 0; } summary { cursor: pointer; }
pre.diff { background: #fafbfc; border: 1px solid #e6e8ee; padding: .6em; overflow-x: auto; }
.add { color: #17602e; } .del { color: #8a1717; } .hunk { color: #5a55a6; }
";

/// The whole page.
pub fn render(store: &Store, audits: &[PackageAudit], urls: &[&String]) -> String {
    let count = |v: Verdict| audits.iter().filter(|a| a.verdict() == v).count();
    let (matched, mismatched) = (count(Verdict::Match), count(Verdict::Mismatch));
    let unknown = audits.len() - matched - mismatched;
    let nondet = audits.iter().filter(|a| a.nondeterministic()).count();
    let mut h = page_start(&format!("forge audit: {} packages", audits.len()), STYLE);
    let _ = write!(
        h,
        "<h1>Reproducibility audit</h1>\n<p class=\"meta\">{} &middot; store <code>{}</code> &middot; host <code>{}</code></p>\n",
        utc(crate::store::now_secs()),
        esc(&store.dir().display().to_string()),
        esc(store.host())
    );
    let _ = writeln!(
        h,
        "<div class=\"cards\"><div class=\"card\"><b>{}</b>packages</div><div class=\"card match\"><b>{matched}</b>match</div>\
         <div class=\"card mismatch\"><b>{mismatched}</b>mismatch</div><div class=\"card unknown\"><b>{unknown}</b>unknown</div>\
         <div class=\"card nondet\"><b>{nondet}</b>non-deterministic</div></div>",
        audits.len()
    );
    h.push_str("<p>Each local output is compared with the caches' realisations of the same derivation signed by trusted keys. <b>match</b>: every signature names the local out hash; <b>mismatch</b>: some signature names another; <b>non-deterministic</b>: more than one out hash was ever recorded for the derivation (builds, <code>--check</code> rounds, caches).</p>\n<ol>");
    for url in urls {
        let _ = write!(h, "<li>cache <code>{}</code></li>", esc(url));
    }
    h.push_str("</ol>\n<h2>Verdicts</h2>\n<table><tr><th>package</th><th>version</th><th>local out</th>");
    for i in 0..urls.len() {
        let _ = write!(h, "<th>cache {}</th>", i + 1);
    }
    h.push_str("<th></th></tr>\n");
    // Problems first, then by name, so the page opens on what needs attention.
    let mut order: Vec<&PackageAudit> = audits.iter().collect();
    order.sort_by_key(|a| (a.verdict() != Verdict::Mismatch, !a.nondeterministic(), a.name.clone()));
    for a in &order {
        let _ = write!(
            h,
            "<tr><td><a href=\"#pkg-{id}\">{name}</a></td><td>{ver}</td><td><code>{out}</code></td>",
            id = anchor(&a.name),
            name = esc(&a.name),
            ver = esc(&a.version),
            out = a.local.map(|o| o.short()).unwrap_or_else(|| "&ndash;".into())
        );
        for answer in &a.caches {
            let _ = write!(h, "<td>{}", badge(answer.verdict));
            for (out, key) in answer.signed.iter().filter(|(o, _)| Some(*o) != a.local) {
                let _ = write!(h, "<br><code>{}</code> by {}", out.short(), esc(key));
            }
            h.push_str("</td>");
        }
        h.push_str("<td>");
        if a.nondeterministic() {
            h.push_str("<span class=\"badge b-nondet\">non-deterministic</span> ");
        }
        if !a.fetched.is_empty() {
            let _ = write!(h, "<a href=\"#diff-{}\">diff</a>", anchor(&a.name));
        }
        h.push_str("</td></tr>\n");
    }
    h.push_str("</table>\n<h2>Packages</h2>\n");
    for a in &order {
        package_section(&mut h, store, a);
    }
    h.push_str("<p class=\"meta\">Written by <code>forge audit --report</code>. Compare outputs yourself with <code>forge diff A B</code>.</p></body></html>\n");
    h
}

fn package_section(h: &mut String, store: &Store, a: &PackageAudit) {
    let _ = write!(
        h,
        "<section id=\"pkg-{}\"><h3>{} {} {}</h3><p class=\"meta\">derivation <code>{}</code></p>",
        anchor(&a.name),
        esc(&a.name),
        esc(&a.version),
        badge(a.verdict()),
        a.drv.to_hex()
    );
    if a.history.is_empty() {
        h.push_str("<p>No output recorded for this derivation yet.</p>");
    } else {
        h.push_str("<details");
        if a.nondeterministic() || a.verdict() == Verdict::Mismatch {
            h.push_str(" open");
        }
        h.push_str("><summary>history: who produced which output, when</summary><table><tr><th>out hash</th><th>by</th><th>detail</th><th>first seen</th><th>last seen</th></tr>");
        for row in &a.history {
            history_row(h, row, a.local.as_ref());
        }
        h.push_str("</table></details>");
    }
    if !a.used_by.is_empty() {
        h.push_str("<p>Built against each of its outputs (in this store):</p><ul>");
        for usage in &a.used_by {
            let names: Vec<String> = usage.dependents.iter().map(|d| format!("{} (<code>{}</code>)", esc(&d.name), d.out_hash.short())).collect();
            let list = if names.is_empty() { "nothing built here".to_string() } else { names.join(", ") };
            let _ = write!(h, "<li><code>{}</code>: {list}</li>", usage.out.short());
        }
        h.push_str("</ul>");
    }
    for fetched in &a.fetched {
        if let Some(local) = &a.local {
            diff_section(h, store, a, local, fetched);
        }
    }
    h.push_str("</section>\n");
}

fn history_row(h: &mut String, row: &Attestation, local: Option<&Digest>) {
    let e = &row.evidence;
    let by = match e.source {
        Source::Build => format!("built on {}", esc(&e.witness)),
        Source::Check => format!("--check on {}", esc(&e.witness)),
        Source::Cache => format!("cache, key {}", esc(&e.witness)),
    };
    let mark = if Some(&e.out_hash) == local { " (local)" } else { "" };
    let _ = write!(
        h,
        "<tr><td><code>{}</code>{mark}</td><td>{by}</td><td>{}</td><td>{}</td><td>{}</td></tr>",
        e.out_hash.short(),
        esc(&e.detail),
        utc(row.first_seen),
        utc(row.last_seen)
    );
}

fn diff_section(h: &mut String, store: &Store, a: &PackageAudit, local: &Digest, other: &Digest) {
    let _ = write!(
        h,
        "<div id=\"diff-{}\"><h4>diff: local <code>{}</code> vs disputed <code>{}</code></h4>",
        anchor(&a.name),
        local.short(),
        other.short()
    );
    let (pa, pb) = (store.object_path(local), store.object_path(other));
    match diff::compare(&pa, &pb) {
        Err(e) => {
            let _ = write!(h, "<p>cannot compare: {}</p>", esc(&e.to_string()));
        }
        Ok(changes) => {
            h.push_str("<ul>");
            for change in &changes {
                let what = match change {
                    Change::Added { .. } => "added".to_string(),
                    Change::Removed { .. } => "removed".to_string(),
                    Change::Changed { what, .. } => format!("changed: {}", what.join(", ")),
                };
                let _ = write!(h, "<li><code>{}</code> {what}</li>", esc(change.path()));
            }
            h.push_str("</ul>");
            for change in &changes {
                let Change::Changed { path, what, .. } = change else { continue };
                if !what.contains(&"content") {
                    continue;
                }
                let text = diff::text_diff(&pa.join(path), &pb.join(path), &format!("a/{path}"), &format!("b/{path}"));
                match text {
                    Some(text) => {
                        h.push_str("<pre class=\"diff\">");
                        for line in text.lines() {
                            let class = match line.as_bytes().first() {
                                Some(b'+') if !line.starts_with("+++") => "add",
                                Some(b'-') if !line.starts_with("---") => "del",
                                Some(b'@') => "hunk",
                                _ => "",
                            };
                            let _ = writeln!(h, "<span class=\"{class}\">{}</span>", esc(line));
                        }
                        h.push_str("</pre>");
                    }
                    None => {
                        let _ = write!(h, "<p><code>{}</code>: binary content differs (<code>forge diff</code> hands it to diffoscope when installed)</p>", esc(path));
                    }
                }
            }
        }
    }
    h.push_str("</div>");
}

fn badge(v: Verdict) -> String {
    let class = match v {
        Verdict::Match => "b-match",
        Verdict::Mismatch => "b-mismatch",
        Verdict::UnknownLocal | Verdict::UnknownRemote => "b-unknown",
    };
    format!("<span class=\"badge {class}\">{}</span>", v.as_str())
}

fn anchor(name: &str) -> String {
    name.chars().map(|c| if c.is_ascii_alphanumeric() || c == '-' || c == '_' { c } else { '_' }).collect()
}
