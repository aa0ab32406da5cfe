"""Random facade arguments: a correct result, or an InvalidArgumentError naming the argument; nothing else."""

import pytest
import torch
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from accelbridge import attention
from accelbridge.attention import InvalidArgumentError

from .oracle import attend_rows, close

ALWAYS_BAD = {"cu_int64", "cu_overrun", "out_shape", "out_dtype", "k_dtype"}
BAD = ["none", "cu_int64", "cu_unsorted", "cu_overrun", "max_small", "out_shape", "out_dtype", "k_dtype", "k_heads"]


@st.composite
def varlen_call(draw):
    lens = draw(st.lists(st.integers(0, 12), min_size=1, max_size=3))
    lens_k = [n + draw(st.integers(0, 4)) for n in lens]
    hk = draw(st.sampled_from([1, 2, 4]))
    hq = hk * draw(st.sampled_from([1, 2, 3]))
    return {
        "lens": lens, "lens_k": lens_k, "hq": hq, "hk": hk, "d": draw(st.sampled_from([8, 16])),
        "dtype": draw(st.sampled_from([torch.bfloat16, torch.float16, torch.float32])),
        "causal": draw(st.booleans()), "window": draw(st.sampled_from([(-1, -1), (2, 0), (3, 1)])),
        "softcap": draw(st.sampled_from([0.0, 2.0])), "bad": draw(st.sampled_from(BAD)),
        "seed": draw(st.integers(0, 2**31 - 1)),
    }  # fmt: skip


def build(c):
    g = torch.Generator().manual_seed(c["seed"])
    cu_q = torch.tensor([0, *torch.tensor(c["lens"]).cumsum(0).tolist()], dtype=torch.int32)
    cu_k = torch.tensor([0, *torch.tensor(c["lens_k"]).cumsum(0).tolist()], dtype=torch.int32)
    q = torch.randn(int(cu_q[-1]), c["hq"], c["d"], generator=g).to(c["dtype"])
    k = torch.randn(int(cu_k[-1]), c["hk"], c["d"], generator=g).to(c["dtype"])
    v = torch.randn(int(cu_k[-1]), c["hk"], c["d"], generator=g).to(c["dtype"])
    kw = {"causal": c["causal"], "window_size": c["window"], "softcap": c["softcap"],
          "max_seqlen_q": max(c["lens"]), "max_seqlen_k": max(c["lens_k"])}  # fmt: skip
    bad = c["bad"]
    if bad == "cu_int64":
        cu_q = cu_q.long()
    elif bad == "cu_unsorted":
        cu_k = torch.tensor([0, *([5] * (len(c["lens"]) - 1)), 3], dtype=torch.int32) if len(c["lens"]) > 0 else cu_k
    elif bad == "cu_overrun":
        cu_q = cu_q.clone()
        cu_q[-1] += 1
    elif bad == "max_small" and max(c["lens"]) > 0:
        kw["max_seqlen_q"] = max(c["lens"]) - 1
    elif bad == "out_shape":
        kw["out"] = torch.empty(q.shape[0], c["hq"], c["d"] + 1, dtype=c["dtype"])
    elif bad == "out_dtype":
        kw["out"] = torch.empty(q.shape, dtype=torch.float64)
    elif bad == "k_dtype":
        k = k.to(torch.float64)
    elif bad == "k_heads" and c["hq"] > 1:
        k, v = k.repeat(1, c["hq"] + 1, 1), v.repeat(1, c["hq"] + 1, 1)
    return q, k, v, cu_q, cu_k, kw


@pytest.fixture(autouse=True)
def _full_checks():
    attention.set_checks("full")  # value checks (cu_seqlens overrun, max_seqlen) are opt-in
    yield
    attention.set_checks(None)


@settings(max_examples=300, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(varlen_call())
def test_random_varlen_calls(c):
    q, k, v, cu_q, cu_k, kw = build(c)
    try:
        out = attention.flash_attn_varlen_func(q, k, v, cu_q, cu_k, **kw)
    except InvalidArgumentError as e:
        assert c["bad"] != "none", f"a valid call was refused: {e}"
        assert str(e).startswith("flash_attn_varlen_func: ") and "; expected " in str(e)
        return
    assert c["bad"] not in ALWAYS_BAD, f"{c['bad']} was not refused"
    cq, ck = cu_q.tolist(), cu_k.tolist()
    for b in range(len(c["lens"])):
        qs, ks = slice(cq[b], cq[b + 1]), slice(ck[b], ck[b + 1])
        expected = attend_rows(q[qs], k[ks], v[ks], c["d"] ** -0.5, c["causal"], c["window"], c["softcap"])
        tol = 2e-2 if c["dtype"] == torch.bfloat16 else 4e-3
        close(out[qs], expected, f"case {c}, sequence {b}", atol=tol, rtol=tol)
