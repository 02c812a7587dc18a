//! Scans of checkpoints on disk and of Burn module trees, against spectrum.py's tables for
//! the same weights (fixtures from `scripts/make_fixtures.py`).

mod common;

use std::path::Path;

use burn::backend::Flex;
use burn::module::{Module, Param};
use burn::nn::{Embedding, EmbeddingConfig, Linear, LinearConfig};
use burn::tensor::{Tensor, TensorData, backend::Backend};
use burn_spectrum::Error;
use burn_spectrum::spectrum::{ScanReport, SnrTable, SpectrumSelector, Threshold};
use common::{close, fixture};

fn scan(path: &Path, threshold: Threshold) -> ScanReport {
    SpectrumSelector::new(threshold)
        .scan_safetensors(path)
        .unwrap()
}

fn assert_matches_table(report: &ScanReport, expected: &str, rel: f64) {
    let want = SnrTable::read(&fixture(expected)).unwrap();
    let got = report.table();
    let names = |t: &SnrTable| {
        t.entries
            .iter()
            .map(|e| (e.name.clone(), e.module_type.clone()))
            .collect::<Vec<_>>()
    };
    assert_eq!(
        names(&got),
        names(&want),
        "same modules, types and order as spectrum.py"
    );
    for (g, w) in got.entries.iter().zip(&want.entries) {
        assert!(
            close(g.snr, w.snr, rel),
            "{}: {} vs {}",
            g.name,
            g.snr,
            w.snr
        );
    }
}

#[test]
fn f32_checkpoint_matches_spectrum_py_both_thresholds() {
    let folder = fixture("tiny_llama");
    assert_matches_table(
        &scan(&folder, Threshold::Spectrum),
        "tiny_expected_f32_spectrum.json",
        2e-5,
    );
    assert_matches_table(
        &scan(&folder, Threshold::Legacy),
        "tiny_expected_f32_legacy.json",
        2e-5,
    );
}

#[test]
fn f16_and_bf16_checkpoints_match_spectrum_py() {
    for dtype in ["f16", "bf16"] {
        let report = scan(
            &fixture(&format!("tiny_{dtype}.safetensors")),
            Threshold::Spectrum,
        );
        assert_matches_table(
            &report,
            &format!("tiny_expected_{dtype}_spectrum.json"),
            2e-5,
        );
    }
}

#[test]
fn sharded_checkpoint_equals_single_file() {
    let single = scan(
        &fixture("tiny_llama/model.safetensors"),
        Threshold::Spectrum,
    );
    let sharded = scan(&fixture("tiny_sharded"), Threshold::Spectrum);
    assert_eq!(single.modules, sharded.modules);
}

#[test]
fn report_has_shape_threshold_and_signal_count() {
    let report = scan(&fixture("tiny_llama"), Threshold::Spectrum);
    let down = report
        .modules
        .iter()
        .find(|m| m.name == "model.layers.0.mlp.down_proj")
        .unwrap();
    assert_eq!(down.shape, vec![16, 40]);
    assert_eq!(down.module_type, "mlp.down_proj");
    assert_eq!(down.rank, 16);
    assert!(down.score.signal_count > 0 && down.score.signal_count <= 16);
    assert!(down.score.largest > down.score.noise_threshold);
    assert!(
        report
            .modules
            .iter()
            .all(|m| !m.param_name.ends_with(".bias"))
    );
}

#[test]
fn types_filter_keeps_only_those_types() {
    let report = SpectrumSelector::new(Threshold::Spectrum)
        .with_types(vec!["mlp.down_proj".into(), "model.norm".into()])
        .scan_safetensors(&fixture("tiny_llama"))
        .unwrap();
    let names: Vec<&str> = report.modules.iter().map(|m| m.name.as_str()).collect();
    assert_eq!(names.len(), 3, "{names:?}");
    let unknown = SpectrumSelector::new(Threshold::Spectrum)
        .with_types(vec!["mlp.nope".into()])
        .scan_safetensors(&fixture("tiny_llama"));
    assert!(
        matches!(unknown, Err(Error::NothingToScan(m)) if m.contains("mlp.nope") && m.contains("mlp.down_proj"))
    );
}

