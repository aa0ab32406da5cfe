"""`accelbridge bench throughput --provider P ...`: providers side by side on the same inputs, in one run.

Each case is run by the vendor kernel called directly (when installed) and by every named
provider through the facade's own call path (catalog adaptation included), interleaved round
by round so clock drift hits all alike. Reported: time, TFLOP/s, ratio to the vendor kernel and
to the reference, and on a GPU the peak memory a call allocates beyond its inputs and its host time.
With ``graphs`` (a GPU), each runner is also recorded in a CUDA graph and the replays are timed side by
side, as a serving engine replays its decode steps: the GPU's time with no host time in it, each
against the vendor kernel's own graph.
"""

from __future__ import annotations

import statistics
from collections.abc import Callable
from typing import Any

import torch

from accelbridge.bench import problems, timing
from accelbridge.bench.problems import Case

VENDOR = "vendor (direct)"


def _peak_bytes(fn: Callable[[], Any], dev: torch.device) -> int | None:
    """Memory one call allocates beyond what was live before it (GPU only)."""
    if dev.type != "cuda":
        return None
    torch.cuda.synchronize()
    base = torch.cuda.memory_allocated(dev)
    torch.cuda.reset_peak_memory_stats(dev)
    fn()
    torch.cuda.synchronize()
    return torch.cuda.max_memory_allocated(dev) - base


def _host_us(fn: Callable[[], Any], dev: torch.device, calls: int = 20) -> float | None:
    """Host time of one call, queued behind its predecessors as a serving loop queues them (GPU only: on a
    CPU the host time is the time)."""
    if dev.type != "cuda":
        return None
    torch.cuda.synchronize()
    host = timing.host_time(fn, calls)
    torch.cuda.synchronize()
    return host * 1e6


def _runner(case: Case, provider: str) -> Callable[[], Any] | str:
    """The provider's call for this case through the facade's path, or why it cannot run it."""
    from accelbridge import ops
    from accelbridge.attention import introspect

    call = introspect.provider(case.op, provider)
    if call is None:
        return f"not a candidate of {case.op} here"
    if not call.viable:
        return "; ".join(call.reasons)
    spec = ops.get(case.op)
    args = tuple(case.kwargs.get(n, spec.params[n].default) for n in spec.names)
    refused = call.call_reasons(dict(zip(spec.names, args)))
    if refused:
        return "; ".join(refused)
    return lambda: call(*args)


def _captured(fn: Callable[[], Any]) -> Callable[[], Any] | str:
    """``fn`` recorded in a CUDA graph (the graph's replay), or why it cannot be (a sync, a host read)."""
    side = torch.cuda.Stream()
    side.wait_stream(torch.cuda.current_stream())
    with torch.cuda.stream(side):  # libraries' per-stream setup (workspaces, handles) before the capture
        fn()
    torch.cuda.current_stream().wait_stream(side)
    torch.cuda.synchronize()
    graph = torch.cuda.CUDAGraph()
    try:
        with torch.cuda.graph(graph):
            fn()
    except Exception as error:  # noqa: BLE001 - reported in the row, never hidden
        torch.cuda.synchronize()
        return f"not capturable: {type(error).__name__}: {(str(error).splitlines() or [''])[0][:160]}"
    return graph.replay


def _medians(runners: dict[str, Callable[[], Any]], rounds: int, timer: Any, iters: dict[str, int]) -> dict:
    """Each runner's median time, round-robin with the order alternating (ABBA) against clock drift."""
    times: dict[str, list[float]] = {name: [] for name in runners}
    for r in range(rounds):
        order = list(runners.items()) if r % 2 == 0 else list(reversed(runners.items()))
        for name, fn in order:
            times[name].append(timer(fn, iters[name]))
    return {name: statistics.median(t) for name, t in times.items()}


