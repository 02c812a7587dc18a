//! GGUF (llama.cpp) import, in pure Rust (no Burn types).
//!
//! The data flows one way, one file per step:
//! - [`reader`]: parse a GGUF file (header, metadata, tensor infos) with strict bounds checks,
//!   over a memory map, so that a hostile or broken file gives an error, never a huge allocation.
//! - [`dequant`]: turn ggml blocks (F32, F16, BF16, Q8_0, Q4_0, Q4_1, Q4_K, Q6_K) into `f32`,
//!   bit for bit like gguf-py's `gguf.quants.dequantize`.
//! - [`permute`]: undo llama.cpp's q/k row permutation to get Hugging Face's rotary layout.
//! - [`config`]: build Hugging Face's `config.json` for a Llama model from `llama.*` metadata.
//! - [`tokenizer`]: rebuild `tokenizer.json`, `tokenizer_config.json` and
//!   `generation_config.json` from `tokenizer.ggml.*` metadata (byte-level BPE).
//! - [`import`]: [`import_gguf`] ties it all together and writes a Hugging Face folder.

use std::path::PathBuf;

pub mod config;
pub mod dequant;
pub mod import;
pub mod permute;
pub mod reader;
pub mod tokenizer;

pub use config::hf_config;
pub use dequant::{DequantError, GgmlType, dequantize, ggml_type_name};
pub use import::{ImportSummary, OutDtype, hf_tensor_name, import_gguf};
pub use permute::unpermute_rows;
pub use reader::{GgufFile, MetaArray, MetaValue, TensorInfo};
pub use tokenizer::{hf_generation_config, hf_tokenizer, hf_tokenizer_config};

/// Everything that can go wrong while reading or importing a GGUF file. Each variant names the
/// file, and what is wrong in words a user can act on.
#[derive(Debug, thiserror::Error)]
pub enum GgufError {
    /// Reading the GGUF file or writing an output file failed.
    #[error("{path}: {source}")]
    Io {
        path: PathBuf,
        source: std::io::Error,
    },
    /// The first four bytes are not `GGUF`.
    #[error("{path}: not a GGUF file (first bytes {found:02x?}, expected \"GGUF\")")]
    BadMagic { path: PathBuf, found: Vec<u8> },
    /// A GGUF version other than 2 or 3.
    #[error("{path}: GGUF version {version} is not supported (only versions 2 and 3 are){hint}")]
    UnsupportedVersion {
        path: PathBuf,
        version: u32,
        hint: &'static str,
    },
    /// The file ends before something it declares.
    #[error("{path}: truncated file: {what} needs bytes up to {needed}, but the file has {len}")]
    Truncated {
        path: PathBuf,
        what: String,
        needed: u64,
        len: u64,
    },
    /// A count or size that cannot be right for a file of this length (checked before allocating).
    #[error("{path}: {what} is absurd: {reason}")]
    Absurd {
        path: PathBuf,
        what: String,
        reason: String,
    },
    /// A tensor whose ggml type this importer cannot dequantize.
    #[error(
        "{path}: tensor `{tensor}` has ggml type {type_name} (id {type_id}), which is not \
         supported; supported types: F32, F16, BF16, Q8_0, Q4_0, Q4_1, Q4_K, Q6_K"
    )]
    UnknownTensorType {
        path: PathBuf,
        tensor: String,
        type_id: u32,
        /// The ggml name of the type when the id is known (`Q5_K`), else `unknown`.
        type_name: &'static str,
    },
    /// A tensor whose info or data is inconsistent (bad dims, misaligned offset, wrong shape).
    #[error("{path}: tensor `{tensor}`: {reason}")]
    InvalidTensor {
        path: PathBuf,
        tensor: String,
        reason: String,
    },
    /// A model architecture other than `llama`.
    #[error("{path}: architecture `{arch}` is not supported (only `llama` is)")]
    UnsupportedArchitecture { path: PathBuf, arch: String },
    /// A metadata key the import needs is absent.
    #[error("{path}: metadata key `{key}` is missing")]
    MissingMetadata { path: PathBuf, key: String },
    /// A metadata value has the wrong type or an impossible value.
    #[error("{path}: metadata key `{key}`: {reason}")]
    InvalidMetadata {
        path: PathBuf,
        key: String,
        reason: String,
    },
    /// A feature the GGUF declares that the Hugging Face output cannot express (a tokenizer
    /// model or pre-tokenizer we do not rebuild, a RoPE scaling type, mixture of experts).
    #[error("{path}: {what} is not supported: {reason}")]
    Unsupported {
        path: PathBuf,
        what: String,
        reason: String,
    },
    /// Writing `model.safetensors` failed.
    #[error("{path}: cannot write safetensors: {reason}")]
    Safetensors { path: PathBuf, reason: String },
}

/// `Result` with [`GgufError`].
pub type Result<T> = std::result::Result<T, GgufError>;

impl GgufError {
    /// An I/O error on `path`.
    pub fn io(path: impl Into<PathBuf>, source: std::io::Error) -> Self {
        GgufError::Io {
            path: path.into(),
            source,
        }
    }
}
