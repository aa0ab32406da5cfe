"""Fixture providers on sys.path, fresh resolution state, and random problem builders."""

import sys
from pathlib import Path

import pytest
import torch

from accelbridge import attention, kernels_catalog
from accelbridge.attention import providers

FIXTURES = Path(__file__).parent / "fixtures"
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
    monkeypatch.syspath_prepend(str(FIXTURES))
    yield FIXTURES
    for name in list(sys.modules):
        if name.split(".")[0] in FIXTURE_MODULES:
            del sys.modules[name]


@pytest.fixture
def rng():
    return torch.Generator().manual_seed(torch.seed() % 2**31)


def varlen_problem(rng, lens_q, lens_k, hq=4, hk=2, d=64, dv=None, dtype=torch.bfloat16):
    """Random packed sequences; zero-length queries and length-1 sequences allowed."""
    dv = dv or d
    cu_q = torch.tensor([0, *torch.tensor(lens_q).cumsum(0).tolist()], dtype=torch.int32)
    cu_k = torch.tensor([0, *torch.tensor(lens_k).cumsum(0).tolist()], dtype=torch.int32)
    q = torch.randn(int(cu_q[-1]), hq, d, generator=rng).to(dtype)
    k = torch.randn(int(cu_k[-1]), hk, d, generator=rng).to(dtype)
    v = torch.randn(int(cu_k[-1]), hk, dv, generator=rng).to(dtype)
    return q, k, v, cu_q, cu_k
