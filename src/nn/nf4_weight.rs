//! An NF4-quantized base weight on any Burn backend: codes packed 8 per 32-bit integer (GPU
//! backends have no `u8` tensors), double-quantized scales, dequantized on the fly.

use burn::module::Module;
use burn::tensor::{ElementConversion, Int, Tensor, TensorData, backend::Backend};

use super::nf4::{self, Absmax, NF4_BLOCK, NF4_CODE, Nf4Tensor};
use crate::error::{Error, Result};

/// A frozen `[out, in]` weight stored as NF4 with double quantization: about 0.52 byte per
/// value. Its tensors are constants, not parameters: nothing trains them.
#[derive(Module, Debug)]
pub struct Nf4Weight<B: Backend> {
    /// `[ceil(n / 8)]` words of 8 codes (layout of [`Nf4Tensor::packed_u32`], as i32 bits).
    codes: Tensor<B, 1, Int>,
    /// `[ceil(blocks / 4)]` words of 4 absmax codes, one byte each (little-endian).
    absmax_codes: Tensor<B, 1, Int>,
    /// `[ceil(blocks / 256)]` scales of the absmax codes.
    absmax_scales: Tensor<B, 1>,
    offset: f64,
    /// `[out, in]`
    shape: [usize; 2],
}

/// About how many values [`Nf4Weight::row_blocks`] dequantizes at once: 4 Mi (16 MiB of f32).
pub(crate) const ROW_BLOCK_VALUES: usize = 4 << 20;

/// The bit offsets of the 8 codes of a word, in value order.
const CODE_SHIFTS: [i64; 8] = [4, 0, 12, 8, 20, 16, 28, 24];

impl<B: Backend> Nf4Weight<B> {
    /// Quantizes a PyTorch-layout `[out, in]` weight (row-major values) as bitsandbytes does,
    /// with double quantization. `out * in` must be a multiple of 64 (one NF4 block), as it is
    /// for every projection of the models we load.
    pub fn quantize(values: &[f32], [out, inp]: [usize; 2], device: &B::Device) -> Result<Self> {
        if !values.len().is_multiple_of(NF4_BLOCK) {
            return Err(Error::Nf4Blocks {
                block: NF4_BLOCK,
                rows: out,
                cols: inp,
                values: values.len(),
            });
        }
        let tensor = nf4::quantize(values, [out, inp], true)?;
        Self::from_nf4(&tensor, device)
    }

    /// From a quantized tensor with double-quantized scales.
    pub fn from_nf4(tensor: &Nf4Tensor, device: &B::Device) -> Result<Self> {
        let Absmax::Double(double) = &tensor.absmax else {
            return Err(Error::Nf4NotDoubleQuantized);
        };
        if !tensor.numel().is_multiple_of(NF4_BLOCK) {
            let [rows, cols] = tensor.shape;
            return Err(Error::Nf4Blocks {
                block: NF4_BLOCK,
                rows,
                cols,
                values: tensor.numel(),
            });
        }
        let words: Vec<i32> = tensor.packed_u32().into_iter().map(|w| w as i32).collect();
        let absmax_words: Vec<i32> = double
            .codes
            .chunks(4)
            .map(|c| {
                let mut b = [0u8; 4];
                b[..c.len()].copy_from_slice(c);
                i32::from_le_bytes(b)
            })
            .collect();
        let int = |v: Vec<i32>| {
            let n = v.len();
            Tensor::<B, 1, Int>::from_data(TensorData::new(v, [n]), device)
        };
        let scales = double.scales.clone();
        let n_scales = scales.len();
        Ok(Nf4Weight {
            codes: int(words),
            absmax_codes: int(absmax_words),
            absmax_scales: Tensor::from_data(TensorData::new(scales, [n_scales]), device),
            offset: double.offset as f64,
            shape: tensor.shape,
        })
    }

    /// `[out, in]`
    pub fn shape(&self) -> [usize; 2] {
        self.shape
    }

    /// Bytes held by the quantized tensors (4 per stored integer or float).
    pub fn storage_bytes(&self) -> usize {
        4 * (self.codes.dims()[0] + self.absmax_codes.dims()[0] + self.absmax_scales.dims()[0])
    }

    /// The weight in Burn's `[in, out]` layout, in the float type; a transient tensor.
    pub fn dequantize(&self) -> Tensor<B, 2> {
        self.dequantize_rows().transpose()
    }

    /// The weight in PyTorch's `[out, in]` layout (the order the codes are stored in).
    pub fn dequantize_rows(&self) -> Tensor<B, 2> {
        let [out, _] = self.shape;
        self.dequantize_row_block(&self.absmax(), 0, out)
    }

    /// The row blocks [`Nf4Weight::dequantize_row_block`] takes: `(start, rows)` pairs covering
    /// the weight, each of about `values` values (at least 64 rows) and starting on an NF4
    /// block, so that dequantizing one block at a time holds a fraction of the f32 weight.
    pub(crate) fn row_blocks(&self, values: usize) -> Vec<(usize, usize)> {
        let [out, inp] = self.shape;
        // Rows per block: a multiple of 64, so that every block starts on a whole NF4 block
        // and a whole code word whatever the width.
        let rows = ((values / inp.max(1)) / 64 * 64).max(64);
        if rows >= out {
            return vec![(0, out)];
        }
        (0..out)
            .step_by(rows)
            .map(|start| (start, rows.min(out - start)))
            .collect()
    }

