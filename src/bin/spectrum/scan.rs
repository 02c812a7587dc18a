//! `spectrum scan` and `spectrum select`.

use std::path::Path;
use std::time::Instant;

use burn_spectrum::io::write_atomic;
use burn_spectrum::{Result, SnrTable, SpectrumSelector, Threshold};

pub fn scan(
    model: &Path,
    mut top_percent: Vec<u32>,
    out_dir: &Path,
    threshold: &str,
    types: Vec<String>,
    model_name: Option<String>,
) -> Result<()> {
    if top_percent.is_empty() {
        top_percent = vec![25, 50];
    }
    let threshold: Threshold = threshold.parse().expect("clap checked the value");
    let mut selector = SpectrumSelector::new(threshold).with_progress(true);
    if !types.is_empty() {
        selector = selector.with_types(types);
    }
    let started = Instant::now();
    let report = selector.scan_checkpoint(model)?;
    let seconds = started.elapsed().as_secs_f64();
    for warning in &report.warnings {
        eprintln!("warning: {warning}");
    }
    let table = report.table();
    let stem = format!("snr_results_{}", slug(model, model_name.as_deref()));
    let mut files = vec![
        (format!("{stem}.json"), table.to_json()),
        (format!("{stem}_sorted.json"), table.to_sorted_json()),
    ];
    files.extend(selection_files(&table, &stem, &top_percent)?);
    let written = write_all(out_dir, &files)?;
    println!(
        "scanned {} weights in {seconds:.2} s (threshold {}); wrote {}",
        report.modules.len(),
        threshold.name(),
        written.join(", ")
    );
    Ok(())
}

pub fn select(snr_json: &Path, top_percent: &[u32], out_dir: &Path) -> Result<()> {
    let table = SnrTable::read(snr_json)?;
    let stem = snr_json
        .file_stem()
        .map(|s| s.to_string_lossy().into_owned())
        .unwrap_or_default();
    let stem = stem.strip_suffix("_sorted").unwrap_or(&stem).to_owned();
    let files = selection_files(&table, &stem, top_percent)?;
    let written = write_all(out_dir, &files)?;
    println!(
        "selected from {} modules of {} types; wrote {}",
        table.entries.len(),
        table.types().len(),
        written.join(", ")
    );
    Ok(())
}

fn selection_files(
    table: &SnrTable,
    stem: &str,
    percents: &[u32],
) -> Result<Vec<(String, String)>> {
    percents
        .iter()
        .map(|&pct| {
            let yaml = table.select(pct)?.to_yaml();
            Ok((format!("{stem}_unfrozenparameters_{pct}percent.yaml"), yaml))
        })
        .collect()
}

/// Writes every file atomically; the contents were all computed before the first write.
fn write_all(out_dir: &Path, files: &[(String, String)]) -> Result<Vec<String>> {
    std::fs::create_dir_all(out_dir).map_err(|e| burn_spectrum::Error::io(out_dir, e))?;
    files
        .iter()
        .map(|(name, contents)| {
            let path = out_dir.join(name);
            write_atomic(&path, contents.as_bytes())?;
            Ok(path.display().to_string())
        })
        .collect()
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
