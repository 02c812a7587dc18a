//! Root-mean-square layer norm with the Hugging Face parameter name `weight`.

use burn::config::Config;
use burn::module::{Initializer, Module, Param};
use burn::tensor::{Tensor, backend::Backend};

/// The width and epsilon of an [`RmsNorm`].
#[derive(Config, Debug)]
pub struct RmsNormConfig {
    /// Width of the normalised axis.
    pub hidden: usize,
    /// Added to the mean square before the square root.
    pub eps: f64,
}

impl RmsNormConfig {
    /// A norm with unit gain (lazily initialised).
    pub fn init<B: Backend>(&self, device: &B::Device) -> RmsNorm<B> {
        RmsNorm {
            weight: Initializer::Ones.init([self.hidden], device),
            eps: self.eps,
        }
    }
}

/// `x * rsqrt(mean(x^2) + eps) * weight` over the last axis.
#[derive(Module, Debug)]
pub struct RmsNorm<B: Backend> {
    /// Per-channel gain, `[hidden]`.
    pub weight: Param<Tensor<B, 1>>,
    eps: f64,
}

impl<B: Backend> RmsNorm<B> {
    /// # Shapes
    /// - x: `[..., hidden]`, returned in the same shape.
    pub fn forward<const D: usize>(&self, x: Tensor<B, D>) -> Tensor<B, D> {
        let inv_rms = (x.clone().powi_scalar(2).mean_dim(D - 1) + self.eps)
            .sqrt()
            .recip();
        x * inv_rms * self.weight.val().unsqueeze()
    }
}
