//! Training memory per method, measured in one run: SmolLM2-135M-Instruct and a
//! Llama-3.2-1B-shaped model (random bf16 weights, written once by this bench to
//! `target/bench-models/llama-3.2-1b-shape`), on the flex CPU backend.
//!
//!     ./scripts/get_smollm2.sh
//!     cargo bench --bench train_memory
//!
//! Each case runs in its own process (this binary again, with `TRAIN_MEMORY_CASE`): it loads
//! and prepares the model as `spectrum train` does (the QLoRA methods straight to 4 bits),
//! notes the peak resident memory so far (`VmHWM`: loading), resets it
//! (`/proc/self/clear_refs`), runs two training steps (AdamW's state is made in the first) and
//! notes the peak again (the step peak). The whole-process peak is the larger of the two.
//! A case whose estimated need ([`MemoryEstimate`], with its headroom) is above the memory
//! available is not started; the table says so with the estimate.
//!
//! The token ids are synthetic (memory does not depend on them); every position is a target.

mod common;

use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::Instant;

use burn::backend::{Autodiff, Flex};
use common::{peak_kib, root, run_child};

use burn_spectrum::data::Batch;
use burn_spectrum::model::{LlamaConfig, LlamaForCausalLM};
use burn_spectrum::peft::LoraConfig;
use burn_spectrum::train::{
    LrSchedule, MemoryEstimate, MemoryOptions, Method, SpectrumSource, TrainConfig, TrainStep,
    available_memory_bytes, batch_gradients,
};
use safetensors::{Dtype, tensor::TensorView};

// The allocator matters on the CPU backend (see benches/model.rs).
#[global_allocator]
static ALLOCATOR: mimalloc::MiMalloc = mimalloc::MiMalloc;

type A = Autodiff<Flex>;

const STEPS: usize = 2;

#[derive(Clone, Copy, Debug, PartialEq)]
enum Model {
    SmolLm2,
    Llama1b,
}

#[derive(Clone, Copy, Debug, PartialEq)]
enum MethodKind {
    Full,
    Spectrum,
    Lora,
    QLora,
    /// QLoRA at LoRA's rank (16): the same adapters over an NF4 base instead of an f32 one.
    QLoraR16,
    SpectrumQLora,
}

struct Case {
    model: Model,
    method: MethodKind,
    batch: usize,
    seq: usize,
    checkpointing: bool,
}

fn cases() -> Vec<Case> {
    use MethodKind::*;
    let case = |model, method, batch, seq, checkpointing| Case {
        model,
        method,
        batch,
        seq,
        checkpointing,
    };
    let mut all = Vec::new();
    for method in [Full, Spectrum, Lora, QLora, SpectrumQLora] {
        all.push(case(Model::SmolLm2, method, 2, 256, false));
    }
    for method in [Full, Lora] {
        for checkpointing in [false, true] {
            all.push(case(Model::SmolLm2, method, 1, 2048, checkpointing));
        }
    }
    for method in [Full, Spectrum, Lora, QLora, QLoraR16, SpectrumQLora] {
        all.push(case(Model::Llama1b, method, 1, 256, false));
    }
    for method in [Lora, QLora, QLoraR16] {
        all.push(case(Model::Llama1b, method, 1, 256, true));
    }
    all
}

fn method(kind: MethodKind) -> Method {
    // LoRA r 16 / alpha 32; QLoRA the paper's r 64 / alpha 16 (as `spectrum train`).
    let lora = LoraConfig {
        r: 16,
        lora_alpha: 32.0,
        ..Default::default()
    };
    let qlora = LoraConfig {
        r: 64,
        lora_alpha: 16.0,
        ..Default::default()
    };
    let spectrum = SpectrumSource::TopPercent(25);
    match kind {
        MethodKind::Full => Method::Full,
        MethodKind::Spectrum => Method::Spectrum(spectrum),
        MethodKind::Lora => Method::Lora(lora),
        MethodKind::QLora => Method::QLora(qlora),
        MethodKind::QLoraR16 => Method::QLora(lora),
        MethodKind::SpectrumQLora => Method::SpectrumQLora(spectrum, qlora),
    }
}

fn model_dir(model: Model) -> PathBuf {
    match model {
        Model::SmolLm2 => root().join("assets/models/SmolLM2-135M-Instruct"),
        Model::Llama1b => root().join("target/bench-models/llama-3.2-1b-shape"),
    }
}

