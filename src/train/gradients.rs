//! A batch's loss and gradients computed piece by piece, so that what a step holds at once is
//! small: the loss over chunks of positions (never the `[batch, seq, vocab]` logits at once),
//! and optionally gradient checkpointing (per decoder layer, only its input kept; the layer is
//! run again in the backward pass, as transformers' `gradient_checkpointing_enable()` does).
//!
//! Each piece is its own autodiff graph: a piece's input is a fresh leaf, its backward pass
//! gives the gradients of its parameters and of that input, and the piece before is then
//! back-propagated from `sum(output * grad_output)`, whose gradient is exactly `grad_output`.
//! The gradients are those of one graph over the whole batch (summation order aside).

use burn::module::{AutodiffModule, Module, ModuleVisitor, Param};
use burn::optim::GradientsParams;
use burn::tensor::backend::{AutodiffBackend, Backend};
use burn::tensor::{Distribution, Int, Tensor};

use super::freeze::trainable_params;
use super::loss::{chunk_positions, labels_tensor};
use super::step::MicroLoss;
use crate::data::Batch;
use crate::error::{Error, Result};
use crate::model::{
    AttentionContext, LlamaForCausalLM, check_padding, ids_tensor, next_token_pairs,
};
use crate::nn::in_place::add_into;
use crate::nn::read_scalar;

/// How a training step trades compute for memory.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct MemoryOptions {
    /// Keep only each decoder layer's input in the forward pass and run the layer again in
    /// the backward pass: activation memory of one layer instead of all, for about one more
    /// forward pass of compute.
    pub gradient_checkpointing: bool,
    /// Positions whose logits are formed at once by the loss; `None` picks as many as fill
    /// [`LOSS_CHUNK_BYTES`](super::LOSS_CHUNK_BYTES) of f32 logits.
    pub loss_chunk: Option<usize>,
}

impl Default for MemoryOptions {
    /// No gradient checkpointing; loss chunks of
    /// [`LOSS_CHUNK_BYTES`](super::LOSS_CHUNK_BYTES).
    fn default() -> Self {
        MemoryOptions {
            gradient_checkpointing: false,
            loss_chunk: None,
        }
    }
}

impl MemoryOptions {
    /// The positions per loss chunk for a vocabulary of `vocab` tokens (at least 1).
    pub fn chunk_positions(&self, vocab: usize) -> usize {
        chunk_positions(self.loss_chunk, vocab)
    }
}

/// The causal LM loss of `batch` (mean over its target tokens) with its gradients already
/// computed, piece by piece as `options` say: the `loss_of` a
/// [`TrainStep`](super::TrainStep) takes, as `|model, batch| batch_gradients(model, batch,
/// &options)`. Same loss and gradients as [`batch_loss`](super::batch_loss) and a backward
/// pass, with less memory.
///
/// # Shapes
/// - batch: `[rows][seq]` ids, mask and labels; the loss is `[1]`.
///
/// # Errors
/// [`Error::LostGradients`] when a trainable parameter got no gradient: burn-autodiff 0.21
/// can drop steps of the layers' graph while it outlives the head's backward passes, when a
/// forward pass on the same model was left without a backward pass (evaluate on
/// `model.valid()` instead). Never a silently partial step.
pub fn batch_gradients<B: AutodiffBackend>(
    model: &LlamaForCausalLM<B>,
    batch: &Batch,
    options: &MemoryOptions,
) -> Result<MicroLoss<B>> {
    let device = model.devices().into_iter().next().unwrap_or_default();
    let ids = ids_tensor::<B>(&batch.ids, &device)?;
    let [rows, seq] = ids.dims();
    let labels = labels_tensor::<B>(batch, rows, seq, model.config().vocab_size, &device)?;
    check_padding(&batch.attention_mask, rows, seq)?;
    let context = model.layer_context(rows, 0, seq, Some(&batch.attention_mask), &device);
    let mut grads = Accumulated::new(model);

    let (last_output, backward_trunk) = if options.gradient_checkpointing {
        checkpointed_trunk(model, ids.clone(), &context, &device)
    } else {
        let mut x = model.embed(ids.clone());
        for layer in &model.model.layers {
            x = layer.forward(x, &context, None);
        }
        (x.clone(), Trunk::Graph(x))
    };
    let chunk = options.chunk_positions(model.config().vocab_size);
    let tokens = batch.target_tokens();
    let (loss, grad) = head_pieces(
        model,
        last_output.detach(),
        labels,
        tokens,
        chunk,
        &mut grads,
    );
    match backward_trunk {
        Trunk::Graph(output) => grads.add(backprop_graph(output, grad)),
        Trunk::Checkpointed { inputs, seeds } => {
            let grad = checkpointed_backward(model, inputs, &seeds, &context, grad, &mut grads);
            // Without a graph (a frozen embedding) this back-propagates nothing.
            grads.add(backprop_graph(model.embed(ids), grad));
        }
    }
    let grads = grads.finish();
    let expected = trainable_params(model).len();
    if grads.len() < expected {
        return Err(Error::LostGradients {
            expected,
            got: grads.len(),
        });
    }
    Ok(MicroLoss {
        loss: Tensor::from_inner(loss),
        tokens: batch.target_tokens(),
        grads: Some(grads),
    })
}

