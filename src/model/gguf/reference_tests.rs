//! GGUF import against fixtures made by gguf-py (scripts/make_gguf_fixtures.py): block
//! dequantization bit for bit, a tiny Llama imported exactly, its config and tokenizer, and
//! broken files giving errors.

use std::fs;
use std::path::{Path, PathBuf};

use super::config::hf_config;
use super::tokenizer::{hf_tokenizer, hf_tokenizer_config};
use super::{OutDtype, import_gguf};
use crate::error::GgufError;
use crate::io::gguf::{GgmlType, GgufFile, dequantize};
use safetensors::{Dtype, SafeTensors};
use serde_json::Value;

/// Where scripts/make_gguf_fixtures.py writes.
const FIXTURES: &str = concat!(env!("CARGO_MANIFEST_DIR"), "/tests/fixtures/gguf");

fn fixture(name: &str) -> PathBuf {
    Path::new(FIXTURES).join(name)
}

/// Little-endian f32 values of a safetensors F32 tensor.
fn f32_values(st: &SafeTensors, name: &str) -> Vec<f32> {
    let view = st.tensor(name).unwrap_or_else(|e| panic!("{name}: {e:?}"));
    assert_eq!(view.dtype(), Dtype::F32, "{name}");
    view.data()
        .chunks_exact(4)
        .map(|c| f32::from_le_bytes([c[0], c[1], c[2], c[3]]))
        .collect()
}

fn read_json(path: &Path) -> Value {
    serde_json::from_slice(&fs::read(path).unwrap()).unwrap()
}

#[test]
fn every_block_type_dequantizes_like_gguf_py() {
    let bytes = fs::read(fixture("blocks.safetensors")).unwrap();
    let st = SafeTensors::deserialize(&bytes).unwrap();
    let types = [
        GgmlType::F16,
        GgmlType::BF16,
        GgmlType::Q8_0,
        GgmlType::Q4_0,
        GgmlType::Q4_1,
        GgmlType::Q4_K,
        GgmlType::Q6_K,
    ];
    for ty in types {
        let raw = st.tensor(&format!("{}.bytes", ty.name())).unwrap();
        let expected = f32_values(&st, &format!("{}.expected", ty.name()));
        let got = dequantize(ty, raw.data(), expected.len()).unwrap();
        assert!(
            expected.len() >= 4 * ty.block_size(),
            "{}: too few values",
            ty.name()
        );
        for (i, (g, e)) in got.iter().zip(&expected).enumerate() {
            assert_eq!(
                g.to_bits(),
                e.to_bits(),
                "{} value {i}: {g} != {e}",
                ty.name()
            );
        }
    }
}

/// Import the tiny Llama fixture into a fresh folder (nested, to check it is created).
fn import_tiny(dtype: OutDtype) -> (tempfile::TempDir, PathBuf) {
    let dir = tempfile::tempdir().unwrap();
    let out = dir.path().join("nested").join("tiny");
    import_gguf(&fixture("tiny_llama.gguf"), &out, dtype, |_, _| {}).unwrap();
    (dir, out)
}

