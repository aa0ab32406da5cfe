"""FlashMLA ops: tile-scheduler metadata, decode (dense, FP8, sparse FP8) and sparse prefill (sglang-kernel 0.4.10).

sglang-kernel 0.4.10 added ``kv_format`` (the sparse cache's layout) as the last parameter of
``flash_mla_with_kvcache``; 0.4.5 has no such parameter and reads the layout from q's head dim. Its inert
value says when a call asks for nothing 0.4.5 cannot do: a V3.2 or V4 cache (and no FP4 extra cache).

Sparse mode (DeepSeek V3.2 / V4) takes token positions from ``indices``: ``block_table`` and
``cache_seqlens`` are None by design and inert then. Any index outside the cache (-1, or a value
past its last token: sgl-kernel's docstring, FlashMLA's tests use 2147480000 and negatives) marks
"no key", so no check refuses it: the providers mask it.
"""

# no `from __future__ import annotations`: the role annotations must stay objects
import math
from dataclasses import replace

import torch

from accelbridge.ops import reference
from accelbridge.ops.cases import SENTINEL, Case, Inputs
from accelbridge.ops.spec import (
    EXPRESSION_ENV,
    Check,
    Data,
    Hint,
    Index,
    OpSpec,
    Option,
    Plan,
    PlanRelation,
    fail,
    on_q_device,
)

# a sparse call whose caches are V3.2 (d_qk 576) or V4 (584 bytes a token), the layouts q's head dim told apart
# before kv_format existed, asks nothing of kv_format
_KV_FORMAT_INERT = (
    "indices is None or ((kv_format in ('V32', 'V4') or (kv_format is None and "
    "(q.shape[-1] == 576 or k_cache.shape[-1] == 584))) and (extra_k_cache is None or extra_k_cache.shape[-1] != 288))"
)


def kv_layout_of(kv_format, q, cache, plan=None):
    """The layout of a sparse ``cache`` read with q and ``kv_format`` (``reference.kv_layout``'s rule), or None
    where its bytes per token or q's head dim do not fit that layout."""
    layout = reference.kv_layout(kv_format, q.shape[-1], cache.shape[-1], plan)
    fits = layout is not None and reference.LAYOUT_BYTES[layout] == cache.shape[-1]
    return layout if fits and reference.LAYOUT_D_QK[layout] == q.shape[-1] else None


EXPRESSION_ENV["_kv_layout"] = kv_layout_of  # declarations and catalog conditions read a call's layout with it


def get_mla_metadata(
    cache_seqlens: Index = None,
    num_q_tokens_per_head_k: Hint = None,
    num_heads_k: Hint = None,
    num_heads_q: Hint = None,
    is_fp8_kvcache: Hint = False,
    topk: Hint = None,
):
    """FlashMLA tile-scheduler metadata, ``(metadata, num_splits)``; without arguments a plan made on first use."""


def flash_mla_with_kvcache(
    q: Data,
    k_cache: Data,
    block_table: Index,
    cache_seqlens: Index,
    head_dim_v: Option(schema="SymInt"),
    tile_scheduler_metadata: Plan,
    num_splits: Hint(schema="Tensor?") = None,
    softmax_scale: Option(schema="float?") = None,
    causal: Option("not causal or q.shape[1] == 1") = False,  # one query per sequence: nothing to mask
    descale_q: Data = None,
    descale_k: Data = None,
    is_fp8_kvcache: Option = False,
    indices: Index = None,
    attn_sink: Data = None,
    extra_k_cache: Data = None,
    extra_indices_in_kvcache: Index = None,
    topk_length: Index = None,
    extra_topk_length: Index = None,
    kv_format: Option(_KV_FORMAT_INERT, schema="str?") = None,
):
    """FlashMLA decode over a paged latent cache (dense, or sparse with ``indices``): ``(out, lse)``."""


def flash_mla_sparse_fwd(
    q: Data,
    kv: Data,
    indices: Index,
    sm_scale: Option(schema="float"),
    d_v: Option = 512,
    attn_sink: Data = None,
    topk_length: Index = None,
):
    """FlashMLA sparse prefill: ``(out, max_logits, lse)`` over the kv rows each query's ``indices`` name."""


