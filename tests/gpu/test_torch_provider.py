"""The torch provider on a real GPU: conformance of every case (its Triton kernels in bf16), the Triton
decode kernel against the batched path, and no device sync on the decode, prefill and MLA paths."""

import dataclasses

import pytest
import torch

from accelbridge import attention
from accelbridge.ops import reference
from accelbridge.ops.fp8_cache import quantize_fp8_cache
from accelbridge.ops.layout import gather_pages
from accelbridge.testing import conformance
from accelbridge.torch_attention import (
    capabilities,
    decode,
    dense,
    fitting,
    flash_attn_varlen_func,
    flash_attn_with_kvcache,
    flash_mla_with_kvcache,
    launch_plan,
    mla_decode,
    prefill,
)
from accelbridge.torch_attention.core import Call, Masking, attend

DEV = torch.device("cuda")


@pytest.mark.parametrize("case", conformance.cases(), ids=str)
def test_torch_provider_conforms_on_the_gpu(case):
    conformance.assert_conforms(case, "torch")


def test_capabilities_are_read_from_this_torch():
    caps = capabilities.of(DEV)
    print("\n".join(caps.describe()))
    assert caps.triton == (pytest.importorskip("triton") is not None)
    from torch.nn.attention import varlen

    assert caps.has_varlen == hasattr(varlen, "varlen_attn")


DECODES = [(1, (-1, -1), 0.0, False), (4, (-1, -1), 0.0, False), (1, (100, 0), 0.0, False), (2, (-1, -1), 30.0, True)]


@pytest.mark.parametrize("lq, window, softcap, sinks", DECODES)
def test_triton_decode_kernel_in_bf16(lq, window, softcap, sinks):
    g = torch.Generator(device=DEV).manual_seed(lq)
    b, hq, hk, d, page = 6, 32, 8, 128, 64
    lens = torch.tensor([1, 700, 4096, 33, 2048, 0], dtype=torch.int32, device=DEV)
    pages = 4096 // page + 1
    kc = torch.randn(b * pages, page, hk, d, device=DEV, generator=g).to(torch.bfloat16)
    vc = torch.randn(b * pages, page, hk, d, device=DEV, generator=g).to(torch.bfloat16)
    table = torch.randperm(b * pages, device=DEV, generator=g).to(torch.int32).view(b, pages)
    q = torch.randn(b, lq, hq, d, device=DEV, generator=g).to(torch.bfloat16)
    sk = torch.randn(hq, device=DEV, generator=g) if sinks else None
    q_len = torch.full((b,), lq, dtype=torch.int32, device=DEV)
    mask = Masking.of(True, window, 0)
    rows = torch.arange(b, dtype=torch.int32, device=DEV)
    out, lse = decode.paged_decode(q, kc, vc, q_len, lens, None, rows, table, d**-0.5, mask, softcap, sk)
    keys, values = gather_pages(kc, table, lens), gather_pages(vc, table, lens)
    want, want_lse = attend(Call(q, keys, values, q_len, lens, d**-0.5, mask, softcap=softcap, sinks=sk,
                                 want_lse=True))  # fmt: skip
    out, want = out.float(), want.float()  # the kernel returns bf16, SDPA-backed paths the input dtype
    assert torch.allclose(out, want, atol=1e-2, rtol=1e-2), float((out - want).abs().max())
    finite = torch.isfinite(want_lse)
    assert torch.equal(torch.isfinite(lse), finite)
    assert torch.allclose(lse[finite], want_lse[finite], atol=1e-3)


