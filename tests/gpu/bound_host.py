"""Host time a call, side by side in one process: the facade over sgl-kernel, the torch provider with its launches
bound below Triton's runner (``triton_launcher``), and the same with the bound launches declined (Triton's runner).

    python tests/gpu/bound_host.py [--rounds 7]

Each bench row (``bench.problems.cases``); per round and runner, the host clock over a batch of calls queued behind
one another (few enough that the launch queue never fills, so the GPU never holds the host back), the runners'
order alternating round by round; medians. One line a row, and a JSON line.
"""

from __future__ import annotations

import argparse
import json
import statistics
import sys
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).resolve().parents[2]))

from accelbridge.bench import problems, providers, timing  # noqa: E402
from accelbridge.torch_attention import triton_launcher  # noqa: E402

BOUND = triton_launcher.Bound.__call__


def _declined(self, values, grid):
    return False


def _host_us(fn, calls: int, runner: bool) -> float:
    """Host us a call of ``fn``, its launches bound or (``runner``) declined to Triton's runner."""
    triton_launcher.Bound.__call__ = _declined if runner else BOUND
    try:
        fn()
        return providers._host_us(fn, torch.device("cuda"), calls)
    finally:
        triton_launcher.Bound.__call__ = BOUND


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--rounds", type=int, default=7)
    args = ap.parse_args()
    dev = torch.device("cuda")
    out = []
    for case in problems.cases(dev):
        runners = {}
        for p in ("sgl-kernel", "torch"):  # the facade over sgl-kernel where it is installed
            r = providers._runner(case, p)
            if not isinstance(r, str):
                runners[p] = (r, False)
        if "torch" in runners:
            runners["torch, Triton's runner"] = (runners["torch"][0], True)
        gpu = timing.cuda_time(runners["torch"][0], 3) if "torch" in runners else 1e-3
        calls = max(5, min(200, int(2e-2 / max(gpu, 1e-6))))  # ~20 ms of GPU work a batch: the queue never fills
        times = {name: [] for name in runners}
        for r in range(args.rounds):
            order = list(runners.items()) if r % 2 == 0 else list(reversed(runners.items()))
            for name, (fn, runner) in order:
                times[name].append(_host_us(fn, calls, runner))
        med = {name: round(statistics.median(t), 1) for name, t in times.items()}
        print(f"{case.name}: host us a call, median of {args.rounds} rounds of {calls} calls: "
              + ", ".join(f"{name} {us}" for name, us in med.items()), flush=True)  # fmt: skip
        out.append({"case": case.name, "calls": calls, "host_us": med})
        del runners
        torch.cuda.empty_cache()
    print(json.dumps({"gpu": torch.cuda.get_device_name(0), "rows": out}))


if __name__ == "__main__":
    main()
