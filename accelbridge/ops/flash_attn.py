"""FA3 / FA4 ops: varlen, kvcache and scheduler metadata, declared once (sglang-kernel 0.4.5's signatures).

The signature functions below are the canonical parameter lists: the facade functions are
generated from them. Annotations give each parameter's role and, where the default does not
tell, when its value asks for nothing (rotary_seqlens and rotary_interleaved without rotary_cos).
"""

# no `from __future__ import annotations`: the role annotations must stay objects
import math
from dataclasses import replace

import torch

from accelbridge.ops import reference
from accelbridge.ops.cases import SENTINEL, Case, Inputs, cumulative
from accelbridge.ops.spec import (
    Check,
    Data,
    Hint,
    Index,
    OpSpec,
    Option,
    Out,
    Plan,
    PlanRelation,
    Selector,
    fail,
    on_q_device,
)


def flash_attn_varlen_func(
    q: Data,
    k: Data,
    v: Data,
    cu_seqlens_q: Index,
    cu_seqlens_k: Index,
    max_seqlen_q: Hint(schema="SymInt?") = None,
    max_seqlen_k: Hint(schema="SymInt?") = None,
    seqused_q: Index = None,
    seqused_k: Index = None,
    page_table: Index = None,
    softmax_scale: Option(schema="float?") = None,
    causal: Option = False,
    qv: Data = None,
    q_descale: Data = None,
    k_descale: Data = None,
    v_descale: Data = None,
    window_size: Option = (-1, -1),
    attention_chunk: Option = 0,
    softcap: Option = 0.0,
    num_splits: Hint = 1,
    pack_gqa: Hint(schema="bool?") = None,
    only_qv: Option = False,
    sm_margin: Hint = 0,
    return_softmax_lse: Option = False,
    sinks: Data = None,
    score_mod: Option = None,
    aux_tensors: Data(schema="Tensor[]?") = None,
    ver: Selector = 3,
    out: Out = None,
):
    """Varlen attention (FA3 with ver=3, FA4 with ver=4): ``out``, or ``(out, lse, ...)``."""


def flash_attn_with_kvcache(
    q: Data,
    k_cache: Data(mutated_when="k is not None"),
    v_cache: Data(mutated_when="k is not None"),
    k: Data = None,
    v: Data = None,
    qv: Data = None,
    rotary_cos: Data = None,
    rotary_sin: Data = None,
    cache_seqlens: Index(schema="Tensor?|SymInt?") = None,
    cache_batch_idx: Index = None,
    cache_leftpad: Index = None,
    page_table: Index = None,
    cu_seqlens_q: Index = None,
    cu_seqlens_k_new: Index = None,
    max_seqlen_q: Hint(schema="SymInt?") = None,
    rotary_seqlens: Index("rotary_cos is None or rotary_seqlens is None") = None,
    q_descale: Data = None,
    k_descale: Data = None,
    v_descale: Data = None,
    softmax_scale: Option(schema="float?") = None,
    causal: Option = False,
    window_size: Option = (-1, -1),
    attention_chunk: Option(schema="SymInt?") = None,
    softcap: Option = 0.0,
    rotary_interleaved: Option("rotary_cos is None or rotary_interleaved is True") = True,
    scheduler_metadata: Plan = None,
    num_splits: Hint = 0,
    pack_gqa: Hint(schema="bool?") = None,
    only_qv: Option = False,
    sm_margin: Hint = 0,
    return_softmax_lse: Option = False,
    sinks: Data = None,
    score_mod: Option = None,
    aux_tensors: Data(schema="Tensor[]?") = None,
    ver: Selector = 3,
    out: Out = None,
):
    """Decode / append attention over a (paged) KV cache: ``out``, or ``(out, lse, ...)``."""


def get_scheduler_metadata(
    batch_size: Option,
    max_seqlen_q: Option,
    max_seqlen_k: Option,
    num_heads: Option,
    num_heads_k: Option,
    headdim: Option,
    cache_seqlens: Index,
    qkv_dtype: Hint = torch.bfloat16,
    headdim_v: Option = None,
    cu_seqlens_q: Index = None,
    cu_seqlens_k: Index = None,
    cu_seqlens_k_new: Index = None,
    seqused_q: Index = None,
    leftpad_k: Index = None,
    page_size: Option = None,
    max_seqlen_k_new: Hint = 0,
    causal: Option = False,
    window_size: Option = (-1, -1),
    attention_chunk: Option = 0,
    has_softcap: Hint = False,
    num_splits: Option = 0,
    pack_gqa: Hint = None,
    sm_margin: Hint = 0,
):
    """FA3 scheduler metadata, or None where the resolved provider plans nothing.

    Compute it once per batch and pass it to every layer's ``flash_attn_with_kvcache``; the
    facade refuses it for a call with other num_splits/causal/window_size/pack_gqa/batch size.
    """


