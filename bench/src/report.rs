//! Writing experiment results: JSON and CSV under a results folder.
//!
//! A run writes into a folder of its own, `runs/<UTC time>-<pid>` (git-ignored) unless `--out` says
//! otherwise, so running an experiment or the demo never changes the checkout; `results/`
//! holds the committed reference figures, rewritten only with `--out results`.

use std::path::{Path, PathBuf};

/// The committed reference results.
pub const REFERENCE: &str = "results";

/// `runs/YYYYMMDD-HHMMSS-PID` (UTC, now; this process): where a run writes when `--out` is
/// not given.
pub fn run_folder() -> PathBuf {
    let secs = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| d.as_secs());
    // With the process id: two runs started in the same second (two demos at once) wrote
    // over each other's results.
    PathBuf::from("runs").join(format!("{}-{}", utc_stamp(secs), std::process::id()))
}

/// `YYYYMMDD-HHMMSS` for `secs` since the Unix epoch (civil-from-days, proleptic Gregorian).
fn utc_stamp(secs: u64) -> String {
    let days = (secs / 86_400) as i64;
    let rem = secs % 86_400;
    let z = days + 719_468;
    let era = z.div_euclid(146_097);
    let doe = z.rem_euclid(146_097);
    let yoe = (doe - doe / 1_460 + doe / 36_524 - doe / 146_096) / 365;
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    let mp = (5 * doy + 2) / 153;
    let day = doy - (153 * mp + 2) / 5 + 1;
    let month = if mp < 10 { mp + 3 } else { mp - 9 };
    let year = yoe + era * 400 + i64::from(month <= 2);
    format!(
        "{year:04}{month:02}{day:02}-{:02}{:02}{:02}",
        rem / 3600,
        rem / 60 % 60,
        rem % 60
    )
}

/// Makes the results folder `dir` (and its parents), or says which it could not make.
pub fn make_folder(dir: &Path) -> anyhow::Result<()> {
    use anyhow::Context as _;
    std::fs::create_dir_all(dir).with_context(|| format!("results folder {}", dir.display()))
}

/// Writes `text` to `path`, or says which file it could not write.
pub fn write_file(path: &Path, text: impl AsRef<[u8]>) -> anyhow::Result<()> {
    use anyhow::Context as _;
    std::fs::write(path, text).with_context(|| format!("write {}", path.display()))
}

/// Writes `rows` as `<dir>/<name>.json` and `<dir>/<name>.csv`; returns the paths.
pub fn write_rows<T: serde::Serialize>(
    dir: &Path,
    name: &str,
    rows: &[T],
) -> anyhow::Result<Vec<PathBuf>> {
    make_folder(dir)?;
    let json = dir.join(format!("{name}.json"));
    write_file(&json, serde_json::to_string_pretty(rows)?)?;
    let csv = dir.join(format!("{name}.csv"));
    let values: Vec<serde_json::Map<String, serde_json::Value>> = rows
        .iter()
        .map(|r| match serde_json::to_value(r) {
            Ok(serde_json::Value::Object(m)) => Ok(m),
            Ok(other) => anyhow::bail!("row is not an object: {other}"),
            Err(e) => Err(e.into()),
        })
        .collect::<anyhow::Result<_>>()?;
    let mut text = String::new();
    if let Some(first) = values.first() {
        text += &first.keys().cloned().collect::<Vec<_>>().join(",");
        text.push('\n');
        for v in &values {
            let cells: Vec<String> = first
                .keys()
                .map(|k| v.get(k).map_or(String::new(), cell))
                .collect();
            text += &cells.join(",");
            text.push('\n');
        }
    }
    write_file(&csv, text)?;
    Ok(vec![json, csv])
}

fn cell(v: &serde_json::Value) -> String {
    match v {
        serde_json::Value::Null => String::new(),
        serde_json::Value::String(s) => s.clone(),
        other => other.to_string(),
    }
}

#[cfg(test)]
mod stamp_tests {
    #[test]
    fn utc_stamps() {
        assert_eq!(super::utc_stamp(0), "19700101-000000");
        assert_eq!(super::utc_stamp(951_782_400), "20000229-000000");
        assert_eq!(super::utc_stamp(1_796_401_099), "20261204-161819");
        // A run writes under runs/ (git-ignored), never into the reference results/.
        assert!(super::run_folder().starts_with("runs"));
    }
}
