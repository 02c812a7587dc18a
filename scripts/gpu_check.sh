#!/usr/bin/env bash
# On a machine with an NVIDIA GPU and its driver (no Rust needed): the backend suite on CUDA,
# from the executables scripts/build_gpu_check.sh packed into .gpu/suite.tar.xz. Writes its
# report to $OUT/gpu_report.txt (or .gpu/gpu_report.txt) and exits 1 when a test fails.
#
# The tiny models' fixtures are in the repository; SmolLM2's tests run when
# assets/models/SmolLM2-135M-Instruct is there and say "skipped" otherwise.
set -uo pipefail
cd "$(dirname "$0")/.."
out=${OUT:-.gpu}
mkdir -p "$out"
exec > >(tee "$out/gpu_report.txt") 2>&1

echo "# burn-spectrum GPU check, $(date -u '+%Y-%m-%d %H:%M UTC')"
git rev-parse --short HEAD 2>/dev/null || true
nvidia-smi --query-gpu=name,driver_version,memory.total --format=csv || echo "nvidia-smi failed"
if [ ! -f .gpu/suite.tar.xz ]; then
  echo "missing .gpu/suite.tar.xz: run scripts/build_gpu_check.sh on the build machine and carry .gpu"
  exit 1
fi
rm -rf .gpu/suite
tar -C .gpu -xJf .gpu/suite.tar.xz

export SPECTRUM_REPO_DIR=$PWD SPECTRUM_BIN=$PWD/.gpu/suite/spectrum
status=0
for test in .gpu/suite/tests/*; do
  name=$(basename "$test")
  echo "== $name on cuda"
  start=$SECONDS
  "$test" --nocapture --test-threads 1 || status=1
  echo "== $name: $((SECONDS - start)) s"
done
echo "== the CUDA suite: $([ $status -eq 0 ] && echo passed || echo FAILED)"
exit $status
