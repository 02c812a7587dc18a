//! Singular values of a row-major f32 matrix, with faer.

use faer::linalg::evd::tridiag;
use faer::linalg::matmul::triangular::{self, BlockStructure};
use faer::linalg::qr::no_pivoting::factor::recommended_block_size;
use faer::linalg::svd;
use faer::{Accum, Mat, MatRef, Par};

use faer::dyn_stack::{MemBuffer, MemStack};

use super::tridiagonal::tridiagonal_eigenvalues;

/// How to compute the singular values.
///
/// Both work in f64. faer's f32 SVD is not used: on the 49152 x 576 embedding of SmolLM2 it
/// returned a spurious `1e-6` value and shifted quartiles, where torch's f32 and faer's f64
/// agree.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Default)]
pub enum SvdMethod {
    /// Eigenvalues of the Gram matrix (`W W^T` of the short side) in f64 (faer's Householder
    /// tridiagonalization, then a root-free QL iteration): faster than an f32 SVD, with an
    /// absolute error of about `1e-8 * S0` per value, so values below `~1e-7 * S0` (far
    /// inside the noise) lose their relative accuracy; an f32 SVD has errors of the same size.
    #[default]
    Gram,
    /// A full SVD in f64: accurate to f64 in every value, about twice as slow, and it holds two
    /// f64 copies of the matrix.
    Svd,
}

/// Singular values, descending, of the `rows x cols` row-major matrix `data`; `None` if the
/// decomposition did not converge. `par` is the parallelism used inside this one matrix.
///
/// # Panics
/// If `data.len() != rows * cols`.
pub fn singular_values(
    data: &[f32],
    rows: usize,
    cols: usize,
    method: SvdMethod,
    par: Par,
) -> Option<Vec<f32>> {
    assert_eq!(
        data.len(),
        rows * cols,
        "matrix data does not fit its shape"
    );
    let a = MatRef::from_row_major_slice(data, rows, cols);
    let mut values = match method {
        SvdMethod::Svd => svd_values(a, par)?,
        SvdMethod::Gram => gram_values(data, rows, cols, par)?,
    };
    values.sort_by(|x, y| y.total_cmp(x));
    Some(values)
}

fn svd_values(a: MatRef<'_, f32>, par: Par) -> Option<Vec<f32>> {
    let size = a.nrows().min(a.ncols());
    let a = Mat::<f64>::from_fn(a.nrows(), a.ncols(), |i, j| a[(i, j)] as f64);
    let mut s = faer::diag::Diag::<f64>::zeros(size);
    let no = svd::ComputeSvdVectors::No;
    let scratch = svd::svd_scratch::<f64>(a.nrows(), a.ncols(), no, no, par, Default::default());
    let mut buffer = MemBuffer::new(scratch);
    svd::svd(
        a.as_ref(),
        s.as_mut(),
        None,
        None,
        par,
        MemStack::new(&mut buffer),
        Default::default(),
    )
    .ok()?;
    Some(s.column_vector().iter().map(|&v| v as f32).collect())
}

/// Values of the long side converted to f64 at a time (8 MiB); bounds the extra memory while
/// keeping the blocks wide enough for an efficient product. Every weight of SmolLM2 but the
/// embedding fits in one block.
const GRAM_BLOCK_VALUES: usize = 1 << 20;

fn gram_values(data: &[f32], rows: usize, cols: usize, par: Par) -> Option<Vec<f32>> {
    let gram = lower_gram(data, rows, cols, par);
    let (diagonal, off_diagonal) = tridiagonalize(gram, par);
    let eigenvalues = tridiagonal_eigenvalues(&diagonal, &off_diagonal)?;
    Some(
        eigenvalues
            .iter()
            .map(|&e| e.max(0.0).sqrt() as f32)
            .collect(),
    )
}

