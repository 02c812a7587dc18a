#!/usr/bin/env python3
"""LoRA adapters written by PEFT plus PEFT's outputs for them, on the tiny llama_gqa model.

Reference: peft 0.13.2 + transformers 4.46.3 (eager attention, float32, CPU, eval mode).
Run from the crate root (the base model path recorded in adapter_config.json is relative):

    python scripts/make_lora_fixtures.py tests/fixtures/lora

For each case writes tests/fixtures/lora/<case>/:
- adapter/: exactly what `peft_model.save_pretrained(dir)` writes (adapter_config.json,
  adapter_model.safetensors, README.md);
- expected.safetensors: input_ids, attention_mask (copied from the base model's fixture),
  logits [2, 16, vocab] of the PEFT model, merged_logits of `merge_and_unload()`, scaling
  (f32 [1]) and `merged.<module>.weight` [out, in] for two modules.

PEFT initialises lora_B to zeros (adapter = no-op), so every lora_B is overwritten with seeded
N(0, 1) * 0.1 after get_peft_model; lora_A keeps PEFT's kaiming-uniform init (seeded). In the
`modules_to_save` case the trainable copy of lm_head is perturbed the same way.

`target_modules="all-linear"` is stored by PEFT as a Python set, so its order in
adapter_config.json depends on string hashing; the script re-executes itself with
PYTHONHASHSEED=0 to make the file reproducible.
"""
import json
import os
import sys

if os.environ.get("PYTHONHASHSEED") != "0":
    os.environ["PYTHONHASHSEED"] = "0"
    os.execv(sys.executable, [sys.executable] + sys.argv)

import torch
from peft import LoraConfig, get_peft_model
from safetensors.torch import load_file, save_file
from transformers import LlamaForCausalLM

torch.set_num_threads(2)

BASE = "tests/fixtures/models/llama_gqa"

CASES = {
    "all_linear": dict(
        config=dict(r=4, lora_alpha=8, lora_dropout=0.0, target_modules="all-linear",
                    task_type="CAUSAL_LM"),
        merged=["model.layers.0.self_attn.q_proj", "model.layers.1.mlp.down_proj"],
        seed=100,
    ),
    "rslora_qv": dict(
        config=dict(r=8, lora_alpha=16, lora_dropout=0.0, use_rslora=True,
                    target_modules=["q_proj", "v_proj"], task_type="CAUSAL_LM"),
        merged=["model.layers.0.self_attn.q_proj", "model.layers.1.self_attn.v_proj"],
        seed=200,
    ),
    "modules_to_save": dict(
        config=dict(r=4, lora_alpha=4, lora_dropout=0.0, target_modules=["k_proj", "o_proj"],
                    modules_to_save=["lm_head"], task_type="CAUSAL_LM"),
        merged=["model.layers.0.self_attn.k_proj", "lm_head"],
        seed=300,
    ),
}


def load_base():
    model = LlamaForCausalLM.from_pretrained(BASE, attn_implementation="eager",
                                             torch_dtype=torch.float32)
    model.eval()
    return model


def main(out_root):
    inputs = load_file(os.path.join(BASE, "expected.safetensors"))
    input_ids, attention_mask = inputs["input_ids"], inputs["attention_mask"]

    for name, case in CASES.items():
        out = os.path.join(out_root, name)
        os.makedirs(out, exist_ok=True)
        torch.manual_seed(case["seed"])  # lora_A kaiming-uniform init
        peft_model = get_peft_model(load_base(), LoraConfig(**case["config"]))
        peft_model.eval()

        g = torch.Generator().manual_seed(case["seed"] + 1)
        scalings = set()
        with torch.no_grad():
            for mod_name, module in sorted(peft_model.named_modules()):
                if hasattr(module, "lora_B") and "default" in module.lora_B:
                    w = module.lora_B["default"].weight
                    w.copy_(torch.randn(w.shape, generator=g) * 0.1)
                    scalings.add(module.scaling["default"])
                if mod_name.endswith("modules_to_save.default"):
                    w = module.weight
                    w.add_(torch.randn(w.shape, generator=g) * 0.1)
        assert len(scalings) == 1, scalings
        scaling = scalings.pop()

        adapter_dir = os.path.join(out, "adapter")
        peft_model.save_pretrained(adapter_dir)

        with torch.no_grad():
            logits = peft_model(input_ids=input_ids, attention_mask=attention_mask).logits
            merged_model = peft_model.merge_and_unload()
            merged_logits = merged_model(input_ids=input_ids,
                                         attention_mask=attention_mask).logits

        tensors = {
            "input_ids": input_ids,
            "attention_mask": attention_mask,
            "logits": logits.contiguous(),
            "merged_logits": merged_logits.contiguous(),
            "scaling": torch.tensor([scaling], dtype=torch.float32),
        }
        merged_sd = merged_model.state_dict()
        for m in case["merged"]:
            tensors[f"merged.{m}.weight"] = merged_sd[f"{m}.weight"].contiguous()
        save_file(tensors, os.path.join(out, "expected.safetensors"))

        # Self-checks: merge formula W0 + scale * B @ A, and logits vs merged logits.
        base_sd = load_file(os.path.join(BASE, "model.safetensors"))
        ad = load_file(os.path.join(adapter_dir, "adapter_model.safetensors"))
        for m in case["merged"]:
            a_key = f"base_model.model.{m}.lora_A.weight"
            if a_key in ad:
                b = ad[f"base_model.model.{m}.lora_B.weight"]
                ref = base_sd[f"{m}.weight"] + scaling * (b @ ad[a_key])
            else:
                ref = ad[f"base_model.model.{m}.weight"]  # modules_to_save copy
            diff = (ref - tensors[f"merged.{m}.weight"]).abs().max().item()
            print(f"{name}: merge check {m}: max diff {diff:.3e}")
        base_logits = inputs["logits"]
        print(f"{name}: scaling {scaling}; |logits - merged_logits| max "
              f"{(logits - merged_logits).abs().max().item():.3e}; |logits - base logits| max "
              f"{(logits - base_logits).abs().max().item():.3e}")
        print(f"{name}: adapter keys:")
        for k, v in ad.items():
            print(f"  {k} {list(v.shape)}")


if __name__ == "__main__":
    main(sys.argv[1] if len(sys.argv) > 1 else "tests/fixtures/lora")
