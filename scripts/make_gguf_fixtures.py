#!/usr/bin/env python3
"""Make the GGUF import fixtures in tests/fixtures/gguf/ with gguf-py (the reference).

    /work/refenv/bin/python scripts/make_gguf_fixtures.py [OUT_DIR]   # default tests/fixtures/gguf

Writes (all small, deterministic with a fixed seed):

- blocks.safetensors: for each ggml type T in F16, BF16, Q8_0, Q4_0, Q4_1, Q4_K, Q6_K two
  tensors: `T.bytes` (U8, raw little-endian blocks) and `T.expected` (F32,
  `gguf.quants.dequantize(bytes, T)`). The 32-value types hold blocks that gguf-py quantized
  from random normals plus blocks of random bytes; the K-quants (which gguf-py cannot quantize)
  hold random bytes whose f16 scale fields (`d`, `dmin`) are set to finite normal values.
- tiny_llama.gguf: a llama-architecture GGUF (hidden 64, 2 layers, 4 heads, 2 KV heads,
  head_dim 16, FFN 256, a byte-level BPE vocabulary of 3 control tokens + 256 byte tokens +
  merges + 1 user-defined token, pre-tokenizer `smollm`), tensors in a mix of F32, F16, BF16,
  Q8_0, Q4_0, Q4_1, Q4_K, Q6_K, q/k rows permuted as llama.cpp's convert_hf_to_gguf does, an
  untied `output.weight`, and a `rope_freqs.weight` the importer must report as skipped.
- tiny_llama_expected.safetensors: the Hugging Face-named F32 tensors the importer must
  produce: each GGUF tensor read back with gguf.GGUFReader, dequantized with gguf-py, and its
  q/k rows un-permuted with numpy.
- tiny_llama_expected.json: `config` (config.json values the importer must write), and
  `tokenizer` (`vocab` in id order, `merges`, `added_tokens` as [id, content, special]),
  `skipped` (GGUF tensors without an HF name).
"""
import json
import os
import sys

import numpy as np
import gguf
from gguf import GGMLQuantizationType as T, GGUFReader, GGUFWriter, TokenType
from gguf.quants import dequantize, quantize
from safetensors.numpy import save_file

RNG = np.random.default_rng(20240611)

HIDDEN, LAYERS, HEADS, KV_HEADS, FFN, CONTEXT = 64, 2, 4, 2, 256, 256
HEAD_DIM = HIDDEN // HEADS
RMS_EPS, ROPE_THETA = 1e-6, 10000.0

# Byte offsets of the f16 scale fields in one block of each K-quant (ggml's block layout).
K_QUANT_F16_FIELDS = {T.Q4_K: [0, 2], T.Q6_K: [208]}


def f16_scales(n):
    """n finite normal f16 values of moderate magnitude (about 1e-3 to 2e-2), random sign."""
    mag = RNG.uniform(0.1, 2.0, n) * 0.01
    return (mag * RNG.choice([-1.0, 1.0], n)).astype(np.float16)


def random_blocks(qtype, n_blocks):
    """Random bytes for n_blocks blocks of qtype, with sane f16 scale fields."""
    _, type_size = gguf.GGML_QUANT_SIZES[qtype]
    blocks = RNG.integers(0, 256, (n_blocks, type_size), dtype=np.uint8)
    fields = K_QUANT_F16_FIELDS.get(qtype, [0, 2] if qtype == T.Q4_1 else [0])
    for at in fields:
        blocks[:, at:at + 2] = f16_scales(n_blocks).view(np.uint8).reshape(n_blocks, 2)
    return blocks.reshape(-1)


