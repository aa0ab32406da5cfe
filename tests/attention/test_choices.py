"""Visible choices: each resolution logged once, an accelerator's fallback to the reference heard, strict mode."""

import logging
import warnings

import pytest
import torch

from accelbridge import attention, cli, platforms
from accelbridge.attention import ReferenceFallbackWarning, UnsupportedFeatureError


def _call():
    q = torch.randn(4, 2, 512).to(torch.bfloat16)
    cu = torch.tensor([0, 4], dtype=torch.int32)
    return attention.flash_attn_varlen_func(q, q, q, cu, cu, 4, 4, causal=True)


def test_accelerator_falling_back_to_the_reference_warns_once_with_every_reason(caplog):
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


def test_strict_mode_refuses_the_slow_path(monkeypatch):
    monkeypatch.setenv("ACCELBRIDGE_STRICT", "1")
    attention.set_strict(None)
    with platforms.simulated("cuda:sm90"), pytest.raises(UnsupportedFeatureError) as e:
        _call()
    assert "strict mode" in str(e.value) and "sgl-kernel" in str(e.value)
    attention.set_strict(False)
    with platforms.simulated("cuda:sm90"), pytest.warns(ReferenceFallbackWarning):
        _call()


def test_info_marks_reference_served_ops(capsys):
    assert cli.main(["info", "--simulate", "cuda:sm90"]) == 0
    out = capsys.readouterr().out
    assert "SLOW PATH (pure-torch reference)" in out
    assert cli.main(["info", "--simulate", "cpu"]) == 0
    assert "SLOW PATH" not in capsys.readouterr().out
