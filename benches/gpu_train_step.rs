//! Training throughput and peak device memory per method on the build's backend (CUDA with
//! `--features cuda`), beside PyTorch + transformers + PEFT on the same device in the same run.
//!
//!     cargo bench --features cuda --bench gpu_train_step
//!
//! (`scripts/gpu_check.sh` runs this binary, built here by `scripts/build_gpu_check.sh`, on a
//! GPU machine that has no Rust.) Models: SmolLM2-135M's and Llama-3.2-1B's shapes
//! (`benches/configs/*.json`) with random weights, so no checkpoint is needed; batch 8 x 512,
//! every position a target, the same token ids on both sides. Methods: full, Spectrum-25,
//! LoRA (r 16, alpha 32, all linear), QLoRA and Spectrum-25+QLoRA (r 64, alpha 16, the
//! paper's). AdamW lr 1e-5, global-norm clipping at 1.0.
//!
//! Each case runs in its own process: one warm-up step (kernel compilation and autotuning
//! happen there), then `GPU_BENCH_STEPS` timed steps (default 3), the median counts. Peak
//! device memory is the largest `memory.used` that `nvidia-smi` reports every 50 ms while the
//! case runs, less what was in use before it (so it includes the CUDA context); without
//! `nvidia-smi` it is not reported.
//!
//! Spectrum-25 scans the random weights as `spectrum train` would a checkpoint (top 25% of
//! each module type by SNR, embeddings included); the names it trains are handed to the peer,
//! and Spectrum-25+QLoRA and the fusion build's Spectrum-25 reuse its selection.
//!
//! Ours runs in f32 and in bf16 mixed precision (`--dtype bf16`: frozen weights and
//! activations in bf16, trainable weights and AdamW state in f32). The peer
//! (`scripts/bench_gpu_train_step.py`, through `SPECTRUM_BENCH_PYTHON`, default `python3`)
//! runs after each of ours: in f32 (TF32 off, PyTorch's default), f32 with TF32 products, and
//! bf16 mixed precision (autocast, f32 weights and AdamW state: how PyTorch users train).
//! bitsandbytes' QLoRA runs when it is installed.
//!
//! Settings: `GPU_BENCH_MODELS` (comma-separated config names, default
//! `smollm2-135m,llama-3.2-1b`; `tiny` for a quick run on the CPU), `GPU_BENCH_METHODS`,
//! `GPU_BENCH_DTYPES` (ours: `f32,bf16` by default; `f16` too) and `GPU_BENCH_PEER_DTYPES`
//! (subsets, comma-separated; a precision the device lacks is reported as skipped), `GPU_BENCH_FUSION_EXE` (this bench
//! built with `--features fusion` as well: measured beside this build), `GPU_BENCH_BATCH`,
//! `GPU_BENCH_SEQ`, `GPU_BENCH_STEPS`, `GPU_BENCH_CASE_TIMEOUT` (seconds per case, default
//! 240: a case past it is stopped and reported as such), `GPU_BENCH_DIR` (work folder, default
//! `target/bench-gpu`), `GPU_BENCH_LOSS_CHUNK` (positions per loss chunk; default: as
//! `spectrum train`, 64 MiB of logits), `GPU_BENCH_PROFILE` (a case syncs after its warm-up and after its timed
//! steps, where CubeCL writes the kernel profile its `cubecl.toml` asks for; see
//! `scripts/gpu_check.sh`).

// Not every helper is used here: this bench runs its cases with its own bounded runner.
#[allow(dead_code)]
mod common;

use std::io::{BufRead, BufReader, Read, Write};
use std::path::PathBuf;
use std::process::{Command, Stdio};
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant};

use burn::backend::Autodiff;
use burn::tensor::backend::{AutodiffBackend, Backend};
use common::{peer_python, root, write_batch};

