"""Generate with a transformers model whose attention runs through accelbridge.

    pip install -e ".[transformers]" && python examples/transformers_generate.py

A tiny Llama built from a config (random weights, nothing downloaded) generates 32 greedy tokens for
three prompts of different lengths, with attn_implementation="accelbridge", then with transformers'
own "sdpa", and says whether the tokens agree. It prints which provider the platform's catalog chose
for the backend's ops (`explain`). CPU by default; `--device cuda --dtype bfloat16` on a GPU.
"""

from __future__ import annotations

import argparse
import time

import torch
from transformers import LlamaConfig, LlamaForCausalLM

import accelbridge.integrations.transformers as accelbridge_backend  # registers attn_implementation="accelbridge"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--device", default="cpu")
    parser.add_argument("--dtype", default="float32", choices=["float32", "bfloat16", "float16"])
    parser.add_argument("--new-tokens", type=int, default=32)
    args = parser.parse_args()
    if args.device == "cpu":
        torch.set_num_threads(1)  # a tiny model: threads only add overhead

    config = LlamaConfig(hidden_size=64, intermediate_size=128, num_hidden_layers=2, num_attention_heads=4,
                         num_key_value_heads=2, vocab_size=128, pad_token_id=0, initializer_range=0.1)  # fmt: skip
    torch.manual_seed(0)
    model = LlamaForCausalLM(config).to(args.device, getattr(torch, args.dtype)).eval()

    prompts = [[5, 17, 42], [7, 8, 9, 10, 11, 12, 13, 14], [99, 3, 64, 21, 2]]
    width = max(map(len, prompts))
    ids = torch.tensor([[0] * (width - len(p)) + p for p in prompts], device=args.device)
    mask = (torch.arange(width)[None, :] >= torch.tensor([width - len(p) for p in prompts])[:, None]).long()

    tokens = {}
    for implementation in ("accelbridge", "sdpa"):
        model.set_attn_implementation(implementation)
        start = time.perf_counter()
        out = model.generate(input_ids=ids, attention_mask=mask.to(args.device), max_new_tokens=args.new_tokens,
                             min_new_tokens=args.new_tokens, do_sample=False, pad_token_id=0)  # fmt: skip
        tokens[implementation] = out[:, width:].tolist()
        print(f"{implementation:>11}: {time.perf_counter() - start:.2f} s")
        if implementation == "accelbridge":
            print(accelbridge_backend.explain())
    for row, prompt in enumerate(prompts):
        print(f"prompt {prompt} -> {tokens['accelbridge'][row]}")
    same = tokens["accelbridge"] == tokens["sdpa"]
    print("same tokens as sdpa:", same)
    raise SystemExit(0 if same else 1)


if __name__ == "__main__":
    main()
