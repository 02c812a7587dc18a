//! Dropout draws are seeded per step, so a resumed LoRA run with dropout repeats the
//! uninterrupted one. Its own test binary: the backend's random generator is global to the
//! process, and other tests drawing from it at the same time would interleave.

mod common;

use burn::backend::{Autodiff, Flex};
use burn::tensor::backend::Backend;
use burn::tensor::{Tensor, TensorData};
use burn_spectrum::data::DataPosition;
use burn_spectrum::model::{LlamaForCausalLM, ids_tensor};
use burn_spectrum::peft::LoraConfig;
use burn_spectrum::train::{LrSchedule, Method, MicroLoss, TrainConfig, TrainStep, TrainerState};

type B = Autodiff<Flex>;
type Model = LlamaForCausalLM<B>;

fn prepared(seed: u64) -> (Model, TrainStep<B, Model>) {
    let device = Default::default();
    let model =
        LlamaForCausalLM::from_pretrained(&common::fixture("models/llama_gqa"), &device).unwrap();
    // The adapters' initial A comes from the same generator: the same for every run.
    B::seed(&device, 17);
    let lora = LoraConfig {
        r: 4,
        lora_alpha: 8.0,
        lora_dropout: 0.3,
        ..Default::default()
    };
    let prepared = Method::Lora(lora).prepare(model, &device).unwrap();
    let config = TrainConfig {
        schedule: LrSchedule {
            peak_lr: 3e-3,
            warmup_steps: 1,
            total_steps: 6,
        },
        seed,
        ..Default::default()
    };
    TrainStep::new(prepared.model, &prepared.trainable, config)
}

/// Rows of token ids, trained on every next token.
struct Rows(Vec<Vec<u32>>);

fn loss_of(model: &Model, Rows(ids): &Rows) -> burn_spectrum::Result<MicroLoss<B>> {
    let device = Default::default();
    let logits = model.forward(ids_tensor(ids, &device).unwrap());
    let flat: Vec<i64> = ids.iter().flatten().map(|&i| i as i64).collect();
    let labels = Tensor::from_data(TensorData::new(flat, [ids.len(), ids[0].len()]), &device);
    Ok(MicroLoss::new(
        LlamaForCausalLM::causal_lm_loss(logits, labels).unwrap(),
        ids.len() * (ids[0].len() - 1),
    ))
}

fn run(mut model: Model, step: &mut TrainStep<B, Model>, n: usize) -> (Model, Vec<f64>) {
    let batch = Rows(
        (0..2)
            .map(|b| (0..10).map(|t| ((t * 13 + b * 29) % 256) as u32).collect())
            .collect(),
    );
    let mut losses = Vec::new();
    for _ in 0..n {
        let (next, metrics) = step
            .step(model, std::slice::from_ref(&batch), loss_of)
            .unwrap();
        model = next;
        losses.push(metrics.loss);
    }
    (model, losses)
}

#[test]
fn a_resumed_run_with_dropout_draws_what_the_straight_run_drew() {
    let (m, mut step) = prepared(5);
    let (_, straight) = run(m, &mut step, 6);

    // Another seed draws other masks: the losses depend on dropout.
    let (m, mut step) = prepared(6);
    let (_, other) = run(m, &mut step, 6);
    assert_ne!(other[1..], straight[1..]);

    let dir = tempfile::tempdir().unwrap();
    let (m, mut step) = prepared(5);
    let (m, mut losses) = run(m, &mut step, 3);
    let state = TrainerState {
        step: 3,
        data_position: DataPosition::default(),
        seed: 5,
    };
    let saved = step.save_checkpoint(&m, &state, dir.path()).unwrap();
    drop((m, step));

    let (m, step) = prepared(5);
    let (m, mut step, _) = step.resume(m, &saved, &Default::default()).unwrap();
    let (_, rest) = run(m, &mut step, 3);
    losses.extend(rest);
    assert_eq!(losses, straight);
}
