#!/usr/bin/env python3
"""The PyTorch peer of `cargo bench --bench gpu_train_step`: one training step, same workload.

    python scripts/bench_gpu_train_step.py CONFIG_JSON METHOD BATCH_JSON DTYPE [TRAINABLE_TXT]

CONFIG_JSON is a transformers config (the model gets random weights); BATCH_JSON holds
`input_ids`, `attention_mask` and `labels` as the Rust bench wrote them, so both sides see the
same tokens. METHOD is `full`, `spectrum-25` (the parameters named one per line in
TRAINABLE_TXT train, as our scan chose them), `lora` (PEFT, r 16, alpha 32, all-linear, no
dropout) or `qlora` (bitsandbytes NF4, no double quantization, computing in DTYPE; PEFT r 64,
alpha 16, all-linear; prints `skipped: ...` without bitsandbytes).

DTYPE `f32`: weights, activations and AdamW in f32, TF32 off (PyTorch's default for matrix
products). `tf32`: the same with TF32 matrix products allowed (`allow_tf32`), which is what
CubeCL's autotune picks for our f32 matrix products on tensor-core GPUs. `bf16`: mixed precision
as PyTorch users train: f32 weights and AdamW state, the forward and backward under
`torch.autocast(dtype=torch.bfloat16)`.

On CUDA (the CPU when there is none, for a quick check): one warm-up step, then
GPU_BENCH_STEPS timed steps (default 3; forward with labels, backward, global-norm clipping at
1.0, fused AdamW lr 1e-5, no weight decay, gradients set to None), synchronised, and one line:

    METHOD MEDIAN_SECONDS TOKENS_PER_S LOSS_OF_FIRST_STEP TORCH_PEAK_RESERVED_MIB
"""
import importlib.util
import json
import os
import statistics
import sys
import time

if sys.argv[2:3] == ["qlora"] and importlib.util.find_spec("bitsandbytes") is None:
    print("skipped: bitsandbytes is not installed")
    sys.exit(0)

import torch  # noqa: E402
from transformers import AutoModelForCausalLM, LlamaConfig  # noqa: E402

# full, spectrum-* and lora are prepared as the CPU peer prepares them.
sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from bench_train_step import prepare  # noqa: E402


def qlora_model(config, device, dtype):
    """A random model of `config`, its linear layers quantized to NF4 by bitsandbytes."""
    from peft import LoraConfig, get_peft_model, prepare_model_for_kbit_training
    from transformers import BitsAndBytesConfig

    import tempfile

    with torch.device(device):
        model = AutoModelForCausalLM.from_config(config)
    with tempfile.TemporaryDirectory() as tmp:
        model.save_pretrained(tmp)
        del model
        quant = BitsAndBytesConfig(
            load_in_4bit=True, bnb_4bit_quant_type="nf4",
            bnb_4bit_compute_dtype=torch.bfloat16 if dtype == "bf16" else torch.float32, bnb_4bit_use_double_quant=False)
        model = AutoModelForCausalLM.from_pretrained(
            tmp, quantization_config=quant, device_map={"": device})
    model = prepare_model_for_kbit_training(model, use_gradient_checkpointing=False)
    lora = LoraConfig(r=64, lora_alpha=16, lora_dropout=0.0, target_modules="all-linear")
    return get_peft_model(model, lora)


def main(config_json, method, batch_json, dtype, trainable_txt=None):
    device = "cuda" if torch.cuda.is_available() else "cpu"
    if dtype not in ("f32", "tf32", "bf16"):
        sys.exit(f"unknown dtype {dtype}")
    torch.backends.cuda.matmul.allow_tf32 = dtype == "tf32"
    torch.manual_seed(0)
    with open(batch_json) as f:
        batch = {k: torch.tensor(v, dtype=torch.long, device=device)
                 for k, v in json.load(f).items()}
    config = LlamaConfig.from_json_file(config_json)
    if method == "qlora":
        model = qlora_model(config, device, dtype)
    else:
        with torch.device(device):
            model = AutoModelForCausalLM.from_config(config).to(torch.float32)
        model = prepare(model, method, trainable_txt)
    model.train()
    params = [p for p in model.parameters() if p.requires_grad]
    optimizer = torch.optim.AdamW(params, lr=1e-5, betas=(0.9, 0.999), eps=1e-8,
                                  weight_decay=0.0, fused=device == "cuda")
    autocast = torch.autocast(device_type=device, dtype=torch.bfloat16,
                              enabled=dtype == "bf16")

    def sync():
        if device == "cuda":
            torch.cuda.synchronize()

    def step():
        with autocast:
            loss = model(**batch).loss
        loss.backward()
        torch.nn.utils.clip_grad_norm_(params, 1.0)
        optimizer.step()
        optimizer.zero_grad(set_to_none=True)
        return loss.item()

    if device == "cuda":
        torch.cuda.reset_peak_memory_stats()
    first = step()
    times = []
    for _ in range(int(os.environ.get("GPU_BENCH_STEPS", "3"))):
        sync()
        start = time.perf_counter()
        step()
        sync()
        times.append(time.perf_counter() - start)
    seconds = statistics.median(times)
    tokens = batch["input_ids"].numel()
    reserved = torch.cuda.max_memory_reserved() / 2**20 if device == "cuda" else 0.0
    print(f"{method} {seconds:.4f} {tokens / seconds:.0f} {first:.6f} {reserved:.0f}")


if __name__ == "__main__":
    main(*sys.argv[1:])
