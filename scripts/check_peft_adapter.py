#!/usr/bin/env python3
"""Check a LoRA adapter folder with PEFT itself (peft 0.13.2, transformers 4.46.3, CPU, f32).

    python scripts/check_peft_adapter.py BASE_MODEL_DIR ADAPTER_DIR INPUTS.safetensors \
        [--logits FILE.safetensors] [--key logits] [--merged] [--tol T]

Loads the base model (eager attention, float32, eval), wraps it with
`PeftModel.from_pretrained(base, ADAPTER_DIR)`, runs it on `input_ids` / `attention_mask` from
INPUTS and prints the max |difference| with the tensor KEY (default `logits`) of --logits
(default: INPUTS itself). With --merged the logits come from `merge_and_unload()` instead.
Also prints the adapter's modules, r, alpha and scaling as PEFT sees them. Exits 1 when the
difference exceeds --tol (default: no limit).
"""
import argparse
import sys

import torch
from peft import PeftModel
from safetensors.torch import load_file
from transformers import AutoModelForCausalLM

torch.set_num_threads(2)


def main():
    p = argparse.ArgumentParser()
    p.add_argument("base_model_dir")
    p.add_argument("adapter_dir")
    p.add_argument("inputs")
    p.add_argument("--logits", default=None)
    p.add_argument("--key", default="logits")
    p.add_argument("--merged", action="store_true")
    p.add_argument("--tol", type=float, default=None)
    args = p.parse_args()

    inputs = load_file(args.inputs)
    expected = load_file(args.logits or args.inputs)[args.key]

    base = AutoModelForCausalLM.from_pretrained(args.base_model_dir, attn_implementation="eager",
                                                torch_dtype=torch.float32)
    model = PeftModel.from_pretrained(base, args.adapter_dir)
    model.eval()

    n_lora = 0
    for name, module in model.named_modules():
        if hasattr(module, "lora_A") and "default" in module.lora_A:
            n_lora += 1
    cfg = model.peft_config["default"]
    scalings = {m.scaling["default"] for m in model.modules()
                if hasattr(m, "scaling") and "default" in getattr(m, "scaling", {})}
    print(f"adapter: {n_lora} LoRA modules, r={cfg.r}, alpha={cfg.lora_alpha}, "
          f"use_rslora={cfg.use_rslora}, target_modules={sorted(cfg.target_modules)}, "
          f"modules_to_save={cfg.modules_to_save}, scaling={sorted(scalings)}")

    with torch.no_grad():
        if args.merged:
            model = model.merge_and_unload()
        mask = inputs.get("attention_mask")
        logits = model(input_ids=inputs["input_ids"], attention_mask=mask).logits

    if logits.shape != expected.shape:
        print(f"shape mismatch: PEFT {list(logits.shape)} vs stored {list(expected.shape)}")
        sys.exit(1)
    diff = (logits - expected.to(logits.dtype)).abs().max().item()
    print(f"max |logit difference| = {diff:.6e}")
    if args.tol is not None and diff > args.tol:
        sys.exit(1)


if __name__ == "__main__":
    main()
