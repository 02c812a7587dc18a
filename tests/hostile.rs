//! Hostile input, as a red team tries it: the real `spectrum` binary, under an address-space
//! limit and a timeout, on files made here. Every case must end with exit status 0 or 1 (130
//! when we interrupt it), a message that names the problem, no temporary file left behind, and
//! earlier outputs intact. The tests follow the classes of the hostile-input issue; the last
//! one is a seeded fuzz loop over mutations of real files.

mod common;

use std::os::unix::process::CommandExt;
use std::path::Path;
use std::process::{Child, Command, Stdio};
use std::time::Duration;

use burn_spectrum::spectrum::Selection;
use common::{counting_data, fixture, tiny_model};
use serde_json::{Value, json};

/// Address space a case may use: far above what these tiny inputs need, far below what a
/// size taken on trust would allocate.
const MEMORY_LIMIT: u64 = 8 << 30;
/// Wall time a case may take; every honest case here takes well under a second.
const TIMEOUT: Duration = Duration::from_secs(60);

struct Outcome {
    /// `None` when killed by a signal (our timeout included).
    code: Option<i32>,
    stdout: String,
    stderr: String,
}

impl Outcome {
    fn describe(&self) -> String {
        format!(
            "exit {:?}\nstdout: {}\nstderr: {}",
            self.code, self.stdout, self.stderr
        )
    }

    /// Ended by itself with 0 or 1, without a panic.
    fn assert_clean(&self) {
        assert!(
            matches!(self.code, Some(0 | 1)) && !self.stderr.contains("panicked"),
            "{}",
            self.describe()
        );
    }

    /// Refused with status 1 and a message holding each of `words`.
    fn assert_refused(&self, words: &[&str]) {
        self.assert_clean();
        assert_eq!(self.code, Some(1), "{}", self.describe());
        for word in words {
            assert!(
                self.stderr.contains(word),
                "`{word}` not named: {}",
                self.describe()
            );
        }
    }
}

/// The binary with `args`, its memory limited.
fn spectrum(args: &[&str]) -> Command {
    spectrum_within(args, MEMORY_LIMIT)
}

/// The binary with `args`, its address space limited to `limit` bytes.
fn spectrum_within(args: &[&str], limit: u64) -> Command {
    let mut command = Command::new(env!("CARGO_BIN_EXE_spectrum"));
    command.args(args).stdin(Stdio::null());
    // SAFETY: between fork and exec only setrlimit runs, which is async-signal-safe.
    unsafe {
        command.pre_exec(move || {
            let limit = libc::rlimit {
                rlim_cur: limit,
                rlim_max: limit,
            };
            if libc::setrlimit(libc::RLIMIT_AS, &limit) != 0 {
                return Err(std::io::Error::last_os_error());
            }
            Ok(())
        });
    }
    command
}

/// Waits for `child`, killing it after [`TIMEOUT`].
fn finish(child: Child) -> Outcome {
    let id = child.id() as libc::pid_t;
    let (done, waited) = std::sync::mpsc::channel::<()>();
    let watchdog = std::thread::spawn(move || {
        if waited.recv_timeout(TIMEOUT).is_err() {
            // SAFETY: signals our own child, which has not been reaped yet.
            unsafe { libc::kill(id, libc::SIGKILL) };
        }
    });
    let output = child.wait_with_output().unwrap();
    let _ = done.send(());
    watchdog.join().unwrap();
    Outcome {
        code: output.status.code(),
        stdout: String::from_utf8_lossy(&output.stdout).into_owned(),
        stderr: String::from_utf8_lossy(&output.stderr).into_owned(),
    }
}

fn run(args: &[&str]) -> Outcome {
    let child = spectrum(args)
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    finish(child)
}

fn s(path: &Path) -> &str {
    path.to_str().unwrap()
}

/// Every file under `dir`, relative, sorted, with its contents.
fn snapshot(dir: &Path) -> Vec<(String, Vec<u8>)> {
    let mut files = Vec::new();
    let mut stack = vec![dir.to_path_buf()];
    while let Some(folder) = stack.pop() {
        let Ok(entries) = std::fs::read_dir(&folder) else {
            continue;
        };
        for entry in entries {
            let path = entry.unwrap().path();
            if path.is_dir() {
                stack.push(path.clone());
            }
            let name = path
                .strip_prefix(dir)
                .unwrap()
                .to_string_lossy()
                .into_owned();
            files.push((name, std::fs::read(&path).unwrap_or_default()));
        }
    }
    files.sort();
    files
}

/// Temporary files ours would leave: `.spectrum-*` (atomic writes, staging folders).
fn leftovers(dir: &Path) -> Vec<String> {
    snapshot(dir)
        .into_iter()
        .map(|(name, _)| name)
        .filter(|name| name.split('/').any(|part| part.starts_with(".spectrum-")))
        .collect()
}

