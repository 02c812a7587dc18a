//! Which keys each query may attend to: causal order, Mistral's sliding window, padding.

use burn::tensor::{Bool, Tensor, TensorData, backend::Backend};

/// Whether query position `query` may see key position `key` (absolute positions).
///
/// Causal, and with a sliding window of `w` the query sees its `w` most recent positions,
/// itself included, as transformers' Mistral does.
pub(super) fn is_visible(query: usize, key: usize, sliding_window: Option<usize>) -> bool {
    key <= query && sliding_window.is_none_or(|w| query - key < w)
}

/// The mask of hidden pairs for `queries` new positions after `past` cached ones, repeated
/// for `heads` heads (materialised: broadcasting is slow on the CPU backend).
///
/// `padding` is the attention mask over all `past + queries` keys, `[batch][keys]`, 1 for a
/// real token and 0 for padding; `None` means no padding.
///
/// # Shapes
/// - returns `[batch, heads, queries, past + queries]`, `true` where attention is forbidden.
pub(crate) fn attention_mask<B: Backend>(
    batch: usize,
    heads: usize,
    past: usize,
    queries: usize,
    sliding_window: Option<usize>,
    padding: Option<&[Vec<u32>]>,
    device: &B::Device,
) -> Tensor<B, 4, Bool> {
    let keys = past + queries;
    let mut hidden = Vec::with_capacity(batch * heads * queries * keys);
    for b in 0..batch {
        let plane = hidden.len();
        for q in past..keys {
            let row = hidden.len();
            for k in 0..keys {
                let padded = padding.is_some_and(|p| p[b][k] == 0);
                hidden.push(padded || !is_visible(q, k, sliding_window));
            }
            // A query that may see nothing (a left-padding position) sees itself instead,
            // so that masking with -inf cannot give NaN. Its output is padding either way.
            if hidden[row..].iter().all(|&h| h) {
                hidden[row + q] = false;
            }
        }
        for _ in 1..heads {
            hidden.extend_from_within(plane..plane + queries * keys);
        }
    }
    Tensor::from_data(
        TensorData::new(hidden, [batch, heads, queries, keys]),
        device,
    )
}

#[cfg(test)]
mod tests {
    use super::is_visible;

    #[test]
    fn window_counts_the_query_itself() {
        assert!(is_visible(5, 5, Some(2)));
        assert!(is_visible(5, 4, Some(2)));
        assert!(!is_visible(5, 3, Some(2)));
        assert!(!is_visible(4, 5, None));
        assert!(is_visible(9, 0, None));
    }
}
