//! AdamW with Burn's numbers and state, in one pass per parameter on the CPU backend.
//!
//! Burn's `AdamW` makes about a dozen tensor passes per parameter (scale, add, square, bias
//! corrections, square root, division, update), each allocating, on one core. For full
//! fine-tuning of SmolLM2 that was a tenth of a step. This optimizer updates the parameter and
//! both moments in place, in one pass with rows in parallel, on `Flex`; on other backends it
//! is Burn's `AdamW`. The state is Burn's `AdamWState`, so checkpoints are unchanged.

use burn::optim::adaptor::OptimizerAdaptor;
use burn::optim::{AdamW, AdamWConfig, AdamWState, LearningRate, SimpleOptimizer};
use burn::tensor::backend::{AutodiffBackend, Backend};
use burn::tensor::{Device, Tensor};

/// AdamW's settings, with the step of [`SimpleOptimizer`].
#[derive(Clone)]
pub struct FusedAdamW {
    composed: AdamW,
    beta_1: f32,
    beta_2: f32,
    epsilon: f32,
    weight_decay: f32,
}

impl FusedAdamW {
    pub(crate) fn new(beta_1: f32, beta_2: f32, epsilon: f32, weight_decay: f32) -> Self {
        let composed = AdamWConfig::new()
            .with_beta_1(beta_1)
            .with_beta_2(beta_2)
            .with_epsilon(epsilon)
            .with_weight_decay(weight_decay)
            .build();
        FusedAdamW {
            composed,
            beta_1,
            beta_2,
            epsilon,
            weight_decay,
        }
    }

    /// The optimizer over a module's parameters (no gradient clipping here: the step clips).
    pub(crate) fn adaptor<M, B>(self) -> OptimizerAdaptor<Self, M, B>
    where
        B: AutodiffBackend,
        M: burn::module::AutodiffModule<B>,
    {
        OptimizerAdaptor::from(self)
    }
}

impl<B: Backend> SimpleOptimizer<B> for FusedAdamW {
    type State<const D: usize> = AdamWState<B, D>;

    fn step<const D: usize>(
        &self,
        lr: LearningRate,
        tensor: Tensor<B, D>,
        grad: Tensor<B, D>,
        state: Option<Self::State<D>>,
    ) -> (Tensor<B, D>, Option<Self::State<D>>) {
        #[cfg(feature = "flex")]
        let (tensor, grad, state) = match flex::step(self, lr, tensor, grad, state) {
            Ok(stepped) => return stepped,
            Err(inputs) => inputs,
        };
        self.composed.step(lr, tensor, grad, state)
    }

    fn to_device<const D: usize>(state: Self::State<D>, device: &Device<B>) -> Self::State<D> {
        <AdamW as SimpleOptimizer<B>>::to_device(state, device)
    }
}

/// One parameter's update, given its gradient and both moments, all in place. `time` counts
/// this step (1 on the first). The same operations in the same order as Burn's `AdamW`.
#[derive(Clone, Copy, Debug)]
struct Update {
    beta_1: f32,
    beta_2: f32,
    epsilon: f32,
    /// `1 - lr * weight_decay`, as Burn rounds it (f64, then f32).
    keep: f32,
    lr: f32,
    /// `1 - beta^time` for each moment.
    correction_1: f32,
    correction_2: f32,
    first: bool,
}

impl Update {
    fn new(adamw: &FusedAdamW, lr: LearningRate, time: usize) -> Self {
        let decay = lr * adamw.weight_decay as f64;
        Update {
            beta_1: adamw.beta_1,
            beta_2: adamw.beta_2,
            epsilon: adamw.epsilon,
            keep: (1.0 - decay) as f32,
            lr: lr as f32,
            correction_1: 1.0 - adamw.beta_1.powi(time as i32),
            correction_2: 1.0 - adamw.beta_2.powi(time as i32),
            first: time == 1,
        }
    }

    fn apply(&self, param: &mut f32, grad: f32, m: &mut f32, v: &mut f32) {
        let (factor_1, factor_2) = (1.0 - self.beta_1, 1.0 - self.beta_2);
        if self.first {
            *m = grad * factor_1;
            *v = grad * grad * factor_2;
        } else {
            *m = *m * self.beta_1 + grad * factor_1;
            *v = *v * self.beta_2 + grad * grad * factor_2;
        }
        let delta = (*m / self.correction_1) / ((*v / self.correction_2).sqrt() + self.epsilon);
        let decayed = if self.keep == 1.0 {
            *param
        } else {
            *param * self.keep
        };
        *param = decayed - delta * self.lr;
    }
}

#[cfg(feature = "flex")]
mod flex {
    use burn::backend::Flex;
    use burn::optim::{AdamWState, AdaptiveMomentumState, LearningRate};
    use burn::tensor::{Tensor, TensorPrimitive, backend::Backend};
    use burn_flex::FlexTensor;
    use rayon::prelude::*;

