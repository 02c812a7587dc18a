//! The GGUF parser: header, metadata key/values and tensor infos.
//!
//! Layout (little-endian, versions 2 and 3):
//! `"GGUF"`, `u32` version, `u64` tensor count, `u64` metadata count, the metadata key/values,
//! the tensor infos, padding to `general.alignment` (default 32), then the data section, where
//! each tensor sits at its info's offset. Strings are a `u64` byte length and UTF-8 bytes.
//!
//! Every count and length is checked against the bytes left in the file before anything is
//! allocated for it, so a truncated or hostile file gives a [`GgufError`], never a panic or a
//! huge allocation.

use std::collections::HashSet;
use std::path::Path;

use indexmap::IndexMap;

use super::dequant::{GgmlType, ggml_type_name};
use super::value::{MetaArray, MetaValue, TensorInfo, describe};
use crate::error::GgufError;

type Result<T> = std::result::Result<T, GgufError>;

const MAGIC: &[u8; 4] = b"GGUF";
const DEFAULT_ALIGNMENT: u64 = 32;
/// ggml tensors have at most 4 dimensions.
const MAX_DIMS: u32 = 4;
/// Nested metadata arrays deeper than this are refused (recursion bound).
const MAX_ARRAY_DEPTH: usize = 8;
/// Smallest possible tensor info: name length (8), n_dims (4), type (4), offset (8).
const MIN_TENSOR_INFO_BYTES: u64 = 24;
/// Smallest possible metadata entry: key length (8), value type (4), a 1-byte value.
const MIN_KV_BYTES: u64 = 13;
/// Entries reserved up front at most; beyond this, vectors grow as entries really parse.
const MAX_PREALLOC: usize = 1 << 16;

/// What [`Parser::parse`] found.
#[derive(Debug)]
pub(super) struct Parsed {
    /// Checked (2 or 3) and kept for the tests; nothing else needs it once parsed.
    #[cfg_attr(not(test), allow(dead_code))]
    pub(super) version: u32,
    pub(super) data_offset: u64,
    pub(super) metadata: IndexMap<String, MetaValue>,
    pub(super) tensors: Vec<TensorInfo>,
}

/// A bounds-checked little-endian reader over the whole file.
pub(super) struct Parser<'a> {
    buf: &'a [u8],
    pos: usize,
    path: &'a Path,
}

impl<'a> Parser<'a> {
    pub(super) fn new(buf: &'a [u8], path: &'a Path) -> Self {
        Parser { buf, pos: 0, path }
    }

    /// Bytes left after the current position.
    fn remaining(&self) -> u64 {
        (self.buf.len() - self.pos) as u64
    }

    fn truncated(&self, what: String, needed: u64) -> GgufError {
        GgufError::Truncated {
            path: self.path.to_path_buf(),
            what,
            needed,
            len: self.buf.len() as u64,
        }
    }

    fn absurd(&self, what: String, reason: String) -> GgufError {
        GgufError::Absurd {
            path: self.path.to_path_buf(),
            what,
            reason,
        }
    }

    fn invalid_meta(&self, key: &str, reason: String) -> GgufError {
        GgufError::InvalidMetadata {
            path: self.path.to_path_buf(),
            key: key.to_string(),
            reason,
        }
    }

