//! spectrum.py's files: the six published tables (`tests/fixtures/spectrum_snr_results/`), JSON with
//! `Infinity`, the sorted form, and the unfrozen-parameters YAML as axolotl reads it.

mod common;

use burn_spectrum::Error;
use burn_spectrum::spectrum::{Selection, SnrEntry, SnrTable, UnfrozenPattern};
use common::{PUBLISHED, close, published};

/// spectrum.py's rule written out independently: per type (in order of first appearance),
/// sort by SNR descending with a stable sort and keep `floor(len * pct / 100)`.
fn rule(table: &SnrTable, pct: usize) -> Vec<String> {
    let mut types: Vec<&str> = Vec::new();
    for e in &table.entries {
        if !types.contains(&e.module_type.as_str()) {
            types.push(&e.module_type);
        }
    }
    let mut out = vec![
        "^lm_head.weight$".to_string(),
        "^model.embed_tokens.weight$".to_string(),
    ];
    for t in types {
        let mut of_type: Vec<&SnrEntry> = table
            .entries
            .iter()
            .filter(|e| e.module_type == t)
            .collect();
        // Python's sorted(reverse=True) is stable; none of the published tables has a NaN.
        of_type.sort_by(|a, b| b.snr.partial_cmp(&a.snr).unwrap());
        out.extend(
            of_type
                .iter()
                .take(of_type.len() * pct / 100)
                .map(|e| e.name.clone()),
        );
    }
    out
}

#[test]
fn select_on_published_tables_follows_the_rule() {
    for name in PUBLISHED {
        let table = SnrTable::read(&published(name)).unwrap();
        assert!(table.entries.len() >= 12, "{name}");
        for pct in [0, 10, 25, 50, 100] {
            let selection = Selection::top_percent(&table, pct as u32).unwrap();
            let got: Vec<&str> = selection.patterns().map(|p| p.as_str()).collect();
            assert_eq!(got, rule(&table, pct), "{name} at {pct}%");
        }
    }
}

#[test]
fn published_tables_have_infinity_and_stable_ties() {
    let table = SnrTable::read(&published("snr_results_HuggingFaceTB-SmolLM-135M.json")).unwrap();
    let infinite = table
        .entries
        .iter()
        .filter(|e| e.snr == f64::INFINITY)
        .count();
    assert_eq!(infinite, 61, "30 + 30 layer norms and model.norm");
    // All 30 input_layernorms are inf: the top 25% are the first 7 layers, in layer order.
    let yaml = Selection::top_percent(&table, 25).unwrap().to_yaml();
    let norms: Vec<&str> = yaml
        .lines()
        .skip_while(|l| *l != "# input_layernorm layers")
        .skip(1)
        .take(7)
        .collect();
    let want: Vec<String> = (0..7)
        .map(|i| format!("- model.layers.{i}.input_layernorm"))
        .collect();
    assert_eq!(norms, want);
}

#[test]
fn writer_reproduces_published_json_byte_for_byte() {
    for name in PUBLISHED {
        let text = std::fs::read_to_string(published(name)).unwrap();
        let table = SnrTable::parse(&text).unwrap();
        let plain_form = text.contains("\"type\"");
        let written = if plain_form {
            table.to_json()
        } else {
            table.to_sorted_json()
        };
        let first_difference = written
            .lines()
            .zip(text.lines())
            .enumerate()
            .find(|(_, (w, t))| w != t);
        assert_eq!(
            first_difference, None,
            "{name}: (line index, (ours, published))"
        );
        assert_eq!(written.trim_end().len(), text.trim_end().len(), "{name}");
    }
}

#[test]
fn round_trip_with_infinity_and_nan() {
    let table = SnrTable {
        entries: vec![
            SnrEntry {
                name: "model.layers.0.input_layernorm".into(),
                module_type: "input_layernorm".into(),
                snr: f64::INFINITY,
            },
            SnrEntry {
                name: "model.layers.0.mlp.up_proj".into(),
                module_type: "mlp.up_proj".into(),
                snr: f64::NAN,
            },
            SnrEntry {
                name: "model.layers.1.mlp.up_proj".into(),
                module_type: "mlp.up_proj".into(),
                snr: 1.25e-5,
            },
        ],
    };
    let json = table.to_json();
    assert!(
        json.contains("\"snr\": Infinity")
            && json.contains("\"snr\": NaN")
            && json.contains("1.25e-05")
    );
    let back = SnrTable::parse(&json).unwrap();
    assert_eq!(back.entries.len(), 3);
    for (a, b) in back.entries.iter().zip(&table.entries) {
        assert_eq!((&a.name, &a.module_type), (&b.name, &b.module_type));
        assert!(close(a.snr, b.snr, 0.0));
    }
    // The sorted form reads back to the same selection.
    let sorted = SnrTable::parse(&table.to_sorted_json()).unwrap();
    assert_eq!(
        Selection::top_percent(&sorted, 50).unwrap().to_yaml(),
        Selection::top_percent(&table, 50).unwrap().to_yaml()
    );
}

