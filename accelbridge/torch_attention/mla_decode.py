"""FlashMLA decode, dense or sparse, in one Triton kernel: the cache read in place, FP8 dequantised in registers.

Program (query row, block of heads, split) streams one slice of the row's keys: the sequence's
positions through its block-table row (dense) or its index list (sparse, V3.2's FP8 layout or a
bf16 cache). All heads of a row share each loaded key, as in FlashMLA. On a TMA device (sm90) a
dense contiguous cache's whole key tiles are read by tensor descriptors (``mla_decode_tma_kernel``;
on sm90, for 64-head blocks, the Gluon kernel of ``mla_decode_gluon``, which also writes the result
itself when there is one split and no sink). Splits, used only when the rows alone leave the GPU's
processors idle, are merged with their log-sum-exp by ``splits.merge_launch``, which applies the sink and
FlashMLA's conventions (a row with no key: out 0, lse +inf).
"""

from __future__ import annotations

import functools
import logging
from collections.abc import Callable
from typing import Any, NamedTuple

import torch

from accelbridge.ops.reference import V32_TOKEN_BYTES
from accelbridge.ops.softmax import LOG2E
from accelbridge.torch_attention import capabilities, launch_plan
from accelbridge.torch_attention.capabilities import Capabilities, processors, triton_interpreted
from accelbridge.torch_attention.grid import ceil_div, next_pow2
from accelbridge.torch_attention.splits import merge_launch
from accelbridge.torch_attention.tma_descriptors import descriptor

log = logging.getLogger("accelbridge")
_GLUON_BROKEN: list[str] = []  # why the Gluon kernel did not compile with this triton (then the Triton one runs)
D_QK, D_V = 576, 512  # DeepSeek's latent (512) + rope (64) head; MODEL1's 512-dim layout takes the torch path
_DTYPES = (torch.float16, torch.bfloat16)


def fits(q: torch.Tensor, k_cache: torch.Tensor, head_dim_v: int, indices: Any, is_fp8: bool, caps: Capabilities,
         *others: Any) -> bool:  # fmt: skip
    """Whether the kernel serves this call: a Triton device, d_qk 576 / d_v 512, a bf16 (dense: q's dtype, any
    number of kv heads dividing q's) cache or V3.2's FP8 one (sparse, one kv head), and none of ``others``
    (descales, the extra cache) passed."""
    if not caps.triton or any(o is not None for o in others) or q.shape[-1] != D_QK or head_dim_v != D_V:
        return False
    if q.dtype not in _DTYPES or k_cache.stride(-1) != 1 or q.stride(-1) != 1:
        return False
    if is_fp8:  # sparse FP8 decode reads one kv head (FlashMLA's sparse kernels take h_kv 1)
        return (indices is not None and q.dtype == torch.bfloat16 and k_cache.shape[-1] == V32_TOKEN_BYTES
                and k_cache.shape[2] == 1)  # fmt: skip
    return k_cache.dtype == q.dtype and k_cache.shape[-1] == D_QK and q.shape[2] % k_cache.shape[2] == 0


@functools.cache
def _kernel():
    from accelbridge.torch_attention.mla_decode_kernel import mla_decode_kernel

    return mla_decode_kernel


@functools.cache
def _tma_kernel():
    from accelbridge.torch_attention.mla_decode_kernel import mla_decode_tma_kernel

    return mla_decode_tma_kernel


@functools.cache
def _sm90_kernel():
    from accelbridge.torch_attention.mla_decode_gluon import mla_decode_sm90_kernel

    return mla_decode_sm90_kernel


def _triton_version() -> str:
    import triton

    return triton.__version__


