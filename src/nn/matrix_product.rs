//! `x @ w` of two matrices (or of two equal stacks of matrices) as one autodiff op: the
//! products of the projections, of the LoRA factors, of the tied head and of attention, which
//! are most of a training step's work.
//!
//! On the CPU backend, burn-flex zero-fills each product's output on one core and then copies
//! it once more to align it, and it runs products below 192³ multiply-adds on one core (the
//! LoRA factors' products, rank 16, are all below). This op writes the product straight into
//! its output, splits products from [`PARALLEL_MIN_MACS`] multiply-adds across the cores, reads
//! transposed operands through their strides, and keeps for the backward pass only the
//! operand that the other's gradient needs. Elsewhere it is Burn's `linear` or `matmul` (GPU
//! backends run their own kernels).

use burn::tensor::{Tensor, backend::Backend, module::linear};

/// Multiply-adds from which a product is split across the cores: below it, waking the
/// other threads costs about as much as it saves.
#[cfg_attr(not(feature = "flex"), allow(dead_code))]
const PARALLEL_MIN_MACS: usize = 1 << 21;

/// `x @ w`.
///
/// # Shapes
/// - x: `[rows, inner]`, w: `[inner, cols]`; returns `[rows, cols]`.
pub(crate) fn matrix_product<B: Backend>(x: Tensor<B, 2>, w: Tensor<B, 2>) -> Tensor<B, 2> {
    #[cfg(feature = "flex")]
    let (x, w) = match flex::matrix_product(x, w) {
        Ok(y) => return y,
        Err(inputs) => inputs,
    };
    linear(x, w, None)
}

/// `x @ w` over `x`'s last axis, its leading axes taken as one: `w`'s gradient is then one
/// `[inner, tokens] x [tokens, cols]` product instead of one per leading index and a sum.
///
/// # Shapes
/// - x: `[..., inner]`, w: `[inner, cols]`; returns `[..., cols]`.
pub(crate) fn last_axis_product<B: Backend, const D: usize>(
    x: Tensor<B, D>,
    w: Tensor<B, 2>,
) -> Tensor<B, D> {
    let mut dims = x.dims();
    let tokens = dims[..D - 1].iter().product::<usize>();
    let x = x.reshape([tokens, dims[D - 1]]);
    dims[D - 1] = w.dims()[1];
    matrix_product(x, w).reshape(dims)
}

/// `x @ w` matrix by matrix over two leading axes of the same sizes (no broadcasting).
///
/// # Shapes
/// - x: `[a, b, rows, inner]`, w: `[a, b, inner, cols]`; returns `[a, b, rows, cols]`.
pub(crate) fn batched_matrix_product<B: Backend>(x: Tensor<B, 4>, w: Tensor<B, 4>) -> Tensor<B, 4> {
    #[cfg(feature = "flex")]
    let (x, w) = match flex::matrix_product(x, w) {
        Ok(y) => return y,
        Err(inputs) => inputs,
    };
    x.matmul(w)
}

#[cfg(feature = "flex")]
mod flex {
    use burn::backend::autodiff::checkpoint::base::Checkpointer;
    use burn::backend::autodiff::checkpoint::strategy::NoCheckpointing;
    use burn::backend::autodiff::grads::Gradients;
    use burn::backend::autodiff::ops::{Backward, Ops, OpsKind};
    use burn::backend::{Autodiff, Flex};
    use burn::tensor::{DType, Tensor, TensorPrimitive, backend::Backend};
    use burn_flex::FlexTensor;
    use rayon::prelude::*;

    use super::PARALLEL_MIN_MACS;
    use crate::nn::autodiff_route::{cast, same_type};
    use crate::nn::flex_tensor::{contiguous, from_values};

    /// The product when `B` is `Flex` or `Autodiff<Flex>`, both operands are f32 and their
    /// leading axes agree; the operands back otherwise.
    pub(super) fn matrix_product<B: Backend, const D: usize>(
        x: Tensor<B, D>,
        w: Tensor<B, D>,
    ) -> Result<Tensor<B, D>, (Tensor<B, D>, Tensor<B, D>)> {
        let (x_dims, w_dims) = (x.dims(), w.dims());
        let f32s = x.dtype() == DType::F32 && w.dtype() == DType::F32;
        if !f32s || x_dims[..D - 2] != w_dims[..D - 2] || x_dims[D - 1] != w_dims[D - 2] {
            return Err((x, w));
        }
        let x = match cast::<_, Tensor<Flex, D>>(x) {
            Ok(x) => {
                let w: Tensor<Flex, D> = same_type(w).expect("B is Flex");
                let (x, w) = (x.into_primitive().tensor(), w.into_primitive().tensor());
                let y = product(&operand(&x), &operand(&w));
                let y = Tensor::<Flex, D>::from_primitive(TensorPrimitive::Float(y));
                return Ok(same_type(y).expect("B is Flex"));
            }
            Err(x) => x,
        };
        match cast::<_, Tensor<Autodiff<Flex>, D>>(x) {
            Ok(x) => {
                let w: Tensor<Autodiff<Flex>, D> = same_type(w).expect("B is Autodiff<Flex>");
                Ok(same_type(autodiff_product(x, w)).expect("B is Autodiff<Flex>"))
            }
            Err(x) => Err((x, w)),
        }
    }

