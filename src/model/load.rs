//! `from_pretrained`: a Hugging Face folder (config + safetensors) into a Burn model.

use std::collections::{BTreeSet, HashMap};
use std::path::{Path, PathBuf};

use burn::module::Param;
use burn::nn::Embedding;
use burn::tensor::{Tensor, TensorData, backend::Backend};

use super::attention::Attention;
use super::config::LlamaConfig;
use super::decoder::DecoderLayer;
use super::linear::transpose;
use super::llama::{LlamaForCausalLM, LlamaModel};
use super::mlp::Mlp;
use super::projection::Projection;
use super::rms_norm::RmsNorm;
use crate::error::{Error, Result};
use crate::spectrum::checkpoint::{Checkpoint, INDEX_FILE, TensorEntry};

/// Checkpoint tensors that transformers itself ignores when loading.
fn is_ignored(name: &str) -> bool {
    name.ends_with("rotary_emb.inv_freq")
}

impl<B: Backend> LlamaForCausalLM<B> {
    /// Loads `config.json` and the safetensors weights (one file or sharded, f32/f16/bf16) of
    /// a Hugging Face model folder into the backend's float type.
    ///
    /// Every tensor the config calls for must be there with its shape; a missing, unexpected
    /// or mis-shaped tensor is an error that names it. Weights come from
    /// `model.safetensors.index.json` when present, else from `model.safetensors`.
    pub fn from_pretrained(dir: &Path, device: &B::Device) -> Result<Self> {
        let config = LlamaConfig::from_file(dir)?;
        // Like transformers, read the index when there is one, else `model.safetensors` only:
        // other `.safetensors` files in the folder are not the model's.
        let weights = if dir.join(INDEX_FILE).exists() {
            dir.to_path_buf()
        } else {
            dir.join("model.safetensors")
        };
        let checkpoint = Checkpoint::open(&weights)?;
        read_model(&config, Source::new(dir, &checkpoint), device)
    }
}

fn read_model<B: Backend>(
    config: &LlamaConfig,
    mut source: Source,
    device: &B::Device,
) -> Result<LlamaForCausalLM<B>> {
    let c = config;
    let (hidden, kv_width) = (c.hidden_size, c.num_key_value_heads * c.head_dim);
    let q_width = c.num_attention_heads * c.head_dim;
    let mut layers = Vec::with_capacity(c.num_hidden_layers);
    for i in 0..c.num_hidden_layers {
        let p = format!("model.layers.{i}");
        let attention = Attention::from_projections(
            [
                source.linear(
                    &format!("{p}.self_attn.q_proj.weight"),
                    q_width,
                    hidden,
                    device,
                ),
                source.linear(
                    &format!("{p}.self_attn.k_proj.weight"),
                    kv_width,
                    hidden,
                    device,
                ),
                source.linear(
                    &format!("{p}.self_attn.v_proj.weight"),
                    kv_width,
                    hidden,
                    device,
                ),
                source.linear(
                    &format!("{p}.self_attn.o_proj.weight"),
                    hidden,
                    q_width,
                    device,
                ),
            ],
            c.num_attention_heads,
            c.num_key_value_heads,
            c.head_dim,
        );
        let mlp = Mlp {
            gate_proj: source.linear(
                &format!("{p}.mlp.gate_proj.weight"),
                c.intermediate_size,
                hidden,
                device,
            ),
            up_proj: source.linear(
                &format!("{p}.mlp.up_proj.weight"),
                c.intermediate_size,
                hidden,
                device,
            ),
            down_proj: source.linear(
                &format!("{p}.mlp.down_proj.weight"),
                hidden,
                c.intermediate_size,
                device,
            ),
        };
        layers.push(DecoderLayer {
            self_attn: attention,
            mlp,
            input_layernorm: source.norm(
                &format!("{p}.input_layernorm.weight"),
                hidden,
                c.rms_norm_eps,
                device,
            ),
            post_attention_layernorm: source.norm(
                &format!("{p}.post_attention_layernorm.weight"),
                hidden,
                c.rms_norm_eps,
                device,
            ),
        });
    }
    let embed_weight =
        source.tensor::<B, 2>("model.embed_tokens.weight", [c.vocab_size, hidden], device);
    let model = LlamaModel {
        embed_tokens: Embedding {
            weight: Param::from_tensor(embed_weight),
        },
        layers,
        norm: source.norm("model.norm.weight", hidden, c.rms_norm_eps, device),
    };
    let lm_head = if c.tie_word_embeddings {
        // transformers drops a stored head when the embedding is tied; so do we.
        source.skip("lm_head.weight");
        None
    } else {
        Some(source.linear("lm_head.weight", c.vocab_size, hidden, device))
    };
    source.finish()?;
    Ok(LlamaForCausalLM::from_parts(config.clone(), model, lm_head))
}

