//! The Llama/Mistral causal language model, with Hugging Face's module names.

use burn::module::Module;
use burn::nn::{Embedding, EmbeddingConfig};
use burn::tensor::{DType, Int, Tensor, TensorData, backend::Backend};

use super::attention::{AttentionConfig, AttentionContext};
use super::cache::KvCache;
use super::config::LlamaConfig;
use super::decoder::{DecoderLayer, DecoderLayerConfig};
use super::mlp::MlpConfig;
use crate::error::{Error, Result};
use crate::nn::{
    DeviceCache, Precision, Projection, ProjectionConfig, RmsNorm, RmsNormConfig, Rope,
    WEIGHT_INIT, attention_mask, matrix_product, store_frozen_as, to_dtype,
};

/// The label that the loss ignores, as in PyTorch's `CrossEntropyLoss`.
pub const IGNORE_INDEX: i64 = -100;

/// The transformer body: `model.*` in a Hugging Face checkpoint.
#[derive(Module, Debug)]
pub struct LlamaModel<B: Backend> {
    /// `[vocab, hidden]`
    pub embed_tokens: Embedding<B>,
    /// `model.layers.N`
    pub layers: Vec<DecoderLayer<B>>,
    /// The final norm.
    pub norm: RmsNorm<B>,
}

/// `LlamaForCausalLM` / `MistralForCausalLM`: the body and the language-model head.
///
/// Burn parameter paths equal the Hugging Face tensor names without `.weight`'s change:
/// `model.layers.3.self_attn.q_proj.weight`, `lm_head.weight`, so Spectrum selections apply as
/// they are. Linear weights are stored `[in, out]` (Burn's layout), the transpose of the file's.
#[derive(Module, Debug)]
pub struct LlamaForCausalLM<B: Backend> {
    /// The transformer body.
    pub model: LlamaModel<B>,
    /// `None` when the head shares `model.embed_tokens` (`tie_word_embeddings`).
    pub lm_head: Option<Projection<B>>,
    #[module(skip)]
    config: LlamaConfig,
    #[module(skip)]
    rope: Rope,
    #[module(skip)]
    precision: Precision,
    /// The RoPE tables and the fixed parts of attention masks, kept on the device.
    #[module(skip)]
    constants: DeviceCache,
}

impl LlamaConfig {
    /// The model's blocks, one decoder layer's worth.
    pub fn layer(&self) -> DecoderLayerConfig {
        let attention = AttentionConfig::new(
            self.hidden_size,
            self.num_attention_heads,
            self.num_key_value_heads,
            self.head_dim,
        );
        let mlp = MlpConfig::new(self.hidden_size, self.intermediate_size);
        DecoderLayerConfig::new(attention, mlp, self.rms_norm_eps)
    }

    /// The model tree, randomly initialised (lazily: [`LlamaForCausalLM::from_pretrained`]
    /// fills it from a checkpoint without drawing the weights first). This is the one place
    /// the tree is built.
    pub fn init<B: Backend>(&self, device: &B::Device) -> LlamaForCausalLM<B> {
        let layer = self.layer();
        let model = LlamaModel {
            embed_tokens: EmbeddingConfig::new(self.vocab_size, self.hidden_size)
                .with_initializer(WEIGHT_INIT)
                .init(device),
            layers: (0..self.num_hidden_layers)
                .map(|_| layer.init(device))
                .collect(),
            norm: RmsNormConfig::new(self.hidden_size, self.rms_norm_eps).init(device),
        };
        let lm_head = (!self.tie_word_embeddings)
            .then(|| ProjectionConfig::new(self.hidden_size, self.vocab_size).init(device));
        LlamaForCausalLM {
            rope: Rope::new(self.head_dim, self.rope_theta, self.rope_scaling.as_ref()),
            model,
            lm_head,
            config: self.clone(),
            precision: Precision::F32,
            constants: DeviceCache::default(),
        }
    }
}

