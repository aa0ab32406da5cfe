"""`accelbridge bench overhead`: the per-call cost the facade adds over the provider called directly."""

from __future__ import annotations

import statistics
import time
from typing import Any

_INSTANT = """
def flash_attn_varlen_func(q, k, v, cu_seqlens_q, cu_seqlens_k, max_seqlen_q=None, max_seqlen_k=None,
    seqused_q=None, seqused_k=None, page_table=None, softmax_scale=None, causal=False, qv=None,
    q_descale=None, k_descale=None, v_descale=None, window_size=(-1, -1), attention_chunk=0,
    softcap=0.0, num_splits=1, pack_gqa=None, only_qv=False, sm_margin=0, return_softmax_lse=False,
    sinks=None, score_mod=None, aux_tensors=None, ver=3, out=None):
    return q
"""


# (row, check level, tensors): accelerator tensors are stood in for by meta tensors (no host read, as on a
# GPU); CPU tensors at the cheap level add the value checks (the host read is free there)
_LEVEL_ROWS = (
    ("off", "off", "meta"),
    ("cheap", "cheap", "meta"),
    ("cheap, CPU tensors", "cheap", "cpu"),
    ("full", "full", "cpu"),
)
# (label, catalog provider block): the same instant function declared as a built-in entry is (its
# kernel checks dtype and shape itself) and as a plugin or hub kernel usually is (no `validates`)
_OVERHEAD_PROVIDERS = (("validates dtype, shape", "    validates: [dtype, shape]\n"), ("no validates", ""))


def _overhead_catalog(validates: str) -> str:
    return (
        "schema: 1\nplatform: cpu\nproviders:\n  instant:\n    source: {module: instant_fa3}\n"
        + validates
        + "    ops:\n      fa3.varlen: {function: flash_attn_varlen_func}\norder:\n  fa3.varlen: [instant]\n"
    )


def bench_overhead(rounds: int = 15, calls: int = 20000) -> dict[str, Any]:
    """Per-call cost the facade adds over calling the same provider directly.

    Tensors on the meta device stand in for accelerator tensors (no host read); the cheap level
    on CPU tensors, which also checks values, and the full level run on CPU tensors.
    The provider is a function with sgl-kernel's exact varlen signature that returns at once,
    so only call overhead is measured; it is declared once with ``validates: [dtype, shape]``
    (as the built-in sgl-kernel entry) and once without (as a plugin or hub kernel). Facade and
    direct alternate round by round (A/B) in this process; medians of the per-round differences.
    """
    import os
    import sys
    import tempfile
    import textwrap
    from pathlib import Path

    import torch

    from accelbridge import attention, platforms

    tmp = Path(tempfile.mkdtemp(prefix="accelbridge-bench-"))
    (tmp / "instant_fa3.py").write_text(textwrap.dedent(_INSTANT))
    catalogs = []
    for n, (label, validates) in enumerate(_OVERHEAD_PROVIDERS):
        (tmp / f"bench{n}.yaml").write_text(_overhead_catalog(validates))
        catalogs.append((label, str(tmp / f"bench{n}.yaml")))
    sys.path.insert(0, str(tmp))
    saved = os.environ.get("ACCELBRIDGE_CATALOG_PATH")
    cases = [(label, row) for label, _ in catalogs for row, _, _ in _LEVEL_ROWS]
    times: dict[Any, list[float]] = {"direct": [], **{case: [] for case in cases}}
    try:
        from instant_fa3 import flash_attn_varlen_func as direct

        tensors = {
            device: (
                torch.zeros(8, 4, 64, dtype=torch.bfloat16, device=device),
                torch.tensor([0, 8], dtype=torch.int32, device=device),
            )
            for device in ("meta", "cpu")
        }
        facade = attention.flash_attn_varlen_func

        def run(fn, device: str) -> float:
            q, cu = tensors[device]
            t0 = time.perf_counter()
            for _ in range(calls):
                fn(q, q, q, cu, cu, 8, 8, causal=True)
            return (time.perf_counter() - t0) / calls

        with platforms.simulated("cpu"):
            for _ in range(rounds):
                times["direct"].append(run(direct, "meta"))
                for label, path in catalogs:
                    os.environ["ACCELBRIDGE_CATALOG_PATH"] = path
                    attention.reset()
                    assert attention.resolve("fa3.varlen").selected == "instant"
                    for row, level, device in _LEVEL_ROWS:
                        attention.set_checks(level)
                        q, cu = tensors[device]
                        facade(q, q, q, cu, cu, 8, 8, causal=True)  # resolve outside the timed loop
                        times[(label, row)].append(run(facade, device))
    finally:
        sys.path.remove(str(tmp))
        if saved is None:
            os.environ.pop("ACCELBRIDGE_CATALOG_PATH", None)
        else:
            os.environ["ACCELBRIDGE_CATALOG_PATH"] = saved
        attention.set_checks(None)
        attention.reset()
    d_times = times["direct"]

    def row(case: Any) -> dict[str, float]:
        return {"facade_us": statistics.median(times[case]) * 1e6,
                "added_us": statistics.median(f - d for f, d in zip(times[case], d_times)) * 1e6}  # fmt: skip

    by_provider = {label: {r: row((label, r)) for r, _, _ in _LEVEL_ROWS} for label, _ in catalogs}
    first = catalogs[0][0]
    return {
        "what": "facade vs direct call of the same instant provider (sgl-kernel varlen signature), A/B",
        "rounds": rounds,
        "calls_per_round": calls,
        "direct_us": statistics.median(d_times) * 1e6,
        "checks": by_provider[first],  # the built-in entry's case (kept for readers of earlier JSON)
        "providers": by_provider,
        "default_added_us": {label: levels["cheap"]["added_us"] for label, levels in by_provider.items()},
        "facade_us": by_provider[first]["off"]["facade_us"],
        "added_us": by_provider[first]["off"]["added_us"],
        "target_us": 1.0,
    }
