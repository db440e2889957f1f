//! Hand-written SVG plots: a CDF with a logarithmic latency axis, and
//! grouped bar charts. Plain text output, no plotting dependency, readable
//! on GitHub and in any browser.

use std::fmt::Write;

const WIDTH: f64 = 760.0;
const HEIGHT: f64 = 420.0;
const LEFT: f64 = 70.0;
const RIGHT: f64 = 190.0;
const TOP: f64 = 40.0;
const BOTTOM: f64 = 50.0;

/// Line colours, one per series (colour-blind-safe Okabe–Ito palette).
const COLOURS: [&str; 8] = [
    "#000000", "#E69F00", "#56B4E9", "#009E73", "#D55E00", "#0072B2", "#CC79A7", "#F0E442",
];

/// One named line of `(x, y)` points.
#[derive(Debug, Clone, PartialEq)]
pub struct Series {
    /// Legend text.
    pub name: String,
    /// Points, x ascending.
    pub points: Vec<(f64, f64)>,
}

fn escape(s: &str) -> String {
    s.replace('&', "&amp;").replace('<', "&lt;").replace('>', "&gt;")
}

fn header(out: &mut String, title: &str) {
    let _ = write!(
        out,
        r#"<svg xmlns="http://www.w3.org/2000/svg" width="{WIDTH}" height="{HEIGHT}" viewBox="0 0 {WIDTH} {HEIGHT}" font-family="sans-serif" font-size="12">
<rect width="100%" height="100%" fill="white"/>
<text x="{}" y="22" text-anchor="middle" font-size="15">{}</text>
"#,
        WIDTH / 2.0,
        escape(title)
    );
}

fn legend(out: &mut String, names: &[String]) {
    for (i, name) in names.iter().enumerate() {
        let y = TOP + 10.0 + i as f64 * 20.0;
        let x = WIDTH - RIGHT + 15.0;
        let c = COLOURS[i % COLOURS.len()];
        let _ = writeln!(
            out,
            r#"<rect x="{x}" y="{}" width="14" height="10" fill="{c}"/><text x="{}" y="{}">{}</text>"#,
            y - 9.0,
            x + 20.0,
            y,
            escape(name)
        );
    }
}

/// Ticks at 1, 2 and 5 times powers of ten between `lo` and `hi`.
fn log_ticks(lo: f64, hi: f64) -> Vec<f64> {
    let mut ticks = Vec::new();
    let mut exp = lo.log10().floor() as i32;
    while 10f64.powi(exp) <= hi * 1.0001 {
        for m in [1.0, 2.0, 5.0] {
            let t = m * 10f64.powi(exp);
            if t >= lo * 0.9999 && t <= hi * 1.0001 {
                ticks.push(t);
            }
        }
        exp += 1;
    }
    ticks
}

fn tick_label(v: f64) -> String {
    if v >= 1.0 {
        format!("{v:.0}")
    } else {
        let s = format!("{v:.3}");
        s.trim_end_matches('0').to_string()
    }
}

