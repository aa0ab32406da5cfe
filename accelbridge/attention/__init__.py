"""The attention facade: FA3 / FA4 / FlashMLA with the engine's signatures, on any platform.

Importing this package loads no provider; resolution happens on the first call of each op.
``check_ranks`` (many ranks, one answer) loads on first use, torch.distributed with its call.
"""

import gc as _gc
from typing import Any

# The declarations and generated functions below allocate tens of thousands of small objects beside torch's
# million: left on, the collector runs two full passes over all of them during this import (~70 ms on a small
# VM). Paused here, the objects are collected whenever the program next collects, at no extra cost.
_collecting = _gc.isenabled()
_gc.disable()
try:
    from accelbridge.attention import checks
    from accelbridge.attention.checks import set_level as set_checks
    from accelbridge.attention.choices import ReferenceFallbackWarning, set_strict
    from accelbridge.attention.errors import (
        InvalidArgumentError,
        ProviderContractError,
        ResolutionError,
        UnsupportedFeatureError,
    )
    from accelbridge.attention.facade import (
        chain,
        explain,
        flash_attn_varlen_func,
        flash_attn_with_kvcache,
        flash_mla_sparse_fwd,
        flash_mla_with_kvcache,
        function,
        get_mla_metadata,
        get_scheduler_metadata,
        reset,
        resolve,
    )
    from accelbridge.attention.providers import ProviderLoadWarning
    from accelbridge.attention.resolver import Resolution
finally:
    if _collecting:
        _gc.enable()

_LAZY = {"check_ranks": "accelbridge.attention.ranks", "RanksDisagreeError": "accelbridge.attention.ranks"}


def __getattr__(name: str) -> Any:
    if name in _LAZY:
        import importlib

        return getattr(importlib.import_module(_LAZY[name]), name)
    raise AttributeError(f"module 'accelbridge.attention' has no attribute {name!r}")


__all__ = [
    "InvalidArgumentError",
    "ProviderContractError",
    "ProviderLoadWarning",
    "RanksDisagreeError",
    "ReferenceFallbackWarning",
    "Resolution",
    "ResolutionError",
    "UnsupportedFeatureError",
    "chain",
    "check_ranks",
    "checks",
    "explain",
    "flash_attn_varlen_func",
    "flash_attn_with_kvcache",
    "flash_mla_sparse_fwd",
    "flash_mla_with_kvcache",
    "function",
    "get_mla_metadata",
    "get_scheduler_metadata",
    "reset",
    "resolve",
    "set_checks",
    "set_strict",
]
