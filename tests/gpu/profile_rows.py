"""Where each bench row's time goes, per provider: the kernels a call launches (GPU µs each) and its host time.

    python tests/gpu/profile_rows.py [--provider torch] [--grep TEXT] [--json FILE]

The rows are `accelbridge bench throughput`'s (``bench.problems.cases``); the vendor kernel is called directly
where installed, each provider through the facade's path as the bench runs it. One block a row and runner:
launches per call, GPU time per call (the sum of its kernels), host time per call, then the kernels, longest
first. The profile before a kernel change and after it, side by side with the vendor's.
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).resolve().parents[2]))

from accelbridge.bench import problems, providers  # noqa: E402
from tests.gpu.profiling import kernel_times  # noqa: E402


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--provider", action="append", default=None)
    ap.add_argument("--grep", default="")
    ap.add_argument("--json", default=None)
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
            out.append({"case": case.name, "runner": name, "launches": launches, "gpu_us": gpu_us,
                        "host_us": host, "kernels": rows})  # fmt: skip
        del runners
        torch.cuda.empty_cache()
    if args.json:
        Path(args.json).write_text(json.dumps(out, indent=1))


if __name__ == "__main__":
    main()