/// A CDF plot: x is latency in ms on a log axis, y the fraction 0–1.
/// Series without points are listed in the legend only.
pub fn cdf_plot(title: &str, x_label: &str, series: &[Series]) -> String {
    let all = || series.iter().flat_map(|s| s.points.iter().map(|p| p.0));
    let lo = all().fold(f64::INFINITY, f64::min).max(1e-3);
    let hi = all().fold(0.0, f64::max).max(lo * 10.0);
    let (lo, hi) = (10f64.powf(lo.log10().floor()), 10f64.powf(hi.log10().ceil()));
    let (pw, ph) = (WIDTH - LEFT - RIGHT, HEIGHT - TOP - BOTTOM);
    let x = |v: f64| LEFT + (v.max(lo).log10() - lo.log10()) / (hi.log10() - lo.log10()) * pw;
    let y = |f: f64| TOP + (1.0 - f) * ph;

    let mut out = String::new();
    header(&mut out, title);
    let mut ticks = log_ticks(lo, hi);
    if hi / lo > 1e4 {
        // Wide ranges: decades only, or the labels run into each other.
        ticks.retain(|t| {
            let m = t / 10f64.powf(t.log10().floor());
            (m - 1.0).abs() < 1e-6
        });
    }
    for t in ticks {
        let _ = writeln!(
            out,
            r##"<line x1="{0:.1}" y1="{TOP}" x2="{0:.1}" y2="{1}" stroke="#ddd"/><text x="{0:.1}" y="{2}" text-anchor="middle">{3}</text>"##,
            x(t),
            TOP + ph,
            TOP + ph + 16.0,
            tick_label(t)
        );
    }
    for f in [0.0, 0.25, 0.5, 0.75, 0.9, 1.0] {
        let _ = writeln!(
            out,
            r##"<line x1="{LEFT}" y1="{0:.1}" x2="{1}" y2="{0:.1}" stroke="#ddd"/><text x="{2}" y="{3:.1}" text-anchor="end">{f}</text>"##,
            y(f),
            LEFT + pw,
            LEFT - 6.0,
            y(f) + 4.0
        );
    }
    axes(&mut out, pw, ph, x_label, "fraction of packets at or below");
    for (i, s) in series.iter().enumerate() {
        if s.points.is_empty() {
            continue;
        }
        let mut d = String::new();
        // A step function: each point holds until the next value.
        let mut prev_f = 0.0;
        for (j, &(v, f)) in s.points.iter().enumerate() {
            let cmd = if j == 0 { 'M' } else { 'L' };
            let _ = write!(d, "{cmd}{:.1},{:.1} L{:.1},{:.1} ", x(v), y(prev_f), x(v), y(f));
            prev_f = f;
        }
        let _ = writeln!(
            out,
            r#"<path d="{}" fill="none" stroke="{}" stroke-width="1.8"/>"#,
            d.trim_end(),
            COLOURS[i % COLOURS.len()]
        );
    }
    legend(
        &mut out,
        &series.iter().map(|s| s.name.clone()).collect::<Vec<_>>(),
    );
    out.push_str("</svg>\n");
    out
}

fn axes(out: &mut String, pw: f64, ph: f64, x_label: &str, y_label: &str) {
    let _ = writeln!(
        out,
        r#"<rect x="{LEFT}" y="{TOP}" width="{pw}" height="{ph}" fill="none" stroke="black"/>
<text x="{}" y="{}" text-anchor="middle">{}</text>
<text x="16" y="{}" text-anchor="middle" transform="rotate(-90 16 {})">{}</text>"#,
        LEFT + pw / 2.0,
        HEIGHT - 12.0,
        escape(x_label),
        TOP + ph / 2.0,
        TOP + ph / 2.0,
        escape(y_label)
    );
}

/// A grouped bar chart: one group per category, one bar per series in
/// each group (`values[series][category]`), linear y from zero. A bar
/// carries its value as text.
pub fn bar_chart(
    title: &str,
    y_label: &str,
    categories: &[String],
    series: &[String],
    values: &[Vec<f64>],
) -> String {
    let max = values.iter().flatten().copied().fold(0.0, f64::max).max(1e-9);
    let step = nice_step(max / 5.0);
    let top = (max / step).ceil() * step;
    let (pw, ph) = (WIDTH - LEFT - RIGHT, HEIGHT - TOP - BOTTOM);
    let y = |v: f64| TOP + (1.0 - v / top) * ph;
    let mut out = String::new();
    header(&mut out, title);
    let mut t = 0.0;
    while t <= top * 1.0001 {
        let _ = writeln!(
            out,
            r##"<line x1="{LEFT}" y1="{0:.1}" x2="{1}" y2="{0:.1}" stroke="#ddd"/><text x="{2}" y="{3:.1}" text-anchor="end">{4}</text>"##,
            y(t),
            LEFT + pw,
            LEFT - 6.0,
            y(t) + 4.0,
            short(t)
        );
        t += step;
    }
    axes(&mut out, pw, ph, "", y_label);
    let group = pw / categories.len().max(1) as f64;
    let bar = (group * 0.8) / series.len().max(1) as f64;
    for (c, name) in categories.iter().enumerate() {
        let gx = LEFT + c as f64 * group + group * 0.1;
        for (s, vals) in values.iter().enumerate() {
            let v = vals.get(c).copied().unwrap_or(0.0);
            let bx = gx + s as f64 * bar;
            let _ = writeln!(
                out,
                r#"<rect x="{bx:.1}" y="{:.1}" width="{:.1}" height="{:.1}" fill="{}"/><text x="{:.1}" y="{:.1}" text-anchor="middle" font-size="10">{}</text>"#,
                y(v),
                bar * 0.92,
                (TOP + ph - y(v)).max(0.0),
                COLOURS[(s + 1) % COLOURS.len()],
                bx + bar * 0.46,
                y(v) - 3.0,
                short(v)
            );
        }
        // Two lines ("quic" / "datagram") so long names fit a narrow group.
        let (first, second) = name.split_once(' ').unwrap_or((name.as_str(), ""));
        let _ = writeln!(
            out,
            r#"<text x="{0:.1}" y="{1}" text-anchor="middle" font-size="11"><tspan x="{0:.1}">{2}</tspan><tspan x="{0:.1}" dy="13">{3}</tspan></text>"#,
            gx + group * 0.4,
            TOP + ph + 15.0,
            escape(first),
            escape(second)
        );
    }
    // Bars use colours from the second on; the legend follows.
    let mut names = vec![String::new()];
    names.extend(series.iter().cloned());
    let mut legend_out = String::new();
    legend(&mut legend_out, &names);
    // Drop the placeholder's entry (first line).
    out.push_str(legend_out.split_once('\n').map_or("", |(_, rest)| rest));
    out.push_str("</svg>\n");
    out
}

