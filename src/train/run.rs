//! One fine-tuning run, from a model folder and an Alpaca file to a fine-tuned model folder:
//! what `spectrum train` and the `finetune_alpaca` example share.
//!
//! The run folder holds `metrics.jsonl`, `checkpoints/checkpoint-<step>/`, `model/` (a plain
//! Hugging Face folder), `adapter/` (PEFT's folder, for the LoRA family), `eval_before.json`
//! and, once finished, `summary.json`.

use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use burn::module::AutodiffModule;
use burn::tensor::backend::AutodiffBackend;
use indicatif::{ProgressBar, ProgressStyle};
use serde::{Deserialize, Serialize};

use super::checkpoint::latest_checkpoint;
use super::config::TrainConfig;
use super::estimate::{MemoryEstimate, available_memory_bytes};
use super::gradients::{MemoryOptions, batch_gradients};
use super::loss::mean_loss;
use super::memory::MemoryReport;
use super::method::{Method, SpectrumSource};
use super::metrics_log::{MetricsLine, MetricsLog};
use super::schedule::LrSchedule;
use super::step::{StepMetrics, TrainStep};
use super::trainer::{TrainerOptions, train_with};
use crate::backend::BackendName;
use crate::data::{
    AlpacaData, Batch, Batches, EncodeOptions, Example, PreparedData, prepare, read_alpaca,
};
use crate::error::{Error, Result};
use crate::io::{remove_folders_named, remove_unfinished_writes, write_json};
use crate::model::{GenerationConfig, LlamaConfig, LlamaForCausalLM, Tokenizer, generate};
use crate::nn::Precision;
use crate::peft::save_adapter;

#[cfg(feature = "data-parallel")]
use super::run_parallel::{join_nodes, start_orchestrator};

/// Without data parallelism, `check_settings` refuses every multi-node run.
#[cfg(not(feature = "data-parallel"))]
fn start_orchestrator(_: &RunConfig) -> Result<Option<()>> {
    Ok(None)
}

#[cfg(not(feature = "data-parallel"))]
fn join_nodes<B: AutodiffBackend>(
    _: &RunConfig,
    _: &LlamaForCausalLM<B>,
    _: &[Example],
    _: Option<&Path>,
) -> Result<Option<()>> {
    Ok(None)
}

/// Everything one run needs.
#[derive(Clone, Debug)]
pub struct RunConfig {
    /// A Hugging Face model folder.
    pub model_dir: PathBuf,
    /// An Alpaca JSON file.
    pub data: PathBuf,
    /// How to fine-tune.
    pub method: Method,
    /// Optimizer steps.
    pub steps: usize,
    /// Records per micro-batch.
    pub batch_size: usize,
    /// Micro-batches per optimizer step.
    pub grad_accum: usize,
    /// Tokens per record at most (prompt and answer).
    pub seq_len: usize,
    /// The peak learning rate.
    pub lr: f64,
    /// Steps of linear warmup; a cosine decay to 0 follows.
    pub warmup_steps: usize,
    /// Clip the global gradient norm to this.
    pub max_grad_norm: Option<f64>,
    /// Records held out for the eval loss (a seeded split).
    pub eval_samples: usize,
    /// Checkpoint every this many steps (and always at the end).
    pub save_every: Option<usize>,
    /// The run's one seed: data split and order, adapter initialisation, dropout.
    pub seed: u64,
    /// The run folder.
    pub output_dir: PathBuf,
    /// Continue from the latest checkpoint in the run folder, or return the finished run's
    /// summary.
    pub resume: bool,
    /// Draw a progress bar (on a terminal).
    pub progress: bool,
    /// Gradient checkpointing and the loss's chunks.
    pub memory: MemoryOptions,
    /// Data-parallel workers on this machine (1: none), each with a replica of the model and
    /// its share of every batch (`batch_size` is the global batch).
    pub devices: usize,
    /// The float type of activations and frozen weights (mixed precision below f32).
    pub precision: Precision,
    /// A run over several machines: this node's place and where the nodes meet (`None`:
    /// this machine alone).
    pub nodes: Option<NodeConfig>,
    /// The longest a data-parallel worker waits for the others, and a node for the
    /// orchestrator and the other nodes.
    pub peer_timeout: Duration,
}

