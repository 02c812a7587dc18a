//! The `spectrum` binary: files, names and errors.

mod common;

use std::path::Path;
use std::process::{Command, Output};

use burn_spectrum::spectrum::SnrTable;
use common::{close, fixture, published};

fn spectrum(args: &[&str], cwd: &Path) -> Output {
    Command::new(env!("CARGO_BIN_EXE_spectrum"))
        .args(args)
        .current_dir(cwd)
        .output()
        .unwrap()
}

fn files_in(dir: &Path) -> Vec<String> {
    let mut names: Vec<String> = match std::fs::read_dir(dir) {
        Ok(entries) => entries
            .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
            .collect(),
        Err(_) => Vec::new(),
    };
    names.sort();
    names
}

#[test]
fn scan_writes_spectrum_py_files() {
    let dir = tempfile::tempdir().unwrap();
    let model = fixture("tiny_llama");
    let out = spectrum(
        &[
            "scan",
            model.to_str().unwrap(),
            "--top-percent",
            "25",
            "--top-percent",
            "50",
            "--model-name",
            "org/tiny_llama",
        ],
        dir.path(),
    );
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(stdout.starts_with("scanned 21 weights in "), "{stdout}");
    let out_dir = dir.path().join("model_snr_results");
    assert_eq!(
        files_in(&out_dir),
        [
            "snr_results_org-tiny-llama.json",
            "snr_results_org-tiny-llama_sorted.json",
            "snr_results_org-tiny-llama_unfrozenparameters_25percent.yaml",
            "snr_results_org-tiny-llama_unfrozenparameters_50percent.yaml",
        ]
    );
    let got = SnrTable::read(&out_dir.join("snr_results_org-tiny-llama.json")).unwrap();
    let want = SnrTable::read(&fixture("tiny_expected_f32_spectrum.json")).unwrap();
    assert_eq!(got.entries.len(), want.entries.len());
    for (g, w) in got.entries.iter().zip(&want.entries) {
        assert_eq!(g.name, w.name);
        assert!(close(g.snr, w.snr, 2e-5), "{}", g.name);
    }
    let yaml = std::fs::read_to_string(
        out_dir.join("snr_results_org-tiny-llama_unfrozenparameters_50percent.yaml"),
    )
    .unwrap();
    assert!(yaml.starts_with("unfrozen_parameters:\n- ^lm_head.weight$\n- ^model.embed_tokens.weight$\n# input_layernorm layers\n"));
}

#[test]
fn scan_slug_from_folder_and_file_names() {
    let dir = tempfile::tempdir().unwrap();
    let out = spectrum(
        &[
            "scan",
            fixture("tiny_llama").to_str().unwrap(),
            "--out-dir",
            "o",
            "--threshold",
            "mp",
        ],
        dir.path(),
    );
    assert!(out.status.success());
    assert!(files_in(&dir.path().join("o")).contains(&"snr_results_tiny-llama.json".to_string()));
    let out = spectrum(
        &[
            "scan",
            fixture("tiny_bf16.safetensors").to_str().unwrap(),
            "--out-dir",
            "p",
            "--types",
            "mlp.up_proj",
        ],
        dir.path(),
    );
    assert!(out.status.success());
    let table = SnrTable::read(&dir.path().join("p/snr_results_tiny-bf16.json")).unwrap();
    assert_eq!(table.entries.len(), 2);
}

#[test]
fn select_from_published_table() {
    let dir = tempfile::tempdir().unwrap();
    let table = published("snr_results_meta-llama-Meta-Llama-3.1-8B-Instruct.json");
    let out = spectrum(
        &["select", table.to_str().unwrap(), "--top-percent", "25"],
        dir.path(),
    );
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let yaml_path = dir.path().join("model_snr_results/snr_results_meta-llama-Meta-Llama-3.1-8B-Instruct_unfrozenparameters_25percent.yaml");
    let yaml = std::fs::read_to_string(yaml_path).unwrap();
    // The sorted table lists each type by SNR already: the first 8 of 32 down_proj entries.
    let want = SnrTable::read(&table).unwrap();
    let down: Vec<&str> = want
        .entries
        .iter()
        .filter(|e| e.module_type == "mlp.down_proj")
        .map(|e| e.name.as_str())
        .take(8)
        .collect();
    let got: Vec<&str> = yaml
        .lines()
        .skip_while(|l| *l != "# mlp.down_proj layers")
        .skip(1)
        .take(8)
        .map(|l| &l[2..])
        .collect();
    assert_eq!(got, down);
}