fn edit_json(path: &Path, edit: impl FnOnce(&mut Value)) {
    let mut value: Value = serde_json::from_slice(&std::fs::read(path).unwrap()).unwrap();
    edit(&mut value);
    std::fs::write(path, serde_json::to_vec_pretty(&value).unwrap()).unwrap();
}

fn generate(model: &Path, prompt: &str, extra: &[&str]) -> Outcome {
    let mut args = vec![
        "generate",
        s(model),
        "--prompt",
        prompt,
        "--max-new-tokens",
        "3",
    ];
    args.extend_from_slice(extra);
    run(&args)
}

/// A `.safetensors` file of f32 tensors `(name, [rows, cols])`, values from a fixed sequence.
fn write_safetensors(path: &Path, tensors: &[(&str, [usize; 2])]) {
    let data: Vec<Vec<u8>> = tensors
        .iter()
        .map(|(_, [r, c])| {
            (0..r * c)
                .flat_map(|i| (((i * 7919) % 997) as f32 / 997.0 - 0.5).to_le_bytes())
                .collect()
        })
        .collect();
    let views: Vec<(String, safetensors::tensor::TensorView)> = tensors
        .iter()
        .zip(&data)
        .map(|((name, shape), bytes)| {
            let view = safetensors::tensor::TensorView::new(
                safetensors::Dtype::F32,
                shape.to_vec(),
                bytes,
            )
            .unwrap();
            (name.to_string(), view)
        })
        .collect();
    safetensors::serialize_to_file(views, None, path).unwrap();
}

/// Class 1: sizes from `config.json` or GGUF metadata are checked before anything is
/// allocated from them.
#[test]
fn sizes_are_not_taken_on_trust() {
    let dir = tempfile::tempdir().unwrap();
    let model = tiny_model(dir.path());
    let config = model.join("config.json");
    let original = std::fs::read(&config).unwrap();
    let cases = [
        ("vocab_size", json!(1_000_000_000_000u64), "vocab_size"),
        ("num_hidden_layers", json!(1_000_000), "num_hidden_layers"),
        ("hidden_size", json!(1_000_000_000), "hidden_size"),
        ("intermediate_size", json!(100_000), "do not fit the config"),
        ("num_hidden_layers", json!(3), "missing: model.layers.2."),
        (
            "vocab_size",
            json!(7),
            "model.embed_tokens.weight: expected [7",
        ),
    ];
    for (key, value, named) in cases {
        std::fs::write(&config, &original).unwrap();
        edit_json(&config, |c| c[key] = value.clone());
        generate(&model, "hello", &[]).assert_refused(&[named]);
    }

    // A GGUF that claims 4294967295 layers (the fixture has 2).
    let mut gguf = std::fs::read(fixture("gguf/tiny_llama.gguf")).unwrap();
    let key = b"llama.block_count";
    let at = gguf.windows(key.len()).position(|w| w == key).unwrap() + key.len();
    assert_eq!(gguf[at..at + 4], 4u32.to_le_bytes(), "a u32 value");
    gguf[at + 4..at + 8].copy_from_slice(&u32::MAX.to_le_bytes());
    let file = dir.path().join("layers.gguf");
    std::fs::write(&file, gguf).unwrap();
    let out_dir = dir.path().join("imported");
    run(&["import-gguf", s(&file), s(&out_dir)]).assert_refused(&["num_hidden_layers"]);
    assert!(snapshot(&out_dir).is_empty(), "nothing written");
}

/// Class 2: a prompt longer than the model's context is refused before it is run.
#[test]
fn prompts_beyond_the_context_are_refused() {
    let dir = tempfile::tempdir().unwrap();
    let model = tiny_model(dir.path());
    let long = "hello ".repeat(5000);
    generate(&model, &long, &[]).assert_refused(&["context", "max_position_embeddings"]);
    generate(&model, "hello", &[]).assert_clean();
}