def test_decode_prefill_and_mla_paths_never_sync():
    b, hq, hk, d, page, ctx = 16, 32, 8, 128, 64, 1024
    kc = torch.randn(b * ctx // page, page, hk, d, device=DEV, dtype=torch.bfloat16)
    vc = torch.randn_like(kc)
    table = torch.randperm(b * ctx // page, device=DEV).to(torch.int32).view(b, -1)
    lens = torch.full((b,), ctx - 8, dtype=torch.int32, device=DEV)
    q = torch.randn(b, 1, hq, d, device=DEV, dtype=torch.bfloat16)
    k_new = torch.randn(b, 1, hk, d, device=DEV, dtype=torch.bfloat16)
    cu = torch.arange(0, 9 * 256, 256, dtype=torch.int32, device=DEV)
    pq = torch.randn(8 * 256, hq, d, device=DEV, dtype=torch.bfloat16)
    pk = torch.randn(8 * 256, hk, d, device=DEV, dtype=torch.bfloat16)
    mq = torch.randn(b, 1, 16, 576, device=DEV, dtype=torch.bfloat16)
    mkc = torch.randn(b * ctx // 64, 64, 1, 576, device=DEV, dtype=torch.bfloat16)
    mtable = torch.randperm(b * ctx // 64, device=DEV).to(torch.int32).view(b, -1)
    fp8 = quantize_fp8_cache(mkc, 576)
    idx = torch.randint(-1, b * ctx, (b, 1, 256), device=DEV, dtype=torch.int32)
    calls = [lambda: flash_attn_with_kvcache(q, kc, vc, k_new, k_new, cache_seqlens=lens, page_table=table,
                                             causal=True),
             lambda: flash_attn_varlen_func(pq, pk, pk, cu, cu, 256, 256, causal=True),
             lambda: flash_mla_with_kvcache(mq, mkc, mtable, lens, 512, causal=True),
             lambda: flash_mla_with_kvcache(mq, fp8, None, None, 512, is_fp8_kvcache=True, indices=idx)]  # fmt: skip
    for call in calls:
        call()  # compile
    torch.cuda.synchronize()
    torch.cuda.set_sync_debug_mode("error")
    try:
        for call in calls:
            call()
    finally:
        torch.cuda.set_sync_debug_mode("default")
    torch.cuda.synchronize()


def test_torch_serves_what_sgl_kernel_lacks_on_this_gpu():
    """FA4's kvcache with new keys is not flash-attn-4's: the torch provider serves it, not the reference."""
    assert attention.resolve("fa4.kvcache", k=True).selected in ("torch", "flash-attn-4")
    q = torch.randn(4, 1, 8, 128, device=DEV, dtype=torch.bfloat16)
    kc = torch.randn(4, 256, 2, 128, device=DEV, dtype=torch.bfloat16)
    vc = torch.randn_like(kc)
    lens = torch.tensor([3, 100, 255, 0], dtype=torch.int32, device=DEV)
    out = flash_attn_with_kvcache(q, kc, vc, cache_seqlens=lens, causal=True)
    want = reference.flash_attn_with_kvcache(q, kc, vc, cache_seqlens=lens, causal=True)
    assert torch.allclose(out.float(), want.float(), atol=2e-2, rtol=2e-2)


def test_the_triton_kernels_serve_prefill_and_mla_decode_here(monkeypatch):
    served = []
    for module, name in ((prefill, "prefill"), (mla_decode, "mla_decode")):
        launch = getattr(module, name)
        monkeypatch.setattr(
            module, name, lambda *a, _launch=launch, _name=name, **k: served.append(_name) or _launch(*a, **k)
        )
    q = torch.randn(300, 8, 128, device=DEV, dtype=torch.bfloat16)
    cu = torch.tensor([0, 100, 300], dtype=torch.int32, device=DEV)
    flash_attn_varlen_func(q, q[:, :2], q[:, :2], cu, cu, 200, 200, causal=True)
    mq = torch.randn(2, 1, 16, 576, device=DEV, dtype=torch.bfloat16)
    mkc = torch.randn(4, 64, 1, 576, device=DEV, dtype=torch.bfloat16)
    table = torch.arange(4, dtype=torch.int32, device=DEV).view(2, 2)
    flash_mla_with_kvcache(mq, mkc, table, torch.tensor([70, 128], dtype=torch.int32, device=DEV), 512, causal=True)
    assert served == ["prefill", "mla_decode"]


VIEWS = [((512, 512, 512, 512), 0, False), ((512, 500), 12, True), ((500, 512), 12, False)]


@pytest.mark.parametrize("lens, tail, given", VIEWS, ids=["one-length", "one-off-its-rows", "none-on-their-rows"])
def test_dense_prefill_over_views_of_the_rows_in_bf16(monkeypatch, lens, tail, given):
    """batch x 512 rows: cuDNN's SDPA on views of them, the prefill kernel computing each sequence off its rows
    [b * 512, (b + 1) * 512) and zeroing the rows past the last one."""
    served = []
    launch = dense._over_views
    monkeypatch.setattr(dense, "_over_views", lambda *a, **k: served.append(1) or launch(*a, **k))
    g = torch.Generator(device=DEV).manual_seed(len(lens) + tail)
    cu = torch.tensor([0, *torch.tensor(lens).cumsum(0).tolist()], dtype=torch.int32, device=DEV)
    total = sum(lens) + tail
    q = torch.randn(total, 16, 128, device=DEV, generator=g).to(torch.bfloat16)
    k, v = (torch.randn(total, 4, 128, device=DEV, generator=g).to(torch.bfloat16) for _ in range(2))
    out = torch.full_like(q, float("nan")) if given else None
    got = flash_attn_varlen_func(q, k, v, cu, cu, 512, 512, causal=True, out=out)
    want = reference.flash_attn_varlen_func(q, k, v, cu, cu, causal=True)
    assert served == [1] and not got.isnan().any() and (out is None or got.data_ptr() == out.data_ptr())
    assert torch.allclose(got.float(), want.float(), atol=1e-2, rtol=1e-2), float((got.float() - want).abs().max())


CHUNKS = [(True, (-1, -1), False), (False, (-1, -1), False), (True, (300, 0), True)]


@pytest.mark.parametrize("paged, window, sinks", CHUNKS, ids=["paged", "contiguous", "window-sinks"])
def test_chunked_prefill_over_a_cache_runs_the_prefill_kernel_in_bf16(monkeypatch, paged, window, sinks):
    served = []
    launch = prefill.prefill
    monkeypatch.setattr(prefill, "prefill", lambda *a, **k: served.append(1) or launch(*a, **k))
    g = torch.Generator(device=DEV).manual_seed(7)
    b, lq, hq, hk, d, page = 3, 256, 32, 8, 128, 64
    lens = torch.tensor([0, 700, 3000], dtype=torch.int32, device=DEV)
    pages = (3000 + lq) // page + 1  # per sequence: its cache and the chunk
    rnd = lambda *shape: torch.randn(*shape, device=DEV, generator=g).to(torch.bfloat16)  # noqa: E731
    q, k_new, v_new = rnd(b, lq, hq, d), rnd(b, lq, hk, d), rnd(b, lq, hk, d)
    extra = {}
    if paged:
        kc, vc = rnd(b * pages, page, hk, d), rnd(b * pages, page, hk, d)
        extra["page_table"] = torch.randperm(b * pages, device=DEV, generator=g).to(torch.int32).view(b, pages)
    else:
        kc, vc = rnd(b, pages * page, hk, d), rnd(b, pages * page, hk, d)
    if sinks:
        extra["sinks"] = torch.randn(hq, device=DEV, generator=g)
    kw = dict(k=k_new, v=v_new, cache_seqlens=lens, causal=True, window_size=window, return_softmax_lse=True, **extra)
    out = torch.full((b, lq, hq, d), float("nan"), device=DEV, dtype=torch.bfloat16)
    kc_got, vc_got = kc.clone(), vc.clone()
    got, lse = flash_attn_with_kvcache(q, kc_got, vc_got, out=out, **kw)
    want, want_lse = reference.flash_attn_with_kvcache(q, kc.clone(), vc.clone(), **kw)
    assert served == [1] and got is out and not out.isnan().any()
    got, want = got.float(), want.float()
    assert torch.allclose(got, want, atol=1e-2, rtol=1e-2), float((got - want).abs().max())
    finite = torch.isfinite(want_lse)
    assert torch.equal(torch.isfinite(lse), finite)
    assert torch.allclose(lse[finite], want_lse[finite], atol=1e-3)


def test_sparse_fp8_mla_conforms_with_each_output_block(monkeypatch):
    """Sparse FP8 MLA with output blocks of 256 and 512: invalid and out-of-range indices, a topk length, a sink."""
    g = torch.Generator(device=DEV).manual_seed(3)
    b, hq, topk, blocks = 4, 64, 256, 64
    cache = quantize_fp8_cache(torch.randn(blocks, 64, 1, 576, device=DEV, generator=g).to(torch.bfloat16), 576)
    q = torch.randn(b, 1, hq, 576, device=DEV, generator=g).to(torch.bfloat16)
    idx = torch.randint(0, blocks * 64, (b, 1, topk), device=DEV, generator=g).to(torch.int32)
    idx[0, 0, 5:] = -1
    idx[1, 0, ::3] = blocks * 64 + 17  # past the cache
    idx[2] = -1  # a row with no key
    kw = dict(block_table=None, cache_seqlens=None, head_dim_v=512, softmax_scale=576**-0.5, is_fp8_kvcache=True,
              indices=idx, topk_length=torch.tensor([topk, 100, 7, 1], dtype=torch.int32, device=DEV),
              attn_sink=torch.randn(hq, device=DEV, generator=g))  # fmt: skip
    want, want_lse = reference.flash_mla_with_kvcache(q, cache, **kw)
    for dv_block in (256, 512):
        config = (64, 64, 8, 1, dv_block)
        monkeypatch.setattr(mla_decode, "_configs", lambda *_a, config=config: (config,))
        got, lse = flash_mla_with_kvcache(q, cache, **kw)
        err = float((got.float() - want.float()).abs().max())
        assert torch.allclose(got.float(), want.float(), atol=2e-2, rtol=2e-2), (dv_block, err)
        finite = torch.isfinite(want_lse)
        assert torch.equal(torch.isfinite(lse), finite) and torch.allclose(lse[finite], want_lse[finite], atol=1e-2)


def test_a_launch_config_too_big_for_this_gpu_passes_to_the_next(monkeypatch, caplog):
    """Each kernel's first config made too big for any GPU (Triton refuses it before launching): the next runs,
    the result is right, and each kernel says so once."""
    too_big = {prefill: (256, 128, 8, 4), decode: (1024, 4, 1), mla_decode: (64, 128, 8, 3, 512)}
    monkeypatch.setattr(fitting, "_TOO_BIG", set())
    for module, big in too_big.items():
        monkeypatch.setattr(module, "_configs", lambda *a, _big=big, _own=module._configs: (_big, *_own(*a)))
    g = torch.Generator(device=DEV).manual_seed(0)
    q = torch.randn(400, 8, 128, device=DEV, generator=g).to(torch.bfloat16)
    cu = torch.tensor([0, 100, 400], dtype=torch.int32, device=DEV)
    dq = torch.randn(3, 1, 8, 128, device=DEV, generator=g).to(torch.bfloat16)
    kc = torch.randn(12, 64, 2, 128, device=DEV, generator=g).to(torch.bfloat16)
    table = torch.randperm(12, device=DEV, generator=g).to(torch.int32).view(3, 4)
    lens = torch.tensor([1, 130, 256], dtype=torch.int32, device=DEV)
    mq = torch.randn(2, 1, 16, 576, device=DEV, generator=g).to(torch.bfloat16)
    mkc = torch.randn(4, 64, 1, 576, device=DEV, generator=g).to(torch.bfloat16)
    mtable = torch.arange(4, dtype=torch.int32, device=DEV).view(2, 2)
    mlens = torch.tensor([70, 128], dtype=torch.int32, device=DEV)
    paged = {"cache_seqlens": lens, "page_table": table, "causal": True}
    calls = [
        (lambda: flash_attn_varlen_func(q, q[:, :2], q[:, :2], cu, cu, 300, 300, causal=True),
         lambda: reference.flash_attn_varlen_func(q, q[:, :2], q[:, :2], cu, cu, causal=True)),
        (lambda: flash_attn_with_kvcache(dq, kc, kc, **paged),
         lambda: reference.flash_attn_with_kvcache(dq, kc, kc, **paged)),
        (lambda: flash_mla_with_kvcache(mq, mkc, mtable, mlens, 512, causal=True)[0],
         lambda: reference.flash_mla_with_kvcache(mq, mkc, mtable, mlens, 512, causal=True)[0]),
    ]  # fmt: skip
    with caplog.at_level("WARNING", logger="accelbridge"):
        for ours, theirs in calls:
            got, want = ours().float(), theirs().float()
            assert torch.allclose(got, want, atol=2e-2, rtol=2e-2), float((got - want).abs().max())
    said = [r.getMessage() for r in caplog.records if "does not fit this GPU" in r.getMessage()]
    assert len(said) == 3 and all("shared memory" in s for s in said), said


SM90 = [(4, 1, 128, [4096, 1, 64, 0], False, torch.bfloat16), (3, 2, 128, [130, 700, 2], True, torch.bfloat16),
        (2, 1, 40, [1000, 77], True, torch.float16), (64, 1, 128, [1500] * 64, False, torch.bfloat16)]  # fmt: skip


@pytest.mark.parametrize("b, sq, hq, lens, causal, dtype", SM90, ids=["tails-empty", "causal-sq2", "40-fp16", "wave"])
def test_dense_mla_runs_the_gluon_kernel_on_sm90_and_matches_the_triton_one(monkeypatch, b, sq, hq, lens, causal,
                                                                            dtype):  # fmt: skip
    """Dense MLA decode on sm90: the Gluon kernel serves (whole tiles by TMA, the partial last by masked loads,
    empty sequences, masked heads, splits), within the MLA tests' 2e-2 of the reference, and agrees with the
    Triton TMA kernel; unused table entries are poison (out of range) and never read."""
    caps = capabilities.of(DEV)
    if not caps.gluon_sm90:
        pytest.skip(caps.missing.get("Gluon sm90 kernel", "no TMA"))
    served = []
    kernel = mla_decode._sm90_kernel
    monkeypatch.setattr(mla_decode, "_sm90_kernel", lambda: served.append(1) or kernel())
    monkeypatch.setattr(mla_decode, "_PLANS", launch_plan.Plans())  # the route is chosen when a geometry is planned
    g = torch.Generator(device=DEV).manual_seed(b * 100 + hq)
    pages = max(lens) // 64 + 1
    q = torch.randn(b, sq, hq, 576, device=DEV, generator=g).to(dtype)
    kc = torch.randn(b * pages + 1, 64, 1, 576, device=DEV, generator=g).to(dtype)
    table = torch.randperm(b * pages, device=DEV, generator=g).to(torch.int32).view(b, pages)
    cache_lens = torch.tensor(lens, dtype=torch.int32, device=DEV)
    for i, n in enumerate(lens):
        if n % 64:  # the last page's slots past the sequence
            kc[table[i, n // 64], n % 64 :] = float("nan")
        table[i, (n + 63) // 64 :] = 1 << 30  # past the sequence: never a key
    args = (q, kc, table, cache_lens, 576**-0.5, causal, None, None, False, None)
    got, lse = mla_decode.mla_decode(*args)
    want, want_lse = reference.flash_mla_with_kvcache(q, kc, table, cache_lens, 512, causal=causal)
    assert served and not got.isnan().any()
    assert torch.allclose(got.float(), want.float(), atol=2e-2, rtol=2e-2), float((got.float() - want).abs().max())
    finite = torch.isfinite(want_lse)
    assert torch.equal(torch.isfinite(lse), finite) and torch.allclose(lse[finite], want_lse[finite], atol=1e-3)
    monkeypatch.setattr(capabilities, "of", lambda d: dataclasses.replace(caps, gluon_sm90=False))
    triton_out = mla_decode.mla_decode(*args)[0]
    assert len(served) == 1 and torch.allclose(got.float(), triton_out.float(), atol=2e-2, rtol=2e-2)