#[test]
fn tiny_llama_imports_exactly() {
    let dir = tempfile::tempdir().unwrap();
    let out = dir.path().join("tiny");
    let calls = std::cell::RefCell::new(Vec::new());
    let summary = import_gguf(
        &fixture("tiny_llama.gguf"),
        &out,
        OutDtype::F32,
        |done, total| calls.borrow_mut().push((done, total)),
    )
    .unwrap();
    let calls = calls.into_inner();
    assert_eq!(calls.last(), Some(&(22, 22)));
    assert_eq!(calls.len(), 22);

    let expected_doc = read_json(&fixture("tiny_llama_expected.json"));
    let skipped: Vec<&str> = expected_doc["skipped"]
        .as_array()
        .unwrap()
        .iter()
        .map(|v| v.as_str().unwrap())
        .collect();
    assert_eq!(summary.skipped, skipped);
    assert!(summary.warnings.iter().any(|w| w.contains("rope_freqs")));

    let mut files: Vec<String> = fs::read_dir(&out)
        .unwrap()
        .map(|e| e.unwrap().file_name().into_string().unwrap())
        .collect();
    files.sort();
    assert_eq!(
        files,
        [
            "config.json",
            "generation_config.json",
            "model.safetensors",
            "tokenizer.json",
            "tokenizer_config.json"
        ]
    );

    let expected_bytes = fs::read(fixture("tiny_llama_expected.safetensors")).unwrap();
    let expected = SafeTensors::deserialize(&expected_bytes).unwrap();
    let got_bytes = fs::read(out.join("model.safetensors")).unwrap();
    let got = SafeTensors::deserialize(&got_bytes).unwrap();
    let mut names: Vec<&str> = expected.names();
    names.sort();
    assert_eq!(summary.tensors, names);
    let mut got_names = got.names();
    got_names.sort();
    assert_eq!(got_names, names);
    for name in names {
        assert_eq!(
            got.tensor(name).unwrap().shape(),
            expected.tensor(name).unwrap().shape(),
            "{name}"
        );
        let (g, e) = (f32_values(&got, name), f32_values(&expected, name));
        let mismatch = g
            .iter()
            .zip(&e)
            .position(|(g, e)| g.to_bits() != e.to_bits());
        assert_eq!(mismatch, None, "{name}: first differing value");
    }
    let n_params: usize = got
        .tensors()
        .iter()
        .map(|(_, t)| t.shape().iter().product::<usize>())
        .sum();
    assert_eq!(summary.n_params, n_params as u64);
}

#[test]
fn tiny_llama_config_has_the_expected_values() {
    let (_dir, out) = import_tiny(OutDtype::F32);
    let config = read_json(&out.join("config.json"));
    let expected = read_json(&fixture("tiny_llama_expected.json"));
    for (key, want) in expected["config"].as_object().unwrap() {
        let got = &config[key];
        match (got.as_f64(), want.as_f64()) {
            (Some(g), Some(w)) => assert_eq!(g, w, "{key}"),
            _ => assert_eq!(got, want, "{key}"),
        }
    }
}

#[test]
fn tiny_llama_tokenizer_is_rebuilt() {
    let (_dir, out) = import_tiny(OutDtype::F32);
    let expected = &read_json(&fixture("tiny_llama_expected.json"))["tokenizer"];
    let tokenizer = read_json(&out.join("tokenizer.json"));
    let model = &tokenizer["model"];
    assert_eq!(model["type"], "BPE");
    assert_eq!(model["byte_fallback"], false);
    assert_eq!(model["ignore_merges"], false);
    let vocab = model["vocab"].as_object().unwrap();
    let want_vocab = expected["vocab"].as_array().unwrap();
    assert_eq!(vocab.len(), want_vocab.len());
    for (id, ((token, got_id), want)) in vocab.iter().zip(want_vocab).enumerate() {
        assert_eq!(token, want.as_str().unwrap());
        assert_eq!(got_id.as_u64(), Some(id as u64), "{token}");
    }
    assert_eq!(model["merges"], expected["merges"]);
    let added: Vec<Value> = tokenizer["added_tokens"]
        .as_array()
        .unwrap()
        .iter()
        .map(|t| serde_json::json!([t["id"], t["content"], t["special"]]))
        .collect();
    assert_eq!(Value::Array(added), expected["added_tokens"]);
    let pre = &tokenizer["pre_tokenizer"];
    assert_eq!(pre["type"], "Sequence");
    assert_eq!(pre["pretokenizers"][0]["type"], "Digits");
    assert_eq!(pre["pretokenizers"][0]["individual_digits"], true);
    assert_eq!(pre["pretokenizers"][1]["type"], "ByteLevel");
    assert_eq!(pre["pretokenizers"][1]["add_prefix_space"], false);
    assert_eq!(tokenizer["decoder"]["type"], "ByteLevel");
    assert_eq!(tokenizer["post_processor"]["type"], "ByteLevel");

    let config = read_json(&out.join("tokenizer_config.json"));
    assert_eq!(config["tokenizer_class"], "GPT2Tokenizer");
    assert_eq!(config["bos_token"], "<|im_start|>");
    assert_eq!(config["eos_token"], "<|im_end|>");
    assert_eq!(config["pad_token"], "<|im_end|>");
    assert_eq!(config["unk_token"], "<|endoftext|>");
    assert_eq!(config["add_bos_token"], false);
    assert_eq!(config["model_max_length"], 256);
    assert!(
        config["chat_template"]
            .as_str()
            .unwrap()
            .contains("<|im_start|>")
    );
    assert_eq!(config["added_tokens_decoder"]["2"]["content"], "<|im_end|>");
    assert_eq!(config["added_tokens_decoder"]["269"]["special"], false);

    let generation = read_json(&out.join("generation_config.json"));
    assert_eq!(generation["bos_token_id"], 1);
    assert_eq!(generation["eos_token_id"], 2);
}

