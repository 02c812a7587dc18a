//! File formats, below everything else: safetensors reading (memory-mapped, sharded, f32/f16/bf16),
//! atomic writes of files, JSON and safetensors, and the GGUF reader.

mod atomic;
pub(crate) mod gguf;
mod safetensors;

pub(crate) use atomic::{StoredTensor, write_atomic, write_json, write_safetensors};
pub(crate) use safetensors::{INDEX_FILE, SafetensorsFiles, TensorEntry, is_float_dtype};
