//! The watch report: one self-contained HTML page (inline CSS and SVG, no scripts, no external
//! resources) with a chart of outstanding bytes per top allocation site over time, markers for
//! discontinuities, the suspected leaks with their stacks, and the last poll's site table.

use std::collections::BTreeMap;
use std::fmt::Write;

use super::series::{human_bytes, PollRecord, SuspectedLeak};

/// Sites drawn in the chart (the biggest by peak bytes).
const TOP_SITES: usize = 6;
const COLORS: [&str; TOP_SITES] = [
    "#d62728", "#1f77b4", "#2ca02c", "#9467bd", "#ff7f0e", "#8c564b",
];

/// What the page says about the watch itself.
#[derive(Debug, Clone, Default)]
pub struct Meta {
    pub connection: String,
    pub interval_s: f64,
    pub growth_polls: u32,
    pub group_by: String,
    pub fail_on_growth: Option<u64>,
}

/// Escapes text for HTML element content and attribute values.
pub fn escape(text: &str) -> String {
    let mut out = String::with_capacity(text.len());
    for c in text.chars() {
        match c {
            '&' => out.push_str("&amp;"),
            '<' => out.push_str("&lt;"),
            '>' => out.push_str("&gt;"),
            '"' => out.push_str("&quot;"),
            '\'' => out.push_str("&#39;"),
            c => out.push(c),
        }
    }
    out
}

/// The whole page.
pub fn render(records: &[PollRecord], meta: &Meta) -> String {
    let mut h = String::new();
    let good: Vec<&PollRecord> = records.iter().filter(|r| r.ok).collect();
    let last = good.last();
    let _ = write!(
        h,
        "<!DOCTYPE html>\n<html lang=\"en\"><head><meta charset=\"utf-8\">\
         <title>kdleak watch report</title>\n<style>\
         body{{font-family:sans-serif;margin:24px;color:#222;background:#fff}}\
         h1{{font-size:22px;margin:0 0 4px}} h2{{font-size:17px;margin:22px 0 8px}}\
         .meta{{color:#555;font-size:13px}} table{{border-collapse:collapse;font-size:13px}}\
         td,th{{border:1px solid #ccc;padding:3px 8px;text-align:left}} td.n{{text-align:right}}\
         .leak{{border:2px solid #d62728;border-radius:6px;padding:8px 12px;margin:8px 0;background:#fff5f5}}\
         pre{{font-size:12px;margin:4px 0;white-space:pre-wrap}} .ok{{color:#2ca02c}}\
         </style></head><body>\n<h1>kdleak watch</h1>\n<div class=\"meta\">{} · {} polls ({} failed) · \
         interval {:.1} s · sites by {} · leak = growth in {} consecutive polls{}</div>\n",
        escape(&meta.connection),
        records.len(),
        records.len() - good.len(),
        meta.interval_s,
        escape(&meta.group_by),
        meta.growth_polls,
        meta.fail_on_growth
            .map(|l| format!(" · fail on growth &gt; {}", human_bytes(l)))
            .unwrap_or_default()
    );
    if let Some(last) = last {
        let _ = writeln!(
            h,
            "<div class=\"meta\">last poll #{} at {}: {} outstanding in {} blocks, growth {:+} bytes</div>",
            last.poll,
            escape(&last.time),
            human_bytes(last.outstanding_bytes),
            last.outstanding_count,
            last.growth_bytes
        );
    }
    h.push_str("<h2>Outstanding bytes per allocation site</h2>\n");
    h.push_str(&chart(records));
    h.push_str("<h2>Suspected leaks</h2>\n");
    let leaks = latest_leaks(records);
    if leaks.is_empty() {
        h.push_str("<p class=\"ok\">No site grew across enough consecutive polls.</p>\n");
    }
    for leak in leaks {
        let _ = write!(
            h,
            "<div class=\"leak\"><b>{}</b> ({}) — {} in {} blocks, tag <code>{}</code>, grew {} polls in a row (+{})\n<pre>",
            escape(&leak.site),
            escape(&leak.driver),
            human_bytes(leak.bytes),
            leak.count,
            escape(&leak.tag),
            leak.growth_streak,
            human_bytes(leak.streak_growth_bytes)
        );
        if leak.stack.is_empty() {
            h.push_str("(no stack: the log no longer holds this allocation)");
        }
        for (i, frame) in leak.stack.iter().enumerate() {
            let _ = writeln!(
                h,
                "{i:02} {:#018x} {}",
                frame.address,
                escape(&frame.symbol)
            );
        }
        h.push_str("</pre></div>\n");
    }
    if let Some(last) = last {
        h.push_str("<h2>Sites at the last poll</h2>\n<table><tr><th>site</th><th>driver</th><th>blocks</th><th>bytes</th><th>Δ bytes</th><th>growth streak</th></tr>\n");
        for s in &last.sites {
            let _ = writeln!(
                h,
                "<tr><td>{}</td><td>{}</td><td class=\"n\">{}</td><td class=\"n\">{}</td><td class=\"n\">{:+}</td><td class=\"n\">{}</td></tr>",
                escape(&s.site),
                escape(&s.driver),
                s.count,
                s.bytes,
                s.delta_bytes,
                s.growth_streak
            );
        }
        h.push_str("</table>\n");
    }
    let marks: Vec<&PollRecord> = records
        .iter()
        .filter(|r| r.discontinuity.is_some() || !r.ok)
        .collect();
    if !marks.is_empty() {
        h.push_str(
            "<h2>Discontinuities</h2>\n<table><tr><th>poll</th><th>time</th><th>what</th></tr>\n",
        );
        for r in marks {
            let what = match (&r.discontinuity, &r.error) {
                (Some(d), _) => format!("{}: {} (gap {:.1} s)", d.kind, d.detail, d.gap_s),
                (None, Some(e)) => format!("failed: {e}"),
                _ => String::new(),
            };
            let _ = writeln!(
                h,
                "<tr><td>{}</td><td>{}</td><td>{}</td></tr>",
                r.poll,
                escape(&r.time),
                escape(&what)
            );
        }
        h.push_str("</table>\n");
    }
    h.push_str("</body></html>\n");
    h
}

