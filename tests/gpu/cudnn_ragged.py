"""cuDNN's ragged (THD) attention for the torch provider's prefill: ``python tests/gpu/cudnn_ragged.py``.

Asks, on this GPU and torch, what ``aten._cudnn_attention_forward`` with cumulative lengths does
with our packed layout: whether it takes GQA, which rows it writes (rows past the last sequence,
a zero-length sequence), its lse layout, whether it syncs, what a new shape costs on its first call
(the graph build, against the dense SDPA path's), and its time side by side with sgl-kernel's FA3,
the dense path and the Triton prefill kernel. One JSON line per finding; arguments pick the parts
(behaviour, first_calls, speed).
"""

import json
import statistics
import sys
import time
from functools import partial

import torch

from accelbridge.bench import cuda_time
from accelbridge.torch_attention import dense, prefill
from accelbridge.torch_attention.core import Masking

DEV = torch.device("cuda")
BF16 = torch.bfloat16


def emit(**row):
    print(json.dumps(row), flush=True)


def ragged(q, k, v, cu, max_len, lse=False):
    return torch.ops.aten._cudnn_attention_forward(
        q, k, v, None, cu, cu, max_len, max_len, lse, 0.0, True, False, scale=q.shape[-1] ** -0.5
    )


def batch(lens, hq=32, hk=8, d=128, tail=0, seed=0):
    g = torch.Generator(device=DEV).manual_seed(seed)
    total = sum(lens) + tail
    q = torch.randn(total, hq, d, device=DEV, generator=g, dtype=BF16)
    k = torch.randn(total, hk, d, device=DEV, generator=g, dtype=BF16)
    v = torch.randn(total, hk, d, device=DEV, generator=g, dtype=BF16)
    cu = torch.tensor([0, *torch.tensor(lens).cumsum(0).tolist()], dtype=torch.int32, device=DEV)
    return q, k, v, cu


def triton_prefill(q, k, v, cu, max_len):
    return prefill.prefill(q, k, v, cu, cu, max_len, None, None, None, q.shape[-1] ** -0.5, Masking(causal=True),
                           0.0, None, False)[0]  # fmt: skip


def behaviour():
    emit(torch=torch.__version__, cudnn=torch.backends.cudnn.version(), device=torch.cuda.get_device_name())
    emit(flash_schema=str(torch.ops.aten._flash_attention_forward.default._schema)[:400])
    cases = [("gqa 32/8", [100, 37, 256], 32, 8, 0), ("mha", [100, 37, 256], 8, 8, 0),
             ("tail rows", [100, 37, 256], 32, 8, 5), ("zero-length seq", [100, 0, 256], 32, 8, 0),
             ("one row", [1, 64], 32, 8, 0)]  # fmt: skip
    for name, lens, hq, hk, tail in cases:
        q, k, v, cu = batch(lens, hq, hk)
        if tail:
            q, k, v = (torch.cat([x, torch.randn(tail, *x.shape[1:], device=DEV, dtype=BF16)]) for x in (q, k, v))
        want = triton_prefill(q, k, v, cu, max(lens))
        try:
            o, lse = ragged(q, k, v, cu, max(lens), lse=True)[:2]
            valid = int(cu[-1])
            emit(case=name, out_shape=list(o.shape), out_stride=list(o.stride()), lse_shape=list(lse.shape),
                 max_diff=float((o[:valid].float() - want[:valid].float()).abs().max()),
                 nan=bool(o[:valid].isnan().any()),
                 tail_rows=o[valid:].float().abs().max().item() if tail else None)  # fmt: skip
        except Exception as e:
            emit(case=name, error=f"{type(e).__name__}: {e}"[:400])
    q, k, v, cu = batch([512] * 4)
    ragged(q, k, v, cu, 512)
    torch.cuda.synchronize()
    torch.cuda.set_sync_debug_mode("error")
    try:
        ragged(q, k, v, cu, 512)
        emit(sync="none")
    except Exception as e:
        emit(sync=f"{type(e).__name__}: {e}"[:200])
    finally:
        torch.cuda.set_sync_debug_mode("default")


def first_calls():
    """Host time of the first call at a new shape (the graph build) and of the next, per path."""
    for lens in ([1000, 3000], [1000, 3001], [999, 3001], [2048] * 3, [700] * 5):
        q, k, v, cu = batch(lens)
        args = (q, k, v, cu, max(lens))
        for path, fn in (("cudnn ragged", partial(ragged, *args)),
                         ("dense sdpa", partial(dense.self_attention, *args, 128**-0.5, True))):  # fmt: skip
            times = []
            for _ in range(2):
                torch.cuda.synchronize()
                t = time.perf_counter()
                fn()
                torch.cuda.synchronize()
                times.append(time.perf_counter() - t)
            emit(first_call=path, lens=lens, first_ms=times[0] * 1e3, second_ms=times[1] * 1e3)


def speed(fa):
    def med(fn):
        fn()
        torch.cuda.synchronize()
        return statistics.median(cuda_time(fn, 10) for _ in range(5))

    ragged_lens = torch.randint(64, 4097, (16,), generator=torch.Generator().manual_seed(0)).tolist()
    shapes = [("uniform B=8 L=4096 32/8 d=128", [4096] * 8, 128), ("ragged 16 seqs 64..4096 d=128", ragged_lens, 128),
              ("uniform B=4 L=4096 32/8 d=64", [4096] * 4, 64)]  # fmt: skip
    for name, lens, d in shapes:
        q, k, v, cu = batch(lens, d=d)
        m = max(lens)
        flops = sum(4 * 32 * d * n * n / 2 for n in lens)
        args = (q, k, v, cu, m)
        paths = {"cudnn ragged": partial(ragged, *args), "triton prefill": partial(triton_prefill, *args)}
        if q.shape[0] >= dense.FILL * len(lens) * m:
            paths["dense sdpa"] = partial(dense.self_attention, *args, d**-0.5, True)
        if fa is not None:
            paths["sgl fa3"] = partial(fa.flash_attn_varlen_func, q, k, v, cu, cu, m, m, causal=True)
        want = paths["triton prefill"]().float()
        row = {"case": name}
        for path, fn in paths.items():
            out = fn()
            out = out[0] if isinstance(out, tuple) else out
            diff = float((out.float() - want).abs().max())
            row[path] = {"tflops": round(flops / med(fn) / 1e12, 1), "max_diff": diff}
        emit(**row)


if __name__ == "__main__":
    parts = sys.argv[1:] or ["behaviour", "first_calls", "speed"]
    if "behaviour" in parts:
        behaviour()
    if "first_calls" in parts:
        first_calls()
    if "speed" in parts:
        try:
            import sgl_kernel.flash_attn as fa
        except ImportError:
            fa = None
        speed(fa)
