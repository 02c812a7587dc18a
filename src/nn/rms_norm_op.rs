//! RMSNorm on the CPU backend as one op: one pass forward, one backward, rows in parallel.
//!
//! Composed of Burn's ops (square, mean, add, square root, reciprocal and two products), a norm
//! makes seven passes forward and about twelve backward, on one core; a Llama layer has two.
//! This op keeps its input and each row's `1 / rms` for the backward pass.

use burn::backend::autodiff::checkpoint::base::Checkpointer;
use burn::backend::autodiff::checkpoint::strategy::NoCheckpointing;
use burn::backend::autodiff::grads::Gradients;
use burn::backend::autodiff::ops::{Backward, Ops, OpsKind};
use burn::backend::{Autodiff, Flex};
use burn::tensor::{DType, Tensor, TensorPrimitive, backend::Backend};
use burn_flex::FlexTensor;
use rayon::prelude::*;

use super::autodiff_route::{cast, same_type};
use super::flex_tensor::{contiguous, from_values, primitive, values};

/// Rows per parallel task.
const ROWS: usize = 32;

/// `x / sqrt(mean(x^2) + eps) * weight` over the last axis when `B` is `Flex` or
/// `Autodiff<Flex>`; `x` back otherwise.
///
/// # Shapes
/// - x: `[..., hidden]`, weight: `[hidden]`; returns the shape of `x`.
pub(crate) fn rms_norm<B: Backend, const D: usize>(
    x: Tensor<B, D>,
    weight: &Tensor<B, 1>,
    eps: f64,
) -> Result<Tensor<B, D>, Tensor<B, D>> {
    if x.dtype() != DType::F32 || weight.dtype() != DType::F32 {
        return Err(x);
    }
    let x = match cast::<_, Tensor<Flex, D>>(x) {
        Ok(x) => {
            let weight: Tensor<Flex, 1> = same_type(weight.clone()).expect("B is Flex");
            let shape = x.dims().to_vec();
            let (y, _) = forward(&primitive(x), &primitive(weight), eps as f32, shape);
            let y = Tensor::<Flex, D>::from_primitive(TensorPrimitive::Float(y));
            return Ok(same_type(y).expect("B is Flex"));
        }
        Err(x) => x,
    };
    match cast::<_, Tensor<Autodiff<Flex>, D>>(x) {
        Ok(x) => {
            let weight: Tensor<Autodiff<Flex>, 1> =
                same_type(weight.clone()).expect("B is Autodiff");
            Ok(same_type(autodiff_rms_norm(x, weight, eps as f32)).expect("B is Autodiff<Flex>"))
        }
        Err(x) => Err(x),
    }
}

/// The normed rows and each row's `1 / rms`.
fn forward(
    x: &FlexTensor,
    weight: &FlexTensor,
    eps: f32,
    shape: Vec<usize>,
) -> (FlexTensor, Vec<f32>) {
    let (x, w) = (values(x), values(weight));
    let hidden = w.len().max(1);
    let rows = x.len() / hidden;
    let mut out = vec![0.0f32; x.len()];
    let mut inverse = vec![0.0f32; rows];
    out.par_chunks_mut(hidden * ROWS)
        .zip(x.par_chunks(hidden * ROWS))
        .zip(inverse.par_chunks_mut(ROWS))
        .for_each(|((out, x), inverse)| {
            for ((out, x), r) in out.chunks_mut(hidden).zip(x.chunks(hidden)).zip(inverse) {
                let mean_square = x.iter().map(|v| v * v).sum::<f32>() / hidden as f32;
                *r = (mean_square + eps).sqrt().recip();
                for ((o, &v), &w) in out.iter_mut().zip(x).zip(w) {
                    *o = v * *r * w;
                }
            }
        });
    (from_values(out, shape), inverse)
}

fn autodiff_rms_norm<const D: usize>(
    x: Tensor<Autodiff<Flex>, D>,
    weight: Tensor<Autodiff<Flex>, 1>,
    eps: f32,
) -> Tensor<Autodiff<Flex>, D> {
    let shape = x.dims().to_vec();
    let (x, weight) = (
        x.into_primitive().tensor(),
        weight.into_primitive().tensor(),
    );
    let (x_inner, w_inner) = (
        contiguous(x.primitive.clone()),
        contiguous(weight.primitive.clone()),
    );
    let (y, inverse) = forward(&x_inner, &w_inner, eps, shape);
    let y = match RmsNormBackward
        .prepare::<NoCheckpointing>([x.node.clone(), weight.node.clone()])
        .compute_bound()
        .stateful()
    {
        OpsKind::Tracked(prep) => prep.finish((x_inner, w_inner, inverse), y),
        OpsKind::UnTracked(prep) => prep.finish(y),
    };
    Tensor::from_primitive(TensorPrimitive::Float(y))
}

/// With `r = 1 / rms` and `h = grad * weight`: `d/dx = r * h - x * r^3 * mean(h * x)` per row,
/// and `d/dweight = sum over rows of grad * x * r`.
#[derive(Debug)]
struct RmsNormBackward;

impl Backward<Flex, 2> for RmsNormBackward {
    type State = (FlexTensor, FlexTensor, Vec<f32>);

    fn backward(self, ops: Ops<Self::State, 2>, grads: &mut Gradients, _: &mut Checkpointer) {
        let (x, weight, inverse) = ops.state;
        let shape = x.layout().shape().to_vec();
        let grad = contiguous(grads.consume::<Flex>(&ops.node));
        let (x, w, g) = (values(&x), values(&weight), values(&grad));
        let hidden = w.len().max(1);
        let [x_node, weight_node] = ops.parents;
        if let Some(node) = x_node {
            let mut out = vec![0.0f32; x.len()];
            out.par_chunks_mut(hidden * ROWS)
                .zip(x.par_chunks(hidden * ROWS).zip(g.par_chunks(hidden * ROWS)))
                .zip(inverse.par_chunks(ROWS))
                .for_each(|((out, (x, g)), inverse)| {
                    let rows = out
                        .chunks_mut(hidden)
                        .zip(x.chunks(hidden))
                        .zip(g.chunks(hidden));
                    for (((out, x), g), &r) in rows.zip(inverse) {
                        let dot: f32 = g.iter().zip(w).zip(x).map(|((g, w), x)| g * w * x).sum();
                        let k = r * r * r * dot / hidden as f32;
                        for (((o, &g), &w), &x) in out.iter_mut().zip(g).zip(w).zip(x) {
                            *o = r * g * w - x * k;
                        }
                    }
                });
            grads.register::<Flex>(node.id, from_values(out, shape));
        }
        if let Some(node) = weight_node {
            let partial = |(x, g, inverse): (&[f32], &[f32], &[f32])| {
                let mut sum = vec![0.0f64; hidden];
                for ((x, g), &r) in x.chunks(hidden).zip(g.chunks(hidden)).zip(inverse) {
                    for ((s, &x), &g) in sum.iter_mut().zip(x).zip(g) {
                        *s += (g * x * r) as f64;
                    }
                }
                sum
            };
            let sum = x
                .par_chunks(hidden * ROWS)
                .zip(g.par_chunks(hidden * ROWS))
                .zip(inverse.par_chunks(ROWS))
                .map(|((x, g), inverse)| partial((x, g, inverse)))
                .reduce(
                    || vec![0.0; hidden],
                    |a, b| a.iter().zip(&b).map(|(a, b)| a + b).collect(),
                );
            let sum = sum.into_iter().map(|s| s as f32).collect();
            grads.register::<Flex>(node.id, from_values(sum, vec![hidden]));
        }
    }
}
