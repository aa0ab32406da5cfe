"""Each bench row's kernels under Nsight Compute: why a kernel takes the time it does, beside the vendor's.

    ncu --profile-from-start off --clock-control none --section SpeedOfLight ... \\
        python tests/gpu/ncu_rows.py [--grep TEXT] [--provider torch]

(``bash tests/gpu/battery.sh ncu`` runs it with the sections that explain a kernel's time.) Every runner of the
matching rows (``bench.problems.cases``: the vendor kernel called directly where installed, each provider through
the facade) is warmed up (compiled) first; then each runs once between ``cudaProfilerStart`` and ``Stop``, so ncu
profiles those launches alone, announced on stdout in order (ncu's report lists the kernels in launch order).
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).resolve().parents[2]))

from accelbridge.bench import problems, providers  # noqa: E402


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--provider", action="append", default=None)
    ap.add_argument("--grep", action="append", default=None, help="rows whose name holds this (repeatable)")
    args = ap.parse_args()
    dev = torch.device("cuda")
    runs = []
    for case in problems.cases(dev):
        if args.grep and not any(g in case.name for g in args.grep):
            continue
        runners = {providers.VENDOR: case.vendor} if case.vendor else {}
        for p in args.provider or ["torch"]:
            r = providers._runner(case, p)
            if isinstance(r, str):
                print(f"{case.name}: {p} skipped: {r}", flush=True)
            else:
                runners[p] = r
        for name, fn in runners.items():
            fn(), fn()  # compiled, planned, warm
            runs.append((f"{case.name} / {name}", fn))
    torch.cuda.synchronize()
    cudart = torch.cuda.cudart()
    for label, fn in runs:
        print(f"profiled: {label}", flush=True)
        cudart.cudaProfilerStart()
        fn()
        torch.cuda.synchronize()
        cudart.cudaProfilerStop()


if __name__ == "__main__":
    main()
