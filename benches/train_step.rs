//! One training step per method on SmolLM2-135M-Instruct (batch 2 x 256 tokens of Alpaca, CPU
//! backend): time and peak memory of each method as ratios to full fine-tuning, measured in
//! one run.
//!
//!     ./scripts/get_smollm2.sh && ./scripts/get_alpaca.sh
//!     cargo bench --bench train_step
//!
//! Each method runs in its own process (this binary, re-run with `TRAIN_STEP_METHOD`). In
//! it, the model is loaded and prepared, the peak resident memory is reset
//! (`/proc/self/clear_refs`), one warm-up step and five timed steps run, and the median step
//! time and the peak of the steps (`VmHWM`: training memory, without the loading transient)
//! are printed. `TRAIN_STEP_ROUNDS` rounds (default 2) visit every method in turn, and each
//! method's fastest round counts.
//!
//! The PyTorch peer (`scripts/bench_train_step.py`: transformers + PEFT, same model, same
//! batch written to `target/bench-train-step/batch.json`, same optimizer, 2 threads) runs right
//! after ours for full, Spectrum-25 and Spectrum-0 (on the parameters our selection chose) and
//! LoRA, in every round, when `SPECTRUM_BENCH_PYTHON` (default `python3`) has torch, transformers and peft;
//! without them the bench says so and prints ours alone.

mod common;

use std::process::Command;
use std::time::Instant;

use burn::backend::{Autodiff, Flex};
use common::{longest_records, peak_kib, peer_python, root, run_child, run_line, write_batch};

use burn_spectrum::data::Batch;
use burn_spectrum::model::{LlamaForCausalLM, Tokenizer};
use burn_spectrum::nn::float_params;
use burn_spectrum::peft::LoraConfig;
use burn_spectrum::train::{
    LrSchedule, MemoryOptions, MemoryReport, Method, SpectrumSource, TrainConfig, TrainStep,
    batch_gradients,
};

// The allocator matters on the CPU backend (see benches/model.rs).
#[global_allocator]
static ALLOCATOR: mimalloc::MiMalloc = mimalloc::MiMalloc;

type A = Autodiff<Flex>;

const SEQ: usize = 256;
const BATCH: usize = 2;
const TIMED_STEPS: usize = 5;

fn methods() -> Vec<Method> {
    // The paper's QLoRA settings: r 64, alpha 16.
    let qlora = LoraConfig {
        r: 64,
        lora_alpha: 16.0,
        ..Default::default()
    };
    vec![
        Method::Full,
        Method::Spectrum(SpectrumSource::TopPercent(25)),
        Method::Lora(LoraConfig {
            r: 16,
            lora_alpha: 32.0,
            ..Default::default()
        }),
        Method::QLora(qlora.clone()),
        Method::SpectrumQLora(SpectrumSource::TopPercent(25), qlora),
        // Spectrum's floor: spectrum.py always unfreezes the embedding and `lm_head`, so no
        // Spectrum selection takes less than this (the backward pass reaches the embedding).
        Method::Spectrum(SpectrumSource::TopPercent(0)),
    ]
}

/// Two full-length sequences from Alpaca: the longest records, cut to 256 tokens.
fn batch(tokenizer: &Tokenizer) -> Batch {
    longest_records(tokenizer, SEQ, BATCH)
}

/// Where the batch and the trainable names are written for the PyTorch peer.
fn work_dir() -> std::path::PathBuf {
    root().join("target/bench-train-step")
}

