//! `TrainStep`: one optimizer step over micro-batches, updating only the trainable parameters.

use std::collections::{BTreeMap, HashMap, HashSet};

use burn::module::{AutodiffModule, ModuleVisitor, Param, ParamId};
use burn::optim::adaptor::OptimizerAdaptor;
use burn::optim::{GradientsAccumulator, GradientsParams, Optimizer};

use super::adamw::FusedAdamW;
use burn::tensor::backend::{AutodiffBackend, Backend};
use burn::tensor::{ElementConversion, Tensor};

use super::freeze::{freeze_except, trainable_params};
use super::grad_norm::{clip_grad_norm, scale_grads};
use super::schedule::LrSchedule;
use crate::error::{Error, Result};

/// Optimizer settings: AdamW with decoupled weight decay, global-norm clipping, a schedule.
#[derive(Clone, Debug)]
pub struct TrainConfig {
    /// The learning rate per step.
    pub schedule: LrSchedule,
    /// AdamW's decoupled weight decay.
    pub weight_decay: f64,
    /// AdamW's first-moment decay.
    pub beta_1: f64,
    /// AdamW's second-moment decay.
    pub beta_2: f64,
    /// AdamW's epsilon.
    pub epsilon: f64,
    /// Clip the global gradient norm to this; `None` leaves gradients as they are.
    pub max_grad_norm: Option<f64>,
    /// The run's one seed. The backend's random numbers (dropout) are seeded from
    /// `(seed, step)` at every step, so a resumed run draws what the uninterrupted one drew;
    /// [`train`](super::train()) records it in checkpoints. Give the same seed to the data
    /// (`data::prepare`, `data::Batches::new`), which derive their order from it.
    pub seed: u64,
}

impl Default for TrainConfig {
    /// transformers' `TrainingArguments` defaults: lr 5e-5, no weight decay, betas
    /// (0.9, 0.999), eps 1e-8, max grad norm 1.
    fn default() -> Self {
        TrainConfig {
            schedule: LrSchedule::constant(5e-5),
            weight_decay: 0.0,
            beta_1: 0.9,
            beta_2: 0.999,
            epsilon: 1e-8,
            max_grad_norm: Some(1.0),
            seed: 0,
        }
    }
}

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
pub struct TrainStep<B: AutodiffBackend, M: AutodiffModule<B>> {
    optimizer: OptimizerAdaptor<FusedAdamW, M, B>,
    trainable: Vec<ParamId>,
    /// Every parameter trained so far, the current ones included: what a checkpoint saves.
    trained: HashSet<ParamId>,
    lr_scales: HashMap<ParamId, f64>,
    config: TrainConfig,
    step: usize,
}