/// Class 3: parsers have depth limits and templates a bound on their work.
#[test]
fn recursion_and_work_are_bounded() {
    let dir = tempfile::tempdir().unwrap();
    let deep = dir.path().join("deep.json");
    std::fs::write(
        &deep,
        format!("{}{}", "[".repeat(60_000), "]".repeat(60_000)),
    )
    .unwrap();
    let out_dir = dir.path().join("out");
    run(&[
        "select",
        s(&deep),
        "--top-percent",
        "25",
        "--out-dir",
        s(&out_dir),
    ])
    .assert_refused(&["nested 60000 levels"]);

    let model = tiny_model(dir.path());
    // A YAML nested 100k deep, in flow and in block style, as `--unfrozen-yaml`.
    let data = dir.path().join("data.json");
    let record = json!({"instruction": "Say 1.", "input": "", "output": "1."});
    std::fs::write(&data, serde_json::to_vec(&vec![record; 8]).unwrap()).unwrap();
    for (style, text) in [
        (
            "flow",
            format!(
                "unfrozen_parameters: {}{}",
                "[".repeat(100_000),
                "]".repeat(100_000)
            ),
        ),
        (
            "block",
            format!("unfrozen_parameters:\n{}x\n", "- ".repeat(100_000)),
        ),
    ] {
        let yaml = dir.path().join(format!("{style}.yaml"));
        std::fs::write(&yaml, text).unwrap();
        let out_dir = dir.path().join(style);
        let args = [
            "train",
            s(&model),
            "--data",
            s(&data),
            "--method",
            "spectrum",
            "--unfrozen-yaml",
            s(&yaml),
            "--output-dir",
            s(&out_dir),
            "--steps",
            "1",
            "--seq-len",
            "256",
            "--eval-samples",
            "2",
            "--quiet",
        ];
        run(&args).assert_refused(&[&format!("{style}.yaml")]);
    }
    let endless = "{% for a in range(100000) %}{% for b in range(100000) %}{% for c in \
        range(100000) %}x{% endfor %}{% endfor %}{% endfor %}";
    edit_json(&model.join("tokenizer_config.json"), |c| {
        c["chat_template"] = json!(endless)
    });
    generate(&model, "hello", &["--chat"]).assert_refused(&["chat template", "fuel"]);
}

/// Class 4: standard output that fails. A reader that goes away ends the run quietly; a full
/// disk is an error message and status 1.
#[test]
fn stdout_failures_do_not_panic() {
    let dir = tempfile::tempdir().unwrap();
    let model = tiny_model(dir.path());
    let full = std::fs::File::create("/dev/full").unwrap();
    let child = spectrum(&[
        "generate",
        s(&model),
        "--prompt",
        "hello",
        "--max-new-tokens",
        "3",
    ])
    .stdout(full)
    .stderr(Stdio::piped())
    .spawn()
    .unwrap();
    finish(child).assert_refused(&["standard output"]);

    // `| head -c1`: the pipe's reader closes at once.
    let mut child = spectrum(&[
        "generate",
        s(&model),
        "--prompt",
        "hello",
        "--max-new-tokens",
        "8",
    ])
    .stdout(Stdio::piped())
    .stderr(Stdio::piped())
    .spawn()
    .unwrap();
    drop(child.stdout.take());
    let out = finish(child);
    assert_eq!(out.code, Some(0), "{}", out.describe());
    assert!(out.stderr.is_empty(), "{}", out.describe());
}

/// Class 5: output folders change as whole sets. An import next to a stale sharded index is
/// refused and touches nothing; two scans into one folder leave one scan's set; an import
/// killed at any moment leaves no temporary file and either the old set or the new one.
#[test]
fn outputs_change_as_whole_sets() {
    let dir = tempfile::tempdir().unwrap();
    let gguf = fixture("gguf/tiny_llama.gguf");

    let stale = dir.path().join("stale");
    std::fs::create_dir(&stale).unwrap();
    std::fs::write(stale.join("model.safetensors.index.json"), "{}").unwrap();
    std::fs::write(stale.join("model-00001-of-00002.safetensors"), "old").unwrap();
    let before = snapshot(&stale);
    run(&["import-gguf", s(&gguf), s(&stale)]).assert_refused(&[
        "model.safetensors.index.json",
        "model-00001-of-00002.safetensors",
    ]);
    assert_eq!(snapshot(&stale), before);

    // Two models scanned under one name into one folder, at the same time, a few times.
    let a = dir.path().join("a.safetensors");
    let b = dir.path().join("b.safetensors");
    write_safetensors(&a, &[("model.layers.0.mlp.up_proj.weight", [24, 16])]);
    write_safetensors(&b, &[("model.layers.0.mlp.down_proj.weight", [16, 24])]);
    let shared = dir.path().join("shared");
    for _ in 0..3 {
        let scans: Vec<Child> = [&a, &b]
            .iter()
            .map(|model| {
                let args = [
                    "scan",
                    s(model),
                    "--model-name",
                    "m",
                    "--out-dir",
                    s(&shared),
                ];
                spectrum(&args)
                    .stdout(Stdio::piped())
                    .stderr(Stdio::piped())
                    .spawn()
                    .unwrap()
            })
            .collect();
        for scan in scans {
            finish(scan).assert_clean();
        }
        let table = std::fs::read_to_string(shared.join("snr_results_m.json")).unwrap();
        let yaml =
            std::fs::read_to_string(shared.join("snr_results_m_unfrozenparameters_50percent.yaml"))
                .unwrap();
        let module = if table.contains("up_proj") {
            "up_proj"
        } else {
            "down_proj"
        };
        assert!(
            yaml.contains(module),
            "table and YAML from different scans:\n{table}\n{yaml}"
        );
        assert!(leftovers(&shared).is_empty());
    }

    // An import interrupted after 0..40 ms: whatever it was doing, nothing is left half-done.
    let target = dir.path().join("interrupted");
    let first = run(&["import-gguf", s(&gguf), s(&target)]);
    assert_eq!(first.code, Some(0), "{}", first.describe());
    let complete = snapshot(&target);
    for delay_ms in (0..40).step_by(4) {
        let child = spectrum(&["import-gguf", s(&gguf), s(&target)])
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .unwrap();
        std::thread::sleep(Duration::from_millis(delay_ms));
        // SAFETY: signals our own child, not yet reaped.
        unsafe { libc::kill(child.id() as libc::pid_t, libc::SIGTERM) };
        let out = finish(child);
        // 130: our handler ran; `None`: the signal came before it was installed.
        assert!(
            matches!(out.code, Some(0 | 130) | None),
            "{}",
            out.describe()
        );
        assert!(
            leftovers(&target).is_empty(),
            "after {delay_ms} ms: {:?}",
            leftovers(&target)
        );
        assert_eq!(snapshot(&target), complete, "after {delay_ms} ms");
    }
}