/// This node of a multi-node run. Node 0 writes the run folder; the others write nothing
/// (with `--resume`, each reads the latest checkpoint in its own `--output-dir`: a shared
/// file system, or a copy of node 0's).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct NodeConfig {
    /// Nodes in the run.
    pub num_nodes: usize,
    /// This node, from 0.
    pub node_rank: usize,
    /// Where the nodes meet, `HOST:PORT`.
    pub orchestrator: String,
    /// Start the orchestrator in this process, on this port.
    pub start_orchestrator: Option<u16>,
}

impl RunConfig {
    /// Whether this process writes the run folder: node 0's does, the others' do not.
    pub fn writes_outputs(&self) -> bool {
        self.nodes.as_ref().is_none_or(|nodes| nodes.node_rank == 0)
    }

    /// Workers over all nodes.
    pub fn workers(&self) -> usize {
        self.devices * self.nodes.as_ref().map_or(1, |nodes| nodes.num_nodes)
    }
}

/// What a finished run measured: the `methods` entries of the example's `report.json`.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct RunSummary {
    /// The method's name (`spectrum-25`, `lora`, ...).
    pub method: String,
    /// Values that trained.
    pub trainable_params: usize,
    /// All values of the model.
    pub total_params: usize,
    /// Optimizer steps done.
    pub steps: usize,
    /// Target tokens trained on.
    pub tokens: usize,
    /// Mean wall time of a step, in seconds.
    pub seconds_per_step: f64,
    /// Target tokens per second of training.
    pub tokens_per_second: f64,
    /// The process's peak resident memory by the end of training, in MiB (Linux; `None`
    /// elsewhere).
    pub peak_rss_mib: Option<f64>,
    /// Bytes of the weights as stored (NF4 ones packed).
    pub weight_bytes: usize,
    /// Bytes of the gradients of the trainable values.
    pub grad_bytes: usize,
    /// Bytes of AdamW's state.
    pub optimizer_bytes: usize,
    /// Mean held-out loss per token before training (`None` with no held-out records).
    pub eval_loss_before: Option<f64>,
    /// Mean held-out loss per token after training.
    pub eval_loss_after: Option<f64>,
    /// The peak learning rate.
    pub lr: f64,
    /// The prompt of the first held-out record (the Alpaca template around its instruction).
    pub prompt: Option<String>,
    /// The greedy answer to that prompt after training.
    pub answer: Option<String>,
}

const SUMMARY: &str = "summary.json";
const EVAL_BEFORE: &str = "eval_before.json";

