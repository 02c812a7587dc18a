#!/usr/bin/env python3
"""Dequantize a llama-architecture GGUF into a Hugging Face safetensors folder, with gguf-py.

An independent reference for `spectrum import-gguf`: on SmolLM2-135M (ARCHITECTURE.md, "Assets")
every tensor the importer writes equals this script's bit for bit. Tensor names and the q/k
un-permutation follow ARCHITECTURE.md ("GGUF names"). Weights only (no tokenizer).

    python scripts/gguf_to_hf.py SmolLM2-135M-Instruct.Q4_1.gguf /tmp/smollm2_gguf_py [--dtype f16]

Needs only `gguf`, `numpy` and `safetensors` (no torch).
"""
import argparse
import json
import os

import numpy as np
from gguf import GGUFReader
from gguf.quants import dequantize
from safetensors.numpy import save_file

BLOCK_NAMES = {
    "attn_norm": "input_layernorm",
    "ffn_norm": "post_attention_layernorm",
    "attn_q": "self_attn.q_proj",
    "attn_k": "self_attn.k_proj",
    "attn_v": "self_attn.v_proj",
    "attn_output": "self_attn.o_proj",
    "ffn_gate": "mlp.gate_proj",
    "ffn_up": "mlp.up_proj",
    "ffn_down": "mlp.down_proj",
}
TOP_NAMES = {"token_embd": "model.embed_tokens", "output_norm": "model.norm", "output": "lm_head"}


def hf_name(gguf_name):
    base, suffix = gguf_name.rsplit(".", 1)
    parts = base.split(".")
    if parts[0] == "blk":
        return f"model.layers.{parts[1]}.{BLOCK_NAMES[parts[2]]}.{suffix}"
    return f"{TOP_NAMES[base]}.{suffix}"


def unpermute(rows, heads):
    """llama.cpp stores q/k rows as [heads, head_dim/2, 2]; HF as [heads, 2, head_dim/2]."""
    out, inp = rows.shape
    return rows.reshape(heads, out // heads // 2, 2, inp).swapaxes(1, 2).reshape(out, inp)


def field(reader, key):
    f = reader.fields[key]
    return f.parts[f.data[0]].tolist()[0] if len(f.data) == 1 else [f.parts[i] for i in f.data]


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("gguf")
    ap.add_argument("out_dir")
    ap.add_argument("--dtype", default="f32", choices=["f32", "f16"])
    args = ap.parse_args()
    reader = GGUFReader(args.gguf)
    heads = field(reader, "llama.attention.head_count")
    kv_heads = field(reader, "llama.attention.head_count_kv")
    dtype = {"f32": np.float32, "f16": np.float16}[args.dtype]
    tensors = {}
    for t in reader.tensors:
        shape = [int(d) for d in reversed(t.shape.tolist())]
        values = dequantize(t.data, t.tensor_type).reshape(shape).astype(np.float32)
        name = hf_name(t.name)
        if ".self_attn.q_proj." in name:
            values = unpermute(values, heads)
        elif ".self_attn.k_proj." in name:
            values = unpermute(values, kv_heads)
        tensors[name] = np.ascontiguousarray(values.astype(dtype))
    os.makedirs(args.out_dir, exist_ok=True)
    tmp = os.path.join(args.out_dir, "model.safetensors.tmp")
    save_file(tensors, tmp, metadata={"format": "pt"})
    os.replace(tmp, os.path.join(args.out_dir, "model.safetensors"))
    config = {
        "model_type": "llama",
        "hidden_size": field(reader, "llama.embedding_length"),
        "num_hidden_layers": field(reader, "llama.block_count"),
        "num_attention_heads": heads,
        "num_key_value_heads": kv_heads,
        "intermediate_size": field(reader, "llama.feed_forward_length"),
        "tie_word_embeddings": "lm_head.weight" not in tensors,
    }
    with open(os.path.join(args.out_dir, "config.json"), "w") as f:
        json.dump(config, f, indent=2)
    print(f"wrote {len(tensors)} tensors to {args.out_dir}")


if __name__ == "__main__":
    main()
