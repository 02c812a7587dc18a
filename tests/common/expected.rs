//! `tests/fixtures/models/<name>/expected.safetensors`: transformers' inputs and outputs for a
//! tiny model (scripts/make_model_fixtures.py).

use burn::tensor::backend::Backend;
use burn::tensor::{Int, Tensor, TensorData};
use safetensors::{Dtype, SafeTensors};

/// The tiny models with transformers fixtures.
pub const MODELS: [&str; 4] = ["llama_gqa", "llama_tied", "llama3_rope", "mistral_sw"];

/// The tensors of one model's `expected.safetensors`.
pub struct Expected {
    bytes: Vec<u8>,
}

impl Expected {
    pub fn read(model: &str) -> Self {
        let path = super::fixture(&format!("models/{model}/expected.safetensors"));
        Expected {
            bytes: std::fs::read(path).unwrap(),
        }
    }

    fn shape_and_bytes(&self, name: &str) -> (Vec<usize>, Dtype, Vec<u8>) {
        let file = SafeTensors::deserialize(&self.bytes).unwrap();
        let t = file.tensor(name).unwrap();
        (t.shape().to_vec(), t.dtype(), t.data().to_vec())
    }

    fn i64s(&self, name: &str) -> (Vec<usize>, Vec<i64>) {
        let (shape, dtype, bytes) = self.shape_and_bytes(name);
        assert_eq!(dtype, Dtype::I64, "{name}");
        let flat = bytes
            .chunks_exact(8)
            .map(|b| i64::from_le_bytes(b.try_into().unwrap()))
            .collect();
        (shape, flat)
    }

    /// A `[rows, cols]` id tensor as rows.
    pub fn ids(&self, name: &str) -> Vec<Vec<u32>> {
        let (shape, flat) = self.i64s(name);
        flat.chunks(shape[1])
            .map(|row| row.iter().map(|&v| v as u32).collect())
            .collect()
    }

    /// `labels`, `[batch, seq]`.
    pub fn labels<B: Backend>(&self, device: &B::Device) -> Tensor<B, 2, Int> {
        let (shape, flat) = self.i64s("labels");
        Tensor::from_data(TensorData::new(flat, [shape[0], shape[1]]), device)
    }

    pub fn floats(&self, name: &str) -> Vec<f32> {
        let (_, dtype, bytes) = self.shape_and_bytes(name);
        assert_eq!(dtype, Dtype::F32, "{name}");
        bytes
            .chunks_exact(4)
            .map(|b| f32::from_le_bytes(b.try_into().unwrap()))
            .collect()
    }
}