// ---- The same weights as a Burn module tree with Hugging Face field names. ----

#[derive(Module, Debug)]
struct Norm<B: Backend> {
    weight: Param<Tensor<B, 1>>,
}

#[derive(Module, Debug)]
struct Attention<B: Backend> {
    q_proj: Linear<B>,
    k_proj: Linear<B>,
    v_proj: Linear<B>,
    o_proj: Linear<B>,
}

#[derive(Module, Debug)]
struct Mlp<B: Backend> {
    gate_proj: Linear<B>,
    up_proj: Linear<B>,
    down_proj: Linear<B>,
}

#[derive(Module, Debug)]
struct Layer<B: Backend> {
    input_layernorm: Norm<B>,
    self_attn: Attention<B>,
    post_attention_layernorm: Norm<B>,
    mlp: Mlp<B>,
}

#[derive(Module, Debug)]
struct Model<B: Backend> {
    embed_tokens: Embedding<B>,
    layers: Vec<Layer<B>>,
    norm: Norm<B>,
}

#[derive(Module, Debug)]
struct CausalLm<B: Backend> {
    model: Model<B>,
    lm_head: Linear<B>,
}

type B = Flex;

/// The bytes of an f32 safetensors file, read with the `safetensors` crate itself.
struct Weights(Vec<u8>);

impl Weights {
    fn get(&self, name: &str) -> (Vec<f32>, Vec<usize>) {
        let file = safetensors::SafeTensors::deserialize(&self.0).unwrap();
        let t = file.tensor(name).unwrap();
        assert_eq!(t.dtype(), safetensors::Dtype::F32);
        let values = t.data().chunks_exact(4);
        let values = values.map(|b| f32::from_le_bytes(b.try_into().unwrap()));
        (values.collect(), t.shape().to_vec())
    }

    /// A Linear from an HF `[out, in]` weight (Burn stores `[in, out]`).
    fn linear(&self, name: &str) -> Linear<B> {
        let (data, shape) = self.get(&format!("{name}.weight"));
        let (out, inp) = (shape[0], shape[1]);
        let transposed: Vec<f32> = (0..inp)
            .flat_map(|i| (0..out).map(move |o| (o, i)))
            .map(|(o, i)| data[o * inp + i])
            .collect();
        let mut linear = LinearConfig::new(inp, out)
            .with_bias(false)
            .init(&Default::default());
        linear.weight = Param::from_tensor(Tensor::from_data(
            TensorData::new(transposed, [inp, out]),
            &Default::default(),
        ));
        linear
    }

    fn norm(&self, name: &str) -> Norm<B> {
        let (data, shape) = self.get(&format!("{name}.weight"));
        Norm {
            weight: Param::from_tensor(Tensor::from_data(
                TensorData::new(data, shape),
                &Default::default(),
            )),
        }
    }

    fn model(&self) -> CausalLm<B> {
        let (embed, shape) = self.get("model.embed_tokens.weight");
        let mut embed_tokens = EmbeddingConfig::new(shape[0], shape[1]).init(&Default::default());
        embed_tokens.weight = Param::from_tensor(Tensor::from_data(
            TensorData::new(embed, shape),
            &Default::default(),
        ));
        let layer = |i: usize| {
            let p = format!("model.layers.{i}");
            Layer {
                input_layernorm: self.norm(&format!("{p}.input_layernorm")),
                self_attn: Attention {
                    q_proj: self.linear(&format!("{p}.self_attn.q_proj")),
                    k_proj: self.linear(&format!("{p}.self_attn.k_proj")),
                    v_proj: self.linear(&format!("{p}.self_attn.v_proj")),
                    o_proj: self.linear(&format!("{p}.self_attn.o_proj")),
                },
                post_attention_layernorm: self.norm(&format!("{p}.post_attention_layernorm")),
                mlp: Mlp {
                    gate_proj: self.linear(&format!("{p}.mlp.gate_proj")),
                    up_proj: self.linear(&format!("{p}.mlp.up_proj")),
                    down_proj: self.linear(&format!("{p}.mlp.down_proj")),
                },
            }
        };
        CausalLm {
            model: Model {
                embed_tokens,
                layers: vec![layer(0), layer(1)],
                norm: self.norm("model.norm"),
            },
            lm_head: self.linear("lm_head"),
        }
    }
}

