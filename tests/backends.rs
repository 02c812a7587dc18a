//! The suite every backend must pass. It runs on flex by default; built with `--features wgpu`
//! or `--features cuda` it runs on that backend, with flex (always compiled in) as the
//! reference where the reference is our own CPU result:
//!
//! - one training run of a few steps per method: the same losses as flex (the first step's for
//!   the adapter methods, whose random A matrices differ by backend), the loss goes down,
//!   frozen parameters bit-identical, optimizer state only for the trainable ones;
//! - a training step reads back from the device only its losses (and its gradient norm where
//!   that is summed on the device), and the step's code has no other reads;
//! - NF4 dequantization bit-identical to bitsandbytes (the `nf4` fixtures);
//! - SmolLM2's logits against flex, and its greedy generation against transformers.
//!
//! `tests/model_reference.rs` is the rest of the suite, generic in the same way: the tiny
//! models' logits, cached generation, save/load round trip and module scan against
//! transformers. `scripts/check_wgpu.sh` runs both on wgpu; `scripts/gpu_check.sh` on CUDA.

mod common;

use std::collections::HashSet;

use common::{f32_values as values, max_abs_diff, named_values};

use burn::backend::{Autodiff, Flex};
use burn::module::{AutodiffModule, Module, ModuleVisitor, Param, ParamId};
use burn::tensor::backend::AutodiffBackend;
use burn::tensor::{DType, Tensor, TensorData};
use burn_spectrum::data::Batch;
use burn_spectrum::model::{
    ChatMessage, GenerationConfig, LlamaForCausalLM, Tokenizer, generate, ids_tensor, top_logits,
};
use burn_spectrum::nn::{Nf4Weight, Precision, float_params, host_reads};
use burn_spectrum::peft::LoraConfig;
use burn_spectrum::train::{
    LrSchedule, MemoryOptions, MemoryReport, Method, MicroLoss, SpectrumSource, TrainConfig,
    TrainStep, batch_gradients,
};
use safetensors::SafeTensors;

type B = common::TestBackend;

/// Training losses on this backend against flex's, relative: three steps of AdamW at a high
/// learning rate let the backends' summation orders drift apart a little. With TF32 matrix
/// products (CUDA, see `common::matmul_rounds_to_tf32`) they differed by up to 1.8e-4 on an
/// H200.
fn loss_tolerance() -> f64 {
    common::tolerance(1e-4, 1e-3)
}

/// SmolLM2's logits (magnitudes up to ~30) on this backend against flex's and transformers',
/// absolute. The TF32 value is an allowance, not yet measured: SmolLM2 does not travel to the
/// GPU machine.
fn smollm2_logit_tolerance() -> f32 {
    common::tolerance(2e-3, 1e-1)
}

fn methods() -> Vec<Method> {
    let lora = LoraConfig {
        r: 4,
        lora_alpha: 8.0,
        ..Default::default()
    };
    vec![
        Method::Full,
        Method::Spectrum(SpectrumSource::TopPercent(50)),
        Method::Lora(lora.clone()),
        Method::QLora(lora.clone()),
        Method::SpectrumQLora(SpectrumSource::TopPercent(50), lora),
    ]
}