    use super::{FusedAdamW, Update};
    use crate::nn::autodiff_route::{cast, same_type};
    use crate::nn::flex_tensor::{from_values, primitive, values, writable};

    type Inputs<B, const D: usize> = (Tensor<B, D>, Tensor<B, D>, Option<AdamWState<B, D>>);
    type Stepped<B, const D: usize> = (Tensor<B, D>, Option<AdamWState<B, D>>);

    /// Values per parallel task: big enough that a task outweighs its scheduling.
    const CHUNK: usize = 1 << 16;

    pub(super) fn step<B: Backend, const D: usize>(
        adamw: &FusedAdamW,
        lr: LearningRate,
        tensor: Tensor<B, D>,
        grad: Tensor<B, D>,
        state: Option<AdamWState<B, D>>,
    ) -> Result<Stepped<B, D>, Inputs<B, D>> {
        let tensor = match cast::<_, Tensor<Flex, D>>(tensor) {
            Ok(tensor) => tensor,
            Err(tensor) => return Err((tensor, grad, state)),
        };
        let grad: Tensor<Flex, D> = same_type(grad).expect("B is Flex");
        let state: Option<AdamWState<Flex, D>> = same_type(state).expect("B is Flex");
        let shape = tensor.dims();
        let (time, moments) = match state {
            Some(s) => (
                s.momentum.time + 1,
                Some((s.momentum.moment_1, s.momentum.moment_2)),
            ),
            None => (1, None),
        };
        let mut param = writable(primitive(tensor));
        let grad = primitive(grad);
        let (mut m, mut v) = match moments {
            Some((m, v)) => (writable(primitive(m)), writable(primitive(v))),
            None => (zeros(&shape), zeros(&shape)),
        };
        let update = Update::new(adamw, lr, time);
        param
            .storage_mut::<f32>()
            .par_chunks_mut(CHUNK)
            .zip(values(&grad).par_chunks(CHUNK))
            .zip(m.storage_mut::<f32>().par_chunks_mut(CHUNK))
            .zip(v.storage_mut::<f32>().par_chunks_mut(CHUNK))
            .for_each(|(((p, g), m), v)| {
                for (((p, &g), m), v) in p.iter_mut().zip(g).zip(m).zip(v) {
                    update.apply(p, g, m, v);
                }
            });
        let tensor = |t: FlexTensor| Tensor::<Flex, D>::from_primitive(TensorPrimitive::Float(t));
        let mut momentum = AdaptiveMomentumState::new(time, tensor(m), tensor(v));
        momentum.max_moment_2 = None;
        let state = AdamWState { momentum };
        Ok((
            same_type(tensor(param)).expect("B is Flex"),
            same_type(Some(state)).expect("B is Flex"),
        ))
    }

    fn zeros(shape: &[usize]) -> FlexTensor {
        from_values(vec![0.0; shape.iter().product()], shape.to_vec())
    }
}

#[cfg(all(test, feature = "flex"))]
mod tests {
    use burn::backend::Flex;
    use burn::optim::{AdamWConfig, SimpleOptimizer};
    use burn::tensor::{Distribution, Tensor};

    use super::FusedAdamW;

    fn max_relative(a: Tensor<Flex, 2>, b: Tensor<Flex, 2>) -> f32 {
        let scale = b.clone().abs().max().into_scalar();
        (a - b).abs().max().into_scalar() / scale
    }

    #[test]
    fn steps_equal_burns_adamw_with_and_without_decay() {
        let device = Default::default();
        for weight_decay in [0.0, 0.1] {
            let (beta_1, beta_2, epsilon) = (0.9, 0.95, 1e-6);
            let fused = FusedAdamW::new(beta_1, beta_2, epsilon, weight_decay);
            let burns = AdamWConfig::new()
                .with_beta_1(beta_1)
                .with_beta_2(beta_2)
                .with_epsilon(epsilon)
                .with_weight_decay(weight_decay)
                .build();
            let start = Tensor::<Flex, 2>::random([70, 1000], Distribution::Default, &device);
            let (mut ours, mut theirs) = (start.clone(), start);
            let (mut our_state, mut their_state) = (None, None);
            for step in 0..3 {
                let grad =
                    Tensor::<Flex, 2>::random([70, 1000], Distribution::Normal(0.0, 1.0), &device);
                let lr = 1e-2 / (step + 1) as f64;
                (ours, our_state) = fused.step(lr, ours, grad.clone(), our_state);
                (theirs, their_state) =
                    SimpleOptimizer::<Flex>::step(&burns, lr, theirs, grad, their_state);
            }
            assert!(
                max_relative(ours.clone(), theirs.clone()) <= 1e-6,
                "decay {weight_decay}"
            );
            let (ours, theirs) = (our_state.unwrap().momentum, their_state.unwrap().momentum);
            assert_eq!(ours.time, theirs.time);
            assert!(max_relative(ours.moment_1, theirs.moment_1) <= 1e-6);
            assert!(max_relative(ours.moment_2, theirs.moment_2) <= 1e-6);
        }
    }
}
