//! Our learning-rate schedule as burn-train calls one: once per micro-batch.

use burn::lr_scheduler::LrScheduler;
use burn::optim::LearningRate;
use burn::tensor::backend::Backend;

use super::super::schedule::LrSchedule;

/// An [`LrSchedule`] over optimizer steps, stepped per micro-batch: burn-train calls the
/// scheduler before every micro-batch and the optimizer after every `micro_batches` of them
/// (its `grads_accumulation`), with the rate of the last call. Optimizer step `s` then runs at
/// `schedule.lr(s)`, as in our own loop.
///
/// burn-train drops the micro-batches of an epoch's last, incomplete accumulation group but
/// still counts them here: give each epoch a multiple of `micro_batches` batches (see
/// [`BatchLoader::num_batches`](super::BatchLoader::num_batches)).
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct MicroBatchSchedule {
    schedule: LrSchedule,
    micro_batches: usize,
    calls: usize,
}

impl MicroBatchSchedule {
    /// `schedule` over optimizer steps of `micro_batches` micro-batches each (at least 1).
    pub fn new(schedule: LrSchedule, micro_batches: usize) -> Self {
        MicroBatchSchedule {
            schedule,
            micro_batches: micro_batches.max(1),
            calls: 0,
        }
    }

    /// The optimizer step the last call's rate is for (0 before any call).
    pub fn optimizer_step(&self) -> usize {
        self.calls.saturating_sub(1) / self.micro_batches
    }
}

impl LrScheduler for MicroBatchSchedule {
    /// The number of calls so far.
    type Record<B: Backend> = usize;

    fn step(&mut self) -> LearningRate {
        self.calls += 1;
        self.schedule.lr(self.optimizer_step())
    }

    fn to_record<B: Backend>(&self) -> usize {
        self.calls
    }

    fn load_record<B: Backend>(mut self, calls: usize) -> Self {
        self.calls = calls;
        self
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_last_call_before_each_optimizer_step_gives_that_steps_rate() {
        let schedule = LrSchedule::warmup_cosine(1e-3, 2, 7);
        for micro_batches in [1, 3] {
            let mut scheduler = MicroBatchSchedule::new(schedule, micro_batches);
            for step in 0..7 {
                let mut lr = f64::NAN;
                for _ in 0..micro_batches {
                    lr = scheduler.step();
                }
                assert_eq!(lr, schedule.lr(step), "step {step} of {micro_batches}");
            }
        }
    }

    #[cfg(feature = "flex")]
    #[test]
    fn a_restored_schedule_continues_where_it_stopped() {
        let schedule = LrSchedule::warmup_cosine(1e-3, 2, 9);
        let mut first = MicroBatchSchedule::new(schedule, 2);
        for _ in 0..5 {
            first.step();
        }
        let record = first.to_record::<burn::backend::Flex>();
        let mut resumed =
            MicroBatchSchedule::new(schedule, 2).load_record::<burn::backend::Flex>(record);
        assert_eq!(resumed.step(), first.step());
    }
}
