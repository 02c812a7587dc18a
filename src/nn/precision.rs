//! Mixed precision: the float type activations and products use, and frozen weights stored in
//! it, while trainable weights (the master copies) and their optimizer state stay f32.
//!
//! The rule follows PyTorch AMP and transformers' half-precision models: products run in the
//! half type; RMSNorm, the attention softmax and the loss run in f32 on inputs cast up and give
//! their result back in the half type; an f32 weight is cast down where it is used, so its
//! gradient comes back in f32. With [`Precision::F32`] no cast is made anywhere.

use std::fmt;

use burn::module::{Module, ModuleMapper, Param};
use burn::tensor::{DType, FloatDType, Tensor, backend::Backend};

use crate::error::{Error, Result};

/// The float type of activations and of frozen weights.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, clap::ValueEnum)]
pub enum Precision {
    /// Everything in f32 (the default).
    #[default]
    F32,
    /// bfloat16 activations and frozen weights; f32 master weights and AdamW state (CUDA, and
    /// the CPU; not lavapipe).
    Bf16,
    /// IEEE half activations and frozen weights; f32 master weights and AdamW state (wgpu
    /// where the adapter has `shader-f16`, CUDA, the CPU).
    F16,
}

impl Precision {
    /// The Burn dtype of activations.
    pub fn dtype(self) -> DType {
        match self {
            Precision::F32 => DType::F32,
            Precision::Bf16 => DType::BF16,
            Precision::F16 => DType::F16,
        }
    }

    /// [`Error::PrecisionUnsupported`] unless `B`'s `device` can store, convert and compute in
    /// this type (asked of the backend, so before any work starts).
    pub fn check_supported<B: Backend>(self, backend: &str, device: &B::Device) -> Result<()> {
        if B::supports_dtype(device, self.dtype()) {
            return Ok(());
        }
        let other = match self {
            Precision::Bf16 => Some(Precision::F16),
            Precision::F16 => Some(Precision::Bf16),
            Precision::F32 => None,
        };
        let alternative = other
            .filter(|p| B::supports_dtype(device, p.dtype()))
            .map_or(String::new(), |p| format!(" or --dtype {p}"));
        Err(Error::PrecisionUnsupported {
            precision: self.to_string(),
            backend: backend.to_string(),
            alternative,
        })
    }
}

/// The command-line name: `f32`, `bf16`, `f16`.
impl fmt::Display for Precision {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let name = clap::ValueEnum::to_possible_value(self).expect("no variant is skipped");
        f.write_str(name.get_name())
    }
}

/// `tensor` in `dtype`: itself when it is already, so that f32 runs add no op.
pub(crate) fn to_dtype<B: Backend, const D: usize>(
    tensor: Tensor<B, D>,
    dtype: DType,
) -> Tensor<B, D> {
    if tensor.dtype() == dtype {
        tensor
    } else {
        tensor.cast(FloatDType::from(dtype))
    }
}

/// `f` applied to `x` cast up to f32, its result cast back to `x`'s type: the ops that mixed
/// precision keeps in f32.
pub(crate) fn in_f32<B: Backend, const D: usize, const E: usize>(
    x: Tensor<B, D>,
    f: impl FnOnce(Tensor<B, D>) -> Tensor<B, E>,
) -> Tensor<B, E> {
    let dtype = x.dtype();
    to_dtype(f(to_dtype(x, DType::F32)), dtype)
}

/// Every float parameter that does not require a gradient, stored in `precision`'s type;
/// trainable ones are left in theirs. Constants that are not parameters (NF4 codes and
/// scales) are not visited.
pub fn store_frozen_as<B: Backend, M: Module<B>>(module: M, precision: Precision) -> M {
    module.map(&mut FrozenCaster {
        dtype: precision.dtype(),
    })
}

struct FrozenCaster {
    dtype: DType,
}

impl<B: Backend> ModuleMapper<B> for FrozenCaster {
    fn map_float<const D: usize>(&mut self, param: Param<Tensor<B, D>>) -> Param<Tensor<B, D>> {
        if param.is_require_grad() {
            return param;
        }
        let dtype = self.dtype;
        param.map(|tensor| to_dtype(tensor, dtype))
    }
}

#[cfg(all(test, feature = "flex"))]
mod tests {
    use burn::backend::{Autodiff, Flex};
    use burn::module::{Module, Param};
    use burn::tensor::{DType, Tensor};

    use super::{Precision, in_f32, store_frozen_as, to_dtype};

    #[derive(Module, Debug)]
    struct Two<B: burn::tensor::backend::Backend> {
        trained: Param<Tensor<B, 1>>,
        frozen: Param<Tensor<B, 1>>,
    }

    #[test]
    fn only_frozen_parameters_change_type_and_keep_their_ids() {
        type A = Autodiff<Flex>;
        let device = Default::default();
        let two = Two::<A> {
            trained: Param::from_tensor(Tensor::from_floats([1.0, 2.0], &device)),
            frozen: Param::from_tensor(Tensor::from_floats([1.0 / 3.0, 3.0], &device))
                .set_require_grad(false),
        };
        let ids = (two.trained.id, two.frozen.id);
        let two = store_frozen_as(two, Precision::Bf16);
        assert_eq!(two.trained.val().dtype(), DType::F32);
        assert_eq!(two.frozen.val().dtype(), DType::BF16);
        assert_eq!((two.trained.id, two.frozen.id), ids);
        assert!(two.trained.is_require_grad() && !two.frozen.is_require_grad());
        // bf16 keeps 8 significant bits: 1/3 becomes 171/512 (0.333984375).
        let values = two
            .frozen
            .val()
            .into_data()
            .convert::<f32>()
            .to_vec::<f32>();
        assert_eq!(values.unwrap(), vec![171.0 / 512.0, 3.0]);
    }

    #[test]
    fn a_gradient_through_a_cast_comes_back_in_the_weights_type() {
        type A = Autodiff<Flex>;
        let device = Default::default();
        let w = Tensor::<A, 1>::from_floats([0.5, -2.0], &device).require_grad();
        let x =
            Tensor::<A, 1>::from_floats([3.0, 4.0], &device).cast(burn::tensor::FloatDType::BF16);
        let y = in_f32(x * to_dtype(w.clone(), DType::BF16), |y| y.sum());
        assert_eq!(y.dtype(), DType::BF16);
        let grads = y.backward();
        let grad = w.grad(&grads).expect("w is tracked");
        assert_eq!(grad.dtype(), DType::F32);
        assert_eq!(grad.to_data().to_vec::<f32>().unwrap(), vec![3.0, 4.0]);
    }
}
