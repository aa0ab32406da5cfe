"""Argument checks the facade runs before any kernel: a bad call is a ValueError naming the argument.

Two kinds. *Cheap* checks read only tensor metadata (dtype, shape, device): always on.
*Value* checks read index tensors (cu_seqlens monotonic, max_seqlen, page-table range, cache
capacity): on a GPU they cost a host sync, so they are skipped while a CUDA graph is being
captured and turned off for production with ``ACCELBRIDGE_CHECKS=cheap`` (or
``set_level("cheap")``). ``ACCELBRIDGE_CHECKS=off`` drops the cheap ones too (benchmarks).
"""

from __future__ import annotations

import math
import os
import warnings
from typing import Any

import torch

from accelbridge.attention.errors import InvalidArgumentError

LEVELS = ("full", "cheap", "off")
_FLOAT = frozenset(
    getattr(torch, n)
    for n in ("float16", "bfloat16", "float32", "float8_e4m3fn", "float8_e5m2", "float8_e4m3fnuz", "float8_e5m2fnuz")
    if hasattr(torch, n)
)
_I32 = torch.int32
_PAGED_FORM = "(num_blocks, page_size, num_heads_k, head_dim)"
_level = "full"
cheap_on, values_on = True, True


def set_level(level: str | None = None) -> str:
    """Set the check level (None: from ``ACCELBRIDGE_CHECKS``, default full); returns it."""
    global _level, cheap_on, values_on
    if level is None:
        level = os.environ.get("ACCELBRIDGE_CHECKS", "").strip().lower() or "full"
        if level not in LEVELS:  # from the environment: warn and keep the safest level
            warnings.warn(f"accelbridge: ACCELBRIDGE_CHECKS={level!r} is not one of {', '.join(LEVELS)}; using full",
                          RuntimeWarning, stacklevel=2)  # fmt: skip
            level = "full"
    if level not in LEVELS:
        raise InvalidArgumentError(f"set_checks({level!r}): expected one of {', '.join(LEVELS)}")
    _level, cheap_on, values_on = level, level != "off", level == "full"
    return level


def level() -> str:
    return _level


def _fail(fn: str, arg: str, got: str, expected: str) -> None:
    raise InvalidArgumentError(f"{fn}: {arg} {got}; expected {expected}")


def _tensor(fn: str, name: str, t: Any, ndim: tuple[int, ...], form: str) -> None:
    if not isinstance(t, torch.Tensor):
        _fail(fn, name, f"is {type(t).__name__}", f"a tensor {form}")
    if t.dim() not in ndim:
        _fail(fn, name, f"has shape {tuple(t.shape)}", f"{form}")


def _same(fn: str, q: torch.Tensor, others: dict[str, Any]) -> None:
    """Floating dtype shared with q, same device as q."""
    if q.dtype not in _FLOAT:
        _fail(fn, "q", f"has dtype {q.dtype}", "a floating dtype (bf16, fp16, fp32, fp8)")
    for name, t in others.items():
        if t.dtype != q.dtype:
            _fail(fn, name, f"has dtype {t.dtype} but q has {q.dtype}", "q, k and v to share one dtype")
        if t.device != q.device:
            _fail(fn, name, f"is on {t.device} but q is on {q.device}", "every tensor on q's device")


def _index(fn: str, name: str, t: Any, q: torch.Tensor, ndim: int, form: str) -> None:
    if t is None:
        return
    if not isinstance(t, torch.Tensor) or t.dtype != torch.int32 or t.dim() != ndim:
        got = f"is {t.dtype} with shape {tuple(t.shape)}" if isinstance(t, torch.Tensor) else f"is {type(t).__name__}"
        _fail(fn, name, got, f"an int32 tensor {form}")
    if t.device != q.device:
        _fail(fn, name, f"is on {t.device} but q is on {q.device}", "every tensor on q's device")


