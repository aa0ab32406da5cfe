import sys

import pytest
import torch


@pytest.fixture(autouse=True)
def _cpu_only_torch(request, monkeypatch):
    """Detection tests start from a CPU-only torch on any machine (a GPU machine included); each fakes its vendor."""
    if request.node.get_closest_marker("detection") is None:
        return
    monkeypatch.setattr(torch.cuda, "is_available", lambda: False)
    monkeypatch.setattr(torch.cuda, "device_count", lambda: 0)
    monkeypatch.setattr(torch.version, "hip", None)
    monkeypatch.setitem(sys.modules, "torch_musa", None)