/// Reads back from the device per training step: each micro-batch's loss, one more per
/// micro-batch under gradient checkpointing (the layers' seed), and the gradient norm where the
/// backend sums it on the device (every backend but the CPU's).
#[test]
fn a_training_step_reads_back_only_its_losses_and_norm() {
    type A = Autodiff<B>;
    let device = Default::default();
    let model =
        LlamaForCausalLM::<A>::from_pretrained(&common::fixture("models/llama_gqa"), &device)
            .unwrap();
    let prepared = Method::Full.prepare(model, &device).unwrap();
    let batch = |shift: usize| {
        let ids: Vec<Vec<u32>> = (0..2)
            .map(|b| {
                (0..12)
                    .map(|t| ((t * 7 + b * 3 + shift) % 256) as u32)
                    .collect()
            })
            .collect();
        Batch {
            attention_mask: vec![vec![1; 12]; 2],
            labels: ids
                .iter()
                .map(|r| r.iter().map(|&t| i64::from(t)).collect())
                .collect(),
            ids,
        }
    };
    let micro_batches = [batch(0), batch(1)];
    let norm_reads = usize::from(cfg!(any(feature = "wgpu", feature = "cuda")));
    let (mut model, mut step) =
        TrainStep::new(prepared.model, &prepared.trainable, TrainConfig::default());
    for checkpointing in [false, true] {
        let options = MemoryOptions {
            gradient_checkpointing: checkpointing,
            ..Default::default()
        };
        let loss_of = |m: &LlamaForCausalLM<A>, b: &Batch| batch_gradients(m, b, &options);
        let before = host_reads();
        model = step.step(model, &micro_batches, loss_of).unwrap().0;
        let per_micro_batch = 1 + usize::from(checkpointing);
        assert_eq!(
            host_reads() - before,
            micro_batches.len() * per_micro_batch + norm_reads,
            "checkpointing {checkpointing}"
        );
    }
}

/// The files a training step runs through: outside their tests and their CPU-only code (`mod
/// flex`, host memory already), none reads a device's values back except through
/// `nn::read_scalar`, which [`host_reads`] counts.
const STEP_FILES: [&str; 23] = [
    "src/train/step.rs",
    "src/train/gradients.rs",
    "src/train/grad_norm.rs",
    "src/train/optimizer.rs",
    "src/train/adamw.rs",
    "src/model/llama.rs",
    "src/model/attention.rs",
    "src/model/decoder.rs",
    "src/model/mlp.rs",
    "src/nn/projection.rs",
    "src/nn/lora_adapter.rs",
    "src/nn/nf4_linear.rs",
    "src/nn/nf4_weight.rs",
    "src/nn/rms_norm.rs",
    "src/nn/rope.rs",
    "src/nn/swiglu.rs",
    "src/nn/mask.rs",
    "src/nn/device_cache.rs",
    "src/nn/precision.rs",
    "src/nn/masked_softmax.rs",
    "src/nn/nll.rs",
    "src/nn/in_place.rs",
    "src/nn/layout.rs",
];

#[test]
fn the_step_code_reads_back_only_through_the_counted_reads() {
    let sample =
        "fn f() {\n    x.into_scalar();\n}\nmod tests {\n    fn g() { y.into_data(); }\n}\n";
    assert_eq!(
        device_reads(sample),
        ["x.into_scalar();"],
        "the scan itself"
    );
    for file in STEP_FILES {
        let text = std::fs::read_to_string(common::repo_dir().join(file)).unwrap();
        let reads = device_reads(&text);
        assert!(
            reads.is_empty(),
            "{file} reads device values back: {reads:?}"
        );
    }
}

/// The lines of `source` that read a tensor's values back, outside `mod tests` and `mod flex`
/// blocks.
fn device_reads(source: &str) -> Vec<String> {
    let mut depth = 0i64;
    let mut skipped_from: Option<i64> = None;
    let mut reads = Vec::new();
    for line in source.lines() {
        let code = line.trim_start();
        if skipped_from.is_none() && (code.contains("mod tests {") || code.contains("mod flex {")) {
            skipped_from = Some(depth);
        }
        let reads_back = [".into_scalar(", ".into_data(", ".to_data("]
            .iter()
            .any(|call| code.contains(call));
        if reads_back && skipped_from.is_none() && !code.starts_with("//") {
            reads.push(line.trim().to_string());
        }
        depth += code.matches('{').count() as i64 - code.matches('}').count() as i64;
        if skipped_from.is_some_and(|from| depth <= from) {
            skipped_from = None;
        }
    }
    reads
}

