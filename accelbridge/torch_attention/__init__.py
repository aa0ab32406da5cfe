"""The built-in ``torch`` provider: every op in plain torch, vectorised over the batch.

It sits after the vendor kernels and before the reference in every platform's catalog: the
fast answer before a vendor kernel exists, or for a call the kernel lacks. Each call takes the
best path this torch build offers on q's device (``capabilities``): Triton kernels (prefill,
paged decode, MLA decode) reading caches in place, torch's varlen API, SDPA's fused kernels, else
batched float32 tensor ops. Functions carry the canonical names and parameters; a parameter left out (FA4's
``score_mod``) routes calls that use it to the next provider.
"""

from accelbridge.torch_attention.kvcache import flash_attn_with_kvcache
from accelbridge.torch_attention.mla import flash_mla_sparse_fwd, flash_mla_with_kvcache, get_mla_metadata
from accelbridge.torch_attention.varlen import flash_attn_varlen_func

# op -> function: what the catalogs' implicit `torch` provider serves
SERVES = {
    "fa3.varlen": "flash_attn_varlen_func",
    "fa3.kvcache": "flash_attn_with_kvcache",
    "fa4.varlen": "flash_attn_varlen_func",
    "fa4.kvcache": "flash_attn_with_kvcache",
    "flashmla.metadata": "get_mla_metadata",
    "flashmla.kvcache": "flash_mla_with_kvcache",
    "flashmla.sparse_prefill": "flash_mla_sparse_fwd",
}

__all__ = ["SERVES", "flash_attn_varlen_func", "flash_attn_with_kvcache", "flash_mla_sparse_fwd",
           "flash_mla_with_kvcache", "get_mla_metadata"]  # fmt: skip