/// The lower triangle (the upper one is zero) of the `short x short` Gram matrix `V V^T` in
/// f64, where `V` is the row-major `rows x cols` matrix `data` or its transpose, whichever is
/// wider.
fn lower_gram(data: &[f32], rows: usize, cols: usize, par: Par) -> Mat<f64> {
    let transposed = rows > cols;
    let (short, long) = if transposed {
        (cols, rows)
    } else {
        (rows, cols)
    };
    let mut gram = Mat::<f64>::zeros(short, short);
    let width = (GRAM_BLOCK_VALUES / short.max(1)).clamp(1, long.max(1));
    let mut block = vec![0.0f64; short * width];
    for start in (0..long).step_by(width) {
        let width = width.min(long - start);
        let block = &mut block[..short * width];
        // Columns `start..start + width` of V, in V's layout: for V = data^T they are rows of
        // `data` (one contiguous run, column-major), for V = data pieces of each row.
        let columns = if transposed {
            convert(&data[start * cols..(start + width) * cols], block);
            MatRef::from_column_major_slice(block, short, width)
        } else {
            for (row, out) in data.chunks_exact(cols).zip(block.chunks_exact_mut(width)) {
                convert(&row[start..start + width], out);
            }
            MatRef::from_row_major_slice(block, short, width)
        };
        // The lower triangle only (half the products): the tridiagonalization reads no more.
        triangular::matmul(
            gram.as_mut(),
            BlockStructure::TriangularLower,
            Accum::Add,
            columns,
            BlockStructure::Rectangular,
            columns.transpose(),
            BlockStructure::Rectangular,
            1.0,
            par,
        );
    }
    gram
}

fn convert(from: &[f32], to: &mut [f64]) {
    for (t, f) in to.iter_mut().zip(from) {
        *t = f64::from(*f);
    }
}

/// The diagonal and off-diagonal of a tridiagonal matrix similar to the symmetric matrix whose
/// lower triangle is `lower` (faer's blocked Householder reduction, in place).
fn tridiagonalize(mut lower: Mat<f64>, par: Par) -> (Vec<f64>, Vec<f64>) {
    let n = lower.nrows();
    if n == 0 {
        return (Vec::new(), Vec::new());
    }
    let block_size = recommended_block_size::<f64>(n, n);
    let mut householder = Mat::<f64>::zeros(block_size, n - 1);
    let scratch = tridiag::tridiag_in_place_scratch::<f64>(n, par, Default::default());
    let mut buffer = MemBuffer::new(scratch);
    tridiag::tridiag_in_place(
        lower.as_mut(),
        householder.as_mut(),
        par,
        MemStack::new(&mut buffer),
        Default::default(),
    );
    let diagonal = (0..n).map(|i| lower[(i, i)]).collect();
    let off_diagonal = (1..n).map(|i| lower[(i, i - 1)]).collect();
    (diagonal, off_diagonal)
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A matrix with known singular values: diag(5, 3, 1) embedded in a 3 x 4, rows permuted
    /// and one column sign-flipped (orthogonal transforms keep the values).
    #[test]
    fn known_values_both_methods() {
        let data = [
            0.0, 3.0, 0.0, 0.0, //
            0.0, 0.0, 0.0, -1.0, //
            5.0, 0.0, 0.0, 0.0,
        ];
        for method in [SvdMethod::Svd, SvdMethod::Gram] {
            let s = singular_values(&data, 3, 4, method, Par::Seq).unwrap();
            assert_eq!(s.len(), 3);
            for (got, want) in s.iter().zip([5.0, 3.0, 1.0]) {
                assert!((got - want).abs() < 1e-5, "{method:?}: {s:?}");
            }
            let t = singular_values(&transpose(&data, 3, 4), 4, 3, method, Par::Seq).unwrap();
            assert_eq!(s.len(), t.len());
        }
    }

    fn transpose(data: &[f32], rows: usize, cols: usize) -> Vec<f32> {
        (0..cols)
            .flat_map(|j| (0..rows).map(move |i| data[i * cols + j]))
            .collect()
    }
}
