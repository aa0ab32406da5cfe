"""Loading and merging: built-in, ACCELBRIDGE_CATALOG_PATH, programmatic extras."""

import json
import os
import textwrap
from pathlib import Path

import pytest

from accelbridge import kernels_catalog, platforms
from accelbridge.cli import main
from accelbridge.kernels_catalog import CatalogError, load
from accelbridge.kernels_catalog.matrix import support_matrix

ROOT = Path(__file__).resolve().parents[2]


def write(tmp_path, name, text):
    path = tmp_path / name
    path.write_text(textwrap.dedent(text).lstrip("\n"))
    return path


@pytest.fixture(autouse=True)
def _fresh():
    kernels_catalog.clear_cache()


def test_builtin_provider_ids():
    cuda_ids = ["sgl-kernel", "hub-sgl-fa3", "hub-fa3", "flash-attn-4", "torch", "reference"]
    assert list(load("cuda").providers) == cuda_ids
    assert list(load("rocm").providers) == ["aiter", "torch", "reference"]
    assert list(load("musa").providers) == ["mate", "torch", "reference"]
    assert list(load("cpu").providers) == ["torch", "reference"]
    cuda = load("cuda")
    assert cuda.candidates("fa3.varlen") == ("sgl-kernel", "hub-sgl-fa3", "hub-fa3", "torch", "reference")
    assert cuda.providers["hub-sgl-fa3"].source.revision == "v1"
    assert cuda.providers["hub-fa3"].source.version == 1
    assert set(cuda.providers["flash-attn-4"].ops) == {"fa4.varlen", "fa4.kvcache"}


def test_fa3_rule_is_the_engines():
    cuda = load("cuda")
    req = cuda.providers["sgl-kernel"].ops["fa3.varlen"].requires
    torch_version = __import__("packaging.version").version.Version("2.11")
    for spec, ok in [("cuda:sm80:toolkit=12.3", True), ("cuda:sm90:toolkit=12.8", True), ("cuda:sm89", True),
                     ("cuda:sm100", False), ("cuda:sm75", False), ("cuda:sm90:toolkit=12.2", False)]:  # fmt: skip
        assert (req.platform_reasons(platforms.simulate(spec), torch_version) == []) is ok, spec


def test_platform_catalog_and_mate_requirement(capsys):
    cat = kernels_catalog.load(platforms.simulate("musa:mp31"))
    assert cat.platform == "musa" and "mate" in cat.providers
    assert main(["catalog", "show", "--platform", "musa"]) == 0
    out = capsys.readouterr().out
    assert "mate: module mate" in out and "arch >=mp31" in out
    assert main(["catalog", "show", "--platform", "musa", "--json"]) == 0
    data = json.loads(capsys.readouterr().out)
    assert data["providers"]["mate"]["ops"]["fa3.varlen"]["requires"]["arch"] == ">=mp31"
    assert data["providers"]["mate"]["from"] == "builtin:musa.yaml:7"


OVERLAY = """
schema: 1
platform: cuda
providers:
  inhouse-fa3:
    description: our FA3 build
    source: {module: inhouse_fa3}
    ops:
      fa3.varlen: {function: varlen, requires: {arch: ["sm90"]}}
  sgl-kernel:
    install: pip install our-mirror/sglang-kernel
    ops:
      fa3.kvcache: {function: flash_attn.other_kvcache}
      flashmla.kvcache: null
  hub-fa3: null
order:
  fa3.varlen: [inhouse-fa3, sgl-kernel, reference]
  fa3.kvcache: [sgl-kernel, reference]
  fa3.scheduler_metadata: [sgl-kernel]
  flashmla.kvcache: [reference]
"""


