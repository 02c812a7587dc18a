//! Our Llama/Mistral against transformers 4.46.3 on tiny random models
//! (fixtures from scripts/make_model_fixtures.py), on the backend of the build (flex, or wgpu
//! or CUDA with their feature: see `tests/backends.rs`).

mod common;

use common::expected::{Expected, MODELS};
use common::{f32_values as values, max_abs_diff};

use std::path::Path;

use burn_spectrum::Error;
use burn_spectrum::model::{GenerationConfig, KvCache, LlamaForCausalLM, generate, ids_tensor};
use safetensors::{Dtype, SafeTensors};

type B = common::TestBackend;

/// Logits and losses against transformers' (f32, absolute). With TF32 matrix products (CUDA,
/// see `common::matmul_rounds_to_tf32`) the tiny models' logits differed by up to 1.9e-2 on an
/// H200.
fn tolerance() -> f32 {
    common::tolerance(1e-4, 5e-2)
}

fn load(dir: &Path) -> LlamaForCausalLM<B> {
    LlamaForCausalLM::from_pretrained(dir, &Default::default()).unwrap()
}

#[test]
fn logits_and_loss_equal_transformers() {
    for name in MODELS {
        let model = load(&common::fixture(&format!("models/{name}")));
        let expected = Expected::read(name);
        let ids = expected.ids("input_ids");
        let padding = expected.ids("attention_mask");
        let logits = model
            .forward_masked(
                ids_tensor(&ids, &Default::default()).unwrap(),
                Some(&padding),
            )
            .unwrap();
        let diff = max_abs_diff(&values(logits.clone()), &expected.floats("logits"));
        eprintln!("{name}: max |logit difference| {diff:.2e}");
        assert!(diff < tolerance(), "{name}: logits differ by {diff}");

        let loss = values(
            LlamaForCausalLM::causal_lm_loss(logits, expected.labels(&Default::default())).unwrap(),
        )[0];
        let want = expected.floats("loss")[0];
        assert!(
            (loss - want).abs() < tolerance(),
            "{name}: loss {loss} vs {want}"
        );
    }
}

#[test]
fn cached_steps_equal_transformers_generation() {
    for name in MODELS {
        let model = load(&common::fixture(&format!("models/{name}")));
        let expected = Expected::read(name);
        let prompt = expected.ids("generate_prompt").remove(0);
        let all_ids = expected.ids("generate_ids").remove(0);
        let step_logits = expected.floats("generate_logits");
        let vocab = model.config().vocab_size;

        // Step by step through the cache: the prompt, then each token transformers chose.
        let mut cache = KvCache::new(model.config().num_hidden_layers);
        let mut input = prompt.clone();
        for (step, want) in step_logits.chunks(vocab).enumerate() {
            let logits = model.forward_cached(
                ids_tensor(&[input.clone()], &Default::default()).unwrap(),
                &mut cache,
            );
            let seq = logits.dims()[1];
            let last = values(logits.narrow(1, seq - 1, 1));
            let diff = max_abs_diff(&last, want);
            assert!(
                diff < tolerance(),
                "{name} step {step}: logits differ by {diff}"
            );
            input = vec![all_ids[prompt.len() + step]];
        }

        let config = GenerationConfig {
            max_new_tokens: 8,
            ..Default::default()
        };
        let generation = generate(&model, &prompt, &config, &Default::default(), |_| {}).unwrap();
        assert_eq!(generation.generated_ids, all_ids[prompt.len()..], "{name}");
    }
}

