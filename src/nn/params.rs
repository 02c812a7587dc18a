//! Reading a module tree's float parameters by path (`Vec` entries by index, fields by name):
//! what saving a model, writing a training checkpoint and re-selecting parameters need.

use burn::module::{Module, ModuleVisitor, Param, ParamId};
use burn::tensor::{Tensor, backend::Backend};

/// Where a float parameter sits and whether it trains.
#[derive(Clone, Debug, PartialEq)]
pub struct ParamEntry {
    /// e.g. `model.layers.0.self_attn.q_proj.weight`
    pub path: String,
    /// The parameter's id.
    pub id: ParamId,
    /// Its shape as the module holds it (Burn's `[in, out]` for a Linear weight).
    pub shape: Vec<usize>,
    /// Whether it trains.
    pub require_grad: bool,
}

/// One float parameter with its values.
pub(crate) struct NamedValues {
    /// e.g. `model.layers.0.self_attn.q_proj.weight`
    pub path: String,
    pub id: ParamId,
    /// As the module holds it (Burn's `[in, out]` for a Linear weight).
    pub shape: Vec<usize>,
    pub values: Vec<f32>,
}

/// Every float parameter's path, id, shape and `require_grad`, in visiting order; reads no
/// values.
pub fn float_params<B: Backend, M: Module<B>>(module: &M) -> Vec<ParamEntry> {
    let mut entries = Vec::new();
    float_params_f32(module, |entry| {
        entries.push(entry.clone());
        false
    });
    entries
}

/// The float parameters for which `keep` holds, as f32, in visiting order. Values are read
/// only for the kept ones.
pub(crate) fn float_params_f32<B: Backend, M: Module<B>>(
    module: &M,
    keep: impl FnMut(&ParamEntry) -> bool,
) -> Vec<NamedValues> {
    let mut reader = Reader {
        path: Vec::new(),
        keep,
        params: Vec::new(),
    };
    module.visit(&mut reader);
    reader.params
}

struct Reader<F> {
    path: Vec<String>,
    keep: F,
    params: Vec<NamedValues>,
}

impl<B: Backend, F: FnMut(&ParamEntry) -> bool> ModuleVisitor<B> for Reader<F> {
    fn enter_module(&mut self, name: &str, _: &str) {
        self.path.push(name.to_owned());
    }

    fn exit_module(&mut self, _: &str, _: &str) {
        self.path.pop();
    }

    fn visit_float<const D: usize>(&mut self, param: &Param<Tensor<B, D>>) {
        let entry = ParamEntry {
            path: self.path.join("."),
            id: param.id,
            shape: param.lazy_shape().to_vec(),
            require_grad: param.is_require_grad(),
        };
        if !(self.keep)(&entry) {
            return;
        }
        let tensor = param.val();
        let shape = tensor.dims().to_vec();
        let values = f32_values(tensor);
        self.params.push(NamedValues {
            path: entry.path,
            id: entry.id,
            shape,
            values,
        });
    }
}

/// A tensor's values as f32, row-major, whatever the backend's float type.
pub(crate) fn f32_values<B: Backend, const D: usize>(tensor: Tensor<B, D>) -> Vec<f32> {
    tensor
        .into_data()
        .convert::<f32>()
        .into_vec::<f32>()
        .expect("converted to f32 just above")
}
