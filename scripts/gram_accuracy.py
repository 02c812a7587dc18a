#!/usr/bin/env python3
"""How far SNRs from a Gram matrix summed in f32 drift from spectrum.py's, on a checkpoint.

For each 2-D weight W (short side V), the Gram matrix V V^T is summed in f64 over partial
products of K columns each made in f32 (torch's matmul), its eigenvalues taken in f64, and the
SNR scored as spectrum.py does; the largest relative difference from spectrum.py's own f32 SVD
is printed per K (0: one f32 product over the whole length), beside that of an f64 Gram matrix.
This is the study behind `F32_DEPTH` in src/spectrum/singular_values.rs.

    python scripts/gram_accuracy.py MODEL.safetensors [K ...]     (default K: 16 64 256 0)
"""
import sys

import numpy as np
import torch
from safetensors import safe_open


def snr(values, n, m):
    s = np.sort(values)[::-1].astype(np.float64)
    sigma = (np.quantile(s, 0.75) - np.quantile(s, 0.25)) / 1.349
    beta = n / m if n < m else m / n
    eps = sigma * np.sqrt((1 + np.sqrt(beta)) ** 2)
    signal = s[s > eps].sum()
    noise = s[s <= eps].sum() if (s <= eps).any() else 1.0
    return signal / noise / s[0]


def gram_snr(gram, n, m):
    return snr(torch.linalg.eigvalsh(gram).clamp(min=0).sqrt().numpy(), n, m)


def main():
    path, depths = sys.argv[1], [int(a) for a in sys.argv[2:]] or [16, 64, 256, 0]
    torch.set_num_threads(2)
    f = safe_open(path, "pt")
    worst = {k: (0.0, "") for k in ["f64"] + depths}
    for name in (k for k in f.keys() if k.endswith(".weight")):
        w = f.get_tensor(name).float()
        if w.ndim < 2:
            continue
        n, m = w.shape
        v = (w if n <= m else w.T).contiguous()
        reference = snr(torch.linalg.svdvals(w).numpy(), n, m)
        scores = {"f64": gram_snr(v.double() @ v.double().T, n, m)}
        for k in depths:
            step = k or v.shape[1]
            gram = torch.zeros(v.shape[0], v.shape[0], dtype=torch.float64)
            for start in range(0, v.shape[1], step):
                c = v[:, start:start + step]
                gram += (c @ c.T).double()
            scores[k] = gram_snr(gram, n, m)
        for k, value in scores.items():
            diff = abs(value - reference) / abs(reference)
            if diff > worst[k][0]:
                worst[k] = (diff, name)
    for k, (diff, name) in worst.items():
        label = "f64 Gram" if k == "f64" else f"f32 partial products of {k or 'all'} columns"
        print(f"{label}: largest relative SNR difference {diff:.2e} ({name})")


if __name__ == "__main__":
    main()
