//! The float type an import writes.

use std::fmt;

use half::{bf16, f16};
use rayon::prelude::*;
use safetensors::Dtype;

/// Values converted per rayon task.
const VALUES_PER_TASK: usize = 1 << 16;

/// The float type of the written `model.safetensors`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, clap::ValueEnum)]
pub enum OutDtype {
    /// 32-bit floats.
    #[default]
    F32,
    /// IEEE half precision.
    F16,
    /// bfloat16.
    Bf16,
}

impl OutDtype {
    /// PyTorch's name, for `config.json`'s `torch_dtype` (`bfloat16`).
    pub fn torch_name(self) -> &'static str {
        match self {
            OutDtype::F32 => "float32",
            OutDtype::F16 => "float16",
            OutDtype::Bf16 => "bfloat16",
        }
    }

    pub(super) fn safetensors_dtype(self) -> Dtype {
        match self {
            OutDtype::F32 => Dtype::F32,
            OutDtype::F16 => Dtype::F16,
            OutDtype::Bf16 => Dtype::BF16,
        }
    }

    /// Little-endian bytes of `values` in this type, rounding to nearest-even as torch does.
    pub(super) fn encode(self, values: &[f32]) -> Vec<u8> {
        match self {
            OutDtype::F32 => encode_with(values, f32::to_le_bytes),
            OutDtype::F16 => encode_with(values, |v| f16::from_f32(v).to_le_bytes()),
            OutDtype::Bf16 => encode_with(values, |v| bf16::from_f32(v).to_le_bytes()),
        }
    }
}

/// `values` converted by `encode` into `N` bytes each, in parallel.
fn encode_with<const N: usize>(values: &[f32], encode: impl Fn(f32) -> [u8; N] + Sync) -> Vec<u8> {
    let mut out = vec![0u8; values.len() * N];
    out.par_chunks_mut(VALUES_PER_TASK * N)
        .zip(values.par_chunks(VALUES_PER_TASK))
        .for_each(|(out, values)| {
            for (o, &v) in out.chunks_exact_mut(N).zip(values) {
                o.copy_from_slice(&encode(v));
            }
        });
    out
}

impl fmt::Display for OutDtype {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            OutDtype::F32 => "f32",
            OutDtype::F16 => "f16",
            OutDtype::Bf16 => "bf16",
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn dtype_parsing_and_rounding() {
        let parse = |s| <OutDtype as clap::ValueEnum>::from_str(s, false);
        assert_eq!(parse("bf16"), Ok(OutDtype::Bf16));
        assert!(parse("f64").is_err());
        assert_eq!(OutDtype::default().to_string(), "f32");
        // 1 + 2^-8 is halfway between two bf16 values: ties go to the even one (1.0).
        let bytes = OutDtype::Bf16.encode(&[1.0 + 2f32.powi(-8), 1.0 + 3.0 * 2f32.powi(-8)]);
        assert_eq!(bytes, vec![0x80, 0x3F, 0x82, 0x3F]);
        let bytes = OutDtype::F16.encode(&[65520.0]); // rounds up to infinity, as torch does
        assert_eq!(bytes, vec![0x00, 0x7C]);
    }
}
