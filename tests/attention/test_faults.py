"""Fault injection: each fault ends in a correct fallback with exactly one warning naming the provider
and the cause, or in a clear error naming op, provider and fix; never a wrong result or a hang."""

import sys
import textwrap
import warnings

import pytest
import torch

from accelbridge import attention, platforms, torch_attention
from accelbridge.attention import ProviderLoadWarning, flash_attn_varlen_func
from accelbridge.attention.hub import HubKernel

from .conftest import varlen_problem
from .hubkernels import build_local_kernel, other_backend, this_backend
from .oracle import attend_rows, close

SIGS = """
from accelbridge.ops import reference as _ref


def lost_required(q, k, v, cu_seqlens_q, max_seqlen_q, max_seqlen_k, softmax_scale=None, causal=False):
    raise AssertionError("never called: cu_seqlens_k has nowhere to go")


def new_required(q, k, v, cu_seqlens_q, cu_seqlens_k, max_seqlen_q, max_seqlen_k, layout, causal=False):
    raise AssertionError("never called: nothing supplies layout")


def good(q, k, v, cu_seqlens_q, cu_seqlens_k, max_seqlen_q=None, max_seqlen_k=None, causal=False):
    return _ref.flash_attn_varlen_func(q, k, v, cu_seqlens_q, cu_seqlens_k, causal=causal)
"""


def provider_yaml(pid, source, function="good"):
    return f"  {pid}:\n    source: {source}\n    ops: {{fa3.varlen: {{function: {function}}}}}\n"


def faulty_catalog(tmp_path, monkeypatch, providers: dict[str, tuple[str, str]]):
    """A cpu overlay trying the faulty providers first, then the reference."""
    text = "schema: 1\nplatform: cpu\nproviders:\n"
    text += "".join(provider_yaml(pid, src, fn) for pid, (src, fn) in providers.items())
    text += f"order: {{fa3.varlen: [{', '.join(providers)}, reference]}}\n"
    (tmp_path / "faults.yaml").write_text(text)
    monkeypatch.setenv("ACCELBRIDGE_CATALOG_PATH", str(tmp_path / "faults.yaml"))
    monkeypatch.syspath_prepend(str(tmp_path))
    (tmp_path / "fault_sigs.py").write_text(textwrap.dedent(SIGS))
    platforms.reset()


def run_and_collect(rng, calls=3):
    """Calls through the facade (and re-resolves once); returns the load warnings and the last result."""
    q, k, v, cu_q, cu_k = varlen_problem(rng, [5, 9], [5, 9])
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        for _ in range(calls):
            out = flash_attn_varlen_func(q, k, v, cu_q, cu_k, 9, 9, causal=True)
        attention.reset()
        out = flash_attn_varlen_func(q, k, v, cu_q, cu_k, 9, 9, causal=True)
    for b, (s, e) in enumerate(((0, 5), (5, 14))):
        close(out[s:e], attend_rows(q[s:e], k[s:e], v[s:e], 64**-0.5, causal=True), f"fallback result, seq {b}")
    return [str(w.message) for w in caught if issubclass(w.category, ProviderLoadWarning)]


FAULTS = {
    "module missing": ({"absent": ("{module: no_such_provider_module}", "f")},
                       "'absent' unavailable: module 'no_such_provider_module' not installed"),
    "import raises RuntimeError": ({"crashes": ("{module: crash_at_import}", "f")},
                                   "'crashes' unavailable: loading module crash_at_import raised RuntimeError: "
                                   "CUDA driver version is insufficient"),
    "import raises SystemError": ({"crashes2": ("{module: crash_at_import2}", "f")},
                                  "'crashes2' unavailable: loading module crash_at_import2 raised SystemError"),
    "function missing": ({"nofn": ("{module: fault_sigs}", "flash_attn_varlen_func")},
                         "'nofn' unavailable: fa3.varlen: fault_sigs has no 'flash_attn_varlen_func'"),
    "signature lost a required parameter": ({"lost": ("{module: fault_sigs}", "lost_required")},
                                            "'lost' unavailable: fa3.varlen: fault_sigs.lost_required has no "
                                            "parameter for the required argument 'cu_seqlens_k'"),
    "signature gained a required parameter": ({"newreq": ("{module: fault_sigs}", "new_required")},
                                              "'newreq' unavailable: fa3.varlen: fault_sigs.new_required requires "
                                              "parameter 'layout', which no canonical argument supplies"),
}  # fmt: skip