#[test]
fn save_then_load_is_exact() {
    for name in MODELS {
        let source = common::fixture(&format!("models/{name}"));
        let model = load(&source);
        let dir = tempfile::tempdir().unwrap();
        model.save_pretrained(dir.path()).unwrap();

        // Same tensors, bit for bit, as transformers wrote them.
        let original = std::fs::read(source.join("model.safetensors")).unwrap();
        let saved = std::fs::read(dir.path().join("model.safetensors")).unwrap();
        let (original, saved) = (
            SafeTensors::deserialize(&original).unwrap(),
            SafeTensors::deserialize(&saved).unwrap(),
        );
        let mut names = saved.names();
        names.sort();
        let mut original_names = original.names();
        original_names.sort();
        assert_eq!(names, original_names, "{name}");
        for tensor in names {
            let (a, b) = (
                original.tensor(tensor).unwrap(),
                saved.tensor(tensor).unwrap(),
            );
            assert_eq!(a.shape(), b.shape(), "{name} {tensor}");
            assert_eq!(a.data(), b.data(), "{name} {tensor}");
        }

        // For scripts/check_saved_models.py: transformers must load what we save.
        if let Ok(keep) = std::env::var("SPECTRUM_SAVE_DIR") {
            model.save_pretrained(&Path::new(&keep).join(name)).unwrap();
        }

        let reloaded = load(dir.path());
        assert_eq!(reloaded.config(), model.config());
        let ids = ids_tensor(&[vec![3, 1, 4, 1, 5, 9, 2, 6]], &Default::default()).unwrap();
        assert_eq!(
            values(model.forward(ids.clone())),
            values(reloaded.forward(ids))
        );
    }
}

/// Copies a fixture folder, keeping the tensors `keep` says yes to, adding `extra`.
fn altered_copy(
    name: &str,
    keep: impl Fn(&str) -> bool,
    reshape: Option<&str>,
    extra: Option<&str>,
) -> tempfile::TempDir {
    let source = common::fixture(&format!("models/{name}"));
    let dir = tempfile::tempdir().unwrap();
    std::fs::copy(source.join("config.json"), dir.path().join("config.json")).unwrap();
    let bytes = std::fs::read(source.join("model.safetensors")).unwrap();
    let file = SafeTensors::deserialize(&bytes).unwrap();
    let mut tensors: Vec<(String, Vec<usize>, Vec<u8>)> = file
        .tensors()
        .into_iter()
        .filter(|(n, _)| keep(n))
        .map(|(n, t)| {
            let mut shape = t.shape().to_vec();
            if reshape == Some(n.as_str()) {
                shape.reverse();
            }
            (n, shape, t.data().to_vec())
        })
        .collect();
    if let Some(extra) = extra {
        tensors.push((extra.to_string(), vec![2], vec![0; 8]));
    }
    let views: Vec<_> = tensors
        .iter()
        .map(|(n, s, d)| {
            (
                n.clone(),
                safetensors::tensor::TensorView::new(Dtype::F32, s.clone(), d).unwrap(),
            )
        })
        .collect();
    safetensors::serialize_to_file(views, None, &dir.path().join("model.safetensors")).unwrap();
    dir
}

#[test]
fn mismatched_checkpoints_name_the_tensors() {
    let missing = altered_copy(
        "llama_gqa",
        |n| n != "model.layers.1.mlp.up_proj.weight",
        None,
        None,
    );
    let shaped = altered_copy(
        "llama_gqa",
        |_| true,
        Some("model.layers.0.self_attn.k_proj.weight"),
        None,
    );
    let extra = altered_copy(
        "llama_gqa",
        |_| true,
        None,
        Some("model.layers.0.self_attn.q_norm.weight"),
    );
    let cases = [
        (missing, "missing: model.layers.1.mlp.up_proj.weight"),
        (
            shaped,
            "wrong shape: model.layers.0.self_attn.k_proj.weight: expected [32, 64], found [64, 32]",
        ),
        (extra, "unexpected: model.layers.0.self_attn.q_norm.weight"),
    ];
    for (dir, needle) in cases {
        let error = LlamaForCausalLM::<B>::from_pretrained(dir.path(), &Default::default())
            .err()
            .unwrap();
        assert!(matches!(error, Error::TensorMismatch { .. }), "{error}");
        assert!(error.to_string().contains(needle), "{error}");
    }
}

