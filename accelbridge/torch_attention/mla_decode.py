"""FlashMLA decode, dense or sparse, in one Triton kernel: the cache read in place, FP8 dequantised in registers.

Program (query row, block of heads, split) streams one slice of the row's keys: the sequence's
positions through its block-table row (dense) or its index list (sparse, V3.2's FP8 layout or a
bf16 cache). All heads of a row share each loaded key, as in FlashMLA. On a TMA device (sm90) a
dense contiguous cache's whole key tiles are read by tensor descriptors (``mla_decode_tma_kernel``;
on sm90, for 64-head blocks, the Gluon kernel of ``mla_decode_gluon``, which also writes the result
itself when there is one split and no sink). Splits, used only when the rows alone leave the GPU's
processors idle, are merged with their log-sum-exp by ``splits.merge``, which applies the sink and
FlashMLA's conventions (a row with no key: out 0, lse +inf).
"""

from __future__ import annotations

import functools
import logging
from typing import Any

import torch

from accelbridge.ops.reference import V32_TOKEN_BYTES
from accelbridge.ops.softmax import LOG2E
from accelbridge.torch_attention import capabilities
from accelbridge.torch_attention.capabilities import Capabilities, processors, triton_interpreted
from accelbridge.torch_attention.fitting import first_fitting
from accelbridge.torch_attention.grid import ceil_div, next_pow2
from accelbridge.torch_attention.splits import merge as merge_splits
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


def _tma_kernel_for(cache: torch.Tensor, config: tuple[int, ...], caps: Capabilities) -> tuple[Any, ...] | None:
    """(kernel, TMA descriptors (latent halves, rope) over one kv head's dense cache (blocks, page, 576) as
    (tokens, 576) rows ``cache.stride(1)`` elements apart, whether it is Gluon's) where tensor descriptors serve:
    a TMA device, bf16/fp16 rows on 16-byte boundaries with the blocks one after another, pages a multiple of the
    key tile. On sm90 with 64-head blocks, 64-key tiles and 8 warps, the Gluon kernel.

    H200, dense B=64 ctx 4096: Triton 276 us against 311 us with pointer loads (the same tiles), Gluon 218-226."""
    block_h, block_n, warps = config[:3]
    page, row_stride = cache.shape[1], cache.stride(1)
    if not (caps.tma and page % block_n == 0 and cache.stride(2) == 1 and cache.stride(0) == page * row_stride
            and row_stride * cache.element_size() % 16 == 0 and cache.data_ptr() % 16 == 0):  # fmt: skip
        return None
    rows = ((cache.shape[0] * page, D_QK), (row_stride, 1))  # the cache's tokens as rows: shape, strides
    boxes = _boxes(block_n)
    if caps.gluon_sm90 and not _GLUON_BROKEN and (block_h, block_n, warps) == (64, 64, 8):
        from triton.experimental.gluon.nvidia.hopper import TensorDescriptor as GluonDescriptor

        layouts = _gluon_layouts(cache.dtype, block_n)
        return _sm90_kernel(), tuple(descriptor(GluonDescriptor, cache, *rows, box, layout)
                                     for box, layout in zip(boxes, layouts)), True  # fmt: skip
    from triton.tools.tensor_descriptor import TensorDescriptor

    return _tma_kernel(), tuple(descriptor(TensorDescriptor, cache, *rows, box) for box in boxes), False


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


