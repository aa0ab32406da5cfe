"""Stand-in for MUSA's ``mate`` (FA3 port): its kvcache parameter list up to return_softmax_lse plus
``**kwargs`` (no ``out``, no ``sinks``), computing through accelbridge's reference."""

from accelbridge.ops import reference as _ref

from . import mha_interface  # noqa: F401


def flash_attn_with_kvcache(q, k_cache, v_cache, k=None, v=None, qv=None, rotary_cos=None,
  rotary_sin=None, cache_seqlens=None, cache_batch_idx=None, cache_leftpad=None, page_table=None,
  cu_seqlens_q=None, cu_seqlens_k_new=None, max_seqlen_q=None, rotary_seqlens=None,
  q_descale=None, k_descale=None, v_descale=None, softmax_scale=None, causal=False,
  window_size=(-1, -1), attention_chunk=0, softcap=0.0, rotary_interleaved=True,
  scheduler_metadata=None, num_splits=0, pack_gqa=None, sm_margin=0, return_softmax_lse=False, **kwargs):  # fmt: skip
    o, lse = _ref.flash_attn_with_kvcache(q, k_cache, v_cache, k=k, v=v, qv=qv, rotary_cos=rotary_cos,
                                          rotary_sin=rotary_sin, cache_seqlens=cache_seqlens,
                                          cache_batch_idx=cache_batch_idx, cache_leftpad=cache_leftpad,
                                          page_table=page_table, cu_seqlens_q=cu_seqlens_q,
                                          cu_seqlens_k_new=cu_seqlens_k_new, rotary_seqlens=rotary_seqlens,
                                          q_descale=q_descale, k_descale=k_descale, v_descale=v_descale,
                                          softmax_scale=softmax_scale, causal=causal, window_size=window_size,
                                          attention_chunk=attention_chunk, softcap=softcap,
                                          rotary_interleaved=rotary_interleaved, return_softmax_lse=True)  # fmt: skip
    return (o, lse) if return_softmax_lse else o


def flash_attn_varlen_func(q, k, v, cu_seqlens_q, cu_seqlens_k, max_seqlen_q, max_seqlen_k, seqused_q=None,
  seqused_k=None, softmax_scale=None, causal=False, window_size=(-1, -1), softcap=0.0, return_softmax_lse=False,
  **kwargs):  # fmt: skip
    return _ref.flash_attn_varlen_func(q, k, v, cu_seqlens_q, cu_seqlens_k, seqused_q=seqused_q, seqused_k=seqused_k,
                                       softmax_scale=softmax_scale, causal=causal, window_size=window_size,
                                       softcap=softcap, return_softmax_lse=return_softmax_lse)  # fmt: skip
