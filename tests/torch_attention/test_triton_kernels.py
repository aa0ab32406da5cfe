"""The Triton prefill and MLA decode kernels conform, under Triton's interpreter on the CPU (or skipped).

Every conformance case of fa3.varlen and flashmla.kvcache runs through the torch provider with
the interpreter on; the kernels must serve every case they fit (all but qv, FP8 q, attention
chunks, an empty cache, FP8 dense and V4's MODEL1 layout; a batch of nearly one length goes to the
dense path's packed SDPA batch instead) and each result must conform.
tests/gpu runs the same kernels compiled, in bf16.
"""

import pytest

from . import interpreted

pytestmark = [
    pytest.mark.deep,
    pytest.mark.skipif(interpreted.not_ready() is not None, reason=str(interpreted.not_ready())),
]

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
            "sparse-v4-conventions", "sparse-v32-no-rope", "sparse-v41", "sparse-v41-fp4-extra",
            "sparse-v32-no-rope-conventions", "sparse-v41-conventions"}  # fmt: skip  # the kernel reads V3.2 only
# one output block of 512 and pointer loads (no TMA descriptors)
_WHOLE_OUTPUT = "kernel._configs = lambda device, heads: ((16, 16, 4, 1, 512),); kernel._tma_route = lambda *a: None"
_TILES_ACROSS_PAGES = "kernel._configs = lambda device, heads: ((16, 128, 4, 1, 256),)"  # 128 keys a tile, pages of 64
# one processor: one split, the kernel writing the result itself (its sink, lse and max conventions); 4096: splits
# of every row, merged
_ONE_SPLIT, _SPLITS = "kernel.processors = lambda device: 1", "kernel.processors = lambda device: 4096"
_NOT_SPARSE_PREFILL = {"v4"}  # d_qk 512: the torch gathers


@pytest.mark.parametrize(
    ("op", "module", "function", "setup", "not_served"),
    [
        ("fa3.varlen", "prefill", "prefill", "", {"qv", "fp8", "attention-chunk", "no-keys", "nearly-one-length"}),
        ("flashmla.kvcache", "mla_decode", "mla_decode", "", _NOT_MLA),
        ("flashmla.kvcache", "mla_decode", "mla_decode", _WHOLE_OUTPUT, _NOT_MLA),
        ("flashmla.kvcache", "mla_decode", "mla_decode", _TILES_ACROSS_PAGES, _NOT_MLA),  # per-key table entries
        ("flashmla.kvcache", "mla_decode", "mla_decode", _ONE_SPLIT + "; " + _WHOLE_OUTPUT, _NOT_MLA),
        ("flashmla.kvcache", "mla_decode", "mla_decode", _SPLITS, _NOT_MLA),
        ("flashmla.sparse_prefill", "mla_decode", "mla_decode", _ONE_SPLIT, _NOT_SPARSE_PREFILL),
        ("flashmla.sparse_prefill", "mla_decode", "mla_decode", _SPLITS, _NOT_SPARSE_PREFILL),
    ],
    ids=[
        "prefill",
        "mla",
        "mla-whole-output",
        "mla-tiles-across-pages",
        "mla-one-split",
        "mla-splits",
        "sparse-prefill-one-split",
        "sparse-prefill-splits",
    ],  # fmt: skip
)
def test_kernel_serves_and_conforms_on_every_case_it_fits(op, module, function, setup, not_served):
    result = interpreted.run(_CODE.format(op=op, module=module, function=function, setup=setup))
    assert result["failed"] == {}
    assert set(result["not_served"]) == not_served
    assert len(result["served"]) >= (12 if op == "flashmla.kvcache" else 5)


