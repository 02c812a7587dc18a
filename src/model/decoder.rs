//! One decoder layer: pre-norm attention and pre-norm MLP, each with a residual.

use burn::module::Module;
use burn::tensor::{Tensor, backend::Backend};

use super::attention::{Attention, AttentionContext};
use super::cache::KvCache;
use super::mlp::Mlp;
use super::rms_norm::RmsNorm;

#[derive(Module, Debug)]
pub struct DecoderLayer<B: Backend> {
    pub self_attn: Attention<B>,
    pub mlp: Mlp<B>,
    pub input_layernorm: RmsNorm<B>,
    pub post_attention_layernorm: RmsNorm<B>,
}

impl<B: Backend> DecoderLayer<B> {
    /// # Shapes
    /// - x: `[batch, seq, hidden]`, returned in the same shape.
    pub fn forward(
        &self,
        x: Tensor<B, 3>,
        context: &AttentionContext<B>,
        cache: Option<(&mut KvCache<B>, usize)>,
    ) -> Tensor<B, 3> {
        let attended =
            self.self_attn
                .forward(self.input_layernorm.forward(x.clone()), context, cache);
        let x = x + attended;
        let fed = self
            .mlp
            .forward(self.post_attention_layernorm.forward(x.clone()));
        x + fed
    }
}
