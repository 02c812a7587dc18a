//! TrainStep on the tiny Llama: only the selected parameters change, frozen ones cost no
//! optimizer state, the loss goes down, clipping is global, a NaN loss stops the step.

mod common;

use burn::backend::{Autodiff, Flex};
use burn::module::{Module, ModuleVisitor, Param, ParamId};
use burn::nn::{Linear, LinearConfig};
use burn::optim::GradientsParams;
use burn::tensor::{Int, Tensor, TensorData};
use burn_spectrum::model::{LlamaForCausalLM, ids_tensor};
use burn_spectrum::train::{
    LrSchedule, MicroLoss, TrainConfig, TrainStep, clip_grad_norm, count_params, global_grad_norm,
};
use burn_spectrum::{Error, SpectrumSelector, Threshold};

type B = Autodiff<Flex>;

fn model() -> LlamaForCausalLM<B> {
    LlamaForCausalLM::from_pretrained(&common::fixture("models/llama_gqa"), &Default::default())
        .unwrap()
}

/// Every float parameter's path and values.
fn snapshot(model: &LlamaForCausalLM<B>) -> Vec<(String, ParamId, Vec<f32>)> {
    struct Snap(Vec<String>, Vec<(String, ParamId, Vec<f32>)>);
    impl ModuleVisitor<B> for Snap {
        fn enter_module(&mut self, name: &str, _: &str) {
            self.0.push(name.into());
        }
        fn exit_module(&mut self, _: &str, _: &str) {
            self.0.pop();
        }
        fn visit_float<const D: usize>(&mut self, param: &Param<Tensor<B, D>>) {
            let values = param
                .val()
                .into_data()
                .convert::<f32>()
                .into_vec::<f32>()
                .unwrap();
            self.1.push((self.0.join("."), param.id, values));
        }
    }
    let mut snap = Snap(Vec::new(), Vec::new());
    model.visit(&mut snap);
    snap.1
}

struct Batch {
    ids: Vec<Vec<u32>>,
    labels: Vec<Vec<i64>>,
}

fn batches() -> Vec<Batch> {
    (0..2)
        .map(|k| {
            let ids: Vec<Vec<u32>> = (0..2)
                .map(|b| {
                    (0..12)
                        .map(|t| ((t * 7 + b * 31 + k * 13) % 256) as u32)
                        .collect()
                })
                .collect();
            let labels = ids
                .iter()
                .map(|r| r.iter().map(|&i| i as i64).collect())
                .collect();
            Batch { ids, labels }
        })
        .collect()
}

fn lm_loss(model: &LlamaForCausalLM<B>, batch: &Batch) -> MicroLoss<B> {
    let device = Default::default();
    let logits = model.forward(ids_tensor(&batch.ids, &device));
    let flat: Vec<i64> = batch.labels.iter().flatten().copied().collect();
    let labels = Tensor::<B, 2, Int>::from_data(
        TensorData::new(flat, [batch.ids.len(), batch.ids[0].len()]),
        &device,
    );
    let tokens = batch.ids.len() * (batch.ids[0].len() - 1);
    MicroLoss {
        loss: LlamaForCausalLM::causal_lm_loss(logits, labels),
        tokens,
    }
}

#[test]
fn only_selected_parameters_train_and_hold_optimizer_state() {
    let model = model();
    let report = SpectrumSelector::new(Threshold::Spectrum)
        .scan_module(&model)
        .unwrap();
    let selection = report.select(50).unwrap();
    let selected: Vec<ParamId> = selection.param_ids(&model).into_iter().collect();
    assert!(!selected.is_empty());

    let before = snapshot(&model);
    let config = TrainConfig {
        schedule: LrSchedule::constant(1e-3),
        ..Default::default()
    };
    let (mut model, mut step) = TrainStep::new(model, &selected, config);
    let (trainable, total) = count_params(&model);
    assert!(trainable > 0 && trainable < total);
    let data = batches();
    let mut losses = Vec::new();
    for _ in 0..6 {
        let (next, metrics) = step.step(model, &data, lm_loss).unwrap();
        model = next;
        assert_eq!(metrics.tokens, 2 * 2 * 11);
        losses.push(metrics.loss);
    }
    assert!(losses[5] < losses[0], "the loss must go down: {losses:?}");
    // State only for the selected tensors: AdamW keeps one record per trainable parameter.
    assert_eq!(step.optimizer_state_len(), selected.len());

    let after = snapshot(&model);
    for ((name, id, old), (_, _, new)) in before.iter().zip(&after) {
        if selected.contains(id) {
            assert_ne!(old, new, "{name} is selected and must change");
        } else {
            assert_eq!(old, new, "{name} is frozen and must stay bit-identical");
        }
    }
    // Spectrum's own names are the model's: a selected projection is among them.
    assert!(
        after
            .iter()
            .any(|(name, id, _)| name.ends_with("_proj.weight") && selected.contains(id))
    );
}