/// Class 6: a folder whose files hold the same tensor twice (a single file beside shards,
/// no index) is refused, naming both files.
#[test]
fn ambiguous_folders_are_refused() {
    let dir = tempfile::tempdir().unwrap();
    let folder = dir.path().join("ambiguous");
    std::fs::create_dir(&folder).unwrap();
    let single = fixture("tiny_llama/model.safetensors");
    std::fs::copy(&single, folder.join("model.safetensors")).unwrap();
    std::fs::copy(&single, folder.join("model-00001-of-00001.safetensors")).unwrap();
    let out_dir = dir.path().join("out");
    run(&["scan", s(&folder), "--out-dir", s(&out_dir)]).assert_refused(&[
        "is in both",
        "model.safetensors",
        "model-00001-of-00001.safetensors",
    ]);
    assert!(snapshot(&out_dir).is_empty());
}

/// Class 7: tensor names cannot write lines into the YAML, and names with YAML's special
/// characters read back as themselves.
#[test]
fn names_cannot_inject() {
    let dir = tempfile::tempdir().unwrap();
    let injecting = dir.path().join("injecting.safetensors");
    write_safetensors(
        &injecting,
        &[("model.layers.0.mlp\n- .*\n#.weight", [8, 8])],
    );
    let out_dir = dir.path().join("out");
    run(&[
        "scan",
        s(&injecting),
        "--top-percent",
        "100",
        "--out-dir",
        s(&out_dir),
    ])
    .assert_refused(&["control character"]);
    assert!(snapshot(&out_dir).is_empty());
    // Not selected (1 module at 25%), the name still appears as its type's comment: on one
    // line, so the YAML holds only spectrum.py's two fixed patterns.
    let out = run(&[
        "scan",
        s(&injecting),
        "--top-percent",
        "25",
        "--out-dir",
        s(&out_dir),
    ]);
    assert_eq!(out.code, Some(0), "{}", out.describe());
    let yaml = out_dir.join("snr_results_injecting_unfrozenparameters_25percent.yaml");
    let selection = Selection::read_yaml(&yaml).unwrap();
    let read: Vec<&str> = selection.patterns().map(|p| p.as_str()).collect();
    assert_eq!(read, ["^lm_head.weight$", "^model.embed_tokens.weight$"]);
    std::fs::remove_dir_all(&out_dir).unwrap();

    let special = dir.path().join("special.safetensors");
    let names = [
        "model.layers.0.a#b.weight",
        "model.layers.0.c: d.weight",
        "model.layers.0.e[f.weight",
    ];
    let tensors: Vec<(&str, [usize; 2])> = names.iter().map(|n| (*n, [8, 8])).collect();
    write_safetensors(&special, &tensors);
    let out = run(&[
        "scan",
        s(&special),
        "--top-percent",
        "100",
        "--out-dir",
        s(&out_dir),
    ]);
    out.assert_clean();
    assert_eq!(out.code, Some(0), "{}", out.describe());
    let yaml = out_dir.join("snr_results_special_unfrozenparameters_100percent.yaml");
    let selection = Selection::read_yaml(&yaml).unwrap();
    let text = std::fs::read_to_string(&yaml).unwrap();
    assert_eq!(selection.patterns().count(), 2 + names.len(), "{text}");
    for name in names {
        assert!(
            selection.is_selected(name),
            "{name} not selected by\n{text}"
        );
    }
    assert!(!selection.is_selected("model.layers.0.a.weight"), "{text}");
}

