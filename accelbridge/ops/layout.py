"""Reading a call's inputs and writing its result, as the float reference and the torch provider both do:
the page gather, FP8 dequantisation and the finish (output dtype, ``out``, the lse convention).

The reference uses them one sequence at a time (a batch of one), the torch provider on whole batches.
A page-table entry is read only where a sequence uses it: one past a sequence's pages is arbitrary
(FlashMLA's tests fill them with 2147480000), so it is replaced before any gather, never used as an
index; entries in use are clamped into the pool (the full check level refuses a table naming a block
that does not exist; here it must not take the device down).
"""

from __future__ import annotations

from typing import Any

import torch

from accelbridge.ops.spec import FP8_DTYPES, out_dtype


def pages_in_use(table: torch.Tensor, lens: torch.Tensor | None, page_size: int) -> torch.Tensor | None:
    """(batch, pages) bool: the entries a sequence of ``lens`` keys reads (None: all of them)."""
    if lens is None:
        return None
    cols = torch.arange(table.shape[1], device=table.device)
    return cols[None, :] * page_size < lens.to(table.device).long()[:, None]


def block_ids(table: torch.Tensor, lens: torch.Tensor | None, page_size: int, num_blocks: int) -> torch.Tensor:
    """The table as int64 block ids safe to index with: entries not in use read block 0, the rest clamped."""
    ids = table.long().clamp(0, max(num_blocks - 1, 0))
    used = pages_in_use(table, lens, page_size)
    return ids if used is None else ids.masked_fill(~used, 0)


def gather_pages(cache: torch.Tensor, table: torch.Tensor, lens: torch.Tensor | None,
                 max_len: int | None = None) -> torch.Tensor:  # fmt: skip
    """(blocks, page, H, D) + (batch, pages) -> (batch, pages * page, H, D), cut to ``max_len`` rows.

    Only the pages a sequence of ``lens[b]`` keys uses are read (None: the whole table is in use);
    rows past a length hold some block's data and are masked (and zeroed) by the caller. Rows are
    gathered with ``index_select``, 4-5x faster than indexing on a CPU (dev VM, 2048 pages of 4 KiB).
    """
    page = cache.shape[1]
    pages = table.shape[1] if max_len is None else min(table.shape[1], -(-max_len // page))
    ids = block_ids(table[:, :pages], lens, page, cache.shape[0])
    keys = cache.index_select(0, ids.reshape(-1)).view(table.shape[0], pages * page, *cache.shape[2:])
    return keys if max_len is None else keys[:, :max_len]


def dequantise(x: torch.Tensor, descale: torch.Tensor | None, heads_k: int) -> torch.Tensor:
    """x (..., L, H, D) times descale (..., Hk) (x's leading dims: (B,) for a batch, none for one sequence),
    repeated over each GQA group of H; float32. Without a descale FP8 becomes float32, other dtypes stay."""
    if descale is None:
        return x.float() if x.dtype in FP8_DTYPES else x
    group = x.shape[-2] // heads_k
    return x.float() * descale.float().repeat_interleave(group, dim=-1)[..., None, :, None]


def finish(o: torch.Tensor, lse: torch.Tensor | None, q_dtype: torch.dtype, out: Any, want_lse: bool,
           no_key: bool = False):  # fmt: skip
    """The result as the op returns it: out in the op's output dtype for q's (written into ``out`` where given),
    and lse where asked. ``no_key``: the call's key tensors hold no token, where FA3 launches nothing (out 0,
    lse +inf for every row, where a row without keys gets -inf)."""
    if no_key:
        lse = torch.full_like(lse, float("inf"))
    result = o if o.dtype == out_dtype(q_dtype) else o.to(out_dtype(q_dtype))
    if out is not None and result is not out:  # a kernel that wrote out itself needs no copy
        out.copy_(result)
        result = out
    return (result, lse) if want_lse else result
