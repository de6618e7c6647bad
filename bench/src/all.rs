//! Each experiment as one call that prints its table and writes its files (JSON, CSV, SVG and
//! PNG plots, and a markdown section `<name>.md` naming the command that reproduces it), and
//! `naam-bench all`: every experiment with sizes that fit a 2-core machine in a few minutes,
//! then `summary.md`, the sections in one file the README can quote.

use crate::btree::{self, BtreeConfig};
use crate::placement::{self, CompareConfig, System};
use crate::report;
use crate::scale::{self, ScaleConfig};
use crate::ycsb::Workload;
use std::fmt::Write as _;
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

/// What one experiment produced.
#[derive(Debug, Clone)]
pub struct Section {
    pub title: String,
    /// The command that reproduces it.
    pub command: String,
    /// A markdown table of the results.
    pub table: String,
    /// Files written (data and plots).
    pub files: Vec<PathBuf>,
    /// Plot files (SVG) to show in the summary.
    pub figures: Vec<PathBuf>,
    pub notes: String,
}

impl Section {
    /// The section as markdown; figure links are relative to `dir`.
    pub fn markdown(&self, dir: &Path) -> String {
        let mut s = format!("## {}\n\n```sh\n{}\n```\n\n", self.title, self.command);
        if !self.notes.is_empty() {
            s += &self.notes;
            s += "\n\n";
        }
        s += &self.table;
        s.push('\n');
        for f in &self.figures {
            let rel = f.strip_prefix(dir).unwrap_or(f).display().to_string();
            let _ = writeln!(s, "![{rel}]({rel})");
        }
        s
    }

    /// Writes `<dir>/<name>.md` and adds it to the files.
    fn finish(mut self, dir: &Path, name: &str) -> anyhow::Result<Self> {
        let md = dir.join(format!("{name}.md"));
        crate::report::write_file(&md, self.markdown(dir))?;
        self.files.push(md);
        for f in &self.files {
            println!("wrote {}", f.display());
        }
        Ok(self)
    }
}

fn out_flag(out: &Path) -> String {
    if out == Path::new(crate::report::REFERENCE) {
        String::new()
    } else {
        format!(" --out {}", out.display())
    }
}

fn list<T: ToString>(v: &[T]) -> String {
    v.iter().map(T::to_string).collect::<Vec<_>>().join(",")
}

fn svgs(files: &[PathBuf]) -> Vec<PathBuf> {
    files
        .iter()
        .filter(|f| f.extension().is_some_and(|e| e == "svg"))
        .cloned()
        .collect()
}

/// The scale experiment: prints each point, writes `scale.{json,csv,md}` and its plots.
pub fn scale(cfg: &ScaleConfig, saturate: bool, out: &Path) -> anyhow::Result<Section> {
    println!(
        "scale: in-process open-loop generator, {} NAAM worker(s), back-off {}",
        cfg.naam_workers,
        cfg.backoff.name()
    );
    let mut cfg = cfg.clone();
    let offered = cfg.rate;
    let mut rows = Vec::new();
    let mut modes = vec![offered];
    if saturate {
        modes.push(None);
    }
    for mode in modes {
        cfg.rate = mode;
        println!(
            "{:>6} {:>8} {:>12} {:>10} {:>9} {:>9} {:>9} {:>12}",
            "system",
            "offloads",
            "offered/s",
            "done/s",
            "p50 us",
            "p99 us",
            "p99.9 us",
            "mem/offload"
        );
        rows.extend(scale::run(&cfg, |p| {
            println!(
                "{:>6} {:>8} {:>12} {:>10.0} {:>9.1} {:>9.1} {:>9.1} {:>10.1}KiB",
                p.system,
                p.offloads,
                p.offered_per_s
                    .map_or("saturate".into(), |r| format!("{r:.0}")),
                p.throughput_per_s,
                p.latency.p50_us,
                p.latency.p99_us,
                p.latency.p999_us,
                p.memory_per_offload_bytes / 1024.0
            );
        })?);
    }
    print!("{}", scale::goal(&rows));
    let mut files = report::write_rows(out, "scale", &rows)?;
    files.extend(scale::write_charts(out, "scale", &rows)?);
    Section {
        title: "Scale: N distinct offloads, NAAM vs iPipe-style actors".into(),
        command: format!(
            "naam-bench scale --offloads {} --rate {:.0} --seconds {}{}{}{}{}",
            list(&cfg.offloads),
            offered.unwrap_or(0.0),
            cfg.duration.as_secs_f64(),
            if saturate { " --saturate" } else { "" },
            if cfg.naam_workers == 1 {
                String::new()
            } else {
                format!(" --workers {}", cfg.naam_workers)
            },
            if cfg.backoff == naam_link::BackoffMode::Spin {
                " --spin"
            } else {
                ""
            },
            out_flag(out)
        ),
        table: format!("{}\n{}", scale::goal(&rows), scale::markdown(&rows)),
        figures: svgs(&files),
        files,
        notes: "In-process open-loop generator (DESIGN §8); latency from each message's \
                intended send time (at saturation the queue grows without bound, so only the \
                throughput means something). NAAM: the shared VM pool on run-to-completion \
                workers; the iPipe-style baseline runs one OS thread per offload. Memory per \
                offload is the growth of resident memory while the offloads are set up: the \
                allocator reuses what earlier points freed, so later points (and the \
                saturation pass) under-report it."
            .into(),
    }
    .finish(out, "scale")
}

