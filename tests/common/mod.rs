#![allow(dead_code)]
//! Helpers shared by the integration tests.

use std::path::{Path, PathBuf};

pub mod expected;

/// The backend of the backend-generic suites (`tests/model_reference.rs`, `tests/backends.rs`):
/// CUDA or wgpu when built with that feature (`cargo test --features wgpu --test backends`),
/// else flex.
pub type TestBackend = burn_spectrum::backend::DefaultBackend;

/// Whether the build's backend multiplies f32 matrices with their inputs rounded to TF32 (10
/// explicit significand bits instead of f32's 23). CubeCL's autotune picks such tensor-core
/// kernels for f32 on CUDA GPUs that have them, as PyTorch does under `allow_tf32`; a product
/// then carries relative errors near 2^-11 instead of 2^-24, and results that pass through many
/// products are compared with the TF32 tolerances ([`tolerance`]). Measured, not assumed: a few
/// shapes, each multiplied twice (autotuning may pick a different kernel the second time).
pub fn matmul_rounds_to_tf32() -> bool {
    use burn::tensor::Tensor;
    static ROUNDS: std::sync::OnceLock<bool> = std::sync::OnceLock::new();
    *ROUNDS.get_or_init(|| {
        let device = Default::default();
        // 1 + 2^-12 is exact in f32 and rounds to 1 in TF32: a sum of k such products is
        // k + k/4096 in f32 and k with TF32 inputs.
        let rounds = [(256, 256, 256), (64, 64, 64), (16, 64, 128)]
            .into_iter()
            .flat_map(|shape| [shape, shape])
            .any(|(m, k, n)| {
                let a = Tensor::<TestBackend, 2>::full([m, k], 1.0 + 2f32.powi(-12), &device);
                let b = Tensor::<TestBackend, 2>::ones([k, n], &device);
                let first = a.matmul(b).into_data().to_vec::<f32>().unwrap()[0];
                first < k as f32 + k as f32 / 8192.0
            });
        if rounds {
            eprintln!("f32 matrix products on this backend round their inputs to TF32");
        }
        rounds
    })
}

/// `f32` where the backend keeps f32 matrix products exact to f32, else `tf32`
/// ([`matmul_rounds_to_tf32`]).
pub fn tolerance<T>(f32: T, tf32: T) -> T {
    if matmul_rounds_to_tf32() { tf32 } else { f32 }
}

/// The repository the tests read their fixtures and assets from: where they were built, or
/// `SPECTRUM_REPO_DIR` when test executables built elsewhere run on another machine
/// (`scripts/gpu_check.sh`).
pub fn repo_dir() -> PathBuf {
    std::env::var_os("SPECTRUM_REPO_DIR")
        .map(PathBuf::from)
        .unwrap_or_else(|| PathBuf::from(env!("CARGO_MANIFEST_DIR")))
}

/// The `spectrum` binary: the one Cargo built for these tests, or `SPECTRUM_BIN`.
pub fn spectrum_bin() -> PathBuf {
    std::env::var_os("SPECTRUM_BIN")
        .map(PathBuf::from)
        .unwrap_or_else(|| PathBuf::from(env!("CARGO_BIN_EXE_spectrum")))
}

pub fn fixture(name: &str) -> PathBuf {
    repo_dir().join("tests/fixtures").join(name)
}

/// The published tables of spectrum.py (Apache-2.0, with their license), carried in
/// `tests/fixtures/spectrum_snr_results/`.
pub fn published(name: &str) -> PathBuf {
    fixture("spectrum_snr_results").join(name)
}

pub const PUBLISHED: [&str; 6] = [
    "snr_results_HuggingFaceTB-SmolLM-135M.json",
    "snr_results_Qwen-Qwen2-MoE-57B-A14B.json",
    "snr_results_TinyLlama-TinyLlama-v1.1.json",
    "snr_results_meta-llama-Meta-Llama-3-8B.json",
    "snr_results_meta-llama-Meta-Llama-3.1-8B-Instruct.json",
    "snr_results_mistralai-Mistral-7B-v0.1.json",
];