    /// Rows `start..start + rows` of [`Nf4Weight::dequantize_rows`], `[rows, in]`, given the
    /// per-block absmax (from [`Nf4Weight::absmax`], computed once for all blocks). `start`
    /// and `rows` come from [`Nf4Weight::row_blocks`] or cover the whole weight.
    pub(crate) fn dequantize_row_block(
        &self,
        absmax: &Tensor<B, 1>,
        start: usize,
        rows: usize,
    ) -> Tensor<B, 2> {
        let [_, inp] = self.shape;
        let (first, n) = (start * inp, rows * inp);
        #[cfg(feature = "flex")]
        if let Some(values) = flex::dequantize(&self.codes, absmax, first, n) {
            return values.reshape([rows, inp]);
        }
        self.composed_row_block(absmax, start, rows)
    }

    /// [`Nf4Weight::dequantize_row_block`] from Burn's ops: the route of the GPU backends, and
    /// the reference the CPU route is tested against.
    pub(crate) fn composed_row_block(
        &self,
        absmax: &Tensor<B, 1>,
        start: usize,
        rows: usize,
    ) -> Tensor<B, 2> {
        let [_, inp] = self.shape;
        let (first, n) = (start * inp, rows * inp);
        let blocks = n / NF4_BLOCK;
        let device = self.codes.device();
        let words = self.codes.clone().narrow(0, first / 8, n.div_ceil(8));
        let codes = unpack(words, &CODE_SHIFTS, 0xF).narrow(0, 0, n);
        let codebook = Tensor::<B, 1>::from_data(TensorData::new(NF4_CODE.to_vec(), [16]), &device);
        let values = codebook.select(0, codes).reshape([blocks, NF4_BLOCK]);
        let absmax = absmax
            .clone()
            .narrow(0, first / NF4_BLOCK, blocks)
            .reshape([blocks, 1]);
        (values * absmax).reshape([rows, inp])
    }

    /// The per-block absmax: `dynamic_map[code] * scale[block / 256] + offset`, `[blocks]`.
    pub(crate) fn absmax(&self) -> Tensor<B, 1> {
        let [out, inp] = self.shape;
        let blocks = out * inp / NF4_BLOCK;
        let device = self.codes.device();
        let codes = unpack(self.absmax_codes.clone(), &[0, 8, 16, 24], 0xFF).narrow(0, 0, blocks);
        let map = Tensor::<B, 1>::from_data(
            TensorData::new(nf4::dynamic_map_signed().to_vec(), [256]),
            &device,
        );
        // Each scale serves 256 consecutive blocks; repeat it on the device rather than build an
        // index on the host at every forward pass.
        let n_scales = self.absmax_scales.dims()[0];
        let scales = self
            .absmax_scales
            .clone()
            .reshape([n_scales, 1])
            .repeat_dim(1, nf4::ABSMAX_BLOCK)
            .reshape([n_scales * nf4::ABSMAX_BLOCK])
            .narrow(0, 0, blocks);
        map.select(0, codes) * scales + self.offset
    }
}

/// `[words] -> [words * shifts.len()]`: field `j` of word `w` is `(w >> shifts[j]) & mask`.
fn unpack<B: Backend>(words: Tensor<B, 1, Int>, shifts: &[i64], mask: i64) -> Tensor<B, 1, Int> {
    let n = words.dims()[0];
    let fields: Vec<Tensor<B, 1, Int>> = shifts
        .iter()
        .map(|&s| {
            words
                .clone()
                .bitwise_right_shift_scalar(s.elem())
                .bitwise_and_scalar(mask.elem())
        })
        .collect();
    Tensor::stack::<2>(fields, 1).reshape([n * shifts.len()])
}

/// Dequantization on the CPU backend in one pass, values in parallel: the composed route
/// (shifts and masks per nibble, a stack, a codebook gather, a product) makes about twenty.
#[cfg(feature = "flex")]
mod flex {
    use burn::backend::Flex;
    use burn::tensor::{DType, Int, Tensor, backend::Backend};
    use rayon::prelude::*;

    use super::{CODE_SHIFTS, NF4_BLOCK, NF4_CODE};
    use crate::nn::autodiff_route::cast;
    use crate::nn::flex_tensor::{primitive, tensor, values};

    /// Values `first..first + n` (multiples of one NF4 block) as f32, `[n]`; `None` off `Flex`.
    pub(super) fn dequantize<B: Backend>(
        codes: &Tensor<B, 1, Int>,
        absmax: &Tensor<B, 1>,
        first: usize,
        n: usize,
    ) -> Option<Tensor<B, 1>> {
        let codes: Tensor<Flex, 1, Int> = cast(codes.clone()).ok()?;
        let absmax: Tensor<Flex, 1> = cast(absmax.clone()).ok()?;
        let codes = codes.into_primitive();
        let codes = if codes.is_contiguous() {
            codes
        } else {
            codes.to_contiguous()
        };
        let absmax = primitive(absmax);
        let out = match codes.dtype() {
            DType::I64 => fill(codes.as_slice::<i64>()?, values(&absmax), first, n),
            DType::I32 => fill(codes.as_slice::<i32>()?, values(&absmax), first, n),
            _ => return None,
        };
        cast(tensor(out, [n])).ok()
    }

    /// Each value is its nibble's code times its block's absmax.
    fn fill<W: Copy + Into<i64> + Sync>(
        words: &[W],
        absmax: &[f32],
        first: usize,
        n: usize,
    ) -> Vec<f32> {
        let mut out = vec![0.0f32; n];
        out.par_chunks_mut(NF4_BLOCK)
            .enumerate()
            .for_each(|(block, out)| {
                let start = first + block * NF4_BLOCK;
                let scale = absmax[start / NF4_BLOCK];
                for (k, o) in out.iter_mut().enumerate() {
                    let j = start + k;
                    let code = (words[j / 8].into() >> CODE_SHIFTS[j % 8]) & 0xF;
                    *o = NF4_CODE[code as usize] * scale;
                }
            });
        out
    }
}
