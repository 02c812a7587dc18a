//! NF4 (4-bit NormalFloat) quantization as bitsandbytes does it for QLoRA, in plain Rust.
//!
//! This module has no Burn types: it turns an `f32` weight into the packed 4-bit codes plus
//! per-block scales (optionally double-quantized) and back. The Burn layer builds on it.
//!
//! # What is reproduced
//!
//! `bitsandbytes.functional.quantize_4bit(W, blocksize=64, quant_type="nf4",
//! compress_statistics=True)` as its **CUDA kernels** compute it (bitsandbytes 0.4x to 0.50:
//! `kQuantizeBlockwise<T, 64, 2, 0, NF4>` for the 4-bit codes and
//! `kQuantizeBlockwise<float, 256, 2, 0, General8bit>` for the double quantization), checked
//! against the kernels' SASS in the 0.50.2 wheel. Step by step, for a row-major `[out, in]`
//! weight (Hugging Face layout) flattened to `n` values:
//!
//! 1. **Blocks.** Consecutive runs of [`NF4_BLOCK`] = 64 values; the last one may be partial
//!    (`n % 64 != 0`). A partial block is padded with zeros, and those zeros take part in
//!    everything below (they are quantized too, and their codes fill the last nibble when `n`
//!    is odd).
//! 2. **absmax** (f32, one per block) = the largest `|x|` of the block, where NaNs are
//!    ignored (the kernel uses `fmaxf`, which drops NaN) and the padding zeros of a partial
//!    block count. A full block of NaNs gets `-f32::MAX` (the kernel's start value).
//! 3. **Scale.** `r = 1 / absmax`, then `s = x * r` (a multiplication by the reciprocal, not a
//!    division). `absmax == 0` gives `r = inf` and `s = 0 * inf = NaN`.
//! 4. **Code.** [`nf4_index`]: a decision tree of strict `s > t` tests on the 15 thresholds
//!    [`NF4_THRESHOLDS`]. So a value exactly on a threshold takes the **lower** code, and NaN
//!    takes code 0 (`-1.0`). Consequences: an all-zero block is stored as codes 0 (not 7) and
//!    dequantizes to `-0.0`; a NaN weight becomes `-absmax`; in a block with absmax `inf`, the
//!    finite values get code 7 (`x * 0 = 0`) and dequantize to NaN (`0 * inf`).
//! 5. **Packing.** Two codes per byte, the first (even-index) value in the **high** nibble:
//!    `byte[k] = code[2k] << 4 | code[2k + 1]`; `(n + 1) / 2` bytes. See [`nibble`] and
//!    [`Nf4Tensor::packed_u32`].
//! 6. **Double quantization** ([`double_quantize`]): `offset = mean(absmax)`, then
//!    `absmax - offset` is quantized in blocks of [`ABSMAX_BLOCK`] = 256 to 8 bits with
//!    bitsandbytes' signed dynamic map ([`dynamic_map_signed`]): each 256-block gets its own
//!    f32 absmax (`scales`), computed as in step 2, and each value the code found by
//!    [`dynamic_index`] (the kernel's binary search, ties included) on `x * (1 / scale)`.
//! 7. **Dequantization**: `absmax[i] = dyn[codes[i]] * scales[i / 256] + offset`, then
//!    `w[i] = NF4_CODE[q[i]] * absmax[i / 64]`, all in f32 (two roundings for the absmax: the
//!    product, then the sum, as bitsandbytes does it in two kernels).
//!
//! The kernels are built with `--use_fast_math`, so every float operation flushes subnormal
//! inputs and results to zero. That is reproduced too: a block whose values are all subnormal
//! has absmax 0 (and codes 0), and a dequantized product below `f32::MIN_POSITIVE` is 0. The
//! `+ offset` of step 7 is a plain torch addition and does not flush.
//!
//! # Where this is, knowingly, not bit-exact with CUDA
//!
//! - The reciprocal: the kernel uses the GPU's `MUFU.RCP` (an approximation within 1 ulp);
//!   we use the correctly rounded `1.0 / absmax`. They agree whenever `MUFU.RCP` is correctly
//!   rounded (always for powers of two); otherwise `x * r` may be 1 ulp off, which changes a
//!   code only for a value within about an ulp of a threshold.
//! - The mean: torch computes `absmax.mean()` in f32 in an order that depends on the device
//!   (CPU: cascade sum then `/ n`; CUDA: tree reduction then `* (1 / n)`), so bitsandbytes has
//!   no single offset. We take `f32(sum_f64(absmax) / n)` (sequential f64 sum), within half an
//!   ulp of the exact mean; torch's is often 1 ulp away.
//! - The dynamic map is built by bitsandbytes at run time with `torch.linspace`, whose
//!   vectorized rounding depends on the CPU; [`dynamic_map_signed`] is the table torch 2.15
//!   gives on x86-64 (AVX-512), equal to `create_dynamic_map(signed=True)` there. A checkpoint
//!   saved by bitsandbytes stores its own map (`nested_quant_map`); use that one to read it.
//!
//! bitsandbytes' *CPU* backend differs from its CUDA kernels (and from this module) in known
//! places: it uses the f32 midpoints between the NF4 codes, 1 ulp away from the CUDA
//! thresholds for 4 of the 15; an all-zero block gets codes 7; the partial block is divided
//! by absmax; NaN propagates into absmax; no flush-to-zero; its 8-bit search is approximate
//! near zero and breaks ties to the lower code. On ordinary weights its packed codes, absmax
//! and dequantized values agree with this module bit for bit; its offset (torch's f32 mean)
//! can be 1 ulp away (see `scripts/make_nf4_fixtures.py` and `tests/fixtures/nf4/README.md`).
//!
//! # Memory
//!
//! [`Nf4Tensor::storage_bytes`]: `(n + 1) / 2` bytes of codes, plus `4 * n / 64` bytes of f32
//! absmax, or with double quantization `n / 64` bytes of 8-bit codes + `4 * n / 16384` bytes of
//! scales + 4 bytes of offset: about 0.5 byte + 0.127 bit per weight.

