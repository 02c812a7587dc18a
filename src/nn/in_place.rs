//! Sums, scales and squared norms of gradients, in place and in parallel on the CPU backend.
//!
//! Accumulating, clipping and measuring gradients touch every trainable value: for full
//! fine-tuning of SmolLM2, 134 M of them several times a step. Burn's ops allocate a new
//! tensor for each result and run on one core; on `Flex` these write into the tensor they were
//! given (when it is not shared) with rows in parallel. Other backends use Burn's ops.

use burn::tensor::{Tensor, backend::Backend};

/// `sum + term`, in `sum`'s memory when it can be.
pub(crate) fn add_into<B: Backend, const D: usize>(
    sum: Tensor<B, D>,
    term: Tensor<B, D>,
) -> Tensor<B, D> {
    #[cfg(feature = "flex")]
    let (sum, term) = match flex::zip_into(sum, term, |s, t| *s += t) {
        Ok(sum) => return sum,
        Err(inputs) => inputs,
    };
    sum + term
}

/// `tensor * factor`, in `tensor`'s memory when it can be.
pub(crate) fn scale<B: Backend, const D: usize>(tensor: Tensor<B, D>, factor: f64) -> Tensor<B, D> {
    #[cfg(feature = "flex")]
    let tensor = match flex::map_in_place(tensor, factor as f32) {
        Ok(scaled) => return scaled,
        Err(tensor) => tensor,
    };
    tensor * factor
}

/// The sum of the squared values accumulated in f64, where they are in host memory (the CPU
/// backend); `None` for a device's tensor, which is better summed on its device.
pub(crate) fn host_squared_sum<B: Backend, const D: usize>(tensor: &Tensor<B, D>) -> Option<f64> {
    #[cfg(feature = "flex")]
    return flex::squared_sum(tensor);
    #[cfg(not(feature = "flex"))]
    {
        let _ = tensor;
        None
    }
}

#[cfg(feature = "flex")]
mod flex {
    use burn::backend::Flex;
    use burn::tensor::{Tensor, TensorPrimitive, backend::Backend};
    use burn_flex::FlexTensor;
    use rayon::prelude::*;

    use crate::nn::autodiff_route::{cast, same_type};
    use crate::nn::flex_tensor::{primitive, values, writable};

    /// Values per parallel task.
    const CHUNK: usize = 1 << 16;

    fn float<const D: usize>(t: FlexTensor) -> Tensor<Flex, D> {
        Tensor::from_primitive(TensorPrimitive::Float(t))
    }

    pub(super) fn zip_into<B: Backend, const D: usize>(
        sum: Tensor<B, D>,
        term: Tensor<B, D>,
        op: impl Fn(&mut f32, f32) + Sync,
    ) -> Result<Tensor<B, D>, (Tensor<B, D>, Tensor<B, D>)> {
        let sum = match cast::<_, Tensor<Flex, D>>(sum) {
            Ok(sum) if sum.dims() == term.dims() => sum,
            Ok(sum) => return Err((same_type(sum).expect("B is Flex"), term)),
            Err(sum) => return Err((sum, term)),
        };
        let term: Tensor<Flex, D> = same_type(term).expect("B is Flex");
        let mut sum = writable(sum.into_primitive().tensor());
        let term = primitive(term);
        // Copy-on-write: a shared `sum` is copied once, then written.
        sum.storage_mut::<f32>()
            .par_chunks_mut(CHUNK)
            .zip(values(&term).par_chunks(CHUNK))
            .for_each(|(s, t)| s.iter_mut().zip(t).for_each(|(s, &t)| op(s, t)));
        Ok(same_type(float::<D>(sum)).expect("B is Flex"))
    }

    pub(super) fn map_in_place<B: Backend, const D: usize>(
        tensor: Tensor<B, D>,
        factor: f32,
    ) -> Result<Tensor<B, D>, Tensor<B, D>> {
        let tensor: Tensor<Flex, D> = cast(tensor)?;
        let mut tensor = writable(tensor.into_primitive().tensor());
        tensor
            .storage_mut::<f32>()
            .par_chunks_mut(CHUNK)
            .for_each(|chunk| chunk.iter_mut().for_each(|v| *v *= factor));
        Ok(same_type(float::<D>(tensor)).expect("B is Flex"))
    }

    pub(super) fn squared_sum<B: Backend, const D: usize>(tensor: &Tensor<B, D>) -> Option<f64> {
        let tensor: Tensor<Flex, D> = cast(tensor.clone()).ok()?;
        let tensor = primitive(tensor);
        let sum = values(&tensor)
            .par_chunks(CHUNK)
            .map(|chunk| chunk.iter().map(|&v| (v as f64) * (v as f64)).sum::<f64>())
            .sum();
        Some(sum)
    }
}

#[cfg(all(test, feature = "flex"))]
mod tests {
    use burn::backend::Flex;
    use burn::tensor::{Distribution, Tensor};

    use super::{add_into, host_squared_sum, scale};

    #[test]
    fn sums_scales_and_norms_equal_burns_ops() {
        let device = Default::default();
        let a = Tensor::<Flex, 2>::random([300, 700], Distribution::Default, &device);
        let b = Tensor::<Flex, 2>::random([300, 700], Distribution::Default, &device);
        let want = a.clone() + b.clone();
        // `a` is shared here (cloned above), so the sum must leave it as it was.
        let kept = a.clone().into_data();
        let got = add_into(a.clone(), b.clone());
        assert_eq!(got.into_data(), want.into_data());
        assert_eq!(a.clone().into_data(), kept);
        assert_eq!(
            scale(b.clone(), 0.5).into_data(),
            (b.clone() * 0.5).into_data()
        );
        let norm: f64 = a.clone().square().sum().into_scalar() as f64;
        assert!((host_squared_sum(&a).unwrap() - norm).abs() <= 1e-5 * norm);
    }
}
