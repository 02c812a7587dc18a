//! The Llama/Mistral causal language model, with Hugging Face's module names.

use burn::module::Module;
use burn::nn::{Embedding, EmbeddingConfig};
use burn::tensor::{Int, Tensor, TensorData, activation::log_softmax, backend::Backend};

use super::attention::{Attention, AttentionContext};
use super::cache::KvCache;
use super::config::LlamaConfig;
use super::decoder::DecoderLayer;
use super::mask::attention_mask;
use super::mlp::Mlp;
use super::projection::Projection;
use super::rms_norm::RmsNorm;
use super::rope::Rope;

/// The label that the loss ignores, as in PyTorch's `CrossEntropyLoss`.
pub const IGNORE_INDEX: i64 = -100;

/// The transformer body: `model.*` in a Hugging Face checkpoint.
#[derive(Module, Debug)]
pub struct LlamaModel<B: Backend> {
    /// `[vocab, hidden]`
    pub embed_tokens: Embedding<B>,
    pub layers: Vec<DecoderLayer<B>>,
    pub norm: RmsNorm<B>,
}

/// `LlamaForCausalLM` / `MistralForCausalLM`: the body and the language-model head.
///
/// Burn parameter paths equal the Hugging Face tensor names without `.weight`'s change:
/// `model.layers.3.self_attn.q_proj.weight`, `lm_head.weight`, so Spectrum selections apply as
/// they are. Linear weights are stored `[in, out]` (Burn's layout), the transpose of the file's.
#[derive(Module, Debug)]
pub struct LlamaForCausalLM<B: Backend> {
    pub model: LlamaModel<B>,
    /// `None` when the head shares `model.embed_tokens` (`tie_word_embeddings`).
    pub lm_head: Option<Projection<B>>,
    #[module(skip)]
    config: LlamaConfig,
    #[module(skip)]
    rope: Rope,
}

impl<B: Backend> LlamaForCausalLM<B> {
    /// A randomly initialised model.
    pub fn new(config: &LlamaConfig, device: &B::Device) -> Self {
        let c = config;
        let layer = |_| DecoderLayer {
            self_attn: Attention::new(
                c.hidden_size,
                c.num_attention_heads,
                c.num_key_value_heads,
                c.head_dim,
                device,
            ),
            mlp: Mlp::new(c.hidden_size, c.intermediate_size, device),
            input_layernorm: RmsNorm::new(c.hidden_size, c.rms_norm_eps, device),
            post_attention_layernorm: RmsNorm::new(c.hidden_size, c.rms_norm_eps, device),
        };
        let model = LlamaModel {
            embed_tokens: EmbeddingConfig::new(c.vocab_size, c.hidden_size).init(device),
            layers: (0..c.num_hidden_layers).map(layer).collect(),
            norm: RmsNorm::new(c.hidden_size, c.rms_norm_eps, device),
        };
        let lm_head =
            (!c.tie_word_embeddings).then(|| Projection::new(c.hidden_size, c.vocab_size, device));
        Self::from_parts(config.clone(), model, lm_head)
    }

    /// Assembles a model from loaded modules.
    pub fn from_parts(
        config: LlamaConfig,
        model: LlamaModel<B>,
        lm_head: Option<Projection<B>>,
    ) -> Self {
        LlamaForCausalLM {
            rope: Rope::new(&config),
            model,
            lm_head,
            config,
        }
    }

    pub fn config(&self) -> &LlamaConfig {
        &self.config
    }

    /// Every linear projection with its module path (`model.layers.0.self_attn.q_proj`, ...,
    /// `lm_head` when untied), in checkpoint order.
    pub fn projections_mut(&mut self) -> Vec<(String, &mut Projection<B>)> {
        let mut all = Vec::new();
        for (i, layer) in self.model.layers.iter_mut().enumerate() {
            let (attn, mlp) = (&mut layer.self_attn, &mut layer.mlp);
            let p = format!("model.layers.{i}");
            all.push((format!("{p}.self_attn.q_proj"), &mut attn.q_proj));
            all.push((format!("{p}.self_attn.k_proj"), &mut attn.k_proj));
            all.push((format!("{p}.self_attn.v_proj"), &mut attn.v_proj));
            all.push((format!("{p}.self_attn.o_proj"), &mut attn.o_proj));
            all.push((format!("{p}.mlp.gate_proj"), &mut mlp.gate_proj));
            all.push((format!("{p}.mlp.up_proj"), &mut mlp.up_proj));
            all.push((format!("{p}.mlp.down_proj"), &mut mlp.down_proj));
        }
        if let Some(head) = self.lm_head.as_mut() {
            all.push(("lm_head".to_string(), head));
        }
        all
    }

