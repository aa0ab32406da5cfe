import pytest
import torch


def pytest_collection_modifyitems(config, items):
    for item in items:
        if "tests/gpu" in str(item.fspath).replace("\\", "/"):
            item.add_marker(pytest.mark.gpu)
            if not torch.cuda.is_available() or torch.version.hip is not None:
                item.add_marker(pytest.mark.skip(reason="needs a CUDA GPU (tests/gpu runs on the GPU machine)"))
