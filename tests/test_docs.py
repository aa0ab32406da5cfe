"""The docs stay true: linked from the README, every env var listed, the porting guide's steps run."""

import re
from pathlib import Path

import pytest

from accelbridge import cli, env

ROOT = Path(__file__).parents[1]
DOCS = ROOT / "docs"


def test_readme_links_every_doc():
    readme = (ROOT / "README.md").read_text()
    for doc in DOCS.glob("*.md"):
        assert f"(docs/{doc.name})" in readme, f"README does not link docs/{doc.name}"


def test_env_md_lists_every_variable_the_package_reads():
    source = "\n".join(p.read_text() for p in (ROOT / "accelbridge").rglob("*.py"))
    used = set(re.findall(r"\bACCELBRIDGE_[A-Z_]+\b", source)) | {"SGLANG_USE_SGL_FA3_KERNEL", "LOCAL_KERNELS"}
    env = (DOCS / "env.md").read_text()
    missing = sorted(v for v in used if f"`{v}`" not in env)
    assert not missing, f"docs/env.md does not document {missing}"


@pytest.mark.filterwarnings("ignore::accelbridge.attention.ProviderLoadWarning")
def test_porting_guide_musa_steps(tmp_path, monkeypatch, capsys):
    """Part 1 as written, with accelbridge's own mate stand-in (no test fixture on the path)."""
    import sys

    from accelbridge.testing import standins

    monkeypatch.setattr(sys, "path", list(sys.path))  # --standins puts the stand-ins first: undone after
    for name in [m for m in sys.modules if m.split(".")[0] == "mate"]:
        monkeypatch.delitem(sys.modules, name)
    monkeypatch.syspath_prepend(standins.path())
    text = (DOCS / "porting.md").read_text()
    overlay = tmp_path / "musa-mate.yaml"
    overlay.write_text(re.search(r"```yaml\n(.*?)```", text, re.S).group(1))
    assert cli.main(["catalog", "validate", str(overlay)]) == 0
    monkeypatch.setenv("ACCELBRIDGE_CATALOG_PATH", str(overlay))
    capsys.readouterr()
    assert cli.main(["explain", "fa3.scheduler_metadata", "--simulate", "musa:mp31"]) == 0
    assert "renamed num_heads->num_heads_q, num_heads_k->num_heads_kv" in capsys.readouterr().out
    assert cli.main(["selftest", "--simulate", "musa:mp31", "--provider", "mate", "--standins"]) == 0
    assert "48 case(s) run: 48 passed, 0 FAILED, 0 errors; 11 skipped" in capsys.readouterr().out
    assert "48 cases" in text and "skips 11" in text


def test_env_doc_lists_exactly_the_declared_variables():
    import re

    from accelbridge import env

    doc = (ROOT / "docs" / "env.md").read_text()
    documented = set(re.findall(r"^\| `([A-Z0-9_]+)`", doc, flags=re.M))
    assert set(env.VARIABLES) <= documented, set(env.VARIABLES) - documented
    own = {v for v in documented if v.startswith("ACCELBRIDGE_")}
    assert own == {n for n, v in env.VARIABLES.items() if v.own}, own ^ {n for n, v in env.VARIABLES.items() if v.own}
    for name, var in env.VARIABLES.items():
        if var.default:
            assert re.search(rf"^\| `{name}` \| `{var.default}` \|", doc, flags=re.M), f"{name}: default {var.default}"


def test_signatures_doc_is_generated_from_the_declarations():
    from accelbridge.ops import docs

    assert (ROOT / "docs" / "signatures.md").read_text() == docs.markdown(), (
        "regenerate: python -m accelbridge.ops.docs > docs/signatures.md"
    )


def test_porting_guide_part2_plugin_installs_non_editable_and_works(tmp_path):
    """The plugin package exactly as the guide writes it, built and installed (not editable), then used."""
    import subprocess
    import sys

    text = (ROOT / "docs" / "porting.md").read_text()
    part2 = text[text.index("## Part 2") :]
    files = re.findall(r"```\w+\n# file: (\S+)\n(.*?)```", part2, flags=re.S)
    assert {name for name, _ in files} == {"acme_accel/platform.py", "acme_accel/acme.yaml", "pyproject.toml"}
    src = tmp_path / "src"
    for name, body in files:
        (src / name).parent.mkdir(parents=True, exist_ok=True)
        (src / name).write_text(body)
    (src / "acme_accel" / "__init__.py").write_text("")
    target = tmp_path / "site"
    pip = [sys.executable, "-m", "pip", "install", "-q", "--no-deps", "--no-build-isolation", "--target"]
    build = subprocess.run([*pip, str(target), str(src)], capture_output=True, text=True, timeout=300)
    assert build.returncode == 0, build.stderr
    assert (target / "acme_accel" / "acme.yaml").exists(), "package-data kept the catalog"
    env = {**__import__("os").environ, "PYTHONPATH": str(target)}
    env.pop("ACCELBRIDGE_SIMULATE", None)
    run = subprocess.run([sys.executable, "-m", "accelbridge", "explain", "fa3.varlen", "--simulate", "acme:xpu12"],
                         capture_output=True, text=True, env=env, timeout=120, cwd=tmp_path)  # fmt: skip
    assert run.returncode == 0, run.stderr
    assert "fa3.varlen on acme xpu12" in run.stdout and "selected torch" in run.stdout  # no vendor kernel: torch
    assert "module 'acme_attn' not installed (install: pip install acme-attn)" in run.stdout


def test_a_misspelt_variable_is_warned_once_with_the_closest_name(monkeypatch):
    monkeypatch.setenv("ACCELBRIDGE_PROVIDER", "fa3=reference")
    monkeypatch.setenv("ACCELBRIDGE_SIMULATED", "cuda:sm90")
    monkeypatch.setattr(env, "_looked", False)
    with pytest.warns(RuntimeWarning) as caught:
        env.get("ACCELBRIDGE_CHECKS")
        env.get("ACCELBRIDGE_CHECKS")  # once per process
    said = sorted(str(w.message) for w in caught)
    assert len(said) == 2
    assert "ACCELBRIDGE_PROVIDER is not one accelbridge reads, ignored; did you mean ACCELBRIDGE_PROVIDERS?" in said[0]
    assert "ACCELBRIDGE_SIMULATED is not one accelbridge reads, ignored; did you mean ACCELBRIDGE_SIMULATE?" in said[1]
