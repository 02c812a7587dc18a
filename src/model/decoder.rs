//! One decoder layer: pre-norm attention and pre-norm MLP, each with a residual.

use burn::config::Config;
use burn::module::Module;
use burn::tensor::{Tensor, backend::Backend};

use super::attention::{Attention, AttentionConfig, AttentionContext};
use super::cache::KvCache;
use super::mlp::{Mlp, MlpConfig};
use crate::nn::{RmsNorm, RmsNormConfig};

/// The blocks of a [`DecoderLayer`].
#[derive(Config, Debug)]
pub struct DecoderLayerConfig {
    /// The attention block.
    pub attention: AttentionConfig,
    /// The feed-forward block.
    pub mlp: MlpConfig,
    /// The epsilon of both norms.
    pub rms_norm_eps: f64,
}

impl DecoderLayerConfig {
    /// A randomly initialised layer.
    pub fn init<B: Backend>(&self, device: &B::Device) -> DecoderLayer<B> {
        let norm = RmsNormConfig::new(self.attention.hidden, self.rms_norm_eps);
        DecoderLayer {
            self_attn: self.attention.init(device),
            mlp: self.mlp.init(device),
            input_layernorm: norm.init(device),
            post_attention_layernorm: norm.init(device),
        }
    }
}

/// `model.layers.N`: attention and MLP, each after its norm and with a residual.
#[derive(Module, Debug)]
pub struct DecoderLayer<B: Backend> {
    /// `self_attn.{q,k,v,o}_proj`
    pub self_attn: Attention<B>,
    /// `mlp.{gate,up,down}_proj`
    pub mlp: Mlp<B>,
    /// The norm before attention.
    pub input_layernorm: RmsNorm<B>,
    /// The norm before the MLP.
    pub post_attention_layernorm: RmsNorm<B>,
}

impl<B: Backend> DecoderLayer<B> {
    /// # Shapes
    /// - x: `[batch, seq, hidden]`, returned in the same shape.
    pub(crate) fn forward(
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