#[test]
fn sorted_form_gives_the_same_selection_as_plain_form() {
    for name in PUBLISHED.iter().filter(|n| !n.contains("3.1")) {
        let plain = SnrTable::read(&published(name)).unwrap();
        let sorted = SnrTable::parse(&plain.to_sorted_json()).unwrap();
        for pct in [25, 50] {
            assert_eq!(
                Selection::top_percent(&sorted, pct).unwrap().to_yaml(),
                Selection::top_percent(&plain, pct).unwrap().to_yaml(),
                "{name}"
            );
        }
    }
}

#[test]
fn not_a_table_is_a_clear_error() {
    for text in [
        "[1, 2]",
        "{}",
        r#"{"a": {"snr": "x", "type": "t"}}"#,
        r#"{"a": 3}"#,
        "{oops",
    ] {
        assert!(SnrTable::parse(text).is_err(), "{text}");
    }
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("t.json");
    std::fs::write(
        &path,
        r#"{"a": {"snr": 1.0, "type": "t"}, "b": {"c": 1.0}}"#,
    )
    .unwrap();
    assert!(
        matches!(SnrTable::read(&path), Err(Error::InvalidSnrTable { reason, .. }) if reason.contains("mixes"))
    );
}

#[test]
fn percent_above_100_is_an_error() {
    let table = SnrTable::read(&published(PUBLISHED[0])).unwrap();
    assert!(matches!(
        Selection::top_percent(&table, 101),
        Err(Error::InvalidPercent(101))
    ));
}

#[test]
fn patterns_match_like_axolotl() {
    let p = UnfrozenPattern::new("model.layers.1.mlp.down_proj").unwrap();
    assert!(p.matches("model.layers.1.mlp.down_proj.weight"));
    assert!(p.matches("model.layers.1.mlp.down_proj.bias"));
    assert!(!p.matches("model.layers.10.mlp.down_proj.weight"));
    assert!(
        !p.matches("xmodel.layers.1.mlp.down_proj.weight"),
        "anchored at the start"
    );
    assert!(
        !p.matches("model_layers_1_mlp_down_proj"),
        "dots are literal"
    );
    let exact = UnfrozenPattern::new("^lm_head.weight$").unwrap();
    assert!(exact.matches("lm_head.weight") && !exact.matches("lm_head.weight2"));
    let any = UnfrozenPattern::new("model.layers.[0-9]+.self_attn.*").unwrap();
    assert!(any.matches("model.layers.12.self_attn.q_proj.weight"));
    assert!(UnfrozenPattern::new("model.embed_tokens.weight[:32000]").is_err());
    assert!(UnfrozenPattern::new("model.(unclosed").is_err());
}

#[test]
fn yaml_round_trip_and_axolotl_config() {
    let table = SnrTable::read(&published("snr_results_mistralai-Mistral-7B-v0.1.json")).unwrap();
    let selection = Selection::top_percent(&table, 25).unwrap();
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("sel.yaml");
    std::fs::write(&path, selection.to_yaml()).unwrap();
    let back = Selection::read_yaml(&path).unwrap();
    let raw = |s: &Selection| {
        s.patterns()
            .map(|p| p.as_str().to_owned())
            .collect::<Vec<_>>()
    };
    assert_eq!(raw(&back), raw(&selection));
    assert_eq!(raw(&back).len(), 2 + 7 * 8, "7 types x 25% of 32 layers");
    // A whole axolotl config with the list inside it.
    let config = format!(
        "base_model: x\nlearning_rate: 0.0002\n{}\nmicro_batch_size: 2\n",
        selection.to_yaml()
    );
    std::fs::write(&path, config).unwrap();
    assert_eq!(raw(&Selection::read_yaml(&path).unwrap()), raw(&selection));
    std::fs::write(&path, "base_model: x\n").unwrap();
    assert!(matches!(
        Selection::read_yaml(&path),
        Err(Error::InvalidSelection { .. })
    ));
}
