"""The provider's V3.2 FP8 token gather and dequantisation give the reference's keys bit for bit; unused rows zero."""

import pytest
import torch

from accelbridge.ops.reference import V32_ROPE_AT, V32_SCALES_AT, V32_TOKEN_BYTES, gather_fp8_tokens
from accelbridge.torch_attention import fp8_cache

BLOCKS, BLOCK_SIZE = 3, 8


def _bytes(gen: torch.Generator, pad: int = 0) -> torch.Tensor:
    """(blocks, block_size * 656 + pad) random token bytes (NaN e4m3 bytes among them), scales not powers of two."""
    raw = torch.randint(0, 256, (BLOCKS, BLOCK_SIZE * V32_TOKEN_BYTES + pad), dtype=torch.uint8, generator=gen)
    tokens = raw[:, : BLOCK_SIZE * V32_TOKEN_BYTES].view(BLOCKS, BLOCK_SIZE, V32_TOKEN_BYTES)
    scales = torch.rand(BLOCKS, BLOCK_SIZE, 4, generator=gen) * 3 + 0.01
    tokens[..., V32_SCALES_AT:V32_ROPE_AT] = scales.view(torch.uint8).view(BLOCKS, BLOCK_SIZE, 16)
    rope = torch.randn(BLOCKS, BLOCK_SIZE, 64, generator=gen).to(torch.bfloat16)
    tokens[..., V32_ROPE_AT:] = rope.view(torch.uint8).view(BLOCKS, BLOCK_SIZE, 128)
    return raw


def _as_cache(raw: torch.Tensor) -> torch.Tensor:
    """FlashMLA's (num_blocks, block_size, 1, 656) FP8 view of the bytes, keeping raw's block stride."""
    strides = (raw.stride(0), V32_TOKEN_BYTES, V32_TOKEN_BYTES, 1)
    shape = (BLOCKS, BLOCK_SIZE, 1, V32_TOKEN_BYTES)
    return raw.as_strided(shape, strides, raw.storage_offset()).view(torch.float8_e4m3fn)


def _same(got: torch.Tensor, want: torch.Tensor) -> bool:
    return torch.equal(got.nan_to_num(1234.0), want.nan_to_num(1234.0))


@pytest.mark.parametrize("pad", [0, 64], ids=["packed blocks", "blocks padded apart"])
def test_keys_equal_the_references_and_unused_rows_are_zero(pad):
    gen = torch.Generator().manual_seed(7)
    cache = _as_cache(_bytes(gen, pad))
    flat = torch.randint(0, BLOCKS * BLOCK_SIZE, (40,), generator=gen)
    unused = torch.rand(40, generator=gen) < 0.3
    rows = fp8_cache.token_rows(cache, flat, unused)
    assert rows is not None and rows.shape == (40, V32_TOKEN_BYTES)
    keys = fp8_cache.v32_keys(rows)
    want = gather_fp8_tokens(cache, flat, 576)
    assert keys.dtype == torch.float32 and keys.shape == (40, 576)
    assert _same(keys[~unused], want[~unused])
    assert torch.equal(keys[unused], torch.zeros_like(keys[unused]))


def test_a_cache_not_of_whole_words_is_left_to_the_reference_gather():
    raw = _bytes(torch.Generator().manual_seed(1), pad=8).reshape(-1)[1:]  # every token one byte off a word
    cache = raw[: BLOCKS * BLOCK_SIZE * V32_TOKEN_BYTES].view(BLOCKS, BLOCK_SIZE, 1, V32_TOKEN_BYTES)
    flat = torch.arange(5)
    assert fp8_cache.token_rows(cache.view(torch.float8_e4m3fn), flat, torch.zeros(5, dtype=torch.bool)) is None