/// What the backward pass of the decoder layers starts from.
enum Trunk<B: AutodiffBackend> {
    /// The last layer's output, with the graph of every layer behind it.
    Graph(Tensor<B, 3>),
    /// Each layer's input (the embeddings first), without graphs, and the seed each layer
    /// drew its dropout with.
    Checkpointed {
        inputs: Vec<Tensor<B, 3>>,
        seeds: Vec<u64>,
    },
}

/// The forward pass without graphs, keeping each layer's input: returns the last layer's
/// output. The backend is re-seeded before each layer, here and again when the layer is run
/// once more, so that its dropout draws the same masks both times.
fn checkpointed_trunk<B: AutodiffBackend>(
    model: &LlamaForCausalLM<B>,
    ids: Tensor<B, 2, Int>,
    context: &AttentionContext<B>,
    device: &B::Device,
) -> (Tensor<B, 3>, Trunk<B>) {
    // Untracked parameters on the autodiff backend: no graph is recorded, and dropout (which
    // acts only where autodiff is on) still applies.
    let untracked = model.clone().no_grad();
    let base_seed = drawn_seed::<B>(device);
    let mut x = untracked.embed(ids);
    let mut inputs = Vec::with_capacity(untracked.model.layers.len());
    let mut seeds = Vec::with_capacity(untracked.model.layers.len());
    for (index, layer) in untracked.model.layers.iter().enumerate() {
        let seed = base_seed ^ (index as u64 + 1).wrapping_mul(0x9E37_79B9_7F4A_7C15);
        B::seed(device, seed);
        inputs.push(x.clone());
        seeds.push(seed);
        x = layer.forward(x, context, None);
    }
    (x, Trunk::Checkpointed { inputs, seeds })
}

/// A seed drawn from the backend's generator, which the training step seeds: so the layers'
/// seeds follow the run's seed and step.
fn drawn_seed<B: Backend>(device: &B::Device) -> u64 {
    let draw = read_scalar(Tensor::<B, 1>::random(
        [1],
        Distribution::Uniform(0.0, 1.0),
        device,
    ));
    (draw * u32::MAX as f64) as u64
}

/// Runs each layer again, last first, from its kept input, and back-propagates `grad` through
/// it; returns the gradient of the embeddings.
fn checkpointed_backward<B: AutodiffBackend>(
    model: &LlamaForCausalLM<B>,
    mut inputs: Vec<Tensor<B, 3>>,
    seeds: &[u64],
    context: &AttentionContext<B>,
    mut grad: Tensor<B::InnerBackend, 3>,
    grads: &mut Accumulated<B>,
) -> Tensor<B::InnerBackend, 3> {
    let device = grad.device();
    for (index, layer) in model.model.layers.iter().enumerate().rev() {
        let input = inputs.pop().expect("one input per layer").require_grad();
        B::seed(&device, seeds[index]);
        let output = layer.forward(input.clone(), context, None);
        let mut layer_grads = backprop_graph(output, grad);
        grad = input
            .grad_remove(&mut layer_grads)
            .expect("a layer's output depends on its input");
        grads.add(layer_grads);
    }
    grad
}

