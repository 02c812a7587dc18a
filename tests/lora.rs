//! LoRA against PEFT 0.13.2 (fixtures from scripts/make_lora_fixtures.py on the tiny llama_gqa
//! model): adapter forward, merge, and the adapter file format.

mod common;

use common::{f32_values as values, max_abs_diff as max_diff};

use std::path::PathBuf;

use burn::backend::Flex;
use burn_spectrum::Error;
use burn_spectrum::model::{LlamaForCausalLM, ids_tensor};
use burn_spectrum::peft::{LoraConfig, TargetModules, add_lora, load_adapter, save_adapter};
use safetensors::SafeTensors;

type B = Flex;

fn base() -> LlamaForCausalLM<B> {
    LlamaForCausalLM::from_pretrained(&common::fixture("models/llama_gqa"), &Default::default())
        .unwrap()
}

fn case(name: &str) -> PathBuf {
    common::fixture(&format!("lora/{name}"))
}

struct Expected(Vec<u8>);

impl Expected {
    fn read(name: &str) -> Self {
        Expected(std::fs::read(case(name).join("expected.safetensors")).unwrap())
    }

    fn tensor(&self, name: &str) -> (Vec<usize>, Vec<u8>) {
        let file = SafeTensors::deserialize(&self.0).unwrap();
        let t = file.tensor(name).unwrap();
        (t.shape().to_vec(), t.data().to_vec())
    }

    fn floats(&self, name: &str) -> Vec<f32> {
        let (_, bytes) = self.tensor(name);
        bytes
            .chunks_exact(4)
            .map(|b| f32::from_le_bytes(b.try_into().unwrap()))
            .collect()
    }

    fn rows(&self, name: &str) -> Vec<Vec<u32>> {
        let (shape, bytes) = self.tensor(name);
        let flat: Vec<u32> = bytes
            .chunks_exact(8)
            .map(|b| i64::from_le_bytes(b.try_into().unwrap()) as u32)
            .collect();
        flat.chunks(shape[1]).map(<[u32]>::to_vec).collect()
    }
}

fn logits(model: &LlamaForCausalLM<B>, expected: &Expected) -> Vec<f32> {
    let ids = expected.rows("input_ids");
    let mask = expected.rows("attention_mask");
    values(
        model
            .forward_masked(ids_tensor(&ids, &Default::default()).unwrap(), Some(&mask))
            .unwrap(),
    )
}

#[test]
fn adapters_compute_what_peft_computes() {
    for name in ["all_linear", "rslora_qv"] {
        let expected = Expected::read(name);
        let mut model = base();
        let config =
            load_adapter(&mut model, &case(name).join("adapter"), &Default::default()).unwrap();
        assert_eq!(
            config.scaling() as f32,
            expected.floats("scaling")[0],
            "{name}"
        );
        let diff = max_diff(&logits(&model, &expected), &expected.floats("logits"));
        assert!(diff < 1e-4, "{name}: logits differ by {diff}");
    }
}

#[test]
fn merging_equals_peft_merge_and_unload() {
    let checks = [
        (
            "all_linear",
            [
                "model.layers.0.self_attn.q_proj",
                "model.layers.1.mlp.down_proj",
            ],
        ),
        (
            "rslora_qv",
            [
                "model.layers.0.self_attn.q_proj",
                "model.layers.1.self_attn.v_proj",
            ],
        ),
    ];
    for (name, modules) in checks {
        let expected = Expected::read(name);
        let mut model = base();
        load_adapter(&mut model, &case(name).join("adapter"), &Default::default()).unwrap();
        let mut model = model.merge_lora();
        assert!(!model.has_lora());
        let diff = max_diff(
            &logits(&model, &expected),
            &expected.floats("merged_logits"),
        );
        assert!(diff < 1e-4, "{name}: merged logits differ by {diff}");

        let merged: Vec<(String, Vec<f32>)> = model
            .projections_mut()
            .into_iter()
            .map(|(path, p)| {
                let w = p.base_weight();
                let [rows, cols] = w.dims();
                // Back to PyTorch's [out, in] to compare with PEFT's weight.
                (path, values(w.transpose().reshape([cols * rows])))
            })
            .collect();
        for module in modules {
            let want = expected.floats(&format!("merged.{module}.weight"));
            let got = &merged.iter().find(|(p, _)| p == module).unwrap().1;
            let diff = max_diff(got, &want);
            assert!(
                diff < 1e-6,
                "{name} {module}: merged weight differs by {diff}"
            );
        }
    }
}

