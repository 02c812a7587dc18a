//! Padded batches and a seeded, resumable order over the examples.

use rand::SeedableRng;
use rand::rngs::StdRng;
use rand::seq::SliceRandom;

use super::encode::Example;
use crate::error::{Error, Result};
use crate::model::IGNORE_INDEX;

/// Right-padded sequences of equal length.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Batch {
    /// `[batch, seq]`
    pub ids: Vec<Vec<u32>>,
    /// `[batch, seq]`: 1 for a token, 0 for padding.
    pub attention_mask: Vec<Vec<u32>>,
    /// `[batch, seq]`: [`IGNORE_INDEX`] on padding and masked prompt tokens.
    pub labels: Vec<Vec<i64>>,
}

impl Batch {
    /// Pads `examples` on the right to the longest one with `pad_id`.
    pub fn collate(examples: &[&Example], pad_id: u32) -> Self {
        let seq = examples.iter().map(|e| e.ids.len()).max().unwrap_or(0);
        let mut batch = Batch {
            ids: Vec::with_capacity(examples.len()),
            attention_mask: Vec::with_capacity(examples.len()),
            labels: Vec::with_capacity(examples.len()),
        };
        for example in examples {
            let pad = seq - example.ids.len();
            let mut ids = example.ids.clone();
            ids.resize(seq, pad_id);
            let mut mask = vec![1; example.ids.len()];
            mask.resize(seq, 0);
            let mut labels = example.labels.clone();
            labels.extend(std::iter::repeat_n(IGNORE_INDEX, pad));
            batch.ids.push(ids);
            batch.attention_mask.push(mask);
            batch.labels.push(labels);
        }
        batch
    }

    /// Worker `rank`'s part of the rows, of `world` workers: contiguous parts, the first
    /// `rows % world` one row longer, cut to their own longest row. `None` when there are
    /// fewer rows than workers and this worker gets none.
    pub fn share(&self, rank: usize, world: usize) -> Option<Batch> {
        let range = share_range(self.ids.len(), rank, world);
        if range.is_empty() {
            return None;
        }
        // Rows missing or of other lengths stay so: the loss then refuses the ragged batch.
        let rows = |all: &[Vec<u32>]| all.get(range.clone()).unwrap_or_default().to_vec();
        let attention_mask = rows(&self.attention_mask);
        let seq = attention_mask
            .iter()
            .map(|mask| {
                mask.iter()
                    .rposition(|&m| m != 0)
                    .map_or(0, |last| last + 1)
            })
            .max()
            .unwrap_or(0);
        Some(Batch {
            ids: cut_to(rows(&self.ids), seq),
            attention_mask: cut_to(attention_mask, seq),
            labels: cut_to(
                self.labels.get(range.clone()).unwrap_or_default().to_vec(),
                seq,
            ),
        })
    }

    /// Tokens the loss is computed on: labels after the first position that are not ignored
    /// (the first position predicts nothing).
    pub fn target_tokens(&self) -> usize {
        self.labels
            .iter()
            .map(|row| row.iter().skip(1).filter(|&&l| l != IGNORE_INDEX).count())
            .sum()
    }
}

/// Each row cut to at most `len` items.
fn cut_to<T>(mut rows: Vec<Vec<T>>, len: usize) -> Vec<Vec<T>> {
    for row in &mut rows {
        row.truncate(len);
    }
    rows
}

/// Worker `rank`'s part of `len` items shared by `world` workers: contiguous parts in rank
/// order, the first `len % world` of them one item longer (empty when `rank` gets none).
pub fn share_range(len: usize, rank: usize, world: usize) -> std::ops::Range<usize> {
    let world = world.max(1);
    let (base, extra) = (len / world, len % world);
    let start = (rank * base + rank.min(extra)).min(len);
    let end = (start + base + usize::from(rank < extra)).min(len);
    start..end
}

/// Where a [`Batches`] stands: enough to resume at the same batch.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Default, serde::Serialize, serde::Deserialize)]
pub struct DataPosition {
    /// Epochs completed.
    pub epoch: u64,
    /// Examples already handed out in this epoch.
    pub offset: usize,
}

/// An endless stream of batches: each epoch visits every example once, in an order shuffled
/// by `(seed, epoch)`, so the stream is the same on every run and can resume anywhere.
#[derive(Clone)]
pub struct Batches<'a> {
    examples: &'a [Example],
    batch_size: usize,
    pad_id: u32,
    seed: u64,
    order: Vec<usize>,
    position: DataPosition,
}

impl<'a> Batches<'a> {
    /// Batches of `batch_size` (the last of an epoch may be smaller).
    pub fn new(examples: &'a [Example], batch_size: usize, pad_id: u32, seed: u64) -> Result<Self> {
        if examples.is_empty() || batch_size == 0 {
            return Err(Error::InvalidSetting {
                name: "batches",
                value: format!("of {batch_size} from {} examples", examples.len()),
                expected: "need examples and a positive batch size",
            });
        }
        let mut batches = Batches {
            examples,
            batch_size,
            pad_id,
            seed,
            order: Vec::new(),
            position: DataPosition::default(),
        };
        batches.shuffle();
        Ok(batches)
    }