def test_overlay_rules(tmp_path, monkeypatch):
    monkeypatch.setenv("ACCELBRIDGE_CATALOG_PATH", str(write(tmp_path, "ours.yaml", OVERLAY)))
    cat = load("cuda")
    # a new provider is added
    assert cat.providers["inhouse-fa3"].source.target == "inhouse_fa3"
    # fields of an existing provider are replaced, the rest kept
    sgl = cat.providers["sgl-kernel"]
    assert sgl.install == "pip install our-mirror/sglang-kernel" and sgl.source.target == "sgl_kernel"
    # ops merge per op id: one replaced, one removed, the rest kept
    assert sgl.ops["fa3.kvcache"].function == "flash_attn.other_kvcache"
    assert "flashmla.kvcache" not in sgl.ops and sgl.ops["fa3.varlen"].function == "flash_attn.flash_attn_varlen_func"
    # provider-level requirements still apply to replaced ops
    assert str(sgl.ops["fa3.kvcache"].requires.toolkit[0]) == ">=12.3"
    # null removes a provider
    assert "hub-fa3" not in cat.providers
    # order replaces per op; untouched ops keep the built-in order
    assert cat.candidates("fa3.varlen") == ("inhouse-fa3", "sgl-kernel", "reference")
    assert cat.candidates("fa4.varlen") == ("flash-attn-4", "torch", "reference")
    assert cat.files == ("builtin:cuda.yaml", str(tmp_path / "ours.yaml"))
    assert cat.providers["inhouse-fa3"].origin == f"{tmp_path / 'ours.yaml'}:4"


def test_directory_overlays_apply_in_name_order_and_skip_other_platforms(tmp_path, monkeypatch):
    d = tmp_path / "catalogs"
    d.mkdir()
    first = "schema: 1\nplatform: cpu\nproviders:\n  x:\n    source: {module: x1}\n"
    first += "    ops:\n      fa3.varlen: {function: f}\n"
    write(d, "10-a.yaml", first)
    write(d, "20-b.yaml", "schema: 1\nplatform: cpu\nproviders:\n  x:\n    source: {module: x2}\n")
    write(d, "30-rocm.yaml", "schema: 1\nplatform: rocm\nproviders:\n  y:\n    source: {module: y}\n")
    write(d, "notes.txt", "not yaml")
    monkeypatch.setenv("ACCELBRIDGE_CATALOG_PATH", os.pathsep.join([str(d)]))
    cat = load("cpu")
    assert cat.providers["x"].source.target == "x2"  # later file wins
    assert "y" not in cat.providers
    assert "y" in load("rocm").providers


def test_programmatic_extra_comes_last(tmp_path, monkeypatch):
    monkeypatch.setenv("ACCELBRIDGE_CATALOG_PATH", str(write(tmp_path, "env.yaml", OVERLAY)))
    extra = write(tmp_path, "extra.yaml", "schema: 1\nplatform: cuda\norder:\n  fa3.varlen: [reference]\n")
    assert load("cuda", extra=[extra]).candidates("fa3.varlen") == ("reference",)


def test_overlay_errors_are_located_and_all_reported(tmp_path, monkeypatch):
    bad = write(tmp_path, "bad.yaml", "schema: 1\nplatform: cuda\norder:\n  fa3.varlen: [nope]\n  fa4.varlen: []\n")
    monkeypatch.setenv("ACCELBRIDGE_CATALOG_PATH", str(bad))
    with pytest.raises(CatalogError) as e:
        load("cuda")
    assert [str(i) for i in e.value.issues] == [
        f"{bad}:4:16: order of fa3.varlen: provider 'nope' is not defined; defined: flash-attn-4, hub-fa3, "
        "hub-sgl-fa3, reference, sgl-kernel, torch",
        f"{bad}:5:15: order of fa4.varlen is empty: list at least one provider (e.g. torch, reference)",
    ]


def test_order_naming_a_provider_removed_later(tmp_path):
    a = write(tmp_path, "a.yaml", "schema: 1\nplatform: cpu\nproviders:\n  reference: null\n")
    with pytest.raises(
        CatalogError, match=r"cpu.yaml:\d+:\d+: order of fa3.varlen: provider 'reference' was removed by .*a.yaml:4"
    ):
        load("cpu", extra=[a])


def test_missing_overlay_file(tmp_path, monkeypatch):
    monkeypatch.setenv("ACCELBRIDGE_CATALOG_PATH", str(tmp_path / "nope.yaml"))
    with pytest.raises(CatalogError, match="nope.yaml:1:1: cannot read catalog file"):
        load("cpu")


def test_support_matrix_doc_is_up_to_date():
    doc = (ROOT / "docs" / "support-matrix.md").read_text()
    assert doc == support_matrix(), "regenerate: accelbridge catalog matrix > docs/support-matrix.md"


def test_matrix_lists_requirements():
    m = support_matrix()
    assert "| cuda | 1 | `sgl-kernel` | module sgl_kernel | `>=sm80, <sm100` | `>=12.3` |" in m
    assert "| musa | 1 | `mate` | module mate | `>=mp31` |" in m
    assert "| rocm | 1 | `aiter` | module aiter | `gfx942 or gfx950` |" in m
