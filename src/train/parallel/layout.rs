//! The order in which a model's gradients travel between nodes as one flat vector.
//!
//! `ParamId`s are drawn afresh in every process, so two nodes that load the same model agree
//! on nothing but the module tree: the vector follows its visiting order.

use burn::module::{Module, ParamId};
use burn::optim::GradientsParams;
use burn::tensor::backend::Backend;
use burn::tensor::{Tensor, TensorData};

use crate::error::{Error, Result};
use crate::nn::float_params;

/// The trainable parameters of a model, in visiting order, with their shapes.
#[derive(Clone, Debug, PartialEq)]
pub struct GradLayout {
    entries: Vec<LayoutEntry>,
}

#[derive(Clone, Debug, PartialEq)]
struct LayoutEntry {
    path: String,
    id: ParamId,
    shape: Vec<usize>,
}

impl GradLayout {
    /// The parameters of `model` that require gradients.
    pub fn of<B: Backend, M: Module<B>>(model: &M) -> Self {
        let entries = float_params(model)
            .into_iter()
            .filter(|entry| entry.require_grad)
            .map(|entry| LayoutEntry {
                path: entry.path,
                id: entry.id,
                shape: entry.shape,
            })
            .collect();
        GradLayout { entries }
    }

    /// Each parameter as `path [d0, d1]`: what two nodes must agree on.
    pub fn names(&self) -> Vec<String> {
        self.entries
            .iter()
            .map(|entry| format!("{} {:?}", entry.path, entry.shape))
            .collect()
    }

    /// Values in all the gradients together.
    pub fn num_values(&self) -> usize {
        self.entries
            .iter()
            .map(|entry| entry.shape.iter().product::<usize>())
            .sum()
    }

    /// Takes every gradient of the layout out of `grads` and returns them as one vector, in
    /// the layout's order. A missing gradient is [`Error::LostGradients`].
    pub fn flatten<B: Backend>(&self, grads: &mut GradientsParams) -> Result<Vec<f32>> {
        let mut values = Vec::with_capacity(self.num_values());
        for (got, entry) in self.entries.iter().enumerate() {
            let flat =
                take_flat::<B>(grads, entry.id, entry.shape.len()).ok_or(Error::LostGradients {
                    expected: self.entries.len(),
                    got,
                })?;
            let data = flat.into_data().convert::<f32>();
            values.extend_from_slice(data.as_slice::<f32>().map_err(|e| Error::Collective {
                what: "reading a gradient",
                reason: format!("{e:?}"),
            })?);
        }
        Ok(values)
    }

    /// The gradients that `values` (as [`GradLayout::flatten`] laid them out) hold, on
    /// `device`.
    pub fn restore<B: Backend>(&self, values: &[f32], device: &B::Device) -> GradientsParams {
        let mut grads = GradientsParams::new();
        let mut start = 0;
        for entry in &self.entries {
            let len: usize = entry.shape.iter().product();
            let data = TensorData::new(values[start..start + len].to_vec(), entry.shape.clone());
            register::<B>(&mut grads, entry.id, data, device);
            start += len;
        }
        grads
    }
}

/// The gradient of `id` (of rank `rank`) as a vector, removed from `grads`.
fn take_flat<B: Backend>(
    grads: &mut GradientsParams,
    id: ParamId,
    rank: usize,
) -> Option<Tensor<B, 1>> {
    match rank {
        1 => grads.remove::<B, 1>(id),
        2 => grads.remove::<B, 2>(id).map(|t| t.flatten(0, 1)),
        3 => grads.remove::<B, 3>(id).map(|t| t.flatten(0, 2)),
        4 => grads.remove::<B, 4>(id).map(|t| t.flatten(0, 3)),
        _ => None,
    }
}

fn register<B: Backend>(
    grads: &mut GradientsParams,
    id: ParamId,
    data: TensorData,
    device: &B::Device,
) {
    match data.shape.len() {
        1 => grads.register(id, Tensor::<B, 1>::from_data(data, device)),
        2 => grads.register(id, Tensor::<B, 2>::from_data(data, device)),
        3 => grads.register(id, Tensor::<B, 3>::from_data(data, device)),
        _ => grads.register(id, Tensor::<B, 4>::from_data(data, device)),
    }
}

#[cfg(test)]
mod tests {
    use burn::backend::{Autodiff, Flex};
    use burn::module::Param;
    use burn::nn::{Linear, LinearConfig};

    use super::*;

    type A = Autodiff<Flex>;

    #[derive(Module, Debug)]
    struct Two<B: Backend> {
        first: Linear<B>,
        scale: Param<Tensor<B, 1>>,
    }

    #[test]
    fn gradients_travel_flat_and_come_back_whole() {
        let device = Default::default();
        let model = Two::<A> {
            first: LinearConfig::new(3, 2).init(&device),
            scale: Param::from_tensor(Tensor::from_floats([1.0, 2.0], &device)),
        };
        let layout = GradLayout::of(&model);
        assert_eq!(
            layout.names(),
            ["first.weight [3, 2]", "first.bias [2]", "scale [2]"]
        );
        let input = Tensor::<A, 2>::from_floats([[1.0, -2.0, 0.5]], &device);
        let loss = (model.first.forward(input) * model.scale.val().unsqueeze()).sum();
        let mut grads = GradientsParams::from_grads(loss.backward(), &model);
        let weight = grads.get::<Flex, 2>(model.first.weight.id).unwrap();
        let flat = layout.flatten::<Flex>(&mut grads).unwrap();
        assert_eq!(flat.len(), layout.num_values());
        assert!(grads.is_empty());
        let back = layout.restore::<Flex>(&flat, &device);
        let restored = back.get::<Flex, 2>(model.first.weight.id).unwrap();
        assert_eq!(restored.into_data(), weight.into_data());
        let scale = back.get::<Flex, 1>(model.scale.id).unwrap().into_data();
        assert_eq!(scale.to_vec::<f32>().unwrap(), flat[8..10]);
    }

    #[test]
    fn a_missing_gradient_is_an_error() {
        let device = Default::default();
        let model = LinearConfig::new(2, 2).init::<A>(&device);
        let mut grads = GradientsParams::new();
        let error = GradLayout::of(&model).flatten::<Flex>(&mut grads);
        assert!(matches!(error, Err(Error::LostGradients { got: 0, .. })));
    }
}
