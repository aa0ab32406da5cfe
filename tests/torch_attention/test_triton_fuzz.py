"""The differential fuzz's problems through the Triton kernels, under Triton's interpreter on the CPU (or skipped).

tests/attention/test_differential_fuzz.py draws each op's problems from the whole space the kernels
accept (their tests' conventions mixed in) and checks the torch provider against a float64 oracle,
on its CPU paths. Here the first seeds of each draw run with the interpreter on, so the prefill,
paged decode and MLA decode kernels serve every problem they fit; each must agree with the oracle.
"""

import pytest

from . import interpreted

pytestmark = [
    pytest.mark.deep,
    pytest.mark.skipif(interpreted.not_ready() is not None, reason=str(interpreted.not_ready())),
]

SEEDS = 100  # a draw (of 300): about 110 s for the five on the dev VM; the kernels serve most (sparse prefill at 576)

_CODE = """
import json, os
from tests.attention import test_differential_fuzz as fuzz
from accelbridge.torch_attention import decode, mla_decode, prefill
os.environ["ACCELBRIDGE_PROVIDERS"] = fuzz.PROVIDERS
served = {{}}
for module, name in ((prefill, "prefill"), (decode, "paged_decode"), (mla_decode, "mla_decode")):
    launch = getattr(module, name)
    def counted(*a, _f=launch, _n=name, **k):
        served[_n] = served.get(_n, 0) + 1
        return _f(*a, **k)
    setattr(module, name, counted)
failed = {{}}
for draw in ("fa3.varlen", "fa3.kvcache", "flashmla.dense", "flashmla.sparse", "flashmla.sparse_prefill"):
    for seed in range({seeds}):
        try:
            fuzz.check(draw, seed)
        except AssertionError as error:
            failed[f"{{draw}} {{seed}}"] = str(error)[:400]
print(json.dumps({{"failed": failed, "served": served}}))
"""


def test_the_triton_kernels_agree_with_the_oracle_on_fuzzed_problems():
    result = interpreted.run(_CODE.format(seeds=SEEDS))
    assert result["failed"] == {}
    assert set(result["served"]) == {"prefill", "paged_decode", "mla_decode"}, result["served"]
