//! `LlamaConfig`: the subset of a Hugging Face `config.json` that Llama and Mistral need.

use std::path::Path;

use serde::{Deserialize, Serialize};
use serde_json::{Map, Value};

use crate::error::{Error, Result};
use crate::nn::Llama3RopeScaling;

/// The architecture a checkpoint declares in `model_type`.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum ModelType {
    /// `llama`
    Llama,
    /// `mistral` (sliding-window attention)
    Mistral,
}

/// Hyper-parameters of a Llama or Mistral causal LM, as `config.json` names them.
///
/// Read with [`LlamaConfig::from_file`], which rejects what we do not implement (another
/// `model_type`, an unknown `rope_scaling`) instead of ignoring it.
#[derive(Clone, Debug, PartialEq)]
pub struct LlamaConfig {
    /// `model_type`
    pub model_type: ModelType,
    /// Tokens in the vocabulary.
    pub vocab_size: usize,
    /// The model width.
    pub hidden_size: usize,
    /// The MLP's inner width.
    pub intermediate_size: usize,
    /// Decoder layers.
    pub num_hidden_layers: usize,
    /// Query heads.
    pub num_attention_heads: usize,
    /// Key/value heads (GQA); equal to the query heads unless given.
    pub num_key_value_heads: usize,
    /// Width of one attention head; `hidden_size / num_attention_heads` unless given.
    pub head_dim: usize,
    /// Epsilon of every RMSNorm.
    pub rms_norm_eps: f64,
    /// RoPE base.
    pub rope_theta: f64,
    /// Llama 3's RoPE scaling, when configured.
    pub rope_scaling: Option<Llama3RopeScaling>,
    /// Mistral: a query attends to at most this many positions, itself included.
    pub sliding_window: Option<usize>,
    /// The head shares the embedding (no `lm_head` tensor).
    pub tie_word_embeddings: bool,
    /// The longest sequence the model was trained for.
    pub max_position_embeddings: usize,
    /// Beginning-of-sequence token, if any.
    pub bos_token_id: Option<u32>,
    /// End-of-sequence tokens (`eos_token_id`, an id or a list).
    pub eos_token_ids: Vec<u32>,
    /// The whole `config.json` as read, so that saving keeps keys we do not interpret.
    pub raw: Map<String, Value>,
}

impl LlamaConfig {
    /// Reads `config.json` from a file or from the model folder that holds it.
    pub fn from_file(path: &Path) -> Result<Self> {
        let path = if path.is_dir() {
            path.join("config.json")
        } else {
            path.to_path_buf()
        };
        let text = std::fs::read_to_string(&path).map_err(|e| Error::io(&path, e))?;
        parse_config(&text).map_err(|reason| Error::InvalidConfig { path, reason })
    }

    /// Parses the text of a `config.json`; [`Error::Parse`] says what is wrong.
    pub fn from_json(text: &str) -> Result<Self> {
        parse_config(text).map_err(|reason| Error::Parse {
            format: "a Llama or Mistral config.json",
            reason,
        })
    }
}

