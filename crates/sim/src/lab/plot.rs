//! Plots for lab reports, rendered as inline SVG (no script, no network).
//!
//! Owns the plot model ([`Plot`], [`Series`]), the few statistics the
//! scenarios report ([`percentile`], [`cdf`]) and SVG rendering. Output is
//! a pure function of the numbers (fixed formatting, no floats printed with
//! platform-dependent precision), so the same seed gives the same bytes.

use serde::Serialize;

/// Colours of successive series.
const COLORS: [&str; 6] = ["#2e6be6", "#d92d20", "#12b76a", "#f79009", "#7a5af8", "#0e9384"];
const WIDTH: f64 = 640.0;
const HEIGHT: f64 = 300.0;
const LEFT: f64 = 64.0;
const RIGHT: f64 = 16.0;
const TOP: f64 = 28.0;
const BOTTOM: f64 = 44.0;

/// How a plot draws its series.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum Kind {
    /// Lines through `(x, y)` points (a CDF is a line of (value, fraction)).
    Lines,
    /// One bar per series: its first point's `y`.
    Bars,
}

/// One named series of points.
#[derive(Debug, Clone, Serialize)]
pub struct Series {
    /// Legend text.
    pub name: String,
    /// Points, in drawing order.
    pub points: Vec<(f64, f64)>,
}

/// One plot.
#[derive(Debug, Clone, Serialize)]
pub struct Plot {
    /// Title above the plot.
    pub title: String,
    /// X axis label.
    pub x_label: String,
    /// Y axis label.
    pub y_label: String,
    /// Lines or bars.
    pub kind: Kind,
    /// Logarithmic x axis (lines only; x must be positive).
    pub log_x: bool,
    /// The data.
    pub series: Vec<Series>,
}

/// The `p`-th percentile (0..=100) of sorted values (nearest rank); 0 for
/// no values.
pub fn percentile(sorted: &[f64], p: f64) -> f64 {
    if sorted.is_empty() {
        return 0.0;
    }
    let rank = ((p / 100.0) * sorted.len() as f64).ceil() as usize;
    sorted[rank.clamp(1, sorted.len()) - 1]
}

/// The empirical CDF of `values` as `(value, fraction ≤ value)` points, at
/// most `points_max` of them (evenly spaced ranks, always the last).
pub fn cdf(values: &[f64], points_max: usize) -> Vec<(f64, f64)> {
    let mut sorted = values.to_vec();
    sorted.sort_by(f64::total_cmp);
    let n = sorted.len();
    if n == 0 {
        return Vec::new();
    }
    let step = n.div_ceil(points_max.max(1)).max(1);
    let mut out: Vec<(f64, f64)> = (0..n).step_by(step).map(|i| (sorted[i], (i + 1) as f64 / n as f64)).collect();
    if out.last().map(|p| p.1) != Some(1.0) {
        out.push((sorted[n - 1], 1.0));
    }
    out
}

/// A number as axis text: integers plainly, others with up to 2 decimals.
pub fn fmt_num(x: f64) -> String {
    if x.abs() >= 100.0 || x.fract() == 0.0 {
        format!("{:.0}", x)
    } else if x.abs() >= 1.0 {
        format!("{:.1}", x)
    } else {
        format!("{:.2}", x)
    }
}

fn esc(s: &str) -> String {
    s.replace('&', "&amp;").replace('<', "&lt;").replace('>', "&gt;").replace('"', "&quot;")
}

impl Plot {
    /// The plot as an `<svg>` element.
    pub fn svg(&self) -> String {
        let mut out = format!(
            "<svg xmlns=\"http://www.w3.org/2000/svg\" viewBox=\"0 0 {WIDTH} {HEIGHT}\" width=\"{WIDTH}\" height=\"{HEIGHT}\" role=\"img\" aria-label=\"{}\" font-family=\"sans-serif\" font-size=\"11\">",
            esc(&self.title)
        );
        out.push_str(&format!(
            "<text x=\"{}\" y=\"16\" font-size=\"13\" font-weight=\"600\">{}</text>",
            LEFT,
            esc(&self.title)
        ));
        match self.kind {
            Kind::Lines => self.lines(&mut out),
            Kind::Bars => self.bars(&mut out),
        }
        out.push_str(&format!(
            "<text x=\"{}\" y=\"{}\" text-anchor=\"middle\">{}</text>",
            LEFT + (WIDTH - LEFT - RIGHT) / 2.0,
            HEIGHT - 6.0,
            esc(&self.x_label)
        ));
        out.push_str(&format!(
            "<text x=\"12\" y=\"{}\" text-anchor=\"middle\" transform=\"rotate(-90 12 {})\">{}</text>",
            TOP + (HEIGHT - TOP - BOTTOM) / 2.0,
            TOP + (HEIGHT - TOP - BOTTOM) / 2.0,
            esc(&self.y_label)
        ));
        out.push_str("</svg>");
        out
    }

