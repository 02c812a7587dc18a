//! The crate's one error type.

use std::path::PathBuf;

/// Everything that can go wrong in `burn-spectrum`, each with enough context to act on.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    #[error("{path}: {source}")]
    Io {
        path: PathBuf,
        source: std::io::Error,
    },
    #[error("{0}: no such file or folder")]
    NotFound(PathBuf),
    #[error("{0}: no .safetensors file in this folder")]
    NoSafetensors(PathBuf),
    #[error("{path}: not a valid safetensors file ({reason})")]
    InvalidSafetensors { path: PathBuf, reason: String },
    #[error("{path}: invalid sharded checkpoint index ({reason})")]
    InvalidIndex { path: PathBuf, reason: String },
    #[error("{path}: tensor `{tensor}` has dtype {dtype}; supported are F32, F16, BF16 and F64")]
    UnsupportedDtype {
        path: PathBuf,
        tensor: String,
        dtype: String,
    },
    #[error("{path}: not an SNR table ({reason})")]
    InvalidSnrTable { path: PathBuf, reason: String },
    #[error("{path}: not an unfrozen-parameters YAML ({reason})")]
    InvalidSelection { path: PathBuf, reason: String },
    #[error("invalid unfrozen-parameter pattern `{pattern}`: {reason}")]
    InvalidPattern { pattern: String, reason: String },
    #[error("top percent {0} is outside 0..=100")]
    InvalidPercent(u32),
    #[error("nothing to scan: {0}")]
    NothingToScan(String),
}

/// `Result` with the crate's [`Error`].
pub type Result<T> = std::result::Result<T, Error>;

impl Error {
    /// An I/O error on `path`; a missing path becomes [`Error::NotFound`].
    pub fn io(path: impl Into<PathBuf>, source: std::io::Error) -> Self {
        if source.kind() == std::io::ErrorKind::NotFound {
            return Error::NotFound(path.into());
        }
        Error::Io {
            path: path.into(),
            source,
        }
    }
}
