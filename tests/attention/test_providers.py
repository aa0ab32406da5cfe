"""Every provider of SIGNATURES.md served by the facade, checked against the float64 oracle."""

import textwrap

import pytest
import torch

from accelbridge import attention, ops, platforms
from accelbridge.attention import flash_attn_varlen_func, flash_attn_with_kvcache, introspect

from .conftest import varlen_problem
from .hubkernels import build_local_kernel
from .oracle import attend_rows, close

# length-1 sequences, a sequence with no query rows, unequal q/k lengths
LENS_Q, LENS_K = [3, 1, 0, 5], [7, 1, 4, 5]


def overlay(tmp_path, monkeypatch, text):
    path = tmp_path / "overlay.yaml"
    path.write_text(textwrap.dedent(text))
    monkeypatch.setenv("ACCELBRIDGE_CATALOG_PATH", str(path))


def check_varlen(rng, ver=3, sinks=True, softcap=5.0, window=(3, 0), lse=True):
    q, k, v, cu_q, cu_k = varlen_problem(rng, LENS_Q, LENS_K)
    s = torch.randn(q.shape[1], generator=rng) if sinks else None
    cases = [dict(causal=True), dict(causal=False, window_size=window), dict(causal=True, softcap=softcap)]
    if sinks:
        cases.append(dict(causal=True, sinks=s))
    for kw in cases:
        out = torch.full_like(q, float("nan"))
        res = flash_attn_varlen_func(q, k, v, cu_q, cu_k, max(LENS_Q), max(LENS_K), ver=ver, out=out, **kw)
        assert res is out and not torch.isnan(out).any(), f"out not fully written for {kw}"
        for b in range(len(LENS_Q)):
            qs, ks = slice(cu_q[b], cu_q[b + 1]), slice(cu_k[b], cu_k[b + 1])
            expect = attend_rows(q[qs], k[ks], v[ks], q.shape[-1] ** -0.5, kw.get("causal", False),
                                 kw.get("window_size", (-1, -1)), kw.get("softcap", 0.0), kw.get("sinks"))  # fmt: skip
            close(out[qs], expect, f"seq {b} {kw}")
    if lse:
        o, lse_ = flash_attn_varlen_func(
            q, k, v, cu_q, cu_k, max(LENS_Q), max(LENS_K), ver=ver, return_softmax_lse=True
        )
        assert lse_.shape == (q.shape[1], q.shape[0]) and o.shape == q.shape
        plain = flash_attn_varlen_func(q, k, v, cu_q, cu_k, max(LENS_Q), max(LENS_K), ver=ver)
        assert isinstance(plain, torch.Tensor), "return normalised to out when no LSE asked"


def paged_cache(rng, batch=3, page=4, pages=4, hk=2, d=64, dtype=torch.bfloat16):
    k_cache = torch.randn(batch * pages + 2, page, hk, d, generator=rng).to(dtype)
    v_cache = torch.randn(batch * pages + 2, page, hk, d, generator=rng).to(dtype)
    perm = torch.randperm(batch * pages + 2, generator=rng)[: batch * pages]
    page_table = perm.reshape(batch, pages).to(torch.int32)
    return k_cache, v_cache, page_table


def gather(cache, pages, n):
    return cache[pages.long()].reshape(-1, *cache.shape[2:])[:n]


def check_paged_kvcache(rng, ver=3, append=True, hq=4):
    k_cache, v_cache, page_table = paged_cache(rng)
    batch = page_table.shape[0]
    seqlens = torch.tensor([5, 1, 9], dtype=torch.int32)
    q = torch.randn(batch, 2, hq, 64, generator=rng).to(torch.bfloat16)
    k_new = torch.randn(batch, 2, 2, 64, generator=rng).to(torch.bfloat16) if append else None
    v_new = torch.randn(batch, 2, 2, 64, generator=rng).to(torch.bfloat16) if append else None
    before_k = k_cache.clone()
    out = torch.full_like(q, float("nan"))
    res = flash_attn_with_kvcache(q, k_cache, v_cache, k=k_new, v=v_new, cache_seqlens=seqlens, page_table=page_table,
                                  causal=True, ver=ver, out=out)  # fmt: skip
    assert res is out and not torch.isnan(out).any()
    total = seqlens + (2 if append else 0)
    for b in range(batch):
        kb, vb = gather(k_cache, page_table[b], int(total[b])), gather(v_cache, page_table[b], int(total[b]))
        if append:
            close(kb[-2:], k_new[b].double(), "appended k", atol=0, rtol=0)
        close(out[b], attend_rows(q[b], kb, vb, 64**-0.5, True), f"kvcache seq {b}")
    if not append:
        assert torch.equal(before_k, k_cache)


