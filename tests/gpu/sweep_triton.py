"""Launch configs of the torch provider's Triton kernels, timed alone on the GPU: ``python tests/gpu/sweep_triton.py``.

No vendor kernel is needed (``tune_triton.py`` compares with sgl-kernel side by side): each row is
the kernel's time and rate under one config, on the shapes of ``accelbridge bench throughput``,
with the largest difference from the default config's result. One JSON line per row.
"""

import json
import statistics

import torch
from profiling import kernel_times  # this folder is on sys.path when run as a script

from accelbridge import torch_attention
from accelbridge.bench import cuda_time, problems
from accelbridge.torch_attention import decode, dense, mla_decode, prefill
from accelbridge.torch_attention.core import Masking

DEV = torch.device("cuda")


def _time(fn, rounds=5, iters=10):
    fn()
    torch.cuda.synchronize()
    return statistics.median(cuda_time(fn, iters) for _ in range(rounds))


def _sweep(kernel, module, configs, call, flops, name, **fields):
    attr = "_configs" if hasattr(module, "_configs") else "_config"  # the kernels list theirs, best first
    default = getattr(module, attr)
    want = call()[0].float()
    for cfg in configs:
        setattr(module, attr, lambda *_a, cfg=cfg: (cfg,) if attr == "_configs" else cfg)
        getattr(module, "forget_plans", lambda: None)()  # a plan keeps the config it was made with
        try:
            diff = float((call()[0].float() - want).abs().max())
            t = _time(call)
            row = {"kernel": kernel, "case": name, "config": cfg, "us": t * 1e6, "tflops": flops / t / 1e12,
                   "max_diff": diff, **{k: v / t / 1e12 for k, v in fields.items()}}  # fmt: skip
        except Exception as e:
            row = {"kernel": kernel, "case": name, "config": cfg, "error": f"{type(e).__name__}: {e}"[:300]}
        print(json.dumps(row), flush=True)
    setattr(module, attr, default)
    getattr(module, "forget_plans", lambda: None)()


def _case(op: str, word: str):
    return next(c for c in problems.cases(DEV) if c.op == op and word in c.name)


def paged_decode():
    case = _case("fa3.kvcache", "paged")
    kw = case.kwargs
    q, lens = kw["q"], kw["cache_seqlens"]
    ones, rows = torch.ones_like(lens), torch.arange(q.shape[0], dtype=torch.int32, device=DEV)

    def call():
        return decode.paged_decode(q, kw["k_cache"], kw["v_cache"], ones, lens, None, rows, kw["page_table"],
                                   q.shape[-1] ** -0.5, Masking(causal=True), 0.0, None)  # fmt: skip

    configs = [(64, 4, 2), (64, 4, 3), (64, 8, 2), (64, 4, 1), (32, 4, 2)]  # (BLOCK_N, warps, stages)
    _sweep("decode", decode, configs, call, case.flops, case.name, kv_tb_s=case.fields["kv_bytes"])


def prefill_paths():
    """The bench's prefill through the torch provider (the dense path) and through the Triton kernel alone."""
    case = _case("fa3.varlen", "prefill")
    kw = case.kwargs
    args = (kw["q"], kw["k"], kw["v"], kw["cu_seqlens_q"], kw["cu_seqlens_k"], kw["max_seqlen_q"])
    calls = {"torch provider (dense SDPA path)": lambda: torch_attention.flash_attn_varlen_func(**kw),
             "Triton prefill kernel": lambda: prefill.prefill(*args, None, None, None, kw["q"].shape[-1] ** -0.5,
                                                              Masking(causal=True), 0.0, None, False)[0]}  # fmt: skip
    want = calls["Triton prefill kernel"]().float()
    for name, call in calls.items():
        t = _time(call)
        diff = float((call().float() - want).abs().max())
        print(json.dumps({"kernel": "prefill", "case": case.name, "path": name, "us": t * 1e6,
                          "tflops": case.flops / t / 1e12, "max_diff": diff}), flush=True)  # fmt: skip


def dense_copies():
    """The dense path's pack / unpack launch configs (BLOCK_L, num_warps) on the bench's prefill, and where its
    time goes (the profiler's kernels)."""
    case = _case("fa3.varlen", "prefill")
    kw = case.kwargs
    d = kw["q"].shape[-1]

    def call():
        return (dense.packed(kw["q"], kw["k"], kw["v"], kw["cu_seqlens_q"], kw["max_seqlen_q"], d**-0.5, True),)

    _sweep("dense", dense, [(64, 4), (128, 4), (128, 8), (256, 8), (32, 4), (64, 8)], call, case.flops, case.name)
    for row in kernel_times(call, runs=5):
        print(json.dumps({"kernel": "dense", "profiled": row["kernel"], "us": row["us"]}))


def mla():
    """The MLA decode kernel's configs on the bench's dense and sparse shapes; dense also with pointer loads
    (no TMA descriptors), the path of GPUs before sm90 and of non-contiguous caches."""
    dense_configs = [(64, 64, 8, 2, 512), (64, 64, 8, 1, 512), (64, 32, 8, 2, 512), (64, 64, 4, 2, 512)]
    for word, configs, pointer_loads in (
        ("dense", dense_configs, False),
        ("dense", dense_configs[:2], True),
        ("sparse", [(64, 64, 8, 2, 512), (64, 64, 8, 1, 512), (64, 32, 8, 2, 512), (64, 64, 4, 2, 512)], False),
    ):  # fmt: skip
        case = _case("flashmla.kvcache", word)
        kw = case.kwargs
        scale = kw.get("softmax_scale") or 576**-0.5

        def call(kw=kw, scale=scale):
            return mla_decode.mla_decode(kw["q"], kw["k_cache"], kw["block_table"], kw["cache_seqlens"], scale,
                                         kw.get("causal", False), kw.get("indices"), None,
                                         kw.get("is_fp8_kvcache", False), None)  # fmt: skip

        route = mla_decode._tma_route
        if pointer_loads:
            mla_decode._tma_route = lambda *a: None
        _sweep("mla" + (" pointer loads" if pointer_loads else ""), mla_decode, configs, call, case.flops, case.name)
        mla_decode._tma_route = route


if __name__ == "__main__":
    import sys

    for part in sys.argv[1:] or ["prefill_paths", "paged_decode", "mla", "dense_copies"]:
        globals()[part]()
