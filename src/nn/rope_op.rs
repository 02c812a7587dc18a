//! Rotary position embedding on the CPU backend as one op that also moves heads before
//! positions.
//!
//! Composed of Burn's ops, the rotation of queries or keys copies them into heads-first order,
//! takes two halves, negates one, concatenates, multiplies twice and adds: seven passes forward
//! and as many backward, on one core. This op reads `[batch, seq, heads, head_dim]` as the
//! projection wrote it and writes `[batch, heads, seq, head_dim]` in one pass, rows in parallel;
//! its backward pass is one pass the other way. It keeps nothing but the tables.

use burn::backend::autodiff::checkpoint::base::Checkpointer;
use burn::backend::autodiff::checkpoint::strategy::NoCheckpointing;
use burn::backend::autodiff::grads::Gradients;
use burn::backend::autodiff::ops::{Backward, Ops, OpsKind, unary};
use burn::backend::{Autodiff, Flex};
use burn::tensor::{DType, Tensor, TensorPrimitive, backend::Backend};
use burn_flex::FlexTensor;
use rayon::prelude::*;

use super::autodiff_route::{cast, same_type};
use super::flex_tensor::{from_values, primitive, values};

/// `x * cos + rotate_half(x) * sin`, heads moved before positions, when `B` is `Flex` or
/// `Autodiff<Flex>`; `x` back otherwise.
///
/// # Shapes
/// - x: `[batch, seq, heads, head_dim]`, cos and sin: `[seq, head_dim]`; returns
///   `[batch, heads, seq, head_dim]`.
pub(crate) fn rope<B: Backend>(
    x: Tensor<B, 4>,
    cos: &Tensor<B, 2>,
    sin: &Tensor<B, 2>,
) -> Result<Tensor<B, 4>, Tensor<B, 4>> {
    if [x.dtype(), cos.dtype(), sin.dtype()] != [DType::F32; 3] {
        return Err(x);
    }
    let x = match cast::<_, Tensor<Flex, 4>>(x) {
        Ok(x) => {
            let cos: Tensor<Flex, 2> = same_type(cos.clone()).expect("B is Flex");
            let sin: Tensor<Flex, 2> = same_type(sin.clone()).expect("B is Flex");
            let tables = Tables::of(cos, sin);
            let shape = x.dims();
            let out = forward(&primitive(x), &tables, shape);
            let out = Tensor::<Flex, 4>::from_primitive(TensorPrimitive::Float(out));
            return Ok(same_type(out).expect("B is Flex"));
        }
        Err(x) => x,
    };
    match cast::<_, Tensor<Autodiff<Flex>, 4>>(x) {
        Ok(x) => {
            let cos: Tensor<Autodiff<Flex>, 2> = same_type(cos.clone()).expect("B is Autodiff");
            let sin: Tensor<Autodiff<Flex>, 2> = same_type(sin.clone()).expect("B is Autodiff");
            let tables = Tables::of(cos.inner(), sin.inner());
            Ok(same_type(autodiff_rope(x, tables)).expect("B is Autodiff<Flex>"))
        }
        Err(x) => Err(x),
    }
}

/// The tables as plain values, `[seq, head_dim]` each.
#[derive(Clone, Debug)]
struct Tables {
    cos: FlexTensor,
    sin: FlexTensor,
}

impl Tables {
    fn of(cos: Tensor<Flex, 2>, sin: Tensor<Flex, 2>) -> Self {
        Tables {
            cos: primitive(cos),
            sin: primitive(sin),
        }
    }
}

/// `[batch, seq, heads, d] -> [batch, heads, seq, d]`, rotated.
fn forward(x: &FlexTensor, tables: &Tables, [batch, seq, heads, dim]: [usize; 4]) -> FlexTensor {
    let (x, cos, sin) = (values(x), values(&tables.cos), values(&tables.sin));
    let half = dim / 2;
    let mut out = vec![0.0f32; x.len()];
    out.par_chunks_mut(dim.max(1))
        .enumerate()
        .for_each(|(row, out)| {
            // Output row `row` is (b, h, s); its input is x[b, s, h].
            let (s, h, b) = (row % seq, (row / seq) % heads, row / (seq * heads));
            let x = &x[((b * seq + s) * heads + h) * dim..][..dim];
            let (cos, sin) = (&cos[s * dim..][..dim], &sin[s * dim..][..dim]);
            for i in 0..half {
                out[i] = x[i] * cos[i] - x[i + half] * sin[i];
                out[i + half] = x[i + half] * cos[i + half] + x[i] * sin[i + half];
            }
        });
    from_values(out, vec![batch, heads, seq, dim])
}