/// Each suspected site once, from the newest poll that flagged it; biggest first.
fn latest_leaks(records: &[PollRecord]) -> Vec<SuspectedLeak> {
    let mut by_site: BTreeMap<(String, String), SuspectedLeak> = BTreeMap::new();
    for r in records {
        for leak in &r.suspected_leaks {
            by_site.insert((leak.site.clone(), leak.driver.clone()), leak.clone());
        }
    }
    let mut leaks: Vec<SuspectedLeak> = by_site.into_values().collect();
    leaks.sort_by(|a, b| b.bytes.cmp(&a.bytes).then_with(|| a.site.cmp(&b.site)));
    leaks
}

/// The inline SVG line chart: x = seconds since the watch started, y = outstanding bytes.
fn chart(records: &[PollRecord]) -> String {
    let (w, ht) = (1000.0f64, 420.0f64);
    let (left, right, top, bottom) = (90.0, 20.0, 20.0, 50.0);
    let (pw, ph) = (w - left - right, ht - top - bottom);
    // Top sites by peak bytes.
    let mut peak: BTreeMap<(String, String), u64> = BTreeMap::new();
    for r in records.iter().filter(|r| r.ok) {
        for s in &r.sites {
            let e = peak.entry((s.site.clone(), s.driver.clone())).or_default();
            *e = (*e).max(s.bytes);
        }
    }
    let mut top_sites: Vec<((String, String), u64)> = peak.into_iter().collect();
    top_sites.sort_by(|a, b| b.1.cmp(&a.1).then_with(|| a.0.cmp(&b.0)));
    top_sites.truncate(TOP_SITES);
    let min_x = records
        .iter()
        .map(|r| r.elapsed_s)
        .fold(f64::INFINITY, f64::min);
    let min_x = if min_x.is_finite() { min_x } else { 0.0 };
    let max_x = records.iter().map(|r| r.elapsed_s).fold(min_x, f64::max);
    let span = (max_x - min_x).max(1e-9);
    let max_y = top_sites.iter().map(|s| s.1).max().unwrap_or(1).max(1) as f64 * 1.1;
    let x = |t: f64| left + (t - min_x) / span * pw;
    let y = |b: f64| top + ph - b / max_y * ph;
    let mut s = String::new();
    let _ = writeln!(
        s,
        "<svg xmlns=\"http://www.w3.org/2000/svg\" width=\"{w}\" height=\"{}\" viewBox=\"0 0 {w} {}\" role=\"img\" aria-label=\"outstanding bytes per site\">",
        ht + 24.0 * top_sites.len() as f64,
        ht + 24.0 * top_sites.len() as f64
    );
    let _ = writeln!(
        s,
        "<rect x=\"{left}\" y=\"{top}\" width=\"{pw}\" height=\"{ph}\" fill=\"#fafafa\" stroke=\"#999\"/>"
    );
    for k in 0..=4 {
        let v = max_y * k as f64 / 4.0;
        let yy = y(v);
        let _ = writeln!(
            s,
            "<line x1=\"{left}\" y1=\"{yy:.1}\" x2=\"{:.1}\" y2=\"{yy:.1}\" stroke=\"#e0e0e0\"/><text x=\"{:.1}\" y=\"{:.1}\" font-size=\"12\" text-anchor=\"end\" font-family=\"sans-serif\">{}</text>",
            left + pw,
            left - 6.0,
            yy + 4.0,
            escape(&human_bytes(v as u64))
        );
        let t = min_x + span * k as f64 / 4.0;
        let _ = writeln!(
            s,
            "<text x=\"{:.1}\" y=\"{:.1}\" font-size=\"12\" text-anchor=\"middle\" font-family=\"sans-serif\">{t:.1} s</text>",
            x(t),
            top + ph + 18.0
        );
    }
    let _ = writeln!(
        s,
        "<text x=\"{:.1}\" y=\"{:.1}\" font-size=\"12\" text-anchor=\"middle\" font-family=\"sans-serif\">host time since the watch started</text>",
        left + pw / 2.0,
        top + ph + 38.0
    );
    for r in records {
        if r.discontinuity.is_some() || !r.ok {
            let xx = x(r.elapsed_s);
            let kind = r
                .discontinuity
                .as_ref()
                .map_or("failed", |d| d.kind.as_str());
            let _ = writeln!(
                s,
                "<line x1=\"{xx:.1}\" y1=\"{top}\" x2=\"{xx:.1}\" y2=\"{:.1}\" stroke=\"#555\" stroke-dasharray=\"5,4\"/><text x=\"{:.1}\" y=\"{:.1}\" font-size=\"11\" font-family=\"sans-serif\" fill=\"#555\">{}</text>",
                top + ph,
                xx + 3.0,
                top + 12.0,
                escape(kind)
            );
        }
    }
    for (i, ((site, driver), _)) in top_sites.iter().enumerate() {
        let color = COLORS[i % COLORS.len()];
        // A new polyline after each break in the series (failed poll or reboot).
        let mut segments: Vec<Vec<(f64, f64)>> = vec![Vec::new()];
        for r in records {
            if !r.ok || r.discontinuity.as_ref().is_some_and(|d| d.kind == "reboot") {
                segments.push(Vec::new());
            }
            if !r.ok {
                continue;
            }
            let bytes = r
                .sites
                .iter()
                .find(|s| &s.site == site && &s.driver == driver)
                .map_or(0, |s| s.bytes);
            segments
                .last_mut()
                .expect("one segment")
                .push((x(r.elapsed_s), y(bytes as f64)));
        }
        for seg in segments.iter().filter(|s| !s.is_empty()) {
            let points: Vec<String> = seg.iter().map(|(a, b)| format!("{a:.1},{b:.1}")).collect();
            let _ = writeln!(
                s,
                "<polyline fill=\"none\" stroke=\"{color}\" stroke-width=\"2.5\" points=\"{}\"/>",
                points.join(" ")
            );
            for (a, b) in seg {
                let _ = writeln!(
                    s,
                    "<circle cx=\"{a:.1}\" cy=\"{b:.1}\" r=\"3\" fill=\"{color}\"/>"
                );
            }
        }
        let ly = ht + 24.0 * i as f64 + 4.0;
        let _ = writeln!(
            s,
            "<rect x=\"{left}\" y=\"{ly:.1}\" width=\"14\" height=\"14\" fill=\"{color}\"/><text x=\"{:.1}\" y=\"{:.1}\" font-size=\"13\" font-family=\"sans-serif\">{} ({})</text>",
            left + 20.0,
            ly + 12.0,
            escape(site),
            escape(driver)
        );
    }
    s.push_str("</svg>\n");
    s
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn escapes_markup() {
        assert_eq!(
            escape("<a href=\"x\">&'"),
            "&lt;a href=&quot;x&quot;&gt;&amp;&#39;"
        );
    }

    #[test]
    fn an_empty_series_renders() {
        let page = render(&[], &Meta::default());
        assert!(page.contains("<svg"));
        assert!(!page.contains("http://") || page.contains("xmlns=\"http://www.w3.org/2000/svg\""));
    }
}
