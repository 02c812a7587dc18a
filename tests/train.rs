//! TrainStep on the tiny Llama: only the selected parameters change, frozen ones cost no
//! optimizer state, the loss goes down, clipping is global, a NaN loss stops the step.

mod common;

use burn::backend::{Autodiff, Flex};
use burn::module::{Module, ModuleVisitor, Param, ParamId};
use burn::nn::{Linear, LinearConfig};
use burn::optim::GradientsParams;
use burn::tensor::{Int, Tensor, TensorData};
use burn_spectrum::Error;
use burn_spectrum::model::{LlamaForCausalLM, ids_tensor};
use burn_spectrum::spectrum::{SpectrumSelector, Threshold};
use burn_spectrum::train::{
    LrSchedule, MicroLoss, TrainConfig, TrainStep, clip_grad_norm, count_params, global_grad_norm,
};

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

fn lm_loss(model: &LlamaForCausalLM<B>, batch: &Batch) -> burn_spectrum::Result<MicroLoss<B>> {
    let device = Default::default();
    let logits = model.forward(ids_tensor(&batch.ids, &device).unwrap());
    let flat: Vec<i64> = batch.labels.iter().flatten().copied().collect();
    let labels = Tensor::<B, 2, Int>::from_data(
        TensorData::new(flat, [batch.ids.len(), batch.ids[0].len()]),
        &device,
    );
    let tokens = batch.ids.len() * (batch.ids[0].len() - 1);
    Ok(MicroLoss::new(
        LlamaForCausalLM::causal_lm_loss(logits, labels).unwrap(),
        tokens,
    ))
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
        let MicroLoss { loss, tokens, .. } = lm_loss(m, b)?;
        Ok(MicroLoss::new(loss * f32::NAN, tokens))
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
        let MicroLoss { loss, tokens, .. } = lm_loss(m, b)?;
        Ok(MicroLoss::new(loss / 0.0, tokens))
    };
    assert!(step.step(m, &batches(), nan).is_err());
    assert_eq!(files(&saved), before);
    // Only the finished checkpoint is in the folder: no temporary left behind.
    let names: Vec<String> = files(dir.path()).into_iter().map(|(n, _)| n).collect();
    assert_eq!(names, ["checkpoint-1"]);
}

/// Ten sequences of 8 to 10 tokens, trained on every token.
fn examples() -> Vec<burn_spectrum::data::Example> {
    (0..10)
        .map(|k| {
            let ids: Vec<u32> = (0..(8 + k % 3))
                .map(|t| ((t * 5 + k * 17) % 256) as u32)
                .collect();
            let labels = ids.iter().map(|&i| i as i64).collect();
            burn_spectrum::data::Example { ids, labels }
        })
        .collect()
}

/// The loss of a padded batch, as the trainer takes it.
fn data_loss(
    m: &LlamaForCausalLM<B>,
    b: &burn_spectrum::data::Batch,
) -> burn_spectrum::Result<MicroLoss<B>> {
    let device = Default::default();
    let (rows, seq) = (b.ids.len(), b.ids[0].len());
    let logits = m
        .forward_masked(
            ids_tensor(&b.ids, &device).unwrap(),
            Some(&b.attention_mask),
        )
        .unwrap();
    let flat: Vec<i64> = b.labels.iter().flatten().copied().collect();
    Ok(MicroLoss {
        loss: LlamaForCausalLM::causal_lm_loss(
            logits,
            Tensor::from_data(TensorData::new(flat, [rows, seq]), &device),
        )
        .unwrap(),
        tokens: b.target_tokens(),
        grads: None,
    })
}

#[test]
fn the_loop_checkpoints_and_a_resumed_run_continues_the_same_stream() {
    use burn_spectrum::data::Batches;
    use burn_spectrum::train::{TrainerOptions, latest_checkpoint, train};
    let examples = examples();
    let dir = tempfile::tempdir().unwrap();
    let options = TrainerOptions {
        steps: 6,
        accumulation: 2,
        checkpoint_every: Some(2),
        checkpoint_dir: dir.path().to_path_buf(),
        progress: false,
        reselect: None,
    };
    let m = model();
    let ids = selected_ids(&m);
    let (m, mut step) = TrainStep::new(m, &ids, resume_config());
    let mut batches = Batches::new(&examples, 3, 0, step.config().seed).unwrap();
    let (_, straight) = train(m, &mut step, &mut batches, data_loss, &options).unwrap();
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
    let fresh = TrainStep::new(m, &ids, resume_config());
    let (_, resumed) = resume_run(fresh, &straight.checkpoints[1], &examples, &options);
    assert_eq!(resumed.metrics, straight.metrics[4..]);
}

