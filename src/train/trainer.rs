//! The training loop: steps over a batch stream, with checkpoints every N steps and at the
//! end, and a progress bar.

use std::path::PathBuf;

use burn::module::AutodiffModule;
use burn::tensor::backend::AutodiffBackend;
use indicatif::{ProgressBar, ProgressStyle};

use super::checkpoint::TrainerState;
use super::step::{MicroLoss, StepMetrics, TrainStep};
use crate::data::{Batch, Batches};
use crate::error::Result;

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
    pub checkpoint_dir: PathBuf,
    /// The run's seed, recorded in checkpoints.
    pub seed: u64,
    /// Show a progress bar on the terminal.
    pub progress: bool,
}

/// What a run did.
#[derive(Clone, Debug, Default)]
pub struct TrainReport {
    pub metrics: Vec<StepMetrics>,
    pub checkpoints: Vec<PathBuf>,
}

/// Trains until `options.steps` steps are done. A step that fails (a non-finite loss) ends the
/// run with its error; the checkpoints written before it stay as they were.
pub fn train<B, M>(
    mut model: M,
    step: &mut TrainStep<B, M>,
    batches: &mut Batches<'_>,
    mut loss_of: impl FnMut(&M, &Batch) -> MicroLoss<B>,
    options: &TrainerOptions,
) -> Result<(M, TrainReport)>
where
    B: AutodiffBackend,
    M: AutodiffModule<B>,
{
    let bar = progress_bar(options);
    bar.set_position(step.steps_done() as u64);
    let mut report = TrainReport::default();
    while step.steps_done() < options.steps {
        let micro: Vec<Batch> = batches.by_ref().take(options.accumulation.max(1)).collect();
        let (next, metrics) = step.step(model, &micro, &mut loss_of)?;
        model = next;
        bar.set_message(format!("loss {:.4} lr {:.2e}", metrics.loss, metrics.lr));
        bar.inc(1);
        report.metrics.push(metrics);
        let done = step.steps_done();
        let due = options.checkpoint_every.is_some_and(|every| {
            every > 0 && (done.is_multiple_of(every) || done == options.steps)
        });
        if due {
            let state = TrainerState {
                step: done,
                data_position: batches.data_position(),
                seed: options.seed,
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

fn progress_bar(options: &TrainerOptions) -> ProgressBar {
    if !options.progress {
        return ProgressBar::hidden();
    }
    ProgressBar::new(options.steps as u64).with_style(
        ProgressStyle::with_template("{bar:30} {pos}/{len} steps {msg} ({elapsed}, eta {eta})")
            .expect("a valid template"),
    )
}
