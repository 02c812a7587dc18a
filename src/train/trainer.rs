//! The training loop: steps over a batch stream, with checkpoints every N steps and at the
//! end, and a progress bar.

use std::path::PathBuf;

use burn::module::AutodiffModule;
use burn::optim::GradientsParams;
use burn::tensor::backend::AutodiffBackend;
use indicatif::{ProgressBar, ProgressStyle};

use super::checkpoint::TrainerState;
use super::lr_scale::{SnrLrScaling, snr_lr_scales};
use super::step::{MicroLoss, StepMetrics, TrainStep};
use crate::data::{Batch, Batches};
use crate::error::Result;
use crate::nn::float_params;
use crate::spectrum::{SpectrumSelector, Threshold};

/// How long to train and where to keep checkpoints.
#[derive(Clone, Debug)]
pub struct TrainerOptions {
    /// Optimizer steps to reach (counting the steps a resumed run already did).
    pub steps: usize,
    /// Micro-batches accumulated into each step.
    pub accumulation: usize,
    /// Write a checkpoint after every this many steps (and always at the end) into
    /// `checkpoint_dir`; `None` writes none.
    pub checkpoint_every: Option<usize>,
    /// Where checkpoints go.
    pub checkpoint_dir: PathBuf,
    /// Show a progress bar on the terminal.
    pub progress: bool,
    /// Re-scan and re-select the trained weights whenever an epoch ends; `None` keeps the
    /// trainable set fixed.
    pub reselect: Option<Reselect>,
}

impl Default for TrainerOptions {
    /// 100 steps of one micro-batch, no checkpoints (`checkpoints/` if enabled), no progress
    /// bar, no re-selection.
    fn default() -> Self {
        TrainerOptions {
            steps: 100,
            accumulation: 1,
            checkpoint_every: None,
            checkpoint_dir: PathBuf::from("checkpoints"),
            progress: false,
            reselect: None,
        }
    }
}

/// Between epochs, score the weights again and train the new top `top_percent`% per module
/// type (with `lm_head` and `model.embed_tokens`): one of the Spectrum paper's ideas for
/// future work. For models trained with [`Method::Spectrum`](super::Method::Spectrum): every
/// 2-D weight of the module tree is scored, as [`SpectrumSelector::scan_module`] does.
#[derive(Clone, Debug, PartialEq)]
pub struct Reselect {
    /// Train the top this many percent of each module type.
    pub top_percent: u32,
    /// Scale the learning rate of each newly selected weight by its SNR.
    pub snr_lr: Option<SnrLrScaling>,
}

/// What one re-selection changed.
#[derive(Clone, Debug, PartialEq)]
pub struct Reselection {
    /// Steps done when it happened.
    pub step: usize,
    /// Epochs completed by then.
    pub epoch: u64,
    /// Parameters trainable from then on.
    pub trainable: usize,
    /// Paths of the parameters that started training.
    pub added: Vec<String>,
    /// Paths of the parameters that stopped training.
    pub removed: Vec<String>,
}

/// What a run did.
#[derive(Clone, Debug, Default)]
pub struct TrainReport {
    /// One entry per step taken.
    pub metrics: Vec<StepMetrics>,
    /// The checkpoint folders written, in order.
    pub checkpoints: Vec<PathBuf>,
    /// The re-selections made, in order.
    pub reselections: Vec<Reselection>,
}

/// Trains until `options.steps` steps are done. A step that fails (a non-finite loss) ends the
/// run with its error; the checkpoints written before it stay as they were.
///
/// With [`TrainerOptions::reselect`], the step after which an epoch completes is followed by a
/// re-selection, before that step's checkpoint, so a resumed run re-selects as the
/// uninterrupted one did.
pub fn train<B, M>(
    model: M,
    step: &mut TrainStep<B, M>,
    batches: &mut Batches<'_>,
    loss_of: impl FnMut(&M, &Batch) -> Result<MicroLoss<B>>,
    options: &TrainerOptions,
) -> Result<(M, TrainReport)>
where
    B: AutodiffBackend,
    M: AutodiffModule<B>,
{
    train_with(model, step, batches, loss_of, options, |_| Ok(()))
}