# -- checks --------------------------------------------------------------------------------------
_SAME_DEVICE = "every tensor on q's device"
_PAGED = "(num_blocks, page_size, num_heads_k, head_dim)"


def _dtype(name: str) -> Check:
    return Check(name, f"{name}.dtype is q.dtype", f"has dtype {{{name}.dtype}} but q has {{q.dtype}}",
                 "q, k and v to share one dtype", what="dtype")  # fmt: skip


def _device(k: str, v: str) -> Check:
    """One chained comparison, kept at the cheap level for every provider.

    It compares device indices (three integer reads): another GPU, or the host next to a GPU, is
    caught on the fast path. Tensors without an index (host, meta) are compared as whole devices
    where ``_EXACT`` holds: at the full level and in the pass that explains a kernel's error.
    """
    same = f"(_d := q.get_device()) == {k}.get_device() == {v}.get_device()"
    exact = f"q.device == {k}.device == {v}.device"
    return Check(f"{k}/{v}", f"{same} and (_d >= 0 or not _EXACT or {exact})",
                 f"are on {{{k}.device}}/{{{v}.device}} but q is on {{q.device}}", _SAME_DEVICE,
                 what="device")  # fmt: skip


def _index(name: str, ndim: int, form: str, optional: bool = True) -> Check:
    cond = f"{name}.dtype is _I32 and {name}.dim() == {ndim}"
    return Check(name, f"{name} is None or ({cond})" if optional else cond, f"{{_index({name})}}",
                 f"an int32 tensor {form}")  # fmt: skip


def _out(v: str) -> Check:
    shape = f"(*q.shape[:-1], {v}.shape[-1])"
    return Check(
        "out",
        f"out is None or (out.dtype is _out_dtype(q.dtype) and out.shape == {shape})",
        "{_tensor(out)}",
        f"{{_out_dtype(q.dtype)}} {{{shape}}} on {{q.device}} (q's dtype and device, {v}'s head dim)",
    )


_WINDOW = Check(
    "window_size",
    "window_size is None or (window_size.__class__ in (tuple, list) and len(window_size) == 2)",
    "is {window_size!r}",
    "a pair (left, right), -1 or None for no limit on that side",
)
_FLOAT_Q = Check("q", "q.dtype in _F", "has dtype {q.dtype}", "a floating dtype (bf16, fp16, fp32, fp8)", what="dtype")
_QV = Check("qv", "qv is None or (qv.dtype is q.dtype and qv.shape[:-1] == q.shape[:-1])", "{_tensor(qv)}",
            "q's dtype and shape but for the last dim (v's head dim)")  # fmt: skip
_SINKS = Check("sinks", "sinks is None or (sinks.dim() == 1 and sinks.shape[0] == q.shape[-2] and sinks.dtype in _F)",
               "{_tensor(sinks)}", "a floating tensor ({q.shape[-2]},): one sink logit per q head")  # fmt: skip
_OUT_DEVICE = Check("out", "out is None or out.device == q.device", "is on {out.device} but q is on {q.device}",
                    _SAME_DEVICE, what="device")  # fmt: skip


def _cumulative(a, name: str, total: int, max_name: str) -> None:
    c = a[name].tolist()
    steps = [y - x for x, y in zip(c, c[1:])]
    if c[0] != 0 or (steps and min(steps) < 0):
        fail(name, f"is {c[:8]}{'...' if len(c) > 8 else ''}", "0 first and non-decreasing (cumulative lengths)")
    if c[-1] > total:
        fail(name, f"ends at {c[-1]} but the packed tensor has {total} rows", f"a last entry <= {total}")
    longest = max(steps, default=0)
    if a[max_name] is not None and longest > a[max_name]:
        fail(max_name, f"is {a[max_name]} but a sequence in {name} has {longest}", f">= {longest}")


def _pages(table: torch.Tensor, lengths: list[int], page_size: int, blocks: int, what: str) -> None:
    """Every page in use names a real block. Reads the table on the host: a copy, never a kernel."""
    width = table.shape[1]
    need = [math.ceil(n / page_size) for n in lengths]
    for b, n in enumerate(need):
        if n > width:
            fail(what, f"has {width} columns but sequence {b} needs {n} pages of {page_size}",
                 "enough columns for the longest sequence")  # fmt: skip
    rows = table[:, : max(need, default=0)].tolist()
    for b, (row, n) in enumerate(zip(rows, need)):
        for col in range(n):
            if not 0 <= row[col] < blocks:
                fail(f"{what}[{b}, {col}]", f"is {row[col]}", f"block ids in [0, {blocks}) for every page in use")


