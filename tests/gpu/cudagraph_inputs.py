"""Where a mode="reduce-overhead" decode step loses time: ``python tests/gpu/cudagraph_inputs.py``.

The same FA3 paged decode step (sgl-kernel through the facade, B=64, 4096 keys, page 64) compiled
with CUDA graphs, the KV cache reaching the graph four ways: closed over and marked with
``mark_static_address`` (what compile_bench.py does), passed as arguments and marked, passed
unmarked, and as buffers of an ``nn.Module``. A graph input that is not static is copied into
the graph's own buffer on every replay (1 GiB of cache here), so the way the cache arrives shows
in the time. One JSON line per variant: time and ratio to the direct kernel. Then the GPU kernels
one direct call and one inductor-compiled call (no graphs) launch, from the profiler: what the
compiled step runs besides the attention kernel.
"""

import json
import os
import statistics

import compile_bench  # the same decode inputs (this folder is on sys.path when run as a script)
import torch
from profiling import kernel_times

from accelbridge import attention
from accelbridge.bench import cuda_time
from accelbridge.bench.compiled import DecodeStep

DEV = torch.device("cuda")


def _inputs():
    kw, _ = compile_bench.decode()
    return kw["q"], kw["k_cache"], kw["v_cache"], kw["page_table"], kw["cache_seqlens"]


def main(rounds: int = 7, iters: int = 50) -> None:
    from sgl_kernel import flash_attn as sgl

    os.environ["ACCELBRIDGE_PROVIDERS"] = "fa3=sgl-kernel"
    attention.reset()
    q, kc, vc, table, lens = _inputs()

    def direct():
        return sgl.flash_attn_with_kvcache(q, kc, vc, cache_seqlens=lens, page_table=table, causal=True)

    def facade(q, kc, vc, table, lens):
        return attention.flash_attn_with_kvcache(q, kc, vc, cache_seqlens=lens, page_table=table, causal=True)

    variants = {}
    torch._dynamo.reset()
    unmarked = torch.compile(facade, mode="reduce-overhead", fullgraph=True)
    variants["arguments, unmarked"] = lambda: unmarked(q, kc, vc, table, lens)
    module = torch.compile(
        DecodeStep({"k_cache": kc, "v_cache": vc, "page_table": table, "cache_seqlens": lens}),
        mode="reduce-overhead",
        fullgraph=True,
    )
    variants["nn.Module buffers"] = lambda: module(q)
    marked = [t.clone() for t in (kc, vc, table, lens)]  # fresh tensors: marked before any compile sees them
    for t in marked:
        torch._dynamo.mark_static_address(t)
    by_args = torch.compile(facade, mode="reduce-overhead", fullgraph=True)
    variants["arguments, mark_static_address"] = lambda: by_args(q, *marked)
    closed = torch.compile(lambda q: facade(q, *marked), mode="reduce-overhead", fullgraph=True)
    variants["closed over, mark_static_address"] = lambda: closed(q)
    calls = {"direct": direct, **variants}
    for call in calls.values():
        for _ in range(3):
            torch.compiler.cudagraph_mark_step_begin()
            call()
    times = {name: [] for name in calls}
    for _ in range(rounds):
        for name, call in calls.items():
            times[name].append(cuda_time(call, iters))
    base = statistics.median(times["direct"])
    for name, t in times.items():
        med = statistics.median(t)
        print(json.dumps({"variant": name, "us": round(med * 1e6, 1), "direct/variant": round(base / med, 4)}))


def kernels_launched() -> None:
    from sgl_kernel import flash_attn as sgl

    os.environ["ACCELBRIDGE_PROVIDERS"] = "fa3=sgl-kernel"
    attention.reset()
    q, kc, vc, table, lens = _inputs()
    torch._dynamo.reset()
    compiled = torch.compile(
        lambda q, kc, vc, table, lens: attention.flash_attn_with_kvcache(q, kc, vc, cache_seqlens=lens,
                                                                         page_table=table, causal=True),
        fullgraph=True,
    )  # fmt: skip
    calls = {"direct": lambda: sgl.flash_attn_with_kvcache(q, kc, vc, cache_seqlens=lens, page_table=table,
                                                           causal=True),
             "inductor": lambda: compiled(q, kc, vc, table, lens)}  # fmt: skip
    for name, call in calls.items():
        print(json.dumps({"profile": name, "kernels": kernel_times(call)[:8]}))


if __name__ == "__main__":
    main()
    kernels_launched()
