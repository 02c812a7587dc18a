//! Learning rate over steps: linear warmup, then cosine decay (as transformers'
//! `get_cosine_schedule_with_warmup`). Pure math.

/// Linear warmup from 0 to `peak_lr` over `warmup_steps`, then a half cosine down to 0 at
/// `total_steps`.
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct LrSchedule {
    /// The learning rate after warmup.
    pub peak_lr: f64,
    /// Steps of linear warmup from 0.
    pub warmup_steps: usize,
    /// Steps over which the cosine decays to 0 (warmup included).
    pub total_steps: usize,
}

impl LrSchedule {
    /// A constant learning rate.
    pub fn constant(lr: f64) -> Self {
        LrSchedule {
            peak_lr: lr,
            warmup_steps: 0,
            total_steps: 0,
        }
    }

    /// Linear warmup to `peak_lr` over `warmup_steps`, then a cosine to 0 at `total_steps`
    /// (transformers' `get_cosine_schedule_with_warmup`).
    pub fn warmup_cosine(peak_lr: f64, warmup_steps: usize, total_steps: usize) -> Self {
        LrSchedule {
            peak_lr,
            warmup_steps,
            total_steps,
        }
    }

    /// The learning rate of step `step` (counted from 0).
    pub fn lr(&self, step: usize) -> f64 {
        if step < self.warmup_steps {
            return self.peak_lr * step as f64 / self.warmup_steps as f64;
        }
        if self.total_steps <= self.warmup_steps {
            return self.peak_lr;
        }
        let progress =
            (step - self.warmup_steps) as f64 / (self.total_steps - self.warmup_steps) as f64;
        let cosine = 0.5 * (1.0 + (std::f64::consts::PI * progress.min(1.0)).cos());
        self.peak_lr * cosine.max(0.0)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn warmup_then_cosine() {
        let s = LrSchedule {
            peak_lr: 1.0,
            warmup_steps: 4,
            total_steps: 12,
        };
        assert_eq!(s.lr(0), 0.0);
        assert_eq!(s.lr(2), 0.5);
        assert_eq!(s.lr(4), 1.0);
        assert!((s.lr(8) - 0.5).abs() < 1e-12);
        assert!(s.lr(12).abs() < 1e-12);
        assert!(s.lr(20).abs() < 1e-12);
        assert_eq!(LrSchedule::constant(0.1).lr(1000), 0.1);
    }
}