def _varlen_values(a) -> None:
    _cumulative(a, "cu_seqlens_q", a["q"].shape[0], "max_seqlen_q")
    if a["page_table"] is None:
        _cumulative(a, "cu_seqlens_k", a["k"].shape[0], "max_seqlen_k")
        return
    lengths = a["seqused_k"].tolist()
    if min(lengths, default=0) < 0:
        fail("seqused_k", f"is {lengths[:8]}", "lengths >= 0")
    if a["max_seqlen_k"] is not None and max(lengths, default=0) > a["max_seqlen_k"]:
        fail("max_seqlen_k", f"is {a['max_seqlen_k']} but seqused_k has {max(lengths)}", f">= {max(lengths)}")
    _pages(a["page_table"], lengths, a["k"].shape[1], a["k"].shape[0], "page_table")


VARLEN_CHECKS = (
    Check("q", "q.dim() == 3", "{_shape(q)}", "a tensor (total_q, num_heads, head_dim)"),
    _FLOAT_Q,
    Check("k", "k.dim() == (3 if page_table is None else 4)", "{_shape(k)}",
          "a tensor {'(total_k, num_heads_k, head_dim)' if page_table is None else '" + _PAGED + " with page_table'}"),
    Check("v", "v.dim() == k.dim()", "{_shape(v)}", "a tensor shaped like k but for the last dim"),
    _dtype("k"),
    _dtype("v"),
    _device("k", "v"),
    Check("q", "q.shape[1] % k.shape[-2] == 0", "has {q.shape[1]} heads and k {k.shape[-2]}",
          "q heads to be a multiple of kv heads (MHA, GQA or MQA)"),
    Check("k/v", "k.shape[-1] == q.shape[-1] and v.shape[:-1] == k.shape[:-1]",
          "have shapes {tuple(k.shape)}/{tuple(v.shape)} for q {tuple(q.shape)}",
          "k's head_dim equal to q's, v's shape equal to k's but for the last dim"),
    _QV,
    _index("cu_seqlens_q", 1, "(batch + 1,) of cumulative query lengths", optional=False),
    Check("cu_seqlens_k", "page_table is None or cu_seqlens_k is None", "is given with page_table",
          "cu_seqlens_k=None and the key lengths in seqused_k when k/v are paged"),
    Check("cu_seqlens_k", "page_table is not None or (cu_seqlens_k.dtype is _I32 and cu_seqlens_k.dim() == 1)",
          "{_index(cu_seqlens_k)}", "an int32 tensor (batch + 1,) of cumulative key lengths "
          "(None only with page_table)"),
    Check("cu_seqlens_k", "page_table is not None or cu_seqlens_k.shape[0] == cu_seqlens_q.shape[0]",
          "has {cu_seqlens_k.shape[0]} entries", "{cu_seqlens_q.shape[0]}, like cu_seqlens_q"),
    Check("seqused_k", "page_table is None or seqused_k is not None", "is None with page_table",
          "an int32 tensor (batch,) of key lengths"),
    _index("seqused_k", 1, "(batch,) of key lengths"),
    _index("page_table", 2, "(batch, max_pages_per_seq) of block ids"),
    Check("page_table/seqused_k",
          "page_table is None or page_table.shape[0] == seqused_k.shape[0] == cu_seqlens_q.shape[0] - 1",
          "have {page_table.shape[0]}/{seqused_k.shape[0]} rows",
          "one row per sequence: {cu_seqlens_q.shape[0] - 1}, from cu_seqlens_q"),
    _SINKS,
    _WINDOW,
    *map(on_q_device, ("cu_seqlens_q", "cu_seqlens_k", "seqused_k", "page_table", "sinks", "qv")),
    _out("v"),
    _OUT_DEVICE,
    Check("cu_seqlens_q", _varlen_values, kind="values"),
)  # fmt: skip

_BATCH = "(q.shape[0] if cu_seqlens_q is None else cu_seqlens_q.shape[0] - 1)"
_BATCH_FROM = "{'' if cu_seqlens_q is None else ' (cu_seqlens_q has ' + str(cu_seqlens_q.shape[0]) + ' entries)'}"
_CAPACITY = "(k_cache.shape[1] if page_table is None else page_table.shape[1] * k_cache.shape[1])"


