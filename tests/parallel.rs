//! Data parallel on burn-collective, two workers on this CPU: the same losses and weights as
//! one worker that accumulates the same micro-batches, replicas that stay bitwise equal, and a
//! failing worker that fails the run instead of hanging it.
#![cfg(feature = "data-parallel")]

mod common;

use std::sync::Mutex;
use std::sync::mpsc;
use std::time::Duration;

use burn::backend::{Autodiff, Flex};
use burn::module::{AutodiffModule, Module, ParamId};
use burn_spectrum::Error;
use burn_spectrum::data::{Batch, Example};
use burn_spectrum::model::LlamaForCausalLM;
use burn_spectrum::peft::LoraConfig;
use burn_spectrum::train::parallel::{DataParallel, GradLayout};
use burn_spectrum::train::{
    MemoryOptions, Method, TrainConfig, TrainStep, batch_gradients, freeze_except, trainable_params,
};

type A = Autodiff<Flex>;

/// burn-collective keeps one session per backend in a process: the tests take turns.
static COLLECTIVE: Mutex<()> = Mutex::new(());

const STEPS: usize = 3;

/// Six examples: two per step.
fn examples() -> Vec<Example> {
    common::short_examples(6)
}

fn config() -> TrainConfig {
    common::scale_sensitive_config(STEPS)
}

#[derive(Clone, Copy, Debug)]
enum Kind {
    Full,
    /// The first decoder layer and the head, as a Spectrum selection would pick some.
    Selected,
    Lora,
}

/// The model ready for `kind` and the parameters that train.
fn prepared(kind: Kind) -> (LlamaForCausalLM<A>, Vec<ParamId>) {
    let model: LlamaForCausalLM<A> = LlamaForCausalLM::from_pretrained(
        &common::fixture("models/llama_gqa"),
        &Default::default(),
    )
    .unwrap();
    match kind {
        Kind::Full => {
            let trainable = trainable_params(&model);
            (model, trainable)
        }
        Kind::Selected => {
            let trainable = common::first_layer_and_head(&model);
            (freeze_except(model, &trainable), trainable)
        }
        Kind::Lora => {
            let prepared = Method::Lora(LoraConfig::default())
                .prepare(model, &Default::default())
                .unwrap();
            (prepared.model, prepared.trainable)
        }
    }
}

type Run = (Vec<f64>, Vec<(String, Vec<f32>)>);

/// One worker, two micro-batches of one example per step.
fn one_worker(kind: Kind) -> Run {
    let (model, trainable) = prepared(kind);
    let (mut model, mut step) = TrainStep::new(model, &trainable, config());
    let examples = examples();
    let mut losses = Vec::new();
    for pair in examples.chunks(2) {
        let micro: Vec<Batch> = pair.iter().map(|e| Batch::collate(&[e], 0)).collect();
        let loss_of =
            |m: &LlamaForCausalLM<A>, b: &Batch| batch_gradients(m, b, &MemoryOptions::default());
        let (next, metrics) = step.step(model, &micro, loss_of).unwrap();
        model = next;
        losses.push(metrics.loss);
    }
    (losses, common::named_values(&model.valid()))
}

/// Two workers, each one micro-batch of its example per step.
fn two_workers(kind: Kind) -> Vec<Run> {
    let (model, trainable) = prepared(kind);
    let examples = examples();
    let devices = [Default::default(), Default::default()];
    DataParallel::new()
        .with_timeout(Duration::from_secs(120))
        .run::<A, Run>(&devices, |peer, device| {
            // A fork: the same parameters and ids, with autodiff nodes of its own (clones share
            // them, and burn-autodiff merges the workers' graphs through shared nodes).
            let replica = model.clone().fork(device);
            let (mut model, mut step) = TrainStep::new(replica, &trainable, config());
            let layout = GradLayout::of(&model);
            let mut losses = Vec::new();
            for pair in examples.chunks(2) {
                let mine: Vec<&Example> = peer.share(pair).iter().collect();
                let micro = [Batch::collate(&mine, 0)];
                let loss_of = |m: &LlamaForCausalLM<A>, b: &Batch| {
                    batch_gradients(m, b, &MemoryOptions::default())
                };
                let reduce = |grads| peer.mean_grads::<A>(grads, &layout, device);
                let (next, metrics) = step.step_reduced(model, &micro, loss_of, reduce)?;
                model = next;
                losses.push(peer.mean_value::<Flex>(metrics.loss, device)?);
            }
            Ok((losses, common::named_values(&model.valid())))
        })
        .unwrap()
}

