//! `silu(gate) * up`, the gated activation of Llama's MLP, as one autodiff op that keeps only its
//! two inputs for the backward pass.
//!
//! Composed of Burn's ops (`gate * sigmoid(gate)`, then `* up`), the graph keeps the gate, its
//! sigmoid, the SiLU and the up branch: four `[tokens, intermediate]` tensors per layer, the
//! largest activations of a decoder layer. This op keeps the gate and the up branch and computes
//! the sigmoid again in the backward pass. On the CPU backend in f32 it makes one pass each way,
//! rows in parallel; on the GPU backends, and on the CPU in half precision, it is built from
//! Burn's ops on the inner backend (reached as [`super::autodiff_route`] says); elsewhere the
//! composed route runs.

use burn::backend::Autodiff;
use burn::backend::autodiff::checkpoint::base::Checkpointer;
use burn::backend::autodiff::checkpoint::strategy::NoCheckpointing;
use burn::backend::autodiff::grads::Gradients;
use burn::backend::autodiff::ops::{Backward, Ops, OpsKind, binary};
use burn::tensor::activation::{sigmoid, silu};
use burn::tensor::{Tensor, TensorPrimitive, backend::Backend};

use super::autodiff_route::{is_autodiff_of, same_type};

/// `silu(gate) * up`, elementwise; `gate` and `up` have the same shape.
pub(crate) fn swiglu<B: Backend>(gate: Tensor<B, 3>, up: Tensor<B, 3>) -> Tensor<B, 3> {
    #[cfg(feature = "flex")]
    let (gate, up) = match flex::swiglu(gate, up) {
        Ok(y) => return y,
        Err(inputs) => inputs,
    };
    // Half-precision inputs on the CPU: the op built from Burn's ops, still keeping two inputs.
    #[cfg(feature = "flex")]
    if let Some(y) = fused::<B, burn::backend::Flex>(&gate, &up) {
        return y;
    }
    #[cfg(feature = "wgpu")]
    if let Some(y) = fused::<B, burn::backend::Wgpu>(&gate, &up) {
        return y;
    }
    #[cfg(feature = "cuda")]
    if let Some(y) = fused::<B, burn::backend::Cuda>(&gate, &up) {
        return y;
    }
    composed_swiglu(gate, up)
}

/// Burn's ops one after the other: the reference the fused route is tested against.
pub(crate) fn composed_swiglu<B: Backend>(gate: Tensor<B, 3>, up: Tensor<B, 3>) -> Tensor<B, 3> {
    silu(gate) * up
}

/// `Some(silu(gate) * up)` through [`SwigluBackward`] when `B` is `Autodiff<I>`.
#[cfg_attr(
    not(any(feature = "flex", feature = "wgpu", feature = "cuda")),
    allow(dead_code)
)]
fn fused<B: Backend, I: Backend>(gate: &Tensor<B, 3>, up: &Tensor<B, 3>) -> Option<Tensor<B, 3>> {
    if !is_autodiff_of::<B, I>() {
        return None;
    }
    let gate: Tensor<Autodiff<I>, 3> = same_type(gate.clone())?;
    let up: Tensor<Autodiff<I>, 3> = same_type(up.clone())?;
    same_type(autodiff_swiglu(gate, up))
}

#[cfg_attr(
    not(any(feature = "flex", feature = "wgpu", feature = "cuda")),
    allow(dead_code)
)]
fn autodiff_swiglu<I: Backend>(
    gate: Tensor<Autodiff<I>, 3>,
    up: Tensor<Autodiff<I>, 3>,
) -> Tensor<Autodiff<I>, 3> {
    let (gate, up) = (gate.into_primitive().tensor(), up.into_primitive().tensor());
    let inner = |t: &burn::tensor::ops::FloatTensor<I>| {
        Tensor::<I, 3>::from_primitive(TensorPrimitive::Float(t.clone()))
    };
    let (gate_inner, up_inner) = (inner(&gate.primitive), inner(&up.primitive));
    let y = composed_swiglu(gate_inner.clone(), up_inner.clone())
        .into_primitive()
        .tensor();
    let y = match SwigluBackward
        .prepare::<NoCheckpointing>([gate.node.clone(), up.node.clone()])
        .compute_bound()
        .stateful()
    {
        OpsKind::Tracked(prep) => prep.finish((gate_inner, up_inner), y),
        OpsKind::UnTracked(prep) => prep.finish(y),
    };
    Tensor::from_primitive(TensorPrimitive::Float(y))
}

