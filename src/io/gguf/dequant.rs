//! ggml tensor types and their dequantization to `f32`.
//!
//! Every kernel reproduces gguf-py's `gguf.quants.dequantize` bit for bit: the same `f16 -> f32`
//! conversions (exact), and the same float operations in the same order (for example Q6_K is
//! `(d * scale) * q`, not `d * (scale * q)`). Rust never fuses `a * b + c` into an FMA unless
//! asked, so `d * q + m` rounds twice, like numpy.

use half::f16;
use rayon::prelude::*;

/// Values per K-quant super-block.
const QK_K: usize = 256;

/// Blocks handed to one rayon task: large enough that scheduling costs nothing.
const BLOCKS_PER_TASK: usize = 512;

/// The ggml tensor types this importer can dequantize (with their ggml ids).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
#[allow(non_camel_case_types)]
pub(crate) enum GgmlType {
    F32 = 0,
    F16 = 1,
    Q4_0 = 2,
    Q4_1 = 3,
    Q8_0 = 8,
    Q4_K = 12,
    Q6_K = 14,
    BF16 = 30,
}

/// Names of all ggml type ids known to gguf-py (0.19), supported or not, for error messages.
const KNOWN_TYPE_NAMES: &[(u32, &str)] = &[
    (0, "F32"),
    (1, "F16"),
    (2, "Q4_0"),
    (3, "Q4_1"),
    (6, "Q5_0"),
    (7, "Q5_1"),
    (8, "Q8_0"),
    (9, "Q8_1"),
    (10, "Q2_K"),
    (11, "Q3_K"),
    (12, "Q4_K"),
    (13, "Q5_K"),
    (14, "Q6_K"),
    (15, "Q8_K"),
    (16, "IQ2_XXS"),
    (17, "IQ2_XS"),
    (18, "IQ3_XXS"),
    (19, "IQ1_S"),
    (20, "IQ4_NL"),
    (21, "IQ3_S"),
    (22, "IQ2_S"),
    (23, "IQ4_XS"),
    (24, "I8"),
    (25, "I16"),
    (26, "I32"),
    (27, "I64"),
    (28, "F64"),
    (29, "IQ1_M"),
    (30, "BF16"),
    (34, "TQ1_0"),
    (35, "TQ2_0"),
    (39, "MXFP4"),
    (40, "NVFP4"),
    (41, "Q1_0"),
];

/// The ggml name of a type id (`13` -> `Q5_K`), or `None` for an id ggml does not define.
pub(crate) fn ggml_type_name(id: u32) -> Option<&'static str> {
    KNOWN_TYPE_NAMES
        .iter()
        .find(|(known, _)| *known == id)
        .map(|(_, name)| *name)
}

impl GgmlType {
    /// The supported type with this ggml id, or `None` (see [`ggml_type_name`] for its name).
    pub(crate) fn from_id(id: u32) -> Option<Self> {
        Some(match id {
            0 => GgmlType::F32,
            1 => GgmlType::F16,
            2 => GgmlType::Q4_0,
            3 => GgmlType::Q4_1,
            8 => GgmlType::Q8_0,
            12 => GgmlType::Q4_K,
            14 => GgmlType::Q6_K,
            30 => GgmlType::BF16,
            _ => return None,
        })
    }

    /// The ggml type id.
    #[cfg(test)]
    pub(crate) fn id(self) -> u32 {
        self as u32
    }

