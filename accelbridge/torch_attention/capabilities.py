"""What this torch build can do on a device: read once per device, never by running a kernel.

The torch provider picks its path per call from these facts (torch's varlen API, SDPA's GQA flag,
Triton kernels) and falls back to batched tensor ops where a fact is missing. Reading a
device's capability is a driver query, not a sync.
"""

from __future__ import annotations

import functools
import importlib.util
import inspect
import os
from dataclasses import dataclass, field

import torch
import torch.nn.functional as F


@dataclass(frozen=True)
class Capabilities:
    """One device type/index's fast paths, each with the reason it is missing (for explain/docs)."""

    device: str
    varlen: frozenset[str] = frozenset()  # torch.nn.attention.varlen.varlen_attn's optional features
    sdpa_gqa: bool = False  # scaled_dot_product_attention(enable_gqa=...)
    triton: bool = False  # the Triton kernels (prefill, paged decode, MLA decode) can run here
    tma: bool = False  # Triton's tensor descriptors (TMA bulk loads: NVIDIA sm90+, or the interpreter)
    gluon_sm90: bool = False  # Gluon's Hopper ops (wgmma, TMA, mbarriers) on an sm90 GPU: no interpreter
    missing: dict[str, str] = field(default_factory=dict)

    @property
    def has_varlen(self) -> bool:
        return "varlen_attn" in self.varlen

    def describe(self) -> list[str]:
        """One line per fast path: present, or why not."""
        lines = []
        if self.has_varlen:
            extras = sorted(self.varlen - {"varlen_attn"})
            lines.append(f"torch varlen_attn ({', '.join(extras) or 'no GQA, window or paging'})")
        lines.append("SDPA with enable_gqa" if self.sdpa_gqa else "SDPA (GQA folded into the query rows)")
        if self.triton:
            how = " (Triton's interpreter: TRITON_INTERPRET=1)" if self.device.startswith("cpu") else ""
            lines.append("Triton kernels: varlen/paged prefill, paged decode, MLA decode" + how)
        if self.tma:
            lines.append("Triton tensor descriptors (TMA): dense MLA decode's key tiles")
        if self.gluon_sm90:
            lines.append("Gluon sm90 kernel: dense MLA decode")
        return lines + [f"no {what}: {why}" for what, why in self.missing.items()]


_VARLEN_FEATURES = ("enable_gqa", "window_size", "seqused_k", "block_table", "return_aux")


def _varlen_features(device: torch.device) -> tuple[frozenset[str], str | None]:
    if device.type != "cuda":  # before the import: torch.nn.attention.varlen imports torch._dynamo (~1-2 s)
        return frozenset(), f"varlen_attn has no {device.type} kernel (CUDA/ROCm only)"
    try:
        from torch.nn.attention import varlen
    except ImportError:
        return frozenset(), f"torch {torch.__version__} has no torch.nn.attention.varlen"
    fn = getattr(varlen, "varlen_attn", None)
    if fn is None:
        return frozenset(), f"torch {torch.__version__} has no varlen_attn"
    if not torch.backends.cuda.is_flash_attention_available():
        return frozenset(), "this torch build has no flash attention kernels"
    major, _ = torch.cuda.get_device_capability(device)
    if torch.version.hip is None and major < 8:
        return frozenset(), f"varlen_attn's flash kernels need sm80 or newer (this GPU: sm{major}x)"
    params = inspect.signature(fn).parameters
    return frozenset({"varlen_attn", *(p for p in _VARLEN_FEATURES if p in params)}), None


def triton_interpreted() -> bool:
    """TRITON_INTERPRET=1: Triton's interpreter runs the kernels on CPU tensors (slowly: for tests and debugging)."""
    return os.environ.get("TRITON_INTERPRET", "0") not in ("", "0")


def _triton_ready(device: torch.device) -> str | None:
    if device.type != "cuda" and not (device.type == "cpu" and triton_interpreted()):
        return f"Triton kernels run on CUDA/ROCm devices, not {device.type} (unless TRITON_INTERPRET=1)"
    if importlib.util.find_spec("triton") is None:
        return "triton is not installed"
    return None


def _tma_ready(device: torch.device) -> str | None:
    """Why Triton's tensor descriptors cannot serve here (None: they can). Asked only where Triton runs."""
    if device.type == "cuda" and (torch.version.hip is not None or torch.cuda.get_device_capability(device)[0] < 9):
        return "TMA loads need an NVIDIA sm90 or newer GPU"
    if importlib.util.find_spec("triton.tools.tensor_descriptor") is None:
        return "this triton has no triton.tools.tensor_descriptor"
    return None


def _gluon_sm90_ready(device: torch.device) -> str | None:
    """Why the Gluon sm90 kernel cannot serve here (None: it can). Asked only where TMA serves."""
    if device.type != "cuda" or torch.cuda.get_device_capability(device)[0] != 9:
        return "Gluon's wgmma kernel runs on NVIDIA sm90 GPUs only (not the interpreter, not sm100's tcgen05)"
    if importlib.util.find_spec("triton.experimental.gluon") is None:
        return "this triton has no triton.experimental.gluon"
    return None


@functools.cache
def _for(device_type: str, index: int | None) -> Capabilities:
    device = torch.device(device_type, index) if index is not None else torch.device(device_type)
    missing = {}
    varlen, why = _varlen_features(device)
    if why:
        missing["varlen_attn"] = why
    triton_why = _triton_ready(device)
    if triton_why:
        missing["Triton kernels"] = triton_why
    tma_why = triton_why or _tma_ready(device)
    if tma_why and not triton_why:
        missing["Triton tensor descriptors"] = tma_why
    gluon_why = tma_why or _gluon_sm90_ready(device)
    if gluon_why and not tma_why:
        missing["Gluon sm90 kernel"] = gluon_why
    gqa = "enable_gqa" in str(F.scaled_dot_product_attention.__doc__ or "")
    return Capabilities(str(device), varlen, gqa, triton_why is None, tma_why is None, gluon_why is None, missing)


def of(device: torch.device) -> Capabilities:
    """The capabilities of ``device`` (cached per device)."""
    return _for(device.type, device.index)


@functools.cache
@functools.cache
def processors(device: torch.device) -> int:
    """Streaming multiprocessors (compute units) of ``device``: how many programs make a wave (8 off a GPU)."""
    return torch.cuda.get_device_properties(device).multi_processor_count if device.type == "cuda" else 8
