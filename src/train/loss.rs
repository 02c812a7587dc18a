//! The loss of a batch of instruction data: what a training step minimises and what evaluation
//! reports.

use burn::module::Module;
use burn::tensor::backend::Backend;
use burn::tensor::{ElementConversion, Int, Tensor, TensorData};

use super::step::MicroLoss;
use crate::data::Batch;
use crate::error::{Error, Result};
use crate::model::{LlamaForCausalLM, ids_tensor, next_token_pairs};

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
    let labels = labels_tensor::<B>(batch, rows, seq, model.config().vocab_size, &device)?;
    let logits = model.forward_masked(ids, Some(&batch.attention_mask))?;
    Ok(MicroLoss::new(
        LlamaForCausalLM::causal_lm_loss(logits, labels)?,
        batch.target_tokens(),
    ))
}

/// The f32 logits one loss chunk forms at most when no chunk size is given: 64 MiB, 130
/// positions of Llama 3's 128,256-token vocabulary, 341 of SmolLM2's 49,152.
pub const LOSS_CHUNK_BYTES: usize = 64 << 20;

/// Positions per loss chunk: `chunk` when given, else as many as fill [`LOSS_CHUNK_BYTES`]
/// with logits over `vocab` tokens; at least 1.
pub(crate) fn chunk_positions(chunk: Option<usize>, vocab: usize) -> usize {
    chunk
        .unwrap_or(LOSS_CHUNK_BYTES / (4 * vocab.max(1)))
        .max(1)
}

/// The mean loss per target token over `batches`, without gradients: the eval loss. The
/// logits are formed for [`LOSS_CHUNK_BYTES`] worth of positions at a time.
pub fn mean_loss<B: Backend>(model: &LlamaForCausalLM<B>, batches: &[Batch]) -> Result<f64> {
    let chunk = chunk_positions(None, model.config().vocab_size);
    let (mut sum, mut tokens) = (0.0, 0);
    for batch in batches {
        sum += nll_sum(model, batch, chunk)?;
        tokens += batch.target_tokens();
    }
    Ok(sum / tokens.max(1) as f64)
}

/// The summed negative log-likelihood of a batch's targets, over chunks of `chunk` positions.
fn nll_sum<B: Backend>(model: &LlamaForCausalLM<B>, batch: &Batch, chunk: usize) -> Result<f64> {
    let device = model.devices().into_iter().next().unwrap_or_default();
    let ids = ids_tensor(&batch.ids, &device)?;
    let [rows, seq] = ids.dims();
    let labels = labels_tensor::<B>(batch, rows, seq, model.config().vocab_size, &device)?;
    let hidden = model.final_hidden(ids, Some(&batch.attention_mask))?;
    let (predicting, targets) = next_token_pairs(hidden, labels);
    let positions = targets.dims()[0];
    let mut sum = 0.0;
    for start in (0..positions).step_by(chunk) {
        let len = chunk.min(positions - start);
        let rows = predicting.clone().narrow(0, start, len);
        let nll = model.rows_nll_sum(rows, targets.clone().narrow(0, start, len));
        let nll: f64 = nll.into_scalar().elem();
        sum += nll;
    }
    Ok(sum)
}

/// The labels as a `[rows, seq]` tensor; rows of another length are [`Error::RaggedBatch`],
/// and fewer than two positions (nothing to predict) [`Error::LossShape`].
pub(crate) fn labels_tensor<B: Backend>(
    batch: &Batch,
    rows: usize,
    seq: usize,
    vocab: usize,
    device: &B::Device,
) -> Result<Tensor<B, 2, Int>> {
    if let Some(row) = batch.labels.iter().position(|l| l.len() != seq) {
        let len = batch.labels[row].len();
        return Err(Error::RaggedBatch {
            row,
            len,
            expected: seq,
        });
    }
    if seq < 2 {
        return Err(Error::LossShape {
            logits: [rows, seq, vocab],
            labels: [rows, seq],
        });
    }
    let flat: Vec<i64> = batch.labels.iter().flatten().copied().collect();
    Ok(Tensor::from_data(
        TensorData::new(flat, [rows, seq]),
        device,
    ))
}

#[cfg(all(test, feature = "flex"))]
mod tests {
    use burn::backend::Flex;

    use super::nll_sum;
    use crate::data::Batch;
    use crate::model::{IGNORE_INDEX, LlamaConfig};

    #[test]
    fn the_sum_over_chunks_does_not_depend_on_the_chunk() {
        let dir = concat!(
            env!("CARGO_MANIFEST_DIR"),
            "/tests/fixtures/models/llama_gqa"
        );
        let config = LlamaConfig::from_file(std::path::Path::new(dir)).unwrap();
        let model = config.init::<Flex>(&Default::default());
        let ids: Vec<Vec<u32>> = vec![(0..9).collect(), (9..18).collect()];
        let mut labels: Vec<Vec<i64>> = ids
            .iter()
            .map(|r| r.iter().map(|&i| i as i64).collect())
            .collect();
        labels[1][6..].fill(IGNORE_INDEX);
        let batch = Batch {
            attention_mask: vec![vec![1; 9]; 2],
            ids,
            labels,
        };
        let whole = nll_sum(&model, &batch, 1000).unwrap();
        for chunk in [1, 3, 7] {
            let chunked = nll_sum(&model, &batch, chunk).unwrap();
            assert!(
                (chunked - whole).abs() <= 1e-5 * whole.abs(),
                "{chunked} vs {whole}"
            );
        }
    }
}