    /// The ggml name (`Q4_K`).
    pub(crate) fn name(self) -> &'static str {
        match self {
            GgmlType::F32 => "F32",
            GgmlType::F16 => "F16",
            GgmlType::Q4_0 => "Q4_0",
            GgmlType::Q4_1 => "Q4_1",
            GgmlType::Q8_0 => "Q8_0",
            GgmlType::Q4_K => "Q4_K",
            GgmlType::Q6_K => "Q6_K",
            GgmlType::BF16 => "BF16",
        }
    }

    /// Values per block (1 for plain float types).
    pub(crate) fn block_size(self) -> usize {
        match self {
            GgmlType::F32 | GgmlType::F16 | GgmlType::BF16 => 1,
            GgmlType::Q4_0 | GgmlType::Q4_1 | GgmlType::Q8_0 => 32,
            GgmlType::Q4_K | GgmlType::Q6_K => QK_K,
        }
    }

    /// Bytes per block.
    pub(crate) fn type_size(self) -> usize {
        match self {
            GgmlType::F32 => 4,
            GgmlType::F16 | GgmlType::BF16 => 2,
            GgmlType::Q4_0 => 2 + 16,
            GgmlType::Q4_1 => 2 + 2 + 16,
            GgmlType::Q8_0 => 2 + 32,
            GgmlType::Q4_K => 2 + 2 + 12 + QK_K / 2,
            GgmlType::Q6_K => QK_K / 2 + QK_K / 4 + QK_K / 16 + 2,
        }
    }

    /// Bytes taken by `n_elements` values, or `None` when `n_elements` is not a whole number
    /// of blocks or the size overflows.
    pub(crate) fn bytes_for(self, n_elements: u64) -> Option<u64> {
        let block = self.block_size() as u64;
        if !n_elements.is_multiple_of(block) {
            return None;
        }
        (n_elements / block).checked_mul(self.type_size() as u64)
    }
}

/// Why a byte buffer could not be dequantized.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub(crate) enum DequantError {
    #[error("{n_elements} values are not a whole number of {ty:?} blocks of {block}")]
    NotWholeBlocks {
        ty: GgmlType,
        n_elements: usize,
        block: usize,
    },
    #[error("{n_elements} {ty:?} values need {expected} bytes, got {got}")]
    WrongLength {
        ty: GgmlType,
        n_elements: usize,
        expected: usize,
        got: usize,
    },
}

/// Dequantize `n_elements` values of type `ty` stored in `bytes` (little-endian ggml blocks).
///
/// Returns a `Vec<f32>` of length `n_elements`, in storage order.
pub(crate) fn dequantize(
    ty: GgmlType,
    bytes: &[u8],
    n_elements: usize,
) -> Result<Vec<f32>, DequantError> {
    let block = ty.block_size();
    if !n_elements.is_multiple_of(block) {
        return Err(DequantError::NotWholeBlocks {
            ty,
            n_elements,
            block,
        });
    }
    let expected = (n_elements / block).saturating_mul(ty.type_size());
    if bytes.len() != expected {
        return Err(DequantError::WrongLength {
            ty,
            n_elements,
            expected,
            got: bytes.len(),
        });
    }
    let kernel: fn(&[u8], &mut [f32]) = match ty {
        GgmlType::F32 => block_f32,
        GgmlType::F16 => block_f16,
        GgmlType::BF16 => block_bf16,
        GgmlType::Q8_0 => block_q8_0,
        GgmlType::Q4_0 => block_q4_0,
        GgmlType::Q4_1 => block_q4_1,
        GgmlType::Q4_K => block_q4_k,
        GgmlType::Q6_K => block_q6_k,
    };
    let mut out = vec![0f32; n_elements];
    // Plain float types have 1-value "blocks": give each task many of them.
    let (in_chunk, out_chunk) = (ty.type_size() * BLOCKS_PER_TASK, block * BLOCKS_PER_TASK);
    out.par_chunks_mut(out_chunk)
        .zip(bytes.par_chunks(in_chunk))
        .for_each(|(out, bytes)| {
            for (out, bytes) in out
                .chunks_exact_mut(block)
                .zip(bytes.chunks_exact(ty.type_size()))
            {
                kernel(bytes, out);
            }
        });
    Ok(out)
}

/// An IEEE half at `bytes[0..2]`, widened exactly to `f32`.
fn f16_at(bytes: &[u8], at: usize) -> f32 {
    f16::from_bits(u16::from_le_bytes([bytes[at], bytes[at + 1]])).to_f32()
}

/// F32: 4 little-endian bytes -> 1 value.
fn block_f32(bytes: &[u8], out: &mut [f32]) {
    out[0] = f32::from_le_bytes([bytes[0], bytes[1], bytes[2], bytes[3]]);
}

/// F16: 2 bytes -> 1 value.
fn block_f16(bytes: &[u8], out: &mut [f32]) {
    out[0] = f16_at(bytes, 0);
}