impl<B: AutodiffBackend, M: AutodiffModule<B>> TrainStep<B, M> {
    /// Freezes every parameter of `model` not in `trainable` and prepares the optimizer.
    /// Returns the frozen model with the step.
    pub fn new(model: M, trainable: &[ParamId], config: TrainConfig) -> (M, Self) {
        let model = freeze_except(model, trainable);
        let optimizer = adamw(&config);
        let trainable = trainable_params(&model);
        let step = TrainStep {
            optimizer,
            trained: trainable.iter().copied().collect(),
            trainable,
            lr_scales: HashMap::new(),
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
        let mut record = self.optimizer.to_record();
        record.retain(|id, _| kept.contains(id));
        self.optimizer = adamw(&self.config).load_record(record);
        self.trained.extend(kept.iter().copied());
        self.lr_scales.retain(|id, _| kept.contains(id));
        model
    }

    /// Per-parameter learning-rate multipliers: a parameter listed here steps at
    /// `scale * lr`, the others at `lr` (as PyTorch parameter groups with their own rates).
    /// Weight decay follows the scaled rate, as AdamW's decoupled decay does. A multiplier
    /// that is negative or not finite is refused.
    pub fn set_lr_scales(&mut self, scales: HashMap<ParamId, f64>) -> Result<()> {
        if let Some(bad) = scales.values().find(|s| !(s.is_finite() && **s >= 0.0)) {
            return Err(Error::InvalidSetting {
                name: "learning-rate multiplier",
                value: bad.to_string(),
                expected: "must be finite and >= 0",
            });
        }
        self.lr_scales = scales;
        Ok(())
    }

    /// The multipliers set by [`TrainStep::set_lr_scales`].
    pub fn lr_scales(&self) -> &HashMap<ParamId, f64> {
        &self.lr_scales
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
    pub(crate) fn optimizer_record(
        &self,
    ) -> <OptimizerAdaptor<FusedAdamW, M, B> as Optimizer<M, B>>::Record {
        self.optimizer.to_record()
    }

    /// This step as a checkpoint left it, `steps_done` steps into training, for `model` whose
    /// parameters carry the checkpoint's ids and trainable flags: the optimizer state, the
    /// parameters trained so far and the learning-rate multipliers.
    pub(crate) fn restored(
        mut self,
        model: &M,
        record: <OptimizerAdaptor<FusedAdamW, M, B> as Optimizer<M, B>>::Record,
        steps_done: usize,
        trained: HashSet<ParamId>,
        lr_scales: HashMap<ParamId, f64>,
    ) -> Self {
        self.optimizer = self.optimizer.load_record(record);
        self.trainable = trainable_params(model);
        self.step = steps_done;
        self.trained = trained;
        self.trained.extend(self.trainable.iter().copied());
        self.lr_scales = lr_scales;
        self
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
        mut loss_of: impl FnMut(&M, &T) -> Result<MicroLoss<B>>,
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
            let value: f64 = loss.clone().into_scalar().elem();
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
        let mut grads = accumulator.grads();
        let grad_norm = match self.config.max_grad_norm {
            Some(max) => clip_grad_norm(&model, &mut grads, max),
            None => super::grad_norm::global_grad_norm(&model, &grads),
        };
        if !grad_norm.is_finite() {
            let error = Error::NonFiniteGradient {
                step: self.step,
                norm: grad_norm,
            };
            return Err(StepFailure { model, error });
        }
        let lr = self.config.schedule.lr(self.step);
        let groups = split_by_scale(&model, &mut grads, &self.lr_scales);
        let mut model = self.optimizer.step(lr, model, grads);
        for (scale, group) in groups {
            model = self.optimizer.step(lr * scale, model, group);
        }
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

fn adamw<B: AutodiffBackend, M: AutodiffModule<B>>(
    config: &TrainConfig,
) -> OptimizerAdaptor<FusedAdamW, M, B> {
    FusedAdamW::new(
        config.beta_1 as f32,
        config.beta_2 as f32,
        config.epsilon as f32,
        config.weight_decay as f32,
    )
    .adaptor()
}

/// The backend seed of step `step`: distinct per step, the same on every run.
fn step_seed(seed: u64, step: usize) -> u64 {
    seed ^ (step as u64 + 1).wrapping_mul(0x9E37_79B9_7F4A_7C15)
}

/// Moves the gradients of parameters with a multiplier other than 1 out of `grads`, into one
/// group per multiplier (in increasing order).
fn split_by_scale<B: AutodiffBackend, M: AutodiffModule<B>>(
    model: &M,
    grads: &mut GradientsParams,
    scales: &HashMap<ParamId, f64>,
) -> Vec<(f64, GradientsParams)> {
    if scales.values().all(|&s| s == 1.0) {
        return Vec::new();
    }
    let mut splitter = ScaleSplitter::<B> {
        grads,
        scales,
        groups: BTreeMap::new(),
        _backend: std::marker::PhantomData,
    };
    model.visit(&mut splitter);
    // Non-negative finite multipliers order as their bit patterns do.
    splitter
        .groups
        .into_iter()
        .map(|(bits, group)| (f64::from_bits(bits), group))
        .collect()
}

struct ScaleSplitter<'a, B> {
    grads: &'a mut GradientsParams,
    scales: &'a HashMap<ParamId, f64>,
    groups: BTreeMap<u64, GradientsParams>,
    _backend: std::marker::PhantomData<B>,
}

impl<B: AutodiffBackend> ModuleVisitor<B> for ScaleSplitter<'_, B> {
    fn visit_float<const D: usize>(&mut self, param: &Param<Tensor<B, D>>) {
        let Some(&scale) = self.scales.get(&param.id) else {
            return;
        };
        if scale == 1.0 {
            return;
        }
        if let Some(grad) = self.grads.remove::<B::InnerBackend, D>(param.id) {
            self.groups
                .entry(scale.to_bits())
                .or_default()
                .register::<B::InnerBackend, D>(param.id, grad);
        }
    }
}
