//! What the criterion benches share: reading back criterion's own
//! estimates, so each bench prints its ratios from the same run.

use std::path::PathBuf;

/// Where criterion writes its results: `CRITERION_HOME`, else the cargo
/// target directory's `criterion` (as criterion itself decides).
fn criterion_dir() -> PathBuf {
    if let Some(home) = std::env::var_os("CRITERION_HOME") {
        return home.into();
    }
    let target = std::env::var_os("CARGO_TARGET_DIR")
        .map(PathBuf::from)
        .unwrap_or_else(|| PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../target"));
    target.join("criterion")
}

/// Criterion's mean estimate for benchmark `id` of `group`, in ns per
/// iteration; `None` when that benchmark did not run (a filter).
pub fn mean_ns(group: &str, id: &str) -> Option<f64> {
    let path = criterion_dir()
        .join(group)
        .join(id)
        .join("new/estimates.json");
    let text = std::fs::read_to_string(path).ok()?;
    let v: serde_json::Value = serde_json::from_str(&text).ok()?;
    v["mean"]["point_estimate"].as_f64()
}
