//! Multi-head self-attention with grouped key/value heads (GQA), as Llama and Mistral use it.

use burn::config::Config;
use burn::module::Module;
use burn::tensor::{Bool, Tensor, backend::Backend};

use super::cache::KvCache;
use crate::nn::{Projection, ProjectionConfig};
use crate::nn::{RopeTables, batched_matrix_product, in_f32, masked_softmax};

/// The widths of an [`Attention`] block.
#[derive(Config, Debug)]
pub struct AttentionConfig {
    /// The model width.
    pub hidden: usize,
    /// Query heads.
    pub heads: usize,
    /// Key/value heads; `heads` is a multiple of it.
    pub kv_heads: usize,
    /// Width of one head.
    pub head_dim: usize,
}

impl AttentionConfig {
    /// A randomly initialised block.
    pub fn init<B: Backend>(&self, device: &B::Device) -> Attention<B> {
        let (hidden, q_width) = (self.hidden, self.heads * self.head_dim);
        let kv_width = self.kv_heads * self.head_dim;
        Attention {
            q_proj: ProjectionConfig::new(hidden, q_width).init(device),
            k_proj: ProjectionConfig::new(hidden, kv_width).init(device),
            v_proj: ProjectionConfig::new(hidden, kv_width).init(device),
            o_proj: ProjectionConfig::new(q_width, hidden).init(device),
            heads: self.heads,
            kv_heads: self.kv_heads,
            head_dim: self.head_dim,
        }
    }
}

/// The projections of one attention block, named as in Hugging Face checkpoints.
#[derive(Module, Debug)]
pub struct Attention<B: Backend> {
    /// `hidden -> heads * head_dim`
    pub q_proj: Projection<B>,
    /// `hidden -> kv_heads * head_dim`
    pub k_proj: Projection<B>,
    /// `hidden -> kv_heads * head_dim`
    pub v_proj: Projection<B>,
    /// `heads * head_dim -> hidden`
    pub o_proj: Projection<B>,
    heads: usize,
    kv_heads: usize,
    head_dim: usize,
}

/// What the attention of one layer needs besides its input.
pub(crate) struct AttentionContext<B: Backend> {
    /// Rotations of the queries and keys by position.
    pub(crate) rope: RopeTables<B>,
    /// `[batch, heads, queries, keys]`, `true` where attention is forbidden.
    pub(crate) mask: Tensor<B, 4, Bool>,
}

impl<B: Backend> Attention<B> {
    /// # Shapes
    /// - x: `[batch, seq, hidden]`, returned in the same shape.
    pub(crate) fn forward(
        &self,
        x: Tensor<B, 3>,
        context: &AttentionContext<B>,
        cache: Option<(&mut KvCache<B>, usize)>,
    ) -> Tensor<B, 3> {
        let [batch, seq, _] = x.dims();
        // The rotation also moves heads before positions (`[batch, heads, seq, head_dim]`).
        let q = context
            .rope
            .apply(self.heads_last(self.q_proj.forward(x.clone()), self.heads));
        let k = context
            .rope
            .apply(self.heads_last(self.k_proj.forward(x.clone()), self.kv_heads));
        let v = self
            .heads_last(self.v_proj.forward(x), self.kv_heads)
            .swap_dims(1, 2);
        let (k, v) = match cache {
            Some((cache, layer)) => cache.extend(layer, k, v),
            None => (k, v),
        };
        let keys = k.dims()[2];

        // GQA without copying keys: the query heads of one group are adjacent, so
        // `[batch, heads, seq, d]` is `[batch, kv_heads, groups * seq, d]` in the same memory,
        // and each group's queries meet their shared key/value head in one matmul.
        let groups = self.heads / self.kv_heads;
        let q = q.reshape([batch, self.kv_heads, groups * seq, self.head_dim]);
        let scale = (self.head_dim as f64).sqrt().recip();
        let scores = batched_matrix_product(q, k.swap_dims(2, 3));
        let mask = context
            .mask
            .clone()
            .reshape([batch, self.kv_heads, groups * seq, keys]);
        // Hidden keys at -inf, not transformers' most negative finite value: no row is fully
        // hidden (see `attention_mask`), and the weights are the same.
        // In f32 under mixed precision, as transformers' eager attention does.
        let weights = in_f32(scores, |scores| masked_softmax(scores, mask, scale));
        let out = batched_matrix_product(weights, v)
            .reshape([batch, self.heads, seq, self.head_dim])
            .swap_dims(1, 2);
        self.o_proj
            .forward(out.reshape([batch, seq, self.heads * self.head_dim]))
    }

    /// `[batch, seq, heads * head_dim] -> [batch, seq, heads, head_dim]`
    fn heads_last(&self, x: Tensor<B, 3>, heads: usize) -> Tensor<B, 4> {
        let [batch, seq, _] = x.dims();
        x.reshape([batch, seq, heads, self.head_dim])
    }
}