/// Class 8: numbers that would give NaN or silent nonsense are refused, naming the key.
#[test]
fn invalid_numbers_are_refused() {
    let dir = tempfile::tempdir().unwrap();
    let model = tiny_model(dir.path());
    let config = model.join("config.json");
    let original = std::fs::read(&config).unwrap();
    let llama3 = |factor: f64| {
        json!({"rope_type": "llama3", "factor": factor, "low_freq_factor": 1.0,
               "high_freq_factor": 4.0, "original_max_position_embeddings": 64})
    };
    let cases = [
        ("rope_theta", json!(0.0), "rope_theta"),
        ("rope_theta", json!(-10000.0), "rope_theta"),
        ("rms_norm_eps", json!(-1e-6), "rms_norm_eps"),
        ("rms_norm_eps", Value::Null, "rms_norm_eps"),
        ("rope_scaling", llama3(0.0), "factor"),
        ("bos_token_id", json!(4_294_967_296u64), "bos_token_id"),
        ("eos_token_id", json!([2, 4_294_967_297u64]), "eos_token_id"),
    ];
    for (key, value, named) in cases {
        std::fs::write(&config, &original).unwrap();
        edit_json(&config, |c| c[key] = value.clone());
        generate(&model, "hello", &[]).assert_refused(&[named]);
    }
}

/// Class 9: work and memory grow with the table, not faster. 300k module types took minutes
/// when types were searched in a list (the timeout catches that), and a selection of 200k
/// modules held a compiled regex for each (1.8 GB for a 15 MB table); both now run within a
/// 1 GiB address space.
#[test]
fn large_tables_stay_linear() {
    let dir = tempfile::tempdir().unwrap();
    let table = |rows: usize, types: usize| -> Value {
        let map: serde_json::Map<String, Value> = (0..rows)
            .map(|i| {
                let kind = format!("t{}", i % types);
                let name = format!("model.layers.{i}.{kind}");
                (name, json!({"snr": (i % 997) as f64 / 7.0, "type": kind}))
            })
            .collect();
        Value::Object(map)
    };
    for (name, rows, types, percent) in [
        ("types", 300_000, 300_000, "50"),
        ("rows", 200_000, 1, "100"),
    ] {
        let file = dir.path().join(format!("{name}.json"));
        std::fs::write(&file, serde_json::to_vec(&table(rows, types)).unwrap()).unwrap();
        let out_dir = dir.path().join(format!("out-{name}"));
        let args = [
            "select",
            s(&file),
            "--top-percent",
            percent,
            "--out-dir",
            s(&out_dir),
        ];
        let child = spectrum_within(&args, 1 << 30)
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .unwrap();
        let out = finish(child);
        assert_eq!(out.code, Some(0), "{name}: {}", out.describe());
        assert!(
            out.stdout
                .contains(&format!("selected from {rows} modules of {types} types"))
        );
    }
}

/// Messages name the problem in words, not in the names of internal types.
#[test]
fn messages_are_words() {
    let dir = tempfile::tempdir().unwrap();
    let truncated = dir.path().join("truncated.safetensors");
    let bytes = std::fs::read(fixture("tiny_llama/model.safetensors")).unwrap();
    std::fs::write(&truncated, &bytes[..bytes.len() / 2]).unwrap();
    let out = run(&[
        "scan",
        s(&truncated),
        "--out-dir",
        s(&dir.path().join("out")),
    ]);
    out.assert_refused(&["truncated.safetensors"]);
    assert!(
        !out.stderr.contains("MetadataIncompleteBuffer"),
        "{}",
        out.describe()
    );
}

