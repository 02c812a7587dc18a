#!/usr/bin/env bash
# Builds here, with `--features cuda` (release), what scripts/gpu_check.sh runs on a GPU
# machine that has no Rust: the backend suite's test executables (tests/backends.rs,
# tests/model_reference.rs), the training benchmark (benches/gpu_train_step.rs, without and
# with `--features fusion`) and the `spectrum` binary, packed as .gpu/suite.tar.xz (ignored by
# git; about 33 MB, where the executables take 190 MB, so that it fits what a device run
# carries). No GPU or CUDA toolkit is needed to build: Burn loads the CUDA driver when it runs.
set -euo pipefail
cd "$(dirname "$0")/.."
rm -rf .gpu
mkdir -p .gpu/suite/tests .gpu/suite/benches
cargo test --release --features cuda --test backends --test model_reference \
  --bench gpu_train_step --no-run \
  --message-format=json-render-diagnostics |
  python3 -c '
import json, sys
for line in sys.stdin:
    message = json.loads(line)
    if message.get("reason") == "compiler-artifact" and message.get("executable") \
            and message["target"]["kind"] in (["test"], ["bench"]):
        folder = {"test": "tests", "bench": "benches"}[message["target"]["kind"][0]]
        print(folder, message["target"]["name"], message["executable"])
' |
  while read -r folder name executable; do cp "$executable" ".gpu/suite/$folder/$name"; done
# The benchmark once more with Burn's kernel fusion, measured beside the build without it.
cargo test --release --features cuda,fusion --bench gpu_train_step --no-run \
  --message-format=json-render-diagnostics |
  python3 -c '
import json, sys
for line in sys.stdin:
    message = json.loads(line)
    if message.get("reason") == "compiler-artifact" and message.get("executable"):
        print(message["executable"])
' |
  while read -r executable; do cp "$executable" .gpu/suite/benches/gpu_train_step_fusion; done
cargo build --release --features cuda --bin spectrum
cp target/release/spectrum .gpu/suite/spectrum
strip .gpu/suite/spectrum .gpu/suite/tests/* .gpu/suite/benches/*
tar -C .gpu -cf - suite | xz -T0 -6 >.gpu/suite.tar.xz
rm -r .gpu/suite
ls -la .gpu