fn memory_options(case: &Case) -> MemoryOptions {
    MemoryOptions {
        gradient_checkpointing: case.checkpointing,
        ..Default::default()
    }
}

fn mib(kib: u64) -> f64 {
    kib as f64 / 1024.0
}

/// Synthetic ids, every position a target.
fn batch(case: &Case, vocab: usize) -> Batch {
    let ids: Vec<Vec<u32>> = (0..case.batch)
        .map(|b| {
            (0..case.seq)
                .map(|t| ((t * 7919 + b * 104_729 + 11) % vocab) as u32)
                .collect()
        })
        .collect();
    Batch {
        attention_mask: vec![vec![1; case.seq]; case.batch],
        labels: ids
            .iter()
            .map(|r| r.iter().map(|&i| i as i64).collect())
            .collect(),
        ids,
    }
}

/// One case; prints `load_peak_mib step_peak_mib seconds_per_step nf4_bytes f32_bytes`.
fn child(index: usize) {
    let case = &cases()[index];
    let device = Default::default();
    let dir = model_dir(case.model);
    let config = LlamaConfig::from_file(&dir).expect("config");
    let prepared = method(case.method)
        .load::<A>(&dir, &device)
        .expect("model loads");
    let load_peak = peak_kib();
    let (nf4_bytes, nf4_values) = nf4_base(&prepared.model);
    let batch = batch(case, config.vocab_size);
    let train = TrainConfig {
        schedule: LrSchedule::constant(1e-5),
        ..Default::default()
    };
    let (mut model, mut step) = TrainStep::new(prepared.model, &prepared.trainable, train);
    let options = memory_options(case);
    let _ = std::fs::write("/proc/self/clear_refs", "5");
    let started = Instant::now();
    for _ in 0..STEPS {
        model = step
            .step(model, std::slice::from_ref(&batch), |m, b| {
                batch_gradients(m, b, &options)
            })
            .expect("step")
            .0;
    }
    let seconds = started.elapsed().as_secs_f64() / STEPS as f64;
    println!(
        "{:.1} {:.1} {seconds:.2} {nf4_bytes} {}",
        mib(load_peak),
        mib(peak_kib()),
        4 * nf4_values
    );
}

/// `(bytes, values)` of the NF4 base weights.
fn nf4_base(model: &LlamaForCausalLM<A>) -> (usize, usize) {
    model
        .projections()
        .iter()
        .filter_map(|(_, p)| p.nf4())
        .map(|w| (w.storage_bytes(), w.shape()[0] * w.shape()[1]))
        .fold((0, 0), |(b, n), (wb, wn)| (b + wb, n + wn))
}

/// Llama-3.2-1B's shape (16 layers, hidden 2048, intermediate 8192, 32 heads / 8 KV heads,
/// vocabulary 128,256, tied embeddings) with random bf16 weights, written once.
fn write_llama_1b(dir: &Path) {
    if dir.join("model.safetensors").exists() {
        return;
    }
    eprintln!(
        "writing a Llama-3.2-1B-shaped model (2.5 GB) to {}",
        dir.display()
    );
    std::fs::create_dir_all(dir).expect("scratch folder");
    let config = r#"{
  "architectures": ["LlamaForCausalLM"], "model_type": "llama", "vocab_size": 128256,
  "hidden_size": 2048, "intermediate_size": 8192, "num_hidden_layers": 16,
  "num_attention_heads": 32, "num_key_value_heads": 8, "head_dim": 64,
  "rms_norm_eps": 1e-05, "rope_theta": 500000.0, "max_position_embeddings": 131072,
  "rope_scaling": {"factor": 32.0, "high_freq_factor": 4.0, "low_freq_factor": 1.0,
    "original_max_position_embeddings": 8192, "rope_type": "llama3"},
  "tie_word_embeddings": true, "bos_token_id": 128000, "eos_token_id": 128001,
  "torch_dtype": "bfloat16"
}"#;
    std::fs::write(dir.join("config.json"), config).expect("config written");
    let (d, kv, i) = (2048, 512, 8192);
    let mut shapes: Vec<(String, Vec<usize>)> = vec![
        ("model.embed_tokens.weight".into(), vec![128_256, d]),
        ("model.norm.weight".into(), vec![d]),
    ];
    for l in 0..16 {
        let p = format!("model.layers.{l}");
        shapes.extend([
            (format!("{p}.input_layernorm.weight"), vec![d]),
            (format!("{p}.post_attention_layernorm.weight"), vec![d]),
            (format!("{p}.self_attn.q_proj.weight"), vec![d, d]),
            (format!("{p}.self_attn.k_proj.weight"), vec![kv, d]),
            (format!("{p}.self_attn.v_proj.weight"), vec![kv, d]),
            (format!("{p}.self_attn.o_proj.weight"), vec![d, d]),
            (format!("{p}.mlp.gate_proj.weight"), vec![i, d]),
            (format!("{p}.mlp.up_proj.weight"), vec![i, d]),
            (format!("{p}.mlp.down_proj.weight"), vec![d, i]),
        ]);
    }
    let mut state = 0x2545_F491_4F6C_DD1Du64;
    let data: Vec<Vec<u8>> = shapes
        .iter()
        .map(|(name, shape)| {
            let n: usize = shape.iter().product();
            let mut bytes = Vec::with_capacity(2 * n);
            for _ in 0..n {
                let value = if name.ends_with("norm.weight") {
                    1.0
                } else {
                    // Uniform with standard deviation 0.02 (xorshift64).
                    state ^= state << 13;
                    state ^= state >> 7;
                    state ^= state << 17;
                    let unit = (state >> 40) as f32 / (1u64 << 24) as f32;
                    (unit - 0.5) * 0.02 * 12f32.sqrt()
                };
                bytes.extend_from_slice(&half::bf16::from_f32(value).to_le_bytes());
            }
            bytes
        })
        .collect();
    let views: Vec<(String, TensorView)> = shapes
        .iter()
        .zip(&data)
        .map(|((name, shape), bytes)| {
            let view = TensorView::new(Dtype::BF16, shape.clone(), bytes).expect("view");
            (name.clone(), view)
        })
        .collect();
    let tmp = dir.join("model.safetensors.tmp");
    safetensors::serialize_to_file(views, None, &tmp).expect("weights written");
    std::fs::rename(&tmp, dir.join("model.safetensors")).expect("renamed");
}

