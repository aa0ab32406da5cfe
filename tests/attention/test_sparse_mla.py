"""DeepSeek V3.2 / V4 sparse FP8 FlashMLA through the facade: the engine's exact call, its layouts and rules."""

import math

import pytest
import torch

from accelbridge import attention, platforms, torch_attention
from accelbridge.attention import InvalidArgumentError
from accelbridge.ops import reference
from accelbridge.ops.fp8_cache import quantize_fp8_cache
from accelbridge.ops.reference import gather_fp8_tokens
from accelbridge.testing import conformance


def _cache(d_qk, blocks=6, block_size=64, seed=0):
    g = torch.Generator().manual_seed(seed)
    k = (torch.randn(blocks, block_size, 1, d_qk, generator=g) * 2).to(torch.bfloat16)
    return k, quantize_fp8_cache(k, d_qk)


@pytest.mark.parametrize("d_qk, bytes_per_token", [(576, 656), (512, 584)])
def test_layouts_round_trip_token_by_token(d_qk, bytes_per_token):
    k, fp8 = _cache(d_qk)
    assert fp8.dtype == torch.float8_e4m3fn and fp8.shape == (6, 64, 1, bytes_per_token)
    if d_qk == 512:  # V4: each block padded to a multiple of 576 bytes
        assert fp8.stride(0) == math.ceil(64 * 584 / 576) * 576
    tokens = torch.tensor([0, 5, 63, 64, 200, 383])
    got = gather_fp8_tokens(fp8, tokens, d_qk)
    want = k.reshape(-1, d_qk)[tokens].float()
    nope = 512 if d_qk == 576 else 448
    assert torch.equal(got[:, nope:], want[:, nope:]), "the bf16 rope part is stored as is"
    assert torch.allclose(got[:, :nope], want[:, :nope], rtol=0.07, atol=0.02), "e4m3 with power-of-two scales"


def _oracle(q, cache_bf16, indices, topk_length, sink, scale, d_v=512):
    """float64, from the unquantised cache's FP8-rounded values: gather, mask, softmax, sink."""
    b, sq, hq, d = q.shape
    flat = cache_bf16.reshape(-1, d).double()
    out = torch.zeros(b, sq, hq, d_v, dtype=torch.float64)
    lse = torch.full((b, hq, sq), math.inf, dtype=torch.float64)
    for i in range(b):
        for s in range(sq):
            idx = indices[i, s].tolist()
            n = len(idx) if topk_length is None else int(topk_length[i])
            keys = [flat[t] for t in idx[:n] if t >= 0]
            if not keys:
                continue
            kk = torch.stack(keys)
            logits = (kk @ q[i, s].double().T).T * scale  # (hq, n)
            m = torch.logsumexp(logits, -1)
            o = torch.softmax(logits, -1) @ kk[:, :d_v]
            if sink is not None:
                o = o / (1 + torch.exp(sink.double() - m))[:, None]
            out[i, s], lse[i, :, s] = o, m
    return out, lse


@pytest.mark.parametrize("d_qk", [576, 512])
def test_deepseek_v4_call_through_the_facade(d_qk):
    """The engine's exact call: get_mla_metadata() with no arguments, block_table/cache_seqlens None."""
    g = torch.Generator().manual_seed(d_qk)
    k, swa = _cache(d_qk, seed=1)
    _, extra = _cache(d_qk, blocks=4, seed=2)
    rounded = torch.cat([gather_fp8_tokens(swa, torch.arange(384), d_qk)]).reshape(6, 64, 1, d_qk)
    b, sq, hq, topk = 2, 2, 16, 32
    q = torch.randn(b, sq, hq, d_qk, generator=g).to(torch.bfloat16)
    indices = torch.randint(0, 384, (b, sq, topk), generator=g).to(torch.int32)
    indices[0, 1, 5:] = -1
    lengths = torch.tensor([topk, 20], dtype=torch.int32)
    sink = torch.randn(hq, generator=g)
    scale = d_qk**-0.5
    meta = attention.get_mla_metadata()[0]
    o = attention.flash_mla_with_kvcache(
        q=q, k_cache=swa, head_dim_v=512, block_table=None, cache_seqlens=None, tile_scheduler_metadata=meta,
        softmax_scale=scale, is_fp8_kvcache=True, indices=indices, topk_length=lengths, attn_sink=sink,
        extra_k_cache=extra, extra_indices_in_kvcache=torch.full((b, sq, 8), -1, dtype=torch.int32),
        extra_topk_length=torch.zeros(b, dtype=torch.int32))[0]  # fmt: skip
    assert o.shape == (b, sq, hq, 512) and o.dtype == torch.bfloat16
    want, _ = _oracle(q, rounded, indices, lengths, sink, scale)
    assert torch.allclose(o.double(), want, atol=2e-2, rtol=2e-2), float((o.double() - want).abs().max())


