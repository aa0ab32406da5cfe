"""Packed <-> padded batches and paged caches as index tensors: no Python loop over sequences, no sync.

A packed (varlen) tensor holds sequence b's rows at ``cu[b] .. cu[b] + lens[b]``. The padded
form (batch, max_len, ...) gathers them with one index tensor; rows past a sequence's length
read some in-range row and are masked later. Going back, each packed row finds its sequence by
a binary search in ``cu``.

Index tensors are read only where the kernels read them: a page-table entry past a sequence's
pages is arbitrary (FlashMLA's tests fill them with 2147480000), so it is replaced before any
gather, never used as an index; no input a kernel accepts reaches a device-side assert.
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


def pages_in_use(table: torch.Tensor, lens: torch.Tensor | None, page_size: int) -> torch.Tensor | None:
    """(batch, pages) bool: the entries a sequence of ``lens`` keys reads (None: all of them)."""
    if lens is None:
        return None
    cols = torch.arange(table.shape[1], device=table.device)
    return cols[None, :] * page_size < lens.to(table.device).long()[:, None]


def block_ids(table: torch.Tensor, lens: torch.Tensor | None, page_size: int, num_blocks: int) -> torch.Tensor:
    """The table as int64 block ids safe to index with: entries not in use read block 0.

    Entries in use are clamped into the pool as well (a table naming a block that does not exist
    is refused by the full check level; here it must not take the device down).
    """
    ids = table.long().clamp(0, max(num_blocks - 1, 0))
    used = pages_in_use(table, lens, page_size)
    return ids if used is None else ids.masked_fill(~used, 0)


def gather_pages(cache: torch.Tensor, table: torch.Tensor, lens: torch.Tensor | None,
                 max_len: int | None = None) -> torch.Tensor:  # fmt: skip
    """(blocks, page, H, D) + (batch, pages) -> (batch, pages * page, H, D), cut to ``max_len`` rows.

    Only the pages a sequence of ``lens[b]`` keys uses are read (None: the whole table is in use);
    rows past a length hold some block's data and are masked (and zeroed) by ``core``. Rows are
    gathered with ``index_select``, 4-5x faster than indexing on a CPU (dev VM, 2048 pages of 4 KiB).
    """
    page = cache.shape[1]
    pages = table.shape[1] if max_len is None else min(table.shape[1], -(-max_len // page))
    ids = block_ids(table[:, :pages], lens, page, cache.shape[0])
    keys = cache.index_select(0, ids.reshape(-1)).view(table.shape[0], pages * page, *cache.shape[2:])
    return keys if max_len is None else keys[:, :max_len]


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
