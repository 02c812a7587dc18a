//! The settings of a training step: AdamW's numbers, clipping, the schedule and the seed.

use super::schedule::LrSchedule;

/// Optimizer settings: AdamW with decoupled weight decay, global-norm clipping, a schedule.
#[derive(Clone, Debug)]
pub struct TrainConfig {
    /// The learning rate per step.
    pub schedule: LrSchedule,
    /// AdamW's decoupled weight decay.
    pub weight_decay: f64,
    /// AdamW's first-moment decay.
    pub beta_1: f64,
    /// AdamW's second-moment decay.
    pub beta_2: f64,
    /// AdamW's epsilon.
    pub epsilon: f64,
    /// Clip the global gradient norm to this; `None` leaves gradients as they are.
    pub max_grad_norm: Option<f64>,
    /// The run's one seed. The backend's random numbers (dropout) are seeded from
    /// `(seed, step)` at every step, so a resumed run draws what the uninterrupted one drew;
    /// [`train`](super::train()) records it in checkpoints. Give the same seed to the data
    /// (`data::prepare`, `data::Batches::new`), which derive their order from it.
    pub seed: u64,
}

impl Default for TrainConfig {
    /// transformers' `TrainingArguments` defaults: lr 5e-5, no weight decay, betas
    /// (0.9, 0.999), eps 1e-8, max grad norm 1.
    fn default() -> Self {
        TrainConfig {
            schedule: LrSchedule::constant(5e-5),
            weight_decay: 0.0,
            beta_1: 0.9,
            beta_2: 0.999,
            epsilon: 1e-8,
            max_grad_norm: Some(1.0),
            seed: 0,
        }
    }
}
