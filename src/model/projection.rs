//! A linear projection without bias, optionally carrying a LoRA adapter.

use burn::module::{Module, Param};
use burn::nn::LinearConfig;
use burn::tensor::{Tensor, backend::Backend, module::linear};

use crate::peft::LoraAdapter;

/// `x @ weight (+ lora(x))`. The base parameter is named `weight`, so its path is the Hugging
/// Face name (`...q_proj.weight`); the adapter's are `...q_proj.lora.lora_a` / `lora_b`.
#[derive(Module, Debug)]
pub struct Projection<B: Backend> {
    /// `[in, out]` (Burn's layout, the transpose of PyTorch's).
    pub weight: Param<Tensor<B, 2>>,
    pub lora: Option<LoraAdapter<B>>,
}

impl<B: Backend> Projection<B> {
    /// A randomly initialised `d_in -> d_out` projection (Burn's Linear initialisation).
    pub fn new(d_in: usize, d_out: usize, device: &B::Device) -> Self {
        let linear = LinearConfig::new(d_in, d_out).with_bias(false).init(device);
        Projection {
            weight: linear.weight,
            lora: None,
        }
    }

    /// From a weight in Burn's layout, `[in, out]`.
    pub fn from_weight(weight: Tensor<B, 2>) -> Self {
        Projection {
            weight: Param::from_tensor(weight),
            lora: None,
        }
    }

    /// `(in, out)`
    pub fn dims(&self) -> (usize, usize) {
        let [d_in, d_out] = self.weight.dims();
        (d_in, d_out)
    }

    /// # Shapes
    /// - x: `[batch, seq, in]`; returns `[batch, seq, out]`.
    pub fn forward(&self, x: Tensor<B, 3>) -> Tensor<B, 3> {
        let base = linear(x.clone(), self.weight.val(), None);
        match &self.lora {
            Some(lora) => base + lora.forward(x),
            None => base,
        }
    }

    /// Folds the adapter, if any, into the weight (`W + scaling * A @ B`) and drops it.
    pub fn merge(&mut self) {
        if let Some(lora) = self.lora.take() {
            self.weight = Param::from_tensor(self.weight.val() + lora.delta());
        }
    }
}
