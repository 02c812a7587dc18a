//! `from_pretrained`: a Hugging Face folder (config + safetensors) into a Burn model.
//!
//! The tree is built once, by [`LlamaConfig::init`], with lazily initialised parameters; loading
//! then walks it and fills each parameter from the checkpoint tensor of the same path, so a new
//! kind of layer needs no loading code of its own.

use std::collections::{BTreeSet, HashMap};
use std::path::{Path, PathBuf};

use burn::module::{Module, ModuleMapper, Param};
use burn::tensor::{Tensor, TensorData, backend::Backend};

use super::checkpoint_shapes::shape_mismatches;
use super::config::LlamaConfig;
use super::hf_layout::{is_ignored, is_linear_weight};
use super::llama::LlamaForCausalLM;
use crate::error::{Error, Result};
use crate::io::{INDEX_FILE, SafetensorsFiles, TensorEntry};
use crate::nn::{Nf4Weight, transpose};

impl<B: Backend> LlamaForCausalLM<B> {
    /// Loads `config.json` and the safetensors weights (one file or sharded, f32/f16/bf16) of
    /// a Hugging Face model folder into the backend's float type.
    ///
    /// Every tensor the config calls for must be there with its shape; a missing, unexpected
    /// or mis-shaped tensor is an error that names it. Weights come from
    /// `model.safetensors.index.json` when present, else from `model.safetensors`.
    pub fn from_pretrained(dir: &Path, device: &B::Device) -> Result<Self> {
        Self::from_pretrained_nf4(dir, device, |_| false)
    }

    /// [`LlamaForCausalLM::from_pretrained`], with the base weight of every projection whose
    /// path `quantize` accepts (`model.layers.0.self_attn.q_proj`, ..., `lm_head`) read and
    /// quantized to NF4 one tensor at a time, as transformers' `load_in_4bit` does: the
    /// full-precision weights of those projections are never in memory together, so loading
    /// needs about the NF4 model plus one tensor.
    ///
    /// A projection whose size is not a multiple of the NF4 block (64 values) is refused with
    /// [`Error::Nf4Blocks`].
    pub fn from_pretrained_nf4(
        dir: &Path,
        device: &B::Device,
        quantize: impl Fn(&str) -> bool,
    ) -> Result<Self> {
        let config = LlamaConfig::from_file(dir)?;
        // Like transformers, read the index when there is one, else `model.safetensors` only:
        // other `.safetensors` files in the folder are not the model's.
        let weights = if dir.join(INDEX_FILE).exists() {
            dir.to_path_buf()
        } else {
            dir.join("model.safetensors")
        };
        let files = SafetensorsFiles::open(&weights)?;
        // Sizes are checked against the tensors present before any is allocated from them.
        let present = files
            .tensors()
            .iter()
            .map(|t| (t.name.as_str(), t.shape.as_slice()));
        let mismatches = shape_mismatches(&config, present);
        if !mismatches.fits() {
            return Err(Error::TensorMismatch {
                path: dir.to_path_buf(),
                missing: mismatches.missing,
                unexpected: mismatches.unexpected,
                misshaped: mismatches.misshaped,
            });
        }
        let mut filler = Filler::new(dir, &files, device);
        if config.tie_word_embeddings {
            // transformers drops a stored head when the embedding is tied; so do we.
            filler.unused.remove("lm_head.weight");
        }
        let mut model = config.init::<B>(device);
        for (path, projection) in model.projections_mut() {
            if !quantize(&path) {
                continue;
            }
            let (d_in, d_out) = projection.dims();
            let name = format!("{path}.weight");
            if let Some(rows) = filler.stored(&name, &[d_out, d_in]) {
                projection.set_nf4(Nf4Weight::quantize(&rows, [d_out, d_in], device)?);
            }
        }
        let model = model.map(&mut filler);
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
        if is_linear_weight(name) && shape.len() == 2 {
            let rows = self.stored(name, &[shape[1], shape[0]])?;
            return Some(transpose(&rows, shape[1], shape[0]));
        }
        self.stored(name, shape)
    }

    /// The tensor `name` as stored (a linear weight `[out, in]` row-major, PyTorch's layout),
    /// if it has `shape`; `None` after noting why not.
    fn stored(&mut self, name: &str, shape: &[usize]) -> Option<Vec<f32>> {
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
        match self.files.read_f32(entry) {
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
