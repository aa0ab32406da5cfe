"""Shared fixtures: every test starts from a clean platform, resolution and env state."""

from __future__ import annotations

import contextlib
import sys
from pathlib import Path

import pytest

from accelbridge import attention, kernels_catalog, platforms
from accelbridge.attention import providers

_ENV = (
    "ACCELBRIDGE_STRICT",
    "ACCELBRIDGE_PLATFORM",
    "ACCELBRIDGE_SIMULATE",
    "ACCELBRIDGE_CATALOG_PATH",
    "ACCELBRIDGE_PROVIDERS",
    "ACCELBRIDGE_CACHE_DIR",
    "SGLANG_USE_SGL_FA3_KERNEL",
    "LOCAL_KERNELS",
    "ACCELBRIDGE_CHECKS",
)
_LAUNCH = ("RANK", "LOCAL_RANK", "WORLD_SIZE")  # torchrun's: tests/gpu/test_ranks.py runs under it, the rest not


@pytest.fixture(autouse=True)
def _clean_platform_state(request, monkeypatch):
    """Every test starts on the simulated CPU platform with accelbridge's variables unset.

    Hermetic on any machine: a GPU machine with kernel packages installed, or a shell exporting
    ACCELBRIDGE_*. Tests of detection itself are marked ``detection`` and see the real platform;
    tests/gpu see the real platform too.
    """
    for name in _ENV + (() if "tests/gpu/" in request.node.nodeid else _LAUNCH):
        monkeypatch.delenv(name, raising=False)
    platforms.reset()
    attention.set_checks(None)  # the default level, whatever the shell exported
    attention.set_strict(None)
    real = request.node.get_closest_marker("detection") or "tests/gpu/" in request.node.nodeid
    with contextlib.nullcontext() if real else platforms.simulated("cpu"):
        yield
    platforms.reset()


FIXTURES = Path(__file__).parent / "attention" / "fixtures"
FIXTURE_MODULES = ("sgl_kernel", "flash_attn", "vllm_flash_attn", "aiter", "mate", "_convert")


@pytest.fixture(autouse=True)
def fresh_resolution():
    providers.clear()
    attention.reset()
    kernels_catalog.clear_cache()
    yield
    providers.clear()
    attention.reset()


@pytest.fixture
def fixture_providers(monkeypatch):
    """The test fixtures of vendor packages, and accelbridge's own stand-ins (mate) behind them."""
    from accelbridge.testing import standins

    monkeypatch.syspath_prepend(standins.path())
    monkeypatch.syspath_prepend(str(FIXTURES))
    yield FIXTURES
    for name in list(sys.modules):
        if name.split(".")[0] in FIXTURE_MODULES:
            del sys.modules[name]


def pytest_collection_modifyitems(items):
    """A string skipif/xfail condition is evaluated as Python in the test's module, so a reason passed as the
    condition ("triton is not installed") is a NameError on exactly the machines it was meant to skip on.
    Conditions here are booleans: fail at collection, wherever the test runs."""
    for item in items:
        for mark in (*item.iter_markers("skipif"), *item.iter_markers("xfail")):
            if any(isinstance(c, str) for c in mark.args):
                raise pytest.UsageError(
                    f"{item.nodeid}: @pytest.mark.{mark.name} has a string condition {mark.args!r}; pass a bool "
                    "(e.g. `why is not None`) and the text as reason="
                )


@pytest.fixture(scope="module")
def one_thread():
    """Small problems run fastest on one thread: intra-op threads only add handoffs (10x on a busy 2-core machine).
    Modules that want it say ``pytestmark = pytest.mark.usefixtures("one_thread")``."""
    import torch

    saved = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(saved)
