//! `SpectrumSelector`: scores every weight matrix of a model and selects the ones to train.

use std::path::Path;

use burn::module::Module;
use burn::tensor::backend::Backend;
use faer::Par;
use indicatif::{ProgressBar, ProgressStyle};
use rayon::prelude::*;

use super::naming::{module_name, module_type};
use super::selection::Selection;
use super::singular_values::{SvdMethod, singular_values};
use super::snr::{SnrScore, Threshold, score};
use super::table::{SnrEntry, SnrTable};
use super::weights::{Weight, file_weights, module_weights};
use crate::error::{Error, Result};
use crate::io::SafetensorsFiles;

/// The score of one weight matrix.
#[derive(Clone, Debug, PartialEq)]
pub struct ModuleSnr {
    /// Parameter name, e.g. `model.layers.0.mlp.down_proj.weight`.
    pub param_name: String,
    /// Module name: the parameter name without `.weight`.
    pub name: String,
    /// Module type, e.g. `mlp.down_proj`.
    pub module_type: String,
    /// Shape as stored (HF `[out, in]` for a checkpoint, Burn's `[in, out]` for a Linear).
    pub shape: Vec<usize>,
    /// Score, largest singular value, threshold and signal count (see [`SnrScore`]).
    pub score: SnrScore,
    /// Number of singular values, `min(rows, cols)`.
    pub rank: usize,
}

/// What a scan found, in scan (layer) order.
#[derive(Clone, Debug)]
pub struct ScanReport {
    /// The rule the scores were made with.
    pub threshold: Threshold,
    /// One entry per scored weight, in scan order.
    pub modules: Vec<ModuleSnr>,
    /// Things worth telling the user (a weight with NaN values, a failed decomposition).
    pub warnings: Vec<String>,
}

impl ScanReport {
    /// The scores as spectrum.py's table (types in its order, layers in order within a type).
    pub fn table(&self) -> SnrTable {
        SnrTable::from_scan_order(
            self.modules
                .iter()
                .map(|m| SnrEntry {
                    name: m.name.clone(),
                    module_type: m.module_type.clone(),
                    snr: m.score.snr as f64,
                })
                .collect(),
        )
    }

    /// spectrum.py's selection of the top `top_percent` per type.
    pub fn select(&self, top_percent: u32) -> Result<Selection> {
        Selection::top_percent(&self.table(), top_percent)
    }
}

/// A weight's score and, when something was off, a warning.
type Scored = (ModuleSnr, Option<String>);

/// Scores weight matrices by the signal-to-noise ratio of their singular values.
///
/// ```no_run
/// use burn_spectrum::spectrum::{SpectrumSelector, Threshold};
/// let report = SpectrumSelector::new(Threshold::Spectrum)
///     .scan_safetensors("SmolLM2-135M".as_ref())?;
/// let selection = report.select(25)?;
/// assert!(selection.is_selected("lm_head.weight"));
/// # Ok::<(), burn_spectrum::Error>(())
/// ```
#[derive(Clone, Debug, Default)]
pub struct SpectrumSelector {
    threshold: Threshold,
    types: Option<Vec<String>>,
    progress: bool,
    method: SvdMethod,
}

/// A matrix at least this large (in elements) is decomposed as the only big one in memory,
/// with all cores offered to it; smaller ones are decomposed side by side, one core each.
const ALONE_MIN_NUMEL: usize = 1 << 22;

impl SpectrumSelector {
    /// A selector with this threshold, the Gram route, all types, no progress bar.
    pub fn new(threshold: Threshold) -> Self {
        SpectrumSelector {
            threshold,
            types: None,
            progress: false,
            method: SvdMethod::Gram,
        }
    }

    /// How singular values are computed (default [`SvdMethod::Gram`]; [`SvdMethod::Svd`] is slower
    /// and accurate to f64 also in the smallest values).
    pub fn with_svd_method(mut self, method: SvdMethod) -> Self {
        self.method = method;
        self
    }

    /// Scan only modules of these types (e.g. `mlp.down_proj`, `model.embed_tokens`).
    pub fn with_types(mut self, types: Vec<String>) -> Self {
        self.types = Some(types);
        self
    }

    /// Show a progress bar on standard error (hidden when it is not a terminal).
    pub fn with_progress(mut self, progress: bool) -> Self {
        self.progress = progress;
        self
    }

    /// Scans every `weight` of a Burn module tree, named by its parameter path.
    pub fn scan_module<B: Backend, M: Module<B>>(&self, module: &M) -> Result<ScanReport> {
        self.scan(module_weights::<B, M>(module))
    }

