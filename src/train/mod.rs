//! Training: [`TrainStep`] updates only the trainable parameters of any Burn module, with
//! gradient accumulation, global-norm clipping, AdamW and a warmup + cosine schedule.

mod adamw;
mod args;
mod checkpoint;
mod config;
mod estimate;
mod freeze;
mod grad_norm;
mod gradients;
#[cfg(feature = "train")]
pub mod learner;
mod loss;
mod lr_scale;
mod memory;
mod method;
mod metrics_log;
mod optimizer;
#[cfg(feature = "data-parallel")]
pub mod parallel;
mod run;
#[cfg(feature = "data-parallel")]
mod run_parallel;
mod schedule;
mod step;
mod trainer;

pub use adamw::FusedAdamW;
pub use args::{MethodName, NodeArgs, TrainArgs};
pub use checkpoint::{TrainerState, latest_checkpoint};
pub use config::TrainConfig;
pub use estimate::{HEADROOM, MemoryEstimate, available_memory_bytes};
pub use freeze::{count_params, freeze_except, trainable_params};
pub use grad_norm::{clip_grad_norm, global_grad_norm};
pub use gradients::{MemoryOptions, batch_gradients};
pub use loss::{LOSS_CHUNK_BYTES, batch_loss, mean_loss};
pub use lr_scale::{SnrLrScaling, snr_lr_scales};
pub use memory::MemoryReport;
pub use method::{Method, Prepared, SpectrumSource};
pub use metrics_log::{MetricsLine, read_metrics};
pub use optimizer::{SelectiveAdamW, SelectiveAdamWRecord};
pub use run::{NodeConfig, RunConfig, RunSummary, peak_rss_mib, read_summary, run, run_on};
pub use schedule::LrSchedule;
pub use step::{MicroLoss, StepFailure, StepMetrics, TrainStep};
pub use trainer::{
    Reselect, Reselection, TrainReport, TrainerOptions, train, train_reduced, train_with,
};
