//! Which parameters train: everything else gets `require_grad = false`, so autodiff keeps no
//! gradient for it and the optimizer never makes state for it.

use std::collections::HashSet;

use burn::module::{Module, ModuleMapper, ModuleVisitor, Param, ParamId};
use burn::tensor::{Tensor, backend::Backend};

/// Sets `require_grad` to whether each float parameter is in `trainable`.
pub fn freeze_except<B: Backend, M: Module<B>>(module: M, trainable: &[ParamId]) -> M {
    let mut mapper = Freezer {
        trainable: trainable.iter().copied().collect(),
    };
    module.map(&mut mapper)
}

struct Freezer {
    trainable: HashSet<ParamId>,
}

impl<B: Backend> ModuleMapper<B> for Freezer {
    fn map_float<const D: usize>(&mut self, param: Param<Tensor<B, D>>) -> Param<Tensor<B, D>> {
        let train = self.trainable.contains(&param.id);
        param.set_require_grad(train)
    }
}

/// The ids of the float parameters that require gradients.
pub fn trainable_params<B: Backend, M: Module<B>>(module: &M) -> Vec<ParamId> {
    let mut collector = Trainable(Vec::new());
    module.visit(&mut collector);
    collector.0
}

struct Trainable(Vec<ParamId>);

impl<B: Backend> ModuleVisitor<B> for Trainable {
    fn visit_float<const D: usize>(&mut self, param: &Param<Tensor<B, D>>) {
        if param.is_require_grad() {
            self.0.push(param.id);
        }
    }
}

/// Counts of parameters (elements), trainable and all.
pub fn count_params<B: Backend, M: Module<B>>(module: &M) -> (usize, usize) {
    let mut counter = Counter::default();
    module.visit(&mut counter);
    (counter.trainable, counter.total)
}

#[derive(Default)]
struct Counter {
    trainable: usize,
    total: usize,
}

impl<B: Backend> ModuleVisitor<B> for Counter {
    fn visit_float<const D: usize>(&mut self, param: &Param<Tensor<B, D>>) {
        let n = param.shape().num_elements();
        self.total += n;
        if param.is_require_grad() {
            self.trainable += n;
        }
    }
}