/// BF16: the 16 high bits of an f32 (exact widening).
fn block_bf16(bytes: &[u8], out: &mut [f32]) {
    out[0] = f32::from_bits((u16::from_le_bytes([bytes[0], bytes[1]]) as u32) << 16);
}

/// Q8_0, 34 bytes -> 32 values: f16 `d`, then 32 `i8` q; value = q * d.
fn block_q8_0(bytes: &[u8], out: &mut [f32]) {
    let d = f16_at(bytes, 0);
    for (o, &q) in out.iter_mut().zip(&bytes[2..34]) {
        *o = (q as i8) as f32 * d;
    }
}

/// Q4_0, 18 bytes -> 32 values: f16 `d`, then 16 bytes of nibbles (low nibbles are values
/// 0..16, high nibbles 16..32); value = d * (q - 8).
fn block_q4_0(bytes: &[u8], out: &mut [f32]) {
    let d = f16_at(bytes, 0);
    let (lo, hi) = out.split_at_mut(16);
    for (j, &b) in bytes[2..18].iter().enumerate() {
        lo[j] = d * ((b & 0x0F) as i32 - 8) as f32;
        hi[j] = d * ((b >> 4) as i32 - 8) as f32;
    }
}

/// Q4_1, 20 bytes -> 32 values: f16 `d`, f16 `m`, 16 bytes of nibbles; value = d * q + m.
fn block_q4_1(bytes: &[u8], out: &mut [f32]) {
    let d = f16_at(bytes, 0);
    let m = f16_at(bytes, 2);
    let (lo, hi) = out.split_at_mut(16);
    for (j, &b) in bytes[4..20].iter().enumerate() {
        lo[j] = d * (b & 0x0F) as f32 + m;
        hi[j] = d * (b >> 4) as f32 + m;
    }
}

/// The 8 six-bit (scale, min) pairs of a Q4_K super-block, packed in 12 bytes:
/// bytes 0..4 hold scales 0..4 (low 6 bits) and the high 2 bits of scales 4..8;
/// bytes 4..8 the same for mins; bytes 8..12 the low 4 bits of scales (low nibble) and
/// mins (high nibble) 4..8.
fn q4_k_scale_min(packed: &[u8]) -> ([u8; 8], [u8; 8]) {
    let (mut sc, mut mn) = ([0u8; 8], [0u8; 8]);
    for j in 0..4 {
        let (d, m, md) = (packed[j], packed[j + 4], packed[j + 8]);
        sc[j] = d & 0x3F;
        mn[j] = m & 0x3F;
        sc[j + 4] = (md & 0x0F) | ((d >> 2) & 0x30);
        mn[j + 4] = (md >> 4) | ((m >> 2) & 0x30);
    }
    (sc, mn)
}

/// Q4_K, 144 bytes -> 256 values: f16 `d`, f16 `dmin`, 12 bytes of packed 6-bit scales and
/// mins, 128 bytes of nibbles. Sub-block `s` (32 values) is the low (even `s`) or high (odd
/// `s`) nibbles of bytes `32 * (s / 2)..+32`; value = (d * sc[s]) * q - (dmin * min[s]).
fn block_q4_k(bytes: &[u8], out: &mut [f32]) {
    let d = f16_at(bytes, 0);
    let dmin = f16_at(bytes, 2);
    let (sc, mn) = q4_k_scale_min(&bytes[4..16]);
    let qs = &bytes[16..144];
    for (s, out) in out.chunks_exact_mut(32).enumerate() {
        let scale = d * sc[s] as f32;
        let min = dmin * mn[s] as f32;
        let shift = 4 * (s % 2);
        for (o, &b) in out.iter_mut().zip(&qs[32 * (s / 2)..32 * (s / 2) + 32]) {
            *o = scale * ((b >> shift) & 0x0F) as f32 - min;
        }
    }
}