/// Equal within `rel` relative error; infinities and NaNs must match exactly.
pub fn close(got: f64, want: f64, rel: f64) -> bool {
    if want.is_nan() || got.is_nan() {
        return want.is_nan() && got.is_nan();
    }
    if want.is_infinite() || got.is_infinite() {
        return got == want;
    }
    (got - want).abs() <= rel * want.abs().max(1e-30)
}

/// Standard normal numbers from a fixed seed (SplitMix64 and Box–Muller).
pub struct Gaussian(u64);

impl Gaussian {
    pub fn new(seed: u64) -> Self {
        Gaussian(seed)
    }

    fn uniform(&mut self) -> f64 {
        self.0 = self.0.wrapping_add(0x9E3779B97F4A7C15);
        let mut z = self.0;
        z = (z ^ (z >> 30)).wrapping_mul(0xBF58476D1CE4E5B9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94D049BB133111EB);
        ((z ^ (z >> 31)) >> 11) as f64 / (1u64 << 53) as f64
    }

    pub fn sample(&mut self) -> f64 {
        let u = self.uniform().max(f64::MIN_POSITIVE);
        let v = self.uniform();
        (-2.0 * u.ln()).sqrt() * (2.0 * std::f64::consts::PI * v).cos()
    }

    pub fn matrix(&mut self, rows: usize, cols: usize, scale: f64) -> Vec<f64> {
        (0..rows * cols).map(|_| self.sample() * scale).collect()
    }
}

/// A tensor's values as f32, row-major.
pub fn f32_values<B: burn::tensor::backend::Backend, const D: usize>(
    tensor: burn::tensor::Tensor<B, D>,
) -> Vec<f32> {
    tensor
        .into_data()
        .convert::<f32>()
        .into_vec::<f32>()
        .unwrap()
}

/// The largest absolute difference of two equally long slices.
pub fn max_abs_diff(got: &[f32], want: &[f32]) -> f32 {
    assert_eq!(got.len(), want.len());
    got.iter()
        .zip(want)
        .map(|(g, w)| (g - w).abs())
        .fold(0.0, f32::max)
}

/// The SmolLM2 folder that `scripts/get_smollm2.sh` makes, or `None` (the test skips) when it
/// is missing; with `SPECTRUM_REQUIRE_ASSETS=1` (CI) a missing folder fails the test.
pub fn smollm2_dir() -> Option<PathBuf> {
    asset(
        "assets/models/SmolLM2-135M-Instruct",
        "tokenizer.json",
        "get_smollm2.sh",
    )
}

/// OLMo's evaluation requests that `scripts/get_eval_data.sh` puts in `assets/eval`, as
/// [`smollm2_dir`] finds its folder.
#[allow(dead_code)] // not every test evaluates
pub fn eval_dir() -> Option<PathBuf> {
    asset("assets/eval", "arc_easy", "get_eval_data.sh")
}

/// The folder `dir` of the repository when it holds `marker`; else `None` with a message, or
/// a failure under `SPECTRUM_REQUIRE_ASSETS=1`, naming the script that fetches it.
fn asset(dir: &str, marker: &str, script: &str) -> Option<PathBuf> {
    let dir = repo_dir().join(dir);
    if dir.join(marker).exists() {
        return Some(dir);
    }
    let required = std::env::var("SPECTRUM_REQUIRE_ASSETS").is_ok_and(|v| v == "1");
    assert!(
        !required,
        "{} is missing: run ./scripts/{script}",
        dir.display()
    );
    eprintln!(
        "skipped: {} is missing (run ./scripts/{script})",
        dir.display()
    );
    None
}

/// The lines of a run's `metrics.jsonl`, without their wall-clock `seconds`: what an
/// interrupted and resumed run must reproduce.
pub fn metrics_without_seconds(path: &Path) -> Vec<serde_json::Value> {
    let text = std::fs::read_to_string(path).unwrap();
    text.lines()
        .map(|line| {
            let mut value: serde_json::Value = serde_json::from_str(line).unwrap();
            value.as_object_mut().unwrap().remove("seconds");
            value
        })
        .collect()
}