/// `d/dgate = grad * up * s * (1 + gate - silu(gate))` (`s * (1 + gate * (1 - s))`) with `s = sigmoid(gate)`, and
/// `d/dup = grad * silu(gate)`.
#[cfg_attr(
    not(any(feature = "flex", feature = "wgpu", feature = "cuda")),
    allow(dead_code)
)]
#[derive(Debug)]
struct SwigluBackward;

impl<I: Backend> Backward<I, 2> for SwigluBackward {
    type State = (Tensor<I, 3>, Tensor<I, 3>);

    fn backward(self, ops: Ops<Self::State, 2>, grads: &mut Gradients, _: &mut Checkpointer) {
        let (gate, up) = ops.state;
        let float = |t: Tensor<I, 3>| t.into_primitive().tensor();
        let tensor = |p| Tensor::<I, 3>::from_primitive(TensorPrimitive::Float(p));
        let s = sigmoid(gate.clone());
        let silu_gate = gate.clone() * s.clone();
        binary::<I, _, _>(
            ops.parents,
            ops.node,
            grads,
            |grad| {
                let slope = s.clone() * (gate - silu_gate.clone() + 1.0);
                float(tensor(grad) * up * slope)
            },
            |grad| float(tensor(grad) * silu_gate.clone()),
        );
    }
}

/// On the CPU backend: one pass each way, rows in parallel, keeping gate and up.
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

    use crate::nn::autodiff_route::{cast, same_type};
    use crate::nn::flex_tensor::{contiguous, from_values, primitive, values};

    /// Values per parallel task.
    const CHUNK: usize = 1 << 14;

    /// The one-pass route when `B` is `Flex` or `Autodiff<Flex>`; the inputs back otherwise.
    pub(super) fn swiglu<B: Backend>(
        gate: Tensor<B, 3>,
        up: Tensor<B, 3>,
    ) -> Result<Tensor<B, 3>, (Tensor<B, 3>, Tensor<B, 3>)> {
        if gate.dtype() != DType::F32 || up.dtype() != DType::F32 {
            return Err((gate, up));
        }
        let gate = match cast::<_, Tensor<Flex, 3>>(gate) {
            Ok(gate) => {
                let up: Tensor<Flex, 3> = same_type(up).expect("B is Flex");
                let shape = gate.dims();
                let y = forward(&primitive(gate), &primitive(up), shape);
                let y = Tensor::<Flex, 3>::from_primitive(TensorPrimitive::Float(y));
                return Ok(same_type(y).expect("B is Flex"));
            }
            Err(gate) => gate,
        };
        match cast::<_, Tensor<Autodiff<Flex>, 3>>(gate) {
            Ok(gate) => {
                let up: Tensor<Autodiff<Flex>, 3> = same_type(up).expect("B is Autodiff<Flex>");
                Ok(same_type(autodiff_swiglu(gate, up)).expect("B is Autodiff<Flex>"))
            }
            Err(gate) => Err((gate, up)),
        }
    }

    fn sigmoid(x: f32) -> f32 {
        1.0 / (1.0 + (-x).exp())
    }

    fn forward(gate: &FlexTensor, up: &FlexTensor, shape: [usize; 3]) -> FlexTensor {
        let (gate, up) = (values(gate), values(up));
        let mut out = vec![0.0f32; gate.len()];
        out.par_chunks_mut(CHUNK)
            .zip(gate.par_chunks(CHUNK).zip(up.par_chunks(CHUNK)))
            .for_each(|(out, (gate, up))| {
                for ((o, &g), &u) in out.iter_mut().zip(gate).zip(up) {
                    *o = g * sigmoid(g) * u;
                }
            });
        from_values(out, shape.to_vec())
    }

    fn autodiff_swiglu(
        gate: Tensor<Autodiff<Flex>, 3>,
        up: Tensor<Autodiff<Flex>, 3>,
    ) -> Tensor<Autodiff<Flex>, 3> {
        let shape = gate.dims();
        let (gate, up) = (gate.into_primitive().tensor(), up.into_primitive().tensor());
        let (gate_inner, up_inner) = (
            contiguous(gate.primitive.clone()),
            contiguous(up.primitive.clone()),
        );
        let y = forward(&gate_inner, &up_inner, shape);
        let y = match SwigluBackward
            .prepare::<NoCheckpointing>([gate.node.clone(), up.node.clone()])
            .compute_bound()
            .stateful()
        {
            OpsKind::Tracked(prep) => prep.finish((gate_inner, up_inner), y),
            OpsKind::UnTracked(prep) => prep.finish(y),
        };
        Tensor::from_primitive(TensorPrimitive::Float(y))
    }

    /// As the generic route's backward, both gradients in one pass.
    #[derive(Debug)]
    struct SwigluBackward;

    impl Backward<Flex, 2> for SwigluBackward {
        type State = (FlexTensor, FlexTensor);

        fn backward(self, ops: Ops<Self::State, 2>, grads: &mut Gradients, _: &mut Checkpointer) {
            let (gate, up) = ops.state;
            let shape = gate.layout().shape().to_vec();
            let grad = contiguous(grads.consume::<Flex>(&ops.node));
            let (g, u, d) = (values(&gate), values(&up), values(&grad));
            let fill = |out: &mut [f32], start: usize, gate_side: bool| {
                for (i, o) in out.iter_mut().enumerate() {
                    let (g, u, d) = (g[start + i], u[start + i], d[start + i]);
                    let s = sigmoid(g);
                    *o = if gate_side {
                        d * u * s * (1.0 + g * (1.0 - s))
                    } else {
                        d * g * s
                    };
                }
            };
            let grad_of = |gate_side: bool| {
                let mut out = vec![0.0f32; g.len()];
                out.par_chunks_mut(CHUNK)
                    .enumerate()
                    .for_each(|(i, out)| fill(out, i * CHUNK, gate_side));
                from_values(out, shape.clone())
            };
            let [gate_node, up_node] = ops.parents;
            if let Some(node) = gate_node {
                grads.register::<Flex>(node.id, grad_of(true));
            }
            if let Some(node) = up_node {
                grads.register::<Flex>(node.id, grad_of(false));
            }
        }
    }
}

