//! `import_gguf`: a llama-architecture GGUF file -> a Hugging Face model folder.

use std::fs;
use std::path::{Path, PathBuf};

use serde_json::Value;

use super::config::hf_config;
use super::dtype::OutDtype;
use super::permute::unpermute_rows;
use super::tokenizer::{hf_generation_config, hf_tokenizer, hf_tokenizer_config};
use crate::error::GgufError;
use crate::io::gguf::{GgufFile, TensorInfo};
use crate::io::{self, FileSet, StoredTensor};
use crate::model::LlamaConfig;
use crate::model::checkpoint_shapes::{ShapeMismatches, shape_mismatches};

type Result<T> = std::result::Result<T, GgufError>;

/// What [`import_gguf`] wrote.
#[derive(Debug, Clone, PartialEq)]
pub struct ImportSummary {
    /// The output folder.
    pub out_dir: PathBuf,
    /// The files written in it, in writing order.
    pub files: Vec<PathBuf>,
    /// Hugging Face names of the tensors written, sorted.
    pub tensors: Vec<String>,
    /// Number of values written (parameters).
    pub n_params: u64,
    /// GGUF tensors that have no Hugging Face counterpart and were not written
    /// (`rope_freqs.weight`).
    pub skipped: Vec<String>,
    /// Things the user should know (what a skipped tensor meant for the model).
    pub warnings: Vec<String>,
}

/// Hugging Face name of a GGUF tensor of a Llama model (ARCHITECTURE.md, "GGUF names"), or `None` for a
/// tensor Hugging Face's Llama has no place for.
pub(super) fn hf_tensor_name(gguf_name: &str) -> Option<String> {
    let (base, suffix) = gguf_name.rsplit_once('.')?;
    if suffix != "weight" && suffix != "bias" {
        return None;
    }
    let hf_base = match base {
        "token_embd" => "model.embed_tokens".to_string(),
        "output_norm" => "model.norm".to_string(),
        "output" => "lm_head".to_string(),
        _ => {
            let (layer, part) = base.strip_prefix("blk.")?.split_once('.')?;
            let layer: usize = layer.parse().ok()?;
            let module = match part {
                "attn_norm" => "input_layernorm",
                "ffn_norm" => "post_attention_layernorm",
                "attn_q" => "self_attn.q_proj",
                "attn_k" => "self_attn.k_proj",
                "attn_v" => "self_attn.v_proj",
                "attn_output" => "self_attn.o_proj",
                "ffn_gate" => "mlp.gate_proj",
                "ffn_up" => "mlp.up_proj",
                "ffn_down" => "mlp.down_proj",
                _ => return None,
            };
            format!("model.layers.{layer}.{module}")
        }
    };
    Some(format!("{hf_base}.{suffix}"))
}

/// Convert the llama-architecture GGUF `file` into a Hugging Face folder `out_dir` (created if
/// missing): `config.json`, `model.safetensors` (values in `dtype`), `tokenizer.json`,
/// `tokenizer_config.json`, `generation_config.json`.
///
/// Tensors are dequantized to `f32`, q/k rows un-permuted, then converted to `dtype`.
/// `progress(done, total)` is called after each GGUF tensor. Every file is written to a
/// temporary file in `out_dir` and renamed, so a failed import leaves no half-written file.
/// The configs and tokenizer are built first, so an unsupported model fails before any work.
///
/// Memory: the converted tensors are held until written (the model size in `dtype`), plus
/// two `f32` copies of the tensor being converted.
pub fn import_gguf(
    file: &Path,
    out_dir: &Path,
    dtype: OutDtype,
    progress: impl Fn(usize, usize),
) -> Result<ImportSummary> {
    let gguf = GgufFile::open(file)?;
    let config = hf_config(&gguf, dtype)?;
    let llama = checked_model(&gguf, &config)?;
    refuse_shadowing_files(out_dir)?;
    let json_files = [
        ("config.json", config.clone()),
        ("tokenizer.json", hf_tokenizer(&gguf)?),
        ("tokenizer_config.json", hf_tokenizer_config(&gguf)?),
        ("generation_config.json", hf_generation_config(&gguf)?),
    ];
    let heads = (llama.num_attention_heads, llama.num_key_value_heads);
    let mut summary = ImportSummary {
        out_dir: out_dir.to_path_buf(),
        files: Vec::new(),
        tensors: Vec::new(),
        n_params: 0,
        skipped: Vec::new(),
        warnings: Vec::new(),
    };
    let mut tensors: Vec<(String, StoredTensor)> = Vec::new();
    let total = gguf.tensors().len();
    for (done, info) in gguf.tensors().iter().enumerate() {
        match hf_tensor_name(&info.name) {
            Some(name) => {
                let tensor = convert_tensor(&gguf, info, heads, dtype)?;
                summary.n_params += info.n_elements() as u64;
                tensors.push((name, tensor));
            }
            None => summary.skipped.push(info.name.clone()),
        }
        progress(done + 1, total);
    }
    if summary.skipped.iter().any(|n| n.starts_with("rope_freqs")) {
        summary.warnings.push(
            "rope_freqs: the GGUF scales RoPE frequencies per dimension (Llama 3.1 style); \
             config.json does not describe this, so long-context behaviour will differ"
                .into(),
        );
    }
    tensors.sort_by(|a, b| a.0.cmp(&b.0));
    summary.tensors = tensors.iter().map(|(n, _)| n.clone()).collect();

    // One set: an interrupted or failed import leaves the folder's previous files whole.
    let mut set = FileSet::new(out_dir);
    set.add("model.safetensors", |path| {
        io::write_safetensors_to(path, &tensors)
    });
    for (name, value) in &json_files {
        let text = io::json_text(value).map_err(|e| GgufError::io(out_dir.join(name), e))?;
        set.add_bytes(name, text);
    }
    summary.files = set.write().map_err(|(path, e)| GgufError::io(path, e))?;
    Ok(summary)
}

