//! The SwiGLU feed-forward block.

use burn::config::Config;
use burn::module::Module;
use burn::tensor::{Tensor, backend::Backend};

use crate::nn::{Projection, ProjectionConfig, swiglu};

/// The widths of an [`Mlp`].
#[derive(Config, Debug)]
pub struct MlpConfig {
    /// The model width.
    pub hidden: usize,
    /// The inner width.
    pub intermediate: usize,
}

impl MlpConfig {
    /// A randomly initialised block, `hidden -> intermediate -> hidden`.
    pub fn init<B: Backend>(&self, device: &B::Device) -> Mlp<B> {
        let (hidden, inner) = (self.hidden, self.intermediate);
        Mlp {
            gate_proj: ProjectionConfig::new(hidden, inner).init(device),
            up_proj: ProjectionConfig::new(hidden, inner).init(device),
            down_proj: ProjectionConfig::new(inner, hidden).init(device),
        }
    }
}

/// `down_proj(silu(gate_proj(x)) * up_proj(x))`, no biases.
#[derive(Module, Debug)]
pub struct Mlp<B: Backend> {
    /// `hidden -> intermediate`, through SiLU.
    pub gate_proj: Projection<B>,
    /// `hidden -> intermediate`, the gated branch.
    pub up_proj: Projection<B>,
    /// `intermediate -> hidden`
    pub down_proj: Projection<B>,
}

impl<B: Backend> Mlp<B> {
    /// # Shapes
    /// - x: `[batch, seq, hidden]`, returned in the same shape.
    pub fn forward(&self, x: Tensor<B, 3>) -> Tensor<B, 3> {
        let gated = swiglu(self.gate_proj.forward(x.clone()), self.up_proj.forward(x));
        self.down_proj.forward(gated)
    }
}