/// Runs `config` to its end, or to the first error (a NaN loss names its step and keeps the
/// checkpoints written before it). With `resume`, a finished run returns its summary at once
/// and an unfinished one continues from its latest checkpoint, exactly as if never stopped.
///
/// In a multi-node run, the nodes join (and are checked to agree) before anything is
/// written; only node 0 writes the run folder.
pub fn run<B: AutodiffBackend>(config: &RunConfig, device: &B::Device) -> Result<RunSummary> {
    let dir = &config.output_dir;
    check_settings(config)?;
    config
        .precision
        .check_supported::<B>(&B::name(device), device)?;
    let writes = config.writes_outputs();
    if writes {
        // A run folder has one run at a time: a temporary file there was left by a killed run.
        remove_unfinished_writes(dir).map_err(|(path, e)| Error::io(path, e))?;
    }
    if config.resume && dir.join(SUMMARY).exists() {
        return read_summary(&dir.join(SUMMARY));
    }
    // Before the model loads, so that the other nodes find it early.
    let _orchestrator = start_orchestrator(config)?;
    let alpaca = read_alpaca(&config.data)?;
    if alpaca.records.is_empty() {
        return Err(Error::InvalidData {
            path: config.data.clone(),
            reason: format!(
                "no usable record ({} entries skipped)",
                alpaca.skipped.len()
            ),
        });
    }
    let tokenizer = Tokenizer::from_dir(&config.model_dir)?;
    let eos = tokenizer.eos_id().ok_or_else(|| Error::Tokenizer {
        path: config.model_dir.clone(),
        reason: "no EOS token to end the answers with".into(),
    })?;
    let data = examples(config, &alpaca, &tokenizer, eos)?;
    // Adapters are drawn from the backend's generator: seed it, so a rerun draws the same.
    B::seed(device, config.seed);
    let mut prepared = config.method.load::<B>(&config.model_dir, device)?;
    if prepared.trainable.is_empty() {
        return Err(Error::NothingToTrain(config.method.name()));
    }
    prepared.model = prepared.model.with_precision(config.precision);
    let memory = MemoryReport::of(&prepared.model);
    let train_config = TrainConfig {
        schedule: LrSchedule::warmup_cosine(config.lr, config.warmup_steps, config.steps),
        max_grad_norm: config.max_grad_norm,
        seed: config.seed,
        ..Default::default()
    };
    let (model, step) = TrainStep::new(prepared.model, &prepared.trainable, train_config);
    let checkpoint = config
        .resume
        .then(|| latest_checkpoint(&dir.join("checkpoints")))
        .flatten();
    let links = join_nodes(config, &model, &data.train, checkpoint.as_deref())?;

    if writes {
        prepare_checkpoints(&dir.join("checkpoints"), checkpoint.is_some())?;
    }
    let eval = eval_batches(&data.eval, config.batch_size, eos);
    let eval_loss_before = match writes {
        true => eval_before(config, &model, &eval)?,
        false => None,
    };
    let mut batches = Batches::new(&data.train, config.batch_size, eos, config.seed)?;
    let (model, mut step, done) = match checkpoint {
        Some(checkpoint) => {
            let (model, step, state) = step.resume(model, &checkpoint, device)?;
            batches = batches.resume(state.data_position);
            (model, step, state.step)
        }
        None => (model, step, 0),
    };
    let (mut log, mut lines) = match writes {
        true => {
            let (log, lines) = MetricsLog::open(&dir.join("metrics.jsonl"), done)?;
            (Some(log), lines)
        }
        false => (None, Vec::new()),
    };
    let options = TrainerOptions {
        steps: config.steps,
        accumulation: config.grad_accum,
        checkpoint_every: writes.then(|| config.save_every.unwrap_or(config.steps).max(1)),
        checkpoint_dir: dir.join("checkpoints"),
        progress: false,
        reselect: None,
    };
    let bar = progress_bar(config, done);
    let mut last = Instant::now();
    let on_step = |m: &StepMetrics| {
        let line = MetricsLine::new(m, last.elapsed().as_secs_f64());
        last = Instant::now();
        if let Some(log) = &mut log {
            log.append(&line)?;
        }
        bar.set_message(format!(
            "loss {:.4}  {:.0} tok/s",
            line.loss,
            line.tokens as f64 / line.seconds.max(1e-9)
        ));
        bar.inc(1);
        lines.push(line);
        Ok(())
    };
    let model = if config.workers() > 1 || links.is_some() {
        #[cfg(feature = "data-parallel")]
        {
            let workers = super::run_parallel::Workers {
                devices: config.devices,
                memory: config.memory,
                timeout: config.peer_timeout,
                nodes: config.nodes.as_ref().zip(links),
            };
            workers.train(model, step, batches, &options, device, on_step)?
        }
        #[cfg(not(feature = "data-parallel"))]
        return Err(devices_need_the_feature());
    } else {
        let loss_of = |m: &LlamaForCausalLM<B>, b: &Batch| batch_gradients(m, b, &config.memory);
        train_with(model, &mut step, &mut batches, loss_of, &options, on_step)?.0
    };
    bar.finish_and_clear();
    // The training's peak, before evaluation and export add their own buffers.
    let peak_rss_mib = peak_rss_mib();
    if !writes {
        let summary = summarize(
            config,
            &memory,
            &lines,
            peak_rss_mib,
            (None, None),
            (None, None),
        );
        return Ok(summary);
    }

    // Evaluate and answer with the model as exported: adapters merged and NF4 dequantized
    // once, instead of dequantizing every NF4 weight at each generated token.
    let model = save_adapter_of(config, model.valid())?.into_dense();
    let eval_loss_after = (!eval.is_empty())
        .then(|| mean_loss(&model, &eval))
        .transpose()?;
    let (prompt, answer) = match data.eval.first() {
        Some(example) => {
            let (prompt, answer) = greedy_answer(&model, &tokenizer, example, eos, device)?;
            (Some(prompt), Some(answer))
        }
        None => (None, None),
    };
    model.export_merged(&config.model_dir, &dir.join("model"))?;
    let evals = (eval_loss_before, eval_loss_after);
    let summary = summarize(
        config,
        &memory,
        &lines,
        peak_rss_mib,
        evals,
        (prompt, answer),
    );
    let value = serde_json::to_value(&summary).expect("a summary serializes");
    write_json(&dir.join(SUMMARY), &value).map_err(|e| Error::io(dir.join(SUMMARY), e))?;
    Ok(summary)
}

