"""The default check level on the GPU: no device sync, CUDA-graph safe, device mismatches named."""

import pytest
import torch

from accelbridge import attention
from accelbridge.attention import InvalidArgumentError, checks
from tests.gpu.graphs import assert_replay_equals_eager

DEV = "cuda"


def _paged_decode(b=8, page=64, pages=16, hq=32, hk=8, d=128, seed=0):
    g = torch.Generator(device=DEV).manual_seed(seed)
    kc = torch.randn(b * pages, page, hk, d, device=DEV, generator=g, dtype=torch.bfloat16)
    vc = torch.randn(b * pages, page, hk, d, device=DEV, generator=g, dtype=torch.bfloat16)
    table = torch.randperm(b * pages, device=DEV, generator=g).reshape(b, pages).to(torch.int32)
    seqlens = torch.randint(1, page * pages - 1, (b,), dtype=torch.int32, device=DEV, generator=g)
    q = torch.randn(b, 1, hq, d, device=DEV, generator=g, dtype=torch.bfloat16)
    return q, kc, vc, table, seqlens


def _mla(b=4, hq=16, blocks=64, page=64, seed=3):
    g = torch.Generator(device=DEV).manual_seed(seed)
    kc = torch.randn(blocks, page, 1, 576, device=DEV, generator=g, dtype=torch.bfloat16)
    table = torch.arange(blocks, dtype=torch.int32, device=DEV).reshape(b, -1)
    seqlens = torch.tensor([64, 200, 513, 1000], dtype=torch.int32, device=DEV)
    q = torch.randn(b, 1, hq, 576, device=DEV, generator=g, dtype=torch.bfloat16)
    return q, kc, table, seqlens


def test_default_level_is_metadata_only():
    assert checks.level() == "cheap"


def test_decode_step_at_the_default_level_never_syncs():
    pytest.importorskip("sgl_kernel.flash_attn")
    q, kc, vc, table, seqlens = _paged_decode()
    meta = attention.get_scheduler_metadata(q.shape[0], 1, 1024, 32, 8, 128, seqlens, page_size=64, causal=True)
    attention.flash_attn_with_kvcache(q, kc, vc, cache_seqlens=seqlens, page_table=table, causal=True)  # resolve
    mq, mkc, mtable, mlens = _mla()
    mla_meta, splits = attention.get_mla_metadata(mlens, 16, 1)
    attention.flash_mla_with_kvcache(mq, mkc, mtable, mlens, 512, mla_meta, splits, causal=True)
    cu = torch.arange(9, dtype=torch.int32, device=DEV)
    torch.cuda.synchronize()
    torch.cuda.set_sync_debug_mode("error")
    try:
        for _ in range(3):
            attention.flash_attn_with_kvcache(q, kc, vc, cache_seqlens=seqlens, page_table=table, causal=True,
                                              scheduler_metadata=meta)  # fmt: skip
            attention.flash_attn_varlen_func(q[:, 0], kc[:8, 0], vc[:8, 0], cu, cu, 1, 1)
            attention.flash_mla_with_kvcache(mq, mkc, mtable, mlens, 512, mla_meta, splits, causal=True)
    finally:
        torch.cuda.set_sync_debug_mode("default")
    torch.cuda.synchronize()


def test_flashmla_decode_graph_equals_eager_at_the_default_level():
    pytest.importorskip("sgl_kernel.flash_mla")
    q, kc, table, seqlens = _mla()
    meta, splits = attention.get_mla_metadata(seqlens, 16, 1)
    out = torch.empty(4, 1, 16, 512, device=DEV, dtype=torch.bfloat16)

    def step():
        o, _ = attention.flash_mla_with_kvcache(q, kc, table, seqlens, 512, meta, splits, causal=True)
        out.copy_(o)

    assert_replay_equals_eager(step, out)


def test_device_mismatch_is_named_at_the_default_level():
    pytest.importorskip("sgl_kernel.flash_attn")
    q, kc, vc, table, seqlens = _paged_decode()
    with pytest.raises(InvalidArgumentError, match=r"k_cache/v_cache are on cpu/cuda:0 but q is on cuda:0"):
        attention.flash_attn_with_kvcache(q, kc.cpu(), vc, cache_seqlens=seqlens, page_table=table)
    cu = torch.arange(9, dtype=torch.int32, device=DEV)
    with pytest.raises(InvalidArgumentError, match=r"k/v are on cuda:0/cpu but q is on cuda:0"):
        attention.flash_attn_varlen_func(q[:, 0], kc[:8, 0], vc[:8, 0].cpu(), cu, cu, 1, 1)


def test_a_bad_dtype_the_kernel_rejects_is_named():
    """sgl-kernel validates dtypes itself (catalog `validates`); its error becomes the facade's named one."""
    pytest.importorskip("sgl_kernel.flash_attn")
    q, kc, vc, table, seqlens = _paged_decode()
    with pytest.raises(InvalidArgumentError, match="v_cache has dtype torch.float16 but q has torch.bfloat16"):
        attention.flash_attn_with_kvcache(q, kc, vc.half(), cache_seqlens=seqlens, page_table=table)
