"""sglang-kernel 0.4.10 sgl_kernel.flash_mla signatures and asserts (read from the wheel), computing through the
reference.

What changed from 0.4.5: ``flash_mla_with_kvcache`` takes ``kv_format`` (sparse decode only) and reads a
528-byte cache as V3.2-no-RoPE under tensor metadata, V4.1 under a FlashMLASchedMeta; a FlashMLASchedMeta
records the first call's configuration and asserts later calls match it; tensor metadata takes no sink, no
topk_length and no extra cache.
"""

import dataclasses
from typing import Optional

import torch
from _convert import ref

KV_FORMATS = {"V32": (576, 656), "V32_NO_ROPE": (512, 528), "V4": (512, 584), "V41": (512, 528)}  # (d_qk, bytes)
_KERNEL_READS = {656: "V32", 584: "V4", 528: "V41"}  # the sparse kernel's own reading of an unnamed cache
CALLS = []


@dataclasses.dataclass
class FlashMLASchedMeta:
    @dataclasses.dataclass
    class Config:
        b: int
        s_q: int
        h_q: int
        page_block_size: int
        h_k: int
        causal: bool
        is_fp8_kvcache: bool
        topk: Optional[int]
        extra_page_block_size: Optional[int]
        extra_topk: Optional[int]

    have_initialized: bool = False
    config: Optional[Config] = None
    tile_scheduler_metadata: Optional[torch.Tensor] = None
    num_splits: Optional[torch.Tensor] = None


def get_mla_metadata(cache_seqlens=None, num_q_tokens_per_head_k=None, num_heads_k=None,
  num_heads_q=None, is_fp8_kvcache=False, topk=None):  # fmt: skip
    if cache_seqlens is None:
        return FlashMLASchedMeta(), None
    assert num_q_tokens_per_head_k is not None and num_heads_k is not None
    return torch.zeros(4, 8, dtype=torch.int32), torch.zeros(cache_seqlens.numel() + 1, dtype=torch.int32)


def _sparse(q, k_cache, head_dim_v, softmax_scale, indices, attn_sink, extra_k_cache, extra_indices_in_kvcache,
            topk_length, extra_topk_length, kv_format):  # fmt: skip
    assert kv_format is None or kv_format in KV_FORMATS, f"unknown kv_format {kv_format!r}"
    layout = kv_format or _KERNEL_READS[k_cache.shape[-1]]
    assert KV_FORMATS[layout] == (q.shape[-1], k_cache.shape[-1]), f"a {layout} cache with {k_cache.shape}"
    assert extra_k_cache is None or extra_k_cache.shape[-1] == k_cache.shape[-1], "one format for both caches"
    CALLS.append(("sparse", layout))
    return ref.flash_mla_with_kvcache(q, k_cache, None, None, head_dim_v, softmax_scale=softmax_scale,
                                      is_fp8_kvcache=True, indices=indices, attn_sink=attn_sink,
                                      extra_k_cache=extra_k_cache, extra_indices_in_kvcache=extra_indices_in_kvcache,
                                      topk_length=topk_length, extra_topk_length=extra_topk_length,
                                      kv_format=layout)  # fmt: skip


def flash_mla_with_kvcache(q, k_cache, block_table, cache_seqlens, head_dim_v, tile_scheduler_metadata,
  num_splits=None, softmax_scale=None, causal=False, descale_q=None, descale_k=None,
  is_fp8_kvcache=False, indices=None, attn_sink=None, extra_k_cache=None,
  extra_indices_in_kvcache=None, topk_length=None, extra_topk_length=None, kv_format=None):  # fmt: skip
    if softmax_scale is None:
        softmax_scale = q.shape[-1] ** (-0.5)
    sparse_args = (attn_sink, extra_k_cache, extra_indices_in_kvcache, topk_length, extra_topk_length)
    if isinstance(tile_scheduler_metadata, FlashMLASchedMeta):
        meta = tile_scheduler_metadata
        assert num_splits is None, "num_splits must be None with FlashMLASchedMeta"
        config = FlashMLASchedMeta.Config(
            q.shape[0], q.shape[1], q.shape[2], k_cache.shape[1], k_cache.shape[2], causal, is_fp8_kvcache,
            None if indices is None else indices.shape[-1], None if extra_k_cache is None else extra_k_cache.shape[1],
            None if extra_indices_in_kvcache is None else extra_indices_in_kvcache.shape[-1])  # fmt: skip
        if not meta.have_initialized:
            meta.have_initialized, meta.config = True, config
        assert meta.config == config, "Input arguments are inconsistent with FlashMLASchedMeta."
        if indices is not None:
            assert not causal and is_fp8_kvcache
            return _sparse(q, k_cache, head_dim_v, softmax_scale, indices, *sparse_args, kv_format)
        assert kv_format is None, "kv_format only applies to sparse attention"
        assert block_table is not None and cache_seqlens is not None and all(a is None for a in sparse_args)
        CALLS.append(("dense", None))
        return ref.flash_mla_with_kvcache(q, k_cache, block_table, cache_seqlens, head_dim_v,
                                          softmax_scale=softmax_scale, causal=causal)  # fmt: skip
    assert tile_scheduler_metadata is not None and num_splits is not None
    assert block_table is not None and cache_seqlens is not None and all(a is None for a in sparse_args)
    assert (descale_q is None) == (descale_k is None), "descale_q and descale_k should be both None or both not None"
    if indices is not None:
        assert not causal and is_fp8_kvcache
        if kv_format is None and q.shape[-1] == 512 and k_cache.shape[-1] == 528:
            kv_format = "V32_NO_ROPE"  # the tensor-metadata API predates V4.1
        return _sparse(q, k_cache, head_dim_v, softmax_scale, indices, *sparse_args, kv_format)
    assert kv_format is None, "kv_format only applies to sparse attention"
    CALLS.append(("dense", None))
    return ref.flash_mla_with_kvcache(q, k_cache, block_table, cache_seqlens, head_dim_v, softmax_scale=softmax_scale,
                                      causal=causal, descale_q=descale_q, descale_k=descale_k,
                                      is_fp8_kvcache=is_fp8_kvcache)  # fmt: skip


def flash_mla_sparse_fwd(q, kv, indices, sm_scale, d_v=512, attn_sink=None, topk_length=None):
    """Returns the kernel's list [out, max_logits, lse], as 0.4.5 does (the same op)."""
    return list(ref.flash_mla_sparse_fwd(q, kv, indices, sm_scale, d_v=d_v, attn_sink=attn_sink,
                                         topk_length=topk_length))  # fmt: skip
