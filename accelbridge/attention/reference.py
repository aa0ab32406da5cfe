"""The pure-torch reference provider (``source: {builtin: reference}``): the ops' reference functions."""

from accelbridge.ops.reference import (  # noqa: F401
    attend,
    flash_attn_varlen_func,
    flash_attn_with_kvcache,
    flash_mla_sparse_fwd,
    flash_mla_with_kvcache,
    gather_fp8_tokens,
    get_mla_metadata,
    rotate,
)