/// `n` examples of 5 to 14 tokens (ids below 256) with a masked prompt of two: training data
/// for the tiny fixture models.
pub fn short_examples(n: u32) -> Vec<burn_spectrum::data::Example> {
    (0..n)
        .map(|i| {
            let len = 5 + (i as usize * 7) % 10;
            let ids: Vec<u32> = (0..len as u32)
                .map(|t| (t * 13 + i * 31 + 7) % 256)
                .collect();
            let labels = ids
                .iter()
                .enumerate()
                .map(|(t, &id)| {
                    if t < 2 {
                        burn_spectrum::model::IGNORE_INDEX
                    } else {
                        id as i64
                    }
                })
                .collect();
            burn_spectrum::data::Example { ids, labels }
        })
        .collect()
}

/// Each parameter's path and values, in the model's visiting order.
pub fn named_values<B: burn::tensor::backend::Backend>(
    model: &burn_spectrum::model::LlamaForCausalLM<B>,
) -> Vec<(String, Vec<f32>)> {
    use burn::module::{Module, ModuleVisitor, Param};
    use burn::tensor::Tensor;
    struct Collect(Vec<Vec<f32>>);
    impl<B: burn::tensor::backend::Backend> ModuleVisitor<B> for Collect {
        fn visit_float<const D: usize>(&mut self, param: &Param<Tensor<B, D>>) {
            self.0.push(f32_values(param.val()));
        }
    }
    let mut collect = Collect(Vec::new());
    model.visit(&mut collect);
    burn_spectrum::nn::float_params(model)
        .into_iter()
        .map(|p| p.path)
        .zip(collect.0)
        .collect()
}

/// Training settings under which AdamW's update depends on the gradients' scale (an epsilon
/// near their size, a clipping bound above their norm): a sum taken for a mean shows.
pub fn scale_sensitive_config(total_steps: usize) -> burn_spectrum::train::TrainConfig {
    burn_spectrum::train::TrainConfig {
        schedule: burn_spectrum::train::LrSchedule::warmup_cosine(5e-3, 1, total_steps),
        weight_decay: 0.01,
        epsilon: 1e-3,
        max_grad_norm: Some(5.0),
        ..Default::default()
    }
}

/// The ids of the first decoder layer's and the head's parameters: a selection as Spectrum
/// makes, for the fixture models.
pub fn first_layer_and_head<B: burn::tensor::backend::Backend>(
    model: &burn_spectrum::model::LlamaForCausalLM<B>,
) -> Vec<burn::module::ParamId> {
    burn_spectrum::nn::float_params(model)
        .iter()
        .filter(|p| p.path.starts_with("model.layers.0.") || p.path.starts_with("lm_head"))
        .map(|p| p.id)
        .collect()
}

/// transformers' outputs for SmolLM2 (`tests/fixtures/smollm2_reference.json`, made by
/// `scripts/smollm2_reference.py`).
pub fn smollm2_reference() -> serde_json::Value {
    let text = std::fs::read_to_string(fixture("smollm2_reference.json")).unwrap();
    serde_json::from_str(&text).unwrap()
}

/// A JSON array of token ids.
pub fn json_ids(value: &serde_json::Value) -> Vec<u32> {
    value
        .as_array()
        .unwrap()
        .iter()
        .map(|v| v.as_u64().unwrap() as u32)
        .collect()
}

/// A complete tiny model folder `dir/model` (tokenizer and chat template included), imported
/// from the GGUF fixture by the `spectrum` binary.
pub fn tiny_model(dir: &Path) -> PathBuf {
    let model = dir.join("model");
    let out = std::process::Command::new(spectrum_bin())
        .arg("import-gguf")
        .arg(fixture("gguf/tiny_llama.gguf"))
        .arg(&model)
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "import-gguf: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    model
}

/// An Alpaca file of 16 short records, `dir/data.json`.
pub fn counting_data(dir: &Path) -> PathBuf {
    let records: Vec<serde_json::Value> = (0..16)
        .map(|i| {
            serde_json::json!({"instruction": format!("Say {i}."), "input": "",
                               "output": format!("{i}.")})
        })
        .collect();
    let data = dir.join("data.json");
    std::fs::write(&data, serde_json::to_vec(&records).unwrap()).unwrap();
    data
}
