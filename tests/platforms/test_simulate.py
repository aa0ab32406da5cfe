import pytest
import torch

from accelbridge import platforms
from accelbridge.platforms import PlatformError


@pytest.mark.parametrize(
    "spec, name, vendor, device_type, arch, toolkit",
    [
        ("cuda:sm90:toolkit=12.8", "cuda", "nvidia", "cuda", "sm90", "12.8"),
        ("cuda", "cuda", "nvidia", "cuda", "sm90", "12.8"),
        ("cuda:sm100", "cuda", "nvidia", "cuda", "sm100", "12.8"),
        ("rocm:gfx942", "rocm", "amd", "cuda", "gfx942", "6.4"),
        ("musa:mp31", "musa", "mthreads", "musa", "mp31", "4.0"),
        ("cpu", "cpu", "cpu", "cpu", "cpu", None),
    ],
)
def test_specs(spec, name, vendor, device_type, arch, toolkit):
    p = platforms.simulate(spec)
    assert p.simulated and p.is_available()
    assert (p.name, p.vendor, p.device_type, p.arch().name) == (name, vendor, device_type, arch)
    assert (str(p.toolkit_version) if p.toolkit_version else None) == toolkit
    d = p.describe()
    assert d["simulated"] is True and d["simulation_spec"] == spec


def test_options():
    p = platforms.simulate("cuda:sm80:toolkit=12.1:devices=4:name=A100")
    assert p.device_count() == 4 and p.device_name(3) == "A100" and str(p.toolkit_version) == "12.1"
    with pytest.raises(PlatformError, match="device 4 out of range"):
        p.arch(4)


def test_rocm_fp8_is_fnuz_on_gfx94x_only():
    assert platforms.simulate("rocm:gfx942").fp8_e4m3_dtype is torch.float8_e4m3fnuz
    assert platforms.simulate("rocm:gfx950").fp8_e4m3_dtype is torch.float8_e4m3fn
    assert platforms.simulate("cuda:sm90").fp8_e4m3_dtype is torch.float8_e4m3fn


def test_musa_bf16_from_mp22():
    assert "bf16" not in platforms.simulate("musa:mp21").describe()["dtypes"]
    assert "bf16" in platforms.simulate("musa:mp22").describe()["dtypes"]


@pytest.mark.parametrize(
    "spec, message",
    [
        ("", "empty simulation spec"),
        ("tpu:v5", "unknown platform 'tpu'.*valid: cpu, cuda, musa, rocm"),
        ("cuda:gfx942", "gfx942 \\(amd\\) does not belong to platform 'cuda'"),
        ("rocm:sm90", "sm90 \\(nvidia\\) does not belong to platform 'rocm'"),
        ("cuda:sm9x", "unknown arch 'sm9x'"),
        ("cuda:sm90:toolkit=abc", "bad toolkit version 'abc'"),
        ("cuda:sm90:color=red", "unknown spec key 'color'.*valid: toolkit"),
        ("cuda:sm90:devices=0", "bad device count '0'"),
        ("cuda:sm90:junk", "unknown arch 'junk'|bad spec part"),
    ],
)
def test_bad_specs(spec, message):
    with pytest.raises(PlatformError, match=message):
        platforms.simulate(spec)


@pytest.mark.detection
def test_env_simulate(monkeypatch):
    monkeypatch.setenv("ACCELBRIDGE_SIMULATE", "rocm:gfx90a")
    p = platforms.current()
    assert p.simulated and p.arch().name == "gfx90a"


def test_simulated_block_nests_and_restores():
    base = platforms.current()
    seen = []
    platforms.on_change(lambda: seen.append(platforms.current().name))
    with platforms.simulated("cuda:sm90") as outer:
        assert platforms.current() is outer
        with platforms.simulated("musa:mp31"):
            assert platforms.current().name == "musa"
        assert platforms.current() is outer
    assert platforms.current() is base
    assert seen[:4] == ["cuda", "musa", "cuda", base.name]