def block_fixture(qtype):
    """Raw bytes of a few blocks of qtype (1-D uint8)."""
    if qtype == T.F16:
        values = np.concatenate([
            RNG.standard_normal(60).astype(np.float16),
            np.array([0.0, -0.0, 6.0e-8, -3.0e-5, 65504.0], dtype=np.float16),  # zeros, subnormals, max
        ])
        return values.view(np.uint8)
    if qtype == T.BF16:
        values = np.concatenate([RNG.standard_normal(60) * 10.0 ** RNG.integers(-30, 30, 60),
                                 [0.0, -0.0, 1e-40]]).astype(np.float32)
        return quantize(values, T.BF16).reshape(-1)
    if qtype in K_QUANT_F16_FIELDS:
        return random_blocks(qtype, 4)
    quantized = quantize(RNG.standard_normal((4, 32)).astype(np.float32), qtype).reshape(-1)
    return np.concatenate([quantized, random_blocks(qtype, 4)])


def make_blocks(out_dir):
    tensors = {}
    for qtype in [T.F16, T.BF16, T.Q8_0, T.Q4_0, T.Q4_1, T.Q4_K, T.Q6_K]:
        raw = block_fixture(qtype)
        expected = dequantize(raw, qtype).astype(np.float32).reshape(-1)
        assert np.all(np.isfinite(expected)), qtype.name
        tensors[f"{qtype.name}.bytes"] = raw
        tensors[f"{qtype.name}.expected"] = expected
    save_file(tensors, os.path.join(out_dir, "blocks.safetensors"))


def byte_level_alphabet():
    """GPT-2's byte -> printable character table (bytes 33..126, 161..172, 174..255 map to
    themselves; the other bytes to 256, 257, ... in byte order)."""
    printable = set(range(ord("!"), ord("~") + 1)) | set(range(0xA1, 0xAD)) | set(range(0xAE, 0x100))
    table, extra = {}, 0
    for b in range(256):
        if b in printable:
            table[b] = chr(b)
        else:
            table[b] = chr(256 + extra)
            extra += 1
    return [table[b] for b in range(256)]


def make_vocab():
    """Tokens, token types, merges of a small byte-level BPE vocabulary."""
    control = ["<|endoftext|>", "<|im_start|>", "<|im_end|>"]
    merges = ["Ġ t", "h e", "Ġt he", "i n", "Ġ a", "e r", "Ġ Ġ", "o n", "Ġa n", "Ġan d"]
    merged = [m.replace(" ", "") for m in merges]
    user_defined = ["<tool>"]
    tokens = control + byte_level_alphabet() + merged + user_defined
    types = ([TokenType.CONTROL] * len(control) + [TokenType.NORMAL] * (256 + len(merged))
             + [TokenType.USER_DEFINED] * len(user_defined))
    assert len(set(tokens)) == len(tokens)
    return tokens, [int(t) for t in types], merges