def test_a_query_with_no_valid_key_gives_zero_and_lse_plus_inf():
    _, swa = _cache(576)
    q = torch.randn(1, 1, 16, 576).to(torch.bfloat16)
    indices = torch.full((1, 1, 8), -1, dtype=torch.int32)
    out, lse = attention.flash_mla_with_kvcache(q, swa, None, None, 512, None, is_fp8_kvcache=True, indices=indices)
    assert torch.equal(out, torch.zeros_like(out)) and torch.isposinf(lse).all()
    dense = torch.randn(2, 64, 1, 576).to(torch.bfloat16)
    _, lse = attention.flash_mla_with_kvcache(q, dense, torch.tensor([[0]], dtype=torch.int32),
                                              torch.tensor([0], dtype=torch.int32), 512, None)  # fmt: skip
    assert torch.isposinf(lse).all(), "zero-length sequences give lse +inf, as FlashMLA does"


def test_a_frozen_plan_reused_for_other_shapes_is_refused():
    class Plan:  # FlashMLA's FlashMLASchedMeta: an object filled on first use
        pass

    _, swa = _cache(576)
    plan = Plan()
    q = torch.randn(2, 1, 16, 576).to(torch.bfloat16)
    idx = torch.zeros(2, 1, 8, dtype=torch.int32)
    attention.flash_mla_with_kvcache(q, swa, None, None, 512, plan, is_fp8_kvcache=True, indices=idx)
    attention.flash_mla_with_kvcache(q, swa, None, None, 512, plan, is_fp8_kvcache=True, indices=idx)  # same shapes
    with pytest.raises(InvalidArgumentError, match=r"planned on its first use for other shapes: batch size=3 "
                                                   r"\(planned for 2\).*get_mla_metadata\(\) again"):  # fmt: skip
        attention.flash_mla_with_kvcache(q[:1].expand(3, -1, -1, -1), swa, None, None, 512, plan, is_fp8_kvcache=True,
                                         indices=torch.zeros(3, 1, 8, dtype=torch.int32))  # fmt: skip


@pytest.mark.parametrize("provider", ["torch", "reference"])
def test_the_plan_get_mla_metadata_hands_out_is_frozen_on_the_cpu_as_on_the_gpu(provider, monkeypatch):
    """Without arguments get_mla_metadata() gives a plan object on every provider (FlashMLA: FlashMLASchedMeta;
    torch and the reference: an MLAPlan that schedules nothing), so reusing it for another batch shape is refused
    on the CPU as on the GPU."""
    monkeypatch.setenv("ACCELBRIDGE_PROVIDERS", f"flashmla={provider}")
    plan, splits = attention.get_mla_metadata()
    assert plan is not None and splits is None
    table = torch.arange(4, dtype=torch.int32).reshape(2, 2)
    kc = torch.randn(4, 64, 1, 576).to(torch.bfloat16)

    def call(b):
        q = torch.randn(b, 1, 16, 576).to(torch.bfloat16)
        return attention.flash_mla_with_kvcache(q, kc, table[:b], torch.full((b,), 70, dtype=torch.int32), 512, plan)

    call(2)
    call(2)  # the same shapes: the same plan serves
    with pytest.raises(InvalidArgumentError, match=r"planned on its first use for other shapes: batch size=1 "
                                                   r"\(planned for 2\)"):  # fmt: skip
        call(1)
    assert attention.get_mla_metadata()[0] is not plan, "a new plan each time, as FlashMLA's"


def test_sparse_prefill_through_the_facade():
    g = torch.Generator().manual_seed(5)
    q = torch.randn(10, 16, 576, generator=g).to(torch.bfloat16)
    kv = torch.randn(50, 1, 576, generator=g).to(torch.bfloat16)
    idx = torch.randint(-1, 50, (10, 1, 16), generator=g).to(torch.int32)
    out, max_logits, lse = attention.function("flashmla.sparse_prefill")(q, kv, idx, 576**-0.5)
    assert out.shape == (10, 16, 512) and max_logits.shape == lse.shape == (10, 16)
    for s in range(10):
        keys = kv[idx[s, 0][idx[s, 0] >= 0].long(), 0].double()
        logits = (keys @ q[s].double().T).T * 576**-0.5
        assert torch.allclose(lse[s].double(), torch.logsumexp(logits, -1) * math.log2(math.e), atol=1e-3)  # base 2
        assert torch.allclose(out[s].double(), torch.softmax(logits, -1) @ keys[:, :512], atol=2e-2)


