//! The low-rank update LoRA (Hu et al. 2021) adds to a projection, as PEFT computes it.

use burn::config::Config;
use burn::module::{Module, Param};
use burn::nn::{Dropout, DropoutConfig};
use burn::tensor::{Distribution, Tensor, backend::Backend};

use super::matrix_product::last_axis_product;
use super::precision::to_dtype;

/// The shape and hyper-parameters of one [`LoraAdapter`].
#[derive(Config, Debug)]
pub struct LoraAdapterConfig {
    /// Input width of the projection.
    pub d_in: usize,
    /// Output width of the projection.
    pub d_out: usize,
    /// The rank `r`.
    pub r: usize,
    /// Dropout probability on the adapter's input.
    #[config(default = 0.0)]
    pub dropout: f64,
    /// The factor on `B(A(x))` (`alpha / r`, or `alpha / sqrt(r)` with rsLoRA).
    #[config(default = 1.0)]
    pub scaling: f64,
}

impl LoraAdapterConfig {
    /// A fresh adapter as PEFT makes it: A kaiming-uniform with `a = sqrt(5)`, which is
    /// `U(-1/sqrt(in), 1/sqrt(in))`, and B zero, so the update starts at zero.
    ///
    /// A is drawn now, not lazily, so that adapters take the backend's random numbers in the
    /// order they are created, whatever runs first afterwards.
    pub fn init<B: Backend>(&self, device: &B::Device) -> LoraAdapter<B> {
        let bound = 1.0 / (self.d_in as f64).sqrt();
        let a = Tensor::random(
            [self.d_in, self.r],
            Distribution::Uniform(-bound, bound),
            device,
        );
        self.init_with(a, Tensor::zeros([self.r, self.d_out], device))
    }

    /// An adapter with the given weights.
    ///
    /// # Shapes
    /// - lora_a: `[in, r]`, lora_b: `[r, out]`.
    pub fn init_with<B: Backend>(
        &self,
        lora_a: Tensor<B, 2>,
        lora_b: Tensor<B, 2>,
    ) -> LoraAdapter<B> {
        LoraAdapter {
            lora_a: Param::from_tensor(lora_a),
            lora_b: Param::from_tensor(lora_b),
            dropout: DropoutConfig::new(self.dropout).init(),
            scaling: self.scaling,
        }
    }
}

/// The low-rank update of one projection: `scaling * B(A(dropout(x)))`.
///
/// Weights are kept in Burn's `[in, out]` layout: `lora_a` is PEFT's `lora_A.weight`
/// transposed (`[in, r]`), `lora_b` is `lora_B.weight` transposed (`[r, out]`).
#[derive(Module, Debug)]
pub struct LoraAdapter<B: Backend> {
    /// `[in, r]`
    pub lora_a: Param<Tensor<B, 2>>,
    /// `[r, out]`
    pub lora_b: Param<Tensor<B, 2>>,
    /// Dropout on the adapter's input.
    pub dropout: Dropout,
    /// The factor on `B(A(x))`.
    pub scaling: f64,
}

impl<B: Backend> LoraAdapter<B> {
    /// The rank `r`.
    pub fn rank(&self) -> usize {
        self.lora_a.dims()[1]
    }

    /// The update for `x`, without ever forming `A @ B`. As PEFT does, `x` is cast to the
    /// factors' type (f32 under mixed precision) and the update back to `x`'s.
    ///
    /// # Shapes
    /// - x: `[..., in]`; returns `[..., out]`.
    pub fn forward<const D: usize>(&self, x: Tensor<B, D>) -> Tensor<B, D> {
        let (a, b) = (self.lora_a.val(), self.lora_b.val());
        let dtype = x.dtype();
        let x = self.dropout.forward(to_dtype(x, a.dtype()));
        // The scaling on the rank-r product: `r` values per token to scale instead of `out`.
        let low = last_axis_product(x, a) * self.scaling;
        to_dtype(last_axis_product(low, b), dtype)
    }

    /// `scaling * A @ B`, `[in, out]`: the change merging makes to the base weight.
    pub fn delta(&self) -> Tensor<B, 2> {
        self.lora_a.val().matmul(self.lora_b.val()) * self.scaling
    }
}