/// Hands out checkpoint tensors by name, collecting every problem instead of stopping at the
/// first, so that one error lists all missing, unexpected and mis-shaped tensors.
struct Source<'a> {
    dir: PathBuf,
    checkpoint: &'a Checkpoint,
    unused: HashMap<&'a str, &'a TensorEntry>,
    missing: BTreeSet<String>,
    misshaped: Vec<String>,
    unreadable: Option<Error>,
}

impl<'a> Source<'a> {
    fn new(dir: &Path, checkpoint: &'a Checkpoint) -> Self {
        Source {
            dir: dir.to_path_buf(),
            checkpoint,
            unused: checkpoint
                .tensors()
                .iter()
                .filter(|t| !is_ignored(&t.name))
                .map(|t| (t.name.as_str(), t))
                .collect(),
            missing: BTreeSet::new(),
            misshaped: Vec::new(),
            unreadable: None,
        }
    }

    /// The values of `name` as stored (row-major), or `None` after noting why not.
    fn values(&mut self, name: &str, shape: &[usize]) -> Option<Vec<f32>> {
        let Some(entry) = self.unused.remove(name) else {
            self.missing.insert(name.to_string());
            return None;
        };
        if entry.shape != shape {
            self.misshaped.push(format!(
                "{name}: expected {shape:?}, found {:?}",
                entry.shape
            ));
            return None;
        }
        match self.checkpoint.read_f32(entry) {
            Ok(values) => Some(values),
            Err(e) => {
                self.unreadable.get_or_insert(e);
                None
            }
        }
    }

    /// A tensor in the file's layout; zeros stand in for a problem already noted, since the
    /// model is discarded by [`Source::finish`] then.
    fn tensor<B: Backend, const D: usize>(
        &mut self,
        name: &str,
        shape: [usize; D],
        device: &B::Device,
    ) -> Tensor<B, D> {
        let values = self
            .values(name, &shape)
            .unwrap_or_else(|| vec![0.0; shape.iter().product()]);
        Tensor::from_data(TensorData::new(values, shape), device)
    }

    /// A Linear from its PyTorch weight `[out, in]`.
    fn linear<B: Backend>(
        &mut self,
        name: &str,
        out: usize,
        inp: usize,
        device: &B::Device,
    ) -> Projection<B> {
        let values = self
            .values(name, &[out, inp])
            .map(|v| transpose(&v, out, inp))
            .unwrap_or_else(|| vec![0.0; out * inp]);
        Projection::from_weight(Tensor::from_data(
            TensorData::new(values, [inp, out]),
            device,
        ))
    }

    fn norm<B: Backend>(
        &mut self,
        name: &str,
        hidden: usize,
        eps: f64,
        device: &B::Device,
    ) -> RmsNorm<B> {
        RmsNorm::from_weight(self.tensor(name, [hidden], device), eps)
    }

    fn skip(&mut self, name: &str) {
        self.unused.remove(name);
    }

    fn finish(self) -> Result<()> {
        if let Some(error) = self.unreadable {
            return Err(error);
        }
        let mut unexpected: Vec<String> = self.unused.keys().map(|s| s.to_string()).collect();
        unexpected.sort();
        if self.missing.is_empty() && unexpected.is_empty() && self.misshaped.is_empty() {
            return Ok(());
        }
        Err(Error::TensorMismatch {
            path: self.dir,
            missing: self.missing.into_iter().collect(),
            unexpected,
            misshaped: self.misshaped,
        })
    }
}