#[test]
fn two_workers_step_as_one_that_accumulates_their_batches() {
    let _turn = COLLECTIVE.lock().unwrap_or_else(|e| e.into_inner());
    for kind in [Kind::Full, Kind::Selected, Kind::Lora] {
        let (one_losses, one_weights) = one_worker(kind);
        let runs = two_workers(kind);
        let (mut loss_diff, mut weight_diff) = (0.0f64, 0.0f32);
        for (losses, weights) in &runs {
            for (a, b) in one_losses.iter().zip(losses) {
                loss_diff = loss_diff.max((a - b).abs() / a.abs().max(1.0));
            }
            for ((_, a), (_, b)) in one_weights.iter().zip(weights) {
                weight_diff = weight_diff.max(common::max_abs_diff(a, b));
            }
        }
        println!(
            "{kind:?}: 2 workers vs 1: loss {loss_diff:.1e} (relative), weights {weight_diff:.1e}"
        );
        for (rank, (losses, weights)) in runs.iter().enumerate() {
            for (step, (a, b)) in one_losses.iter().zip(losses).enumerate() {
                assert!(
                    (a - b).abs() <= 1e-5 * a.abs().max(1.0),
                    "{kind:?} rank {rank} step {step}: {a} {b}"
                );
            }
            for ((path, a), (_, b)) in one_weights.iter().zip(weights) {
                let diff = common::max_abs_diff(a, b);
                assert!(diff <= 1e-5, "{kind:?} rank {rank} {path}: {diff}");
            }
        }
        // The steps moved the trained weights.
        let (_, before) = one_worker_before(kind);
        assert!(
            before
                .iter()
                .zip(&one_weights)
                .any(|((_, a), (_, b))| a != b),
            "{kind:?}"
        );
        // Replicas stay bitwise equal.
        assert!(runs[0].1 == runs[1].1, "{kind:?}: the replicas differ");
    }
}

/// The prepared model's values before any step.
fn one_worker_before(kind: Kind) -> Run {
    let (model, _) = prepared(kind);
    (Vec::new(), common::named_values(&model.valid()))
}

/// Runs `work` on a thread and waits up to a minute: the test fails, not hangs, if the run
/// hangs.
fn within_a_minute<T: Send + 'static>(work: impl FnOnce() -> T + Send + 'static) -> T {
    let (sender, receiver) = mpsc::channel();
    std::thread::spawn(move || {
        let _ = sender.send(work());
    });
    receiver
        .recv_timeout(Duration::from_secs(60))
        .expect("the run hung")
}

#[test]
fn a_failing_worker_fails_the_run_instead_of_hanging_it() {
    let _turn = COLLECTIVE.lock().unwrap_or_else(|e| e.into_inner());
    let result = within_a_minute(|| {
        DataParallel::new()
            .with_timeout(Duration::from_secs(600))
            .run::<A, ()>(&[Default::default(), Default::default()], |peer, device| {
                if peer.rank == 1 {
                    return Err(Error::NoMicroBatches);
                }
                peer.mean_value::<Flex>(1.0, device)?;
                Ok(())
            })
    });
    assert!(matches!(result, Err(Error::NoMicroBatches)), "{result:?}");
    let result = within_a_minute(|| {
        DataParallel::new()
            .with_timeout(Duration::from_secs(2))
            .run::<A, ()>(&[Default::default(), Default::default()], |peer, device| {
                if peer.rank == 0 {
                    panic!("a worker dies");
                }
                peer.mean_value::<Flex>(1.0, device)?;
                Ok(())
            })
    });
    assert!(
        matches!(result, Err(Error::WorkerPanicked { rank: 0 })),
        "{result:?}"
    );
    // The failed sessions are gone: a new run works.
    let values = within_a_minute(|| {
        DataParallel::new()
            .with_timeout(Duration::from_secs(30))
            .run::<A, f64>(&[Default::default(), Default::default()], |peer, device| {
                peer.mean_value::<Flex>(peer.rank as f64, device)
            })
    })
    .unwrap();
    assert_eq!(values, vec![0.5, 0.5]);
}