/// A bad input exits non-zero, says what is wrong, and writes nothing.
fn assert_fails(args: &[&str], message: &str) {
    let dir = tempfile::tempdir().unwrap();
    let out = spectrum(args, dir.path());
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(!out.status.success(), "{args:?} succeeded");
    assert!(stderr.contains(message), "{args:?}: {stderr}");
    assert!(
        files_in(&dir.path().join("model_snr_results")).is_empty(),
        "{args:?} wrote files"
    );
}

#[test]
fn bad_input_fails_cleanly() {
    let empty = tempfile::tempdir().unwrap();
    let truncated = empty.path().join("truncated.safetensors");
    let bytes = std::fs::read(fixture("tiny_llama/model.safetensors")).unwrap();
    std::fs::write(&truncated, &bytes[..bytes.len() / 2]).unwrap();
    let not_table = empty.path().join("config.json");
    std::fs::write(&not_table, r#"{"model_type": "llama", "hidden_size": 576}"#).unwrap();
    let tiny = fixture("tiny_llama");
    assert_fails(&["scan", "/no/such/model"], "no such file or folder");
    assert_fails(
        &["scan", empty.path().join("sub").to_str().unwrap()],
        "no such file or folder",
    );
    assert_fails(
        &["scan", truncated.to_str().unwrap()],
        "not a valid safetensors file",
    );
    assert_fails(
        &["scan", tiny.to_str().unwrap(), "--top-percent", "101"],
        "101",
    );
    assert_fails(
        &["scan", tiny.to_str().unwrap(), "--threshold", "median"],
        "median",
    );
    assert_fails(
        &["select", not_table.to_str().unwrap(), "--top-percent", "25"],
        "not an SNR table",
    );
    assert_fails(
        &["select", published(common::PUBLISHED[0]).to_str().unwrap()],
        "--top-percent",
    );
    let no_safetensors = tempfile::tempdir().unwrap();
    std::fs::write(no_safetensors.path().join("config.json"), "{}").unwrap();
    assert_fails(
        &["scan", no_safetensors.path().to_str().unwrap()],
        "no .safetensors file",
    );
}

#[test]
fn import_gguf_then_generate_end_to_end() {
    let dir = tempfile::tempdir().unwrap();
    let gguf = fixture("gguf/tiny_llama.gguf");
    let model = dir.path().join("tiny");
    let out = spectrum(
        &[
            "import-gguf",
            gguf.to_str().unwrap(),
            model.to_str().unwrap(),
        ],
        dir.path(),
    );
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert_eq!(
        files_in(&model),
        [
            "config.json",
            "generation_config.json",
            "model.safetensors",
            "tokenizer.json",
            "tokenizer_config.json"
        ]
    );

    let sampled = [
        "generate",
        model.to_str().unwrap(),
        "--prompt",
        "hello",
        "--max-new-tokens",
        "5",
        "--temperature",
        "0.8",
        "--seed",
        "3",
        "--format",
        "json",
    ];
    let out = spectrum(&sampled, dir.path());
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let line: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    assert!(!line["prompt_ids"].as_array().unwrap().is_empty());
    let generated = line["generated_ids"].as_array().unwrap();
    assert!(!generated.is_empty() && generated.len() <= 5);
    let top = line["last_logits_top"].as_array().unwrap();
    assert_eq!(top.len(), 20);
    let logits: Vec<f64> = top.iter().map(|p| p[1].as_f64().unwrap()).collect();
    assert!(logits.windows(2).all(|w| w[0] >= w[1]), "{logits:?}");

    // The same seed gives the same tokens.
    let again = spectrum(&sampled, dir.path());
    assert_eq!(out.stdout, again.stdout);
}

#[test]
fn import_gguf_of_a_truncated_file_writes_nothing() {
    let dir = tempfile::tempdir().unwrap();
    let bytes = std::fs::read(fixture("gguf/tiny_llama.gguf")).unwrap();
    let cut = dir.path().join("cut.gguf");
    std::fs::write(&cut, &bytes[..bytes.len() / 2]).unwrap();
    let model = dir.path().join("out");
    let out = spectrum(
        &[
            "import-gguf",
            cut.to_str().unwrap(),
            model.to_str().unwrap(),
        ],
        dir.path(),
    );
    assert_eq!(out.status.code(), Some(1));
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(stderr.contains("cut.gguf"), "{stderr}");
    assert!(files_in(&model).is_empty(), "{:?}", files_in(&model));
}

#[test]
fn generate_without_a_model_is_a_clear_error() {
    let dir = tempfile::tempdir().unwrap();
    let out = spectrum(&["generate", "no_such_model", "--prompt", "hi"], dir.path());
    assert_eq!(out.status.code(), Some(1));
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(stderr.contains("no_such_model"), "{stderr}");
    let bad_p = spectrum(
        &[
            "generate",
            "no_such_model",
            "--prompt",
            "hi",
            "--top-p",
            "0",
        ],
        dir.path(),
    );
    assert_eq!(bad_p.status.code(), Some(1));
    assert!(String::from_utf8_lossy(&bad_p.stderr).contains("top-p 0"));
}

/// `spectrum train` arguments on `model` and `data` into `out`, with `extra`.
fn train_args(model: &Path, data: &Path, out: &Path, extra: &[&str]) -> Vec<String> {
    let mut args: Vec<String> = ["train", model.to_str().unwrap(), "--data"]
        .map(String::from)
        .to_vec();
    args.push(data.to_str().unwrap().into());
    args.extend(["--output-dir".into(), out.to_str().unwrap().into()]);
    args.extend(extra.iter().map(|s| s.to_string()));
    args
}

fn train(args: &[String], cwd: &Path) -> Output {
    let refs: Vec<&str> = args.iter().map(String::as_str).collect();
    spectrum(&refs, cwd)
}

#[test]
fn train_refuses_bad_input_with_exit_code_1_and_writes_nothing() {
    let dir = tempfile::tempdir().unwrap();
    let model = fixture("models/llama_gqa");
    let data = dir.path().join("alpaca.json");
    std::fs::write(
        &data,
        r#"[{"instruction": "Say hi.", "input": "", "output": "Hi."}]"#,
    )
    .unwrap();
    let out = dir.path().join("run");
    let a_file = dir.path().join("a_file");
    std::fs::write(&a_file, "keep me").unwrap();
    let cases: Vec<(Vec<String>, &str)> = vec![
        (
            train_args(
                &dir.path().join("no_model"),
                &data,
                &out,
                &["--method", "lora"],
            ),
            "no_model",
        ),
        (
            train_args(&model, &data, &out, &["--method", "sideways"]),
            "sideways",
        ),
        (
            train_args(
                &model,
                &data,
                &out,
                &["--method", "spectrum", "--top-percent", "0"],
            ),
            "--top-percent 0",
        ),
        (
            train_args(&model, &data, &out, &["--method", "full", "--steps", "0"]),
            "--steps 0",
        ),
        (
            train_args(&model, &data, &out, &["--method", "full", "--devices", "0"]),
            "--devices 0",
        ),
        (
            train_args(&model, &data, &out, &["--method", "full", "--dtype", "f8"]),
            "'f8'",
        ),
        (
            train_args(
                &model,
                &data,
                &out,
                &["--method", "full", "--devices", "3", "--batch-size", "2"],
            ),
            "--batch-size 2",
        ),
        (
            train_args(
                &model,
                &data,
                &out,
                &["--method", "lora", "--loss-chunk", "0"],
            ),
            "--loss-chunk 0",
        ),
        (
            // Activations of 10^10 rows of 256 tokens: refused from the estimate, before
            // anything is loaded.
            train_args(
                &model,
                &data,
                &out,
                &[
                    "--method",
                    "full",
                    "--batch-size",
                    "10000000000",
                    "--seq-len",
                    "256",
                ],
            ),
            "MiB are available",
        ),
        (
            train_args(
                &model,
                &data,
                &out,
                &["--method", "full", "--seq-len", "100000"],
            ),
            "--seq-len 100000",
        ),
        (
            train_args(
                &model,
                &data,
                &out,
                &["--method", "full", "--backend", "cuda"],
            ),
            "--features cuda",
        ),
        (
            train_args(&model, &data, &a_file, &["--method", "full"]),
            "a_file",
        ),
        (
            train_args(
                &model,
                &dir.path().join("none.json"),
                &out,
                &["--method", "full"],
            ),
            "none.json",
        ),
        (
            train_args(&model, &a_file, &out, &["--method", "full"]),
            "a_file",
        ),
        (
            train_args(
                &model,
                &data,
                &out,
                &["--method", "lora", "--unfrozen-yaml", "x.yaml"],
            ),
            "--unfrozen-yaml",
        ),
    ];
    for (args, named) in cases {
        let result = train(&args, dir.path());
        let stderr = String::from_utf8_lossy(&result.stderr);
        assert_eq!(result.status.code(), Some(1), "{args:?}: {stderr}");
        assert!(
            stderr.contains(named),
            "{args:?} does not name {named}: {stderr}"
        );
        assert!(!out.exists(), "{args:?} wrote {:?}", files_in(&out));
    }
    assert_eq!(std::fs::read_to_string(&a_file).unwrap(), "keep me");
    let empty = dir.path().join("empty.json");
    std::fs::write(&empty, r#"[{"instruction": "", "output": ""}, 3]"#).unwrap();
    let result = train(
        &train_args(&model, &empty, &out, &["--method", "full"]),
        dir.path(),
    );
    assert_eq!(result.status.code(), Some(1));
    assert!(String::from_utf8_lossy(&result.stderr).contains("no usable record"));
}

#[test]
fn train_with_smollm2_refuses_an_empty_selection_and_stops_at_a_nan_loss() {
    let Some(model) = common::smollm2_dir() else {
        return;
    };
    let dir = tempfile::tempdir().unwrap();
    let data = std::path::PathBuf::from(env!("CARGO_MANIFEST_DIR"))
        .join("assets/data/alpaca_en_demo.json");
    let out = dir.path().join("run");
    let yaml = dir.path().join("nothing.yaml");
    std::fs::write(&yaml, "unfrozen_parameters:\n- ^model.layers.99.mlp\n").unwrap();
    let extra = [
        "--method",
        "spectrum",
        "--unfrozen-yaml",
        yaml.to_str().unwrap(),
    ];
    let result = train(&train_args(&model, &data, &out, &extra), dir.path());
    let stderr = String::from_utf8_lossy(&result.stderr);
    assert_eq!(result.status.code(), Some(1), "{stderr}");
    assert!(stderr.contains("nothing to train"), "{stderr}");
    assert!(!out.join("checkpoints").join("checkpoint-1").exists());

    // A learning rate of 1e38 sends the weights to the edge of f32 after the first step: the
    // second step's gradients are not finite. The run stops naming the step, keeps the first
    // checkpoint and writes no model.
    let extra = [
        "--method",
        "full",
        "--steps",
        "3",
        "--warmup-steps",
        "0",
        "--lr",
        "1e38",
        "--save-every",
        "1",
        "--batch-size",
        "1",
        "--seq-len",
        "96",
        "--eval-samples",
        "0",
        "--quiet",
    ];
    let result = train(&train_args(&model, &data, &out, &extra), dir.path());
    let stderr = String::from_utf8_lossy(&result.stderr);
    assert_eq!(result.status.code(), Some(1), "{stderr}");
    assert!(stderr.contains("at step 1"), "{stderr}");
    assert!(
        out.join("checkpoints/checkpoint-1/trainer_state.json")
            .exists()
    );
    assert!(!out.join("checkpoints/checkpoint-2").exists());
    assert!(!out.join("summary.json").exists());
    assert!(!out.join("model").exists());
    let lines = std::fs::read_to_string(out.join("metrics.jsonl")).unwrap();
    assert_eq!(lines.lines().count(), 1, "{lines}");
}
