//! Training: [`TrainStep`] updates only the trainable parameters of any Burn module, with
//! gradient accumulation, global-norm clipping, AdamW and a warmup + cosine schedule.

mod checkpoint;
mod freeze;
mod grad_norm;
mod memory;
mod method;
mod schedule;
mod step;
mod trainer;

pub use checkpoint::{TrainerState, latest_checkpoint};
pub use freeze::{count_params, freeze_except, trainable_params};
pub use grad_norm::{clip_grad_norm, global_grad_norm};
pub use memory::MemoryReport;
pub use method::{Method, Prepared, SpectrumSource};
pub use schedule::LrSchedule;
pub use step::{MicroLoss, StepFailure, StepMetrics, TrainConfig, TrainStep};
pub use trainer::{TrainReport, TrainerOptions, train};
