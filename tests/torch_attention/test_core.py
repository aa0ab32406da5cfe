"""core's zeroing of key rows past a sequence: exact zero bits, in place only on the provider's own copies."""

import pytest
import torch

from accelbridge.torch_attention import core


@pytest.mark.parametrize("d", [64, 3], ids=["as-words", "odd-row"])
@pytest.mark.parametrize("own", [False, True], ids=["callers", "own"])
def test_unused_rows_become_zero_and_the_callers_tensor_is_kept(d, own):
    x = torch.randn(3, 10, 2, d).to(torch.bfloat16)
    x[1, 7:] = float("nan")
    used = (torch.arange(10)[None, :] < torch.tensor([10, 7, 0])[:, None])[..., None, None]
    before = x.clone()
    got = core._zero_unused(x, used, own)
    want = torch.where(used, before, torch.zeros((), dtype=x.dtype))
    assert torch.equal(got.view(torch.int16), want.view(torch.int16))  # +0.0 bits, NaN rows gone
    assert (got is x) == own
    if not own:
        assert torch.equal(x.view(torch.int16), before.view(torch.int16))
