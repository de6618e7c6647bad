//! Grouped bar charts (the placement comparison): one group per category (say a YCSB
//! workload), one bar per series (say a placement) in each group. SVG by hand, PNG through
//! [`crate::plot::svg_to_png`], in the style of [`crate::plot::Chart`].

use std::fmt::Write as _;
use std::path::{Path, PathBuf};

/// One series: a value per category (`None`: no bar).
pub struct BarSeries {
    pub name: String,
    pub values: Vec<Option<f64>>,
}

pub struct BarChart {
    pub title: String,
    pub y_label: String,
    pub categories: Vec<String>,
    pub series: Vec<BarSeries>,
}

const W: f64 = 800.0;
const H: f64 = 480.0;
const LEFT: f64 = 80.0;
const RIGHT: f64 = 200.0;
const TOP: f64 = 50.0;
const BOTTOM: f64 = 60.0;
use crate::plot::{esc, fmt_num, nice_max, COLORS};

impl BarChart {
    pub fn svg(&self) -> String {
        let ymax = self
            .series
            .iter()
            .flat_map(|s| s.values.iter().flatten())
            .copied()
            .filter(|v| v.is_finite())
            .fold(0f64, f64::max);
        let ymax = nice_max(ymax * 1.05);
        let plot_w = W - LEFT - RIGHT;
        let groups = self.categories.len().max(1) as f64;
        let group_w = plot_w / groups;
        let bars = self.series.len().max(1) as f64;
        let bar_w = group_w * 0.8 / bars;
        let ty = |y: f64| H - BOTTOM - (y.max(0.0) / ymax) * (H - TOP - BOTTOM);
        let mut s = String::new();
        let _ = writeln!(
            s,
            r#"<svg xmlns="http://www.w3.org/2000/svg" width="{W}" height="{H}" viewBox="0 0 {W} {H}" font-family="DejaVu Sans, sans-serif" font-size="12">"#
        );
        let _ = writeln!(s, r#"<rect width="100%" height="100%" fill="white"/>"#);
        let _ = writeln!(
            s,
            r#"<text x="{}" y="28" font-size="16" text-anchor="middle">{}</text>"#,
            LEFT + plot_w / 2.0,
            esc(&self.title)
        );
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
        for (g, cat) in self.categories.iter().enumerate() {
            let gx = LEFT + group_w * g as f64;
            let _ = writeln!(
                s,
                r#"<text x="{}" y="{}" text-anchor="middle">{}</text>"#,
                gx + group_w / 2.0,
                H - BOTTOM + 18.0,
                esc(cat)
            );
            for (i, series) in self.series.iter().enumerate() {
                let Some(v) = series.values.get(g).copied().flatten() else {
                    continue;
                };
                let x = gx + group_w * 0.1 + bar_w * i as f64;
                let y = ty(v);
                let _ = writeln!(
                    s,
                    r#"<rect x="{x:.1}" y="{y:.1}" width="{:.1}" height="{:.1}" fill="{}"/>"#,
                    bar_w * 0.92,
                    (H - BOTTOM - y).max(0.0),
                    COLORS[i % COLORS.len()]
                );
            }
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
            r#"<text transform="translate(20,{}) rotate(-90)" text-anchor="middle">{}</text>"#,
            (TOP + H - BOTTOM) / 2.0,
            esc(&self.y_label)
        );
        for (i, series) in self.series.iter().enumerate() {
            let ly = TOP + 20.0 + 20.0 * i as f64;
            let _ = writeln!(
                s,
                r#"<rect x="{}" y="{}" width="14" height="14" fill="{}"/>"#,
                W - RIGHT + 15.0,
                ly - 7.0,
                COLORS[i % COLORS.len()]
            );
            let _ = writeln!(
                s,
                r#"<text x="{}" y="{}">{}</text>"#,
                W - RIGHT + 36.0,
                ly + 4.0,
                esc(&series.name)
            );
        }
        s.push_str("</svg>\n");
        s
    }

    /// Writes `<dir>/<name>.svg` and `<dir>/<name>.png`; returns the paths.
    pub fn write(&self, dir: &Path, name: &str) -> anyhow::Result<Vec<PathBuf>> {
        crate::plot::write_svg_png(dir, name, &self.svg())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn bars_are_proportional_and_missing_values_are_skipped() {
        let chart = BarChart {
            title: "t".into(),
            y_label: "ops/s".into(),
            categories: vec!["A".into(), "B".into()],
            series: vec![
                BarSeries {
                    name: "host".into(),
                    values: vec![Some(100.0), Some(50.0)],
                },
                BarSeries {
                    name: "nic".into(),
                    values: vec![None, Some(25.0)],
                },
            ],
        };
        let svg = chart.svg();
        let heights: Vec<f64> = svg
            .lines()
            .filter(|l| {
                l.starts_with("<rect x=") && l.contains("height=\"") && !l.contains("width=\"14\"")
            })
            .map(|l| {
                let h = &l[l.find("height=\"").unwrap() + 8..];
                h[..h.find('"').unwrap()].parse().unwrap()
            })
            .collect();
        assert_eq!(heights.len(), 3, "{svg}");
        assert!((heights[0] / heights[1] - 2.0).abs() < 0.01, "{heights:?}");
        assert!((heights[1] / heights[2] - 2.0).abs() < 0.01, "{heights:?}");
        let png = crate::plot::svg_to_png(&svg).unwrap();
        assert_eq!(&png[1..4], b"PNG");
    }
}
