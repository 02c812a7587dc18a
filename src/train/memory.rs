//! What a prepared model costs in memory, by kind: weights, gradients, optimizer state.

use burn::module::{Module, ModuleVisitor, Param};
use burn::tensor::{Tensor, backend::Backend};

use crate::model::LlamaForCausalLM;

/// Parameter counts and bytes of one prepared model under AdamW.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct MemoryReport {
    /// Values that train.
    pub trainable_params: usize,
    /// All values of the model (NF4 weights counted by value).
    pub total_params: usize,
    /// Float parameters at their element size, plus NF4-packed bases.
    pub weight_bytes: usize,
    /// One gradient per trainable value.
    pub grad_bytes: usize,
    /// AdamW's two moments per trainable value.
    pub optimizer_bytes: usize,
}

impl MemoryReport {
    /// Counts `model`'s parameters (the ones with `require_grad` are the trainable ones).
    pub fn of<B: Backend>(model: &LlamaForCausalLM<B>) -> Self {
        let mut counter = Counter::default();
        model.visit(&mut counter);
        let nf4 = nf4_bases(model);
        let nf4_bytes: usize = nf4.iter().map(|(bytes, _)| bytes).sum();
        let nf4_params: usize = nf4.iter().map(|(_, n)| n).sum();
        MemoryReport {
            trainable_params: counter.trainable,
            total_params: counter.total + nf4_params,
            weight_bytes: counter.bytes + nf4_bytes,
            grad_bytes: counter.trainable_bytes,
            optimizer_bytes: 2 * counter.trainable_bytes,
        }
    }

    /// Weights, gradients and optimizer state together.
    pub fn total_bytes(&self) -> usize {
        self.weight_bytes + self.grad_bytes + self.optimizer_bytes
    }
}

/// `(storage bytes, values)` of each NF4 base weight.
fn nf4_bases<B: Backend>(model: &LlamaForCausalLM<B>) -> Vec<(usize, usize)> {
    model
        .projections()
        .into_iter()
        .filter_map(|(_, p)| p.nf4())
        .map(|w| (w.storage_bytes(), w.shape()[0] * w.shape()[1]))
        .collect()
}

#[derive(Default)]
struct Counter {
    trainable: usize,
    total: usize,
    bytes: usize,
    trainable_bytes: usize,
}

impl<B: Backend> ModuleVisitor<B> for Counter {
    fn visit_float<const D: usize>(&mut self, param: &Param<Tensor<B, D>>) {
        let n = param.shape().num_elements();
        let size = param.val().dtype().size();
        self.total += n;
        self.bytes += n * size;
        if param.is_require_grad() {
            self.trainable += n;
            self.trainable_bytes += n * size;
        }
    }
}