use burn_spectrum::backend::{BACKEND_NAME, DefaultBackend};
use burn_spectrum::data::Batch;
use burn_spectrum::model::{LlamaConfig, LlamaForCausalLM};
use burn_spectrum::nn::{Precision, float_params};
use burn_spectrum::peft::LoraConfig;
use burn_spectrum::train::{
    LrSchedule, MemoryOptions, MemoryReport, Method, Prepared, SpectrumSource, TrainConfig,
    TrainStep, batch_gradients,
};

type A = Autodiff<DefaultBackend>;

/// The methods, by the names both sides print.
const METHODS: [&str; 5] = ["full", "spectrum-25", "lora", "qlora", "spectrum-25-qlora"];
/// The methods the peer runs (QLoRA only where bitsandbytes is installed).
const PEER_METHODS: [&str; 4] = ["full", "spectrum-25", "lora", "qlora"];
/// Our precisions: f32, and bf16 mixed precision (`--dtype bf16`).
const OUR_DTYPES: [&str; 2] = ["f32", "bf16"];
/// The peer's precisions (see the script): strict f32, f32 with TF32 matrix products, bf16
/// mixed precision.
const PEER_DTYPES: [&str; 3] = ["f32", "tf32", "bf16"];

/// A comma-separated list from the environment, else `default`.
fn list(name: &str, default: &[&str]) -> Vec<String> {
    std::env::var(name)
        .map(|v| {
            v.split(',')
                .map(|m| m.trim().to_string())
                .filter(|m| !m.is_empty())
                .collect()
        })
        .unwrap_or_else(|_| default.iter().map(|m| m.to_string()).collect())
}

/// Our builds to measure: this one, and the one at `GPU_BENCH_FUSION_EXE` (this bench built
/// with `--features fusion` too) when given.
fn our_builds() -> Vec<(String, PathBuf)> {
    let mut builds = vec![(
        "ours".to_string(),
        std::env::current_exe().expect("own path"),
    )];
    if let Some(fused) = std::env::var_os("GPU_BENCH_FUSION_EXE").filter(|p| !p.is_empty()) {
        builds.push(("ours fusion".to_string(), PathBuf::from(fused)));
    }
    builds
}

fn setting(name: &str, default: usize) -> usize {
    std::env::var(name)
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(default)
}

fn config_path(model: &str) -> PathBuf {
    root().join("benches/configs").join(format!("{model}.json"))
}

fn work_dir() -> PathBuf {
    std::env::var_os("GPU_BENCH_DIR")
        .map(PathBuf::from)
        .unwrap_or_else(|| root().join("target/bench-gpu"))
}

/// Where the Spectrum-25 case leaves its selection: the trained names (for the peer) and the
/// unfrozen-parameters YAML (for Spectrum-25+QLoRA).
fn selection_files(model: &str) -> (PathBuf, PathBuf) {
    let dir = work_dir();
    (
        dir.join(format!("{model}.spectrum-25.trainable.txt")),
        dir.join(format!("{model}.spectrum-25.yaml")),
    )
}

fn method(name: &str, model: &str) -> Method {
    let qlora = LoraConfig {
        r: 64,
        lora_alpha: 16.0,
        ..Default::default()
    };
    let (_, yaml) = selection_files(model);
    match name {
        "full" => Method::Full,
        // The scan runs in the first Spectrum case of a model; the other builds train the same
        // selection.
        "spectrum-25" if yaml.exists() => Method::Spectrum(SpectrumSource::Yaml(yaml)),
        "spectrum-25" => Method::Spectrum(SpectrumSource::TopPercent(25)),
        "lora" => Method::Lora(LoraConfig {
            r: 16,
            lora_alpha: 32.0,
            ..Default::default()
        }),
        "qlora" => Method::QLora(qlora),
        "spectrum-25-qlora" if yaml.exists() => {
            Method::SpectrumQLora(SpectrumSource::Yaml(yaml), qlora)
        }
        "spectrum-25-qlora" => Method::SpectrumQLora(SpectrumSource::TopPercent(25), qlora),
        other => panic!("unknown method {other}"),
    }
}

