#!/usr/bin/env python3
"""spectrum.py's SNR formula in torch, on a safetensors checkpoint: the reference we compare to.

Same semantics as cognitivecomputations/spectrum (`spectrum`: noise 1.0 when no value is at or
below the threshold; `legacy`: a zero noise gives inf), written out here so it runs on a
checkpoint without transformers. Writes `snr_results_<slug>.json` as spectrum.py does
(json.dump, indent=4) and prints the seconds spent in the scan itself.

    python scripts/spectrum_reference.py MODEL_DIR_OR_FILE OUT_JSON [--threshold spectrum|legacy] [--threads 2]
"""
import argparse
import glob
import json
import os
import time

import numpy as np
import torch
from safetensors import safe_open


def weight_type(name):
    parts = name.split(".")
    index = next((i for i, p in enumerate(parts) if p.isdigit()), -1)
    return ".".join(parts[index + 1:]) if index != -1 else name


def type_order(types):
    groups = {}
    for t in types:
        groups.setdefault(t.split(".")[0], []).append(t)
    return [t for g in sorted(groups) for t in sorted(groups[g])]


def snr(weights, threshold):
    if weights.ndim < 2:
        weights = weights.unsqueeze(0)
    S = torch.linalg.svdvals(weights)
    max_singular_value = S[0]
    sigma = (torch.quantile(S, 0.75) - torch.quantile(S, 0.25)) / 1.349
    n, m = weights.shape[-2:]
    beta = n / m if n < m else m / n
    eps = sigma * np.sqrt((1 + np.sqrt(beta)) ** 2)
    signal_mask = S > eps
    noise_mask = ~signal_mask
    signal = S[signal_mask].sum() if signal_mask.any() else torch.tensor(0.0)
    if threshold == "spectrum":
        noise = S[noise_mask].sum() if noise_mask.any() else torch.tensor(1.0)
    else:
        noise = S[noise_mask].sum()
    ratio = signal / noise if noise != 0 else float("inf")
    return (ratio / max_singular_value).item()


def files_of(path):
    if os.path.isfile(path):
        return [path]
    return sorted(glob.glob(os.path.join(path, "*.safetensors")))


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("model")
    ap.add_argument("out_json")
    ap.add_argument("--threshold", default="spectrum", choices=["spectrum", "legacy"])
    ap.add_argument("--threads", type=int, default=2)
    args = ap.parse_args()
    torch.set_num_threads(args.threads)
    handles = [safe_open(f, framework="pt") for f in files_of(args.model)]
    names = {n: h for h in handles for n in h.keys() if n.endswith(".weight")}
    by_type = {}
    for name in names:
        by_type.setdefault(weight_type(name[: -len(".weight")]), []).append(name)
    layer_index = lambda n: [int(p) if p.isdigit() else -1 for p in n.split(".")]
    start = time.perf_counter()
    results = {}
    for t in type_order(by_type):
        for name in sorted(by_type[t], key=layer_index):
            weights = names[name].get_tensor(name).to(torch.float32)
            results[name[: -len(".weight")]] = {"snr": snr(weights, args.threshold), "type": t}
    seconds = time.perf_counter() - start
    with open(args.out_json, "w") as f:
        json.dump(results, f, indent=4)
    print(f"reference scan: {len(results)} weights in {seconds:.2f} s")


if __name__ == "__main__":
    main()