#[test]
fn clipping_uses_the_global_norm() {
    // loss = sum(x @ W), so dL/dW = x^T @ 1: each entry of column j is sum of x's column i.
    let device = Default::default();
    let linear: Linear<B> = LinearConfig::new(3, 2).with_bias(false).init(&device);
    let x = Tensor::<B, 2>::from_data(
        TensorData::new(vec![1.0f32, 2.0, 3.0, 4.0, 5.0, 6.0], [2, 3]),
        &device,
    );
    let mut grads = linear.forward(x).sum().backward();
    let mut grads = GradientsParams::from_module(&mut grads, &linear);
    // Column sums of x: 5, 7, 9, each repeated for the 2 outputs.
    let want = (2.0f64 * (25.0 + 49.0 + 81.0)).sqrt();
    assert!((global_grad_norm(&linear, &grads) - want).abs() < 1e-4);
    let before = clip_grad_norm(&linear, &mut grads, 1.0);
    assert!((before - want).abs() < 1e-4);
    assert!((global_grad_norm(&linear, &grads) - 1.0).abs() < 1e-5);
    // A norm already below the limit is left alone.
    assert!((clip_grad_norm(&linear, &mut grads, 10.0) - 1.0).abs() < 1e-5);
    assert!((global_grad_norm(&linear, &grads) - 1.0).abs() < 1e-5);
}

#[test]
fn a_nan_loss_stops_the_step_and_returns_the_model() {
    let model = model();
    let all: Vec<ParamId> = snapshot(&model).into_iter().map(|(_, id, _)| id).collect();
    let before = snapshot(&model);
    let (model, mut step) = TrainStep::new(model, &all, TrainConfig::default());
    let nan_loss = |m: &LlamaForCausalLM<B>, b: &Batch| {
        let MicroLoss { loss, tokens } = lm_loss(m, b);
        MicroLoss {
            loss: loss * f32::NAN,
            tokens,
        }
    };
    let failure = step.step(model, &batches(), nan_loss).unwrap_err();
    assert!(
        matches!(failure.error, Error::NonFiniteLoss { step: 0, .. }),
        "{:?}",
        failure.error
    );
    assert_eq!(step.steps_done(), 0);
    assert_eq!(step.optimizer_state_len(), 0);
    let after = snapshot(&failure.model);
    assert!(before.iter().zip(&after).all(|(a, b)| a.2 == b.2));
}

fn run_steps(
    mut model: LlamaForCausalLM<B>,
    step: &mut TrainStep<B, LlamaForCausalLM<B>>,
    data: &[Batch],
    n: usize,
) -> (LlamaForCausalLM<B>, Vec<f64>) {
    let mut losses = Vec::new();
    for _ in 0..n {
        let (next, metrics) = step.step(model, data, lm_loss).unwrap();
        model = next;
        losses.push(metrics.loss);
    }
    (model, losses)
}

fn resume_config() -> TrainConfig {
    TrainConfig {
        schedule: LrSchedule {
            peak_lr: 2e-3,
            warmup_steps: 2,
            total_steps: 6,
        },
        weight_decay: 0.01,
        max_grad_norm: Some(0.5),
        ..Default::default()
    }
}

fn selected_ids(model: &LlamaForCausalLM<B>) -> Vec<ParamId> {
    let report = SpectrumSelector::new(Threshold::Spectrum)
        .scan_module(model)
        .unwrap();
    report
        .select(25)
        .unwrap()
        .param_ids(model)
        .into_iter()
        .collect()
}

#[test]
fn six_steps_equal_three_then_resume_then_three() {
    use burn_spectrum::data::DataPosition;
    use burn_spectrum::train::{TrainerState, latest_checkpoint};
    let data = batches();
    let straight_model = model();
    let ids = selected_ids(&straight_model);
    let (m, mut step) = TrainStep::new(straight_model, &ids, resume_config());
    let (_, straight) = run_steps(m, &mut step, &data, 6);

    let dir = tempfile::tempdir().unwrap();
    let first = model();
    let ids = selected_ids(&first);
    let (m, mut step) = TrainStep::new(first, &ids, resume_config());
    let (m, mut losses) = run_steps(m, &mut step, &data, 3);
    let state = TrainerState {
        step: step.steps_done(),
        data_position: DataPosition::default(),
        seed: 0,
    };
    let saved = step.save_checkpoint(&m, &state, dir.path()).unwrap();
    assert_eq!(latest_checkpoint(dir.path()).unwrap(), saved);
    drop((m, step));

    // A new process would start here: the model as loaded at the start, a fresh step.
    let again = model();
    let ids = selected_ids(&again);
    let (m, step) = TrainStep::new(again, &ids, resume_config());
    let (m, mut step, restored) = step.resume(m, &saved, &Default::default()).unwrap();
    assert_eq!(restored, state);
    assert_eq!(step.steps_done(), 3);
    let (_, rest) = run_steps(m, &mut step, &data, 3);
    losses.extend(rest);
    assert_eq!(losses, straight);
}