fn main() {
    burn_spectrum::backend::retain_freed_memory();
    if let Ok(index) = std::env::var("TRAIN_MEMORY_CASE") {
        child(index.parse().expect("a case index"));
        return;
    }
    if std::env::var("TRAIN_MEMORY_WRITE").is_ok() {
        write_llama_1b(&model_dir(Model::Llama1b));
        return;
    }
    let smollm2 = model_dir(Model::SmolLm2);
    if !smollm2.join("model.safetensors").exists() {
        eprintln!(
            "{} is missing: run ./scripts/get_smollm2.sh",
            smollm2.display()
        );
        std::process::exit(1);
    }
    let exe = std::env::current_exe().expect("own path");
    // In its own process, so that the 2.5 GB being written does not count in any case.
    let status = Command::new(&exe)
        .env("TRAIN_MEMORY_WRITE", "1")
        .status()
        .expect("runs");
    assert!(status.success(), "the 1B-shaped model could not be written");
    let available = available_memory_bytes();
    let started = Instant::now();
    let mut rows = Vec::new();
    for (index, case) in cases().iter().enumerate() {
        let config = LlamaConfig::from_file(&model_dir(case.model)).expect("config");
        let m = method(case.method);
        let estimate = MemoryEstimate::of(&config, &m, case.batch, case.seq, &memory_options(case));
        let refused = available.and_then(|a| estimate.check(a).err());
        let line = match refused {
            Some(error) => {
                eprintln!("{} {}: not run: {error}", name(case.model), m.name());
                None
            }
            None => Some(run_child(&exe, "TRAIN_MEMORY_CASE", index)),
        };
        rows.push((estimate, line));
    }
    report(&rows, available);
    println!("({:.0} s in all)", started.elapsed().as_secs_f64());
}

/// The method's name, with the rank where two cases share a method.
fn label(kind: MethodKind) -> String {
    match kind {
        MethodKind::QLora => "qlora (r 64)".into(),
        MethodKind::QLoraR16 => "qlora (r 16)".into(),
        MethodKind::Lora => "lora (r 16)".into(),
        _ => method(kind).name(),
    }
}

fn name(model: Model) -> &'static str {
    match model {
        Model::SmolLm2 => "SmolLM2-135M",
        Model::Llama1b => "Llama-3.2-1B shape",
    }
}

/// The measured fields of a case: load peak, step peak, seconds per step, NF4 bytes, the
/// same values' f32 bytes.
struct Measured {
    load: f64,
    step: f64,
    seconds: f64,
    nf4_bytes: f64,
    f32_bytes: f64,
}