def _mla_values(a) -> None:
    from accelbridge.ops.flash_attn import _pages

    for name in ("cache_seqlens", "topk_length", "extra_topk_length"):
        lengths = [] if a[name] is None else a[name].tolist()
        if min(lengths, default=0) < 0:
            fail(name, f"is {lengths[:8]}", "lengths >= 0")
    if a["indices"] is None:
        k_cache = a["k_cache"]
        _pages(a["block_table"], a["cache_seqlens"].tolist(), k_cache.shape[1], k_cache.shape[0], "block_table")


def _prefill_values(a) -> None:
    lengths = [] if a["topk_length"] is None else a["topk_length"].tolist()
    if lengths and not 0 <= min(lengths) <= max(lengths) <= a["indices"].shape[-1]:
        fail("topk_length", f"is {lengths[:8]}", f"counts in [0, {a['indices'].shape[-1]}] (the indices' topk)")


_SPARSE = "(None only in sparse mode, with indices)"
_FP8_LAYOUTS = "576 (DeepSeek V3.2, 656-byte rows) or 512 (V4 MODEL1, V4.1, V3.2 without RoPE)"
_LAYOUTS = (
    "656 bytes a token with d_qk 576 (V3.2), or with d_qk 512: 584 (V4), 528 (V3.2-no-RoPE or V4.1), "
    "with kv_format (None, or one of " + ", ".join(map(repr, reference.KV_FORMATS)) + ") naming that layout"
)
MLA_CHECKS = (
    Check("q", "q.dim() == 4", "{_shape(q)}", "a tensor (batch, seqlen_q, num_heads, head_dim)"),
    Check("q", "q.dtype in _F", "has dtype {q.dtype}", "a floating dtype (bf16, fp16, fp8)", what="dtype"),
    Check("k_cache", "k_cache.dim() == 4", "{_shape(k_cache)}",
          "a tensor (num_blocks, page_size, num_heads_k, head_dim or bytes per token)"),
    Check("k_cache", "is_fp8_kvcache or k_cache.dtype is q.dtype", "has dtype {k_cache.dtype} but q has {q.dtype}",
          "q's dtype (or is_fp8_kvcache=True)", what="dtype"),
    Check("k_cache", "q.get_device() == k_cache.get_device()", "is on {k_cache.device} but q is on {q.device}",
          "every tensor on q's device", what="device"),
    Check("q", "q.shape[2] % k_cache.shape[2] == 0", "has {q.shape[2]} heads and k_cache {k_cache.shape[2]}",
          "q heads to be a multiple of kv heads (MHA, GQA or MQA)"),
    Check("k_cache", "is_fp8_kvcache or k_cache.shape[-1] == q.shape[-1]",
          "has head_dim {k_cache.shape[-1]} but q has {q.shape[-1]}", "q's head_dim (or is_fp8_kvcache=True)"),
    Check("block_table", "block_table is not None or indices is not None", "is None",
          "an int32 tensor (batch, max_pages_per_seq) of block ids " + _SPARSE),
    Check("block_table", "block_table is None or (block_table.dtype is _I32 and block_table.dim() == 2)",
          "{_index(block_table)}", "an int32 tensor (batch, max_pages_per_seq) of block ids"),
    Check("cache_seqlens", "cache_seqlens is not None or indices is not None", "is None",
          "an int32 tensor (batch,) of cached lengths " + _SPARSE),
    Check("cache_seqlens", "cache_seqlens is None or (cache_seqlens.dtype is _I32 and cache_seqlens.dim() == 1)",
          "{_index(cache_seqlens)}", "an int32 tensor (batch,) of cached lengths"),
    *(Check(n, f"{n} is None or {n}.shape[0] == q.shape[0]", f"has {{{n}.shape[0]}} rows",
            "one per sequence: {q.shape[0]}, q's batch") for n in ("block_table", "cache_seqlens")),
    Check("head_dim_v", "head_dim_v.__class__ is int and 0 < head_dim_v and "
                        "(is_fp8_kvcache or head_dim_v <= k_cache.shape[-1])",
          "is {head_dim_v!r}", "an int in (0, {k_cache.shape[-1]}] (V is the cache's first dims)"),
    Check("head_dim_v", "is_fp8_kvcache or k_cache.shape[-1] != 576 or head_dim_v == 512",
          "is {head_dim_v!r} on a 576-wide cache", "512: DeepSeek's layout, 512 latent dims (V) then 64 rope dims"),
    Check("indices", "indices is None or (indices.dtype is _I32 and indices.dim() == 3 "
                     "and indices.shape[:2] == q.shape[:2])",
          "{_index(indices)}", "an int32 tensor (batch, seqlen_q, topk) of token positions (-1: none)"),
    Check("indices", "indices is None or is_fp8_kvcache", "is given without is_fp8_kvcache=True",
          "sparse decode over an FP8 cache (is_fp8_kvcache=True)"),
    Check("q", "indices is None or q.shape[-1] in (576, 512)", "has head_dim {q.shape[-1]}",
          "for sparse FP8 decode " + _FP8_LAYOUTS),
    Check("kv_format", "kv_format is None or (indices is not None and kv_format in " + repr(reference.KV_FORMATS) + ")",
          "is {kv_format!r}{' without indices (dense mode)' if indices is None else ''}",
          "None, or in sparse mode one of " + ", ".join(map(repr, reference.KV_FORMATS))),
    Check("k_cache", "indices is None or not is_fp8_kvcache or "
                     "_kv_layout(kv_format, q, k_cache, tile_scheduler_metadata) not in (None, 'V41_FP4')",
          "has {k_cache.shape[-1]} bytes a token with q's head dim {q.shape[-1]} and kv_format={kv_format!r}",
          _LAYOUTS),
    Check("extra_k_cache", "extra_k_cache is None or indices is None or not is_fp8_kvcache or "
                           "extra_k_cache.shape[-1] == k_cache.shape[-1] or (extra_k_cache.shape[-1] == 288 and "
                           "_kv_layout(kv_format, q, k_cache, tile_scheduler_metadata) == 'V41')",
          "has {extra_k_cache.shape[-1]} bytes a token and k_cache {k_cache.shape[-1]}",
          "k_cache's layout, or V4.1's FP4 (288 bytes a token) beside a V4.1 cache"),
    Check("extra_indices_in_kvcache", "(extra_k_cache is None) == (extra_indices_in_kvcache is None)",
          "{'is None' if extra_indices_in_kvcache is None else 'is given'} and extra_k_cache "
          "{'is None' if extra_k_cache is None else 'is given'}", "both, or neither"),
    Check("topk_length", "topk_length is None or (topk_length.dtype is _I32 and topk_length.shape == q.shape[:1])",
          "{_index(topk_length)}", "an int32 tensor (batch,) of valid index counts"),
    Check("extra_k_cache", "extra_k_cache is None or (extra_k_cache.dtype is k_cache.dtype "
                           "and extra_k_cache.dim() == 4 and extra_k_cache.shape[2] == k_cache.shape[2])",
          "{_tensor(extra_k_cache)}", "k_cache's dtype, rank and heads (its row width: see the layout check)"),
    Check("extra_indices_in_kvcache", "extra_indices_in_kvcache is None or (extra_indices_in_kvcache.dtype is _I32 "
                                      "and extra_indices_in_kvcache.dim() == 3 "
                                      "and extra_indices_in_kvcache.shape[:2] == q.shape[:2])",
          "{_index(extra_indices_in_kvcache)}", "an int32 tensor (batch, seqlen_q, extra_topk) of token positions"),
    Check("extra_topk_length", "extra_topk_length is None or (extra_topk_length.dtype is _I32 "
                               "and extra_topk_length.shape == q.shape[:1])",
          "{_index(extra_topk_length)}", "an int32 tensor (batch,) of valid extra index counts"),
    Check("attn_sink", "attn_sink is None or (attn_sink.shape == q.shape[2:3] and attn_sink.dtype in _F)",
          "{_tensor(attn_sink)}", "a float32 tensor (num_heads,) of sink logits"),
    Check("k_cache", "not _EXACT or q.device == k_cache.device", "is on {k_cache.device} but q is on {q.device}",
          "every tensor on q's device", what="device"),
    *map(on_q_device, ("block_table", "cache_seqlens", "indices", "topk_length", "attn_sink", "extra_k_cache",
                       "extra_indices_in_kvcache", "extra_topk_length", "descale_q", "descale_k")),
    Check("block_table", _mla_values, kind="values"),
)  # fmt: skip


