"""DeepSeek V3.2 / V4 sparse FP8 FlashMLA: the engine's exact call through the facade equals sgl-kernel direct."""

import pytest
import torch

from accelbridge import attention
from accelbridge.ops import reference
from accelbridge.ops.fp8_cache import quantize_fp8_cache
from tests.gpu.graphs import assert_replay_equals_eager

DEV = "cuda"


def _problem(d_qk, b=4, sq=1, hq=64, topk=128, extra_topk=64, blocks=64, seed=0):
    g = torch.Generator(device=DEV).manual_seed(seed)
    k = torch.randn(blocks, 64, 1, d_qk, device=DEV, generator=g, dtype=torch.bfloat16)
    extra = torch.randn(blocks // 2, 64, 1, d_qk, device=DEV, generator=g, dtype=torch.bfloat16)
    kw = dict(
        q=torch.randn(b, sq, hq, d_qk, device=DEV, generator=g, dtype=torch.bfloat16),
        k_cache=quantize_fp8_cache(k, d_qk), head_dim_v=512, block_table=None, cache_seqlens=None,
        softmax_scale=d_qk**-0.5, is_fp8_kvcache=True,
        indices=torch.randint(0, blocks * 64, (b, sq, topk), device=DEV, generator=g).to(torch.int32),
        topk_length=torch.randint(1, topk + 1, (b,), device=DEV, generator=g).to(torch.int32),
        attn_sink=torch.randn(hq, device=DEV, generator=g),
        extra_k_cache=quantize_fp8_cache(extra, d_qk),
        extra_indices_in_kvcache=torch.randint(0, blocks * 32, (b, sq, extra_topk), device=DEV, generator=g).to(
            torch.int32),
        extra_topk_length=torch.randint(1, extra_topk + 1, (b,), device=DEV, generator=g).to(torch.int32),
    )  # fmt: skip
    kw["indices"][0, 0, 7:] = -1  # invalid entries
    return kw


@pytest.mark.parametrize("d_qk", [576, 512], ids=["v32-576", "v4-512"])
@pytest.mark.parametrize("extra", [False, True], ids=["one-cache", "extra-cache"])
def test_deepseek_sparse_decode_call_equals_direct(d_qk, extra):
    fm = pytest.importorskip("sgl_kernel.flash_mla")
    kw = _problem(d_qk)
    if not extra:
        for name in ("extra_k_cache", "extra_indices_in_kvcache", "extra_topk_length"):
            kw[name] = None
    if d_qk == 576:  # V3.2: no dynamic topk length, no extra cache in FlashMLA's kernel (the catalog routes those on)
        if extra:
            pytest.skip("V3.2 has no extra cache: test_v32_calls_the_kernel_refuses_are_served_elsewhere")
        kw["topk_length"] = None
    # 512 bytes of latent: V4's layout or V4.1's, which the call's cache tells (a question without one names it)
    layout = {"kv_format": "V4"} if d_qk == 512 else {}
    assert attention.resolve("flashmla.kvcache", indices=True, dtype="bf16", head_dim=d_qk, **layout).selected == (
        "sgl-kernel"
    )
    d_meta = fm.get_mla_metadata()[0]
    direct = fm.flash_mla_with_kvcache(tile_scheduler_metadata=d_meta, **kw)
    meta = attention.get_mla_metadata()[0]
    facade = attention.flash_mla_with_kvcache(tile_scheduler_metadata=meta, **kw)
    assert torch.equal(facade[0], direct[0]) and torch.equal(facade[1], direct[1]), "facade differs from direct"
    ref_out, ref_lse = reference.flash_mla_with_kvcache(tile_scheduler_metadata=None, **kw)
    err = (facade[0].float() - ref_out.float()).abs()
    print(f"sparse d_qk={d_qk} extra={extra}: max abs err vs reference {float(err.max()):.3e}")
    assert torch.allclose(facade[0].float(), ref_out.float(), atol=2e-2, rtol=2e-2)
    finite = torch.isfinite(ref_lse)
    assert torch.equal(torch.isfinite(facade[1]), finite)
    assert torch.allclose(facade[1][finite], ref_lse[finite], atol=1e-2)


def test_v32_calls_the_kernel_refuses_are_served_elsewhere():
    pytest.importorskip("sgl_kernel.flash_mla")
    kw = _problem(576, b=2)
    assert attention.resolve("flashmla.kvcache", indices=True, topk_length=True, head_dim=576).selected == "torch"
    out, lse = attention.flash_mla_with_kvcache(tile_scheduler_metadata=attention.get_mla_metadata()[0], **kw)
    ref_out, _ = reference.flash_mla_with_kvcache(tile_scheduler_metadata=None, **kw)
    assert torch.allclose(out.float(), ref_out.float(), atol=2e-2, rtol=2e-2)


def test_sparse_decode_graph_with_its_metadata_equals_eager():
    pytest.importorskip("sgl_kernel.flash_mla")
    kw = _problem(512, seed=3)
    meta = attention.get_mla_metadata()[0]
    out = torch.empty(4, 1, 64, 512, device=DEV, dtype=torch.bfloat16)

    def step():
        out.copy_(attention.flash_mla_with_kvcache(tile_scheduler_metadata=meta, **kw)[0])

    assert_replay_equals_eager(step, out)


@pytest.mark.parametrize("d_qk", [576, 512])
def test_sparse_prefill_equals_direct(d_qk):
    fm = pytest.importorskip("sgl_kernel.flash_mla")
    g = torch.Generator(device=DEV).manual_seed(d_qk)
    s_q, s_kv, hq, topk = 256, 4096, 64, 128
    q = torch.randn(s_q, hq, d_qk, device=DEV, generator=g, dtype=torch.bfloat16)
    kv = torch.randn(s_kv, 1, d_qk, device=DEV, generator=g, dtype=torch.bfloat16)
    idx = torch.randint(0, s_kv, (s_q, 1, topk), device=DEV, generator=g).to(torch.int32)
    idx[::5, :, 100:] = -1
    direct = fm.flash_mla_sparse_fwd(q, kv, idx, d_qk**-0.5, d_v=512)
    got = attention.flash_mla_sparse_fwd(q, kv, idx, d_qk**-0.5, d_v=512)
    assert attention.resolve("flashmla.sparse_prefill", dtype="bf16", head_dim=d_qk).selected == "sgl-kernel"
    for a, b in zip(got, direct):
        assert torch.equal(a, b)
    ref_out, ref_max, ref_lse = reference.flash_mla_sparse_fwd(q, kv, idx, d_qk**-0.5, d_v=512)
    assert torch.allclose(got[0].float(), ref_out.float(), atol=2e-2, rtol=2e-2)
    assert torch.allclose(got[2], ref_lse, atol=1e-2) and torch.allclose(got[1], ref_max, atol=1e-2), "base-2 units"
    print(f"sparse prefill d_qk={d_qk}: max abs err {float((got[0].float() - ref_out.float()).abs().max()):.3e}, "
          f"lse err {float((got[2] - ref_lse).abs().max()):.3e}")  # fmt: skip


def test_dense_fp8_mla_through_the_facade_equals_direct():
    fm = pytest.importorskip("sgl_kernel.flash_mla")
    g = torch.Generator(device=DEV).manual_seed(9)
    b, hq, blocks = 4, 64, 64
    kc = torch.randn(blocks, 64, 1, 576, device=DEV, generator=g, dtype=torch.bfloat16).to(torch.float8_e4m3fn)
    table = torch.arange(blocks, dtype=torch.int32, device=DEV).reshape(b, -1)
    seqlens = torch.tensor([64, 200, 513, 1000], dtype=torch.int32, device=DEV)
    q = torch.randn(b, 1, hq, 576, device=DEV, generator=g, dtype=torch.bfloat16).to(torch.float8_e4m3fn)
    dq, dk = torch.tensor([0.75], device=DEV), torch.tensor([1.25], device=DEV)
    md, sd = fm.get_mla_metadata(seqlens, hq, 1, is_fp8_kvcache=True)
    direct = fm.flash_mla_with_kvcache(q, kc, table, seqlens, 512, md, sd, causal=True, descale_q=dq, descale_k=dk,
                                       is_fp8_kvcache=True)  # fmt: skip
    m, s = attention.get_mla_metadata(seqlens, hq, 1, is_fp8_kvcache=True)
    got = attention.flash_mla_with_kvcache(q, kc, table, seqlens, 512, m, s, causal=True, descale_q=dq, descale_k=dk,
                                           is_fp8_kvcache=True)  # fmt: skip
    assert torch.equal(got[0], direct[0])
    ref = reference.flash_mla_with_kvcache(q, kc, table, seqlens, 512, causal=True, descale_q=dq, descale_k=dk,
                                           is_fp8_kvcache=True)  # fmt: skip
    err = float((got[0].float() - ref[0].float()).abs().max())
    print(f"dense fp8 mla: max abs err vs reference {err:.3e}")
    assert torch.allclose(got[0].float(), ref[0].float(), atol=6e-2, rtol=6e-2)
