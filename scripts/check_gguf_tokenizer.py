#!/usr/bin/env python3
"""Compare the tokenizer that `spectrum import-gguf` rebuilt with transformers' own GGUF one.

    /work/refenv/bin/python scripts/check_gguf_tokenizer.py IMPORTED_DIR GGUF_FILE

Loads IMPORTED_DIR/tokenizer.json with `tokenizers`, IMPORTED_DIR with transformers'
AutoTokenizer (which must accept the folder), and GGUF_FILE with
`AutoTokenizer.from_pretrained(dir, gguf_file=name)` (transformers 4.46), encodes a few strings
with each and prints the differences. transformers converts a llama-architecture GGUF with a
`gpt2` tokenizer through its Llama-3 path, which splits with the plain GPT-2 regex (no
`Digits` step for `tokenizer.ggml.pre = smollm`; llama.cpp and the original SmolLM2
tokenizer.json split every digit off), and its LlamaTokenizerFast adds a BOS token even when
the GGUF says `tokenizer.ggml.add_bos_token = false`. So the reference is compared both as
loaded and with `add_special_tokens=False`.
"""
import os
import sys

from tokenizers import Tokenizer
from transformers import AutoTokenizer

TEXTS = [
    "Hello, world! How are you today?",
    "12345",
    "In 2024 there were 1,234,567 people (3.14%).",
    "def square(x):\n    return x ** 2  # comment\n\n\tprint(square(12))",
    "Grüße 東京 🚀",
    "<|im_start|>user\nWhat is the capital of France?<|im_end|>\n<|im_start|>assistant\n",
    "I'm sure they'll say it's   fine\n\n  ok",
    "naïve café — “quotes” … ünïcödé",
    "x³ and ½ ① 𝟙",
]


def main():
    imported_dir, gguf_path = sys.argv[1], sys.argv[2]
    ours = Tokenizer.from_file(os.path.join(imported_dir, "tokenizer.json"))
    ours_hf = AutoTokenizer.from_pretrained(imported_dir)
    ref = AutoTokenizer.from_pretrained(os.path.dirname(gguf_path), gguf_file=os.path.basename(gguf_path))
    print(f"ours via transformers: {type(ours_hf).__name__}; reference: {type(ref).__name__}")
    differences = 0
    for text in TEXTS:
        a = ours.encode(text).ids
        b = ours_hf(text)["input_ids"]
        c = ref(text, add_special_tokens=False)["input_ids"]
        c_default = ref(text)["input_ids"]
        assert a == b, f"tokenizers and transformers disagree on our tokenizer.json: {text!r}"
        assert ours.decode(a, skip_special_tokens=False) == text, f"round trip failed: {text!r}"
        status = "same" if a == c else "DIFFERENT"
        differences += a != c
        extra = c_default[: len(c_default) - len(c)] if c_default[-len(c):] == c else "?"
        print(f"{status:9} {text!r}\n  ours: {a}\n  ref:  {c} (as loaded, prefixed by {extra})")
        if a != c:
            print(f"  ours: {ours.encode(text).tokens}\n  ref:  {ref.convert_ids_to_tokens(c)}")
    print(f"{differences} of {len(TEXTS)} strings differ (reference without special tokens)")


if __name__ == "__main__":
    main()
