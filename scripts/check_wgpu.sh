#!/usr/bin/env bash
# The backend suite on wgpu: tests/backends.rs and tests/model_reference.rs built with
# `--features wgpu` (the tiny models and SmolLM2 against transformers and flex, a training run
# per method, NF4 against bitsandbytes, `spectrum train --backend wgpu` end to end, and the
# message for a machine without a Vulkan driver).
#
# Without a GPU it runs on Mesa's lavapipe, a Vulkan driver on the CPU, which it installs with
# apt when no Vulkan driver is present (as root, or through sudo).
set -euo pipefail
cd "$(dirname "$0")/.."
start=$SECONDS

# The Vulkan loader and at least one driver manifest (ICD).
has_vulkan() {
  ldconfig -p 2>/dev/null | grep -q 'libvulkan\.so\.1' || return 1
  for icd in /usr/share/vulkan/icd.d/*.json /etc/vulkan/icd.d/*.json; do
    if [ -e "$icd" ]; then return 0; fi
  done
  return 1
}
if ! has_vulkan; then
  echo "== no Vulkan driver: installing Mesa's (lavapipe runs Vulkan on the CPU)"
  sudo=""
  if [ "$(id -u)" -ne 0 ]; then sudo=sudo; fi
  $sudo apt-get update -qq
  DEBIAN_FRONTEND=noninteractive $sudo apt-get install -y -qq mesa-vulkan-drivers libvulkan1
fi

if ! command -v cargo >/dev/null; then
  curl -sSf https://sh.rustup.rs | sh -s -- -y --profile minimal
  . "$HOME/.cargo/env"
fi
./scripts/get_smollm2.sh

# Mesa warns on every start without it.
if [ -z "${XDG_RUNTIME_DIR:-}" ]; then
  XDG_RUNTIME_DIR=$(mktemp -d)
  export XDG_RUNTIME_DIR
fi
echo "== cargo test --release --features wgpu --test backends --test model_reference"
SPECTRUM_REQUIRE_ASSETS=1 cargo test --release --features wgpu --test backends --test model_reference
echo "== the wgpu suite took $((SECONDS - start)) s"