# -- sgl-kernel (module) ----------------------------------------------------------------------
@pytest.mark.filterwarnings("ignore::accelbridge.attention.ProviderLoadWarning")  # simulated GPU, no kernels
def test_sgl_kernel_fa3(fixture_providers, rng):
    with platforms.simulated("cuda:sm90:toolkit=12.8"):
        assert attention.resolve("fa3.varlen").selected == "sgl-kernel"
        check_varlen(rng)
        check_paged_kvcache(rng)


def test_sgl_kernel_passes_hints_through(fixture_providers, rng):
    import sgl_kernel.flash_attn as sgl

    with platforms.simulated("cuda:sm90"):
        q, k, v, cu_q, cu_k = varlen_problem(rng, [2], [3])
        flash_attn_varlen_func(q, k, v, cu_q, cu_k, 2, 3, num_splits=4, pack_gqa=True)
    assert sgl.CALLS[-1] == ("varlen", 4, True)


@pytest.mark.filterwarnings("ignore:accelbridge. provider 'hub")  # the hub builds between them are not cached here
@pytest.mark.parametrize("sink_dtype", [torch.float32, torch.float16])
def test_sinks_sgl_kernel_cannot_take_go_to_the_next_provider(fixture_providers, rng, sink_dtype):
    """sgl-kernel's FA3 takes bfloat16 sinks only (H100: float32 ones raise in the kernel): the catalog refuses
    other dtypes, so gpt-oss's sinks in another dtype are computed by the next provider, with the reason."""
    import sgl_kernel.flash_attn as sgl

    with platforms.simulated("cuda:sm90"):
        q, k, v, cu_q, cu_k = varlen_problem(rng, [3, 5], [3, 5])
        for dtype, provider in ((torch.bfloat16, "sgl-kernel"), (sink_dtype, "torch")):
            sinks = torch.randn(q.shape[1], generator=rng).to(dtype)
            calls = len(sgl.CALLS)
            out = flash_attn_varlen_func(q, k, v, cu_q, cu_k, 5, 5, causal=True, sinks=sinks)
            for b in range(2):
                qs, ks = slice(int(cu_q[b]), int(cu_q[b + 1])), slice(int(cu_k[b]), int(cu_k[b + 1]))
                expect = attend_rows(q[qs].double(), k[ks].double(), v[ks].double(), q.shape[-1] ** -0.5, True,
                                     sinks=sinks.double())  # fmt: skip
                close(out[qs], expect, f"sinks {dtype} seq {b}")
            assert (len(sgl.CALLS) > calls) == (provider == "sgl-kernel"), dtype
        spec = ops.get("fa3.varlen")
        values = {n: p.default for n, p in spec.params.items()}
        values.update(q=q, k=k, v=v, cu_seqlens_q=cu_q, cu_seqlens_k=cu_k, causal=True, sinks=sinks)
        (why,) = introspect.provider("fa3.varlen", "sgl-kernel").call_reasons(values)
        assert "sinks" in why and "sgl-kernel's FA3 takes sinks in bfloat16 only" in why, why


def test_sgl_kernel_flashmla(fixture_providers, rng):
    with platforms.simulated("cuda:sm90"):
        batch, blocks, page = 2, 6, 64
        k_cache = torch.randn(blocks, page, 1, 576, generator=rng).to(torch.bfloat16)
        table = torch.tensor([[0, 2, 4], [1, 3, 5]], dtype=torch.int32)
        seqlens = torch.tensor([130, 70], dtype=torch.int32)
        q = torch.randn(batch, 2, 8, 576, generator=rng).to(torch.bfloat16)
        meta, splits = attention.get_mla_metadata(seqlens, 2 * 8, 1)
        assert isinstance(meta, torch.Tensor)
        out, lse = attention.flash_mla_with_kvcache(q, k_cache, table, seqlens, 512, meta, splits, causal=True)
        assert out.shape == (batch, 2, 8, 512) and lse.shape == (batch, 8, 2)
        for b in range(batch):
            kb = gather(k_cache, table[b], int(seqlens[b]))
            close(out[b], attend_rows(q[b], kb, kb[..., :512], 576**-0.5, True), f"mla seq {b}")
        assert attention.resolve("flashmla.kvcache").selected == "sgl-kernel"


