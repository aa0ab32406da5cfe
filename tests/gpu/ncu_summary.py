"""The Nsight Compute CSV of ``battery.sh ncu`` (``--csv --page details``) as one block a kernel, launch order.

    python tests/gpu/ncu_summary.py ncu.csv

The metrics that say where a kernel's time goes: its duration; compute and memory throughput against the GPU's
peak; occupancy and what limits it (registers, shared memory); the schedulers' issue rate and eligible warps;
waves. The full CSV stays beside it.
"""

from __future__ import annotations

import csv
import sys
from collections import OrderedDict

_METRICS = ("Duration", "Compute (SM) Throughput", "Memory Throughput", "DRAM Throughput", "L2 Hit Rate",
            "L1/TEX Hit Rate", "Executed Ipc Active", "Issue Slots Busy", "No Eligible", "Eligible Warps Per Scheduler",
            "Active Warps Per Scheduler", "Warp Cycles Per Issued Instruction", "Registers Per Thread",
            "Dynamic Shared Memory Per Block", "Theoretical Occupancy", "Achieved Occupancy",
            "Block Limit Registers", "Block Limit Shared Mem", "Grid Size", "Block Size", "Waves Per SM")  # fmt: skip


def main(path: str) -> None:
    with open(path, newline="") as f:
        lines = [line for line in f if line.startswith('"')]  # ncu's own notes ("==PROF==") are not CSV
    kernels: OrderedDict[str, dict] = OrderedDict()
    for row in csv.DictReader(lines):
        k = kernels.setdefault(row["ID"], {"name": row.get("Kernel Name", "?"), "metrics": {}})
        name = row.get("Metric Name", "")
        if name in _METRICS and name not in k["metrics"]:
            k["metrics"][name] = f"{row.get('Metric Value', '')} {row.get('Metric Unit', '')}".strip()
    if not kernels:
        print(f"no kernel in {path}")
    for kid, k in kernels.items():
        print(f"[{kid}] {k['name'][:110]}")
        for name in _METRICS:
            if name in k["metrics"]:
                print(f"    {name:<36} {k['metrics'][name]}")


if __name__ == "__main__":
    main(sys.argv[1])
