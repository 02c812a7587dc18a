//! The real SmolLM2-135M-Instruct, imported from its GGUF, against transformers 4.46.3
//! (tests/fixtures/smollm2_reference.json from scripts/smollm2_reference.py). Its greedy
//! generation is in `tests/backends.rs`, which runs on every backend.
//!
//! Needs `./scripts/get_smollm2.sh` to have run. Without the model these tests say so and
//! pass, unless SPECTRUM_REQUIRE_ASSETS=1 (as in CI), where a missing model is a failure.

mod common;

use std::path::PathBuf;
use std::process::Command;

use burn::backend::Flex;
use burn_spectrum::model::{LlamaForCausalLM, Tokenizer};
use serde_json::Value;

fn model_dir() -> Option<PathBuf> {
    common::smollm2_dir()
}

#[test]
fn tokenizer_equals_smollm2s() {
    let Some(dir) = model_dir() else { return };
    let tokenizer = Tokenizer::from_dir(&dir).unwrap();
    let reference = common::smollm2_reference();
    let cases = reference["tokenize"]
        .as_array()
        .unwrap()
        .iter()
        .chain(reference["digits_comparison"].as_array().unwrap());
    for case in cases {
        let text = case["text"].as_str().unwrap();
        let want = common::json_ids(&case["ids_real"]);
        assert_eq!(tokenizer.encode(text, true).unwrap(), want, "{text:?}");
        assert_eq!(tokenizer.decode(&want, false).unwrap(), text);
    }
}

#[test]
fn cli_generate_prints_the_json_line() {
    let Some(dir) = model_dir() else { return };
    let output = Command::new(env!("CARGO_BIN_EXE_spectrum"))
        .arg("generate")
        .arg(&dir)
        .args([
            "--prompt",
            "What is the capital of France?",
            "--chat",
            "--format",
            "json",
        ])
        .output()
        .unwrap();
    assert!(
        output.status.success(),
        "{}",
        String::from_utf8_lossy(&output.stderr)
    );
    let stdout = String::from_utf8(output.stdout).unwrap();
    assert_eq!(stdout.lines().count(), 1, "{stdout}");
    let line: Value = serde_json::from_str(&stdout).unwrap();
    let reference = common::smollm2_reference();
    let chat = &reference["greedy"][1];
    assert_eq!(line["prompt_ids"], chat["prompt_ids"]);
    assert_eq!(line["generated_ids"], chat["generated_ids"]);
    assert_eq!(line["text"], chat["text"]);
    let top = line["last_logits_top"].as_array().unwrap();
    assert_eq!(top.len(), 20);
    assert_eq!(top[0][0], chat["last_logits_top"][0][0]);
}

#[test]
fn the_alpaca_demo_data_encodes_with_smollm2() {
    use burn_spectrum::data::{EncodeOptions, prepare, read_alpaca};
    let Some(dir) = model_dir() else { return };
    let path = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("assets/data/alpaca_en_demo.json");
    if !path.exists() {
        let required = std::env::var("SPECTRUM_REQUIRE_ASSETS").is_ok_and(|v| v == "1");
        assert!(
            !required,
            "{} is missing: run ./scripts/get_alpaca.sh",
            path.display()
        );
        eprintln!(
            "skipped: {} is missing (run ./scripts/get_alpaca.sh)",
            path.display()
        );
        return;
    }
    let data = read_alpaca(&path).unwrap();
    // ARCHITECTURE.md, "Assets": 999 records, 412 with an input.
    assert_eq!(data.records.len(), 999);
    assert!(data.skipped.is_empty(), "{:?}", data.skipped);
    assert_eq!(
        data.records.iter().filter(|r| !r.input.is_empty()).count(),
        412
    );

    let tokenizer = Tokenizer::from_dir(&dir).unwrap();
    let eos = tokenizer.token_id("<|im_end|>").unwrap();
    let options = EncodeOptions {
        max_len: 256,
        train_on_prompt: false,
    };
    let prepared = prepare(&data, &tokenizer, eos, &options, 50, 0).unwrap();
    assert_eq!(
        prepared.train.len() + prepared.eval.len() + prepared.too_long,
        999
    );
    assert_eq!(prepared.eval.len(), 50);
    for example in prepared.train.iter().chain(&prepared.eval) {
        assert!(example.ids.len() <= 256);
        assert!(
            example.labels.iter().any(|&l| l >= 0),
            "every kept example has a target"
        );
    }
    eprintln!(
        "alpaca: {} train, {} eval, {} truncated, {} too long at 256 tokens",
        prepared.train.len(),
        prepared.eval.len(),
        prepared.truncated,
        prepared.too_long
    );
}

