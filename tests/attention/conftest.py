"""Random problem builders (fixture providers and fresh resolution state: tests/conftest.py)."""

import pytest
import torch


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


@pytest.fixture
def sgl_kernel_0410(fixture_providers, monkeypatch):
    """fixture_providers, with sglang-kernel 0.4.10's stand-in (fixtures_0410) as ``sgl_kernel`` instead of 0.4.5's."""
    import sys
    from pathlib import Path

    for name in [n for n in sys.modules if n.split(".")[0] == "sgl_kernel"]:
        del sys.modules[name]
    monkeypatch.syspath_prepend(str(Path(__file__).parent / "fixtures_0410"))
    return fixture_providers