/// `spectrum train` with `extra` flags into `out`: LoRA on SmolLM2, two short steps.
fn train_smollm2(model: &std::path::Path, out: &std::path::Path, extra: &[&str]) {
    finish_training(spawn_smollm2(model, out, extra));
}

/// [`train_smollm2`], started and not awaited.
fn spawn_smollm2(
    model: &std::path::Path,
    out: &std::path::Path,
    extra: &[&str],
) -> (Vec<String>, std::process::Child) {
    let data = std::path::PathBuf::from(env!("CARGO_MANIFEST_DIR"))
        .join("assets/data/alpaca_en_demo.json");
    let mut args = vec![
        "train".to_string(),
        model.to_str().unwrap().into(),
        "--data".into(),
        data.to_str().unwrap().into(),
        "--output-dir".into(),
        out.to_str().unwrap().into(),
    ];
    let fixed = [
        "--method",
        "lora",
        "--steps",
        "2",
        "--seq-len",
        "48",
        "--eval-samples",
        "2",
        "--quiet",
    ];
    args.extend(fixed.iter().chain(extra).map(|s| s.to_string()));
    let child = std::process::Command::new(env!("CARGO_BIN_EXE_spectrum"))
        .args(&args)
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::piped())
        .spawn()
        .unwrap();
    (args, child)
}

/// Waits for a training process, which must succeed.
fn finish_training((args, child): (Vec<String>, std::process::Child)) {
    let output = child.wait_with_output().unwrap();
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert!(output.status.success(), "{args:?}: {stderr}");
}

/// The losses of a run's `metrics.jsonl`.
fn logged_losses(run: &std::path::Path) -> Vec<f64> {
    std::fs::read_to_string(run.join("metrics.jsonl"))
        .unwrap()
        .lines()
        .map(|line| {
            serde_json::from_str::<serde_json::Value>(line).unwrap()["loss"]
                .as_f64()
                .unwrap()
        })
        .collect()
}

/// The largest difference between the tensors of two exported models.
fn model_diff(a: &std::path::Path, b: &std::path::Path) -> f32 {
    let (a, b) = (
        std::fs::read(a.join("model/model.safetensors")).unwrap(),
        std::fs::read(b.join("model/model.safetensors")).unwrap(),
    );
    let (a, b) = (
        safetensors::SafeTensors::deserialize(&a).unwrap(),
        safetensors::SafeTensors::deserialize(&b).unwrap(),
    );
    let floats = |bytes: &[u8]| -> Vec<f32> {
        bytes
            .chunks_exact(4)
            .map(|c| f32::from_le_bytes(c.try_into().unwrap()))
            .collect()
    };
    let mut diff = 0.0f32;
    for (name, tensor) in a.tensors() {
        let other = b.tensor(&name).unwrap();
        diff = diff.max(common::max_abs_diff(
            &floats(tensor.data()),
            &floats(other.data()),
        ));
    }
    diff
}

