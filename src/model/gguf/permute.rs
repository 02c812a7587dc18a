//! Undo llama.cpp's permutation of the q/k projection rows.
//!
//! llama.cpp computes RoPE on interleaved pairs `(x[2i], x[2i+1])`, Hugging Face on halves
//! `(x[i], x[i + head_dim/2])`. Its converter therefore reorders the rows of `q_proj` and
//! `k_proj` (and their biases) within each head: HF row `i * head_dim/2 + j` (`i` in 0..2,
//! `j` in 0..head_dim/2) is stored at GGUF row `2 * j + i`. This module puts them back.

/// Un-permute the rows of a row-major `[rows, cols]` buffer, as `heads` heads of
/// `rows / heads` rows each (use `cols = 1` for a bias).
///
/// Returns the HF-ordered `[rows, cols]` buffer, or why the shape does not fit: `data.len()`
/// must be `rows * cols`, and `rows / heads` an even whole number.
pub(super) fn unpermute_rows(
    data: &[f32],
    rows: usize,
    cols: usize,
    heads: usize,
) -> Result<Vec<f32>, String> {
    if rows.checked_mul(cols) != Some(data.len()) {
        return Err(format!("{} values are not [{rows}, {cols}]", data.len()));
    }
    if heads == 0 || !rows.is_multiple_of(heads) || !(rows / heads).is_multiple_of(2) {
        return Err(format!(
            "{rows} rows cannot be split into {heads} heads of an even number of rows"
        ));
    }
    let half = rows / heads / 2;
    let mut out = Vec::with_capacity(data.len());
    // Output rows in HF order (head, i, j) read GGUF row (head, j, i).
    for head in 0..heads {
        for i in 0..2 {
            for j in 0..half {
                let src = head * 2 * half + 2 * j + i;
                out.extend_from_slice(&data[src * cols..(src + 1) * cols]);
            }
        }
    }
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::*;

    /// llama.cpp's forward permutation (`LlamaModel.permute`), written independently.
    fn permute(hf: &[f32], rows: usize, cols: usize, heads: usize) -> Vec<f32> {
        let half = rows / heads / 2;
        let mut out = vec![0.0; hf.len()];
        for head in 0..heads {
            for i in 0..2 {
                for j in 0..half {
                    let hf_row = head * 2 * half + i * half + j;
                    let gguf_row = head * 2 * half + 2 * j + i;
                    out[gguf_row * cols..(gguf_row + 1) * cols]
                        .copy_from_slice(&hf[hf_row * cols..(hf_row + 1) * cols]);
                }
            }
        }
        out
    }

    #[test]
    fn one_head_of_four_rows() {
        // GGUF rows [a0, b0, a1, b1] (pairs interleaved) -> HF rows [a0, a1, b0, b1].
        let gguf = [0.0, 2.0, 1.0, 3.0];
        assert_eq!(
            unpermute_rows(&gguf, 4, 1, 1).unwrap(),
            vec![0.0, 1.0, 2.0, 3.0]
        );
    }

    #[test]
    fn inverts_the_forward_permutation() {
        let (rows, cols, heads) = (24, 3, 3);
        let hf: Vec<f32> = (0..rows * cols).map(|x| x as f32).collect();
        let gguf = permute(&hf, rows, cols, heads);
        assert_ne!(gguf, hf);
        assert_eq!(unpermute_rows(&gguf, rows, cols, heads).unwrap(), hf);
    }

    #[test]
    fn bad_shapes_are_errors() {
        assert!(unpermute_rows(&[0.0; 12], 6, 2, 2).is_err()); // 3 rows per head: odd
        assert!(unpermute_rows(&[0.0; 12], 4, 2, 0).is_err());
        assert!(unpermute_rows(&[0.0; 11], 4, 3, 1).is_err());
    }
}