def permute(w, n_head):
    """llama.cpp's convert_hf_to_gguf LlamaModel.permute: HF rotary rows -> GGUF rows."""
    return (w.reshape(n_head, 2, w.shape[0] // n_head // 2, *w.shape[1:])
            .swapaxes(1, 2).reshape(w.shape))


def unpermute(w, n_head):
    """The inverse of permute, as the importer must do it."""
    return (w.reshape(n_head, w.shape[0] // n_head // 2, 2, *w.shape[1:])
            .swapaxes(1, 2).reshape(w.shape))


def encode(values, qtype):
    """values (f32) in the GGUF storage of qtype: an array GGUFWriter.add_tensor accepts."""
    if qtype == T.F32:
        return values.astype(np.float32)
    if qtype == T.F16:
        return values.astype(np.float16)
    return quantize(values.astype(np.float32), qtype)


def k_quant_matrix(rows, cols, qtype):
    """Random K-quant bytes for a [rows, cols] matrix (gguf-py cannot quantize K-quants)."""
    _, type_size = gguf.GGML_QUANT_SIZES[qtype]
    return random_blocks(qtype, rows * cols // 256).reshape(rows, cols // 256 * type_size)


# Storage type of each tensor (per layer for blk.N.*); covers every supported type.
LAYER_TYPES = [
    {"attn_q": T.Q4_0, "attn_k": T.Q8_0, "attn_v": T.F16, "attn_output": T.Q4_1,
     "ffn_gate": T.Q4_0, "ffn_up": T.F16, "ffn_down": T.Q4_K},
    {"attn_q": T.Q8_0, "attn_k": T.Q4_1, "attn_v": T.Q4_0, "attn_output": T.F16,
     "ffn_gate": T.Q8_0, "ffn_up": T.Q4_1, "ffn_down": T.Q6_K},
]
LAYER_SHAPES = {
    "attn_q": (HEADS * HEAD_DIM, HIDDEN), "attn_k": (KV_HEADS * HEAD_DIM, HIDDEN),
    "attn_v": (KV_HEADS * HEAD_DIM, HIDDEN), "attn_output": (HIDDEN, HEADS * HEAD_DIM),
    "ffn_gate": (FFN, HIDDEN), "ffn_up": (FFN, HIDDEN), "ffn_down": (HIDDEN, FFN),
}
HF_LAYER_NAMES = {
    "attn_norm": "input_layernorm", "ffn_norm": "post_attention_layernorm",
    "attn_q": "self_attn.q_proj", "attn_k": "self_attn.k_proj", "attn_v": "self_attn.v_proj",
    "attn_output": "self_attn.o_proj", "ffn_gate": "mlp.gate_proj", "ffn_up": "mlp.up_proj",
    "ffn_down": "mlp.down_proj",
}
HF_TOP_NAMES = {"token_embd": "model.embed_tokens", "output_norm": "model.norm", "output": "lm_head"}


def hf_name(name):
    """The Hugging Face name of a GGUF tensor, or None (rope_freqs)."""
    base = name.rsplit(".", 1)[0]
    parts = base.split(".")
    if parts[0] == "blk":
        return f"model.layers.{parts[1]}.{HF_LAYER_NAMES[parts[2]]}.weight"
    if base in HF_TOP_NAMES:
        return f"{HF_TOP_NAMES[base]}.weight"
    return None


def make_tiny_llama(out_dir):
    tokens, types, merges = make_vocab()
    vocab = len(tokens)
    path = os.path.join(out_dir, "tiny_llama.gguf")
    w = GGUFWriter(path, "llama")
    w.add_name("tiny llama fixture")
    w.add_context_length(CONTEXT)
    w.add_embedding_length(HIDDEN)
    w.add_block_count(LAYERS)
    w.add_feed_forward_length(FFN)
    w.add_head_count(HEADS)
    w.add_head_count_kv(KV_HEADS)
    w.add_rope_freq_base(ROPE_THETA)
    w.add_layer_norm_rms_eps(RMS_EPS)
    w.add_rope_dimension_count(HEAD_DIM)
    w.add_vocab_size(vocab)
    w.add_tokenizer_model("gpt2")
    w.add_tokenizer_pre("smollm")
    w.add_token_list(tokens)
    w.add_token_types(types)
    w.add_token_merges(merges)
    w.add_bos_token_id(1)
    w.add_eos_token_id(2)
    w.add_unk_token_id(0)
    w.add_pad_token_id(2)
    w.add_add_bos_token(False)
    w.add_chat_template("{% for m in messages %}<|im_start|>{{ m['role'] }}\n{{ m['content'] }}<|im_end|>\n{% endfor %}")

    def normal(*shape, scale=0.05):
        return (RNG.standard_normal(shape) * scale).astype(np.float32)

    w.add_tensor("token_embd.weight", encode(normal(vocab, HIDDEN), T.Q8_0), raw_dtype=T.Q8_0)
    for layer, layer_types in enumerate(LAYER_TYPES):
        w.add_tensor(f"blk.{layer}.attn_norm.weight", 1.0 + normal(HIDDEN))
        w.add_tensor(f"blk.{layer}.ffn_norm.weight", 1.0 + normal(HIDDEN))
        for part, qtype in layer_types.items():
            rows, cols = LAYER_SHAPES[part]
            if qtype in K_QUANT_F16_FIELDS:
                stored = k_quant_matrix(rows, cols, qtype)
            else:
                hf = normal(rows, cols)
                if part == "attn_q":
                    hf = permute(hf, HEADS)
                elif part == "attn_k":
                    hf = permute(hf, KV_HEADS)
                stored = encode(hf, qtype)
            raw_dtype = None if qtype in (T.F32, T.F16) else qtype
            w.add_tensor(f"blk.{layer}.{part}.weight", stored, raw_dtype=raw_dtype)
    w.add_tensor("output_norm.weight", 1.0 + normal(HIDDEN))
    w.add_tensor("output.weight", encode(normal(vocab, HIDDEN), T.BF16), raw_dtype=T.BF16)
    w.add_tensor("rope_freqs.weight", np.linspace(1.0, 8.0, HEAD_DIM // 2, dtype=np.float32))
    w.write_header_to_file()
    w.write_kv_data_to_file()
    w.write_tensors_to_file()
    w.close()
    return path, tokens, types, merges


def make_expected(out_dir, path, tokens, types, merges):
    """Read tiny_llama.gguf back with gguf-py and write what the importer must produce."""
    reader = GGUFReader(path)
    expected, skipped = {}, []
    for t in reader.tensors:
        name = hf_name(t.name)
        if name is None:
            skipped.append(t.name)
            continue
        shape = [int(d) for d in reversed(t.shape.tolist())]
        values = dequantize(t.data, t.tensor_type).reshape(shape).astype(np.float32)
        if ".self_attn.q_proj." in name:
            values = unpermute(values, HEADS)
        elif ".self_attn.k_proj." in name:
            values = unpermute(values, KV_HEADS)
        expected[name] = np.ascontiguousarray(values)
    save_file(expected, os.path.join(out_dir, "tiny_llama_expected.safetensors"), metadata={"format": "pt"})
    config = {
        "architectures": ["LlamaForCausalLM"], "model_type": "llama", "hidden_size": HIDDEN,
        "num_hidden_layers": LAYERS, "num_attention_heads": HEADS,
        "num_key_value_heads": KV_HEADS, "head_dim": HEAD_DIM, "intermediate_size": FFN,
        "max_position_embeddings": CONTEXT, "rms_norm_eps": RMS_EPS, "rope_theta": ROPE_THETA,
        "rope_scaling": None, "vocab_size": len(tokens), "tie_word_embeddings": False,
        "bos_token_id": 1, "eos_token_id": 2, "pad_token_id": 2, "hidden_act": "silu",
        "attention_bias": False, "mlp_bias": False, "torch_dtype": "float32",
    }
    added = [[i, tok, ty == TokenType.CONTROL] for i, (tok, ty) in enumerate(zip(tokens, types))
             if ty in (TokenType.CONTROL, TokenType.USER_DEFINED)]
    doc = {"config": config, "skipped": skipped,
           "tokenizer": {"vocab": tokens, "merges": merges, "added_tokens": added}}
    with open(os.path.join(out_dir, "tiny_llama_expected.json"), "w") as f:
        json.dump(doc, f, indent=1, ensure_ascii=False)
        f.write("\n")


def main():
    here = os.path.dirname(os.path.abspath(__file__))
    out_dir = sys.argv[1] if len(sys.argv) > 1 else os.path.join(here, "..", "tests", "fixtures", "gguf")
    os.makedirs(out_dir, exist_ok=True)
    make_blocks(out_dir)
    path, tokens, types, merges = make_tiny_llama(out_dir)
    make_expected(out_dir, path, tokens, types, merges)
    for name in sorted(os.listdir(out_dir)):
        print(f"{os.path.getsize(os.path.join(out_dir, name)):>8}  {name}")


if __name__ == "__main__":
    main()
