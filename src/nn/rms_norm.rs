//! Root-mean-square layer norm with the Hugging Face parameter name `weight`.

use burn::config::Config;
use burn::module::{Initializer, Module, Param};
use burn::tensor::{DType, Tensor, backend::Backend};

use super::precision::{in_f32, to_dtype};

/// The width and epsilon of an [`RmsNorm`].
#[derive(Config, Debug)]
pub struct RmsNormConfig {
    /// Width of the normalised axis.
    pub hidden: usize,
    /// Added to the mean square before the square root.
    pub eps: f64,
}

impl RmsNormConfig {
    /// A norm with unit gain (lazily initialised).
    pub fn init<B: Backend>(&self, device: &B::Device) -> RmsNorm<B> {
        RmsNorm {
            weight: Initializer::Ones.init([self.hidden], device),
            eps: self.eps,
        }
    }
}

/// `x * rsqrt(mean(x^2) + eps) * weight` over the last axis.
#[derive(Module, Debug)]
pub struct RmsNorm<B: Backend> {
    /// Per-channel gain, `[hidden]`.
    pub weight: Param<Tensor<B, 1>>,
    eps: f64,
}

impl<B: Backend> RmsNorm<B> {
    /// Computed in f32 whatever `x`'s type, the result given back in it (as transformers and
    /// PyTorch AMP keep norms in f32).
    ///
    /// # Shapes
    /// - x: `[..., hidden]`, returned in the same shape.
    pub fn forward<const D: usize>(&self, x: Tensor<B, D>) -> Tensor<B, D> {
        in_f32(x, |x| self.forward_f32(x))
    }

    fn forward_f32<const D: usize>(&self, x: Tensor<B, D>) -> Tensor<B, D> {
        let weight = to_dtype(self.weight.val(), DType::F32);
        #[cfg(feature = "flex")]
        let x = match super::rms_norm_op::rms_norm(x, &weight, self.eps) {
            Ok(y) => return y,
            Err(x) => x,
        };
        composed_rms_norm(x, weight, self.eps)
    }
}

/// Burn's ops one after the other: the route of the GPU backends, and the reference the CPU
/// route is tested against.
pub(crate) fn composed_rms_norm<B: Backend, const D: usize>(
    x: Tensor<B, D>,
    weight: Tensor<B, 1>,
    eps: f64,
) -> Tensor<B, D> {
    let inv_rms = (x.clone().powi_scalar(2).mean_dim(D - 1) + eps)
        .sqrt()
        .recip();
    x * inv_rms * weight.unsqueeze()
}

#[cfg(all(test, feature = "flex"))]
mod tests {
    use burn::backend::{Autodiff, Flex};
    use burn::tensor::{Distribution, Tensor};

    use super::{RmsNormConfig, composed_rms_norm};

    type A = Autodiff<Flex>;

    fn max_relative<const D: usize>(a: Tensor<Flex, D>, b: Tensor<Flex, D>) -> f32 {
        let scale = b.clone().abs().max().into_scalar();
        (a - b).abs().max().into_scalar() / scale
    }

    #[test]
    fn output_and_gradients_equal_the_composed_route() {
        let device = Default::default();
        let normal = Distribution::Normal(0.0, 2.0);
        let x = Tensor::<Flex, 3>::random([2, 37, 48], normal, &device);
        let weight = Tensor::<Flex, 1>::random([48], normal, &device);
        let upstream = Tensor::<Flex, 3>::random([2, 37, 48], normal, &device);
        let run = |fused: bool| {
            let x = Tensor::<A, 3>::from_inner(x.clone()).require_grad();
            let w = Tensor::<A, 1>::from_inner(weight.clone()).require_grad();
            let y = if fused {
                super::super::rms_norm_op::rms_norm(x.clone(), &w, 1e-5).expect("the CPU route")
            } else {
                composed_rms_norm(x.clone(), w.clone(), 1e-5)
            };
            let grads = (y.clone() * Tensor::from_inner(upstream.clone()))
                .sum()
                .backward();
            (y.inner(), x.grad(&grads).unwrap(), w.grad(&grads).unwrap())
        };
        let (y, x_grad, w_grad) = run(true);
        let (y_ref, x_ref, w_ref) = run(false);
        assert!(max_relative(y, y_ref) <= 1e-6);
        assert!(max_relative(x_grad, x_ref) <= 1e-5);
        assert!(max_relative(w_grad, w_ref) <= 1e-5);
    }

    #[test]
    fn the_module_takes_the_cpu_route_on_the_plain_backend() {
        let device = Default::default();
        let norm = RmsNormConfig::new(48, 1e-5).init::<Flex>(&device);
        let x = Tensor::<Flex, 3>::random([2, 5, 48], Distribution::Default, &device);
        let fused = super::super::rms_norm_op::rms_norm(x.clone(), &norm.weight.val(), 1e-5);
        let Ok(fused) = fused else {
            panic!("the CPU route")
        };
        assert!(max_relative(norm.forward(x.clone()), fused.clone()) == 0.0);
        assert!(max_relative(fused, composed_rms_norm(x, norm.weight.val(), 1e-5)) <= 1e-6);
    }
}