#[test]
fn a_failed_step_leaves_the_last_checkpoint_intact() {
    use burn_spectrum::data::DataPosition;
    use burn_spectrum::train::TrainerState;
    let dir = tempfile::tempdir().unwrap();
    let m = model();
    let ids = selected_ids(&m);
    let (m, mut step) = TrainStep::new(m, &ids, resume_config());
    let (m, _) = run_steps(m, &mut step, &batches(), 1);
    let state = TrainerState {
        step: 1,
        data_position: DataPosition::default(),
        seed: 0,
    };
    let saved = step.save_checkpoint(&m, &state, dir.path()).unwrap();
    let files = |p: &std::path::Path| {
        let mut v: Vec<(String, Vec<u8>)> = std::fs::read_dir(p)
            .unwrap()
            .map(|e| {
                let e = e.unwrap();
                (
                    e.file_name().to_string_lossy().into_owned(),
                    std::fs::read(e.path()).unwrap_or_default(),
                )
            })
            .collect();
        v.sort();
        v
    };
    let before = files(&saved);
    let nan = |m: &LlamaForCausalLM<B>, b: &Batch| {
        let MicroLoss { loss, tokens } = lm_loss(m, b);
        MicroLoss {
            loss: loss / 0.0,
            tokens,
        }
    };
    assert!(step.step(m, &batches(), nan).is_err());
    assert_eq!(files(&saved), before);
    // Only the finished checkpoint is in the folder: no temporary left behind.
    let names: Vec<String> = files(dir.path()).into_iter().map(|(n, _)| n).collect();
    assert_eq!(names, ["checkpoint-1"]);
}

#[test]
fn the_loop_checkpoints_and_a_resumed_run_continues_the_same_stream() {
    use burn_spectrum::data::{Batch as DataBatch, Batches, Example};
    use burn_spectrum::train::{TrainerOptions, latest_checkpoint, train};
    let examples: Vec<Example> = (0..10)
        .map(|k| {
            let ids: Vec<u32> = (0..(8 + k % 3))
                .map(|t| ((t * 5 + k * 17) % 256) as u32)
                .collect();
            let labels = ids.iter().map(|&i| i as i64).collect();
            Example { ids, labels }
        })
        .collect();
    let device = Default::default();
    let loss_of = |m: &LlamaForCausalLM<B>, b: &DataBatch| {
        let (rows, seq) = (b.ids.len(), b.ids[0].len());
        let logits = m.forward_masked(ids_tensor(&b.ids, &device), Some(&b.attention_mask));
        let flat: Vec<i64> = b.labels.iter().flatten().copied().collect();
        MicroLoss {
            loss: LlamaForCausalLM::causal_lm_loss(
                logits,
                Tensor::from_data(TensorData::new(flat, [rows, seq]), &device),
            ),
            tokens: b.target_tokens(),
        }
    };
    let dir = tempfile::tempdir().unwrap();
    let options = TrainerOptions {
        steps: 6,
        accumulation: 2,
        checkpoint_every: Some(2),
        checkpoint_dir: dir.path().to_path_buf(),
        seed: 9,
        progress: false,
    };
    let m = model();
    let ids = selected_ids(&m);
    let (m, mut step) = TrainStep::new(m, &ids, resume_config());
    let mut batches = Batches::new(&examples, 3, 0, options.seed).unwrap();
    let (_, straight) = train(m, &mut step, &mut batches, loss_of, &options).unwrap();
    assert_eq!(straight.metrics.len(), 6);
    let names: Vec<String> = straight
        .checkpoints
        .iter()
        .map(|p| p.file_name().unwrap().to_string_lossy().into_owned())
        .collect();
    assert_eq!(names, ["checkpoint-2", "checkpoint-4", "checkpoint-6"]);
    assert_eq!(
        latest_checkpoint(dir.path()).unwrap(),
        straight.checkpoints[2]
    );

    // Resume from step 4 as a new run would: fresh model, fresh step, the saved data position.
    let m = model();
    let ids = selected_ids(&m);
    let (m, step) = TrainStep::new(m, &ids, resume_config());
    let (m, mut step, state) = step.resume(m, &straight.checkpoints[1], &device).unwrap();
    let mut batches = Batches::new(&examples, 3, 0, state.seed)
        .unwrap()
        .resume(state.data_position);
    let other_dir = tempfile::tempdir().unwrap();
    let options = TrainerOptions {
        checkpoint_dir: other_dir.path().to_path_buf(),
        ..options
    };
    let (_, resumed) = train(m, &mut step, &mut batches, loss_of, &options).unwrap();
    assert_eq!(resumed.metrics, straight.metrics[4..]);
}
