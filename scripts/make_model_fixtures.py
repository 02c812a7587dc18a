#!/usr/bin/env python3
"""Tiny random Llama/Mistral checkpoints plus Hugging Face transformers' outputs for them.

Reference: transformers 4.46.3 (eager attention, float32, CPU). Run from the crate root:

    python scripts/make_model_fixtures.py tests/fixtures/models

For each model writes tests/fixtures/models/<name>/:
- config.json, model.safetensors: exactly what `save_pretrained(safe_serialization=True)` writes;
- expected.safetensors: input_ids, attention_mask (row 1 right-padded by 3), labels (-100 on
  padding and on the first 2 positions of row 0), logits, loss, generate_prompt [1, 5],
  generate_ids [1, 13] (greedy, 8 new tokens) and generate_logits [8, vocab] (raw logits of
  each generation step).

Also checks (printed): the explicit head_dim is honoured, llama3 rope scaling changes the
logits, and Mistral's sliding window has an effect, with its exact semantics read off the 4-D
mask transformers builds and the generation path compared with full forward passes.
"""
import json
import os
import shutil
import sys

import torch
from safetensors.torch import save_file
from transformers import LlamaConfig, LlamaForCausalLM, MistralConfig, MistralForCausalLM

torch.set_num_threads(2)

COMMON = dict(
    hidden_size=64,
    num_hidden_layers=2,
    vocab_size=256,
    intermediate_size=128,
    rms_norm_eps=1e-6,
    max_position_embeddings=256,
    initializer_range=0.2,
    attn_implementation="eager",
    torch_dtype="float32",
)

MODELS = {
    "llama_gqa": (LlamaConfig, dict(num_attention_heads=4, num_key_value_heads=2,
                                    tie_word_embeddings=False, rope_theta=10000.0), 16),
    "llama_tied": (LlamaConfig, dict(num_attention_heads=4, num_key_value_heads=1,
                                     tie_word_embeddings=True, head_dim=32,
                                     rope_theta=500000.0), 16),
    "llama3_rope": (LlamaConfig, dict(num_attention_heads=4, num_key_value_heads=2,
                                      tie_word_embeddings=False, rope_theta=10000.0,
                                      rope_scaling={"rope_type": "llama3", "factor": 8.0,
                                                    "low_freq_factor": 1.0,
                                                    "high_freq_factor": 4.0,
                                                    "original_max_position_embeddings": 32}),
                    24),
    "mistral_sw": (MistralConfig, dict(num_attention_heads=4, num_key_value_heads=2,
                                       tie_word_embeddings=False, rope_theta=10000.0,
                                       sliding_window=4), 12),
}
PAD_TAIL = 3
PROMPT_LEN = 5
NEW_TOKENS = 8


def build(cls_cfg, kw, seed):
    torch.manual_seed(seed)
    cfg = cls_cfg(**COMMON, **kw)
    model_cls = LlamaForCausalLM if cls_cfg is LlamaConfig else MistralForCausalLM
    model = model_cls(cfg)
    model.eval()
    return model


def inputs(seq, seed):
    g = torch.Generator().manual_seed(seed)
    input_ids = torch.randint(0, 256, (2, seq), generator=g, dtype=torch.int64)
    attention_mask = torch.ones(2, seq, dtype=torch.int64)
    attention_mask[1, seq - PAD_TAIL:] = 0
    labels = input_ids.clone()
    labels[attention_mask == 0] = -100
    labels[0, :2] = -100
    prompt = torch.randint(0, 256, (1, PROMPT_LEN), generator=g, dtype=torch.int64)
    return input_ids, attention_mask, labels, prompt


@torch.no_grad()
def run(model, input_ids, attention_mask, labels, prompt):
    logits = model(input_ids, attention_mask=attention_mask).logits
    loss = model(input_ids, attention_mask=attention_mask, labels=labels).loss
    out = model.generate(prompt, max_new_tokens=NEW_TOKENS, min_new_tokens=NEW_TOKENS,
                         do_sample=False, eos_token_id=None, pad_token_id=0,
                         return_dict_in_generate=True, output_logits=True, output_scores=True)
    gen_ids = out.sequences
    assert gen_ids.shape == (1, PROMPT_LEN + NEW_TOKENS), gen_ids.shape
    gen_logits = torch.cat(out.logits, dim=0)
    scores = torch.cat(out.scores, dim=0)
    assert torch.equal(gen_logits, scores), "processors changed the scores"
    return logits, loss, gen_ids, gen_logits


@torch.no_grad()
def check_generation_vs_forward(model, gen_ids, gen_logits):
    """Greedy ids are the argmax of the step logits, and each step's logits equal a full
    (cache-free) forward pass over the sequence so far."""
    assert torch.equal(gen_logits.argmax(-1), gen_ids[0, PROMPT_LEN:])
    full = model(gen_ids[:, :-1]).logits[0, PROMPT_LEN - 1:]
    return (full - gen_logits).abs().max().item()


