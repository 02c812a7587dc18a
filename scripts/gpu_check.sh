#!/usr/bin/env bash
# On a machine with an NVIDIA GPU and its driver (no Rust needed): the backend suite on CUDA,
# then the training benchmark beside PyTorch (benches/gpu_train_step.rs with
# scripts/bench_gpu_train_step.py), from the executables scripts/build_gpu_check.sh packed into
# .gpu/suite.tar.xz. Writes its report to $OUT/gpu_report.txt (or .gpu/gpu_report.txt) and
# exits 1 when a test fails.
#
# The tiny models' fixtures are in the repository; SmolLM2's tests run when
# assets/models/SmolLM2-135M-Instruct is there and say "skipped" otherwise. The benchmark needs
# no checkpoint (random weights). Time limits, in seconds: GPU_CHECK_TEST_LIMIT per test
# executable (default 60), GPU_CHECK_BENCH_LIMIT for the benchmark (default 300),
# GPU_CHECK_CHUNK_LIMIT for its loss-chunk run (default 100), GPU_CHECK_PROFILE_LIMIT for the
# profile (default 60), GPU_BENCH_CASE_TIMEOUT per benchmark case (default 120 here): 580 s at
# most, under the device's 600 s per command. GPU_CHECK_SKIP_TESTS=1 runs the benchmark alone.
set -uo pipefail
cd "$(dirname "$0")/.."
out=${OUT:-.gpu}
mkdir -p "$out"
out=$(cd "$out" && pwd)
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

# Burn compiles its kernels at run time with NVRTC, which it loads by name: add the folders
# where a CUDA toolkit or PyTorch's wheels keep it, if the loader does not know them.
if ! ldconfig -p 2>/dev/null | grep -q 'libnvrtc\.so'; then
  for lib in /usr/local/cuda/lib64 /usr/local/cuda/targets/x86_64-linux/lib \
    $(python3 -c 'import glob, site; print(" ".join(sorted({p.rsplit("/", 1)[0] for s in site.getsitepackages() for p in glob.glob(s + "/nvidia/**/libnvrtc.so*", recursive=True)})))' 2>/dev/null); do
    [ -d "$lib" ] && export LD_LIBRARY_PATH="$lib${LD_LIBRARY_PATH:+:$LD_LIBRARY_PATH}"
  done
fi
echo "LD_LIBRARY_PATH=${LD_LIBRARY_PATH:-}"
# Keep compiled kernels on disk (target/), so that each test and benchmark process after the
# first reuses them instead of compiling them again: CubeCL reads cubecl.toml from the working
# folder up, so the processes run in .gpu, beside this one.
printf '[compilation]\ncache = "target"\n' >.gpu/cubecl.toml

export SPECTRUM_REPO_DIR=$PWD SPECTRUM_BIN=$PWD/.gpu/suite/spectrum
suite=$PWD/.gpu/suite
cd .gpu
status=0
if [ "${GPU_CHECK_SKIP_TESTS:-0}" != 1 ]; then
  for test in "$suite"/tests/*; do
    name=$(basename "$test")
    echo "== $name on cuda"
    start=$SECONDS
    timeout "${GPU_CHECK_TEST_LIMIT:-60}" "$test" --nocapture --test-threads 1 || status=1
    echo "== $name: $((SECONDS - start)) s"
  done
  echo "== the CUDA suite: $([ $status -eq 0 ] && echo passed || echo FAILED)"
fi

echo "== training benchmark (benches/gpu_train_step.rs) beside PyTorch"
start=$SECONDS
python3 -c 'import torch, transformers, peft; print("peer: torch", torch.__version__, "transformers", transformers.__version__, "peft", peft.__version__)' ||
  echo "peer: torch, transformers or peft is missing"
if [ -x "$suite"/benches/gpu_train_step_fusion ]; then
  export GPU_BENCH_FUSION_EXE="$suite"/benches/gpu_train_step_fusion
fi
# Sized to fit a 15-minute device lease with its start: the Llama-3.2-1B shape (the issue's
# main case), every method, ours in f32 and in bf16 mixed precision (--dtype bf16), beside
# PyTorch in TF32 (our f32 products' precision) and bf16 AMP. Set GPU_BENCH_MODELS,
# GPU_BENCH_METHODS, GPU_BENCH_DTYPES or GPU_BENCH_PEER_DTYPES for more or less.
export GPU_BENCH_MODELS=${GPU_BENCH_MODELS:-llama-3.2-1b}
export GPU_BENCH_DTYPES=${GPU_BENCH_DTYPES:-f32,bf16}
export GPU_BENCH_PEER_DTYPES=${GPU_BENCH_PEER_DTYPES:-tf32,bf16}
export GPU_BENCH_CASE_TIMEOUT=${GPU_BENCH_CASE_TIMEOUT:-120} PYTHONUNBUFFERED=1
timeout "${GPU_CHECK_BENCH_LIMIT:-300}" "$suite"/benches/gpu_train_step ||
  echo "the benchmark stopped early (exit $?)"
echo "== benchmark: $((SECONDS - start)) s"

# The loss in fewer, larger chunks (GPU_CHECK_LOSS_CHUNK positions, default 4096: one chunk
# for a batch of 8 x 512): the kernel profile found the default 64 MiB chunks to be 60% of a
# 1B step. Full and LoRA, without fusion, beside the TF32 peer; empty to skip.
chunk=${GPU_CHECK_LOSS_CHUNK-4096}
if [ -n "$chunk" ]; then
  echo "== the same with the loss in chunks of $chunk positions"
  start=$SECONDS
  GPU_BENCH_LOSS_CHUNK=$chunk GPU_BENCH_METHODS=full,lora GPU_BENCH_DTYPES=f32 GPU_BENCH_PEER_DTYPES=tf32 \
    GPU_BENCH_FUSION_EXE= timeout "${GPU_CHECK_CHUNK_LIMIT:-100}" "$suite"/benches/gpu_train_step ||
    echo "the benchmark stopped early (exit $?)"
  echo "== loss chunk $chunk: $((SECONDS - start)) s"
fi

# Where a step's time goes: CubeCL's kernel profile of one timed step of full fine-tuning on
# the Llama-3.2-1B shape (the total per kernel; the warm-up's profile comes first).
if [ -n "${GPU_CHECK_PROFILE_CASE-llama-3.2-1b:full:f32}" ]; then
  case=${GPU_CHECK_PROFILE_CASE-llama-3.2-1b:full:f32}
  echo "== kernel profile of $case (written to $out/kernel_profile.txt)"
  mkdir -p profile
  printf '[compilation]\ncache = "target"\n[profiling.logger]\nlevel = "basic"\nfile = "%s"\n' \
    "$out/kernel_profile.txt" >profile/cubecl.toml
  start=$SECONDS
  (cd profile && GPU_BENCH_CASE=$case GPU_BENCH_STEPS=1 GPU_BENCH_PROFILE=1 \
    timeout "${GPU_CHECK_PROFILE_LIMIT:-60}" "$suite"/benches/gpu_train_step) ||
    echo "the profiled run stopped early (exit $?)"
  echo "== profile: $((SECONDS - start)) s"
  [ -f "$out/kernel_profile.txt" ] && gzip -f "$out/kernel_profile.txt"
fi
exit $status
