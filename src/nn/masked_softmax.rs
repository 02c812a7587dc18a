//! Attention weights, `softmax(scale * scores)` over keys with hidden keys left out, as one op.
//!
//! Composed of Burn's ops (a scale, a mask fill, and softmax's max, subtraction, exponential,
//! sum and division), the attention weights of a layer cost seven passes over the scores
//! forward and as many backward, on one core. On the CPU backend this op makes one pass each
//! way, over rows in parallel, and keeps only its output for the backward pass (as the composed
//! softmax does). Other backends take the composed route.

use burn::tensor::activation::softmax;
use burn::tensor::{Bool, Tensor, backend::Backend};

/// `softmax(scale * scores, keys)` with the keys where `hidden` holds at zero weight.
///
/// # Shapes
/// - scores: `[batch, heads, queries, keys]`, hidden: the same; returns the same.
pub(crate) fn masked_softmax<B: Backend>(
    scores: Tensor<B, 4>,
    hidden: Tensor<B, 4, Bool>,
    scale: f64,
) -> Tensor<B, 4> {
    #[cfg(feature = "flex")]
    let (scores, hidden) = match flex::masked_softmax(scores, hidden, scale) {
        Ok(weights) => return weights,
        Err(inputs) => inputs,
    };
    composed_masked_softmax(scores, hidden, scale)
}

/// Burn's ops one after the other: the reference the CPU route is tested against.
pub(crate) fn composed_masked_softmax<B: Backend>(
    scores: Tensor<B, 4>,
    hidden: Tensor<B, 4, Bool>,
    scale: f64,
) -> Tensor<B, 4> {
    softmax((scores * scale).mask_fill(hidden, f32::NEG_INFINITY), 3)
}

#[cfg(feature = "flex")]
mod flex {
    use burn::backend::autodiff::checkpoint::base::Checkpointer;
    use burn::backend::autodiff::checkpoint::strategy::NoCheckpointing;
    use burn::backend::autodiff::grads::Gradients;
    use burn::backend::autodiff::ops::{Backward, Ops, OpsKind, unary};
    use burn::backend::{Autodiff, Flex};
    use burn::tensor::{Bool, DType, Tensor, TensorPrimitive, backend::Backend};
    use burn_flex::FlexTensor;
    use rayon::prelude::*;

    use crate::nn::autodiff_route::{cast, same_type};
    use crate::nn::flex_tensor::{
        bool_bytes, bool_primitive, contiguous, from_values, primitive, values,
    };

    type Inputs<B> = (Tensor<B, 4>, Tensor<B, 4, Bool>);

    /// The one-pass route when `B` is `Flex` or `Autodiff<Flex>`; the inputs back otherwise.
    pub(super) fn masked_softmax<B: Backend>(
        scores: Tensor<B, 4>,
        hidden: Tensor<B, 4, Bool>,
        scale: f64,
    ) -> Result<Tensor<B, 4>, Inputs<B>> {
        if scores.dtype() != DType::F32 {
            return Err((scores, hidden));
        }
        let shape = scores.dims();
        let scores = match cast::<_, Tensor<Flex, 4>>(scores) {
            Ok(scores) => {
                let hidden: Tensor<Flex, 4, Bool> = same_type(hidden).expect("B is Flex");
                let hidden = bool_primitive(hidden);
                let weights = forward(&primitive(scores), bool_bytes(&hidden), scale, shape);
                let weights = Tensor::<Flex, 4>::from_primitive(TensorPrimitive::Float(weights));
                return Ok(same_type(weights).expect("B is Flex"));
            }
            Err(scores) => scores,
        };
        match cast::<_, Tensor<Autodiff<Flex>, 4>>(scores) {
            Ok(scores) => {
                let hidden: Tensor<Autodiff<Flex>, 4, Bool> =
                    same_type(hidden).expect("B is Autodiff<Flex>");
                let hidden = bool_primitive(Tensor::<Flex, 4, Bool>::from_primitive(
                    hidden.into_primitive(),
                ));
                let weights = autodiff_masked_softmax(scores, bool_bytes(&hidden), scale);
                Ok(same_type(weights).expect("B is Autodiff<Flex>"))
            }
            Err(scores) => Err((scores, hidden)),
        }
    }

    fn forward(scores: &FlexTensor, hidden: &[u8], scale: f64, shape: [usize; 4]) -> FlexTensor {
        let scores = values(scores);
        let keys = shape[3].max(1);
        let scale = scale as f32;
        let mut out = vec![0.0f32; scores.len()];
        out.par_chunks_mut(keys)
            .zip(scores.par_chunks(keys).zip(hidden.par_chunks(keys)))
            .for_each(|(out, (row, hidden))| {
                let mut max = f32::NEG_INFINITY;
                for ((o, &x), &h) in out.iter_mut().zip(row).zip(hidden) {
                    *o = if h != 0 { f32::NEG_INFINITY } else { x * scale };
                    max = max.max(*o);
                }
                if max == f32::NEG_INFINITY {
                    out.fill(f32::NAN); // as softmax over nothing but -inf gives
                    return;
                }
                let mut sum = 0.0f32;
                for o in out.iter_mut() {
                    *o = (*o - max).exp();
                    sum += *o;
                }
                let inverse = sum.recip();
                out.iter_mut().for_each(|o| *o *= inverse);
            });
        from_values(out, shape.to_vec())
    }

