"""Launch configs of the torch provider's Triton kernels, timed alone on the GPU: ``python tests/gpu/sweep_triton.py``.

No vendor kernel is needed (``tune_triton.py`` compares with sgl-kernel side by side): each row is
the kernel's time and rate under one config, on the shapes of ``accelbridge bench throughput``,
with the largest difference from the default config's result. One JSON line per row.
"""

import json
import statistics

import torch

from accelbridge.bench import cuda_time
from accelbridge.ops.flash_mla import quantize_fp8_cache
from accelbridge.torch_attention import decode, mla_decode
from accelbridge.torch_attention.core import Masking

DEV = torch.device("cuda")
BF16 = torch.bfloat16


def _time(fn, rounds=5, iters=10):
    fn()
    torch.cuda.synchronize()
    return statistics.median(cuda_time(fn, iters) for _ in range(rounds))


def _sweep(kernel, module, configs, call, flops, name, **fields):
    default = module._config
    want = call()[0].float()
    for cfg in configs:
        module._config = lambda *_a, cfg=cfg: cfg
        try:
            diff = float((call()[0].float() - want).abs().max())
            t = _time(call)
            row = {"kernel": kernel, "case": name, "config": cfg, "us": t * 1e6, "tflops": flops / t / 1e12,
                   "max_diff": diff, **{k: v / t / 1e12 for k, v in fields.items()}}  # fmt: skip
        except Exception as e:
            row = {"kernel": kernel, "case": name, "config": cfg, "error": f"{type(e).__name__}: {e}"[:300]}
        print(json.dumps(row), flush=True)
    module._config = default


def paged_decode():
    db, ctx, page, hq, hk, d = 64, 8192, 64, 32, 8, 128
    pages = ctx // page
    kc = torch.randn(db * pages, page, hk, d, device=DEV, dtype=BF16)
    vc = torch.randn(db * pages, page, hk, d, device=DEV, dtype=BF16)
    table = torch.randperm(db * pages, device=DEV).to(torch.int32).reshape(db, pages)
    lens = torch.full((db,), ctx, dtype=torch.int32, device=DEV)
    q = torch.randn(db, 1, hq, d, device=DEV, dtype=BF16)
    ones, rows = torch.ones_like(lens), torch.arange(db, dtype=torch.int32, device=DEV)

    def call():
        return decode.paged_decode(q, kc, vc, ones, lens, None, rows, table, d**-0.5, Masking(causal=True), 0.0, None)

    configs = [
        (64, 4, 3, 4, 512),
        (64, 4, 2, 4, 512),
        (128, 4, 3, 4, 512),
        (128, 8, 3, 4, 512),
        (64, 4, 4, 4, 512),
        (64, 4, 3, 2, 512),
        (64, 4, 3, 8, 512),
        (128, 4, 2, 2, 1024),
        (64, 2, 3, 4, 512),
        (32, 4, 4, 4, 512),
    ]
    _sweep("decode", decode, configs, call, 4 * db * hq * d * ctx, "paged decode B=64 ctx 8192 page 64",
           kv_tb_s=2 * db * ctx * hk * d * 2)  # fmt: skip


def mla():
    mb, mhq, mctx = 64, 128, 4096
    pages = mctx // 64
    q = torch.randn(mb, 1, mhq, 576, device=DEV, dtype=BF16)
    kc = torch.randn(mb * pages, 64, 1, 576, device=DEV, dtype=BF16)
    table = torch.randperm(mb * pages, device=DEV).to(torch.int32).reshape(mb, pages)
    lens = torch.full((mb,), mctx, dtype=torch.int32, device=DEV)
    configs = [
        (64, 64, 8, 2, 512),
        (64, 64, 8, 2, 256),
        (64, 64, 4, 2, 256),
        (64, 32, 4, 2, 256),
        (64, 32, 8, 2, 256),
        (64, 64, 4, 3, 256),
        (32, 64, 4, 2, 256),
        (64, 128, 8, 1, 256),
        (64, 64, 8, 2, 128),
    ]
    _sweep("mla", mla_decode, configs,
           lambda: mla_decode.mla_decode(q, kc, table, lens, 576**-0.5, True, None, None, False, None),
           2 * mb * mhq * mctx * 1088, "dense decode B=64 128 heads ctx 4096")  # fmt: skip
    sb, shq, topk, tokens = 32, 128, 2048, 65536
    cache = quantize_fp8_cache(torch.randn(tokens // 64, 64, 1, 576, device=DEV, dtype=BF16), 576)
    sq = torch.randn(sb, 1, shq, 576, device=DEV, dtype=BF16)
    idx = torch.randint(0, tokens, (sb, 1, topk), device=DEV).to(torch.int32)
    configs = [
        (64, 128, 8, 1, 512),
        (64, 64, 8, 2, 256),
        (64, 64, 4, 2, 256),
        (64, 128, 8, 1, 256),
        (64, 32, 4, 2, 256),
        (64, 32, 8, 2, 256),
        (64, 64, 8, 2, 128),
    ]
    _sweep("mla", mla_decode, configs,
           lambda: mla_decode.mla_decode(sq, cache, None, None, 576**-0.5, False, idx, None, True, None),
           2 * sb * shq * topk * 1088, "sparse V3.2 FP8 B=32 128 heads topk 2048")  # fmt: skip


if __name__ == "__main__":
    import sys

    for part in sys.argv[1:] or ["paged_decode", "mla"]:
        globals()[part]()