@pytest.mark.parametrize("fault", FAULTS, ids=list(FAULTS))
def test_fault_falls_back_with_exactly_one_warning(tmp_path, monkeypatch, rng, fault):
    (tmp_path / "crash_at_import.py").write_text(
        'raise RuntimeError("CUDA driver version is insufficient for CUDA runtime version")\n'
    )
    (tmp_path / "crash_at_import2.py").write_text('raise SystemError("initialization of _C raised unreported")\n')
    providers, expected = FAULTS[fault]
    faulty_catalog(tmp_path, monkeypatch, providers)
    caught = run_and_collect(rng)
    assert len(caught) == 1, caught
    assert expected in caught[0] and caught[0].endswith("trying the next candidate")
    r = attention.resolve("fa3.varlen")
    assert r.selected == "reference" and r.candidates[0]["viable"] is False
    assert expected.split("unavailable: ")[1].split(": ", 1)[-1] in " ".join(r.candidates[0]["reasons"])
    for name in ("crash_at_import", "crash_at_import2", "fault_sigs"):
        sys.modules.pop(name, None)


def test_no_build_variant_for_this_system(tmp_path, monkeypatch, rng):
    kernel_dir = build_local_kernel(tmp_path, backend=other_backend())  # a build for another torch backend
    faulty_catalog(tmp_path, monkeypatch, {"cuda-only": (f"{{path: {kernel_dir}}}", "flash_attn_varlen_func")})
    caught = run_and_collect(rng)
    assert len(caught) == 1
    assert f"'cuda-only' unavailable: path {kernel_dir} has no build variant for this system" in caught[0]
    other, this = other_backend(), this_backend()
    assert f"torch-{other}: backend ({other}) does not match system backend ({this})" in caught[0]


@pytest.mark.filterwarnings("ignore::accelbridge.attention.ProviderLoadWarning")
def test_hub_unreachable_and_not_cached(fixture_providers, monkeypatch, tmp_path, rng):
    """Simulated (offline) cuda without sgl-kernel: both hub providers fall through to the torch provider."""
    monkeypatch.setenv("HF_HOME", str(tmp_path / "empty-hf-home"))
    monkeypatch.setitem(sys.modules, "sgl_kernel", None)  # not installed
    with platforms.simulated("cuda:sm90"), warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        r = attention.resolve("fa3.varlen")
        q, k, v, cu_q, cu_k = varlen_problem(rng, [4], [4])
        out = flash_attn_varlen_func(q, k, v, cu_q, cu_k, 4, 4)
        flash_attn_varlen_func(q, k, v, cu_q, cu_k, 4, 4)
    assert r.selected == "torch"
    close(out, attend_rows(q, k, v, 64**-0.5), "offline fallback")
    msgs = [str(w.message) for w in caught if issubclass(w.category, ProviderLoadWarning)]
    hub_msgs = [m for m in msgs if "'hub-" in m]
    assert len(hub_msgs) == 2, msgs
    assert any("'hub-fa3' unavailable: hub kernel kernels-community/flash-attn3 not in the local cache (offline)" in m
               and "run `accelbridge download`" in m for m in hub_msgs)  # fmt: skip