/// The config in `text`, or the reason to show the user.
fn parse_config(text: &str) -> std::result::Result<LlamaConfig, String> {
    let raw: Map<String, Value> =
        serde_json::from_str(text).map_err(|e| format!("not a JSON object: {e}"))?;
    let fields = Fields(&raw);
    let model_type = match fields.str("model_type")? {
        "llama" => ModelType::Llama,
        "mistral" => ModelType::Mistral,
        other => {
            return Err(format!(
                "model_type `{other}` is not supported (supported: llama, mistral)"
            ));
        }
    };
    let hidden_size = fields.usize("hidden_size")?;
    let num_attention_heads = fields.usize("num_attention_heads")?;
    if num_attention_heads == 0 || hidden_size == 0 {
        return Err("hidden_size and num_attention_heads must be positive".into());
    }
    let num_key_value_heads = fields
        .opt_usize("num_key_value_heads")?
        .unwrap_or(num_attention_heads);
    if num_key_value_heads == 0 || num_attention_heads % num_key_value_heads != 0 {
        return Err(format!(
            "num_attention_heads ({num_attention_heads}) must be a multiple of \
                 num_key_value_heads ({num_key_value_heads})"
        ));
    }
    let head_dim = fields
        .opt_usize("head_dim")?
        .unwrap_or(hidden_size / num_attention_heads);
    if head_dim == 0 || head_dim % 2 != 0 {
        return Err(format!("head_dim {head_dim} must be positive and even"));
    }
    let sliding_window = match model_type {
        ModelType::Mistral => fields.opt_usize("sliding_window")?,
        // transformers' Llama has no sliding window; a stray key must not change the maths.
        ModelType::Llama => None,
    };
    if sliding_window == Some(0) {
        return Err("sliding_window 0 would mask every position".into());
    }
    Ok(LlamaConfig {
        model_type,
        vocab_size: fields.usize("vocab_size")?,
        hidden_size,
        intermediate_size: fields.usize("intermediate_size")?,
        num_hidden_layers: fields.usize("num_hidden_layers")?,
        num_attention_heads,
        num_key_value_heads,
        head_dim,
        rms_norm_eps: fields.opt_f64("rms_norm_eps")?.unwrap_or(1e-6),
        rope_theta: fields.opt_f64("rope_theta")?.unwrap_or(10000.0),
        rope_scaling: rope_scaling(raw.get("rope_scaling"))?,
        sliding_window,
        tie_word_embeddings: fields.opt_bool("tie_word_embeddings")?.unwrap_or(false),
        max_position_embeddings: fields.opt_usize("max_position_embeddings")?.unwrap_or(2048),
        bos_token_id: fields.opt_usize("bos_token_id")?.map(|id| id as u32),
        eos_token_ids: eos_token_ids(raw.get("eos_token_id"))?,
        raw: raw.clone(),
    })
}

impl LlamaConfig {
    /// The `config.json` to write: the keys read, with the fields above written back.
    pub fn to_json(&self) -> Value {
        let mut raw = self.raw.clone();
        let mut set = |key: &str, value: Value| {
            raw.insert(key.to_string(), value);
        };
        set("vocab_size", self.vocab_size.into());
        set("hidden_size", self.hidden_size.into());
        set("intermediate_size", self.intermediate_size.into());
        set("num_hidden_layers", self.num_hidden_layers.into());
        set("num_attention_heads", self.num_attention_heads.into());
        set("num_key_value_heads", self.num_key_value_heads.into());
        set("head_dim", self.head_dim.into());
        set("rms_norm_eps", self.rms_norm_eps.into());
        set("rope_theta", self.rope_theta.into());
        set("tie_word_embeddings", self.tie_word_embeddings.into());
        set(
            "max_position_embeddings",
            self.max_position_embeddings.into(),
        );
        Value::Object(raw)
    }

    /// How many query heads share one key/value head.
    pub fn kv_groups(&self) -> usize {
        self.num_attention_heads / self.num_key_value_heads
    }
}

fn rope_scaling(value: Option<&Value>) -> std::result::Result<Option<Llama3RopeScaling>, String> {
    let Some(value) = value.filter(|v| !v.is_null()) else {
        return Ok(None);
    };
    let map = value
        .as_object()
        .ok_or("rope_scaling must be an object or null")?;
    let fields = Fields(map);
    // transformers accepts both spellings; `rope_type` is the current one.
    let kind = fields
        .opt_str("rope_type")?
        .or(fields.opt_str("type")?)
        .unwrap_or("");
    match kind {
        "default" => Ok(None),
        "llama3" => Ok(Some(Llama3RopeScaling {
            factor: fields.f64("factor")?,
            low_freq_factor: fields.f64("low_freq_factor")?,
            high_freq_factor: fields.f64("high_freq_factor")?,
            original_max_position_embeddings: fields.usize("original_max_position_embeddings")?,
        })),
        other => Err(format!(
            "rope_scaling type `{other}` is not supported (supported: llama3)"
        )),
    }
}

