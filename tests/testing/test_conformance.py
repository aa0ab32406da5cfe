"""Conformance checks: they pass correct providers, catch each realistic bug, and skip with reasons."""

import json
import sys

import pytest
import torch

from accelbridge import cli, platforms
from accelbridge.testing import conformance
from accelbridge.testing.conformance import Case

from .broken_providers import FAULTS

OVERLAY = (
    "schema: 1\nplatform: cpu\nproviders:\n"
    + "".join(
        f"  {f.replace('_', '-')}:\n    source: {{module: tests.testing.broken_providers}}\n"
        f"    ops: {{fa3.varlen: {{function: {f}}}}}\n"
        for f in FAULTS
    )
    + "order:\n  fa3.varlen: [reference, "
    + ", ".join(f.replace("_", "-") for f in FAULTS)
    + "]\n"
)


@pytest.fixture
def broken(tmp_path, monkeypatch):
    path = tmp_path / "broken.yaml"
    path.write_text(OVERLAY)
    monkeypatch.setenv("ACCELBRIDGE_CATALOG_PATH", str(path))
    platforms.reset()


def test_case_lists_cover_the_issue():
    names = {c.name for c in conformance.cases("fa3.varlen")}
    assert {"fp16", "mqa", "gqa8", "window-left", "softcap", "sinks", "short", "empty-seqs", "paged"} <= names
    kv = conformance.cases("fa3.kvcache")
    assert any(c.page_size for c in kv) and any(not c.page_size for c in kv) and any(c.new_tokens for c in kv)
    full = conformance.cases("fa4.varlen", full=True)
    assert len(full) > len(conformance.cases("fa4.varlen")) + 80
    assert len({str(c) for c in full}) == len(full), "case names are unique"
    with pytest.raises(ValueError, match="checked ops: fa3.varlen"):
        conformance.cases("fa3.scheduler_metadata")


@pytest.mark.parametrize("case", conformance.cases(), ids=str)
def test_reference_conforms_on_cpu(case):
    conformance.assert_conforms(case, "reference")


@pytest.mark.deep  # every case of every op on every fixture provider
@pytest.mark.filterwarnings("ignore::accelbridge.attention.providers.ProviderLoadWarning")
@pytest.mark.parametrize("op", conformance.CHECKED_OPS)
def test_fixture_providers_conform_under_simulation(fixture_providers, op):
    with platforms.simulated("cuda:sm90"):
        results = list(conformance.run_all(op))
    ran = [r for r in results if r.status != "skip"]
    assert ran and all(r.status == "pass" for r in ran), [(str(r.case), r.provider, r.detail) for r in ran if not r.ok]
    assert {r.provider for r in ran} >= ({"sgl-kernel"} if op.startswith(("fa3", "flashmla")) else {"flash-attn-4"})
    for r in results:
        if r.status == "skip":
            assert r.detail, f"{r.case} on {r.provider} skipped without a reason"


def test_a_provider_that_cannot_honour_an_argument_is_skipped_with_the_reason(fixture_providers):
    with platforms.simulated("cuda:sm90"):
        r = conformance.run(Case("fa4.kvcache", "append", lens_q=(1, 1), lens_k=(3, 9), page_size=16, new_tokens=1),
                            "flash-attn-4")  # fmt: skip
    assert r.status == "skip" and "cannot honour k=" in r.detail


@pytest.mark.parametrize(
    "provider, case, expected",
    [
        ("drop-softcap", "softcap", "elements outside atol"),
        ("ignore-out", "gqa4-causal", "did not return the `out` tensor"),
        ("miss-last-row", "gqa4-causal", "elements of out not written (NaN)"),
        ("lse-transposed", "lse", "lse shape"),
        ("wrong-scale", "noncausal", "elements outside atol"),
        ("illegal-access", "gqa4-causal", "RuntimeError: CUDA error: an illegal memory access"),
        ("noisy", "fp16", "elements outside atol=0.004"),
        ("index-with-every-entry", "paged-sentinel", "IndexError"),
        ("sink-inf-as-none", "sinks-inf", "elements outside atol"),
    ],
)
def test_each_bug_is_caught(broken, provider, case, expected):
    (c,) = [c for c in conformance.cases("fa3.varlen") if c.name == case]
    r = conformance.run(c, provider)
    assert r.status in ("FAIL", "error") and expected in r.detail, (r.status, r.detail)
    assert r.seed is not None
    with pytest.raises(AssertionError, match="seed="):
        conformance.assert_conforms(c, provider, seed=r.seed)


def test_a_seed_reproduces_the_inputs(broken):
    (c,) = [c for c in conformance.cases("fa3.varlen") if c.name == "fp16"]
    a, b = conformance.run(c, "noisy", seed=7), conformance.run(c, "noisy", seed=8)
    assert a.max_abs != b.max_abs
    assert conformance.run(c, "reference", seed=7).max_abs == conformance.run(c, "reference", seed=7).max_abs


