"""V3.2 FP8 cache tokens for the torch path: rows gathered as 8-byte words, unused ones zeroed, then dequantised.

The reference gathers bytes by (block, offset) and concatenates float32 parts: clear, and on a CPU
several passes over the keys. Here a token's 656 bytes are 82 int64 words, gathered with one
``index_select``; the rows of invalid indices are zeroed there (bytes 0 decode to 0.0, a zero scale,
a zero rope), so no value of a token the kernel would not read reaches the arithmetic; and the bf16
rounding of ``e4m3 * scale`` is written straight into the float32 keys. The values equal
``reference.gather_fp8_tokens``'s bit for bit (tests/torch_attention/test_fp8_cache.py).
"""

from __future__ import annotations

import torch

from accelbridge.ops.reference import V32_ROPE_AT, V32_SCALES_AT, V32_TOKEN_BYTES
from accelbridge.torch_attention import fp8

_WORDS = V32_TOKEN_BYTES // 8


def token_rows(cache: torch.Tensor, flat: torch.Tensor, unused: torch.Tensor) -> torch.Tensor | None:
    """Bytes (n, 656) of tokens ``flat`` (clamped ids) of a V3.2 cache (num_blocks, block_size, 1, 656),
    rows where ``unused`` all zeros; None where the cache's layout is not one of 8-byte aligned tokens."""
    num_blocks, block_size = cache.shape[0], cache.shape[1]
    raw = cache.view(torch.uint8)
    if raw.stride(1) != V32_TOKEN_BYTES or raw.stride(0) % 8 or raw.storage_offset() % 8 or raw.stride(-1) != 1:
        return None
    words = raw.view(torch.int64)  # the token dim's stride, 82 words, and the block's are whole words
    if words.stride(0) == block_size * _WORDS:
        rows = words.reshape(num_blocks * block_size, _WORDS).index_select(0, flat)
    else:  # blocks padded apart: gather by (block, offset)
        rows = words[:, :, 0][flat // block_size, flat % block_size]
    return rows.masked_fill_(unused.reshape(-1, 1), 0).view(torch.uint8)


def v32_keys(rows: torch.Tensor) -> torch.Tensor:
    """Token bytes (n, 656) -> keys (n, 576) float32: bf16(e4m3 * its tile's scale) and the bf16 rope."""
    n = rows.shape[0]
    keys = torch.empty(n, 576, dtype=torch.float32, device=rows.device)
    scales = rows[:, V32_SCALES_AT:V32_ROPE_AT].contiguous().view(torch.float32)  # (n, 4)
    nope = torch.empty(n, 4, 128, dtype=torch.bfloat16, device=rows.device)
    torch.mul(fp8.e4m3(rows[:, :V32_SCALES_AT]).view(n, 4, 128), scales[:, :, None], out=nope)  # rounded to bf16
    keys[:, :V32_SCALES_AT].copy_(nope.view(n, V32_SCALES_AT))
    keys[:, V32_SCALES_AT:].copy_(rows[:, V32_ROPE_AT:].view(torch.bfloat16))
    return keys
