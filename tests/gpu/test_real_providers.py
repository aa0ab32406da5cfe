"""Real sgl-kernel FA3, FlashMLA and FA4 through the facade on a CUDA GPU (sm90)."""

import pytest
import torch

from accelbridge import attention, platforms
from accelbridge.ops import reference
from tests.gpu.graphs import assert_replay_equals_eager

DEV = "cuda"


def _need(module):
    return pytest.importorskip(module)


def rel_err(a, b):
    return ((a.float() - b.float()).norm() / b.float().norm()).item()


def varlen_inputs(lens, hq=32, hk=8, d=128, seed=0):
    g = torch.Generator(device=DEV).manual_seed(seed)
    cu = torch.tensor([0, *torch.tensor(lens).cumsum(0).tolist()], dtype=torch.int32, device=DEV)
    total = int(cu[-1])
    q = torch.randn(total, hq, d, device=DEV, generator=g, dtype=torch.bfloat16)
    k = torch.randn(total, hk, d, device=DEV, generator=g, dtype=torch.bfloat16)
    v = torch.randn(total, hk, d, device=DEV, generator=g, dtype=torch.bfloat16)
    return q, k, v, cu


def test_platform_is_real_cuda():
    p = platforms.current()
    assert p.name == "cuda" and not p.simulated and p.arch().family == "sm"


def test_sgl_fa3_varlen_facade_equals_direct_and_reference():
    fa = _need("sgl_kernel.flash_attn")
    assert attention.resolve("fa3.varlen").selected == "sgl-kernel"
    lens = [1, 17, 300, 1024]
    q, k, v, cu = varlen_inputs(lens)
    for kw in (dict(causal=True), dict(causal=False, window_size=(64, 0)), dict(causal=True, softcap=30.0)):
        direct = fa.flash_attn_varlen_func(q, k, v, cu, cu, max(lens), max(lens), **kw)
        out = torch.full_like(q, float("nan"))
        res = attention.flash_attn_varlen_func(q, k, v, cu, cu, max(lens), max(lens), out=out, **kw)
        assert res is out and torch.equal(out, direct), f"facade differs from direct for {kw}"
        ref = reference.flash_attn_varlen_func(q, k, v, cu, cu, **kw)
        assert rel_err(out, ref) < 1e-2, kw
    # sgl-kernel returns (out, softmax_lse, *rest): the canonical convention, passed through as is
    o, lse, *_ = attention.flash_attn_varlen_func(q, k, v, cu, cu, max(lens), max(lens), causal=True,
                                                  return_softmax_lse=True)  # fmt: skip
    assert torch.equal(o, fa.flash_attn_varlen_func(q, k, v, cu, cu, max(lens), max(lens), causal=True))
    assert lse.shape == (q.shape[1], q.shape[0])


def test_sgl_fa3_paged_kvcache_facade_equals_direct():
    fa = _need("sgl_kernel.flash_attn")
    g = torch.Generator(device=DEV).manual_seed(1)
    b, page, pages, hq, hk, d = 4, 64, 8, 32, 8, 128
    kc = torch.randn(b * pages, page, hk, d, device=DEV, generator=g, dtype=torch.bfloat16)
    vc = torch.randn(b * pages, page, hk, d, device=DEV, generator=g, dtype=torch.bfloat16)
    table = torch.randperm(b * pages, device=DEV, generator=g).reshape(b, pages).to(torch.int32)
    seqlens = torch.tensor([1, 77, 300, 511], dtype=torch.int32, device=DEV)
    q = torch.randn(b, 1, hq, d, device=DEV, generator=g, dtype=torch.bfloat16)
    direct = fa.flash_attn_with_kvcache(q, kc, vc, cache_seqlens=seqlens, page_table=table, causal=True)
    out = torch.full_like(q, float("nan"))
    res = attention.flash_attn_with_kvcache(q, kc, vc, cache_seqlens=seqlens, page_table=table, causal=True, out=out)
    assert res is out and torch.equal(out, direct)
    ref = reference.flash_attn_with_kvcache(q, kc, vc, cache_seqlens=seqlens, page_table=table, causal=True)
    assert rel_err(out, ref) < 1e-2