def _boxes(block_n: int) -> tuple[list[int], list[int]]:
    """The TMA boxes of a key tile: a latent half (a box is at most 256 wide), the rope."""
    return [block_n, D_V // 2], [block_n, D_QK - D_V]


@functools.cache
def _gluon_layouts(dtype: torch.dtype, block_n: int) -> tuple[Any, Any]:
    """The shared-memory layouts of the Gluon kernel's key tiles (latent half, rope): 128-byte swizzles."""
    from triton.experimental.gluon import language as gl

    element = gl.bfloat16 if dtype == torch.bfloat16 else gl.float16
    return tuple(gl.NVMMASharedLayout.get_default_for(box, element) for box in _boxes(block_n))


class _TmaRoute(NamedTuple):
    """How a dense cache's key tiles are read by TMA: the kernel, the descriptor class and its layouts, the
    (tokens, 576) rows' shape and strides, whether the kernel is Gluon's."""

    kernel: Any
    cls: type
    layouts: tuple[tuple[Any, ...], ...]  # each box's (Gluon: its shared layout; Triton: none)
    rows: tuple[tuple[int, int], tuple[int, int]]
    gluon: bool

    def makers(self, block_n: int) -> dict[str, Callable[[torch.Tensor], Any]]:
        """The kernel's descriptor parameters, the latent half's (NOPE) and the rope's (ROPE), each with the function
        making it over a cache (one kv head, this route's geometry)."""

        def maker(box: list[int], layout: tuple[Any, ...]) -> Callable[[torch.Tensor], Any]:
            return lambda cache: descriptor(self.cls, cache, *self.rows, box, *layout)

        return {name: maker(box, layout) for name, box, layout in zip(("NOPE", "ROPE"), _boxes(block_n), self.layouts)}


def _tma_route(cache: torch.Tensor, config: tuple[int, ...], caps: Capabilities) -> _TmaRoute | None:
    """Where tensor descriptors serve one kv head's dense cache (blocks, page, 576) as (tokens, 576) rows
    ``cache.stride(1)`` elements apart: a TMA device, bf16/fp16 rows on 16-byte boundaries with the blocks one after
    another, pages a multiple of the key tile. On sm90 with 64-head blocks, 64-key tiles and 8 warps, the Gluon
    kernel, else the Triton one.

    H200, dense B=64 ctx 4096: Triton 276 us against 311 us with pointer loads (the same tiles), Gluon 218-226."""
    block_h, block_n, warps = config[:3]
    page, row_stride = cache.shape[1], cache.stride(1)
    if not (caps.tma and page % block_n == 0 and cache.stride(2) == 1 and cache.stride(0) == page * row_stride
            and row_stride * cache.element_size() % 16 == 0 and cache.data_ptr() % 16 == 0):  # fmt: skip
        return None
    rows = ((cache.shape[0] * page, D_QK), (row_stride, 1))  # the cache's tokens as rows: shape, strides
    if caps.gluon_sm90 and not _GLUON_BROKEN and (block_h, block_n, warps) == (64, 64, 8):
        from triton.experimental.gluon.nvidia.hopper import TensorDescriptor as GluonDescriptor

        layouts = tuple((layout,) for layout in _gluon_layouts(cache.dtype, block_n))
        return _TmaRoute(_sm90_kernel(), GluonDescriptor, layouts, rows, True)
    from triton.tools.tensor_descriptor import TensorDescriptor

    return _TmaRoute(_tma_kernel(), TensorDescriptor, ((), ()), rows, False)


@functools.cache
def _configs(device: torch.device, heads: int) -> tuple[tuple[int, int, int, int, int], ...]:
    """(BLOCK_H, BLOCK_N, num_warps, num_stages, DV_BLOCK), best first: H200-tuned, then for GPUs with less
    shared memory (``fitting``: the first takes 221 KB on an H200, an A100 holds 163 KB a block); small under the
    interpreter."""
    block_h = min(64, max(16, next_pow2(heads)))
    if device.type != "cuda":
        return ((block_h, 16, 4, 1, 256),)  # both output blocks run under the interpreter
    # H200, dense B=64 ctx 4096, pointer loads: 311 us (1 stage 408, BLOCK_N 32 424, 4 warps 560, 32 heads 353);
    # with TMA 276 us (1 stage 417, BLOCK_N 32 415, 4 warps 495); sparse V3.2 FP8 B=32 topk 2048: 183-184 us
    # (1 stage 196, BLOCK_N 32 3 stages 247, 4 warps 399; BLOCK_N 128 with output blocks of 256 263 in session 9)
    return ((block_h, 64, 8, 2, 512), (block_h, 32, 8, 2, 512), (min(block_h, 32), 32, 4, 2, 512),
            (16, 16, 4, 1, 512))  # fmt: skip


def _key(q, k_cache, block_table, cache_seqlens, causal, indices, topk_length, is_fp8, attn_sink, want_max,
         caps) -> tuple[Any, ...]:  # fmt: skip
    """What a plan is made of: every shape, stride and dtype its integers, kernels and launch options come from, and
    the one pointer fact that picks a route (the cache's 16-byte alignment, which TMA needs)."""
    return (q.device, q.dtype, q.shape, q.stride(), k_cache.dtype, k_cache.shape, k_cache.stride(),
            k_cache.data_ptr() % 16 == 0, bool(causal), is_fp8, want_max, caps.tma, caps.gluon_sm90,
            None if block_table is None else (block_table.dtype, block_table.shape, block_table.stride()),
            None if cache_seqlens is None else cache_seqlens.dtype,
            None if indices is None else (indices.dtype, indices.shape, indices.stride()),
            None if topk_length is None else topk_length.dtype,
            None if attn_sink is None else attn_sink.dtype)  # fmt: skip


_PLANS: launch_plan.Plans[_Plan] = launch_plan.Plans()


def forget_plans() -> None:
    """Drop every plan: tools that swap this module's configs or routes call it (a plan keeps what it was made with)."""
    _PLANS.clear()


class _Plan:
    """One call geometry's launches, worked out once: the launch configuration, the split count, the route (TMA,
    Gluon or pointer loads), every stride and size, the outputs' shapes. A call allocates its outputs, points the
    launches at its tensors (``launch_plan.Launch``: through the compiled kernel after the first) and, where rows are
    split, merges them."""

    def __init__(self, config: tuple[int, int, int, int, int], q: torch.Tensor, k_cache: torch.Tensor, block_table,
                 indices, topk_length, attn_sink, causal: bool, is_fp8: bool, want_max: bool,
                 caps: Capabilities):  # fmt: skip
        block_h, block_n, warps, stages, dv_block = config
        b, sq, hq, d = q.shape
        rows, dev = b * sq, q.device
        page, num_blocks, kv_heads = k_cache.shape[1], k_cache.shape[0], k_cache.shape[2]
        group = hq // kv_heads
        sparse = indices is not None
        self.rows, self.hq, self.kv_heads, self.group = rows, hq, kv_heads, group
        self.sparse, self.is_fp8, self.want_max = sparse, is_fp8, want_max
        cache = k_cache.view(torch.uint8)[:, :, 0] if is_fp8 else k_cache[:, :, 0]  # one kv head's (blocks, page, d)
        qr = q.reshape(rows, hq, d)
        self.q_is_rows = kv_heads == 1 and qr.data_ptr() == q.data_ptr()  # the rows a view of q: q is the pointer
        keys = self.indices(indices).shape[1] if sparse else block_table.shape[1] * page
        capacity = block_table.shape[1] * page if block_table is not None else 0
        route = None if sparse else _tma_route(cache, config, caps)
        self.route = route
        if route is not None:
            dv_block = D_V  # the TMA kernels compute the whole output of their head block
        blocks = ceil_div(group, block_h) * (D_V // dv_block)  # (head block, output block) pairs of a kv head
        programs = rows * blocks * kv_heads
        # splits fill whole waves of programs, one an SM (H200: the dense kernel takes 221 KB of shared memory,
        # the sparse one 190 KB and 255 registers a thread): dense one wave, sparse two. Sparse V3.2 B=32, 64
        # programs, in the bench: 2 / 3 / 4 / 5 / 6 splits 201 / 183 / 152 / 176 / 183 us (3 leave half the
        # second wave idle, 4 fill 256 of 264 places in two waves, 5 and 6 need a third)
        slots = (2 if sparse else 1) * processors(dev)
        splits = 1 if 4 * programs >= 3 * slots else max(1, min(slots // programs, ceil_div(keys, 256)))
        split_len = max(block_n, ceil_div(ceil_div(keys, splits), block_n) * block_n)
        splits = max(1, ceil_div(keys, split_len))
        gluon = route is not None and route.gluon
        # one split: the kernel writes the result itself (no float32 partials, no merge launch), the Gluon kernel
        # without a sink, the pointer kernel with one too; the Triton TMA kernel writes partials
        self.final = final = splits == 1 and (attn_sink is None if gluon else route is None)
        # the interpreter truncates a bf16 store (torch rounds): its launches write float32, copied in at the end
        self.widen = triton_interpreted() and q.dtype == torch.bfloat16
        self.out_shape, self.lse_shape = (b, sq, hq, D_V), (b, hq, sq)
        self.mid_shapes = None if final else ((rows, splits, hq, D_V), (rows, splits, hq))
        results = (self.out_shape, self.lse_shape)
        mid_o, mid_l = (torch.empty(shape, device="meta") for shape in (self.mid_shapes or results))
        o, lse = self.heads(mid_o, 2, 0), self.heads(mid_l, 1 if final else 2, 0)  # one kv head's
        if final:
            o_strides = (o.stride(1), 0, o.stride(2))  # (row, split, head)
            l_strides = (lse.stride(0), lse.stride(2), 0, lse.stride(1))  # (b, s, split, head)
        else:
            o_strides = o.stride()[:3]
            l_strides = (sq * lse.stride(0), lse.stride(0), lse.stride(1), lse.stride(2))
        shape = dict(scale_log2=0.0, page=page, num_blocks=num_blocks, capacity=capacity, sq=sq, heads=group,
                     split_len=split_len, BLOCK_H=block_h, BLOCK_N=block_n, CAUSAL=bool(causal) and not sparse,
                     sq_r=qr.stride(0), sq_h=qr.stride(1), so_r=o_strides[0], so_s=o_strides[1],
                     so_h=o_strides[2])  # fmt: skip
        grid = (rows, blocks, splits)
        options = {"num_warps": warps, "num_stages": stages}
        tensors = {name: None for name in ("Q", "CACHE", "TABLE", "LENS", "OUT", "LSE")}
        if route is not None:  # whole key tiles by TMA: the Gluon kernel on sm90, else the Triton one
            tensors.update(NOPE=None, ROPE=None)
            s_table = block_table.stride(0)
            if gluon:
                extra = dict(zip(("sl_b", "sl_q", "sl_s", "sl_h"), l_strides), FINAL=final)
                options = {"num_warps": warps}
            else:  # (row, split); head stride 1
                extra = dict(sl_r=l_strides[1], sl_s=l_strides[2], DOT_F32=triton_interpreted())
            args = dict(shape, **extra, s_table=s_table, s_row=cache.stride(1))
            kernel = route.kernel
        else:
            tensors.update(IDX=None, TOPK_LEN=None, SINK=None, MAXES=None)
            args = dict(shape, **dict(zip(("sl_b", "sl_q", "sl_s", "sl_h"), l_strides)),
                        s_blk=cache.stride(0), s_slot=cache.stride(1),
                        s_table=block_table.stride(0) if block_table is not None else 0,
                        s_idx=self.indices(indices).stride(0) if sparse else 0, topk=keys if sparse else 0,
                        DV=D_V, DR=D_QK - D_V, DV_BLOCK=dv_block, SPARSE=sparse, FP8=is_fp8,
                        TOPK_GIVEN=sparse and topk_length is not None, PAGE_TILE=not sparse and page % block_n == 0,
                        WRITE_MAX=want_max, FINAL=final, HAS_SINK=final and attn_sink is not None,
                        DOT_F32=triton_interpreted())  # fmt: skip
            kernel = _kernel()
        makers = route.makers(block_n) if route is not None else None
        self.launch = launch_plan.Launch(kernel, grid, {**args, **tensors}, options, (*tensors, "scale_log2"), makers)
        self.merge = None
        if not final:
            out, lse_all = (torch.empty(shape, device="meta") for shape in results)
            so, sl = mid_o.stride(), mid_l.stride()  # row b * Sq + s
            # FlashMLA scales out by 1 / (1 + exp(sink - lse)), the sink joining the sum; lse stays without it
            self.merge = merge_launch(mid_o, mid_l, (sq * so[0], so[0], so[2], so[1]),
                                      (sq * sl[0], sl[0], sl[2], sl[1]), out, lse_all, attn_sink is not None,
                                      sink_in_lse=False, lonely_inf=True)  # fmt: skip

    def cache(self, k_cache: torch.Tensor, j: int) -> torch.Tensor:
        """kv head j's cache: V3.2's FP8 tokens as bytes; the whole cache where it has one head (the same pointer and
        block and slot strides as its head's view, which the plan was made from: no view to make)."""
        if self.is_fp8:
            return k_cache.view(torch.uint8)[:, :, 0]
        return k_cache if self.kv_heads == 1 else k_cache[:, :, j]

    def indices(self, indices: torch.Tensor) -> torch.Tensor:
        """The index lists as (rows, topk) with unit stride along a list."""
        idx = indices.reshape(self.rows, -1)
        return idx if idx.stride(-1) == 1 else idx.contiguous()

    def heads(self, x: torch.Tensor, dim: int, j: int) -> torch.Tensor:
        """kv head j's group of q heads along ``dim`` (q head i reads kv head i // group); all of x for one kv head."""
        return x if self.kv_heads == 1 else x.narrow(dim, j * self.group, self.group)

    def __call__(self, q, k_cache, block_table, cache_seqlens, scale: float, indices, topk_length,
                 attn_sink) -> tuple[torch.Tensor, ...]:  # fmt: skip
        dev = q.device
        wide = torch.float32 if self.widen else q.dtype
        out = torch.empty(self.out_shape, dtype=wide, device=dev)
        lse = torch.empty(self.lse_shape, dtype=torch.float32, device=dev)
        if self.final:
            mid_o, mid_l = out, lse
        else:
            mid_o, mid_l = (torch.empty(shape, dtype=torch.float32, device=dev) for shape in self.mid_shapes)
        maxes = torch.empty_like(mid_l) if self.want_max else mid_l
        l_dim = 1 if self.final else 2
        qr = q if self.q_is_rows else q.reshape(self.rows, self.hq, -1)  # also the stand-in pointer for a None
        idx = self.indices(indices) if self.sparse else qr
        table = block_table if block_table is not None else qr
        lens = cache_seqlens if cache_seqlens is not None else qr
        scale_log2 = float(scale) * LOG2E
        for j in range(self.kv_heads):
            cache = self.cache(k_cache, j)
            o, lse_j = self.heads(mid_o, 2, j), self.heads(mid_l, l_dim, j)
            if self.route is not None:
                # NOPE and ROPE: descriptors over the cache (the plan's makers)
                self.launch(self.heads(qr, 1, j), cache, table, lens, o, lse_j, cache, cache, scale_log2)
            else:
                sink = self.heads(attn_sink, 0, j) if attn_sink is not None else qr
                self.launch(self.heads(qr, 1, j), cache, table, lens, o, lse_j, idx,
                            topk_length if topk_length is not None else qr, sink, self.heads(maxes, l_dim, j),
                            scale_log2)  # fmt: skip
        if self.merge is not None:
            self.merge(mid_o, mid_l, attn_sink if attn_sink is not None else lse, out, lse)
        if self.widen:
            out = out.to(q.dtype)
        if not self.want_max:
            return out, lse
        rows_max = maxes.transpose(1, 2).reshape(self.rows, self.hq) if self.final else maxes.amax(dim=1)
        return out, lse, rows_max


def mla_decode(q, k_cache, block_table, cache_seqlens, scale: float, causal: bool, indices, topk_length,
               is_fp8: bool, attn_sink, want_max: bool = False) -> tuple[torch.Tensor, ...]:  # fmt: skip
    """-> out (B, Sq, Hq, 512) in q's dtype, lse (B, Hq, Sq) float32 (+inf where a row sees no key), and with
    ``want_max`` (sparse) each row's largest scaled score in base 2 (B * Sq, Hq): sparse prefill's max_logits.

    With h_kv kv heads (dense), q head i reads kv head i // (Hq / h_kv), as FlashMLA's reference repeats them:
    each kv head's group of q heads is one launch over that head's view of the cache (h_kv launches; DeepSeek's
    models have one kv head). The launches are planned once per call geometry (``_Plan``)."""
    dev = q.device
    caps, configs = capabilities.of(dev), _configs(dev, q.shape[2] // k_cache.shape[2])
    key = (configs, *_key(q, k_cache, block_table, cache_seqlens, causal, indices, topk_length, is_fp8, attn_sink,
                          want_max, caps))  # fmt: skip
    call = (q, k_cache, block_table, cache_seqlens, scale, indices, topk_length, attn_sink)

    def first(config: tuple[int, int, int, int, int]) -> tuple[_Plan, tuple[torch.Tensor, ...]]:
        from triton.compiler.errors import CompilationError

        made = _Plan(config, q, k_cache, block_table, indices, topk_length, attn_sink, causal, is_fp8, want_max,
                     caps)  # fmt: skip
        try:
            return made, made(*call)
        except CompilationError as error:  # Gluon's API moves between triton releases: never a failed call
            if made.route is None or not made.route.gluon:
                raise
            _GLUON_BROKEN.append(str(error).strip().splitlines()[-1])
            log.warning("torch provider: the Gluon sm90 MLA decode kernel does not compile with triton %s (%s); "
                        "the Triton TMA kernel runs instead", _triton_version(), _GLUON_BROKEN[0])  # fmt: skip
            return first(config)

    variant = ("sparse, FP8" if is_fp8 else "sparse") if indices is not None else "dense"
    return _PLANS.call(key, call, ("the MLA decode kernel", dev, q.dtype, variant), configs, first)
