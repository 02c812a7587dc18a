//! `TrainStep`: one optimizer step over micro-batches, updating only the trainable parameters.

use std::collections::{HashMap, HashSet};

use burn::module::{AutodiffModule, ParamId};
use burn::optim::{GradientsAccumulator, GradientsParams, Optimizer};
use burn::tensor::Tensor;
use burn::tensor::backend::{AutodiffBackend, Backend};

use super::config::TrainConfig;
use super::freeze::{freeze_except, trainable_params};
use super::grad_norm::scale_grads;
use super::optimizer::{SelectiveAdamW, SelectiveAdamWRecord};
use crate::error::{Error, Result};
use crate::nn::read_scalar;

/// What one step did.
#[derive(Clone, Debug, PartialEq)]
pub struct StepMetrics {
    /// The step's number, from 0.
    pub step: usize,
    /// Mean of the micro-batch losses.
    pub loss: f64,
    /// Global gradient norm before clipping.
    pub grad_norm: f64,
    /// The learning rate the step used.
    pub lr: f64,
    /// Tokens the loss was computed on, over all micro-batches.
    pub tokens: usize,
}

/// A step that did not happen: why, and the model as it was.
pub struct StepFailure<M> {
    /// The model as it was before the step.
    pub model: M,
    /// Why the step did not happen.
    pub error: Error,
}

impl<M> std::fmt::Debug for StepFailure<M> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "StepFailure({:?})", self.error)
    }
}

impl<M> From<StepFailure<M>> for Error {
    fn from(failure: StepFailure<M>) -> Self {
        failure.error
    }
}

/// A micro-batch's loss `[1]` and the number of tokens it was computed on, with its gradients
/// when they are already computed.
pub struct MicroLoss<B: Backend> {
    /// The micro-batch's mean loss, `[1]`.
    pub loss: Tensor<B, 1>,
    /// Tokens the loss was computed on.
    pub tokens: usize,
    /// The loss's parameter gradients, when computed already (piece by piece, as
    /// [`batch_gradients`](super::batch_gradients) does to save memory); `None`: the step
    /// back-propagates `loss`.
    pub grads: Option<GradientsParams>,
}

impl<B: Backend> MicroLoss<B> {
    /// A loss the step back-propagates.
    pub fn new(loss: Tensor<B, 1>, tokens: usize) -> Self {
        MicroLoss {
            loss,
            tokens,
            grads: None,
        }
    }
}

/// Trains the parameters given at construction, on any Burn module.
///
/// Frozen parameters get `require_grad = false` (no gradient is kept for them) and their
/// gradients are dropped by id as well, so the optimizer holds state only for trainable ones.
///
/// The trainable set can change between steps ([`TrainStep::retarget`]), and each parameter
/// can have its own learning-rate multiplier ([`TrainStep::set_lr_scales`]).
#[derive(Clone)]
pub struct TrainStep<B: AutodiffBackend, M: AutodiffModule<B>> {
    optimizer: SelectiveAdamW<B, M>,
    trainable: Vec<ParamId>,
    /// Every parameter trained so far, the current ones included: what a checkpoint saves.
    trained: HashSet<ParamId>,
    config: TrainConfig,
    step: usize,
}

impl<B: AutodiffBackend, M: AutodiffModule<B>> TrainStep<B, M> {
    /// Freezes every parameter of `model` not in `trainable` and prepares the optimizer.
    /// Returns the frozen model with the step.
    pub fn new(model: M, trainable: &[ParamId], config: TrainConfig) -> (M, Self) {
        let model = freeze_except(model, trainable);
        let optimizer = SelectiveAdamW::new(&config);
        let trainable = trainable_params(&model);
        let step = TrainStep {
            optimizer,
            trained: trainable.iter().copied().collect(),
            trainable,
            config,
            step: 0,
        };
        (model, step)
    }

    /// The parameters trained from now on.
    pub fn trainable(&self) -> &[ParamId] {
        &self.trainable
    }

    /// Every parameter trained so far (the current ones included).
    pub fn trained(&self) -> &HashSet<ParamId> {
        &self.trained
    }

    /// Trains `trainable` from the next step on, freezing the rest of `model`. Parameters
    /// that stay trainable keep their optimizer state; the others lose it, and newly
    /// trainable ones start fresh. Their learning-rate multipliers are dropped too: set new
    /// ones with [`TrainStep::set_lr_scales`].
    pub fn retarget(&mut self, model: M, trainable: &[ParamId]) -> M {
        let model = freeze_except(model, trainable);
        self.trainable = trainable_params(&model);
        let kept: HashSet<ParamId> = self.trainable.iter().copied().collect();
        self.optimizer.retain(&kept);
        self.trained.extend(kept.iter().copied());
        model
    }

    /// Per-parameter learning-rate multipliers: see [`SelectiveAdamW::set_lr_scales`].
    pub fn set_lr_scales(&mut self, scales: HashMap<ParamId, f64>) -> Result<()> {
        self.optimizer.set_lr_scales(scales)
    }

    /// The multipliers set by [`TrainStep::set_lr_scales`].
    pub fn lr_scales(&self) -> &HashMap<ParamId, f64> {
        self.optimizer.lr_scales()
    }