use rayon::prelude::*;

use crate::error::Nf4Error;

/// Values per NF4 block (bitsandbytes' default `blocksize` for 4-bit, the QLoRA setting).
pub(crate) const NF4_BLOCK: usize = 64;

/// Absmax values per 8-bit block in the double quantization (bitsandbytes' fixed 256).
pub(crate) const ABSMAX_BLOCK: usize = 256;

/// The 16 NF4 values, by code (bitsandbytes' `get_4bit_type("nf4")`, the kernel's NF4
/// dequantization table). Sorted ascending; code 7 is `0.0`, code 15 is `1.0`.
pub(crate) const NF4_CODE: [f32; 16] = [
    -1.0,
    -0.696_192_8,
    -0.525_073_05,
    -0.394_917_5,
    -0.284_441_38,
    -0.184_773_43,
    -0.091_050_036,
    0.0,
    0.079_580_3,
    0.160_930_2,
    0.246_112_3,
    0.337_915_24,
    0.440_709_83,
    0.562_617,
    0.722_956_84,
    1.0,
];

/// The 15 thresholds of bitsandbytes' CUDA `dQuantizeNF4`, ascending: `NF4_THRESHOLDS[k]`
/// separates code `k` from code `k + 1`.
///
/// In the kernel they are decimal literals with an `f` suffix (`0.1202552504837513f`, ...),
/// each the exact midpoint of two codes printed as an f64, and the compiler rounds the decimal
/// straight to f32. For thresholds 0, 8, 12 and 14 the midpoint lies exactly halfway between
/// two f32 values and the decimal string breaks the tie the other way than f32 arithmetic
/// would: these four are 1 ulp away from `(NF4_CODE[k] + NF4_CODE[k + 1]) / 2` computed in f32
/// (which is what bitsandbytes' CPU and Triton backends compare against). The bit patterns
/// below are the immediates of the `FSETP.GT` instructions in the sm_90 kernel.
pub(crate) const NF4_THRESHOLDS: [f32; 15] = [
    f32::from_bits(0xBF59_1CD9), // -0.84809643  (f32 midpoint: 0xBF591CD8)
    f32::from_bits(0xBF1C_5270), // -0.61063290
    f32::from_bits(0xBEEB_8480), // -0.45999527
    f32::from_bits(0xBEAD_EA76), // -0.33967942
    f32::from_bits(0xBE70_3CEC), // -0.23460740
    f32::from_bits(0xBE0D_38BC), // -0.13791174
    f32::from_bits(0xBD3A_7871), // -0.045525018
    f32::from_bits(0x3D22_FAFF), // 0.03979015
    f32::from_bits(0x3DF6_4863), // 0.12025525   (f32 midpoint: 0x3DF64862)
    f32::from_bits(0x3E50_67E0), // 0.20352125
    f32::from_bits(0x3E95_82D4), // 0.29201376
    f32::from_bits(0x3EC7_53F9), // 0.38931254
    f32::from_bits(0x3F00_6D03), // 0.50166339   (f32 midpoint: 0x3F006D04)
    f32::from_bits(0x3F24_8DAF), // 0.64278692
    f32::from_bits(0x3F5C_89D9), // 0.86147839   (f32 midpoint: 0x3F5C89DA)
];

