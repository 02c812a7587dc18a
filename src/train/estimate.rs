//! What a training run will hold at its peak, estimated from the model's config before anything
//! is loaded: so that a run that cannot fit is refused with the numbers instead of thrashing.

use super::gradients::MemoryOptions;
use super::loss::chunk_positions;
use super::method::{Method, SpectrumSource};
use crate::error::{Error, Result};
use crate::model::LlamaConfig;
use crate::peft::{LoraConfig, TargetModules};

/// Bytes per NF4 value as [`Nf4Weight`](crate::nn::Nf4Weight) stores them: 4 bits of code, one
/// absmax byte per 64-value block, one f32 scale per 256 blocks.
const NF4_BYTES_PER_VALUE: f64 = 0.5 + 1.0 / 64.0 + 4.0 / (64.0 * 256.0);

/// The factor on the estimated peak that a run should find available: room for the
/// allocator's slack and for the buffers an optimizer step makes and drops.
pub const HEADROOM: f64 = 1.2;

/// An estimate of a run's memory, in bytes, by what holds it.
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct MemoryEstimate {
    /// The model's weights (NF4 ones packed) and adapters.
    pub weight_bytes: f64,
    /// One f32 gradient per trainable value.
    pub grad_bytes: f64,
    /// AdamW's two f32 moments per trainable value.
    pub optimizer_bytes: f64,
    /// What the autodiff graph of one micro-batch keeps between forward and backward, and
    /// the loss's logits.
    pub activation_bytes: f64,
    /// The most loading holds at once beyond the final weights (the tensor being read; for
    /// NF4 its f32 values while they are quantized).
    pub loading_bytes: f64,
}

impl MemoryEstimate {
    /// The estimate for training `method` on the model `config` describes, with micro-batches
    /// of `batch` rows of `seq` tokens.
    pub fn of(
        config: &LlamaConfig,
        method: &Method,
        batch: usize,
        seq: usize,
        memory: &MemoryOptions,
    ) -> Self {
        let shapes = Shapes::of(config);
        let (weights, trainable) = weights_and_trainable(&shapes, method);
        MemoryEstimate {
            weight_bytes: weights,
            grad_bytes: 4.0 * trainable,
            optimizer_bytes: 8.0 * trainable,
            activation_bytes: activations(config, batch, seq, memory),
            loading_bytes: 4.0 * shapes.largest as f64,
        }
    }

    /// The peak: weights, gradients, optimizer state and activations together, or loading,
    /// whichever is more.
    pub fn peak_bytes(&self) -> f64 {
        let training =
            self.weight_bytes + self.grad_bytes + self.optimizer_bytes + self.activation_bytes;
        training.max(self.weight_bytes + self.loading_bytes)
    }

    /// The peak with [`HEADROOM`] for the allocator and the step's transient buffers: what a
    /// run should have available.
    pub fn needed_bytes(&self) -> f64 {
        HEADROOM * self.peak_bytes()
    }

    /// [`Error::OutOfMemory`] when [`MemoryEstimate::needed_bytes`] is above
    /// `available_bytes`.
    pub fn check(&self, available_bytes: f64) -> Result<()> {
        let mib = |b: f64| (b / (1024.0 * 1024.0)).ceil() as u64;
        if self.needed_bytes() > available_bytes {
            return Err(Error::OutOfMemory {
                needed_mib: mib(self.needed_bytes()),
                available_mib: mib(available_bytes),
            });
        }
        Ok(())
    }
}

/// The memory the system can still give, from `/proc/meminfo`'s `MemAvailable` (Linux); `None`
/// where that cannot be read.
pub fn available_memory_bytes() -> Option<f64> {
    let text = std::fs::read_to_string("/proc/meminfo").ok()?;
    let kib: f64 = text
        .lines()
        .find_map(|l| l.strip_prefix("MemAvailable:"))?
        .trim()
        .trim_end_matches("kB")
        .trim()
        .parse()
        .ok()?;
    Some(kib * 1024.0)
}

/// Sizes of the model's tensors, in values.
struct Shapes {
    /// `(path, in, out)` of every linear projection (`lm_head` last, when not tied).
    projections: Vec<(String, usize, usize)>,
    /// Embedding, norms and a tied head: everything but the projections.
    others: usize,
    /// The embedding (and `lm_head`, which Spectrum always trains with it).
    embedding_and_head: usize,
    /// The largest single tensor.
    largest: usize,
}

