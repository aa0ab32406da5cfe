"""The facade's rules on every provider, and the field breakages of SIGNATURES.md."""

import inspect
import textwrap
import warnings

import pytest
import torch

from accelbridge import attention, ops, platforms
from accelbridge.attention import (
    ProviderLoadWarning,
    ResolutionError,
    UnsupportedFeatureError,
    flash_attn_varlen_func,
    flash_attn_with_kvcache,
)
from accelbridge.ops import reference

from .conftest import varlen_problem


def overlay(tmp_path, monkeypatch, text, name="overlay.yaml"):
    path = tmp_path / name
    path.write_text(textwrap.dedent(text))
    monkeypatch.setenv("ACCELBRIDGE_CATALOG_PATH", str(path))


def module_provider(tmp_path, monkeypatch, name, source, op="fa3.varlen", function="varlen", adapt="{}"):
    (tmp_path / f"{name}.py").write_text(textwrap.dedent(source))
    monkeypatch.syspath_prepend(str(tmp_path))
    overlay(tmp_path, monkeypatch, f"""
        schema: 1
        platform: cpu
        providers:
          {name}:
            source: {{module: {name}}}
            ops:
              {op}: {{function: {function}, adapt: {adapt}}}
        order:
          {op}: [{name}, reference]
        """)  # fmt: skip


def test_facade_signatures_are_the_op_declarations():
    for spec in ops.OPS.values():
        fn = getattr(attention, spec.facade)
        params = [p for p in inspect.signature(fn).parameters if p != "ver"]
        assert tuple(params) == spec.names, spec.id
        assert fn.__defaults__ == spec.signature.__defaults__ and fn.__doc__ == spec.signature.__doc__


@pytest.mark.parametrize("ver", [2, 5, "3", None, True, 3.5])
def test_bad_ver(rng, ver):
    q, k, v, cu_q, cu_k = varlen_problem(rng, [2], [2])
    with pytest.raises(ValueError, match="ver must be 3 or 4"):
        flash_attn_varlen_func(q, k, v, cu_q, cu_k, ver=ver)
    with pytest.raises(ValueError, match="ver must be 3 or 4"):
        flash_attn_with_kvcache(q[None], k[None], v[None], ver=ver)


def test_out_without_out_parameter_is_emulated_not_retried(tmp_path, monkeypatch, rng):
    # field bug: wrappers passed out=, got TypeError, retried without it and dropped out silently
    module_provider(tmp_path, monkeypatch, "noout", """
        from accelbridge.ops import reference
        CALLS = []
        def varlen(q, k, v, cu_seqlens_q, cu_seqlens_k, max_seqlen_q, max_seqlen_k, causal=False):
            CALLS.append(1)
            return reference.flash_attn_varlen_func(q, k, v, cu_seqlens_q, cu_seqlens_k, causal=causal)
        """)  # fmt: skip
    import noout

    q, k, v, cu_q, cu_k = varlen_problem(rng, [3, 2], [3, 4])
    out = torch.full_like(q, float("nan"))
    res = flash_attn_varlen_func(q, k, v, cu_q, cu_k, 3, 4, causal=True, out=out)
    assert res is out and not torch.isnan(out).any() and noout.CALLS == [1]
    assert torch.equal(out, reference.flash_attn_varlen_func(q, k, v, cu_q, cu_k, causal=True))


@pytest.mark.parametrize("returns_tuple", [True, False])
def test_return_convention_change_is_normalised(tmp_path, monkeypatch, rng, returns_tuple):
    # field bug: FA3 changed its return from (out, lse) to out; callers unpacking broke
    module_provider(tmp_path, monkeypatch, f"ret{int(returns_tuple)}", f"""
        from accelbridge.ops import reference
        def varlen(q, k, v, cu_seqlens_q, cu_seqlens_k, max_seqlen_q, max_seqlen_k, return_softmax_lse=False):
            o, lse = reference.flash_attn_varlen_func(q, k, v, cu_seqlens_q, cu_seqlens_k, return_softmax_lse=True)
            return (o, lse) if ({returns_tuple} or return_softmax_lse) else o
        """)  # fmt: skip
    q, k, v, cu_q, cu_k = varlen_problem(rng, [3], [3])
    assert isinstance(flash_attn_varlen_func(q, k, v, cu_q, cu_k, 3, 3), torch.Tensor)
    o, lse = flash_attn_varlen_func(q, k, v, cu_q, cu_k, 3, 3, return_softmax_lse=True)
    assert lse.shape == (4, 3)