    /// Continues from a saved position.
    pub fn resume(mut self, position: DataPosition) -> Self {
        self.position = position;
        self.shuffle();
        self
    }

    /// Where the stream is: resume a new stream here to continue it.
    pub fn data_position(&self) -> DataPosition {
        self.position
    }

    /// Epochs handed out completely: the last batch of an epoch completes it.
    pub fn completed_epochs(&self) -> u64 {
        self.position.epoch + u64::from(self.position.offset >= self.order.len())
    }

    /// The order in which epoch `epoch` of a stream seeded with `seed` visits `len` examples.
    pub fn epoch_order(len: usize, seed: u64, epoch: u64) -> Vec<usize> {
        let mut order: Vec<usize> = (0..len).collect();
        // Distinct, reproducible streams per epoch.
        let mut rng = StdRng::seed_from_u64(seed ^ epoch.wrapping_mul(0x9E37_79B9_7F4A_7C15));
        order.shuffle(&mut rng);
        order
    }

    fn shuffle(&mut self) {
        self.order = Self::epoch_order(self.examples.len(), self.seed, self.position.epoch);
    }
}

impl Iterator for Batches<'_> {
    type Item = Batch;

    fn next(&mut self) -> Option<Batch> {
        if self.position.offset >= self.order.len() {
            self.position = DataPosition {
                epoch: self.position.epoch + 1,
                offset: 0,
            };
            self.shuffle();
        }
        let start = self.position.offset;
        let end = (start + self.batch_size).min(self.order.len());
        let picked: Vec<&Example> = self.order[start..end]
            .iter()
            .map(|&i| &self.examples[i])
            .collect();
        self.position.offset = end;
        Some(Batch::collate(&picked, self.pad_id))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn example(len: usize, first: u32) -> Example {
        Example {
            ids: (first..first + len as u32).collect(),
            labels: (0..len)
                .map(|i| if i < 2 { IGNORE_INDEX } else { i as i64 })
                .collect(),
        }
    }

    #[test]
    fn shares_split_the_rows_and_drop_their_padding() {
        let (a, b, c) = (example(4, 10), example(2, 20), example(3, 30));
        let batch = Batch::collate(&[&a, &b, &c], 0);
        let first = batch.share(0, 2).unwrap();
        let second = batch.share(1, 2).unwrap();
        assert_eq!(first.ids, vec![vec![10, 11, 12, 13], vec![20, 21, 0, 0]]);
        assert_eq!(second.ids, vec![vec![30, 31, 32]]);
        assert_eq!(second.labels, vec![c.labels.clone()]);
        assert_eq!(second.attention_mask, vec![vec![1, 1, 1]]);
        assert_eq!(
            first.target_tokens() + second.target_tokens(),
            batch.target_tokens()
        );
        assert!(Batch::collate(&[&a], 0).share(1, 2).is_none());
        // A ragged batch is shared as it is (the loss refuses it), not a panic.
        let mut ragged = batch.clone();
        ragged.labels[0].truncate(1);
        assert_eq!(ragged.share(0, 2).unwrap().labels[0].len(), 1);
    }

    #[test]
    fn collate_pads_right_and_masks() {
        let (a, b) = (example(4, 10), example(2, 20));
        let batch = Batch::collate(&[&a, &b], 0);
        assert_eq!(batch.ids, vec![vec![10, 11, 12, 13], vec![20, 21, 0, 0]]);
        assert_eq!(
            batch.attention_mask,
            vec![vec![1, 1, 1, 1], vec![1, 1, 0, 0]]
        );
        assert_eq!(batch.labels[1], vec![IGNORE_INDEX; 4]);
        assert_eq!(batch.target_tokens(), 2);
    }

    #[test]
    fn epochs_cover_everything_and_resume_exactly() {
        let examples: Vec<Example> = (0..7).map(|i| example(3, 10 * i)).collect();
        let straight: Vec<Batch> = Batches::new(&examples, 3, 0, 5).unwrap().take(7).collect();
        // One epoch: 3 + 3 + 1 examples, each once.
        let mut firsts: Vec<u32> = straight[..3]
            .iter()
            .flat_map(|b| b.ids.iter().map(|r| r[0]))
            .collect();
        firsts.sort();
        assert_eq!(firsts, (0..7).map(|i| 10 * i).collect::<Vec<_>>());
        // The next epoch is shuffled differently.
        assert_ne!(straight[0].ids, straight[3].ids);

        let mut first_part = Batches::new(&examples, 3, 0, 5).unwrap();
        let _ = first_part.by_ref().take(4).count();
        let resumed: Vec<Batch> = Batches::new(&examples, 3, 0, 5)
            .unwrap()
            .resume(first_part.data_position())
            .take(3)
            .collect();
        assert_eq!(resumed, straight[4..]);
    }
}
