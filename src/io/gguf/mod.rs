//! Reading GGUF (llama.cpp) files in pure Rust, with strict bounds checks over a memory map, so
//! that a hostile or broken file gives an error, never a huge allocation.
//!
//! - [`value`]: what a file holds (metadata values, tensor infos);
//! - [`parser`]: the header, metadata and tensor infos;
//! - [`file`]: [`GgufFile`], the open file with typed metadata look-ups;
//! - [`dequant`]: ggml blocks (F32, F16, BF16, Q8_0, Q4_0, Q4_1, Q4_K, Q6_K) to `f32`, bit for
//!   bit like gguf-py's `gguf.quants.dequantize`.

pub(crate) mod dequant;
mod file;
mod parser;
mod value;

#[cfg(test)]
pub(crate) use dequant::{GgmlType, dequantize};
pub(crate) use file::GgufFile;
pub(crate) use value::TensorInfo;
