//! Data parallelism on Burn's collective (`burn::collective`, feature `data-parallel`): one
//! worker per device, each with a copy of the model (the same `ParamId`s), its share of every
//! batch, and the gradients averaged over the workers (an all-reduce) before the same
//! optimizer step, so the replicas stay equal.
//!
//! Give each worker its replica with `model.clone().fork(device)`, not a clone alone: a fork
//! has the same parameters and ids but autodiff nodes of its own, while clones share theirs,
//! and burn-autodiff 0.21 merges the workers' graphs through shared nodes (one worker's backward
//! pass then frees steps of another's; see tracel-ai/burn#5573).
//!
//! Across nodes, each node's workers join an [`Orchestrator`] ([`NodeLink::join_all`]) and
//! reduce with the other nodes after their node's all-reduce (see `nodes` for why this is
//! not burn-collective's global mode).
//!
//! Every wait on the other workers has a timeout: a worker that fails or dies makes the
//! others fail with [`Error::PeerTimeout`](crate::Error::PeerTimeout) instead of hanging
//! (burn-collective itself waits for ever).

mod layout;
mod nodes;
mod peer;
mod workers;

pub use layout::GradLayout;
pub use nodes::{Hello, NodeLink, Orchestrator};
pub use peer::Peer;
pub use workers::DataParallel;
