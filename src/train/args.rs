//! The training flags that `spectrum train` and the `finetune_alpaca` example share, and the
//! per-method defaults behind them.

use std::path::PathBuf;
use std::time::Duration;

use super::gradients::MemoryOptions;
use super::method::{Method, SpectrumSource};
use super::run::{NodeConfig, RunConfig};
use crate::backend::BackendName;
use crate::error::{Error, Result};
use crate::nn::Precision;
use crate::peft::LoraConfig;

/// A fine-tuning method by its command-line name.
#[derive(Clone, Copy, Debug, PartialEq, Eq, clap::ValueEnum)]
pub enum MethodName {
    /// Every parameter trains.
    Full,
    /// The top k% of each module type by SNR trains.
    Spectrum,
    /// LoRA adapters on every linear projection.
    Lora,
    /// LoRA over an NF4 base.
    Qlora,
    /// QLoRA adapters only on the Spectrum-selected projections.
    SpectrumQlora,
}

impl MethodName {
    /// The five methods, in the paper's order of memory use.
    pub const ALL: [MethodName; 5] = [
        MethodName::Full,
        MethodName::Spectrum,
        MethodName::Lora,
        MethodName::Qlora,
        MethodName::SpectrumQlora,
    ];

    /// The peak learning rate when `--lr` is not given: low for the methods that change the
    /// weights themselves (full and Spectrum, as in the Spectrum paper), higher for adapters
    /// (QLoRA's 2e-4).
    pub fn default_lr(self) -> f64 {
        match self {
            MethodName::Full | MethodName::Spectrum => 5e-5,
            MethodName::Lora | MethodName::Qlora | MethodName::SpectrumQlora => 2e-4,
        }
    }

    /// `(r, alpha)` when not given: LoRA r 16 / alpha 32; QLoRA the paper's r 64 / alpha 16.
    pub fn default_lora(self) -> (usize, f64) {
        match self {
            MethodName::Qlora | MethodName::SpectrumQlora => (64, 16.0),
            _ => (16, 32.0),
        }
    }

    /// The global gradient-norm clip: QLoRA's 0.3 for the NF4 methods, 1.0 otherwise.
    pub fn max_grad_norm(self) -> f64 {
        match self {
            MethodName::Qlora | MethodName::SpectrumQlora => 0.3,
            _ => 1.0,
        }
    }
}

/// The training flags, for `clap`'s `#[command(flatten)]`.
#[derive(clap::Args, Clone, Debug)]
pub struct TrainArgs {
    /// Spectrum's k: train the top N% of each module type (1..=100).
    #[arg(long, value_name = "N", default_value_t = 25)]
    pub top_percent: u32,
    /// Optimizer steps.
    #[arg(long, value_name = "N", default_value_t = 24)]
    pub steps: usize,
    /// Records per micro-batch.
    #[arg(long, value_name = "N", default_value_t = 4)]
    pub batch_size: usize,
    /// Micro-batches per optimizer step.
    #[arg(long, value_name = "N", default_value_t = 1)]
    pub grad_accum: usize,
    /// Tokens per record at most.
    #[arg(long, value_name = "N", default_value_t = 128)]
    pub seq_len: usize,
    /// Peak learning rate for every method [default: per method, see README].
    #[arg(long, value_name = "X")]
    pub lr: Option<f64>,
    /// Steps of linear warmup before the cosine decay [default: 10% of --steps, rounded up].
    #[arg(long, value_name = "N")]
    pub warmup_steps: Option<usize>,
    /// LoRA rank [default: 16; 64 for the QLoRA methods].
    #[arg(long, value_name = "N")]
    pub lora_r: Option<usize>,
    /// LoRA alpha [default: 32; 16 for the QLoRA methods].
    #[arg(long, value_name = "X")]
    pub lora_alpha: Option<f64>,
    /// Held-out records for the eval loss.
    #[arg(long, value_name = "N", default_value_t = 32)]
    pub eval_samples: usize,
    /// Where tensors live.
    #[arg(long, value_enum, default_value_t = BackendName::Flex)]
    pub backend: BackendName,
    /// The float type of activations and frozen weights: bf16 or f16 run mixed precision
    /// (products in the half type; norms, softmax and loss in f32; trainable weights and
    /// AdamW state in f32). bf16 for CUDA; f16 for wgpu where the adapter has it.
    #[arg(long, value_enum, default_value_t = Precision::F32)]
    pub dtype: Precision,
    /// Checkpoint every N optimizer steps (and at the end) [default: at the end only].
    #[arg(long, value_name = "N")]
    pub save_every: Option<usize>,
    /// The run's seed: data split and order, adapter initialisation, dropout.
    #[arg(long, value_name = "N", default_value_t = 0)]
    pub seed: u64,
    /// Continue unfinished runs from their latest checkpoint; skip finished ones.
    #[arg(long)]
    pub resume: bool,
    /// No progress bar: one line per method.
    #[arg(long)]
    pub quiet: bool,
    /// Keep only each decoder layer's input and run the layer again in the backward pass:
    /// much less activation memory at long sequences, for about a third more compute.
    #[arg(long)]
    pub gradient_checkpointing: bool,
    /// Positions whose logits the loss forms at once [default: as many as fill 64 MiB].
    #[arg(long, value_name = "N")]
    pub loss_chunk: Option<usize>,
    /// Data-parallel workers on this machine, each with a replica of the model and its share
    /// of every batch (--batch-size is the global batch); on the CPU, N workers of the flex
    /// device; on a GPU backend, devices 0..N.
    #[arg(long, value_name = "N", default_value_t = 1)]
    pub devices: usize,
    /// The longest a data-parallel worker waits for the others in seconds, and a node for the
    /// orchestrator and the other nodes to join.
    #[arg(long, value_name = "SECONDS", default_value_t = 600.0)]
    pub peer_timeout: f64,
}