fn tiny_module() -> CausalLm<B> {
    Weights(std::fs::read(fixture("tiny_llama/model.safetensors")).unwrap()).model()
}

/// A Burn Linear holds a weight transposed (`[in, out]`), so a square weight's Gram matrix is
/// `W^T W` from the module and `W W^T` from the checkpoint; made from f32 partial products,
/// the two round differently. Names, signal counts and selections are the same both ways, and
/// the scores within 1e-6 relative.
#[test]
fn module_scan_names_params_by_path_and_equals_checkpoint_scan() {
    let module = tiny_module();
    for threshold in [Threshold::Spectrum, Threshold::Legacy, Threshold::Mp] {
        let from_module = SpectrumSelector::new(threshold)
            .scan_module(&module)
            .unwrap();
        let from_disk = scan(&fixture("tiny_llama"), threshold);
        let sorted = |report: &ScanReport| {
            let mut modules = report.modules.clone();
            modules.sort_by(|a, b| a.name.cmp(&b.name));
            modules
        };
        let (burn, disk) = (sorted(&from_module), sorted(&from_disk));
        let names = |m: &[burn_spectrum::spectrum::ModuleSnr]| {
            m.iter().map(|m| m.name.clone()).collect::<Vec<_>>()
        };
        assert_eq!(names(&burn), names(&disk), "{threshold:?}: the same names");
        for (b, d) in burn.iter().zip(&disk) {
            let (b, d) = (b.score, d.score);
            assert_eq!(b.signal_count, d.signal_count, "{threshold:?} {b:?} {d:?}");
            for (x, y) in [
                (b.snr, d.snr),
                (b.largest, d.largest),
                (b.noise_threshold, d.noise_threshold),
            ] {
                assert!(close(x as f64, y as f64, 1e-6), "{threshold:?} {b:?} {d:?}");
            }
        }
        for percent in [10, 25, 50, 75] {
            assert_eq!(
                from_module.select(percent).unwrap().to_yaml(),
                from_disk.select(percent).unwrap().to_yaml(),
                "{threshold:?}: the same top {percent}%"
            );
        }
    }
}

#[test]
fn selection_gives_the_param_ids_to_train() {
    let module = tiny_module();
    let report = SpectrumSelector::new(Threshold::Spectrum)
        .scan_module(&module)
        .unwrap();
    let selection = report.select(50).unwrap();
    let ids = selection.param_ids(&module);
    let q0 = module.model.layers[0].self_attn.q_proj.weight.id;
    let q1 = module.model.layers[1].self_attn.q_proj.weight.id;
    let q_selected = [
        "model.layers.0.self_attn.q_proj.weight",
        "model.layers.1.self_attn.q_proj.weight",
    ]
    .map(|n| selection.is_selected(n));
    assert_eq!(
        q_selected.iter().filter(|s| **s).count(),
        1,
        "50% of 2 layers is 1"
    );
    assert_eq!(ids.contains(&q0), q_selected[0]);
    assert_eq!(ids.contains(&q1), q_selected[1]);
    assert!(ids.contains(&module.lm_head.weight.id));
    assert!(ids.contains(&module.model.embed_tokens.weight.id));
    // 12 types x 2 layers at 50% is one per layered type (9), plus norm 0 of 1 ... :
    // lm_head, embed_tokens (always) + 9 layered types x 1; `model.norm` keeps floor(0.5) = 0.
    assert_eq!(ids.len(), 2 + 9);
}

// ---- Bad input. ----

fn scan_err(path: &Path) -> Error {
    SpectrumSelector::new(Threshold::Spectrum)
        .scan_safetensors(path)
        .unwrap_err()
}

#[test]
fn missing_path_and_empty_folder_are_clear_errors() {
    let dir = tempfile::tempdir().unwrap();
    assert!(matches!(
        scan_err(&dir.path().join("nope")),
        Error::NotFound(_)
    ));
    assert!(matches!(scan_err(dir.path()), Error::NoSafetensors(_)));
}