def _heads(fn: str, hq: int, hk: int, kname: str) -> None:
    if hk == 0 or hq % hk:
        _fail(fn, "q", f"has {hq} heads and {kname} {hk}", "q heads to be a multiple of kv heads (MHA, GQA or MQA)")


def _kv(fn: str, q: torch.Tensor, q_heads: int, names: tuple[str, str], k: Any, v: Any, ndims: tuple[int, ...],
        form: str) -> None:  # fmt: skip
    """Keys and values: their layout, q's dtype and device, a GQA head ratio, q's head dim."""
    kn, vn = names
    _tensor(fn, kn, k, ndims, form)
    _tensor(fn, vn, v, (k.dim(),), form.replace("head_dim)", "head_dim_v)"))
    _same(fn, q, {kn: k, vn: v})
    _heads(fn, q_heads, k.shape[-2], kn)
    if k.shape[-1] != q.shape[-1] or v.shape[:-1] != k.shape[:-1]:
        _fail(fn, f"{kn}/{vn}", f"have shapes {tuple(k.shape)}/{tuple(v.shape)} for q {tuple(q.shape)}",
              f"{kn}'s head_dim equal to q's, {vn}'s shape equal to {kn}'s but for the last dim")  # fmt: skip


def _out(fn: str, out: Any, q: torch.Tensor, shape: tuple[int, ...]) -> None:
    if out is None:
        return
    if not isinstance(out, torch.Tensor):
        _fail(fn, "out", f"is {type(out).__name__}", f"a {q.dtype} tensor of shape {shape}")
    if tuple(out.shape) != shape or out.dtype != q.dtype or out.device != q.device:
        _fail(fn, "out", f"is {out.dtype} {tuple(out.shape)} on {out.device}",
              f"{q.dtype} {shape} on {q.device} (q's dtype and device, v's head dim)")  # fmt: skip


def _values_wanted(q: torch.Tensor) -> bool:
    """Value checks read device memory: never inside a CUDA graph capture."""
    return not (q.is_cuda and torch.cuda.is_current_stream_capturing())


# -- varlen ----------------------------------------------------------------------------------------
def varlen(q, k, v, cu_seqlens_q, cu_seqlens_k, max_seqlen_q, max_seqlen_k, seqused_k, page_table, out) -> None:
    """Raise InvalidArgumentError for a bad varlen call; the common valid call costs one and-chain."""
    if not _varlen_ok(q, k, v, cu_seqlens_q, cu_seqlens_k, seqused_k, page_table, out):
        _varlen_diagnose(q, k, v, cu_seqlens_q, cu_seqlens_k, seqused_k, page_table, out)
    if values_on and _values_wanted(q):
        _varlen_values("flash_attn_varlen_func", q, k, cu_seqlens_q, cu_seqlens_k, max_seqlen_q, max_seqlen_k,
                       seqused_k, page_table)  # fmt: skip


def _varlen_ok(q, k, v, cu_q, cu_k, seqused_k, page_table, out) -> bool:
    try:
        qs, ks, vs, cs, dt = q.shape, k.shape, v.shape, cu_q.shape, q.dtype
        ok = (dt in _FLOAT and k.dtype is dt and v.dtype is dt and len(qs) == 3 and qs[2] == ks[-1]
              and qs[1] % ks[-2] == 0 and vs[0] == ks[0] and vs[1] == ks[1] and vs[-2] == ks[-2]
              and cu_q.dtype is _I32 and len(cs) == 1)  # fmt: skip
        if page_table is None:
            ok = ok and len(ks) == 3 and cu_k.dtype is _I32 and cu_k.shape == cs
            ok = ok and (seqused_k is None or seqused_k.dtype is _I32)
        else:
            ok = ok and len(ks) == 4 and cu_k is None and seqused_k.dtype is _I32 and page_table.dtype is _I32
        if out is not None:
            ok = ok and out.dtype is dt and out.shape == (*qs[:-1], vs[-1]) and out.device == q.device
        return ok
    except Exception:  # a missing attribute, a None where a tensor belongs: let the diagnosis name it
        return False


