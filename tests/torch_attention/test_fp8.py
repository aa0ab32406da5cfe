"""The provider's e4m3 table decoder gives torch's cast's values for every byte and pair of bytes, in any layout."""

import torch

from accelbridge.torch_attention import fp8


def test_every_byte_decodes_as_torchs_cast():
    raw = torch.arange(256, dtype=torch.uint8)
    want = raw.view(torch.float8_e4m3fn).float()
    got = fp8.e4m3(raw)
    assert got.dtype == torch.float32
    assert torch.equal(got.isnan(), want.isnan()) and torch.equal(got[~want.isnan()], want[~want.isnan()])


def test_a_strided_slice_keeps_its_shape():
    rows = torch.randint(0, 256, (5, 656), dtype=torch.uint8)
    got = fp8.e4m3(rows[:, :512])
    want = rows[:, :512].contiguous().view(torch.float8_e4m3fn).float()
    assert got.shape == (5, 512) and torch.equal(got.nan_to_num(7.0), want.nan_to_num(7.0))


def test_every_pair_of_bytes_decodes_as_torchs_cast():
    raw = torch.arange(65536, dtype=torch.int32).to(torch.uint16).view(torch.uint8)  # every 16-bit word's bytes
    want = raw.view(torch.float8_e4m3fn).float()
    assert torch.equal(fp8.e4m3(raw).nan_to_num(7.0), want.nan_to_num(7.0))


def test_an_odd_offset_takes_the_byte_table():
    rows = torch.randint(0, 256, (3, 10), dtype=torch.uint8)
    want = rows[:, 1:].contiguous().view(torch.float8_e4m3fn).float()
    assert torch.equal(fp8.e4m3(rows[:, 1:]).nan_to_num(7.0), want.nan_to_num(7.0))