#[test]
fn every_method_lowers_the_loss_on_real_alpaca_records() {
    use burn::backend::Autodiff;

    use burn_spectrum::data::{Batch, Batches, EncodeOptions, prepare, read_alpaca};

    use burn_spectrum::peft::LoraConfig;
    use burn_spectrum::train::{
        LrSchedule, Method, Reselect, SnrLrScaling, SpectrumSource, TrainConfig, TrainStep,
        TrainerOptions, batch_loss, snr_lr_scales, train,
    };
    type A = Autodiff<Flex>;

    let Some(dir) = model_dir() else { return };
    let alpaca = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("assets/data/alpaca_en_demo.json");
    if !alpaca.exists() {
        return; // the encoding test above reports the missing data
    }
    let device = Default::default();
    let tokenizer = Tokenizer::from_dir(&dir).unwrap();
    let eos = tokenizer.token_id("<|im_end|>").unwrap();
    let options = EncodeOptions {
        max_len: 96,
        train_on_prompt: false,
    };
    let data = read_alpaca(&alpaca).unwrap();
    let prepared_data = prepare(&data, &tokenizer, eos, &options, 0, 3).unwrap();
    let batches: Vec<Batch> = Batches::new(&prepared_data.train[..4], 2, eos, 0)
        .unwrap()
        .take(2)
        .collect();
    let loss_of = |m: &LlamaForCausalLM<A>, b: &Batch| batch_loss(m, b);
    let lora = LoraConfig {
        r: 8,
        lora_alpha: 16.0,
        ..Default::default()
    };
    let methods = [
        (Method::Full, 2e-5),
        (Method::Spectrum(SpectrumSource::TopPercent(25)), 5e-5),
        (Method::Lora(lora.clone()), 1e-3),
        (Method::QLora(lora.clone()), 1e-3),
        (
            Method::SpectrumQLora(SpectrumSource::TopPercent(25), lora),
            1e-3,
        ),
    ];
    for (method, lr) in methods {
        let model = LlamaForCausalLM::<A>::from_pretrained(&dir, &device).unwrap();
        let prepared = method.prepare(model, &device).unwrap();
        let probe = &prepared.model.model.layers[29].self_attn.o_proj;
        let probe_trains = probe
            .weight()
            .is_some_and(|w| prepared.trainable.contains(&w.id));
        let probe_before = probe.base_weight().into_data();
        let config = TrainConfig {
            schedule: LrSchedule::constant(lr),
            ..Default::default()
        };
        let (mut model, mut step) = TrainStep::new(prepared.model, &prepared.trainable, config);
        let mut losses = Vec::new();
        for _ in 0..3 {
            let (next, metrics) = step.step(model, &batches, loss_of).unwrap();
            model = next;
            losses.push(metrics.loss);
        }
        eprintln!("{}: losses {losses:?}", method.name());
        assert!(losses[2] < losses[0], "{}: {losses:?}", method.name());
        let probe_after = model.model.layers[29]
            .self_attn
            .o_proj
            .base_weight()
            .into_data();
        assert_eq!(
            probe_after != probe_before,
            probe_trains,
            "{}",
            method.name()
        );
    }

    // The paper's future-work options on the real model: learning rates scaled by SNR, and a
    // re-scan and re-selection when the epoch (2 batches of 2 records) ends.
    let model = LlamaForCausalLM::<A>::from_pretrained(&dir, &device).unwrap();
    let method = Method::Spectrum(SpectrumSource::TopPercent(25));
    let prepared = method.prepare(model, &device).unwrap();
    let config = TrainConfig {
        schedule: LrSchedule::constant(5e-5),
        ..Default::default()
    };
    let (model, mut step) = TrainStep::new(prepared.model, &prepared.trainable, config);
    let scan = prepared
        .scan
        .as_ref()
        .expect("a top-25% selection comes from a scan");
    let scales = snr_lr_scales(&model, scan, SnrLrScaling::default()).unwrap();
    assert!(scales.values().any(|&s| s > 1.0) && scales.values().any(|&s| s < 1.0));
    step.set_lr_scales(scales).unwrap();
    let checkpoints = tempfile::tempdir().unwrap();
    let options = TrainerOptions {
        steps: 3,
        accumulation: 1,
        checkpoint_every: None,
        checkpoint_dir: checkpoints.path().to_path_buf(),
        progress: false,
        reselect: Some(Reselect {
            top_percent: 25,
            snr_lr: Some(SnrLrScaling::default()),
        }),
    };
    let mut stream = Batches::new(&prepared_data.train[..4], 2, eos, 0).unwrap();
    let (_, report) = train(model, &mut step, &mut stream, loss_of, &options).unwrap();
    let losses: Vec<f64> = report.metrics.iter().map(|m| m.loss).collect();
    let change = &report.reselections;
    eprintln!("spectrum-25 with SNR learning rates: losses {losses:?}, re-selections {change:?}");
    assert!(losses.iter().all(|l| l.is_finite()));
    assert_eq!(change.len(), 1);
    assert_eq!((change[0].step, change[0].epoch), (2, 1));
    assert_eq!(step.optimizer_state_len(), step.trainable().len());
}
