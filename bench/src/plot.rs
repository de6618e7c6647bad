//! Plots for the experiments: simple line and step charts written as SVG by hand (no plotting
//! dependency), rendered to PNG with `resvg` using the system's fonts.

use std::fmt::Write as _;
use std::path::{Path, PathBuf};

/// One line of a chart.
pub struct Series {
    pub name: String,
    pub points: Vec<(f64, f64)>,
}

/// A chart: title, axis labels, series; `log_x` for offload counts.
pub struct Chart {
    pub title: String,
    pub x_label: String,
    pub y_label: String,
    pub log_x: bool,
    pub series: Vec<Series>,
    /// Vertical markers (x, label), e.g. the onset of congestion.
    pub markers: Vec<(f64, String)>,
}

const W: f64 = 800.0;
const H: f64 = 480.0;
const LEFT: f64 = 80.0;
const RIGHT: f64 = 180.0;
const TOP: f64 = 50.0;
const BOTTOM: f64 = 60.0;
pub(crate) const COLORS: [&str; 8] = [
    "#1f77b4", "#d62728", "#2ca02c", "#ff7f0e", "#9467bd", "#8c564b", "#e377c2", "#17becf",
];

/// The next "round" value at or above `v` (1, 2, 2.5, 5 times a power of ten), for axes.
pub(crate) fn nice_max(v: f64) -> f64 {
    if v <= 0.0 || !v.is_finite() {
        return 1.0;
    }
    let p = 10f64.powf(v.log10().floor());
    for m in [1.0, 2.0, 2.5, 5.0, 10.0] {
        if v <= m * p {
            return m * p;
        }
    }
    10.0 * p
}

/// `s` escaped for SVG text.
pub(crate) fn esc(s: &str) -> String {
    s.replace('&', "&amp;")
        .replace('<', "&lt;")
        .replace('>', "&gt;")
}

