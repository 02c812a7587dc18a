//! File formats, below everything else: safetensors reading (memory-mapped, sharded, f32/f16/bf16),
//! atomic writes of files and of sets of files, JSON and safetensors, and the GGUF reader.

mod atomic;
mod file_set;
pub(crate) mod gguf;
mod safetensors;
mod temporaries;

pub(crate) use atomic::{
    StoredTensor, json_text, remove_unfinished_writes, write_atomic, write_json, write_safetensors,
    write_safetensors_to,
};
pub(crate) use file_set::FileSet;
pub(crate) use safetensors::{INDEX_FILE, SafetensorsFiles, TensorEntry, is_float_dtype};
pub use temporaries::remove_temporaries_on_signal;
pub(crate) use temporaries::{create_registered, critical_section, remove_folders_named};