/// The flags of a run over several machines, for `clap`'s `#[command(flatten)]`: every node
/// runs `spectrum train` with the same flags but `--node-rank`, and one of them starts the
/// orchestrator where the nodes meet.
#[derive(clap::Args, Clone, Debug, Default)]
pub struct NodeArgs {
    /// Nodes (machines) in the run, each with --devices workers.
    #[arg(long, value_name = "K", default_value_t = 1)]
    pub num_nodes: usize,
    /// This node, from 0 to K-1; node 0 writes the run folder.
    #[arg(long, value_name = "R", default_value_t = 0)]
    pub node_rank: usize,
    /// Where the nodes meet: the orchestrator's HOST:PORT [default with
    /// --start-orchestrator: 127.0.0.1:PORT].
    #[arg(long, value_name = "HOST:PORT")]
    pub orchestrator: Option<String>,
    /// Start the orchestrator in this process, listening on PORT of every interface.
    #[arg(long, value_name = "PORT")]
    pub start_orchestrator: Option<u16>,
}

impl NodeArgs {
    /// This node's place in a multi-node run; `None` for a machine alone (no orchestrator
    /// named or started).
    pub fn node_config(&self) -> Result<Option<NodeConfig>> {
        let address = match (&self.orchestrator, self.start_orchestrator) {
            (Some(address), _) => address.clone(),
            (None, Some(port)) => format!("127.0.0.1:{port}"),
            (None, None) if self.num_nodes > 1 || self.node_rank > 0 => {
                return Err(Error::FlagNeeds {
                    flag: format!(
                        "--num-nodes {} --node-rank {}",
                        self.num_nodes, self.node_rank
                    ),
                    needs: "--orchestrator HOST:PORT (one node starts it with \
                            --start-orchestrator PORT)",
                });
            }
            (None, None) => return Ok(None),
        };
        Ok(Some(NodeConfig {
            num_nodes: self.num_nodes,
            node_rank: self.node_rank,
            orchestrator: address,
            start_orchestrator: self.start_orchestrator,
        }))
    }
}

impl TrainArgs {
    /// The method `name` with these flags (`unfrozen_yaml` replaces `--top-percent` for the
    /// Spectrum methods).
    pub fn method(&self, name: MethodName, unfrozen_yaml: Option<PathBuf>) -> Method {
        let source = match unfrozen_yaml {
            Some(path) => SpectrumSource::Yaml(path),
            None => SpectrumSource::TopPercent(self.top_percent),
        };
        let (r, alpha) = name.default_lora();
        let lora = LoraConfig {
            r: self.lora_r.unwrap_or(r),
            lora_alpha: self.lora_alpha.unwrap_or(alpha),
            ..Default::default()
        };
        match name {
            MethodName::Full => Method::Full,
            MethodName::Spectrum => Method::Spectrum(source),
            MethodName::Lora => Method::Lora(lora),
            MethodName::Qlora => Method::QLora(lora),
            MethodName::SpectrumQlora => Method::SpectrumQLora(source, lora),
        }
    }

    /// The run of `method` (named `name`) on `model_dir` and `data`, into `output_dir`.
    pub fn run_config(
        &self,
        name: MethodName,
        method: Method,
        model_dir: PathBuf,
        data: PathBuf,
        output_dir: PathBuf,
    ) -> RunConfig {
        RunConfig {
            model_dir,
            data,
            method,
            steps: self.steps,
            batch_size: self.batch_size,
            grad_accum: self.grad_accum,
            seq_len: self.seq_len,
            lr: self.lr.unwrap_or(name.default_lr()),
            warmup_steps: self.warmup_steps.unwrap_or(self.steps.div_ceil(10)),
            max_grad_norm: Some(name.max_grad_norm()),
            eval_samples: self.eval_samples,
            save_every: self.save_every,
            seed: self.seed,
            output_dir,
            resume: self.resume,
            progress: !self.quiet,
            memory: MemoryOptions {
                gradient_checkpointing: self.gradient_checkpointing,
                loss_chunk: self.loss_chunk,
            },
            devices: self.devices,
            precision: self.dtype,
            nodes: None,
            peer_timeout: Duration::try_from_secs_f64(self.peer_timeout).unwrap_or(Duration::ZERO),
        }
    }
}