/// 1, 2 or 5 times a power of ten, at least `raw`.
fn nice_step(raw: f64) -> f64 {
    let p = 10f64.powf(raw.log10().floor());
    [1.0, 2.0, 5.0, 10.0]
        .into_iter()
        .map(|m| m * p)
        .find(|s| *s >= raw)
        .unwrap_or(10.0 * p)
}

fn short(v: f64) -> String {
    if v == 0.0 {
        "0".into()
    } else if v.abs() >= 100.0 {
        format!("{v:.0}")
    } else if v.abs() >= 10.0 {
        format!("{v:.1}")
    } else {
        format!("{v:.2}")
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn cdf_plot_draws_one_path_per_series_and_a_legend() {
        let series = vec![
            Series {
                name: "raw-udp".into(),
                points: vec![(0.05, 0.5), (0.1, 1.0)],
            },
            Series {
                name: "quic <datagram>".into(),
                points: vec![(0.2, 0.5), (3.0, 1.0)],
            },
            Series {
                name: "empty".into(),
                points: vec![],
            },
        ];
        let svg = cdf_plot("clean", "one-way latency (ms, log)", &series);
        assert!(svg.starts_with("<svg") && svg.trim_end().ends_with("</svg>"));
        assert_eq!(svg.matches("<path").count(), 2);
        assert!(svg.contains("quic &lt;datagram&gt;"));
        assert!(svg.contains(">empty<"));
        // Log ticks span 0.01 .. 10 ms.
        assert!(svg.contains(">0.01<") && svg.contains(">10<"));
    }

    #[test]
    fn bar_chart_has_a_bar_per_value() {
        let svg = bar_chart(
            "throughput",
            "Mbit/s",
            &["raw-udp".into(), "quic datagram".into()],
            &["offered".into(), "delivered".into()],
            &[vec![2000.0, 2500.0], vec![1900.0, 2300.0]],
        );
        assert_eq!(svg.matches("<rect x=").count(), 4 + 1 + 2);
        assert!(svg.contains(">2300<") && svg.contains(">delivered<"));
    }

    #[test]
    fn ticks_and_steps_are_round() {
        let ticks = log_ticks(0.01, 1.0);
        let want = [0.01, 0.02, 0.05, 0.1, 0.2, 0.5, 1.0];
        assert_eq!(ticks.len(), want.len());
        assert!(
            ticks.iter().zip(want).all(|(t, w)| (t - w).abs() < 1e-12),
            "{ticks:?}"
        );
        assert_eq!(nice_step(430.0), 500.0);
        assert_eq!(nice_step(0.13), 0.2);
        assert_eq!(tick_label(0.05), "0.05");
    }
}
