//! The usage section of a key's page (`portal/keypage.rs`): its chart and
//! table for the last 24 hours, 7 days or 90 days.
//!
//! The chart ([`chart`]) is SVG drawn here, on the server: no script, no
//! style attribute (the portal's CSP allows neither inline), colours from
//! the stylesheet's classes. It does not rely on colour: refused requests
//! are hatched and stacked above the solid accepted ones, the legend says
//! so in words, every bar has a `<title>` with its numbers, and the same
//! numbers are in a table below.

use maud::{html, Markup};

use super::session::Session;
use crate::core::usage::{Counts, DAY, HOUR};
use crate::error::Error;
use crate::store::KeyRow;
use crate::web::AppState;

/// The periods a chart shows: name, label, bucket length, buckets.
const RANGES: [(&str, &str, u64, u64); 3] = [
    ("24h", "Last 24 hours", HOUR, 24),
    ("7d", "Last 7 days", HOUR, 7 * 24),
    ("90d", "Last 90 days", DAY, 90),
];

/// The usage card of a key, for any page about the key at
/// `/portal/keys/{id}` (its tabs link there with `?range=`): period tabs,
/// totals, the chart and the table. `range` is the page's `range` query
/// (`24h`, the default, `7d` or `90d`; anything else is a bad request).
pub async fn chart_section(
    core: &AppState,
    s: &Session,
    key: &KeyRow,
    range: Option<&str>,
) -> Result<Markup, Error> {
    let range = range.unwrap_or("24h");
    let &(range, label, grain, n) = RANGES
        .iter()
        .find(|r| r.0 == range)
        .ok_or_else(|| Error::BadRequest("The period must be 24h, 7d or 90d.".into()))?;
    let end = (core.clock.now() / grain + 1) * grain;
    let start = end - n * grain;
    let counts = core
        .keys
        .key_usage(&s.p, key.user_id, &key.id, grain, start, end)
        .await?;
    let buckets: Vec<(u64, Counts)> = (0..n)
        .map(|i| {
            let t = start + i * grain;
            (t, counts.get(&t).cloned().unwrap_or_default())
        })
        .collect();
    let accepted: u64 = buckets.iter().map(|(_, c)| c.accepted).sum();
    let mut by_code = std::collections::BTreeMap::<&str, u64>::new();
    for (_, c) in &buckets {
        for (code, v) in &c.refused {
            *by_code.entry(code).or_default() += v;
        }
    }
    let refused: u64 = by_code.values().sum();
    let href = |r: &str| format!("/portal/keys/{}?range={r}", key.id);
    Ok(html! {
        section.card #usage {
            div.card-head {
                div {
                    h2.card-title { "Usage" }
                    p.card-sub.muted {
                        "Requests signed with this key, per " (if grain == DAY { "day" } else { "hour" })
                        " (UTC): accepted, and refused with the reason."
                    }
                }
            }
            nav.tabs aria-label="Period" {
                @for (r, l, _, _) in RANGES {
                    a.tab.current[r == range] id={ "range-" (r) } href=(href(r))
                        aria-current=[(r == range).then_some("page")] { (l) }
                }
            }
            p #usage-totals {
                strong { (accepted) } " accepted, " strong { (refused) } " refused"
                @if !by_code.is_empty() {
                    " ("
                    @for (i, (code, v)) in by_code.iter().enumerate() {
                        @if i > 0 { ", " }
                        code { (code) } " " (v)
                    }
                    ")"
                }
                " in the " (label.to_lowercase()) "."
            }
            (chart(&buckets, grain, label))
            ul.chart-legend {
                li { span.swatch.swatch-ok {} "Accepted (solid, below)" }
                li { span.swatch.swatch-refused {} "Refused (hatched, above)" }
            }
            details #usage-table-box {
                summary { "Show the numbers as a table" }
                @let rows: Vec<&(u64, Counts)> = buckets.iter().filter(|(_, c)| c.accepted > 0 || !c.refused.is_empty()).collect();
                @if rows.is_empty() {
                    p.muted #usage-empty { "No requests in this period." }
                } @else {
                    div.table-wrap {
                        table.table #usage-table {
                            thead { tr { th { "Start (UTC)" } th { "Accepted" } th { "Refused" } th { "Refused by reason" } } }
                            tbody {
                                @for (t, c) in rows {
                                    tr {
                                        td { span.nowrap { (stamp(*t, grain)) } }
                                        td { (c.accepted) }
                                        td { (c.refused.values().sum::<u64>()) }
                                        td { (reasons(c)) }
                                    }
                                }
                            }
                        }
                    }
                }
            }
        }
    })
}

/// `2026-11-23 10:00` (hours) or `2026-11-23` (days).
fn stamp(t: u64, grain: u64) -> String {
    let text = crate::clock::rfc3339(t);
    if grain >= DAY {
        text[..10].to_owned()
    } else {
        format!("{} {}", &text[..10], &text[11..16])
    }
}

fn reasons(c: &Counts) -> String {
    c.refused
        .iter()
        .map(|(code, n)| format!("{code} {n}"))
        .collect::<Vec<_>>()
        .join(", ")
}

/// Width and height of the chart's coordinate space, and its margins.
const W: f64 = 760.0;
const H: f64 = 220.0;
const LEFT: f64 = 44.0;
const RIGHT: f64 = 8.0;
const TOP: f64 = 12.0;
const BOTTOM: f64 = 26.0;

