"""The torch provider on a real GPU: conformance of every case (its Triton kernels in bf16), the Triton
decode kernel against the batched path, and no device sync on the decode, prefill and MLA paths."""

import pytest
import torch

from accelbridge import attention
from accelbridge.ops import reference
from accelbridge.ops.flash_mla import quantize_fp8_cache
from accelbridge.testing import conformance
from accelbridge.torch_attention import (
    capabilities,
    decode,
    flash_attn_varlen_func,
    flash_attn_with_kvcache,
    flash_mla_with_kvcache,
    mla_decode,
    prefill,
)
from accelbridge.torch_attention.core import Call, Masking, attend
from accelbridge.torch_attention.layout import gather_pages

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
    out, want = out.float(), want.float()  # the kernel returns float32, SDPA-backed paths the input dtype
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