/// What a short run of `method` on the tiny GQA Llama shows on backend `A`.
struct Trained {
    losses: Vec<f64>,
    optimizer_states: usize,
    trainable: usize,
    /// Frozen float parameters whose values changed, by path.
    moved_frozen: Vec<String>,
    /// Whether the first layer's `up_proj` base (dense or NF4) changed.
    up_proj_moved: bool,
    /// The float types of the trainable parameters after training, and of the frozen ones.
    dtypes: (HashSet<DType>, HashSet<DType>),
    /// Bytes of the float parameters and NF4 bases as prepared.
    weight_bytes: usize,
}

/// The float type of every float parameter, by id.
fn param_dtypes<B: burn::tensor::backend::Backend>(
    model: &LlamaForCausalLM<B>,
) -> Vec<(ParamId, DType)> {
    struct Collect(Vec<(ParamId, DType)>);
    impl<B: burn::tensor::backend::Backend> ModuleVisitor<B> for Collect {
        fn visit_float<const D: usize>(&mut self, param: &Param<Tensor<B, D>>) {
            self.0.push((param.id, param.val().dtype()));
        }
    }
    let mut collect = Collect(Vec::new());
    model.visit(&mut collect);
    collect.0
}

fn train<A: AutodiffBackend>(method: &Method, precision: Precision) -> Trained {
    let device = Default::default();
    let model =
        LlamaForCausalLM::<A>::from_pretrained(&common::fixture("models/llama_gqa"), &device)
            .unwrap();
    let mut prepared = method.prepare(model, &device).unwrap();
    prepared.model = prepared.model.with_precision(precision);
    let weight_bytes = MemoryReport::of(&prepared.model).weight_bytes;
    let trainable: HashSet<ParamId> = prepared.trainable.iter().copied().collect();
    let frozen_paths: HashSet<String> = float_params(&prepared.model)
        .into_iter()
        .filter(|p| !trainable.contains(&p.id))
        .map(|p| p.path)
        .collect();
    let before = named_values(&prepared.model.valid());
    let up_before = values(prepared.model.model.layers[0].mlp.up_proj.base_weight());

    let ids: Vec<Vec<u32>> = (0..2)
        .map(|b| (0..12).map(|t| ((t * 7 + b * 3) % 256) as u32).collect())
        .collect();
    let labels: Vec<i64> = ids.iter().flatten().map(|&i| i64::from(i)).collect();
    let loss_of = |m: &LlamaForCausalLM<A>, _: &()| {
        let logits = m.forward(ids_tensor(&ids, &device).unwrap());
        let labels = Tensor::from_data(TensorData::new(labels.clone(), [2, 12]), &device);
        Ok(MicroLoss::new(
            LlamaForCausalLM::causal_lm_loss(logits, labels).unwrap(),
            22,
        ))
    };
    let config = TrainConfig {
        schedule: LrSchedule::constant(2e-3),
        ..Default::default()
    };
    let (mut model, mut step) = TrainStep::new(prepared.model, &prepared.trainable, config);
    let mut losses = Vec::new();
    for _ in 0..3 {
        let (next, metrics) = step.step(model, &[()], loss_of).unwrap();
        model = next;
        losses.push(metrics.loss);
    }

    let after = named_values(&model.valid());
    let moved_frozen = before
        .iter()
        .zip(&after)
        .filter(|((path, old), (_, new))| frozen_paths.contains(path) && old != new)
        .map(|((path, _), _)| path.clone())
        .collect();
    let up_after = values(model.model.layers[0].mlp.up_proj.base_weight());
    let mut dtypes = (HashSet::new(), HashSet::new());
    for (id, dtype) in param_dtypes(&model) {
        match trainable.contains(&id) {
            true => dtypes.0.insert(dtype),
            false => dtypes.1.insert(dtype),
        };
    }
    Trained {
        dtypes,
        weight_bytes,
        losses,
        optimizer_states: step.optimizer_state_len(),
        trainable: prepared.trainable.len(),
        moved_frozen,
        up_proj_moved: up_after != up_before,
    }
}

