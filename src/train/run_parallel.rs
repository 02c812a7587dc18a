//! A run's training on several data-parallel workers: each trains a replica on its share of
//! every batch with the gradients averaged over the workers; rank 0 reports, logs and writes
//! the checkpoints, which resume on any number of workers (they hold the global state).
//! Across nodes, the nodes first meet at the orchestrator, before anything is written.

use std::path::Path;
use std::sync::Mutex;
use std::time::Duration;

use burn::module::{AutodiffModule, Module, ModuleVisitor, Param};
use burn::tensor::Tensor;
use burn::tensor::backend::AutodiffBackend;
use burn::tensor::backend::Backend;
use burn::tensor::backend::{Device as _, DeviceId, DeviceOps};

use super::gradients::{MemoryOptions, batch_gradients};
use super::parallel::{DataParallel, GradLayout, Hello, NodeLink, Orchestrator};
use super::run::{NodeConfig, RunConfig};
use super::step::{StepMetrics, TrainStep};
use super::trainer::{TrainerOptions, train_reduced};
use crate::data::{Batch, Batches, Example};
use crate::error::{Error, Result};
use crate::model::LlamaForCausalLM;

/// The workers of a run on this node.
pub(crate) struct Workers<'a> {
    /// How many.
    pub devices: usize,
    /// Each worker's loss pieces.
    pub memory: MemoryOptions,
    /// The longest a worker waits for the others.
    pub timeout: Duration,
    /// In a multi-node run, this node and its workers' joined links.
    pub nodes: Option<(&'a NodeConfig, Vec<NodeLink>)>,
}