/// Lists a model's projections with their module paths, through shared (`iter`, `as_ref`, `&`)
/// or mutable (`iter_mut`, `as_mut`, `&mut`) borrows: the one list of where projections sit.
macro_rules! projections {
    ($model:expr, $iter:ident, $as_opt:ident, $($borrow:tt)+) => {{
        let mut all = Vec::new();
        for (i, layer) in $model.model.layers.$iter().enumerate() {
            let (attn, mlp) = ($($borrow)+ layer.self_attn, $($borrow)+ layer.mlp);
            let named = [
                ("self_attn.q_proj", $($borrow)+ attn.q_proj),
                ("self_attn.k_proj", $($borrow)+ attn.k_proj),
                ("self_attn.v_proj", $($borrow)+ attn.v_proj),
                ("self_attn.o_proj", $($borrow)+ attn.o_proj),
                ("mlp.gate_proj", $($borrow)+ mlp.gate_proj),
                ("mlp.up_proj", $($borrow)+ mlp.up_proj),
                ("mlp.down_proj", $($borrow)+ mlp.down_proj),
            ];
            let named = named.into_iter();
            all.extend(named.map(|(name, p)| (format!("model.layers.{i}.{name}"), p)));
        }
        if let Some(head) = $model.lm_head.$as_opt() {
            all.push(("lm_head".to_string(), head));
        }
        all
    }};
}

impl<B: Backend> LlamaForCausalLM<B> {
    /// The configuration the model was built from.
    pub fn config(&self) -> &LlamaConfig {
        &self.config
    }

    /// The float type of activations (f32 unless [`LlamaForCausalLM::with_precision`] said
    /// otherwise).
    pub fn precision(&self) -> Precision {
        self.precision
    }

    /// Mixed precision: activations and products in `precision`'s type from the embedding on,
    /// every frozen parameter stored in it; trainable parameters stay as they are (f32 master
    /// weights, whose gradients come back in f32). Freeze first: what trains is decided by
    /// `require_grad`. [`Precision::F32`] casts frozen parameters back to f32.
    pub fn with_precision(self, precision: Precision) -> Self {
        let mut model = store_frozen_as(self, precision);
        model.precision = precision;
        model
    }

    /// Every linear projection with its module path (`model.layers.0.self_attn.q_proj`, ...,
    /// `lm_head` when untied), in checkpoint order.
    pub fn projections_mut(&mut self) -> Vec<(String, &mut Projection<B>)> {
        projections!(self, iter_mut, as_mut, &mut)
    }

    /// Every linear projection with its module path, read-only (see
    /// [`LlamaForCausalLM::projections_mut`]).
    pub fn projections(&self) -> Vec<(String, &Projection<B>)> {
        projections!(self, iter, as_ref, &)
    }

    /// Whether any projection carries a LoRA adapter.
    pub fn has_lora(&self) -> bool {
        self.projections().iter().any(|(_, p)| p.lora().is_some())
    }

    /// Folds every LoRA adapter into its base weight (`W + scaling * A @ B`).
    pub fn merge_lora(mut self) -> Self {
        for (_, projection) in self.projections_mut() {
            projection.merge();
        }
        self
    }

    /// Adapters merged and NF4 bases dequantized: a plain model that
    /// [`LlamaForCausalLM::save_pretrained`] writes and transformers loads.
    pub fn into_dense(mut self) -> Self {
        for (_, projection) in self.projections_mut() {
            projection.make_dense();
        }
        self
    }

    /// Logits of every position, without padding.
    ///
    /// # Shapes
    /// - ids: `[batch, seq]`; returns `[batch, seq, vocab]`.
    pub fn forward(&self, ids: Tensor<B, 2, Int>) -> Tensor<B, 3> {
        let hidden = self.hidden_states(ids, None, None);
        self.head(hidden)
    }

    /// Logits with an attention mask (`padding[b][t]` is 1 for a token, 0 for padding).
    ///
    /// Positions are `0..seq` in every row, as transformers' forward uses them: pad on the right.
    /// A mask that is not `[batch][seq]` is [`Error::MaskShape`].
    ///
    /// # Shapes
    /// - ids: `[batch, seq]`, padding: `[batch][seq]`; returns `[batch, seq, vocab]`.
    pub fn forward_masked(
        &self,
        ids: Tensor<B, 2, Int>,
        padding: Option<&[Vec<u32>]>,
    ) -> Result<Tensor<B, 3>> {
        Ok(self.head(self.final_hidden(ids, padding)?))
    }