impl Shapes {
    fn of(c: &LlamaConfig) -> Self {
        let (d, kv) = (c.hidden_size, c.num_key_value_heads * c.head_dim);
        let q = c.num_attention_heads * c.head_dim;
        let mut projections = Vec::new();
        for layer in 0..c.num_hidden_layers {
            let named = [
                ("self_attn.q_proj", d, q),
                ("self_attn.k_proj", d, kv),
                ("self_attn.v_proj", d, kv),
                ("self_attn.o_proj", q, d),
                ("mlp.gate_proj", d, c.intermediate_size),
                ("mlp.up_proj", d, c.intermediate_size),
                ("mlp.down_proj", c.intermediate_size, d),
            ];
            for (name, i, o) in named {
                projections.push((format!("model.layers.{layer}.{name}"), i, o));
            }
        }
        let embedding = c.vocab_size * d;
        if !c.tie_word_embeddings {
            projections.push(("lm_head".to_string(), d, c.vocab_size));
        }
        let head = if c.tie_word_embeddings { 0 } else { embedding };
        let largest = projections
            .iter()
            .map(|(_, i, o)| i * o)
            .chain([embedding])
            .max()
            .unwrap_or(0);
        Shapes {
            projections,
            others: embedding + (2 * c.num_hidden_layers + 1) * d,
            embedding_and_head: embedding + head,
            largest,
        }
    }

    fn projection_values(&self) -> usize {
        self.projections.iter().map(|(_, i, o)| i * o).sum()
    }
}

/// `(weight bytes, trainable values)` of `method`.
fn weights_and_trainable(shapes: &Shapes, method: &Method) -> (f64, f64) {
    let dense = 4.0 * (shapes.projection_values() + shapes.others) as f64;
    let all = (shapes.projection_values() + shapes.others) as f64;
    match method {
        Method::Full => (dense, all),
        Method::Spectrum(source) => {
            let layers = spectrum_share(source) * layer_values(shapes) as f64;
            (dense, layers + shapes.embedding_and_head as f64)
        }
        Method::Lora(lora) => {
            let adapters = adapter_values(shapes, lora, &lora.target_modules, 1.0);
            (dense + 4.0 * adapters, adapters)
        }
        Method::QLora(lora) => {
            let adapters = adapter_values(shapes, lora, &lora.target_modules, 1.0);
            (nf4(shapes, &lora.target_modules) + 4.0 * adapters, adapters)
        }
        Method::SpectrumQLora(source, lora) => {
            let share = spectrum_share(source);
            let adapters = adapter_values(shapes, lora, &TargetModules::AllLinear, share);
            let weights = nf4(shapes, &TargetModules::AllLinear) + 4.0 * adapters;
            (weights, adapters)
        }
    }
}

/// The share of each module type Spectrum trains: `k`%, or all for a YAML list (an upper
/// bound: the list is not read before loading).
fn spectrum_share(source: &SpectrumSource) -> f64 {
    match source {
        SpectrumSource::TopPercent(k) => f64::from(*k).min(100.0) / 100.0,
        SpectrumSource::Yaml(_) => 1.0,
    }
}

/// Values of the decoder layers' projections.
fn layer_values(shapes: &Shapes) -> usize {
    shapes
        .projections
        .iter()
        .filter(|(path, _, _)| path != "lm_head")
        .map(|(_, i, o)| i * o)
        .sum()
}

/// Values of the adapters on `share` of the projections `targets` selects.
fn adapter_values(shapes: &Shapes, lora: &LoraConfig, targets: &TargetModules, share: f64) -> f64 {
    let values: usize = shapes
        .projections
        .iter()
        .filter(|(path, _, _)| targets.matches(path))
        .map(|(_, i, o)| lora.r * (i + o))
        .sum();
    share * values as f64
}

/// Weight bytes with the projections `targets` selects in NF4, the rest in f32.
fn nf4(shapes: &Shapes, targets: &TargetModules) -> f64 {
    let mut bytes = 4.0 * shapes.others as f64;
    for (path, i, o) in &shapes.projections {
        let values = (i * o) as f64;
        bytes += if targets.matches(path) {
            NF4_BYTES_PER_VALUE * values
        } else {
            4.0 * values
        };
    }
    bytes
}

