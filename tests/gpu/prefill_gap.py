"""Where the torch provider's prefill time goes in a sustained loop: ``python tests/gpu/prefill_gap.py``.

On the bench's prefill (B=8, L=4096, 32/8 heads, d=128, causal), interleaved round by round as the
bench does: the vendor kernel, the facade's torch call, the dense path alone (over views of the rows
here: exactly batch x L of them) and through its packs, SDPA alone on packed inputs, the three packs,
and SDPA over strided views of the rows; then each call's host time and the GPU timeline of three
facade calls (gaps between kernels would mean a host-bound call). One JSON line per row.
"""

import json
import statistics
import time

import torch
import torch.nn.functional as F
from torch.profiler import ProfilerActivity, profile

from accelbridge.bench import cuda_time, problems
from accelbridge.bench import providers as bench_providers
from accelbridge.torch_attention import capabilities, dense

DEV = torch.device("cuda")


def main() -> None:
    case = problems.cases(DEV)[0]
    kw = case.kwargs
    q, k, v, cu, length = kw["q"], kw["k"], kw["v"], kw["cu_seqlens_q"], kw["max_seqlen_q"]
    batch, d = cu.shape[0] - 1, q.shape[2]
    packed = [dense._pack(x, cu, length) for x in (q, k, v)]
    views = [x.view(batch, length, x.shape[1], d).transpose(1, 2) for x in (q, k, v)]

    def sdpa(qkv):
        return F.scaled_dot_product_attention(*qkv, is_causal=True, scale=d**-0.5, enable_gqa=True)

    runs = {
        "vendor": case.vendor,
        "facade torch": bench_providers._runner(case, "torch"),
        "dense alone": lambda: dense.self_attention(q, k, v, cu, length, d**-0.5, True, capabilities.of(DEV)),
        "dense packed": lambda: dense.packed(q, k, v, cu, length, d**-0.5, True),
        "sdpa only": lambda: sdpa(packed),
        "pack3": lambda: [dense._pack(x, cu, length) for x in (q, k, v)],
        "sdpa strided": lambda: sdpa(views),
    }
    for fn in runs.values():
        fn()
    print(json.dumps({"sdpa_over_views_out_strides": list(sdpa(views).stride())}))
    for iters in (10, 25):
        times = {n: [] for n in runs}
        for r in range(5):
            for n, fn in runs.items() if r % 2 == 0 else reversed(list(runs.items())):
                times[n].append(cuda_time(fn, iters))
        medians = {n: round(statistics.median(t) * 1e6, 1) for n, t in times.items()}
        print(json.dumps({"interleaved_us": iters, **medians}))
    for n in ("vendor", "facade torch", "dense alone"):
        torch.cuda.synchronize()
        t0 = time.perf_counter()
        for _ in range(10):
            runs[n]()
        print(json.dumps({"host_us_per_call": n, "us": round((time.perf_counter() - t0) / 10 * 1e6, 1)}))
        torch.cuda.synchronize()
    with profile(activities=[ProfilerActivity.CUDA]) as prof:
        for _ in range(3):
            runs["facade torch"]()
        torch.cuda.synchronize()
    kernels = sorted((e for e in prof.events() if e.device_type.name == "CUDA"), key=lambda e: e.time_range.start)
    end = None
    for e in kernels:
        gap = 0.0 if end is None else e.time_range.start - end
        print(json.dumps({"kernel": e.name[:60], "us": round(e.time_range.elapsed_us(), 1), "gap_us": round(gap, 1)}))
        end = e.time_range.end


if __name__ == "__main__":
    main()
