"""Where each bench row's time goes, per provider: the kernels a call launches (GPU µs each) and its host time.

    python tests/gpu/profile_rows.py [--provider torch] [--grep TEXT] [--json FILE] [--host N]

The rows are `accelbridge bench throughput`'s (``bench.problems.cases``); the vendor kernel is called directly
where installed, each provider through the facade's path as the bench runs it. One block a row and runner:
launches per call, GPU time per call (the sum of its kernels), host time per call, then the kernels, longest
first. The profile before a kernel change and after it, side by side with the vendor's. With ``--host N``, each
provider's host time a call by Python function too (cProfile over 200 calls, the N functions with the most time
of their own): where the host time goes, not the GPU's. With ``--runner``, each provider's host time a call
again with the bound C launches declined (``triton_launcher``): through Triton's runner, as before them, side by side.
"""

from __future__ import annotations

import argparse
import cProfile
import io
import json
import pstats
import sys
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).resolve().parents[2]))

from accelbridge.bench import problems, providers  # noqa: E402
from accelbridge.torch_attention import triton_launcher  # noqa: E402
from tests.gpu.profiling import kernel_times  # noqa: E402


def host_functions(fn, top: int, calls: int = 200) -> str:
    """The ``top`` Python functions by their own host time over ``calls`` calls (per call, in us)."""
    fn()
    torch.cuda.synchronize()
    prof = cProfile.Profile()
    prof.enable()
    for _ in range(calls):
        fn()
    prof.disable()
    torch.cuda.synchronize()
    text = io.StringIO()
    stats = pstats.Stats(prof, stream=text)
    for order, label in ((2, "own"), (3, "cumulative")):  # pstats rows: (cc, nc, own, cumulative, callers)
        text.write(f"    by {label} time:\n")
        for (file, line, name), row in sorted(stats.stats.items(), key=lambda kv: -kv[1][order])[:top]:
            where = f"{Path(file).name}:{line}({name})" if line else name
            text.write(f"    {row[2] / calls * 1e6:8.1f} us own {row[3] / calls * 1e6:8.1f} us cum  "
                       f"x{row[1] / calls:g}  {where}\n")  # fmt: skip
    return text.getvalue()


def runner_host_us(fn, dev) -> float:
    """``fn``'s host time a call with every bound launch declined, so launched by Triton's runner."""
    bound = triton_launcher.Bound.__call__
    triton_launcher.Bound.__call__ = lambda self, values, grid: False
    try:
        fn()
        return providers._host_us(fn, dev)
    finally:
        triton_launcher.Bound.__call__ = bound


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--provider", action="append", default=None)
    ap.add_argument("--grep", default="")
    ap.add_argument("--json", default=None)
    ap.add_argument("--host", type=int, default=0, help="also the N Python functions with the most host time")
    ap.add_argument("--runner", action="store_true", help="also the host time through Triton's runner")
    args = ap.parse_args()
    dev = torch.device("cuda")
    out = []
    for case in problems.cases(dev):
        if args.grep not in case.name:
            continue
        runners = {providers.VENDOR: case.vendor} if case.vendor else {}
        for p in args.provider or ["torch"]:
            r = providers._runner(case, p)
            if isinstance(r, str):
                print(f"{case.name}: {p} skipped: {r}")
                continue
            runners[p] = r
        for name, fn in runners.items():
            rows = kernel_times(fn)
            host = providers._host_us(fn, dev)
            gpu_us = sum(r["us"] for r in rows)
            launches = sum(r["calls"] for r in rows)
            print(f"\n{case.name} / {name}: {launches:g} launches, GPU {gpu_us:.1f} us, host {host:.1f} us a call")
            for r in rows[:8]:
                print(f"    {r['us']:9.1f} us  x{r['calls']:g}  {r['kernel']}")
            runner = None
            if args.runner and name != providers.VENDOR:
                runner = runner_host_us(fn, dev)
                print(f"  host through Triton's runner (the bound launches declined): {runner:.1f} us a call")
            if args.host:
                print(f"  host by function (cProfile, its own overhead included):\n{host_functions(fn, args.host)}")
            out.append({"case": case.name, "runner": name, "launches": launches, "gpu_us": gpu_us,
                        "host_us": host, "runner_host_us": runner, "kernels": rows})  # fmt: skip
        del runners
        torch.cuda.empty_cache()
    if args.json:
        Path(args.json).write_text(json.dumps(out, indent=1))


if __name__ == "__main__":
    main()
