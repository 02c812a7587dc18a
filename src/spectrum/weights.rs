//! The weights a scan reads, from a checkpoint on disk or from a Burn module tree.

use burn::module::{Module, ModuleVisitor, Param};
use burn::tensor::{Tensor, backend::Backend};

use crate::error::{Error, Result};
use crate::io::{SafetensorsFiles, TensorEntry, is_float_dtype};
use crate::nn::f32_values;

/// A weight to scan: its name, stored shape, and how to read its values.
pub(super) struct Weight<'a> {
    /// Parameter name or path, e.g. `model.layers.0.self_attn.q_proj.weight`.
    pub param_name: String,
    /// Shape as stored.
    pub shape: Vec<usize>,
    /// Reads the values as f32, row-major.
    pub read: Box<dyn Fn() -> Result<Vec<f32>> + Send + Sync + 'a>,
}

impl Weight<'_> {
    /// The matrix the weight is scanned as: `[rows, cols]`, a 1-D weight being `1 x d` and a
    /// weight of more dimensions `prod(leading) x last`.
    pub(super) fn matrix_shape(&self) -> (usize, usize) {
        match self.shape.as_slice() {
            [] => (1, 1),
            [d] => (1, *d),
            [leading @ .., last] => (leading.iter().product(), *last),
        }
    }

    pub(super) fn numel(&self) -> usize {
        self.shape.iter().product()
    }
}

/// Whether a parameter is a weight matrix spectrum.py would score: named `...weight`.
pub(super) fn is_weight(param_name: &str) -> bool {
    param_name == "weight" || param_name.ends_with(".weight")
}

/// The weight tensors of a checkpoint, in layer order.
pub(super) fn file_weights(checkpoint: &SafetensorsFiles) -> Result<Vec<Weight<'_>>> {
    let mut entries: Vec<&TensorEntry> = checkpoint
        .tensors()
        .iter()
        .filter(|t| is_weight(&t.name))
        .collect();
    if let Some(t) = entries.iter().find(|t| !is_float_dtype(t.dtype)) {
        return Err(Error::UnsupportedDtype {
            path: checkpoint.file_of(t).to_owned(),
            tensor: t.name.clone(),
            dtype: format!("{:?}", t.dtype),
        });
    }
    entries.sort_by(|a, b| super::naming::natural_cmp(&a.name, &b.name));
    Ok(entries
        .into_iter()
        .map(|t| Weight {
            param_name: t.name.clone(),
            shape: t.shape.clone(),
            read: Box::new(move || checkpoint.read_f32(t)),
        })
        .collect())
}

/// The float `weight` parameters of a Burn module tree, named by their paths (`Vec` entries
/// by index, fields by name), in visiting order.
pub(super) fn module_weights<'a, B: Backend, M: Module<B>>(module: &M) -> Vec<Weight<'a>> {
    let mut visitor = WeightCollector::<B> {
        path: Vec::new(),
        weights: Vec::new(),
        _backend: std::marker::PhantomData,
    };
    module.visit(&mut visitor);
    visitor.weights
}

struct WeightCollector<'a, B> {
    path: Vec<String>,
    weights: Vec<Weight<'a>>,
    _backend: std::marker::PhantomData<B>,
}

impl<'a, B: Backend> ModuleVisitor<B> for WeightCollector<'a, B> {
    fn enter_module(&mut self, name: &str, _container_type: &str) {
        self.path.push(name.to_owned());
    }

    fn exit_module(&mut self, _name: &str, _container_type: &str) {
        self.path.pop();
    }

    fn visit_float<const D: usize>(&mut self, param: &Param<Tensor<B, D>>) {
        let param_name = self.path.join(".");
        if !is_weight(&param_name) {
            return;
        }
        let tensor = param.val();
        let shape = tensor.dims().to_vec();
        self.weights.push(Weight {
            param_name,
            shape,
            read: Box::new(move || Ok(f32_values(tensor.clone()))),
        });
    }
}
