//! The summed negative log-likelihood of target classes under softmax logits, as one op.
//!
//! Composed of Burn's ops (log-softmax, gather, mask, sum), the loss over a
//! `[positions, vocab]` block of logits makes about a dozen passes over the largest tensor of a
//! step (49,152 columns for SmolLM2), on one core, and its backward pass as many again. On the
//! CPU backend this op makes one pass forward (each row's log-sum-exp and its target's logit) and
//! one backward (`softmax - one_hot`, scaled), over rows in parallel. Other backends take the
//! composed route.

use burn::tensor::activation::log_softmax;
use burn::tensor::{Int, Tensor, backend::Backend};

/// `-sum_r log softmax(logits[r])[targets[r]]` over the rows whose target is not `ignore_index`.
///
/// # Shapes
/// - logits: `[positions, classes]`, targets: `[positions]`; returns `[1]`.
pub(crate) fn nll_sum<B: Backend>(
    logits: Tensor<B, 2>,
    targets: Tensor<B, 1, Int>,
    ignore_index: i64,
) -> Tensor<B, 1> {
    #[cfg(feature = "flex")]
    let (logits, targets) = match flex::nll_sum(logits, targets, ignore_index) {
        Ok(loss) => return loss,
        Err(inputs) => inputs,
    };
    composed_nll_sum(logits, targets, ignore_index)
}

/// Burn's ops one after the other: the reference the CPU route is tested against.
pub(crate) fn composed_nll_sum<B: Backend>(
    logits: Tensor<B, 2>,
    targets: Tensor<B, 1, Int>,
    ignore_index: i64,
) -> Tensor<B, 1> {
    let [positions] = targets.dims();
    let targets = targets.reshape([positions, 1]);
    let keep = targets.clone().not_equal_elem(ignore_index);
    let safe_targets = targets.mask_fill(keep.clone().bool_not(), 0);
    let picked = log_softmax(logits, 1).gather(1, safe_targets);
    -(picked * keep.float()).sum()
}

#[cfg(feature = "flex")]
mod flex {
    use burn::backend::autodiff::checkpoint::base::Checkpointer;
    use burn::backend::autodiff::checkpoint::strategy::NoCheckpointing;
    use burn::backend::autodiff::grads::Gradients;
    use burn::backend::autodiff::ops::{Backward, Ops, OpsKind, unary};
    use burn::backend::{Autodiff, Flex};
    use burn::tensor::{DType, Int, Tensor, TensorPrimitive, backend::Backend};
    use burn_flex::FlexTensor;
    use rayon::prelude::*;

    use crate::nn::autodiff_route::{cast, same_type};
    use crate::nn::flex_tensor::{from_values, primitive, scalar, tensor, values};

    type Inputs<B> = (Tensor<B, 2>, Tensor<B, 1, Int>);

    /// The one-pass route when `B` is `Flex` or `Autodiff<Flex>`; the inputs back otherwise.
    pub(super) fn nll_sum<B: Backend>(
        logits: Tensor<B, 2>,
        targets: Tensor<B, 1, Int>,
        ignore_index: i64,
    ) -> Result<Tensor<B, 1>, Inputs<B>> {
        if logits.dtype() != DType::F32 {
            return Err((logits, targets));
        }
        let logits = match cast::<_, Tensor<Flex, 2>>(logits) {
            Ok(logits) => {
                let targets = target_rows(targets, ignore_index);
                let (loss, _) = forward(&primitive(logits), &targets);
                return Ok(same_type(loss).expect("B is Flex"));
            }
            Err(logits) => logits,
        };
        match cast::<_, Tensor<Autodiff<Flex>, 2>>(logits) {
            Ok(logits) => {
                let targets = target_rows(targets, ignore_index);
                Ok(same_type(autodiff_nll_sum(logits, targets)).expect("B is Autodiff<Flex>"))
            }
            Err(logits) => Err((logits, targets)),
        }
    }

    /// Each row's target class, `None` where it is ignored.
    fn target_rows<B: Backend>(
        targets: Tensor<B, 1, Int>,
        ignore_index: i64,
    ) -> Vec<Option<usize>> {
        targets
            .into_data()
            .iter::<i64>()
            .map(|t| (t != ignore_index).then_some(t as usize))
            .collect()
    }

    /// The loss `[1]` and each row's log-sum-exp.
    fn forward(logits: &FlexTensor, targets: &[Option<usize>]) -> (Tensor<Flex, 1>, Vec<f32>) {
        let logits = values(logits);
        let classes = logits.len() / targets.len().max(1);
        let rows: Vec<(f32, f64)> = logits
            .par_chunks(classes.max(1))
            .zip(targets.par_iter())
            .map(|(row, target)| {
                let lse = log_sum_exp(row);
                let nll = target.map_or(0.0, |t| (lse - row[t]) as f64);
                (lse, nll)
            })
            .collect();
        let loss: f64 = rows.iter().map(|r| r.1).sum();
        (
            tensor(vec![loss as f32], [1]),
            rows.into_iter().map(|r| r.0).collect(),
        )
    }

