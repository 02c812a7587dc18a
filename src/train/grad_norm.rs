//! Global-norm gradient clipping over all trainable gradients, as PyTorch's
//! `clip_grad_norm_` (Burn's own clipping works per tensor).

use burn::module::{AutodiffModule, ModuleVisitor, Param};
use burn::optim::GradientsParams;
use burn::tensor::{Tensor, backend::AutodiffBackend};

use crate::nn::in_place::{host_squared_sum, scale};
use crate::nn::read_scalar;

/// `sqrt(sum over gradients of sum(g^2))`. On the CPU backend each gradient's sum is taken
/// in f64; on a device the sums are added there in f32 and read back once (a GPU waits for
/// each read).
pub fn global_grad_norm<B: AutodiffBackend, M: AutodiffModule<B>>(
    module: &M,
    grads: &GradientsParams,
) -> f64 {
    let mut visitor = SquaredNorm::<B> {
        grads,
        host: 0.0,
        device: None,
    };
    module.visit(&mut visitor);
    let on_device = visitor.device.map_or(0.0, read_scalar);
    (visitor.host + on_device).sqrt()
}

/// Scales the gradients so that their global norm is at most `max_norm`, with PyTorch's
/// factor `max_norm / (norm + 1e-6)` (never above 1). Returns the norm before clipping.
pub fn clip_grad_norm<B: AutodiffBackend, M: AutodiffModule<B>>(
    module: &M,
    grads: &mut GradientsParams,
    max_norm: f64,
) -> f64 {
    let norm = global_grad_norm(module, grads);
    let factor = max_norm / (norm + 1e-6);
    if factor < 1.0 {
        scale_grads(module, grads, factor);
    }
    norm
}

/// Multiplies every gradient of `module`'s parameters by `factor`.
pub(crate) fn scale_grads<B: AutodiffBackend, M: AutodiffModule<B>>(
    module: &M,
    grads: &mut GradientsParams,
    factor: f64,
) {
    let mut visitor = Scale::<B> {
        grads,
        factor,
        _backend: std::marker::PhantomData,
    };
    module.visit(&mut visitor);
}

struct SquaredNorm<'a, B: AutodiffBackend> {
    grads: &'a GradientsParams,
    /// The sums taken in host memory.
    host: f64,
    /// The sum of the sums taken on the device, `[1]`.
    device: Option<Tensor<B::InnerBackend, 1>>,
}

impl<B: AutodiffBackend> ModuleVisitor<B> for SquaredNorm<'_, B> {
    fn visit_float<const D: usize>(&mut self, param: &Param<Tensor<B, D>>) {
        let Some(grad) = self.grads.get::<B::InnerBackend, D>(param.id) else {
            return;
        };
        match host_squared_sum(&grad) {
            Some(sum) => self.host += sum,
            None => {
                let sum = grad.square().sum();
                self.device = Some(match self.device.take() {
                    Some(total) => total + sum,
                    None => sum,
                });
            }
        }
    }
}

struct Scale<'a, B> {
    grads: &'a mut GradientsParams,
    factor: f64,
    _backend: std::marker::PhantomData<B>,
}

impl<B: AutodiffBackend> ModuleVisitor<B> for Scale<'_, B> {
    fn visit_float<const D: usize>(&mut self, param: &Param<Tensor<B, D>>) {
        if let Some(grad) = self.grads.remove::<B::InnerBackend, D>(param.id) {
            self.grads.register(param.id, scale(grad, self.factor));
        }
    }
}
