"""sglang-kernel 0.4.10's kv_format and FlashMLA's V3.2-no-RoPE, V4.1 and V4.1 FP4 caches, beside 0.4.5.

The facade adapts to whichever release is installed (each stood in by its exact signature: fixtures/ and
fixtures_0410/), the layouts round trip through their quantisers, the detection rule is sglang-kernel
0.4.10's, and a layout a provider cannot read goes to the next provider with the reason.
"""

import math

import pytest
import torch

from accelbridge import attention, platforms
from accelbridge.attention import InvalidArgumentError
from accelbridge.ops import reference
from accelbridge.ops.fp8_cache import quantize_fp8_cache
from accelbridge.testing import conformance


def _exact_cache(layout, blocks=3, block_size=61, seed=0):
    """A bf16 cache whose values each layout stores exactly: every tile holds its scale's largest code."""
    g = torch.Generator().manual_seed(seed)
    d = reference.LAYOUT_D_QK[layout]
    if layout == "V41_FP4":
        codes = torch.randint(0, 16, (blocks, block_size, 32, 16), generator=g, dtype=torch.uint8)
        codes[..., 0] = 7  # 6.0: max|x| / 6 is the scale itself
        scales = torch.exp2(torch.randint(-6, 3, (blocks, block_size, 32, 1), generator=g).float())
        k = reference.e2m1(codes) * scales
    else:
        nope, tile = {"V32": (512, 128), "V32_NO_ROPE": (512, 128), "V4": (448, 64), "V41": (512, 32)}[layout]
        values = torch.randint(0, 256, (blocks, block_size, nope), generator=g, dtype=torch.uint8)
        k = values.view(torch.float8_e4m3fn).float().nan_to_num(0.0).view(blocks, block_size, nope // tile, tile)
        k[..., 0] = 448.0  # the tile's scale is then exactly its power of two
        k = k * torch.exp2(torch.randint(-8, 2, (blocks, block_size, nope // tile, 1), generator=g).float())
        rope = torch.randn(blocks, block_size, d - nope, generator=g)  # bf16, stored as is
        k = torch.cat([k.reshape(blocks, block_size, nope), rope], dim=-1)
    return k.reshape(blocks, block_size, 1, d).to(torch.bfloat16)


@pytest.mark.parametrize("layout", list(reference.LAYOUT_BYTES))
def test_quantiser_round_trips_exactly_representable_caches(layout):
    k = _exact_cache(layout)
    cache = quantize_fp8_cache(k, layout)
    assert cache.shape == (3, 61, 1, reference.LAYOUT_BYTES[layout])
    if layout in ("V41", "V41_FP4"):  # per block: data rows, then scale rows, padded to 512 bytes
        assert cache.stride(0) == math.ceil(61 * reference.LAYOUT_BYTES[layout] / 512) * 512
    tokens = torch.randperm(3 * 61)[:50]
    got = reference.gather_fp8_tokens(cache, tokens, layout)
    assert torch.equal(got, k.reshape(-1, k.shape[-1])[tokens].float())


def test_fp4_rounds_to_nearest_even_and_a_nan_poisons_its_tile():
    k = torch.zeros(1, 1, 1, 512)
    k[..., :16] = torch.tensor([6, 0.25, 0.75, 1.25, 1.75, 2.5, 3.5, 5.0, -0.2, -5.9, 0.3, 0, 0, 0, 0, 0])
    k[..., 16] = math.nan
    got = reference.gather_fp8_tokens(quantize_fp8_cache(k.to(torch.bfloat16), "V41_FP4"), torch.tensor([0]),
                                      "V41_FP4")  # fmt: skip
    want = torch.tensor([6, 0, 1, 1, 2, 2, 4, 4, -0.0, -6, 0.5, 0, 0, 0, 0, 0])
    assert torch.equal(got[0, :16], want)
    assert got[0, 16:32].isnan().all() and not got[0, 32:].isnan().any()


@pytest.mark.parametrize(
    "kv_format, d_qk, width, plan, layout",
    [
        (None, 576, 656, None, "V32"),
        (None, 512, 584, None, "V4"),
        (None, 512, 528, torch.zeros(2, 8, dtype=torch.int32), "V32_NO_ROPE"),  # tensor metadata
        (None, 512, 528, object(), "V41"),  # a FlashMLASchedMeta
        (None, 512, 528, None, "V41"),  # no plan (the reference's and the torch provider's)
        ("V32_NO_ROPE", 512, 528, object(), "V32_NO_ROPE"),
        ("V41", 512, 528, torch.zeros(1), "V41"),
        ("V41", 512, 288, None, "V41_FP4"),  # an extra cache beside a V4.1 one
    ],
)  # fmt: skip
def test_detection_rule_is_sglang_kernel_0410s(kv_format, d_qk, width, plan, layout):
    assert reference.kv_layout(kv_format, d_qk, width, plan) == layout


def _call(layout, extra_layout=None, topk_length=False, kv_format=None, plan=None, seed=0):
    g = torch.Generator().manual_seed(seed)
    d = reference.LAYOUT_D_QK[layout]
    kw = {"q": torch.randn(2, 1, 16, d, generator=g).to(torch.bfloat16), "block_table": None, "cache_seqlens": None,
          "head_dim_v": 512, "tile_scheduler_metadata": plan, "is_fp8_kvcache": True, "softmax_scale": d**-0.5,
          "k_cache": quantize_fp8_cache((torch.randn(4, 64, 1, d, generator=g) * 0.1).to(torch.bfloat16), layout),
          "indices": torch.randint(-1, 256, (2, 1, 64), generator=g).to(torch.int32),
          "kv_format": kv_format}  # fmt: skip
    if topk_length:
        kw["topk_length"] = torch.tensor([10, 64], dtype=torch.int32)
    if extra_layout:
        extra = (torch.randn(2, 64, 1, d, generator=g) * 0.1).to(torch.bfloat16)
        kw.update(
            extra_k_cache=quantize_fp8_cache(extra, extra_layout),
            extra_indices_in_kvcache=torch.randint(-1, 128, (2, 1, 32), generator=g).to(torch.int32),
        )
    return kw


def _reference(kw):
    return reference.flash_mla_with_kvcache(**kw)


def _same(got, want):
    assert torch.allclose(got[0].float(), want[0].float(), atol=1e-3, rtol=2e-2)
    assert torch.allclose(got[1], want[1], atol=1e-5, rtol=1e-5)


def test_0410_serves_v32_no_rope_with_kv_format_and_045_passes_it_on(fixture_providers):
    """The same call on each release: 0.4.10 takes the format, 0.4.5 (no kv_format parameter) refuses it."""
    with platforms.simulated("cuda:sm90"):
        import sgl_kernel.flash_mla as sgl

        kw = _call("V32_NO_ROPE", kv_format="V32_NO_ROPE", plan=attention.get_mla_metadata()[0])
        r = attention.resolve("flashmla.kvcache", **kw)
        assert sgl.__doc__.startswith("sglang-kernel 0.4.5") and r.selected == "torch"
        (row,) = [c for c in r.candidates if c["provider"] == "sgl-kernel"]
        assert row["reasons"] == ["cannot honour kv_format= (no such parameter in "
                                  "sgl_kernel.flash_mla.flash_mla_with_kvcache)"]  # fmt: skip
        _same(attention.flash_mla_with_kvcache(**kw), _reference(kw))


def test_0410_takes_kv_format(sgl_kernel_0410):
    with platforms.simulated("cuda:sm90"):
        import sgl_kernel.flash_mla as sgl

        plan = attention.get_mla_metadata()[0]
        assert isinstance(plan, sgl.FlashMLASchedMeta)
        kw = _call("V32_NO_ROPE", kv_format="V32_NO_ROPE", plan=plan)
        assert attention.resolve("flashmla.kvcache", **kw).selected == "sgl-kernel"
        _same(attention.flash_mla_with_kvcache(**kw), _reference(kw))
        assert sgl.CALLS[-1] == ("sparse", "V32_NO_ROPE")
        for layout in ("V32", "V4"):  # the layouts both releases read, kv_format named or not
            for kv_format in (None, layout):
                kw = _call(layout, kv_format=kv_format, plan=attention.get_mla_metadata()[0])
                _same(attention.flash_mla_with_kvcache(**kw), _reference(kw))
                assert sgl.CALLS[-1] == ("sparse", layout)


@pytest.mark.parametrize(
    "layout, extra, topk_length, kv_format, refused",
    [
        ("V41", None, False, None, "kv_format"),  # detected: 528 bytes under a FlashMLASchedMeta
        ("V41", "V41_FP4", True, "V41", "kv_format"),
        ("V32_NO_ROPE", None, True, "V32_NO_ROPE", "topk_length"),
        ("V4", None, False, None, None),
    ],
)  # fmt: skip
def test_0410_refuses_what_its_sm90_kernels_lack(sgl_kernel_0410, layout, extra, topk_length, kv_format, refused):
    with platforms.simulated("cuda:sm90"):
        kw = _call(layout, extra, topk_length, kv_format, plan=attention.get_mla_metadata()[0])
        r = attention.resolve("flashmla.kvcache", **kw)
        (row,) = [c for c in r.candidates if c["provider"] == "sgl-kernel"]
        assert r.selected == ("torch" if refused else "sgl-kernel"), row
        if refused:
            assert any(f"cannot honour {refused}=" in reason for reason in row["reasons"]), row
        _same(attention.flash_mla_with_kvcache(**kw), _reference(kw))


@pytest.mark.parametrize("release", ["0.4.5", "0.4.10"])
def test_explain_names_the_release_and_its_signature(release, request):
    request.getfixturevalue("fixture_providers" if release == "0.4.5" else "sgl_kernel_0410")
    with platforms.simulated("cuda:sm90"):
        text = attention.explain("flashmla.kvcache", indices=True, head_dim=576)
        (found,) = [line for line in text.splitlines() if "found sgl_kernel" in line]
        assert f"found sgl_kernel {release}-fixture: flash_mla.flash_mla_with_kvcache(q, k_cache," in found
        assert found.endswith("kv_format)") == (release == "0.4.10")
        assert ("cannot honour kv_format" in text) == (release == "0.4.5")


@pytest.mark.parametrize("release", ["0.4.5", "0.4.10"])
def test_conformance_new_layouts_on_both_releases(release, request):
    """Each release's stand-in serves what it can and passes; the rest is a skip naming the reason."""
    request.getfixturevalue("fixture_providers" if release == "0.4.5" else "sgl_kernel_0410")
    served = {"0.4.5": set(), "0.4.10": {"sparse-v32-no-rope"}}[release]
    with platforms.simulated("cuda:sm90"):
        for c in conformance.cases("flashmla.kvcache"):
            if c.name not in ("sparse-v32-no-rope", "sparse-v41-fp4-extra"):
                continue
            r = conformance.run(c, "sgl-kernel", seed=7)
            assert r.status == ("pass" if c.name in served else "skip"), (c.name, r.status, r.detail)
            if r.status == "skip":
                assert "kv_format" in r.detail or "extra_k_cache" in r.detail, r.detail


@pytest.mark.parametrize(
    "change, message",
    [
        ({"kv_format": "V5"}, "kv_format is 'V5'; expected None, or in sparse mode one of 'V32', 'V32_NO_ROPE'"),
        ({"kv_format": "V4"}, "k_cache has 528 bytes a token with q's head dim 512 and kv_format='V4'"),
        ({"kv_format": "V32"}, "k_cache has 528 bytes a token with q's head dim 512 and kv_format='V32'"),
    ],
)  # fmt: skip
def test_a_kv_format_that_does_not_fit_the_cache_is_named(change, message):
    kw = {**_call("V41"), **change}
    with pytest.raises(InvalidArgumentError, match=message.replace("(", r"\(").replace(")", r"\)")):
        attention.flash_mla_with_kvcache(**kw)


def test_fp4_extra_cache_only_beside_a_v41_cache_and_kv_format_only_in_sparse_mode():
    kw = _call("V4", "V41_FP4")
    with pytest.raises(InvalidArgumentError, match="extra_k_cache has 288 bytes a token and k_cache 584"):
        attention.flash_mla_with_kvcache(**kw)
    q = torch.randn(1, 1, 4, 576).to(torch.bfloat16)
    dense = torch.randn(1, 64, 1, 576).to(torch.bfloat16)
    with pytest.raises(InvalidArgumentError, match="kv_format is 'V32' without indices"):
        attention.flash_mla_with_kvcache(q, dense, torch.zeros(1, 1, dtype=torch.int32),
                                         torch.ones(1, dtype=torch.int32), 512, None, kv_format="V32")  # fmt: skip


@pytest.mark.parametrize("release", ["0.4.5", "0.4.10"])
def test_each_stand_in_lacks_what_the_release_table_says(release, request):
    """ops.releases (what the docs show) against the stand-ins built from each wheel's signatures."""
    import inspect

    from accelbridge import ops
    from accelbridge.ops import releases

    request.getfixturevalue("fixture_providers" if release == "0.4.5" else "sgl_kernel_0410")
    import sgl_kernel.flash_mla as sgl

    (entry,) = [r for r in releases.RELEASES if r.version == release]
    params = set(inspect.signature(sgl.flash_mla_with_kvcache).parameters)
    assert set(ops.get("flashmla.kvcache").names) - params == set(entry.lacks.get("flash_mla_with_kvcache", ()))


def test_a_plan_is_frozen_to_the_page_block_size_as_0410s_flashmlaschedmeta_is():
    plan = type("Plan", (), {})()  # a plan object, planned on first use
    q, idx = torch.randn(1, 1, 4, 512).to(torch.bfloat16), torch.zeros(1, 1, 8, dtype=torch.int32)
    cache = quantize_fp8_cache(torch.randn(2, 64, 1, 512).to(torch.bfloat16), "V41")
    attention.flash_mla_with_kvcache(q, cache, None, None, 512, plan, is_fp8_kvcache=True, indices=idx)
    other = quantize_fp8_cache(torch.randn(4, 32, 1, 512).to(torch.bfloat16), "V41")
    with pytest.raises(InvalidArgumentError, match=r"page block size=32 \(planned for 64\)"):
        attention.flash_mla_with_kvcache(q, other, None, None, 512, plan, is_fp8_kvcache=True, indices=idx)