/// `spectrum train` killed with SIGKILL at moments spread over a run (loading, training,
/// checkpointing, exporting), then resumed: it ends with the uninterrupted run's metrics and
/// model, and no hidden half-written folder is left.
#[test]
fn a_training_run_killed_at_any_moment_resumes() {
    let dir = tempfile::tempdir().unwrap();
    let model = tiny_model(dir.path());
    let data = counting_data(dir.path());
    let args = |out: &Path| -> Vec<String> {
        [
            "train",
            s(&model),
            "--data",
            s(&data),
            "--method",
            "full",
            "--output-dir",
            s(out),
            "--steps",
            "12",
            "--batch-size",
            "2",
            "--seq-len",
            "256",
            "--eval-samples",
            "2",
            "--save-every",
            "1",
            "--quiet",
        ]
        .map(String::from)
        .to_vec()
    };
    let straight = dir.path().join("straight");
    // The shorter of two uninterrupted runs: the first may be slowed by a cold cache or by the
    // other tests, and kills timed by a run too long land after the end.
    let mut duration = std::time::Duration::MAX;
    for out_dir in [straight.clone(), dir.path().join("straight-again")] {
        let started = std::time::Instant::now();
        let out = run(&args(&out_dir)
            .iter()
            .map(String::as_str)
            .collect::<Vec<_>>());
        assert_eq!(out.code, Some(0), "{}", out.describe());
        duration = duration.min(started.elapsed());
    }
    let metrics = |out: &Path| common::metrics_without_seconds(&out.join("metrics.jsonl"));
    let weights = |out: &Path| std::fs::read(out.join("model/model.safetensors")).unwrap();
    let mut interrupted = 0;
    let fractions = [0.05, 0.15, 0.25, 0.35, 0.45, 0.55, 0.65, 0.75, 0.85, 0.95];
    for fraction in fractions {
        let killed = dir.path().join(format!("killed-{fraction}"));
        let arguments = args(&killed);
        let refs: Vec<&str> = arguments.iter().map(String::as_str).collect();
        let child = spectrum(&refs)
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .unwrap();
        std::thread::sleep(duration.mul_f64(fraction));
        // SAFETY: signals our own child, not yet reaped.
        unsafe { libc::kill(child.id() as libc::pid_t, libc::SIGKILL) };
        let killed_early = finish(child).code.is_none();
        interrupted += usize::from(killed_early && !killed.join("summary.json").exists());
        // What a kill during a single file's write leaves, planted so that every round has one.
        if killed.is_dir() {
            std::fs::write(killed.join(".spectrum-planted.tmp"), b"half").unwrap();
        }
        let mut resumed = refs.clone();
        resumed.push("--resume");
        let out = run(&resumed);
        assert_eq!(
            out.code,
            Some(0),
            "killed at {fraction}: {}",
            out.describe()
        );
        assert_eq!(metrics(&killed), metrics(&straight), "killed at {fraction}");
        assert!(
            weights(&killed) == weights(&straight),
            "killed at {fraction}: other weights"
        );
        let hidden: Vec<String> = snapshot(&killed)
            .into_iter()
            .map(|(name, _)| name)
            .filter(|name| name.split('/').any(|part| part.starts_with('.')))
            .collect();
        assert!(hidden.is_empty(), "killed at {fraction}: left {hidden:?}");
    }
    println!(
        "a {duration:?} run, interrupted {interrupted} times of {}",
        fractions.len()
    );
    assert!(
        interrupted * 2 >= fractions.len(),
        "most kills land before the end"
    );
}

/// A port nothing listens on (just now).
fn free_port() -> u16 {
    let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    listener.local_addr().unwrap().port()
}

/// `spectrum train` on the tiny model as node `rank` of two meeting at `port` (node 0
/// starts the orchestrator there), into `out`, with `extra` flags; started, not awaited.
fn node(
    model: &Path,
    data: &Path,
    out: &Path,
    (rank, port): (usize, u16),
    extra: &[&str],
) -> Child {
    let (rank, address) = (rank.to_string(), format!("127.0.0.1:{port}"));
    let port = port.to_string();
    let meet = match rank.as_str() {
        "0" => ["--start-orchestrator", port.as_str()],
        _ => ["--orchestrator", address.as_str()],
    };
    let mut args = vec!["train", s(model), "--data", s(data), "--output-dir", s(out)];
    args.extend("--num-nodes 2 --batch-size 4 --seq-len 256 --eval-samples 2".split(' '));
    args.extend(["--peer-timeout", "30", "--quiet", "--node-rank", &rank]);
    args.extend(meet);
    args.extend(extra);
    spectrum(&args)
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap()
}

/// Two nodes that differ in a setting both refuse to start, name it, and write nothing.
#[test]
fn nodes_that_disagree_are_refused_before_anything_is_written() {
    let dir = tempfile::tempdir().unwrap();
    let model = tiny_model(dir.path());
    // The same shapes, other weights (rounded to f16).
    let other_model = dir.path().join("model-f16");
    let gguf = fixture("gguf/tiny_llama.gguf");
    let import = run(&["import-gguf", s(&gguf), s(&other_model), "--dtype", "f16"]);
    assert_eq!(import.code, Some(0), "{}", import.describe());
    let data = counting_data(dir.path());
    let full = ["--method", "full", "--steps", "2"];
    let cases: [(&[&str], &Path, &str); 5] = [
        (&["--method", "lora", "--steps", "2"], &model, "--method"),
        (&["--method", "full", "--steps", "3"], &model, "--steps"),
        (
            &[&full[..], &["--devices", "2"]].concat(),
            &model,
            "--devices",
        ),
        (&[&full[..], &["--seed", "1"]].concat(), &model, "--seed"),
        (&full, &other_model, "the model's weights"),
    ];
    for (i, (other, other_model, named)) in cases.into_iter().enumerate() {
        let port = free_port();
        let outs = [0, 1].map(|rank| dir.path().join(format!("case-{i}-node-{rank}")));
        let first = node(&model, &data, &outs[0], (0, port), &full);
        let second = node(other_model, &data, &outs[1], (1, port), other);
        for outcome in [finish(first), finish(second)] {
            outcome.assert_refused(&["multi-node run cannot start", named]);
        }
        let written = outs[0].exists() || outs[1].exists();
        assert!(!written, "{named}: a folder was written");
    }
}