impl Chart {
    /// The chart as an SVG document.
    pub fn svg(&self) -> String {
        let pts = self.series.iter().flat_map(|s| s.points.iter());
        let (mut xmin, mut xmax, mut ymax) = (f64::INFINITY, f64::NEG_INFINITY, 0f64);
        for &(x, y) in pts {
            xmin = xmin.min(x);
            xmax = xmax.max(x);
            ymax = ymax.max(y);
        }
        if !xmin.is_finite() {
            (xmin, xmax) = (0.0, 1.0);
        }
        if self.log_x {
            xmin = xmin.max(1e-9);
        }
        if xmax <= xmin {
            xmax = xmin + 1.0;
        }
        // Headroom above the highest point, unless it is a round number already (shares: 1).
        let ymax = if ymax > 0.0 && nice_max(ymax) == ymax {
            ymax
        } else {
            nice_max(ymax * 1.05)
        };
        let tx = |x: f64| {
            let f = if self.log_x {
                (x.max(xmin).ln() - xmin.ln()) / (xmax.ln() - xmin.ln())
            } else {
                (x - xmin) / (xmax - xmin)
            };
            LEFT + f * (W - LEFT - RIGHT)
        };
        let ty = |y: f64| H - BOTTOM - (y / ymax) * (H - TOP - BOTTOM);
        let mut s = String::new();
        let _ = writeln!(
            s,
            r#"<svg xmlns="http://www.w3.org/2000/svg" width="{W}" height="{H}" viewBox="0 0 {W} {H}" font-family="DejaVu Sans, sans-serif" font-size="12">"#
        );
        let _ = writeln!(s, r#"<rect width="100%" height="100%" fill="white"/>"#);
        let _ = writeln!(
            s,
            r#"<text x="{}" y="28" font-size="16" text-anchor="middle">{}</text>"#,
            (LEFT + W - RIGHT) / 2.0,
            esc(&self.title)
        );
        // Axes and grid.
        for i in 0..=5 {
            let y = ymax * i as f64 / 5.0;
            let py = ty(y);
            let _ = writeln!(
                s,
                r##"<line x1="{LEFT}" y1="{py}" x2="{}" y2="{py}" stroke="#ddd"/>"##,
                W - RIGHT
            );
            let _ = writeln!(
                s,
                r#"<text x="{}" y="{}" text-anchor="end">{}</text>"#,
                LEFT - 6.0,
                py + 4.0,
                fmt_num(y)
            );
        }
        let xticks: Vec<f64> = if self.log_x {
            let mut v = Vec::new();
            let mut t = 10f64.powf(xmin.log10().floor());
            while t <= xmax * 1.0001 {
                if t >= xmin * 0.9999 {
                    v.push(t);
                }
                t *= if self
                    .series
                    .iter()
                    .any(|s| s.points.iter().any(|p| (p.0.log2().fract()).abs() < 1e-9))
                {
                    2.0
                } else {
                    10.0
                };
            }
            v
        } else {
            (0..=5)
                .map(|i| xmin + (xmax - xmin) * i as f64 / 5.0)
                .collect()
        };
        for x in xticks {
            let px = tx(x);
            let _ = writeln!(
                s,
                r##"<line x1="{px}" y1="{TOP}" x2="{px}" y2="{}" stroke="#eee"/>"##,
                H - BOTTOM
            );
            let _ = writeln!(
                s,
                r#"<text x="{px}" y="{}" text-anchor="middle">{}</text>"#,
                H - BOTTOM + 18.0,
                fmt_num(x)
            );
        }
        let _ = writeln!(
            s,
            r#"<line x1="{LEFT}" y1="{}" x2="{}" y2="{}" stroke="black"/>"#,
            H - BOTTOM,
            W - RIGHT,
            H - BOTTOM
        );
        let _ = writeln!(
            s,
            r#"<line x1="{LEFT}" y1="{TOP}" x2="{LEFT}" y2="{}" stroke="black"/>"#,
            H - BOTTOM
        );
        let _ = writeln!(
            s,
            r#"<text x="{}" y="{}" text-anchor="middle">{}</text>"#,
            (LEFT + W - RIGHT) / 2.0,
            H - 15.0,
            esc(&self.x_label)
        );
        let _ = writeln!(
            s,
            r#"<text transform="translate(20,{}) rotate(-90)" text-anchor="middle">{}</text>"#,
            (TOP + H - BOTTOM) / 2.0,
            esc(&self.y_label)
        );
        for (x, label) in &self.markers {
            let px = tx(*x);
            let _ = writeln!(
                s,
                r##"<line x1="{px}" y1="{TOP}" x2="{px}" y2="{}" stroke="#555" stroke-dasharray="4,3"/>"##,
                H - BOTTOM
            );
            let _ = writeln!(
                s,
                r##"<text x="{}" y="{}" fill="#555">{}</text>"##,
                px + 4.0,
                TOP + 12.0,
                esc(label)
            );
        }
        for (i, series) in self.series.iter().enumerate() {
            let color = COLORS[i % COLORS.len()];
            let path: Vec<String> = series
                .points
                .iter()
                .map(|&(x, y)| format!("{:.1},{:.1}", tx(x), ty(y)))
                .collect();
            let _ = writeln!(
                s,
                r#"<polyline fill="none" stroke="{color}" stroke-width="2" points="{}"/>"#,
                path.join(" ")
            );
            if series.points.len() <= 64 {
                for &(x, y) in &series.points {
                    let _ = writeln!(
                        s,
                        r#"<circle cx="{:.1}" cy="{:.1}" r="3" fill="{color}"/>"#,
                        tx(x),
                        ty(y)
                    );
                }
            }
            let ly = TOP + 20.0 + 20.0 * i as f64;
            let _ = writeln!(
                s,
                r#"<line x1="{}" y1="{ly}" x2="{}" y2="{ly}" stroke="{color}" stroke-width="3"/>"#,
                W - RIGHT + 15.0,
                W - RIGHT + 40.0
            );
            let _ = writeln!(
                s,
                r#"<text x="{}" y="{}">{}</text>"#,
                W - RIGHT + 46.0,
                ly + 4.0,
                esc(&series.name)
            );
        }
        s.push_str("</svg>\n");
        s
    }

    /// Writes `<dir>/<name>.svg` and `<dir>/<name>.png`; returns the paths.
    pub fn write(&self, dir: &Path, name: &str) -> anyhow::Result<Vec<PathBuf>> {
        write_svg_png(dir, name, &self.svg())
    }
}

/// Writes `svg` as `<dir>/<name>.svg` and rendered as `<dir>/<name>.png`; returns the paths.
pub fn write_svg_png(dir: &Path, name: &str, svg: &str) -> anyhow::Result<Vec<PathBuf>> {
    crate::report::make_folder(dir)?;
    let svg_path = dir.join(format!("{name}.svg"));
    crate::report::write_file(&svg_path, svg)?;
    let png_path = dir.join(format!("{name}.png"));
    crate::report::write_file(&png_path, svg_to_png(svg)?)?;
    Ok(vec![svg_path, png_path])
}

/// An axis label: 1.2M, 35k, 12, 0.25.
pub(crate) fn fmt_num(v: f64) -> String {
    let a = v.abs();
    // Thousands with a decimal when they need one (1.2k, not 1k: axis ticks must differ).
    let scaled = |x: f64, unit: &str| {
        if (x - x.round()).abs() < 0.05 {
            format!("{x:.0}{unit}")
        } else {
            format!("{x:.1}{unit}")
        }
    };
    if a >= 1e6 {
        scaled(v / 1e6, "M")
    } else if a >= 1e3 {
        scaled(v / 1e3, "k")
    } else if a >= 10.0 || v == 0.0 {
        format!("{v:.0}")
    } else {
        format!("{v:.2}")
    }
}

/// Renders an SVG document to PNG bytes.
pub fn svg_to_png(svg: &str) -> anyhow::Result<Vec<u8>> {
    let mut opt = resvg::usvg::Options::default();
    opt.fontdb_mut().load_system_fonts();
    let tree = resvg::usvg::Tree::from_str(svg, &opt)?;
    let size = tree.size().to_int_size();
    let mut pixmap = resvg::tiny_skia::Pixmap::new(size.width(), size.height())
        .ok_or_else(|| anyhow::anyhow!("empty plot"))?;
    resvg::render(
        &tree,
        resvg::tiny_skia::Transform::default(),
        &mut pixmap.as_mut(),
    );
    Ok(pixmap.encode_png()?)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn renders_a_chart_to_svg_and_png() {
        let chart = Chart {
            title: "t <1>".into(),
            x_label: "offloads".into(),
            y_label: "msgs/s".into(),
            log_x: true,
            series: vec![Series {
                name: "naam".into(),
                points: vec![(1.0, 10.0), (8.0, 20.0), (1024.0, 15.0)],
            }],
            markers: vec![(8.0, "onset".into())],
        };
        let svg = chart.svg();
        assert!(svg.contains("t &lt;1&gt;") && svg.contains("<polyline"));
        let png = svg_to_png(&svg).unwrap();
        assert_eq!(&png[1..4], b"PNG");
    }

    #[test]
    fn axis_numbers_keep_the_ticks_apart() {
        let ticks: Vec<String> = [0.0, 400.0, 800.0, 1200.0, 1600.0, 2000.0]
            .iter()
            .map(|&v| fmt_num(v))
            .collect();
        assert_eq!(ticks, ["0", "400", "800", "1.2k", "1.6k", "2k"]);
        assert_eq!(fmt_num(2_500_000.0), "2.5M");
        assert_eq!(fmt_num(3_000_000.0), "3M");
        assert_eq!(fmt_num(0.51), "0.51");
    }
}