#[test]
fn half_dtypes_round_the_f32_values() {
    let expected_bytes = fs::read(fixture("tiny_llama_expected.safetensors")).unwrap();
    let expected = SafeTensors::deserialize(&expected_bytes).unwrap();
    for (dtype, st_dtype, torch, rel) in [
        (OutDtype::F16, Dtype::F16, "float16", 2f32.powi(-11)),
        (OutDtype::Bf16, Dtype::BF16, "bfloat16", 2f32.powi(-8)),
    ] {
        let (_dir, out) = import_tiny(dtype);
        assert_eq!(read_json(&out.join("config.json"))["torch_dtype"], torch);
        let bytes = fs::read(out.join("model.safetensors")).unwrap();
        let got = SafeTensors::deserialize(&bytes).unwrap();
        for (name, view) in got.tensors() {
            assert_eq!(view.dtype(), st_dtype, "{name}");
            let want = f32_values(&expected, &name);
            let values = view.data().chunks_exact(2).map(|c| {
                let bits = u16::from_le_bytes([c[0], c[1]]);
                match dtype {
                    OutDtype::F16 => half::f16::from_bits(bits).to_f32(),
                    _ => half::bf16::from_bits(bits).to_f32(),
                }
            });
            for (g, w) in values.zip(want) {
                // Round to nearest: at most half a unit in the last place (f16 subnormals
                // aside, hence the absolute floor).
                assert!((g - w).abs() <= w.abs() * rel + 1e-7, "{name}: {g} vs {w}");
            }
        }
    }
}

/// A copy of tiny_llama.gguf changed by `edit`, in a temporary folder.
fn patched(edit: impl FnOnce(&mut Vec<u8>)) -> (tempfile::TempDir, PathBuf) {
    let mut bytes = fs::read(fixture("tiny_llama.gguf")).unwrap();
    edit(&mut bytes);
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("patched.gguf");
    fs::write(&path, bytes).unwrap();
    (dir, path)
}

/// Position of the GGUF string `s` (u64 length, then bytes) in `bytes`; returns the position
/// just after it.
fn after_gguf_string(bytes: &[u8], s: &str) -> usize {
    let mut needle = (s.len() as u64).to_le_bytes().to_vec();
    needle.extend(s.as_bytes());
    let at = bytes
        .windows(needle.len())
        .position(|w| w == needle.as_slice())
        .unwrap_or_else(|| panic!("`{s}` not in the fixture"));
    at + needle.len()
}

/// Byte offset of the ggml type field of tensor `name`'s info.
fn tensor_type_field(bytes: &[u8], name: &str) -> usize {
    let at = after_gguf_string(bytes, name);
    let n_dims = u32::from_le_bytes(bytes[at..at + 4].try_into().unwrap()) as usize;
    at + 4 + 8 * n_dims
}

fn import_err(path: &Path) -> GgufError {
    let out = path.with_extension("out");
    import_gguf(path, &out, OutDtype::F32, |_, _| {}).unwrap_err()
}

#[test]
fn bad_magic_is_an_error() {
    let (_dir, path) = patched(|b| b[0..4].copy_from_slice(b"GGML"));
    assert!(matches!(
        GgufFile::open(&path),
        Err(GgufError::BadMagic { .. })
    ));
    assert!(matches!(import_err(&path), GgufError::BadMagic { .. }));
}