    fn autodiff_product<const D: usize>(
        x: Tensor<Autodiff<Flex>, D>,
        w: Tensor<Autodiff<Flex>, D>,
    ) -> Tensor<Autodiff<Flex>, D> {
        let (x, w) = (x.into_primitive().tensor(), w.into_primitive().tensor());
        let y = product(&operand(&x.primitive), &operand(&w.primitive));
        let (x_tracked, w_tracked) = (x.is_tracked(), w.is_tracked());
        let w_column_major = column_major(&w.primitive);
        let y = match ProductBackward
            .prepare::<NoCheckpointing>([x.node.clone(), w.node.clone()])
            .compute_bound()
            .stateful()
        {
            // Each operand's gradient needs only the other operand.
            OpsKind::Tracked(prep) => prep.finish(
                (
                    w_tracked.then_some(x.primitive),
                    x_tracked.then_some(w.primitive),
                    w_column_major,
                ),
                y,
            ),
            OpsKind::UnTracked(prep) => prep.finish(y),
        };
        Tensor::from_primitive(TensorPrimitive::Float(y))
    }

    /// `dx = grad @ wᵀ`, `dw = xᵀ @ grad` (matrix by matrix), the transposes read through
    /// their strides.
    #[derive(Debug)]
    struct ProductBackward;

    impl Backward<Flex, 2> for ProductBackward {
        /// x (kept when w needs a gradient), w (kept when x does), and whether w's matrices
        /// are column-major views.
        type State = (Option<FlexTensor>, Option<FlexTensor>, bool);

        fn backward(self, ops: Ops<Self::State, 2>, grads: &mut Gradients, _: &mut Checkpointer) {
            let [x_node, w_node] = ops.parents;
            let grad = grads.consume::<Flex>(&ops.node);
            let (x, w, w_column_major) = ops.state;
            if let (Some(node), Some(w)) = (x_node, w) {
                let dx = product(&operand(&grad), &operand(&w).transposed());
                grads.register::<Flex>(node.id, dx);
            }
            if let (Some(node), Some(x)) = (w_node, x) {
                let (x, grad) = (operand(&x), operand(&grad));
                // A transposed view gets its gradient as one too (the tied head reads the
                // embedding so, attention the keys): the transpose's own backward then gives
                // a contiguous tensor.
                let dw = if w_column_major {
                    let rank = x.batch.len() + 2;
                    product(&grad.transposed(), &x).transpose(rank - 2, rank - 1)
                } else {
                    product(&x.transposed(), &grad)
                };
                grads.register::<Flex>(node.id, dw);
            }
        }
    }

    /// Whether a tensor's matrices (its last two axes) are laid out by columns: transposed
    /// views of row-major ones.
    fn column_major(tensor: &FlexTensor) -> bool {
        let strides = tensor.layout().strides();
        let rank = strides.len();
        strides[rank - 2].unsigned_abs() < strides[rank - 1].unsigned_abs()
    }

    /// A stack of f32 matrices as gemm reads them: the storage, the leading axes' sizes and
    /// strides, and each matrix's shape and strides (in values).
    struct Operand {
        tensor: FlexTensor,
        /// `(size, stride)` of each leading axis.
        batch: Vec<(usize, isize)>,
        rows: usize,
        cols: usize,
        row_stride: isize,
        col_stride: isize,
    }

    /// `tensor` (f32, rank 2 or more) as an operand: itself when its strides are
    /// non-negative, else a contiguous copy. Cloning a tensor shares its storage.
    fn operand(tensor: &FlexTensor) -> Operand {
        let tensor = if tensor.layout().has_positive_strides() {
            tensor.clone()
        } else {
            contiguous(tensor.to_contiguous())
        };
        let (shape, strides) = (tensor.layout().shape(), tensor.layout().strides());
        let rank = strides.len();
        let batch = (0..rank - 2).map(|d| (shape[d], strides[d])).collect();
        let (rows, cols) = (shape[rank - 2], shape[rank - 1]);
        let (row_stride, col_stride) = (strides[rank - 2], strides[rank - 1]);
        Operand {
            tensor,
            batch,
            rows,
            cols,
            row_stride,
            col_stride,
        }
    }

