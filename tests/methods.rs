//! The five methods on the tiny Llama: what each makes trainable, what it costs, and that a
//! few steps lower the loss while frozen weights stay put.

mod common;

use common::f32_values as values;

use burn::backend::{Autodiff, Flex};
use burn::tensor::{Tensor, TensorData};
use burn_spectrum::model::{LlamaForCausalLM, ids_tensor};
use burn_spectrum::peft::LoraConfig;
use burn_spectrum::train::{
    LrSchedule, MemoryReport, Method, MicroLoss, SpectrumSource, TrainConfig, TrainStep,
};

type A = Autodiff<Flex>;

fn model() -> LlamaForCausalLM<A> {
    LlamaForCausalLM::from_pretrained(&common::fixture("models/llama_gqa"), &Default::default())
        .unwrap()
}

fn lora() -> LoraConfig {
    LoraConfig {
        r: 4,
        lora_alpha: 8.0,
        ..Default::default()
    }
}

fn methods() -> Vec<Method> {
    vec![
        Method::Full,
        Method::Spectrum(SpectrumSource::TopPercent(50)),
        Method::Lora(lora()),
        Method::QLora(lora()),
        Method::SpectrumQLora(SpectrumSource::TopPercent(50), lora()),
    ]
}

#[test]
fn each_method_trains_what_it_should() {
    let device = Default::default();
    let ids: Vec<Vec<u32>> = (0..2)
        .map(|b| (0..12).map(|t| ((t * 7 + b * 3) % 256) as u32).collect())
        .collect();
    let labels: Vec<i64> = ids.iter().flatten().map(|&i| i as i64).collect();
    let loss_of = |m: &LlamaForCausalLM<A>, _: &()| {
        Ok(MicroLoss {
            loss: LlamaForCausalLM::causal_lm_loss(
                m.forward(ids_tensor(&ids, &device).unwrap()),
                Tensor::from_data(TensorData::new(labels.clone(), [2, 12]), &device),
            )
            .unwrap(),
            grads: None,
            tokens: 22,
        })
    };
    let mut reports = Vec::new();
    for method in methods() {
        let prepared = method.prepare(model(), &device).unwrap();
        let report = MemoryReport::of(&prepared.model);
        reports.push((method.name(), report));
        // The embedding is trained by full and Spectrum (spectrum.py always unfreezes it),
        // never by the adapter methods.
        let embed_trains = prepared
            .trainable
            .contains(&prepared.model.model.embed_tokens.weight.id);
        assert_eq!(
            embed_trains,
            matches!(method, Method::Full | Method::Spectrum(_)),
            "{}",
            method.name()
        );

        let up_proj = &prepared.model.model.layers[1].mlp.up_proj;
        let up_trains = up_proj
            .weight()
            .is_some_and(|w| prepared.trainable.contains(&w.id));
        assert!(!up_trains || matches!(method, Method::Full | Method::Spectrum(_)));
        let up_before = values(up_proj.base_weight());
        let config = TrainConfig {
            schedule: LrSchedule::constant(2e-3),
            ..Default::default()
        };
        let (mut model, mut step) = TrainStep::new(prepared.model, &prepared.trainable, config);
        let mut losses = Vec::new();
        for _ in 0..4 {
            let (next, metrics) = step.step(model, &[()], loss_of).unwrap();
            model = next;
            losses.push(metrics.loss);
        }
        assert!(losses[3] < losses[0], "{}: {losses:?}", method.name());
        assert_eq!(
            step.optimizer_state_len(),
            prepared.trainable.len(),
            "{}",
            method.name()
        );
        // A base weight moves exactly when the method trains it.
        let up_after = values(model.model.layers[1].mlp.up_proj.base_weight());
        assert_eq!(up_after != up_before, up_trains, "{}", method.name());
    }

    let by_name = |name: &str| reports.iter().find(|(n, _)| n == name).unwrap().1;
    let (full, spectrum, lora, qlora, sq) = (
        by_name("full"),
        by_name("spectrum-50"),
        by_name("lora"),
        by_name("qlora"),
        by_name("spectrum-50-qlora"),
    );
    assert_eq!(full.trainable_params, full.total_params);
    assert!(spectrum.trainable_params < full.trainable_params);
    assert!(lora.trainable_params < spectrum.trainable_params);
    assert_eq!(qlora.trainable_params, lora.trainable_params);
    assert!(sq.trainable_params < qlora.trainable_params);
    assert!(qlora.weight_bytes < lora.weight_bytes);
    assert_eq!(full.optimizer_bytes, 2 * full.grad_bytes);
    assert!(spectrum.total_bytes() < full.total_bytes());
}
