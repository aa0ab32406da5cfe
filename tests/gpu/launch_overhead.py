"""What one launch costs the host on this GPU machine: ``python tests/gpu/launch_overhead.py``.

The torch provider's small calls are host-bound (dense MLA B=1: about 21 us of GPU time, 370-500 us of host time in
session 14's bench). This separates the parts: the split merge kernel launched through Triton's JIT (its ~25
arguments bound, specialised and keyed each call) and through its compiled kernel directly, an allocation, a torch
launch, and the whole provider call with cProfile's view of it. One JSON line a measurement, host us a call.
"""

import json

import torch

from accelbridge.bench import providers
from accelbridge.torch_attention import splits
from accelbridge.torch_attention.splits_kernel import merge_kernel

DEV = torch.device("cuda")


def host_us(fn, calls=2000):
    """Host us a call after a warm-up call, through the bench's own host timer."""
    fn()
    return round(providers._host_us(fn, DEV, calls), 2)


def main():
    rows, nsplit, heads = 1, 16, 128
    mid_o = torch.randn(rows, nsplit, heads, 512, device=DEV)
    mid_l = torch.randn(rows, nsplit, heads, device=DEV)
    out = torch.empty(rows, 1, heads, 512, dtype=torch.bfloat16, device=DEV)
    lse = torch.empty(rows, heads, 1, device=DEV)
    so, sl = mid_o.stride(), mid_l.stride()
    o_str, l_str = (so[0], so[0], so[2], so[1]), (sl[0], sl[0], sl[2], sl[1])
    args = (mid_o, mid_l, lse, out, lse, nsplit, 1, *o_str, *l_str, *out.stride()[:3], lse.stride(0), lse.stride(2),
            lse.stride(1))  # fmt: skip
    consts = dict(DV=512, BLOCK_S=16, BLOCK_DV=256, HAS_SINK=False, SINK_IN_LSE=False, LONELY_INF=True)
    grid = (rows, heads)
    compiled = merge_kernel[grid](*args, **consts, num_warps=4)
    ordered = [*args, *consts.values()]  # the signature's order: the constexprs last
    launcher = compiled[(*grid, 1)]  # the compiled kernel takes all three grid dimensions
    planned = splits.merge_launch(mid_o, mid_l, o_str, l_str, out, lse, False, sink_in_lse=False, lonely_inf=True)
    rows_out = {
        "merge through the JIT": host_us(lambda: merge_kernel[grid](*args, **consts, num_warps=4)),
        "merge through its compiled kernel": host_us(lambda: launcher(*ordered)),
        "the planned merge (splits.merge_launch, the provider's)": host_us(
            lambda: planned(mid_o, mid_l, lse, out, lse)
        ),
        "torch.empty (1 MiB)": host_us(lambda: torch.empty(1 << 18, device=DEV)),
        "torch launch (x.zero_())": host_us(lambda: lse.zero_()),
    }
    for what, us in rows_out.items():
        print(json.dumps({"what": what, "host_us": us}), flush=True)


if __name__ == "__main__":
    main()
