//! `save_pretrained`: a Burn model back into a Hugging Face folder.

use std::collections::HashMap;
use std::path::Path;

use burn::module::{Module, ModuleVisitor, Param};
use burn::tensor::{Tensor, backend::Backend};
use safetensors::{Dtype, tensor::TensorView};

use super::linear::transpose;
use super::llama::LlamaForCausalLM;
use crate::error::{Error, Result};
use crate::io::write_atomic;
use crate::spectrum::checkpoint::INDEX_FILE;

impl<B: Backend> LlamaForCausalLM<B> {
    /// Writes `config.json` and `model.safetensors` (f32, Hugging Face names and `[out, in]`
    /// Linear layout) into `dir`, creating it if needed.
    ///
    /// Each file is written under a temporary name and renamed, so an interrupted save leaves
    /// the previous files whole. A stale sharded index in `dir` is removed, since it would
    /// point transformers at other files.
    pub fn save_pretrained(&self, dir: &Path) -> Result<()> {
        std::fs::create_dir_all(dir).map_err(|e| Error::io(dir, e))?;
        let tensors = hf_tensors(self);
        write_safetensors(&dir.join("model.safetensors"), &tensors)?;
        let mut config = self.config().to_json();
        config["torch_dtype"] = "float32".into();
        let text = serde_json::to_string_pretty(&config).expect("a JSON value always serializes");
        write_atomic(&dir.join("config.json"), format!("{text}\n").as_bytes())?;
        let index = dir.join(INDEX_FILE);
        if index.exists() {
            std::fs::remove_file(&index).map_err(|e| Error::io(&index, e))?;
        }
        Ok(())
    }
}

/// One tensor to save: its Hugging Face name, shape and f32 values in that layout.
pub struct HfTensor {
    pub name: String,
    pub shape: Vec<usize>,
    pub values: Vec<f32>,
}

/// The model's parameters under their Hugging Face names, Linear weights back in `[out, in]`.
pub fn hf_tensors<B: Backend, M: Module<B>>(model: &M) -> Vec<HfTensor> {
    let mut collector = Collector {
        path: Vec::new(),
        tensors: Vec::new(),
        _backend: std::marker::PhantomData::<B>,
    };
    model.visit(&mut collector);
    collector.tensors
}

/// Linear weights are the 2-D `weight`s of projections and of the head; the embedding, the
/// other 2-D weight, is stored as it is in both layouts.
fn is_linear_weight(name: &str) -> bool {
    name.ends_with("_proj.weight") || name == "lm_head.weight"
}

struct Collector<B> {
    path: Vec<String>,
    tensors: Vec<HfTensor>,
    _backend: std::marker::PhantomData<B>,
}

impl<B: Backend> ModuleVisitor<B> for Collector<B> {
    fn enter_module(&mut self, name: &str, _container_type: &str) {
        self.path.push(name.to_owned());
    }

    fn exit_module(&mut self, _name: &str, _container_type: &str) {
        self.path.pop();
    }

    fn visit_float<const D: usize>(&mut self, param: &Param<Tensor<B, D>>) {
        let name = self.path.join(".");
        let tensor = param.val();
        let mut shape = tensor.dims().to_vec();
        let mut values = tensor
            .into_data()
            .convert::<f32>()
            .into_vec::<f32>()
            .expect("converted to f32 just above");
        if D == 2 && is_linear_weight(&name) {
            values = transpose(&values, shape[0], shape[1]);
            shape.reverse();
        }
        self.tensors.push(HfTensor {
            name,
            shape,
            values,
        });
    }
}

/// Writes f32 tensors as a safetensors file (`{"format": "pt"}` metadata, as transformers
/// expects), through a temporary file renamed into place.
pub fn write_safetensors(path: &Path, tensors: &[HfTensor]) -> Result<()> {
    let bytes: Vec<Vec<u8>> = tensors
        .iter()
        .map(|t| t.values.iter().flat_map(|v| v.to_le_bytes()).collect())
        .collect();
    let views = tensors.iter().zip(&bytes).map(|(t, b)| {
        let view = TensorView::new(Dtype::F32, t.shape.clone(), b).expect("shape matches values");
        (t.name.clone(), view)
    });
    let metadata = HashMap::from([("format".to_string(), "pt".to_string())]);
    let dir = path
        .parent()
        .filter(|p| !p.as_os_str().is_empty())
        .unwrap_or(Path::new("."));
    let tmp = tempfile::NamedTempFile::new_in(dir).map_err(|e| Error::io(dir, e))?;
    safetensors::serialize_to_file(views, Some(metadata), tmp.path()).map_err(|e| Error::Io {
        path: tmp.path().to_path_buf(),
        source: std::io::Error::other(e.to_string()),
    })?;
    tmp.as_file()
        .sync_all()
        .map_err(|e| Error::io(tmp.path(), e))?;
    tmp.persist(path).map_err(|e| Error::io(path, e.error))?;
    Ok(())
}
