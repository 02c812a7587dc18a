//! The SwiGLU feed-forward block.

use burn::module::Module;
use burn::tensor::{Tensor, activation::silu, backend::Backend};

use super::projection::Projection;

/// `down_proj(silu(gate_proj(x)) * up_proj(x))`, no biases.
#[derive(Module, Debug)]
pub struct Mlp<B: Backend> {
    pub gate_proj: Projection<B>,
    pub up_proj: Projection<B>,
    pub down_proj: Projection<B>,
}

impl<B: Backend> Mlp<B> {
    /// A randomly initialised block, `hidden -> intermediate -> hidden`.
    pub fn new(hidden: usize, intermediate: usize, device: &B::Device) -> Self {
        Mlp {
            gate_proj: Projection::new(hidden, intermediate, device),
            up_proj: Projection::new(hidden, intermediate, device),
            down_proj: Projection::new(intermediate, hidden, device),
        }
    }

    /// # Shapes
    /// - x: `[batch, seq, hidden]`, returned in the same shape.
    pub fn forward(&self, x: Tensor<B, 3>) -> Tensor<B, 3> {
        let gate = silu(self.gate_proj.forward(x.clone()));
        self.down_proj.forward(gate * self.up_proj.forward(x))
    }
}
