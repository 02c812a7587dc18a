//! Hugging Face `config.json` for a Llama model, from a GGUF file's `llama.*` metadata.

use serde_json::{Map, Value, json};

use super::dtype::OutDtype;
use crate::error::GgufError;
use crate::io::gguf::GgufFile;

type Result<T> = std::result::Result<T, GgufError>;

/// The GGUF architecture this importer understands.
const ARCH: &str = "llama";

/// Build `config.json` as transformers' `LlamaConfig` writes it (keys sorted, as
/// `save_pretrained` does), with `torch_dtype` naming `dtype`.
///
/// Errors: an architecture other than `llama`, mixture-of-experts models, missing or
/// inconsistent sizes, a RoPE scaling that Hugging Face's Llama cannot express here.
pub(super) fn hf_config(gguf: &GgufFile, dtype: OutDtype) -> Result<Value> {
    let arch = gguf.get_str("general.architecture")?;
    if arch != ARCH {
        return Err(GgufError::UnsupportedArchitecture {
            path: gguf.path().to_path_buf(),
            arch: arch.to_string(),
        });
    }
    if gguf.opt_u32("llama.expert_count")?.unwrap_or(0) > 0 {
        return Err(gguf.unsupported(
            "a mixture of experts (llama.expert_count > 0)",
            "only dense Llama models are imported",
        ));
    }
    let sizes = Sizes::read(gguf)?;
    let has_tensor = |suffix: &str| gguf.tensors().iter().any(|t| t.name.ends_with(suffix));
    let mut c = Map::new();
    c.insert("architectures".into(), json!(["LlamaForCausalLM"]));
    c.insert("attention_bias".into(), json!(has_tensor(".attn_q.bias")));
    c.insert("attention_dropout".into(), json!(0.0));
    c.insert(
        "bos_token_id".into(),
        json!(gguf.opt_u32("tokenizer.ggml.bos_token_id")?),
    );
    c.insert(
        "eos_token_id".into(),
        json!(gguf.opt_u32("tokenizer.ggml.eos_token_id")?),
    );
    c.insert("head_dim".into(), json!(sizes.head_dim));
    c.insert("hidden_act".into(), json!("silu"));
    c.insert("hidden_size".into(), json!(sizes.hidden));
    c.insert("initializer_range".into(), json!(0.02));
    c.insert(
        "intermediate_size".into(),
        json!(gguf.get_u32("llama.feed_forward_length")?),
    );
    c.insert(
        "max_position_embeddings".into(),
        json!(gguf.get_u32("llama.context_length")?),
    );
    c.insert("mlp_bias".into(), json!(has_tensor(".ffn_gate.bias")));
    c.insert("model_type".into(), json!("llama"));
    c.insert("num_attention_heads".into(), json!(sizes.heads));
    c.insert(
        "num_hidden_layers".into(),
        json!(gguf.get_u32("llama.block_count")?),
    );
    c.insert("num_key_value_heads".into(), json!(sizes.kv_heads));
    if let Some(pad) = gguf.opt_u32("tokenizer.ggml.padding_token_id")? {
        c.insert("pad_token_id".into(), json!(pad));
    }
    c.insert("pretraining_tp".into(), json!(1));
    let eps = gguf.get_f32("llama.attention.layer_norm_rms_epsilon")?;
    c.insert("rms_norm_eps".into(), json!(shortest_f64(eps)));
    c.insert("rope_scaling".into(), rope_scaling(gguf)?);
    let theta = gguf.opt_f32("llama.rope.freq_base")?.unwrap_or(10_000.0);
    c.insert("rope_theta".into(), json!(shortest_f64(theta)));
    c.insert(
        "tie_word_embeddings".into(),
        json!(gguf.tensor("output.weight").is_none()),
    );
    c.insert("torch_dtype".into(), json!(dtype.torch_name()));
    c.insert("use_cache".into(), json!(true));
    c.insert("vocab_size".into(), json!(vocab_size(gguf)?));
    Ok(Value::Object(c))
}

/// Attention sizes, checked against each other.
struct Sizes {
    hidden: u32,
    heads: u32,
    kv_heads: u32,
    head_dim: u32,
}