/// `batch` rows of `seq` token ids spread over the vocabulary, every position a target: the
/// same on both sides (the peer reads them from `batch.json`).
fn batch(batch: usize, seq: usize, vocab: usize) -> Batch {
    let ids: Vec<Vec<u32>> = (0..batch)
        .map(|b| {
            (0..seq)
                .map(|t| ((b * 7919 + t * 104_729 + 13) % vocab) as u32)
                .collect()
        })
        .collect();
    Batch {
        attention_mask: ids.iter().map(|r| vec![1; r.len()]).collect(),
        labels: ids
            .iter()
            .map(|r| r.iter().map(|&t| i64::from(t)).collect())
            .collect(),
        ids,
    }
}

fn batch_json(model: &str) -> PathBuf {
    work_dir().join(format!("{model}.batch.json"))
}

/// One case in this process: prints `method seconds_per_step tokens_per_s first_loss
/// trainable_params scan_seconds warmup_seconds` (`scan_seconds`: the preparation's time when
/// it scanned, else 0), or `skipped: ...` when the device lacks the precision.
fn child(model: &str, method_name: &str, precision: Precision) {
    let device = default_device::<A>();
    if let Err(e) = precision.check_supported::<A>(BACKEND_NAME, &device) {
        println!("skipped: {e}");
        return;
    }
    A::seed(&device, 0);
    let config = LlamaConfig::from_file(&config_path(model)).expect("config");
    let (rows, seq) = (setting("GPU_BENCH_BATCH", 8), setting("GPU_BENCH_SEQ", 512));
    let batch = batch(rows, seq, config.vocab_size);
    let (mut prepared, scan_seconds) = prepare::<A>(model, method_name, &config, &device);
    prepared.model = prepared.model.with_precision(precision);
    let trainable = MemoryReport::of(&prepared.model).trainable_params;
    let train_config = TrainConfig {
        schedule: LrSchedule::constant(1e-5),
        ..Default::default()
    };
    let (model_state, mut step) = TrainStep::new(prepared.model, &prepared.trainable, train_config);
    let options = MemoryOptions {
        loss_chunk: std::env::var("GPU_BENCH_LOSS_CHUNK")
            .ok()
            .and_then(|v| v.parse().ok()),
        ..MemoryOptions::default()
    };
    let mut run = |model: LlamaForCausalLM<A>| {
        let loss_of = |m: &LlamaForCausalLM<A>, b: &Batch| batch_gradients(m, b, &options);
        let started = Instant::now();
        // The step reads its loss back, so the device has finished when it returns.
        let (model, metrics) = step
            .step(model, std::slice::from_ref(&batch), loss_of)
            .expect("a step");
        (model, metrics.loss, started.elapsed().as_secs_f64())
    };
    let (model_state, first_loss, warmup_seconds) = run(model_state);
    let seconds = median_step(model_state, &device, run);
    println!(
        "{method_name} {seconds:.4} {:.0} {first_loss:.6} {trainable} {scan_seconds:.2} {warmup_seconds:.2}",
        (rows * seq) as f64 / seconds
    );
}

/// The random model of `config` prepared for the method, and the preparation's time when it
/// scanned (0 otherwise); a scan's selection is written for the peer and the other cases.
fn prepare<B: AutodiffBackend>(
    model: &str,
    method_name: &str,
    config: &LlamaConfig,
    device: &B::Device,
) -> (Prepared<B>, f64) {
    let started = Instant::now();
    let prepared = method(method_name, model)
        .prepare(config.init::<B>(device), device)
        .expect("prepared");
    let Some(scan) = &prepared.scan else {
        return (prepared, 0.0);
    };
    let seconds = started.elapsed().as_secs_f64();
    let yaml = scan.select(25).expect("selection").to_yaml();
    write_selection(model, &prepared.model, &yaml);
    (prepared, seconds)
}