PREFILL_CHECKS = (
    Check("q", "q.dim() == 3", "{_shape(q)}", "a tensor (s_q, num_heads, d_qk)"),
    Check("kv", "kv.dim() == 3 and kv.shape[-1] == q.shape[-1]", "{_shape(kv)}",
          "a tensor (s_kv, 1, d_qk) like q's d_qk"),
    Check("kv", "kv.dtype is q.dtype", "has dtype {kv.dtype} but q has {q.dtype}", "q's dtype (bf16)", what="dtype"),
    Check("kv", "q.get_device() == kv.get_device() == indices.get_device()", "is on {kv.device} but q is on {q.device}",
          "every tensor on q's device", what="device"),
    Check("indices", "indices.dtype is _I32 and indices.dim() == 3 and indices.shape[:2] == (q.shape[0], kv.shape[1])",
          "{_index(indices)}", "an int32 tensor (s_q, 1, topk) of kv rows (-1: none)"),
    Check("d_v", "d_v.__class__ is int and 0 < d_v <= q.shape[-1]", "is {d_v!r}", "an int in (0, d_qk]"),
    Check("topk_length", "topk_length is None or (topk_length.dtype is _I32 and topk_length.shape == q.shape[:1])",
          "{_index(topk_length)}", "an int32 tensor (s_q,)"),
    Check("attn_sink", "attn_sink is None or (attn_sink.shape == q.shape[1:2] and attn_sink.dtype in _F)",
          "{_tensor(attn_sink)}", "a float32 tensor (num_heads,) of sink logits"),
    Check("kv", "not _EXACT or q.device == kv.device == indices.device", "is on {kv.device} (indices on "
          "{indices.device}) but q is on {q.device}", "every tensor on q's device", what="device"),
    *map(on_q_device, ("topk_length", "attn_sink")),
    Check("topk_length", _prefill_values, kind="values"),
)  # fmt: skip