def test_fa4_varlen_through_facade():
    cute = _need("flash_attn.cute")
    assert attention.resolve("fa4.varlen").selected == "flash-attn-4"
    lens = [5, 128, 700]
    q, k, v, cu = varlen_inputs(lens, seed=2)
    direct, _ = cute.flash_attn_varlen_func(q, k, v, cu_seqlens_q=cu, cu_seqlens_k=cu, max_seqlen_q=max(lens),
                                            max_seqlen_k=max(lens), causal=True)  # fmt: skip
    out = torch.full_like(q, float("nan"))
    res = attention.flash_attn_varlen_func(q, k, v, cu, cu, max(lens), max(lens), causal=True, ver=4, out=out)
    assert res is out and torch.equal(out, direct), "keywords bound right: no cu_seqlens_q -> qv mix-up"
    assert rel_err(out, reference.flash_attn_varlen_func(q, k, v, cu, cu, causal=True)) < 1e-2
    o, lse = attention.flash_attn_varlen_func(q, k, v, cu, cu, max(lens), max(lens), causal=True, ver=4,
                                              return_softmax_lse=True)  # fmt: skip
    assert isinstance(o, torch.Tensor) and lse is not None


def test_flashmla_dense_decode_through_facade():
    fm = _need("sgl_kernel.flash_mla")
    g = torch.Generator(device=DEV).manual_seed(3)
    b, hq, blocks, page = 4, 16, 64, 64
    kc = torch.randn(blocks, page, 1, 576, device=DEV, generator=g, dtype=torch.bfloat16)
    table = torch.arange(blocks, dtype=torch.int32, device=DEV).reshape(b, -1)
    seqlens = torch.tensor([64, 200, 513, 1000], dtype=torch.int32, device=DEV)
    q = torch.randn(b, 1, hq, 576, device=DEV, generator=g, dtype=torch.bfloat16)
    meta_d, splits_d = fm.get_mla_metadata(seqlens, hq, 1)
    direct, _ = fm.flash_mla_with_kvcache(q, kc, table, seqlens, 512, meta_d, splits_d, causal=True)
    meta, splits = attention.get_mla_metadata(seqlens, hq, 1)
    out, lse = attention.flash_mla_with_kvcache(q, kc, table, seqlens, 512, meta, splits, causal=True)
    assert torch.equal(out, direct)
    assert rel_err(out, reference.flash_mla_with_kvcache(q, kc, table, seqlens, 512, causal=True)[0]) < 1e-2


def test_cuda_graph_decode_step_with_precomputed_metadata():
    _need("sgl_kernel.flash_attn")
    g = torch.Generator(device=DEV).manual_seed(4)
    b, page, pages, hq, hk, d = 8, 64, 16, 32, 8, 128
    kc = torch.randn(b * pages, page, hk, d, device=DEV, generator=g, dtype=torch.bfloat16)
    vc = torch.randn(b * pages, page, hk, d, device=DEV, generator=g, dtype=torch.bfloat16)
    table = torch.arange(b * pages, dtype=torch.int32, device=DEV).reshape(b, pages)
    seqlens = torch.randint(1, page * pages - 1, (b,), dtype=torch.int32, device=DEV, generator=g)
    q = torch.randn(b, 1, hq, d, device=DEV, generator=g, dtype=torch.bfloat16)
    meta = attention.get_scheduler_metadata(b, 1, page * pages, hq, hk, d, seqlens, page_size=page, causal=True)
    out = torch.empty_like(q)

    def step():
        attention.flash_attn_with_kvcache(q, kc, vc, cache_seqlens=seqlens, page_table=table, causal=True,
                                          scheduler_metadata=meta, out=out)  # fmt: skip

    assert_replay_equals_eager(step, out)


def test_scheduler_metadata_once_per_batch_removes_per_layer_prep():
    _need("sgl_kernel.flash_attn")
    from torch.profiler import ProfilerActivity, profile

    g = torch.Generator(device=DEV).manual_seed(5)
    b, page, pages, hq, hk, d, layers = 16, 64, 64, 32, 8, 128, 32
    kc = torch.randn(b * pages, page, hk, d, device=DEV, generator=g, dtype=torch.bfloat16)
    table = torch.arange(b * pages, dtype=torch.int32, device=DEV).reshape(b, pages)
    seqlens = torch.full((b,), 4000, dtype=torch.int32, device=DEV)
    q = torch.randn(b, 1, hq, d, device=DEV, generator=g, dtype=torch.bfloat16)

    def count(with_meta):
        with profile(activities=[ProfilerActivity.CUDA]) as prof:
            meta = None
            if with_meta:
                meta = attention.get_scheduler_metadata(b, 1, 4000, hq, hk, d, seqlens, page_size=page, causal=True)
            for _ in range(layers):
                attention.flash_attn_with_kvcache(q, kc, kc, cache_seqlens=seqlens, page_table=table, causal=True,
                                                  scheduler_metadata=meta)  # fmt: skip
            torch.cuda.synchronize()
        return sum(e.count for e in prof.key_averages() if e.device_type.name == "CUDA")

    count(True)  # warm-up
    without, with_meta = count(False), count(True)
    print(f"CUDA kernels for {layers} layers: {without} without metadata, {with_meta} with metadata once per batch")
    assert with_meta < without
