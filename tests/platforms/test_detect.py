"""Detection of each vendor with torch patched to look like that vendor's build."""

import sys
import textwrap
import types

import pytest
import torch

from accelbridge import platforms
from accelbridge.platforms import PlatformError

pytestmark = pytest.mark.detection  # these tests exercise detection itself: the real (mocked) platform


@pytest.fixture
def fake_cuda(monkeypatch):
    def install(capability=(9, 0), cuda="12.8", hip=None, gcn="", count=2, name="NVIDIA H100"):
        monkeypatch.setattr(torch.version, "cuda", cuda)
        monkeypatch.setattr(torch.version, "hip", hip)
        monkeypatch.setattr(torch.cuda, "is_available", lambda: True)
        monkeypatch.setattr(torch.cuda, "device_count", lambda: count)
        monkeypatch.setattr(torch.cuda, "get_device_capability", lambda d=0: capability)
        monkeypatch.setattr(torch.cuda, "get_device_name", lambda d=0: name)
        monkeypatch.setattr(torch.cuda, "get_device_properties", lambda d=0: types.SimpleNamespace(gcnArchName=gcn))

    return install


def test_cuda(fake_cuda):
    fake_cuda(capability=(9, 0), cuda="12.8")
    p = platforms.current()
    assert (p.name, p.vendor, p.device_type, p.arch().name) == ("cuda", "nvidia", "cuda", "sm90")
    assert str(p.toolkit_version) == "12.8" and p.device_count() == 2
    assert p.fp8_e4m3_dtype is torch.float8_e4m3fn
    assert torch.bfloat16 in p.supported_dtypes
    d = p.describe()
    assert d["capability"] == [9, 0] and d["visible_devices_env"] == "CUDA_VISIBLE_DEVICES"
    assert d["device_names"] == ["NVIDIA H100", "NVIDIA H100"] and d["simulated"] is False


def test_cuda_turing_has_no_bf16(fake_cuda):
    fake_cuda(capability=(7, 5))
    p = platforms.current()
    assert p.arch().name == "sm75" and "bf16" not in p.describe()["dtypes"]


@pytest.mark.parametrize(
    "gcn, capability, arch, fp8",
    [
        ("gfx942:sramecc+:xnack-", (9, 4), "gfx942", "float8_e4m3fnuz"),
        ("gfx90a:sramecc+:xnack-", (9, 0), "gfx90a", "float8_e4m3fn"),
        ("gfx950", (9, 5), "gfx950", "float8_e4m3fn"),
        ("", (9, 4), "gfx942", "float8_e4m3fnuz"),  # no gcnArchName: capability table
    ],
)
def test_rocm(fake_cuda, gcn, capability, arch, fp8):
    fake_cuda(capability=capability, cuda=None, hip="6.2.41133-dd7f95766", gcn=gcn, name="AMD Instinct")
    p = platforms.current()
    assert (p.name, p.vendor, p.device_type) == ("rocm", "amd", "cuda")
    assert p.arch().name == arch and p.arch().family == "gfx"
    assert p.fp8_e4m3_dtype_attr == fp8
    assert str(p.toolkit_version) == "6.2.41133"
    assert p.visible_devices_env == "HIP_VISIBLE_DEVICES"


@pytest.fixture
def fake_torch_musa(tmp_path, monkeypatch):
    """A `torch_musa` on sys.path that registers `torch.musa` with the torch_musa API on import."""
    (tmp_path / "torch_musa.py").write_text(
        textwrap.dedent(
            """
            import types, torch
            musa = types.ModuleType("torch.musa")
            musa.is_available = lambda: True
            musa.device_count = lambda: 8
            musa.get_device_capability = lambda device=0: (3, 1)
            musa.get_device_name = lambda device=0: "MTT S5000"
            torch.musa = musa
            torch.version.musa = "4.1.0"
            """
        )
    )
    monkeypatch.syspath_prepend(str(tmp_path))
    monkeypatch.delitem(sys.modules, "torch_musa", raising=False)
    yield
    sys.modules.pop("torch_musa", None)
    if hasattr(torch, "musa"):
        del torch.musa
    if hasattr(torch.version, "musa"):
        del torch.version.musa


def test_musa(fake_torch_musa):
    p = platforms.current()
    assert (p.name, p.vendor, p.device_type) == ("musa", "mthreads", "musa")
    assert p.arch().name == "mp31" and p.capability() == (3, 1)
    assert str(p.toolkit_version) == "4.1.0" and p.device_count() == 8
    assert p.device_name() == "MTT S5000" and p.visible_devices_env == "MUSA_VISIBLE_DEVICES"
    assert "bf16" in p.describe()["dtypes"]


def test_musa_preferred_over_cuda(fake_torch_musa, fake_cuda):
    fake_cuda()
    assert platforms.current().name == "musa"


def test_cpu_when_nothing_else():
    p = platforms.current()
    assert (p.name, p.arch().name, p.device_type) == ("cpu", "cpu", "cpu")


def test_env_platform_override(monkeypatch):
    monkeypatch.setenv("ACCELBRIDGE_PLATFORM", "cpu")
    assert platforms.current().name == "cpu"


def test_env_platform_unknown(monkeypatch):
    monkeypatch.setenv("ACCELBRIDGE_PLATFORM", "tpu")
    with pytest.raises(PlatformError, match=r"'tpu' is not a known platform; valid: cpu, cuda, musa, rocm"):
        platforms.current()


def test_env_platform_unavailable(monkeypatch):
    monkeypatch.setenv("ACCELBRIDGE_PLATFORM", "cuda")
    with pytest.raises(PlatformError, match="not available on this machine.*ACCELBRIDGE_SIMULATE"):
        platforms.current()