def _varlen_diagnose(q, k, v, cu_seqlens_q, cu_seqlens_k, seqused_k, page_table, out) -> None:
    fn = "flash_attn_varlen_func"
    paged = page_table is not None
    _tensor(fn, "q", q, (3,), "(total_q, num_heads, head_dim)")
    form = _PAGED_FORM + " with page_table" if paged else "(total_k, num_heads_k, head_dim)"
    _kv(fn, q, q.shape[1], ("k", "v"), k, v, (4,) if paged else (3,), form)
    _index(fn, "cu_seqlens_q", cu_seqlens_q, q, 1, "(batch + 1,) of cumulative query lengths")
    if cu_seqlens_q is None:
        _fail(fn, "cu_seqlens_q", "is None", "an int32 tensor (batch + 1,) of cumulative query lengths")
    batch = cu_seqlens_q.shape[0] - 1
    if paged:
        _index(fn, "page_table", page_table, q, 2, "(batch, max_pages_per_seq) of block ids")
        if cu_seqlens_k is not None:
            _fail(fn, "cu_seqlens_k", "is given with page_table",
                  "cu_seqlens_k=None and the key lengths in seqused_k when k/v are paged")  # fmt: skip
        _index(fn, "seqused_k", seqused_k, q, 1, "(batch,) of key lengths")
        if seqused_k is None:
            _fail(fn, "seqused_k", "is None with page_table", "an int32 tensor (batch,) of key lengths")
        if page_table.shape[0] != batch or seqused_k.shape[0] != batch:
            _fail(fn, "page_table/seqused_k", f"have {page_table.shape[0]}/{seqused_k.shape[0]} rows",
                  f"one row per sequence: {batch}, from cu_seqlens_q")  # fmt: skip
    else:
        _index(fn, "cu_seqlens_k", cu_seqlens_k, q, 1, "(batch + 1,) of cumulative key lengths")
        if cu_seqlens_k is None:
            _fail(fn, "cu_seqlens_k", "is None", "an int32 tensor (batch + 1,) (None only with page_table)")
        if cu_seqlens_k.shape[0] != batch + 1:
            _fail(fn, "cu_seqlens_k", f"has {cu_seqlens_k.shape[0]} entries", f"{batch + 1}, like cu_seqlens_q")
        _index(fn, "seqused_k", seqused_k, q, 1, "(batch,) of key lengths")
    _out(fn, out, q, (*q.shape[:-1], v.shape[-1]))


def _cumulative(fn: str, name: str, cu: torch.Tensor, total: int, max_name: str, max_len: Any) -> None:
    c = cu.tolist()
    if c[0] != 0 or any(b < a for a, b in zip(c, c[1:])):
        _fail(fn, name, f"is {c[:8]}{'...' if len(c) > 8 else ''}", "0 first and non-decreasing (cumulative lengths)")
    if c[-1] > total:
        _fail(fn, name, f"ends at {c[-1]} but the packed tensor has {total} rows", f"a last entry <= {total}")
    longest = max((b - a for a, b in zip(c, c[1:])), default=0)
    if max_len is not None and longest > max_len:
        _fail(fn, max_name, f"is {max_len} but a sequence in {name} has {longest}", f">= {longest}")


def _pages(fn: str, table: torch.Tensor, lengths: list[int], page_size: int, blocks: int, what: str) -> None:
    """Every page in use names a real block. Reads the table on the host: a copy, never a kernel."""
    width = table.shape[1]
    need = [math.ceil(n / page_size) for n in lengths]
    for b, n in enumerate(need):
        if n > width:
            _fail(fn, what, f"has {width} columns but sequence {b} needs {n} pages of {page_size}",
                  "enough columns for the longest sequence")  # fmt: skip
    rows = table[:, : max(need, default=0)].tolist()
    for b, (row, n) in enumerate(zip(rows, need)):
        for col in range(n):
            if not 0 <= row[col] < blocks:
                entry = f"{what}[{b}, {col}]"
                _fail(fn, entry, f"is {row[col]}", f"block ids in [0, {blocks}) for every page in use")