def test_provider_that_forgets_the_lse_is_an_error_naming_it(tmp_path, monkeypatch, rng):
    module_provider(tmp_path, monkeypatch, "nolse", """
        from accelbridge.ops import reference
        def varlen(q, k, v, cu_seqlens_q, cu_seqlens_k, max_seqlen_q, max_seqlen_k, return_lse=False):
            return reference.flash_attn_varlen_func(q, k, v, cu_seqlens_q, cu_seqlens_k)
        """, adapt="{rename: {return_softmax_lse: return_lse}}")  # fmt: skip
    q, k, v, cu_q, cu_k = varlen_problem(rng, [3], [3])
    with pytest.raises(RuntimeError, match="'nolse' returned Tensor, not \\(out, lse"):
        flash_attn_varlen_func(q, k, v, cu_q, cu_k, 3, 3, return_softmax_lse=True)


def test_old_names_reach_renamed_parameters(tmp_path, monkeypatch, rng):
    # field bug: descale_q->q_descale, block_table->page_table, s_aux/sinks/learnable_sink renames
    module_provider(tmp_path, monkeypatch, "oldnames", """
        from accelbridge.ops import reference
        SEEN = {}
        def varlen(q, k, v, cu_seqlens_q, cu_seqlens_k, max_seqlen_q, max_seqlen_k, block_table=None, s_aux=None,
                   descale_q=None):
            SEEN.update(block_table=block_table, s_aux=s_aux, descale_q=descale_q)
            return reference.flash_attn_varlen_func(q, k, v, cu_seqlens_q, cu_seqlens_k, sinks=s_aux)
        """, adapt="{rename: {page_table: block_table, sinks: s_aux, q_descale: descale_q}}")  # fmt: skip
    import oldnames

    q, k, v, cu_q, cu_k = varlen_problem(rng, [3], [3])
    s, d = torch.randn(4, generator=rng), torch.ones(1)
    flash_attn_varlen_func(q, k, v, cu_q, cu_k, 3, 3, sinks=s, q_descale=d)
    assert oldnames.SEEN["s_aux"] is s and oldnames.SEEN["descale_q"] is d


def test_unhonourable_argument_raises_naming_it_and_every_reason(rng):
    q, k, v, cu_q, cu_k = varlen_problem(rng, [3], [3])
    with pytest.raises(UnsupportedFeatureError) as e:
        flash_attn_varlen_func(q, k, v, cu_q, cu_k, 3, 3, score_mod=lambda s, *a: s)
    assert e.value.argument == "score_mod" and "reference: cannot honour score_mod=" in str(e.value)


def test_kernel_errors_propagate_unchanged(tmp_path, monkeypatch, rng):
    module_provider(tmp_path, monkeypatch, "boom", """
        class KernelError(RuntimeError):
            pass
        def varlen(q, k, v, cu_seqlens_q, cu_seqlens_k, max_seqlen_q, max_seqlen_k):
            raise KernelError("CUDA error: an illegal memory access")
        """)  # fmt: skip
    import boom

    q, k, v, cu_q, cu_k = varlen_problem(rng, [3], [3])
    with pytest.raises(boom.KernelError, match="illegal memory access"):
        flash_attn_varlen_func(q, k, v, cu_q, cu_k, 3, 3)
    # a TypeError raised by the kernel is not mistaken for a signature problem
    (tmp_path / "boom2.py").write_text("def varlen(q, k, v, cu_seqlens_q, cu_seqlens_k, max_seqlen_q, max_seqlen_k):\n"
                                       "    raise TypeError(\"unexpected keyword argument 'out'\")\n")  # fmt: skip
    module_provider(tmp_path, monkeypatch, "boom2", (tmp_path / "boom2.py").read_text())
    attention.reset()
    with pytest.raises(TypeError, match="unexpected keyword argument 'out'"):
        flash_attn_varlen_func(q, k, v, cu_q, cu_k, 3, 3, out=torch.empty_like(q))


