//! The tensors a config calls for, named and shaped as a Hugging Face checkpoint stores them,
//! and their comparison with the tensors a checkpoint has: done on headers alone, before
//! anything of the config's sizes is allocated, so a config that does not fit its weights is
//! refused with the tensors named instead of sizing memory from it.

use std::collections::BTreeMap;

use super::config::LlamaConfig;
use super::hf_layout::is_ignored;

/// `(name, shape)` of every tensor of the config, in checkpoint layout (`[out, in]` for a
/// linear weight).
pub(crate) fn checkpoint_shapes(config: &LlamaConfig) -> Vec<(String, Vec<usize>)> {
    let (hidden, inner) = (config.hidden_size, config.intermediate_size);
    let q = config.num_attention_heads * config.head_dim;
    let kv = config.num_key_value_heads * config.head_dim;
    let mut shapes = vec![(
        "model.embed_tokens.weight".to_string(),
        vec![config.vocab_size, hidden],
    )];
    for layer in 0..config.num_hidden_layers {
        let prefix = format!("model.layers.{layer}");
        for norm in ["input_layernorm", "post_attention_layernorm"] {
            shapes.push((format!("{prefix}.{norm}.weight"), vec![hidden]));
        }
        let projections = [
            ("self_attn.q_proj", q, hidden),
            ("self_attn.k_proj", kv, hidden),
            ("self_attn.v_proj", kv, hidden),
            ("self_attn.o_proj", hidden, q),
            ("mlp.gate_proj", inner, hidden),
            ("mlp.up_proj", inner, hidden),
            ("mlp.down_proj", hidden, inner),
        ];
        for (name, rows, cols) in projections {
            shapes.push((format!("{prefix}.{name}.weight"), vec![rows, cols]));
        }
    }
    shapes.push(("model.norm.weight".to_string(), vec![hidden]));
    if !config.tie_word_embeddings {
        shapes.push((
            "lm_head.weight".to_string(),
            vec![config.vocab_size, hidden],
        ));
    }
    shapes
}

/// What keeps a checkpoint from fitting a config, each list sorted.
#[derive(Debug, Default)]
pub(crate) struct ShapeMismatches {
    /// Tensors the config calls for that the checkpoint lacks.
    pub missing: Vec<String>,
    /// Tensors of the checkpoint the config has no place for.
    pub unexpected: Vec<String>,
    /// `name: expected [..], found [..]`.
    pub misshaped: Vec<String>,
}

impl ShapeMismatches {
    /// Nothing is missing, unexpected or mis-shaped.
    pub(crate) fn fits(&self) -> bool {
        self.missing.is_empty() && self.unexpected.is_empty() && self.misshaped.is_empty()
    }
}

/// What keeps `present` (`(name, shape)` of a checkpoint's tensors) from fitting `config`. A
/// stored head beside a tied embedding is ignored, as transformers ignores it.
pub(crate) fn shape_mismatches<'a>(
    config: &LlamaConfig,
    present: impl IntoIterator<Item = (&'a str, &'a [usize])>,
) -> ShapeMismatches {
    let mut unused: BTreeMap<&str, &[usize]> = present
        .into_iter()
        .filter(|(name, _)| !is_ignored(name))
        .collect();
    if config.tie_word_embeddings {
        unused.remove("lm_head.weight");
    }
    let (mut missing, mut misshaped) = (Vec::new(), Vec::new());
    for (name, shape) in checkpoint_shapes(config) {
        match unused.remove(name.as_str()) {
            None => missing.push(name),
            Some(found) if found != shape.as_slice() => {
                misshaped.push(format!("{name}: expected {shape:?}, found {found:?}"))
            }
            Some(_) => {}
        }
    }
    missing.sort();
    misshaped.sort();
    let unexpected = unused.keys().map(|name| name.to_string()).collect();
    ShapeMismatches {
        missing,
        unexpected,
        misshaped,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn config(extra: &str) -> LlamaConfig {
        LlamaConfig::from_json(&format!(
            r#"{{"model_type":"llama","vocab_size":10,"hidden_size":8,"intermediate_size":16,
            "num_hidden_layers":2,"num_attention_heads":2,"num_key_value_heads":1{extra}}}"#
        ))
        .unwrap()
    }

    #[test]
    fn a_fitting_checkpoint_has_no_mismatch() {
        let config = config("");
        let shapes = checkpoint_shapes(&config);
        assert_eq!(shapes.len(), 1 + 2 * 9 + 1 + 1);
        let present = shapes.iter().map(|(n, s)| (n.as_str(), s.as_slice()));
        assert!(shape_mismatches(&config, present).fits());
        let k = shapes
            .iter()
            .find(|(n, _)| n.ends_with("0.self_attn.k_proj.weight"));
        assert_eq!(k.unwrap().1, vec![4, 8], "one KV head of width 4");
    }

    /// A config that claims more layers, a larger vocabulary or a tied head than the files
    /// hold is named tensor by tensor.
    #[test]
    fn every_kind_of_mismatch_is_named() {
        let stored = checkpoint_shapes(&config(""));
        let mut present: Vec<(&str, &[usize])> = stored
            .iter()
            .map(|(n, s)| (n.as_str(), s.as_slice()))
            .collect();
        present.push(("model.layers.9.extra.weight", &[1]));
        let claims = config(r#","vocab_size":11,"num_hidden_layers":3"#);
        let ShapeMismatches {
            missing,
            unexpected,
            misshaped,
        } = shape_mismatches(&claims, present.clone());
        assert!(
            missing
                .iter()
                .any(|n| n == "model.layers.2.mlp.up_proj.weight")
        );
        assert_eq!(unexpected, vec!["model.layers.9.extra.weight"]);
        assert!(
            misshaped
                .iter()
                .any(|m| m.starts_with("model.embed_tokens.weight"))
        );
        let tied = config(r#","tie_word_embeddings":true"#);
        let ShapeMismatches {
            missing,
            unexpected,
            ..
        } = shape_mismatches(&tied, present);
        assert!(missing.is_empty());
        assert_eq!(
            unexpected,
            vec!["model.layers.9.extra.weight"],
            "lm_head is ignored"
        );
    }
}
