//! Reading weight tensors of a Hugging Face checkpoint without building a model.
//!
//! Files are memory-mapped; a tensor is converted to f32 when asked for, and the pages it was
//! read from are handed back to the OS afterwards, so memory stays bounded by the tensors in
//! flight, not the size of the checkpoint.

use std::collections::HashMap;
use std::fs::File;
use std::path::{Path, PathBuf};

use memmap2::Mmap;
use safetensors::{Dtype, SafeTensors};

use crate::error::{Error, Result};

/// Name of the index of a sharded checkpoint.
pub(crate) const INDEX_FILE: &str = "model.safetensors.index.json";

/// One tensor of a checkpoint.
#[derive(Clone, Debug, PartialEq, Eq)]
pub(crate) struct TensorEntry {
    /// Parameter name, e.g. `model.layers.0.mlp.down_proj.weight`.
    pub name: String,
    /// Shape as stored (HF layout, `[out, in]` for a Linear).
    pub shape: Vec<usize>,
    pub dtype: Dtype,
    file: usize,
    /// Byte range in the file.
    start: usize,
    end: usize,
}

/// An opened checkpoint: one `.safetensors` file, a folder of them, or a sharded folder.
pub(crate) struct SafetensorsFiles {
    files: Vec<(PathBuf, Mmap)>,
    tensors: Vec<TensorEntry>,
}

impl SafetensorsFiles {
    /// Opens a `.safetensors` file, or a Hugging Face folder (with or without
    /// `model.safetensors.index.json`). Every file's header is validated against its size.
    pub(crate) fn open(path: &Path) -> Result<Self> {
        let paths = safetensors_files(path)?;
        let mut checkpoint = SafetensorsFiles {
            files: Vec::new(),
            tensors: Vec::new(),
        };
        for file_path in paths {
            checkpoint.add_file(file_path)?;
        }
        checkpoint.refuse_duplicates()?;
        Ok(checkpoint)
    }

    /// A tensor in two files (say `model.safetensors` beside shards without an index) would be
    /// read twice, and which copy wins would be an accident: refused, naming both files.
    fn refuse_duplicates(&self) -> Result<()> {
        let mut seen: HashMap<&str, usize> = HashMap::with_capacity(self.tensors.len());
        for tensor in &self.tensors {
            if let Some(&first) = seen.get(tensor.name.as_str()) {
                return Err(Error::DuplicateTensor {
                    name: tensor.name.clone(),
                    first: self.files[first].0.clone(),
                    second: self.files[tensor.file].0.clone(),
                });
            }
            seen.insert(&tensor.name, tensor.file);
        }
        Ok(())
    }

    fn add_file(&mut self, path: PathBuf) -> Result<()> {
        let file = File::open(&path).map_err(|e| Error::io(&path, e))?;
        // SAFETY: the map is read-only; a file changed under it by another process while we
        // read gives wrong numbers, not undefined behaviour in safe code that only reads bytes.
        let map = unsafe { Mmap::map(&file) }.map_err(|e| Error::io(&path, e))?;
        let invalid = |reason: String| Error::InvalidSafetensors {
            path: path.clone(),
            reason,
        };
        let (header_len, metadata) =
            SafeTensors::read_metadata(&map).map_err(|e| invalid(e.to_string()))?;
        let data_start = 8 + header_len;
        let index = self.files.len();
        for (name, info) in metadata.tensors() {
            let (start, end) = info.data_offsets;
            self.tensors.push(TensorEntry {
                name,
                shape: info.shape.clone(),
                dtype: info.dtype,
                file: index,
                start: data_start + start,
                end: data_start + end,
            });
        }
        self.files.push((path, map));
        Ok(())
    }

    /// All tensors, in file order then name order (unspecified otherwise).
    pub(crate) fn tensors(&self) -> &[TensorEntry] {
        &self.tensors
    }

    /// The file a tensor lives in.
    pub(crate) fn file_of(&self, tensor: &TensorEntry) -> &Path {
        &self.files[tensor.file].0
    }

    /// The tensor's values as f32, row-major.
    pub(crate) fn read_f32(&self, tensor: &TensorEntry) -> Result<Vec<f32>> {
        let (path, map) = &self.files[tensor.file];
        let bytes = &map[tensor.start..tensor.end];
        let values = to_f32(bytes, tensor.dtype).ok_or_else(|| Error::UnsupportedDtype {
            path: path.clone(),
            tensor: tensor.name.clone(),
            dtype: format!("{:?}", tensor.dtype),
        })?;
        release_pages(map, tensor.start, tensor.end - tensor.start);
        Ok(values)
    }
}

