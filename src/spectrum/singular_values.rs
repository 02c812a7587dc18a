//! Singular values of a row-major f32 matrix, with faer.

use faer::linalg::matmul::triangular::{self, BlockStructure};
use faer::linalg::svd;
use faer::{Accum, Mat, MatRef, Par};
use pulp::{Arch, Simd, WithSimd};

use faer::dyn_stack::{MemBuffer, MemStack};

use super::symmetric_matrix::{SymmetricMatrix, lower_column};
use super::tridiagonal::tridiagonal_eigenvalues;
use super::tridiagonalize::tridiagonalize;

/// How to compute the singular values.
///
/// Both decompose in f64 (the Gram route forms its matrix from f32 partial products). faer's
/// f32 SVD is not used: on the 49152 x 576 embedding of SmolLM2 it returned a spurious `1e-6`
/// value and shifted quartiles, where torch's f32 and faer's f64 agree.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Default)]
pub enum SvdMethod {
    /// Eigenvalues of the Gram matrix (`W W^T` of the short side), summed in f64 over partial
    /// products of [`F32_DEPTH`] columns made in f32, then a Householder tridiagonalization
    /// and a root-free QL iteration in f64. Much faster than an SVD. The squared values carry
    /// absolute errors of about `1e-7 * S0^2` (the f32 rounding of the partial products), so
    /// a value `s` is off by about `1e-7 * S0^2 / s`: close to an f32 SVD's error near `S0`,
    /// relatively larger far inside the noise. On SmolLM2 the SNRs match spectrum.py's within
    /// 8.6e-7 relative, as those of an f64 Gram matrix do.
    #[default]
    Gram,
    /// A full SVD in f64: accurate to f64 in every value, slower, and it holds two
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

/// Columns of `V` whose products are summed in f32 before that partial Gram matrix is added
/// to the f64 sum. f32 rounding grows with the length of a sum, so the sums are cut short.
/// SmolLM2's largest relative SNR difference from spectrum.py (torch), measured by `cargo
/// bench --bench scan`: 8.6e-7 with 64 columns, the same as with an f64 Gram matrix
/// (8.75e-7), and 3.3e-6 with 128. Whole-length f32 sums gave 6.9e-6
/// (`scripts/gram_accuracy.py`, which emulates the partial sums in torch).
const F32_DEPTH: usize = 64;

fn gram_values(data: &[f32], rows: usize, cols: usize, par: Par) -> Option<Vec<f32>> {
    let parallel = matches!(par, Par::Rayon(_));
    let (diagonal, off_diagonal) = tridiagonalize(lower_gram(data, rows, cols, par), parallel);
    let eigenvalues = tridiagonal_eigenvalues(&diagonal, &off_diagonal)?;
    Some(
        eigenvalues
            .iter()
            .map(|&e| e.max(0.0).sqrt() as f32)
            .collect(),
    )
}

/// The lower triangle of the `short x short` Gram matrix `V V^T`, summed in f64 over partial
/// products of [`F32_DEPTH`] columns made in f32, where `V` is the row-major `rows x cols`
/// matrix `data` or its transpose, whichever is wider.
fn lower_gram(data: &[f32], rows: usize, cols: usize, par: Par) -> SymmetricMatrix {
    let transposed = rows > cols;
    let (short, long) = if transposed {
        (cols, rows)
    } else {
        (rows, cols)
    };
    let mut gram = SymmetricMatrix::zeros(short);
    let mut partial = Mat::<f32>::zeros(short, short);
    let mut gathered = vec![0.0f32; if transposed { 0 } else { short * F32_DEPTH }];
    for start in (0..long).step_by(F32_DEPTH) {
        let depth = F32_DEPTH.min(long - start);
        // Columns `start..start + depth` of V, column-major: for V = data^T they are rows of
        // `data` as stored; for V = data they are gathered into that layout, so that a matrix
        // and its transpose (a checkpoint's weight and a Burn Linear's) get the same f32
        // products, bit for bit.
        let columns = if transposed {
            &data[start * cols..(start + depth) * cols]
        } else {
            let gathered = &mut gathered[..short * depth];
            for (r, row) in data.chunks_exact(cols).enumerate() {
                for (c, &value) in row[start..start + depth].iter().enumerate() {
                    gathered[c * short + r] = value;
                }
            }
            gathered
        };
        let columns = MatRef::from_column_major_slice(columns, short, depth);
        // The lower triangle only (half the products): the tridiagonalization reads no more.
        triangular::matmul(
            partial.as_mut(),
            BlockStructure::TriangularLower,
            Accum::Replace,
            columns,
            BlockStructure::Rectangular,
            columns.transpose(),
            BlockStructure::Rectangular,
            1.0,
            par,
        );
        add_lower(partial.as_ref(), &mut gram);
    }
    gram
}

/// Adds the lower triangle of `partial` to `gram`'s.
fn add_lower(partial: MatRef<'_, f32>, gram: &mut SymmetricMatrix) {
    let stride = gram.stride();
    Arch::new().dispatch(AddLower {
        partial,
        gram: gram.values_mut(),
        stride,
    });
}

/// [`add_lower`] compiled for the SIMD level found at run time, so that the conversion is
/// vectorised (a closure would not inherit the target features).
struct AddLower<'a> {
    partial: MatRef<'a, f32>,
    gram: &'a mut [f64],
    stride: usize,
}

impl WithSimd for AddLower<'_> {
    type Output = ();

    #[inline(always)]
    fn with_simd<S: Simd>(self, _simd: S) {
        let AddLower {
            partial,
            gram,
            stride,
        } = self;
        let n = partial.nrows();
        for j in 0..n {
            let from = &partial
                .col(j)
                .try_as_col_major()
                .expect("faer's matrices have contiguous columns")
                .as_slice()[j..];
            let to = &mut gram[lower_column(j, n, stride)];
            for (t, f) in to.iter_mut().zip(from) {
                *t += f64::from(*f);
            }
        }
    }
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

    /// The Gram route (partial products in f32, summed in f64) agrees with the f64 SVD on a
    /// matrix whose long side takes several partial products and a shorter last one, in both
    /// orientations and with all cores offered.
    #[test]
    fn gram_route_matches_the_svd_over_several_partial_products() {
        let (rows, cols) = (40, 3 * F32_DEPTH + 17);
        let mut state = 0x2545_F491_4F6C_DD1Du64;
        let data: Vec<f32> = (0..rows * cols)
            .map(|_| {
                state ^= state << 13;
                state ^= state >> 7;
                state ^= state << 17;
                (state >> 40) as f32 / (1u64 << 24) as f32 - 0.5
            })
            .collect();
        let want = singular_values(&data, rows, cols, SvdMethod::Svd, Par::Seq).unwrap();
        let flipped = transpose(&data, rows, cols);
        for (data, rows, cols, par) in [
            (&data, rows, cols, Par::Seq),
            (&flipped, cols, rows, Par::Seq),
            (&data, rows, cols, Par::rayon(0)),
        ] {
            let got = singular_values(data, rows, cols, SvdMethod::Gram, par).unwrap();
            assert_eq!(got.len(), want.len());
            for (g, w) in got.iter().zip(&want) {
                assert!(
                    (g - w).abs() <= 1e-6 * want[0],
                    "{rows} x {cols}: {g} vs {w}"
                );
            }
        }
    }

    fn transpose(data: &[f32], rows: usize, cols: usize) -> Vec<f32> {
        (0..cols)
            .flat_map(|j| (0..rows).map(move |i| data[i * cols + j]))
            .collect()
    }
}
