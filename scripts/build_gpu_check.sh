#!/usr/bin/env bash
# Builds here, with `--features cuda` (release), what scripts/gpu_check.sh runs on a GPU
# machine that has no Rust: the backend suite's test executables (tests/backends.rs,
# tests/model_reference.rs) and the `spectrum` binary, packed as .gpu/suite.tar.xz (ignored by
# git; about 21 MB, where the executables take 125 MB, so that it fits what a device run
# carries). No GPU or CUDA toolkit is needed to build: Burn loads the CUDA driver when it runs.
set -euo pipefail
cd "$(dirname "$0")/.."
rm -rf .gpu
mkdir -p .gpu/suite/tests
cargo test --release --features cuda --test backends --test model_reference --no-run \
  --message-format=json-render-diagnostics |
  python3 -c '
import json, sys
for line in sys.stdin:
    message = json.loads(line)
    if message.get("reason") == "compiler-artifact" and message.get("executable") \
            and message["target"]["kind"] == ["test"]:
        print(message["target"]["name"], message["executable"])
' |
  while read -r name executable; do cp "$executable" ".gpu/suite/tests/$name"; done
cargo build --release --features cuda --bin spectrum
cp target/release/spectrum .gpu/suite/spectrum
strip .gpu/suite/spectrum .gpu/suite/tests/*
tar -C .gpu -cf - suite | xz -T0 -6 >.gpu/suite.tar.xz
rm -r .gpu/suite
ls -la .gpu
