//! AdamW as a training step runs it, as a Burn [`Optimizer`]: state only for the parameters
//! that get gradients (frozen ones never do), a learning-rate multiplier per parameter, and
//! clipping by the global norm of all gradients (PyTorch's `clip_grad_norm_`). [`TrainStep`]
//! steps through it, and burn-train's `Learner` takes it as it is.
//!
//! [`TrainStep`]: super::TrainStep

use std::collections::{BTreeMap, HashMap, HashSet};

use burn::module::{AutodiffModule, ModuleVisitor, Param, ParamId};
use burn::optim::adaptor::OptimizerAdaptor;
use burn::optim::{GradientsParams, LearningRate, MultiGradientsParams, Optimizer};
use burn::tensor::Tensor;
use burn::tensor::backend::AutodiffBackend;

use super::adamw::FusedAdamW;
use super::config::TrainConfig;
use super::grad_norm::{clip_grad_norm, global_grad_norm, scale_grads};
use crate::error::{Error, Result};

/// AdamW over the parameters that have gradients, with per-parameter learning-rate
/// multipliers and global-norm clipping.
///
/// As a Burn [`Optimizer`] (burn-train's `Learner`), a step first divides the gradients by
/// the number of micro-batches they sum ([`SelectiveAdamW::with_grad_accumulation`]: burn-train
/// adds the gradients of accumulated micro-batches, our loop averages them), clips them, and
/// skips the update when their norm is not finite (as PyTorch's `GradScaler` skips a step);
/// the model is then left as it was.
#[derive(Clone)]
pub struct SelectiveAdamW<B: AutodiffBackend, M: AutodiffModule<B>> {
    adaptor: OptimizerAdaptor<FusedAdamW, M, B>,
    config: TrainConfig,
    lr_scales: HashMap<ParamId, f64>,
    grad_scale: f64,
}

/// The optimizer state: AdamW's moments per trainable parameter, by id.
pub type SelectiveAdamWRecord<B, M> =
    <OptimizerAdaptor<FusedAdamW, M, B> as Optimizer<M, B>>::Record;

impl<B: AutodiffBackend, M: AutodiffModule<B>> SelectiveAdamW<B, M> {
    /// AdamW with `config`'s betas, epsilon, weight decay and clipping (its schedule and seed
    /// are the caller's: burn-train passes the learning rate to each step).
    pub fn new(config: &TrainConfig) -> Self {
        SelectiveAdamW {
            adaptor: adamw(config),
            config: config.clone(),
            lr_scales: HashMap::new(),
            grad_scale: 1.0,
        }
    }

    /// Divides the gradients by `micro_batches` before each step: set it to burn-train's
    /// `grads_accumulation`, whose gradients are the sum over the micro-batches.
    pub fn with_grad_accumulation(mut self, micro_batches: usize) -> Self {
        self.grad_scale = 1.0 / micro_batches.max(1) as f64;
        self
    }

    /// With per-parameter learning-rate multipliers (see [`SelectiveAdamW::set_lr_scales`]).
    pub fn with_lr_scales(mut self, scales: HashMap<ParamId, f64>) -> Result<Self> {
        self.set_lr_scales(scales)?;
        Ok(self)
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

    /// The multipliers set by [`SelectiveAdamW::set_lr_scales`].
    pub fn lr_scales(&self) -> &HashMap<ParamId, f64> {
        &self.lr_scales
    }

    /// Keeps the state and multipliers of the parameters in `kept` only.
    pub(crate) fn retain(&mut self, kept: &HashSet<ParamId>) {
        let mut record = self.adaptor.to_record();
        record.retain(|id, _| kept.contains(id));
        self.adaptor = adamw::<B, M>(&self.config).load_record(record);
        self.lr_scales.retain(|id, _| kept.contains(id));
    }

    /// Clips `grads` to the configured global norm; returns the norm before clipping.
    pub(crate) fn clip(&self, model: &M, grads: &mut GradientsParams) -> f64 {
        match self.config.max_grad_norm {
            Some(max) => clip_grad_norm(model, grads, max),
            None => global_grad_norm(model, grads),
        }
    }

    /// AdamW at `lr`, each multiplier's parameters at their own rate.
    pub(crate) fn update(&mut self, lr: LearningRate, model: M, mut grads: GradientsParams) -> M {
        let groups = split_by_scale(&model, &mut grads, &self.lr_scales);
        let mut model = self.adaptor.step(lr, model, grads);
        for (scale, group) in groups {
            model = self.adaptor.step(lr * scale, model, group);
        }
        model
    }
}

impl<B: AutodiffBackend, M: AutodiffModule<B>> Optimizer<M, B> for SelectiveAdamW<B, M> {
    type Record = SelectiveAdamWRecord<B, M>;

    fn step(&mut self, lr: LearningRate, module: M, mut grads: GradientsParams) -> M {
        if self.grad_scale != 1.0 {
            scale_grads(&module, &mut grads, self.grad_scale);
        }
        let norm = self.clip(&module, &mut grads);
        if !norm.is_finite() {
            return module;
        }
        self.update(lr, module, grads)
    }

    fn step_multi(&mut self, lr: LearningRate, module: M, grads: MultiGradientsParams) -> M {
        let grads = summed(&module, grads);
        self.step(lr, module, grads)
    }

    fn to_record(&self) -> Self::Record {
        self.adaptor.to_record()
    }

    fn load_record(mut self, record: Self::Record) -> Self {
        self.adaptor = self.adaptor.load_record(record);
        self
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

/// The gradients of several devices summed per parameter, on the device Burn picks for it.
fn summed<B: AutodiffBackend, M: AutodiffModule<B>>(
    module: &M,
    mut multi: MultiGradientsParams,
) -> GradientsParams {
    struct Sum<'a, B> {
        multi: &'a mut MultiGradientsParams,
        grads: GradientsParams,
        _backend: std::marker::PhantomData<B>,
    }
    impl<B: AutodiffBackend> ModuleVisitor<B> for Sum<'_, B> {
        fn visit_float<const D: usize>(&mut self, param: &Param<Tensor<B, D>>) {
            if let Some((grad, _)) = self.multi.remove::<B::InnerBackend, D>(param.id) {
                self.grads.register::<B::InnerBackend, D>(param.id, grad);
            }
        }
    }
    let mut sum = Sum::<B> {
        multi: &mut multi,
        grads: GradientsParams::new(),
        _backend: std::marker::PhantomData,
    };
    module.visit(&mut sum);
    sum.grads
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
