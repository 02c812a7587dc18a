//! A symmetric matrix's lower triangle in cache-line-aligned, padded columns: the layout the
//! tridiagonalization's vector loads want, written by the Gram product.

/// `f64` values per 64-byte cache line, the unit of padding and alignment.
pub(super) const LINE: usize = 8;

/// One cache line of values.
#[derive(Clone, Copy)]
#[repr(C, align(64))]
struct Line([f64; LINE]);

/// Zeroed `f64` storage whose start is aligned to a cache line, its length a whole number of
/// lines.
pub(super) struct Aligned(Vec<Line>);

impl Aligned {
    pub(super) fn zeros(len: usize) -> Self {
        Aligned(vec![Line([0.0; LINE]); len.div_ceil(LINE)])
    }

    pub(super) fn as_slice(&self) -> &[f64] {
        // SAFETY: `Line` is `repr(C)` over `[f64; LINE]` with no padding (its size, 64 bytes,
        // equals its alignment), so the lines are `LINE * len` contiguous `f64`s.
        unsafe { std::slice::from_raw_parts(self.0.as_ptr().cast(), self.0.len() * LINE) }
    }

    pub(super) fn as_mut_slice(&mut self) -> &mut [f64] {
        // SAFETY: as in `as_slice`; the borrow is unique.
        unsafe { std::slice::from_raw_parts_mut(self.0.as_mut_ptr().cast(), self.0.len() * LINE) }
    }
}

/// Where column `j`'s part of the lower triangle (rows `j..n`) lies among the values of an
/// `n x n` matrix with column stride `stride`.
pub(super) fn lower_column(j: usize, n: usize, stride: usize) -> std::ops::Range<usize> {
    j * stride + j..j * stride + n
}

/// The lower triangle of a symmetric `n x n` matrix, column-major, each column padded with
/// zeros to a whole number of cache lines (the column stride) and starting on one.
pub(crate) struct SymmetricMatrix {
    values: Aligned,
    n: usize,
    stride: usize,
}

impl SymmetricMatrix {
    /// The zero matrix.
    pub(crate) fn zeros(n: usize) -> Self {
        let stride = n.next_multiple_of(LINE);
        SymmetricMatrix {
            values: Aligned::zeros(stride * n),
            n,
            stride,
        }
    }

    /// The number of rows and columns.
    pub(crate) fn n(&self) -> usize {
        self.n
    }

    /// The column stride, a multiple of 8 not below `n`.
    pub(crate) fn stride(&self) -> usize {
        self.stride
    }

    /// All `stride * n` values, column-major. Only the lower triangle (rows `j..n` of column
    /// `j`) is read; rows `n..stride` must stay zero.
    pub(crate) fn values_mut(&mut self) -> &mut [f64] {
        &mut self.values.as_mut_slice()[..self.stride * self.n]
    }
}
