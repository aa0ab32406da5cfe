"""The torch provider's Triton kernels against sgl-kernel, per launch config: ``python tests/gpu/tune_triton.py``.

For each candidate (block sizes, warps, stages) of the prefill and MLA decode kernels: the time
side by side with the vendor kernel (interleaved rounds, medians) and the largest difference of
the result from the vendor's. Prints one JSON line per row; the chosen defaults are the
``_configs`` functions of ``accelbridge.torch_attention.prefill`` and ``mla_decode``.
"""

import json
import statistics
import sys

import torch

from accelbridge.bench import cuda_time
from accelbridge.ops.fp8_cache import quantize_fp8_cache
from accelbridge.torch_attention import mla_decode, prefill
from accelbridge.torch_attention.core import Masking

DEV = torch.device("cuda")
BF16 = torch.bfloat16


def _time_pair(a, b, rounds=5, iters=10):
    a(), b()
    torch.cuda.synchronize()
    ta, tb = [], []
    for r in range(rounds):
        for times, fn in ((ta, a), (tb, b)) if r % 2 == 0 else ((tb, b), (ta, a)):
            times.append(cuda_time(fn, iters))
    return statistics.median(ta), statistics.median(tb)


def prefill_rows(fa, configs):
    shapes = [("uniform B=8 L=4096 32/8 d=128", [4096] * 8, 128), ("ragged 16 seqs 64..4096 d=128", None, 128),
              ("uniform B=4 L=4096 d=64", [4096] * 4, 64)]  # fmt: skip
    for name, lens, d in shapes:
        if lens is None:
            lens = torch.randint(64, 4097, (16,), generator=torch.Generator().manual_seed(0)).tolist()
        for cfg in configs(d):
            print(json.dumps(_prefill_row(fa, name, lens, d, cfg)), flush=True)


def _prefill_row(fa, name, lens, d, cfg):
    g = torch.Generator(device=DEV).manual_seed(0)
    hq, hk, total, longest = 32, 8, sum(lens), max(lens)
    q = torch.randn(total, hq, d, device=DEV, generator=g, dtype=BF16)
    k = torch.randn(total, hk, d, device=DEV, generator=g, dtype=BF16)
    v = torch.randn(total, hk, d, device=DEV, generator=g, dtype=BF16)
    cu = torch.tensor([0, *torch.tensor(lens).cumsum(0).tolist()], dtype=torch.int32, device=DEV)
    flops = sum(4 * hq * d * n * n / 2 for n in lens)
    prefill._configs = lambda *_a: (cfg,)

    def vendor():
        return fa.flash_attn_varlen_func(q, k, v, cu, cu, longest, longest, causal=True)

    def ours():
        return prefill.prefill(q, k, v, cu, cu, longest, None, None, None, d**-0.5, Masking(causal=True), 0.0,
                               None, False)  # fmt: skip

    try:
        diff = float((ours()[0].float() - vendor().float()).abs().max())
        tv, tt = _time_pair(vendor, ours)
    except Exception as e:  # a config the compiler rejects (shared memory): say so, go on
        return {"kernel": "prefill", "case": name, "config": cfg, "error": f"{type(e).__name__}: {e}"[:300]}
    return {"kernel": "prefill", "case": name, "config": cfg, "vendor_tflops": flops / tv / 1e12,
            "triton_tflops": flops / tt / 1e12, "vs_vendor": tv / tt, "max_diff": diff}  # fmt: skip


def mla_rows(fm, configs):
    g = torch.Generator(device=DEV).manual_seed(1)
    mb, mhq, mctx = 64, 128, 4096
    pages = mctx // 64
    q = torch.randn(mb, 1, mhq, 576, device=DEV, generator=g, dtype=BF16)
    kc = torch.randn(mb * pages, 64, 1, 576, device=DEV, generator=g, dtype=BF16)
    table = torch.randperm(mb * pages, device=DEV, generator=g).to(torch.int32).reshape(mb, pages)
    lens = torch.full((mb,), mctx, dtype=torch.int32, device=DEV)
    meta, splits = fm.get_mla_metadata(lens, mhq, 1)
    sb, shq, topk, tokens = 32, 128, 2048, 65536
    scache = quantize_fp8_cache(torch.randn(tokens // 64, 64, 1, 576, device=DEV, generator=g, dtype=BF16), 576)
    sq = torch.randn(sb, 1, shq, 576, device=DEV, generator=g, dtype=BF16)
    sidx = torch.randint(0, tokens, (sb, 1, topk), device=DEV, generator=g).to(torch.int32)
    plan = fm.get_mla_metadata()[0]
    cases = [
        ("dense decode B=64 128 heads ctx 4096", 2 * mb * mhq * mctx * 1088,
         lambda: fm.flash_mla_with_kvcache(q, kc, table, lens, 512, meta, splits, causal=True),
         lambda: mla_decode.mla_decode(q, kc, table, lens, 576**-0.5, True, None, None, False, None)),
        ("sparse V3.2 FP8 B=32 128 heads topk 2048", 2 * sb * shq * topk * 1088,
         lambda: fm.flash_mla_with_kvcache(sq, k_cache=scache, block_table=None, cache_seqlens=None, head_dim_v=512,
                                           tile_scheduler_metadata=plan, softmax_scale=576**-0.5,
                                           is_fp8_kvcache=True, indices=sidx),
         lambda: mla_decode.mla_decode(sq, scache, None, None, 576**-0.5, False, sidx, None, True, None)),
    ]  # fmt: skip
    for name, flops, vendor, ours in cases:
        want = vendor()[0]
        for cfg in configs:
            mla_decode._configs = lambda *_a, cfg=cfg: (cfg,)
            mla_decode.forget_plans()  # a plan keeps the config it was made with
            try:
                diff = float((ours()[0].float() - want.float()).abs().max())
                tv, tt = _time_pair(vendor, ours)
                row = {"kernel": "mla", "case": name, "config": cfg, "vendor_tflops": flops / tv / 1e12,
                       "triton_tflops": flops / tt / 1e12, "vs_vendor": tv / tt, "max_diff": diff}  # fmt: skip
            except Exception as e:
                row = {"kernel": "mla", "case": name, "config": cfg, "error": f"{type(e).__name__}: {e}"[:300]}
            print(json.dumps(row), flush=True)


def main(which):
    import sgl_kernel.flash_attn as fa
    import sgl_kernel.flash_mla as fm

    if "prefill" in which:
        prefill_rows(fa, lambda d: [(128, 64, 8, 3), (128, 128, 8, 3), (128, 128, 8, 2), (128, 64, 8, 2)])
    if "mla" in which:
        # (BLOCK_H, BLOCK_N, warps, stages, DV_BLOCK): a config of mla_decode._configs
        mla_rows(fm, [(64, 64, 8, 2, 512), (64, 32, 8, 2, 512), (64, 128, 8, 1, 256), (64, 64, 8, 1, 256)])


if __name__ == "__main__":
    main(sys.argv[1:] or ["prefill", "mla"])