/// [`run`] on the backend `backend`, which must be compiled in ([`Error::BackendMissing`]
/// otherwise) and find its device ([`Error::BackendUnusable`]; checked before anything else).
pub fn run_on(backend: BackendName, config: &RunConfig) -> Result<RunSummary> {
    use burn::backend::Autodiff;
    backend.check_usable()?;
    match backend {
        #[cfg(feature = "flex")]
        BackendName::Flex => run_named::<Autodiff<burn::backend::Flex>>(backend, config),
        #[cfg(feature = "wgpu")]
        BackendName::Wgpu => run_named::<Autodiff<burn::backend::Wgpu>>(backend, config),
        #[cfg(feature = "cuda")]
        BackendName::Cuda => run_named::<Autodiff<burn::backend::Cuda>>(backend, config),
        #[allow(unreachable_patterns)]
        missing => Err(Error::BackendMissing {
            backend: missing.feature(),
        }),
    }
}

/// [`run`] on `B`'s default device, the precision checked under the backend's command-line
/// name first.
#[cfg_attr(
    not(any(feature = "flex", feature = "wgpu", feature = "cuda")),
    allow(dead_code)
)]
fn run_named<B: AutodiffBackend>(backend: BackendName, config: &RunConfig) -> Result<RunSummary> {
    let device = Default::default();
    config
        .precision
        .check_supported::<B>(backend.feature(), &device)?;
    run::<B>(config, &device)
}

fn devices_need_the_feature() -> Error {
    Error::FeatureMissing {
        flag: "--devices",
        feature: "data-parallel",
    }
}

/// Settings that cannot make a run, refused before anything is read or written.
fn check_settings(config: &RunConfig) -> Result<()> {
    let positive = [
        ("--steps", config.steps),
        ("--batch-size", config.batch_size),
        ("--grad-accum", config.grad_accum),
        ("--devices", config.devices),
    ];
    for (name, value) in positive {
        if value == 0 {
            return Err(Error::InvalidSetting {
                name,
                value: "0".into(),
                expected: "must be at least 1",
            });
        }
    }
    if config.devices > 1 && !cfg!(feature = "data-parallel") {
        return Err(devices_need_the_feature());
    }
    if let Some(nodes) = &config.nodes {
        check_nodes(nodes)?;
    }
    if config.peer_timeout.is_zero() {
        return Err(Error::InvalidSetting {
            name: "--peer-timeout",
            value: format!("{:?}", config.peer_timeout),
            expected: "must be a positive number of seconds",
        });
    }
    if config.batch_size < config.workers() {
        return Err(Error::InvalidSetting {
            name: "--batch-size",
            value: config.batch_size.to_string(),
            expected: "must be at least --devices times --num-nodes (the global batch is split \
                       among the workers)",
        });
    }
    let percent = match &config.method {
        Method::Spectrum(SpectrumSource::TopPercent(k))
        | Method::SpectrumQLora(SpectrumSource::TopPercent(k), _) => Some(*k),
        _ => None,
    };
    if let Some(k) = percent.filter(|k| !(1..=100).contains(k)) {
        return Err(Error::InvalidSetting {
            name: "--top-percent",
            value: k.to_string(),
            expected: "must be from 1 to 100",
        });
    }
    if !(config.lr.is_finite() && config.lr > 0.0) {
        return Err(Error::InvalidSetting {
            name: "--lr",
            value: config.lr.to_string(),
            expected: "must be positive",
        });
    }
    if config.memory.loss_chunk == Some(0) {
        return Err(Error::InvalidSetting {
            name: "--loss-chunk",
            value: "0".into(),
            expected: "must be at least 1 position",
        });
    }
    if config.output_dir.is_file() {
        return Err(Error::NotAFolder(config.output_dir.clone()));
    }
    let model = LlamaConfig::from_file(&config.model_dir)?;
    if config.seq_len < 2 || config.seq_len > model.max_position_embeddings {
        return Err(Error::InvalidSetting {
            name: "--seq-len",
            value: config.seq_len.to_string(),
            expected: "must be from 2 to the model's max_position_embeddings",
        });
    }
    let estimate = MemoryEstimate::of(
        &model,
        &config.method,
        config.batch_size,
        config.seq_len,
        &config.memory,
    );
    if let Some(available) = available_memory_bytes() {
        estimate.check(available)?;
    }
    Ok(())
}

