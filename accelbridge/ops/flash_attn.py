"""FA3 / FA4 ops: varlen, kvcache and scheduler metadata, declared once (sglang-kernel 0.4.5's signatures).

The signature functions below are the canonical parameter lists: the facade functions are
generated from them. Annotations give each parameter's role and, where the default does not
tell, when its value asks for nothing (rotary_seqlens and rotary_interleaved without rotary_cos).
"""

# no `from __future__ import annotations`: the role annotations must stay objects
import math

import torch

from accelbridge.ops import reference
from accelbridge.ops.flash_attn_cases import kvcache_cases, kvcache_inputs, varlen_cases, varlen_inputs
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
    used = table[:, : max(need, default=0)].cpu()  # one read of the pages in use, checked as a whole
    in_use = torch.arange(used.shape[1])[None, :] < torch.tensor(need, dtype=torch.long)[:, None]
    bad = (in_use & ((used < 0) | (used >= blocks))).nonzero()
    if len(bad):
        b, col = bad[0].tolist()
        fail(f"{what}[{b}, {col}]", f"is {int(used[b, col])}", f"block ids in [0, {blocks}) for every page in use")


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
