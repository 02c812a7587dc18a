#!/usr/bin/env python3
"""Reference fixtures for the Spectrum tests, computed with torch by spectrum.py's formula.

Run once with Debian's python3-torch (1.13) plus `safetensors` (ARCHITECTURE.md, "Assets"):

    python scripts/make_fixtures.py tests/fixtures

Writes:
- snr_cases.json: small matrices (square, tall, wide, 1-D, all values above the threshold),
  their singular values (torch.linalg.svdvals) and the `spectrum` and `legacy` scores, plus
  torch.quantile cases;
- tiny_llama/model.safetensors (f32), tiny_f16.safetensors, tiny_bf16.safetensors, and
  tiny_sharded/ (two shards and model.safetensors.index.json): a toy Llama-named checkpoint;
- tiny_expected_<dtype>_<threshold>.json: spectrum.py's table for it (json.dump, indent=4).
"""
import json
import os
import sys

import numpy as np
import torch
from safetensors.torch import save_file

sys.path.insert(0, os.path.dirname(__file__))
from spectrum_reference import snr, weight_type, type_order  # noqa: E402


def score_details(w, threshold):
    """The score, and the intermediate values, as spectrum.py computes them."""
    w2 = w.unsqueeze(0) if w.ndim < 2 else w
    S = torch.linalg.svdvals(w2)
    sigma = (torch.quantile(S, 0.75) - torch.quantile(S, 0.25)) / 1.349
    n, m = w2.shape[-2:]
    beta = n / m if n < m else m / n
    eps = sigma * np.sqrt((1 + np.sqrt(beta)) ** 2)
    value = snr(w, threshold)
    return {
        # Non-finite as a string ("inf"): snr_cases.json stays strict JSON.
        "snr": value if np.isfinite(value) else str(value),
        "largest": S[0].item(),
        "noise_threshold": float(eps),
        "signal_count": int((S > eps).sum()),
    }


def matrix_cases(rng):
    def orthogonal(k):
        q, _ = np.linalg.qr(rng.standard_normal((k, k)))
        return q

    low_rank = rng.standard_normal((24, 3)) @ rng.standard_normal((3, 24)) * 2.0
    all_signal = orthogonal(8) @ np.diag(np.linspace(11.0, 10.0, 8)) @ orthogonal(8)
    return {
        "square_low_rank_plus_noise": low_rank + rng.standard_normal((24, 24)),
        "square_noise": rng.standard_normal((24, 24)),
        "tall": rng.standard_normal((40, 12)) + np.outer(rng.standard_normal(40), rng.standard_normal(12)),
        "wide": rng.standard_normal((12, 40)) * 0.02,
        "one_dimensional": rng.standard_normal(16) + 1.0,
        "all_above_threshold": all_signal,
        "scaled_heavy_tail": rng.standard_t(3, (30, 20)) * 5.0,
    }


def write_json(path, obj):
    with open(path, "w") as f:
        json.dump(obj, f, indent=2)


def snr_cases(out, rng):
    cases = []
    for name, values in matrix_cases(rng).items():
        w = torch.tensor(values, dtype=torch.float32)
        w2 = w.unsqueeze(0) if w.ndim < 2 else w
        cases.append({
            "name": name,
            "shape": list(w.shape),
            "data": w.flatten().tolist(),
            "singular_values": torch.linalg.svdvals(w2).tolist(),
            "spectrum": score_details(w, "spectrum"),
            "legacy": score_details(w, "legacy"),
        })
    quantiles = []
    for n in [1, 2, 5, 6, 12, 13]:
        v = torch.tensor(np.sort(rng.standard_normal(n)), dtype=torch.float32)
        for q in [0.25, 0.75, 0.5, 0.1]:
            quantiles.append({"values": v.tolist(), "q": q, "expected": torch.quantile(v, q).item()})
    write_json(os.path.join(out, "snr_cases.json"), {"matrices": cases, "quantiles": quantiles})


def tiny_checkpoint(rng):
    """A toy Llama: hidden 16, 2 layers, vocab 64, intermediate 40; norms near 1."""
    t = lambda *shape: torch.tensor(rng.standard_normal(shape) * 0.1, dtype=torch.float32)
    tensors = {"model.embed_tokens.weight": t(64, 16), "model.norm.weight": 1.0 + t(16), "lm_head.weight": t(64, 16)}
    for i in range(2):
        p = f"model.layers.{i}."
        tensors.update({
            p + "input_layernorm.weight": 1.0 + t(16),
            p + "post_attention_layernorm.weight": 1.0 + t(16),
            p + "self_attn.q_proj.weight": t(16, 16) + torch.outer(t(16), t(16)) * 20,
            p + "self_attn.k_proj.weight": t(8, 16),
            p + "self_attn.v_proj.weight": t(8, 16),
            p + "self_attn.o_proj.weight": t(16, 16),
            p + "mlp.gate_proj.weight": t(40, 16),
            p + "mlp.up_proj.weight": t(40, 16),
            p + "mlp.down_proj.weight": t(16, 40),
        })
    # Not a weight: spectrum.py scores only `.weight`s.
    tensors["model.layers.0.self_attn.q_proj.bias"] = t(16)
    return tensors


def expected_table(tensors, threshold):
    by_type = {}
    for name in tensors:
        if name.endswith(".weight"):
            by_type.setdefault(weight_type(name[: -len(".weight")]), []).append(name)
    layer_index = lambda n: [int(p) if p.isdigit() else -1 for p in n.split(".")]
    table = {}
    for t in type_order(by_type):
        for name in sorted(by_type[t], key=layer_index):
            table[name[: -len(".weight")]] = {"snr": snr(tensors[name].float(), threshold), "type": t}
    return table


def main():
    out = sys.argv[1]
    os.makedirs(out, exist_ok=True)
    rng = np.random.default_rng(20240610)
    snr_cases(out, rng)
    tensors = tiny_checkpoint(rng)
    os.makedirs(os.path.join(out, "tiny_llama"), exist_ok=True)
    save_file(tensors, os.path.join(out, "tiny_llama", "model.safetensors"))
    for dtype, name in [(torch.float16, "f16"), (torch.bfloat16, "bf16")]:
        cast = {k: v.to(dtype) for k, v in tensors.items()}
        save_file(cast, os.path.join(out, f"tiny_{name}.safetensors"))
        with open(os.path.join(out, f"tiny_expected_{name}_spectrum.json"), "w") as f:
            json.dump(expected_table(cast, "spectrum"), f, indent=4)
    for threshold in ["spectrum", "legacy"]:
        with open(os.path.join(out, f"tiny_expected_f32_{threshold}.json"), "w") as f:
            json.dump(expected_table(tensors, threshold), f, indent=4)
    shard_dir = os.path.join(out, "tiny_sharded")
    os.makedirs(shard_dir, exist_ok=True)
    names = sorted(tensors)
    shards = {"model-00001-of-00002.safetensors": names[: len(names) // 2],
              "model-00002-of-00002.safetensors": names[len(names) // 2:]}
    weight_map = {}
    for file, keys in shards.items():
        save_file({k: tensors[k] for k in keys}, os.path.join(shard_dir, file))
        weight_map.update({k: file for k in keys})
    write_json(os.path.join(shard_dir, "model.safetensors.index.json"),
               {"metadata": {"total_size": 0}, "weight_map": weight_map})


if __name__ == "__main__":
    main()