/// The median time of `GPU_BENCH_STEPS` steps taken by `run`. With `GPU_BENCH_PROFILE` the
/// device syncs before and after them: CubeCL writes the kernel profile its config asks for at
/// each sync (the warm-up's, then the timed steps').
fn median_step<B: AutodiffBackend>(
    mut model: LlamaForCausalLM<B>,
    device: &B::Device,
    mut run: impl FnMut(LlamaForCausalLM<B>) -> (LlamaForCausalLM<B>, f64, f64),
) -> f64 {
    let profiling = std::env::var_os("GPU_BENCH_PROFILE").is_some();
    if profiling {
        let _ = B::sync(device);
    }
    let steps = setting("GPU_BENCH_STEPS", 3).max(1);
    let mut times = Vec::with_capacity(steps);
    for _ in 0..steps {
        let (next, _, seconds) = run(model);
        model = next;
        times.push(seconds);
    }
    if profiling {
        let _ = B::sync(device);
    }
    times.sort_by(f64::total_cmp);
    times[steps / 2]
}

fn default_device<B: Backend>() -> B::Device {
    Default::default()
}

fn write_selection<B: AutodiffBackend>(model: &str, prepared: &LlamaForCausalLM<B>, yaml: &str) {
    let names: Vec<String> = float_params(prepared)
        .into_iter()
        .filter(|p| p.require_grad)
        .map(|p| p.path)
        .collect();
    let (names_path, yaml_path) = selection_files(model);
    std::fs::write(names_path, names.join("\n")).expect("writes the trained names");
    std::fs::write(yaml_path, yaml).expect("writes the selection");
}

fn main() {
    if let Ok(case) = std::env::var("GPU_BENCH_CASE") {
        let parts: Vec<&str> = case.split(':').collect();
        let [model, method, dtype] = parts[..] else {
            panic!("GPU_BENCH_CASE is model:method:dtype, not {case}");
        };
        let precision = <Precision as clap::ValueEnum>::from_str(dtype, false)
            .unwrap_or_else(|e| panic!("GPU_BENCH_CASE's precision: {e}"));
        child(model, method, precision);
        return;
    }
    std::fs::create_dir_all(work_dir()).expect("creates the work folder");
    let python = peer_python();
    let (rows, seq) = (setting("GPU_BENCH_BATCH", 8), setting("GPU_BENCH_SEQ", 512));
    println!(
        "training step on {BACKEND_NAME}, batch {rows} x {seq}, median of {} steps after one warm-up",
        setting("GPU_BENCH_STEPS", 3).max(1)
    );
    let methods = list("GPU_BENCH_METHODS", &METHODS);
    let our_dtypes = list("GPU_BENCH_DTYPES", &OUR_DTYPES);
    let peer_dtypes = list("GPU_BENCH_PEER_DTYPES", &PEER_DTYPES);
    let started = Instant::now();
    let mut results = Vec::new();
    for model in list("GPU_BENCH_MODELS", &["smollm2-135m", "llama-3.2-1b"]) {
        let config = LlamaConfig::from_file(&config_path(&model)).expect("config");
        // A selection left by an earlier run must not stand in for this run's.
        let (names, yaml) = selection_files(&model);
        let _ = (std::fs::remove_file(names), std::fs::remove_file(yaml));
        write_batch(&batch(rows, seq, config.vocab_size), &batch_json(&model));
        // In the order asked for, so that a run cut short has the ones that matter most.
        for name in methods
            .iter()
            .filter_map(|m| METHODS.into_iter().find(|n| n == m))
        {
            for (build, exe) in our_builds() {
                for dtype in &our_dtypes {
                    let case = format!("{model}:{name}:{dtype}");
                    let ours = measure(Command::new(&exe).env("GPU_BENCH_CASE", case));
                    let side = match dtype.as_str() {
                        "f32" => build.clone(),
                        _ => format!("{build} {dtype}"),
                    };
                    print_row(&model, name, &side, &ours);
                    results.push((model.clone(), name, side, ours));
                }
            }
            let Some(python) = python.as_deref().filter(|_| PEER_METHODS.contains(&name)) else {
                continue;
            };
            for dtype in &peer_dtypes {
                let peer = measure(&mut peer_command(python, &model, name, dtype));
                let side = format!("torch {dtype}");
                print_row(&model, name, &side, &peer);
                results.push((model.clone(), name, side, peer));
            }
        }
    }
    report(&results);
    println!("({:.0} s in all)", started.elapsed().as_secs_f64());
}

