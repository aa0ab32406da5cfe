"""The torch provider names every dtype it allocates: a caller's default dtype (FlashMLA's tests set bf16) changes
nothing. A float32 scratch or lse made with the default dtype was bf16 there: the sparse gathers' chunk buffer
failed every d_qk 512 case of FlashMLA's sparse file on the GPU (session 15), the lonely rows' lse was rounded."""

import pytest
import torch

from accelbridge.testing import conformance

OPS = ("fa3.varlen", "fa3.kvcache", "flashmla.kvcache", "flashmla.sparse_prefill")


@pytest.fixture
def bf16_default():
    before = torch.get_default_dtype()
    torch.set_default_dtype(torch.bfloat16)
    yield
    torch.set_default_dtype(before)


@pytest.mark.parametrize("op", OPS)
def test_every_case_conforms_under_a_bf16_default_dtype(op, bf16_default):
    failed = {}
    for case in conformance.cases(op):
        result = conformance.run(case, "torch")
        if not result.ok:
            failed[str(case)] = result.detail
    assert failed == {}