    impl Operand {
        fn transposed(self) -> Operand {
            Operand {
                rows: self.cols,
                cols: self.rows,
                row_stride: self.col_stride,
                col_stride: self.row_stride,
                ..self
            }
        }

        /// How many matrices the stack holds.
        fn count(&self) -> usize {
            self.batch.iter().map(|&(size, _)| size).product()
        }

        /// The first value of matrix `index` (leading axes in row-major order).
        fn matrix(&self, index: usize) -> *const f32 {
            let mut offset = self.tensor.layout().start_offset() as isize;
            let mut rest = index;
            for &(size, stride) in self.batch.iter().rev() {
                offset += (rest % size) as isize * stride;
                rest /= size;
            }
            let storage: &[f32] = self.tensor.storage();
            storage[offset as usize..].as_ptr()
        }
    }

    /// `a @ b` matrix by matrix, into a new row-major tensor of shape `[batch.., m, n]`.
    fn product(a: &Operand, b: &Operand) -> FlexTensor {
        assert_eq!(a.cols, b.rows, "matrix product of mismatched shapes");
        let (m, k, n, count) = (a.rows, a.cols, b.cols, a.count());
        let mut shape: Vec<usize> = a.batch.iter().map(|&(size, _)| size).collect();
        shape.extend([m, n]);
        if m == 0 || n == 0 || k == 0 || count == 0 {
            return from_values(vec![0.0f32; count * m * n], shape);
        }
        let mut out = Vec::<f32>::with_capacity(count * m * n);
        // Enough matrices to fill the cores: one per task, each on one core; fewer: one
        // after the other, each split by gemm.
        let by_matrix = count > 1 && count >= rayon::current_num_threads();
        let parallelism = if !by_matrix && m * k * n >= PARALLEL_MIN_MACS {
            gemm::Parallelism::Rayon(0)
        } else {
            gemm::Parallelism::None
        };
        let one = |index: usize, dst: &mut [std::mem::MaybeUninit<f32>]| {
            // SAFETY: `dst` holds the `m x n` row-major result, which gemm writes whole
            // without reading it (`read_dst` false); the operands point into storage that
            // holds every value their shapes and non-negative strides reach (layouts of
            // valid tensors).
            unsafe {
                gemm::gemm(
                    m,
                    n,
                    k,
                    dst.as_mut_ptr().cast::<f32>(),
                    1,
                    n as isize,
                    false,
                    a.matrix(index),
                    a.col_stride,
                    a.row_stride,
                    b.matrix(index),
                    b.col_stride,
                    b.row_stride,
                    0.0,
                    1.0,
                    false,
                    false,
                    false,
                    parallelism,
                );
            }
        };
        let spare = &mut out.spare_capacity_mut()[..count * m * n];
        if by_matrix {
            spare
                .par_chunks_mut(m * n)
                .enumerate()
                .for_each(|(index, dst)| one(index, dst));
        } else {
            spare
                .chunks_mut(m * n)
                .enumerate()
                .for_each(|(index, dst)| one(index, dst));
        }
        // SAFETY: every matrix of the result was written above.
        unsafe { out.set_len(count * m * n) };
        from_values(out, shape)
    }
}

#[cfg(all(test, feature = "flex"))]
mod tests {
    use burn::backend::{Autodiff, Flex};
    use burn::tensor::{Distribution, Tensor, module::linear};

    use super::{batched_matrix_product, matrix_product};

    type A = Autodiff<Flex>;

    fn max_difference(a: Tensor<Flex, 2>, b: Tensor<Flex, 2>) -> f32 {
        (a - b).abs().max().into_scalar()
    }