def test_load_failure_falls_through_with_exactly_one_warning(tmp_path, monkeypatch, rng):
    overlay(tmp_path, monkeypatch, """
        schema: 1
        platform: cpu
        providers:
          missing:
            source: {module: not_installed_anywhere}
            install: pip install not-installed-anywhere
            ops:
              fa3.varlen: {function: varlen}
        order:
          fa3.varlen: [missing, reference]
        """)  # fmt: skip
    q, k, v, cu_q, cu_k = varlen_problem(rng, [3], [3])
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        for _ in range(3):
            flash_attn_varlen_func(q, k, v, cu_q, cu_k, 3, 3)
        attention.reset()  # re-resolving does not re-load or re-warn
        flash_attn_varlen_func(q, k, v, cu_q, cu_k, 3, 3)
        attention.explain("fa3.varlen")
    load_warnings = [w for w in caught if issubclass(w.category, ProviderLoadWarning)]
    assert len(load_warnings) == 1
    assert "'missing' unavailable: module 'not_installed_anywhere' not installed" in str(load_warnings[0].message)
    r = attention.resolve("fa3.varlen")
    assert r.selected == "reference"
    assert r.candidates[0]["reasons"] == [
        "module 'not_installed_anywhere' not installed (install: pip install not-installed-anywhere)"
    ]


def test_scheduler_metadata_mismatch_refused_before_any_kernel(fixture_providers, rng):
    import sgl_kernel.flash_attn as sgl

    with platforms.simulated("cuda:sm90"):
        seqlens = torch.tensor([3, 4], dtype=torch.int32)
        meta = attention.get_scheduler_metadata(2, 1, 8, 4, 2, 64, seqlens, causal=True, num_splits=2)
        q = torch.randn(2, 1, 4, 64, generator=rng).to(torch.bfloat16)
        kc = torch.randn(2, 8, 2, 64, generator=rng).to(torch.bfloat16)
        n = len(sgl.CALLS)
        with pytest.raises(ValueError, match=r"num_splits=0 \(metadata built with 2\)"):
            flash_attn_with_kvcache(q, kc, kc, cache_seqlens=seqlens, causal=True, scheduler_metadata=meta)
        with pytest.raises(ValueError, match=r"causal=False \(metadata built with True\)"):
            flash_attn_with_kvcache(q, kc, kc, cache_seqlens=seqlens, num_splits=2, scheduler_metadata=meta)
        assert len(sgl.CALLS) == n, "no kernel ran"
        flash_attn_with_kvcache(q, kc, kc, cache_seqlens=seqlens, causal=True, num_splits=2, scheduler_metadata=meta)
        assert sgl.CALLS[-1] == ("kvcache", 2, meta)
        raw = torch.zeros(5, dtype=torch.int32)  # not built by the facade: passed unchecked
        flash_attn_with_kvcache(q, kc, kc, cache_seqlens=seqlens, scheduler_metadata=raw)
        assert sgl.CALLS[-1][2] is raw


def test_scheduler_metadata_is_none_where_nothing_plans():
    assert attention.get_scheduler_metadata(2, 1, 8, 4, 2, 64, torch.tensor([3, 4])) is None


@pytest.mark.filterwarnings("ignore::accelbridge.attention.ProviderLoadWarning")  # simulated GPU, no kernels
def test_provider_pins_and_sglang_env(fixture_providers, monkeypatch):
    with platforms.simulated("cuda:sm90"):
        assert attention.resolve("fa3.varlen").selected == "sgl-kernel"
    monkeypatch.setenv("ACCELBRIDGE_PROVIDERS", "fa3=reference,flashmla.kvcache=reference")
    attention.reset()
    with platforms.simulated("cuda:sm90"):
        r = attention.resolve("fa3.varlen")
        assert r.selected == "reference" and [c["provider"] for c in r.candidates] == ["reference"]
        assert "pinned to reference by ACCELBRIDGE_PROVIDERS" in r.notes
        assert attention.resolve("flashmla.kvcache").selected == "reference"
        assert attention.resolve("flashmla.metadata").selected == "sgl-kernel"
    monkeypatch.delenv("ACCELBRIDGE_PROVIDERS")
    monkeypatch.setenv("SGLANG_USE_SGL_FA3_KERNEL", "0")
    attention.reset()
    with platforms.simulated("cuda:sm90"):
        r = attention.resolve("fa3.varlen")
        assert [c["provider"] for c in r.candidates][:2] == ["hub-sgl-fa3", "sgl-kernel"]
        assert "hub-sgl-fa3 preferred by SGLANG_USE_SGL_FA3_KERNEL=0" in r.notes


