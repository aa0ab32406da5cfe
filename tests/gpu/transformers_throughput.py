"""Prefill and decode tokens/s of a transformers model, per attention backend, on the GPU.

    python tests/gpu/transformers_throughput.py [--batch 16] [--prompt 1024] [--new 128] [--profile N]

A Llama of about 1.1B parameters (hidden 2048, 16 layers, 16 query and 4 kv heads of 128, random bf16
weights: nothing downloaded), equal-length prompts. Prefill: one forward of the batch into a fresh
cache. Decode: --new greedy steps of one token a sequence on that cache. Median of --repeat runs after
a warm-up, CUDA-synchronised. Backends: accelbridge with the fa3 ops pinned to sgl-kernel (where it is
installed) and to the torch provider, transformers' sdpa, and flash_attention_2 / flash_attention_3
where the flash_attn / flash_attn_interface packages are installed. One markdown row per backend. With
``--profile N``, each backend's N longest kernels over 8 decode steps (GPU us a step): where a decode step's time goes.
"""

from __future__ import annotations

import argparse
import importlib.util
import os
import statistics
import time

import torch
import transformers
from transformers import DynamicCache, LlamaConfig, LlamaForCausalLM

import accelbridge.integrations.transformers as backend
from accelbridge import attention
from tests.gpu.profiling import kernel_times


def _backends() -> list[tuple[str, str, str | None]]:
    """(label, attn_implementation, provider pinned for fa3 or None)."""
    rows = []
    if importlib.util.find_spec("sgl_kernel") is not None:
        rows.append(("accelbridge / sgl-kernel", backend.NAME, "sgl-kernel"))
    rows.append(("accelbridge / torch provider", backend.NAME, "torch"))
    rows.append(("transformers sdpa", "sdpa", None))
    if importlib.util.find_spec("flash_attn") is not None:
        rows.append(("transformers flash_attention_2", "flash_attention_2", None))
    if importlib.util.find_spec("flash_attn_interface") is not None:
        rows.append(("transformers flash_attention_3", "flash_attention_3", None))
    return rows


def _timed(fn) -> float:
    torch.cuda.synchronize()
    start = time.perf_counter()
    fn()
    torch.cuda.synchronize()
    return time.perf_counter() - start


@torch.inference_mode()
def _measure(model, ids: torch.Tensor, new: int) -> tuple[float, float]:
    """Seconds of one prefill and of `new` decode steps."""
    cache = DynamicCache(config=model.config)
    holder = {}

    def prefill():
        holder["logits"] = model(input_ids=ids, past_key_values=cache, use_cache=True).logits[:, -1]

    prefill_s = _timed(prefill)
    token = holder["logits"].argmax(-1, keepdim=True)

    def decode():
        nonlocal token
        for _ in range(new):
            token = model(input_ids=token, past_key_values=cache, use_cache=True).logits[:, -1].argmax(-1, keepdim=True)

    return prefill_s, _timed(decode)


@torch.inference_mode()
def _profile_decode(model, ids: torch.Tensor, top: int, steps: int = 8) -> None:
    """The ``top`` longest kernels of ``steps`` decode steps after a prefill (GPU us a step, launches a step)."""
    cache = DynamicCache(config=model.config)
    token = model(input_ids=ids, past_key_values=cache, use_cache=True).logits[:, -1].argmax(-1, keepdim=True)

    def decode():
        nonlocal token
        token = model(input_ids=token, past_key_values=cache, use_cache=True).logits[:, -1].argmax(-1, keepdim=True)

    rows = kernel_times(decode, runs=steps)
    gpu, launches = sum(r["us"] for r in rows), sum(r["calls"] for r in rows)
    print(f"    decode step: {gpu:.0f} us of GPU time, {launches:g} launches")
    for r in rows[:top]:
        print(f"    {r['us']:9.1f} us  x{r['calls']:g}  {r['kernel']}")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--batch", type=int, default=16)
    parser.add_argument("--prompt", type=int, default=1024)
    parser.add_argument("--new", type=int, default=128)
    parser.add_argument("--repeat", type=int, default=3)
    parser.add_argument("--profile", type=int, default=0, help="also each backend's N longest decode kernels")
    args = parser.parse_args()

    config = LlamaConfig(hidden_size=2048, intermediate_size=5632, num_hidden_layers=16, num_attention_heads=16,
                         num_key_value_heads=4, head_dim=128, vocab_size=32000)  # fmt: skip
    torch.manual_seed(0)
    model = LlamaForCausalLM(config).to("cuda", torch.bfloat16).eval()
    ids = torch.randint(1, config.vocab_size, (args.batch, args.prompt), device="cuda")
    print(f"{torch.cuda.get_device_name()}, torch {torch.__version__}, transformers {transformers.__version__}; "
          f"batch {args.batch}, prompt {args.prompt}, {args.new} new tokens, median of {args.repeat}")  # fmt: skip
    print("| backend | prefill tokens/s | decode tokens/s |\n| --- | --- | --- |")
    for label, implementation, provider in _backends():
        if provider is not None:
            os.environ["ACCELBRIDGE_PROVIDERS"] = f"fa3={provider}"
            attention.reset()
        model.set_attn_implementation(implementation)
        _measure(model, ids, 4)  # warm-up: resolution, kernel compilation, cuDNN graphs
        runs = [_measure(model, ids, args.new) for _ in range(args.repeat)]
        prefill = statistics.median(r[0] for r in runs)
        decode = statistics.median(r[1] for r in runs)
        served = f" (fa3.varlen: {attention.resolve('fa3.varlen', dtype='bf16').selected})" if provider else ""
        rates = f"{args.batch * args.prompt / prefill:,.0f} | {args.batch * args.new / decode:,.0f}"
        print(f"| {label}{served} | {rates} |")
        if args.profile:
            _profile_decode(model, ids, args.profile)
        os.environ.pop("ACCELBRIDGE_PROVIDERS", None)
        attention.reset()


if __name__ == "__main__":
    main()
