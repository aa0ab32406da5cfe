import pytest
import torch


def pytest_collection_modifyitems(config, items):
    for item in items:
        if "tests/gpu" in str(item.fspath).replace("\\", "/"):
            item.add_marker(pytest.mark.gpu)
            if not torch.cuda.is_available() or torch.version.hip is not None:
                item.add_marker(pytest.mark.skip(reason="needs a CUDA GPU (tests/gpu runs on the GPU machine)"))


def pytest_addoption(parser):
    group = parser.getgroup("accelbridge GPU fuzz")
    group.addoption("--fuzz-cases", type=int, default=None, help="seeds per op of the GPU differential fuzz (40)")
    group.addoption("--fuzz-seed", type=int, default=0, help="the GPU differential fuzz's first seed (0)")