/// The orchestrator out of reach, its port taken, a partner that never comes, flags that
/// cannot make a run: each ends with a message that names it, within its timeout.
#[test]
fn nodes_that_cannot_meet_are_told_why() {
    let dir = tempfile::tempdir().unwrap();
    let model = tiny_model(dir.path());
    let data = counting_data(dir.path());
    let out = dir.path().join("out");
    let train = |extra: &[&str]| {
        let mut args = vec![
            "train",
            s(&model),
            "--data",
            s(&data),
            "--output-dir",
            s(&out),
        ];
        args.extend("--method full --steps 2 --batch-size 2 --seq-len 256 --quiet".split(' '));
        args.extend(["--eval-samples", "2"]);
        args.extend(extra);
        run(&args)
    };
    let port = free_port().to_string();
    let address = format!("127.0.0.1:{port}");
    let unreachable = [
        "--num-nodes",
        "2",
        "--node-rank",
        "1",
        "--orchestrator",
        &address,
    ];
    let out_of_reach = train(&[&unreachable[..], &["--peer-timeout", "2"]].concat());
    out_of_reach.assert_refused(&[
        &format!("orchestrator at {address}"),
        "no answer within 2 s",
    ]);

    let taken = std::net::TcpListener::bind("0.0.0.0:0").unwrap();
    let taken_port = taken.local_addr().unwrap().port().to_string();
    let busy = train(&["--num-nodes", "2", "--start-orchestrator", &taken_port]);
    busy.assert_refused(&[&format!("port {taken_port} is in use")]);

    let alone = train(&[
        "--num-nodes",
        "2",
        "--start-orchestrator",
        &port,
        "--peer-timeout",
        "2",
    ]);
    alone.assert_refused(&["only 1 of 2 workers joined within 2 s"]);

    let unnamed = train(&["--num-nodes", "2"]);
    unnamed.assert_refused(&["--num-nodes", "--orchestrator HOST:PORT"]);
    let beyond = train(&[
        "--num-nodes",
        "2",
        "--node-rank",
        "2",
        "--orchestrator",
        &address,
    ]);
    beyond.assert_refused(&["--node-rank", "below --num-nodes"]);
    let narrow = train(&["--num-nodes", "3", "--start-orchestrator", &port]);
    narrow.assert_refused(&["--batch-size", "--num-nodes"]);
    assert!(!out.exists(), "a refused run wrote its folder");
}

/// A node killed in the middle of a run makes the other fail at once with a message that
/// names it, instead of waiting for it; the survivor's folder holds no half-written file.
#[test]
fn a_node_that_dies_fails_the_other_at_once() {
    let dir = tempfile::tempdir().unwrap();
    let model = tiny_model(dir.path());
    let data = counting_data(dir.path());
    let outs = [0, 1].map(|rank| dir.path().join(format!("node-{rank}")));
    let port = free_port();
    let long = [
        "--method",
        "full",
        "--steps",
        "100000",
        "--save-every",
        "50",
    ];
    let survivor = node(&model, &data, &outs[0], (0, port), &long);
    let mut victim = node(&model, &data, &outs[1], (1, port), &long);
    let metrics = outs[0].join("metrics.jsonl");
    let started = std::time::Instant::now();
    while std::fs::read_to_string(&metrics).map_or(0, |text| text.lines().count()) < 3 {
        assert!(
            started.elapsed() < TIMEOUT,
            "the nodes never trained together"
        );
        std::thread::sleep(Duration::from_millis(20));
    }
    victim.kill().unwrap();
    victim.wait().unwrap();
    let outcome = finish(survivor);
    outcome.assert_refused(&["node 1, worker 0 left the run"]);
    assert!(leftovers(&outs[0]).is_empty(), "{:?}", leftovers(&outs[0]));
    assert!(!outs[1].exists(), "node 1 wrote a folder");
}

/// A small deterministic generator (xorshift64*).
struct Rng(u64);

impl Rng {
    fn next(&mut self) -> u64 {
        self.0 ^= self.0 >> 12;
        self.0 ^= self.0 << 25;
        self.0 ^= self.0 >> 27;
        self.0.wrapping_mul(0x2545_F491_4F6C_DD1D)
    }

    fn below(&mut self, n: usize) -> usize {
        (self.next() % n.max(1) as u64) as usize
    }
}