/// A node's place that cannot be part of a run.
fn check_nodes(nodes: &NodeConfig) -> Result<()> {
    if !cfg!(feature = "data-parallel") {
        return Err(Error::FeatureMissing {
            flag: "--num-nodes",
            feature: "data-parallel",
        });
    }
    if nodes.num_nodes == 0 {
        return Err(Error::InvalidSetting {
            name: "--num-nodes",
            value: "0".into(),
            expected: "must be at least 1",
        });
    }
    if nodes.node_rank >= nodes.num_nodes {
        return Err(Error::InvalidSetting {
            name: "--node-rank",
            value: nodes.node_rank.to_string(),
            expected: "must be below --num-nodes (nodes count from 0)",
        });
    }
    Ok(())
}

/// The encoded records, split into training and held-out examples.
fn examples(
    config: &RunConfig,
    alpaca: &AlpacaData,
    tokenizer: &Tokenizer,
    eos: u32,
) -> Result<PreparedData> {
    let options = EncodeOptions {
        max_len: config.seq_len,
        train_on_prompt: false,
    };
    let data = prepare(
        alpaca,
        tokenizer,
        eos,
        &options,
        config.eval_samples,
        config.seed,
    )?;
    if data.train.is_empty() {
        return Err(Error::InvalidData {
            path: config.data.clone(),
            reason: format!(
                "no record left to train on ({} usable, {} held out, {} too long for --seq-len {})",
                alpaca.records.len(),
                data.eval.len(),
                data.too_long,
                config.seq_len
            ),
        });
    }
    Ok(data)
}

/// The held-out examples in batches, in a fixed order.
fn eval_batches(eval: &[Example], batch_size: usize, pad_id: u32) -> Vec<Batch> {
    eval.chunks(batch_size)
        .map(|chunk| Batch::collate(&chunk.iter().collect::<Vec<_>>(), pad_id))
        .collect()
}

/// The held-out loss of the model before training, computed once and kept in the run folder
/// (a resumed run's model is no longer the one before training).
fn eval_before<B: AutodiffBackend>(
    config: &RunConfig,
    model: &LlamaForCausalLM<B>,
    eval: &[Batch],
) -> Result<Option<f64>> {
    let path = config.output_dir.join(EVAL_BEFORE);
    if config.resume && path.exists() {
        let text = std::fs::read_to_string(&path).map_err(|e| Error::io(&path, e))?;
        return serde_json::from_str(&text).map_err(|e| Error::InvalidData {
            path,
            reason: e.to_string(),
        });
    }
    let loss = (!eval.is_empty())
        .then(|| mean_loss(&model.valid(), eval))
        .transpose()?;
    write_json(&path, &serde_json::json!(loss)).map_err(|e| Error::io(&path, e))?;
    Ok(loss)
}

/// Makes the run's checkpoint folder ready: created, without the checkpoints a killed run
/// was still writing, and without an earlier run's unless this one `resumes` from them.
fn prepare_checkpoints(dir: &Path, resumes: bool) -> Result<()> {
    std::fs::create_dir_all(dir).map_err(|e| Error::io(dir, e))?;
    remove_unfinished_checkpoints(dir)?;
    if !resumes {
        clear_checkpoints(dir)?;
    }
    Ok(())
}

/// Removes the checkpoints of an earlier run in this folder, so that a fresh run's latest
/// checkpoint is its own.
fn clear_checkpoints(dir: &Path) -> Result<()> {
    remove_folders_named(dir, "checkpoint-").map_err(|(path, e)| Error::io(path, e))
}

