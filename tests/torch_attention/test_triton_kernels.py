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
{setup}
result = {{"failed": {{}}, "served": [], "not_served": []}}
for case in conformance.cases("{op}"):
    before = len(served)
    r = conformance.run(case, "torch")
    if not r.ok:
        result["failed"][str(case)] = r.detail
    result["served" if len(served) > before else "not_served"].append(str(case).split(":")[1])
print(json.dumps(result))
"""


_NOT_MLA = {"fp8-dense", "fp8-dense-sentinel-nan", "sparse-v4", "sparse-v4-topk-length", "sparse-v4-extra-cache",
            "sparse-v4-conventions"}  # fmt: skip
# one output block of 512 and pointer loads (no TMA descriptors)
_WHOLE_OUTPUT = "kernel._config = lambda device, heads: (16, 16, 4, 1, 512); kernel._tma_descriptors = lambda *a: None"
_TILES_ACROSS_PAGES = "kernel._config = lambda device, heads: (16, 128, 4, 1, 256)"  # 128 keys a tile, pages of 64


@pytest.mark.parametrize(
    ("op", "module", "function", "setup", "not_served"),
    [
        ("fa3.varlen", "prefill", "prefill", "", {"qv", "fp8", "attention-chunk", "no-keys"}),
        ("flashmla.kvcache", "mla_decode", "mla_decode", "", _NOT_MLA),
        ("flashmla.kvcache", "mla_decode", "mla_decode", _WHOLE_OUTPUT, _NOT_MLA),
        ("flashmla.kvcache", "mla_decode", "mla_decode", _TILES_ACROSS_PAGES, _NOT_MLA),  # per-key table entries
    ],
    ids=["prefill", "mla", "mla-whole-output", "mla-tiles-across-pages"],
)
def test_kernel_serves_and_conforms_on_every_case_it_fits(op, module, function, setup, not_served):
    result = interpreted.run(_CODE.format(op=op, module=module, function=function, setup=setup))
    assert result["failed"] == {}
    assert set(result["not_served"]) == not_served
    assert len(result["served"]) >= 12


_DENSE = """
import json, torch
from accelbridge.ops import reference
from accelbridge.torch_attention import dense, flash_attn_varlen_func
served = []
launch = dense.self_attention
dense.self_attention = lambda *a, **k: served.append(1) or launch(*a, **k)
errors = {}
# (lengths, padding rows past the last sequence, causal, q heads, k heads): one length, nearly one
# length with rows past the end; unmasked (one length, nearly one: a shorter sequence's queries would
# see its padding keys) and a ragged batch, which the dense path must leave alone
for n, (lens, tail, causal, hq, hk) in enumerate([((16, 16, 16), 0, True, 4, 2), ((16, 15, 16), 2, True, 4, 1),
                                                  ((9, 9), 0, False, 2, 2), ((16, 15, 16), 0, False, 2, 2),
                                                  ((3, 16), 0, True, 2, 1)]):
    torch.manual_seed(n)
    cu = torch.tensor([0, *torch.tensor(lens).cumsum(0).tolist()], dtype=torch.int32)
    total = int(cu[-1]) + tail
    q = torch.randn(total, hq, 32, dtype=torch.float16)
    k, v = torch.randn(total, hk, 32, dtype=torch.float16), torch.randn(total, hk, 32, dtype=torch.float16)
    out = torch.full((total, hq, 32), float("nan"), dtype=torch.float16)
    before = len(served)
    got = flash_attn_varlen_func(q, k, v, cu, cu, max(lens), max(lens), causal=causal, out=out)
    want = reference.flash_attn_varlen_func(q, k, v, cu, cu, causal=causal)
    err = float((got.float() - want.float()).abs().max())
    errors[n] = [err, len(served) - before, bool(got.isnan().any())]
print(json.dumps(errors))
"""


def test_dense_self_attention_packs_and_unpacks_every_row():
    result = interpreted.run(_DENSE)
    assert all(err < 2e-3 and not nan for err, _, nan in result.values()), result
    assert [dense for _, dense, _ in result.values()] == [1, 1, 0, 0, 0]  # unmasked, or ragged (fill 0.59): not dense


_CHUNKED = """
import json, torch
from accelbridge.ops import reference
from accelbridge.torch_attention import flash_attn_with_kvcache, prefill
served = []
launch = prefill.prefill
prefill.prefill = lambda *a, **k: served.append(1) or launch(*a, **k)
result = {}
# a chunk of 40 queries per sequence (80 rows a GQA group: past the decode kernel) appended to and
# attending over a paged cache, a contiguous one with a batch index, a window with sinks and lse
for n, (paged, batch_idx, window, sinks) in enumerate([(True, False, (-1, -1), False), (False, True, (-1, -1), False),
                                                        (True, False, (24, 0), True)]):
    torch.manual_seed(n)
    b, lq, hq, hk, d, page = 2, 40, 4, 2, 32, 16
    lens = torch.tensor([5, 30], dtype=torch.int32)
    q = torch.randn(b, lq, hq, d, dtype=torch.float16)
    k_new, v_new = torch.randn(b, lq, hk, d, dtype=torch.float16), torch.randn(b, lq, hk, d, dtype=torch.float16)
    if paged:
        kc, vc = torch.randn(12, page, hk, d, dtype=torch.float16), torch.randn(12, page, hk, d, dtype=torch.float16)
        extra = {"page_table": torch.randperm(12).to(torch.int32).view(b, 6)}
    else:
        kc, vc = torch.randn(3, 96, hk, d, dtype=torch.float16), torch.randn(3, 96, hk, d, dtype=torch.float16)
        extra = {"cache_batch_idx": torch.tensor([2, 0], dtype=torch.int32)} if batch_idx else {}
    if sinks:
        extra["sinks"] = torch.randn(hq)
    kw = dict(k=k_new, v=v_new, cache_seqlens=lens, causal=True, window_size=window, return_softmax_lse=True, **extra)
    before = len(served)
    got, lse = flash_attn_with_kvcache(q, kc.clone(), vc.clone(), **kw)
    want, want_lse = reference.flash_attn_with_kvcache(q, kc.clone(), vc.clone(), **kw)
    finite = torch.isfinite(want_lse)
    result[n] = [float((got.float() - want.float()).abs().max()), float((lse - want_lse)[finite].abs().max()),
                 bool(torch.equal(finite, torch.isfinite(lse))), len(served) - before]
print(json.dumps(result))
"""


def test_chunked_prefill_over_a_cache_runs_the_prefill_kernel():
    result = interpreted.run(_CHUNKED)
    for out_err, lse_err, same_inf, served in result.values():
        assert out_err < 2e-3 and lse_err < 1e-3 and same_inf and served == 1, result
