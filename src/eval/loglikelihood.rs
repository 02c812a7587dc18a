//! Loglikelihoods of requests on a model: each context passes once, and the continuations
//! that follow it pass together on its key/value cache.

use burn::tensor::activation::log_softmax;
use burn::tensor::{DType, Int, Tensor, TensorData, backend::Backend};

use super::encode::RequestTokens;
use crate::model::{KvCache, LlamaForCausalLM, ids_tensor};
use crate::nn::to_dtype;
use crate::{Error, Result};

/// A request's score.
#[derive(Clone, Copy, Debug, PartialEq)]
pub(crate) struct Scored {
    /// Sum of the continuation tokens' log-probabilities (natural log).
    pub loglikelihood: f64,
    /// Whether every continuation token is the model's most likely one there.
    pub is_greedy: bool,
}

/// Log-probabilities of `targets` at each position, and whether each is the argmax there.
struct Positions {
    /// `[rows * seq]`.
    log_probs: Vec<f32>,
    /// `[rows * seq]`.
    greedy: Vec<bool>,
}

/// Scores `requests` in order. Consecutive requests with the same context tokens share one
/// pass over it; their continuations pass `batch_size` rows at a time. `done` hears how many
/// requests each group finished.
pub(crate) fn score_requests<B: Backend>(
    model: &LlamaForCausalLM<B>,
    requests: &[RequestTokens],
    batch_size: usize,
    device: &B::Device,
    mut done: impl FnMut(usize),
) -> Result<Vec<Scored>> {
    let vocab = model.config().vocab_size;
    let layers = model.config().num_hidden_layers;
    let mut scores = Vec::with_capacity(requests.len());
    let mut start = 0;
    while start < requests.len() {
        let context = &requests[start].context;
        let end = start
            + requests[start..]
                .iter()
                .take_while(|r| &r.context == context)
                .count();
        let group = &requests[start..end];
        for r in group {
            check_vocabulary(&r.context, vocab)?;
            check_vocabulary(&r.continuation, vocab)?;
        }
        scores.extend(score_group(
            model, context, group, batch_size, layers, device,
        )?);
        done(group.len());
        start = end;
    }
    Ok(scores)
}

/// One context and the continuations after it: the context's last position scores every
/// first token; the rest pass as rows on copies of the context's cache.
fn score_group<B: Backend>(
    model: &LlamaForCausalLM<B>,
    context: &[u32],
    group: &[RequestTokens],
    batch_size: usize,
    layers: usize,
    device: &B::Device,
) -> Result<Vec<Scored>> {
    let mut cache = KvCache::new(layers);
    let hidden = model.final_hidden_cached(ids_tensor(&[context.to_vec()], device)?, &mut cache);
    let last = model.head(hidden.narrow(1, context.len() - 1, 1));
    let next = host_floats(log_softmax(to_dtype(last, DType::F32), 2).into_data());
    let most_likely = first_argmax(&next);
    let mut scores: Vec<Scored> = group
        .iter()
        .map(|r| match r.continuation.first() {
            Some(&token) => Scored {
                loglikelihood: f64::from(next[token as usize]),
                is_greedy: token as usize == most_likely,
            },
            None => Scored {
                loglikelihood: 0.0,
                is_greedy: true,
            },
        })
        .collect();
    let longer: Vec<usize> = (0..group.len())
        .filter(|&i| group[i].continuation.len() > 1)
        .collect();
    for rows in longer.chunks(batch_size.max(1)) {
        let continuations: Vec<&[u32]> = rows.iter().map(|&i| &group[i].continuation[..]).collect();
        let found = score_continuations(model, &cache, &continuations, device)?;
        for (&i, (log_probs, greedy)) in rows.iter().zip(found) {
            scores[i].loglikelihood += log_probs;
            scores[i].is_greedy &= greedy;
        }
    }
    Ok(scores)
}

/// Each continuation's tokens after its first, as right-padded rows on copies of `cache`:
/// the sum of their log-probabilities and whether each is the argmax.
fn score_continuations<B: Backend>(
    model: &LlamaForCausalLM<B>,
    cache: &KvCache<B>,
    continuations: &[&[u32]],
    device: &B::Device,
) -> Result<Vec<(f64, bool)>> {
    let seq = continuations.iter().map(|c| c.len() - 1).max().unwrap_or(0);
    // Right padding: a pad position comes after every real one, so it changes none.
    let padded = |ids: &[u32]| {
        let mut row = ids.to_vec();
        row.resize(seq, 0);
        row
    };
    let (inputs, targets): (Vec<_>, Vec<_>) = continuations
        .iter()
        .map(|c| (padded(&c[..c.len() - 1]), padded(&c[1..])))
        .unzip();
    let mut rows_cache = cache.repeat(continuations.len());
    let hidden = model.final_hidden_cached(ids_tensor(&inputs, device)?, &mut rows_cache);
    let found = positions(model.head(hidden), &targets, device)?;
    Ok(continuations
        .iter()
        .enumerate()
        .map(|(row, c)| {
            let at = row * seq..row * seq + c.len() - 1;
            let sum = found.log_probs[at.clone()]
                .iter()
                .map(|&p| f64::from(p))
                .sum();
            (sum, found.greedy[at].iter().all(|&g| g))
        })
        .collect())
}

/// The log-probabilities of `targets` under `logits` and whether each is the argmax.
///
/// # Shapes
/// - logits: `[rows, seq, vocab]`, targets: `[rows][seq]`.
fn positions<B: Backend>(
    logits: Tensor<B, 3>,
    targets: &[Vec<u32>],
    device: &B::Device,
) -> Result<Positions> {
    let [rows, seq, _] = logits.dims();
    let flat: Vec<i64> = targets.iter().flatten().map(|&t| i64::from(t)).collect();
    let index: Tensor<B, 3, Int> =
        Tensor::from_data(TensorData::new(flat.clone(), [rows, seq, 1]), device);
    let log_probs = log_softmax(to_dtype(logits, DType::F32), 2);
    let argmax = log_probs.clone().argmax(2);
    let chosen = log_probs.gather(2, index);
    let argmax = argmax
        .into_data()
        .convert::<i64>()
        .to_vec::<i64>()
        .expect("converted to i64");
    Ok(Positions {
        log_probs: host_floats(chosen.into_data()),
        greedy: argmax.iter().zip(&flat).map(|(a, t)| a == t).collect(),
    })
}

fn host_floats(data: TensorData) -> Vec<f32> {
    data.convert::<f32>()
        .to_vec::<f32>()
        .expect("converted to f32")
}

/// The index of the first largest value (as `torch.argmax`).
fn first_argmax(values: &[f32]) -> usize {
    let mut best = 0;
    for (i, &v) in values.iter().enumerate() {
        if v > values[best] {
            best = i;
        }
    }
    best
}

fn check_vocabulary(ids: &[u32], vocab: usize) -> Result<()> {
    match ids.iter().find(|&&id| id as usize >= vocab) {
        Some(&id) => Err(Error::TokenOutOfVocabulary { id, vocab }),
        None => Ok(()),
    }
}
