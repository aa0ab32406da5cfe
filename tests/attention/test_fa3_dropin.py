"""sgl-kernel's FA3 call combinations through the facade on a platform without FA3 (torch, the reference).

Every call the kernel accepts, the facade accepts (inert rotary_seqlens / rotary_interleaved, hints
it drops) and computes within FA3's tolerance of an independent float64 oracle, through the
vectorised torch provider and through the reference; tests/gpu compares the same calls with
sgl-kernel directly.
"""

import pytest
import torch

from accelbridge import attention, platforms

from .fa3_calls import CALLS, build, oracle


@pytest.fixture(autouse=True, params=["torch", "reference"])
def provider(request, monkeypatch):
    monkeypatch.setenv("ACCELBRIDGE_PROVIDERS", f"fa3={request.param}")
    with platforms.simulated("cpu"):
        attention.set_checks("full")
        yield request.param
        attention.set_checks(None)


def _clone(kw):
    return {k: (v.clone() if isinstance(v, torch.Tensor) else v) for k, v in kw.items()}


@pytest.mark.parametrize("call", CALLS, ids=[c.name for c in CALLS])
def test_sgl_kernel_fa3_call_runs_through_the_facade(call, provider):
    kw = build(call, "cpu", seed=hash(call.name) & 0xFFFF)
    expected = oracle(call, _clone(kw))
    fn = attention.flash_attn_varlen_func if call.kind == "varlen" else attention.flash_attn_with_kvcache
    assert attention.resolve("fa3.kvcache").selected == provider
    out, lse, *_ = fn(**kw)
    assert out.dtype == torch.bfloat16 and out.shape == expected.shape
    err = (out.double() - expected).abs()
    tol = 4e-2 if call.fp8 else 2e-2
    bad = err > tol + tol * expected.abs()
    assert not bad.any(), f"{call.name}: {int(bad.sum())} of {out.numel()} off, max abs err {float(err.max()):.3e}"
    assert torch.isfinite(lse[torch.isfinite(lse)]).all() and lse.dtype == torch.float32


def test_inert_rotary_arguments_do_not_refuse_a_provider(provider):
    """rotary_seqlens / rotary_interleaved ask for nothing without rotary_cos; with it they are demands."""
    r = attention.resolve("fa3.kvcache", rotary_seqlens=True, rotary_interleaved=True)
    assert r.selected == provider
    from accelbridge import ops

    spec = ops.get("fa3.kvcache")
    lens = torch.tensor([1, 2], dtype=torch.int32)
    assert not spec.is_passed("rotary_seqlens", {"rotary_seqlens": lens})
    assert spec.is_passed("rotary_seqlens", {"rotary_seqlens": lens, "rotary_cos": torch.zeros(4, 2)})
    assert not spec.is_passed("rotary_interleaved", {"rotary_interleaved": False})
    assert spec.is_passed("rotary_interleaved", {"rotary_interleaved": False, "rotary_cos": torch.zeros(4, 2)})
    for hint in ("num_splits", "pack_gqa", "sm_margin", "scheduler_metadata", "max_seqlen_q"):
        assert spec.params[hint].role in ("hint", "plan"), hint