/// A round number at least `n` (1, 2 or 5 times a power of ten).
fn nice(n: u64) -> u64 {
    let mut p = 1u64;
    loop {
        for m in [1, 2, 5] {
            if p.saturating_mul(m) >= n {
                return p.saturating_mul(m);
            }
        }
        p = p.saturating_mul(10);
    }
}

/// The stacked bars: accepted solid below, refused hatched above, one
/// `<title>` per bucket.
pub fn chart(buckets: &[(u64, Counts)], grain: u64, label: &str) -> Markup {
    let total = |c: &Counts| c.accepted + c.refused.values().sum::<u64>();
    let top = nice(
        buckets
            .iter()
            .map(|(_, c)| total(c))
            .max()
            .unwrap_or(0)
            .max(1),
    );
    let plot_w = W - LEFT - RIGHT;
    let plot_h = H - TOP - BOTTOM;
    let slot = plot_w / buckets.len().max(1) as f64;
    let gap = if slot > 4.0 { 1.0 } else { 0.0 };
    let y = |v: u64| TOP + plot_h - plot_h * v as f64 / top as f64;
    let sum_accepted: u64 = buckets.iter().map(|(_, c)| c.accepted).sum();
    let sum_refused: u64 = buckets.iter().map(|(_, c)| total(c) - c.accepted).sum();
    let labels: Vec<usize> = match buckets.len() {
        0 => vec![],
        n => vec![0, n / 2, n - 1],
    };
    html! {
        figure.chart #usage-chart {
            svg viewBox={ "0 0 " (W) " " (H) } role="img" aria-labelledby="usage-chart-title usage-chart-desc"
                xmlns="http://www.w3.org/2000/svg" {
                title #usage-chart-title { "Requests per " (if grain >= DAY { "day" } else { "hour" }) ", " (label.to_lowercase()) }
                desc #usage-chart-desc {
                    (sum_accepted) " accepted and " (sum_refused) " refused in "
                    (buckets.len()) " buckets; the tallest bar is at most " (top) " requests."
                }
                defs {
                    pattern #usage-hatch width="6" height="6" patternUnits="userSpaceOnUse"
                        patternTransform="rotate(45)" {
                        rect.hatch-bg width="6" height="6" {}
                        line.hatch-line x1="0" y1="0" x2="0" y2="6" stroke-width="3" {}
                    }
                }
                @for v in [0, top / 2, top] {
                    line.grid x1=(LEFT) x2=(W - RIGHT) y1=(y(v)) y2=(y(v)) {}
                    text.axis x=(LEFT - 6.0) y=(y(v) + 4.0) text-anchor="end" { (v) }
                }
                @for (i, (t, c)) in buckets.iter().enumerate() {
                    @let x = LEFT + slot * i as f64 + gap / 2.0;
                    @let w = (slot - gap).max(0.5);
                    @let refused = total(c) - c.accepted;
                    g.bucket data-start=(t) data-accepted=(c.accepted) data-refused=(refused) {
                        title {
                            (stamp(*t, grain)) " UTC: " (c.accepted) " accepted, " (refused) " refused"
                            @if refused > 0 { " (" (reasons(c)) ")" }
                        }
                        // The whole slot, so the title shows over empty buckets too.
                        rect.slot x=(x) y=(TOP) width=(w) height=(plot_h) {}
                        @if c.accepted > 0 {
                            rect.bar-ok x=(x) y=(y(c.accepted)) width=(w) height=(y(0) - y(c.accepted)) {}
                        }
                        @if refused > 0 {
                            rect.bar-refused fill="url(#usage-hatch)" x=(x) y=(y(total(c)))
                                width=(w) height=(y(c.accepted) - y(total(c))) {}
                        }
                    }
                }
                @for i in labels {
                    @let (x, anchor) = if i == 0 {
                        (LEFT, "start")
                    } else if i + 1 == buckets.len() {
                        (W - RIGHT, "end")
                    } else {
                        (LEFT + slot * i as f64 + slot / 2.0, "middle")
                    };
                    text.axis x=(x) y=(H - 8.0) text-anchor=(anchor) { (stamp(buckets[i].0, grain)) }
                }
                line.baseline x1=(LEFT) x2=(W - RIGHT) y1=(y(0)) y2=(y(0)) {}
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn nice_ceilings() {
        assert_eq!(
            [1, 2, 3, 6, 11, 99, 101].map(nice),
            [1, 2, 5, 10, 20, 100, 200]
        );
    }

    #[test]
    fn bars_carry_titles_and_no_style_attribute() {
        let mut c = Counts {
            accepted: 3,
            ..Counts::default()
        };
        c.refused.insert("nonce_reused".into(), 1);
        let svg = chart(&[(0, Counts::default()), (3600, c)], HOUR, "Last 24 hours").into_string();
        assert!(
            svg.contains(
                "<title>1970-01-01 01:00 UTC: 3 accepted, 1 refused (nonce_reused 1)</title>"
            ),
            "{svg}"
        );
        assert!(!svg.contains("style="), "{svg}");
        assert_eq!(svg.matches("class=\"bar-ok\"").count(), 1);
        assert_eq!(svg.matches("class=\"bar-refused\"").count(), 1);
    }
}