@pytest.mark.parametrize("error", [TypeError("an illegal argument inside the kernel"), RuntimeError("CUDA error")])
def test_kernel_errors_at_call_time_propagate(tmp_path, monkeypatch, rng, error):
    (tmp_path / "raiser.py").write_text(textwrap.dedent("""
        ERROR = None
        def f(q, k, v, cu_seqlens_q, cu_seqlens_k, max_seqlen_q=None, max_seqlen_k=None, causal=False):
            raise ERROR
        """))  # fmt: skip
    faulty_catalog(tmp_path, monkeypatch, {"raiser": ("{module: raiser}", "f")})
    import raiser

    raiser.ERROR = error
    q, k, v, cu_q, cu_k = varlen_problem(rng, [3], [3])
    with pytest.raises(type(error)) as e:
        flash_attn_varlen_func(q, k, v, cu_q, cu_k, 3, 3)
    assert e.value is error, "the kernel's own exception object, unchanged and not retried elsewhere"
    sys.modules.pop("raiser", None)


def test_corrupt_lock_falls_back_with_one_warning(fixture_providers, monkeypatch, tmp_path, rng):
    monkeypatch.setenv("ACCELBRIDGE_CACHE_DIR", str(tmp_path))
    (tmp_path / "kernels.lock").write_text("{ this is not json")
    with platforms.simulated("cuda:sm90"), warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        monkeypatch.setenv("ACCELBRIDGE_PROVIDERS", "fa3=hub-fa3")
        platforms.reset()
        with pytest.raises(attention.UnsupportedFeatureError, match="not a valid kernels lock file"):
            flash_attn_varlen_func(*varlen_problem(rng, [3], [3]), 3, 3)
    msgs = [str(w.message) for w in caught if issubclass(w.category, ProviderLoadWarning)]
    assert len(msgs) == 1 and "'hub-fa3' unavailable:" in msgs[0] and "delete it or run `accelbridge lock`" in msgs[0]


def test_stale_lock_names_both_pins(fixture_providers, monkeypatch, tmp_path):
    from kernels._rust import KernelLock, KernelLocks

    monkeypatch.setenv("ACCELBRIDGE_CACHE_DIR", str(tmp_path))
    old = HubKernel("kernels-community/flash-attn3", 2, None).dependency()  # locked at another version
    (tmp_path / "kernels.lock").write_text(KernelLocks({old: KernelLock("a" * 40)}).to_json())
    with platforms.simulated("cuda:sm90"), warnings.catch_warnings():
        warnings.simplefilter("ignore", ProviderLoadWarning)
        r = attention.resolve("fa3.varlen")
    (row,) = [c for c in r.candidates if c["provider"] == "hub-fa3"]
    stale = "pins kernels-community/flash-attn3 at version 2 but the catalog asks for version 1 (stale lock)"
    assert stale in row["reasons"][0]
    (row,) = [c for c in r.candidates if c["provider"] == "hub-sgl-fa3"]
    assert "kernels-community/sgl-flash-attn3 is not in" in row["reasons"][0]


def test_platform_plugin_faults_are_covered_in_platform_tests():
    """Plugins raising at import and at detection: tests/platforms/test_plugins.py pins both."""
    from tests.platforms import test_plugins

    names = {n for n in dir(test_plugins) if n.startswith("test_plugin_raising")}
    assert names == {
        "test_plugin_raising_at_import_is_reported_not_skipped",
        "test_plugin_raising_at_detection_is_reported",
    }


def test_reference_is_the_floor(rng):
    """The last candidate everywhere: an op never ends with no provider on a built-in platform."""
    from accelbridge import kernels_catalog

    for name in ("cuda", "rocm", "musa", "cpu"):
        catalog = kernels_catalog.load(name)
        for op in ("fa3.varlen", "fa3.kvcache", "flashmla.kvcache"):
            assert catalog.candidates(op)[-2:] == ("torch", "reference"), (name, op)
    q, k, v, cu_q, cu_k = varlen_problem(rng, [2], [2])
    assert torch.equal(attention.function("fa3.varlen")(q, k, v, cu_q, cu_k, 2, 2),
                       torch_attention.flash_attn_varlen_func(q, k, v, cu_q, cu_k, 2, 2))  # fmt: skip