#[test]
fn every_method_trains_as_on_flex() {
    for method in methods() {
        let name = method.name();
        let here = train::<Autodiff<B>>(&method, Precision::F32);
        let flex = train::<Autodiff<Flex>>(&method, Precision::F32);
        assert_trains_like_flex(&name, &method, &here, &flex, loss_tolerance());
        let base_trains = matches!(method, Method::Full | Method::Spectrum(_));
        assert!(
            !here.up_proj_moved || base_trains,
            "{name}: a frozen base moved"
        );
        assert_eq!(here.up_proj_moved, flex.up_proj_moved, "{name}");
    }
}

/// What every run must show against flex's f32 run: losses within `tolerance` (relative) for
/// the comparable steps, a loss that goes down, optimizer state only for what trains, and no
/// frozen parameter moved.
fn assert_trains_like_flex(
    name: &str,
    method: &Method,
    here: &Trained,
    flex: &Trained,
    tolerance: f64,
) {
    eprintln!("{name}: losses {:?}, flex {:?}", here.losses, flex.losses);
    for (got, want) in here
        .losses
        .iter()
        .zip(&flex.losses)
        .take(comparable_steps(method))
    {
        assert!(
            (got - want).abs() <= tolerance * want.abs(),
            "{name}: losses {:?}, flex {:?}",
            here.losses,
            flex.losses
        );
    }
    assert!(here.losses[2] < here.losses[0], "{name}: {:?}", here.losses);
    assert_eq!(here.optimizer_states, here.trainable, "{name}");
    assert!(
        here.moved_frozen.is_empty(),
        "{name}: {:?}",
        here.moved_frozen
    );
}

/// The half type this backend computes in: bf16 where it has it, else f16 (lavapipe's Vulkan
/// has no bf16).
fn half_precision() -> Precision {
    let device = Default::default();
    [Precision::Bf16, Precision::F16]
        .into_iter()
        .find(|p| p.check_supported::<B>("test", &device).is_ok())
        .expect("the backend computes in bf16 or f16")
}

/// Half-precision losses against flex's f32 ones, relative. Measured on the tiny GQA model
/// over the five methods' three steps: up to 2.4e-3 in bf16 on flex, 4.0e-4 in f16 on
/// lavapipe.
const HALF_LOSS_TOLERANCE: f64 = 1e-2;

/// Mixed precision (`--dtype bf16`/`f16`): every method trains with losses near f32's, frozen
/// parameters stored in the half type and never moved, trainable ones kept in f32 (so their
/// gradients and AdamW state are f32), and the weights as prepared smaller than in f32.
#[test]
fn every_method_trains_in_half_precision() {
    let precision = half_precision();
    let half_dtype = precision.dtype();
    for method in methods() {
        let name = format!("{} in {precision}", method.name());
        let here = train::<Autodiff<B>>(&method, precision);
        let flex = train::<Autodiff<Flex>>(&method, Precision::F32);
        assert_trains_like_flex(&name, &method, &here, &flex, HALF_LOSS_TOLERANCE);
        assert_eq!(here.dtypes.0, HashSet::from([DType::F32]), "{name}");
        if method != Method::Full {
            assert_eq!(here.dtypes.1, HashSet::from([half_dtype]), "{name}");
            assert!(here.weight_bytes < flex.weight_bytes, "{name}");
        }
    }
}

/// How many steps' losses must equal flex's: all of them, but only the first for the adapter
/// methods, whose A matrices each backend draws from its own random generator (B starts at
/// zero, so the first step's loss does not depend on them).
fn comparable_steps(method: &Method) -> usize {
    match method {
        Method::Full | Method::Spectrum(_) => usize::MAX,
        _ => 1,
    }
}

/// Equal bit for bit, any two NaNs equal.
fn same_bits(a: &[f32], b: &[f32]) -> bool {
    a.len() == b.len()
        && a.iter()
            .zip(b)
            .all(|(x, y)| x.to_bits() == y.to_bits() || (x.is_nan() && y.is_nan()))
}

