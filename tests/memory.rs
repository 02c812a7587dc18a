//! The memory-saving routes give the loss and gradients of the plain one: the loss over chunks
//! of positions, gradient checkpointing, and loading straight to 4 bits.

mod common;

use burn::backend::{Autodiff, Flex};
use burn::module::{ModuleVisitor, Param};
use burn::optim::GradientsParams;
use burn::tensor::{ElementConversion, Tensor};
use burn_spectrum::Error;
use burn_spectrum::data::Batch;
use burn_spectrum::model::{IGNORE_INDEX, LlamaForCausalLM};
use burn_spectrum::peft::{LoraConfig, TargetModules, quantize_nf4};
use burn_spectrum::train::{
    LrSchedule, MemoryOptions, Method, MicroLoss, SpectrumSource, TrainConfig, TrainStep,
    batch_gradients, batch_loss,
};

type A = Autodiff<Flex>;

fn model(name: &str) -> LlamaForCausalLM<A> {
    LlamaForCausalLM::from_pretrained(&common::fixture(name), &Default::default()).unwrap()
}

/// Two rows, the second padded, with a masked prompt: every path of the loss is exercised.
fn batch() -> Batch {
    let ids: Vec<Vec<u32>> = (0..2)
        .map(|b| {
            (0..13)
                .map(|t| ((t * 7 + b * 5 + 3) % 256) as u32)
                .collect()
        })
        .collect();
    let mut attention_mask = vec![vec![1; 13]; 2];
    let mut labels: Vec<Vec<i64>> = ids
        .iter()
        .map(|r| r.iter().map(|&i| i as i64).collect())
        .collect();
    for t in 9..13 {
        attention_mask[1][t] = 0;
        labels[1][t] = IGNORE_INDEX;
    }
    labels[0][..3].fill(IGNORE_INDEX);
    Batch {
        ids,
        attention_mask,
        labels,
    }
}

/// Each parameter's gradient values, in the model's visiting order (`None`: no gradient).
fn gradient_values(model: &LlamaForCausalLM<A>, grads: &GradientsParams) -> Vec<Option<Vec<f32>>> {
    struct Collect<'a> {
        grads: &'a GradientsParams,
        values: Vec<Option<Vec<f32>>>,
    }
    impl ModuleVisitor<A> for Collect<'_> {
        fn visit_float<const D: usize>(&mut self, param: &Param<Tensor<A, D>>) {
            let grad = self.grads.get::<Flex, D>(param.id);
            self.values
                .push(grad.map(|g| g.into_data().convert::<f32>().to_vec().unwrap()));
        }
    }
    let mut collect = Collect {
        grads,
        values: Vec::new(),
    };
    burn::module::Module::visit(model, &mut collect);
    collect.values
}

/// `(loss, gradients)` by the plain route: the full logits and one backward pass.
fn plain(model: &LlamaForCausalLM<A>) -> (f64, Vec<Option<Vec<f32>>>) {
    let MicroLoss { loss, .. } = batch_loss(model, &batch()).unwrap();
    let value: f64 = loss.clone().into_scalar().elem();
    let grads = GradientsParams::from_grads(loss.backward(), model);
    (value, gradient_values(model, &grads))
}

fn pieces(model: &LlamaForCausalLM<A>, options: MemoryOptions) -> (f64, Vec<Option<Vec<f32>>>) {
    let micro = batch_gradients(model, &batch(), &options).unwrap();
    assert_eq!(micro.tokens, batch().target_tokens());
    let value: f64 = micro.loss.into_scalar().elem();
    (value, gradient_values(model, &micro.grads.unwrap()))
}

/// Same loss (1e-6 relative) and, parameter by parameter, the same gradients (max abs
/// difference within 1e-5 of the gradient's largest value).
fn assert_same(got: (f64, Vec<Option<Vec<f32>>>), want: (f64, Vec<Option<Vec<f32>>>)) {
    assert!(
        common::close(got.0, want.0, 1e-6),
        "loss {} vs {}",
        got.0,
        want.0
    );
    assert_eq!(got.1.len(), want.1.len());
    let mut compared = 0;
    for (index, (g, w)) in got.1.iter().zip(&want.1).enumerate() {
        match (g, w) {
            (None, None) => {}
            (Some(g), Some(w)) => {
                let scale = w.iter().fold(0f32, |m, v| m.max(v.abs())).max(1e-12);
                let diff = common::max_abs_diff(g, w);
                assert!(
                    diff <= 1e-5 * scale,
                    "parameter {index}: {diff} (scale {scale})"
                );
                compared += 1;
            }
            _ => panic!("parameter {index}: a gradient on one route only"),
        }
    }
    assert!(compared > 0, "no gradient compared");
}