    /// [`LlamaForCausalLM::forward_masked`] without the head: the final normed hidden states,
    /// `[batch, seq, hidden]`.
    pub(crate) fn final_hidden(
        &self,
        ids: Tensor<B, 2, Int>,
        padding: Option<&[Vec<u32>]>,
    ) -> Result<Tensor<B, 3>> {
        let [batch, seq] = ids.dims();
        if let Some(padding) = padding {
            check_padding(padding, batch, seq)?;
        }
        Ok(self.hidden_states(ids, padding, None))
    }

    /// Logits of the new tokens `ids` after the positions held in `cache`, extending it.
    ///
    /// # Shapes
    /// - ids: `[batch, new]`; returns `[batch, new, vocab]`.
    pub fn forward_cached(&self, ids: Tensor<B, 2, Int>, cache: &mut KvCache<B>) -> Tensor<B, 3> {
        let hidden = self.hidden_states(ids, None, Some(cache));
        self.head(hidden)
    }

    /// [`LlamaForCausalLM::forward_cached`] without the head: the final normed hidden states
    /// of the new tokens, `[batch, new, hidden]`.
    pub(crate) fn final_hidden_cached(
        &self,
        ids: Tensor<B, 2, Int>,
        cache: &mut KvCache<B>,
    ) -> Tensor<B, 3> {
        self.hidden_states(ids, None, Some(cache))
    }

    /// The final normed hidden states, `[batch, seq, hidden]`.
    fn hidden_states(
        &self,
        ids: Tensor<B, 2, Int>,
        padding: Option<&[Vec<u32>]>,
        mut cache: Option<&mut KvCache<B>>,
    ) -> Tensor<B, 3> {
        let [batch, seq] = ids.dims();
        let start = cache.as_ref().map_or(0, |c| c.len());
        let context = self.layer_context(batch, start, seq, padding, &ids.device());
        let mut x = self.embed(ids);
        for (index, layer) in self.model.layers.iter().enumerate() {
            let layer_cache = cache.as_deref_mut().map(|c| (c, index));
            x = layer.forward(x, &context, layer_cache);
        }
        self.model.norm.forward(x)
    }

    /// What every decoder layer of one forward pass shares: the RoPE tables of positions
    /// `start..start + seq` and the attention mask.
    pub(crate) fn layer_context(
        &self,
        batch: usize,
        start: usize,
        seq: usize,
        padding: Option<&[Vec<u32>]>,
        device: &B::Device,
    ) -> AttentionContext<B> {
        let c = &self.config;
        AttentionContext {
            rope: self
                .rope
                .tables(start, seq, self.precision.dtype(), &self.constants, device),
            mask: attention_mask(
                batch,
                c.num_attention_heads,
                start,
                seq,
                c.sliding_window,
                padding,
                &self.constants,
                device,
            ),
        }
    }

    /// The token embeddings, `[batch, seq] -> [batch, seq, hidden]`.
    pub(crate) fn embed(&self, ids: Tensor<B, 2, Int>) -> Tensor<B, 3> {
        to_dtype(self.model.embed_tokens.forward(ids), self.precision.dtype())
    }

    /// Logits of final (normed) hidden states: `[batch, seq, hidden] -> [batch, seq, vocab]`.
    pub(crate) fn head(&self, hidden: Tensor<B, 3>) -> Tensor<B, 3> {
        match &self.lm_head {
            Some(head) => head.forward(hidden),
            None => {
                let [batch, seq, width] = hidden.dims();
                let embedding = to_dtype(self.model.embed_tokens.weight.val(), hidden.dtype());
                let logits =
                    matrix_product(hidden.reshape([batch * seq, width]), embedding.transpose());
                logits.reshape([batch, seq, self.config.vocab_size])
            }
        }
    }

