//! Writing files so that a reader never sees half of one: each is written to a temporary file
//! beside its destination, synced, and renamed over it.

use std::borrow::Cow;
use std::collections::HashMap;
use std::path::Path;

use safetensors::{Dtype, View};
use tempfile::NamedTempFile;

use super::temporaries::create_registered;
use crate::error::{Error, Result};

/// Writes `bytes` to `path` atomically.
pub(crate) fn write_atomic(path: &Path, bytes: &[u8]) -> Result<()> {
    write_atomic_with(path, |tmp| std::fs::write(tmp, bytes)).map_err(|e| Error::io(path, e))
}

/// Writes `path` atomically with `write`, which fills the temporary file at the path it is
/// given. The error is the I/O error alone; callers attach the path in their own error type.
pub(super) fn write_atomic_with(
    path: &Path,
    write: impl FnOnce(&Path) -> std::io::Result<()>,
) -> std::io::Result<()> {
    let dir = path
        .parent()
        .filter(|p| !p.as_os_str().is_empty())
        .unwrap_or(Path::new("."));
    let (tmp, _registered) = create_registered(|| temp_file_in(dir), |tmp| tmp.path())?;
    write(tmp.path())?;
    tmp.as_file().sync_all()?;
    tmp.persist(path).map_err(|e| e.error)?;
    Ok(())
}

/// Removes the temporary files that a killed writer left in `dir` (`SIGKILL` cannot be
/// handled, so [`write_atomic`]'s temporary stays behind). Only for a folder that one process
/// writes at a time, such as a training run's; on failure, the file that could not be removed.
pub(crate) fn remove_unfinished_writes(
    dir: &Path,
) -> std::result::Result<(), (std::path::PathBuf, std::io::Error)> {
    let entries = match std::fs::read_dir(dir) {
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(()),
        entries => entries.map_err(|e| (dir.to_path_buf(), e))?,
    };
    for entry in entries.flatten() {
        let name = entry.file_name().to_string_lossy().into_owned();
        if name.starts_with(TEMP_PREFIX) && name.ends_with(TEMP_SUFFIX) && entry.path().is_file() {
            std::fs::remove_file(entry.path()).map_err(|e| (entry.path(), e))?;
        }
    }
    Ok(())
}

const TEMP_PREFIX: &str = ".spectrum-";
const TEMP_SUFFIX: &str = ".tmp";

/// A temporary file in `dir`. On Unix it gets the mode `File::create` gives (0o666 less the
/// umask), not tempfile's private 0o600, since it becomes a user's output file.
fn temp_file_in(dir: &Path) -> std::io::Result<NamedTempFile> {
    let mut builder = tempfile::Builder::new();
    builder.prefix(TEMP_PREFIX).suffix(TEMP_SUFFIX);
    #[cfg(unix)]
    {
        use std::os::unix::fs::PermissionsExt;
        builder.permissions(std::fs::Permissions::from_mode(0o666));
    }
    builder.tempfile_in(dir)
}

/// One tensor to write: its dtype, shape and little-endian bytes.
pub struct StoredTensor {
    pub dtype: Dtype,
    pub shape: Vec<usize>,
    pub data: Vec<u8>,
}

impl StoredTensor {
    /// An f32 tensor from its values.
    pub fn from_f32(shape: Vec<usize>, values: &[f32]) -> Self {
        StoredTensor {
            dtype: Dtype::F32,
            shape,
            data: values.iter().flat_map(|v| v.to_le_bytes()).collect(),
        }
    }
}

impl View for &StoredTensor {
    fn dtype(&self) -> Dtype {
        self.dtype
    }
    fn shape(&self) -> &[usize] {
        &self.shape
    }
    fn data(&self) -> Cow<'_, [u8]> {
        Cow::Borrowed(&self.data)
    }
    fn data_len(&self) -> usize {
        self.data.len()
    }
}

/// Writes a safetensors file atomically, with the `{"format": "pt"}` metadata transformers
/// expects, streaming the tensors to disk (no second copy in memory).
pub(crate) fn write_safetensors(
    path: &Path,
    tensors: &[(String, StoredTensor)],
) -> std::io::Result<()> {
    write_atomic_with(path, |tmp| write_safetensors_to(tmp, tensors))
}

/// Writes a safetensors file in place (for a file that is itself temporary, as in a
/// [`super::FileSet`]), with the `{"format": "pt"}` metadata.
pub(crate) fn write_safetensors_to(
    path: &Path,
    tensors: &[(String, StoredTensor)],
) -> std::io::Result<()> {
    let metadata = HashMap::from([("format".to_string(), "pt".to_string())]);
    let views = tensors.iter().map(|(name, t)| (name.as_str(), t));
    safetensors::serialize_to_file(views, Some(metadata), path).map_err(std::io::Error::other)
}

/// Writes `value` as pretty JSON with a final newline, atomically.
pub(crate) fn write_json(path: &Path, value: &serde_json::Value) -> std::io::Result<()> {
    let text = json_text(value)?;
    write_atomic_with(path, |tmp| std::fs::write(tmp, text))
}

/// `value` as pretty JSON with a final newline.
pub(crate) fn json_text(value: &serde_json::Value) -> std::io::Result<String> {
    let mut text = serde_json::to_string_pretty(value).map_err(std::io::Error::other)?;
    text.push('\n');
    Ok(text)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn only_the_temporaries_of_single_writes_are_removed() {
        let dir = tempfile::tempdir().unwrap();
        let keep = ["metrics.jsonl", ".spectrum-notes", "a.tmp"];
        for name in keep.iter().chain(&[".spectrum-Ab12Cd.tmp"]) {
            std::fs::write(dir.path().join(name), b"x").unwrap();
        }
        std::fs::create_dir(dir.path().join(".spectrum-staging-x.tmp")).unwrap();
        remove_unfinished_writes(dir.path()).unwrap();
        let mut left: Vec<String> = std::fs::read_dir(dir.path())
            .unwrap()
            .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
            .collect();
        left.sort();
        assert_eq!(
            left,
            [
                ".spectrum-notes",
                ".spectrum-staging-x.tmp",
                "a.tmp",
                "metrics.jsonl"
            ]
        );
        assert!(remove_unfinished_writes(&dir.path().join("absent")).is_ok());
    }
}
