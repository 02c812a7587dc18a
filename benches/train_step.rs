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

mod common;

use std::time::Instant;

use burn::backend::{Autodiff, Flex};
use common::{peak_kib, root, run_child};

use burn_spectrum::data::{Batch, Batches, EncodeOptions, prepare, read_alpaca};
use burn_spectrum::model::{LlamaForCausalLM, Tokenizer};
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
    ]
}

/// Two full-length sequences from Alpaca: the longest records, cut to 256 tokens.
fn batch(tokenizer: &Tokenizer) -> Batch {
    let data = read_alpaca(&root().join("assets/data/alpaca_en_demo.json")).expect("alpaca data");
    let eos = tokenizer.token_id("<|im_end|>").expect("SmolLM2's EOS");
    let options = EncodeOptions {
        max_len: SEQ,
        train_on_prompt: true,
    };
    let mut prepared = prepare(&data, tokenizer, eos, &options, 0, 0).expect("encodes");
    prepared
        .train
        .sort_by_key(|e| std::cmp::Reverse(e.ids.len()));
    let examples = &prepared.train[..BATCH];
    Batches::new(examples, BATCH, eos, 0)
        .expect("batches")
        .next()
        .expect("a batch")
}

/// Runs one method; prints `name seconds_per_step peak_step_mib trainable total weight grad optim`.
fn child(method_index: usize) {
    let device = Default::default();
    let dir = root().join("assets/models/SmolLM2-135M-Instruct");
    let tokenizer = Tokenizer::from_dir(&dir).expect("tokenizer");
    let batch = batch(&tokenizer);
    let method = &methods()[method_index];
    let prepared = method.load::<A>(&dir, &device).expect("prepared");
    let memory = MemoryReport::of(&prepared.model);
    let config = TrainConfig {
        schedule: LrSchedule::constant(1e-5),
        ..Default::default()
    };
    let (mut model, mut step) = TrainStep::new(prepared.model, &prepared.trainable, config);
    // What `spectrum train` runs: the loss in chunks, each chunk's logits freed after its
    // backward pass.
    let options = MemoryOptions::default();
    let loss_of = |m: &LlamaForCausalLM<A>, b: &Batch| batch_gradients(m, b, &options);
    let _ = std::fs::write("/proc/self/clear_refs", "5");
    model = step
        .step(model, std::slice::from_ref(&batch), loss_of)
        .expect("warm-up")
        .0;
    // The median step: a step slowed by something else on the machine does not count.
    let mut times = Vec::with_capacity(TIMED_STEPS);
    for _ in 0..TIMED_STEPS {
        let started = Instant::now();
        model = step
            .step(model, std::slice::from_ref(&batch), loss_of)
            .expect("step")
            .0;
        times.push(started.elapsed().as_secs_f64());
    }
    times.sort_by(f64::total_cmp);
    let seconds = times[TIMED_STEPS / 2];
    println!(
        "{} {seconds:.3} {:.1} {} {} {} {} {}",
        method.name(),
        peak_kib() as f64 / 1024.0,
        memory.trainable_params,
        memory.total_params,
        memory.weight_bytes,
        memory.grad_bytes,
        memory.optimizer_bytes
    );
}

fn main() {
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
    let exe = std::env::current_exe().expect("own path");
    // Rounds that visit every method in turn, keeping each method's fastest round: a slow
    // spell of the machine then hits one round of all methods, not one method.
    let rounds: usize = std::env::var("TRAIN_STEP_ROUNDS")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(2);
    let mut rows: Vec<Option<String>> = vec![None; methods().len()];
    for _ in 0..rounds.max(1) {
        for (index, row) in rows.iter_mut().enumerate() {
            let line = run_child(&exe, "TRAIN_STEP_METHOD", index);
            let seconds = |l: &str| l.split(' ').nth(1).and_then(|v| v.parse::<f64>().ok());
            if row
                .as_deref()
                .is_none_or(|old| seconds(&line) < seconds(old))
            {
                *row = Some(line);
            }
        }
    }
    let rows: Vec<String> = rows.into_iter().flatten().collect();
    report(&rows);
}

fn report(rows: &[String]) {
    let fields: Vec<Vec<&str>> = rows.iter().map(|r| r.split(' ').collect()).collect();
    let full_time: f64 = fields[0][1].parse().unwrap();
    let full_peak: f64 = fields[0][2].parse().unwrap();
    let mib = |s: &str| s.parse::<f64>().unwrap() / (1024.0 * 1024.0);
    println!("one step, batch {BATCH} x {SEQ} tokens, SmolLM2-135M, flex CPU (2 cores), AdamW:");
    println!(
        "{:<18} {:>9} {:>7} {:>11} {:>7} {:>12} {:>10} {:>10} {:>10}",
        "method",
        "s/step",
        "x full",
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
            "{:<18} {:>9.3} {:>7.2} {:>11.1} {:>7.2} {:>12} {:>8.1}Mi {:>8.1}Mi {:>8.1}Mi",
            f[0],
            time,
            time / full_time,
            peak,
            peak / full_peak,
            f[3],
            mib(f[5]),
            mib(f[6]),
            mib(f[7])
        );
    }
}
