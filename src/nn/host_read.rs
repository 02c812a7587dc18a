//! Reading device values back to the host, the one way the training step does it: a GPU
//! finishes all queued work before each read, so the step reads as little as it can (its
//! loss, and its gradient norm where that is summed on the device), and counts the reads so
//! that tests hold it to that.

use std::cell::Cell;

use burn::tensor::{ElementConversion, Tensor, backend::Backend};

thread_local! {
    /// Reads made on this thread (the step runs on its caller's thread).
    static READS: Cell<usize> = const { Cell::new(0) };
}

/// The single value of `tensor` (one element, any rank), as f64.
pub(crate) fn read_scalar<B: Backend, const D: usize>(tensor: Tensor<B, D>) -> f64 {
    READS.with(|reads| reads.set(reads.get() + 1));
    tensor.into_scalar().elem()
}

/// How many values this thread has read back from a device through the training step's
/// reads so far (the loss of each micro-batch, the gradient norm where the backend sums it on
/// the device, a layer seed per step under gradient checkpointing).
pub fn host_reads() -> usize {
    READS.with(Cell::get)
}
