//! Plain `f32` slices in and out of the CPU backend's tensors, for the fused ops' CPU kernels.
//!
//! burn-flex runs elementwise ops on one core, one pass per op. Our fused ops read their inputs
//! as slices (no copy when contiguous), make one pass over rows in parallel (rayon), and hand
//! the new `Vec<f32>` to a tensor without copying it.

use burn::backend::Flex;
use burn::tensor::{Bool, Tensor, TensorData, TensorPrimitive};
use burn_flex::FlexTensor;

/// The tensor's storage in row-major order: itself when contiguous, a contiguous copy otherwise.
pub(crate) fn contiguous(tensor: FlexTensor) -> FlexTensor {
    if tensor.as_slice::<f32>().is_some() {
        tensor
    } else {
        tensor.to_contiguous()
    }
}

/// A contiguous tensor whose storage is exactly its values, so that it can be written in
/// place (copy-on-write if shared); copied when its storage is a larger buffer or a view.
pub(crate) fn writable(tensor: FlexTensor) -> FlexTensor {
    let count = tensor.layout().num_elements();
    let exact = tensor.layout().contiguous_offsets() == Some((0, count))
        && tensor.bytes().len() == count * 4;
    if exact {
        tensor
    } else {
        contiguous(tensor.to_contiguous())
    }
}

/// A float tensor's primitive, contiguous.
pub(crate) fn primitive<const D: usize>(tensor: Tensor<Flex, D>) -> FlexTensor {
    contiguous(tensor.into_primitive().tensor())
}

/// The values of a contiguous `f32` tensor.
pub(crate) fn values(tensor: &FlexTensor) -> &[f32] {
    tensor
        .as_slice::<f32>()
        .expect("a contiguous f32 tensor (from `contiguous`)")
}

/// A tensor over `values`, without a copy.
pub(crate) fn from_values(values: Vec<f32>, shape: Vec<usize>) -> FlexTensor {
    FlexTensor::from_data(TensorData::new(values, shape))
}

/// A float tensor over `values`, without a copy.
pub(crate) fn tensor<const D: usize>(values: Vec<f32>, shape: [usize; D]) -> Tensor<Flex, D> {
    let primitive = from_values(values, shape.to_vec());
    Tensor::from_primitive(TensorPrimitive::Float(primitive))
}

/// A bool tensor's primitive, contiguous from its first byte (one byte per value).
pub(crate) fn bool_primitive<const D: usize>(mask: Tensor<Flex, D, Bool>) -> FlexTensor {
    let mask = mask.into_primitive();
    let count = mask.layout().num_elements();
    if mask.layout().contiguous_offsets() == Some((0, count)) {
        mask
    } else {
        mask.to_contiguous()
    }
}

/// A bool tensor's values (from [`bool_primitive`]): non-zero bytes are `true`.
pub(crate) fn bool_bytes(mask: &FlexTensor) -> &[u8] {
    &mask.bytes()[..mask.layout().num_elements()]
}

/// The one value of a `[1]` gradient.
pub(crate) fn scalar(tensor: FlexTensor) -> f32 {
    values(&contiguous(tensor))[0]
}
