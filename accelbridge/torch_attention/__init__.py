"""The built-in ``torch`` provider: every op on any torch device, Triton kernels where the device runs them.

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

# what it serves is catalog data (kernels_catalog/catalogs/builtin.yaml)
__all__ = ["flash_attn_varlen_func", "flash_attn_with_kvcache", "flash_mla_sparse_fwd", "flash_mla_with_kvcache",
           "get_mla_metadata"]  # fmt: skip
