"""The differential fuzz on the GPU: the torch provider's compiled kernels (Triton and Gluon, not the
interpreter) against the float64 oracle, on problems drawn from the kernels' own test grids
(``tests/attention/upstream_grids.py``: FlashMLA dense h_kv 1/2/3/8, its sparse decode and prefill shapes, FA3's
head dims, pages, windows, softcap, chunks, rotary, appended k/v, FP8) and from the CPU fuzz's conventions
(sentinels, NaN in unused slots, empty sequences, +-inf sinks, invalid indices).

``pytest tests/gpu/test_fuzz_gpu.py --fuzz-cases N --fuzz-seed S``: N seeds per op from S (default 40 from 0:
a few GPU minutes). A failure names the draw and seed; ``-k "<draw> and <seed>"`` reruns it. The oracle runs
in float64 on the same GPU; each problem is bounded (``WORK``) so it stays quick, large upstream shapes drawn
with fewer sequences. The last test checks that every GPU kernel served some of the draws.
"""

import collections

import pytest
import torch

from accelbridge.torch_attention import decode, mla_decode, prefill
from tests.attention import upstream_grids
from tests.attention.test_differential_fuzz import DRAWS, PROVIDERS, check

WORK = 4e7  # b * s_q * h_q * s_k (and its like per op) of one problem: the oracle's time
SERVED: collections.Counter = collections.Counter()  # GPU kernel -> problems it served
_KERNELS = ((prefill, "prefill"), (decode, "paged_decode"), (mla_decode, "mla_decode"))


def pytest_generate_tests(metafunc):
    if "seed" in metafunc.fixturenames:
        cases = metafunc.config.getoption("--fuzz-cases", default=None) or 40
        first = metafunc.config.getoption("--fuzz-seed", default=0) or 0
        metafunc.parametrize("seed", range(first, first + cases))


@pytest.fixture
def counted(monkeypatch):
    """Counts the problems each GPU kernel served (a launcher called at least once)."""
    hits = set()
    for module, name in _KERNELS:
        launch = getattr(module, name)

        def wrapped(*a, _launch=launch, _name=name, **k):
            hits.add(_name)
            return _launch(*a, **k)

        monkeypatch.setattr(module, name, wrapped)
    yield
    SERVED.update(hits)


@pytest.mark.parametrize("grid", ["upstream", "conventions"])
@pytest.mark.parametrize("draw", list(DRAWS))
def test_torch_provider_on_the_gpu_agrees_with_the_oracle(draw, grid, seed, monkeypatch, counted):
    monkeypatch.setenv("ACCELBRIDGE_PROVIDERS", PROVIDERS)
    make = (lambda r: upstream_grids.DRAWS[draw](r, WORK)) if grid == "upstream" else None
    check(draw, seed, device="cuda", make=make, reference=False)
    torch.cuda.synchronize()  # a fault is this seed's, not the next one's


def test_every_gpu_kernel_served_part_of_the_fuzz():
    print(f"\nGPU kernels served: {dict(SERVED)}")
    assert {name for _, name in _KERNELS} <= set(SERVED), SERVED