#[test]
fn nf4_dequantizes_like_bitsandbytes() {
    let bytes = std::fs::read(common::fixture("nf4/nf4_cases.safetensors")).unwrap();
    let file = SafeTensors::deserialize(&bytes).unwrap();
    let floats = |name: &str| -> (Vec<f32>, Vec<usize>) {
        let t = file.tensor(name).unwrap();
        let v = t
            .data()
            .chunks_exact(4)
            .map(|c| f32::from_le_bytes(c.try_into().unwrap()))
            .collect();
        (v, t.shape().to_vec())
    };
    let (_, metadata) = SafeTensors::read_metadata(&bytes).unwrap();
    let cases = metadata.metadata().clone().unwrap()["cases"].clone();
    let device = Default::default();
    let mut compared = 0;
    for case in cases.split(',') {
        let (input, shape) = floats(&format!("{case}.input"));
        if input.len() % 64 != 0 {
            continue; // not whole NF4 blocks: refused by Nf4Weight (checked on flex's unit tests)
        }
        let weight = Nf4Weight::<B>::quantize(&input, [shape[0], shape[1]], &device).unwrap();
        // Burn's layout is [in, out]: transposed back to the reference's rows.
        let got = values(weight.dequantize().transpose());
        let (want, _) = floats(&format!("{case}.dq_dequant"));
        assert!(same_bits(&got, &want), "{case}");
        compared += 1;
    }
    assert!(compared >= 4, "only {compared} whole-block cases");
}

#[test]
fn smollm2_logits_equal_flex() {
    let Some(dir) = common::smollm2_dir() else {
        return;
    };
    let tokenizer = Tokenizer::from_dir(&dir).unwrap();
    let prompt = tokenizer
        .encode(
            "The capital of France is Paris, and the capital of Italy is",
            true,
        )
        .unwrap();
    let batch = std::slice::from_ref(&prompt);
    let here = LlamaForCausalLM::<B>::from_pretrained(&dir, &Default::default()).unwrap();
    let flex = LlamaForCausalLM::<Flex>::from_pretrained(&dir, &Default::default()).unwrap();
    let here = values(here.forward(ids_tensor(batch, &Default::default()).unwrap()));
    let flex = values(flex.forward(ids_tensor(batch, &Default::default()).unwrap()));
    let diff = max_abs_diff(&here, &flex);
    eprintln!(
        "SmolLM2, {} positions: max |logit difference| to flex {diff:.2e}",
        prompt.len()
    );
    assert!(diff < smollm2_logit_tolerance(), "{diff}");
}

#[test]
fn smollm2_greedy_generation_equals_transformers() {
    let Some(dir) = common::smollm2_dir() else {
        return;
    };
    let tokenizer = Tokenizer::from_dir(&dir).unwrap();
    let model = LlamaForCausalLM::<B>::from_pretrained(&dir, &Default::default()).unwrap();
    for case in common::smollm2_reference()["greedy"].as_array().unwrap() {
        let prompt = case["prompt"].as_str().unwrap();
        let prompt_ids = if case["kind"] == "chat" {
            let text = tokenizer
                .apply_chat_template(&[ChatMessage::user("What is the capital of France?")], true)
                .unwrap();
            assert_eq!(text, prompt);
            tokenizer.encode(&text, false).unwrap()
        } else {
            tokenizer.encode(prompt, true).unwrap()
        };
        assert_eq!(
            prompt_ids,
            common::json_ids(&case["prompt_ids"]),
            "{prompt:?}"
        );

        let config = GenerationConfig {
            max_new_tokens: 12,
            eos_token_ids: vec![2],
            ..Default::default()
        };
        let generation =
            generate(&model, &prompt_ids, &config, &Default::default(), |_| {}).unwrap();
        assert_eq!(
            generation.generated_ids,
            common::json_ids(&case["generated_ids"]),
            "{prompt:?}"
        );
        assert_eq!(
            tokenizer.decode(&generation.generated_ids, true).unwrap(),
            case["text"].as_str().unwrap()
        );

        let want = case["last_logits_top"].as_array().unwrap();
        let got = top_logits(&generation.last_prompt_logits, want.len());
        for ((id, logit), want) in got.iter().zip(want) {
            assert_eq!(u64::from(*id), want[0].as_u64().unwrap(), "{prompt:?}");
            let want = want[1].as_f64().unwrap() as f32;
            assert!(
                (logit - want).abs() < smollm2_logit_tolerance(),
                "{prompt:?}: logit {logit} vs {want}"
            );
        }
    }
}