/// The final norm, the head and the loss, over chunks of positions: returns the loss (mean
/// over target tokens) and the gradient of the last layer's output.
///
/// The norm is one piece (cheap, all positions); each chunk of normed positions is another,
/// its logits formed, back-propagated and freed before the next chunk's.
fn head_pieces<B: AutodiffBackend>(
    model: &LlamaForCausalLM<B>,
    last_output: Tensor<B, 3>,
    labels: Tensor<B, 2, Int>,
    target_tokens: usize,
    chunk: usize,
    grads: &mut Accumulated<B>,
) -> (Tensor<B::InnerBackend, 1>, Tensor<B::InnerBackend, 3>) {
    // The chunks read the normed states without a graph; the norm's graph is built again just
    // before its own backward. A graph kept alive across the chunks' backward passes can lose
    // steps to burn-autodiff's cleanup when an abandoned forward graph shares its parameters
    // (tracel-ai/burn#5573 is the threaded form), and the norm's gradient then went missing.
    let normed = model
        .model
        .norm
        .valid()
        .forward(last_output.clone().inner());
    let (predicting, targets) =
        next_token_pairs(Tensor::<B, 3>::from_inner(normed), labels.clone());
    let positions = targets.dims()[0];
    // No target at all gives 0 / 0, a NaN loss, as the plain route's mean does: the step
    // then stops with `NonFiniteLoss` instead of taking a step on nothing.
    let count = target_tokens as f64;

    let device = targets.device();
    let mut loss = Tensor::<B::InnerBackend, 1>::zeros([1], &device);
    let mut chunk_grads = Vec::new();
    let mut start = 0;
    while start < positions {
        let len = chunk.min(positions - start);
        let input = predicting
            .clone()
            .detach()
            .narrow(0, start, len)
            .require_grad();
        let vocab = model.config().vocab_size;
        let logits = model
            .head(input.clone().unsqueeze::<3>())
            .reshape([len, vocab]);
        let chunk_targets = targets.clone().narrow(0, start, len);
        let nll = LlamaForCausalLM::nll_sum(logits, chunk_targets) / count;
        loss = loss + nll.clone().inner();
        let mut chunk_backward = nll.backward();
        chunk_grads.push(
            input
                .grad_remove(&mut chunk_backward)
                .expect("the logits depend on the hidden states"),
        );
        grads.add(chunk_backward);
        start += len;
    }
    let grad = Tensor::cat(chunk_grads, 0);
    let last_output = last_output.require_grad();
    let normed = model.model.norm.forward(last_output.clone());
    let (predicting, _) = next_token_pairs(normed, labels);
    let mut norm_grads = backprop_graph(predicting, grad);
    let grad = last_output
        .grad_remove(&mut norm_grads)
        .expect("the normed states depend on the last output");
    grads.add(norm_grads);
    (loss, grad)
}

/// The gradients of `sum(output * grad)`: `grad` back-propagated through `output`'s graph.
fn backprop_graph<B: AutodiffBackend, const D: usize>(
    output: Tensor<B, D>,
    grad: Tensor<B::InnerBackend, D>,
) -> B::Gradients {
    (output * Tensor::from_inner(grad)).sum().backward()
}

/// The parameter gradients of the pieces, summed (a parameter in two pieces, as a tied
/// embedding is, gets both).
struct Accumulated<'a, B: AutodiffBackend> {
    model: &'a LlamaForCausalLM<B>,
    sum: Option<GradientsParams>,
}

impl<'a, B: AutodiffBackend> Accumulated<'a, B> {
    fn new(model: &'a LlamaForCausalLM<B>) -> Self {
        Accumulated { model, sum: None }
    }

    /// Adds the gradients of one backward pass, each into the sum's tensor (in place).
    fn add(&mut self, grads: B::Gradients) {
        let mut new = GradientsParams::from_grads(grads, self.model);
        let sum = match self.sum.take() {
            None => new,
            Some(mut sum) => {
                self.model.visit(&mut AddInto::<B> {
                    sum: &mut sum,
                    new: &mut new,
                    _backend: std::marker::PhantomData,
                });
                sum
            }
        };
        self.sum = Some(sum);
    }

    fn finish(self) -> GradientsParams {
        self.sum.unwrap_or_default()
    }
}

/// Moves each gradient of `new` into `sum`, added to the one there.
struct AddInto<'a, B> {
    sum: &'a mut GradientsParams,
    new: &'a mut GradientsParams,
    _backend: std::marker::PhantomData<B>,
}

impl<B: AutodiffBackend> ModuleVisitor<B> for AddInto<'_, B> {
    fn visit_float<const D: usize>(&mut self, param: &Param<Tensor<B, D>>) {
        let Some(term) = self.new.remove::<B::InnerBackend, D>(param.id) else {
            return;
        };
        let sum = match self.sum.remove::<B::InnerBackend, D>(param.id) {
            Some(sum) => add_into(sum, term),
            None => term,
        };
        self.sum.register(param.id, sum);
    }
}
