//! Records to training examples: prompt + response token ids, labels masked on the prompt.

use super::alpaca::AlpacaRecord;
use super::prompt::alpaca_prompt;
use crate::error::Result;
use crate::model::{IGNORE_INDEX, Tokenizer};

/// How records become token sequences.
#[derive(Clone, Debug)]
pub struct EncodeOptions {
    /// Longest sequence in tokens, EOS included; longer ones are cut at the end.
    pub max_len: usize,
    /// Compute the loss on the prompt too (by default only on the response).
    pub train_on_prompt: bool,
}

impl Default for EncodeOptions {
    fn default() -> Self {
        EncodeOptions {
            max_len: 512,
            train_on_prompt: false,
        }
    }
}

/// One training sequence.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Example {
    /// `[seq]` token ids: prompt, response, EOS.
    pub ids: Vec<u32>,
    /// `[seq]` the ids where the loss counts, [`IGNORE_INDEX`] elsewhere.
    pub labels: Vec<i64>,
}

/// What happened to a record.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Encoded {
    /// The record fits.
    Whole(Example),
    /// Cut to `max_len`; some response tokens remain.
    Truncated(Example),
    /// The prompt alone fills `max_len`: nothing would be learned from it.
    TooLong,
}

/// Tokenizes `prompt(record)` (with the tokenizer's special tokens, e.g. a BOS) and
/// `output` + EOS, and masks the prompt's labels unless `train_on_prompt`.
///
/// The two parts are tokenized apart so that the boundary is exact; the template ends in a
/// newline, which byte-level BPE never merges with the next word.
pub fn encode_record(
    tokenizer: &Tokenizer,
    record: &AlpacaRecord,
    eos_id: u32,
    options: &EncodeOptions,
) -> Result<Encoded> {
    let prompt = tokenizer.encode(&alpaca_prompt(record), true)?;
    let mut response = tokenizer.encode(&record.output, false)?;
    response.push(eos_id);
    if prompt.len() >= options.max_len {
        return Ok(Encoded::TooLong);
    }
    let prompt_label = |id: u32| {
        if options.train_on_prompt {
            id as i64
        } else {
            IGNORE_INDEX
        }
    };
    let mut labels: Vec<i64> = prompt.iter().map(|&id| prompt_label(id)).collect();
    labels.extend(response.iter().map(|&id| id as i64));
    let mut ids = prompt;
    ids.extend(response);
    if ids.len() <= options.max_len {
        return Ok(Encoded::Whole(Example { ids, labels }));
    }
    ids.truncate(options.max_len);
    labels.truncate(options.max_len);
    Ok(Encoded::Truncated(Example { ids, labels }))
}