/// `spectrum train` on the backend of this build, through the binary.
mod cli {
    use std::path::Path;
    use std::process::{Command, Output};

    use super::common::{counting_data, tiny_model};

    use burn_spectrum::nn::Precision;
    use burn_spectrum::train::read_summary;

    /// The backend the build adds to flex (flex itself when it adds none).
    const BACKEND: &str = if cfg!(feature = "cuda") {
        "cuda"
    } else if cfg!(feature = "wgpu") {
        "wgpu"
    } else {
        "flex"
    };
    /// Environment under which that backend finds no device: Vulkan without drivers, CUDA
    /// without visible GPUs.
    #[cfg(any(feature = "wgpu", feature = "cuda"))]
    const NO_DEVICE: (&str, &str) = if cfg!(feature = "cuda") {
        ("CUDA_VISIBLE_DEVICES", "")
    } else {
        ("VK_ICD_FILENAMES", "/nonexistent/icd.json")
    };

    fn spectrum(args: &[&str]) -> Command {
        let mut command = Command::new(super::common::spectrum_bin());
        command.args(args);
        command
    }

    fn s(path: &Path) -> &str {
        path.to_str().unwrap()
    }

    fn train(model: &Path, data: &Path, out: &Path, backend: &str, method: &str) -> Command {
        spectrum(&[
            "train",
            s(model),
            "--data",
            s(data),
            "--method",
            method,
            "--backend",
            backend,
            "--output-dir",
            s(out),
            "--steps",
            "3",
            "--batch-size",
            "2",
            "--seq-len",
            "256",
            "--eval-samples",
            "2",
            "--quiet",
        ])
    }

    fn losses(out: &Path) -> Vec<f64> {
        let text = std::fs::read_to_string(out.join("metrics.jsonl")).unwrap();
        text.lines()
            .map(|line| serde_json::from_str::<serde_json::Value>(line).unwrap())
            .filter_map(|line| line["loss"].as_f64())
            .collect()
    }

    fn succeeded(out: Output) {
        assert!(
            out.status.success(),
            "{}",
            String::from_utf8_lossy(&out.stderr)
        );
    }

    /// The whole workflow of `spectrum train` (load, train, evaluate, export) on this backend
    /// gives flex's losses (for LoRA the first step's: see `comparable_steps`).
    #[cfg(any(feature = "wgpu", feature = "cuda"))]
    #[test]
    fn training_through_the_binary_equals_flex() {
        let dir = tempfile::tempdir().unwrap();
        let (model, data) = (tiny_model(dir.path()), counting_data(dir.path()));
        for method in ["full", "lora"] {
            let here = dir.path().join(format!("{method}-{BACKEND}"));
            let flex = dir.path().join(format!("{method}-flex"));
            succeeded(
                train(&model, &data, &here, BACKEND, method)
                    .output()
                    .unwrap(),
            );
            succeeded(
                train(&model, &data, &flex, "flex", method)
                    .output()
                    .unwrap(),
            );
            let (got, want) = (losses(&here), losses(&flex));
            eprintln!("{method}: {BACKEND} {got:?}, flex {want:?}");
            assert_eq!(got.len(), 3, "{got:?}");
            assert_eq!(got.len(), want.len());
            let comparable = if method == "full" { got.len() } else { 1 };
            for (g, w) in got.iter().zip(&want).take(comparable) {
                assert!(
                    (g - w).abs() <= super::loss_tolerance() * w.abs(),
                    "{got:?} vs {want:?}"
                );
            }
            assert!(here.join("model/model.safetensors").exists());
        }
    }

