//! Which keys each query may attend to: causal order, Mistral's sliding window, padding.

use burn::tensor::{Bool, Tensor, TensorData, backend::Backend};

use super::device_cache::DeviceCache;

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
/// The parts that depend on positions only (causal order and window; where each query sits)
/// are sent once per shape and kept on the device in `constants`; a forward pass sends only the
/// padding, `batch x keys` booleans. The device combines them for one head and repeats that
/// for the others (materialised: broadcasting is slow on the CPU backend).
///
/// # Shapes
/// - padding: `[batch][past + queries]`; returns `[batch, heads, queries, past + queries]`,
///   `true` where attention is forbidden.
#[allow(clippy::too_many_arguments)]
pub(crate) fn attention_mask<B: Backend>(
    batch: usize,
    heads: usize,
    past: usize,
    queries: usize,
    sliding_window: Option<usize>,
    padding: Option<&[Vec<u32>]>,
    constants: &DeviceCache,
    device: &B::Device,
) -> Tensor<B, 4, Bool> {
    let keys = past + queries;
    let shape = [batch, 1, queries, keys];
    let unseen =
        constants.get_or_make::<B, _, _>(device, ("unseen", past, queries, sliding_window), || {
            pairs(
                past,
                queries,
                |q, k| !is_visible(q, k, sliding_window),
                device,
            )
        });
    let Some(padding) = padding else {
        // Every query sees at least itself.
        return unseen.expand(shape).repeat_dim(1, heads);
    };
    let padded: Vec<bool> = padding.iter().flatten().map(|&m| m == 0).collect();
    let padded: Tensor<B, 4, Bool> =
        Tensor::from_data(TensorData::new(padded, [batch, 1, 1, keys]), device);
    let hidden = unseen.expand(shape).bool_or(padded.expand(shape));
    // A query that may see nothing (a left-padding position) sees itself instead, so that
    // masking with -inf cannot give NaN. Its output is padding either way.
    let itself = constants.get_or_make::<B, _, _>(device, ("itself", past, queries), || {
        pairs(past, queries, |q, k| q == k, device)
    });
    let blind = hidden.clone().all_dim(3).expand(shape);
    let one_head = hidden.bool_and(blind.bool_and(itself.expand(shape)).bool_not());
    one_head.repeat_dim(1, heads)
}

/// `rule(query, key)` over the `queries` positions after `past` and all their keys, made on
/// the host, `[1, 1, queries, past + queries]`.
fn pairs<B: Backend>(
    past: usize,
    queries: usize,
    rule: impl Fn(usize, usize) -> bool,
    device: &B::Device,
) -> Tensor<B, 4, Bool> {
    let keys = past + queries;
    let values: Vec<bool> = (past..keys)
        .flat_map(|q| (0..keys).map(move |k| (q, k)))
        .map(|(q, k)| rule(q, k))
        .collect();
    Tensor::from_data(TensorData::new(values, [1, 1, queries, keys]), device)
}

#[cfg(test)]
mod tests {
    use super::*;
    use burn::backend::Flex;

    /// Every head of every row holds the same mask, entry by entry the rule: hidden when
    /// padded or not visible, except a query that would see nothing sees itself. Masks of
    /// other paddings (and none) over the same positions reuse the kept parts and still follow
    /// the rule.
    #[test]
    fn every_head_gets_the_rule() {
        let (batch, heads, past, queries) = (2, 3, 2, 4);
        let keys = past + queries;
        let constants = DeviceCache::default();
        // Row 1 is left-padded over its first four keys: queries 2 and 3 see nothing.
        let left_padded = vec![vec![1; keys], vec![0, 0, 0, 0, 1, 1]];
        let right_padded = vec![vec![1, 1, 1, 1, 1, 0], vec![1, 1, 0, 0, 0, 0]];
        let unpadded = vec![vec![1; keys]; batch];
        let window = Some(3);
        for (padding, given) in [
            (&left_padded, true),
            (&right_padded, true),
            (&unpadded, false),
        ] {
            let mask = attention_mask::<Flex>(
                batch,
                heads,
                past,
                queries,
                window,
                given.then_some(padding.as_slice()),
                &constants,
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
                            assert_eq!(
                                got, want,
                                "{padding:?}: row {b}, head {h}, query {q}, key {k}"
                            );
                        }
                    }
                }
            }
        }
        // The causal part and the diagonal, each sent once.
        assert_eq!(constants.len(), 2);
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
