//! Instruction data for fine-tuning: Alpaca records, the Alpaca prompt template, token ids
//! with the prompt masked out of the loss, a held-out split, and padded, seeded batches.

mod alpaca;
mod batch;
mod encode;
mod prompt;

pub use alpaca::{AlpacaData, AlpacaRecord, parse_alpaca, read_alpaca};
pub use batch::{Batch, Batches, DataPosition, share_range};
pub use encode::{EncodeOptions, Encoded, Example, encode_record};
pub use prompt::alpaca_prompt;

use rand::SeedableRng;
use rand::rngs::StdRng;
use rand::seq::SliceRandom;

use crate::error::Result;
use crate::model::Tokenizer;

/// Training and held-out examples, and an account of the records that did not make it.
#[derive(Clone, Debug)]
pub struct PreparedData {
    /// Examples to train on, shuffled.
    pub train: Vec<Example>,
    /// Held-out examples.
    pub eval: Vec<Example>,
    /// Records whose prompt alone filled `max_len` (dropped).
    pub too_long: usize,
    /// Records cut to `max_len` (kept).
    pub truncated: usize,
    /// Entries of the file that were not usable records (index, reason).
    pub skipped: Vec<(usize, String)>,
}

/// Encodes every record, shuffles them with `seed`, and holds out `eval_records` of them.
pub fn prepare(
    data: &AlpacaData,
    tokenizer: &Tokenizer,
    eos_id: u32,
    options: &EncodeOptions,
    eval_records: usize,
    seed: u64,
) -> Result<PreparedData> {
    let mut examples = Vec::with_capacity(data.records.len());
    let (mut too_long, mut truncated) = (0, 0);
    for record in &data.records {
        match encode_record(tokenizer, record, eos_id, options)? {
            Encoded::Whole(example) => examples.push(example),
            Encoded::Truncated(example) => {
                truncated += 1;
                examples.push(example);
            }
            Encoded::TooLong => too_long += 1,
        }
    }
    examples.shuffle(&mut StdRng::seed_from_u64(seed));
    let eval = examples.split_off(examples.len() - eval_records.min(examples.len()));
    Ok(PreparedData {
        train: examples,
        eval,
        too_long,
        truncated,
        skipped: data.skipped.clone(),
    })
}