#[test]
fn spectrum_train_on_two_workers_matches_one_and_resumes_on_one() {
    let Some(model) = common::smollm2_dir() else {
        return;
    };
    let _turn = COLLECTIVE.lock().unwrap_or_else(|e| e.into_inner());
    let dir = tempfile::tempdir().unwrap();
    let (two, one) = (dir.path().join("two"), dir.path().join("one"));
    train_smollm2(
        &model,
        &two,
        &["--devices", "2", "--batch-size", "2", "--save-every", "1"],
    );
    train_smollm2(&model, &one, &["--batch-size", "1", "--grad-accum", "2"]);
    let (two_losses, one_losses) = (logged_losses(&two), logged_losses(&one));
    assert_eq!(two_losses.len(), 2);
    for (a, b) in two_losses.iter().zip(&one_losses) {
        assert!(
            (a - b).abs() <= 1e-5 * a.abs(),
            "{two_losses:?} {one_losses:?}"
        );
    }
    let diff = model_diff(&two, &one);
    assert!(diff <= 1e-5, "two workers against one: {diff}");

    // Two processes, one worker each, meeting at an orchestrator on localhost: the same run
    // as two workers in one process. Node 1 writes nothing.
    let nodes = [0, 1].map(|rank| dir.path().join(format!("node-{rank}")));
    let run_nodes = |outs: [&std::path::Path; 2], extra: &[&str]| {
        let port = std::net::TcpListener::bind("127.0.0.1:0")
            .unwrap()
            .local_addr()
            .unwrap()
            .port()
            .to_string();
        let address = format!("127.0.0.1:{port}");
        let flags = [
            extra,
            &["--num-nodes", "2", "--batch-size", "2", "--node-rank"],
        ]
        .concat();
        let first = [&flags[..], &["0", "--start-orchestrator", &port]].concat();
        let second = [&flags[..], &["1", "--orchestrator", &address]].concat();
        let first = spawn_smollm2(&model, outs[0], &first);
        let second = spawn_smollm2(&model, outs[1], &second);
        finish_training(first);
        finish_training(second);
    };
    run_nodes([&nodes[0], &nodes[1]], &["--save-every", "1"]);
    let node_losses = logged_losses(&nodes[0]);
    assert_eq!(node_losses.len(), 2);
    for (a, b) in node_losses.iter().zip(&two_losses) {
        assert!(
            (a - b).abs() <= 1e-5 * a.abs(),
            "{node_losses:?} {two_losses:?}"
        );
    }
    let diff = model_diff(&nodes[0], &two);
    println!("2 nodes vs 2 workers: losses {node_losses:?} {two_losses:?}, weights {diff:.1e}");
    assert!(diff <= 1e-5, "two nodes against two workers: {diff}");
    assert!(!nodes[1].exists(), "node 1 wrote its folder");

    // Both nodes resume from node 0's checkpoint after step 1 (node 1 reads node 0's folder,
    // as on a shared file system) and end where the uninterrupted run ended.
    for stale in ["checkpoints/checkpoint-2", "model", "adapter"] {
        let _ = std::fs::remove_dir_all(nodes[0].join(stale));
    }
    std::fs::remove_file(nodes[0].join("summary.json")).unwrap();
    let first_line = |dir: &std::path::Path| {
        let text = std::fs::read_to_string(dir.join("metrics.jsonl")).unwrap();
        text.lines().next().unwrap().to_string()
    };
    let step_one = first_line(&nodes[0]);
    run_nodes([&nodes[0], &nodes[0]], &["--resume"]);
    // Step 1's line (with its wall time) is kept: the run went on from the checkpoint.
    assert_eq!(first_line(&nodes[0]), step_one);
    let diff = model_diff(&nodes[0], &two);
    assert!(diff <= 1e-5, "two nodes resumed: {diff}");

    // Rank 0's checkpoint after step 1 resumes on one worker (the data position counts
    // records, not batches) and ends where the uninterrupted runs ended.
    for stale in ["checkpoints/checkpoint-2", "model", "adapter"] {
        let _ = std::fs::remove_dir_all(two.join(stale));
    }
    std::fs::remove_file(two.join("summary.json")).unwrap();
    train_smollm2(
        &model,
        &two,
        &["--resume", "--batch-size", "1", "--grad-accum", "2"],
    );
    let diff = model_diff(&two, &one);
    assert!(diff <= 1e-5, "resumed on one worker: {diff}");
}