def _kvcache_values(a) -> None:
    q, k_cache, k, cache_seqlens = a["q"], a["k_cache"], a["k"], a["cache_seqlens"]
    batch = q.shape[0] if a["cu_seqlens_q"] is None else a["cu_seqlens_q"].shape[0] - 1
    if cache_seqlens is None:  # every sequence fills its row: the whole page-table row is in use
        table = a["page_table"]
        cache_seqlens = k_cache.shape[1] * (1 if table is None else table.shape[1])
    if k is None:
        new = [0] * batch
    elif a["cu_seqlens_k_new"] is not None:
        c = a["cu_seqlens_k_new"].tolist()
        new = [y - x for x, y in zip(c, c[1:])]
    else:
        new = [k.shape[1]] * batch
    if a["cu_seqlens_q"] is not None:
        _cumulative(a, "cu_seqlens_q", q.shape[0], "max_seqlen_q")
    lengths = [cache_seqlens] * batch if isinstance(cache_seqlens, int) else cache_seqlens.tolist()
    if min(lengths, default=0) < 0:
        fail("cache_seqlens", f"is {lengths[:8]}", "lengths >= 0")
    if a["cache_leftpad"] is not None:
        pads = a["cache_leftpad"].tolist()
        if any(not 0 <= p <= n for p, n in zip(pads, lengths)):
            fail("cache_leftpad", f"is {pads[:8]}", "0 <= padding <= the sequence's cache_seqlens")
    if a["page_table"] is not None:
        table = a["page_table"] if a["cache_batch_idx"] is None else a["page_table"][a["cache_batch_idx"].long()]
        _pages(table, [n + m for n, m in zip(lengths, new)], k_cache.shape[1], k_cache.shape[0], "page_table")
        return
    capacity = k_cache.shape[1]
    longest = max((n + m for n, m in zip(lengths, new)), default=0)
    if longest > capacity:
        fail("cache_seqlens", f"reaches {longest} (with {max(new, default=0)} new)",
             f"at most the cache length {capacity}")  # fmt: skip
    if a["cache_batch_idx"] is not None:
        rows = a["cache_batch_idx"].tolist()
        if rows and (min(rows) < 0 or max(rows) >= k_cache.shape[0]):
            fail("cache_batch_idx", f"is {rows[:8]}", f"rows in [0, {k_cache.shape[0]})")


