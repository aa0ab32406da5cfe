"""Hand the catalog's FA kernel to torch's flash-attention registry, so plain SDPA / varlen_attn use it.

torch (2.13) registers two implementations by name: "FA4" imports ``flash_attn.cute.interface``
(the flash-attn-4 package) and "FA3" wants the upstream build that defines
``torch.ops.flash_attn_3``. A provider is handed over only when it is one of those builds:
sgl-kernel's FA3 (``torch.ops.sgl_kernel``) and the hub's namespaced FA3 builds cannot be.
"""

from __future__ import annotations

import torch

from accelbridge import platforms
from accelbridge.attention.errors import UnsupportedFeatureError
from accelbridge.attention.introspect import selected

# catalog provider -> torch registry name (the builds torch's registry knows how to import)
TORCH_IMPLS = {"flash-attn-4": "FA4"}


def activate() -> str:
    """Activate the current platform's FA4/FA3 selection in torch's registry; its registry name.

    Raises UnsupportedFeatureError naming why (no registry in this torch, or a provider torch
    cannot take) instead of activating something else.
    """
    attn = torch.nn.attention
    if not hasattr(attn, "activate_flash_attention_impl"):
        raise UnsupportedFeatureError("fa4.varlen", None, {"torch": [
            f"torch {torch.__version__} has no flash-attention registry (torch.nn.attention."
            "activate_flash_attention_impl arrived in torch 2.13)"]}, [])  # fmt: skip
    reasons = {}
    for op in ("fa4.varlen", "fa3.varlen"):
        provider = selected(op)
        impl = TORCH_IMPLS.get(provider or "")
        if impl is None:
            reasons[op] = [f"{op} is served by {provider}, which torch's registry cannot take "
                                       f"(it takes {', '.join(sorted(TORCH_IMPLS))})"]  # fmt: skip
            continue
        if impl not in attn.list_flash_attention_impls():
            reasons[op] = [f"this torch's registry lists {attn.list_flash_attention_impls()}, not {impl}"]
            continue
        attn.activate_flash_attention_impl(impl)
        failure = _smoke(torch.device(platforms.current().device_type))
        if failure is None:
            return impl
        attn.restore_flash_attention_impl()
        reasons[op] = [f"torch {torch.__version__} activated {impl} ({provider}), but SDPA then failed: {failure}; "
                       "restored torch's own kernels"]  # fmt: skip
    raise UnsupportedFeatureError("fa4.varlen", None, reasons, [])


def _smoke(device: torch.device) -> str | None:
    """One small causal SDPA call through the activated kernel: its error, or None. A one-time setup cost."""
    q = torch.randn(1, 2, 128, 64, device=device, dtype=torch.bfloat16)
    try:
        from torch.nn.attention import SDPBackend, sdpa_kernel

        with sdpa_kernel([SDPBackend.FLASH_ATTENTION]):
            torch.nn.functional.scaled_dot_product_attention(q, q, q, is_causal=True)
    except Exception as e:  # the registry's glue and the kernel's interface disagree: say so, keep torch's own
        return f"{type(e).__name__}: {e}"
    return None