/// Resumes `checkpoint` onto a freshly prepared model and step and trains to the end, as a new
/// process would.
fn resume_run(
    (model, step): (LlamaForCausalLM<B>, TrainStep<B, LlamaForCausalLM<B>>),
    checkpoint: &std::path::Path,
    examples: &[burn_spectrum::data::Example],
    options: &burn_spectrum::train::TrainerOptions,
) -> (
    burn_spectrum::train::TrainerState,
    burn_spectrum::train::TrainReport,
) {
    let (model, mut step, state) = step.resume(model, checkpoint, &Default::default()).unwrap();
    let mut batches = burn_spectrum::data::Batches::new(examples, 3, 0, state.seed)
        .unwrap()
        .resume(state.data_position);
    let other_dir = tempfile::tempdir().unwrap();
    let options = burn_spectrum::train::TrainerOptions {
        checkpoint_dir: other_dir.path().to_path_buf(),
        ..options.clone()
    };
    let (_, report) =
        burn_spectrum::train::train(model, &mut step, &mut batches, data_loss, &options).unwrap();
    (state, report)
}

/// The ids of the parameters at `paths`, in that order.
fn ids_at(model: &LlamaForCausalLM<B>, paths: &[&str]) -> Vec<ParamId> {
    let params = burn_spectrum::nn::float_params(model);
    paths
        .iter()
        .map(|path| {
            params
                .iter()
                .find(|p| p.path == *path)
                .unwrap_or_else(|| panic!("no parameter {path}"))
                .id
        })
        .collect()
}

#[test]
fn each_parameter_steps_at_its_own_learning_rate_multiple() {
    let paths = [
        "model.layers.0.self_attn.q_proj.weight",
        "model.layers.0.self_attn.k_proj.weight",
        "model.layers.0.self_attn.v_proj.weight",
    ];
    let m = model();
    let ids = ids_at(&m, &paths);
    let before = snapshot(&m);
    let lr = 1e-3;
    let config = TrainConfig {
        schedule: LrSchedule::constant(lr),
        max_grad_norm: None,
        ..Default::default()
    };
    let (m, mut step) = TrainStep::new(m, &ids, config);
    // q twice the rate, k the schedule's (no entry), v half.
    let scales = [(ids[0], 2.0), (ids[2], 0.5)].into_iter().collect();
    step.set_lr_scales(scales).unwrap();
    let (m, _) = step.step(m, &batches(), lm_loss).unwrap();
    let after = snapshot(&m);
    // AdamW's first step moves each weight by lr * g / (|g| + eps): lr for any gradient far
    // above eps, so the median move is the parameter's rate.
    for (path, want) in paths.iter().zip([2.0 * lr, lr, 0.5 * lr]) {
        let old = &before.iter().find(|p| p.0 == *path).unwrap().2;
        let new = &after.iter().find(|p| p.0 == *path).unwrap().2;
        let mut moves: Vec<f64> = old
            .iter()
            .zip(new)
            .map(|(a, b)| (*a as f64 - *b as f64).abs())
            .collect();
        moves.sort_by(f64::total_cmp);
        let median = moves[moves.len() / 2];
        assert!(
            common::close(median, want, 1e-3),
            "{path}: median move {median}, want {want}"
        );
    }
    assert!(matches!(
        step.set_lr_scales([(ids[0], -1.0)].into_iter().collect()),
        Err(Error::InvalidSetting { .. })
    ));
}

#[test]
fn retargeting_keeps_state_of_the_kept_and_drops_the_rest() {
    let paths = [
        "model.layers.0.self_attn.q_proj.weight",
        "model.layers.0.self_attn.k_proj.weight",
        "model.layers.1.mlp.up_proj.weight",
    ];
    let m = model();
    let ids = ids_at(&m, &paths);
    let (m, mut step) = TrainStep::new(m, &ids[..2], resume_config());
    let (m, _) = run_steps(m, &mut step, &batches(), 2);
    assert_eq!(step.optimizer_state_len(), 2);
    let m = step.retarget(m, &ids[1..]);
    // k kept its state; q lost it; up has none until it steps.
    assert_eq!(step.optimizer_state_len(), 1);
    let q_trained = snapshot(&m);
    let (m, _) = run_steps(m, &mut step, &batches(), 1);
    assert_eq!(step.optimizer_state_len(), 2);
    assert_eq!(step.trainable().len(), 2);
    assert!(ids.iter().all(|id| step.trained().contains(id)));
    let after = snapshot(&m);
    for ((path, id, old), (_, _, new)) in q_trained.iter().zip(&after) {
        if ids[1..].contains(id) {
            assert_ne!(old, new, "{path} trains after retargeting");
        } else {
            assert_eq!(old, new, "{path} is frozen after retargeting");
        }
    }
}