/// The placement comparison: writes `ycsb.{json,csv,md}` and its bar charts.
pub fn ycsb_compare(cfg: &CompareConfig, out: &Path) -> anyhow::Result<Section> {
    println!(
        "ycsb placement comparison: {} keys of {} B, {:?} (theta {}), {} thread(s) x {} outstanding, {:.1} s per run, local deployments (back-off yield)",
        cfg.keys,
        cfg.value_size,
        cfg.dist,
        cfg.theta,
        cfg.threads,
        cfg.outstanding,
        cfg.duration.as_secs_f64()
    );
    println!(
        "{:>3} {:>22} {:>9} {:>8} {:>8} {:>9} {:>9} {:>9} {:>14}",
        "wl",
        "placement",
        "ops/s",
        "p50 us",
        "p99 us",
        "p99.9 us",
        "host s/M",
        "nic s/M",
        "client/nic/host"
    );
    let rows = placement::run(cfg, |r| {
        println!(
            "{:>3} {:>22} {:>9.0} {:>8.1} {:>8.1} {:>9.1} {:>9.2} {:>9.2} {:>4.0}/{:.0}/{:.0} %{}",
            format!("{:?}", r.workload),
            r.label,
            r.throughput_per_s,
            r.p50_us,
            r.p99_us,
            r.p999_us,
            r.host_cpu_s_per_mop,
            r.nic_cpu_s_per_mop,
            100.0 * r.at_client,
            100.0 * r.at_nic,
            100.0 * r.at_host,
            match (&r.first_error, r.errors) {
                (Some(e), n) => format!("  ({n} errors, first: {e})"),
                _ => String::new(),
            }
        );
    })?;
    let mut files = report::write_rows(out, "ycsb", &rows)?;
    files.extend(placement::write_charts(out, "ycsb", &rows)?);
    let systems: Vec<String> = cfg
        .systems
        .iter()
        .map(|s| format!("{s:?}").to_lowercase())
        .collect();
    let workloads: Vec<String> = cfg
        .workloads
        .iter()
        .map(|w| format!("{w:?}").to_lowercase())
        .collect();
    Section {
        title: "YCSB on MICA: where the handlers run".into(),
        command: format!(
            "naam-bench ycsb --workload {} --systems {} --keys {} --value-size {} --distribution {} --duration {} --threads {} --outstanding {}{}{}",
            workloads.join(","),
            systems.join(","),
            cfg.keys,
            cfg.value_size,
            format!("{:?}", cfg.dist).to_lowercase(),
            cfg.duration.as_secs_f64(),
            cfg.threads,
            cfg.outstanding,
            cfg.rate.map_or(String::new(), |r| format!(" --rate {r:.0}")),
            out_flag(out)
        ),
        table: placement::markdown(&rows),
        figures: svgs(&files),
        files,
        notes: format!(
            "Each placement on its own local deployment (host agent and dataplane processes, \
             kernel UDP on loopback, shared-memory link, back-off yield), closed loop. Host \
             CPU s/Mop: the host agent's utime + stime (`/proc/PID/stat`) per million \
             completed operations — what offloading saves the host. Systems: {}.",
            System::ALL
                .iter()
                .map(|s| format!("`{}` = {}", format!("{s:?}").to_lowercase(), s.label()))
                .collect::<Vec<_>>()
                .join(", ")
        ),
    }
    .finish(out, "ycsb")
}

