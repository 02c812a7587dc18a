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
    let hidden_size = fields.size("hidden_size", MAX_WIDTH)?;
    let num_attention_heads = fields.size("num_attention_heads", MAX_HEADS)?;
    if num_attention_heads == 0 || hidden_size == 0 {
        return Err("hidden_size and num_attention_heads must be positive".into());
    }
    let num_key_value_heads = fields
        .opt_size("num_key_value_heads", MAX_HEADS)?
        .unwrap_or(num_attention_heads);
    if num_key_value_heads == 0 || num_attention_heads % num_key_value_heads != 0 {
        return Err(format!(
            "num_attention_heads ({num_attention_heads}) must be a multiple of \
                 num_key_value_heads ({num_key_value_heads})"
        ));
    }
    let head_dim = fields
        .opt_size("head_dim", MAX_HEAD_DIM)?
        .unwrap_or(hidden_size / num_attention_heads);
    if head_dim == 0 || head_dim % 2 != 0 {
        return Err(format!("head_dim {head_dim} must be positive and even"));
    }
    let sliding_window = match model_type {
        ModelType::Mistral => fields.opt_size("sliding_window", MAX_POSITIONS)?,
        // transformers' Llama has no sliding window; a stray key must not change the maths.
        ModelType::Llama => None,
    };
    if sliding_window == Some(0) {
        return Err("sliding_window 0 would mask every position".into());
    }
    let vocab_size = fields.size("vocab_size", MAX_VOCAB)?;
    let max_position_embeddings = fields
        .opt_size("max_position_embeddings", MAX_POSITIONS)?
        .unwrap_or(2048);
    if vocab_size == 0 || max_position_embeddings == 0 {
        return Err("vocab_size and max_position_embeddings must be positive".into());
    }
    Ok(LlamaConfig {
        model_type,
        vocab_size,
        hidden_size,
        intermediate_size: fields.size("intermediate_size", MAX_WIDTH)?,
        num_hidden_layers: fields.size("num_hidden_layers", MAX_LAYERS)?,
        num_attention_heads,
        num_key_value_heads,
        head_dim,
        rms_norm_eps: fields
            .opt_number("rms_norm_eps", Bound::AtLeastZero)?
            .unwrap_or(1e-6),
        rope_theta: fields
            .opt_number("rope_theta", Bound::Positive)?
            .unwrap_or(10000.0),
        rope_scaling: rope_scaling(raw.get("rope_scaling"))?,
        sliding_window,
        tie_word_embeddings: fields.opt_bool("tie_word_embeddings")?.unwrap_or(false),
        max_position_embeddings,
        bos_token_id: fields.opt_token_id("bos_token_id")?,
        eos_token_ids: eos_token_ids(raw.get("eos_token_id"))?,
        raw: raw.clone(),
    })
}

/// Bounds on sizes, far above any released model's, so that a hostile or corrupt
/// `config.json` is refused before anything is allocated from it (the tensors present are
/// checked against the config before loading; these bounds keep that check itself cheap).
const MAX_VOCAB: usize = 1 << 24;
const MAX_WIDTH: usize = 1 << 20;
const MAX_HEADS: usize = 1 << 12;
const MAX_HEAD_DIM: usize = 1 << 14;
const MAX_LAYERS: usize = 1 << 12;
const MAX_POSITIONS: usize = 1 << 26;

/// What a float setting must be, besides finite.
#[derive(Clone, Copy)]
enum Bound {
    Positive,
    AtLeastZero,
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
        "llama3" => {
            let scaling = Llama3RopeScaling {
                factor: fields.number("factor", Bound::Positive)?,
                low_freq_factor: fields.number("low_freq_factor", Bound::Positive)?,
                high_freq_factor: fields.number("high_freq_factor", Bound::Positive)?,
                original_max_position_embeddings: fields
                    .size("original_max_position_embeddings", MAX_POSITIONS)?,
            };
            // transformers divides by their difference and by the original length.
            if scaling.high_freq_factor <= scaling.low_freq_factor {
                return Err(format!(
                    "rope_scaling: high_freq_factor ({}) must exceed low_freq_factor ({})",
                    scaling.high_freq_factor, scaling.low_freq_factor
                ));
            }
            if scaling.original_max_position_embeddings == 0 {
                return Err(
                    "rope_scaling: original_max_position_embeddings must be positive".into(),
                );
            }
            Ok(Some(scaling))
        }
        other => Err(format!(
            "rope_scaling type `{other}` is not supported (supported: llama3)"
        )),
    }
}

