//! What forge's HTML pages (`forge audit --report`, `forge report`) share: the start of a
//! self-contained page with the common style, HTML escaping, and UTC times.

/// Style every page starts from (page-specific rules follow it).
const BASE_STYLE: &str = "
body { font: 15px/1.45 system-ui, sans-serif; margin: 2em auto; max-width: 80em; padding: 0 1em; color: #1d2433; }
h1 { font-size: 1.6em; margin-bottom: .2em; } h2 { margin-top: 1.8em; border-bottom: 1px solid #dde; }
.meta { color: #667; } code, pre { font: 13px/1.4 ui-monospace, monospace; }
.cards { display: flex; gap: 1em; flex-wrap: wrap; margin: 1.2em 0; }
.card { border-radius: 8px; padding: .7em 1.2em; min-width: 7em; background: #f3f4f8; } .card b { display: block; font-size: 1.7em; }
table { border-collapse: collapse; width: 100%; margin: .5em 0 1em; }
th, td { text-align: left; padding: .35em .6em; border-bottom: 1px solid #e6e8ee; vertical-align: top; }
th { background: #f7f8fb; font-weight: 600; }
";

/// `<!DOCTYPE html>` up to and including `<body>`: no script, nothing fetched.
pub fn page_start(title: &str, style: &str) -> String {
    format!(
        "<!DOCTYPE html>\n<html lang=\"en\"><head><meta charset=\"utf-8\"><title>{}</title><style>{BASE_STYLE}{style}</style></head><body>\n",
        esc(title)
    )
}

pub fn esc(s: &str) -> String {
    s.replace('&', "&amp;").replace('<', "&lt;").replace('>', "&gt;").replace('"', "&quot;")
}

/// `2026-12-02 07:40 UTC` from Unix seconds (civil-from-days, proleptic Gregorian).
pub fn utc(secs: i64) -> String {
    let (days, rem) = (secs.div_euclid(86_400), secs.rem_euclid(86_400));
    let z = days + 719_468;
    let era = z.div_euclid(146_097);
    let doe = z - era * 146_097;
    let yoe = (doe - doe / 1460 + doe / 36_524 - doe / 146_096) / 365;
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    let mp = (5 * doy + 2) / 153;
    let day = doy - (153 * mp + 2) / 5 + 1;
    let month = if mp < 10 { mp + 3 } else { mp - 9 };
    let year = yoe + era * 400 + i64::from(month <= 2);
    format!("{year:04}-{month:02}-{day:02} {:02}:{:02} UTC", rem / 3600, rem % 3600 / 60)
}

#[cfg(test)]
mod tests {
    #[test]
    fn utc_formats_known_instants() {
        assert_eq!(super::utc(0), "1970-01-01 00:00 UTC");
        assert_eq!(super::utc(1_796_200_000), "2026-12-02 08:26 UTC");
        assert_eq!(super::utc(951_782_400), "2000-02-29 00:00 UTC");
    }

    #[test]
    fn html_is_escaped() {
        assert_eq!(super::esc("<a href=\"x\">&</a>"), "&lt;a href=&quot;x&quot;&gt;&amp;&lt;/a&gt;");
    }
}
