//! `spectrum import-gguf`: a GGUF file into a Hugging Face folder.

use std::path::Path;
use std::time::Instant;

use crate::stdout;
use burn_spectrum::Result;
use burn_spectrum::model::gguf::{OutDtype, import_gguf as import};
use indicatif::{ProgressBar, ProgressStyle};

pub fn import_gguf(file: &Path, out_dir: &Path, dtype: OutDtype) -> Result<()> {
    let started = Instant::now();
    let bar = ProgressBar::new(0).with_style(
        ProgressStyle::with_template("{msg} [{bar:30}] {pos}/{len} tensors ({elapsed})")
            .expect("a valid template")
            .progress_chars("=> "),
    );
    bar.set_message("importing");
    let summary = import(file, out_dir, dtype, |done, total| {
        bar.set_length(total as u64);
        bar.set_position(done as u64);
    })?;
    bar.finish_and_clear();
    for warning in &summary.warnings {
        eprintln!("warning: {warning}");
    }
    let files: Vec<String> = summary
        .files
        .iter()
        .filter_map(|f| f.file_name().map(|n| n.to_string_lossy().into_owned()))
        .collect();
    stdout::println(&format!(
        "imported {} tensors ({} parameters, {dtype}) in {:.2} s into {}: {}",
        summary.tensors.len(),
        summary.n_params,
        started.elapsed().as_secs_f64(),
        out_dir.display(),
        files.join(", ")
    ))
}
