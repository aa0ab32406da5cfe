"""FlashMLA's FP8/FP4 sparse cache layouts, written: a bf16 latent cache quantised as FlashMLA's tests do.

The layouts' sizes are the reference's (``ops.reference.LAYOUT_BYTES``, ``LAYOUT_D_QK``), which reads
them back; conformance cases, the benches and the tests write caches with ``quantize_fp8_cache``.
"""

from __future__ import annotations

import math

import torch

from accelbridge.ops import reference


def _power_of_two_scales(x: torch.Tensor) -> torch.Tensor:
    """Per-tile scales as FlashMLA's quantiser picks them: the power of two >= max|x| / 448 (>= 1e-4)."""
    return torch.exp2(torch.ceil(torch.log2(torch.clamp_min(x.abs().amax(-1).float() / 448.0, 1e-4))))


def _e2m1_codes(x: torch.Tensor) -> torch.Tensor:
    """float32 -> the nearest FP4 e2m1 codes (uint8), ties to the even code, saturating at +-6 (NaN: code 0)."""
    magnitudes = torch.tensor(reference.E2M1_VALUES, dtype=torch.float32, device=x.device)
    a = torch.nan_to_num(x.abs(), nan=0.0).clamp_max(6.0)
    distance = (a[..., None] - magnitudes).abs()
    nearest = distance == distance.amin(-1, keepdim=True)
    preference = nearest * (2 - torch.arange(8, device=x.device) % 2)  # an even code wins a tie
    return (preference.argmax(-1) | (torch.signbit(x).long() << 3)).to(torch.uint8)


def _blocks(parts: list[torch.Tensor], align: int) -> torch.Tensor:
    """Each block's byte rows one after another (parts (nb, rows, width) uint8), padded to ``align`` bytes;
    returned as the unpadded (nb, block bytes) view of the padded storage, as FlashMLA's quantiser does."""
    nb = parts[0].shape[0]
    block = torch.cat([p.reshape(nb, -1) for p in parts], dim=-1)
    storage = torch.zeros(nb, math.ceil(block.shape[1] / align) * align, dtype=torch.uint8, device=block.device)
    storage[:, : block.shape[1]] = block
    return storage[:, : block.shape[1]]


def quantize_fp8_cache(k: torch.Tensor, layout: str | int) -> torch.Tensor:
    """A bf16 latent cache (num_blocks, block_size, 1, d_qk) -> FlashMLA's sparse layout ``layout``.

    ``layout``: one of ``reference.LAYOUT_BYTES`` (or a d_qk: 576 for V3.2, 512 for V4). Scales as FlashMLA's
    tests pick them: FP8 tiles by the power of two >= max|x| / 448; FP4 tiles by max|x| / 6 rounded to e4m3
    (within [2**-9, 448]), the codes rounded to nearest, a NaN in a tile making its scale NaN.
    """
    layout = {576: "V32", 512: "V4"}.get(layout, layout)  # type: ignore[call-overload]
    nb, bs = k.shape[0], k.shape[1]
    d_qk = reference.LAYOUT_D_QK[layout]
    k = k.reshape(nb, bs, d_qk)
    if layout == "V41_FP4":
        tiles = k.float().reshape(nb, bs, 32, 16)
        amax = torch.nan_to_num(tiles.abs(), nan=math.inf).amax(-1)
        scales = torch.clamp(amax / 6.0, 2.0**-9, 448.0).to(torch.float8_e4m3fn)
        scales = torch.where(amax.isinf(), torch.full_like(scales, math.nan), scales)
        codes = _e2m1_codes(tiles / scales.float()[..., None]).reshape(nb, bs, 256, 2)
        packed = codes[..., 0] | (codes[..., 1] << 4)
        storage = _blocks([packed, scales.view(torch.uint8)], 512)
        return storage.view(torch.float8_e4m3fn).view(nb, bs, 1, -1)
    nope_dim, tile = {"V32": (512, 128), "V32_NO_ROPE": (512, 128), "V4": (448, 64), "V41": (512, 32)}[layout]
    tiles = k[..., :nope_dim].float().reshape(nb, bs, nope_dim // tile, tile)
    scales = _power_of_two_scales(tiles)  # (nb, bs, tiles)
    nope = (tiles / scales[..., None]).reshape(nb, bs, nope_dim).to(torch.float8_e4m3fn).view(torch.uint8)
    rope = k[..., nope_dim:].to(torch.bfloat16).contiguous().view(torch.uint8)  # (nb, bs, 2 * rope dims)
    if layout in ("V32", "V32_NO_ROPE"):
        rows = torch.cat([nope, scales.contiguous().view(torch.uint8), rope], dim=-1)  # 656 / 528 bytes
        return rows.view(torch.float8_e4m3fn).reshape(nb, bs, 1, -1)
    e8m0 = (torch.log2(scales) + 127).to(torch.uint8)
    if layout == "V41":
        return _blocks([nope, e8m0], 512).view(torch.float8_e4m3fn).view(nb, bs, 1, -1)
    scale_rows = torch.cat([e8m0, torch.zeros(nb, bs, 1, dtype=torch.uint8, device=k.device)], dim=-1)  # 8 bytes
    storage = _blocks([torch.cat([nope, rope], dim=-1), scale_rows], 576)
    return storage.view(torch.float8_e4m3fn).view(nb, bs, 1, -1)