/// bitsandbytes' signed 8-bit dynamic map (`create_dynamic_map(signed=True)`), as f32 bits,
/// sorted ascending: 127 negative values, `0.0` at index 127, 127 positive values, `1.0` at
/// index 255. Note that index 0 is `-0.99297` (not `-1.0`). Made with
/// `scripts/make_nf4_fixtures.py --rust-dynamic-map`.
const DYNAMIC_MAP_SIGNED_BITS: [u32; 256] = [
    0xbf7e3333, 0xbf7a999a, 0xbf770000, 0xbf736666, 0xbf6fcccd, 0xbf6c3333, 0xbf68999a, 0xbf650000,
    0xbf616666, 0xbf5dcccd, 0xbf5a3333, 0xbf56999a, 0xbf530000, 0xbf4f6666, 0xbf4bcccd, 0xbf483333,
    0xbf44999a, 0xbf410000, 0xbf3d6666, 0xbf39cccd, 0xbf363334, 0xbf32999a, 0xbf2f0000, 0xbf2b6666,
    0xbf27cccd, 0xbf243334, 0xbf20999a, 0xbf1d0000, 0xbf196666, 0xbf15cccd, 0xbf123334, 0xbf0e999a,
    0xbf0b0000, 0xbf076666, 0xbf03cccc, 0xbf003333, 0xbef93332, 0xbef20000, 0xbeeacccc, 0xbee3999a,
    0xbedc6666, 0xbed53333, 0xbece0000, 0xbec6cccc, 0xbebf999a, 0xbeb86666, 0xbeb13333, 0xbeaa0000,
    0xbea2cccc, 0xbe9b999a, 0xbe946666, 0xbe8d3334, 0xbe860000, 0xbe7d9999, 0xbe6f3333, 0xbe60cccd,
    0xbe526666, 0xbe440000, 0xbe35999a, 0xbe273333, 0xbe18cccd, 0xbe0a6666, 0xbdf80000, 0xbddb3334,
    0xbdc9eb85, 0xbdc428f7, 0xbdbe6667, 0xbdb8a3d7, 0xbdb2e148, 0xbdad1eb8, 0xbda75c2a, 0xbda1999a,
    0xbd9bd70a, 0xbd96147b, 0xbd9051eb, 0xbd8a8f5d, 0xbd84cccd, 0xbd7e147b, 0xbd728f5d, 0xbd670a3d,
    0xbd5b851f, 0xbd500000, 0xbd447ae1, 0xbd38f5c3, 0xbd2d70a3, 0xbd21eb85, 0xbd166667, 0xbd0ae148,
    0xbcfeb852, 0xbce7ae15, 0xbcd0a3d7, 0xbcb9999a, 0xbca28f5d, 0xbc8b851f, 0xbc68f5c3, 0xbc3ae148,
    0xbc1f3b64, 0xbc160418, 0xbc0ccccd, 0xbc039581, 0xbbf4bc6a, 0xbbe24dd3, 0xbbcfdf3b, 0xbbbd70a4,
    0xbbab020d, 0xbb989374, 0xbb8624dd, 0xbb676c8a, 0xbb428f5c, 0xbb1db22d, 0xbaf1a9fc, 0xbaa7ef9d,
    0xba7765ff, 0xba59e83e, 0xba3c6a80, 0xba1eecc1, 0xba016f01, 0xb9c7e283, 0xb98ce705, 0xb923d70b,
    0xb8ba1f4b, 0xb88aefb3, 0xb8378034, 0xb7b24206, 0xb70205ff, 0xb65a1a94, 0xb513a3b7, 0x00000000,
    0x3513a3b7, 0x365a1a94, 0x370205ff, 0x37b24206, 0x38378034, 0x388aefb3, 0x38ba1f4b, 0x3923d70b,
    0x398ce705, 0x39c7e283, 0x3a016f01, 0x3a1eecc1, 0x3a3c6a80, 0x3a59e83e, 0x3a7765ff, 0x3aa7ef9d,
    0x3af1a9fc, 0x3b1db22d, 0x3b428f5c, 0x3b676c8a, 0x3b8624dd, 0x3b989374, 0x3bab020d, 0x3bbd70a4,
    0x3bcfdf3b, 0x3be24dd3, 0x3bf4bc6a, 0x3c039581, 0x3c0ccccd, 0x3c160418, 0x3c1f3b64, 0x3c3ae148,
    0x3c68f5c3, 0x3c8b851f, 0x3ca28f5d, 0x3cb9999a, 0x3cd0a3d7, 0x3ce7ae15, 0x3cfeb852, 0x3d0ae148,
    0x3d166667, 0x3d21eb85, 0x3d2d70a3, 0x3d38f5c3, 0x3d447ae1, 0x3d500000, 0x3d5b851f, 0x3d670a3d,
    0x3d728f5d, 0x3d7e147b, 0x3d84cccd, 0x3d8a8f5d, 0x3d9051eb, 0x3d96147b, 0x3d9bd70a, 0x3da1999a,
    0x3da75c2a, 0x3dad1eb8, 0x3db2e148, 0x3db8a3d7, 0x3dbe6667, 0x3dc428f7, 0x3dc9eb85, 0x3ddb3334,
    0x3df80000, 0x3e0a6666, 0x3e18cccd, 0x3e273333, 0x3e35999a, 0x3e440000, 0x3e526666, 0x3e60cccd,
    0x3e6f3333, 0x3e7d9999, 0x3e860000, 0x3e8d3334, 0x3e946666, 0x3e9b999a, 0x3ea2cccc, 0x3eaa0000,
    0x3eb13333, 0x3eb86666, 0x3ebf999a, 0x3ec6cccc, 0x3ece0000, 0x3ed53333, 0x3edc6666, 0x3ee3999a,
    0x3eeacccc, 0x3ef20000, 0x3ef93332, 0x3f003333, 0x3f03cccc, 0x3f076666, 0x3f0b0000, 0x3f0e999a,
    0x3f123334, 0x3f15cccd, 0x3f196666, 0x3f1d0000, 0x3f20999a, 0x3f243334, 0x3f27cccd, 0x3f2b6666,
    0x3f2f0000, 0x3f32999a, 0x3f363334, 0x3f39cccd, 0x3f3d6666, 0x3f410000, 0x3f44999a, 0x3f483333,
    0x3f4bcccd, 0x3f4f6666, 0x3f530000, 0x3f56999a, 0x3f5a3333, 0x3f5dcccd, 0x3f616666, 0x3f650000,
    0x3f68999a, 0x3f6c3333, 0x3f6fcccd, 0x3f736666, 0x3f770000, 0x3f7a999a, 0x3f7e3333, 0x3f800000,
];

/// A weight quantized to NF4, as bitsandbytes stores it (`Params4bit` + `QuantState`).
///
/// With `n = shape[0] * shape[1]` values and `nb = n.div_ceil(64)` blocks:
/// - `packed`: `(n + 1) / 2` bytes, value `i` in byte `i / 2`, high nibble for even `i`
///   (bitsandbytes' `weight` tensor, `uint8 [(n + 1) / 2, 1]`).
/// - `absmax`: the `nb` per-block scales, plain or double-quantized (bitsandbytes'
///   `quant_state.absmax`, or `absmax` + `nested_absmax` + `nested_quant_map` + `offset`).
#[derive(Debug, Clone, PartialEq)]
pub struct Nf4Tensor {
    /// `[out, in]`, row-major (PyTorch / Hugging Face `nn.Linear.weight` layout).
    pub shape: [usize; 2],
    /// NF4 codes (indices into [`NF4_CODE`]), two per byte, first value in the high nibble.
    /// For odd `n` the low nibble of the last byte is padding (the code of a 0 in that block).
    pub packed: Vec<u8>,
    /// The per-64-block scales.
    pub absmax: Absmax,
}

/// The per-block scales of an [`Nf4Tensor`]: `nb = n.div_ceil(64)` values.
#[derive(Debug, Clone, PartialEq)]
pub enum Absmax {
    /// `nb` f32 absmax values, one per 64-value block.
    Plain(Vec<f32>),
    /// The absmax values double-quantized to 8 bits (QLoRA's "double quantization").
    Double(DoubleQuant),
}

/// Double-quantized absmax: `absmax[i] = dynamic_map_signed()[codes[i]] * scales[i / 256] +
/// offset`.
#[derive(Debug, Clone, PartialEq)]
pub struct DoubleQuant {
    /// `nb` 8-bit codes (indices into [`dynamic_map_signed`]) of `absmax - offset`.
    pub codes: Vec<u8>,
    /// `nb.div_ceil(256)` f32 scales: the absmax of each 256-block of `absmax - offset`.
    pub scales: Vec<f32>,
    /// The mean of the absmax values (see the module docs for how it is computed).
    pub offset: f32,
}

