//! A run's training on several data-parallel workers: each trains a replica on its share of
//! every batch with the gradients averaged over the workers; rank 0 reports, logs and writes
//! the checkpoints, which resume on any number of workers (they hold the global state).

use std::sync::Mutex;

use burn::module::Module;
use burn::tensor::backend::AutodiffBackend;
use burn::tensor::backend::{Device as _, DeviceId, DeviceOps};

use super::gradients::{MemoryOptions, batch_gradients};
use super::parallel::DataParallel;
use super::step::{StepMetrics, TrainStep};
use super::trainer::{TrainerOptions, train_reduced};
use crate::data::{Batch, Batches};
use crate::error::{Error, Result};
use crate::model::LlamaForCausalLM;

/// The workers of a run.
pub(crate) struct Workers {
    /// How many.
    pub devices: usize,
    /// Each worker's loss pieces.
    pub memory: MemoryOptions,
}

impl Workers {
    /// Trains `model` from `step` and `batches` (as a checkpoint left them) as [`train_with`]
    /// would, on [`Workers::devices`] workers; `on_step` sees each step's loss and tokens over
    /// all workers. Returns rank 0's model.
    ///
    /// [`train_with`]: super::train_with
    pub(crate) fn train<B: AutodiffBackend>(
        &self,
        model: LlamaForCausalLM<B>,
        step: TrainStep<B, LlamaForCausalLM<B>>,
        batches: Batches<'_>,
        options: &TrainerOptions,
        device: &B::Device,
        on_step: impl FnMut(&StepMetrics) -> Result<()> + Send,
    ) -> Result<LlamaForCausalLM<B>> {
        let devices = worker_devices::<B>(device, self.devices);
        let on_step = Mutex::new(on_step);
        let mut models = DataParallel::new().run::<B, _>(&devices, |peer, device| {
            // A fork: autodiff nodes of its own (see `train::parallel`).
            let model = model.clone().fork(device);
            let (mut step, mut batches) = (step.clone(), batches.clone());
            let mut options = options.clone();
            if peer.rank != 0 {
                options.checkpoint_every = None;
            }
            let loss_of = |m: &LlamaForCausalLM<B>, batch: &Batch| {
                // A batch with fewer rows than workers: the workers without a row of their
                // own take the whole batch, so that every worker has gradients to average.
                let part = batch.share(peer.rank, peer.world);
                batch_gradients(m, part.as_ref().unwrap_or(batch), &self.memory)
            };
            let reduce = |grads| peer.mean_grads::<B>(grads);
            let report = |metrics: &StepMetrics| {
                let local = [metrics.loss, metrics.tokens as f64];
                let mean = peer.mean_values::<B::InnerBackend>(&local, device)?;
                let (loss, tokens) = (mean[0], mean[1]);
                if peer.rank == 0 {
                    let global = StepMetrics {
                        loss,
                        tokens: (tokens * peer.world as f64).round() as usize,
                        ..metrics.clone()
                    };
                    let mut on_step = on_step
                        .lock()
                        .map_err(|_| Error::WorkerPanicked { rank: 0 })?;
                    on_step(&global)?;
                }
                Ok(())
            };
            let (model, _) = train_reduced(
                model,
                &mut step,
                &mut batches,
                loss_of,
                &options,
                reduce,
                report,
            )?;
            Ok((peer.rank == 0).then_some(model))
        })?;
        Ok(models.swap_remove(0).expect("rank 0 returns its model"))
    }
}

/// `count` devices from `device` on: its index and the next ones (the same device on a
/// backend with one, as the CPU's).
fn worker_devices<B: AutodiffBackend>(device: &B::Device, count: usize) -> Vec<B::Device> {
    let first = device.id();
    (0..count)
        .map(|rank| {
            B::Device::from_id(DeviceId {
                type_id: first.type_id,
                index_id: first.index_id + rank as u16,
            })
        })
        .collect()
}
