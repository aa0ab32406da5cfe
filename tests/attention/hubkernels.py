"""Local kernels in the Hugging Face hub layout, built by tests and loaded by the real `kernels`."""

import json
import textwrap
from pathlib import Path

FLASH_ATTN3 = '''
"""kernels-community/flash-attn3 signatures: no out, no sinks, no page_table on varlen,
return_attn_probs for the LSE, kvcache returns 4 values with the LSE."""
from accelbridge.ops import reference as ref


def flash_attn_varlen_func(q, k, v, cu_seqlens_q, cu_seqlens_k, max_seqlen_q, max_seqlen_k,
  seqused_q=None, seqused_k=None, softmax_scale=None, causal=False, qv=None, q_descale=None,
  k_descale=None, v_descale=None, window_size=(-1, -1), attention_chunk=0, softcap=0.0,
  num_splits=1, pack_gqa=None, deterministic=False, sm_margin=0, return_attn_probs=False):
    o, lse = ref.flash_attn_varlen_func(q, k, v, cu_seqlens_q, cu_seqlens_k, seqused_q=seqused_q,
        seqused_k=seqused_k, softmax_scale=softmax_scale, causal=causal, window_size=window_size,
        softcap=softcap, return_softmax_lse=True)
    return (o, lse) if return_attn_probs else o


def flash_attn_with_kvcache(q, k_cache, v_cache, k=None, v=None, qv=None, rotary_cos=None,
  rotary_sin=None, cache_seqlens=None, cache_batch_idx=None, cache_leftpad=None, page_table=None,
  cu_seqlens_q=None, cu_seqlens_k_new=None, max_seqlen_q=None, rotary_seqlens=None,
  q_descale=None, k_descale=None, v_descale=None, softmax_scale=None, causal=False,
  window_size=(-1, -1), attention_chunk=0, softcap=0.0, rotary_interleaved=True,
  scheduler_metadata=None, num_splits=0, pack_gqa=None, sm_margin=0, return_softmax_lse=False):
    assert attention_chunk == 0, f"attention_chunk must be an int here, got {attention_chunk!r}"
    o, lse = ref.flash_attn_with_kvcache(q, k_cache, v_cache, k=k, v=v, cache_seqlens=cache_seqlens,
        cache_batch_idx=cache_batch_idx, page_table=page_table, softmax_scale=softmax_scale,
        causal=causal, window_size=window_size, softcap=softcap, return_softmax_lse=True)
    return (o, lse, None, None) if return_softmax_lse else o


def get_scheduler_metadata(batch_size, max_seqlen_q, max_seqlen_k, num_heads_q, num_heads_kv,
  headdim, cache_seqlens, qkv_dtype=None, headdim_v=None, cu_seqlens_q=None,
  cu_seqlens_k_new=None, cache_leftpad=None, page_size=None, max_seqlen_k_new=0, causal=False,
  window_size=(-1, -1), attention_chunk=0, has_softcap=False, num_splits=0, pack_gqa=None,
  sm_margin=0):
    import torch
    return torch.tensor([batch_size, num_heads_q, num_heads_kv, num_splits], dtype=torch.int32)
'''


def this_backend() -> str:
    """The build backend `kernels` looks for with the installed torch (cuda, rocm or cpu)."""
    import torch

    return "cuda" if torch.version.cuda else ("rocm" if torch.version.hip else "cpu")


def other_backend() -> str:
    """A backend this machine's torch cannot load: for a 'no build variant' test on any machine."""
    return "rocm" if this_backend() == "cuda" else "cuda"


def build_local_kernel(
    root: Path, name: str = "flash-attn3", source: str = FLASH_ATTN3, backend: str | None = None
) -> Path:
    """root/name/build/torch-BACKEND/{metadata.json,__init__.py} (a noarch variant); returns root/name.

    ``backend`` defaults to this machine's (cpu here, cuda on the GPU machine): the test is hermetic.
    """
    backend = backend or this_backend()
    variant = root / name / "build" / f"torch-{backend}"
    variant.mkdir(parents=True)
    meta = {"id": f"_{name.replace('-', '_')}_{backend}_test", "name": name, "version": 1, "license": "Apache-2.0",
            "python-depends": [], "backend": {"type": backend}}  # fmt: skip
    (variant / "metadata.json").write_text(json.dumps(meta))
    (variant / "__init__.py").write_text(textwrap.dedent(source))
    return root / name
