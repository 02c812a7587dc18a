//! Linear layers as Llama uses them: no bias, Burn's `[in, out]` weight layout.

use burn::module::Param;
use burn::nn::{Linear, LinearConfig};
use burn::tensor::{Tensor, backend::Backend};

/// A randomly initialised `d_in -> d_out` layer without bias.
pub fn linear_no_bias<B: Backend>(d_in: usize, d_out: usize, device: &B::Device) -> Linear<B> {
    LinearConfig::new(d_in, d_out).with_bias(false).init(device)
}

/// A layer from its weight in Burn's layout, `[in, out]`.
pub fn linear_from_weight<B: Backend>(weight: Tensor<B, 2>) -> Linear<B> {
    Linear {
        weight: Param::from_tensor(weight),
        bias: None,
    }
}

/// Transposes a row-major `[rows, cols]` matrix: PyTorch's `[out, in]` to Burn's `[in, out]`
/// and back. Done on plain memory so that the parameter is contiguous.
pub fn transpose(values: &[f32], rows: usize, cols: usize) -> Vec<f32> {
    let mut out = vec![0.0; values.len()];
    // Tiles keep both the reads and the writes within cache lines.
    const TILE: usize = 32;
    for r0 in (0..rows).step_by(TILE) {
        for c0 in (0..cols).step_by(TILE) {
            for r in r0..(r0 + TILE).min(rows) {
                for c in c0..(c0 + TILE).min(cols) {
                    out[c * rows + r] = values[r * cols + c];
                }
            }
        }
    }
    out
}

#[cfg(test)]
mod tests {
    #[test]
    fn transpose_moves_each_value() {
        let m = [1.0, 2.0, 3.0, 4.0, 5.0, 6.0];
        assert_eq!(
            super::transpose(&m, 2, 3),
            vec![1.0, 4.0, 2.0, 5.0, 3.0, 6.0]
        );
    }
}
