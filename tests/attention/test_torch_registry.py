"""Handing the catalog's FA kernel to torch's flash-attention registry: only builds torch can take."""

import pytest
import torch

from accelbridge import platforms
from accelbridge.attention import UnsupportedFeatureError, torch_registry


def test_a_platform_without_an_fa_kernel_torch_knows_is_refused_with_the_reason():
    if not hasattr(torch.nn.attention, "activate_flash_attention_impl"):
        with pytest.raises(UnsupportedFeatureError, match="has no flash-attention registry"):
            torch_registry.activate()
        return
    with pytest.raises(UnsupportedFeatureError, match="fa4.varlen is served by torch, which torch's registry cannot"):
        torch_registry.activate()


@pytest.mark.filterwarnings("ignore::accelbridge.attention.ProviderLoadWarning")
def test_flash_attn_4_is_activated_as_torchs_fa4(fixture_providers, monkeypatch):
    activated = []
    monkeypatch.setattr(torch.nn.attention, "list_flash_attention_impls", lambda: ["FA3", "FA4"], raising=False)
    monkeypatch.setattr(torch.nn.attention, "activate_flash_attention_impl", activated.append, raising=False)
    monkeypatch.setattr(torch.nn.attention, "restore_flash_attention_impl", lambda: activated.append("restored"),
                        raising=False)  # fmt: skip
    monkeypatch.setattr(torch_registry, "_smoke", lambda device: None)
    with platforms.simulated("cuda:sm90"):
        assert torch_registry.activate() == "FA4"
    assert activated == ["FA4"]
    monkeypatch.setattr(torch_registry, "_smoke", lambda device: "ValueError: too many values to unpack")
    with platforms.simulated("cuda:sm90"), pytest.raises(UnsupportedFeatureError, match="SDPA then failed: ValueE"):
        torch_registry.activate()
    assert activated == ["FA4", "FA4", "restored"]
    with platforms.simulated("cuda:sm80"):  # no FA4 there; FA3 is sgl-kernel's, which torch cannot take
        with pytest.raises(UnsupportedFeatureError, match="fa3.varlen is served by sgl-kernel"):
            torch_registry.activate()