    /// The number of steps taken.
    pub fn steps_done(&self) -> usize {
        self.step
    }

    /// The optimizer settings, with the run's seed.
    pub fn config(&self) -> &TrainConfig {
        &self.config
    }

    /// The optimizer's state, for checkpoints.
    pub(crate) fn optimizer_record(&self) -> SelectiveAdamWRecord<B, M> {
        self.optimizer.to_record()
    }

    /// This step as a checkpoint left it, `steps_done` steps into training, for `model` whose
    /// parameters carry the checkpoint's ids and trainable flags: the optimizer state, the
    /// parameters trained so far and the learning-rate multipliers.
    pub(crate) fn restored(
        mut self,
        model: &M,
        record: SelectiveAdamWRecord<B, M>,
        steps_done: usize,
        trained: HashSet<ParamId>,
        lr_scales: HashMap<ParamId, f64>,
    ) -> Result<Self> {
        self.optimizer = self.optimizer.load_record(record);
        self.optimizer.set_lr_scales(lr_scales)?;
        self.trainable = trainable_params(model);
        self.step = steps_done;
        self.trained = trained;
        self.trained.extend(self.trainable.iter().copied());
        Ok(self)
    }

    /// How many parameter tensors the optimizer keeps state for.
    pub fn optimizer_state_len(&self) -> usize {
        self.optimizer.to_record().len()
    }

    /// One step: for each micro-batch, `loss_of` its loss, backward, gradients of the
    /// trainable parameters accumulated (each loss weighted `1 / micro_batches`); then global
    /// norm clipping, and AdamW at this step's learning rate.
    ///
    /// A non-finite loss stops the step with [`Error::NonFiniteLoss`] before anything
    /// changes, a non-finite gradient norm with [`Error::NonFiniteGradient`], and an error from
    /// `loss_of` with that error; the model comes back unchanged in the [`StepFailure`].
    pub fn step<T>(
        &mut self,
        model: M,
        micro_batches: &[T],
        loss_of: impl FnMut(&M, &T) -> Result<MicroLoss<B>>,
    ) -> std::result::Result<(M, StepMetrics), StepFailure<M>> {
        self.step_reduced(model, micro_batches, loss_of, Ok)
    }

    /// [`TrainStep::step`] with the accumulated gradients passed through `reduce` before
    /// they are clipped: the all-reduce of data parallelism (`Peer::mean_grads` in
    /// `train::parallel`), so that every replica steps on the same gradients. An error from
    /// `reduce` stops the step, the model unchanged.
    ///
    /// The metrics are this worker's: its loss and tokens, the norm of the reduced gradients.
    pub fn step_reduced<T>(
        &mut self,
        model: M,
        micro_batches: &[T],
        mut loss_of: impl FnMut(&M, &T) -> Result<MicroLoss<B>>,
        reduce: impl FnOnce(GradientsParams) -> Result<GradientsParams>,
    ) -> std::result::Result<(M, StepMetrics), StepFailure<M>> {
        if micro_batches.is_empty() {
            let error = Error::NoMicroBatches;
            return Err(StepFailure { model, error });
        }
        if let Some(device) = model.devices().first() {
            B::seed(device, step_seed(self.config.seed, self.step));
        }
        let weight = 1.0 / micro_batches.len() as f64;
        let mut accumulator = GradientsAccumulator::<M>::new();
        let (mut loss_sum, mut tokens) = (0.0, 0);
        for batch in micro_batches {
            let MicroLoss {
                loss,
                tokens: n,
                grads,
            } = match loss_of(&model, batch) {
                Ok(micro) => micro,
                Err(error) => return Err(StepFailure { model, error }),
            };
            let value = read_scalar(loss.clone());
            if !value.is_finite() {
                let error = Error::NonFiniteLoss {
                    step: self.step,
                    loss: value,
                };
                return Err(StepFailure { model, error });
            }
            loss_sum += value;
            tokens += n;
            let grads = match grads {
                Some(mut grads) => {
                    if weight != 1.0 {
                        scale_grads(&model, &mut grads, weight);
                    }
                    grads
                }
                None => {
                    let mut grads = (loss * weight).backward();
                    GradientsParams::from_params(&mut grads, &model, &self.trainable)
                }
            };
            accumulator.accumulate(&model, grads);
        }
        let mut grads = match reduce(accumulator.grads()) {
            Ok(grads) => grads,
            Err(error) => return Err(StepFailure { model, error }),
        };
        let grad_norm = self.optimizer.clip(&model, &mut grads);
        if !grad_norm.is_finite() {
            let error = Error::NonFiniteGradient {
                step: self.step,
                norm: grad_norm,
            };
            return Err(StepFailure { model, error });
        }
        let lr = self.config.schedule.lr(self.step);
        let model = self.optimizer.update(lr, model, grads);
        let metrics = StepMetrics {
            step: self.step,
            loss: loss_sum * weight,
            grad_norm,
            lr,
            tokens,
        };
        self.step += 1;
        Ok((model, metrics))
    }
}

/// The backend seed of step `step`: distinct per step, the same on every run.
fn step_seed(seed: u64, step: usize) -> u64 {
    seed ^ (step as u64 + 1).wrapping_mul(0x9E37_79B9_7F4A_7C15)
}