@pytest.mark.parametrize(
    "value, message",
    [
        ("fa3=sgl-kernal", "unknown provider 'sgl-kernal' for fa3 on platform cuda; valid: sgl-kernel, hub-sgl-fa3"),
        ("fa5=reference", "unknown op or family 'fa5'; valid: fa3, fa4, flashmla"),
        ("fa3", "bad entry 'fa3'"),
    ],
)
def test_bad_provider_pins(monkeypatch, value, message):
    monkeypatch.setenv("ACCELBRIDGE_PROVIDERS", value)
    with platforms.simulated("cuda:sm90"), pytest.raises(ResolutionError, match=message):
        attention.resolve("fa3.varlen")


@pytest.mark.filterwarnings("ignore::accelbridge.attention.ProviderLoadWarning")  # simulated GPU, no kernels
@pytest.mark.parametrize(
    "spec, op, selected, first_reason",
    [
        ("cuda:sm75", "fa3.varlen", "torch", "needs arch >=sm80, <sm100, this is sm75"),
        ("cuda:sm80", "fa3.varlen", "sgl-kernel", None),
        ("cuda:sm90", "fa3.varlen", "sgl-kernel", None),
        ("cuda:sm100", "fa3.varlen", "torch", "needs arch >=sm80, <sm100, this is sm100"),
        ("cuda:sm100", "fa4.varlen", "flash-attn-4", None),
        ("cuda:sm80", "fa4.varlen", "torch", "needs arch sm90 or >=sm100, <sm110, this is sm80"),
        ("cuda:sm90:toolkit=12.2", "fa3.varlen", "torch", "needs toolkit >=12.3, this is 12.2"),
        ("cuda:sm80", "flashmla.kvcache", "torch", "needs arch sm90, this is sm80"),
        ("rocm:gfx942", "fa3.varlen", "aiter", None),
        ("rocm:gfx90a", "fa3.varlen", "torch", "needs arch gfx942 or gfx950, this is gfx90a"),
        ("musa:mp22", "fa3.varlen", "torch", "needs arch >=mp31, this is mp22"),
        ("musa:mp31", "fa3.varlen", "mate", None),
    ],
)
def test_explain_on_simulated_platforms(fixture_providers, spec, op, selected, first_reason, capsys):
    from accelbridge.cli import main

    with platforms.simulated(spec):
        r = attention.resolve(op)
        assert r.selected == selected
        if first_reason:
            assert r.candidates[0]["reasons"][0] == first_reason
        text = attention.explain(op)
        assert text.splitlines()[0].endswith(f"selected {selected}")
    attention.reset()
    assert main(["explain", op, "--simulate", spec, "--json"]) == 0
    import json

    data = json.loads(capsys.readouterr().out)
    assert {"op", "platform", "arch", "selected", "candidates"} <= set(data)
    assert data["selected"] == selected and all({"provider", "viable", "reasons"} <= set(c) for c in data["candidates"])


@pytest.mark.filterwarnings("ignore::accelbridge.attention.ProviderLoadWarning")  # simulated GPU, no kernels
def test_rocm_never_gets_cuda_providers():
    # field bug: gfx90a (9.0) and gfx950 (9.5) passed ">= (9, 0)" Hopper gates and got CUDA-only FA3
    for spec in ("rocm:gfx90a", "rocm:gfx950"):
        with platforms.simulated(spec):
            ids = [c["provider"] for c in attention.resolve("fa3.varlen").candidates]
            assert "sgl-kernel" not in ids and "hub-fa3" not in ids


def test_resolution_is_cached_and_follows_the_platform(fixture_providers):
    with platforms.simulated("cuda:sm90"):
        first = attention.chain("fa3.varlen")
        assert attention.chain("fa3.varlen") is first
    with platforms.simulated("cpu"):
        assert attention.chain("fa3.varlen") is not first
        assert attention.resolve("fa3.varlen").selected == "torch"


def test_unknown_op():
    with pytest.raises(ResolutionError, match="unknown op 'fa3.varln'"):
        attention.resolve("fa3.varln")