def main(out_root):
    os.makedirs(out_root, exist_ok=True)
    for idx, (name, (cls_cfg, kw, seq)) in enumerate(MODELS.items()):
        model = build(cls_cfg, kw, seed=1000 + idx)
        d = os.path.join(out_root, name)
        if os.path.isdir(d):
            shutil.rmtree(d)
        model.save_pretrained(d, safe_serialization=True)
        gc = os.path.join(d, "generation_config.json")
        if os.path.exists(gc):
            os.remove(gc)
        ids, mask, labels, prompt = inputs(seq, seed=2000 + idx)
        logits, loss, gen_ids, gen_logits = run(model, ids, mask, labels, prompt)
        save_file({
            "input_ids": ids.contiguous(),
            "attention_mask": mask.contiguous(),
            "labels": labels.contiguous(),
            "logits": logits.float().contiguous(),
            "loss": loss.reshape(1).float().contiguous(),
            "generate_prompt": prompt.contiguous(),
            "generate_ids": gen_ids.contiguous(),
            "generate_logits": gen_logits.float().contiguous(),
        }, os.path.join(d, "expected.safetensors"))
        for fn in os.listdir(d):
            os.chmod(os.path.join(d, fn), 0o644)
        gdiff = check_generation_vs_forward(model, gen_ids, gen_logits)
        valid = logits[mask.bool()]
        print(f"== {name}: S={seq} loss={loss.item():.5f} logits std={valid.std().item():.4f} "
              f"range=[{valid.min().item():.3f}, {valid.max().item():.3f}] "
              f"generated={gen_ids[0, PROMPT_LEN:].tolist()} "
              f"gen-vs-full-forward max|diff|={gdiff:.2e}")

        # model-specific checks
        if name == "llama_tied":
            attn = model.model.layers[0].self_attn
            print(f"   head_dim honoured: attn.head_dim={attn.head_dim}, "
                  f"q_proj {tuple(attn.q_proj.weight.shape)}, k_proj {tuple(attn.k_proj.weight.shape)}, "
                  f"o_proj {tuple(attn.o_proj.weight.shape)}, "
                  f"rope inv_freq len={model.model.rotary_emb.inv_freq.numel()}, "
                  f"lm_head is embed: {model.lm_head.weight.data_ptr() == model.model.embed_tokens.weight.data_ptr()}")
        if name == "llama3_rope":
            plain_kw = dict(kw, rope_scaling=None)
            plain = build(cls_cfg, plain_kw, seed=1000 + idx)
            plain.load_state_dict(model.state_dict())
            with torch.no_grad():
                l2 = plain(ids, attention_mask=mask).logits
            print(f"   llama3 scaling vs none: max|logit diff|={(l2 - logits).abs().max().item():.4f}")
            print(f"   inv_freq scaled={model.model.rotary_emb.inv_freq.tolist()}")
            print(f"   inv_freq plain ={plain.model.rotary_emb.inv_freq.tolist()}")
        if name == "mistral_sw":
            mistral_checks(model, cls_cfg, kw, idx, ids, mask, logits)

        with open(os.path.join(d, "config.json")) as f:
            cfg = json.load(f)
        print(f"   config: { {k: cfg.get(k) for k in ('head_dim', 'tie_word_embeddings', 'rope_scaling', 'sliding_window', 'torch_dtype')} }")


@torch.no_grad()
def mistral_checks(model, cls_cfg, kw, idx, ids, mask, logits):
    w = model.config.sliding_window
    nosw = build(cls_cfg, dict(kw, sliding_window=None), seed=1000 + idx)
    nosw.load_state_dict(model.state_dict())
    l2 = nosw(ids, attention_mask=mask).logits
    diff = (l2 - logits).abs().amax(dim=-1)  # [2, S]
    print(f"   sliding_window={w} vs None: max|logit diff| per position row0="
          f"{[round(x, 4) for x in diff[0].tolist()]}")
    # The 4-D additive mask the eager attention receives (hook layer 0's attention).
    seen = {}

    def hook(_mod, args, kwargs):
        seen["mask"] = kwargs.get("attention_mask")

    h = model.model.layers[0].self_attn.register_forward_pre_hook(hook, with_kwargs=True)
    model(ids, attention_mask=mask)
    h.remove()
    m = seen["mask"]
    allowed = (m[0, 0] == 0)
    S = allowed.shape[0]
    print(f"   4-D mask shape {tuple(m.shape)}; row 0 attended keys per query:")
    for i in range(S):
        js = [j for j in range(allowed.shape[1]) if allowed[i, j]]
        print(f"     i={i:2d}: {js}")
    rule = torch.tensor([[(i - w < j <= i) for j in range(S)] for i in range(S)])
    print(f"   mask == (i-window < j <= i) [window keys incl. self]: {torch.equal(allowed, rule)}")
    # Independent check: attention probabilities outside the window are exactly 0.
    out = model(ids, attention_mask=mask, output_attentions=True)
    a = out.attentions[0][0]  # [heads, S, S]
    outside = a[:, ~rule].abs().max().item()
    inside_min = a[:, rule].min().item()
    print(f"   output_attentions row0 layer0: max prob outside rule={outside}, min prob inside={inside_min:.3e}")
    # Generation path with cache: prompt longer than the window, step logits vs full forward.
    g = torch.Generator().manual_seed(77)
    prompt = torch.randint(0, 256, (1, 10), generator=g)
    out = model.generate(prompt, max_new_tokens=6, min_new_tokens=6, do_sample=False,
                         eos_token_id=None, pad_token_id=0, return_dict_in_generate=True,
                         output_logits=True)
    print(f"   generate cache type: {type(out.past_key_values).__name__}")
    step = torch.cat(out.logits, 0)
    full = model(out.sequences[:, :-1]).logits[0, 9:]
    full_nosw = nosw(out.sequences[:, :-1]).logits[0, 9:]
    print(f"   long-prompt generate vs full forward (window): max|diff|={(step - full).abs().max().item():.2e}; "
          f"vs full forward without window: {(step - full_nosw).abs().max().item():.3f}")


if __name__ == "__main__":
    main(sys.argv[1] if len(sys.argv) > 1 else "tests/fixtures/models")