#[test]
fn saved_adapters_reload_identically_with_peft_names() {
    let expected = Expected::read("all_linear");
    let mut model = base();
    let config = load_adapter(
        &mut model,
        &case("all_linear").join("adapter"),
        &Default::default(),
    )
    .unwrap();
    let dir = tempfile::tempdir().unwrap();
    save_adapter(
        &mut model,
        &config,
        "tests/fixtures/models/llama_gqa",
        dir.path(),
    )
    .unwrap();

    let names = |path: PathBuf| {
        let bytes = std::fs::read(path).unwrap();
        let file = SafeTensors::deserialize(&bytes).unwrap();
        let mut v: Vec<(String, Vec<usize>)> = file
            .tensors()
            .into_iter()
            .map(|(n, t)| (n, t.shape().to_vec()))
            .collect();
        v.sort();
        v
    };
    assert_eq!(
        names(dir.path().join("adapter_model.safetensors")),
        names(case("all_linear").join("adapter/adapter_model.safetensors"))
    );

    // For scripts/check_peft_adapter.py: PEFT must load what we save.
    if let Ok(keep) = std::env::var("SPECTRUM_SAVE_DIR") {
        let keep = std::path::Path::new(&keep).join("all_linear_adapter");
        save_adapter(
            &mut model,
            &config,
            "tests/fixtures/models/llama_gqa",
            &keep,
        )
        .unwrap();
    }

    let mut reloaded = base();
    let config_again = load_adapter(&mut reloaded, dir.path(), &Default::default()).unwrap();
    assert_eq!(config_again.r, config.r);
    assert_eq!(config_again.scaling(), config.scaling());
    assert_eq!(logits(&reloaded, &expected), logits(&model, &expected));
    // A model with adapters is not saved as a plain checkpoint by mistake.
    let err = model.save_pretrained(dir.path()).unwrap_err();
    assert!(matches!(err, Error::NotDense), "{err}");
}

#[test]
fn fresh_adapters_start_as_the_base_model() {
    let expected = Expected::read("all_linear");
    let base_logits = logits(&base(), &expected);
    let config = LoraConfig {
        r: 4,
        lora_alpha: 8.0,
        ..Default::default()
    };
    let (model, targeted) = add_lora(base(), &config, &Default::default());
    assert_eq!(
        targeted.len(),
        14,
        "7 projections in each of 2 layers, not lm_head"
    );
    assert!(!targeted.iter().any(|p| p == "lm_head"));
    assert_eq!(logits(&model, &expected), base_logits);

    let only_q = LoraConfig {
        target_modules: TargetModules::Names(vec!["q_proj".into()]),
        ..config
    };
    assert_eq!(add_lora(base(), &only_q, &Default::default()).1.len(), 2);
}

#[test]
fn unsupported_adapter_entries_are_named() {
    // modules_to_save copies a whole weight (here lm_head), which we do not load yet.
    let mut model = base();
    let err = load_adapter(
        &mut model,
        &case("modules_to_save").join("adapter"),
        &Default::default(),
    )
    .unwrap_err();
    assert!(
        err.to_string().contains("base_model.model.lm_head.weight"),
        "{err}"
    );
}

#[test]
fn merged_export_is_a_complete_folder_with_peft_merged_logits() {
    let expected = Expected::read("all_linear");
    let base_dir = tempfile::tempdir().unwrap();
    for name in ["config.json", "model.safetensors"] {
        std::fs::copy(
            common::fixture("models/llama_gqa").join(name),
            base_dir.path().join(name),
        )
        .unwrap();
    }
    std::fs::write(base_dir.path().join("tokenizer.json"), b"{\"stand-in\": 1}").unwrap();
    std::fs::write(
        base_dir.path().join("generation_config.json"),
        b"{\"eos_token_id\": 2}",
    )
    .unwrap();

    let mut model =
        LlamaForCausalLM::<B>::from_pretrained(base_dir.path(), &Default::default()).unwrap();
    load_adapter(
        &mut model,
        &case("all_linear").join("adapter"),
        &Default::default(),
    )
    .unwrap();
    let out = tempfile::tempdir().unwrap();
    model.export_merged(base_dir.path(), out.path()).unwrap();
    for name in ["tokenizer.json", "generation_config.json"] {
        assert_eq!(
            std::fs::read(out.path().join(name)).unwrap(),
            std::fs::read(base_dir.path().join(name)).unwrap()
        );
    }
    let exported = LlamaForCausalLM::<B>::from_pretrained(out.path(), &Default::default()).unwrap();
    let diff = max_diff(
        &logits(&exported, &expected),
        &expected.floats("merged_logits"),
    );
    assert!(
        diff < 1e-4,
        "exported logits differ from PEFT's merge by {diff}"
    );
    if let Ok(keep) = std::env::var("SPECTRUM_SAVE_DIR") {
        exported
            .save_pretrained(&std::path::Path::new(&keep).join("merged_all_linear"))
            .unwrap();
    }
}

#[test]
fn a_qlora_model_exports_dense_with_its_own_logits() {
    use burn_spectrum::peft::quantize_nf4;
    let expected = Expected::read("all_linear");
    let mut model = base();
    quantize_nf4(&mut model, &TargetModules::AllLinear).unwrap();
    load_adapter(
        &mut model,
        &case("all_linear").join("adapter"),
        &Default::default(),
    )
    .unwrap();
    let ours = logits(&model, &expected);
    assert!(matches!(
        model.save_pretrained(tempfile::tempdir().unwrap().path()),
        Err(Error::NotDense)
    ));
    let out = tempfile::tempdir().unwrap();
    model
        .export_merged(&common::fixture("models/llama_gqa"), out.path())
        .unwrap();
    let exported = LlamaForCausalLM::<B>::from_pretrained(out.path(), &Default::default()).unwrap();
    let diff = max_diff(&logits(&exported, &expected), &ours);
    assert!(diff < 1e-4, "{diff}");
}