/// The B-tree experiment: writes `btree.{json,csv,md}` and its plots.
pub fn btree(cfg: &BtreeConfig, out: &Path) -> anyhow::Result<Section> {
    println!(
        "btree: Cell-style lookups, client traversal vs one active message, depths {:?}, {} outstanding, {:.1} s each",
        cfg.depths,
        cfg.outstanding,
        cfg.duration.as_secs_f64()
    );
    println!(
        "{:>5} {:>7} {:>30} {:>10} {:>8} {:>8} {:>9} {:>6}",
        "depth", "keys", "method", "lookups/s", "p50 us", "p99 us", "p99.9 us", "RTs"
    );
    let points = btree::run(cfg, |p| {
        println!(
            "{:>5} {:>7} {:>30} {:>10.0} {:>8.1} {:>8.1} {:>9.1} {:>6.2}{}",
            p.depth,
            p.keys,
            p.label,
            p.throughput_per_s,
            p.latency.p50_us,
            p.latency.p99_us,
            p.latency.p999_us,
            p.round_trips_per_lookup,
            match &p.first_error {
                Some(e) => format!("  ({} errors, first: {e})", p.errors),
                None => String::new(),
            }
        );
    })?;
    let mut files = report::write_rows(out, "btree", &points)?;
    files.extend(btree::write_charts(out, "btree", &points)?);
    Section {
        title: "B-tree: client-side traversal vs one active message".into(),
        command: format!(
            "naam-bench btree --depths {} --seconds {} --outstanding {}{}",
            list(&cfg.depths),
            cfg.duration.as_secs_f64(),
            cfg.outstanding,
            out_flag(out)
        ),
        table: btree::markdown(&points),
        figures: svgs(&files),
        files,
        notes: "One local deployment per depth (full 16-key nodes), dataplane pinned at the \
                NIC; both methods start at the root offset from `describe(btree)` and every \
                lookup's value is checked."
            .into(),
    }
    .finish(out, "btree")
}

/// Sizes for `naam-bench all`.
#[derive(Debug, Clone)]
pub struct AllConfig {
    pub scale: ScaleConfig,
    pub scale_saturate: bool,
    pub ycsb: CompareConfig,
    pub btree: BtreeConfig,
    /// Run the shift experiment (a subcommand of this program, when it has one).
    pub shift: bool,
}

impl AllConfig {
    /// About 10 minutes of a 2-core machine at most; `scale` multiplies every duration.
    pub fn sized(scale: f64) -> Self {
        let secs = |s: f64| Duration::from_secs_f64((s * scale).max(0.05));
        AllConfig {
            scale: ScaleConfig {
                duration: secs(2.0),
                ..ScaleConfig::default()
            },
            scale_saturate: true,
            ycsb: CompareConfig {
                keys: 65_536,
                duration: secs(5.0),
                warmup: secs(0.5),
                ..CompareConfig::default()
            },
            btree: BtreeConfig {
                duration: secs(3.0),
                ..BtreeConfig::default()
            },
            shift: true,
        }
    }
}

/// Runs the `shift` subcommand of this program (the shift experiment lives in its own module,
/// with its own flags) with `--out`; `None` when this build has no such subcommand.
pub fn shift(out: &Path) -> anyhow::Result<Option<Section>> {
    let exe = std::env::current_exe()?;
    let mut cmd = std::process::Command::new(&exe);
    if exe.file_stem().and_then(|s| s.to_str()) == Some("naam-rs") {
        cmd.arg("bench");
    }
    let status = cmd
        .arg("--out")
        .arg(out)
        .arg("shift")
        .stderr(std::process::Stdio::piped())
        .spawn()?
        .wait_with_output()?;
    let stderr = String::from_utf8_lossy(&status.stderr);
    if !status.status.success() {
        if stderr.contains("unrecognized subcommand") {
            println!("shift: not in this build of naam-bench (skipped)");
            return Ok(None);
        }
        anyhow::bail!("naam-bench shift failed ({}): {stderr}", status.status);
    }
    eprint!("{stderr}");
    let files: Vec<PathBuf> = files_in(out)
        .into_iter()
        .filter(|f| {
            f.file_name()
                .and_then(|n| n.to_str())
                .is_some_and(|n| n.starts_with("shift"))
        })
        .collect();
    let md = out.join("shift.md");
    let (table, notes) = match std::fs::read_to_string(&md) {
        // The experiment wrote its own section: quote it whole.
        Ok(text) => (text, String::new()),
        Err(_) => (
            String::new(),
            format!(
                "Files: {}",
                files
                    .iter()
                    .map(|f| format!("`{}`", f.display()))
                    .collect::<Vec<_>>()
                    .join(", ")
            ),
        ),
    };
    Ok(Some(Section {
        title: "Shift: where messages run around injected congestion".into(),
        command: format!("naam-bench shift{}", out_flag(out)),
        table,
        figures: if md.exists() {
            Vec::new()
        } else {
            svgs(&files)
        },
        files,
        notes,
    }))
}