/// [`train`], calling `on_step` after each step with its metrics (before the step's
/// checkpoint): to log, or to show progress. An error from `on_step` ends the run with it.
pub fn train_with<B, M>(
    model: M,
    step: &mut TrainStep<B, M>,
    batches: &mut Batches<'_>,
    loss_of: impl FnMut(&M, &Batch) -> Result<MicroLoss<B>>,
    options: &TrainerOptions,
    on_step: impl FnMut(&StepMetrics) -> Result<()>,
) -> Result<(M, TrainReport)>
where
    B: AutodiffBackend,
    M: AutodiffModule<B>,
{
    train_reduced(model, step, batches, loss_of, options, Ok, on_step)
}

/// [`train_with`], each step's gradients passed through `reduce` before they are clipped
/// (see [`TrainStep::step_reduced`]): a data-parallel worker's loop.
pub fn train_reduced<B, M>(
    mut model: M,
    step: &mut TrainStep<B, M>,
    batches: &mut Batches<'_>,
    mut loss_of: impl FnMut(&M, &Batch) -> Result<MicroLoss<B>>,
    options: &TrainerOptions,
    mut reduce: impl FnMut(GradientsParams) -> Result<GradientsParams>,
    mut on_step: impl FnMut(&StepMetrics) -> Result<()>,
) -> Result<(M, TrainReport)>
where
    B: AutodiffBackend,
    M: AutodiffModule<B>,
{
    let bar = progress_bar(options);
    bar.set_position(step.steps_done() as u64);
    let mut report = TrainReport::default();
    let mut epochs = batches.completed_epochs();
    while step.steps_done() < options.steps {
        let micro: Vec<Batch> = batches.by_ref().take(options.accumulation.max(1)).collect();
        let (next, metrics) = step.step_reduced(model, &micro, &mut loss_of, &mut reduce)?;
        model = next;
        bar.set_message(format!("loss {:.4} lr {:.2e}", metrics.loss, metrics.lr));
        bar.inc(1);
        on_step(&metrics)?;
        report.metrics.push(metrics);
        let done = step.steps_done();
        if let Some(reselect) = &options.reselect
            && batches.completed_epochs() > epochs
        {
            epochs = batches.completed_epochs();
            let (next, change) = reselect_weights(model, step, reselect, epochs)?;
            model = next;
            bar.println(format!(
                "epoch {epochs}: re-selected {} trainable parameters ({} added, {} removed)",
                change.trainable,
                change.added.len(),
                change.removed.len()
            ));
            report.reselections.push(change);
        }
        let due = options.checkpoint_every.is_some_and(|every| {
            every > 0 && (done.is_multiple_of(every) || done == options.steps)
        });
        if due {
            let state = TrainerState {
                step: done,
                data_position: batches.data_position(),
                seed: step.config().seed,
            };
            report.checkpoints.push(step.save_checkpoint(
                &model,
                &state,
                &options.checkpoint_dir,
            )?);
        }
    }
    bar.finish_and_clear();
    Ok((model, report))
}

/// Scans `model`, selects the top weights and retargets `step` to them.
fn reselect_weights<B, M>(
    model: M,
    step: &mut TrainStep<B, M>,
    reselect: &Reselect,
    epoch: u64,
) -> Result<(M, Reselection)>
where
    B: AutodiffBackend,
    M: AutodiffModule<B>,
{
    let report = SpectrumSelector::new(Threshold::Spectrum).scan_module(&model)?;
    let selection = report.select(reselect.top_percent)?;
    let before = float_params(&model);
    let ids: Vec<_> = selection.param_ids(&model).into_iter().collect();
    let model = step.retarget(model, &ids);
    if let Some(scaling) = reselect.snr_lr {
        step.set_lr_scales(snr_lr_scales(&model, &report, scaling)?)?;
    }
    let after = float_params(&model);
    let changed = |from: bool| -> Vec<String> {
        before
            .iter()
            .zip(&after)
            .filter(|(b, a)| b.require_grad == from && a.require_grad != from)
            .map(|(b, _)| b.path.clone())
            .collect()
    };
    let change = Reselection {
        step: step.steps_done(),
        epoch,
        trainable: step.trainable().len(),
        added: changed(false),
        removed: changed(true),
    };
    Ok((model, change))
}

fn progress_bar(options: &TrainerOptions) -> ProgressBar {
    if !options.progress {
        return ProgressBar::hidden();
    }
    ProgressBar::new(options.steps as u64).with_style(
        ProgressStyle::with_template("{bar:30} {pos}/{len} steps {msg} ({elapsed}, eta {eta})")
            .expect("a valid template"),
    )
}
