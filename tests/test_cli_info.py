import json

import pytest

from accelbridge.cli import main


def run(capsys, *argv):
    code = main(list(argv))
    out = capsys.readouterr()
    return code, out.out, out.err


def test_info_table(capsys):
    code, out, _ = run(capsys, "info")
    assert code == 0
    for label in ("platform", "arch", "toolkit", "dtypes", "fp8 e4m3 dtype", "Kernel resolution", "plugins"):
        assert label in out


@pytest.mark.parametrize(
    "spec, expect",
    [
        (
            "rocm:gfx942",
            {"arch": "gfx942", "vendor": "amd", "device_type": "cuda", "fp8_e4m3_dtype": "float8_e4m3fnuz"},
        ),
        ("musa:mp31", {"arch": "mp31", "vendor": "mthreads", "device_type": "musa"}),
        ("cuda:sm90:toolkit=12.8", {"arch": "sm90", "toolkit_version": "12.8", "capability": [9, 0]}),
    ],
)
def test_info_json(capsys, spec, expect):
    code, out, _ = run(capsys, "info", "--simulate", spec, "--json")
    assert code == 0
    report = json.loads(out)
    for key in (
        "platform",
        "vendor",
        "device_type",
        "arch",
        "capability",
        "toolkit_version",
        "device_count",
        "dtypes",
        "fp8_e4m3_dtype",
        "visible_devices_env",
        "simulated",
        "torch_version",
        "plugins",
    ):
        assert key in report
    assert report["simulated"] is True
    assert expect.items() <= report.items()


@pytest.mark.parametrize("spec", ["tpu", "cuda:gfx942", "cuda:sm90:x=1"])
def test_bad_simulate_exits_2_with_one_line(capsys, spec):
    code, out, err = run(capsys, "info", "--simulate", spec)
    assert code == 2 and out == ""
    assert err.startswith("accelbridge: error: ") and err.count("\n") == 1 and "Traceback" not in err


def test_info_hides_fields_that_do_not_apply():
    from accelbridge import platforms

    cpu = platforms.simulate("cpu").describe()
    assert cpu["capability"] is None and cpu["fp8_e4m3_dtype"] is None
    turing = platforms.simulate("cuda:sm75").describe()
    assert turing["capability"] == [7, 5] and turing["fp8_e4m3_dtype"] is None, "no FP8 attention before sm89"


def test_info_rows_give_the_gist_and_json_keeps_every_word(capsys):
    """A hub provider's reason quotes the hub's own sentences: the table keeps the first clause only."""
    code, out, _ = run(capsys, "info", "--simulate", "cuda:sm90")
    assert code == 0
    assert max(map(len, out.splitlines())) < 400
    code, out, _ = run(capsys, "info", "--simulate", "cuda:sm90", "--json")
    rows = {r["op"]: r for r in json.loads(out)["resolution"]}
    assert all(r["summary"] in r["note"] or len(r["summary"]) <= len(r["note"]) for r in rows.values())


def test_a_reason_loses_only_the_exception_text_it_quotes():
    from accelbridge.cli import _gist

    hub = ("hub kernel kernels-community/flash-attn3 not in the local cache (offline): Version 1 of "
           "'kernels-community/flash-attn3' is not available in the local cache. Download it first.")  # fmt: skip
    assert _gist(hub) == "hub kernel kernels-community/flash-attn3 not in the local cache (offline)"
    module = "module 'sgl_kernel' not installed (install: pip install sglang-kernel)"
    assert _gist(module) == module


def test_a_planning_op_without_a_provider_is_fine_and_says_so(capsys):
    from accelbridge import attention

    code, out, _ = run(capsys, "info")
    row = next(line for line in out.splitlines() if line.strip().startswith("fa3.scheduler_metadata"))
    assert "fine: returns None, fa3.kvcache plans each call itself" in row
    assert "NO provider" not in attention.explain("fa3.scheduler_metadata")


def test_explain_takes_the_stand_ins_as_selftest_does(capsys, monkeypatch):
    import sys

    monkeypatch.setattr(sys, "path", list(sys.path))  # --standins prepends to it
    monkeypatch.delitem(sys.modules, "mate", raising=False)
    code, out, _ = run(capsys, "explain", "fa3.varlen", "--simulate", "musa:mp31", "--standins")
    assert code == 0 and "selected mate" in out
    sys.modules.pop("mate", None)


def test_misspelt_names_on_the_command_line_get_a_did_you_mean(capsys):
    code, _, err = run(capsys, "explain", "fa3.kvcahce")
    assert code == 2 and "unknown op 'fa3.kvcahce' (did you mean 'fa3.kvcache'?)" in err
    code, _, err = run(capsys, "selftest", "--provider", "torhc")
    assert code == 2 and "no provider 'torhc' in the cpu catalog (did you mean 'torch'?)" in err


def test_version_does_not_import_torch():
    import subprocess
    import sys

    code = "import sys\nfrom accelbridge import cli\ncli.main(['--version'])\nprint('torch' in sys.modules)"
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True).stdout.split()
    assert out == ["accelbridge", "0.1.0", "False"]


def test_every_option_has_help(capsys):
    for command in ("info", "explain", "selftest"):
        with pytest.raises(SystemExit):
            main([command, "--help"])
        lines = [x.strip() for x in capsys.readouterr().out.splitlines()]
        for option in ("--simulate SPEC", "--json"):
            line = next((x for x in lines if x.startswith(option)), "")
            assert len(line) > len(option) + 2, f"{command} {option}: no help text"
