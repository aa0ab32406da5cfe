"""The Triton prefill and MLA decode kernels conform, under Triton's interpreter on the CPU (or skipped).

Every conformance case of fa3.varlen and flashmla.kvcache runs through the torch provider with
the interpreter on; the kernels must serve every case they fit (all but qv, FP8 q, attention
chunks, an empty cache, FP8 dense and V4's MODEL1 layout) and each result must conform.
tests/gpu runs the same kernels compiled, in bf16.
"""

import pytest

from . import interpreted

pytestmark = pytest.mark.skipif(interpreted.not_ready() is not None, reason=str(interpreted.not_ready()))

_CODE = """
import json
from accelbridge.testing import conformance
from accelbridge.torch_attention import {module} as kernel
served = []
launch = kernel.{function}
def counted(*a, **k):
    served.append(1)
    return launch(*a, **k)
kernel.{function} = counted
result = {{"failed": {{}}, "served": [], "not_served": []}}
for case in conformance.cases("{op}"):
    before = len(served)
    r = conformance.run(case, "torch")
    if not r.ok:
        result["failed"][str(case)] = r.detail
    result["served" if len(served) > before else "not_served"].append(str(case).split(":")[1])
print(json.dumps(result))
"""


@pytest.mark.parametrize(
    ("op", "module", "function", "not_served"),
    [
        ("fa3.varlen", "prefill", "prefill", {"qv", "fp8", "attention-chunk", "no-keys"}),
        ("flashmla.kvcache", "mla_decode", "mla_decode", {"fp8-dense", "fp8-dense-sentinel-nan", "sparse-v4",
                                                          "sparse-v4-topk-length", "sparse-v4-extra-cache",
                                                          "sparse-v4-conventions"}),
    ],
)  # fmt: skip
def test_kernel_serves_and_conforms_on_every_case_it_fits(op, module, function, not_served):
    result = interpreted.run(_CODE.format(op=op, module=module, function=function))
    assert result["failed"] == {}
    assert set(result["not_served"]) == not_served
    assert len(result["served"]) >= 12