    /// Outputs and both gradients equal Burn's `linear` for plain and transposed operands,
    /// and for products on one core and split across cores.
    #[test]
    fn outputs_and_gradients_equal_burns_linear() {
        let device = Default::default();
        let normal = Distribution::Normal(0.0, 1.0);
        for (m, k, n) in [(3, 5, 4), (256, 128, 96)] {
            let x = Tensor::<Flex, 2>::random([m, k], normal, &device);
            // Stored `[n, k]` and read transposed, as the tied head reads the embedding.
            let w_rows = Tensor::<Flex, 2>::random([n, k], normal, &device);
            let upstream = Tensor::<Flex, 2>::random([m, n], normal, &device);
            let run = |f: fn(Tensor<A, 2>, Tensor<A, 2>) -> Tensor<A, 2>| {
                let x = Tensor::<A, 2>::from_inner(x.clone()).require_grad();
                let w_rows = Tensor::<A, 2>::from_inner(w_rows.clone()).require_grad();
                let y = f(x.clone(), w_rows.clone().transpose());
                let grads = (y.clone() * Tensor::from_inner(upstream.clone()))
                    .sum()
                    .backward();
                let dx = x.grad(&grads).unwrap();
                (y.inner(), dx, w_rows.grad(&grads).unwrap())
            };
            let (y_ref, dx_ref, dw_ref) = run(|x, w| linear(x, w, None));
            let (y, dx, dw) = run(matrix_product);
            // The transposed operand's gradient comes back in the operand's own layout.
            let dw_layout = dw.clone().into_primitive().tensor();
            assert!(dw_layout.is_contiguous());
            let tolerance = 1e-4 * (k.max(m) as f32).sqrt();
            assert!(max_difference(y, y_ref) <= tolerance);
            assert!(max_difference(dx, dx_ref) <= tolerance);
            assert!(max_difference(dw, dw_ref) <= tolerance);
        }
    }

    /// Stacks of matrices, both operands strided views as attention passes them (keys
    /// transposed, values with heads moved), equal Burn's matmul with both gradients.
    #[test]
    fn batched_products_and_gradients_equal_burns_matmul() {
        let device = Default::default();
        let normal = Distribution::Normal(0.0, 1.0);
        // [batch, positions, heads, d] seen as [batch, heads, positions, d].
        let x = Tensor::<Flex, 4>::random([2, 6, 3, 4], normal, &device);
        let keys = Tensor::<Flex, 4>::random([2, 3, 5, 4], normal, &device);
        let upstream = Tensor::<Flex, 4>::random([2, 3, 6, 5], normal, &device);
        let run = |f: fn(Tensor<A, 4>, Tensor<A, 4>) -> Tensor<A, 4>| {
            let x = Tensor::<A, 4>::from_inner(x.clone()).require_grad();
            let keys = Tensor::<A, 4>::from_inner(keys.clone()).require_grad();
            let y = f(x.clone().swap_dims(1, 2), keys.clone().swap_dims(2, 3));
            let grads = (y.clone() * Tensor::from_inner(upstream.clone()))
                .sum()
                .backward();
            let dx = x.grad(&grads).unwrap();
            (y.inner(), dx, keys.grad(&grads).unwrap())
        };
        let (y_ref, dx_ref, dk_ref) = run(|x, w| x.matmul(w));
        let (y, dx, dk) = run(batched_matrix_product);
        let difference = |a: Tensor<Flex, 4>, b: Tensor<Flex, 4>| (a - b).abs().max().into_scalar();
        assert!(difference(y, y_ref) <= 1e-5);
        assert!(difference(dx, dx_ref) <= 1e-5);
        assert!(dk.clone().into_primitive().tensor().is_contiguous());
        assert!(difference(dk, dk_ref) <= 1e-5);
    }

    /// A frozen operand gets no gradient, and the inference backend takes the same route.
    #[test]
    fn frozen_operands_and_plain_tensors() {
        let device = Default::default();
        let normal = Distribution::Normal(0.0, 1.0);
        let x = Tensor::<Flex, 2>::random([7, 9], normal, &device);
        let w = Tensor::<Flex, 2>::random([9, 5], normal, &device);
        let plain = matrix_product(x.clone(), w.clone());
        assert!(max_difference(plain.clone(), linear(x.clone(), w.clone(), None)) <= 1e-5);
        let tracked_x = Tensor::<A, 2>::from_inner(x).require_grad();
        let frozen_w = Tensor::<A, 2>::from_inner(w);
        let y = matrix_product(tracked_x.clone(), frozen_w.clone());
        let grads = y.sum().backward();
        assert!(tracked_x.grad(&grads).is_some());
        assert!(frozen_w.grad(&grads).is_none());
    }

    /// Empty inner dimensions give zeros, as a sum over nothing.
    #[test]
    fn an_empty_inner_dimension_gives_zeros() {
        let device = Default::default();
        let x = Tensor::<Flex, 2>::zeros([3, 0], &device);
        let w = Tensor::<Flex, 2>::zeros([0, 4], &device);
        let y = matrix_product(x, w);
        assert_eq!(y.dims(), [3, 4]);
        assert_eq!(y.abs().sum().into_scalar(), 0.0);
    }
}
