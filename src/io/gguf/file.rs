//! An open GGUF file: the parsed header, metadata and tensor infos over a memory map, and
//! typed metadata look-ups whose errors name the key.

use std::fs::File;
use std::path::{Path, PathBuf};

use indexmap::IndexMap;
use memmap2::Mmap;

use super::dequant::dequantize;
use super::parser::Parser;
use super::value::{MetaArray, MetaValue, TensorInfo, describe};
use crate::error::GgufError;

type Result<T> = std::result::Result<T, GgufError>;

/// An open GGUF file: parsed header, metadata and tensor infos, data memory-mapped.
#[derive(Debug)]
pub(crate) struct GgufFile {
    path: PathBuf,
    map: Mmap,
    data_offset: u64,
    metadata: IndexMap<String, MetaValue>,
    tensors: Vec<TensorInfo>,
}

impl GgufFile {
    /// Open and parse `path`; checks that every tensor's data lies inside the file.
    pub(crate) fn open(path: impl AsRef<Path>) -> Result<Self> {
        let path = path.as_ref().to_path_buf();
        let file = File::open(&path).map_err(|e| GgufError::io(&path, e))?;
        // SAFETY: the map is read-only; a file changed under it by another process while we
        // read gives wrong numbers, not undefined behaviour in safe code that only reads bytes.
        let map = unsafe { Mmap::map(&file) }.map_err(|e| GgufError::io(&path, e))?;
        let parsed = Parser::new(&map, &path).parse()?;
        Ok(GgufFile {
            path,
            map,
            data_offset: parsed.data_offset,
            metadata: parsed.metadata,
            tensors: parsed.tensors,
        })
    }

    /// The file's path.
    pub(crate) fn path(&self) -> &Path {
        &self.path
    }

    /// Byte offset of the data section in the file.
    #[cfg(test)]
    pub(crate) fn data_offset(&self) -> u64 {
        self.data_offset
    }

    /// All tensor infos, in file order.
    pub(crate) fn tensors(&self) -> &[TensorInfo] {
        &self.tensors
    }

    /// The tensor info named `name`.
    pub(crate) fn tensor(&self, name: &str) -> Option<&TensorInfo> {
        self.tensors.iter().find(|t| t.name == name)
    }

    /// The raw bytes of a tensor of this file (empty for an info of another file that does
    /// not fit in this one).
    pub(crate) fn tensor_bytes(&self, info: &TensorInfo) -> &[u8] {
        let start = self.data_offset.saturating_add(info.offset);
        usize::try_from(start)
            .ok()
            .and_then(|start| self.map.get(start..start.checked_add(info.n_bytes)?))
            .unwrap_or(&[])
    }

    /// A tensor's values as `f32`, row-major over [`TensorInfo::shape`].
    pub(crate) fn tensor_f32(&self, info: &TensorInfo) -> Result<Vec<f32>> {
        dequantize(info.ggml_type, self.tensor_bytes(info), info.n_elements()).map_err(|e| {
            GgufError::InvalidTensor {
                path: self.path.clone(),
                tensor: info.name.clone(),
                reason: e.to_string(),
            }
        })
    }

    /// Look up `key` and convert it with `convert` (which says what it expected on failure);
    /// `Ok(None)` when the key is absent.
    fn opt<'a, T>(
        &'a self,
        key: &str,
        expected: &str,
        convert: impl FnOnce(&'a MetaValue) -> Option<T>,
    ) -> Result<Option<T>> {
        let Some(value) = self.metadata.get(key) else {
            return Ok(None);
        };
        match convert(value) {
            Some(v) => Ok(Some(v)),
            None => Err(self.invalid(
                key,
                format!("expected {expected}, found {}", describe(value)),
            )),
        }
    }

    /// Like [`Self::opt`], but a missing key is [`GgufError::MissingMetadata`].
    fn req<'a, T>(
        &'a self,
        key: &str,
        expected: &str,
        convert: impl FnOnce(&'a MetaValue) -> Option<T>,
    ) -> Result<T> {
        self.opt(key, expected, convert)?
            .ok_or_else(|| GgufError::MissingMetadata {
                path: self.path.clone(),
                key: key.to_string(),
            })
    }

    /// An [`GgufError::InvalidMetadata`] for `key` of this file.
    pub(crate) fn invalid(&self, key: &str, reason: impl Into<String>) -> GgufError {
        GgufError::InvalidMetadata {
            path: self.path.clone(),
            key: key.to_string(),
            reason: reason.into(),
        }
    }

    /// An [`GgufError::Unsupported`] for this file: `what` it declares, and why we refuse it.
    pub(crate) fn unsupported(&self, what: &str, reason: &str) -> GgufError {
        GgufError::Unsupported {
            path: self.path.clone(),
            what: what.to_string(),
            reason: reason.to_string(),
        }
    }

    /// An integer value (any integer type) that fits a `u32`; `None` if absent.
    pub(crate) fn opt_u32(&self, key: &str) -> Result<Option<u32>> {
        self.opt(key, "an integer in u32 range", |v| {
            u32::try_from(v.as_int()?).ok()
        })
    }

    /// An integer value (any integer type) that fits a `u32`.
    pub(crate) fn get_u32(&self, key: &str) -> Result<u32> {
        self.req(key, "an integer in u32 range", |v| {
            u32::try_from(v.as_int()?).ok()
        })
    }

    /// An `f32` or `f64` value, as `f32`; `None` if absent.
    pub(crate) fn opt_f32(&self, key: &str) -> Result<Option<f32>> {
        self.opt(key, "a float", |v| v.as_f64().map(|x| x as f32))
    }

    /// An `f32` or `f64` value, as `f32`.
    pub(crate) fn get_f32(&self, key: &str) -> Result<f32> {
        self.req(key, "a float", |v| v.as_f64().map(|x| x as f32))
    }

    /// A boolean value; `None` if absent.
    pub(crate) fn opt_bool(&self, key: &str) -> Result<Option<bool>> {
        self.opt(key, "a bool", |v| match v {
            MetaValue::Bool(b) => Some(*b),
            _ => None,
        })
    }

    /// A string value; `None` if absent.
    pub(crate) fn opt_str(&self, key: &str) -> Result<Option<&str>> {
        self.opt(key, "a string", MetaValue::as_str)
    }

    /// A string value.
    pub(crate) fn get_str(&self, key: &str) -> Result<&str> {
        self.req(key, "a string", MetaValue::as_str)
    }

    /// An array of strings; `None` if absent.
    pub(crate) fn opt_str_array(&self, key: &str) -> Result<Option<&[String]>> {
        self.opt(key, "an array of strings", |v| match v {
            MetaValue::Array(MetaArray::Str(s)) => Some(s.as_slice()),
            _ => None,
        })
    }

    /// An array of strings.
    pub(crate) fn get_str_array(&self, key: &str) -> Result<&[String]> {
        self.req(key, "an array of strings", |v| match v {
            MetaValue::Array(MetaArray::Str(s)) => Some(s.as_slice()),
            _ => None,
        })
    }

    /// An array of integers (any integer element type) that fit an `i64`; `None` if absent.
    pub(crate) fn opt_int_array(&self, key: &str) -> Result<Option<Vec<i64>>> {
        self.opt(key, "an array of integers", |v| match v {
            MetaValue::Array(a) => a
                .to_ints()?
                .into_iter()
                .map(|x| i64::try_from(x).ok())
                .collect(),
            _ => None,
        })
    }
}