    fn autodiff_masked_softmax(
        scores: Tensor<Autodiff<Flex>, 4>,
        hidden: &[u8],
        scale: f64,
    ) -> Tensor<Autodiff<Flex>, 4> {
        let shape = scores.dims();
        let scores = scores.into_primitive().tensor();
        let weights = forward(&contiguous(scores.primitive.clone()), hidden, scale, shape);
        let backward = MaskedSoftmaxBackward {
            scale: scale as f32,
        };
        let out = match backward
            .prepare::<NoCheckpointing>([scores.node.clone()])
            .compute_bound()
            .stateful()
        {
            OpsKind::Tracked(prep) => prep.finish(weights.clone(), weights),
            OpsKind::UnTracked(prep) => prep.finish(weights),
        };
        Tensor::from_primitive(TensorPrimitive::Float(out))
    }

    /// `d/dscores = scale * p * (grad - sum(grad * p))` per row, `p` the weights; zero where
    /// hidden, as `p` is.
    #[derive(Debug)]
    struct MaskedSoftmaxBackward {
        scale: f32,
    }

    impl Backward<Flex, 1> for MaskedSoftmaxBackward {
        type State = FlexTensor;

        fn backward(self, ops: Ops<Self::State, 1>, grads: &mut Gradients, _: &mut Checkpointer) {
            let weights = ops.state;
            let scale = self.scale;
            unary::<Flex, _>(ops.parents, ops.node, grads, |grad| {
                let shape = weights.layout().shape().to_vec();
                let keys = shape.last().copied().unwrap_or(1).max(1);
                let grad = contiguous(grad);
                let (p, g) = (values(&weights), values(&grad));
                let mut out = vec![0.0f32; p.len()];
                out.par_chunks_mut(keys)
                    .zip(p.par_chunks(keys).zip(g.par_chunks(keys)))
                    .for_each(|(out, (p, g))| {
                        let dot: f32 = p.iter().zip(g).map(|(p, g)| p * g).sum();
                        for ((o, &p), &g) in out.iter_mut().zip(p).zip(g) {
                            *o = scale * p * (g - dot);
                        }
                    });
                from_values(out, shape)
            });
        }
    }
}

#[cfg(all(test, feature = "flex"))]
mod tests {
    use burn::backend::{Autodiff, Flex};
    use burn::tensor::{Bool, Distribution, Tensor};

    use super::{composed_masked_softmax, masked_softmax};

    type A = Autodiff<Flex>;

    fn causal<B: burn::tensor::backend::Backend>(device: &B::Device) -> Tensor<B, 4, Bool> {
        let hidden: Vec<bool> = (0..2 * 3 * 4 * 4)
            .map(|i| {
                let (query, key) = ((i / 4) % 4, i % 4);
                key > query
            })
            .collect();
        Tensor::<B, 1, Bool>::from_bool(hidden.as_slice().into(), device).reshape([2, 3, 4, 4])
    }

    fn max_relative(a: Tensor<Flex, 4>, b: Tensor<Flex, 4>) -> f32 {
        let scale = b.clone().abs().max().into_scalar();
        (a - b).abs().max().into_scalar() / scale
    }

    #[test]
    fn weights_and_gradients_equal_the_composed_route() {
        let device = Default::default();
        let normal = Distribution::Normal(0.0, 3.0);
        let scores = Tensor::<Flex, 4>::random([2, 3, 4, 4], normal, &device);
        let upstream = Tensor::<Flex, 4>::random([2, 3, 4, 4], normal, &device);
        let run = |f: fn(Tensor<A, 4>, Tensor<A, 4, Bool>, f64) -> Tensor<A, 4>| {
            let x = Tensor::<A, 4>::from_inner(scores.clone()).require_grad();
            let y = f(x.clone(), causal(&device), 0.125);
            let grads = (y.clone() * Tensor::from_inner(upstream.clone()))
                .sum()
                .backward();
            (y.inner(), x.grad(&grads).unwrap())
        };
        let (y, grad) = run(masked_softmax);
        let (y_ref, grad_ref) = run(composed_masked_softmax);
        assert!(max_relative(y.clone(), y_ref) <= 1e-6);
        assert!(max_relative(grad, grad_ref) <= 1e-6);
        let hidden_weight = y.narrow(3, 3, 1).narrow(2, 0, 3).abs().sum().into_scalar();
        assert_eq!(hidden_weight, 0.0, "a hidden key has no weight");
    }

    #[test]
    fn flex_and_its_autodiff_take_the_one_pass_route() {
        let device = Default::default();
        let plain = Tensor::<Flex, 4>::zeros([2, 3, 4, 4], &device);
        let y = super::flex::masked_softmax(plain.clone(), causal(&device), 1.0);
        let want = composed_masked_softmax(plain.clone(), causal(&device), 1.0);
        let Ok(y) = y else {
            panic!("the one-pass route")
        };
        assert!(max_relative(y, want) <= 1e-6);
        let tracked = Tensor::<A, 4>::from_inner(plain);
        assert!(super::flex::masked_softmax(tracked, causal(&device), 1.0).is_ok());
    }
}