#[test]
fn every_truncation_is_an_error() {
    let full = fs::read(fixture("tiny_llama.gguf")).unwrap();
    let data_offset = GgufFile::open(fixture("tiny_llama.gguf"))
        .unwrap()
        .data_offset() as usize;
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("cut.gguf");
    // Fine steps through the header, metadata and tensor infos; coarse ones through the data.
    let cuts = (0..data_offset)
        .step_by(7)
        .chain((data_offset..full.len()).step_by(1009))
        .chain([data_offset - 1, full.len() - 1]);
    for cut in cuts {
        fs::write(&path, &full[..cut]).unwrap();
        match GgufFile::open(&path) {
            Err(GgufError::Truncated { .. } | GgufError::Absurd { .. }) => {}
            Err(other) => panic!("cut at {cut}: unexpected error {other}"),
            Ok(_) => panic!("cut at {cut}: opened"),
        }
    }
}

#[test]
fn absurd_counts_are_errors() {
    for (range, value) in [(8..16, u64::MAX), (8..16, 1 << 40), (16..24, u64::MAX / 3)] {
        let (_dir, path) = patched(|b| b[range.clone()].copy_from_slice(&value.to_le_bytes()));
        let err = GgufFile::open(&path).unwrap_err();
        assert!(matches!(err, GgufError::Absurd { .. }), "{err}");
    }
    // A tensor dimension far larger than the file.
    let (_dir, path) = patched(|b| {
        let at = tensor_type_field(b, "blk.0.attn_v.weight") - 8;
        b[at..at + 8].copy_from_slice(&(1u64 << 50).to_le_bytes());
    });
    let err = GgufFile::open(&path).unwrap_err();
    assert!(
        matches!(err, GgufError::Absurd { .. } | GgufError::Truncated { .. }),
        "{err}"
    );
}

#[test]
fn unknown_tensor_type_is_named() {
    for (id, name) in [(13u32, "Q5_K"), (99, "unknown")] {
        let (_dir, path) = patched(|b| {
            let at = tensor_type_field(b, "blk.0.attn_v.weight");
            assert_eq!(b[at..at + 4], 1u32.to_le_bytes()); // F16 in the fixture
            b[at..at + 4].copy_from_slice(&id.to_le_bytes());
        });
        let err = import_err(&path);
        let message = err.to_string();
        assert!(
            matches!(&err, GgufError::UnknownTensorType { type_id, .. } if *type_id == id),
            "{message}"
        );
        assert!(
            message.contains(name) && message.contains("blk.0.attn_v.weight"),
            "{message}"
        );
        assert!(message.contains(&format!("id {id}")), "{message}");
    }
}

#[test]
fn other_architectures_and_pre_tokenizers_are_refused() {
    let (_dir, path) = patched(|b| {
        let at = after_gguf_string(b, "general.architecture") + 4 + 8;
        b[at..at + 5].copy_from_slice(b"gemma");
    });
    assert!(
        matches!(import_err(&path), GgufError::UnsupportedArchitecture { arch, .. } if arch == "gemma")
    );
    let (_dir, path) = patched(|b| {
        let at = after_gguf_string(b, "tokenizer.ggml.pre") + 4 + 8;
        b[at..at + 6].copy_from_slice(b"falcon");
    });
    let message = import_err(&path).to_string();
    assert!(
        message.contains("`falcon`") && message.contains("smollm"),
        "{message}"
    );
    assert!(
        !path.with_extension("out").exists(),
        "nothing written before the check"
    );
}

#[test]
fn corrupted_headers_never_panic() {
    let full = fs::read(fixture("tiny_llama.gguf")).unwrap();
    let data_offset = GgufFile::open(fixture("tiny_llama.gguf"))
        .unwrap()
        .data_offset() as usize;
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("corrupt.gguf");
    let mut state = 0x9E37_79B9_7F4A_7C15u64;
    let mut next = move || {
        // xorshift64: a fixed, dependency-free pseudo-random sequence.
        state ^= state << 13;
        state ^= state >> 7;
        state ^= state << 17;
        state
    };
    for _ in 0..300 {
        let mut bytes = full.clone();
        for _ in 0..1 + next() % 4 {
            let at = (next() % data_offset as u64) as usize;
            bytes[at] = next() as u8;
        }
        fs::write(&path, &bytes).unwrap();
        if let Ok(gguf) = GgufFile::open(&path) {
            for info in gguf.tensors() {
                let _ = gguf.tensor_f32(info);
            }
            let _ = hf_config(&gguf, OutDtype::F32);
            let _ = hf_tokenizer(&gguf);
            let _ = hf_tokenizer_config(&gguf);
        }
    }
}
