//! What a step hands burn-train's metrics: the loss and its token count, never the logits.

use burn::tensor::backend::Backend;
use burn::tensor::{ElementConversion, Tensor};
use burn::train::metric::{Adaptor, ItemLazy, LossInput};

/// A micro-batch's mean loss per target token, `[1]`, and its number of target tokens.
pub struct LmLoss<B: Backend> {
    /// The mean loss, `[1]`, on the step's device.
    pub loss: Tensor<B, 1>,
    /// Target tokens the loss is the mean over.
    pub tokens: usize,
}

/// An [`LmLoss`] read on the host: what the metrics see.
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct LmLossValue {
    /// The mean loss per target token (nats).
    pub loss: f64,
    /// Target tokens the loss is the mean over.
    pub tokens: usize,
}

impl<B: Backend> ItemLazy for LmLoss<B> {
    type ItemSync = LmLossValue;

    /// Reads the loss: the one value a step copies to the host, on burn-train's metrics
    /// thread.
    fn sync(self) -> LmLossValue {
        LmLossValue {
            loss: self.loss.into_scalar().elem(),
            tokens: self.tokens,
        }
    }
}

impl ItemLazy for LmLossValue {
    type ItemSync = LmLossValue;

    fn sync(self) -> LmLossValue {
        self
    }
}

impl<B: Backend> Adaptor<LossInput<B>> for LmLossValue {
    /// The mean loss as a `[1]` tensor: `LossMetric` weighs each micro-batch equally, as the
    /// mean over micro-batches our loop reports.
    fn adapt(&self) -> LossInput<B> {
        LossInput::new(Tensor::from_floats([self.loss as f32], &Default::default()))
    }
}