fn eos_token_ids(value: Option<&Value>) -> std::result::Result<Vec<u32>, String> {
    let as_id = |v: &Value| {
        v.as_u64()
            .map(|id| id as u32)
            .ok_or_else(|| format!("eos_token_id: {v} is not a token id"))
    };
    match value {
        None | Some(Value::Null) => Ok(Vec::new()),
        Some(Value::Array(ids)) => ids.iter().map(as_id).collect(),
        Some(v) => Ok(vec![as_id(v)?]),
    }
}

/// Typed access to the keys of a JSON object, with messages naming the key.
struct Fields<'a>(&'a Map<String, Value>);

impl Fields<'_> {
    fn get(&self, key: &str) -> Option<&Value> {
        self.0.get(key).filter(|v| !v.is_null())
    }

    fn missing(key: &str) -> String {
        format!("`{key}` is missing")
    }

    fn opt_str(&self, key: &str) -> std::result::Result<Option<&str>, String> {
        self.get(key)
            .map(|v| v.as_str().ok_or(format!("`{key}` must be a string")))
            .transpose()
    }

    fn str(&self, key: &str) -> std::result::Result<&str, String> {
        self.opt_str(key)?.ok_or_else(|| Self::missing(key))
    }

    fn opt_usize(&self, key: &str) -> std::result::Result<Option<usize>, String> {
        self.get(key)
            .map(|v| {
                v.as_u64()
                    .map(|n| n as usize)
                    .ok_or(format!("`{key}` must be a non-negative integer"))
            })
            .transpose()
    }

    fn usize(&self, key: &str) -> std::result::Result<usize, String> {
        self.opt_usize(key)?.ok_or_else(|| Self::missing(key))
    }

    fn opt_f64(&self, key: &str) -> std::result::Result<Option<f64>, String> {
        self.get(key)
            .map(|v| v.as_f64().ok_or(format!("`{key}` must be a number")))
            .transpose()
    }

    fn f64(&self, key: &str) -> std::result::Result<f64, String> {
        self.opt_f64(key)?.ok_or_else(|| Self::missing(key))
    }

    fn opt_bool(&self, key: &str) -> std::result::Result<Option<bool>, String> {
        self.get(key)
            .map(|v| v.as_bool().ok_or(format!("`{key}` must be true or false")))
            .transpose()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const BASE: &str = r#"{"model_type":"llama","vocab_size":10,"hidden_size":8,
        "intermediate_size":16,"num_hidden_layers":1,"num_attention_heads":2}"#;

    fn with(extra: &str) -> std::result::Result<LlamaConfig, String> {
        parse_config(&BASE.replace('}', &format!(",{extra}}}")))
    }

    #[test]
    fn defaults_follow_transformers() {
        let config = parse_config(BASE).unwrap();
        assert_eq!(config.num_key_value_heads, 2);
        assert_eq!(config.head_dim, 4);
        assert_eq!(config.rope_theta, 10000.0);
        assert!(!config.tie_word_embeddings);
    }

    #[test]
    fn unsupported_things_are_errors() {
        let qwen = BASE.replace("llama", "qwen2");
        assert!(parse_config(&qwen).unwrap_err().contains("qwen2"));
        let yarn = with(r#""rope_scaling":{"rope_type":"yarn","factor":4.0}"#);
        assert!(yarn.unwrap_err().contains("yarn"));
        assert!(with(r#""num_key_value_heads":3"#).is_err());
        assert!(parse_config("[1]").is_err());
    }

    #[test]
    fn reads_llama3_scaling_and_eos_lists() {
        let config = with(
            r#""rope_scaling":{"rope_type":"llama3","factor":8.0,"low_freq_factor":1.0,
            "high_freq_factor":4.0,"original_max_position_embeddings":8192},
            "eos_token_id":[1,2]"#,
        )
        .unwrap();
        assert_eq!(config.rope_scaling.unwrap().factor, 8.0);
        assert_eq!(config.eos_token_ids, vec![1, 2]);
    }
}