#[test]
fn reselecting_between_epochs_changes_what_trains_and_resumes_exactly() {
    use burn_spectrum::data::Batches;
    use burn_spectrum::train::{Reselect, SnrLrScaling, TrainerOptions, train};
    // 10 examples in batches of 3 (3 + 3 + 3 + 1) and 2 micro-batches a step: an epoch
    // completes every 2 steps.
    let examples = examples();
    let device = Default::default();
    // Four layers, so that a type has several trained weights to scale against each other.
    let weights = tempfile::tempdir().unwrap();
    let mut config = model().config().clone();
    config.num_hidden_layers = 4;
    config
        .init::<B>(&device)
        .save_pretrained(weights.path())
        .unwrap();
    let start = || {
        let m = LlamaForCausalLM::<B>::from_pretrained(weights.path(), &device).unwrap();
        let report = SpectrumSelector::new(Threshold::Spectrum)
            .scan_module(&m)
            .unwrap();
        let ids: Vec<ParamId> = report
            .select(75)
            .unwrap()
            .param_ids(&m)
            .into_iter()
            .collect();
        TrainStep::new(m, &ids, resume_config())
    };
    let dir = tempfile::tempdir().unwrap();
    let options = TrainerOptions {
        steps: 6,
        accumulation: 2,
        checkpoint_every: Some(2),
        checkpoint_dir: dir.path().to_path_buf(),
        progress: false,
        // Fewer than the 75% trained at the start, so some weights must stop training.
        reselect: Some(Reselect {
            top_percent: 50,
            snr_lr: Some(SnrLrScaling::default()),
        }),
    };
    let (m, mut step) = start();
    let mut batches = Batches::new(&examples, 3, 0, step.config().seed).unwrap();
    let (m, straight) = train(m, &mut step, &mut batches, data_loss, &options).unwrap();
    let at: Vec<(usize, u64)> = straight
        .reselections
        .iter()
        .map(|r| (r.step, r.epoch))
        .collect();
    assert_eq!(at, [(2, 1), (4, 2), (6, 3)]);
    let first = &straight.reselections[0];
    assert!(
        !first.removed.is_empty(),
        "75% -> 50% must drop some weights"
    );
    // State for every trainable weight but those the last re-selection (at the end) added.
    let last = &straight.reselections[2];
    assert_eq!(
        step.optimizer_state_len(),
        step.trainable().len() - last.added.len()
    );
    assert!(!step.lr_scales().is_empty());
    assert!(step.lr_scales().values().any(|&s| s != 1.0));
    // The final trainable set is the top 25% of the final weights' scan.
    let report = SpectrumSelector::new(Threshold::Spectrum)
        .scan_module(&m)
        .unwrap();
    let mut want: Vec<ParamId> = report
        .select(50)
        .unwrap()
        .param_ids(&m)
        .into_iter()
        .collect();
    let mut have = step.trainable().to_vec();
    want.sort();
    have.sort();
    assert_eq!(have, want);

    // Resuming after the first re-selection: the weights trained then dropped, the new set
    // and its multipliers all come back from the checkpoint.
    let (state, resumed) = resume_run(start(), &straight.checkpoints[0], &examples, &options);
    assert_eq!(state.step, 2);
    assert_eq!(resumed.metrics, straight.metrics[2..]);
    assert_eq!(resumed.reselections, straight.reselections[1..]);
}

/// Not our Llama: any Burn module.
mod two_layers {
    use burn::module::Module;
    use burn::nn::Linear;
    use burn::tensor::backend::Backend;

    #[derive(Module, Debug)]
    pub struct TwoLayers<B: Backend> {
        pub first: Linear<B>,
        pub second: Linear<B>,
    }
}
use two_layers::TwoLayers;

#[test]
fn any_burn_module_trains_only_what_is_selected() {
    let device = Default::default();
    let net = TwoLayers {
        first: LinearConfig::new(4, 8).init(&device),
        second: LinearConfig::new(8, 1).init(&device),
    };
    let trainable = [net.second.weight.id];
    let first = net.first.weight.val().into_data();
    let second_bias = net.second.bias.as_ref().unwrap().val().into_data();
    let second = net.second.weight.val().into_data();
    let config = TrainConfig {
        schedule: LrSchedule::constant(1e-2),
        ..Default::default()
    };
    let (mut net, mut step) = TrainStep::new(net, &trainable, config);
    let x = Tensor::<B, 2>::from_data(
        TensorData::new((0..12).map(|v| v as f32 / 6.0 - 1.0).collect(), [3, 4]),
        &device,
    );
    let y = Tensor::<B, 2>::from_data(TensorData::new(vec![1.0f32, -1.0, 0.5], [3, 1]), &device);
    let loss_of = |n: &TwoLayers<B>, _: &()| {
        let error = n.second.forward(n.first.forward(x.clone())) - y.clone();
        Ok(MicroLoss::new((error.clone() * error).mean(), 3))
    };
    let mut losses = Vec::new();
    for _ in 0..5 {
        let (next, metrics) = step.step(net, &[()], loss_of).unwrap();
        net = next;
        losses.push(metrics.loss);
    }
    assert!(losses[4] < losses[0], "{losses:?}");
    assert_eq!(step.optimizer_state_len(), 1);
    assert_eq!(net.first.weight.val().into_data(), first);
    assert_eq!(net.second.bias.unwrap().val().into_data(), second_bias);
    assert_ne!(net.second.weight.val().into_data(), second);
}