def _varlen_values(fn, q, k, cu_q, cu_k, max_q, max_k, seqused_k, page_table) -> None:
    _cumulative(fn, "cu_seqlens_q", cu_q, q.shape[0], "max_seqlen_q", max_q)
    if page_table is None:
        _cumulative(fn, "cu_seqlens_k", cu_k, k.shape[0], "max_seqlen_k", max_k)
        return
    lengths = seqused_k.tolist()
    if min(lengths, default=0) < 0:
        _fail(fn, "seqused_k", f"is {lengths[:8]}", "lengths >= 0")
    if max_k is not None and max(lengths, default=0) > max_k:
        _fail(fn, "max_seqlen_k", f"is {max_k} but seqused_k has {max(lengths)}", f">= {max(lengths)}")
    _pages(fn, page_table, lengths, k.shape[1], k.shape[0], "page_table")


# -- kvcache ---------------------------------------------------------------------------------------
def kvcache(q, k_cache, v_cache, k, v, cache_seqlens, cache_batch_idx, page_table, out) -> None:
    """Raise InvalidArgumentError for a bad kvcache call; the common valid call costs one and-chain."""
    if not _kvcache_ok(q, k_cache, v_cache, k, cache_seqlens, cache_batch_idx, page_table, out):
        _kvcache_diagnose(q, k_cache, v_cache, k, v, cache_seqlens, cache_batch_idx, page_table, out)
    if values_on and cache_seqlens is not None and _values_wanted(q):
        _kvcache_values("flash_attn_with_kvcache", q, k_cache, k, cache_seqlens, cache_batch_idx, page_table)


def _kvcache_ok(q, k_cache, v_cache, k, cache_seqlens, cache_batch_idx, page_table, out) -> bool:
    if k is not None or cache_batch_idx is not None:
        return False  # rarer calls: the full diagnosis
    try:
        qs, ks, vs, dt = q.shape, k_cache.shape, v_cache.shape, q.dtype
        ok = (dt in _FLOAT and k_cache.dtype is dt and v_cache.dtype is dt and len(qs) == 4 and len(ks) == 4
              and qs[3] == ks[3] and qs[2] % ks[2] == 0 and vs[:-1] == ks[:-1])  # fmt: skip
        if cache_seqlens.__class__ is not int:
            ok = ok and cache_seqlens.dtype is _I32 and cache_seqlens.shape[0] == qs[0]
        if page_table is not None:
            ok = ok and page_table.dtype is _I32 and page_table.shape[0] == qs[0]
        if out is not None:
            ok = ok and out.dtype is dt and out.shape == (*qs[:-1], vs[-1]) and out.device == q.device
        return ok
    except Exception:
        return False


