//! `x @ dequant(W_nf4)` whose backward pass dequantizes the weight again instead of keeping it,
//! as bitsandbytes' 4-bit matmul does.
//!
//! Burn's autodiff matmul keeps its right operand for the backward pass, so the plain route
//! (dequantize, then `linear`) holds every dequantized f32 weight of the model from forward to
//! backward: a QLoRA step would then need the memory of the f32 model it quantized away. The
//! operation here registers one backward step whose state is the NF4 weight itself (a few
//! shared handles to the packed codes), and whose backward computes `grad @ dequant(W)^T` only:
//! the base is frozen, so no gradient is formed for it.
//!
//! The operation is an `Autodiff<I>` op, reached as [`super::autodiff_route`] says, for the
//! inner backends this crate builds (flex, wgpu, cuda). On any other backend the plain route
//! runs: the same numbers, more memory.

use std::any::Any;

use burn::backend::Autodiff;
use burn::backend::autodiff::checkpoint::base::Checkpointer;
use burn::backend::autodiff::checkpoint::strategy::NoCheckpointing;
use burn::backend::autodiff::grads::Gradients;
use burn::backend::autodiff::ops::{Backward, Ops, OpsKind, unary};
use burn::module::AutodiffModule;
use burn::tensor::{Tensor, TensorPrimitive, backend::Backend, module::linear};

use super::autodiff_route::{is_autodiff_of, same_type};
use super::matrix_product::matrix_product;
use super::nf4_weight::{Nf4Weight, ROW_BLOCK_VALUES};

/// `x @ W` for an NF4 base `W` (`[in, out]` once dequantized).
///
/// # Shapes
/// - x: `[batch, seq, in]`; returns `[batch, seq, out]`.
pub(crate) fn nf4_linear<B: Backend>(x: Tensor<B, 3>, weight: &Nf4Weight<B>) -> Tensor<B, 3> {
    #[cfg(feature = "flex")]
    if let Some(y) = recomputing::<B, burn::backend::Flex>(&x, weight) {
        return y;
    }
    #[cfg(feature = "wgpu")]
    if let Some(y) = recomputing::<B, burn::backend::Wgpu>(&x, weight) {
        return y;
    }
    #[cfg(feature = "cuda")]
    if let Some(y) = recomputing::<B, burn::backend::Cuda>(&x, weight) {
        return y;
    }
    plain_nf4_linear(x, weight)
}

/// Dequantize, then `linear`: on an autodiff backend the dequantized weight lives until the
/// backward pass. The reference the recomputing route is tested against.
pub(crate) fn plain_nf4_linear<B: Backend>(x: Tensor<B, 3>, weight: &Nf4Weight<B>) -> Tensor<B, 3> {
    linear(x, weight.dequantize(), None)
}

/// `Some(x @ W)` through [`Nf4Backward`] when `B` is `Autodiff<I>`; `None` for any other `B`.
fn recomputing<B: Backend, I: Backend>(
    x: &Tensor<B, 3>,
    weight: &Nf4Weight<B>,
) -> Option<Tensor<B, 3>> {
    if !is_autodiff_of::<B, I>() {
        return None;
    }
    let x: Tensor<Autodiff<I>, 3> = same_type(x.clone())?;
    let weight: &Nf4Weight<Autodiff<I>> = (weight as &dyn Any).downcast_ref()?;
    same_type(autodiff_nf4_linear(x, weight.valid()))
}

fn autodiff_nf4_linear<I: Backend>(
    x: Tensor<Autodiff<I>, 3>,
    weight: Nf4Weight<I>,
) -> Tensor<Autodiff<I>, 3> {
    let x = x.into_primitive().tensor();
    let x_inner = Tensor::<I, 3>::from_primitive(TensorPrimitive::Float(x.primitive.clone()));
    let y = blockwise_forward(x_inner, &weight, ROW_BLOCK_VALUES)
        .into_primitive()
        .tensor();
    let y = match Nf4Backward
        .prepare::<NoCheckpointing>([x.node.clone()])
        .compute_bound()
        .stateful()
    {
        OpsKind::Tracked(prep) => prep.finish(weight, y),
        OpsKind::UnTracked(prep) => prep.finish(y),
    };
    Tensor::from_primitive(TensorPrimitive::Float(y))
}

/// `x @ dequant(W)^T`, the weight dequantized a block of rows (output features) at a time, so
/// that only one block is ever in f32.
fn blockwise_forward<I: Backend>(
    x: Tensor<I, 3>,
    weight: &Nf4Weight<I>,
    block_values: usize,
) -> Tensor<I, 3> {
    let [batch, seq, inp] = x.dims();
    let [out, _] = weight.shape();
    // Batch and sequence axes as one: one 2-D product per block.
    let x = x.reshape([batch * seq, inp]);
    let absmax = weight.absmax();
    let outputs: Vec<Tensor<I, 2>> = weight
        .row_blocks(block_values)
        .into_iter()
        .map(|(start, rows)| {
            let block = weight.dequantize_row_block(&absmax, start, rows);
            matrix_product(x.clone(), block.transpose())
        })
        .collect();
    Tensor::cat(outputs, 1).reshape([batch, seq, out])
}

/// `grad @ dequant(W)`: each block of output features' share of the input gradient, summed.
fn blockwise_backward<I: Backend>(
    grad: Tensor<I, 3>,
    weight: &Nf4Weight<I>,
    block_values: usize,
) -> Tensor<I, 3> {
    let [batch, seq, out] = grad.dims();
    let [_, inp] = weight.shape();
    let grad = grad.reshape([batch * seq, out]);
    let absmax = weight.absmax();
    let mut sum: Option<Tensor<I, 2>> = None;
    for (start, rows) in weight.row_blocks(block_values) {
        let block = weight.dequantize_row_block(&absmax, start, rows);
        let share = matrix_product(grad.clone().narrow(1, start, rows), block);
        sum = Some(match sum {
            Some(sum) => sum + share,
            None => share,
        });
    }
    sum.expect("a weight has at least one row block")
        .reshape([batch, seq, inp])
}