#[test]
fn truncated_and_corrupt_files_are_clear_errors() {
    let bytes = std::fs::read(fixture("tiny_llama/model.safetensors")).unwrap();
    let dir = tempfile::tempdir().unwrap();
    for (name, contents) in [
        ("truncated.safetensors", bytes[..bytes.len() - 100].to_vec()),
        ("header_only.safetensors", bytes[..50].to_vec()),
        (
            "garbage.safetensors",
            b"this is not a safetensors file at all".to_vec(),
        ),
        ("huge_header.safetensors", u64::MAX.to_le_bytes().to_vec()),
    ] {
        let path = dir.path().join(name);
        std::fs::write(&path, contents).unwrap();
        let err = scan_err(&path);
        assert!(
            matches!(err, Error::InvalidSafetensors { .. }),
            "{name}: {err}"
        );
    }
}

fn write_safetensors(path: &Path, tensors: &[(&str, safetensors::Dtype, Vec<usize>, Vec<u8>)]) {
    let views: Vec<(String, safetensors::tensor::TensorView)> = tensors
        .iter()
        .map(|(n, d, s, b)| {
            (
                n.to_string(),
                safetensors::tensor::TensorView::new(*d, s.clone(), b).unwrap(),
            )
        })
        .collect();
    safetensors::serialize_to_file(views, None, path).unwrap();
}

#[test]
fn unsupported_dtype_is_named() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("int.safetensors");
    write_safetensors(
        &path,
        &[(
            "layer.0.w.weight",
            safetensors::Dtype::I32,
            vec![2, 2],
            vec![0; 16],
        )],
    );
    let err = scan_err(&path);
    assert!(
        matches!(&err, Error::UnsupportedDtype { tensor, .. } if tensor == "layer.0.w.weight"),
        "{err}"
    );
}

#[test]
fn nan_weight_gives_nan_snr_and_a_warning() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("nan.safetensors");
    let mut values = [0.5f32; 16];
    values[3] = f32::NAN;
    let good: Vec<u8> = (0..16).flat_map(|i| (i as f32).to_le_bytes()).collect();
    let bad: Vec<u8> = values.iter().flat_map(|v| v.to_le_bytes()).collect();
    write_safetensors(
        &path,
        &[
            (
                "model.layers.0.mlp.up_proj.weight",
                safetensors::Dtype::F32,
                vec![4, 4],
                bad,
            ),
            (
                "model.layers.1.mlp.up_proj.weight",
                safetensors::Dtype::F32,
                vec![4, 4],
                good,
            ),
        ],
    );
    let report = scan(&path, Threshold::Spectrum);
    assert!(report.modules[0].score.snr.is_nan());
    assert!(report.modules[1].score.snr.is_finite());
    assert_eq!(report.warnings.len(), 1);
    assert!(report.warnings[0].contains("model.layers.0.mlp.up_proj"));
    // NaN sorts last: the finite one is selected at 50%.
    let selection = report.select(50).unwrap();
    assert!(selection.is_selected("model.layers.1.mlp.up_proj.weight"));
    assert!(!selection.is_selected("model.layers.0.mlp.up_proj.weight"));
}

#[test]
fn empty_weight_gives_nan_snr_and_a_warning() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("empty.safetensors");
    write_safetensors(
        &path,
        &[(
            "model.layers.0.mlp.up_proj.weight",
            safetensors::Dtype::F32,
            vec![0, 4],
            vec![],
        )],
    );
    let report = scan(&path, Threshold::Spectrum);
    assert!(report.modules[0].score.snr.is_nan());
    assert!(
        report.warnings[0].contains("no elements"),
        "{:?}",
        report.warnings
    );
}

#[test]
fn broken_shard_index_is_a_clear_error() {
    let dir = tempfile::tempdir().unwrap();
    let index = dir.path().join("model.safetensors.index.json");
    std::fs::write(
        &index,
        r#"{"weight_map": {"a.weight": "model-00001-of-00002.safetensors"}}"#,
    )
    .unwrap();
    assert!(
        matches!(scan_err(dir.path()), Error::InvalidIndex { reason, .. } if reason.contains("missing"))
    );
    std::fs::write(&index, "{not json").unwrap();
    assert!(matches!(scan_err(dir.path()), Error::InvalidIndex { .. }));
}