    /// The next `n` bytes; `what` names them if the file ends first.
    fn take(&mut self, n: u64, what: &dyn Fn() -> String) -> Result<&'a [u8]> {
        if n > self.remaining() {
            return Err(self.truncated(what(), (self.pos as u64).saturating_add(n)));
        }
        let start = self.pos;
        self.pos += n as usize;
        Ok(&self.buf[start..self.pos])
    }

    fn array<const N: usize>(&mut self, what: &dyn Fn() -> String) -> Result<[u8; N]> {
        let bytes = self.take(N as u64, what)?;
        let mut out = [0u8; N];
        out.copy_from_slice(bytes);
        Ok(out)
    }

    fn u32(&mut self, what: &dyn Fn() -> String) -> Result<u32> {
        Ok(u32::from_le_bytes(self.array(what)?))
    }

    fn u64(&mut self, what: &dyn Fn() -> String) -> Result<u64> {
        Ok(u64::from_le_bytes(self.array(what)?))
    }

    /// A GGUF string: `u64` length (bounded by the bytes left), then UTF-8.
    fn string(&mut self, what: &dyn Fn() -> String) -> Result<String> {
        let len = self.u64(what)?;
        let bytes = self.take(len, what)?;
        String::from_utf8(bytes.to_vec()).map_err(|e| GgufError::Absurd {
            path: self.path.to_path_buf(),
            what: what(),
            reason: format!("not valid UTF-8 ({e})"),
        })
    }

    /// Header, metadata, tensor infos, then the data-section checks.
    pub(super) fn parse(mut self) -> Result<Parsed> {
        let version = self.header()?;
        let tensor_count = self.u64(&|| "tensor count".into())?;
        let kv_count = self.u64(&|| "metadata count".into())?;
        self.check_count("metadata count", kv_count, MIN_KV_BYTES)?;
        self.check_count("tensor count", tensor_count, MIN_TENSOR_INFO_BYTES)?;
        let metadata = self.metadata(kv_count)?;
        let alignment = self.alignment(&metadata)?;
        let mut tensors = Vec::with_capacity((tensor_count as usize).min(MAX_PREALLOC));
        let mut names = HashSet::new();
        for index in 0..tensor_count {
            let info = self.tensor_info(index, alignment)?;
            if !names.insert(info.name.clone()) {
                return Err(GgufError::InvalidTensor {
                    path: self.path.to_path_buf(),
                    tensor: info.name,
                    reason: "duplicate tensor name".into(),
                });
            }
            tensors.push(info);
        }
        let data_offset = (self.pos as u64).next_multiple_of(alignment);
        for info in &tensors {
            let end = data_offset
                .checked_add(info.offset)
                .and_then(|start| start.checked_add(info.n_bytes as u64));
            match end {
                Some(end) if end <= self.buf.len() as u64 => {}
                _ => {
                    let needed = end.unwrap_or(u64::MAX);
                    return Err(self.truncated(format!("data of tensor `{}`", info.name), needed));
                }
            }
        }
        Ok(Parsed {
            version,
            data_offset,
            metadata,
            tensors,
        })
    }

    /// Magic and version.
    fn header(&mut self) -> Result<u32> {
        let magic: [u8; 4] = self.array(&|| "magic".into())?;
        if &magic != MAGIC {
            return Err(GgufError::BadMagic {
                path: self.path.to_path_buf(),
                found: magic.to_vec(),
            });
        }
        let version = self.u32(&|| "version".into())?;
        if version != 2 && version != 3 {
            // A big-endian file reads as a huge version with zero low bytes.
            let hint = if version > 0xFFFF && version & 0xFFFF == 0 {
                " (this looks like a big-endian GGUF)"
            } else {
                ""
            };
            return Err(GgufError::UnsupportedVersion {
                path: self.path.to_path_buf(),
                version,
                hint,
            });
        }
        Ok(version)
    }

    /// Refuse a count whose smallest possible encoding is longer than the rest of the file.
    fn check_count(&self, what: &str, count: u64, min_bytes_each: u64) -> Result<()> {
        let max = self.remaining() / min_bytes_each;
        if count > max {
            return Err(self.absurd(
                format!("{what} {count}"),
                format!(
                    "{} bytes are left, room for at most {max} entries of {min_bytes_each}+ bytes",
                    self.remaining()
                ),
            ));
        }
        Ok(())
    }

    /// `kv_count` key/value pairs; keys must be unique.
    fn metadata(&mut self, kv_count: u64) -> Result<IndexMap<String, MetaValue>> {
        let mut metadata = IndexMap::with_capacity((kv_count as usize).min(MAX_PREALLOC));
        for index in 0..kv_count {
            let key = self.string(&|| format!("key of metadata entry {index}"))?;
            let value_type = self.u32(&|| format!("type of metadata `{key}`"))?;
            let value = self.value(&key, value_type, 0)?;
            if metadata.contains_key(&key) {
                return Err(self.invalid_meta(&key, "duplicate key".into()));
            }
            metadata.insert(key, value);
        }
        Ok(metadata)
    }

    /// One value of GGUF value type `value_type` (`depth` counts enclosing arrays).
    fn value(&mut self, key: &str, value_type: u32, depth: usize) -> Result<MetaValue> {
        let what = || format!("value of metadata `{key}`");
        Ok(match value_type {
            0 => MetaValue::U8(self.array::<1>(&what)?[0]),
            1 => MetaValue::I8(self.array::<1>(&what)?[0] as i8),
            2 => MetaValue::U16(u16::from_le_bytes(self.array(&what)?)),
            3 => MetaValue::I16(i16::from_le_bytes(self.array(&what)?)),
            4 => MetaValue::U32(u32::from_le_bytes(self.array(&what)?)),
            5 => MetaValue::I32(i32::from_le_bytes(self.array(&what)?)),
            6 => MetaValue::F32(f32::from_le_bytes(self.array(&what)?)),
            7 => MetaValue::Bool(self.bool(key)?),
            8 => MetaValue::Str(self.string(&what)?),
            9 => MetaValue::Array(self.meta_array(key, depth)?),
            10 => MetaValue::U64(u64::from_le_bytes(self.array(&what)?)),
            11 => MetaValue::I64(i64::from_le_bytes(self.array(&what)?)),
            12 => MetaValue::F64(f64::from_le_bytes(self.array(&what)?)),
            other => return Err(self.invalid_meta(key, format!("unknown value type {other}"))),
        })
    }

    fn bool(&mut self, key: &str) -> Result<bool> {
        match self.array::<1>(&|| format!("value of metadata `{key}`"))?[0] {
            0 => Ok(false),
            1 => Ok(true),
            other => Err(self.invalid_meta(key, format!("bool byte {other} is neither 0 nor 1"))),
        }
    }

    /// An array: `u32` element type, `u64` count, elements. The count is checked against the
    /// bytes left (at the smallest size an element can have) before reserving anything.
    fn meta_array(&mut self, key: &str, depth: usize) -> Result<MetaArray> {
        if depth >= MAX_ARRAY_DEPTH {
            return Err(
                self.invalid_meta(key, format!("arrays nested deeper than {MAX_ARRAY_DEPTH}"))
            );
        }
        let what = || format!("array header of metadata `{key}`");
        let elem_type = self.u32(&what)?;
        let count = self.u64(&what)?;
        let min_size: u64 = match elem_type {
            0 | 1 | 7 => 1,
            2 | 3 => 2,
            4..=6 => 4,
            8 | 10..=12 => 8,
            9 => 12,
            other => {
                return Err(self.invalid_meta(key, format!("unknown array element type {other}")));
            }
        };
        if count > self.remaining() / min_size {
            return Err(self.absurd(
                format!("length {count} of metadata array `{key}`"),
                format!("only {} bytes are left in the file", self.remaining()),
            ));
        }
        self.array_elements(key, elem_type, count as usize, depth)
    }

    /// `count` array elements of GGUF value type `elem_type` (already checked to fit).
    fn array_elements(
        &mut self,
        key: &str,
        elem_type: u32,
        count: usize,
        depth: usize,
    ) -> Result<MetaArray> {
        let what = || format!("elements of metadata array `{key}`");
        Ok(match elem_type {
            0 => MetaArray::U8(self.fixed(count, &what, u8::from_le_bytes)?),
            1 => MetaArray::I8(self.fixed(count, &what, i8::from_le_bytes)?),
            2 => MetaArray::U16(self.fixed(count, &what, u16::from_le_bytes)?),
            3 => MetaArray::I16(self.fixed(count, &what, i16::from_le_bytes)?),
            4 => MetaArray::U32(self.fixed(count, &what, u32::from_le_bytes)?),
            5 => MetaArray::I32(self.fixed(count, &what, i32::from_le_bytes)?),
            6 => MetaArray::F32(self.fixed(count, &what, f32::from_le_bytes)?),
            10 => MetaArray::U64(self.fixed(count, &what, u64::from_le_bytes)?),
            11 => MetaArray::I64(self.fixed(count, &what, i64::from_le_bytes)?),
            12 => MetaArray::F64(self.fixed(count, &what, f64::from_le_bytes)?),
            7 => MetaArray::Bool((0..count).map(|_| self.bool(key)).collect::<Result<_>>()?),
            // Variable-size elements: reserve little, grow as elements really parse.
            8 => {
                let mut out = Vec::with_capacity(count.min(MAX_PREALLOC));
                for _ in 0..count {
                    out.push(self.string(&what)?);
                }
                MetaArray::Str(out)
            }
            _ => {
                let mut out = Vec::with_capacity(count.min(MAX_PREALLOC));
                for _ in 0..count {
                    out.push(self.meta_array(key, depth + 1)?);
                }
                MetaArray::Array(out)
            }
        })
    }

    /// `count` fixed-size elements of `N` bytes each, decoded by `decode`.
    fn fixed<T, const N: usize>(
        &mut self,
        count: usize,
        what: &dyn Fn() -> String,
        decode: fn([u8; N]) -> T,
    ) -> Result<Vec<T>> {
        let bytes = self.take(count.saturating_mul(N) as u64, what)?;
        Ok(bytes
            .chunks_exact(N)
            .map(|chunk| {
                let mut element = [0u8; N];
                element.copy_from_slice(chunk);
                decode(element)
            })
            .collect())
    }

    /// `general.alignment` if present (a non-zero power of two in a `u32`), else 32.
    fn alignment(&self, metadata: &IndexMap<String, MetaValue>) -> Result<u64> {
        let key = "general.alignment";
        match metadata.get(key) {
            None => Ok(DEFAULT_ALIGNMENT),
            Some(MetaValue::U32(a)) if a.is_power_of_two() => Ok(u64::from(*a)),
            Some(other) => Err(self.invalid_meta(
                key,
                format!(
                    "expected a non-zero power of two (u32), found {}",
                    describe(other)
                ),
            )),
        }
    }

    /// Tensor info number `index`: name, `u32` n_dims, n_dims `u64` dims (innermost first),
    /// `u32` type, `u64` offset into the data section.
    fn tensor_info(&mut self, index: u64, alignment: u64) -> Result<TensorInfo> {
        let name = self.string(&|| format!("name of tensor {index}"))?;
        let what = || format!("info of tensor `{name}`");
        let path = self.path;
        let invalid = |reason: String| GgufError::InvalidTensor {
            path: path.to_path_buf(),
            tensor: name.clone(),
            reason,
        };
        let n_dims = self.u32(&what)?;
        if n_dims > MAX_DIMS {
            return Err(invalid(format!(
                "{n_dims} dimensions (ggml allows at most {MAX_DIMS})"
            )));
        }
        let mut dims = Vec::with_capacity(n_dims as usize);
        for _ in 0..n_dims {
            dims.push(self.u64(&what)?);
        }
        let type_id = self.u32(&what)?;
        let offset = self.u64(&what)?;
        let Some(ggml_type) = GgmlType::from_id(type_id) else {
            return Err(GgufError::UnknownTensorType {
                path: path.to_path_buf(),
                tensor: name.clone(),
                type_id,
                type_name: ggml_type_name(type_id).unwrap_or("unknown"),
            });
        };
        let n_elements = dims
            .iter()
            .try_fold(1u64, |acc, &d| acc.checked_mul(d))
            .filter(|&n| n <= self.buf.len() as u64 * 8)
            .ok_or_else(|| {
                self.absurd(
                    format!("shape {dims:?} of tensor `{name}`"),
                    "more values than the file can hold".into(),
                )
            })?;
        let row = dims.first().copied().unwrap_or(1);
        if row % ggml_type.block_size() as u64 != 0 {
            return Err(invalid(format!(
                "rows of {row} values are not whole {} blocks of {}",
                ggml_type.name(),
                ggml_type.block_size()
            )));
        }
        if offset % alignment != 0 {
            return Err(invalid(format!(
                "data offset {offset} is not a multiple of the alignment {alignment}"
            )));
        }
        // Both fit in usize: n_elements is bounded by 8x the file length, which is mapped.
        let n_bytes = ggml_type
            .bytes_for(n_elements)
            .and_then(|n| usize::try_from(n).ok())
            .ok_or_else(|| invalid("data size overflows".into()))?;
        let shape = dims
            .iter()
            .rev()
            .map(|&d| usize::try_from(d))
            .collect::<std::result::Result<_, _>>()
            .map_err(|_| invalid("a dimension does not fit in memory addresses".into()))?;
        Ok(TensorInfo {
            name,
            shape,
            ggml_type,
            offset,
            n_bytes,
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A GGUF writer for tests: enough to build small valid and broken files by hand.
    #[derive(Default)]
    struct Builder {
        kv: Vec<u8>,
        n_kv: u64,
        infos: Vec<u8>,
        n_tensors: u64,
        data: Vec<u8>,
    }

    fn gguf_str(out: &mut Vec<u8>, s: &str) {
        out.extend((s.len() as u64).to_le_bytes());
        out.extend(s.as_bytes());
    }

    impl Builder {
        fn kv(mut self, key: &str, value_type: u32, value: &[u8]) -> Self {
            gguf_str(&mut self.kv, key);
            self.kv.extend(value_type.to_le_bytes());
            self.kv.extend(value);
            self.n_kv += 1;
            self
        }

        fn f32_tensor(mut self, name: &str, dims: &[u64], values: &[f32]) -> Self {
            gguf_str(&mut self.infos, name);
            self.infos.extend((dims.len() as u32).to_le_bytes());
            for d in dims {
                self.infos.extend(d.to_le_bytes());
            }
            self.infos.extend(0u32.to_le_bytes());
            self.infos.extend((self.data.len() as u64).to_le_bytes());
            for v in values {
                self.data.extend(v.to_le_bytes());
            }
            self.data.resize(self.data.len().next_multiple_of(32), 0);
            self.n_tensors += 1;
            self
        }

        fn build(self) -> Vec<u8> {
            let mut out = b"GGUF".to_vec();
            out.extend(3u32.to_le_bytes());
            out.extend(self.n_tensors.to_le_bytes());
            out.extend(self.n_kv.to_le_bytes());
            out.extend(self.kv);
            out.extend(self.infos);
            out.resize(out.len().next_multiple_of(32), 0);
            out.extend(self.data);
            out
        }
    }

    fn parse(bytes: &[u8]) -> Result<Parsed> {
        Parser::new(bytes, Path::new("test.gguf")).parse()
    }

    fn sample() -> Vec<u8> {
        let mut strings = 8u32.to_le_bytes().to_vec();
        strings.extend(2u64.to_le_bytes());
        gguf_str(&mut strings, "a");
        gguf_str(&mut strings, "bc");
        let mut nested = 9u32.to_le_bytes().to_vec();
        nested.extend(1u64.to_le_bytes());
        nested.extend(4u32.to_le_bytes());
        nested.extend(2u64.to_le_bytes());
        nested.extend(7u32.to_le_bytes());
        nested.extend(9u32.to_le_bytes());
        Builder::default()
            .kv("u8", 0, &[5])
            .kv("i16", 3, &(-3i16).to_le_bytes())
            .kv("f32", 6, &1.5f32.to_le_bytes())
            .kv("bool", 7, &[1])
            .kv("strings", 9, &strings)
            .kv("nested", 9, &nested)
            .kv("f64", 12, &0.25f64.to_le_bytes())
            .f32_tensor("m", &[3, 2], &[1.0, 2.0, 3.0, 4.0, 5.0, 6.0])
            .f32_tensor("v", &[4], &[7.0, 8.0, 9.0, 10.0])
            .build()
    }

    #[test]
    fn parses_metadata_of_every_kind() {
        let p = parse(&sample()).unwrap();
        assert_eq!(p.version, 3);
        assert_eq!(p.metadata["u8"], MetaValue::U8(5));
        assert_eq!(p.metadata["i16"].as_int(), Some(-3));
        assert_eq!(p.metadata["f32"].as_f64(), Some(1.5));
        assert_eq!(p.metadata["bool"], MetaValue::Bool(true));
        assert_eq!(
            p.metadata["strings"],
            MetaValue::Array(MetaArray::Str(vec!["a".into(), "bc".into()]))
        );
        assert_eq!(
            p.metadata["nested"],
            MetaValue::Array(MetaArray::Array(vec![MetaArray::U32(vec![7, 9])]))
        );
        assert_eq!(p.metadata["f64"], MetaValue::F64(0.25));
        assert_eq!(p.metadata.keys().next().map(String::as_str), Some("u8"));
    }

    #[test]
    fn tensor_shapes_are_row_major() {
        let p = parse(&sample()).unwrap();
        assert_eq!(p.tensors[0].shape, vec![2, 3]);
        assert_eq!(p.tensors[0].n_bytes, 24);
        assert_eq!(p.tensors[1].offset, 32);
        assert_eq!(p.data_offset % 32, 0);
    }

    #[test]
    fn every_truncation_is_an_error() {
        let bytes = sample();
        for cut in 0..bytes.len() - 1 {
            // The last tensor's padding is not data: cutting it is fine.
            let data_end = bytes.len() - 16;
            if cut >= data_end {
                continue;
            }
            assert!(parse(&bytes[..cut]).is_err(), "cut at {cut} parsed");
        }
    }

    #[test]
    fn bad_magic_and_version() {
        let mut bytes = sample();
        bytes[0] = b'X';
        assert!(matches!(parse(&bytes), Err(GgufError::BadMagic { .. })));
        let mut bytes = sample();
        bytes[4..8].copy_from_slice(&3u32.to_be_bytes());
        let err = parse(&bytes).unwrap_err();
        assert!(err.to_string().contains("big-endian"), "{err}");
    }

    #[test]
    fn absurd_counts_are_refused() {
        let mut bytes = sample();
        bytes[8..16].copy_from_slice(&u64::MAX.to_le_bytes());
        assert!(matches!(parse(&bytes), Err(GgufError::Absurd { .. })));
        let huge_array = {
            let mut v = 0u32.to_le_bytes().to_vec();
            v.extend((1u64 << 60).to_le_bytes());
            v
        };
        let bytes = Builder::default().kv("big", 9, &huge_array).build();
        assert!(matches!(parse(&bytes), Err(GgufError::Absurd { .. })));
    }

    #[test]
    fn deep_nesting_is_refused() {
        let mut nested = Vec::new();
        for _ in 0..100 {
            nested.extend(9u32.to_le_bytes());
            nested.extend(1u64.to_le_bytes());
        }
        let bytes = Builder::default().kv("deep", 9, &nested).build();
        assert!(matches!(
            parse(&bytes),
            Err(GgufError::InvalidMetadata { .. })
        ));
    }

    #[test]
    fn unknown_value_type_and_bad_alignment() {
        let bytes = Builder::default().kv("x", 42, &[0; 8]).build();
        assert!(
            parse(&bytes)
                .unwrap_err()
                .to_string()
                .contains("unknown value type 42")
        );
        let bytes = Builder::default()
            .kv("general.alignment", 4, &24u32.to_le_bytes())
            .build();
        assert!(matches!(
            parse(&bytes),
            Err(GgufError::InvalidMetadata { .. })
        ));
    }

    #[test]
    fn duplicate_keys_and_too_many_dims() {
        let bytes = Builder::default().kv("a", 0, &[1]).kv("a", 0, &[2]).build();
        assert!(parse(&bytes).unwrap_err().to_string().contains("duplicate"));
        let bytes = Builder::default()
            .f32_tensor("t", &[1, 1, 1, 1, 1], &[0.0])
            .build();
        assert!(matches!(
            parse(&bytes),
            Err(GgufError::InvalidTensor { .. })
        ));
    }

    #[test]
    fn empty_tensor_with_huge_dims_does_not_overflow() {
        let big = 1u64 << 40;
        let bytes = Builder::default()
            .f32_tensor("t", &[0, big, big, big], &[])
            .build();
        let p = parse(&bytes).unwrap();
        assert_eq!(p.tensors[0].n_elements(), 0);
        assert_eq!(p.tensors[0].n_bytes, 0);
    }
}