_DENSE = """
import json, torch
from accelbridge.ops import reference
from accelbridge.torch_attention import dense, flash_attn_varlen_func
paths = []
for name in ("_over_views", "packed"):
    launch = getattr(dense, name)
    setattr(dense, name, lambda *a, _f=launch, _n=name, **k: paths.append(_n) or _f(*a, **k))
result = {}
# (lengths, rows past the last sequence, causal, q heads, k heads, the caller's out): one length, nearly
# one length with rows past the end; unmasked (one length, nearly one: a shorter sequence's queries
# would see its padding keys) and a ragged batch, which the dense path must leave alone; batch x 64
# rows (a bucket length: views of the rows) all on their rows, one sequence off them, none on them;
# no rows in any sequence (max_seqlen_q 0: the prefill kernel zeroes the rows past them)
for n, (lens, tail, causal, hq, hk, given) in enumerate([
        ((16, 16, 16), 0, True, 4, 2, True), ((16, 15, 16), 2, True, 4, 1, True), ((9, 9), 0, False, 2, 2, True),
        ((16, 15, 16), 0, False, 2, 2, True), ((3, 16), 0, True, 2, 1, True),
        ((64, 64), 0, True, 4, 2, True), ((64, 64), 0, True, 4, 1, False), ((64, 60), 4, True, 4, 2, True),
        ((60, 64), 4, True, 2, 1, False), ((0, 0), 4, True, 2, 1, True)]):
    torch.manual_seed(n)
    cu = torch.tensor([0, *torch.tensor(lens).cumsum(0).tolist()], dtype=torch.int32)
    total = int(cu[-1]) + tail
    q = torch.randn(total, hq, 32, dtype=torch.float16)
    k, v = torch.randn(total, hk, 32, dtype=torch.float16), torch.randn(total, hk, 32, dtype=torch.float16)
    out = torch.full((total, hq, 32), float("nan"), dtype=torch.float16) if given else None
    before = len(paths)
    got = flash_attn_varlen_func(q, k, v, cu, cu, max(lens), max(lens), causal=causal, out=out)
    want = reference.flash_attn_varlen_func(q, k, v, cu, cu, causal=causal)
    err = float((got.float() - want.float()).abs().max())
    result[n] = [err, paths[before:], bool(got.isnan().any()), out is None or got.data_ptr() == out.data_ptr()]
print(json.dumps(result))
"""


def test_dense_self_attention_writes_every_row_packed_or_over_views():
    result = interpreted.run(_DENSE)
    assert all(err < 2e-3 and not nan and into_out for err, _, nan, into_out in result.values()), result
    # unmasked, or ragged (fill 0.59): not dense; batch x 64 rows: views of the rows, the kernel finishing
    assert [path for _, path, _, _ in result.values()] == [["packed"]] * 2 + [[]] * 3 + [["_over_views"]] * 4 + [[]]


_ALIGNED = """
import json, torch
from accelbridge.ops import reference
from accelbridge.torch_attention import prefill
from accelbridge.torch_attention.core import Masking
# sequence 0 is on rows [0, 16): left as out holds it (7); sequence 1 (15 rows) and the ones after it,
# off their rows [b * 16, (b + 1) * 16), and the rows past the last sequence are computed
lens, tail = (16, 15, 16, 16), 3
cu = torch.tensor([0, *torch.tensor(lens).cumsum(0).tolist()], dtype=torch.int32)
total = int(cu[-1]) + tail
torch.manual_seed(0)
q, k, v = (torch.randn(total, 2, 32, dtype=torch.float16) for _ in range(3))
out = torch.full((total, 2, 32), 7.0, dtype=torch.float16)
prefill.prefill(q, k, v, cu, cu, 16, None, None, None, 32**-0.5, Masking(causal=True), 0.0, None, False, out,
                skip_aligned=16)
want = reference.flash_attn_varlen_func(q, k, v, cu, cu, causal=True)
kept = [bool((out[s:s + 16] == 7).all()) for s in (0, 16, 32, 48)]
computed = float((out[16:].float() - want[16:].float()).abs().max())
print(json.dumps([kept, computed, bool((out[int(cu[-1]):] == 0).all())]))
"""


def test_prefill_kernel_leaves_the_sequences_on_their_rows_and_computes_the_rest():
    kept, computed, tail_zero = interpreted.run(_ALIGNED)
    assert kept == [True, False, False, False] and computed < 2e-3 and tail_zero


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