#[test]
fn unsupported_configs_are_errors() {
    let dir = altered_copy("llama_gqa", |_| true, None, None);
    let config = std::fs::read_to_string(dir.path().join("config.json")).unwrap();
    std::fs::write(
        dir.path().join("config.json"),
        config.replace("\"llama\"", "\"gemma\""),
    )
    .unwrap();
    let error = LlamaForCausalLM::<B>::from_pretrained(dir.path(), &Default::default())
        .err()
        .unwrap();
    assert!(matches!(error, Error::InvalidConfig { .. }), "{error}");
    assert!(error.to_string().contains("gemma"), "{error}");
}

#[test]
fn spectrum_scan_of_the_model_equals_the_scan_of_its_checkpoint() {
    use burn_spectrum::spectrum::{SpectrumSelector, Threshold};
    let dir = common::fixture("models/llama_gqa");
    let model = load(&dir);
    let selector = SpectrumSelector::new(Threshold::Spectrum);
    let from_model = selector.scan_module(&model).unwrap();
    let from_file = selector
        .scan_safetensors(&dir.join("model.safetensors"))
        .unwrap();
    let snrs = |report: &burn_spectrum::spectrum::ScanReport| {
        let mut v: Vec<(String, f64)> = report
            .modules
            .iter()
            .map(|m| (m.param_name.clone(), m.score.snr as f64))
            .collect();
        v.sort_by(|a, b| a.0.cmp(&b.0));
        v
    };
    let (a, b) = (snrs(&from_model), snrs(&from_file));
    assert_eq!(
        a.iter().map(|x| &x.0).collect::<Vec<_>>(),
        b.iter().map(|x| &x.0).collect::<Vec<_>>()
    );
    for ((name, got), (_, want)) in a.iter().zip(&b) {
        assert!(common::close(*got, *want, 1e-5), "{name}: {got} vs {want}");
    }
    // And the selection names the model's own parameters.
    let selection = from_file.select(50).unwrap();
    assert!(
        selection.is_selected("model.layers.0.self_attn.q_proj.weight")
            || selection.is_selected("model.layers.1.self_attn.q_proj.weight")
    );
}

/// Inputs that used to panic inside the model now give typed errors.
#[test]
fn malformed_inputs_are_errors_not_panics() {
    let device = Default::default();
    let model = load(&common::fixture("models/llama_gqa"));
    // Rows of different lengths cannot make one `[batch, seq]` tensor.
    let ragged = ids_tensor::<B>(&[vec![1, 2, 3], vec![4, 5]], &device);
    assert!(matches!(
        ragged,
        Err(Error::RaggedBatch {
            row: 1,
            len: 2,
            expected: 3
        })
    ));
    // A mask shorter than the ids.
    let ids = ids_tensor::<B>(&[vec![1, 2, 3], vec![4, 5, 6]], &device).unwrap();
    let short_mask = vec![vec![1, 1, 1], vec![1, 1]];
    let err = model
        .forward_masked(ids.clone(), Some(&short_mask))
        .unwrap_err();
    assert!(
        matches!(
            err,
            Error::MaskShape {
                batch: 2,
                seq: 3,
                ..
            }
        ),
        "{err}"
    );
    // One position predicts nothing; labels of another shape cannot be scored.
    let one = ids_tensor::<B>(&[vec![7]], &device).unwrap();
    let logits = model.forward(one.clone());
    let err = LlamaForCausalLM::causal_lm_loss(logits, one).unwrap_err();
    assert!(matches!(err, Error::LossShape { .. }), "{err}");
    let logits = model.forward(ids.clone());
    let wrong = ids.narrow(1, 0, 2);
    let err = LlamaForCausalLM::causal_lm_loss(logits, wrong).unwrap_err();
    assert!(matches!(err, Error::LossShape { .. }), "{err}");
}
