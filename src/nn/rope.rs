//! Rotary position embedding in Hugging Face's *rotate_half* layout.
//!
//! A head vector `x` of width `d` is split into halves `x1 = x[..d/2]`, `x2 = x[d/2..]`, and
//! `x * cos + cat(-x2, x1) * sin`, with `cos`/`sin` of `position * inv_freq[i]` repeated over
//! both halves. (Burn's `RotaryEncoding` rotates interleaved pairs instead; keeping HF's layout
//! means checkpoints load and save without permuting q/k rows.)

use burn::tensor::{DType, Tensor, TensorData, backend::Backend};

use super::device_cache::DeviceCache;
use super::precision::to_dtype;

/// Llama 3.1's frequency-dependent RoPE scaling (`rope_scaling.rope_type == "llama3"`).
#[derive(Clone, Debug, PartialEq)]
pub struct Llama3RopeScaling {
    /// How much slower the longest wavelengths turn.
    pub factor: f64,
    /// Wavelengths above `original_max_position_embeddings / low_freq_factor` are scaled.
    pub low_freq_factor: f64,
    /// Wavelengths below `original_max_position_embeddings / high_freq_factor` are kept.
    pub high_freq_factor: f64,
    /// The context length the model was trained with before scaling.
    pub original_max_position_embeddings: usize,
}

/// The rotation speed of each of the `head_dim / 2` frequency pairs, in radians per position.
///
/// `inv_freq[i] = theta^(-2i / head_dim)`, then Llama 3's scaling when configured. Computed in
/// f32 as transformers does, so that angles agree to the last bit at small positions.
pub(super) fn inverse_frequencies(
    head_dim: usize,
    theta: f64,
    scaling: Option<&Llama3RopeScaling>,
) -> Vec<f32> {
    let base = theta as f32;
    let inv_freq = (0..head_dim / 2).map(|i| 1.0 / base.powf((2 * i) as f32 / head_dim as f32));
    match scaling {
        None => inv_freq.collect(),
        Some(scaling) => inv_freq.map(|f| llama3_scale(f, scaling)).collect(),
    }
}

/// Llama 3's scaling of one frequency: long wavelengths slowed by `factor`, short ones kept,
/// the band between blended linearly in `original_max / wavelength`.
fn llama3_scale(inv_freq: f32, s: &Llama3RopeScaling) -> f32 {
    let original = s.original_max_position_embeddings as f32;
    let (factor, low, high) = (
        s.factor as f32,
        s.low_freq_factor as f32,
        s.high_freq_factor as f32,
    );
    let wavelength = 2.0 * std::f32::consts::PI / inv_freq;
    if wavelength > original / low {
        inv_freq / factor
    } else if wavelength < original / high {
        inv_freq
    } else {
        let smooth = (original / wavelength - low) / (high - low);
        (1.0 - smooth) * inv_freq / factor + smooth * inv_freq
    }
}

/// Cosines and sines for positions `start..start + len`, each `[len, head_dim]` row-major.
pub(super) fn cos_sin(inv_freq: &[f32], start: usize, len: usize) -> (Vec<f32>, Vec<f32>) {
    let head_dim = 2 * inv_freq.len();
    let mut cos = Vec::with_capacity(len * head_dim);
    let mut sin = Vec::with_capacity(len * head_dim);
    for position in start..start + len {
        // `cat(freqs, freqs)`: both halves of a head rotate at the same speeds.
        for _half in 0..2 {
            for &f in inv_freq {
                let angle = position as f32 * f;
                cos.push(angle.cos());
                sin.push(angle.sin());
            }
        }
    }
    (cos, sin)
}

/// The rotation of one model: its frequencies.
#[derive(Clone, Debug)]
pub(crate) struct Rope {
    inv_freq: Vec<f32>,
}

impl Rope {
    /// The rotation of heads of width `head_dim` with base `theta`, optionally Llama 3 scaled.
    pub(crate) fn new(head_dim: usize, theta: f64, scaling: Option<&Llama3RopeScaling>) -> Self {
        Rope {
            inv_freq: inverse_frequencies(head_dim, theta, scaling),
        }
    }

    /// Tables for positions `start..start + seq` in `dtype` (the activations' type, as
    /// transformers casts them), shared by all layers of a forward pass: rows of the tables for
    /// positions `0..len` (`len` the next power of two, at least 64), which are computed in
    /// f32, sent to the device once and kept in `constants`.
    pub(crate) fn tables<B: Backend>(
        &self,
        start: usize,
        seq: usize,
        dtype: DType,
        constants: &DeviceCache,
        device: &B::Device,
    ) -> RopeTables<B> {
        let len = (start + seq).next_power_of_two().max(64);
        let whole = constants.get_or_make::<B, _, _>(device, ("rope", len, dtype), || {
            let sent = self.tables_from_host::<B>(0, len, device);
            RopeTables {
                cos: to_dtype(sent.cos, dtype),
                sin: to_dtype(sent.sin, dtype),
            }
        });
        RopeTables {
            cos: whole.cos.narrow(0, start, seq),
            sin: whole.sin.narrow(0, start, seq),
        }
    }

    /// Tables for positions `start..start + seq`, made on the host and sent.
    fn tables_from_host<B: Backend>(
        &self,
        start: usize,
        seq: usize,
        device: &B::Device,
    ) -> RopeTables<B> {
        let head_dim = 2 * self.inv_freq.len();
        let (cos, sin) = cos_sin(&self.inv_freq, start, seq);
        let table =
            |values: Vec<f32>| Tensor::from_data(TensorData::new(values, [seq, head_dim]), device);
        RopeTables {
            cos: table(cos),
            sin: table(sin),
        }
    }
}