def _kvcache_diagnose(q, k_cache, v_cache, k, v, cache_seqlens, cache_batch_idx, page_table, out) -> None:
    fn = "flash_attn_with_kvcache"
    paged = page_table is not None
    _tensor(fn, "q", q, (4,), "(batch, seqlen_q, num_heads, head_dim)")
    form = _PAGED_FORM if paged else "(batch_cache, seqlen_cache, num_heads_k, head_dim)"
    _kv(fn, q, q.shape[2], ("k_cache", "v_cache"), k_cache, v_cache, (4,), form)
    batch = q.shape[0]
    if (k is None) != (v is None):
        _fail(fn, "k" if k is None else "v", "is None but the other is given", "both new k and v, or neither")
    if k is not None:
        _tensor(fn, "k", k, (4,), "(batch, seqlen_new, num_heads_k, head_dim)")
        _same(fn, q, {"k": k, "v": v})
        if k.shape[0] != batch or k.shape[2:] != k_cache.shape[2:] or v.shape[:-1] != k.shape[:-1]:
            _fail(fn, "k/v", f"have shapes {tuple(k.shape)}/{tuple(v.shape)}",
                  f"(batch={batch}, seqlen_new, heads, dim) matching the caches")  # fmt: skip
    if isinstance(cache_seqlens, torch.Tensor):
        _index(fn, "cache_seqlens", cache_seqlens, q, 1, f"({batch},) of cached lengths")
        if cache_seqlens.shape[0] != batch:
            _fail(fn, "cache_seqlens", f"has {cache_seqlens.shape[0]} entries", f"one per sequence: {batch}")
    elif cache_seqlens is not None and not isinstance(cache_seqlens, int):
        _fail(fn, "cache_seqlens", f"is {type(cache_seqlens).__name__}", "an int32 tensor (batch,) or an int")
    if paged:
        _index(fn, "page_table", page_table, q, 2, "(batch, max_pages_per_seq) of block ids")
        if page_table.shape[0] != batch:
            _fail(fn, "page_table", f"has {page_table.shape[0]} rows", f"one per sequence: {batch}")
        if cache_seqlens is None:
            _fail(fn, "cache_seqlens", "is None with page_table", "an int32 tensor (batch,) of cached lengths")
    _index(fn, "cache_batch_idx", cache_batch_idx, q, 1, "(batch,) of cache rows")
    _out(fn, out, q, (*q.shape[:-1], v_cache.shape[-1]))


def _kvcache_values(fn, q, k_cache, k, cache_seqlens, cache_batch_idx, page_table) -> None:
    batch, new = q.shape[0], 0 if k is None else k.shape[1]
    lengths = [cache_seqlens] * batch if isinstance(cache_seqlens, int) else cache_seqlens.tolist()
    if min(lengths, default=0) < 0:
        _fail(fn, "cache_seqlens", f"is {lengths[:8]}", "lengths >= 0")
    if page_table is not None:
        _pages(fn, page_table, [n + new for n in lengths], k_cache.shape[1], k_cache.shape[0], "page_table")
        return
    capacity = k_cache.shape[1]
    longest = max(lengths, default=0) + new
    if longest > capacity:
        _fail(fn, "cache_seqlens", f"reaches {longest} (with {new} new)", f"at most the cache length {capacity}")
    if cache_batch_idx is not None:
        rows = cache_batch_idx.tolist()
        if rows and (min(rows) < 0 or max(rows) >= k_cache.shape[0]):
            _fail(fn, "cache_batch_idx", f"is {rows[:8]}", f"rows in [0, {k_cache.shape[0]})")


# -- FlashMLA --------------------------------------------------------------------------------------
def mla(q, k_cache, block_table, cache_seqlens, head_dim_v, is_fp8_kvcache) -> None:
    fn = "flash_mla_with_kvcache"
    _tensor(fn, "q", q, (4,), "(batch, seqlen_q, num_heads, head_dim)")
    _tensor(fn, "k_cache", k_cache, (4,), "(num_blocks, page_size, num_heads_k, head_dim)")
    _same(fn, q, {} if is_fp8_kvcache else {"k_cache": k_cache})
    _heads(fn, q.shape[2], k_cache.shape[2], "k_cache")
    _index(fn, "block_table", block_table, q, 2, "(batch, max_pages_per_seq) of block ids")
    _index(fn, "cache_seqlens", cache_seqlens, q, 1, "(batch,) of cached lengths")
    if block_table is None or cache_seqlens is None:
        _fail(fn, "block_table" if block_table is None else "cache_seqlens", "is None", "an int32 tensor")
    if not isinstance(head_dim_v, int) or not 0 < head_dim_v <= k_cache.shape[-1]:
        _fail(
            fn, "head_dim_v", f"is {head_dim_v!r}", f"an int in (0, {k_cache.shape[-1]}] (V is the cache's first dims)"
        )
    if values_on and _values_wanted(q):
        _pages(fn, block_table, cache_seqlens.tolist(), k_cache.shape[1], k_cache.shape[0], "block_table")
