//! `from_pretrained`: a Hugging Face folder (config + safetensors) into a Burn model.
//!
//! The tree is built once, by [`LlamaConfig::init`], with lazily initialised parameters; loading
//! then walks it and fills each parameter from the checkpoint tensor of the same path, so a new
//! kind of layer needs no loading code of its own.

use std::collections::{BTreeSet, HashMap};
use std::path::{Path, PathBuf};

use burn::module::{Module, ModuleMapper, Param};
use burn::tensor::{Tensor, TensorData, backend::Backend};

use super::config::LlamaConfig;
use super::hf_layout::{is_ignored, is_linear_weight};
use super::llama::LlamaForCausalLM;
use crate::error::{Error, Result};
use crate::io::{INDEX_FILE, SafetensorsFiles, TensorEntry};
use crate::nn::transpose;

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
        let files = SafetensorsFiles::open(&weights)?;
        let mut filler = Filler::new(dir, &files, device);
        if config.tie_word_embeddings {
            // transformers drops a stored head when the embedding is tied; so do we.
            filler.unused.remove("lm_head.weight");
        }
        let model = config.init::<B>(device).map(&mut filler);
        filler.finish()?;
        Ok(model)
    }
}

/// Fills every float parameter of a tree from the checkpoint tensor named by its path,
/// collecting every problem instead of stopping at the first, so that one error lists all
/// missing, unexpected and mis-shaped tensors.
struct Filler<'a, B: Backend> {
    dir: PathBuf,
    files: &'a SafetensorsFiles,
    device: B::Device,
    path: Vec<String>,
    unused: HashMap<&'a str, &'a TensorEntry>,
    missing: BTreeSet<String>,
    misshaped: Vec<String>,
    unreadable: Option<Error>,
}

impl<'a, B: Backend> Filler<'a, B> {
    fn new(dir: &Path, files: &'a SafetensorsFiles, device: &B::Device) -> Self {
        Filler {
            dir: dir.to_path_buf(),
            files,
            device: device.clone(),
            path: Vec::new(),
            unused: files
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

    /// The values of `name` in Burn's layout for a parameter of `shape`, or `None` after
    /// noting why not.
    fn values(&mut self, name: &str, shape: &[usize]) -> Option<Vec<f32>> {
        let Some(entry) = self.unused.remove(name) else {
            self.missing.insert(name.to_string());
            return None;
        };
        let linear = is_linear_weight(name) && shape.len() == 2;
        let stored: Vec<usize> = if linear {
            shape.iter().rev().copied().collect()
        } else {
            shape.to_vec()
        };
        if entry.shape != stored {
            self.misshaped.push(format!(
                "{name}: expected {stored:?}, found {:?}",
                entry.shape
            ));
            return None;
        }
        match self.files.read_f32(entry) {
            Ok(values) if linear => Some(transpose(&values, stored[0], stored[1])),
            Ok(values) => Some(values),
            Err(e) => {
                self.unreadable.get_or_insert(e);
                None
            }
        }
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

impl<B: Backend> ModuleMapper<B> for Filler<'_, B> {
    fn enter_module(&mut self, name: &str, _: &str) {
        self.path.push(name.to_owned());
    }

    fn exit_module(&mut self, _: &str, _: &str) {
        self.path.pop();
    }

    /// A parameter left as it was (still lazy, never drawn) has a problem noted: the model is
    /// then discarded by [`Filler::finish`].
    fn map_float<const D: usize>(&mut self, param: Param<Tensor<B, D>>) -> Param<Tensor<B, D>> {
        let name = self.path.join(".");
        let shape: [usize; D] = param.lazy_shape().dims();
        let Some(values) = self.values(&name, &shape) else {
            return param;
        };
        let tensor = Tensor::from_data(TensorData::new(values, shape), &self.device);
        Param::initialized(param.id, tensor.require_grad())
    }
}
