//! What a GGUF file holds: metadata values and tensor infos.

use super::dequant::GgmlType;

/// One metadata value.
#[derive(Debug, Clone, PartialEq)]
pub(super) enum MetaValue {
    U8(u8),
    I8(i8),
    U16(u16),
    I16(i16),
    U32(u32),
    I32(i32),
    U64(u64),
    I64(i64),
    F32(f32),
    F64(f64),
    Bool(bool),
    Str(String),
    Array(MetaArray),
}

/// A metadata array, stored by element type (so that 49k token strings are one `Vec<String>`).
#[derive(Debug, Clone, PartialEq)]
pub(super) enum MetaArray {
    U8(Vec<u8>),
    I8(Vec<i8>),
    U16(Vec<u16>),
    I16(Vec<i16>),
    U32(Vec<u32>),
    I32(Vec<i32>),
    U64(Vec<u64>),
    I64(Vec<i64>),
    F32(Vec<f32>),
    F64(Vec<f64>),
    Bool(Vec<bool>),
    Str(Vec<String>),
    /// An array of arrays (each inner array may have its own element type).
    Array(Vec<MetaArray>),
}

impl MetaValue {
    /// The value as an integer, for any integer type.
    pub(super) fn as_int(&self) -> Option<i128> {
        Some(match *self {
            MetaValue::U8(v) => v.into(),
            MetaValue::I8(v) => v.into(),
            MetaValue::U16(v) => v.into(),
            MetaValue::I16(v) => v.into(),
            MetaValue::U32(v) => v.into(),
            MetaValue::I32(v) => v.into(),
            MetaValue::U64(v) => v.into(),
            MetaValue::I64(v) => v.into(),
            _ => return None,
        })
    }

    /// The value as a float, for `F32` and `F64`.
    pub(super) fn as_f64(&self) -> Option<f64> {
        match *self {
            MetaValue::F32(v) => Some(v.into()),
            MetaValue::F64(v) => Some(v),
            _ => None,
        }
    }

    /// The value as a string.
    pub(super) fn as_str(&self) -> Option<&str> {
        match self {
            MetaValue::Str(s) => Some(s),
            _ => None,
        }
    }

    /// A short name of the value's type, for error messages.
    pub(super) fn type_name(&self) -> &'static str {
        match self {
            MetaValue::U8(_) => "u8",
            MetaValue::I8(_) => "i8",
            MetaValue::U16(_) => "u16",
            MetaValue::I16(_) => "i16",
            MetaValue::U32(_) => "u32",
            MetaValue::I32(_) => "i32",
            MetaValue::U64(_) => "u64",
            MetaValue::I64(_) => "i64",
            MetaValue::F32(_) => "f32",
            MetaValue::F64(_) => "f64",
            MetaValue::Bool(_) => "bool",
            MetaValue::Str(_) => "string",
            MetaValue::Array(_) => "array",
        }
    }
}

impl MetaArray {
    /// Number of elements.
    pub(super) fn len(&self) -> usize {
        match self {
            MetaArray::U8(v) => v.len(),
            MetaArray::I8(v) => v.len(),
            MetaArray::U16(v) => v.len(),
            MetaArray::I16(v) => v.len(),
            MetaArray::U32(v) => v.len(),
            MetaArray::I32(v) => v.len(),
            MetaArray::U64(v) => v.len(),
            MetaArray::I64(v) => v.len(),
            MetaArray::F32(v) => v.len(),
            MetaArray::F64(v) => v.len(),
            MetaArray::Bool(v) => v.len(),
            MetaArray::Str(v) => v.len(),
            MetaArray::Array(v) => v.len(),
        }
    }

    /// The elements as integers, for any integer element type.
    pub(super) fn to_ints(&self) -> Option<Vec<i128>> {
        fn ints<T: Copy + Into<i128>>(v: &[T]) -> Vec<i128> {
            v.iter().map(|&x| x.into()).collect()
        }
        Some(match self {
            MetaArray::U8(v) => ints(v),
            MetaArray::I8(v) => ints(v),
            MetaArray::U16(v) => ints(v),
            MetaArray::I16(v) => ints(v),
            MetaArray::U32(v) => ints(v),
            MetaArray::I32(v) => ints(v),
            MetaArray::U64(v) => ints(v),
            MetaArray::I64(v) => ints(v),
            _ => return None,
        })
    }
}

/// Where one tensor is and what it holds.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct TensorInfo {
    /// GGUF name (`blk.0.attn_q.weight`).
    pub name: String,
    /// Row-major shape: the GGUF dims reversed, so a matrix is `[rows, cols]` like PyTorch.
    pub shape: Vec<usize>,
    /// Storage type.
    pub ggml_type: GgmlType,
    /// Byte offset of the data from the start of the data section.
    pub offset: u64,
    /// Bytes of data.
    pub n_bytes: usize,
}

impl TensorInfo {
    /// Number of values (product of the shape; 1 for a scalar).
    pub(crate) fn n_elements(&self) -> usize {
        // Saturating: a zero dimension may follow dimensions whose product overflows (the
        // reader bounds the true product, not every partial one).
        self.shape
            .iter()
            .fold(1, |n: usize, &d| n.saturating_mul(d))
    }
}

/// `u32 7` / `array of 3 string` for error messages.
pub(super) fn describe(value: &MetaValue) -> String {
    match value {
        MetaValue::Array(a) => format!("an array of {} elements", a.len()),
        MetaValue::Str(_) => "a string".to_string(),
        other => match (other.as_int(), other.as_f64()) {
            (Some(i), _) => format!("{} {i}", other.type_name()),
            (_, Some(f)) => format!("{} {f}", other.type_name()),
            _ => format!("a {}", other.type_name()),
        },
    }
}
