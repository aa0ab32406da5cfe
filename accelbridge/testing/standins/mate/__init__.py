"""Stand-in for MUSA's ``mate`` (FA3 port): its kvcache parameter list up to return_softmax_lse plus
``**kwargs`` (no ``out``, no ``sinks``), computing through accelbridge's reference.

``SWALLOWED`` records what reached ``**kwargs`` on each call: the real package would silently drop it.
"""

from accelbridge.testing.standins import through_reference

from . import mha_interface  # noqa: F401

SWALLOWED = []


def flash_attn_with_kvcache(q, k_cache, v_cache, k=None, v=None, qv=None, rotary_cos=None,
  rotary_sin=None, cache_seqlens=None, cache_batch_idx=None, cache_leftpad=None, page_table=None,
  cu_seqlens_q=None, cu_seqlens_k_new=None, max_seqlen_q=None, rotary_seqlens=None,
  q_descale=None, k_descale=None, v_descale=None, softmax_scale=None, causal=False,
  window_size=(-1, -1), attention_chunk=0, softcap=0.0, rotary_interleaved=True,
  scheduler_metadata=None, num_splits=0, pack_gqa=None, sm_margin=0, return_softmax_lse=False, **kwargs):  # fmt: skip
    SWALLOWED.append(sorted(kwargs))
    o, lse = through_reference("flash_attn_with_kvcache", locals(), return_softmax_lse=True)
    return (o, lse) if return_softmax_lse else o


def flash_attn_varlen_func(q, k, v, cu_seqlens_q, cu_seqlens_k, max_seqlen_q, max_seqlen_k, seqused_q=None,
  seqused_k=None, softmax_scale=None, causal=False, window_size=(-1, -1), softcap=0.0, return_softmax_lse=False,
  **kwargs):  # fmt: skip
    SWALLOWED.append(sorted(kwargs))
    return through_reference("flash_attn_varlen_func", locals())