impl DoubleQuant {
    /// The absmax values back, `nb` of them: `code[codes[i]] * scales[i / 256] + offset` (the
    /// product flushed to zero if subnormal, as bitsandbytes' kernel does, then a plain f32
    /// addition).
    ///
    /// # Panics
    /// If `scales` has fewer than `codes.len().div_ceil(256)` entries.
    pub fn dequantize(&self) -> Vec<f32> {
        let code = dynamic_map_signed();
        self.codes
            .iter()
            .enumerate()
            .map(|(i, &q)| mul_ftz(code[q as usize], self.scales[i / ABSMAX_BLOCK]) + self.offset)
            .collect()
    }
}

impl Nf4Tensor {
    /// Builds a tensor from stored parts (e.g. read from a bitsandbytes checkpoint), checking
    /// that the lengths fit the shape.
    pub fn from_parts(
        shape: [usize; 2],
        packed: Vec<u8>,
        absmax: Absmax,
    ) -> Result<Self, Nf4Error> {
        let t = Self {
            shape,
            packed,
            absmax,
        };
        t.validate()?;
        Ok(t)
    }

    /// Checks that `packed`, the absmax values and the double-quant scales have the lengths
    /// the shape implies. Tensors made by [`quantize`] always pass.
    pub fn validate(&self) -> Result<(), Nf4Error> {
        let shape = self.shape;
        let n = shape[0]
            .checked_mul(shape[1])
            .ok_or(Nf4Error::ShapeOverflow(shape))?;
        let check = |what, expected, actual| {
            if expected == actual {
                Ok(())
            } else {
                Err(Nf4Error::Inconsistent {
                    shape,
                    what,
                    expected,
                    actual,
                })
            }
        };
        check("packed", n.div_ceil(2), self.packed.len())?;
        let nb = n.div_ceil(NF4_BLOCK);
        match &self.absmax {
            Absmax::Plain(a) => check("absmax", nb, a.len()),
            Absmax::Double(d) => {
                check("double-quant codes", nb, d.codes.len())?;
                check(
                    "double-quant scales",
                    nb.div_ceil(ABSMAX_BLOCK),
                    d.scales.len(),
                )
            }
        }
    }

    /// Number of weights, `shape[0] * shape[1]`.
    pub fn numel(&self) -> usize {
        self.shape[0] * self.shape[1]
    }

    /// Number of 64-value blocks, `numel().div_ceil(64)`.
    pub fn num_blocks(&self) -> usize {
        self.numel().div_ceil(NF4_BLOCK)
    }

    /// The per-block absmax as f32 (`num_blocks()` values), undoing the double quantization if
    /// there is one.
    ///
    /// # Panics
    /// If the tensor is inconsistent ([`Nf4Tensor::validate`] fails).
    pub fn absmax_f32(&self) -> Vec<f32> {
        match &self.absmax {
            Absmax::Plain(a) => a.clone(),
            Absmax::Double(d) => d.dequantize(),
        }
    }

    /// Bytes this representation takes: the packed codes, plus the f32 absmax (4 bytes per
    /// block) or, double-quantized, 1 byte per block + 4 bytes per 256 blocks + 4 bytes of
    /// offset. (The two fixed code tables, 16 and 256 f32 that bitsandbytes also saves per
    /// tensor, are not counted.)
    pub fn storage_bytes(&self) -> usize {
        self.packed.len()
            + match &self.absmax {
                Absmax::Plain(a) => 4 * a.len(),
                Absmax::Double(d) => d.codes.len() + 4 * d.scales.len() + 4,
            }
    }

    /// The packed codes as `u32` words, for backends without `u8` tensors.
    ///
    /// Word `k` is `u32::from_le_bytes(packed[4k..4k + 4])`, the bytes past the end taken as
    /// 0; `packed.len().div_ceil(4)` words. Value `i` sits in word `i / 8` at bit
    /// `shift(i) = 4 * ((i % 8) ^ 1)`, i.e. the 8 values of a word are at shifts
    /// `4, 0, 12, 8, 20, 16, 28, 24`, and its code is `(word >> shift(i)) & 0xF`. Nibbles at
    /// `i >= numel()` are padding.
    pub fn packed_u32(&self) -> Vec<u32> {
        self.packed
            .chunks(4)
            .map(|c| {
                let mut b = [0u8; 4];
                b[..c.len()].copy_from_slice(c);
                u32::from_le_bytes(b)
            })
            .collect()
    }
}

/// The NF4 code of value `i` in a packed buffer: the high nibble of byte `i / 2` for even `i`,
/// the low nibble for odd `i`.
///
/// # Panics
/// If `i / 2 >= packed.len()`.
#[inline]
#[cfg(test)]
pub(crate) fn nibble(packed: &[u8], i: usize) -> u8 {
    let b = packed[i / 2];
    if i.is_multiple_of(2) {
        b >> 4
    } else {
        b & 0x0F
    }
}

/// bitsandbytes' signed 8-bit dynamic map (`create_dynamic_map(signed=True)`), ascending.
pub(crate) fn dynamic_map_signed() -> [f32; 256] {
    DYNAMIC_MAP_SIGNED_BITS.map(f32::from_bits)
}

/// Flush a subnormal to a zero of the same sign (the kernels' `--use_fast_math`).
#[inline]
fn ftz(x: f32) -> f32 {
    if x.is_subnormal() {
        0.0f32.copysign(x)
    } else {
        x
    }
}

/// A multiplication as `FMUL.FTZ` does it: subnormal inputs and result flushed to zero.
#[inline]
fn mul_ftz(a: f32, b: f32) -> f32 {
    ftz(ftz(a) * ftz(b))
}

/// `1 / absmax` as the kernels use it, with flush-to-zero (see the module docs on `MUFU.RCP`).
#[inline]
fn recip_ftz(a: f32) -> f32 {
    ftz(1.0 / ftz(a))
}