/// Runs one method; prints `name seconds_per_step peak_step_mib trainable total weight grad
/// optim first_loss gradient_seconds` (the part of the step spent in `batch_gradients`).
fn child(method_index: usize) {
    let device = Default::default();
    let dir = root().join("assets/models/SmolLM2-135M-Instruct");
    let tokenizer = Tokenizer::from_dir(&dir).expect("tokenizer");
    let batch = batch(&tokenizer);
    let method = &methods()[method_index];
    let prepared = method.load::<A>(&dir, &device).expect("prepared");
    let trainable: Vec<String> = float_params(&prepared.model)
        .into_iter()
        .filter(|p| p.require_grad)
        .map(|p| p.path)
        .collect();
    let names = work_dir().join(format!("{}.trainable.txt", method.name()));
    std::fs::write(names, trainable.join("\n")).expect("writes the trainable names");
    let memory = MemoryReport::of(&prepared.model);
    let config = TrainConfig {
        schedule: LrSchedule::constant(1e-5),
        ..Default::default()
    };
    let (mut model, mut step) = TrainStep::new(prepared.model, &prepared.trainable, config);
    // What `spectrum train` runs: the loss in chunks, each chunk's logits freed after its
    // backward pass.
    let options = MemoryOptions::default();
    // Time inside `batch_gradients` (forward and backward), apart from the optimizer's part.
    let gradient_seconds = std::cell::Cell::new(0.0);
    let loss_of = |m: &LlamaForCausalLM<A>, b: &Batch| {
        let started = Instant::now();
        let loss = batch_gradients(m, b, &options);
        gradient_seconds.set(gradient_seconds.get() + started.elapsed().as_secs_f64());
        loss
    };
    let _ = std::fs::write("/proc/self/clear_refs", "5");
    let (warm, first) = step
        .step(model, std::slice::from_ref(&batch), loss_of)
        .expect("warm-up");
    model = warm;
    // The median step: a step slowed by something else on the machine does not count.
    let mut times = Vec::with_capacity(TIMED_STEPS);
    let mut gradient_times = Vec::with_capacity(TIMED_STEPS);
    for _ in 0..TIMED_STEPS {
        gradient_seconds.set(0.0);
        let started = Instant::now();
        model = step
            .step(model, std::slice::from_ref(&batch), loss_of)
            .expect("step")
            .0;
        times.push(started.elapsed().as_secs_f64());
        gradient_times.push(gradient_seconds.get());
    }
    times.sort_by(f64::total_cmp);
    gradient_times.sort_by(f64::total_cmp);
    let seconds = times[TIMED_STEPS / 2];
    let gradients = gradient_times[TIMED_STEPS / 2];
    println!(
        "{} {seconds:.3} {:.1} {} {} {} {} {} {:.6} {gradients:.3}",
        method.name(),
        peak_kib() as f64 / 1024.0,
        memory.trainable_params,
        memory.total_params,
        memory.weight_bytes,
        memory.grad_bytes,
        memory.optimizer_bytes,
        first.loss
    );
}

fn main() {
    burn_spectrum::backend::retain_freed_memory();
    if let Ok(index) = std::env::var("TRAIN_STEP_METHOD") {
        child(index.parse().expect("a method index"));
        return;
    }
    let needed = [
        root().join("assets/models/SmolLM2-135M-Instruct/tokenizer.json"),
        root().join("assets/data/alpaca_en_demo.json"),
    ];
    if let Some(missing) = needed.iter().find(|p| !p.exists()) {
        eprintln!(
            "{} is missing: run ./scripts/get_smollm2.sh and ./scripts/get_alpaca.sh",
            missing.display()
        );
        std::process::exit(1);
    }
    std::fs::create_dir_all(work_dir()).expect("creates the work folder");
    let dir = root().join("assets/models/SmolLM2-135M-Instruct");
    let tokenizer = Tokenizer::from_dir(&dir).expect("tokenizer");
    let batch_json = work_dir().join("batch.json");
    write_batch(&batch(&tokenizer), &batch_json);
    let python = peer_python();
    let exe = std::env::current_exe().expect("own path");
    // Rounds that visit every method in turn, keeping each method's fastest round: a slow
    // spell of the machine then hits one round of all methods, not one method.
    let rounds: usize = std::env::var("TRAIN_STEP_ROUNDS")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(2);
    let count = methods().len();
    let mut rows: Vec<Option<String>> = vec![None; count];
    let mut peers: Vec<Option<String>> = vec![None; count];
    let seconds = |l: &str| l.split(' ').nth(1).and_then(|v| v.parse::<f64>().ok());
    let keep_faster = |slot: &mut Option<String>, line: String| {
        if slot
            .as_deref()
            .is_none_or(|old| seconds(&line) < seconds(old))
        {
            *slot = Some(line);
        }
    };
    for _ in 0..rounds.max(1) {
        for index in 0..count {
            let line = run_child(&exe, "TRAIN_STEP_METHOD", index);
            let name = line.split(' ').next().unwrap_or_default().to_string();
            keep_faster(&mut rows[index], line);
            if let Some(python) = python.as_deref()
                && PEER_METHODS.contains(&name.as_str())
            {
                let line = peer(python, &dir, &name, &batch_json);
                keep_faster(&mut peers[index], line);
            }
        }
    }
    let rows: Vec<String> = rows.into_iter().flatten().collect();
    report(&rows);
    report_peer(&rows, &peers);
}

