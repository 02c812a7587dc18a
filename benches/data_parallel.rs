//! Data parallel on this machine: one training step of Spectrum-25 on SmolLM2-135M-Instruct
//! (global batch 2 x 256 tokens of Alpaca) with one worker taking the whole batch and with two
//! workers taking a row each (`train::parallel`, gradients averaged through burn-collective),
//! measured in one run: the median step time of each, and the two workers' all-reduce time
//! per step. Then the transport between nodes alone: the orchestrator's mean of one gradient
//! vector per node for two nodes on localhost, at Spectrum-25's and full fine-tuning's sizes.
//!
//!     ./scripts/get_smollm2.sh && ./scripts/get_alpaca.sh
//!     cargo bench --bench data_parallel
//!
//! On the CPU the workers share the machine's cores (the matrix products of one worker
//! already use them all), so this measures the cost of the replication and the all-reduce,
//! not a speed-up; on a machine with several GPUs each worker has a device of its own.

#[allow(dead_code)] // the helpers of the other benches
mod common;

use std::sync::Mutex;
use std::time::{Duration, Instant};

use burn::backend::{Autodiff, Flex};
use burn::module::Module;
use common::{longest_records, root};

use burn_spectrum::data::Batch;
use burn_spectrum::model::{LlamaForCausalLM, Tokenizer};
use burn_spectrum::train::parallel::{DataParallel, GradLayout, Hello, NodeLink, Orchestrator};
use burn_spectrum::train::{
    LrSchedule, MemoryOptions, Method, SpectrumSource, TrainConfig, TrainStep, batch_gradients,
    count_params,
};

#[global_allocator]
static ALLOCATOR: mimalloc::MiMalloc = mimalloc::MiMalloc;

type A = Autodiff<Flex>;

const SEQ: usize = 256;
const BATCH: usize = 2;
const WARMUP_STEPS: usize = 1;
const TIMED_STEPS: usize = 4;

fn config() -> TrainConfig {
    TrainConfig {
        schedule: LrSchedule::constant(1e-5),
        ..TrainConfig::default()
    }
}

fn median(mut values: Vec<f64>) -> f64 {
    values.sort_by(f64::total_cmp);
    values[values.len() / 2]
}

fn main() {
    let dir = root().join("assets/models/SmolLM2-135M-Instruct");
    if !dir.join("tokenizer.json").exists() {
        eprintln!("skipped: run ./scripts/get_smollm2.sh and ./scripts/get_alpaca.sh first");
        return;
    }
    let tokenizer = Tokenizer::from_dir(&dir).expect("tokenizer");
    let batch = longest_records(&tokenizer, SEQ, BATCH);
    let device = Default::default();
    let method = Method::Spectrum(SpectrumSource::TopPercent(25));
    let prepared = method.load::<A>(&dir, &device).expect("loads");
    let memory = MemoryOptions::default();

    // One worker, the whole batch.
    let (mut model, mut step) =
        TrainStep::new(prepared.model.clone(), &prepared.trainable, config());
    let mut one = Vec::new();
    for i in 0..WARMUP_STEPS + TIMED_STEPS {
        let started = Instant::now();
        let loss_of = |m: &LlamaForCausalLM<A>, b: &Batch| batch_gradients(m, b, &memory);
        let (next, _) = step
            .step(model, std::slice::from_ref(&batch), loss_of)
            .expect("steps");
        model = next;
        if i >= WARMUP_STEPS {
            one.push(started.elapsed().as_secs_f64());
        }
    }
    let (selected, all) = count_params(&model);
    drop((model, step));

    // Two workers, a row each.
    let reduce_seconds = Mutex::new(Vec::new());
    let step_seconds = DataParallel::new()
        .run::<A, Vec<f64>>(&[device, device], |peer, device| {
            let replica = prepared.model.clone().fork(device);
            let (mut model, mut step) = TrainStep::new(replica, &prepared.trainable, config());
            let layout = GradLayout::of(&model);
            let mine = batch
                .share(peer.rank, peer.world)
                .expect("a row per worker");
            let mut seconds = Vec::new();
            for i in 0..WARMUP_STEPS + TIMED_STEPS {
                let started = Instant::now();
                let loss_of = |m: &LlamaForCausalLM<A>, b: &Batch| batch_gradients(m, b, &memory);
                let reduce = |grads| {
                    let reduced = Instant::now();
                    let grads = peer.mean_grads::<A>(grads, &layout, device);
                    if peer.rank == 0 && i >= WARMUP_STEPS {
                        let mut all = reduce_seconds.lock().expect("no worker panicked");
                        all.push(reduced.elapsed().as_secs_f64());
                    }
                    grads
                };
                let (next, _) =
                    step.step_reduced(model, std::slice::from_ref(&mine), loss_of, reduce)?;
                model = next;
                if i >= WARMUP_STEPS {
                    seconds.push(started.elapsed().as_secs_f64());
                }
            }
            Ok(seconds)
        })
        .expect("two workers train");
    let two = median(step_seconds[0].clone());
    let reduce = median(reduce_seconds.into_inner().expect("no worker panicked"));
    let one = median(one);
    println!(
        "data parallel, Spectrum-25 on SmolLM2, global batch {BATCH} x {SEQ} tokens, median of {TIMED_STEPS} steps"
    );
    println!("| workers | s/step | all-reduce s/step | step time vs 1 worker |");
    println!("|---|---|---|---|");
    println!("| 1 | {one:.3} | - | 1.00 |");
    println!("| 2 | {two:.3} | {reduce:.3} | {:.2} |", two / one);

    println!();
    println!("between 2 nodes on localhost (the orchestrator), median of {TIMED_STEPS} reductions");
    println!("| gradient vector | values | s/reduction |");
    println!("|---|---|---|");
    for (name, values) in [("Spectrum-25", selected), ("full", all)] {
        println!("| {name} | {values} | {:.3} |", node_mean_seconds(values));
    }
}

/// The median time two nodes on localhost take to average a vector of `values` through the
/// orchestrator.
fn node_mean_seconds(values: usize) -> f64 {
    let timeout = Duration::from_secs(120);
    let orchestrator = Orchestrator::start(0, timeout).expect("a free port");
    let address = format!("127.0.0.1:{}", orchestrator.port());
    let node = |rank: usize| {
        let address = address.clone();
        std::thread::spawn(move || {
            let hello = Hello::new((2, rank), (1, 0), Vec::new(), Vec::new(), values);
            let mut link = NodeLink::join(&address, hello, timeout).expect("joins");
            let vector = vec![rank as f32; values];
            let mut seconds = Vec::new();
            for i in 0..WARMUP_STEPS + TIMED_STEPS {
                let started = Instant::now();
                link.mean("the benchmark", Some(&vector)).expect("reduces");
                if i >= WARMUP_STEPS {
                    seconds.push(started.elapsed().as_secs_f64());
                }
            }
            link.leave();
            median(seconds)
        })
    };
    let (first, second) = (node(0), node(1));
    let _ = second.join().expect("node 1");
    first.join().expect("node 0")
}