/// The absmax of one block as bitsandbytes' `kQuantizeBlockwise` computes it: the largest
/// `|x|` (subnormals counting as 0), NaNs ignored; if the block is shorter than `blocksize`
/// (the last, partial block) the padding zeros count too. A full block of only NaNs gives
/// `-f32::MAX`, the kernel's start value (a partial one gives 0).
pub(crate) fn block_absmax(block: &[f32], blocksize: usize) -> f32 {
    let mut m = -f32::MAX;
    for &x in block {
        let a = ftz(x.abs());
        // fmaxf(m, a): a NaN `a` leaves m as it is.
        if a > m {
            m = a;
        }
    }
    if block.len() < blocksize && m < 0.0 {
        m = 0.0;
    }
    m
}

/// The NF4 code of an already scaled value `x` (`x = w / absmax`, nominally in `[-1, 1]`):
/// bitsandbytes' `dQuantizeNF4` decision tree, strict `>` at every node.
///
/// Equals the number of thresholds in [`NF4_THRESHOLDS`] that `x` is strictly greater than: a
/// value exactly on a threshold gets the lower code, values beyond `±1` the end codes, and NaN
/// code 0.
#[inline]
pub(crate) fn nf4_index(x: f32) -> u8 {
    let t = &NF4_THRESHOLDS;
    if x > t[7] {
        if x > t[11] {
            if x > t[13] {
                if x > t[14] { 15 } else { 14 }
            } else if x > t[12] {
                13
            } else {
                12
            }
        } else if x > t[9] {
            if x > t[10] { 11 } else { 10 }
        } else if x > t[8] {
            9
        } else {
            8
        }
    } else if x > t[3] {
        if x > t[5] {
            if x > t[6] { 7 } else { 6 }
        } else if x > t[4] {
            5
        } else {
            4
        }
    } else if x > t[1] {
        if x > t[2] { 3 } else { 2 }
    } else if x > t[0] {
        1
    } else {
        0
    }
}

/// The 8-bit code of an already scaled value `x` in a sorted 256-entry map, as bitsandbytes'
/// `dQuantize<0>` finds it.
///
/// A 7-step binary search over the odd indices (start at 127, `x > code[p]` moves up by
/// 64, 32, ..., 1, anything else moves down) ends on an even index `p`; then
/// - if `x > code[p]`: `mid = (code[p + 1] + code[p]) * 0.5`, result `p + 1` if `x > mid`,
///   else `p`;
/// - otherwise: `mid = (code[p - 1] + code[p]) * 0.5` (`p - 1` read as 0 when `p == 0`),
///   result `p - 1` if `x < mid`, else `p`.
///
/// So it is the nearest code, and an exact tie goes to `p`, the index the search ended on
/// (the lower neighbour in some places, the upper in others); NaN gives 0.
pub(crate) fn dynamic_index(code: &[f32; 256], x: f32) -> u8 {
    let mut pivot: usize = 127;
    let mut upper_pivot: usize = 255;
    let mut lower_pivot: usize = 0;
    let mut lower = -1.0f32;
    let mut upper = 1.0f32;
    let mut val = code[pivot];
    let mut step = 64;
    while step > 0 {
        if x > val {
            lower_pivot = pivot;
            lower = val;
            pivot += step;
        } else {
            upper_pivot = pivot;
            upper = val;
            pivot -= step;
        }
        val = code[pivot];
        step >>= 1;
    }
    if upper_pivot == 255 {
        upper = code[upper_pivot];
    }
    if lower_pivot == 0 {
        lower = code[lower_pivot];
    }
    let chosen = if x > val {
        let midpoint = (upper + val) * 0.5;
        if x > midpoint { upper_pivot } else { pivot }
    } else {
        let midpoint = (lower + val) * 0.5;
        if x < midpoint { lower_pivot } else { pivot }
    };
    chosen as u8
}

/// bitsandbytes' `quantize_blockwise(values, code=create_dynamic_map(), blocksize=256)` (the
/// CUDA kernel `kQuantizeBlockwise<float, 256, 2, 0, General8bit>`): per 256-block absmax
/// ([`block_absmax`]) and per value [`dynamic_index`] of `x * (1 / absmax)`.
///
/// Returns `(codes, scales)`: `values.len()` codes and `values.len().div_ceil(256)` scales.
pub(crate) fn quantize_blockwise_8bit(values: &[f32]) -> (Vec<u8>, Vec<f32>) {
    let code = dynamic_map_signed();
    let mut codes = vec![0u8; values.len()];
    let mut scales = vec![0f32; values.len().div_ceil(ABSMAX_BLOCK)];
    for ((block, out), scale) in values
        .chunks(ABSMAX_BLOCK)
        .zip(codes.chunks_mut(ABSMAX_BLOCK))
        .zip(scales.iter_mut())
    {
        let absmax = block_absmax(block, ABSMAX_BLOCK);
        *scale = absmax;
        let r = recip_ftz(absmax);
        for (&x, q) in block.iter().zip(out.iter_mut()) {
            *q = dynamic_index(&code, mul_ftz(x, r));
        }
    }
    (codes, scales)
}

/// The inverse of [`quantize_blockwise_8bit`]: `code[codes[i]] * scales[i / 256]` (flushed to
/// zero if subnormal).
///
/// # Panics
/// If `scales` has fewer than `codes.len().div_ceil(256)` entries.
#[cfg(test)]
pub(crate) fn dequantize_blockwise_8bit(codes: &[u8], scales: &[f32]) -> Vec<f32> {
    let code = dynamic_map_signed();
    codes
        .iter()
        .enumerate()
        .map(|(i, &q)| mul_ftz(code[q as usize], scales[i / ABSMAX_BLOCK]))
        .collect()
}

/// The mean used as the double-quantization offset: the values summed in order in f64,
/// divided by their number in f64, rounded to f32 (0 for no values).
pub(crate) fn absmax_mean(absmax: &[f32]) -> f32 {
    if absmax.is_empty() {
        return 0.0;
    }
    let sum: f64 = absmax.iter().map(|&a| f64::from(a)).sum();
    (sum / absmax.len() as f64) as f32
}