/// The gradient `[batch, heads, seq, d]` back to `[batch, seq, heads, d]`: the transposed
/// rotation, `g * cos` plus `sin`-weighted halves swapped the other way.
fn backward(
    grad: &FlexTensor,
    tables: &Tables,
    [batch, heads, seq, dim]: [usize; 4],
) -> FlexTensor {
    let (g, cos, sin) = (values(grad), values(&tables.cos), values(&tables.sin));
    let half = dim / 2;
    let mut out = vec![0.0f32; g.len()];
    out.par_chunks_mut(dim.max(1))
        .enumerate()
        .for_each(|(row, out)| {
            // Input-gradient row `row` is (b, s, h); its upstream gradient is g[b, h, s].
            let (h, s, b) = (row % heads, (row / heads) % seq, row / (heads * seq));
            let g = &g[((b * heads + h) * seq + s) * dim..][..dim];
            let (cos, sin) = (&cos[s * dim..][..dim], &sin[s * dim..][..dim]);
            for i in 0..half {
                out[i] = g[i] * cos[i] + g[i + half] * sin[i + half];
                out[i + half] = g[i + half] * cos[i + half] - g[i] * sin[i];
            }
        });
    from_values(out, vec![batch, seq, heads, dim])
}

fn autodiff_rope(x: Tensor<Autodiff<Flex>, 4>, tables: Tables) -> Tensor<Autodiff<Flex>, 4> {
    let shape = x.dims();
    let x = x.into_primitive().tensor();
    let inner = Tensor::<Flex, 4>::from_primitive(TensorPrimitive::Float(x.primitive.clone()));
    let out = forward(&primitive(inner), &tables, shape);
    let out = match RopeBackward
        .prepare::<NoCheckpointing>([x.node.clone()])
        .compute_bound()
        .stateful()
    {
        OpsKind::Tracked(prep) => prep.finish(tables, out),
        OpsKind::UnTracked(prep) => prep.finish(out),
    };
    Tensor::from_primitive(TensorPrimitive::Float(out))
}

#[derive(Debug)]
struct RopeBackward;

impl Backward<Flex, 1> for RopeBackward {
    type State = Tables;

    fn backward(self, ops: Ops<Self::State, 1>, grads: &mut Gradients, _: &mut Checkpointer) {
        let tables = ops.state;
        unary::<Flex, _>(ops.parents, ops.node, grads, |grad| {
            let shape = grad.layout().shape().to_vec();
            let shape = [shape[0], shape[1], shape[2], shape[3]];
            let grad = super::flex_tensor::contiguous(grad);
            backward(&grad, &tables, shape)
        });
    }
}

#[cfg(test)]
mod tests {
    use burn::backend::{Autodiff, Flex};
    use burn::tensor::{DType, Distribution, Tensor};

    use super::rope;
    use crate::nn::rope::composed_rope;
    use crate::nn::{DeviceCache, Rope};

    type A = Autodiff<Flex>;

    fn max_relative(a: Tensor<Flex, 4>, b: Tensor<Flex, 4>) -> f32 {
        let scale = b.clone().abs().max().into_scalar();
        (a - b).abs().max().into_scalar() / scale
    }

    #[test]
    fn rotation_and_gradient_equal_the_composed_route() {
        let device = Default::default();
        let tables = Rope::new(8, 10000.0, None).tables::<A>(
            3,
            5,
            DType::F32,
            &DeviceCache::default(),
            &device,
        );
        let (cos, sin) = tables.parts();
        let normal = Distribution::Normal(0.0, 2.0);
        let x = Tensor::<Flex, 4>::random([2, 5, 3, 8], normal, &device);
        let upstream = Tensor::<Flex, 4>::random([2, 3, 5, 8], normal, &device);
        let run = |fused: bool| {
            let x = Tensor::<A, 4>::from_inner(x.clone()).require_grad();
            let y = if fused {
                rope(x.clone(), &cos, &sin).expect("the one-pass route")
            } else {
                composed_rope(x.clone(), cos.clone(), sin.clone())
            };
            let grads = (y.clone() * Tensor::from_inner(upstream.clone()))
                .sum()
                .backward();
            (y.inner(), x.grad(&grads).unwrap())
        };
        let (y, grad) = run(true);
        let (y_ref, grad_ref) = run(false);
        assert_eq!(y.dims(), [2, 3, 5, 8]);
        assert!(max_relative(y, y_ref) <= 1e-6);
        assert!(max_relative(grad, grad_ref) <= 1e-6);
    }

    #[test]
    fn the_plain_backend_takes_the_one_pass_route() {
        let device = Default::default();
        let tables = Rope::new(8, 10000.0, None).tables::<Flex>(
            0,
            4,
            DType::F32,
            &DeviceCache::default(),
            &device,
        );
        let (cos, sin) = tables.parts();
        let x = Tensor::<Flex, 4>::random([1, 4, 2, 8], Distribution::Default, &device);
        let y = rope(x.clone(), &cos, &sin).expect("the one-pass route");
        assert!(max_relative(y, composed_rope(x, cos, sin)) <= 1e-6);
    }
}
