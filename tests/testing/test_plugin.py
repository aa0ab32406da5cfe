"""The pytest plugin, run in a child pytest with the markers."""

from importlib.metadata import entry_points

import pytest

pytest_plugins = ["pytester"]
# where accelbridge runs from a source tree (no entry point installed), load the plugin by name
LOAD = (
    ()
    if any(ep.name == "accelbridge" for ep in entry_points(group="pytest11"))
    else ("-p", "accelbridge.testing.plugin")
)

TESTS = """
import pytest

@pytest.mark.platform("cuda")
def test_cuda_only():
    pass

@pytest.mark.arch(">=sm90")
def test_hopper():
    pass

@pytest.mark.op("fa3.varlen", provider="sgl-kernel")
def test_sgl():
    pass

@pytest.mark.op("fa3.varlen")
def test_any_fa3():
    pass
"""


def test_markers_on_cpu(pytester):
    pytester.makepyfile(TESTS)
    result = pytester.runpytest(*LOAD, "-rs", "--accel-simulate", "cpu")
    result.assert_outcomes(passed=1, skipped=3)
    result.stdout.fnmatch_lines(["accelbridge: platform cpu, arch cpu*(simulated cpu)",
                                 "*accelbridge capability skips*",
                                 "*1 skipped: needs platform cuda, this is cpu",
                                 "*fa3.varlen: sgl-kernel is not a candidate on cpu"])  # fmt: skip


def test_markers_under_simulation(pytester):
    pytester.makepyfile(TESTS)
    result = pytester.runpytest(*LOAD, "-rs", "--accel-simulate", "cuda:sm100")
    result.assert_outcomes(passed=3, skipped=1)
    result.stdout.fnmatch_lines([
        "accelbridge: platform cuda, arch sm100, toolkit 12.8 (simulated cuda:sm100)",
        "*fa3.varlen: sgl-kernel needs arch >=sm80, <sm100, this is sm100*",
    ])  # fmt: skip


CHECKS = """
from accelbridge.attention import checks

def test_level():
    assert checks.level() == LEVEL
"""


def test_value_checks_are_on_in_plugin_runs_with_an_option_to_turn_them_off(pytester):
    pytester.makepyfile(CHECKS.replace("LEVEL", '"full"'))
    pytester.runpytest(*LOAD, "--accel-simulate", "cpu").assert_outcomes(passed=1)
    pytester.makepyfile(CHECKS.replace("LEVEL", '"cheap"'))
    pytester.runpytest(*LOAD, "--accel-simulate", "cpu", "--accel-checks", "cheap").assert_outcomes(passed=1)


STRICT = """
import pytest

@pytest.mark.op("fa3.varlen", kernel=True, head_dim=512)
def test_needs_a_kernel():
    pass

@pytest.mark.op("fa3.varlen", provider="sgl-kernel", head_dim=512, dtype="fp32")
def test_features_count():
    pass

@pytest.mark.op("flashmla.kvcache", paged=True)
def test_alias():
    pass
"""


def test_op_marker_features_and_kernel_requirement(pytester, fixture_providers):
    pytester.makepyfile(STRICT)
    result = pytester.runpytest(*LOAD, "-rs", "--accel-simulate", "cuda:sm90")
    result.assert_outcomes(passed=1, skipped=2)
    result.stdout.re_match_lines([r".*fa3.varlen: needs a vendor kernel, only the built-in torch provider serves it.*",
                                  r".*fa3.varlen: sgl-kernel does not take dtype torch.float32; does not take "
                                  r"head_dim 512"], consecutive=False)  # fmt: skip


@pytest.mark.parametrize("marker, message", [
    ('platform("nvidia")', "unknown platform 'nvidia'; valid: cpu, cuda, musa, rocm"),
    ('op("fa3.varln")', "unknown op (did you mean 'fa3.varlen'?); valid: fa3.varlen"),
    ('op("fa3.kvcahce")', "unknown op (did you mean 'fa3.kvcache'?)"),
    ('op("fa3.varlen", provider="sgl-kernl")', "unknown provider (did you mean 'sgl-kernel'?); valid:"),
    ('platfrom("cuda")', "@pytest.mark.platfrom is not an accelbridge marker (did you mean @pytest.mark.platform?)"),
    ('op("fa3.varlen", head_dims=128)', "unknown keyword 'head_dims'; valid:"),
    ('arch(">=hopper")', "@pytest.mark.arch"),
    ('arch(">=sm90", "<sm100")', "alternatives are OR'd ('>=sm90' or '<sm100'); for a range write one alternative "
                                "'>=sm90, <sm100'"),
])  # fmt: skip
def test_bad_marker_arguments_are_usage_errors(pytester, marker, message):
    """Each names the test, the marker and the fix; nothing is silently ignored."""
    pytester.makepyfile(f"import pytest\n\n@pytest.mark.{marker}\ndef test_x():\n    pass\n")
    result = pytester.runpytest(*LOAD, "--accel-simulate", "cpu")
    assert result.ret == pytest.ExitCode.USAGE_ERROR
    assert message in result.stderr.str() and "Traceback" not in result.stderr.str()


def test_a_bad_simulation_spec_is_a_usage_error_not_an_internal_error(pytester):
    pytester.makepyfile("def test_x():\n    pass\n")
    result = pytester.runpytest(*LOAD, "--accel-simulate", "cuda:sm9")
    assert result.ret == pytest.ExitCode.USAGE_ERROR
    assert "--accel-simulate 'cuda:sm9'" in result.stderr.str() and "INTERNALERROR" not in result.stdout.str()


def test_every_bad_marker_of_a_test_is_reported_at_once(pytester):
    marks = ['platform("nvidia")', 'arch(">=hopper")', 'op("fa3.kvcahce")', 'platfrom("cpu")']
    pytester.makepyfile(
        "import pytest\n\n" + "".join(f"@pytest.mark.{m}\n" for m in marks) + "def test_x():\n    pass\n"
    )
    result = pytester.runpytest(*LOAD, "--accel-simulate", "cpu")
    assert result.ret == pytest.ExitCode.USAGE_ERROR
    err = result.stderr.str()
    for said in ("unknown platform 'nvidia'", "@pytest.mark.arch", "unknown op (did you mean 'fa3.kvcache'?)",
                 "@pytest.mark.platfrom is not an accelbridge marker"):  # fmt: skip
        assert said in err, err