/// Q6_K, 210 bytes -> 256 values: 128 bytes `ql` (low 4 bits), 64 bytes `qh` (high 2 bits),
/// 16 `i8` scales (one per 16 values), f16 `d`. For value `f`, with `h = f / 128`,
/// `r = f % 128`: low bits = nibble `r / 64` of `ql[64h + r % 64]`, high bits = 2-bit field
/// `r / 32` of `qh[32h + r % 32]`; value = (d * scale[f / 16]) * (q - 32).
fn block_q6_k(bytes: &[u8], out: &mut [f32]) {
    let (ql, qh) = (&bytes[0..128], &bytes[128..192]);
    let scales = &bytes[192..208];
    let d = f16_at(bytes, 208);
    for (f, o) in out.iter_mut().enumerate() {
        let (h, r) = (f / 128, f % 128);
        let low = (ql[64 * h + r % 64] >> (4 * (r / 64))) & 0x0F;
        let high = (qh[32 * h + r % 32] >> (2 * (r / 32))) & 0x03;
        let q = (low | (high << 4)) as i32 - 32;
        *o = (d * (scales[f / 16] as i8) as f32) * q as f32;
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn f16_bytes(x: f32) -> [u8; 2] {
        f16::from_f32(x).to_bits().to_le_bytes()
    }

    #[test]
    fn type_table_matches_ggml() {
        assert_eq!(GgmlType::Q4_K.type_size(), 144);
        assert_eq!(GgmlType::Q6_K.type_size(), 210);
        assert_eq!(GgmlType::from_id(13), None);
        assert_eq!(ggml_type_name(13), Some("Q5_K"));
        assert_eq!(ggml_type_name(99), None);
        for id in 0..64 {
            if let Some(ty) = GgmlType::from_id(id) {
                assert_eq!(ty.id(), id);
                assert_eq!(ggml_type_name(id), Some(ty.name()));
            }
        }
    }

    #[test]
    fn q8_0_block() {
        let mut block = f16_bytes(0.5).to_vec();
        block.extend((0..32).map(|i| (i as i8 - 16) as u8));
        let out = dequantize(GgmlType::Q8_0, &block, 32).unwrap();
        assert_eq!(out[0], -8.0);
        assert_eq!(out[31], 7.5);
    }

    #[test]
    fn q4_0_nibble_order() {
        let mut block = f16_bytes(2.0).to_vec();
        // Byte j: low nibble = value j, high nibble = value j + 16.
        block.extend((0..16u8).map(|j| j | ((15 - j) << 4)));
        let out = dequantize(GgmlType::Q4_0, &block, 32).unwrap();
        assert_eq!(out[0], -16.0); // (0 - 8) * 2
        assert_eq!(out[15], 14.0); // (15 - 8) * 2
        assert_eq!(out[16], 14.0);
        assert_eq!(out[31], -16.0);
    }

    #[test]
    fn q4_k_scales_unpack() {
        // scales 0..4 = 1..=4, mins 0..4 = 5..=8, scales 4..8 = 0x3F (all bits), mins 4..8 = 0.
        let packed = [
            1 | 0xC0,
            2 | 0xC0,
            3 | 0xC0,
            4 | 0xC0,
            5,
            6,
            7,
            8,
            0x0F,
            0x0F,
            0x0F,
            0x0F,
        ];
        let (sc, mn) = q4_k_scale_min(&packed);
        assert_eq!(sc, [1, 2, 3, 4, 63, 63, 63, 63]);
        assert_eq!(mn, [5, 6, 7, 8, 0, 0, 0, 0]);
    }

    #[test]
    fn bad_lengths_are_errors() {
        assert!(matches!(
            dequantize(GgmlType::Q4_K, &[0; 144], 255),
            Err(DequantError::NotWholeBlocks { .. })
        ));
        assert!(matches!(
            dequantize(GgmlType::Q4_0, &[0; 17], 32),
            Err(DequantError::WrongLength { .. })
        ));
        assert_eq!(
            dequantize(GgmlType::F32, &[], 0).unwrap(),
            Vec::<f32>::new()
        );
    }

    #[test]
    fn bf16_and_f16_widen_exactly() {
        let out = dequantize(GgmlType::BF16, &[0x80, 0x3F, 0x00, 0xC0], 2).unwrap();
        assert_eq!(out, vec![1.0, -2.0]);
        let sub = f16::from_bits(1); // smallest subnormal
        let out = dequantize(GgmlType::F16, &sub.to_bits().to_le_bytes(), 1).unwrap();
        assert_eq!(out[0], 2f32.powi(-24));
    }
}
