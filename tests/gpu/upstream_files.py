"""Run the kernels' own upstream test files, unchanged, through accelbridge's facade (on the GPU machine).

The upstream files are not part of this repository: pass the folder holding them. Each target puts a module
of the upstream kernel's name in front of them (``flash_mla`` for FlashMLA's tests, a ``sgl_kernel`` package
for sgl-kernel's) whose functions are the facade's, so the provider ``ACCELBRIDGE_PROVIDERS`` pins serves
every call (``fa3=torch,flashmla=torch`` for the torch provider):

    python tests/gpu/upstream_files.py flashmla-dense  DIR [--dtype bf16|fp16|both] [--every N] [--json FILE]
    python tests/gpu/upstream_files.py flashmla-sparse DIR [--every N] [--json FILE]
    python tests/gpu/upstream_files.py sgl DIR/test_flashmla.py [pytest args...]

FlashMLA's files are scripts: their cases are collected by running their ``main`` with the test function
replaced by a collector, then each case runs with its correctness check and without its kernel-name
profiling (``test_performance``/``num_runs`` off: the kernel names are the vendor's). A case that raises
(CUDA out of memory included) is a failure with its error. Prints one line a failure and a summary.
"""

from __future__ import annotations

import argparse
import dataclasses
import importlib
import json
import os
import subprocess
import sys
import tempfile
import time
import traceback
import types
from pathlib import Path

FACADE_NAMES = {
    "flash_mla": ("get_mla_metadata", "flash_mla_with_kvcache", "flash_mla_sparse_fwd"),
    "flash_attn": ("flash_attn_varlen_func", "flash_attn_with_kvcache", "get_scheduler_metadata"),
}


def _facade_module(name: str, functions: tuple[str, ...]) -> types.ModuleType:
    from accelbridge import attention

    module = types.ModuleType(name)
    for fn in functions:
        setattr(module, fn, getattr(attention, fn))
    return module


def _flashmla_module() -> types.ModuleType:
    """``flash_mla`` as FlashMLA's tests call it: its own positional order (no descale_q/descale_k between
    ``causal`` and ``is_fp8_kvcache``, unlike sgl-kernel's), bound to the facade by keyword."""
    from accelbridge import attention

    module = _facade_module("flash_mla", FACADE_NAMES["flash_mla"])

    def flash_mla_with_kvcache(q, k_cache, block_table, cache_seqlens, head_dim_v, tile_scheduler_metadata,
                               num_splits=None, softmax_scale=None, causal=False, is_fp8_kvcache=False, indices=None,
                               attn_sink=None, extra_k_cache=None, extra_indices_in_kvcache=None, topk_length=None,
                               extra_topk_length=None):  # fmt: skip
        return attention.flash_mla_with_kvcache(
            q, k_cache, block_table, cache_seqlens, head_dim_v, tile_scheduler_metadata, num_splits,
            softmax_scale=softmax_scale, causal=causal, is_fp8_kvcache=is_fp8_kvcache, indices=indices,
            attn_sink=attn_sink, extra_k_cache=extra_k_cache, extra_indices_in_kvcache=extra_indices_in_kvcache,
            topk_length=topk_length, extra_topk_length=extra_topk_length,
        )  # fmt: skip

    module.flash_mla_with_kvcache = flash_mla_with_kvcache
    return module


def _stub(name: str, **attrs) -> None:
    """A module the upstream file imports only for printing (``rich``), where it is not installed."""
    try:
        importlib.import_module(name)
    except ImportError:
        module = types.ModuleType(name)
        module.__dict__.update(attrs)
        sys.modules[name] = module


def _run_cases(cases: list, run, label) -> dict:
    import torch

    failed, oom, started = [], 0, time.perf_counter()
    for at, case in enumerate(cases):
        try:
            ok = run(case)
        except torch.OutOfMemoryError as error:
            ok, oom = False, oom + 1
            print(f"OOM {label(case)}: {str(error).splitlines()[0]}", flush=True)
        except AssertionError:
            ok = False
        except Exception:
            ok = False
            print(f"ERROR {label(case)}:\n{traceback.format_exc()[-2000:]}", flush=True)
        if not ok:
            failed.append(label(case))
            print(f"FAILED [{at + 1}/{len(cases)}] {label(case)}", flush=True)
        torch.cuda.empty_cache()
    seconds = time.perf_counter() - started
    return {"cases": len(cases), "passed": len(cases) - len(failed), "failed": failed, "oom": oom,
            "seconds": round(seconds, 1)}  # fmt: skip


GREP: list[str] = []  # --grep: only the cases whose description holds each of these


def _select(cases: list, every: int, shard: str, heavy: str, is_heavy) -> list:
    """Every ``every``-th case; of those shard K of N (``K/N``: cases K, K + N, ...: N processes share one GPU,
    the upstream files' own references being host-bound); heavy cases (their long-context rows) all, only or
    none, so the parallel shards never hold two of them at once."""
    k, n = (int(x) for x in shard.split("/"))
    picked = [c for c in cases[::every][k::n] if all(text in str(c) for text in GREP)]
    if heavy == "skip":
        return [c for c in picked if not is_heavy(c)]
    return [c for c in picked if is_heavy(c)] if heavy == "only" else picked


