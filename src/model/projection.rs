//! A linear projection without bias: a dense or NF4-quantized base weight, optionally with a
//! LoRA adapter.

use burn::module::{Module, Param};
use burn::nn::LinearConfig;
use burn::tensor::{Tensor, backend::Backend, module::linear};

use crate::error::Result;
use crate::peft::{LoraAdapter, Nf4Weight};

/// `x @ W (+ lora(x))`. A dense base parameter is named `weight`, so its path is the Hugging
/// Face name (`...q_proj.weight`); the adapter's are `...q_proj.lora.lora_a` / `lora_b`.
/// Exactly one of `weight` and `nf4` is present.
#[derive(Module, Debug)]
pub struct Projection<B: Backend> {
    /// `[in, out]` (Burn's layout, the transpose of PyTorch's).
    pub weight: Option<Param<Tensor<B, 2>>>,
    /// The base quantized to NF4 (QLoRA): frozen, dequantized in each forward pass.
    pub nf4: Option<Nf4Weight<B>>,
    pub lora: Option<LoraAdapter<B>>,
}

impl<B: Backend> Projection<B> {
    /// A randomly initialised `d_in -> d_out` projection (Burn's Linear initialisation).
    pub fn new(d_in: usize, d_out: usize, device: &B::Device) -> Self {
        let linear = LinearConfig::new(d_in, d_out).with_bias(false).init(device);
        Self::from_param(linear.weight)
    }

    /// From a weight in Burn's layout, `[in, out]`.
    pub fn from_weight(weight: Tensor<B, 2>) -> Self {
        Self::from_param(Param::from_tensor(weight))
    }

    fn from_param(weight: Param<Tensor<B, 2>>) -> Self {
        Projection {
            weight: Some(weight),
            nf4: None,
            lora: None,
        }
    }

    /// `(in, out)`
    pub fn dims(&self) -> (usize, usize) {
        match (&self.weight, &self.nf4) {
            (Some(weight), _) => {
                let [d_in, d_out] = weight.dims();
                (d_in, d_out)
            }
            (None, Some(nf4)) => {
                let [out, inp] = nf4.shape();
                (inp, out)
            }
            (None, None) => unreachable!("a projection always has a base weight"),
        }
    }

    /// The base weight, `[in, out]`: the parameter, or the NF4 base dequantized.
    pub fn base_weight(&self) -> Tensor<B, 2> {
        match (&self.weight, &self.nf4) {
            (Some(weight), _) => weight.val(),
            (None, Some(nf4)) => nf4.dequantize(),
            (None, None) => unreachable!("a projection always has a base weight"),
        }
    }

    /// # Shapes
    /// - x: `[batch, seq, in]`; returns `[batch, seq, out]`.
    pub fn forward(&self, x: Tensor<B, 3>) -> Tensor<B, 3> {
        let base = linear(x.clone(), self.base_weight(), None);
        match &self.lora {
            Some(lora) => base + lora.forward(x),
            None => base,
        }
    }

    /// Replaces the dense base with its NF4 quantization (bitsandbytes' NF4, double quant).
    pub fn quantize_nf4(&mut self) -> Result<()> {
        let Some(weight) = self.weight.take() else {
            return Ok(());
        };
        let [d_in, d_out] = weight.dims();
        let device = weight.device();
        let values = weight
            .val()
            .into_data()
            .convert::<f32>()
            .into_vec::<f32>()
            .expect("f32");
        // Burn's [in, out] back to the [out, in] rows bitsandbytes quantizes.
        let rows = crate::model::linear::transpose(&values, d_in, d_out);
        match Nf4Weight::quantize(&rows, [d_out, d_in], &device) {
            Ok(nf4) => {
                self.nf4 = Some(nf4);
                Ok(())
            }
            Err(e) => {
                self.weight = Some(weight);
                Err(e)
            }
        }
    }

    /// A dense base weight: folds the adapter in (see [`Projection::merge`]) and dequantizes an
    /// NF4 base, so that the projection can be saved as a plain checkpoint.
    pub fn make_dense(&mut self) {
        self.merge();
        if let Some(nf4) = self.nf4.take() {
            self.weight = Some(Param::from_tensor(nf4.dequantize()));
        }
    }

    /// Folds the adapter, if any, into a dense weight (`W + scaling * A @ B`, an NF4 base
    /// dequantized first) and drops it.
    pub fn merge(&mut self) {
        if let Some(lora) = self.lora.take() {
            self.weight = Some(Param::from_tensor(self.base_weight() + lora.delta()));
            self.nf4 = None;
        }
    }
}
