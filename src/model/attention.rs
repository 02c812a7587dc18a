//! Multi-head self-attention with grouped key/value heads (GQA), as Llama and Mistral use it.

use burn::module::Module;
use burn::nn::Linear;
use burn::tensor::{Bool, Tensor, activation::softmax, backend::Backend};

use super::cache::KvCache;
use super::linear::linear_no_bias;
use super::rope::Rope;

/// The projections of one attention block, named as in Hugging Face checkpoints.
#[derive(Module, Debug)]
pub struct Attention<B: Backend> {
    /// `hidden -> heads * head_dim`
    pub q_proj: Linear<B>,
    /// `hidden -> kv_heads * head_dim`
    pub k_proj: Linear<B>,
    /// `hidden -> kv_heads * head_dim`
    pub v_proj: Linear<B>,
    /// `heads * head_dim -> hidden`
    pub o_proj: Linear<B>,
    heads: usize,
    kv_heads: usize,
    head_dim: usize,
}

/// What the attention of one layer needs besides its input.
pub struct AttentionContext<'a, B: Backend> {
    pub rope: &'a Rope,
    /// `[batch, 1, queries, keys]`, `true` where attention is forbidden.
    pub mask: Tensor<B, 4, Bool>,
    /// Position of the first query (the number of cached positions).
    pub start: usize,
}

impl<B: Backend> Attention<B> {
    pub fn new(
        hidden: usize,
        heads: usize,
        kv_heads: usize,
        head_dim: usize,
        device: &B::Device,
    ) -> Self {
        Self::from_projections(
            [
                linear_no_bias(hidden, heads * head_dim, device),
                linear_no_bias(hidden, kv_heads * head_dim, device),
                linear_no_bias(hidden, kv_heads * head_dim, device),
                linear_no_bias(heads * head_dim, hidden, device),
            ],
            heads,
            kv_heads,
            head_dim,
        )
    }

    /// From `[q, k, v, o]` projections.
    pub fn from_projections(
        [q_proj, k_proj, v_proj, o_proj]: [Linear<B>; 4],
        heads: usize,
        kv_heads: usize,
        head_dim: usize,
    ) -> Self {
        Attention {
            q_proj,
            k_proj,
            v_proj,
            o_proj,
            heads,
            kv_heads,
            head_dim,
        }
    }

    /// # Shapes
    /// - x: `[batch, seq, hidden]`, returned in the same shape.
    pub fn forward(
        &self,
        x: Tensor<B, 3>,
        context: &AttentionContext<B>,
        cache: Option<(&mut KvCache<B>, usize)>,
    ) -> Tensor<B, 3> {
        let [batch, seq, _] = x.dims();
        let q = self.split_heads(self.q_proj.forward(x.clone()), self.heads);
        let k = self.split_heads(self.k_proj.forward(x.clone()), self.kv_heads);
        let v = self.split_heads(self.v_proj.forward(x), self.kv_heads);
        let q = context.rope.apply(q, context.start);
        let k = context.rope.apply(k, context.start);
        let (k, v) = match cache {
            Some((cache, layer)) => cache.extend(layer, k, v),
            None => (k, v),
        };
        let k = self.repeat_kv(k);
        let v = self.repeat_kv(v);

        let scale = (self.head_dim as f64).sqrt().recip();
        let scores = q.matmul(k.swap_dims(2, 3)) * scale;
        // The most negative finite value, as transformers uses: a fully masked row (a padding
        // query) gets uniform weights instead of NaN.
        let scores = scores.mask_fill(context.mask.clone(), f32::MIN);
        let weights = softmax(scores, 3);
        let out = weights.matmul(v).swap_dims(1, 2);
        self.o_proj
            .forward(out.reshape([batch, seq, self.heads * self.head_dim]))
    }

    /// `[batch, seq, heads * head_dim] -> [batch, heads, seq, head_dim]`
    fn split_heads(&self, x: Tensor<B, 3>, heads: usize) -> Tensor<B, 4> {
        let [batch, seq, _] = x.dims();
        x.reshape([batch, seq, heads, self.head_dim])
            .swap_dims(1, 2)
    }

    /// Repeats each key/value head for the query heads of its group:
    /// `[batch, kv_heads, keys, head_dim] -> [batch, heads, keys, head_dim]`.
    fn repeat_kv(&self, x: Tensor<B, 4>) -> Tensor<B, 4> {
        let groups = self.heads / self.kv_heads;
        if groups == 1 {
            return x;
        }
        let [batch, kv_heads, keys, head_dim] = x.dims();
        x.unsqueeze_dim::<5>(2)
            .expand([batch, kv_heads, groups, keys, head_dim])
            .reshape([batch, kv_heads * groups, keys, head_dim])
    }
}
