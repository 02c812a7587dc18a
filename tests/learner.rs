//! burn-train's Learner trains the causal LM as our own loop does: the same batches, losses
//! and weights, step for step, with gradient accumulation, a schedule, clipping, a frozen part
//! and per-parameter learning-rate multipliers, LoRA adapters and QLoRA's NF4 base.
#![cfg(feature = "train")]

mod common;

use std::collections::HashMap;
use std::sync::{Arc, Mutex};

use burn::backend::{Autodiff, Flex};
use burn::module::{AutodiffModule, Module, ParamId};
use burn::train::metric::{Adaptor, Metric, MetricMetadata, MetricName, SerializedEntry};
use burn::train::{Learner, SupervisedTraining};
use burn_spectrum::data::{Batches, Example};
use burn_spectrum::model::LlamaForCausalLM;
use burn_spectrum::nn::float_params;
use burn_spectrum::peft::LoraConfig;
use burn_spectrum::train::learner::{
    BatchLoader, LmLossValue, MicroBatchSchedule, ProgressRenderer,
};
use burn_spectrum::train::{
    MemoryOptions, Method, SelectiveAdamW, TrainConfig, TrainStep, batch_gradients, freeze_except,
};

type A = Autodiff<Flex>;

const BATCH: usize = 2;
const ACCUMULATION: usize = 2;
const EPOCHS: usize = 2;

/// Eight examples: four batches an epoch, two optimizer steps (burn-train drops an
/// incomplete accumulation group at the end of an epoch).
fn examples() -> Vec<Example> {
    common::short_examples(8)
}

fn config() -> TrainConfig {
    common::scale_sensitive_config(4)
}

#[derive(Clone, Copy, Debug)]
enum Kind {
    /// The first decoder layer and the head train (as a Spectrum selection picks some), the
    /// head at twice the rate.
    Selected,
    Lora,
    QLora,
}

/// The model ready for `kind`, the parameters that train and their rate multipliers.
fn prepared(kind: Kind) -> (LlamaForCausalLM<A>, Vec<ParamId>, HashMap<ParamId, f64>) {
    let model = load();
    let lora = LoraConfig::default();
    let method = match kind {
        Kind::Selected => {
            let trainable = common::first_layer_and_head(&model);
            let scales = float_params(&model)
                .iter()
                .filter(|p| p.path.starts_with("lm_head"))
                .map(|p| (p.id, 2.0))
                .collect();
            return (freeze_except(model, &trainable), trainable, scales);
        }
        Kind::Lora => Method::Lora(lora),
        Kind::QLora => Method::QLora(lora),
    };
    let prepared = method.prepare(model, &Default::default()).unwrap();
    (prepared.model, prepared.trainable, HashMap::new())
}

fn load() -> LlamaForCausalLM<A> {
    LlamaForCausalLM::from_pretrained(&common::fixture("models/llama_gqa"), &Default::default())
        .unwrap()
}

/// Every micro-batch loss burn-train hands its metrics.
#[derive(Clone)]
struct Recorded {
    name: MetricName,
    losses: Arc<Mutex<Vec<f64>>>,
}

struct RecordedLoss(f64);

impl Adaptor<RecordedLoss> for LmLossValue {
    fn adapt(&self) -> RecordedLoss {
        RecordedLoss(self.loss)
    }
}

impl Metric for Recorded {
    type Input = RecordedLoss;

    fn name(&self) -> MetricName {
        self.name.clone()
    }

    fn update(&mut self, input: &RecordedLoss, _metadata: &MetricMetadata) -> SerializedEntry {
        self.losses.lock().unwrap().push(input.0);
        SerializedEntry::new(input.0.to_string(), input.0.to_string())
    }

    fn clear(&mut self) {}
}

/// Our loop: `ACCUMULATION` batches of the seeded stream per step.
fn own_loop(
    model: LlamaForCausalLM<A>,
    trainable: &[ParamId],
    scales: HashMap<ParamId, f64>,
) -> (Vec<f64>, Vec<(String, Vec<f32>)>) {
    let (mut model, mut step) = TrainStep::new(model, trainable, config());
    step.set_lr_scales(scales).unwrap();
    let examples = examples();
    let mut batches = Batches::new(&examples, BATCH, 0, 0).unwrap();
    let steps = EPOCHS * examples.len().div_ceil(BATCH) / ACCUMULATION;
    let mut losses = Vec::new();
    for _ in 0..steps {
        let micro: Vec<_> = batches.by_ref().take(ACCUMULATION).collect();
        let (next, metrics) = step
            .step(model, &micro, |m, b| {
                batch_gradients(m, b, &MemoryOptions::default())
            })
            .unwrap();
        model = next;
        losses.push(metrics.loss);
    }
    (losses, common::named_values(&model.valid()))
}

/// The Learner: the same model, selection, optimizer settings and batches.
fn learner(
    dir: &std::path::Path,
    model: LlamaForCausalLM<A>,
    scales: HashMap<ParamId, f64>,
) -> (Vec<f64>, Vec<(String, Vec<f32>)>) {
    let optimizer = SelectiveAdamW::new(&config())
        .with_grad_accumulation(ACCUMULATION)
        .with_lr_scales(scales)
        .unwrap();
    let schedule = MicroBatchSchedule::new(config().schedule, ACCUMULATION);
    let train = BatchLoader::new(examples(), BATCH, 0, 0).unwrap();
    let valid = BatchLoader::new(examples()[..3].to_vec(), BATCH, 0, 0)
        .unwrap()
        .in_order();
    let losses = Arc::new(Mutex::new(Vec::new()));
    let recorded = Recorded {
        name: Arc::new("recorded".to_string()),
        losses: losses.clone(),
    };
    let result = SupervisedTraining::new(dir, Arc::new(train), Arc::new(valid))
        .metric_train(recorded)
        .grads_accumulation(ACCUMULATION)
        .num_epochs(EPOCHS)
        .renderer(ProgressRenderer::new())
        .with_application_logger(None)
        .launch(Learner::new(model, optimizer, schedule));
    let micro = losses.lock().unwrap().clone();
    let steps = micro
        .chunks(ACCUMULATION)
        .map(|c| c.iter().sum::<f64>() / c.len() as f64)
        .collect();
    (steps, common::named_values(&result.model))
}

#[test]
fn the_learner_gives_our_loops_losses_and_weights() {
    let device = Default::default();
    for kind in [Kind::Selected, Kind::Lora, Kind::QLora] {
        let dir = tempfile::tempdir().unwrap();
        let (model, trainable, scales) = prepared(kind);
        // Forks: each run's own autodiff nodes, the same parameters (LoRA's drawn once).
        let (own_losses, own_weights) =
            own_loop(model.clone().fork(&device), &trainable, scales.clone());
        let (learner_losses, learner_weights) = learner(dir.path(), model.fork(&device), scales);
        assert_eq!(own_losses.len(), learner_losses.len(), "{kind:?}");
        for (step, (a, b)) in own_losses.iter().zip(&learner_losses).enumerate() {
            assert!(
                (a - b).abs() <= 1e-5 * a.abs().max(1.0),
                "{kind:?} step {step}: {a} {b}"
            );
        }
        // The losses move: the steps changed the weights between them.
        assert!(own_losses.first() != own_losses.last(), "{kind:?}");
        for ((path, a), (_, b)) in own_weights.iter().zip(&learner_weights) {
            let diff = common::max_abs_diff(a, b);
            assert!(diff <= 1e-5, "{kind:?} {path}: {diff}");
        }
    }
}
