//! Writing experiment results: JSON and CSV under a results folder.

use std::path::{Path, PathBuf};

/// Writes `rows` as `<dir>/<name>.json` and `<dir>/<name>.csv`; returns the paths.
pub fn write_rows<T: serde::Serialize>(
    dir: &Path,
    name: &str,
    rows: &[T],
) -> anyhow::Result<Vec<PathBuf>> {
    std::fs::create_dir_all(dir)?;
    let json = dir.join(format!("{name}.json"));
    std::fs::write(&json, serde_json::to_string_pretty(rows)?)?;
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
    std::fs::write(&csv, text)?;
    Ok(vec![json, csv])
}

fn cell(v: &serde_json::Value) -> String {
    match v {
        serde_json::Value::Null => String::new(),
        serde_json::Value::String(s) => s.clone(),
        other => other.to_string(),
    }
}