    /// The causal LM loss: mean cross-entropy of the logits at `t` against `labels[t + 1]`,
    /// over the labels that are not [`IGNORE_INDEX`].
    ///
    /// A sequence shorter than 2 has nothing to predict, and labels of another shape than the
    /// logits' first two axes cannot be scored: both are [`Error::LossShape`].
    ///
    /// # Shapes
    /// - logits: `[batch, seq, vocab]`, labels: `[batch, seq]`; returns `[1]`.
    pub fn causal_lm_loss(logits: Tensor<B, 3>, labels: Tensor<B, 2, Int>) -> Result<Tensor<B, 1>> {
        let [batch, seq, vocab] = logits.dims();
        if seq < 2 || labels.dims() != [batch, seq] {
            return Err(Error::LossShape {
                logits: [batch, seq, vocab],
                labels: labels.dims(),
            });
        }
        let logits = logits
            .narrow(1, 0, seq - 1)
            .reshape([batch * (seq - 1), vocab]);
        let targets = labels.narrow(1, 1, seq - 1).reshape([batch * (seq - 1)]);
        let count = targets.clone().not_equal_elem(IGNORE_INDEX).float().sum();
        Ok(Self::nll_sum(logits, targets) / count)
    }

    /// The summed negative log-likelihood of `targets` given final hidden states `rows`, the
    /// head's logits formed for these rows only.
    ///
    /// # Shapes
    /// - rows: `[positions, hidden]`, targets: `[positions]`; returns `[1]`.
    pub(crate) fn rows_nll_sum(
        &self,
        rows: Tensor<B, 2>,
        targets: Tensor<B, 1, Int>,
    ) -> Tensor<B, 1> {
        let [positions, _] = rows.dims();
        let logits = self.head(rows.unsqueeze::<3>());
        Self::nll_sum(logits.reshape([positions, self.config.vocab_size]), targets)
    }

    /// The summed negative log-likelihood of the targets, positions whose target is
    /// [`IGNORE_INDEX`] left out; computed in f32 from logits of any float type.
    ///
    /// # Shapes
    /// - logits: `[positions, vocab]`, targets: `[positions]`; returns `[1]`.
    pub(crate) fn nll_sum(logits: Tensor<B, 2>, targets: Tensor<B, 1, Int>) -> Tensor<B, 1> {
        crate::nn::nll_sum(to_dtype(logits, DType::F32), targets, IGNORE_INDEX)
    }
}

/// A padding mask must be `[batch][seq]`; [`Error::MaskShape`] otherwise.
pub(crate) fn check_padding(padding: &[Vec<u32>], batch: usize, seq: usize) -> Result<()> {
    let rows: Vec<usize> = padding.iter().map(Vec::len).collect();
    if rows.len() != batch || rows.iter().any(|&len| len != seq) {
        return Err(Error::MaskShape { batch, seq, rows });
    }
    Ok(())
}

/// Position `t` predicts token `t + 1`: the states of positions `0..seq - 1` as rows, with the
/// labels of positions `1..seq` as their targets.
///
/// # Shapes
/// - states: `[batch, seq, hidden]`, labels: `[batch, seq]`; returns
///   `[batch * (seq - 1), hidden]` and `[batch * (seq - 1)]`.
pub(crate) fn next_token_pairs<B: Backend>(
    states: Tensor<B, 3>,
    labels: Tensor<B, 2, Int>,
) -> (Tensor<B, 2>, Tensor<B, 1, Int>) {
    let [batch, seq, width] = states.dims();
    let positions = batch * (seq - 1);
    let rows = states.narrow(1, 0, seq - 1).reshape([positions, width]);
    (rows, labels.narrow(1, 1, seq - 1).reshape([positions]))
}

/// Token ids as an `[batch, seq]` tensor. Rows of different lengths are
/// [`Error::RaggedBatch`]: pad them first.
pub fn ids_tensor<B: Backend>(rows: &[Vec<u32>], device: &B::Device) -> Result<Tensor<B, 2, Int>> {
    let seq = rows.first().map_or(0, Vec::len);
    if let Some(row) = rows.iter().position(|r| r.len() != seq) {
        return Err(Error::RaggedBatch {
            row,
            len: rows[row].len(),
            expected: seq,
        });
    }
    let flat: Vec<i64> = rows.iter().flatten().map(|&id| id as i64).collect();
    Ok(Tensor::from_data(
        TensorData::new(flat, [rows.len(), seq]),
        device,
    ))
}