def _results(q: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """FlashMLA's out (B, Sq, Hq, 512) in q's dtype and lse (B, Hq, Sq) float32, unwritten."""
    b, sq, hq, _ = q.shape
    return (torch.empty(b, sq, hq, D_V, dtype=q.dtype, device=q.device),
            torch.empty(b, hq, sq, dtype=torch.float32, device=q.device))  # fmt: skip


def _partials(rows: int, splits: int, heads: int, dev: torch.device) -> tuple[torch.Tensor, torch.Tensor]:
    """Each split's float32 out (rows, splits, heads, 512) and lse (rows, splits, heads), for the merge."""
    return (torch.empty(rows, splits, heads, D_V, dtype=torch.float32, device=dev),
            torch.empty(rows, splits, heads, dtype=torch.float32, device=dev))  # fmt: skip


def mla_decode(q, k_cache, block_table, cache_seqlens, scale: float, causal: bool, indices, topk_length,
               is_fp8: bool, attn_sink, want_max: bool = False) -> tuple[torch.Tensor, ...]:  # fmt: skip
    """-> out (B, Sq, Hq, 512) in q's dtype, lse (B, Hq, Sq) float32 (+inf where a row sees no key), and with
    ``want_max`` (sparse) each row's largest scaled score in base 2 (B * Sq, Hq): sparse prefill's max_logits.

    With h_kv kv heads (dense), q head i reads kv head i // (Hq / h_kv), as FlashMLA's reference repeats them:
    each kv head's group of q heads is one launch over that head's view of the cache (h_kv launches; DeepSeek's
    models have one kv head)."""
    b, sq, hq, d = q.shape
    rows = b * sq
    dev = q.device
    qr = q.reshape(rows, hq, d)
    page, num_blocks, kv_heads = k_cache.shape[1], k_cache.shape[0], k_cache.shape[2]
    group = hq // kv_heads
    heads_of = [slice(j * group, (j + 1) * group) for j in range(kv_heads)]  # q heads of kv head j
    caches = [k_cache.view(torch.uint8)[:, :, 0] if is_fp8 else k_cache[:, :, j] for j in range(kv_heads)]
    sparse = indices is not None
    idx = indices.reshape(rows, -1) if sparse else None
    if idx is not None and idx.stride(-1) != 1:
        idx = idx.contiguous()
    keys = idx.shape[1] if idx is not None else block_table.shape[1] * page
    table = block_table if block_table is not None else qr
    capacity = block_table.shape[1] * page if block_table is not None else 0
    scale_log2 = float(scale) * LOG2E

    def launch(config: tuple[int, int, int, int, int]) -> tuple[torch.Tensor, torch.Tensor, bool]:
        block_h, block_n, warps, stages, dv_block = config
        caps = capabilities.of(dev)
        tma = None if sparse else [_tma_kernel_for(c, config, caps) for c in caches]
        if tma is not None and any(t is None for t in tma):
            tma = None
        if tma is not None:
            dv_block = D_V  # the TMA kernel computes the whole output of its head block
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
        gluon = tma is not None and tma[0][2]
        # one split: the kernel writes the result itself (no float32 partials, no merge launch), the Gluon kernel
        # without a sink, the pointer kernel with one too; the Triton TMA kernel writes partials
        final = splits == 1 and (attn_sink is None if gluon else tma is None)
        if final:
            out, lse_all = _results(q)
            # the interpreter truncates a bf16 store (torch rounds): it writes float32, copied in at the end
            widen = tma is None and triton_interpreted() and q.dtype == torch.bfloat16
            mid_o, mid_l = (out.float() if widen else out), lse_all
        else:
            mid_o, mid_l = _partials(rows, splits, hq, dev)
        maxes[:] = [torch.empty_like(mid_l)] if want_max else [mid_l]  # as mid_l
        for heads, cache, kernel in zip(heads_of, caches, tma or [None] * kv_heads):
            o, lse = mid_o[:, :, heads], mid_l[:, heads] if final else mid_l[:, :, heads]
            if final:
                o_strides = (o.stride(1), 0, o.stride(2))  # (row, split, head)
                l_strides = (lse.stride(0), lse.stride(2), 0, lse.stride(1))  # (b, s, split, head)
            else:
                o_strides = o.stride()[:3]
                l_strides = (sq * lse.stride(0), lse.stride(0), lse.stride(1), lse.stride(2))
            args = (qr[:, heads], cache)
            if kernel is not None:  # TMA key tiles: the Gluon kernel on sm90, else the Triton one
                from triton.compiler.errors import CompilationError

                if not gluon:  # (row, split); head stride 1
                    l_strides = l_strides[1:3]
                options = {"FINAL": final} if gluon else {"DOT_F32": triton_interpreted(), "num_stages": stages}
                try:
                    kernel[0][(rows, blocks, splits)](
                        *args, *kernel[1], block_table, cache_seqlens, o, lse, qr.stride(0), qr.stride(1),
                        block_table.stride(0), *o_strides, *l_strides, scale_log2, page, num_blocks, cache.stride(1),
                        capacity, sq, group, split_len, BLOCK_H=block_h, BLOCK_N=block_n, CAUSAL=bool(causal),
                        num_warps=warps, **options,
                    )  # fmt: skip
                except CompilationError as error:  # Gluon's API moves between triton releases: never a failed call
                    if not gluon:
                        raise
                    _GLUON_BROKEN.append(str(error).strip().splitlines()[-1])
                    log.warning("torch provider: the Gluon sm90 MLA decode kernel does not compile with triton %s "
                                "(%s); the Triton TMA kernel runs instead",
                                _triton_version(), _GLUON_BROKEN[0])  # fmt: skip
                    return launch(config)
            else:
                _kernel()[(rows, blocks, splits)](
                    *args, table, cache_seqlens if cache_seqlens is not None else qr, idx if sparse else qr,
                    topk_length if topk_length is not None else qr, attn_sink[heads] if attn_sink is not None else qr,
                    o, lse, maxes[0][:, heads] if final else maxes[0][:, :, heads],
                    qr.stride(0), qr.stride(1), cache.stride(0), cache.stride(1),
                    table.stride(0) if block_table is not None else 0,
                    idx.stride(0) if sparse else 0, *o_strides, *l_strides,
                    scale_log2, page, num_blocks, capacity,
                    sq, group, keys if sparse else 0, split_len,
                    DV=D_V, DR=D_QK - D_V, BLOCK_H=block_h, BLOCK_N=block_n, DV_BLOCK=dv_block,
                    SPARSE=sparse, FP8=is_fp8,
                    CAUSAL=bool(causal) and not sparse, TOPK_GIVEN=sparse and topk_length is not None,
                    PAGE_TILE=not sparse and page % block_n == 0, WRITE_MAX=want_max, FINAL=final,
                    HAS_SINK=final and attn_sink is not None, DOT_F32=triton_interpreted(), num_warps=warps,
                    num_stages=stages,
                )  # fmt: skip
        if final and mid_o is not out:
            out.copy_(mid_o)
        return (out, lse_all, final) if final else (mid_o, mid_l, final)

    maxes: list[torch.Tensor] = []  # the launch's maxima (want_max), laid out as its lse, else a stand-in pointer
    variant = ("sparse, FP8" if is_fp8 else "sparse") if sparse else "dense"
    mid_o, mid_l, final = first_fitting(("the MLA decode kernel", dev, q.dtype, variant), _configs(dev, group), launch)
    if final:  # maxes (B, Hq, Sq) as the lse
        return (mid_o, mid_l, maxes[0].transpose(1, 2).reshape(rows, hq)) if want_max else (mid_o, mid_l)
    o, lse = _results(q)
    so, sl = mid_o.stride(), mid_l.stride()  # row b * Sq + s
    # FlashMLA scales out by 1 / (1 + exp(sink - lse)), the sink joining the sum; lse stays without it
    merge_splits(mid_o, mid_l, (sq * so[0], so[0], so[2], so[1]), (sq * sl[0], sl[0], sl[2], sl[1]), o, lse,
                 attn_sink, sink_in_lse=False, lonely_inf=True)  # fmt: skip
    return (o, lse, maxes[0].amax(dim=1)) if want_max else (o, lse)
