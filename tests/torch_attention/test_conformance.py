"""The torch provider conforms: every case of every op, and the cross product (dtype x GQA x head dim x mask)."""

import pytest

from accelbridge.testing import conformance


@pytest.mark.parametrize("case", conformance.cases(), ids=str)
def test_torch_provider_conforms_on_cpu(case):
    conformance.assert_conforms(case, "torch")


@pytest.mark.deep  # the dtype x GQA x head dim x mask cross product: 120 cases an op
@pytest.mark.parametrize("op", ["fa3.varlen", "fa3.kvcache"])
def test_torch_provider_conforms_across_the_cross_product(op):
    extra = [c for c in conformance.cases(op, full=True) if c not in conformance.cases(op)]
    assert len(extra) == 90
    failed = [(str(c), r.detail) for c in extra if not (r := conformance.run(c, "torch")).ok]
    assert not failed, failed