/// Removes the hidden folders of checkpoints a killed run was still writing (`SIGKILL` leaves
/// them; a run folder has one run at a time).
fn remove_unfinished_checkpoints(dir: &Path) -> Result<()> {
    remove_folders_named(dir, ".checkpoint-").map_err(|(path, e)| Error::io(path, e))
}

/// A bar with step, loss, tokens/s and ETA; hidden when not asked for or not on a terminal.
fn progress_bar(config: &RunConfig, done: usize) -> ProgressBar {
    if !config.progress {
        return ProgressBar::hidden();
    }
    let bar = ProgressBar::new(config.steps as u64).with_style(
        ProgressStyle::with_template("{prefix:>18} [{bar:30}] {pos}/{len} {msg}  ETA {eta}")
            .expect("a valid template")
            .progress_chars("=> "),
    );
    bar.set_prefix(config.method.name());
    bar.set_position(done as u64);
    bar
}

/// `example`'s prompt (its tokens before the first label) and the model's greedy
/// continuation of it, up to 64 tokens, as text.
fn greedy_answer<B: burn::tensor::backend::Backend>(
    model: &LlamaForCausalLM<B>,
    tokenizer: &Tokenizer,
    example: &Example,
    eos: u32,
    device: &B::Device,
) -> Result<(String, String)> {
    let prompt_len = example
        .labels
        .iter()
        .position(|&label| label >= 0)
        .unwrap_or(example.ids.len());
    let config = GenerationConfig {
        eos_token_ids: vec![eos],
        ..Default::default()
    };
    let prompt = &example.ids[..prompt_len];
    let generation = generate(model, prompt, &config, device, |_| ())?;
    Ok((
        tokenizer.decode(prompt, true)?,
        tokenizer.decode(&generation.generated_ids, true)?,
    ))
}

/// Writes `adapter/` for the LoRA family, before the adapters are merged away.
fn save_adapter_of<B: burn::tensor::backend::Backend>(
    config: &RunConfig,
    mut model: LlamaForCausalLM<B>,
) -> Result<LlamaForCausalLM<B>> {
    if let Some(lora) = config.method.lora_config() {
        let base = config.model_dir.display().to_string();
        save_adapter(&mut model, lora, &base, &config.output_dir.join("adapter"))?;
    }
    Ok(model)
}

fn summarize(
    config: &RunConfig,
    memory: &MemoryReport,
    lines: &[MetricsLine],
    peak_rss_mib: Option<f64>,
    (eval_loss_before, eval_loss_after): (Option<f64>, Option<f64>),
    (prompt, answer): (Option<String>, Option<String>),
) -> RunSummary {
    let seconds: f64 = lines.iter().map(|l| l.seconds).sum();
    let tokens: usize = lines.iter().map(|l| l.tokens).sum();
    RunSummary {
        method: config.method.name(),
        trainable_params: memory.trainable_params,
        total_params: memory.total_params,
        steps: lines.len(),
        tokens,
        seconds_per_step: seconds / lines.len().max(1) as f64,
        tokens_per_second: tokens as f64 / seconds.max(1e-9),
        peak_rss_mib,
        weight_bytes: memory.weight_bytes,
        grad_bytes: memory.grad_bytes,
        optimizer_bytes: memory.optimizer_bytes,
        eval_loss_before,
        eval_loss_after,
        lr: config.lr,
        prompt,
        answer,
    }
}

/// Reads a finished run's `summary.json`.
pub fn read_summary(path: &Path) -> Result<RunSummary> {
    let text = std::fs::read_to_string(path).map_err(|e| Error::io(path, e))?;
    serde_json::from_str(&text).map_err(|e| Error::InvalidData {
        path: path.to_path_buf(),
        reason: format!("not a run summary: {e}"),
    })
}

/// The process's peak resident set (`VmHWM` of `/proc/self/status`), in MiB.
pub fn peak_rss_mib() -> Option<f64> {
    let status = std::fs::read_to_string("/proc/self/status").ok()?;
    let line = status.lines().find(|l| l.starts_with("VmHWM:"))?;
    let kib: f64 = line.split_whitespace().nth(1)?.parse().ok()?;
    Some(kib / 1024.0)
}
