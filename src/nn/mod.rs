//! Building blocks shared by the model and by PEFT: the projection (a dense or NF4 base
//! weight, optionally with a LoRA adapter), the LoRA adapter, the NF4 weight, RMSNorm, RoPE,
//! attention masks and the fused loss; and reading a module tree's parameters by path.

pub(crate) mod autodiff_route;
mod device_cache;
#[cfg(feature = "flex")]
pub(crate) mod flex_tensor;
mod host_read;
pub(crate) mod in_place;
mod layout;
mod lora_adapter;
mod mask;
mod masked_softmax;
mod matrix_product;
pub(crate) mod nf4;
mod nf4_linear;
mod nf4_weight;
mod nll;
mod params;
mod precision;
mod projection;
mod rms_norm;
#[cfg(feature = "flex")]
mod rms_norm_op;
mod rope;
#[cfg(feature = "flex")]
mod rope_op;
mod swiglu;

pub(crate) use device_cache::DeviceCache;
pub use host_read::host_reads;
pub(crate) use host_read::read_scalar;
pub(crate) use layout::transpose;
pub use lora_adapter::{LoraAdapter, LoraAdapterConfig};
pub(crate) use mask::attention_mask;
pub(crate) use masked_softmax::masked_softmax;
pub(crate) use matrix_product::{batched_matrix_product, matrix_product};
pub use nf4_weight::Nf4Weight;
pub(crate) use nll::nll_sum;
pub use params::{ParamEntry, float_params};
pub(crate) use params::{f32_values, float_params_f32};
pub use precision::{Precision, store_frozen_as};
pub(crate) use precision::{in_f32, to_dtype};
pub(crate) use projection::WEIGHT_INIT;
pub use projection::{INIT_STD, Projection, ProjectionConfig};
pub use rms_norm::{RmsNorm, RmsNormConfig};
pub use rope::Llama3RopeScaling;
pub(crate) use rope::{Rope, RopeTables};
pub(crate) use swiglu::swiglu;

#[cfg(test)]
mod nf4_reference_tests;