/// The backward step of `x @ dequant(W)`: `grad_x = grad @ dequant(W)^T`, with `W` dequantized
/// again here, a block of rows at a time. Its state is the NF4 weight (shared handles, no copy).
#[derive(Debug)]
struct Nf4Backward;

impl<I: Backend> Backward<I, 1> for Nf4Backward {
    type State = Nf4Weight<I>;

    fn backward(self, ops: Ops<Self::State, 1>, grads: &mut Gradients, _: &mut Checkpointer) {
        let weight = ops.state;
        unary::<I, _>(ops.parents, ops.node, grads, |grad| {
            let grad = Tensor::<I, 3>::from_primitive(TensorPrimitive::Float(grad));
            blockwise_backward(grad, &weight, ROW_BLOCK_VALUES)
                .into_primitive()
                .tensor()
        });
    }
}

#[cfg(all(test, feature = "flex"))]
mod tests {
    use burn::backend::{Autodiff, Flex};
    use burn::tensor::{Distribution, Tensor, backend::Backend};

    use super::{blockwise_backward, blockwise_forward, nf4_linear, plain_nf4_linear, recomputing};
    use crate::nn::Nf4Weight;

    type A = Autodiff<Flex>;

    fn weight<B: Backend>(out: usize, inp: usize) -> Nf4Weight<B> {
        let device = Default::default();
        Flex::seed(&device, 7);
        let rows: Vec<f32> =
            Tensor::<Flex, 1>::random([out * inp], Distribution::Normal(0.0, 0.05), &device)
                .into_data()
                .to_vec()
                .unwrap();
        Nf4Weight::quantize(&rows, [out, inp], &Default::default()).unwrap()
    }

    fn max_relative(a: Tensor<Flex, 3>, b: Tensor<Flex, 3>) -> f32 {
        let scale = b.clone().abs().max().into_scalar();
        (a - b).abs().max().into_scalar() / scale
    }

    #[test]
    fn the_cpu_dequantization_equals_the_composed_one_bit_for_bit() {
        let w = weight::<Flex>(96, 128);
        let absmax = w.absmax();
        for (start, rows) in [(0, 96), (32, 16), (95, 1)] {
            let cpu = w.dequantize_row_block(&absmax, start, rows);
            let composed = w.composed_row_block(&absmax, start, rows);
            assert_eq!(
                cpu.into_data(),
                composed.into_data(),
                "rows {start}..+{rows}"
            );
        }
    }

    #[test]
    fn the_recomputing_route_runs_on_autodiff_only() {
        let x = Tensor::<A, 3>::zeros([1, 2, 128], &Default::default());
        assert!(recomputing::<A, Flex>(&x, &weight::<A>(64, 128)).is_some());
        let x = Tensor::<Flex, 3>::zeros([1, 2, 128], &Default::default());
        assert!(recomputing::<Flex, Flex>(&x, &weight::<Flex>(64, 128)).is_none());
    }

    #[test]
    fn outputs_and_input_gradients_equal_the_plain_route() {
        let device = Default::default();
        let (out, inp) = (192, 256);
        let w = weight::<A>(out, inp);
        let x = Tensor::<Flex, 3>::random([2, 5, inp], Distribution::Normal(0.0, 1.0), &device);
        let upstream =
            Tensor::<Flex, 3>::random([2, 5, out], Distribution::Normal(0.0, 1.0), &device);
        let run = |f: fn(Tensor<A, 3>, &Nf4Weight<A>) -> Tensor<A, 3>| {
            let x = Tensor::<A, 3>::from_inner(x.clone()).require_grad();
            let y = f(x.clone(), &w);
            let grads = (y.clone() * Tensor::from_inner(upstream.clone()))
                .sum()
                .backward();
            (y.inner(), x.grad(&grads).expect("x has a gradient"))
        };
        let (y, grad) = run(nf4_linear);
        let (y_plain, grad_plain) = run(plain_nf4_linear);
        assert!(max_relative(y, y_plain) <= 1e-6);
        assert!(max_relative(grad, grad_plain) <= 1e-6);
    }

    #[test]
    fn row_blocks_cover_the_weight_and_give_the_whole_product() {
        let device = Default::default();
        let (out, inp) = (200, 128);
        let w = weight::<Flex>(out, inp);
        // 64 rows a block: 64, 64, 64 and the last 8.
        let blocks = w.row_blocks(64 * inp);
        assert_eq!(blocks, vec![(0, 64), (64, 64), (128, 64), (192, 8)]);
        assert_eq!(w.row_blocks(usize::MAX), vec![(0, out)]);
        let x = Tensor::<Flex, 3>::random([2, 3, inp], Distribution::Normal(0.0, 1.0), &device);
        let y = blockwise_forward(x.clone(), &w, 64 * inp);
        let y_whole = x.matmul(w.dequantize().unsqueeze());
        assert!(max_relative(y, y_whole) <= 1e-6);
        let grad = Tensor::<Flex, 3>::random([2, 3, out], Distribution::Normal(0.0, 1.0), &device);
        let back = blockwise_backward(grad.clone(), &w, 64 * inp);
        let back_whole = grad.matmul(w.dequantize_rows().unsqueeze());
        assert!(max_relative(back, back_whole) <= 1e-6);
    }
}
