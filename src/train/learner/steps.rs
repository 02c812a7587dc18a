//! The causal LM as burn-train's training and validation steps.

use burn::module::Module;
use burn::optim::GradientsParams;
use burn::tensor::Tensor;
use burn::tensor::backend::{AutodiffBackend, Backend};
use burn::train::{InferenceStep, TrainOutput, TrainStep as LearnerStep};

use super::super::gradients::{MemoryOptions, batch_gradients};
use super::super::loss::mean_loss;
use super::output::{LmLoss, LmLossValue};
use crate::data::Batch;
use crate::model::LlamaForCausalLM;

/// One micro-batch: its loss and gradients, computed piece by piece as
/// [`batch_gradients`] does with the default [`MemoryOptions`] (the loss over chunks of
/// positions, no gradient checkpointing).
///
/// burn-train gives a step no way to fail: a batch the model cannot take (ragged rows, a
/// label beyond the vocabulary) is reported on stderr and gives a NaN loss and no gradients,
/// so the optimizer leaves the model as it is.
impl<B: AutodiffBackend> LearnerStep for LlamaForCausalLM<B> {
    type Input = Batch;
    type Output = LmLoss<B::InnerBackend>;

    fn step(&self, batch: Batch) -> TrainOutput<LmLoss<B::InnerBackend>> {
        match batch_gradients(self, &batch, &MemoryOptions::default()) {
            Ok(micro) => TrainOutput {
                grads: micro.grads.unwrap_or_default(),
                item: LmLoss {
                    loss: micro.loss.inner(),
                    tokens: micro.tokens,
                },
            },
            Err(error) => {
                eprintln!("skipped a training batch: {error}");
                let device = self.devices().into_iter().next().unwrap_or_default();
                TrainOutput {
                    grads: GradientsParams::new(),
                    item: LmLoss {
                        loss: Tensor::from_floats([f32::NAN], &device),
                        tokens: 0,
                    },
                }
            }
        }
    }
}

/// The mean loss of a validation batch, without gradients (the logits formed for a chunk of
/// positions at a time). A batch the model cannot take is reported on stderr and gives NaN.
impl<B: Backend> InferenceStep for LlamaForCausalLM<B> {
    type Input = Batch;
    type Output = LmLossValue;

    fn step(&self, batch: Batch) -> LmLossValue {
        let loss = mean_loss(self, std::slice::from_ref(&batch)).unwrap_or_else(|error| {
            eprintln!("skipped a validation batch: {error}");
            f64::NAN
        });
        LmLossValue {
            loss,
            tokens: batch.target_tokens(),
        }
    }
}
