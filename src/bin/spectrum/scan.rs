//! `spectrum scan` and `spectrum select`.

use std::path::{Path, PathBuf};
use std::time::Instant;

use crate::stdout;
use burn_spectrum::Result;
use burn_spectrum::spectrum::{SnrTable, SpectrumSelector, Threshold, write_spectrum_files};

pub fn scan(
    model: &Path,
    mut top_percent: Vec<u32>,
    out_dir: &Path,
    threshold: Threshold,
    types: Vec<String>,
    model_name: Option<String>,
) -> Result<()> {
    if top_percent.is_empty() {
        top_percent = vec![25, 50];
    }
    let mut selector = SpectrumSelector::new(threshold).with_progress(true);
    if !types.is_empty() {
        selector = selector.with_types(types);
    }
    let started = Instant::now();
    let report = selector.scan_safetensors(model)?;
    let seconds = started.elapsed().as_secs_f64();
    for warning in &report.warnings {
        eprintln!("warning: {warning}");
    }
    let table = report.table();
    let stem = format!("snr_results_{}", slug(model, model_name.as_deref()));
    let written = write_spectrum_files(&table, out_dir, &stem, true, &top_percent)?;
    stdout::println(&format!(
        "scanned {} weights in {seconds:.2} s (threshold {}); wrote {}",
        report.modules.len(),
        threshold.name(),
        names(&written)
    ))
}

pub fn select(snr_json: &Path, top_percent: &[u32], out_dir: &Path) -> Result<()> {
    let table = SnrTable::read(snr_json)?;
    let stem = snr_json
        .file_stem()
        .map(|s| s.to_string_lossy().into_owned())
        .unwrap_or_default();
    let stem = stem.strip_suffix("_sorted").unwrap_or(&stem).to_owned();
    let written = write_spectrum_files(&table, out_dir, &stem, false, top_percent)?;
    stdout::println(&format!(
        "selected from {} modules of {} types; wrote {}",
        table.entries.len(),
        table.types().len(),
        names(&written)
    ))
}

/// spectrum.py's slug: the model name with `/` and `_` replaced by `-`.
fn slug(model: &Path, model_name: Option<&str>) -> String {
    let name = match model_name {
        Some(name) => name.to_owned(),
        None => {
            let path = std::fs::canonicalize(model).unwrap_or_else(|_| model.to_owned());
            let name = if path.is_file() {
                path.file_stem()
            } else {
                path.file_name()
            };
            name.map(|n| n.to_string_lossy().into_owned())
                .unwrap_or_else(|| "model".into())
        }
    };
    name.replace(['/', '_'], "-")
}

fn names(paths: &[PathBuf]) -> String {
    let names: Vec<String> = paths.iter().map(|p| p.display().to_string()).collect();
    names.join(", ")
}