def test_drop_softcap_passes_where_softcap_is_not_used(broken):
    """Conformance fails the case that exercises the bug, not the provider wholesale."""
    results = {r.case.name: r for r in conformance.run_all("fa3.varlen", "drop-softcap")}
    assert results["softcap"].status == "FAIL"
    assert results["gqa4-causal"].status == "pass"


@pytest.mark.filterwarnings("ignore::accelbridge.attention.providers.ProviderLoadWarning")
def test_assert_conforms_skips_an_unavailable_provider(fixture_providers):
    with platforms.simulated("cuda:sm90"), pytest.raises(pytest.skip.Exception, match="not in the local cache"):
        conformance.assert_conforms(conformance.cases("fa3.varlen")[0], "hub-sgl-fa3")


def test_selftest_cli_table_and_exit_codes(broken, capsys):
    assert cli.main(["selftest", "--op", "fa3.varlen", "--provider", "reference", "--seed", "3"]) == 0
    out = capsys.readouterr().out
    assert "seed 3" in out and ["fa3.varlen", "reference", "softcap", "pass", "-", "-"] in [
        line.split()[:6] for line in out.splitlines()
    ]
    rows = [line for line in out.splitlines() if line.startswith("fa3.varlen")]
    assert len({line.index(" pass") for line in rows}) == 1, "columns stay aligned whatever the case name"
    n = len(conformance.cases("fa3.varlen"))
    assert f"{n} case(s) run: {n} passed, 0 FAILED, 0 errors" in out
    assert cli.main(["selftest", "--op", "fa3.varlen", "--provider", "wrong-scale"]) == 1
    assert "FAIL" in capsys.readouterr().out


def test_selftest_cli_json(broken, capsys):
    assert cli.main(["selftest", "--op", "fa3.varlen", "--provider", "illegal-access", "--json"]) == 1
    data = json.loads(capsys.readouterr().out)
    assert data["counts"]["error"] == len(conformance.cases("fa3.varlen")) and data["platform"] == "cpu"
    row = data["results"][0]
    assert {"op", "case", "provider", "status", "max_abs_err", "rel_err", "atol", "rtol", "seed"} <= set(row)


def test_selftest_cli_rejects_unknown_op_and_provider(capsys):
    assert cli.main(["selftest", "--op", "fa9.varlen"]) == 2
    assert "valid: fa3.varlen" in capsys.readouterr().err
    assert cli.main(["selftest", "--provider", "nope"]) == 2
    assert "no provider 'nope' in the cpu catalog; valid: torch, reference" in capsys.readouterr().err


def test_selftest_simulated_without_providers_says_why(capsys, monkeypatch):
    monkeypatch.setitem(sys.modules, "sgl_kernel", None)  # not installed, even on the GPU machine
    assert cli.main(["selftest", "--simulate", "cuda:sm90", "--op", "flashmla.kvcache"]) == 0
    out = capsys.readouterr().out
    assert "sgl-kernel" in out and "not installed" in out and "reference" in out


def test_tolerances_are_documented():
    from pathlib import Path

    doc = (Path(__file__).parents[2] / "docs" / "testing.md").read_text()
    for name, tol in conformance.TOLERANCES.items():
        assert f"| {name} | {tol.atol:g} | {tol.rtol:g} | {tol.lse_atol:g} |" in doc


def test_inputs_are_random_not_zero(broken):
    from accelbridge import ops
    from accelbridge.ops.cases import Inputs

    case = conformance.cases("fa3.varlen")[0]
    kw = ops.get("fa3.varlen").inputs(case, Inputs(case, 5, torch.device("cpu")))
    assert kw["q"].abs().min() >= 0 and kw["q"].std() > 0.5


@pytest.mark.filterwarnings("ignore::accelbridge.attention.providers.ProviderLoadWarning")
def test_catalog_ignores_routes_a_dropped_argument_elsewhere(fixture_providers):
    """sgl-kernel 0.4.5 varlen takes page_table but drops it (found by selftest on an H200): the catalog
    says so, conformance skips that case for it with the reason, and the facade routes such calls on."""
    (paged,) = [c for c in conformance.cases("fa3.varlen") if c.name == "paged"]
    with platforms.simulated("cuda:sm90"):
        r = conformance.run(paged, "sgl-kernel")
        assert r.status == "skip" and "cannot honour page_table=" in r.detail
        from accelbridge import attention

        assert attention.resolve("fa3.varlen", page_table=True).selected == "torch"
        assert conformance.run(paged, "reference").status == "pass"


def test_selftest_of_a_provider_that_ran_nothing_fails_the_gate(capsys, monkeypatch):
    monkeypatch.setitem(sys.modules, "mate", None)  # not installed
    assert cli.main(["selftest", "--simulate", "musa:mp31", "--provider", "mate"]) == 1
    err = capsys.readouterr().err
    assert "provider 'mate' ran no case: module 'mate' not installed" in err
