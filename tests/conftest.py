"""Shared fixtures: every test starts from a clean platform state and env."""

from __future__ import annotations

import pytest

from accelbridge import platforms

_ENV = (
    "ACCELBRIDGE_PLATFORM",
    "ACCELBRIDGE_SIMULATE",
    "ACCELBRIDGE_CATALOG_PATH",
    "ACCELBRIDGE_PROVIDERS",
    "ACCELBRIDGE_CACHE_DIR",
    "SGLANG_USE_SGL_FA3_KERNEL",
    "LOCAL_KERNELS",
)


@pytest.fixture(autouse=True)
def _clean_platform_state(monkeypatch):
    for name in _ENV:
        monkeypatch.delenv(name, raising=False)
    platforms.reset()
    yield
    platforms.reset()
