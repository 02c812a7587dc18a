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
    #[error("{path}: invalid model config ({reason})")]
    InvalidConfig { path: PathBuf, reason: String },
    #[error("{path}: the weights do not fit the config{}", mismatch_details(.missing, .unexpected, .misshaped))]
    TensorMismatch {
        path: PathBuf,
        missing: Vec<String>,
        unexpected: Vec<String>,
        misshaped: Vec<String>,
    },
    #[error("{path}: tokenizer error ({reason})")]
    Tokenizer { path: PathBuf, reason: String },
    #[error("chat template: {0}")]
    ChatTemplate(String),
    #[error("{path}: invalid data ({reason})")]
    InvalidData { path: PathBuf, reason: String },
    #[error("the loss is {loss} at step {step}: training stopped")]
    NonFiniteLoss { step: usize, loss: f64 },
    #[error("invalid argument: {0}")]
    InvalidArgument(String),
    #[error(transparent)]
    Gguf(#[from] crate::model::gguf::GgufError),
}

/// `Result` with the crate's [`Error`].
pub type Result<T> = std::result::Result<T, Error>;

/// `; missing: a, b; unexpected: c` for the lists that are not empty.
fn mismatch_details(missing: &[String], unexpected: &[String], misshaped: &[String]) -> String {
    let mut text = String::new();
    for (label, names) in [
        ("missing", missing),
        ("unexpected", unexpected),
        ("wrong shape", misshaped),
    ] {
        if !names.is_empty() {
            text.push_str(&format!("; {label}: {}", names.join(", ")));
        }
    }
    text
}

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