# -- conformance cases and inputs ----------------------------------------------------------------------
def mla_cases(full: bool = False) -> list[Case]:
    c = Case("flashmla.kvcache", "decode", lens_q=(1, 1, 1), lens_k=(1, 100, 300), hq=16, hk=1, d=576, dv=512,
             page_size=64, causal=False, with_out=False, tol="flashmla")  # fmt: skip
    sparse = replace(c, name="sparse-v32", lens_k=(40, 200, 64), hq=64, topk=64)  # bf16 q, FP8 cache
    conventions = replace(
        sparse,
        name="sparse-v32-conventions",
        lens_q=(3, 3, 3),
        page_size=61,
        invalid=(-1,),
        sinks=True,
        sink_inf=True,
        nan_unused=True,
    )  # FlashMLA's sparse tests' conventions
    kernels_own = {"sentinel": SENTINEL, "nan_unused": True}  # FlashMLA's tests: unused entries and slots
    return [
        c,
        replace(c, name="heads128", hq=128),
        replace(c, name="mtp-causal", lens_q=(2, 2, 2), causal=True),
        replace(c, name="long", lens_q=(1, 1), lens_k=(1000, 4097)),
        replace(c, name="empty-seq", lens_k=(0, 100, 64)),
        replace(c, name="fp8-dense", dtype="fp8_e4m3", tol=""),
        replace(c, name="sentinel-nan", lens_q=(1, 1, 1, 1), lens_k=(1, 100, 300, 65), **kernels_own),
        replace(c, name="mtp-causal-sentinel-nan", lens_q=(4, 4, 4), lens_k=(4, 140, 77), causal=True, **kernels_own),
        replace(
            c, name="zero-lengths-sentinel-nan", lens_q=(2, 2, 2, 2), lens_k=(0, 140, 0, 20), causal=True, **kernels_own
        ),
        replace(c, name="fp8-dense-sentinel-nan", dtype="fp8_e4m3", tol="", **kernels_own),
        # several kv heads (FlashMLA's dense tests: h_kv 2, 3, 8; q head i reads kv head i // (h_q / h_kv))
        replace(c, name="kv-heads-2", hk=2),
        replace(
            c,
            name="kv-heads-3-mtp-causal-sentinel-nan",
            lens_q=(2, 2, 2),
            lens_k=(2, 140, 77),
            hq=9,
            hk=3,
            causal=True,
            **kernels_own,
        ),  # fmt: skip
        replace(c, name="kv-heads-8-fp16", lens_k=(20, 140, 300), hq=64, hk=8, dtype="fp16"),
        sparse,
        replace(sparse, name="sparse-v4", d=512),
        replace(sparse, name="sparse-v32-sink", sinks=True),
        replace(sparse, name="sparse-v4-topk-length", d=512, topk_length=True),
        replace(sparse, name="sparse-v4-extra-cache", d=512, extra_topk=64, sinks=True),
        replace(sparse, name="sparse-all-invalid", lens_q=(2, 1, 1), lens_k=(0, 200, 64)),
        replace(sparse, name="sparse-v32-no-rope", d=512, kv_format="V32_NO_ROPE"),
        replace(sparse, name="sparse-v41", d=512, kv_format="V41"),
        replace(
            sparse,
            name="sparse-v41-fp4-extra",
            d=512,
            kv_format="V41",
            extra_kv_format="V41_FP4",
            extra_topk=64,
            topk_length=True,
            sinks=True,
        ),  # fmt: skip
        conventions,
        replace(
            conventions,
            name="sparse-v4-conventions",
            d=512,
            lens_k=(40, 0, 64),
            page_size=53,
            topk_length=True,
            extra_topk=64,
            extra_page_size=2,
        ),  # fmt: skip
        replace(conventions, name="sparse-v32-no-rope-conventions", d=512, kv_format="V32_NO_ROPE", topk_length=True),
        replace(
            conventions,
            name="sparse-v41-conventions",
            d=512,
            kv_format="V41",
            extra_kv_format="V41_FP4",
            lens_k=(40, 0, 64),
            page_size=67,
            topk_length=True,
            extra_topk=64,
            extra_page_size=130,
        ),  # fmt: skip
    ]