KVCACHE_CHECKS = (
    Check("q", "q.dim() == (4 if cu_seqlens_q is None else 3)", "{_shape(q)}",
          "a tensor (batch, seqlen_q, num_heads, head_dim), or (total_q, num_heads, head_dim) with cu_seqlens_q"),
    _FLOAT_Q,
    _index("cu_seqlens_q", 1, "(batch + 1,) of cumulative query lengths"),  # before the checks counting with it
    Check("k_cache", "k_cache.dim() == 4", "{_shape(k_cache)}",
          "a tensor {'(batch_cache, seqlen_cache, num_heads_k, head_dim)' if page_table is None else '"
          + _PAGED + "'}"),
    Check("v_cache", "v_cache.dim() == 4", "{_shape(v_cache)}", "a tensor shaped like k_cache but for the last dim"),
    _dtype("k_cache"),
    _dtype("v_cache"),
    _device("k_cache", "v_cache"),
    Check("q", "q.shape[-2] % k_cache.shape[2] == 0", "has {q.shape[-2]} heads and k_cache {k_cache.shape[2]}",
          "q heads to be a multiple of kv heads (MHA, GQA or MQA)"),
    Check("k_cache/v_cache", "k_cache.shape[3] == q.shape[-1] and v_cache.shape[:-1] == k_cache.shape[:-1]",
          "have shapes {tuple(k_cache.shape)}/{tuple(v_cache.shape)} for q {tuple(q.shape)}",
          "k_cache's head_dim equal to q's, v_cache's shape equal to k_cache's but for the last dim"),
    _QV,
    Check("{'k' if k is None else 'v'}", "(k is None) == (v is None)", "is None but the other is given",
          "both new k and v, or neither"),
    Check("k", "k is None or k.dim() == (4 if cu_seqlens_k_new is None else 3)", "{_shape(k)}",
          "a tensor (batch, seqlen_new, num_heads_k, head_dim), or packed with cu_seqlens_k_new"),
    Check("k", "k is None or (k.dtype is q.dtype and v.dtype is q.dtype)",
          "has dtype {k.dtype} (v {v.dtype}) but q has {q.dtype}", "q, k and v to share one dtype", what="dtype"),
    Check("k/v", "k is None or q.device == k.device == v.device", "are on {k.device}/{v.device} but q is on {q.device}",
          _SAME_DEVICE, what="device"),
    Check("k/v", "k is None or (k.shape[-2:] == k_cache.shape[-2:] and v.shape[:-1] == k.shape[:-1] "
                 "and v.shape[-1] == v_cache.shape[-1] and (cu_seqlens_k_new is not None or k.shape[0] == "
                 + _BATCH + "))",
          "have shapes {tuple(k.shape)}/{tuple(v.shape)}",
          "(batch={" + _BATCH + "}, seqlen_new, heads, dim) matching the caches"),
    Check("cache_seqlens", "cache_seqlens is None or cache_seqlens.__class__ is int or "
                           "(cache_seqlens.dtype is _I32 and cache_seqlens.dim() == 1)",
          "{_index(cache_seqlens)}", "an int32 tensor (" + "{" + _BATCH + "}" + ",) of cached lengths, or an int"),
    Check("cache_seqlens", "cache_seqlens is None or cache_seqlens.__class__ is int or "
                           "cache_seqlens.shape[0] == " + _BATCH,
          "has {cache_seqlens.shape[0]} entries", "one per sequence: {" + _BATCH + "}" + _BATCH_FROM),
    _index("page_table", 2, "(batch, max_pages_per_seq) of block ids"),
    Check("page_table", "page_table is None or cache_batch_idx is not None or page_table.shape[0] == " + _BATCH,
          "has {page_table.shape[0]} rows", "one per sequence: {" + _BATCH + "}" + _BATCH_FROM),
    # without cache_seqlens every sequence fills its cache row (FA3: the whole page-table row), but new keys
    # need a position to go to
    Check("cache_seqlens", "k is None or cache_seqlens is not None", "is None with new k/v to append",
          "an int32 tensor (batch,) of cached lengths (where the new keys go)"),
    _index("cache_batch_idx", 1, "(batch,) of cache rows"),
    _index("cache_leftpad", 1, "(batch,) of left padding per cache row"),
    *(Check(n, f"{n} is None or {n}.shape[0] == " + _BATCH, f"has {{{n}.shape[0]}} entries",
            "one per sequence: {" + _BATCH + "}" + _BATCH_FROM) for n in ("cache_batch_idx", "cache_leftpad")),
    _index("cu_seqlens_k_new", 1, "(batch + 1,) of cumulative new-key lengths"),
    Check("rotary_cos", "rotary_cos is None or k is not None", "is given without new k/v",
          "new k and v to append: FA3 rotates q and the appended keys together"),
    Check("rotary_cos", "rotary_cos is None or (rotary_cos.dim() == 2 and rotary_cos.dtype in _F "
                        "and 0 < 2 * rotary_cos.shape[1] <= q.shape[-1])",
          "{_tensor(rotary_cos)}", "a floating tensor (seqlen_ro, rotary_dim / 2), rotary_dim <= {q.shape[-1]}"),
    Check("rotary_sin", "rotary_cos is None or (rotary_sin is not None and rotary_sin.shape == rotary_cos.shape "
                        "and rotary_sin.dtype is rotary_cos.dtype)",
          "{_tensor(rotary_sin)}", "the shape and dtype of rotary_cos (seqlen_ro, rotary_dim / 2)"),
    # FA3 refuses a table shorter than the cache ("cos/sin seqlen must be at least the seqlen of KV cache")
    Check("rotary_cos", "rotary_cos is None or rotary_cos.shape[0] >= " + _CAPACITY, "has {rotary_cos.shape[0]} rows",
          "at least the cache's capacity, {" + _CAPACITY + "} positions"),
    _SINKS,
    _WINDOW,
    Check("cache_seqlens", "cache_seqlens is None or cache_seqlens.__class__ is int or "
                           "(cache_seqlens.get_device() == q.get_device() "
                           "and (not _EXACT or cache_seqlens.device == q.device))",
          "is on {cache_seqlens.device} but q is on {q.device}", _SAME_DEVICE, what="device"),
    *map(on_q_device, ("qv", "rotary_cos", "rotary_sin")),
    *map(on_q_device, ("page_table", "cache_batch_idx", "cache_leftpad", "cu_seqlens_q", "cu_seqlens_k_new",
                       "sinks")),
    _out("v_cache"),
    _OUT_DEVICE,
    Check("cache_seqlens", _kvcache_values, kind="values"),
)  # fmt: skip

# (shape, dtype) of out and lse: packed q (total, heads, d) has lse (heads, total); batched q (b, s, heads, d)
# has lse (b, heads, s)
_LSE = ("(q.shape[0], q.shape[2], q.shape[1]) if q.dim() == 4 else (q.shape[1], q.shape[0])", "torch.float32")
VARLEN_RESULTS = (("(*q.shape[:-1], v.shape[-1])", "_out_dtype(q.dtype)"), _LSE)
KVCACHE_RESULTS = (("(*q.shape[:-1], v_cache.shape[-1])", "_out_dtype(q.dtype)"), _LSE)

