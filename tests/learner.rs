//! burn-train's Learner trains the causal LM as our own loop does: the same batches, losses
//! and weights, step for step, with gradient accumulation, a schedule, clipping, a frozen part
//! and per-parameter learning-rate multipliers.
#![cfg(feature = "train")]

mod common;

use std::collections::HashMap;
use std::sync::{Arc, Mutex};

use burn::backend::{Autodiff, Flex};
use burn::module::{AutodiffModule, ParamId};
use burn::train::metric::{Adaptor, Metric, MetricMetadata, MetricName, SerializedEntry};
use burn::train::{Learner, SupervisedTraining};
use burn_spectrum::data::{Batches, Example};
use burn_spectrum::model::LlamaForCausalLM;
use burn_spectrum::nn::float_params;
use burn_spectrum::train::learner::{
    BatchLoader, LmLossValue, MicroBatchSchedule, ProgressRenderer,
};
use burn_spectrum::train::{
    LrSchedule, MemoryOptions, SelectiveAdamW, TrainConfig, TrainStep, batch_gradients,
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
    TrainConfig {
        schedule: LrSchedule::warmup_cosine(5e-3, 1, 4),
        weight_decay: 0.01,
        // An epsilon near the gradients' size and a bound above their norm: the update then
        // depends on the gradients' scale, which shows a sum taken for a mean.
        epsilon: 1e-3,
        max_grad_norm: Some(5.0),
        ..TrainConfig::default()
    }
}

/// The first decoder layer and the head train; the head at twice the rate.
fn selection(model: &LlamaForCausalLM<A>) -> (Vec<ParamId>, HashMap<ParamId, f64>) {
    let params = float_params(model);
    let trainable: Vec<ParamId> = params
        .iter()
        .filter(|p| p.path.starts_with("model.layers.0.") || p.path.starts_with("lm_head"))
        .map(|p| p.id)
        .collect();
    let scales = params
        .iter()
        .filter(|p| p.path.starts_with("lm_head"))
        .map(|p| (p.id, 2.0))
        .collect();
    (trainable, scales)
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
fn own_loop() -> (Vec<f64>, Vec<(String, Vec<f32>)>) {
    let model: LlamaForCausalLM<A> = load();
    let (trainable, scales) = selection(&model);
    let (mut model, mut step) = TrainStep::new(model, &trainable, config());
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
fn learner(dir: &std::path::Path) -> (Vec<f64>, Vec<(String, Vec<f32>)>) {
    let model: LlamaForCausalLM<A> = load();
    let (trainable, scales) = selection(&model);
    let model = burn_spectrum::train::freeze_except(model, &trainable);
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
    let dir = tempfile::tempdir().unwrap();
    let (own_losses, own_weights) = own_loop();
    let (learner_losses, learner_weights) = learner(dir.path());
    assert_eq!(own_losses.len(), learner_losses.len());
    for (step, (a, b)) in own_losses.iter().zip(&learner_losses).enumerate() {
        assert!(
            (a - b).abs() <= 1e-5 * a.abs().max(1.0),
            "step {step}: {a} {b}"
        );
    }
    // The losses move: the steps changed the weights between them.
    assert!(own_losses.first() != own_losses.last());
    for ((path, a), (_, b)) in own_weights.iter().zip(&learner_weights) {
        let diff = common::max_abs_diff(a, b);
        assert!(diff <= 1e-5, "{path}: {diff}");
    }
}
