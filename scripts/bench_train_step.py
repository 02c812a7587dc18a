#!/usr/bin/env python3
"""The PyTorch peer of `cargo bench --bench train_step`: one training step, same workload.

    python scripts/bench_train_step.py MODEL_DIR METHOD BATCH_JSON [TRAINABLE_TXT]

METHOD is `full`, `spectrum-<k>` (the parameters named one per line in TRAINABLE_TXT train,
as our selection chose them) or `lora` (PEFT, r 16, alpha 32, all-linear, no dropout).
BATCH_JSON holds `input_ids`, `attention_mask` and `labels` ([batch][seq], -100 ignored), as the
Rust bench wrote them, so both sides see the same tokens.

The model loads in f32 (transformers' default attention, sdpa), torch uses 2 threads. Then
the peak resident memory is reset (/proc/self/clear_refs), one warm-up step and five timed
steps run (forward with labels, backward, global-norm clipping at 1.0, AdamW lr 1e-5, no
weight decay, betas (0.9, 0.999), eps 1e-8, gradients set to None), and one line is printed:

    METHOD MEDIAN_SECONDS PEAK_STEP_MIB LOSS_OF_FIRST_STEP
"""
import json
import statistics
import sys
import time

import torch
from transformers import AutoModelForCausalLM

THREADS = 2
TIMED_STEPS = 5


def peak_mib():
    with open("/proc/self/status") as status:
        for line in status:
            if line.startswith("VmHWM:"):
                return int(line.split()[1]) / 1024.0
    return 0.0


def prepare(model, method, trainable_txt):
    if method == "full":
        return model
    if method.startswith("spectrum"):
        with open(trainable_txt) as f:
            names = {line.strip() for line in f if line.strip()}
        found = set()
        for name, param in model.named_parameters():
            param.requires_grad_(name in names)
            if name in names:
                found.add(name)
        missing = names - found
        if missing:
            sys.exit(f"not in the model: {sorted(missing)[:5]}")
        return model
    if method == "lora":
        from peft import LoraConfig, get_peft_model

        config = LoraConfig(r=16, lora_alpha=32, lora_dropout=0.0, target_modules="all-linear")
        return get_peft_model(model, config)
    sys.exit(f"unknown method {method}")


def main(model_dir, method, batch_json, trainable_txt=None):
    torch.set_num_threads(THREADS)
    torch.manual_seed(0)
    with open(batch_json) as f:
        batch = {k: torch.tensor(v, dtype=torch.long) for k, v in json.load(f).items()}
    model = AutoModelForCausalLM.from_pretrained(model_dir, torch_dtype=torch.float32)
    model = prepare(model, method, trainable_txt)
    model.train()
    params = [p for p in model.parameters() if p.requires_grad]
    optimizer = torch.optim.AdamW(
        params, lr=1e-5, betas=(0.9, 0.999), eps=1e-8, weight_decay=0.0)

    def step():
        loss = model(**batch).loss
        loss.backward()
        torch.nn.utils.clip_grad_norm_(params, 1.0)
        optimizer.step()
        optimizer.zero_grad(set_to_none=True)
        return loss.item()

    try:
        with open("/proc/self/clear_refs", "w") as f:
            f.write("5")
    except OSError:
        pass
    first_loss = step()
    times = []
    for _ in range(TIMED_STEPS):
        started = time.perf_counter()
        step()
        times.append(time.perf_counter() - started)
    print(f"{method} {statistics.median(times):.3f} {peak_mib():.1f} {first_loss:.6f}")


if __name__ == "__main__":
    main(*sys.argv[1:])