@pytest.mark.parametrize("provider", [reference, torch_attention], ids=["reference", "torch"])
def test_sparse_indices_outside_the_cache_mean_no_key_as_in_the_kernels(provider):
    """sgl-kernel: "set to -1 or numbers >= total_seq_len_kv"; FlashMLA's tests use 2147480000 and negatives."""
    _, swa = _cache(576)  # 384 tokens
    q = torch.randn(1, 2, 16, 576).to(torch.bfloat16)
    valid = torch.randint(0, 384, (1, 2, 8), dtype=torch.int32)
    marked = valid.clone()
    marked[0, 0, :3] = torch.tensor([384, 2147480000, -123456], dtype=torch.int32)
    marked[0, 1, :] = 2147483647  # a row with no key at all
    minus_one = torch.where((marked < 0) | (marked >= 384), -1, marked)
    attention.set_checks("full")  # the facade's value checks accept them too
    attention.flash_mla_with_kvcache(q, swa, None, None, 512, None, is_fp8_kvcache=True, indices=marked)
    out, lse = provider.flash_mla_with_kvcache(q, swa, None, None, 512, None, is_fp8_kvcache=True, indices=marked)
    want, want_lse = provider.flash_mla_with_kvcache(q, swa, None, None, 512, None, is_fp8_kvcache=True,
                                                     indices=minus_one)  # fmt: skip
    assert torch.equal(out, want) and torch.equal(lse, want_lse)
    assert torch.equal(out[0, 1], torch.zeros_like(out[0, 1])) and bool(torch.isposinf(lse[0, :, 1]).all())


@pytest.mark.parametrize(
    "bug, case",
    [
        ("ignore_sink", "sparse-v32-sink"),
        ("ignore_topk_length", "sparse-v4-topk-length"),
        ("wrong_layout", "sparse-v4"),
        ("read_unused_pages", "sentinel-nan"),
        ("read_unused_pages", "zero-lengths-sentinel-nan"),
        ("sink_inf_as_none", "sparse-v32-conventions"),
        ("sink_inf_as_none", "sparse-v4-conventions"),
    ],
)
# fmt: skip
def test_bugged_sparse_providers_are_caught(tmp_path, monkeypatch, bug, case):
    (tmp_path / "bugged.yaml").write_text(
        "schema: 1\nplatform: cpu\nproviders:\n  bugged:\n    source: {module: tests.attention.broken_mla}\n"
        f"    ops:\n      flashmla.kvcache: {{function: {bug}}}\norder:\n  flashmla.kvcache: [bugged, reference]\n"
    )
    monkeypatch.setenv("ACCELBRIDGE_CATALOG_PATH", str(tmp_path / "bugged.yaml"))
    platforms.reset()
    (c,) = [c for c in conformance.cases("flashmla.kvcache") if c.name == case]
    assert conformance.run(c, "reference").status == "pass"
    r = conformance.run(c, "bugged")
    assert r.status == "FAIL", (bug, r.detail)


def test_sparse_calls_a_kernel_refuses_go_to_the_next_provider(fixture_providers):
    """sgl-kernel's V3.2 kernel has no topk_length and no extra cache (H200): the catalog says so, such calls go on."""
    with platforms.simulated("cuda:sm90"):
        assert attention.resolve("flashmla.kvcache", indices=True, head_dim=576).selected == "sgl-kernel"
        assert attention.resolve("flashmla.kvcache", indices=True, head_dim=512, kv_format="V4").selected == (
            "sgl-kernel"
        )
        r = attention.resolve("flashmla.kvcache", indices=True, topk_length=True, head_dim=576)
        assert r.selected == "torch"
        (row,) = [c for c in r.candidates if c["provider"] == "sgl-kernel"]
        assert "cannot honour topk_length= when indices is not None and q.shape[-1] == 576" in row["reasons"][0]
        r = attention.resolve("flashmla.kvcache", indices=True, topk_length=True, head_dim=512, kv_format="V4")
        assert r.selected == "sgl-kernel"


def test_sparse_prefill_list_return_becomes_the_canonical_tuple(fixture_providers):
    with platforms.simulated("cuda:sm90"):
        assert attention.resolve("flashmla.sparse_prefill", head_dim=576).selected == "sgl-kernel"
        q = torch.randn(4, 64, 576).to(torch.bfloat16)
        kv = torch.randn(200, 1, 576).to(torch.bfloat16)
        idx = torch.randint(0, 200, (4, 1, 128), dtype=torch.int32)
        result = attention.flash_mla_sparse_fwd(q, kv, idx, 576**-0.5)
        assert isinstance(result, tuple) and len(result) == 3
        (c,) = [c for c in conformance.cases("flashmla.sparse_prefill") if c.name == "v32"]
        assert conformance.run(c, "sgl-kernel").status == "pass"