impl Measured {
    fn parse(line: &str) -> Self {
        let f: Vec<f64> = line
            .split(' ')
            .map(|v| v.parse().expect("a number"))
            .collect();
        Measured {
            load: f[0],
            step: f[1],
            seconds: f[2],
            nf4_bytes: f[3],
            f32_bytes: f[4],
        }
    }

    fn whole(&self) -> f64 {
        self.load.max(self.step)
    }
}

fn report(rows: &[(MemoryEstimate, Option<String>)], available: Option<f64>) {
    let cases = cases();
    let measured: Vec<Option<Measured>> = rows
        .iter()
        .map(|(_, line)| line.as_deref().map(Measured::parse))
        .collect();
    let mib = |b: f64| b / (1024.0 * 1024.0);
    println!(
        "training memory, flex CPU, {STEPS} AdamW steps per case; available {:.0} MiB",
        available.map_or(f64::NAN, mib)
    );
    println!(
        "{:<19} {:<18} {:>7} {:>5} {:>10} {:>10} {:>10} {:>11} {:>7}",
        "model",
        "method",
        "batch",
        "ckpt",
        "load MiB",
        "step MiB",
        "whole MiB",
        "estim. MiB",
        "s/step"
    );
    for ((case, (estimate, _)), m) in cases.iter().zip(rows).zip(&measured) {
        let shape = format!("{}x{}", case.batch, case.seq);
        let ckpt = if case.checkpointing { "yes" } else { "no" };
        let head = format!(
            "{:<19} {:<18} {:>7} {:>5}",
            name(case.model),
            label(case.method),
            shape,
            ckpt
        );
        match m {
            Some(m) => println!(
                "{head} {:>10.0} {:>10.0} {:>10.0} {:>11.0} {:>7.1}",
                m.load,
                m.step,
                m.whole(),
                mib(estimate.needed_bytes()),
                m.seconds
            ),
            None => println!(
                "{head} {:>10} {:>10} {:>10} {:>11.0} {:>7}  does not fit: needs {:.0} MiB",
                "-",
                "-",
                "-",
                mib(estimate.needed_bytes()),
                "-",
                mib(estimate.needed_bytes())
            ),
        }
    }
    let find = |model, kind, seq, ckpt| {
        cases
            .iter()
            .position(|c| {
                c.model == model && c.method == kind && c.seq == seq && c.checkpointing == ckpt
            })
            .and_then(|i| measured[i].as_ref())
    };
    use MethodKind::*;
    let ratio = |a: Option<&Measured>, b: Option<&Measured>, f: fn(&Measured) -> f64| match (a, b) {
        (Some(a), Some(b)) => format!("{:.2}x", f(a) / f(b)),
        _ => "n/a".into(),
    };
    println!("targets:");
    println!(
        "  SmolLM2 2x256, step peak: qlora / lora = {} (< 1), spectrum-25-qlora / qlora = {} (< 1)",
        ratio(
            find(Model::SmolLm2, QLora, 256, false),
            find(Model::SmolLm2, Lora, 256, false),
            |m| m.step
        ),
        ratio(
            find(Model::SmolLm2, SpectrumQLora, 256, false),
            find(Model::SmolLm2, QLora, 256, false),
            |m| m.step
        ),
    );
    for (qlora, checkpointing) in [
        (QLora, false),
        (QLoraR16, false),
        (QLora, true),
        (QLoraR16, true),
    ] {
        println!(
            "  1B shape 1x256, whole-process peak, {} / lora (r 16){}: {} (<= 0.5)",
            label(qlora),
            if checkpointing {
                ", both with gradient checkpointing"
            } else {
                ""
            },
            ratio(
                find(Model::Llama1b, qlora, 256, checkpointing),
                find(Model::Llama1b, Lora, 256, checkpointing),
                |m| m.whole()
            ),
        );
    }
    for kind in [Full, Lora] {
        println!(
            "  SmolLM2 1x2048, step peak with / without gradient checkpointing, {}: {} (<= 0.6)",
            method(kind).name(),
            ratio(
                find(Model::SmolLm2, kind, 2048, true),
                find(Model::SmolLm2, kind, 2048, false),
                |m| m.step
            ),
        );
    }
    if let Some(m) = find(Model::SmolLm2, QLora, 256, false) {
        println!(
            "  NF4 base bytes / f32 bytes of the same values: {:.3}x (<= 0.15)",
            m.nf4_bytes / m.f32_bytes
        );
    }
}