SCHEDULER_PLAN = PlanRelation(
    param="scheduler_metadata",
    producer="fa3.scheduler_metadata",
    keys=(
        ("num_splits", "int(num_splits or 0)", "int(num_splits or 0)"),
        ("causal", "bool(causal)", "bool(causal)"),
        ("window_size", "_window(window_size)", "_window(window_size)"),
        ("pack_gqa", "pack_gqa", "pack_gqa"),
        ("batch size", "batch_size", _BATCH),
    ),
)


# -- conformance cases -----------------------------------------------------------------------------
def varlen_cases(op: str, full: bool = False) -> list[Case]:
    c = Case(op, "gqa4-causal")
    cases = [
        c,
        replace(c, name="noncausal", causal=False),
        replace(c, name="fp16", dtype="fp16"),
        replace(c, name="d64", d=64),
        replace(c, name="mha", hq=4, hk=4),
        replace(c, name="mqa", hq=8, hk=1),
        replace(c, name="gqa8", hq=16, hk=2),
        replace(c, name="window-left", window=(32, 0)),
        replace(c, name="window-both", causal=False, window=(16, 8)),
        replace(c, name="softcap", softcap=1.5),
        replace(c, name="sinks", sinks=True),
        replace(c, name="short", lens_q=(1, 1, 2, 3)),
        replace(c, name="one-length", lens_q=(64, 64)),  # engines' uniform prefill batch
        replace(c, name="nearly-one-length", lens_q=(40, 37, 40)),
        replace(c, name="empty-seqs", lens_q=(0, 7, 0, 20)),
        replace(c, name="chunked-prefill", lens_q=(5, 16, 1), lens_k=(40, 100, 64)),
        replace(c, name="lse", return_lse=True),
        replace(c, name="no-out", with_out=False),
        replace(c, name="paged", lens_q=(3, 40, 1), lens_k=(17, 100, 64), page_size=16),
        replace(c, name="qv", d=64, dv=256, qv_dim=256, hq=8, hk=1),
        replace(c, name="fp8", dtype="fp8_e4m3"),
        replace(c, name="attention-chunk", chunk=24),
        # the kernels' conventions: what no sequence reads is arbitrary, empty problems are valid
        replace(c, name="paged-sentinel", lens_q=(3, 40, 1), lens_k=(17, 100, 64), page_size=16, sentinel=SENTINEL),
        replace(
            c,
            name="paged-nan-unused",
            lens_q=(3, 40, 1),
            lens_k=(17, 100, 64),
            page_size=16,
            sentinel=-1,
            nan_unused=True,
        ),
        replace(c, name="no-keys", lens_q=(3, 2, 4), lens_k=(0, 0, 0), causal=False, return_lse=True),
        replace(c, name="some-without-keys", lens_q=(3, 2, 4), lens_k=(0, 40, 0), causal=False, return_lse=True),
        replace(c, name="no-queries", lens_q=(0, 0, 0), lens_k=(5, 9, 3), return_lse=True),
        replace(c, name="lonely-rows", lens_q=(10, 5), lens_k=(3, 5), return_lse=True),
        replace(c, name="sinks-inf", sinks=True, sink_inf=True, return_lse=True),
    ]
    return cases + (_cross(c) if full else [])


