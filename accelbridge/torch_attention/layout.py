"""Packed <-> padded batches as index tensors: no Python loop over sequences, no sync.

A packed (varlen) tensor holds sequence b's rows at ``cu[b] .. cu[b] + lens[b]``. The padded
form (batch, max_len, ...) gathers them with one index tensor; rows past a sequence's length
read some in-range row and are masked later. Going back, each packed row finds its sequence by
a binary search in ``cu``. Paged caches are gathered by ``ops.layout.gather_pages`` (the reference's too).
"""

from __future__ import annotations

import torch


def lengths(cu: torch.Tensor) -> torch.Tensor:
    """Cumulative offsets (batch + 1,) -> lengths (batch,)."""
    return cu[1:] - cu[:-1]


def longest(hint: int | None, lens: torch.Tensor) -> int:
    """The caller's max length when given (free), else read from the device (a sync: no hint was given)."""
    if hint is not None:
        return int(hint)
    return int(lens.max()) if lens.numel() else 0


def pad(packed: torch.Tensor, cu: torch.Tensor, max_len: int) -> torch.Tensor:
    """(total, ...) -> (batch, max_len, ...): sequence b's rows from cu[b]; rows past its end are filler."""
    if packed.shape[0] == 0:  # nothing to read: every row is filler
        return packed.new_zeros((cu.shape[0] - 1, max_len, *packed.shape[1:]))
    pos = torch.arange(max_len, device=packed.device, dtype=cu.dtype)
    rows = (cu[:-1, None] + pos[None, :]).clamp_(0, packed.shape[0] - 1)
    return packed.index_select(0, rows.reshape(-1)).view(*rows.shape, *packed.shape[1:])


def unpad(padded: torch.Tensor, cu: torch.Tensor, lens: torch.Tensor, total: int, fill: float):
    """(batch, max_len, ...) -> (total, ...): row r = padded[b, r - cu[b]]; rows no sequence uses get ``fill``."""
    batch, max_len = padded.shape[0], padded.shape[1]
    # one flat copy with a last row of ``fill``: a single row gather then writes every packed row
    # (a strided gather plus a select pass cost three times as much on an H200)
    flat = padded.new_empty((batch * max_len + 1, *padded.shape[2:]))
    flat[:-1].view(padded.shape).copy_(padded)
    flat[-1] = fill
    r = torch.arange(total, device=padded.device, dtype=cu.dtype)
    b = torch.searchsorted(cu[1:].contiguous(), r, right=True)
    bc = b.clamp(max=batch - 1)
    pos = r - cu[bc]
    covered = (b < batch) & (pos < lens[bc])
    rows = torch.where(covered, bc.long() * max_len + pos.long(), batch * max_len)
    return flat.index_select(0, rows)


def fold_groups(x: torch.Tensor, heads_k: int) -> torch.Tensor:
    """(B, L, Hq, D) -> (B, Hk, G * L, D): a GQA group's query heads become rows against their one kv head."""
    b, length, hq, d = x.shape
    g = hq // heads_k
    return x.view(b, length, heads_k, g, d).permute(0, 2, 3, 1, 4).reshape(b, heads_k, g * length, d)


def unfold_groups(x: torch.Tensor, length: int) -> torch.Tensor:
    """(B, Hk, G * L, D) -> (B, L, Hq, D), undoing fold_groups."""
    b, hk, rows, d = x.shape
    g = rows // length
    return x.view(b, hk, g, length, d).permute(0, 3, 1, 2, 4).reshape(b, length, hk * g, d)
