//! Perplexity from the loss alone (burn-train's `PerplexityMetric` needs the logits on the
//! host): `exp` of the mean loss per target token.

use std::sync::Arc;

use burn::train::metric::{
    Adaptor, Metric, MetricAttributes, MetricMetadata, MetricName, Numeric, NumericAttributes,
    NumericEntry, SerializedEntry,
};

use super::output::LmLossValue;

/// A batch's summed loss (nats) and its number of target tokens.
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct PerplexityInput {
    /// Sum over the target tokens of `-log p(token)`.
    pub nll_sum: f64,
    /// Target tokens.
    pub tokens: usize,
}

impl Adaptor<PerplexityInput> for LmLossValue {
    fn adapt(&self) -> PerplexityInput {
        PerplexityInput {
            nll_sum: self.loss * self.tokens as f64,
            tokens: self.tokens,
        }
    }
}

/// `exp(sum of losses / tokens)`: per batch, and running over the epoch with every token
/// weighted alike (not a mean of per-batch perplexities).
#[derive(Clone)]
pub struct LossPerplexity {
    name: MetricName,
    nll_sum: f64,
    tokens: usize,
    current: f64,
}

impl Default for LossPerplexity {
    fn default() -> Self {
        Self::new()
    }
}

impl LossPerplexity {
    /// The metric, named "Perplexity".
    pub fn new() -> Self {
        LossPerplexity {
            name: Arc::new("Perplexity".to_string()),
            nll_sum: 0.0,
            tokens: 0,
            current: f64::NAN,
        }
    }

    fn running(&self) -> f64 {
        (self.nll_sum / self.tokens as f64).exp()
    }
}

impl Metric for LossPerplexity {
    type Input = PerplexityInput;

    fn name(&self) -> MetricName {
        self.name.clone()
    }

    fn attributes(&self) -> MetricAttributes {
        NumericAttributes {
            unit: None,
            higher_is_better: false,
        }
        .into()
    }

    fn update(&mut self, input: &PerplexityInput, _metadata: &MetricMetadata) -> SerializedEntry {
        self.current = (input.nll_sum / input.tokens as f64).exp();
        self.nll_sum += input.nll_sum;
        self.tokens += input.tokens;
        SerializedEntry::new(
            format!("epoch {:.3} - batch {:.3}", self.running(), self.current),
            NumericEntry::Value(self.current).serialize(),
        )
    }

    fn clear(&mut self) {
        *self = LossPerplexity {
            name: self.name.clone(),
            ..LossPerplexity::new()
        };
    }
}

impl Numeric for LossPerplexity {
    fn value(&self) -> NumericEntry {
        NumericEntry::Value(self.current)
    }

    fn running_value(&self) -> NumericEntry {
        NumericEntry::Value(self.running())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_running_value_weighs_tokens_not_batches() {
        let mut metric = LossPerplexity::new();
        let progress = burn::data::dataloader::Progress {
            items_processed: 1,
            items_total: 1,
        };
        let metadata = MetricMetadata {
            progress: progress.clone(),
            global_progress: progress,
            iteration: Some(0),
            lr: None,
        };
        for (loss, tokens) in [(1.0, 3), (2.0, 1)] {
            let input: PerplexityInput = LmLossValue { loss, tokens }.adapt();
            metric.update(&input, &metadata);
        }
        let expected = ((1.0 * 3.0 + 2.0) / 4.0f64).exp();
        assert!((metric.running() - expected).abs() < 1e-12);
        assert!((metric.value().current() - 2.0f64.exp()).abs() < 1e-12);
    }
}
