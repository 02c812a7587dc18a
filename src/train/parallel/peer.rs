//! One worker's place in the collective, and its collective operations with a timeout.

use std::sync::{Arc, Mutex, mpsc};
use std::time::Duration;

use burn::collective::{CollectiveError, PeerId, ReduceOperation, all_reduce};
use burn::optim::GradientsParams;
use burn::tensor::backend::{AutodiffBackend, Backend};
use burn::tensor::{Tensor, TensorPrimitive};

use super::layout::GradLayout;
use super::nodes::NodeLink;
use crate::data::share_range;
use crate::error::{Error, Result};

/// A worker of a [`DataParallel`](super::DataParallel) run: its rank, the number of workers,
/// and how long it waits for the others at most. Across nodes, the rank and the count are
/// the run's (node after node); the worker reduces with its node's other devices through
/// burn-collective, then with the other nodes through the orchestrator.
#[derive(Clone, Debug)]
pub struct Peer {
    /// This worker in the run, from 0.
    pub rank: usize,
    /// Workers in the run.
    pub world: usize,
    /// The longest a collective operation waits for the other workers.
    pub timeout: Duration,
    /// This worker on its node, from 0.
    local_rank: usize,
    /// The line to the other nodes, in a multi-node run.
    link: Option<Arc<Mutex<NodeLink>>>,
}

impl Peer {
    /// Worker `local_rank` of `devices` on node `node_rank` of `num_nodes`, reducing with
    /// the other nodes through `link` (when there are other nodes).
    pub(super) fn new(
        (node_rank, num_nodes): (usize, usize),
        (local_rank, devices): (usize, usize),
        timeout: Duration,
        link: Option<NodeLink>,
    ) -> Self {
        Peer {
            rank: node_rank * devices + local_rank,
            world: num_nodes * devices,
            timeout,
            local_rank,
            link: link.map(|link| Arc::new(Mutex::new(link))),
        }
    }

    /// This worker on its node, from 0.
    pub fn local_rank(&self) -> usize {
        self.local_rank
    }

    /// This worker's id in burn-collective (which sees the workers of its node).
    pub fn id(&self) -> PeerId {
        PeerId::from(self.local_rank)
    }

    /// This worker's share of `items`: the `rank`-th of `world` contiguous parts, the first
    /// `items.len() % world` of them one longer.
    pub fn share<'a, T>(&self, items: &'a [T]) -> &'a [T] {
        &items[share_range(items.len(), self.rank, self.world)]
    }

    /// The mean over the workers of each parameter's gradient: every worker gets the same
    /// tensors back. Every worker must pass gradients for the same parameters, those of
    /// `layout` (the order they travel in between nodes), and `device` is where the mean
    /// from other nodes lands.
    pub fn mean_grads<B: AutodiffBackend>(
        &self,
        grads: GradientsParams,
        layout: &GradLayout,
        device: &B::Device,
    ) -> Result<GradientsParams> {
        let id = self.id();
        let what = "the gradients' all-reduce";
        let mut local = self.within_timeout(what, move || {
            grads.all_reduce::<B::InnerBackend>(id, ReduceOperation::Mean)
        })?;
        if self.link.is_none() {
            return Ok(local);
        }
        // One worker per node speaks for it: after the all-reduce, its node's workers hold
        // the same mean.
        let values = match self.local_rank {
            0 => Some(layout.flatten::<B::InnerBackend>(&mut local)?),
            _ => None,
        };
        drop(local);
        let mean = self.across_nodes(what, values)?;
        Ok(layout.restore::<B::InnerBackend>(&mean, device))
    }

    /// The mean of `value` over the workers (for reports: in f32).
    pub fn mean_value<B: Backend>(&self, value: f64, device: &B::Device) -> Result<f64> {
        Ok(self.mean_values::<B>(&[value], device)?[0])
    }

    /// The mean of each of `values` over the workers, in one all-reduce (for reports: in
    /// f32). Every worker passes as many values.
    pub fn mean_values<B: Backend>(&self, values: &[f64], device: &B::Device) -> Result<Vec<f64>> {
        let id = self.id();
        let what = "the reported values' all-reduce";
        let values: Vec<f32> = values.iter().map(|&v| v as f32).collect();
        let tensor = Tensor::<B, 1>::from_floats(values.as_slice(), device);
        let primitive = tensor.into_primitive().tensor();
        let mean = self.within_timeout(what, move || {
            all_reduce::<B>(id, primitive, ReduceOperation::Mean)
        })?;
        let mean = Tensor::<B, 1>::from_primitive(TensorPrimitive::Float(mean));
        let mean = mean.into_data().convert::<f32>();
        let mut mean = mean.to_vec::<f32>().expect("converted to f32");
        if self.link.is_some() {
            mean = self.across_nodes(what, (self.local_rank == 0).then_some(mean))?;
        }
        Ok(mean.into_iter().map(f64::from).collect())
    }

    /// The mean over the nodes of one vector per node (`values` from local rank 0).
    fn across_nodes(&self, what: &'static str, values: Option<Vec<f32>>) -> Result<Vec<f32>> {
        let link = self.link.as_ref().expect("a multi-node worker");
        let mut link = link
            .lock()
            .map_err(|_| Error::WorkerPanicked { rank: self.rank })?;
        link.mean(what, values.as_deref())
    }

    /// Tells the other nodes this worker is done (a multi-node run; nothing otherwise).
    pub(super) fn leave(&self) {
        if let Some(link) = &self.link
            && let Ok(mut link) = link.lock()
        {
            link.leave();
        }
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
                let peer = Peer::new((0, 1), (rank, world), Duration::from_secs(1), None);
                joined.extend_from_slice(peer.share(&items));
            }
            assert_eq!(joined, items, "{world} workers");
        }
    }
}
