//! Reading a module tree's float parameters by path (`Vec` entries by index, fields by name),
//! as f32: what saving a model and writing a training checkpoint both need.

use burn::module::{Module, ModuleVisitor, Param, ParamId};
use burn::tensor::{Tensor, backend::Backend};

/// One float parameter: its path, id, shape and row-major values.
pub struct NamedValues {
    /// e.g. `model.layers.0.self_attn.q_proj.weight`
    pub path: String,
    pub id: ParamId,
    /// As the module holds it (Burn's `[in, out]` for a Linear weight).
    pub shape: Vec<usize>,
    pub values: Vec<f32>,
}

/// The float parameters for which `keep(path, require_grad)` holds, in visiting order. Values
/// are read only for the kept ones.
pub fn float_params_f32<B: Backend, M: Module<B>>(
    module: &M,
    keep: impl FnMut(&str, bool) -> bool,
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

impl<B: Backend, F: FnMut(&str, bool) -> bool> ModuleVisitor<B> for Reader<F> {
    fn enter_module(&mut self, name: &str, _: &str) {
        self.path.push(name.to_owned());
    }

    fn exit_module(&mut self, _: &str, _: &str) {
        self.path.pop();
    }

    fn visit_float<const D: usize>(&mut self, param: &Param<Tensor<B, D>>) {
        let path = self.path.join(".");
        if !(self.keep)(&path, param.is_require_grad()) {
            return;
        }
        let tensor = param.val();
        let shape = tensor.dims().to_vec();
        let values = tensor
            .into_data()
            .convert::<f32>()
            .into_vec::<f32>()
            .expect("converted to f32 just above");
        self.params.push(NamedValues {
            path,
            id: param.id,
            shape,
            values,
        });
    }
}