#[cfg(all(test, feature = "flex"))]
mod tests {
    use burn::backend::{Autodiff, Flex};
    use burn::tensor::{Distribution, Tensor};

    use super::{composed_swiglu, fused, swiglu};

    type A = Autodiff<Flex>;

    fn max_relative(a: Tensor<Flex, 3>, b: Tensor<Flex, 3>) -> f32 {
        let scale = b.clone().abs().max().into_scalar();
        (a - b).abs().max().into_scalar() / scale
    }

    #[test]
    fn the_fused_route_runs_on_autodiff_only() {
        let x = Tensor::<A, 3>::zeros([1, 2, 3], &Default::default());
        assert!(fused::<A, Flex>(&x, &x).is_some());
        let x = Tensor::<Flex, 3>::zeros([1, 2, 3], &Default::default());
        assert!(fused::<Flex, Flex>(&x, &x).is_none());
    }

    #[test]
    fn outputs_and_gradients_equal_the_composed_route() {
        let device = Default::default();
        let normal = Distribution::Normal(0.0, 3.0);
        let gate = Tensor::<Flex, 3>::random([2, 5, 64], normal, &device);
        let up = Tensor::<Flex, 3>::random([2, 5, 64], normal, &device);
        let upstream = Tensor::<Flex, 3>::random([2, 5, 64], normal, &device);
        let run = |f: fn(Tensor<A, 3>, Tensor<A, 3>) -> Tensor<A, 3>| {
            let gate = Tensor::<A, 3>::from_inner(gate.clone()).require_grad();
            let up = Tensor::<A, 3>::from_inner(up.clone()).require_grad();
            let y = f(gate.clone(), up.clone());
            let grads = (y.clone() * Tensor::from_inner(upstream.clone()))
                .sum()
                .backward();
            (
                y.inner(),
                gate.grad(&grads).unwrap(),
                up.grad(&grads).unwrap(),
            )
        };
        let (y_ref, gate_ref, up_ref) = run(composed_swiglu);
        // The CPU route, and the route of the GPU backends (here over Flex).
        let generic: fn(Tensor<A, 3>, Tensor<A, 3>) -> Tensor<A, 3> =
            |g, u| fused::<A, Flex>(&g, &u).expect("the autodiff route");
        for route in [swiglu, generic] {
            let (y, gate_grad, up_grad) = run(route);
            assert!(max_relative(y, y_ref.clone()) <= 1e-6);
            assert!(max_relative(gate_grad, gate_ref.clone()) <= 1e-6);
            assert!(max_relative(up_grad, up_ref.clone()) <= 1e-6);
        }
    }
}
