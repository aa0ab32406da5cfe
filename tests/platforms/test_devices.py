"""Per-rank device: each process resolves against its own device (LOCAL_RANK, the selected one), never 0 by accident."""

import json
import types

import pytest
import torch

from accelbridge import cli, platforms
from accelbridge.errors import PlatformError
from accelbridge.platforms import devices

MIXED = "cuda:archs=sm90,sm100"  # a node whose device 1 is of another arch than device 0


def test_a_simulated_node_names_one_arch_per_device():
    p = platforms.simulate(MIXED)
    assert [p.arch(i).name for i in range(p.device_count())] == ["sm90", "sm100"]
    assert p.capability(1) == (10, 0) and p.device_name(1) == "simulated cuda sm100"
    assert not p.uniform_devices() and platforms.simulate("cuda:sm90:devices=4").uniform_devices()
    assert p.describe()["device_archs"] == ["sm90", "sm100"]


@pytest.mark.parametrize(
    ("spec", "message"),
    [
        ("cuda:archs=sm90,sm100:devices=3", r"bad device count '3'.*2, one per arch of archs="),
        ("cuda:sm80:archs=sm90,sm100", r"names arch sm80 and archs=sm90,sm100: give one of them"),
        ("cuda:archs=sm90,gfx942", r"arch gfx942 \(amd\) does not belong to platform 'cuda'"),
    ],
)
def test_bad_per_device_specs_name_the_part(spec, message):
    with pytest.raises(PlatformError, match=message):
        platforms.simulate(spec)


def test_local_rank_picks_the_device_of_a_rank(monkeypatch):
    p = platforms.simulate(MIXED)
    assert p.device_index() == 0 and p.arch().name == "sm90"  # no launcher: device 0
    monkeypatch.setenv("LOCAL_RANK", "1")
    monkeypatch.setenv("RANK", "5")
    monkeypatch.setenv("WORLD_SIZE", "8")
    assert p.device_index() == 1 and p.arch().name == "sm100" and p.capability() == (10, 0)
    d = p.describe()
    assert (d["device"], d["arch"], d["rank"], d["local_rank"], d["world_size"]) == ("cuda:1", "sm100", 5, 1, 8)
    assert devices.describe_rank(p, 1) == "cuda:1 (rank 5 of 8, local rank 1)"


def test_a_rank_seeing_only_its_own_device_uses_device_0(monkeypatch):
    """CUDA_VISIBLE_DEVICES=3 per rank: LOCAL_RANK=3, one visible device, which is device 0."""
    monkeypatch.setenv("LOCAL_RANK", "3")
    assert platforms.simulate("cuda:sm90").device_index() == 0


def test_a_bad_rank_variable_is_an_error(monkeypatch):
    monkeypatch.setenv("LOCAL_RANK", "one")
    with pytest.raises(PlatformError, match=r"LOCAL_RANK='one' is not an integer.*torchrun"):
        platforms.simulate(MIXED).arch()


@pytest.mark.detection
def test_the_selected_device_wins_over_local_rank(monkeypatch):
    """set_device(k) initialises the runtime: then its current device is the process's, whatever LOCAL_RANK says."""
    caps = {0: (9, 0), 1: (10, 0)}
    monkeypatch.setattr(torch.version, "cuda", "12.8")
    monkeypatch.setattr(torch.version, "hip", None)
    monkeypatch.setattr(torch.cuda, "is_available", lambda: True)
    monkeypatch.setattr(torch.cuda, "device_count", lambda: 2)
    monkeypatch.setattr(torch.cuda, "get_device_capability", lambda d: caps[d])
    monkeypatch.setattr(torch.cuda, "get_device_name", lambda d: f"GPU{d}")
    monkeypatch.setattr(torch.cuda, "get_device_properties", lambda d: types.SimpleNamespace(gcnArchName=""))
    initialised = [False]
    monkeypatch.setattr(torch.cuda, "is_initialized", lambda: initialised[0])
    monkeypatch.setattr(torch.cuda, "current_device", lambda: 1)
    monkeypatch.setenv("LOCAL_RANK", "0")
    p = platforms.current()
    assert p.name == "cuda" and p.arch().name == "sm90"  # not initialised: LOCAL_RANK, without touching the GPU
    initialised[0] = True
    assert p.arch().name == "sm100" and p.describe()["device"] == "cuda:1" and p.device_name() == "GPU1"


def test_the_tensors_device_is_found_among_the_arguments():
    p = platforms.simulate(MIXED)
    on = types.SimpleNamespace(device=torch.device("cuda", 1))
    assert devices.tensor_device(p, (None, 3, torch.zeros(1), on)) == 1
    assert devices.tensor_device(p, (torch.zeros(1), "q")) is None  # CPU tensors under simulation: no say


def test_info_shows_the_rank_and_its_device(monkeypatch, capsys):
    monkeypatch.setenv("LOCAL_RANK", "1")
    monkeypatch.setenv("RANK", "1")
    monkeypatch.setenv("WORLD_SIZE", "2")
    assert cli.main(["info", "--simulate", MIXED]) == 0
    out = capsys.readouterr().out
    assert "this process     cuda:1 (rank 1 of 2, local rank 1)" in out and "arch             sm100" in out
    assert cli.main(["info", "--simulate", MIXED, "--json"]) == 0
    report = json.loads(capsys.readouterr().out)
    assert (report["device"], report["rank"], report["arch"]) == ("cuda:1", 1, "sm100")