    /// Scans every `.weight` tensor of a `.safetensors` file or a Hugging Face folder (single
    /// or sharded), reading a few tensors at a time.
    pub fn scan_safetensors(&self, path: &Path) -> Result<ScanReport> {
        let checkpoint = SafetensorsFiles::open(path)?;
        self.scan(file_weights(&checkpoint)?)
    }

    fn scan(&self, weights: Vec<Weight<'_>>) -> Result<ScanReport> {
        let weights = self.filter_types(weights)?;
        let bar = self.progress_bar(weights.len());
        let largest = weights.iter().map(Weight::numel).max().unwrap_or(0);
        let alone = |w: &Weight| w.numel() >= ALONE_MIN_NUMEL && w.numel() * 4 >= largest;
        // Big matrices one at a time (memory stays near one of them), beside the small ones:
        // while a big one reads its tensor or runs a serial stage, the other cores go on with
        // small ones instead of waiting.
        let (big, small) = rayon::join(
            || {
                weights
                    .iter()
                    .enumerate()
                    .filter(|(_, w)| alone(w))
                    .map(|(i, w)| (i, self.score_weight(w, Par::rayon(0), &bar)))
                    .collect::<Vec<_>>()
            },
            || {
                weights
                    .par_iter()
                    .enumerate()
                    .filter(|(_, w)| !alone(w))
                    .map(|(i, w)| (i, self.score_weight(w, Par::Seq, &bar)))
                    .collect::<Vec<_>>()
            },
        );
        let mut results: Vec<Option<Result<Scored>>> = (0..weights.len()).map(|_| None).collect();
        for (i, result) in big.into_iter().chain(small) {
            results[i] = Some(result);
        }
        bar.finish_and_clear();
        let mut report = ScanReport {
            threshold: self.threshold,
            modules: Vec::with_capacity(weights.len()),
            warnings: Vec::new(),
        };
        for result in results {
            let (module, warning) = result.expect("every weight was scored")?;
            report.modules.push(module);
            report.warnings.extend(warning);
        }
        Ok(report)
    }

    fn filter_types<'a>(&self, weights: Vec<Weight<'a>>) -> Result<Vec<Weight<'a>>> {
        if weights.is_empty() {
            return Err(Error::NothingToScan("no `weight` parameters found".into()));
        }
        let Some(types) = &self.types else {
            return Ok(weights);
        };
        let type_of = |w: &Weight| module_type(module_name(&w.param_name)).to_owned();
        if let Some(unknown) = types
            .iter()
            .find(|t| !weights.iter().any(|w| &type_of(w) == *t))
        {
            let mut present: Vec<String> = weights.iter().map(type_of).collect();
            present.sort();
            present.dedup();
            return Err(Error::NothingToScan(format!(
                "no weight of type `{unknown}`; types present: {}",
                present.join(", ")
            )));
        }
        Ok(weights
            .into_iter()
            .filter(|w| types.contains(&type_of(w)))
            .collect())
    }

    fn score_weight(
        &self,
        weight: &Weight,
        par: Par,
        bar: &ProgressBar,
    ) -> Result<(ModuleSnr, Option<String>)> {
        let (rows, cols) = weight.matrix_shape();
        let data = (weight.read)()?;
        let name = module_name(&weight.param_name);
        let mut warning = None;
        let singular = if data.is_empty() {
            warning = Some(format!("`{name}` has no elements; its SNR is NaN"));
            vec![f32::NAN]
        } else if data.iter().all(|v| v.is_finite()) {
            singular_values(&data, rows, cols, self.method, par).unwrap_or_else(|| {
                warning = Some(format!(
                    "`{name}`: singular values did not converge; SNR is NaN"
                ));
                vec![f32::NAN]
            })
        } else {
            warning = Some(format!(
                "`{name}` has NaN or infinite values; its SNR is NaN"
            ));
            vec![f32::NAN]
        };
        drop(data);
        let module = ModuleSnr {
            param_name: weight.param_name.clone(),
            name: name.to_owned(),
            module_type: module_type(name).to_owned(),
            shape: weight.shape.clone(),
            score: score(&singular, rows, cols, self.threshold),
            rank: rows.min(cols),
        };
        bar.inc(1);
        Ok((module, warning))
    }

    fn progress_bar(&self, len: usize) -> ProgressBar {
        if !self.progress {
            return ProgressBar::hidden();
        }
        let bar = ProgressBar::new(len as u64);
        bar.set_style(
            ProgressStyle::with_template("{bar:40} {pos}/{len} weights, {elapsed} (eta {eta})")
                .expect("the template is valid"),
        );
        bar
    }
}