impl Sizes {
    fn read(gguf: &GgufFile) -> Result<Self> {
        let hidden = gguf.get_u32("llama.embedding_length")?;
        let heads = gguf.get_u32("llama.attention.head_count")?;
        // llama.cpp's default when the key is absent: no grouped-query attention.
        let kv_heads = gguf
            .opt_u32("llama.attention.head_count_kv")?
            .unwrap_or(heads);
        if heads == 0 || kv_heads == 0 || heads % kv_heads != 0 {
            return Err(gguf.invalid(
                "llama.attention.head_count_kv",
                format!("{kv_heads} KV heads do not divide {heads} heads"),
            ));
        }
        let head_dim = match gguf.opt_u32("llama.attention.key_length")? {
            Some(k) => k,
            None if hidden % heads == 0 => hidden / heads,
            None => {
                return Err(gguf.invalid(
                    "llama.attention.head_count",
                    format!("{heads} heads do not divide the hidden size {hidden}"),
                ));
            }
        };
        let value_length = gguf
            .opt_u32("llama.attention.value_length")?
            .unwrap_or(head_dim);
        if value_length != head_dim || head_dim == 0 {
            return Err(gguf.unsupported(
                "different key and value head sizes",
                "Hugging Face's Llama has one head_dim",
            ));
        }
        // Hugging Face's Llama rotates the whole head; llama.cpp can rotate only a part.
        let rotated = gguf
            .opt_u32("llama.rope.dimension_count")?
            .unwrap_or(head_dim);
        if rotated != head_dim {
            return Err(gguf.unsupported(
                &format!("partial rotary embeddings ({rotated} of {head_dim} dims)"),
                "Hugging Face's Llama rotates whole heads",
            ));
        }
        Ok(Sizes {
            hidden,
            heads,
            kv_heads,
            head_dim,
        })
    }
}

/// Rows of the embedding matrix when present (what the model needs), else `llama.vocab_size`,
/// else the length of the token list.
fn vocab_size(gguf: &GgufFile) -> Result<usize> {
    if let Some(embd) = gguf.tensor("token_embd.weight") {
        return Ok(embd.shape.first().copied().unwrap_or(0));
    }
    if let Some(n) = gguf.opt_u32("llama.vocab_size")? {
        return Ok(n as usize);
    }
    match gguf.opt_str_array("tokenizer.ggml.tokens")? {
        Some(tokens) => Ok(tokens.len()),
        None => Err(GgufError::MissingMetadata {
            path: gguf.path().to_path_buf(),
            key: "llama.vocab_size".into(),
        }),
    }
}

/// `null`, or `{"factor", "rope_type": "linear"}`; other scaling types are errors.
fn rope_scaling(gguf: &GgufFile) -> Result<Value> {
    let key = "llama.rope.scaling.type";
    let factor = match gguf.opt_str(key)? {
        None | Some("none") => {
            // Older files give linear scaling as a bare factor.
            match gguf.opt_f32("llama.rope.scale_linear")? {
                Some(f) if f != 1.0 => f,
                _ => return Ok(Value::Null),
            }
        }
        Some("linear") => gguf.get_f32("llama.rope.scaling.factor")?,
        Some(other) => {
            return Err(gguf.unsupported(
                &format!("RoPE scaling `{other}`"),
                "supported: none, linear",
            ));
        }
    };
    Ok(json!({"factor": shortest_f64(factor), "rope_type": "linear"}))
}

/// The `f64` with the shortest decimal form that reads back as `x` in `f32`, so that an `f32`
/// epsilon of `1e-5` is written `1e-5`, as in Hugging Face files, not `9.999999747378752e-6`.
pub(crate) fn shortest_f64(x: f32) -> f64 {
    x.to_string().parse().unwrap_or(f64::from(x))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn shortest_decimal_of_f32() {
        assert_eq!(shortest_f64(1e-5), 1e-5);
        assert_eq!(shortest_f64(100000.0), 100000.0);
        assert_eq!(shortest_f64(0.1) as f32, 0.1f32);
        assert_eq!(
            serde_json::to_string(&json!(shortest_f64(1e-5))).unwrap(),
            "0.00001"
        );
    }
}