fn peer_command(python: &str, model: &str, method: &str, dtype: &str) -> Command {
    let mut command = Command::new(python);
    command
        .arg(root().join("scripts/bench_gpu_train_step.py"))
        .arg(config_path(model))
        .arg(method)
        .arg(batch_json(model))
        .arg(dtype)
        .arg(selection_files(model).0)
        .env("GPU_BENCH_STEPS", setting("GPU_BENCH_STEPS", 3).to_string());
    command
}

/// What one case gave: its printed line and its peak device memory (MiB), or why it gave none.
type Outcome = Result<(String, Option<u64>), String>;

/// Runs a case with the device memory sampled and the time bounded.
fn measure(command: &mut Command) -> Outcome {
    let before = gpu_memory_used();
    let sampler = MemorySampler::start();
    let outcome = run_bounded(
        command,
        Duration::from_secs(setting("GPU_BENCH_CASE_TIMEOUT", 240) as u64),
    );
    let peak = sampler.map(MemorySampler::stop);
    let line = outcome?;
    let delta = match (peak, before) {
        (Some(peak), Some(before)) => Some(peak.saturating_sub(before)),
        _ => None,
    };
    Ok((line, delta))
}

/// Runs `command` (its error output passes through) and returns the last line it printed;
/// stops it after `limit`.
fn run_bounded(command: &mut Command, limit: Duration) -> Result<String, String> {
    let mut child = command
        .stdout(Stdio::piped())
        .stderr(Stdio::inherit())
        .spawn()
        .map_err(|e| format!("could not start: {e}"))?;
    let mut stdout = child.stdout.take().expect("piped");
    let reader = std::thread::spawn(move || {
        let mut text = String::new();
        let _ = stdout.read_to_string(&mut text);
        text
    });
    let started = Instant::now();
    let status = loop {
        match child.try_wait() {
            Ok(Some(status)) => break status,
            Ok(None) if started.elapsed() > limit => {
                let _ = child.kill();
                let _ = child.wait();
                return Err(format!("stopped after {} s", limit.as_secs()));
            }
            Ok(None) => std::thread::sleep(Duration::from_millis(50)),
            Err(e) => return Err(format!("lost: {e}")),
        }
    };
    let text = reader.join().unwrap_or_default();
    let line = text.lines().last().unwrap_or_default().trim().to_string();
    if !status.success() {
        return Err(format!("failed ({status})"));
    }
    if line.starts_with("skipped") || line.is_empty() {
        return Err(if line.is_empty() {
            "printed nothing".into()
        } else {
            line
        });
    }
    Ok(line)
}

/// The device's memory in use now (MiB), by `nvidia-smi`.
fn gpu_memory_used() -> Option<u64> {
    let output = Command::new("nvidia-smi")
        .args(["--query-gpu=memory.used", "--format=csv,noheader,nounits"])
        .output()
        .ok()?;
    String::from_utf8_lossy(&output.stdout)
        .lines()
        .next()?
        .trim()
        .parse()
        .ok()
}

/// `nvidia-smi` reporting the device's memory in use every 50 ms, the largest value kept.
struct MemorySampler {
    process: std::process::Child,
    peak: Arc<AtomicU64>,
    reader: std::thread::JoinHandle<()>,
}

impl MemorySampler {
    fn start() -> Option<Self> {
        let mut process = Command::new("nvidia-smi")
            .args([
                "--query-gpu=memory.used",
                "--format=csv,noheader,nounits",
                "-lms",
                "50",
            ])
            .stdout(Stdio::piped())
            .stderr(Stdio::null())
            .spawn()
            .ok()?;
        let stdout = process.stdout.take()?;
        let peak = Arc::new(AtomicU64::new(0));
        let seen = Arc::clone(&peak);
        let reader = std::thread::spawn(move || {
            for line in BufReader::new(stdout).lines().map_while(Result::ok) {
                if let Ok(mib) = line.trim().parse::<u64>() {
                    seen.fetch_max(mib, Ordering::Relaxed);
                }
            }
        });
        Some(MemorySampler {
            process,
            peak,
            reader,
        })
    }