def kvcache_cases(op: str, full: bool = False) -> list[Case]:
    c = Case(op, "paged-decode", lens_q=(1, 1, 1, 1), lens_k=(1, 37, 200, 64), page_size=16)
    # FA3's rotary q rule: 3 queries rotating with 3 new keys, non-causal, over a contiguous cache
    rotary3 = replace(c, lens_q=(3, 3, 3, 3), new_tokens=3, rotary="interleaved", causal=False, page_size=0)
    cases = [
        c,
        replace(c, name="page64", page_size=64),
        replace(c, name="contiguous", page_size=0),
        replace(c, name="fp16", dtype="fp16"),
        replace(c, name="d64", d=64),
        replace(c, name="mha", hq=4, hk=4),
        replace(c, name="mqa", hq=8, hk=1),
        replace(c, name="multi-query", lens_q=(4, 4, 4, 4)),
        replace(c, name="window", window=(32, 0)),
        replace(c, name="softcap", softcap=1.5),
        replace(c, name="sinks", sinks=True),
        replace(c, name="append", new_tokens=1),
        replace(c, name="lse", return_lse=True),
        replace(c, name="no-out", with_out=False),
        replace(c, name="rotary-interleaved", lens_q=(2, 2, 2, 2), new_tokens=2, rotary="interleaved"),
        replace(c, name="rotary-half", new_tokens=1, rotary="half", causal=False, page_size=0),
        replace(c, name="leftpad", page_size=0, leftpad=True),
        replace(c, name="batch-idx", page_size=0, batch_idx=True, new_tokens=1),
        replace(c, name="qv", d=64, dv=512, qv_dim=512, hq=8, hk=1),
        replace(c, name="fp8", dtype="fp8_e4m3"),
        replace(c, name="attention-chunk", lens_q=(3, 3, 3, 3), chunk=16),
        # the kernels' conventions: what no sequence reads is arbitrary, empty problems are valid
        replace(c, name="paged-sentinel", sentinel=SENTINEL),
        # NaN only in a paged cache: FA3 reads a contiguous row past cache_seqlens (NaN there reaches out, H200)
        replace(c, name="paged-nan-unused", sentinel=-1, nan_unused=True, new_tokens=1),
        replace(c, name="packed-q", lens_q=(1, 3, 2, 1), packed_q=True),
        replace(c, name="packed-q-batched-new", lens_q=(1, 3, 2, 1), packed_q=True, new_tokens=2),
        replace(c, name="table-no-seqlens", lens_k=(64, 64, 64, 64), no_seqlens=True),
        replace(rotary3, name="rotary-chunk", chunk=16),
        replace(rotary3, name="rotary-window-normalised", window=(-1, 3)),
        replace(c, name="seqlen-q-0", lens_q=(0, 0, 0, 0), return_lse=True),
        replace(c, name="sinks-inf", sinks=True, sink_inf=True, return_lse=True),
    ]
    return cases + (_cross(c) if full else [])


def _cross(base: Case) -> list[Case]:
    """The cross product: dtype x GQA ratio x head dim x mask, on mixed lengths."""
    out = []
    masks = {"none": {"causal": False}, "causal": {}, "window": {"window": (32, 0)},
             "softcap": {"softcap": 1.5}, "sinks": {"sinks": True}}  # fmt: skip
    for dtype in ("bf16", "fp16"):
        for hq, hk in ((4, 4), (8, 2), (8, 1)):
            for d in (64, 128, 256):
                for mask, kw in masks.items():
                    name = f"{dtype}-h{hq}k{hk}-d{d}-{mask}"
                    out.append(replace(base, name=name, dtype=dtype, hq=hq, hk=hk, d=d, **kw))
    return out


def _sinks(inp: Inputs):
    """Per-head sink logits in bf16, as engines keep them (sgl-kernel 0.4.5 takes no other dtype)."""
    return inp.sinks(inp.case.hq, torch.bfloat16) if inp.case.sinks else None


def _descales(inp: Inputs, batch: int) -> dict:
    if inp.case.dtype != "fp8_e4m3":
        return {}
    return {f"{n}_descale": (torch.rand(batch, inp.case.hk, generator=inp.gen) + 0.5).to(inp.dev) for n in "qkv"}


def _common(inp: Inputs, batch: int) -> dict:
    c = inp.case
    kw = {"causal": c.causal, "window_size": c.window, "softcap": c.softcap, "sinks": _sinks(inp),
          "return_softmax_lse": c.return_lse, **_descales(inp, batch)}  # fmt: skip
    if c.chunk:
        kw["attention_chunk"] = c.chunk
    return kw


def _hint(lens) -> int:
    """A max_seqlen hint: the longest length, at least 1 (a hint is an upper bound; kernels want one >= 1)."""
    return max(1, max(lens, default=0))


def varlen_inputs(case: Case, inp: Inputs) -> dict:
    c, dev = case, inp.dev
    lens_k = c.lens_k or c.lens_q
    dv = c.dv or c.d
    q = inp.randn(sum(c.lens_q), c.hq, c.d)
    cu_q = cumulative(c.lens_q, dev)  # self-attention passes one tensor for both, as engines' prefill does
    kw = {"cu_seqlens_q": cu_q, "cu_seqlens_k": cu_q if c.lens_k is None else cumulative(lens_k, dev),
          "max_seqlen_q": _hint(c.lens_q), "max_seqlen_k": _hint(lens_k)}  # fmt: skip
    if c.page_size:  # FA's paged convention: no cu_seqlens_k, the key lengths in seqused_k
        k, table = inp.paged(lens_k, c.hk, c.d)
        v = inp.randn(*k.shape[:3], dv)
        inp.retire_unused(table, lens_k, k, v)
        kw["cu_seqlens_k"], kw["page_table"] = None, table.to(dev)
        kw["seqused_k"] = torch.tensor(lens_k, dtype=torch.int32, device=dev)
    else:
        k, v = inp.randn(sum(lens_k), c.hk, c.d), inp.randn(sum(lens_k), c.hk, dv)
    if c.qv_dim:
        kw["qv"] = inp.randn(q.shape[0], c.hq, c.qv_dim)
    kw.update(q=q, k=k, v=v, **_common(inp, len(c.lens_q)))
    return kw