def bench_providers(providers: list[str], rounds: int = 5, budget_s: float = 0.05,
                    graphs: bool = False) -> dict[str, Any]:  # fmt: skip
    """Each case by the vendor kernel and each provider, A/B round-robin; medians and ratios; with ``graphs``, the
    CUDA-graph replays of each too."""
    from accelbridge import platforms

    dev = torch.device("cuda") if torch.cuda.is_available() else torch.device("cpu")
    timer = timing.timer(dev)
    rows = []
    for case in problems.cases(dev):
        runners: dict[str, Any] = {VENDOR: case.vendor} if case.vendor else {}
        skipped = {}
        for p in providers:
            r = _runner(case, p)
            (skipped.__setitem__(p, r) if isinstance(r, str) else runners.__setitem__(p, r))
        iters, peaks, hosts = {}, {}, {}
        for name, fn in runners.items():
            fn()  # warm up (compiles)
            once = timer(fn, 1)
            iters[name] = max(1, min(50, int(budget_s / max(once, 1e-6))))
            peaks[name] = _peak_bytes(fn, dev)
            hosts[name] = _host_us(fn, dev)
        medians = _medians(runners, rounds, timer, iters)
        replays, graph_medians = {}, {}
        if graphs and dev.type == "cuda":
            for name, fn in runners.items():
                replays[name] = _captured(fn)
            played = {name: g for name, g in replays.items() if not isinstance(g, str)}
            graph_medians = _medians(played, rounds, timer, iters)
        row = {"case": case.name, "op": case.op, **case.fields, "results": {}, "skipped": skipped}
        for name, t in medians.items():
            entry = {"us": t * 1e6, "tflops": case.flops / t / 1e12, "peak_mib": None, "host_us": hosts[name]}
            if peaks.get(name) is not None:
                entry["peak_mib"] = peaks[name] / 2**20
            if VENDOR in medians:
                entry["vs_vendor"] = medians[VENDOR] / t  # > 1: faster than the vendor kernel
            if "reference" in medians:
                entry["vs_reference"] = medians["reference"] / t
            if "kv_bytes" in case.fields:
                entry["kv_tb_s"] = case.fields["kv_bytes"] / t / 1e12
            if name in replays:
                entry["graph"] = _graph_entry(name, replays, graph_medians)
            row["results"][name] = entry
        rows.append(row)
        del runners, replays
        if dev.type == "cuda":
            torch.cuda.empty_cache()
    device = torch.cuda.get_device_name(0) if dev.type == "cuda" else "cpu"
    return {"what": "providers side by side", "device": device, "torch": torch.__version__,
            "platform": platforms.current().name, "rounds": rounds, "providers": providers, "graphs": graphs,
            "rows": rows}  # fmt: skip


def _graph_entry(name: str, replays: dict[str, Any], medians: dict[str, float]) -> dict[str, Any]:
    """A runner's graph replay: its time and its ratio to the vendor kernel's replay, or why it was not recorded."""
    if isinstance(replays[name], str):
        return {"skipped": replays[name]}
    entry = {"us": medians[name] * 1e6}
    if VENDOR in medians:
        entry["vs_vendor"] = medians[VENDOR] / medians[name]
    return entry


def format_providers(result: dict[str, Any]) -> str:
    lines = [f"providers side by side on {result['device']} (torch {result['torch']}, platform "
             f"{result['platform']}), median of {result['rounds']} rounds:"]  # fmt: skip
    for row in result["rows"]:
        lines.append(f"  {row['case']}")
        for name, e in row["results"].items():
            rate = f"{e['tflops']:7.2f} TFLOP/s" if e["tflops"] >= 1 else f"{e['tflops'] * 1e3:7.2f} GFLOP/s"
            parts = [f"{e['us']:10.1f} us", rate]
            if "kv_tb_s" in e:
                parts.append(f"KV {e['kv_tb_s']:.2f} TB/s")
            if "vs_vendor" in e and name != VENDOR:
                parts.append(f"{e['vs_vendor']:.3f}x vendor")
            if "vs_reference" in e and name != "reference":
                parts.append(f"{e['vs_reference']:.1f}x reference")
            if e.get("host_us") is not None:
                parts.append(f"host {e['host_us']:.0f} us")
            if e["peak_mib"] is not None:
                parts.append(f"peak +{e['peak_mib']:.0f} MiB")
            graph = e.get("graph")
            if graph is not None and "skipped" in graph:
                parts.append(f"graph: {graph['skipped']}")
            elif graph is not None:
                ratio = f" {graph['vs_vendor']:.3f}x vendor's" if "vs_vendor" in graph and name != VENDOR else ""
                parts.append(f"graph {graph['us']:.1f} us{ratio}")
            lines.append(f"    {name:<16} " + "  ".join(parts))
        for name, why in row["skipped"].items():
            lines.append(f"    {name:<16} skipped: {why}")
    return "\n".join(lines)