fn lora() -> LoraConfig {
    LoraConfig {
        r: 4,
        lora_alpha: 8.0,
        ..Default::default()
    }
}

/// The model after one step of `method`, so that LoRA's B (zero at first) is not zero and
/// every adapter has a gradient.
fn stepped(name: &str, method: Method) -> LlamaForCausalLM<A> {
    let device = Default::default();
    let prepared = method.prepare(model(name), &device).unwrap();
    let config = TrainConfig {
        schedule: LrSchedule::constant(1e-2),
        ..Default::default()
    };
    let (model, mut step) = TrainStep::new(prepared.model, &prepared.trainable, config);
    step.step(model, &[batch()], batch_loss).unwrap().0
}

#[test]
fn the_chunked_loss_gives_the_plain_loss_and_gradients() {
    for name in ["models/llama_gqa", "models/llama_tied"] {
        let model = model(name);
        let want = plain(&model);
        for chunk in [1, 5, 24, 1000] {
            let options = MemoryOptions {
                loss_chunk: Some(chunk),
                ..Default::default()
            };
            assert_same(pieces(&model, options), want.clone());
        }
    }
}

#[test]
fn gradient_checkpointing_gives_the_plain_loss_and_gradients() {
    let options = MemoryOptions {
        gradient_checkpointing: true,
        loss_chunk: Some(7),
    };
    for name in ["models/llama_gqa", "models/llama_tied"] {
        let model = model(name);
        assert_same(pieces(&model, options), plain(&model));
    }
    let methods = [
        Method::Spectrum(SpectrumSource::TopPercent(50)),
        Method::Lora(lora()),
        Method::QLora(lora()),
    ];
    for method in methods {
        let model = stepped("models/llama_gqa", method);
        assert_same(pieces(&model, options), plain(&model));
    }
}

#[test]
fn steps_on_precomputed_gradients_follow_the_plain_steps() {
    let device = Default::default();
    // Prepared once: the adapters are drawn from the backend's generator, which tests running
    // beside this one use too.
    let prepared = Method::Lora(lora())
        .prepare(model("models/llama_gqa"), &device)
        .unwrap();
    let run = |options: Option<MemoryOptions>| {
        let (mut model, mut step) = TrainStep::new(
            prepared.model.clone(),
            &prepared.trainable,
            TrainConfig::default(),
        );
        let mut losses = Vec::new();
        for _ in 0..3 {
            // Two micro-batches: the precomputed gradients are weighted as the losses are.
            let micro = [batch(), batch()];
            let (next, metrics) = match options {
                Some(options) => step.step(model, &micro, |m, b| batch_gradients(m, b, &options)),
                None => step.step(model, &micro, batch_loss),
            }
            .unwrap();
            model = next;
            losses.push((metrics.loss, metrics.grad_norm));
        }
        losses
    };
    let want = run(None);
    for options in [
        MemoryOptions::default(),
        MemoryOptions {
            gradient_checkpointing: true,
            loss_chunk: Some(3),
        },
    ] {
        let got = run(Some(options));
        for ((loss, norm), (want_loss, want_norm)) in got.iter().zip(&want) {
            // The gradient norm shows the micro-batches' weighting.
            assert!(
                common::close(*norm, *want_norm, 1e-5),
                "{got:?} vs {want:?}"
            );
            assert!(
                common::close(*loss, *want_loss, 1e-5),
                "{got:?} vs {want:?}"
            );
        }
    }
}

#[test]
fn loading_straight_to_nf4_quantizes_as_quantizing_after_loading() {
    let device = Default::default();
    let dir = common::fixture("models/llama_gqa");
    let streamed = LlamaForCausalLM::<A>::from_pretrained_nf4(&dir, &device, |path| {
        TargetModules::AllLinear.matches(path)
    })
    .unwrap();
    let mut quantized = model("models/llama_gqa");
    quantize_nf4(&mut quantized, &TargetModules::AllLinear).unwrap();
    let (streamed, quantized) = (streamed.projections(), quantized.projections());
    assert_eq!(streamed.len(), quantized.len());
    let mut nf4 = 0;
    for ((path, s), (_, q)) in streamed.iter().zip(&quantized) {
        assert_eq!(s.nf4().is_some(), q.nf4().is_some(), "{path}");
        nf4 += usize::from(s.nf4().is_some());
        assert_eq!(
            common::f32_values(s.base_weight()),
            common::f32_values(q.base_weight()),
            "{path}"
        );
    }
    assert_eq!(nf4, 14);
}