    /// `--dtype bf16` and `--dtype f16` on this backend: a type its device has trains the whole
    /// workflow (first loss near flex's f32 one, weights as prepared smaller, an f32 model
    /// exported); a type it lacks (bf16 on lavapipe) is refused with one message and exit
    /// status 1 before anything is written.
    #[test]
    fn half_precision_trains_or_is_refused_before_any_work() {
        let dir = tempfile::tempdir().unwrap();
        let (model, data) = (tiny_model(dir.path()), counting_data(dir.path()));
        let flex = dir.path().join("flex-f32");
        succeeded(
            train(&model, &data, &flex, "flex", "lora")
                .output()
                .unwrap(),
        );
        let device = Default::default();
        let mut trained = 0;
        for precision in [Precision::Bf16, Precision::F16] {
            let out_dir = dir.path().join(format!("{BACKEND}-{precision}"));
            let out = train(&model, &data, &out_dir, BACKEND, "lora")
                .args(["--dtype", &precision.to_string()])
                .output()
                .unwrap();
            if precision
                .check_supported::<super::B>(BACKEND, &device)
                .is_err()
            {
                let stderr = String::from_utf8_lossy(&out.stderr);
                assert_eq!(out.status.code(), Some(1), "{stderr}");
                let message = format!("--dtype {precision}: the {BACKEND} backend's device");
                assert!(stderr.contains(&message), "{stderr}");
                assert!(!stderr.contains("panicked"), "{stderr}");
                assert!(!out_dir.exists());
                continue;
            }
            succeeded(out);
            let (got, want) = (losses(&out_dir), losses(&flex));
            eprintln!("lora in {precision} on {BACKEND}: {got:?}, flex f32 {want:?}");
            assert!(
                (got[0] - want[0]).abs() <= super::HALF_LOSS_TOLERANCE * want[0],
                "{got:?} vs {want:?}"
            );
            let bytes = |dir: &Path| {
                read_summary(&dir.join("summary.json"))
                    .unwrap()
                    .weight_bytes
            };
            assert!(bytes(&out_dir) < bytes(&flex), "{precision}");
            let exported = std::fs::read(out_dir.join("model/model.safetensors")).unwrap();
            let exported = safetensors::SafeTensors::deserialize(&exported).unwrap();
            assert!(
                exported
                    .tensors()
                    .iter()
                    .all(|(_, t)| t.dtype() == safetensors::Dtype::F32)
            );
            trained += 1;
        }
        assert!(trained >= 1, "neither bf16 nor f16 ran on {BACKEND}");
    }

    /// Without a device, one message and exit status 1, before anything is written.
    #[cfg(any(feature = "wgpu", feature = "cuda"))]
    #[test]
    fn a_backend_without_a_device_is_refused_before_any_work() {
        let dir = tempfile::tempdir().unwrap();
        let (model, data) = (tiny_model(dir.path()), counting_data(dir.path()));
        let out_dir = dir.path().join("out");
        let out = train(&model, &data, &out_dir, BACKEND, "full")
            .env(NO_DEVICE.0, NO_DEVICE.1)
            .output()
            .unwrap();
        let stderr = String::from_utf8_lossy(&out.stderr);
        assert_eq!(out.status.code(), Some(1), "{stderr}");
        assert!(
            stderr.contains(&format!("the {BACKEND} backend cannot run here")),
            "{stderr}"
        );
        assert!(!stderr.contains("panicked"), "{stderr}");
        assert!(!out_dir.exists());
    }
}
