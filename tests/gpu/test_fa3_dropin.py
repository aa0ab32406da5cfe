"""sgl-kernel's FA3 call combinations: through the facade equal to sgl-kernel called directly, bit for bit."""

import pytest
import torch

from accelbridge import attention
from tests.attention.fa3_calls import CALLS, build, oracle


def _clone(kw):
    return {k: (v.clone() if isinstance(v, torch.Tensor) else v) for k, v in kw.items()}


@pytest.mark.parametrize("call", CALLS, ids=[c.name for c in CALLS])
def test_facade_equals_sgl_kernel_direct(call):
    fa = pytest.importorskip("sgl_kernel.flash_attn")
    kw = build(call, "cuda", seed=7)
    varlen = call.kind == "varlen"
    direct_fn = fa.flash_attn_varlen_func if varlen else fa.flash_attn_with_kvcache
    facade_fn = attention.flash_attn_varlen_func if varlen else attention.flash_attn_with_kvcache
    op = "fa3.varlen" if varlen else "fa3.kvcache"
    direct_kw, facade_kw = _clone(kw), _clone(kw)
    d_out, d_lse, *_ = direct_fn(**direct_kw)
    f_out, f_lse, *_ = facade_fn(**facade_kw)
    served = attention.resolve(op, **{k: True for k in ("qv", "page_table") if kw.get(k) is not None}).selected
    if served == "sgl-kernel":
        assert torch.equal(f_out, d_out) and torch.equal(f_lse, d_lse), f"{call.name}: facade differs from direct"
        for name in ("k_cache", "v_cache"):
            if name in kw:
                assert torch.equal(facade_kw[name], direct_kw[name]), f"{call.name}: {name} appended differently"
    expected = oracle(call, _clone(kw))
    err = (d_out.double().cpu() - expected).abs()
    tol = 4e-2 if call.fp8 else 2e-2
    bad = int((err > tol + tol * expected.abs()).sum())
    print(f"{call.name}: served by {served}; sgl-kernel vs oracle max abs err {float(err.max()):.3e}, {bad} off")
    assert bad == 0, f"{call.name}: sgl-kernel differs from the oracle: {bad} elements, max {float(err.max()):.3e}"
