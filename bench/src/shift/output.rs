//! A shift run's report: the timeline table, JSON/CSV files, charts and the printed summary.

use super::*;
use crate::report;
use std::path::{Path, PathBuf};

/// One row of the timeline as written (shares of the messages sent in that millisecond).
#[derive(Debug, Clone, serde::Serialize)]
pub struct TimelineRow {
    pub ms: usize,
    pub sent: u32,
    pub client: f64,
    pub nic: f64,
    pub host: f64,
    pub delayed: f64,
    pub lost: f64,
}

pub fn timeline_rows(timeline: &[Bucket]) -> Vec<TimelineRow> {
    timeline
        .iter()
        .enumerate()
        .map(|(ms, b)| {
            let t = b.total().max(1) as f64;
            TimelineRow {
                ms,
                sent: b.total(),
                client: b.client as f64 / t,
                nic: b.nic as f64 / t,
                host: b.host as f64 / t,
                delayed: b.delayed as f64 / t,
                lost: b.lost as f64 / t,
            }
        })
        .collect()
}

/// Writes the results under `dir`: `shift.{json,csv}` (the injections), `shift-timeline`,
/// `shift-decisions`, `shift-summary.json` (configuration, summary, injections, decisions)
/// and the plots `shift-timeline.{svg,png}` (the first repetition) and `shift-zoom` (around
/// its host onset). Returns the paths.
pub fn write(run: &ShiftRun, dir: &Path) -> anyhow::Result<Vec<PathBuf>> {
    let mut paths = report::write_rows(dir, "shift", &run.injections)?;
    paths.extend(report::write_rows(
        dir,
        "shift-timeline",
        &timeline_rows(&run.timeline),
    )?);
    paths.extend(report::write_rows(dir, "shift-decisions", &run.decisions)?);
    let doc = serde_json::json!({
        "experiment": "shift",
        "config": run.config,
        "summary": run.summary,
        "injections": run.injections,
        "decisions": run.decisions,
    });
    let p = dir.join("shift-summary.json");
    crate::report::write_file(&p, serde_json::to_string_pretty(&doc)?)?;
    paths.push(p);
    paths.extend(chart(run).write(dir, "shift-timeline")?);
    paths.extend(chart_zoom(run).write(dir, "shift-zoom")?);
    Ok(paths)
}

/// The first repetition: share of the messages at client / NIC / host per millisecond.
pub fn chart(run: &ShiftRun) -> crate::plot::Chart {
    let rep = run.config.rep_ms() as usize;
    chart_span(
        run,
        0,
        rep,
        format!(
            "Where messages execute ({:.0} msgs/s; host, then NIC congested)",
            run.config.rate
        ),
    )
}

/// Around the first host onset (30 ms before to 120 ms after), in milliseconds.
pub fn chart_zoom(run: &ShiftRun) -> crate::plot::Chart {
    let on = run.injections.first().map_or(0, |i| i.onset_ms as usize);
    let mut c = chart_span(
        run,
        on.saturating_sub(30),
        on + 120,
        "The first host congestion, close up".into(),
    );
    for s in &mut c.series {
        for p in &mut s.points {
            p.0 *= 1e3;
        }
    }
    for m in &mut c.markers {
        m.0 *= 1e3;
    }
    c.x_label = "time (ms), 1 ms buckets by send time".into();
    c
}

pub(super) fn chart_span(
    run: &ShiftRun,
    from: usize,
    to: usize,
    title: String,
) -> crate::plot::Chart {
    let to = to.min(run.timeline.len());
    let from = from.min(to);
    let rows: Vec<TimelineRow> = timeline_rows(&run.timeline)
        .into_iter()
        .skip(from)
        .take(to - from)
        .collect();
    let series = |name: &str, f: fn(&TimelineRow) -> f64| crate::plot::Series {
        name: name.into(),
        points: rows
            .iter()
            .filter(|r| r.sent > 0)
            .map(|r| (r.ms as f64 / 1e3, f(r)))
            .collect(),
    };
    let mut markers = Vec::new();
    for i in run.injections.iter().filter(|i| i.rep == 0) {
        for (at, what) in [(i.onset_ms, "congested"), (i.end_ms, "ends")] {
            if (from as f64..to as f64).contains(&at) {
                markers.push((at / 1e3, format!("{} {what}", i.congested)));
            }
        }
    }
    crate::plot::Chart {
        title,
        x_label: "time (s), 1 ms buckets by send time".into(),
        y_label: "share of the messages sent".into(),
        log_x: false,
        series: vec![
            series("client", |r| r.client),
            series("NIC", |r| r.nic),
            series("host", |r| r.host),
            series("delayed", |r| r.delayed),
        ],
        markers,
    }
}

/// The table printed after a run.
pub fn print(run: &ShiftRun) {
    let f = |v: Option<f64>| v.map_or("never".into(), |x| format!("{x:.0}"));
    println!(
        "{:>4} {:>10} {:>9} {:>8} {:>9} {:>9} {:>8} {:>9}",
        "rep", "congested", "onset s", "ack us", "before", "shift ms", "to", "back ms"
    );
    for i in &run.injections {
        println!(
            "{:>4} {:>10} {:>9.3} {:>8.0} {:>9} {:>9} {:>8} {:>9}",
            i.rep,
            i.congested,
            i.onset_ms / 1e3,
            i.ack_us,
            i.before,
            f(i.shift_ms),
            i.moved_to,
            f(i.back_ms)
        );
    }
    let s = &run.summary;
    let line = |what: &str, sp: &Spread| {
        println!(
            "{what:<22} median {:>5.1} ms  (min {:.0}, max {:.0}, n = {})",
            sp.median, sp.min, sp.max, sp.n
        )
    };
    line("host congested: shift", &s.host_shift_ms);
    line("host congested: back", &s.host_back_ms);
    line("NIC congested: shift", &s.nic_shift_ms);
    line("NIC congested: back", &s.nic_back_ms);
    println!(
        "{} messages, {} delayed (> {} ms), {} lost, {} retransmissions, {} policy decisions, \
         {} injection(s) never shifted, {} found the traffic elsewhere already",
        s.messages,
        s.delayed,
        run.config.timeout_ms,
        s.lost,
        s.retransmits,
        run.decisions.len(),
        s.not_shifted,
        s.unaffected
    );
}
