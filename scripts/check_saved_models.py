#!/usr/bin/env python3
"""Checks that transformers loads the models our save_pretrained writes and computes the logits
of the fixtures from them.

    SPECTRUM_SAVE_DIR=/tmp/saved cargo test --release --test model_reference save_then_load
    python scripts/check_saved_models.py /tmp/saved

Needs torch, transformers 4.46.3 and safetensors. Exits non-zero on a difference above 1e-5.
"""
import os
import sys

import torch
from safetensors.torch import load_file
from transformers import AutoModelForCausalLM

FIXTURES = os.path.join(os.path.dirname(__file__), "..", "tests", "fixtures", "models")


def main(saved_root):
    worst = 0.0
    for name in sorted(os.listdir(saved_root)):
        model = AutoModelForCausalLM.from_pretrained(
            os.path.join(saved_root, name), attn_implementation="eager").eval()
        expected = load_file(os.path.join(FIXTURES, name, "expected.safetensors"))
        with torch.no_grad():
            logits = model(expected["input_ids"], attention_mask=expected["attention_mask"]).logits
        diff = (logits - expected["logits"]).abs().max().item()
        worst = max(worst, diff)
        print(f"{name}: {type(model).__name__}, max |logit difference| {diff:.3g}")
    sys.exit(0 if worst <= 1e-5 else 1)


if __name__ == "__main__":
    main(sys.argv[1])
