//! Singular values of a row-major f32 matrix, with faer.

use faer::linalg::matmul::triangular::{self, BlockStructure};
use faer::linalg::{evd, svd};
use faer::{Accum, Mat, MatRef, Par};

use faer::dyn_stack::{MemBuffer, MemStack};

/// How to compute the singular values.
///
/// Both work in f64. faer's f32 SVD is not used: on the 49152 x 576 embedding of SmolLM2 it
/// returned a spurious `1e-6` value and shifted quartiles, where torch's f32 and faer's f64
/// agree.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Default)]
pub enum SvdMethod {
    /// Eigenvalues of the Gram matrix (`W W^T` of the short side) in f64: as fast as an f32
    /// SVD, with an absolute error of about `1e-8 * S0` per value, so values below
    /// `~1e-7 * S0` (far inside the noise) lose their relative accuracy; an f32 SVD has errors
    /// of the same size.
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
        SvdMethod::Gram => gram_values(a, par)?,
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

/// Columns of the long side converted to f64 at a time; bounds the extra memory.
const GRAM_BLOCK: usize = 512;

fn gram_values(a: MatRef<'_, f32>, par: Par) -> Option<Vec<f32>> {
    // View as short x long so that the Gram matrix is the small one.
    let v = if a.nrows() <= a.ncols() {
        a
    } else {
        a.transpose()
    };
    let (short, long) = (v.nrows(), v.ncols());
    let mut gram = Mat::<f64>::zeros(short, short);
    for start in (0..long).step_by(GRAM_BLOCK) {
        let width = GRAM_BLOCK.min(long - start);
        let block = Mat::<f64>::from_fn(short, width, |i, j| v[(i, start + j)] as f64);
        // The lower triangle only (half the products): the eigen-solver reads no more.
        triangular::matmul(
            gram.as_mut(),
            BlockStructure::TriangularLower,
            Accum::Add,
            block.as_ref(),
            BlockStructure::Rectangular,
            block.transpose(),
            BlockStructure::Rectangular,
            1.0,
            par,
        );
    }
    let scratch = evd::self_adjoint_evd_scratch::<f64>(
        short,
        evd::ComputeEigenvectors::No,
        par,
        Default::default(),
    );
    let mut buffer = MemBuffer::new(scratch);
    let mut s = faer::diag::Diag::<f64>::zeros(short);
    evd::self_adjoint_evd(
        gram.as_ref(),
        s.as_mut(),
        None,
        par,
        MemStack::new(&mut buffer),
        Default::default(),
    )
    .ok()?;
    Some(
        s.column_vector()
            .iter()
            .map(|&e| e.max(0.0).sqrt() as f32)
            .collect(),
    )
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
