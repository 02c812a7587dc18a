//! One worker's place in the collective, and its collective operations with a timeout.

use std::sync::mpsc;
use std::time::Duration;

use burn::collective::{CollectiveError, PeerId, ReduceOperation, all_reduce};
use burn::optim::GradientsParams;
use burn::tensor::backend::{AutodiffBackend, Backend};
use burn::tensor::{Tensor, TensorPrimitive};

use crate::data::share_range;
use crate::error::{Error, Result};

/// A worker of a [`DataParallel`](super::DataParallel) run: its rank, the number of workers,
/// and how long it waits for the others at most.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Peer {
    /// This worker, from 0.
    pub rank: usize,
    /// Workers in the run.
    pub world: usize,
    /// The longest a collective operation waits for the other workers.
    pub timeout: Duration,
}

impl Peer {
    /// This worker's id in burn-collective.
    pub fn id(&self) -> PeerId {
        PeerId::from(self.rank)
    }

    /// This worker's share of `items`: the `rank`-th of `world` contiguous parts, the first
    /// `items.len() % world` of them one longer.
    pub fn share<'a, T>(&self, items: &'a [T]) -> &'a [T] {
        &items[share_range(items.len(), self.rank, self.world)]
    }

    /// The mean over the workers of each parameter's gradient: every worker gets the same
    /// tensors back. Every worker must pass gradients for the same parameters.
    pub fn mean_grads<B: AutodiffBackend>(
        &self,
        grads: GradientsParams,
    ) -> Result<GradientsParams> {
        let id = self.id();
        self.within_timeout("the gradients' all-reduce", move || {
            grads.all_reduce::<B::InnerBackend>(id, ReduceOperation::Mean)
        })
    }

    /// The mean of `value` over the workers (for reports: in f32).
    pub fn mean_value<B: Backend>(&self, value: f64, device: &B::Device) -> Result<f64> {
        Ok(self.mean_values::<B>(&[value], device)?[0])
    }

    /// The mean of each of `values` over the workers, in one all-reduce (for reports: in
    /// f32). Every worker passes as many values.
    pub fn mean_values<B: Backend>(&self, values: &[f64], device: &B::Device) -> Result<Vec<f64>> {
        let id = self.id();
        let values: Vec<f32> = values.iter().map(|&v| v as f32).collect();
        let tensor = Tensor::<B, 1>::from_floats(values.as_slice(), device);
        let primitive = tensor.into_primitive().tensor();
        let mean = self.within_timeout("the reported values' all-reduce", move || {
            all_reduce::<B>(id, primitive, ReduceOperation::Mean)
        })?;
        let mean = Tensor::<B, 1>::from_primitive(TensorPrimitive::Float(mean));
        let mean = mean.into_data().convert::<f64>();
        Ok(mean.to_vec::<f64>().expect("converted to f64"))
    }

    /// Runs a blocking collective operation on a thread of its own and waits for it at most
    /// `timeout`: burn-collective has no timeout, and a peer that is gone would block it for
    /// ever (the thread is then left blocked; the run fails).
    pub(crate) fn within_timeout<T: Send + 'static>(
        &self,
        what: &'static str,
        operation: impl FnOnce() -> std::result::Result<T, CollectiveError> + Send + 'static,
    ) -> Result<T> {
        let (sender, receiver) = mpsc::channel();
        std::thread::spawn(move || {
            let _ = sender.send(operation());
        });
        match receiver.recv_timeout(self.timeout) {
            Ok(Ok(value)) => Ok(value),
            Ok(Err(error)) => Err(Error::Collective {
                what,
                reason: format!("{error:?}"),
            }),
            Err(_) => Err(Error::PeerTimeout {
                what,
                rank: self.rank,
                seconds: self.timeout.as_secs_f64(),
            }),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn shares_cover_the_items_once_in_order() {
        let items: Vec<usize> = (0..11).collect();
        for world in 1..5 {
            let mut joined = Vec::new();
            for rank in 0..world {
                let peer = Peer {
                    rank,
                    world,
                    timeout: Duration::from_secs(1),
                };
                joined.extend_from_slice(peer.share(&items));
            }
            assert_eq!(joined, items, "{world} workers");
        }
    }
}