    /// The largest value seen (MiB).
    fn stop(mut self) -> u64 {
        let _ = self.process.kill();
        let _ = self.process.wait();
        let _ = self.reader.join();
        self.peak.load(Ordering::Relaxed)
    }
}

fn print_row(model: &str, method: &str, side: &str, outcome: &Outcome) {
    match outcome {
        Ok((line, peak)) => {
            let peak = peak.map_or("-".into(), |p| p.to_string());
            println!("  {model} {method} [{side}]: {line} | peak {peak} MiB");
        }
        Err(why) => println!("  {model} {method} [{side}]: not measured: {why}"),
    }
    let _ = std::io::stdout().flush();
}

/// The tables: each side's step time, tokens/s and peak memory with their ratios to full
/// fine-tuning on the same side; then each of our builds against each of the peer's precisions.
fn report(results: &[(String, &str, String, Outcome)]) {
    let find = |model: &str, method: &str, side: &str| {
        results
            .iter()
            .find(|(m, n, s, _)| m == model && *n == method && s == side)
            .map(|(_, _, _, o)| o)
    };
    println!();
    println!("x full: the same side's full fine-tuning = 1 (step time, peak memory)");
    println!(
        "{:<13} {:<18} {:<12} {:>8} {:>8} {:>8} {:>7} {:>7}",
        "model", "method", "side", "s/step", "tokens/s", "peak MiB", "x full", "mem"
    );
    for (model, method, side, outcome) in results {
        let full = find(model, "full", side);
        let to_full = |of: fn(&Outcome) -> Option<f64>| Some(of(outcome)? / of(full?)?);
        println!(
            "{:<13} {:<18} {:<12} {:>8} {:>8} {:>8} {:>7} {:>7}",
            model,
            method,
            side,
            show(seconds(outcome), 3),
            show(tokens_per_s(outcome), 0),
            show(peak(outcome), 0),
            show(to_full(seconds), 2),
            show(to_full(peak), 2),
        );
    }
    let peers: Vec<&str> = PEER_DTYPES
        .into_iter()
        .filter(|d| {
            results
                .iter()
                .any(|(_, _, s, _)| *s == format!("torch {d}"))
        })
        .collect();
    if peers.is_empty() {
        return;
    }
    println!();
    println!("ours against the peer: our tokens/s over its (above 1: ours is faster), our peak");
    println!("memory over its (below 1: ours is smaller), for each of its precisions");
    print!("{:<13} {:<18} {:<12}", "model", "method", "side");
    for dtype in &peers {
        print!(
            " {:>9} {:>9}",
            format!("tok {dtype}"),
            format!("mem {dtype}")
        );
    }
    println!();
    for (model, method, side, outcome) in results.iter().filter(|r| r.2.starts_with("ours")) {
        print!("{model:<13} {method:<18} {side:<12}");
        for dtype in &peers {
            let theirs = find(model, method, &format!("torch {dtype}"));
            let ratio = |of: fn(&Outcome) -> Option<f64>| Some(of(outcome)? / of(theirs?)?);
            print!(
                " {:>9} {:>9}",
                show(ratio(tokens_per_s), 2),
                show(ratio(peak), 2)
            );
        }
        println!();
    }
}

fn field(outcome: &Outcome, index: usize) -> Option<f64> {
    let (line, _) = outcome.as_ref().ok()?;
    line.split(' ').nth(index)?.parse().ok()
}

fn seconds(outcome: &Outcome) -> Option<f64> {
    field(outcome, 1)
}

fn tokens_per_s(outcome: &Outcome) -> Option<f64> {
    field(outcome, 2)
}

fn peak(outcome: &Outcome) -> Option<f64> {
    outcome.as_ref().ok().and_then(|(_, p)| p.map(|p| p as f64))
}

fn show(value: Option<f64>, digits: usize) -> String {
    value.map_or("-".into(), |v| format!("{v:.digits$}"))
}
