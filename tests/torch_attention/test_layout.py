"""Packed <-> padded batches and page gathers (``ops.layout``, the reference's too): exact round trips, filler rows
never leak."""

import torch

from accelbridge.ops import layout as ops_layout
from accelbridge.ops import reference
from accelbridge.torch_attention import layout


def test_pad_then_unpad_is_the_identity_and_uncovered_rows_get_the_fill():
    lens = [3, 0, 5, 1]
    cu = torch.tensor([0, 3, 3, 8, 9], dtype=torch.int32)
    x = torch.randn(11, 2, 4)  # two rows past the last sequence
    padded = layout.pad(x, cu, max(lens))
    assert padded.shape == (4, 5, 2, 4)
    assert torch.equal(padded[2, :5], x[3:8]) and torch.equal(padded[0, :3], x[:3])
    back = layout.unpad(padded, cu, layout.lengths(cu), 11, -7.0)
    assert torch.equal(back[:9], x[:9]) and (back[9:] == -7.0).all()
    used = torch.tensor([2, 0, 5, 1], dtype=torch.int32)  # seqused: row 2 of sequence 0 is not covered
    partial = layout.unpad(padded, cu, used, 11, 0.0)
    assert (partial[2] == 0).all() and torch.equal(partial[:2], x[:2])


def test_gather_pages_follows_the_table_and_cuts_to_the_length():
    cache = torch.arange(6 * 4).float().view(6, 4, 1, 1)  # 6 blocks of 4 slots; the value is the flat slot
    table = torch.tensor([[5, 0, 2], [1, 3, 4]], dtype=torch.int32)
    lens = torch.tensor([6, 12], dtype=torch.int32)
    keys = ops_layout.gather_pages(cache, table, lens, 6)
    assert keys.shape == (2, 6, 1, 1)
    assert keys[0, :, 0, 0].tolist() == [20, 21, 22, 23, 0, 1] and keys[1, :, 0, 0].tolist() == [4, 5, 6, 7, 12, 13]
    assert ops_layout.gather_pages(cache, table, None).shape == (2, 12, 1, 1)


def test_gather_pages_never_indexes_with_entries_past_a_sequence():
    """FlashMLA's tests fill unused entries with 2147480000; FA's callers often with -1."""
    cache = torch.arange(6 * 4).float().view(6, 4, 1, 1)
    table = torch.tensor([[5, 2147480000, -1], [1, 3, 4]], dtype=torch.int32)
    keys = ops_layout.gather_pages(cache, table, torch.tensor([3, 12], dtype=torch.int32))
    assert keys[0, :3, 0, 0].tolist() == [20, 21, 22] and keys[1, :, 0, 0].tolist() == [*range(4, 8), *range(12, 20)]
    assert ops_layout.block_ids(table, None, 4, 6).tolist() == [[5, 5, 0], [1, 3, 4]]  # all in use: clamped


def test_the_reference_reads_one_sequence_as_the_provider_reads_a_batch():
    """One home for the page gather and the dequantisation: a sequence of the batch, read alone as the reference
    reads it, is the batch's row."""
    cache = torch.randn(6, 4, 2, 8).to(torch.float8_e4m3fn)
    table = torch.tensor([[5, 0, 2], [1, 3, 4]], dtype=torch.int32)
    descale = torch.rand(2, 2) + 0.5  # (batch, kv heads)
    batch = ops_layout.dequantise(ops_layout.gather_pages(cache, table, None, 10), descale, 2)
    q = torch.randn(2, 3, 4, 8)  # 4 q heads over 2 kv heads
    q_batch = ops_layout.dequantise(q, descale, 2)
    for b in range(2):
        alone = ops_layout.dequantise(reference._gather_pages(cache, table[b], 10), descale[b], 2)
        assert alone.dtype == torch.float32 and torch.equal(alone, batch[b])
        assert torch.equal(reference._dequant(q[b], descale, b, 2), q_batch[b])
        assert torch.equal(q_batch[b], q[b] * descale[b].repeat_interleave(2)[None, :, None])


def test_fold_groups_puts_each_gqa_group_against_its_kv_head():
    x = torch.randn(2, 3, 8, 16)  # 8 query heads over 2 kv heads
    folded = layout.fold_groups(x, 2)
    assert folded.shape == (2, 2, 12, 16)
    assert torch.equal(folded[1, 1, 4 * 0 + 2], x[1, 2, 4])  # group member 0 of kv head 1 at position 2
    assert torch.equal(layout.unfold_groups(folded, 3), x)


def test_longest_reads_the_device_only_without_a_hint():
    lens = torch.tensor([3, 9, 2])
    assert layout.longest(None, lens) == 9 and layout.longest(16, lens) == 16
    assert layout.longest(None, torch.tensor([], dtype=torch.int32)) == 0