    fn log_sum_exp(row: &[f32]) -> f32 {
        let max = row.iter().copied().fold(f32::NEG_INFINITY, f32::max);
        if max == f32::NEG_INFINITY {
            return max;
        }
        // In f64: most of a vocabulary's terms are far below the sum's last bit in f32, and
        // dropping them all biases the loss low (by 5e-5 relative on SmolLM2).
        let sum: f64 = row.iter().map(|&x| (x - max).exp() as f64).sum();
        max + sum.ln() as f32
    }

    fn autodiff_nll_sum(
        logits: Tensor<Autodiff<Flex>, 2>,
        targets: Vec<Option<usize>>,
    ) -> Tensor<Autodiff<Flex>, 1> {
        let logits = logits.into_primitive().tensor();
        let inner = primitive(Tensor::<Flex, 2>::from_primitive(TensorPrimitive::Float(
            logits.primitive.clone(),
        )));
        let (loss, lse) = forward(&inner, &targets);
        let loss = loss.into_primitive().tensor();
        let out = match NllBackward
            .prepare::<NoCheckpointing>([logits.node.clone()])
            .compute_bound()
            .stateful()
        {
            OpsKind::Tracked(prep) => prep.finish((inner, targets, lse), loss),
            OpsKind::UnTracked(prep) => prep.finish(loss),
        };
        Tensor::from_primitive(TensorPrimitive::Float(out))
    }

    /// `d/dlogits[r] = grad * (softmax(logits[r]) - one_hot(target[r]))`, zero for ignored rows.
    #[derive(Debug)]
    struct NllBackward;

    impl Backward<Flex, 1> for NllBackward {
        type State = (FlexTensor, Vec<Option<usize>>, Vec<f32>);

        fn backward(self, ops: Ops<Self::State, 1>, grads: &mut Gradients, _: &mut Checkpointer) {
            let (logits, targets, lse) = ops.state;
            unary::<Flex, _>(ops.parents, ops.node, grads, |grad| {
                let scale = scalar(grad);
                let logits = values(&logits);
                let classes = (logits.len() / targets.len().max(1)).max(1);
                let mut out = vec![0.0f32; logits.len()];
                out.par_chunks_mut(classes)
                    .zip(logits.par_chunks(classes))
                    .zip(targets.par_iter().zip(lse.par_iter()))
                    .for_each(|((out, row), (target, &lse))| {
                        let Some(target) = *target else { return };
                        for (o, &x) in out.iter_mut().zip(row) {
                            *o = scale * (x - lse).exp();
                        }
                        out[target] -= scale;
                    });
                from_values(out, vec![targets.len(), classes])
            });
        }
    }
}

#[cfg(all(test, feature = "flex"))]
mod tests {
    use burn::backend::{Autodiff, Flex};
    use burn::tensor::{Distribution, Int, Tensor, TensorData};

    use super::{composed_nll_sum, nll_sum};

    type A = Autodiff<Flex>;

    fn targets<B: burn::tensor::backend::Backend>(device: &B::Device) -> Tensor<B, 1, Int> {
        Tensor::from_data(TensorData::from([3i64, -100, 0, 6, -100]), device)
    }

    fn max_relative(a: Tensor<Flex, 2>, b: Tensor<Flex, 2>) -> f32 {
        let scale = b.clone().abs().max().into_scalar();
        (a - b).abs().max().into_scalar() / scale
    }

    #[test]
    fn loss_and_gradient_equal_the_composed_route() {
        let device = Default::default();
        let logits = Tensor::<Flex, 2>::random([5, 7], Distribution::Normal(0.0, 4.0), &device);
        let run = |f: fn(Tensor<A, 2>, Tensor<A, 1, Int>, i64) -> Tensor<A, 1>| {
            let x = Tensor::<A, 2>::from_inner(logits.clone()).require_grad();
            let loss = f(x.clone(), targets(&device), -100) * 0.5;
            let grads = loss.backward();
            (loss.into_scalar(), x.grad(&grads).unwrap())
        };
        let (loss, grad) = run(nll_sum);
        let (loss_ref, grad_ref) = run(composed_nll_sum);
        assert!(
            (loss - loss_ref).abs() <= 1e-6 * loss_ref.abs(),
            "{loss} vs {loss_ref}"
        );
        assert!(max_relative(grad.clone(), grad_ref) <= 1e-6);
        let ignored = grad.narrow(0, 1, 1).abs().sum().into_scalar();
        assert_eq!(ignored, 0.0, "an ignored row has no gradient");
    }

    #[test]
    fn flex_and_its_autodiff_take_the_one_pass_route() {
        let device = Default::default();
        let plain = Tensor::<Flex, 2>::zeros([5, 7], &device);
        assert!(super::flex::nll_sum(plain.clone(), targets(&device), -100).is_ok());
        let tracked = Tensor::<A, 2>::from_inner(plain);
        assert!(super::flex::nll_sum(tracked, targets(&device), -100).is_ok());
    }

    #[test]
    fn the_plain_backend_gives_the_same_loss() {
        let device = Default::default();
        let logits = Tensor::<Flex, 2>::random([5, 7], Distribution::Normal(0.0, 4.0), &device);
        let loss = nll_sum(logits.clone(), targets(&device), -100).into_scalar();
        let want = composed_nll_sum(logits, targets(&device), -100).into_scalar();
        assert!((loss - want).abs() <= 1e-6 * want.abs(), "{loss} vs {want}");
    }
}