/// Files in `out_dir` that loaders would read instead of, or beside, the imported
/// `model.safetensors` (a sharded index, other `.safetensors` files) make the import refused:
/// removing a user's files is not ours to do, and keeping them would leave the old weights
/// winning.
fn refuse_shadowing_files(out_dir: &Path) -> Result<()> {
    let Ok(entries) = fs::read_dir(out_dir) else {
        return Ok(()); // a new folder
    };
    let mut shadowing: Vec<String> = entries
        .filter_map(|e| e.ok())
        .map(|e| e.file_name().to_string_lossy().into_owned())
        .filter(|name| {
            name == crate::io::INDEX_FILE
                || (name.ends_with(".safetensors") && name != "model.safetensors")
        })
        .collect();
    if shadowing.is_empty() {
        return Ok(());
    }
    shadowing.sort();
    Err(GgufError::ShadowingFiles {
        path: out_dir.to_path_buf(),
        files: shadowing,
    })
}

/// The config the metadata gives, parsed: it must be valid and fit the tensors the file holds
/// (checked on the header alone, before a tensor is converted), since a `block_count` of
/// 4294967295 or a wrong vocabulary would otherwise give a folder that no loader can use.
fn checked_model(gguf: &GgufFile, config: &Value) -> Result<LlamaConfig> {
    let invalid = |reason: String, lists: ShapeMismatches| GgufError::InvalidModel {
        path: gguf.path().to_path_buf(),
        reason,
        missing: lists.missing,
        unexpected: lists.unexpected,
        misshaped: lists.misshaped,
    };
    let llama = LlamaConfig::from_json(&config.to_string())
        .map_err(|e| invalid(e.to_string(), Default::default()))?;
    let present: Vec<(String, &[usize])> = gguf
        .tensors()
        .iter()
        .filter_map(|t| Some((hf_tensor_name(&t.name)?, t.shape.as_slice())))
        // Biases are written for transformers (`attention_bias`, `mlp_bias`); the config
        // check is about the weights.
        .filter(|(name, _)| !name.ends_with(".bias"))
        .collect();
    let present = present.iter().map(|(name, shape)| (name.as_str(), *shape));
    let mismatches = shape_mismatches(&llama, present);
    if !mismatches.fits() {
        return Err(invalid(
            "its tensors do not fit its metadata".into(),
            mismatches,
        ));
    }
    Ok(llama)
}

/// One GGUF tensor dequantized, un-permuted if it is a q or k projection, and encoded.
fn convert_tensor(
    gguf: &GgufFile,
    info: &TensorInfo,
    (heads, kv_heads): (usize, usize),
    dtype: OutDtype,
) -> Result<StoredTensor> {
    let mut values = gguf.tensor_f32(info)?;
    let part = info.name.rsplit('.').nth(1).unwrap_or("");
    let permuted_heads = match part {
        "attn_q" => Some(heads),
        "attn_k" => Some(kv_heads),
        _ => None,
    };
    if let Some(heads) = permuted_heads {
        let rows = info.shape.first().copied().unwrap_or(1);
        let cols = info.shape.get(1).copied().unwrap_or(1);
        values = unpermute_rows(&values, rows, cols, heads).map_err(|reason| {
            GgufError::InvalidTensor {
                path: gguf.path().to_path_buf(),
                tensor: info.name.clone(),
                reason: format!("cannot un-permute q/k rows: {reason}"),
            }
        })?;
    }
    Ok(StoredTensor {
        dtype: dtype.safetensors_dtype(),
        shape: info.shape.clone(),
        data: dtype.encode(&values),
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names_follow_the_design() {
        let cases = [
            ("token_embd.weight", Some("model.embed_tokens.weight")),
            ("output_norm.weight", Some("model.norm.weight")),
            ("output.weight", Some("lm_head.weight")),
            (
                "blk.3.attn_q.weight",
                Some("model.layers.3.self_attn.q_proj.weight"),
            ),
            (
                "blk.3.attn_q.bias",
                Some("model.layers.3.self_attn.q_proj.bias"),
            ),
            (
                "blk.0.ffn_norm.weight",
                Some("model.layers.0.post_attention_layernorm.weight"),
            ),
            (
                "blk.12.ffn_down.weight",
                Some("model.layers.12.mlp.down_proj.weight"),
            ),
            ("rope_freqs.weight", None),
            ("blk.x.attn_q.weight", None),
            ("blk.0.attn_q.scale", None),
            ("blk.0.ffn_gate_exps.weight", None),
        ];
        for (gguf, hf) in cases {
            assert_eq!(hf_tensor_name(gguf).as_deref(), hf, "{gguf}");
        }
    }
}
