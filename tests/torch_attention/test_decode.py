"""The Triton decode kernel against the batched path, under Triton's interpreter on the CPU (or skipped).

tests/gpu runs the same kernel compiled on a GPU; ``interpreted`` says how these run.
"""

import pytest
import torch

from accelbridge.ops.layout import gather_pages
from accelbridge.torch_attention import decode
from accelbridge.torch_attention.core import Call, Masking, attend

from . import interpreted

pytestmark = [
    pytest.mark.deep,
    pytest.mark.skipif(interpreted.not_ready() is not None, reason=str(interpreted.not_ready())),
]


CASES = {
    "decode": {},
    "mtp-causal": {"lq": 3},
    "window": {"window": (8, 0)},
    "softcap-sinks": {"softcap": 2.0, "sinks": True},
    "leftpad-contiguous": {"start": (0, 10, 3), "paged": False},
    "empty-sequence": {"lens": (0, 40, 17)},
    "mha-page1-d128": {"hq": 4, "hk": 4, "d": 128, "page": 1, "lens": (3, 9, 2)},
}


def check(name: str) -> None:
    kw = {"b": 3, "lq": 1, "hq": 8, "hk": 2, "d": 64, "page": 16, "lens": (5, 40, 17), "window": (-1, -1),
          "softcap": 0.0, "sinks": False, "start": None, "paged": True, **CASES[name]}  # fmt: skip
    b, lq, hq, hk, d, page, lens = (kw[n] for n in ("b", "lq", "hq", "hk", "d", "page", "lens"))
    pages = -(-max(lens) // page) + 1
    dt = torch.float16
    q = torch.randn(b, lq, hq, d, dtype=dt)
    rows = b * pages if kw["paged"] else b
    length = page if kw["paged"] else pages * page
    kc, vc = torch.randn(rows, length, hk, d, dtype=dt), torch.randn(rows, length, hk, d, dtype=dt)
    table = torch.randperm(rows).to(torch.int32).reshape(b, pages) if kw["paged"] else None
    k_len, q_len = torch.tensor(lens, dtype=torch.int32), torch.full((b,), lq, dtype=torch.int32)
    start = None if kw["start"] is None else torch.tensor(kw["start"], dtype=torch.int32)
    sinks = torch.randn(hq) if kw["sinks"] else None
    mask = Masking.of(True, kw["window"], 0)
    out, lse = decode.paged_decode(q, kc, vc, q_len, k_len, start, torch.arange(b, dtype=torch.int32), table,
                                   d**-0.5, mask, kw["softcap"], sinks)  # fmt: skip
    keys, values = (gather_pages(kc, table, k_len), gather_pages(vc, table, k_len)) if table is not None else (kc, vc)
    want, want_lse = attend(Call(q, keys, values, q_len, k_len, d**-0.5, mask, k_start=start, softcap=kw["softcap"],
                                 sinks=sinks, want_lse=True))  # fmt: skip
    assert out.dtype == q.dtype  # merged straight into q's dtype
    out, want = out.float(), want.float()
    assert torch.allclose(out, want, atol=2e-3, rtol=2e-3), float((out - want).abs().max())
    assert torch.equal(torch.isinf(lse), torch.isinf(want_lse))
    finite = torch.isfinite(want_lse)
    assert torch.allclose(lse[finite], want_lse[finite], atol=1e-4)


def test_kernel_matches_the_batched_path_in_every_case():
    code = ("import json; from tests.torch_attention import test_decode as t\n"
            "failed = {}\n"
            "for name in t.CASES:\n"
            "    try:\n        t.check(name)\n"
            "    except AssertionError as e:\n        failed[name] = str(e)\n"
            "print(json.dumps(failed))")  # fmt: skip
    assert interpreted.run(code) == {}