def flashmla_dense(folder: Path, dtypes: list[str], every: int, shard: str = "0/1", heavy: str = "all") -> dict:
    import torch

    sys.modules["flash_mla"] = _flashmla_module()
    sys.path.insert(0, str(folder))
    mod = importlib.import_module("test_flash_mla_dense_decoding")
    test = mod.test_flash_mla
    results = {}
    for dtype in dtypes:
        collected: list = []
        mod.test_flash_mla = collected.append
        mod.main({"bf16": torch.bfloat16, "fp16": torch.float16}[dtype])  # sets the default dtype and device
        mod.test_flash_mla = test
        cases = [dataclasses.replace(c, test_performance=False) for c in collected]
        # heavy: the cases whose inputs take a GiB or more (b 64-128, s_k 4096 and up, several kv heads)
        cases = _select(cases, every, shard, heavy, lambda c: c.b * c.s_k * c.h_kv >= 64 * 4096 * 2 or c.b >= 128)

        def run(case) -> bool:
            test(case)  # asserts its own tolerance
            return True

        results[dtype] = _run_cases(cases, run, lambda c, d=dtype: f"{d} {c}")
        print(f"flashmla-dense {dtype}: {json.dumps(results[dtype])[:400]}", flush=True)
    return results


def flashmla_sparse(folder: Path, every: int, shard: str = "0/1", heavy: str = "all") -> dict:
    import torch

    sys.modules["flash_mla"] = _flashmla_module()
    _stub("rich")
    _stub("rich.console", Console=object)
    _stub("rich.table", Table=object)
    sys.path.insert(0, str(folder))
    mod = importlib.import_module("test_flash_mla_sparse_decoding")
    torch.set_default_dtype(torch.bfloat16)
    torch.set_default_device("cuda")
    torch.set_float32_matmul_precision("high")
    cases = [t.to_test_param() for t in mod.gen_testcase()]
    cases = [dataclasses.replace(c, num_runs=0) for c in cases if c.check_correctness]
    cases = _select(cases, every, shard, heavy, lambda c: c.decode.b * c.s_q * c.topk >= 74 * 2 * 16384)
    return {"bf16": _run_cases(cases, lambda c: mod.test_flash_mla(c).is_correct, str)}


def sgl(test_file: Path, pytest_args: list[str]) -> int:
    """sgl-kernel's pytest files, with a ``sgl_kernel`` package of the facade's functions in front."""
    test_file = test_file.resolve()  # pytest runs in the file's folder
    with tempfile.TemporaryDirectory() as tmp:
        package = Path(tmp) / "sgl_kernel"
        package.mkdir()
        (package / "__init__.py").write_text('__version__ = "facade"\n')
        for name, functions in FACADE_NAMES.items():
            (package / f"{name}.py").write_text(f"from accelbridge.attention import {', '.join(functions)}\n")
        env = {**os.environ, "PYTHONPATH": os.pathsep.join([tmp, str(Path(__file__).parents[2]),
                                                             os.environ.get("PYTHONPATH", "")])}  # fmt: skip
        cmd = [sys.executable, "-m", "pytest", str(test_file), "-q", "-p", "no:cacheprovider", *pytest_args]
        return subprocess.call(cmd, env=env, cwd=test_file.parent)


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("target", choices=["flashmla-dense", "flashmla-sparse", "sgl"])
    parser.add_argument("path", type=Path, help="the upstream tests folder (FlashMLA) or test file (sgl)")
    parser.add_argument("--dtype", choices=["bf16", "fp16", "both"], default="both")
    parser.add_argument("--every", type=int, default=1, help="run every Nth case (1: all)")
    parser.add_argument("--shard", default="0/1", help="K/N: this process runs cases K, K+N, ... (0/1: all)")
    parser.add_argument("--heavy", choices=["all", "skip", "only"], default="all", help="the long-context cases")
    parser.add_argument("--json", type=Path, help="write the summary here")
    parser.add_argument("--grep", action="append", default=[], help="only cases whose description holds TEXT")
    args, rest = parser.parse_known_args()
    GREP.extend(args.grep)
    if args.target == "sgl":
        return sgl(args.path, rest)
    print(f"providers: ACCELBRIDGE_PROVIDERS={os.environ.get('ACCELBRIDGE_PROVIDERS', '')!r}", flush=True)
    if args.target == "flashmla-dense":
        dtypes = ["bf16", "fp16"] if args.dtype == "both" else [args.dtype]
        summary = flashmla_dense(args.path, dtypes, args.every, args.shard, args.heavy)
    else:
        summary = flashmla_sparse(args.path, args.every, args.shard, args.heavy)
    print(json.dumps(summary)[:3000])
    if args.json:
        args.json.write_text(json.dumps(summary, indent=1))
    return 0 if all(not r["failed"] for r in summary.values()) else 1


if __name__ == "__main__":
    sys.exit(main())