    /// Every linear projection with its module path, read-only (see
    /// [`LlamaForCausalLM::projections_mut`]).
    pub fn projections(&self) -> Vec<(String, &Projection<B>)> {
        let mut all = Vec::new();
        for (i, layer) in self.model.layers.iter().enumerate() {
            let (attn, mlp) = (&layer.self_attn, &layer.mlp);
            let p = format!("model.layers.{i}");
            all.push((format!("{p}.self_attn.q_proj"), &attn.q_proj));
            all.push((format!("{p}.self_attn.k_proj"), &attn.k_proj));
            all.push((format!("{p}.self_attn.v_proj"), &attn.v_proj));
            all.push((format!("{p}.self_attn.o_proj"), &attn.o_proj));
            all.push((format!("{p}.mlp.gate_proj"), &mlp.gate_proj));
            all.push((format!("{p}.mlp.up_proj"), &mlp.up_proj));
            all.push((format!("{p}.mlp.down_proj"), &mlp.down_proj));
        }
        if let Some(head) = self.lm_head.as_ref() {
            all.push(("lm_head".to_string(), head));
        }
        all
    }

    /// Whether any projection carries a LoRA adapter.
    pub fn has_lora(&self) -> bool {
        self.projections().iter().any(|(_, p)| p.lora.is_some())
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
        self.forward_masked(ids, None)
    }

    /// Logits with an attention mask (`padding[b][t]` is 1 for a token, 0 for padding).
    ///
    /// Positions are `0..seq` in every row, as transformers' forward uses them: pad on the right.
    ///
    /// # Shapes
    /// - ids: `[batch, seq]`; returns `[batch, seq, vocab]`.
    pub fn forward_masked(
        &self,
        ids: Tensor<B, 2, Int>,
        padding: Option<&[Vec<u32>]>,
    ) -> Tensor<B, 3> {
        let hidden = self.hidden_states(ids, padding, None);
        self.head(hidden)
    }

    /// Logits of the new tokens `ids` after the positions held in `cache`, extending it.
    ///
    /// # Shapes
    /// - ids: `[batch, new]`; returns `[batch, new, vocab]`.
    pub fn forward_cached(&self, ids: Tensor<B, 2, Int>, cache: &mut KvCache<B>) -> Tensor<B, 3> {
        let hidden = self.hidden_states(ids, None, Some(cache));
        self.head(hidden)
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
        let device = ids.device();
        let c = &self.config;
        let context = AttentionContext {
            rope_q: self
                .rope
                .tables([batch, c.num_attention_heads, start, seq], &device),
            rope_k: self
                .rope
                .tables([batch, c.num_key_value_heads, start, seq], &device),
            mask: attention_mask(
                batch,
                c.num_attention_heads,
                start,
                seq,
                c.sliding_window,
                padding,
                &device,
            ),
        };
        let mut x = self.model.embed_tokens.forward(ids);
        for (index, layer) in self.model.layers.iter().enumerate() {
            let layer_cache = cache.as_deref_mut().map(|c| (c, index));
            x = layer.forward(x, &context, layer_cache);
        }
        self.model.norm.forward(x)
    }

    /// `[batch, seq, hidden] -> [batch, seq, vocab]`
    fn head(&self, hidden: Tensor<B, 3>) -> Tensor<B, 3> {
        match &self.lm_head {
            Some(head) => head.forward(hidden),
            None => {
                let [batch, seq, width] = hidden.dims();
                let embedding = self.model.embed_tokens.weight.val();
                let logits = hidden
                    .reshape([batch * seq, width])
                    .matmul(embedding.transpose());
                logits.reshape([batch, seq, self.config.vocab_size])
            }
        }
    }

    /// The causal LM loss: mean cross-entropy of the logits at `t` against `labels[t + 1]`,
    /// over the labels that are not [`IGNORE_INDEX`].
    ///
    /// # Shapes
    /// - logits: `[batch, seq, vocab]`, labels: `[batch, seq]`; returns `[1]`.
    pub fn causal_lm_loss(logits: Tensor<B, 3>, labels: Tensor<B, 2, Int>) -> Tensor<B, 1> {
        let [batch, seq, vocab] = logits.dims();
        let logits = logits
            .narrow(1, 0, seq - 1)
            .reshape([batch * (seq - 1), vocab]);
        let targets = labels.narrow(1, 1, seq - 1).reshape([batch * (seq - 1), 1]);
        let keep = targets.clone().not_equal_elem(IGNORE_INDEX);
        let safe_targets = targets.mask_fill(keep.clone().bool_not(), 0);
        let picked = log_softmax(logits, 1).gather(1, safe_targets);
        let keep = keep.float();
        let count = keep.clone().sum();
        -(picked * keep).sum() / count
    }
}

/// Token ids as an `[batch, seq]` tensor.
pub fn ids_tensor<B: Backend>(rows: &[Vec<u32>], device: &B::Device) -> Tensor<B, 2, Int> {
    let seq = rows.first().map_or(0, Vec::len);
    let flat: Vec<i64> = rows.iter().flatten().map(|&id| id as i64).collect();
    Tensor::from_data(TensorData::new(flat, [rows.len(), seq]), device)
}
