//! Autoregressive generation with a key/value cache.

use std::path::Path;

use burn::tensor::{Tensor, TensorData, backend::Backend};
use rand::SeedableRng;
use rand::rngs::StdRng;

use super::cache::KvCache;
use super::config::LlamaConfig;
use super::llama::LlamaForCausalLM;
use super::sampling::sample;
use super::tokenizer::Tokenizer;
use crate::error::{Error, Result};
use crate::nn::f32_values;

/// How to continue a prompt.
#[derive(Clone, Debug)]
pub struct GenerationConfig {
    /// Most tokens to add after the prompt.
    pub max_new_tokens: usize,
    /// 0 for greedy decoding; otherwise the softmax temperature.
    pub temperature: f32,
    /// Nucleus sampling mass, in (0, 1]; ignored when greedy.
    pub top_p: f32,
    /// Seed of the sampler; the same seed gives the same tokens.
    pub seed: u64,
    /// Generation stops after any of these tokens (which is kept in the output).
    pub eos_token_ids: Vec<u32>,
}

impl Default for GenerationConfig {
    fn default() -> Self {
        GenerationConfig {
            max_new_tokens: 64,
            temperature: 0.0,
            top_p: 1.0,
            seed: 0,
            eos_token_ids: Vec::new(),
        }
    }
}

impl GenerationConfig {
    /// Rejects settings that cannot be sampled with: top-p outside (0, 1], a negative or
    /// non-finite temperature.
    pub fn validate(&self) -> Result<()> {
        if !(self.top_p > 0.0 && self.top_p <= 1.0) {
            return Err(Error::InvalidSetting {
                name: "top-p",
                value: self.top_p.to_string(),
                expected: "within (0, 1]",
            });
        }
        if !(self.temperature >= 0.0 && self.temperature.is_finite()) {
            return Err(Error::InvalidSetting {
                name: "temperature",
                value: self.temperature.to_string(),
                expected: "0 (greedy) or positive",
            });
        }
        Ok(())
    }
}

/// What [`generate`] produced.
#[derive(Clone, Debug)]
pub struct Generation {
    /// The prompt as given.
    pub prompt_ids: Vec<u32>,
    /// The new tokens, the stopping EOS included when one was produced.
    pub generated_ids: Vec<u32>,
    /// Logits at the last prompt position, `[vocab]`.
    pub last_prompt_logits: Vec<f32>,
}

/// Continues `prompt_ids` (one sequence), calling `on_token` with each new token as it comes.
pub fn generate<B: Backend>(
    model: &LlamaForCausalLM<B>,
    prompt_ids: &[u32],
    config: &GenerationConfig,
    device: &B::Device,
    mut on_token: impl FnMut(u32),
) -> Result<Generation> {
    config.validate()?;
    if prompt_ids.is_empty() {
        return Err(Error::EmptyPrompt);
    }
    let vocab = model.config().vocab_size;
    if let Some(&bad) = prompt_ids.iter().find(|&&id| id as usize >= vocab) {
        return Err(Error::TokenOutOfVocabulary { id: bad, vocab });
    }
    // Checked before the prompt's attention is sized from it.
    let limit = model.config().max_position_embeddings;
    let total = prompt_ids.len().saturating_add(config.max_new_tokens);
    if total > limit {
        return Err(Error::TooLong {
            prompt: prompt_ids.len(),
            max_new_tokens: config.max_new_tokens,
            limit,
        });
    }
    let mut rng = StdRng::seed_from_u64(config.seed);
    let mut cache = KvCache::new(model.config().num_hidden_layers);
    let mut logits = last_logits(model, prompt_ids, &mut cache, device);
    let last_prompt_logits = logits.clone();
    let mut generated_ids = Vec::new();
    while generated_ids.len() < config.max_new_tokens {
        let next = sample(&logits, config.temperature, config.top_p, &mut rng);
        generated_ids.push(next);
        on_token(next);
        if config.eos_token_ids.contains(&next) || generated_ids.len() == config.max_new_tokens {
            break;
        }
        logits = last_logits(model, &[next], &mut cache, device);
    }
    Ok(Generation {
        prompt_ids: prompt_ids.to_vec(),
        generated_ids,
        last_prompt_logits,
    })
}

/// Runs `ids` after the cached positions and returns the logits of the last one.
fn last_logits<B: Backend>(
    model: &LlamaForCausalLM<B>,
    ids: &[u32],
    cache: &mut KvCache<B>,
    device: &B::Device,
) -> Vec<f32> {
    // One row: never ragged.
    let row = Tensor::from_data(
        TensorData::new(ids.iter().map(|&id| id as i64).collect(), [1, ids.len()]),
        device,
    );
    let logits = model.forward_cached(row, cache);
    let [_, seq, vocab] = logits.dims();
    f32_values(logits.narrow(1, seq - 1, 1).reshape([vocab]))
}

/// The tokens that end generation for the model in `dir`: `eos_token_id` of `config.json`
/// and of `generation_config.json` (an id or a list), and the tokenizer's EOS token.
pub fn eos_token_ids(dir: &Path, config: &LlamaConfig, tokenizer: &Tokenizer) -> Result<Vec<u32>> {
    let mut ids = config.eos_token_ids.clone();
    let path = dir.join("generation_config.json");
    if path.exists() {
        let text = std::fs::read_to_string(&path).map_err(|e| Error::io(&path, e))?;
        let value: serde_json::Value =
            serde_json::from_str(&text).map_err(|e| Error::InvalidConfig {
                path: path.clone(),
                reason: e.to_string(),
            })?;
        match &value["eos_token_id"] {
            serde_json::Value::Array(list) => {
                ids.extend(list.iter().filter_map(|v| v.as_u64()).map(|v| v as u32))
            }
            v => ids.extend(v.as_u64().map(|v| v as u32)),
        }
    }
    ids.extend(tokenizer.eos_token().and_then(|t| tokenizer.token_id(t)));
    ids.sort_unstable();
    ids.dedup();
    Ok(ids)
}
