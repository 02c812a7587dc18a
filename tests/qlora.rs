//! QLoRA: an NF4 base (packed, dequantized on the fly) under LoRA adapters.

mod common;

use common::f32_values as values;

use burn::backend::{Autodiff, Flex};
use burn::module::ParamId;
use burn::tensor::{Distribution, Tensor, TensorData};
use burn_spectrum::model::{LlamaForCausalLM, ids_tensor};
use burn_spectrum::nn::Projection;
use burn_spectrum::peft::{LoraConfig, TargetModules, add_lora, quantize_nf4};
use burn_spectrum::train::{LrSchedule, MicroLoss, TrainConfig, TrainStep, trainable_params};

type B = Flex;
type A = Autodiff<Flex>;

#[test]
fn a_quantized_projection_computes_with_its_dequantized_weight() {
    let device = Default::default();
    let dense: Tensor<B, 2> = Tensor::random([64, 32], Distribution::Normal(0.0, 0.05), &device);
    let mut quantized = Projection::from_weight(dense);
    quantized.quantize_nf4().unwrap();
    assert!(quantized.weight().is_none());
    let as_dense = Projection::<B>::from_weight(quantized.base_weight());
    let x: Tensor<B, 3> = Tensor::random([2, 5, 64], Distribution::Normal(0.0, 1.0), &device);
    assert_eq!(
        values(quantized.forward(x.clone())),
        values(as_dense.forward(x))
    );
}

#[test]
fn qlora_trains_the_adapters_over_a_frozen_nf4_base() {
    let device = Default::default();
    let mut model =
        LlamaForCausalLM::<A>::from_pretrained(&common::fixture("models/llama_gqa"), &device)
            .unwrap();
    let quantized = quantize_nf4(&mut model, &TargetModules::AllLinear).unwrap();
    assert_eq!(quantized.len(), 14);
    let config = LoraConfig {
        r: 4,
        lora_alpha: 16.0,
        ..Default::default()
    };
    let (model, targeted) = add_lora(model, &config, &device);
    assert_eq!(targeted, quantized);
    let trainable: Vec<ParamId> = trainable_params(&model);
    // Only the adapters: A and B of 14 projections.
    assert_eq!(trainable.len(), 28);

    let base_before = values(model.model.layers[0].self_attn.q_proj.base_weight());
    let train = TrainConfig {
        schedule: LrSchedule::constant(5e-3),
        ..Default::default()
    };
    let (mut model, mut step) = TrainStep::new(model, &trainable, train);
    let ids: Vec<Vec<u32>> = vec![(0..12).map(|t| (t * 11 % 256) as u32).collect(); 2];
    let labels: Vec<i64> = ids.iter().flatten().map(|&i| i as i64).collect();
    let loss_of = |m: &LlamaForCausalLM<A>, _: &()| {
        let logits = m.forward(ids_tensor(&ids, &device).unwrap());
        let labels = Tensor::from_data(TensorData::new(labels.clone(), [2, 12]), &device);
        Ok(MicroLoss::new(
            LlamaForCausalLM::causal_lm_loss(logits, labels).unwrap(),
            22,
        ))
    };
    let mut losses = Vec::new();
    for _ in 0..5 {
        let (next, metrics) = step.step(model, &[()], loss_of).unwrap();
        model = next;
        losses.push(metrics.loss);
    }
    assert!(losses[4] < losses[0], "{losses:?}");
    assert_eq!(step.optimizer_state_len(), 28);
    // The NF4 base did not move.
    assert_eq!(
        values(model.model.layers[0].self_attn.q_proj.base_weight()),
        base_before
    );
}
