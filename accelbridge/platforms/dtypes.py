"""Short dtype names (bf16, fp8_e4m3, ...) used in catalogs, reports and rules."""

from __future__ import annotations

from typing import TYPE_CHECKING

if TYPE_CHECKING:
    import torch

# short name -> torch attribute; fp8_e4m3 is the platform's e4m3 flavour (fn or fnuz)
DTYPE_ATTRS: dict[str, str] = {
    "fp32": "float32",
    "fp16": "float16",
    "bf16": "bfloat16",
    "fp8_e4m3": "float8_e4m3fn",
    "fp8_e5m2": "float8_e5m2",
}
DTYPE_NAMES: tuple[str, ...] = tuple(DTYPE_ATTRS)


def dtype_name(dtype: torch.dtype) -> str:
    """bf16 for torch.bfloat16; fp8_e4m3 for both e4m3 flavours."""
    attr = str(dtype).removeprefix("torch.")
    if attr in ("float8_e4m3fn", "float8_e4m3fnuz"):
        return "fp8_e4m3"
    if attr in ("float8_e5m2", "float8_e5m2fnuz"):
        return "fp8_e5m2"
    for name, a in DTYPE_ATTRS.items():
        if a == attr:
            return name
    return attr


def torch_dtype(attr: str) -> torch.dtype:
    import torch

    return getattr(torch, attr)
