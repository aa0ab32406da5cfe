"""A planned launch: the kernel's arguments in its signature's order, each call's tensors in their places, the
compiled kernel only while the call's pointers are aligned as the JIT's first launch had them; and the MLA decode
plans, reused across calls of one geometry, right for every call's own values."""

import pytest
import torch

from accelbridge.torch_attention import launch_plan

from . import interpreted


class _Compiled:
    """A compiled kernel: ``[grid](*args)`` launches, recorded."""

    def __init__(self, launches):
        self.launches = launches

    def __getitem__(self, grid):
        return lambda *args: self.launches.append((grid, args))


class _Kernel:
    """Triton's JIT launch protocol, recorded: ``kernel[grid](*args, **options)`` returns the compiled kernel
    (``compiles``: the interpreter returns none)."""

    arg_names = ["X", "n", "OUT", "BLOCK"]

    def __init__(self, compiles: bool = True):
        self.jit, self.compiled, self.compiles = [], [], compiles

    def __getitem__(self, grid):
        def jit(*args, **options):
            self.jit.append((grid, args, options))
            return _Compiled(self.compiled) if self.compiles else None

        return jit


def test_a_plan_missing_or_inventing_a_parameter_is_refused_by_name():
    with pytest.raises(TypeError, match=r"missing \['BLOCK'\], unknown \['M'\]"):
        launch_plan.Launch(_Kernel(), (4,), {"X": None, "n": 3, "OUT": None, "M": 1}, {}, ("X", "OUT"))


@pytest.mark.parametrize("compiles", [True, False], ids=["compiled", "interpreted"])
def test_the_compiled_kernel_serves_while_the_pointers_stay_aligned(monkeypatch, compiles):
    monkeypatch.setattr(launch_plan, "_is_compiled", lambda compiled: isinstance(compiled, _Compiled))
    monkeypatch.setattr(launch_plan.triton_launcher, "bind", lambda *a: None)  # the runner's path (declined)
    kernel = _Kernel(compiles)
    launch = launch_plan.Launch(kernel, (4, 2), {"BLOCK": 16, "OUT": None, "n": 7, "X": None}, {"num_warps": 4},
                                ("OUT", "X"))  # fmt: skip
    x, y, out = torch.zeros(64), torch.ones(64), torch.zeros(64)
    launch(out, x)  # the JIT's first launch: signature order, the grid in three dimensions, the options
    assert kernel.jit == [((4, 2, 1), (x, 7, out, 16), {"num_warps": 4})] and not kernel.compiled
    launch(out, y)  # then the compiled kernel, with the call's tensors (none under the interpreter: the JIT's)
    assert kernel.compiled == ([((4, 2, 1), (y, 7, out, 16))] if compiles else [])
    assert len(kernel.jit) == (1 if compiles else 2)
    odd = torch.zeros(65)[1:]  # 4 bytes past a 16-byte boundary: the JIT specialises (and compiles) for it
    launch(odd, x)
    assert kernel.jit[-1][1] == (x, 7, odd, 16) and len(kernel.compiled) == (1 if compiles else 0)
    launch(out, x)  # aligned again: the compiled kernel of the aligned launch
    assert len(kernel.compiled) == (2 if compiles else 0)
    launch(out, x, grid=(9,))  # a call's own grid: the same compiled kernel, launched on it
    assert (kernel.compiled[-1][0] if compiles else kernel.jit[-1][0]) == (9, 1, 1)


def test_a_bound_launch_serves_aligned_calls_and_the_runner_those_it_declines(monkeypatch):
    """After the first aligned launch, ``triton_launcher.bind``'s launch takes the call's values as given (a
    descriptor parameter's tensor, made into a descriptor only on the JIT's and the runner's paths); where it
    declines (a launch hook, another device), the compiled kernel's runner launches."""
    bound_calls, declining = [], []

    def bound(values, grid):
        bound_calls.append((grid, values))
        return not declining

    binds = []

    def bind(compiled, args, slots, makers, first):
        binds.append((args, slots, sorted(makers), first))
        return bound

    monkeypatch.setattr(launch_plan, "_is_compiled", lambda compiled: isinstance(compiled, _Compiled))
    monkeypatch.setattr(launch_plan.triton_launcher, "bind", bind)
    kernel = _Kernel()
    launch = launch_plan.Launch(kernel, (4,), {"BLOCK": 16, "OUT": None, "n": 7, "X": None}, {}, ("OUT", "X"),
                                {"X": lambda t: ("descriptor over", t)})  # fmt: skip
    x, out = torch.zeros(64), torch.zeros(64)
    launch(out, x)
    assert kernel.jit == [((4, 1, 1), (("descriptor over", x), 7, out, 16), {})]
    assert binds == [([None, 7, None, 16], (2, 0), [0], (out, x))]  # the template, per-call slots, descriptors
    launch(out, x)
    assert bound_calls == [((4, 1, 1), (out, x))] and not kernel.compiled
    declining.append(True)
    launch(out, x)
    assert kernel.compiled == [((4, 1, 1), (("descriptor over", x), 7, out, 16))]
    launch(torch.zeros(65)[1:], x)  # misaligned: neither the bound launch nor the runner
    assert len(bound_calls) == 2 and len(kernel.jit) == 2