#[test]
fn the_qlora_methods_load_to_what_they_prepare() {
    let device = Default::default();
    let dir = common::fixture("models/llama_gqa");
    for method in [
        Method::QLora(lora()),
        Method::SpectrumQLora(SpectrumSource::TopPercent(50), lora()),
    ] {
        let loaded = method.load::<A>(&dir, &device).unwrap();
        let prepared = method.prepare(model("models/llama_gqa"), &device).unwrap();
        let adapted = |m: &LlamaForCausalLM<A>| -> Vec<(String, bool, bool)> {
            m.projections()
                .into_iter()
                .map(|(path, p)| (path, p.nf4().is_some(), p.lora().is_some()))
                .collect()
        };
        assert_eq!(adapted(&loaded.model), adapted(&prepared.model));
        assert_eq!(loaded.trainable.len(), prepared.trainable.len());
        // LoRA's B starts at zero: the losses are the NF4 base's, the same on both routes.
        let loss = |m: &LlamaForCausalLM<A>| -> f64 {
            batch_loss(m, &batch()).unwrap().loss.into_scalar().elem()
        };
        assert_eq!(loss(&loaded.model), loss(&prepared.model));
    }
}

#[test]
fn projections_that_do_not_fill_nf4_blocks_are_refused_when_loading() {
    let dir = tempfile::tempdir().unwrap();
    let text = std::fs::read_to_string(common::fixture("models/llama_gqa/config.json")).unwrap();
    // 4 heads of 6: q_proj has 24 x 24 = 576 values, 9 blocks; k_proj 12 x 24 = 288, 4.5.
    let text = text
        .replace("\"head_dim\": 16", "\"head_dim\": 6")
        .replace("\"hidden_size\": 64", "\"hidden_size\": 24");
    std::fs::write(dir.path().join("config.json"), text).unwrap();
    let config = burn_spectrum::model::LlamaConfig::from_file(dir.path()).unwrap();
    config
        .init::<Flex>(&Default::default())
        .save_pretrained(dir.path())
        .unwrap();
    let error = Method::QLora(lora())
        .load::<A>(dir.path(), &Default::default())
        .err()
        .expect("k_proj does not fill whole NF4 blocks");
    assert!(
        matches!(error, burn_spectrum::Error::Nf4Blocks { values: 288, .. }),
        "{error}"
    );
}

#[test]
fn the_eval_loss_in_chunks_is_the_plain_mean_loss() {
    use burn::module::AutodiffModule;
    for name in ["models/llama_gqa", "models/llama_tied"] {
        let model = model(name).valid();
        let plain: f64 = batch_loss(&model, &batch())
            .unwrap()
            .loss
            .into_scalar()
            .elem();
        let chunked = burn_spectrum::train::mean_loss(&model, &[batch()]).unwrap();
        assert!(common::close(chunked, plain, 1e-6), "{chunked} vs {plain}");
    }
}

#[test]
fn a_batch_without_targets_has_a_nan_loss_on_both_routes() {
    let model = model("models/llama_gqa");
    let mut batch = batch();
    for row in &mut batch.labels {
        row.fill(IGNORE_INDEX);
    }
    let options = MemoryOptions::default();
    let micro = batch_gradients(&model, &batch, &options).unwrap();
    let pieces: f64 = micro.loss.into_scalar().elem();
    let plain: f64 = batch_loss(&model, &batch)
        .unwrap()
        .loss
        .into_scalar()
        .elem();
    assert!(plain.is_nan() && pieces.is_nan(), "{plain} {pieces}");
}

/// A forward pass on the autodiff model left without a backward pass makes burn-autodiff
/// 0.21 lose steps of the pieces' graphs now and then (about one batch in ten here): each
/// batch then has every trainable parameter's gradient, or is refused, never partial.
#[test]
fn a_forward_pass_left_without_backward_never_gives_partial_gradients() {
    let batch = batch();
    let reference = model("models/llama_gqa");
    let expected = batch_gradients(&reference, &batch, &MemoryOptions::default()).unwrap();
    let expected = gradient_values(&reference, &expected.grads.unwrap());
    for _ in 0..40 {
        let model = model("models/llama_gqa");
        drop(batch_loss(&model, &batch).unwrap());
        match batch_gradients(&model, &batch, &MemoryOptions::default()) {
            Ok(micro) => {
                let got = gradient_values(&model, &micro.grads.unwrap());
                assert_eq!(got.iter().filter(|g| g.is_some()).count(), expected.len());
            }
            Err(Error::LostGradients { expected, got }) => assert!(got < expected),
            Err(other) => panic!("{other}"),
        }
    }
}