/// Double quantization of the per-block absmax values, as `quantize_4bit(...,
/// compress_statistics=True)` does it: `offset = mean(absmax)` ([`absmax_mean`]), then
/// [`quantize_blockwise_8bit`] of `absmax - offset` (f32 subtraction).
pub(crate) fn double_quantize(absmax: &[f32]) -> DoubleQuant {
    let offset = absmax_mean(absmax);
    let centered: Vec<f32> = absmax.iter().map(|&a| a - offset).collect();
    let (codes, scales) = quantize_blockwise_8bit(&centered);
    DoubleQuant {
        codes,
        scales,
        offset,
    }
}

/// Quantizes one block (at most 64 values) into `out` (`block.len().div_ceil(2)` bytes) and
/// returns its absmax.
fn quantize_block(block: &[f32], out: &mut [u8]) -> f32 {
    let absmax = block_absmax(block, NF4_BLOCK);
    let r = recip_ftz(absmax);
    let code = |x: f32| nf4_index(mul_ftz(x, r));
    for (pair, byte) in block.chunks(2).zip(out.iter_mut()) {
        let hi = code(pair[0]);
        // The padding value of an odd-length (last) block is a 0, quantized like the rest.
        let lo = code(pair.get(1).copied().unwrap_or(0.0));
        *byte = (hi << 4) | lo;
    }
    absmax
}

/// Quantizes a row-major `[out, in]` f32 weight to NF4 in blocks of 64, as bitsandbytes'
/// `quantize_4bit(W, blocksize=64, quant_type="nf4", compress_statistics=double_quant)` does on
/// CUDA (see the module docs for every detail, including ties, NaN, inf, zero blocks and the
/// partial last block).
///
/// Never panics: NaN and infinite values are quantized as the kernel would (NaN to code 0;
/// see the module docs). The result is the same whatever the number of threads.
///
/// # Errors
/// [`Nf4Error::ShapeMismatch`] if `shape[0] * shape[1] != values.len()`,
/// [`Nf4Error::ShapeOverflow`] if that product overflows.
pub(crate) fn quantize(
    values: &[f32],
    shape: [usize; 2],
    double_quant: bool,
) -> Result<Nf4Tensor, Nf4Error> {
    let expected = shape[0]
        .checked_mul(shape[1])
        .ok_or(Nf4Error::ShapeOverflow(shape))?;
    if expected != values.len() {
        return Err(Nf4Error::ShapeMismatch {
            shape,
            expected,
            actual: values.len(),
        });
    }
    let n = values.len();
    let mut packed = vec![0u8; n.div_ceil(2)];
    let mut absmax = vec![0f32; n.div_ceil(NF4_BLOCK)];
    values
        .par_chunks(NF4_BLOCK)
        .zip(packed.par_chunks_mut(NF4_BLOCK / 2))
        .zip(absmax.par_iter_mut())
        .with_min_len(256)
        .for_each(|((block, out), a)| *a = quantize_block(block, out));
    let absmax = if double_quant {
        Absmax::Double(double_quantize(&absmax))
    } else {
        Absmax::Plain(absmax)
    };
    Ok(Nf4Tensor {
        shape,
        packed,
        absmax,
    })
}