_REUSED = """
import json, torch
from accelbridge.ops import reference
from accelbridge.torch_attention import mla_decode
diffs, plans = [], []
for dense in (True, False):
    for seed in range(3):  # one geometry, fresh values and lengths each call
        g = torch.Generator().manual_seed(seed)
        q = torch.randn(2, 1, 16, 576, generator=g).to(torch.bfloat16)
        if dense:
            cache = torch.randn(6, 64, 1, 576, generator=g).to(torch.bfloat16)
            table = torch.randperm(6, generator=g).to(torch.int32).view(2, 3)
            lens = torch.randint(0, 193, (2,), generator=g).to(torch.int32)
            kw = dict(block_table=table, cache_seqlens=lens, head_dim_v=512, causal=seed == 1)
            got = mla_decode.mla_decode(q, cache, table, lens, 576**-0.5, seed == 1, None, None, False, None)
        else:
            cache = torch.randn(4, 64, 1, 576, generator=g).to(torch.bfloat16)
            idx = torch.randint(-1, 256, (2, 1, 64), generator=g).to(torch.int32)
            sink = torch.randn(16, generator=g)
            kw = dict(block_table=None, cache_seqlens=None, head_dim_v=512, indices=idx, attn_sink=sink)
            got = mla_decode.mla_decode(q, cache, None, None, 576**-0.5, False, idx, None, False, sink)
        want = reference.flash_mla_with_kvcache(q, cache, softmax_scale=576**-0.5, **kw)
        finite = torch.isfinite(want[1])
        diffs.append(max(float((got[0].float() - want[0].float()).abs().max()),
                         float((got[1][finite] - want[1][finite]).abs().max()) if finite.any() else 0.0))
        assert torch.equal(torch.isfinite(got[1]), finite)
        plans.append(len(mla_decode._PLANS))
from accelbridge.torch_attention import prefill
from accelbridge.torch_attention.core import Masking
for step in range(3):  # decode steps over packed keys that grow: one plan (the kernel never reads their count)
    g = torch.Generator().manual_seed(10 + step)
    lens = [40 + step, 7 + step, 100 + step]
    q = torch.randn(3, 4, 64, generator=g).to(torch.bfloat16)
    k, v = (torch.randn(sum(lens), 2, 64, generator=g).to(torch.bfloat16) for _ in range(2))
    cu_q = torch.arange(4, dtype=torch.int32)
    cu_k = torch.tensor([0, *torch.tensor(lens).cumsum(0).tolist()], dtype=torch.int32)
    got, lse = prefill.prefill(q, k, v, cu_q, cu_k, 1, None, None, None, 0.125, Masking(causal=True), 0.0, None, True)
    want, want_lse = reference.flash_attn_varlen_func(q, k, v, cu_q, cu_k, softmax_scale=0.125, causal=True,
                                                      return_softmax_lse=True)
    diffs.append(max(float((got.float() - want.float()).abs().max()), float((lse - want_lse).abs().max())))
    plans.append(len(prefill._PLANS))
from accelbridge.torch_attention import decode
for step, length in enumerate((40, 41, 47, 600, 601)):  # transformers' cache, a view that grows a step at a time
    g = torch.Generator().manual_seed(20 + step)
    q = torch.randn(2, 1, 4, 64, generator=g).to(torch.bfloat16)
    k, v = (torch.randn(2, 2, length, 64, generator=g).to(torch.bfloat16).transpose(1, 2) for _ in range(2))
    lens = torch.full((2,), length, dtype=torch.int32)
    got, lse = decode.paged_decode(q, k, v, None, lens, None, None, None, 0.125, Masking(causal=True), 0.0, None)
    want, want_lse = reference.flash_attn_with_kvcache(q, k, v, softmax_scale=0.125, causal=True,
                                                       return_softmax_lse=True)
    diffs.append(max(float((got.float() - want.float()).abs().max()), float((lse - want_lse).abs().max())))
    plans.append(len(decode._PLANS))
from accelbridge.torch_attention import flash_attn_with_kvcache
before = len(prefill._PLANS)
for step, length in enumerate((40, 41, 47)):  # head dim 48: the decode kernel's dims are powers of two, so the
    g = torch.Generator().manual_seed(30 + step)  # cache is read by the prefill kernel, its rows as pages
    q = torch.randn(2, 1, 4, 48, generator=g).to(torch.bfloat16)
    k, v = (torch.randn(2, 2, length, 48, generator=g).to(torch.bfloat16).transpose(1, 2) for _ in range(2))
    got = flash_attn_with_kvcache(q, k, v, softmax_scale=0.125, causal=True)
    want = reference.flash_attn_with_kvcache(q, k, v, softmax_scale=0.125, causal=True)
    diffs.append(float((got.float() - want.float()).abs().max()))
    plans.append(len(prefill._PLANS) - before)
print(json.dumps({"diffs": diffs, "plans": plans}))
"""


@pytest.mark.skipif(interpreted.not_ready() is not None, reason=str(interpreted.not_ready()))
def test_a_plan_reused_across_calls_reads_each_calls_own_tensors():
    """Three calls of one dense MLA geometry (causal in one: another plan), three of one sparse geometry with a
    sink and three decode steps of the prefill kernel over packed keys that grow, each with fresh values, lengths,
    tables and indices: each agrees with the reference (the MLA tests' tolerance), through the plan the first call
    of its geometry made; then a contiguous cache read in place as it grows (transformers' (batch, kv heads, tokens,
    dim) cache as a (batch, tokens, kv heads, dim) view): one plan while its length keeps Triton's class and its
    split count (40 and 600 keys: two, with 47 and 601 sharing theirs), and so through the prefill kernel, which
    reads such a cache's rows as pages of its length."""
    result = interpreted.run(_REUSED)
    assert all(d < 2e-2 for d in result["diffs"]), result
    # seed 1 is causal: a geometry of its own; the growing cache: 40, 41 and 47 one plan, 600 and 601 another; the
    # same through the prefill kernel (head dim 48), its rows as pages: one plan
    assert result["plans"] == [1, 2, 2, 3, 3, 3, 1, 1, 1, 1, 1, 1, 2, 2, 1, 1, 1], result
