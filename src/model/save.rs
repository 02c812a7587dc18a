//! `save_pretrained`: a Burn model back into a Hugging Face folder.

use std::path::Path;

use burn::module::Module;
use burn::tensor::backend::Backend;

use super::hf_layout::is_linear_weight;
use super::llama::LlamaForCausalLM;
use crate::error::{Error, Result};
use crate::io::INDEX_FILE;
use crate::io::{FileSet, StoredTensor, json_text, write_safetensors_to};
use crate::nn::float_params_f32;
use crate::nn::transpose;

impl<B: Backend> LlamaForCausalLM<B> {
    /// Writes `config.json` and `model.safetensors` (f32, Hugging Face names and `[out, in]`
    /// Linear layout) into `dir`, creating it if needed.
    ///
    /// The files are staged and renamed in together, so an interrupted save leaves
    /// the previous files whole. A stale sharded index in `dir` is removed, since it would
    /// point transformers at other files.
    ///
    /// A model with LoRA adapters is refused: merge them first ([`LlamaForCausalLM::merge_lora`])
    /// or save them apart ([`crate::peft::save_adapter`]).
    pub fn save_pretrained(&self, dir: &Path) -> Result<()> {
        self.save_with(dir, Vec::new())
    }

    /// [`LlamaForCausalLM::save_pretrained`] with `extra` files in the same set.
    fn save_with(&self, dir: &Path, extra: Vec<(&str, Vec<u8>)>) -> Result<()> {
        let quantized = self.projections().iter().any(|(_, p)| p.nf4().is_some());
        if self.has_lora() || quantized {
            return Err(Error::NotDense);
        }
        let tensors = hf_tensors(self);
        let mut config = self.config().to_json();
        config["torch_dtype"] = "float32".into();
        let config_path = dir.join("config.json");
        let config = json_text(&config).map_err(|e| Error::io(&config_path, e))?;
        let mut set = FileSet::new(dir);
        set.add("model.safetensors", |path| {
            write_safetensors_to(path, &tensors)
        })
        .add_bytes("config.json", config);
        for (name, bytes) in extra {
            set.add_bytes(name, bytes);
        }
        set.remove_stale(INDEX_FILE);
        set.write().map_err(|(path, e)| Error::io(path, e))?;
        Ok(())
    }
}

/// The files besides the weights that make a Hugging Face folder usable: tokenizer and
/// generation settings.
const COMPANION_FILES: [&str; 5] = [
    "tokenizer.json",
    "tokenizer_config.json",
    "special_tokens_map.json",
    "generation_config.json",
    "chat_template.jinja",
];

impl<B: Backend> LlamaForCausalLM<B> {
    /// The fine-tuned model as a complete Hugging Face folder: adapters merged, NF4 bases
    /// dequantized, `config.json` + `model.safetensors`, and the tokenizer and generation files
    /// copied from `base_dir` (those it has), written as one set.
    pub fn export_merged(self, base_dir: &Path, out_dir: &Path) -> Result<()> {
        let mut companions = Vec::new();
        for name in COMPANION_FILES {
            let source = base_dir.join(name);
            if source.exists() {
                let bytes = std::fs::read(&source).map_err(|e| Error::io(&source, e))?;
                companions.push((name, bytes));
            }
        }
        self.into_dense().save_with(out_dir, companions)
    }
}

/// The model's parameters under their Hugging Face names as f32, Linear weights back in
/// `[out, in]`.
fn hf_tensors<B: Backend, M: Module<B>>(model: &M) -> Vec<(String, StoredTensor)> {
    float_params_f32(model, |_| true)
        .into_iter()
        .map(|p| {
            let (mut shape, mut values) = (p.shape, p.values);
            if shape.len() == 2 && is_linear_weight(&p.path) {
                values = transpose(&values, shape[0], shape[1]);
                shape.reverse();
            }
            (p.path, StoredTensor::from_f32(shape, &values))
        })
        .collect()
}