# -- hub kernels through the real `kernels` package --------------------------------------------
@pytest.mark.filterwarnings("ignore::accelbridge.attention.ReferenceFallbackWarning")  # sinks: this order skips torch
def test_hub_fa3_via_path_source(fixture_providers, tmp_path, monkeypatch, rng):
    kernel_dir = build_local_kernel(tmp_path)
    overlay(tmp_path, monkeypatch, f"""
        schema: 1
        platform: cuda
        providers:
          local-fa3:
            source: {{path: {kernel_dir}}}
            ops:
              fa3.varlen:
                function: flash_attn_varlen_func
                adapt: {{rename: {{return_softmax_lse: return_attn_probs}}}}
              fa3.kvcache: {{function: flash_attn_with_kvcache}}
        order:
          fa3.varlen: [local-fa3, reference]
          fa3.kvcache: [local-fa3, reference]
        """)  # fmt: skip
    with platforms.simulated("cuda:sm90"):
        r = attention.resolve("fa3.varlen")
        assert r.selected == "local-fa3"
        # out is emulated (the hub build has none), sinks route to the reference (this order skips torch)
        check_varlen(rng)
        assert attention.resolve("fa3.varlen", sinks=True).selected == "reference"
        check_paged_kvcache(rng)
        o, lse, *rest = flash_attn_with_kvcache(*_small_kvcache(rng), return_softmax_lse=True)
        assert lse.dim() == 3 and len(rest) == 2


def _small_kvcache(rng):
    k_cache, v_cache, table = paged_cache(rng)
    q = torch.randn(3, 1, 4, 64, generator=rng).to(torch.bfloat16)
    return (
        q,
        k_cache,
        v_cache,
        None,
        None,
        None,
        None,
        None,
        torch.tensor([3, 4, 5], dtype=torch.int32),
        None,
        None,
        table,
    )


def test_hub_fa3_via_local_kernels_env(fixture_providers, tmp_path, monkeypatch, rng):
    kernel_dir = build_local_kernel(tmp_path)
    monkeypatch.setenv("LOCAL_KERNELS", f"kernels-community/flash-attn3={kernel_dir}")
    monkeypatch.setenv("ACCELBRIDGE_PROVIDERS", "fa3=hub-fa3")
    with platforms.simulated("cuda:sm90"):
        assert attention.resolve("fa3.varlen").selected == "hub-fa3"
        check_varlen(rng, sinks=False)
        # scheduler metadata with the hub's own names (num_heads_q / num_heads_kv)
        meta = attention.get_scheduler_metadata(3, 1, 64, 8, 2, 64, torch.tensor([5, 6, 7]), num_splits=2)
        assert meta.tolist() == [3, 8, 2, 2]


# -- FA4 ------------------------------------------------------------------------------------------
def test_fa4_cute(fixture_providers, rng):
    with platforms.simulated("cuda:sm100"):
        assert attention.resolve("fa4.varlen").selected == "flash-attn-4"
        check_varlen(rng, ver=4)
        check_paged_kvcache(rng, ver=4, append=False)
        # k/v append is not something FA4 does: the reference serves that call
        assert attention.resolve("fa4.kvcache", k=True).selected == "torch"
        check_paged_kvcache(rng, ver=4, append=True)


# -- vllm-flash-attn, aiter, mate -------------------------------------------------------------------
def test_vllm_flash_attn(fixture_providers, tmp_path, monkeypatch, rng):
    overlay(tmp_path, monkeypatch, """
        schema: 1
        platform: cuda
        providers:
          vllm-fa:
            source: {module: vllm_flash_attn}
            ops:
              fa3.varlen:
                function: flash_attn_varlen_func
                adapt:
                  rename: {qv: q_v, sinks: s_aux, page_table: block_table}
                  window: none-if-infinite
                  constants: {fa_version: 3}
        order:
          fa3.varlen: [vllm-fa, reference]
        """)  # fmt: skip
    with platforms.simulated("cuda:sm90"):
        assert attention.resolve("fa3.varlen").selected == "vllm-fa"
        check_varlen(rng)


def test_aiter_on_rocm(fixture_providers, rng):
    with platforms.simulated("rocm:gfx942"):
        assert attention.resolve("fa3.varlen").selected == "aiter"
        check_varlen(rng, sinks=False)
        assert attention.resolve("fa3.varlen", sinks=True).selected == "torch"


def test_mate_on_musa(fixture_providers, rng):
    import mate

    with platforms.simulated("musa:mp31"):
        assert attention.resolve("fa3.kvcache").selected == "mate"
        check_paged_kvcache(rng)
        # sinks are not a mate parameter: never pushed into its **kwargs
        s = torch.randn(4, generator=rng)
        q, k_cache, v_cache, *_ = _small_kvcache(rng)
        table, seqlens = _small_kvcache(rng)[-1], torch.tensor([3, 4, 5], dtype=torch.int32)
        flash_attn_with_kvcache(q, k_cache, v_cache, cache_seqlens=seqlens, page_table=table, sinks=s)
        assert all(not kw for kw in mate.SWALLOWED)
        meta = attention.get_scheduler_metadata(3, 1, 64, 8, 2, 64, seqlens, num_splits=3, page_size=4)
        assert meta.tolist() == [3, 8, 2, 64, 3, 64]  # each argument reached mate by its own name
    with platforms.simulated("musa:mp22"):
        r = attention.resolve("fa3.kvcache")
        assert r.selected == "torch"
        assert r.candidates[0]["reasons"] == ["needs arch >=mp31, this is mp22"]
