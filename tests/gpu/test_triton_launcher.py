"""The bound C launch on the GPU: after a geometry's first call its launches go below Triton's runner (where this
triton's launcher is the checked one, 3.6) and give what the runner gives, bit for bit, for each call's own
tensors: another cache (another pointer: its TMA descriptors encoded then) and fresh values included."""

import pytest
import torch

from accelbridge.ops import reference
from accelbridge.torch_attention import (
    decode,
    flash_attn_varlen_func,
    flash_attn_with_kvcache,
    launch_plan,
    mla_decode,
    prefill,
    triton_launcher,
)

DEV = torch.device("cuda")


def _checked() -> bool:
    import triton

    return triton.__version__.startswith(triton_launcher._CHECKED)


def _dense_mla(b: int):
    def inputs(seed: int):
        g = torch.Generator(device=DEV).manual_seed(seed)
        q = torch.randn(b, 1, 128, 576, device=DEV, generator=g).to(torch.bfloat16)
        cache = torch.randn(b * 8, 64, 1, 576, device=DEV, generator=g).to(torch.bfloat16)
        table = torch.randperm(b * 8, device=DEV, generator=g).to(torch.int32).view(b, 8)
        lens = torch.randint(1, 513, (b,), device=DEV, generator=g).to(torch.int32)
        return q, cache, table, lens

    def run(q, cache, table, lens):
        return mla_decode.mla_decode(q, cache, table, lens, 576**-0.5, False, None, None, False, None)

    def want(q, cache, table, lens):
        return reference.flash_mla_with_kvcache(q, cache, table, lens, 512)

    return inputs, run, want


def _paged_decode():
    def inputs(seed: int):
        g = torch.Generator(device=DEV).manual_seed(seed)
        q = torch.randn(8, 1, 32, 128, device=DEV, generator=g).to(torch.bfloat16)
        kc, vc = (torch.randn(64, 64, 8, 128, device=DEV, generator=g).to(torch.bfloat16) for _ in range(2))
        table = torch.randperm(64, device=DEV, generator=g).to(torch.int32).view(8, 8)
        lens = torch.randint(1, 513, (8,), device=DEV, generator=g).to(torch.int32)
        return q, kc, vc, table, lens

    def run(q, kc, vc, table, lens):
        return (flash_attn_with_kvcache(q, kc, vc, cache_seqlens=lens, page_table=table, causal=True),)

    def want(q, kc, vc, table, lens):
        return (reference.flash_attn_with_kvcache(q, kc, vc, cache_seqlens=lens, page_table=table, causal=True),)

    return inputs, run, want


def _prefill():
    def inputs(seed: int):
        g = torch.Generator(device=DEV).manual_seed(seed)
        cu = torch.tensor([0, 300, 301, 1024], dtype=torch.int32, device=DEV)
        q, k, v = (torch.randn(1024, h, 128, device=DEV, generator=g).to(torch.bfloat16) for h in (32, 8, 8))
        return q, k, v, cu

    def run(q, k, v, cu):
        return (flash_attn_varlen_func(q, k, v, cu, cu, max_seqlen_q=723, max_seqlen_k=723, causal=True),)

    def want(q, k, v, cu):
        return (reference.flash_attn_varlen_func(q, k, v, cu, cu, causal=True),)

    return inputs, run, want


CASES = {"dense MLA B=1 (split, merged)": _dense_mla(1), "dense MLA B=64": _dense_mla(64),
         "paged decode": _paged_decode(), "prefill": _prefill()}  # fmt: skip


@pytest.mark.parametrize("case", CASES)
def test_the_bound_launch_gives_the_runners_result_for_each_calls_tensors(monkeypatch, case):
    for module in (mla_decode, decode, prefill):  # fresh plans: each geometry's first call binds
        monkeypatch.setattr(module, "_PLANS", launch_plan.Plans())
    made, real = [], triton_launcher.bind
    monkeypatch.setattr(launch_plan.triton_launcher, "bind", lambda *a: made.append(real(*a)) or made[-1])
    inputs, run, want = CASES[case]
    first, second = inputs(1), inputs(2)  # a second cache: another pointer
    run(*first)
    if _checked():
        assert made and all(b is not None for b in made), "triton 3.6: every launch binds"
    bound = [[t.clone() for t in run(*args)] for args in (second, first, second)]
    monkeypatch.setattr(triton_launcher.Bound, "__call__", lambda self, values, grid: False)  # the runner
    runner = [[t.clone() for t in run(*args)] for args in (second, first, second)]
    for got, ref in zip(bound, runner):
        assert all(torch.equal(a, b) for a, b in zip(got, ref))
    for got, args in zip(bound[:2], (second, first)):
        assert torch.allclose(got[0].float(), want(*args)[0].float(), atol=2e-2, rtol=2e-2)