/// Bytes changed the ways corrupt and hostile files differ from good ones: flipped bytes,
/// a cut, a chunk repeated, digits replaced by extreme numbers.
fn mutate(bytes: &[u8], rng: &mut Rng) -> Vec<u8> {
    let mut out = bytes.to_vec();
    for _ in 0..1 + rng.below(4) {
        if out.is_empty() {
            break;
        }
        match rng.below(5) {
            0 => {
                let at = rng.below(out.len());
                out[at] ^= 1 << rng.below(8);
            }
            1 => out.truncate(rng.below(out.len())),
            2 => {
                let at = rng.below(out.len());
                let len = rng.below(64).min(out.len() - at);
                let chunk = out[at..at + len].to_vec();
                out.splice(at..at, chunk);
            }
            3 => {
                // A number in text replaced by an extreme one.
                let digits: Vec<usize> = (0..out.len())
                    .filter(|&i| out[i].is_ascii_digit())
                    .collect();
                if let Some(&at) = digits.get(rng.below(digits.len())) {
                    let extreme = ["0", "-1", "1e308", "18446744073709551616", "NaN", "null"];
                    let text = extreme[rng.below(extreme.len())].as_bytes().to_vec();
                    out.splice(at..at + 1, text);
                }
            }
            _ => {
                let at = rng.below(out.len());
                out[at] = rng.next() as u8;
            }
        }
    }
    out
}

/// Seeded fuzzing: mutations of a real safetensors file (scanned), SNR table (selected from),
/// GGUF file (imported) and config.json (generated with). Every run must end cleanly.
#[test]
fn seeded_fuzz_of_real_files() {
    // `HOSTILE_FUZZ_CASES=5000` for a longer search; CI runs the default.
    let cases_wanted: usize = std::env::var("HOSTILE_FUZZ_CASES")
        .ok()
        .and_then(|n| n.parse().ok())
        .unwrap_or(300);
    let dir = tempfile::tempdir().unwrap();
    let model = tiny_model(dir.path());
    let config_text = std::fs::read(model.join("config.json")).unwrap();
    let sources = [
        std::fs::read(fixture("tiny_llama/model.safetensors")).unwrap(),
        std::fs::read(fixture("tiny_expected_f32_spectrum.json")).unwrap(),
        std::fs::read(fixture("gguf/tiny_llama.gguf")).unwrap(),
        config_text.clone(),
    ];
    let cases: Vec<usize> = (0..cases_wanted).collect();
    let failures = std::sync::Mutex::new(Vec::new());
    let accepted = std::sync::atomic::AtomicUsize::new(0);
    // Two workers: each case is a process of its own.
    std::thread::scope(|scope| {
        for worker in 0..2 {
            let (cases, sources, failures, dir, model, accepted) =
                (&cases, &sources, &failures, dir.path(), &model, &accepted);
            scope.spawn(move || {
                for &case in cases.iter().filter(|c| *c % 2 == worker) {
                    let mut rng = Rng(0x9E37_79B9_7F4A_7C15 ^ ((case as u64 + 1) * 0x1000_0001));
                    let kind = case % sources.len();
                    let bytes = mutate(&sources[kind], &mut rng);
                    let work = dir.join(format!("case-{case}"));
                    std::fs::create_dir_all(&work).unwrap();
                    let out = match kind {
                        0 => {
                            let file = work.join("model.safetensors");
                            std::fs::write(&file, &bytes).unwrap();
                            run(&["scan", s(&file), "--out-dir", s(&work.join("out"))])
                        }
                        1 => {
                            let file = work.join("table.json");
                            std::fs::write(&file, &bytes).unwrap();
                            let out_dir = work.join("out");
                            run(&[
                                "select",
                                s(&file),
                                "--top-percent",
                                "50",
                                "--out-dir",
                                s(&out_dir),
                            ])
                        }
                        2 => {
                            let file = work.join("model.gguf");
                            std::fs::write(&file, &bytes).unwrap();
                            run(&["import-gguf", s(&file), s(&work.join("out"))])
                        }
                        _ => {
                            // A copy of the model with the mutated config.
                            let copy = work.join("model");
                            std::fs::create_dir_all(&copy).unwrap();
                            for entry in std::fs::read_dir(model).unwrap() {
                                let path = entry.unwrap().path();
                                std::fs::copy(&path, copy.join(path.file_name().unwrap())).unwrap();
                            }
                            std::fs::write(copy.join("config.json"), &bytes).unwrap();
                            generate(&copy, "hello", &[])
                        }
                    };
                    let clean = matches!(out.code, Some(0 | 1))
                        && !out.stderr.contains("panicked")
                        && (out.code == Some(0) || !out.stderr.trim().is_empty())
                        && leftovers(&work).is_empty();
                    if !clean {
                        failures
                            .lock()
                            .unwrap()
                            .push(format!("case {case}: {}", out.describe()));
                    }
                    if out.code == Some(0) {
                        accepted.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
                    }
                    let _ = std::fs::remove_dir_all(&work);
                }
            });
        }
    });
    let failures = failures.into_inner().unwrap();
    let accepted = accepted.into_inner();
    println!(
        "{cases_wanted} fuzz cases: {accepted} accepted, {} refused, {} failures",
        cases_wanted - accepted.min(cases_wanted),
        failures.len()
    );
    assert!(failures.is_empty(), "{}", failures.join("\n\n"));
}