def _power_of_two_scales(x: torch.Tensor) -> torch.Tensor:
    """Per-tile scales as FlashMLA's quantiser picks them: the power of two >= max|x| / 448 (>= 1e-4)."""
    return torch.exp2(torch.ceil(torch.log2(torch.clamp_min(x.abs().amax(-1).float() / 448.0, 1e-4))))


def _e2m1_codes(x: torch.Tensor) -> torch.Tensor:
    """float32 -> the nearest FP4 e2m1 codes (uint8), ties to the even code, saturating at +-6 (NaN: code 0)."""
    magnitudes = torch.tensor(reference.E2M1_VALUES, dtype=torch.float32, device=x.device)
    a = torch.nan_to_num(x.abs(), nan=0.0).clamp_max(6.0)
    distance = (a[..., None] - magnitudes).abs()
    nearest = distance == distance.amin(-1, keepdim=True)
    preference = nearest * (2 - torch.arange(8, device=x.device) % 2)  # an even code wins a tie
    return (preference.argmax(-1) | (torch.signbit(x).long() << 3)).to(torch.uint8)


def _blocks(parts: list[torch.Tensor], align: int) -> torch.Tensor:
    """Each block's byte rows one after another (parts (nb, rows, width) uint8), padded to ``align`` bytes;
    returned as the unpadded (nb, block bytes) view of the padded storage, as FlashMLA's quantiser does."""
    nb = parts[0].shape[0]
    block = torch.cat([p.reshape(nb, -1) for p in parts], dim=-1)
    storage = torch.zeros(nb, math.ceil(block.shape[1] / align) * align, dtype=torch.uint8, device=block.device)
    storage[:, : block.shape[1]] = block
    return storage[:, : block.shape[1]]


