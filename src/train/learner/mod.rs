//! burn-train integration (feature `train`): the causal LM as burn-train's `TrainStep` and
//! `InferenceStep`, a loss-only output its `LossMetric` reads (and a perplexity from that loss),
//! a data loader over our batches, and a schedule that steps per micro-batch as burn-train
//! calls it. With [`SelectiveAdamW`](super::SelectiveAdamW) as the optimizer,
//! `Learner::new(model, optimizer, schedule)` trains any [`Method`](super::Method): a Spectrum
//! selection is "freeze, then train with the standard Learner".
//!
//! burn-train's trait and our [`TrainStep`](super::TrainStep) share a name; import the trait
//! under another one when both are needed:
//!
//! ```
//! use burn::train::TrainStep as LearnerStep;
//! use burn_spectrum::train::TrainStep;
//! ```

mod loader;
mod output;
mod perplexity;
mod progress;
mod schedule;
mod steps;

pub use loader::BatchLoader;
pub use output::{LmLoss, LmLossValue};
pub use perplexity::{LossPerplexity, PerplexityInput};
pub use progress::ProgressRenderer;
pub use schedule::MicroBatchSchedule;
