//! The SwiGLU feed-forward block.

use burn::module::Module;
use burn::nn::Linear;
use burn::tensor::{Tensor, activation::silu, backend::Backend};

use super::linear::linear_no_bias;

/// `down_proj(silu(gate_proj(x)) * up_proj(x))`, no biases.
#[derive(Module, Debug)]
pub struct Mlp<B: Backend> {
    pub gate_proj: Linear<B>,
    pub up_proj: Linear<B>,
    pub down_proj: Linear<B>,
}

impl<B: Backend> Mlp<B> {
    /// A randomly initialised block, `hidden -> intermediate -> hidden`.
    pub fn new(hidden: usize, intermediate: usize, device: &B::Device) -> Self {
        Mlp {
            gate_proj: linear_no_bias(hidden, intermediate, device),
            up_proj: linear_no_bias(hidden, intermediate, device),
            down_proj: linear_no_bias(intermediate, hidden, device),
        }
    }

    /// # Shapes
    /// - x: `[batch, seq, hidden]`, returned in the same shape.
    pub fn forward(&self, x: Tensor<B, 3>) -> Tensor<B, 3> {
        let gate = silu(self.gate_proj.forward(x.clone()));
        self.down_proj.forward(gate * self.up_proj.forward(x))
    }
}