fn eos_token_ids(value: Option<&Value>) -> std::result::Result<Vec<u32>, String> {
    let as_id = |v: &Value| {
        v.as_u64()
            .and_then(|id| u32::try_from(id).ok())
            .ok_or_else(|| format!("eos_token_id: {v} is not a token id (0..=4294967295)"))
    };
    match value {
        None | Some(Value::Null) => Ok(Vec::new()),
        Some(Value::Array(ids)) => ids.iter().map(as_id).collect(),
        Some(v) => Ok(vec![as_id(v)?]),
    }
}

/// Typed access to the keys of a JSON object, with messages naming the key.
///
/// A `null` counts as absent for the optional keys where transformers treats `None` as "use
/// the default"; a number that is `null` is refused, since that is how Python and serde write
/// NaN, and a NaN read back as a default would hide it.
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

    /// A non-negative integer no larger than `max`.
    fn opt_size(&self, key: &str, max: usize) -> std::result::Result<Option<usize>, String> {
        let Some(v) = self.get(key) else {
            return Ok(None);
        };
        let n = v
            .as_u64()
            .ok_or(format!("`{key}` must be a non-negative integer, not {v}"))?;
        if n > max as u64 {
            return Err(format!(
                "`{key}` is {n}, beyond the largest supported ({max})"
            ));
        }
        Ok(Some(n as usize))
    }

    fn size(&self, key: &str, max: usize) -> std::result::Result<usize, String> {
        match self.0.get(key) {
            Some(Value::Null) => Err(format!("`{key}` is null")),
            _ => self.opt_size(key, max)?.ok_or_else(|| Self::missing(key)),
        }
    }

    /// A finite number within `bound`; `null` is refused (see the type's doc).
    fn opt_number(&self, key: &str, bound: Bound) -> std::result::Result<Option<f64>, String> {
        let Some(v) = self.0.get(key) else {
            return Ok(None);
        };
        let x = v
            .as_f64()
            .filter(|x| x.is_finite())
            .ok_or(format!("`{key}` must be a finite number, not {v}"))?;
        match bound {
            Bound::Positive if x <= 0.0 => Err(format!("`{key}` must be positive, not {x}")),
            Bound::AtLeastZero if x < 0.0 => Err(format!("`{key}` must not be negative ({x})")),
            _ => Ok(Some(x)),
        }
    }

    fn number(&self, key: &str, bound: Bound) -> std::result::Result<f64, String> {
        self.opt_number(key, bound)?
            .ok_or_else(|| Self::missing(key))
    }

    fn opt_token_id(&self, key: &str) -> std::result::Result<Option<u32>, String> {
        self.get(key)
            .map(|v| {
                v.as_u64()
                    .and_then(|id| u32::try_from(id).ok())
                    .ok_or(format!(
                        "`{key}` must be a token id (0..=4294967295), not {v}"
                    ))
            })
            .transpose()
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

    /// Class 1 and 8 of the hostile-input issue: sizes beyond any model, and numbers that
    /// would give NaN or nonsense, are refused with the key named.
    #[test]
    fn absurd_sizes_and_invalid_numbers_are_refused() {
        let cases = [
            (r#""vocab_size":1000000000000"#, "vocab_size"),
            (r#""num_hidden_layers":1000000"#, "num_hidden_layers"),
            (r#""hidden_size":1000000000"#, "hidden_size"),
            (r#""rope_theta":0"#, "rope_theta"),
            (r#""rope_theta":-1.5"#, "rope_theta"),
            (r#""rope_theta":null"#, "rope_theta"),
            (r#""rms_norm_eps":-1e-6"#, "rms_norm_eps"),
            (r#""rms_norm_eps":null"#, "rms_norm_eps"),
            (r#""bos_token_id":4294967296"#, "bos_token_id"),
            (r#""eos_token_id":[1,4294967296]"#, "eos_token_id"),
            (r#""max_position_embeddings":0"#, "max_position_embeddings"),
            (
                r#""rope_scaling":{"rope_type":"llama3","factor":0,"low_freq_factor":1,
                "high_freq_factor":4,"original_max_position_embeddings":8192}"#,
                "factor",
            ),
            (
                r#""rope_scaling":{"rope_type":"llama3","factor":8,"low_freq_factor":4,
                "high_freq_factor":4,"original_max_position_embeddings":8192}"#,
                "high_freq_factor",
            ),
        ];
        for (extra, key) in cases {
            // Replacing a key already in BASE: the later one wins in serde_json's map.
            let error = with(extra).expect_err(extra);
            assert!(error.contains(key), "{extra}: {error}");
        }
        let null_size = BASE.replace(r#""vocab_size":10"#, r#""vocab_size":null"#);
        assert!(parse_config(&null_size).unwrap_err().contains("vocab_size"));
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
