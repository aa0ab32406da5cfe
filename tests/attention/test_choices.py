"""Visible choices: each resolution logged once, an accelerator's fallback to the reference heard, strict mode."""

import logging
import sys
import warnings

import pytest
import torch

from accelbridge import attention, cli, platforms
from accelbridge.attention import ReferenceFallbackWarning, UnsupportedFeatureError


@pytest.fixture(params=["bare", "sgl_kernel importable"])
def without_torch(request, tmp_path, monkeypatch):
    """A cuda catalog whose fa3.varlen order skips the torch provider, and no sgl_kernel whatever this
    machine has installed (a GPU machine has the real one; the fixture module stands in for it here):
    calls end on the reference."""
    if request.param != "bare":
        request.getfixturevalue("fixture_providers")
    monkeypatch.setitem(sys.modules, "sgl_kernel", None)  # import fails as if not installed
    overlay = tmp_path / "no-torch.yaml"
    overlay.write_text("schema: 1\nplatform: cuda\norder:\n  fa3.varlen: [sgl-kernel, reference]\n")
    monkeypatch.setenv("ACCELBRIDGE_CATALOG_PATH", str(overlay))


def _call():
    q = torch.randn(4, 2, 512).to(torch.bfloat16)
    cu = torch.tensor([0, 4], dtype=torch.int32)
    return attention.flash_attn_varlen_func(q, q, q, cu, cu, 4, 4, causal=True)


def test_accelerator_falling_back_to_the_reference_warns_once_with_every_reason(caplog, without_torch):
    caplog.set_level(logging.INFO, logger="accelbridge")
    with platforms.simulated("cuda:sm90"), warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        for _ in range(3):
            _call()
    fallbacks = [w for w in caught if issubclass(w.category, ReferenceFallbackWarning)]
    assert len(fallbacks) == 1
    text = str(fallbacks[0].message)
    assert "fa3.varlen on cuda:sm90 is served by the float32 pure-torch reference" in text
    assert "sgl-kernel: module 'sgl_kernel' not installed" in text and "ACCELBRIDGE_STRICT=1" in text
    infos = [r for r in caplog.records if r.levelno == logging.INFO and "fa3.varlen" in r.getMessage()]
    assert len(infos) == 1 and "fa3.varlen on cuda:sm90: reference (passed over: sgl-kernel" in infos[0].getMessage()


def test_the_cpu_platform_uses_the_reference_without_a_warning():
    with warnings.catch_warnings():
        warnings.simplefilter("error", ReferenceFallbackWarning)
        _call()


def test_strict_mode_refuses_the_slow_path(monkeypatch, without_torch):
    monkeypatch.setenv("ACCELBRIDGE_STRICT", "1")
    attention.set_strict(None)
    with platforms.simulated("cuda:sm90"), pytest.raises(UnsupportedFeatureError) as e:
        _call()
    assert "strict mode" in str(e.value) and "sgl-kernel" in str(e.value)
    attention.set_strict(False)
    with platforms.simulated("cuda:sm90"), pytest.warns(ReferenceFallbackWarning):
        _call()


@pytest.mark.filterwarnings("ignore::accelbridge.attention.ProviderLoadWarning")  # simulated GPU, no kernels
def test_an_accelerator_without_vendor_kernels_is_served_by_torch_quietly(caplog, tmp_path, monkeypatch):
    """Pinned whatever this machine has installed: no sgl_kernel (a GPU user's real one, or the fixture module on
    the path, would serve the call) and no hub kernels (a filled Hugging Face cache would) ahead of torch."""
    monkeypatch.setitem(sys.modules, "sgl_kernel", None)  # import fails as if not installed
    overlay = tmp_path / "no-hub.yaml"
    overlay.write_text("schema: 1\nplatform: cuda\norder:\n  fa3.varlen: [sgl-kernel, torch, reference]\n")
    monkeypatch.setenv("ACCELBRIDGE_CATALOG_PATH", str(overlay))
    caplog.set_level(logging.INFO, logger="accelbridge")
    with platforms.simulated("cuda:sm90"), warnings.catch_warnings():
        warnings.simplefilter("error", ReferenceFallbackWarning)
        _call()
    infos = [r.getMessage() for r in caplog.records if "fa3.varlen" in r.getMessage()]
    assert len(infos) == 1 and "fa3.varlen on cuda:sm90: torch (passed over: sgl-kernel" in infos[0]


def test_info_marks_torch_and_reference_served_ops(capsys, without_torch):
    assert cli.main(["info", "--simulate", "cuda:sm90"]) == 0
    out = capsys.readouterr().out
    assert "SLOW PATH (pure-torch reference)" in out
    assert "no vendor kernel: torch's own kernels" in out  # fa3.kvcache and the others
    assert cli.main(["info", "--simulate", "cpu"]) == 0
    assert "SLOW PATH" not in capsys.readouterr().out


def test_each_distinct_move_to_another_provider_is_logged_once_with_its_reason(caplog, tmp_path, monkeypatch):
    overlay = tmp_path / "spy.yaml"
    overlay.write_text(
        "schema: 1\nplatform: cpu\nproviders:\n  spy:\n    source: {module: tests.attention.spy_provider}\n"
        "    ops:\n      fa3.varlen: {function: flash_attn_varlen_func, adapt: {ignores: [sinks]}}\n"
        "order:\n  fa3.varlen: [spy, torch, reference]\n"
    )
    monkeypatch.setenv("ACCELBRIDGE_CATALOG_PATH", str(overlay))
    caplog.set_level(logging.INFO, logger="accelbridge")
    q = torch.randn(4, 2, 64).to(torch.bfloat16)
    cu = torch.tensor([0, 4], dtype=torch.int32)
    with platforms.simulated("cpu"):
        for sinks in (None, torch.zeros(2), torch.zeros(2), None, torch.ones(2)):
            attention.flash_attn_varlen_func(q, q, q, cu, cu, 4, 4, causal=True, sinks=sinks)
    moves = [r.getMessage() for r in caplog.records if "moved" in r.getMessage()]
    assert moves == ["fa3.varlen on cpu: a call moved from spy to torch (spy: cannot honour sinks= (the catalog "
                     "marks it ignored by tests.attention.spy_provider.flash_attn_varlen_func))"]  # fmt: skip


def test_strict_mode_with_the_reference_pinned_names_the_pin_and_strict_mode_not_an_argument(monkeypatch):
    monkeypatch.setenv("ACCELBRIDGE_STRICT", "1")
    monkeypatch.setenv("ACCELBRIDGE_PROVIDERS", "fa3=reference")
    attention.set_strict(None)
    with platforms.simulated("cuda:sm90"), pytest.raises(UnsupportedFeatureError) as e:
        _call()
    text = str(e.value)
    assert "no provider can serve this call; candidates:" in text and "argument" not in text
    assert "pin another provider in ACCELBRIDGE_PROVIDERS, or turn strict mode off (ACCELBRIDGE_STRICT)" in text
    attention.set_strict(False)


def test_warnings_name_the_callers_line(without_torch):
    with platforms.simulated("cuda:sm90"), warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        _call()
    assert caught and {w.filename for w in caught} == {__file__}, [(w.filename, w.lineno) for w in caught]
