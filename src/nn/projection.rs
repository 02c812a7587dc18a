//! A linear projection without bias: a dense or NF4-quantized base weight, optionally with a
//! LoRA adapter.

use burn::config::Config;
use burn::module::{Initializer, Module, Param};
use burn::nn::LinearConfig;
use burn::tensor::{Tensor, backend::Backend};

use super::layout::transpose;
use super::lora_adapter::LoraAdapter;
use super::matrix_product::last_axis_product;
use super::nf4_linear::nf4_linear;
use super::nf4_weight::Nf4Weight;
use super::params::f32_values;
use super::precision::{in_f32, to_dtype};

/// The standard deviation of randomly initialised weights: transformers' `initializer_range`
/// default, which Llama, Mistral and SmolLM2 configs keep (`_init_weights` draws every linear
/// and embedding weight from N(0, 0.02²)).
pub const INIT_STD: f64 = 0.02;

/// N(0, [`INIT_STD`]²): how the model's linear and embedding weights are drawn.
pub(crate) const WEIGHT_INIT: Initializer = Initializer::Normal {
    mean: 0.0,
    std: INIT_STD,
};

/// The widths of a [`Projection`].
#[derive(Config, Debug)]
pub struct ProjectionConfig {
    /// Input width.
    pub d_in: usize,
    /// Output width.
    pub d_out: usize,
}

impl ProjectionConfig {
    /// A dense projection with weights drawn from N(0, [`INIT_STD`]²) as transformers draws
    /// them (lazily: loading a checkpoint replaces the weight without ever drawing it).
    pub fn init<B: Backend>(&self, device: &B::Device) -> Projection<B> {
        let linear = LinearConfig::new(self.d_in, self.d_out)
            .with_bias(false)
            .with_initializer(WEIGHT_INIT)
            .init(device);
        Projection::dense(linear.weight, self.d_in, self.d_out)
    }
}

/// `x @ W (+ lora(x))`. A dense base parameter is named `weight`, so its path is the Hugging
/// Face name (`...q_proj.weight`); the adapter's are `...q_proj.lora.lora_a` / `lora_b`.
///
/// The base is either a dense `weight` or an `nf4` weight, never both and never neither: the
/// fields are private so that only the methods below change them.
#[derive(Module, Debug)]
pub struct Projection<B: Backend> {
    /// `[in, out]` (Burn's layout, the transpose of PyTorch's).
    weight: Option<Param<Tensor<B, 2>>>,
    /// The base quantized to NF4 (QLoRA): frozen, dequantized in each forward pass.
    nf4: Option<Nf4Weight<B>>,
    lora: Option<LoraAdapter<B>>,
    #[module(skip)]
    dims: [usize; 2],
}

impl<B: Backend> Projection<B> {
    /// From a weight in Burn's layout.
    ///
    /// # Shapes
    /// - weight: `[in, out]`.
    pub fn from_weight(weight: Tensor<B, 2>) -> Self {
        let [d_in, d_out] = weight.dims();
        Self::dense(Param::from_tensor(weight), d_in, d_out)
    }

    fn dense(weight: Param<Tensor<B, 2>>, d_in: usize, d_out: usize) -> Self {
        Projection {
            weight: Some(weight),
            nf4: None,
            lora: None,
            dims: [d_in, d_out],
        }
    }

    /// `(in, out)`
    pub fn dims(&self) -> (usize, usize) {
        (self.dims[0], self.dims[1])
    }

    /// The dense base parameter, `[in, out]`; `None` when the base is NF4.
    pub fn weight(&self) -> Option<&Param<Tensor<B, 2>>> {
        self.weight.as_ref()
    }

    /// The NF4 base, when quantized.
    pub fn nf4(&self) -> Option<&Nf4Weight<B>> {
        self.nf4.as_ref()
    }

    /// The LoRA adapter, if any.
    pub fn lora(&self) -> Option<&LoraAdapter<B>> {
        self.lora.as_ref()
    }

    /// Puts `adapter` on this projection, replacing any other.
    pub fn set_lora(&mut self, adapter: LoraAdapter<B>) {
        self.lora = Some(adapter);
    }

    /// The base weight, `[in, out]`: the parameter, or the NF4 base dequantized.
    pub fn base_weight(&self) -> Tensor<B, 2> {
        match &self.nf4 {
            Some(nf4) => nf4.dequantize(),
            None => self
                .weight
                .as_ref()
                .expect("a projection without an NF4 base has a dense one")
                .val(),
        }
    }

    /// The product runs in `x`'s float type: a dense weight of another type is cast to it
    /// (an f32 master weight then gets its gradient in f32), an NF4 base dequantizes in f32.
    ///
    /// # Shapes
    /// - x: `[batch, seq, in]`; returns `[batch, seq, out]`.
    pub fn forward(&self, x: Tensor<B, 3>) -> Tensor<B, 3> {
        let base = match &self.nf4 {
            Some(nf4) => in_f32(x.clone(), |x| nf4_linear(x, nf4)),
            None => {
                let weight = to_dtype(self.base_weight(), x.dtype());
                last_axis_product(x.clone(), weight)
            }
        };
        match &self.lora {
            Some(lora) => base + lora.forward(x),
            None => base,
        }
    }

    /// Replaces the dense base with its NF4 quantization (bitsandbytes' NF4, double quant).
    /// An NF4 base stays as it is.
    pub fn quantize_nf4(&mut self) -> crate::error::Result<()> {
        let Some(weight) = &self.weight else {
            return Ok(());
        };
        let [d_in, d_out] = self.dims;
        let device = weight.device();
        let values = f32_values(weight.val());
        // Burn's [in, out] back to the [out, in] rows bitsandbytes quantizes.
        let rows = transpose(&values, d_in, d_out);
        self.nf4 = Some(Nf4Weight::quantize(&rows, [d_out, d_in], &device)?);
        self.weight = None;
        Ok(())
    }

    /// Makes `nf4` the base, dropping the dense weight without reading it (a lazy one is never
    /// drawn): how a checkpoint loads straight to 4 bits. `nf4` is `[out, in]` of this
    /// projection's widths.
    pub(crate) fn set_nf4(&mut self, nf4: Nf4Weight<B>) {
        debug_assert_eq!(nf4.shape(), [self.dims[1], self.dims[0]]);
        self.nf4 = Some(nf4);
        self.weight = None;
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
            let base = self.base_weight();
            let delta = to_dtype(lora.delta(), base.dtype());
            self.weight = Some(Param::from_tensor(base + delta));
            self.nf4 = None;
        }
    }
}