    fn lines(&self, out: &mut String) {
        let xs = self.series.iter().flat_map(|s| s.points.iter().map(|p| p.0));
        let ys = self.series.iter().flat_map(|s| s.points.iter().map(|p| p.1));
        let tx = |x: f64| if self.log_x { x.max(1e-3).log10() } else { x };
        let (mut x0, mut x1) = xs.clone().map(tx).fold((f64::MAX, f64::MIN), |(a, b), x| (a.min(x), b.max(x)));
        let y1 = ys.fold(0.0f64, f64::max).max(1e-9);
        if x0 >= x1 {
            x0 -= 1.0;
            x1 += 1.0;
        }
        if self.log_x {
            x0 = x0.floor();
            x1 = x1.ceil();
        } else {
            x0 = x0.min(0.0);
        }
        let pw = WIDTH - LEFT - RIGHT;
        let ph = HEIGHT - TOP - BOTTOM;
        let px = |x: f64| LEFT + (tx(x) - x0) / (x1 - x0) * pw;
        let py = |y: f64| TOP + ph - y / y1 * ph;
        // Axes and ticks.
        out.push_str(&format!(
            "<path d=\"M{LEFT} {TOP}V{}H{}\" stroke=\"#98a2b3\" fill=\"none\"/>",
            TOP + ph,
            LEFT + pw
        ));
        for i in 0..=4 {
            let y = y1 * i as f64 / 4.0;
            out.push_str(&format!(
                "<text x=\"{}\" y=\"{:.1}\" text-anchor=\"end\">{}</text><path d=\"M{LEFT} {:.1}H{}\" stroke=\"#eaecf0\"/>",
                LEFT - 6.0,
                py(y) + 4.0,
                fmt_num(y),
                py(y),
                LEFT + pw
            ));
        }
        let ticks: Vec<f64> = if self.log_x {
            (x0 as i64..=x1 as i64).map(|e| 10f64.powi(e as i32)).collect()
        } else {
            (0..=4).map(|i| x0 + (x1 - x0) * i as f64 / 4.0).collect()
        };
        for t in ticks {
            out.push_str(&format!(
                "<text x=\"{:.1}\" y=\"{}\" text-anchor=\"middle\">{}</text>",
                px(t),
                TOP + ph + 16.0,
                fmt_num(t)
            ));
        }
        for (i, s) in self.series.iter().enumerate() {
            let color = COLORS[i % COLORS.len()];
            let d: Vec<String> = s.points.iter().map(|&(x, y)| format!("{:.1},{:.1}", px(x), py(y))).collect();
            out.push_str(&format!(
                "<polyline fill=\"none\" stroke=\"{color}\" stroke-width=\"2\" points=\"{}\"/>",
                d.join(" ")
            ));
            out.push_str(&format!(
                "<rect x=\"{}\" y=\"{}\" width=\"10\" height=\"10\" fill=\"{color}\"/><text x=\"{}\" y=\"{}\">{}</text>",
                LEFT + 10.0,
                TOP + 6.0 + i as f64 * 16.0,
                LEFT + 24.0,
                TOP + 15.0 + i as f64 * 16.0,
                esc(&s.name)
            ));
        }
    }

    fn bars(&self, out: &mut String) {
        let values: Vec<f64> = self.series.iter().map(|s| s.points.first().map_or(0.0, |p| p.1)).collect();
        let top = values.iter().copied().fold(0.0f64, f64::max).max(1e-9);
        let pw = WIDTH - LEFT - RIGHT;
        let ph = HEIGHT - TOP - BOTTOM;
        out.push_str(&format!(
            "<path d=\"M{LEFT} {TOP}V{}H{}\" stroke=\"#98a2b3\" fill=\"none\"/>",
            TOP + ph,
            LEFT + pw
        ));
        let slot = pw / values.len().max(1) as f64;
        for (i, (s, v)) in self.series.iter().zip(&values).enumerate() {
            let h = v / top * (ph - 14.0);
            let x = LEFT + slot * i as f64 + slot * 0.2;
            out.push_str(&format!(
                "<rect x=\"{x:.1}\" y=\"{:.1}\" width=\"{:.1}\" height=\"{h:.1}\" fill=\"{}\"/>",
                TOP + ph - h,
                slot * 0.6,
                COLORS[i % COLORS.len()]
            ));
            out.push_str(&format!(
                "<text x=\"{:.1}\" y=\"{:.1}\" text-anchor=\"middle\">{}</text><text x=\"{:.1}\" y=\"{}\" text-anchor=\"middle\">{}</text>",
                x + slot * 0.3,
                TOP + ph - h - 4.0,
                fmt_num(*v),
                x + slot * 0.3,
                TOP + ph + 16.0,
                esc(&s.name)
            ));
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn percentiles_and_cdf_follow_nearest_rank() {
        let v: Vec<f64> = (1..=100).map(f64::from).collect();
        assert_eq!(percentile(&v, 50.0), 50.0);
        assert_eq!(percentile(&v, 99.0), 99.0);
        assert_eq!(percentile(&v, 100.0), 100.0);
        assert_eq!(percentile(&[], 50.0), 0.0);
        let c = cdf(&v, 10);
        assert_eq!(c.first(), Some(&(1.0, 0.01)));
        assert_eq!(c.last(), Some(&(100.0, 1.0)));
        assert!(c.len() <= 11);
    }

    #[test]
    fn a_plot_renders_to_the_same_svg_every_time() {
        let p = Plot {
            title: "t <x>".into(),
            x_label: "ms".into(),
            y_label: "fraction".into(),
            kind: Kind::Lines,
            log_x: true,
            series: vec![Series { name: "a".into(), points: cdf(&[0.2, 0.3, 150.0, 210.0], 10) }],
        };
        let svg = p.svg();
        assert_eq!(svg, p.svg());
        assert!(svg.starts_with("<svg") && svg.ends_with("</svg>") && svg.contains("t &lt;x&gt;"));
    }
}