/// What the graph of one micro-batch keeps, in bytes (f32), from the tensors the forward pass
/// of [`DecoderLayer`](crate::model::DecoderLayer) saves for its backward pass.
fn activations(c: &LlamaConfig, batch: usize, seq: usize, memory: &MemoryOptions) -> f64 {
    let tokens = (batch * seq) as f64;
    let (d, i) = (c.hidden_size as f64, c.intermediate_size as f64);
    let q = (c.num_attention_heads * c.head_dim) as f64;
    let heads = c.num_attention_heads as f64;
    // Norms and residuals (~8 d), queries/keys/values with their rotations and the repeated
    // key/value heads (~8 q), the MLP's gate, up, activation and product (~5 i), and the
    // attention's scores, masked scores and probabilities (3 per head and key).
    let per_layer =
        tokens * (8.0 * d + 8.0 * q + 5.0 * i) + 3.0 * heads * batch as f64 * (seq * seq) as f64;
    let layers = c.num_hidden_layers as f64;
    let kept = if memory.gradient_checkpointing {
        layers * tokens * d + per_layer
    } else {
        layers * per_layer
    };
    let chunk = chunk_positions(memory.loss_chunk, c.vocab_size) as f64;
    // A chunk's logits, their log-softmax and its gradient.
    let loss = 3.0 * chunk.min(tokens) * c.vocab_size as f64;
    4.0 * (kept + loss)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn smollm2() -> LlamaConfig {
        LlamaConfig::from_json(
            r#"{"model_type": "llama", "vocab_size": 49152, "hidden_size": 576,
            "intermediate_size": 1536, "num_hidden_layers": 30, "num_attention_heads": 9,
            "num_key_value_heads": 3, "rms_norm_eps": 1e-5, "tie_word_embeddings": true,
            "max_position_embeddings": 8192}"#,
        )
        .unwrap()
    }

    #[test]
    fn full_fine_tuning_counts_every_value_four_times() {
        // SmolLM2-135M: 134,515,008 values; weights, gradients and AdamW's two moments.
        let e = MemoryEstimate::of(&smollm2(), &Method::Full, 1, 16, &MemoryOptions::default());
        assert_eq!(e.weight_bytes, 4.0 * 134_515_008.0);
        assert_eq!(e.grad_bytes, e.weight_bytes);
        assert_eq!(e.optimizer_bytes, 2.0 * e.weight_bytes);
    }

    #[test]
    fn qlora_weights_are_nf4_and_only_adapters_train() {
        let lora = LoraConfig {
            r: 8,
            ..Default::default()
        };
        let config = smollm2();
        let e = MemoryEstimate::of(
            &config,
            &Method::QLora(lora),
            1,
            16,
            &MemoryOptions::default(),
        );
        // Per layer, r * (in + out) summed over the seven projections.
        let per_layer = 8 * ((576 + 576) * 2 + (576 + 192) * 2 + (576 + 1536) * 3);
        assert_eq!(e.grad_bytes, 4.0 * (30 * per_layer) as f64);
        let full = MemoryEstimate::of(&config, &Method::Full, 1, 16, &MemoryOptions::default());
        assert!(e.weight_bytes < 0.6 * full.weight_bytes);
    }

    #[test]
    fn gradient_checkpointing_keeps_less_at_long_sequences() {
        let config = smollm2();
        let plain = MemoryEstimate::of(&config, &Method::Full, 1, 2048, &MemoryOptions::default());
        let options = MemoryOptions {
            gradient_checkpointing: true,
            ..Default::default()
        };
        let checkpointed = MemoryEstimate::of(&config, &Method::Full, 1, 2048, &options);
        assert!(checkpointed.activation_bytes < 0.1 * plain.activation_bytes);
    }

    #[test]
    fn a_run_above_the_available_memory_is_refused_with_both_numbers() {
        let e = MemoryEstimate::of(&smollm2(), &Method::Full, 1, 16, &MemoryOptions::default());
        assert!(e.check(1.2 * e.peak_bytes() + 1.0).is_ok());
        assert!(e.check(e.peak_bytes() + 1.0).is_err());
        match e.check(100.0 * 1024.0 * 1024.0) {
            Err(Error::OutOfMemory {
                needed_mib,
                available_mib,
            }) => {
                assert_eq!(available_mib, 100);
                assert!(needed_mib as f64 >= 1.2 * e.peak_bytes() / (1024.0 * 1024.0));
            }
            other => panic!("{other:?}"),
        }
    }
}