def quantize_fp8_cache(k: torch.Tensor, layout: str | int) -> torch.Tensor:
    """A bf16 latent cache (num_blocks, block_size, 1, d_qk) -> FlashMLA's sparse layout ``layout``.

    ``layout``: one of ``reference.LAYOUT_BYTES`` (or a d_qk: 576 for V3.2, 512 for V4). Scales as FlashMLA's
    tests pick them: FP8 tiles by the power of two >= max|x| / 448; FP4 tiles by max|x| / 6 rounded to e4m3
    (within [2**-9, 448]), the codes rounded to nearest, a NaN in a tile making its scale NaN.
    """
    layout = {576: "V32", 512: "V4"}.get(layout, layout)  # type: ignore[call-overload]
    nb, bs = k.shape[0], k.shape[1]
    d_qk = reference.LAYOUT_D_QK[layout]
    k = k.reshape(nb, bs, d_qk)
    if layout == "V41_FP4":
        tiles = k.float().reshape(nb, bs, 32, 16)
        amax = torch.nan_to_num(tiles.abs(), nan=math.inf).amax(-1)
        scales = torch.clamp(amax / 6.0, 2.0**-9, 448.0).to(torch.float8_e4m3fn)
        scales = torch.where(amax.isinf(), torch.full_like(scales, math.nan), scales)
        codes = _e2m1_codes(tiles / scales.float()[..., None]).reshape(nb, bs, 256, 2)
        packed = codes[..., 0] | (codes[..., 1] << 4)
        storage = _blocks([packed, scales.view(torch.uint8)], 512)
        return storage.view(torch.float8_e4m3fn).view(nb, bs, 1, -1)
    nope_dim, tile = {"V32": (512, 128), "V32_NO_ROPE": (512, 128), "V4": (448, 64), "V41": (512, 32)}[layout]
    tiles = k[..., :nope_dim].float().reshape(nb, bs, nope_dim // tile, tile)
    scales = _power_of_two_scales(tiles)  # (nb, bs, tiles)
    nope = (tiles / scales[..., None]).reshape(nb, bs, nope_dim).to(torch.float8_e4m3fn).view(torch.uint8)
    rope = k[..., nope_dim:].to(torch.bfloat16).contiguous().view(torch.uint8)  # (nb, bs, 2 * rope dims)
    if layout in ("V32", "V32_NO_ROPE"):
        rows = torch.cat([nope, scales.contiguous().view(torch.uint8), rope], dim=-1)  # 656 / 528 bytes
        return rows.view(torch.float8_e4m3fn).reshape(nb, bs, 1, -1)
    e8m0 = (torch.log2(scales) + 127).to(torch.uint8)
    if layout == "V41":
        return _blocks([nope, e8m0], 512).view(torch.float8_e4m3fn).view(nb, bs, 1, -1)
    scale_rows = torch.cat([e8m0, torch.zeros(nb, bs, 1, dtype=torch.uint8, device=k.device)], dim=-1)  # 8 bytes
    storage = _blocks([torch.cat([nope, rope], dim=-1), scale_rows], 576)
    return storage.view(torch.float8_e4m3fn).view(nb, bs, 1, -1)


def _sparse_indices(inp: Inputs, lens, sq, topk, table, page_size):
    """Per sequence, ``topk`` positions among its own cached tokens (-1 past its length).

    With the case's ``invalid`` markers, about one valid entry in eight becomes one of them, and so
    does every -1: FlashMLA's decode tests mark "no key" with -1 only (an index past the cache is
    the providers' robustness, not a kernel convention: the fuzz test draws it for them).
    """
    b = len(lens)
    idx = torch.full((b, sq, topk), -1, dtype=torch.int32)
    for i, n in enumerate(lens):
        for s in range(sq):
            if n:
                take = torch.randperm(n, generator=inp.gen)[:topk]
                pages = table[i][take // page_size]
                idx[i, s, : len(take)] = (pages * page_size + take % page_size).to(torch.int32)
    if inp.case.invalid:
        markers = torch.tensor(inp.case.invalid, dtype=torch.int32)
        pick = (idx == -1) | (torch.rand(idx.shape, generator=inp.gen) < 0.125)
        idx[pick] = markers[torch.randint(0, len(markers), (int(pick.sum()),), generator=inp.gen)]
    return idx


def _topk_lengths(inp: Inputs, n: int, topk: int) -> torch.Tensor:
    """FlashMLA's tests' draw, 0..topk each, with 0 and topk both present."""
    lengths = torch.randint(0, topk + 1, (n,), generator=inp.gen, dtype=torch.int32)
    lengths[0], lengths[-1] = 0, topk
    return lengths.to(inp.dev)


def _nan_where_unreferenced(cache: torch.Tensor, *indices: torch.Tensor) -> None:
    """FlashMLA's tests' convention: every token no valid index names holds NaN (before quantisation)."""
    flat = cache.view(-1, cache.shape[-1])
    used = torch.zeros(flat.shape[0], dtype=torch.bool)
    for idx in indices:
        idx = idx.flatten().long()
        used[idx[(idx >= 0) & (idx < flat.shape[0])]] = True
    flat[~used.to(cache.device)] = float("nan")


def case_layouts(case: Case) -> tuple[str, str]:
    """The layouts of a sparse case's cache and extra cache."""
    layout = case.kv_format or {576: "V32", 512: "V4"}[case.d]
    return layout, case.extra_kv_format or layout


def mla_inputs(case: Case, inp: Inputs) -> dict:
    c = case
    b, sq = len(c.lens_q), c.lens_q[0]
    lens = c.lens_k or c.lens_q
    sparse = c.topk > 0
    dtype = torch.bfloat16 if sparse else inp.dtype  # dense: bf16, fp16 or FP8 (with descales)
    # FlashMLA's tests' magnitudes (its tolerances assume them): dense q and k N(0, 0.1^2); sparse q N(0, 1),
    # k N(0, 0.1^2), scale d^-0.55
    q = inp.randn(b, sq, c.hq, c.d, dtype=torch.bfloat16, scale=1.0 if sparse else 0.1)
    k_cache, table = inp.paged(lens, c.hk, c.d)
    k_cache = (k_cache.float() * 0.1).to(torch.bfloat16)
    kw = {"q": q.to(dtype), "head_dim_v": c.dv, "causal": c.causal}
    if not sparse:
        k_cache = k_cache.to(dtype)
        inp.retire_unused(table, lens, k_cache)
        kw.update(k_cache=k_cache, block_table=table,
                  cache_seqlens=torch.tensor(lens, dtype=torch.int32, device=inp.dev))  # fmt: skip
        if c.dtype == "fp8_e4m3":
            kw.update(is_fp8_kvcache=True, descale_q=torch.tensor([0.75], device=inp.dev),
                      descale_k=torch.tensor([1.25], device=inp.dev))  # fmt: skip
        return kw
    topk = c.topk
    indices = _sparse_indices(inp, lens, sq, topk, table.cpu(), c.page_size)
    kw.update(block_table=None, cache_seqlens=None, is_fp8_kvcache=True, softmax_scale=c.d**-0.55, causal=False)
    if c.topk_length:
        kw["topk_length"] = _topk_lengths(inp, b, topk)
    if c.sinks:
        kw["attn_sink"] = inp.sinks(c.hq, torch.float32)
    extra = None
    if c.extra_topk:
        extra_page = c.extra_page_size or c.page_size
        extra_lens = tuple(min(n + 10, 300) for n in lens)
        extra, extra_table = inp.paged(extra_lens, 1, c.d, page_size=extra_page)
        extra = (extra.float() * 0.1).to(torch.bfloat16)
        extra_idx = _sparse_indices(inp, extra_lens, sq, c.extra_topk, extra_table.cpu(), extra_page)
        kw["extra_indices_in_kvcache"] = extra_idx.to(inp.dev)
        kw["extra_topk_length"] = (
            _topk_lengths(inp, b, c.extra_topk)
            if c.topk_length
            else torch.full((b,), c.extra_topk // 2, dtype=torch.int32, device=inp.dev)
        )
    if c.nan_unused:
        _nan_where_unreferenced(k_cache, indices)
        if extra is not None:
            _nan_where_unreferenced(extra, kw["extra_indices_in_kvcache"])
    layout, extra_layout = case_layouts(c)
    kw.update(k_cache=quantize_fp8_cache(k_cache, layout), indices=indices.to(inp.dev))
    if layout == "V32_NO_ROPE":  # 528 bytes a token is V4.1 without tensor metadata: the call names its layout
        kw["kv_format"] = layout
    if extra is not None:
        kw["extra_k_cache"] = quantize_fp8_cache(extra, extra_layout)
    return kw


def mla_plan_args(a) -> dict:
    q, k_cache = a["q"], a["k_cache"]
    return {"cache_seqlens": a["cache_seqlens"], "num_q_tokens_per_head_k": q.shape[1] * q.shape[2] // k_cache.shape[2],
            "num_heads_k": k_cache.shape[2], "num_heads_q": q.shape[2], "is_fp8_kvcache": a["is_fp8_kvcache"],
            "topk": None if a["indices"] is None else a["indices"].shape[-1]}  # fmt: skip


def prefill_cases(full: bool = False) -> list[Case]:
    c = Case("flashmla.sparse_prefill", "v32", lens_q=(48,), lens_k=(300,), hq=64, hk=1, d=576, dv=512, topk=128,
             with_out=False, return_lse=True, tol="flashmla")  # fmt: skip
    return [
        c,
        replace(c, name="v4", d=512),
        replace(c, name="sink", sinks=True),
        replace(c, name="topk-length", topk_length=True),
        replace(c, name="lonely-rows", lens_k=(30,)),
        replace(
            c, name="conventions", lens_k=(95,), invalid=PREFILL_INVALID, sinks=True, sink_inf=True, topk_length=True
        ),
    ]


# sgl-kernel's sparse prefill test pads with s_kv and 2147480000; FlashMLA's tests draw from all of these
PREFILL_INVALID = (-2147483648, -123456, -1, 114514, 1919810, 2147480000, 2147483647)


def prefill_inputs(case: Case, inp: Inputs) -> dict:
    c = case
    s_q, s_kv, topk = c.lens_q[0], c.lens_k[0], c.topk
    idx = torch.stack([torch.randperm(max(s_kv, topk), generator=inp.gen)[:topk] for _ in range(s_q)])
    idx = torch.where(idx < s_kv, idx, -1).to(torch.int32)
    if c.name == "lonely-rows":
        idx[::3] = -1
    if c.invalid:  # every -1 (and one valid entry in eight) becomes one of the markers of "no key"
        markers = torch.tensor([s_kv, *c.invalid], dtype=torch.int32)
        pick = (idx == -1) | (torch.rand(idx.shape, generator=inp.gen) < 0.125)
        idx[pick] = markers[torch.randint(0, len(markers), (int(pick.sum()),), generator=inp.gen)]
    # sgl-kernel's test's magnitudes (its tolerances assume them): q and kv N(0, 0.1^2)
    kw = {"q": inp.randn(s_q, c.hq, c.d, dtype=torch.bfloat16, scale=0.1),
          "kv": inp.randn(s_kv, 1, c.d, dtype=torch.bfloat16, scale=0.1),
          "indices": idx[:, None, :].to(inp.dev), "sm_scale": c.d**-0.5, "d_v": c.dv}  # fmt: skip
    if c.sinks:
        kw["attn_sink"] = inp.sinks(c.hq, torch.float32)
    if c.topk_length:
        kw["topk_length"] = _topk_lengths(inp, s_q, topk)
    return kw


# a FlashMLASchedMeta is planned on first use and then frozen: reusing it for other shapes reads wrong tiles
MLA_PLAN = PlanRelation("tile_scheduler_metadata", "flashmla.metadata", keys=(), producer_args=mla_plan_args,
                        result_params=("tile_scheduler_metadata", "num_splits"),
                        freeze=(("batch size", "q.shape[0]"), ("seqlen_q", "q.shape[1]"), ("num_heads", "q.shape[2]"),
                                ("topk", "None if indices is None else indices.shape[-1]"),
                                ("extra topk", "None if extra_indices_in_kvcache is None else "
                                               "extra_indices_in_kvcache.shape[-1]"),
                                ("is_fp8_kvcache", "bool(is_fp8_kvcache)"),
                                # sglang-kernel 0.4.10's FlashMLASchedMeta.Config records these too
                                ("page block size", "k_cache.shape[1]"), ("causal", "bool(causal)"),
                                ("extra page block size",
                                 "None if extra_k_cache is None else extra_k_cache.shape[1]")))  # fmt: skip

SPECS = [
    OpSpec("flashmla.metadata", get_mla_metadata, features={}, reference=reference.get_mla_metadata),
    OpSpec("flashmla.kvcache", flash_mla_with_kvcache, checks=MLA_CHECKS, reference=reference.flash_mla_with_kvcache,
           plan=MLA_PLAN, cases=mla_cases, inputs=mla_inputs,
           result_shapes=(("(*q.shape[:-1], head_dim_v)", "_out_dtype(q.dtype)"),
                          ("(q.shape[0], q.shape[2], q.shape[1])", "torch.float32"))),
    OpSpec("flashmla.sparse_prefill", flash_mla_sparse_fwd, checks=PREFILL_CHECKS,
           reference=reference.flash_mla_sparse_fwd, cases=prefill_cases, inputs=prefill_inputs,
           results=("out", "max_logits", "lse"),
           result_shapes=(("(*q.shape[:-1], d_v)", "q.dtype"), ("q.shape[:-1]", "torch.float32"),
                          ("q.shape[:-1]", "torch.float32"))),
]  # fmt: skip
