"""Compiled facade vs the direct kernel on the GPU, side by side: ``python tests/gpu/compile_bench.py``.

Session 7's shapes (decode at 4096 keys); ``accelbridge bench compile`` measures the same modes on
the throughput bench's shapes.

FA3 causal prefill (B=8, L=4096, 32/8 heads, d=128) and paged decode (B=64, 4096 keys, page 64),
sgl-kernel direct vs ``torch.compile(fullgraph=True)`` over the facade (inductor, and
mode="reduce-overhead" for decode), and the same for the torch provider; median of rounds.
"""

import json
import os
import statistics
import sys

import torch

from accelbridge import attention
from accelbridge.bench import cuda_time
from accelbridge.bench.compiled import DecodeStep

DEV = torch.device("cuda")


def prefill():
    g = torch.Generator(device=DEV).manual_seed(0)
    b, n, hq, hk, d = 8, 4096, 32, 8, 128
    q = torch.randn(b * n, hq, d, device=DEV, generator=g, dtype=torch.bfloat16)
    k = torch.randn(b * n, hk, d, device=DEV, generator=g, dtype=torch.bfloat16)
    v = torch.randn(b * n, hk, d, device=DEV, generator=g, dtype=torch.bfloat16)
    cu = torch.arange(0, b * n + 1, n, dtype=torch.int32, device=DEV)
    flops = 4 * b * hq * d * n * n / 2
    return dict(q=q, k=k, v=v, cu_seqlens_q=cu, cu_seqlens_k=cu, max_seqlen_q=n, max_seqlen_k=n, causal=True), flops


def decode():
    g = torch.Generator(device=DEV).manual_seed(1)
    b, ctx, hq, hk, d, page = 64, 4096, 32, 8, 128, 64
    pages = ctx // page
    kc = torch.randn(b * pages, page, hk, d, device=DEV, generator=g, dtype=torch.bfloat16)
    vc = torch.randn(b * pages, page, hk, d, device=DEV, generator=g, dtype=torch.bfloat16)
    table = torch.randperm(b * pages, device=DEV, generator=g).to(torch.int32).view(b, pages)
    q = torch.randn(b, 1, hq, d, device=DEV, generator=g, dtype=torch.bfloat16)
    lens = torch.full((b,), ctx, dtype=torch.int32, device=DEV)
    kv_bytes = 2 * b * ctx * hk * d * 2
    return dict(q=q, k_cache=kc, v_cache=vc, page_table=table, cache_seqlens=lens, causal=True), kv_bytes


def main(rounds: int = 7, iters: int = 50) -> dict:
    from sgl_kernel import flash_attn as sgl

    rows = {}
    for label, (kw, work), direct, facade in (
        ("prefill", prefill(), sgl.flash_attn_varlen_func, attention.flash_attn_varlen_func),
        ("paged decode", decode(), sgl.flash_attn_with_kvcache, attention.flash_attn_with_kvcache),
    ):
        for provider in ("sgl-kernel", "torch"):
            os.environ["ACCELBRIDGE_PROVIDERS"] = f"fa3={provider}"
            attention.reset()
            torch._dynamo.reset()
            modes = {"eager facade": lambda kw=kw, f=facade: f(**kw),
                     "inductor": torch.compile(lambda kw, f=facade: f(**kw), fullgraph=True)}  # fmt: skip
            if label == "paged decode":  # the cache as module buffers: CUDA graphs read it in place, never copy it
                ro = torch.compile(DecodeStep(kw), fullgraph=True, mode="reduce-overhead")
                modes["reduce-overhead"] = lambda kw=kw, ro=ro: ro(kw["q"])
            calls = {"direct": lambda kw=kw, direct=direct: direct(**kw)}
            calls.update({m: (lambda fn=fn, kw=kw: fn(kw)) if m == "inductor" else fn for m, fn in modes.items()})
            for call in calls.values():  # compile, warm up, record the CUDA graph
                for _ in range(3):
                    call()
            times = {m: [] for m in calls}
            for _ in range(rounds):
                for m, call in calls.items():
                    times[m].append(cuda_time(call, iters))
            med = {m: statistics.median(t) for m, t in times.items()}
            rows[f"{label}, {provider}"] = {
                **{f"{m}_us": round(t * 1e6, 2) for m, t in med.items()},
                **{f"{m}/direct": round(med["direct"] / t, 4) for m, t in med.items() if m != "direct"},
                "rate": (
                    f"{work / med['inductor'] / 1e12:.1f} TFLOP/s"
                    if label == "prefill"
                    else f"{work / med['inductor'] / 1e12:.2f} TB/s"
                ),  # fmt: skip
            }
            print(label, provider, json.dumps(rows[f"{label}, {provider}"]), flush=True)
    return {"gpu": torch.cuda.get_device_name(0), "torch": torch.__version__, "rows": rows}


if __name__ == "__main__":
    result = main()
    out = sys.argv[1] if len(sys.argv) > 1 else None
    if out:
        with open(out, "w") as f:
            json.dump(result, f, indent=2)
