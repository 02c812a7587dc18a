//! The loss of a batch of instruction data: what a training step minimises and what evaluation
//! reports.

use burn::module::Module;
use burn::tensor::backend::Backend;
use burn::tensor::{ElementConversion, Int, Tensor, TensorData};

use super::step::MicroLoss;
use crate::data::Batch;
use crate::error::{Error, Result};
use crate::model::{LlamaForCausalLM, ids_tensor};

/// The causal LM loss of a padded batch (mean over its target tokens) and how many target
/// tokens it has: the `loss_of` a [`TrainStep`](super::TrainStep) takes for
/// [`Batch`]es, as `|model, batch| batch_loss(model, batch)`.
///
/// # Shapes
/// - batch: `[rows][seq]` ids, mask and labels; the loss is `[1]`.
pub fn batch_loss<B: Backend>(model: &LlamaForCausalLM<B>, batch: &Batch) -> Result<MicroLoss<B>> {
    let device = model.devices().into_iter().next().unwrap_or_default();
    let ids = ids_tensor(&batch.ids, &device)?;
    let [rows, seq] = ids.dims();
    // Checked before the forward pass, which would be wasted on labels that cannot be scored.
    if let Some(row) = batch.labels.iter().position(|l| l.len() != seq) {
        let len = batch.labels[row].len();
        return Err(Error::RaggedBatch {
            row,
            len,
            expected: seq,
        });
    }
    let logits = model.forward_masked(ids, Some(&batch.attention_mask))?;
    let flat: Vec<i64> = batch.labels.iter().flatten().copied().collect();
    let labels = Tensor::<B, 2, Int>::from_data(TensorData::new(flat, [rows, seq]), &device);
    Ok(MicroLoss::new(
        LlamaForCausalLM::causal_lm_loss(logits, labels)?,
        batch.target_tokens(),
    ))
}

/// The mean loss per target token over `batches`, without gradients: the eval loss.
pub fn mean_loss<B: Backend>(model: &LlamaForCausalLM<B>, batches: &[Batch]) -> Result<f64> {
    let (mut sum, mut tokens) = (0.0, 0);
    for batch in batches {
        let MicroLoss {
            loss, tokens: n, ..
        } = batch_loss(model, batch)?;
        let loss: f64 = loss.into_scalar().elem();
        sum += loss * n as f64;
        tokens += n;
    }
    Ok(sum / tokens.max(1) as f64)
}
