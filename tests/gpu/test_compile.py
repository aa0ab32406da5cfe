"""torch.compile on the GPU: fullgraph inductor over the facade equals eager, for sgl-kernel and the torch provider.

FA3 prefill and paged decode (sgl-kernel, torch provider incl. its Triton decode kernel) and
FlashMLA dense and sparse decode (sgl-kernel), on the conformance cases' inputs (the kernels'
conventions); a mode="reduce-overhead" decode step (CUDA graphs) equals eager; throughput of the
compiled facade vs the direct kernel is ``compile_bench.py`` (docs/benchmarks.md).
"""

import pytest
import torch

from accelbridge import attention, ops
from accelbridge.ops.cases import Inputs

DEV = torch.device("cuda")
torch._dynamo.config.cache_size_limit = 256


def _inputs(op, name, seed=0):
    spec = ops.get(op)
    case = next(c for c in spec.cases(False) if c.name == name)
    kw = spec.inputs(case, Inputs(case, seed, DEV))
    if "return_softmax_lse" in spec.params:
        kw["return_softmax_lse"] = True
    return kw


def _clone(kw):
    return {k: (v.clone() if isinstance(v, torch.Tensor) else v) for k, v in kw.items()}


def _equal(got, eager):
    """Compiled calls return (out, lse); sgl-kernel's eager FA3 may add its split accumulators after them."""
    a, b = (got if isinstance(got, tuple) else (got,)), (eager if isinstance(eager, tuple) else (eager,))
    for x, y in zip(a, b[: len(a)], strict=True):
        assert x.shape == y.shape and x.dtype == y.dtype
        assert torch.equal(torch.nan_to_num(x.float(), 7.0), torch.nan_to_num(y.float(), 7.0))


CASES = [("fa3.varlen", "gqa4-causal", "sgl-kernel"), ("fa3.varlen", "gqa4-causal", "torch"),
         ("fa3.kvcache", "paged-decode", "sgl-kernel"), ("fa3.kvcache", "paged-decode", "torch"),
         ("fa3.kvcache", "page64", "torch"), ("flashmla.kvcache", "decode", "sgl-kernel"),
         ("flashmla.kvcache", "sparse-v32", "sgl-kernel"), ("flashmla.kvcache", "sparse-v4", "sgl-kernel")]  # fmt: skip


@pytest.mark.parametrize("op, name, provider", CASES, ids=[f"{o}-{n}-{p}" for o, n, p in CASES])
def test_fullgraph_inductor_equals_eager(monkeypatch, op, name, provider):
    pytest.importorskip("sgl_kernel")
    monkeypatch.setenv("ACCELBRIDGE_PROVIDERS", f"{op}={provider}")
    attention.reset()
    kw = _inputs(op, name)
    spec = ops.get(op)
    if spec.plan is not None and spec.plan.producer_args is not None:  # FlashMLA: planned outside the graph
        meta = attention.get_mla_metadata(**spec.plan.producer_args(spec.with_defaults(kw)))
        kw.update(zip(spec.plan.result_params, meta))
    fn = attention.function(op)
    eager = fn(**_clone(kw))
    assert attention.resolve(op).selected == provider
    torch._dynamo.reset()
    explained = torch._dynamo.explain(lambda kw: fn(**kw))(_clone(kw))
    assert explained.graph_break_count == 0 and explained.graph_count == 1
    torch._dynamo.reset()
    got = torch.compile(lambda kw: fn(**kw), fullgraph=True)(_clone(kw))
    _equal(got, eager)


@pytest.mark.parametrize("provider", ["sgl-kernel", "torch"])
def test_reduce_overhead_decode_step_equals_eager(monkeypatch, provider):
    pytest.importorskip("sgl_kernel")
    monkeypatch.setenv("ACCELBRIDGE_PROVIDERS", f"fa3={provider}")
    attention.reset()
    kw = _inputs("fa3.kvcache", "paged-decode")
    kw["return_softmax_lse"] = False
    eager = attention.flash_attn_with_kvcache(**kw)
    for t in (kw["k_cache"], kw["v_cache"], kw["page_table"], kw["cache_seqlens"]):
        torch._dynamo.mark_static_address(t)  # persistent engine buffers: CUDA graphs read them in place
    torch._dynamo.reset()
    step = torch.compile(lambda q: attention.flash_attn_with_kvcache(**{**kw, "q": q}), mode="reduce-overhead",
                         fullgraph=True)  # fmt: skip
    for _ in range(3):  # warm-up, record, replay
        got = step(kw["q"]).clone()
    _equal(got, eager)