impl Workers<'_> {
    /// Trains `model` from `step` and `batches` (as a checkpoint left them) as [`train_with`]
    /// would, on [`Workers::devices`] workers; `on_step` sees each step's loss and tokens over
    /// all workers (on every node). Returns this node's first worker's model.
    ///
    /// [`train_with`]: super::train_with
    pub(crate) fn train<B: AutodiffBackend>(
        self,
        model: LlamaForCausalLM<B>,
        step: TrainStep<B, LlamaForCausalLM<B>>,
        batches: Batches<'_>,
        options: &TrainerOptions,
        device: &B::Device,
        on_step: impl FnMut(&StepMetrics) -> Result<()> + Send,
    ) -> Result<LlamaForCausalLM<B>> {
        let devices = worker_devices::<B>(device, self.devices);
        let on_step = Mutex::new(on_step);
        let mut parallel = DataParallel::new().with_timeout(self.timeout);
        if let Some((nodes, links)) = self.nodes {
            parallel = parallel.across_nodes(nodes.node_rank, nodes.num_nodes, links);
        }
        let memory = self.memory;
        let mut models = parallel.run::<B, _>(&devices, |peer, device| {
            // A fork: autodiff nodes of its own (see `train::parallel`).
            let model = model.clone().fork(device);
            let layout = GradLayout::of(&model);
            let (mut step, mut batches) = (step.clone(), batches.clone());
            let mut options = options.clone();
            if peer.rank != 0 {
                options.checkpoint_every = None;
            }
            let loss_of = |m: &LlamaForCausalLM<B>, batch: &Batch| {
                // A batch with fewer rows than workers: the workers without a row of their
                // own take the whole batch, so that every worker has gradients to average.
                let part = batch.share(peer.rank, peer.world);
                batch_gradients(m, part.as_ref().unwrap_or(batch), &memory)
            };
            let reduce = |grads| peer.mean_grads::<B>(grads, &layout, device);
            let report = |metrics: &StepMetrics| {
                let local = [metrics.loss, metrics.tokens as f64];
                let mean = peer.mean_values::<B::InnerBackend>(&local, device)?;
                let (loss, tokens) = (mean[0], mean[1]);
                if peer.local_rank() == 0 {
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
            Ok((peer.local_rank() == 0).then_some(model))
        })?;
        Ok(models
            .swap_remove(0)
            .expect("local rank 0 returns its model"))
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

/// Starts the orchestrator in this process when the run asks for it.
pub(crate) fn start_orchestrator(config: &RunConfig) -> Result<Option<Orchestrator>> {
    let port = config
        .nodes
        .as_ref()
        .and_then(|nodes| nodes.start_orchestrator);
    port.map(|port| Orchestrator::start(port, config.peer_timeout))
        .transpose()
}

/// Joins this node's workers to the run's other nodes (`None` on a machine alone), once they
/// agree on the run: nodes and devices, the trainable parameters of `model`, the settings,
/// the training data `train` and the `checkpoint` resumed from.
pub(crate) fn join_nodes<B: AutodiffBackend>(
    config: &RunConfig,
    model: &LlamaForCausalLM<B>,
    train: &[Example],
    checkpoint: Option<&Path>,
) -> Result<Option<Vec<NodeLink>>> {
    let Some(nodes) = &config.nodes else {
        return Ok(None);
    };
    let layout = GradLayout::of(model);
    let mut run = run_facts(config, train, checkpoint);
    run.push(("the model's weights".into(), weights_checksum(model)));
    // The largest reduction: the gradients, or a step's reported values.
    let max_values = layout.num_values().max(16);
    let hellos = (0..config.devices)
        .map(|local| {
            let node = (nodes.num_nodes, nodes.node_rank);
            Hello::new(
                node,
                (config.devices, local),
                run.clone(),
                layout.names(),
                max_values,
            )
        })
        .collect();
    NodeLink::join_all(&nodes.orchestrator, hellos, config.peer_timeout).map(Some)
}

/// The settings that make two nodes' runs one, by flag name, the likeliest to differ first.
fn run_facts(
    config: &RunConfig,
    train: &[Example],
    checkpoint: Option<&Path>,
) -> Vec<(String, String)> {
    let tokens: usize = train.iter().map(|e| e.ids.len()).sum();
    let id_sum = train.iter().flat_map(|e| &e.ids).fold(0u64, |sum, &id| {
        sum.wrapping_mul(31).wrapping_add(u64::from(id))
    });
    let resumed = checkpoint
        .and_then(Path::file_name)
        .map_or("the start".to_string(), |name| {
            name.to_string_lossy().into_owned()
        });
    let facts = [
        ("--method", config.method.name()),
        ("--steps", config.steps.to_string()),
        ("--batch-size", config.batch_size.to_string()),
        ("--grad-accum", config.grad_accum.to_string()),
        ("--seq-len", config.seq_len.to_string()),
        ("--lr", config.lr.to_string()),
        ("--warmup-steps", config.warmup_steps.to_string()),
        ("--seed", config.seed.to_string()),
        ("--eval-samples", config.eval_samples.to_string()),
        ("the gradient clip", format!("{:?}", config.max_grad_norm)),
        (
            "training data",
            format!(
                "{} records, {tokens} tokens, checksum {id_sum:x}",
                train.len()
            ),
        ),
        ("a resume from", resumed),
    ];
    facts
        .into_iter()
        .map(|(name, value)| (name.to_string(), value))
        .collect()
}

/// A checksum of the float weights of `model`: the first [`CHECKSUM_VALUES`] values of each
/// tensor, summed on the host in order (a sum where the weights are would follow the
/// backend's threads, and differ in its last bits from one process to the next). Equal
/// weights give the same checksum; a different checkpoint of the same shapes does not.
fn weights_checksum<B: AutodiffBackend>(model: &LlamaForCausalLM<B>) -> String {
    struct Checksum(f64, f64);
    impl<B: Backend> ModuleVisitor<B> for Checksum {
        fn visit_float<const D: usize>(&mut self, param: &Param<Tensor<B, D>>) {
            let values = param.val().flatten::<1>(0, D - 1);
            let count = values.dims()[0].min(CHECKSUM_VALUES);
            let data = values.slice(0..count).into_data().convert::<f64>();
            for value in data.iter::<f64>() {
                self.1 += 1.0;
                self.0 += self.1 * value;
            }
        }
    }
    let mut checksum = Checksum(0.0, 0.0);
    model.valid().visit(&mut checksum);
    format!("checksum {:x}", checksum.0.to_bits())
}

/// Values of each tensor in [`weights_checksum`].
const CHECKSUM_VALUES: usize = 4096;
