//! Our padded, seeded batches as a burn-train data loader.

use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};

use burn::data::dataloader::{DataLoader, DataLoaderIterator, Progress};
use burn::tensor::backend::Backend;

use crate::data::{Batch, Batches, Example};
use crate::error::Result;

/// Batches of examples for burn-train, one epoch per `iter()`: epoch `e` visits the examples
/// in the order [`Batches`] gives its epoch `e` (seeded by `(seed, e)`), so a Learner sees the
/// batches our own loop sees. Batches stay on the host; the step builds its tensors on the
/// model's device.
#[derive(Clone)]
pub struct BatchLoader {
    examples: Arc<Vec<Example>>,
    batch_size: usize,
    pad_id: u32,
    seed: u64,
    shuffled: bool,
    /// Epochs handed out so far, from `first_epoch`.
    epochs: Arc<AtomicU64>,
    first_epoch: u64,
}

impl BatchLoader {
    /// Shuffled batches of `batch_size` (the last of an epoch may be smaller), padded with
    /// `pad_id`. No examples or a batch size of 0 is [`Error::InvalidSetting`](crate::Error).
    pub fn new(examples: Vec<Example>, batch_size: usize, pad_id: u32, seed: u64) -> Result<Self> {
        Batches::new(&examples, batch_size, pad_id, seed)?;
        Ok(BatchLoader {
            examples: Arc::new(examples),
            batch_size,
            pad_id,
            seed,
            shuffled: true,
            epochs: Arc::new(AtomicU64::new(0)),
            first_epoch: 0,
        })
    }

    /// The examples in their given order every epoch (for validation).
    pub fn in_order(mut self) -> Self {
        self.shuffled = false;
        self
    }

    /// Starts at epoch `epoch` (counted from 0): to resume burn-train from the checkpoint of
    /// epoch `epoch` (counted from 1), with the order the uninterrupted run would have.
    pub fn from_epoch(mut self, epoch: u64) -> Self {
        self.first_epoch = epoch;
        self.epochs = Arc::new(AtomicU64::new(0));
        self
    }

    /// Batches per epoch.
    pub fn num_batches(&self) -> usize {
        self.examples.len().div_ceil(self.batch_size)
    }

    fn epoch_batches(&self, epoch: u64) -> Vec<Vec<usize>> {
        let mut order: Vec<usize> = (0..self.examples.len()).collect();
        if self.shuffled {
            order = Batches::epoch_order(self.examples.len(), self.seed, epoch);
        }
        order
            .chunks(self.batch_size)
            .map(<[usize]>::to_vec)
            .collect()
    }
}

struct EpochIter<'a> {
    loader: &'a BatchLoader,
    batches: std::vec::IntoIter<Vec<usize>>,
    processed: usize,
}

impl Iterator for EpochIter<'_> {
    type Item = Batch;

    fn next(&mut self) -> Option<Batch> {
        let picked = self.batches.next()?;
        self.processed += picked.len();
        let examples: Vec<&Example> = picked.iter().map(|&i| &self.loader.examples[i]).collect();
        Some(Batch::collate(&examples, self.loader.pad_id))
    }
}

impl DataLoaderIterator<Batch> for EpochIter<'_> {
    fn progress(&self) -> Progress {
        Progress::new(self.processed, self.loader.examples.len())
    }
}

impl<B: Backend> DataLoader<B, Batch> for BatchLoader {
    fn iter<'a>(&'a self) -> Box<dyn DataLoaderIterator<Batch> + 'a> {
        let epoch = self.first_epoch + self.epochs.fetch_add(1, Ordering::Relaxed);
        Box::new(EpochIter {
            loader: self,
            batches: self.epoch_batches(epoch).into_iter(),
            processed: 0,
        })
    }

    fn num_items(&self) -> usize {
        self.examples.len()
    }

    fn to_device(&self, _device: &B::Device) -> Arc<dyn DataLoader<B, Batch>> {
        Arc::new(self.clone())
    }

    fn slice(&self, start: usize, end: usize) -> Arc<dyn DataLoader<B, Batch>> {
        let end = end.min(self.examples.len());
        let mut slice = self.clone();
        slice.examples = Arc::new(self.examples[start.min(end)..end].to_vec());
        slice.epochs = Arc::new(AtomicU64::new(0));
        Arc::new(slice)
    }
}

#[cfg(all(test, feature = "flex"))]
mod tests {
    use burn::backend::Flex;

    use super::*;
    use crate::data::DataPosition;
    use crate::model::IGNORE_INDEX;

    fn examples(n: u32) -> Vec<Example> {
        (0..n)
            .map(|i| Example {
                ids: vec![i, i + 1, i + 2],
                labels: vec![IGNORE_INDEX, i as i64 + 1, i as i64 + 2],
            })
            .collect()
    }

    #[test]
    fn each_epoch_gives_the_batches_of_our_own_stream() {
        let loader = BatchLoader::new(examples(7), 3, 0, 11).unwrap();
        let mut stream = Batches::new(&loader.examples, 3, 0, 11).unwrap();
        for _ in 0..3 {
            let epoch: Vec<Batch> = DataLoader::<Flex, Batch>::iter(&loader).collect();
            assert_eq!(epoch.len(), loader.num_batches());
            let expected: Vec<Batch> = stream.by_ref().take(epoch.len()).collect();
            assert_eq!(epoch, expected);
        }
        let resumed = loader.clone().from_epoch(2);
        let third: Vec<Batch> = DataLoader::<Flex, Batch>::iter(&resumed).collect();
        let mut stream = Batches::new(&loader.examples, 3, 0, 11)
            .unwrap()
            .resume(DataPosition {
                epoch: 2,
                offset: 0,
            });
        let expected: Vec<Batch> = stream.by_ref().take(third.len()).collect();
        assert_eq!(third, expected);
    }
}