/// The methods the PyTorch peer runs (bitsandbytes' NF4 has no CPU kernels to compare with).
const PEER_METHODS: [&str; 4] = ["full", "spectrum-25", "lora", "spectrum-0"];

/// Runs the PyTorch peer for `method`; its line `method seconds peak_mib first_loss`.
fn peer(
    python: &str,
    model: &std::path::Path,
    method: &str,
    batch_json: &std::path::Path,
) -> String {
    let script = root().join("scripts/bench_train_step.py");
    let trainable = work_dir().join(format!("{method}.trainable.txt"));
    run_line(
        Command::new(python)
            .arg(script)
            .arg(model)
            .arg(method)
            .arg(batch_json)
            .arg(trainable),
    )
}

/// Ours against PyTorch's, as ratios (below 1: ours is faster or smaller).
fn report_peer(rows: &[String], peers: &[Option<String>]) {
    if peers.iter().all(Option::is_none) {
        return;
    }
    println!();
    println!("ours (flex) against PyTorch 2 threads + transformers + PEFT, same run:");
    println!(
        "{:<14} {:>9} {:>9} {:>7} {:>10} {:>10} {:>7} {:>11} {:>11}",
        "method",
        "ours s",
        "torch s",
        "ratio",
        "ours MiB",
        "torch MiB",
        "ratio",
        "ours loss",
        "torch loss"
    );
    for (row, peer) in rows.iter().zip(peers) {
        let Some(peer) = peer else { continue };
        let ours: Vec<&str> = row.split(' ').collect();
        let theirs: Vec<&str> = peer.split(' ').collect();
        let f = |s: &str| s.parse::<f64>().unwrap();
        println!(
            "{:<14} {:>9.3} {:>9.3} {:>7.2} {:>10.1} {:>10.1} {:>7.2} {:>11} {:>11}",
            ours[0],
            f(ours[1]),
            f(theirs[1]),
            f(ours[1]) / f(theirs[1]),
            f(ours[2]),
            f(theirs[2]),
            f(ours[2]) / f(theirs[2]),
            ours[8],
            theirs[3]
        );
    }
}

fn report(rows: &[String]) {
    let fields: Vec<Vec<&str>> = rows.iter().map(|r| r.split(' ').collect()).collect();
    let full_time: f64 = fields[0][1].parse().unwrap();
    let full_peak: f64 = fields[0][2].parse().unwrap();
    let mib = |s: &str| s.parse::<f64>().unwrap() / (1024.0 * 1024.0);
    println!("one step, batch {BATCH} x {SEQ} tokens, SmolLM2-135M, flex CPU (2 cores), AdamW:");
    println!(
        "{:<18} {:>9} {:>7} {:>9} {:>11} {:>7} {:>12} {:>10} {:>10} {:>10}",
        "method",
        "s/step",
        "x full",
        "fwd+bwd",
        "peak MiB",
        "x full",
        "trainable",
        "weights",
        "grads",
        "optimizer"
    );
    for f in &fields {
        let (time, peak): (f64, f64) = (f[1].parse().unwrap(), f[2].parse().unwrap());
        println!(
            "{:<18} {:>9.3} {:>7.2} {:>9} {:>11.1} {:>7.2} {:>12} {:>8.1}Mi {:>8.1}Mi {:>8.1}Mi",
            f[0],
            time,
            time / full_time,
            f[9],
            peak,
            peak / full_peak,
            f[3],
            mib(f[5]),
            mib(f[6]),
            mib(f[7])
        );
    }
}