/// Dequantizes to a row-major `[out, in]` f32 weight: `NF4_CODE[q[i]] * absmax[i / 64]` (the
/// product flushed to zero if subnormal, as bitsandbytes' kernel does), with the absmax from
/// [`Nf4Tensor::absmax_f32`].
///
/// An inconsistent tensor (its fields are public) is an error: [`Nf4Tensor::validate`].
#[cfg(test)]
pub(crate) fn dequantize(t: &Nf4Tensor) -> Result<Vec<f32>, Nf4Error> {
    t.validate()?;
    let absmax = t.absmax_f32();
    let mut out = vec![0f32; t.numel()];
    out.par_chunks_mut(NF4_BLOCK)
        .zip(t.packed.par_chunks(NF4_BLOCK / 2))
        .zip(absmax.par_iter())
        .with_min_len(256)
        .for_each(|((out, bytes), &a)| {
            for (i, w) in out.iter_mut().enumerate() {
                *w = mul_ftz(NF4_CODE[nibble(bytes, i) as usize], a);
            }
        });
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A small deterministic generator (xorshift64*), giving roughly normal values.
    struct Rng(u64);
    impl Rng {
        fn uniform(&mut self) -> f32 {
            self.0 ^= self.0 >> 12;
            self.0 ^= self.0 << 25;
            self.0 ^= self.0 >> 27;
            let r = self.0.wrapping_mul(0x2545_F491_4F6C_DD1D);
            ((r >> 40) as f32) / (1u64 << 24) as f32
        }
        fn normal(&mut self) -> f32 {
            (0..12).map(|_| self.uniform()).sum::<f32>() - 6.0
        }
    }

    fn count_rule(x: f32) -> u8 {
        NF4_THRESHOLDS.iter().filter(|&&t| x > t).count() as u8
    }

    #[test]
    fn tables_are_sorted_and_thresholds_are_midpoints() {
        assert!(NF4_CODE.windows(2).all(|w| w[0] < w[1]));
        assert!(NF4_THRESHOLDS.windows(2).all(|w| w[0] < w[1]));
        for k in 0..15 {
            let mid = (NF4_CODE[k] + NF4_CODE[k + 1]) / 2.0;
            let ulps = (NF4_THRESHOLDS[k].to_bits() as i64 - mid.to_bits() as i64).abs();
            let expect = if [0, 8, 12, 14].contains(&k) { 1 } else { 0 };
            assert_eq!(ulps, expect, "threshold {k}");
        }
        let map = dynamic_map_signed();
        assert!(map.windows(2).all(|w| w[0] < w[1]));
        assert_eq!(map[127], 0.0);
        assert_eq!(map[255], 1.0);
        assert!((map[0] + 0.992_968_75).abs() < 1e-6, "{}", map[0]);
    }

    #[test]
    fn exact_codes_map_to_themselves() {
        for (k, &c) in NF4_CODE.iter().enumerate() {
            assert_eq!(nf4_index(c), k as u8);
        }
        let map = dynamic_map_signed();
        for (k, &c) in map.iter().enumerate() {
            assert_eq!(dynamic_index(&map, c), k as u8);
        }
    }

    #[test]
    fn thresholds_go_down_and_one_ulp_above_goes_up() {
        for (k, &t) in NF4_THRESHOLDS.iter().enumerate() {
            assert_eq!(nf4_index(t), k as u8);
            assert_eq!(nf4_index(t.next_up()), k as u8 + 1);
            assert_eq!(nf4_index(t.next_down()), k as u8);
        }
        // The f32 midpoints that differ from the CUDA thresholds by one ulp.
        let mid = |k: usize| (NF4_CODE[k] + NF4_CODE[k + 1]) / 2.0;
        assert_eq!(nf4_index(mid(0)), 1);
        assert_eq!(nf4_index(mid(8)), 8);
        assert_eq!(nf4_index(mid(12)), 13);
        assert_eq!(nf4_index(mid(14)), 15);
    }

    #[test]
    fn tree_is_the_count_of_thresholds_below() {
        let mut rng = Rng(7);
        let special = [
            f32::NAN,
            f32::INFINITY,
            f32::NEG_INFINITY,
            0.0,
            -0.0,
            2.0,
            -2.0,
            1e-45,
        ];
        for x in special
            .into_iter()
            .chain((0..200_000).map(|_| rng.uniform() * 2.4 - 1.2))
        {
            assert_eq!(nf4_index(x), count_rule(x), "x = {x}");
        }
        assert_eq!(nf4_index(f32::NAN), 0);
        assert_eq!(nf4_index(5.0), 15);
        assert_eq!(nf4_index(-5.0), 0);
    }

    #[test]
    fn dynamic_index_is_the_nearest_code() {
        let map = dynamic_map_signed();
        let mut rng = Rng(11);
        for i in 0..100_000 {
            let x = if i % 2 == 0 {
                rng.uniform() * 2.0 - 1.0
            } else {
                (rng.uniform() - 0.5) * 1e-3
            };
            let q = dynamic_index(&map, x) as usize;
            let best = (0..256)
                .min_by(|&a, &b| (x - map[a]).abs().total_cmp(&(x - map[b]).abs()))
                .unwrap();
            let (dq, db) = ((x - map[q]).abs(), (x - map[best]).abs());
            assert!(dq <= db, "x = {x}: got {q} ({dq}), nearest {best} ({db})");
        }
        assert_eq!(dynamic_index(&map, f32::NAN), 0);
        assert_eq!(dynamic_index(&map, 3.0), 255);
        assert_eq!(dynamic_index(&map, -3.0), 0);
    }

    #[test]
    fn dynamic_ties_go_to_where_the_search_ends() {
        let map = dynamic_map_signed();
        // The search ends on an even index p; a tie between p and p + 1 (x > code[p]) gives p,
        // a tie between p - 1 and p gives p as well.
        for k in 0..255 {
            let mid = (map[k] + map[k + 1]) * 0.5;
            if mid == map[k] || mid == map[k + 1] {
                continue;
            }
            let even = if k % 2 == 0 { k } else { k + 1 };
            assert_eq!(
                dynamic_index(&map, mid) as usize,
                even,
                "tie between {k} and {}",
                k + 1
            );
        }
    }

    #[test]
    fn zero_block_gives_code_zero_and_negative_zero() {
        let t = quantize(&[0.0; 64], [1, 64], false).unwrap();
        assert!(t.packed.iter().all(|&b| b == 0x00));
        assert_eq!(t.absmax, Absmax::Plain(vec![0.0]));
        let d = dequantize(&t).unwrap();
        assert!(d.iter().all(|&v| v == 0.0 && v.is_sign_negative()));
    }

    #[test]
    fn nibble_order_and_partial_odd_block() {
        // n = 3: absmax 1; codes 12 (0.5 <= t12), 0 (-1), 10 (0.25); the padding 0 gives 7.
        let t = quantize(&[0.5, -1.0, 0.25], [1, 3], false).unwrap();
        assert_eq!(t.packed, vec![0xC0, 0xA7]);
        assert_eq!(t.absmax, Absmax::Plain(vec![1.0]));
        assert_eq!(nibble(&t.packed, 0), 12);
        assert_eq!(nibble(&t.packed, 1), 0);
        assert_eq!(nibble(&t.packed, 2), 10);
        assert_eq!(
            dequantize(&t).unwrap(),
            vec![NF4_CODE[12], -1.0, NF4_CODE[10]]
        );
        // A partial block counts its padding zeros in its absmax: all negative values still
        // give absmax = max |x|, and a lone NaN gives absmax 0.
        let t = quantize(&[f32::NAN], [1, 1], false).unwrap();
        assert_eq!(t.absmax, Absmax::Plain(vec![0.0]));
        assert_eq!(t.packed, vec![0x00]);
    }

    #[test]
    fn nan_and_inf_do_not_panic() {
        let mut v: Vec<f32> = (0..256).map(|i| (i as f32 - 100.0) / 200.0).collect();
        v[3] = f32::NAN;
        v[70] = f32::INFINITY;
        for x in &mut v[128..192] {
            *x = f32::NAN;
        }
        v[200] = f32::NEG_INFINITY;
        let t = quantize(&v, [4, 64], true).unwrap();
        let plain = quantize(&v, [4, 64], false).unwrap();
        let Absmax::Plain(a) = &plain.absmax else {
            unreachable!()
        };
        assert_eq!(a[0], 0.5, "NaN is ignored by absmax");
        assert_eq!(nibble(&plain.packed, 3), 0, "NaN gets code 0");
        assert_eq!(a[1], f32::INFINITY);
        assert_eq!(
            nibble(&plain.packed, 64),
            7,
            "finite value in an inf block: x * 0 = 0"
        );
        assert_eq!(a[2], -f32::MAX, "a full block of NaN keeps the start value");
        let _ = dequantize(&t).unwrap();
        let _ = dequantize(&plain).unwrap();
    }

    #[test]
    fn subnormals_are_flushed() {
        let v: Vec<f32> = (0..64).map(|i| (i as f32 - 30.0) * 1e-40).collect();
        let t = quantize(&v, [1, 64], false).unwrap();
        assert_eq!(t.absmax, Absmax::Plain(vec![0.0]));
        assert!(t.packed.iter().all(|&b| b == 0));
    }

    #[test]
    fn pack_u32_round_trip() {
        let mut rng = Rng(3);
        for n in [1usize, 2, 7, 8, 9, 15, 16, 17, 63, 64, 65, 127, 300] {
            let v: Vec<f32> = (0..n).map(|_| rng.normal()).collect();
            let t = quantize(&v, [1, n], false).unwrap();
            let words = t.packed_u32();
            assert_eq!(words.len(), t.packed.len().div_ceil(4));
            for i in 0..n {
                let shift = 4 * ((i % 8) ^ 1);
                assert_eq!(
                    ((words[i / 8] >> shift) & 0xF) as u8,
                    nibble(&t.packed, i),
                    "n {n} i {i}"
                );
            }
        }
    }

    #[test]
    fn dequant_error_is_at_most_half_the_largest_gap() {
        let max_gap = NF4_CODE
            .windows(2)
            .map(|w| w[1] - w[0])
            .fold(0.0f32, f32::max);
        let mut rng = Rng(5);
        let (rows, cols) = (33, 100);
        let v: Vec<f32> = (0..rows * cols)
            .map(|i| rng.normal() * (1.0 + (i % 7) as f32))
            .collect();
        let t = quantize(&v, [rows, cols], false).unwrap();
        let d = dequantize(&t).unwrap();
        let Absmax::Plain(absmax) = &t.absmax else {
            unreachable!()
        };
        for (i, (&x, &y)) in v.iter().zip(&d).enumerate() {
            let a = absmax[i / NF4_BLOCK];
            assert!(
                (x - y).abs() <= 0.5 * max_gap * a * (1.0 + 1e-5),
                "i {i}: {x} vs {y}, absmax {a}"
            );
        }
    }

    #[test]
    fn double_quant_round_trip_and_storage() {
        let mut rng = Rng(9);
        let (rows, cols) = (64, 4096);
        let v: Vec<f32> = (0..rows * cols).map(|_| rng.normal() * 0.02).collect();
        let t = quantize(&v, [rows, cols], true).unwrap();
        let plain = quantize(&v, [rows, cols], false).unwrap();
        assert_eq!(t.packed, plain.packed);
        let Absmax::Plain(exact) = &plain.absmax else {
            unreachable!()
        };
        let Absmax::Double(dq) = &t.absmax else {
            unreachable!()
        };
        assert_eq!(dq.codes.len(), 4096);
        assert_eq!(dq.scales.len(), 16);
        let rec = t.absmax_f32();
        for (i, (&a, &r)) in exact.iter().zip(&rec).enumerate() {
            // Largest gap of the dynamic map is 0.9 / 64; half of it times the block's scale.
            let bound = 0.5 * (0.9 / 64.0) * dq.scales[i / ABSMAX_BLOCK] * 1.001 + 1e-7;
            assert!((a - r).abs() <= bound, "block {i}: {a} vs {r}");
        }
        assert_eq!(plain.storage_bytes(), 131_072 + 4 * 4096);
        assert_eq!(t.storage_bytes(), 131_072 + 4096 + 4 * 16 + 4);
        let bits_per_weight = t.storage_bytes() as f64 * 8.0 / (rows * cols) as f64;
        assert!((bits_per_weight - 4.127).abs() < 0.001, "{bits_per_weight}");
    }

    #[test]
    fn quantize_is_deterministic_and_blockwise() {
        let mut rng = Rng(13);
        let v: Vec<f32> = (0..64 * 1000 + 10).map(|_| rng.normal()).collect();
        let t = quantize(&v, [1, v.len()], true).unwrap();
        assert_eq!(t, quantize(&v, [1, v.len()], true).unwrap());
        // Block k depends only on its own 64 values.
        let one = quantize(&v[640..704], [1, 64], false).unwrap();
        assert_eq!(&t.packed[320..352], &one.packed[..]);
    }

    #[test]
    fn bad_shapes_are_errors() {
        assert_eq!(
            quantize(&[0.0; 10], [3, 4], false),
            Err(Nf4Error::ShapeMismatch {
                shape: [3, 4],
                expected: 12,
                actual: 10
            })
        );
        assert_eq!(
            quantize(&[], [usize::MAX, 2], false),
            Err(Nf4Error::ShapeOverflow([usize::MAX, 2]))
        );
        let t = quantize(&[], [0, 5], true).unwrap();
        assert!(t.packed.is_empty());
        assert!(dequantize(&t).unwrap().is_empty());
        let err =
            Nf4Tensor::from_parts([2, 64], vec![0; 64], Absmax::Plain(vec![1.0])).unwrap_err();
        assert_eq!(
            err,
            Nf4Error::Inconsistent {
                shape: [2, 64],
                what: "absmax",
                expected: 2,
                actual: 1
            }
        );
        assert!(Nf4Tensor::from_parts([2, 64], vec![0; 63], Absmax::Plain(vec![1.0; 2])).is_err());
        assert!(Nf4Tensor::from_parts([2, 64], vec![0; 64], Absmax::Plain(vec![1.0; 2])).is_ok());
        // Built by hand past `from_parts`: dequantizing it is an error, not a panic.
        let broken = Nf4Tensor {
            shape: [2, 64],
            packed: vec![0; 64],
            absmax: Absmax::Plain(vec![1.0]),
        };
        assert!(matches!(
            dequantize(&broken),
            Err(Nf4Error::Inconsistent { what: "absmax", .. })
        ));
    }
}