def kvcache_inputs(case: Case, inp: Inputs) -> dict:
    c, dev = case, inp.dev
    b, sq = len(c.lens_q), c.lens_q[0]
    lens_k = c.lens_k or c.lens_q
    dv = c.dv or c.d
    if c.packed_q:  # (total_q, ...) with cu_seqlens_q: each sequence its own number of queries
        q = inp.randn(sum(c.lens_q), c.hq, c.d)
        kw: dict = {"cu_seqlens_q": cumulative(c.lens_q, dev), "max_seqlen_q": _hint(c.lens_q)}
    else:
        q, kw = inp.randn(b, sq, c.hq, c.d), {}
    kw["cache_seqlens"] = None if c.no_seqlens else torch.tensor(lens_k, dtype=torch.int32, device=dev)
    rows = b * 2 if c.batch_idx else b
    if c.batch_idx:
        kw["cache_batch_idx"] = torch.randperm(rows, generator=inp.gen)[:b].to(torch.int32)
    if c.leftpad:
        kw["cache_leftpad"] = torch.tensor([n // 3 for n in lens_k], dtype=torch.int32)
    in_use = tuple(n + c.new_tokens for n in lens_k)
    if c.page_size:
        k_cache, table = inp.paged(lens_k, c.hk, c.d, spare=c.new_tokens)
        v_cache = inp.randn(*k_cache.shape[:3], dv)
        inp.retire_unused(table, in_use, k_cache, v_cache)
        kw["page_table"] = table.to(dev)
    else:
        length = max(lens_k) + c.new_tokens
        k_cache, v_cache = inp.randn(rows, length, c.hk, c.d), inp.randn(rows, length, c.hk, dv)
        row_of = kw["cache_batch_idx"].tolist() if c.batch_idx else list(range(b))
        by_row = [0] * rows  # cache rows no sequence uses are unused from their first slot
        for seq, row in enumerate(row_of):
            by_row[row] = in_use[seq]
        inp.retire_unused(None, tuple(by_row), k_cache, v_cache)
        if c.leftpad and c.nan_unused:  # slots before a sequence's left padding are not read either
            for seq, row in enumerate(row_of):
                k_cache[row, : lens_k[seq] // 3] = v_cache[row, : lens_k[seq] // 3] = float("nan")
    kw = {n: (t.to(dev) if isinstance(t, torch.Tensor) else t) for n, t in kw.items()}
    if c.new_tokens:
        kw["k"], kw["v"] = inp.randn(b, c.new_tokens, c.hk, c.d), inp.randn(b, c.new_tokens, c.hk, dv)
    if c.rotary:  # FA3 wants a table covering the cache's capacity
        positions = k_cache.shape[1] if not c.page_size else kw["page_table"].shape[1] * c.page_size
        angle = torch.rand(positions, c.d // 4, generator=inp.gen) * 2 * math.pi
        kw.update(rotary_cos=torch.cos(angle).to(inp.dtype).to(dev), rotary_sin=torch.sin(angle).to(inp.dtype).to(dev),
                  rotary_interleaved=c.rotary == "interleaved")  # fmt: skip
    if c.qv_dim:
        kw["qv"] = inp.randn(*q.shape[:-1], c.qv_dim)
    kw.update(q=q, k_cache=k_cache, v_cache=v_cache, **_common(inp, b))
    return kw


SPECS = [
    OpSpec(f"fa{ver}.varlen", flash_attn_varlen_func, selector=("ver", ver), checks=VARLEN_CHECKS,
           result_shapes=VARLEN_RESULTS,
           reference=reference.flash_attn_varlen_func, cases=lambda full, op=f"fa{ver}.varlen": varlen_cases(op, full),
           inputs=varlen_inputs)
    for ver in (3, 4)
] + [
    OpSpec(f"fa{ver}.kvcache", flash_attn_with_kvcache, selector=("ver", ver), checks=KVCACHE_CHECKS,
           result_shapes=KVCACHE_RESULTS,
           reference=reference.flash_attn_with_kvcache, plan=SCHEDULER_PLAN if ver == 3 else None,
           cases=lambda full, op=f"fa{ver}.kvcache": kvcache_cases(op, full), inputs=kvcache_inputs)
    for ver in (3, 4)
] + [
    OpSpec("fa3.scheduler_metadata", get_scheduler_metadata, features={}, without_provider="none"),
]  # fmt: skip
