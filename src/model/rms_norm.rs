//! Root-mean-square layer norm with the Hugging Face parameter name `weight`.

use burn::module::{Module, Param};
use burn::tensor::{Tensor, backend::Backend};

/// `x * rsqrt(mean(x^2) + eps) * weight` over the last axis.
#[derive(Module, Debug)]
pub struct RmsNorm<B: Backend> {
    /// Per-channel gain, `[hidden]`.
    pub weight: Param<Tensor<B, 1>>,
    eps: f64,
}

impl<B: Backend> RmsNorm<B> {
    /// A norm with unit gain.
    pub fn new(hidden: usize, eps: f64, device: &B::Device) -> Self {
        Self::from_weight(Tensor::ones([hidden], device), eps)
    }

    pub fn from_weight(weight: Tensor<B, 1>, eps: f64) -> Self {
        RmsNorm {
            weight: Param::from_tensor(weight),
            eps,
        }
    }

    /// # Shapes
    /// - x: `[..., hidden]`, returned in the same shape.
    pub fn forward<const D: usize>(&self, x: Tensor<B, D>) -> Tensor<B, D> {
        let inv_rms = (x.clone().powi_scalar(2).mean_dim(D - 1) + self.eps)
            .sqrt()
            .recip();
        x * inv_rms * self.weight.val().unsqueeze()
    }
}