fn files_in(dir: &Path) -> Vec<PathBuf> {
    let mut v: Vec<PathBuf> = std::fs::read_dir(dir)
        .map(|rd| rd.flatten().map(|e| e.path()).collect())
        .unwrap_or_default();
    v.sort();
    v
}

/// Every experiment, then `summary.md`.
pub fn run(cfg: &AllConfig, out: &Path) -> anyhow::Result<PathBuf> {
    crate::report::make_folder(out)?;
    let started = Instant::now();
    let mut sections = Vec::new();
    let mut timings = Vec::new();
    let mut step = |name: &str, r: anyhow::Result<Option<Section>>| -> anyhow::Result<()> {
        let s = r.map_err(|e| e.context(format!("experiment {name}")))?;
        timings.push((name.to_string(), started.elapsed()));
        sections.extend(s);
        Ok(())
    };
    step(
        "scale",
        scale(&cfg.scale, cfg.scale_saturate, out).map(Some),
    )?;
    step("ycsb", ycsb_compare(&cfg.ycsb, out).map(Some))?;
    step("btree", btree(&cfg.btree, out).map(Some))?;
    if cfg.shift {
        step("shift", shift(out))?;
    }
    let mut s = String::from("# NAAM-rs results\n\n");
    let _ = writeln!(
        s,
        "Produced by `naam-bench all{}` in {:.0} s on this machine ({} CPUs); each section names \
         the command that reproduces it alone. `naam-bench` is `cargo run --release -p naam-bench --` \
         (or `naam-rs bench`).\n",
        out_flag(out),
        started.elapsed().as_secs_f64(),
        std::thread::available_parallelism().map_or(0, |n| n.get())
    );
    for sec in &sections {
        s += &sec.markdown(out);
        s.push('\n');
    }
    let path = out.join("summary.md");
    crate::report::write_file(&path, s)?;
    println!("wrote {}", path.display());
    for (name, t) in timings {
        println!("{name} done at {:.0} s", t.as_secs_f64());
    }
    Ok(path)
}

/// The workloads given, or all three.
pub fn workloads_or_all(ws: &[Workload]) -> Vec<Workload> {
    if ws.is_empty() {
        vec![Workload::A, Workload::B, Workload::C]
    } else {
        ws.to_vec()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_section_quotes_its_command_table_and_figures() {
        let dir = Path::new("/tmp/r");
        let s = Section {
            title: "T".into(),
            command: "naam-bench x".into(),
            table: "| a |\n|---|\n| 1 |\n".into(),
            files: vec![],
            figures: vec![dir.join("x-throughput.svg")],
            notes: "n".into(),
        };
        let md = s.markdown(dir);
        assert!(md.starts_with("## T\n\n```sh\nnaam-bench x\n```"), "{md}");
        assert!(md.contains("| 1 |"));
        assert!(md.contains("![x-throughput.svg](x-throughput.svg)"), "{md}");
    }

    #[test]
    fn sizes_fit_the_time_budget() {
        let c = AllConfig::sized(1.0);
        // scale: 2 systems x N points (x2 with saturation); ycsb: systems x workloads;
        // btree: depths x 2 methods; plus warm-ups and ~1 s per deployment.
        let scale = c.scale.offloads.len() as f64 * 2.0 * c.scale.duration.as_secs_f64() * 2.0;
        let ycsb = (c.ycsb.systems.len() * c.ycsb.workloads.len()) as f64
            * (c.ycsb.duration + c.ycsb.warmup).as_secs_f64()
            + c.ycsb.systems.len() as f64;
        let btree =
            c.btree.depths.len() as f64 * (2.0 * (c.btree.duration.as_secs_f64() + 0.2) + 1.0);
        let total = scale + ycsb + btree;
        assert!(total < 8.0 * 60.0, "{total} s leaves no room for shift");
        let tiny = AllConfig::sized(0.01);
        assert!(tiny.ycsb.duration < Duration::from_millis(100));
    }
}
