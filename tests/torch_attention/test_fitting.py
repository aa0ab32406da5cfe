"""Launch configs that fit the GPU: the first config the device holds runs, each one passed over is said once."""

import logging

import pytest

from accelbridge.torch_attention import fitting

errors = pytest.importorskip("triton.runtime.errors", reason="Triton's OutOfResources is what a launch raises")

CONFIGS = ((128, 64, 8, 3), (64, 64, 4, 2), (32, 32, 4, 1))


@pytest.fixture(autouse=True)
def fresh(monkeypatch):
    monkeypatch.setattr(fitting, "_TOO_BIG", set())


def launcher(limit):
    """A launch whose kernel needs config[0] * 1000 bytes of shared memory, on a device holding ``limit``."""
    tried = []

    def launch(config):
        tried.append(config)
        if config[0] * 1000 > limit:
            raise errors.OutOfResources(config[0] * 1000, limit, "shared memory")
        return f"ran {config}"

    return launch, tried


def test_the_first_config_that_fits_runs_and_each_one_passed_over_is_said_once(caplog):
    launch, tried = launcher(limit=100_000)
    key = ("the prefill kernel", "cuda:0", 128, 128)
    with caplog.at_level(logging.WARNING, logger="accelbridge"):
        assert fitting.first_fitting(key, CONFIGS, launch) == "ran (64, 64, 4, 2)"
        assert fitting.first_fitting(key, CONFIGS, launch) == "ran (64, 64, 4, 2)"
    assert tried == [CONFIGS[0], CONFIGS[1], CONFIGS[1]]  # the config too big is not tried again
    said = [r.getMessage() for r in caplog.records]
    assert len(said) == 1
    assert "the prefill kernel (cuda:0, 128, 128)" in said[0] and "(128, 64, 8, 3)" in said[0]
    assert "Required: 128000" in said[0] and "100000" in said[0] and "trying (64, 64, 4, 2)" in said[0]


def test_a_config_too_big_for_one_key_is_still_tried_for_another():
    launch, tried = launcher(limit=100_000)
    fitting.first_fitting(("the MLA decode kernel", "cuda:0", "dense"), CONFIGS, launch)
    fitting.first_fitting(("the MLA decode kernel", "cuda:0", "sparse"), CONFIGS, launch)
    assert tried == [CONFIGS[0], CONFIGS[1], CONFIGS[0], CONFIGS[1]]


def test_the_last_config_and_other_errors_propagate():
    launch, tried = launcher(limit=10_000)
    with pytest.raises(errors.OutOfResources):
        fitting.first_fitting(("k",), CONFIGS, launch)
    assert tried == list(CONFIGS)
    with pytest.raises(errors.OutOfResources):  # the last is tried again: its error is the one to see
        fitting.first_fitting(("k",), CONFIGS, launch)
    assert tried[len(CONFIGS) :] == [CONFIGS[-1]]

    def broken(config):
        raise ValueError("a bad argument")

    with pytest.raises(ValueError, match="a bad argument"):
        fitting.first_fitting(("k",), CONFIGS, broken)
