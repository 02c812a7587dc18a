//! How a Hugging Face checkpoint stores what the Burn tree holds.

/// Linear weights are the 2-D `weight`s of projections and of the head: PyTorch stores them
/// `[out, in]`, Burn `[in, out]`. The embedding, the other 2-D weight, is `[vocab, hidden]` in
/// both.
pub(super) fn is_linear_weight(name: &str) -> bool {
    name.ends_with("_proj.weight") || name == "lm_head.weight"
}

/// Checkpoint tensors that transformers itself ignores when loading.
pub(super) fn is_ignored(name: &str) -> bool {
    name.ends_with("rotary_emb.inv_freq")
}
