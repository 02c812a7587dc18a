//! GGUF (llama.cpp) import into a Hugging Face folder, in pure Rust (no Burn types).
//!
//! The file itself is read by the crate's GGUF reader (`io::gguf`); here, one file per step:
//! - `permute`: undo llama.cpp's q/k row permutation to get Hugging Face's rotary layout.
//! - `config`: build Hugging Face's `config.json` for a Llama model from `llama.*` metadata.
//! - `tokenizer`: rebuild `tokenizer.json`, `tokenizer_config.json` and
//!   `generation_config.json` from `tokenizer.ggml.*` metadata (byte-level BPE).
//! - `import`: [`import_gguf`] ties it all together and writes a Hugging Face folder.

mod config;
mod dtype;
mod import;
mod permute;
mod tokenizer;

pub use dtype::OutDtype;
pub use import::{ImportSummary, import_gguf};

#[cfg(test)]
mod reference_tests;