/// Whether [`SafetensorsFiles::read_f32`] can read this dtype.
pub(crate) fn is_float_dtype(dtype: Dtype) -> bool {
    matches!(dtype, Dtype::F32 | Dtype::F16 | Dtype::BF16 | Dtype::F64)
}

fn to_f32(bytes: &[u8], dtype: Dtype) -> Option<Vec<f32>> {
    // Tensor data need not be aligned in the file, hence the byte-wise reads.
    Some(match dtype {
        Dtype::F32 => bytes
            .chunks_exact(4)
            .map(|b| f32::from_le_bytes([b[0], b[1], b[2], b[3]]))
            .collect(),
        Dtype::F16 => bytes
            .chunks_exact(2)
            .map(|b| half::f16::from_le_bytes([b[0], b[1]]).to_f32())
            .collect(),
        Dtype::BF16 => bytes
            .chunks_exact(2)
            .map(|b| half::bf16::from_le_bytes([b[0], b[1]]).to_f32())
            .collect(),
        Dtype::F64 => bytes
            .chunks_exact(8)
            .map(|b| f64::from_le_bytes(b.try_into().expect("chunk of 8")) as f32)
            .collect(),
        _ => return None,
    })
}

/// Tells the OS we are done with these pages, so that a scan of a checkpoint larger than RAM
/// does not keep every page it has read resident.
fn release_pages(map: &Mmap, start: usize, len: usize) {
    #[cfg(unix)]
    {
        let page = 4096;
        let aligned = start / page * page;
        // SAFETY: the map is a read-only, shared mapping of a file: dropping its pages only
        // means the next access reads them from the file again, with the same contents.
        let _ = unsafe {
            map.unchecked_advise_range(
                memmap2::UncheckedAdvice::DontNeed,
                aligned,
                len + (start - aligned),
            )
        };
    }
    #[cfg(not(unix))]
    let _ = (map, start, len);
}

/// The `.safetensors` files of a checkpoint path.
fn safetensors_files(path: &Path) -> Result<Vec<PathBuf>> {
    let meta = std::fs::metadata(path).map_err(|e| Error::io(path, e))?;
    if meta.is_file() {
        return Ok(vec![path.to_owned()]);
    }
    let index = path.join(INDEX_FILE);
    if index.is_file() {
        return index_files(&index, path);
    }
    let mut files: Vec<PathBuf> = std::fs::read_dir(path)
        .map_err(|e| Error::io(path, e))?
        .filter_map(|entry| entry.ok().map(|e| e.path()))
        .filter(|p| p.is_file() && p.extension().is_some_and(|x| x == "safetensors"))
        .collect();
    if files.is_empty() {
        return Err(Error::NoSafetensors(path.to_owned()));
    }
    files.sort();
    Ok(files)
}

/// The shard files named by `model.safetensors.index.json`, each once, in order.
fn index_files(index: &Path, folder: &Path) -> Result<Vec<PathBuf>> {
    let invalid = |reason: String| Error::InvalidIndex {
        path: index.to_owned(),
        reason,
    };
    let text = std::fs::read_to_string(index).map_err(|e| Error::io(index, e))?;
    let json: serde_json::Value =
        serde_json::from_str(&text).map_err(|e| invalid(e.to_string()))?;
    let map = json
        .get("weight_map")
        .and_then(|m| m.as_object())
        .ok_or_else(|| invalid("no `weight_map` object".into()))?;
    let mut names: Vec<&str> = Vec::new();
    for (tensor, file) in map {
        let file = file
            .as_str()
            .ok_or_else(|| invalid(format!("`{tensor}` maps to a non-string")))?;
        if file.contains('/') || file.contains('\\') || file == ".." {
            return Err(invalid(format!("shard `{file}` is not a file name")));
        }
        if !names.contains(&file) {
            names.push(file);
        }
    }
    if names.is_empty() {
        return Err(invalid("`weight_map` is empty".into()));
    }
    names.sort();
    let files: Vec<PathBuf> = names.iter().map(|n| folder.join(n)).collect();
    if let Some(missing) = files.iter().find(|f| !f.is_file()) {
        return Err(invalid(format!("shard {} is missing", missing.display())));
    }
    Ok(files)
}
