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
/// for `heads` heads.
///
/// `padding` is the attention mask over all `past + queries` keys, `[batch][keys]`, 1 for a
/// real token and 0 for padding; `None` means no padding.
///
/// One head's mask is built on the host and sent; the device repeats it for the other heads
/// (materialised: broadcasting is slow on the CPU backend). On a GPU this sends and builds
/// `1 / heads` of the mask: 2 MiB instead of 64 for 8 x 512 positions and 32 heads.
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
    let mut hidden = Vec::with_capacity(batch * queries * keys);
    for b in 0..batch {
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
    }
    let one_head: Tensor<B, 4, Bool> =
        Tensor::from_data(TensorData::new(hidden, [batch, 1, queries, keys]), device);
    one_head.repeat_dim(1, heads)
}

#[cfg(test)]
mod tests {
    use super::*;
    use burn::backend::Flex;

    /// Every head of every row holds the same mask, entry by entry the rule: hidden when
    /// padded or not visible, except a query that would see nothing sees itself.
    #[test]
    fn every_head_gets_the_rule() {
        let (batch, heads, past, queries) = (2, 3, 2, 4);
        let keys = past + queries;
        // Row 1 is left-padded over its first four keys: queries 2 and 3 see nothing.
        let padding = vec![vec![1; keys], vec![0, 0, 0, 0, 1, 1]];
        let window = Some(3);
        let mask = attention_mask::<Flex>(
            batch,
            heads,
            past,
            queries,
            window,
            Some(&padding),
            &Default::default(),
        );
        assert_eq!(mask.dims(), [batch, heads, queries, keys]);
        let values = mask.into_data().to_vec::<bool>().unwrap();
        for b in 0..batch {
            for h in 0..heads {
                for (i, q) in (past..keys).enumerate() {
                    let row: Vec<bool> = (0..keys)
                        .map(|k| padding[b][k] == 0 || !is_visible(q, k, window))
                        .collect();
                    let sees_nothing = row.iter().all(|&x| x);
                    for k in 0..keys {
                        let want = row[k] && !(sees_nothing && k == q);
                        let got = values[((b * heads + h) * queries + i) * keys + k];
                        assert_eq!(got, want, "row {b}, head {h}, query {q}, key {k}");
                    }
                }
            }
        }
    }

    #[test]
    fn window_counts_the_query_itself() {
        assert!(is_visible(5, 5, Some(2)));
        assert!(is_visible(5, 4, Some(2)));
        assert!(!is_visible(5, 3, Some(2)));
        assert!(!is_visible(4, 5, None));
        assert!(is_visible(9, 0, None));
    }
}
