//! The worker threads of a data-parallel run, registered with burn-collective.

use std::panic::{AssertUnwindSafe, catch_unwind};
use std::time::Duration;

use burn::collective::{CollectiveConfig, finish_collective, register, reset_collective};
use burn::tensor::backend::AutodiffBackend;

use super::nodes::NodeLink;
use super::peer::Peer;
use crate::error::{Error, Result};

/// Runs one worker per device in this process, each on a thread of its own; in a
/// multi-node run, this node's workers.
///
/// burn-collective keeps one session per backend in a process: one run at a time.
#[derive(Debug)]
pub struct DataParallel {
    timeout: Duration,
    /// This node's rank and the number of nodes, with its workers' joined links.
    nodes: Option<(usize, usize, Vec<NodeLink>)>,
}

impl Default for DataParallel {
    /// Workers wait for each other up to [`DataParallel::DEFAULT_TIMEOUT`].
    fn default() -> Self {
        DataParallel {
            timeout: Self::DEFAULT_TIMEOUT,
            nodes: None,
        }
    }
}

impl DataParallel {
    /// How long a worker waits for the others by default: longer than a slow step on a CPU.
    pub const DEFAULT_TIMEOUT: Duration = Duration::from_secs(600);

    /// Workers that wait for each other up to [`DataParallel::DEFAULT_TIMEOUT`].
    pub fn new() -> Self {
        Self::default()
    }

    /// Workers that wait for each other up to `timeout` in any collective operation.
    pub fn with_timeout(mut self, timeout: Duration) -> Self {
        self.timeout = timeout;
        self
    }

    /// Makes this node `node_rank` of `num_nodes`: `links` are its workers' lines to the
    /// other nodes, one per device, as [`NodeLink::join_all`] made them.
    pub fn across_nodes(
        mut self,
        node_rank: usize,
        num_nodes: usize,
        links: Vec<NodeLink>,
    ) -> Self {
        self.nodes = Some((node_rank, num_nodes, links));
        self
    }

    /// Runs `work` once per device (the same device may be given more than once: workers
    /// on one CPU), each on its own thread with its [`Peer`], registered with burn-collective
    /// for the run. Returns the workers' results in rank order.
    ///
    /// A worker that fails ends the session at once, so that the others fail in their next
    /// collective operation instead of waiting for their timeout; the run's error is then
    /// the failed worker's own (the first by rank). A worker that panics fails with
    /// [`Error::WorkerPanicked`].
    pub fn run<B: AutodiffBackend, T: Send>(
        self,
        devices: &[B::Device],
        work: impl Fn(Peer, &B::Device) -> Result<T> + Sync,
    ) -> Result<Vec<T>> {
        if devices.is_empty() {
            return Err(Error::InvalidSetting {
                name: "devices",
                value: "0".into(),
                expected: "at least one worker",
            });
        }
        let count = devices.len();
        let config = CollectiveConfig::default().with_num_devices(count);
        let (node, links) = match self.nodes {
            Some((rank, nodes, links)) if links.len() == count => {
                ((rank, nodes), links.into_iter().map(Some).collect())
            }
            Some(_) => {
                return Err(Error::InvalidSetting {
                    name: "devices",
                    value: count.to_string(),
                    expected: "one joined link per device",
                });
            }
            None => ((0, 1), (0..count).map(|_| None).collect::<Vec<_>>()),
        };
        let timeout = self.timeout;
        let results: Vec<Result<T>> = std::thread::scope(|scope| {
            let workers: Vec<_> = devices
                .iter()
                .zip(links)
                .enumerate()
                .map(|(local_rank, (device, link))| {
                    let peer = Peer::new(node, (local_rank, count), timeout, link);
                    let (config, work) = (config.clone(), &work);
                    scope.spawn(move || worker::<B, T>(peer, device, config, work))
                })
                .collect();
            workers
                .into_iter()
                .enumerate()
                .map(|(local, worker)| {
                    let rank = node.0 * count + local;
                    worker.join().unwrap_or(Err(Error::WorkerPanicked { rank }))
                })
                .collect()
        });
        if results.iter().any(Result::is_err) {
            // Forget the failed session, so that a later run in this process starts clean.
            reset_collective::<B::InnerBackend>();
            return Err(cause(results));
        }
        results.into_iter().collect()
    }
}

fn worker<B: AutodiffBackend, T>(
    peer: Peer,
    device: &B::Device,
    config: CollectiveConfig,
    work: &(impl Fn(Peer, &B::Device) -> Result<T> + Sync),
) -> Result<T> {
    let id = peer.id();
    let registered = device.clone();
    peer.within_timeout("registering with the other workers", move || {
        register::<B::InnerBackend>(id, registered, config)
    })?;
    let result = catch_unwind(AssertUnwindSafe(|| work(peer.clone(), device)))
        .unwrap_or(Err(Error::WorkerPanicked { rank: peer.rank }));
    match &result {
        Ok(_) => {
            peer.leave();
            peer.within_timeout("leaving the collective", move || {
                finish_collective::<B::InnerBackend>(id)
            })?
        }
        // The session ends here: the workers waiting on this one get an error now instead of
        // at their timeout.
        Err(_) => reset_collective::<B::InnerBackend>(),
    }
    result
}

/// The error that explains a failed run: the first worker's own error (one that is not a
/// collective operation failing or waiting), as the others fail in their collective
/// operations because of it; else the first collective failure, else the first timeout.
fn cause<T>(results: Vec<Result<T>>) -> Error {
    let rank = |error: &Error| match error {
        Error::PeerTimeout { .. } => 2,
        Error::Collective { .. } => 1,
        _ => 0,
    };
    results
        .into_iter()
        .filter_map(Result::err)
        .min_by_key(rank)
        .expect("a failed run has an error")
}
