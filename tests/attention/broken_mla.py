"""FlashMLA decode providers with sgl-kernel's signature and one realistic sparse-mode bug each."""

from accelbridge.ops import reference as ref


def ignore_sink(q, k_cache, block_table, cache_seqlens, head_dim_v, tile_scheduler_metadata, num_splits=None,
                softmax_scale=None, causal=False, descale_q=None, descale_k=None, is_fp8_kvcache=False, indices=None,
                attn_sink=None, extra_k_cache=None, extra_indices_in_kvcache=None, topk_length=None,
                extra_topk_length=None):  # fmt: skip
    return ref.flash_mla_with_kvcache(q, k_cache, block_table, cache_seqlens, head_dim_v, None, None, softmax_scale,
                                      causal, descale_q, descale_k, is_fp8_kvcache, indices, None, extra_k_cache,
                                      extra_indices_in_kvcache, topk_length, extra_topk_length)  # fmt: skip


def ignore_topk_length(q, k_cache, block_table, cache_seqlens, head_dim_v, tile_scheduler_metadata, num_splits=None,
                       softmax_scale=None, causal=False, descale_q=None, descale_k=None, is_fp8_kvcache=False,
                       indices=None, attn_sink=None, extra_k_cache=None, extra_indices_in_kvcache=None,
                       topk_length=None, extra_topk_length=None):  # fmt: skip
    return ref.flash_mla_with_kvcache(q, k_cache, block_table, cache_seqlens, head_dim_v, None, None, softmax_scale,
                                      causal, descale_q, descale_k, is_fp8_kvcache, indices, attn_sink, extra_k_cache,
                                      extra_indices_in_kvcache, None, None)  # fmt: skip


def wrong_layout(q, k_cache, block_table, cache_seqlens, head_dim_v, tile_scheduler_metadata, num_splits=None,
                 softmax_scale=None, causal=False, descale_q=None, descale_k=None, is_fp8_kvcache=False, indices=None,
                 attn_sink=None, extra_k_cache=None, extra_indices_in_kvcache=None, topk_length=None,
                 extra_topk_length=None):  # fmt: skip
    """Reads the V4 cache as if each token's 584 bytes held its own scales (the V3.2 habit), not the block's tail."""
    import torch

    from accelbridge.ops.fp8_cache import quantize_fp8_cache

    if indices is not None and q.shape[-1] == 512:
        nb, bs = k_cache.shape[0], k_cache.shape[1]
        rows = k_cache.view(torch.uint8).reshape(nb, -1)[:, : bs * 584].reshape(nb, bs, 584)
        scales = torch.exp2(rows[..., 576:583].float() - 127)
        nope = rows[..., :448].contiguous().view(torch.float8_e4m3fn).float().view(nb, bs, 7, 64) * scales[..., None]
        rope = rows[..., 448:576].contiguous().view(torch.bfloat16).float()
        misread = torch.cat([nope.reshape(nb, bs, 448), rope], -1).nan_to_num(0.0).clamp(-1e4, 1e4)
        k_cache = quantize_fp8_cache(misread.to(torch.bfloat16).view(nb, bs, 1, 512), 512)
    return ref.flash_mla_with_kvcache(q, k_cache, block_table, cache_seqlens, head_dim_v, None, None, softmax_scale,
                                      causal, descale_q, descale_k, is_fp8_kvcache, indices, attn_sink, extra_k_cache,
                                      extra_indices_in_kvcache, topk_length, extra_topk_length)  # fmt: skip


def read_unused_pages(q, k_cache, block_table, cache_seqlens, head_dim_v, tile_scheduler_metadata, num_splits=None,
                      softmax_scale=None, causal=False, descale_q=None, descale_k=None, is_fp8_kvcache=False,
                      indices=None, attn_sink=None, extra_k_cache=None, extra_indices_in_kvcache=None,
                      topk_length=None, extra_topk_length=None):  # fmt: skip
    """Dense decode over every block-table column (clamped, so it never faults on the CPU), scores past each
    length masked: the torch provider's first version. What unused slots hold (NaN) reaches out via p @ V."""
    import torch

    b, sq, hq, d = q.shape
    keys = k_cache[block_table.long().clamp(0, k_cache.shape[0] - 1)].flatten(1, 2).float()  # (b, L, hk, d)
    keys = keys.repeat_interleave(hq // keys.shape[2], dim=2)
    scores = torch.einsum("bshd,blhd->bhsl", q.float(), keys) * (softmax_scale or d**-0.5)
    j = torch.arange(keys.shape[1])[None, None, None, :]
    seen = cache_seqlens.long()[:, None, None, None] - (sq - 1 - torch.arange(sq)[None, None, :, None]) * bool(causal)
    scores = scores.masked_fill(j >= seen, float("-inf"))
    lse = torch.logsumexp(scores, dim=-1)
    out = torch.einsum("bhsl,blhd->bshd", torch.softmax(scores, dim=-1).nan_to_num(0.0), keys[..., :head_dim_v])
    return out.to(q.dtype), torch.where(torch.isneginf(lse), float("inf"), lse)


def sink_inf_as_none(q, k_cache, block_table, cache_seqlens, head_dim_v, tile_scheduler_metadata, num_splits=None,
                     softmax_scale=None, causal=False, descale_q=None, descale_k=None, is_fp8_kvcache=False,
                     indices=None, attn_sink=None, extra_k_cache=None, extra_indices_in_kvcache=None,
                     topk_length=None, extra_topk_length=None):  # fmt: skip
    """Honours finite sinks but takes a +inf one for "no sink" (its head's output must be 0, not unscaled)."""
    import torch

    if attn_sink is not None:
        attn_sink = torch.where(torch.isposinf(attn_sink), float("-inf"), attn_sink)
    return ref.flash_mla_with_kvcache(q, k_cache, block_table, cache_seqlens, head_dim_v, None, None, softmax_scale,
                                      causal, descale_q, descale_k, is_fp8_kvcache, indices, attn_sink, extra_k_cache,
                                      extra_indices_in_kvcache, topk_length, extra_topk_length)  # fmt: skip