/// Cosines and sines of positions, `[seq, head_dim]`.
#[derive(Clone, Debug)]
pub(crate) struct RopeTables<B: Backend> {
    cos: Tensor<B, 2>,
    sin: Tensor<B, 2>,
}

impl<B: Backend> RopeTables<B> {
    /// Rotates `x` and moves heads before positions, as attention wants them.
    ///
    /// # Shapes
    /// - x: `[batch, seq, heads, head_dim]`; returns `[batch, heads, seq, head_dim]`.
    ///
    /// In half precision the rotation runs in `x`'s type (the CPU's one-pass route is f32
    /// only), the tables cast to it if they are not already.
    pub(crate) fn apply(&self, x: Tensor<B, 4>) -> Tensor<B, 4> {
        #[cfg(feature = "flex")]
        let x = match super::rope_op::rope(x, &self.cos, &self.sin) {
            Ok(rotated) => return rotated,
            Err(x) => x,
        };
        let dtype = x.dtype();
        let (cos, sin) = (self.cos.clone(), self.sin.clone());
        composed_rope(x, to_dtype(cos, dtype), to_dtype(sin, dtype))
    }

    /// The cosine and sine tables.
    #[cfg(test)]
    pub(crate) fn parts(&self) -> (Tensor<B, 2>, Tensor<B, 2>) {
        (self.cos.clone(), self.sin.clone())
    }
}

/// Burn's ops one after the other (the tables broadcast over batch and heads): the route of
/// the GPU backends, and the reference the CPU route is tested against.
pub(crate) fn composed_rope<B: Backend>(
    x: Tensor<B, 4>,
    cos: Tensor<B, 2>,
    sin: Tensor<B, 2>,
) -> Tensor<B, 4> {
    let x = x.swap_dims(1, 2);
    let rotated = rotate_half(x.clone());
    x * cos.unsqueeze::<4>() + rotated * sin.unsqueeze::<4>()
}

/// `cat(-x2, x1)` over the last axis.
fn rotate_half<B: Backend>(x: Tensor<B, 4>) -> Tensor<B, 4> {
    let half = x.dims()[3] / 2;
    let x1 = x.clone().narrow(3, 0, half);
    let x2 = x.narrow(3, half, half);
    Tensor::cat(vec![x2.neg(), x1], 3)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn frequencies_fall_geometrically() {
        let f = inverse_frequencies(8, 10000.0, None);
        assert_eq!(f[0], 1.0);
        assert!((f[1] - 0.1).abs() < 1e-7);
        assert!((f[3] - 0.001).abs() < 1e-9);
    }

    #[test]
    fn llama3_keeps_fast_and_slows_slow_frequencies() {
        let scaling = Llama3RopeScaling {
            factor: 8.0,
            low_freq_factor: 1.0,
            high_freq_factor: 4.0,
            original_max_position_embeddings: 64,
        };
        let plain = inverse_frequencies(32, 10000.0, None);
        let scaled = inverse_frequencies(32, 10000.0, Some(&scaling));
        assert_eq!(scaled[0], plain[0]);
        let last = plain.len() - 1;
        assert!((scaled[last] - plain[last] / 8.0).abs() < 1e-12);
        // In the band between, the result lies between the two extremes.
        for (s, p) in scaled.iter().zip(&plain) {
            assert!(*s <= *p && *s >= p / 8.0);
        }
    }

    /// Rows of the cached tables are the tables made for the positions asked, bit for bit,
    /// and each length is sent once.
    #[cfg(feature = "flex")]
    #[test]
    fn cached_tables_equal_the_host_made_ones_and_are_made_once_per_length() {
        use burn::backend::Flex;
        let rope = Rope::new(8, 10000.0, None);
        let constants = DeviceCache::default();
        let device = Default::default();
        let values = |t: Tensor<Flex, 2>| t.into_data().convert::<f32>().to_vec::<f32>().unwrap();
        // Lengths 64, 64, 64, 128 (65 positions) and 256 (140).
        for (start, seq) in [(0, 5), (3, 7), (60, 4), (64, 1), (100, 40)] {
            let cached = rope.tables::<Flex>(start, seq, DType::F32, &constants, &device);
            let sent = rope.tables_from_host::<Flex>(start, seq, &device);
            assert_eq!(values(cached.cos), values(sent.cos), "{start} {seq}");
            assert_eq!(values(cached.sin), values(sent.sin), "{start} {seq}");
        }
        assert_eq!(constants.len(), 3);
        // Another type is another entry, its values the f32 ones rounded.
        let half = rope.tables::<Flex>(3, 7, DType::BF16, &constants, &device);
        assert_eq!(half.cos.dtype(), DType::BF16);
        let sent = rope.tables_from_host::<Flex>(3, 7, &device);
        let rounded = sent.cos.cast(burn::tensor::FloatDType::BF16);
        assert_eq!(values(half.cos), values(rounded));
        assert_eq!(constants.len(), 4);
    }

    #[test]
    fn tables_repeat_over_both_halves() {
        let (cos, sin) = cos_sin(&[1.0, 0.5], 3, 2);
        assert_eq!(cos.len(), 8);
        assert_eq!(cos[0], 3.0f32.cos());
        assert_eq!(cos[2], 3.0f32.cos());
        assert_eq!(sin[7], 2.0f32.sin());
    }
}
